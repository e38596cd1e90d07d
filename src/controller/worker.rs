//! The workers: take a key from the queue, ask the engine, let `plan` decide, and carry the plan out
//! (status write, then metrics, log line and event). No decision is made here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::events::CsrEvent;
use super::plan::{self, AfterWriteError, Plan, Signed, Subject, API_ERROR};
use super::store::{Key, Snapshot};
use super::Shared;
use crate::engine::SignRequest;
use crate::metrics::Outcome;

/// What happened to one queued key.
enum Step {
    /// Nothing more to do for this object.
    Done,
    /// Decide again now (it changed under us).
    Again,
    /// Transient failure: retry after backoff.
    Retry,
}

pub(super) async fn worker(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut leader = shared.leader.clone();
    loop {
        // Standbys keep their cache warm but never write; a standby's workers park here, so
        // shutdown must be able to end the wait too.
        tokio::select! {
            r = leader.wait_for(|l| *l) => {
                if r.is_err() {
                    return;
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(key) = shared.queue.pop().await else {
            return;
        };
        let step = if shared.is_leader() {
            process(&shared, &key).await
        } else {
            // Leadership went away between wait and pop; the new leader (or we, later) will
            // take it from the full resync on gaining the lease.
            Step::Done
        };
        match step {
            Step::Done => {
                shared.backoff().forget(&key);
                shared.queue.done(&key);
            }
            Step::Again => {
                shared.queue.done(&key);
                shared.queue.add(key);
            }
            Step::Retry => {
                let delay = shared.backoff().next_delay(&key);
                shared.queue.done(&key);
                shared.queue.add_after(key, delay);
            }
        }
    }
}

async fn process(shared: &Arc<Shared>, key: &Key) -> Step {
    let Some(snap) = shared.store.snapshot(key) else {
        return Step::Done;
    };
    if !plan::wants_decision(snap.phase) {
        return Step::Done;
    }
    let signer = shared.signer_names[key.signer].as_str();
    let started = Instant::now();
    let signed = sign(shared, signer, &snap).await;
    let Some(plan) = make_plan(shared, &snap, &signed) else {
        return Step::Done;
    };
    let Some(patch) = &plan.write else {
        return transient(shared, key, &snap, &plan, started);
    };
    match shared.writer.write(&key.name, patch).await {
        Ok(written) => {
            record_written(shared, key, &snap, &plan, started);
            shared.apply(key.signer, &written);
            Step::Done
        }
        Err((code, e)) => match plan::after_write_error(code) {
            AfterWriteError::Reread => {
                tracing::debug!(csr = %key.name, signer = %signer, "conflict on status write; re-reading");
                match shared.writer.reread(&key.name).await {
                    Ok(Some(csr)) => {
                        shared.apply(key.signer, &csr);
                        Step::Again
                    }
                    Ok(None) => {
                        shared.remove(key);
                        Step::Done
                    }
                    Err(e) => api_trouble(shared, key, &snap, e, started),
                }
            }
            AfterWriteError::Forget => {
                shared.remove(key);
                Step::Done
            }
            AfterWriteError::Retry => api_trouble(shared, key, &snap, e, started),
        },
    }
}

fn make_plan(shared: &Shared, snap: &Snapshot, signed: &Signed) -> Option<Plan> {
    plan::plan(
        shared.kind,
        snap.phase,
        Subject {
            resource_version: &snap.resource_version,
            conditions: &snap.work.conditions,
        },
        signed,
        SystemTime::now(),
    )
}

/// Runs the engine for one snapshot on the blocking pool (signing is CPU work).
async fn sign(shared: &Shared, signer: &str, snap: &Snapshot) -> Signed {
    let engine = shared.engine.clone();
    let work = snap.work.clone();
    let name = signer.to_string();
    let res = tokio::task::spawn_blocking(move || {
        let s = engine
            .signer(&name)
            .ok_or_else(|| crate::Error::UnknownSigner(name.clone()))?;
        let req = SignRequest {
            request: &work.request,
            usages: &work.usages,
            expiration_seconds: work.expiration_seconds,
            annotations: work.annotations.as_ref(),
            username: &work.username,
            groups: &work.groups,
        };
        let t = Instant::now();
        let d = s.sign(&req, SystemTime::now());
        Ok::<_, crate::Error>((d, t.elapsed()))
    })
    .await;
    match res {
        Ok(Ok((Ok(decision), took))) => {
            shared.metrics.record_signing(signer, took);
            Signed::Decision(decision)
        }
        Ok(Ok((Err(e), _))) | Ok(Err(e)) => Signed::Error {
            class: error_class(&e),
            message: crate::error::chain(&e),
        },
        Err(join) => Signed::Error {
            class: "Internal",
            message: join.to_string(),
        },
    }
}

/// Error class for the `reason` label of `outcome="error"`.
fn error_class(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::CaExpired { .. } => "CaExpired",
        crate::Error::Ca { .. } => "CaUnavailable",
        crate::Error::Crypto { .. } => "Crypto",
        crate::Error::Encode { .. } => "Encode",
        crate::Error::Kube { .. } => API_ERROR,
        _ => "Internal",
    }
}

/// The write (or re-read) failed: transient, planned like any engine error.
fn api_trouble(
    shared: &Arc<Shared>,
    key: &Key,
    snap: &Snapshot,
    e: kube::Error,
    started: Instant,
) -> Step {
    let signed = Signed::Error {
        class: API_ERROR,
        message: crate::error::chain(&e),
    };
    match make_plan(shared, snap, &signed) {
        Some(plan) => transient(shared, key, snap, &plan, started),
        None => Step::Done,
    }
}

fn transient(shared: &Shared, key: &Key, snap: &Snapshot, plan: &Plan, started: Instant) -> Step {
    let signer = shared.signer_names[key.signer].as_str();
    shared.metrics.decision(signer, Outcome::Error, plan.reason);
    tracing::warn!(
        csr = %key.name,
        signer = %signer,
        requester = %snap.work.username,
        outcome = "error",
        reason = plan.reason,
        error = %plan.message,
        attempt = shared.backoff().failures(key) + 1,
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "transient failure; will retry"
    );
    record_event(shared, key, snap, plan);
    Step::Retry
}

fn record_written(shared: &Shared, key: &Key, snap: &Snapshot, plan: &Plan, started: Instant) {
    let signer = shared.signer_names[key.signer].as_str();
    match (&plan.issued, plan.outcome) {
        (Some(facts), _) => {
            let latency = issuance_latency(snap, SystemTime::now());
            shared
                .metrics
                .record_issued(signer, latency, facts.granted_seconds, facts.lifetime);
            tracing::info!(
                csr = %key.name,
                signer = %signer,
                requester = %snap.work.username,
                outcome = "issued",
                reason = plan.reason,
                serial = %facts.serial,
                not_after = %facts.not_after,
                granted_seconds = facts.granted_seconds,
                // Left out of the line when the request named no lifetime.
                requested_seconds = facts.requested_seconds,
                lifetime = facts.lifetime,
                latency_ms = latency.as_secs_f64() * 1e3,
                "certificate issued"
            );
        }
        (None, outcome) => {
            shared.metrics.decision(signer, outcome, plan.reason);
            tracing::info!(
                csr = %key.name,
                signer = %signer,
                requester = %snap.work.username,
                outcome = outcome.as_str(),
                reason = plan.reason,
                message = %plan.message,
                latency_ms = started.elapsed().as_secs_f64() * 1e3,
                "request refused"
            );
        }
    }
    record_event(shared, key, snap, plan);
}

fn record_event(shared: &Shared, key: &Key, snap: &Snapshot, plan: &Plan) {
    if let Some(ev) = &plan.event {
        shared.events.record(CsrEvent {
            csr_name: key.name.to_string(),
            csr_uid: snap.uid.clone(),
            type_: ev.type_,
            reason: ev.reason,
            message: ev.message.clone(),
        });
    }
}

/// Approval → certificate written. The condition timestamp has one-second resolution; when this process
/// watched the approval happen within that second, its own observation is the sharper start.
fn issuance_latency(snap: &Snapshot, now: SystemTime) -> Duration {
    let start = match (snap.observed_approval, snap.approved_at) {
        (Some(obs), Some(at))
            if obs
                .duration_since(at)
                .is_ok_and(|d| d < Duration::from_secs(1)) =>
        {
            obs
        }
        (_, Some(at)) => at,
        (Some(obs), None) => obs,
        (None, None) => now,
    };
    now.duration_since(start).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controller::phase::Phase;
    use crate::controller::store::Work;

    #[test]
    fn latency_prefers_a_sharp_observation_within_the_timestamp_second() {
        let now = SystemTime::now();
        let work = Arc::new(Work {
            request: vec![],
            usages: vec![],
            expiration_seconds: None,
            annotations: None,
            username: String::new(),
            groups: vec![],
            conditions: vec![],
        });
        let snap = |obs, at| Snapshot {
            uid: String::new(),
            phase: Phase::Approved,
            resource_version: String::new(),
            approved_at: at,
            observed_approval: obs,
            work: work.clone(),
        };
        // Observed 10 s after the condition time: the watch lagged, trust the condition.
        let l = issuance_latency(&snap(Some(now), Some(now - Duration::from_secs(10))), now);
        assert!(l >= Duration::from_secs(10));
        // Observed within the truncated second: trust the observation.
        let l = issuance_latency(
            &snap(Some(now), Some(now - Duration::from_millis(900))),
            now,
        );
        assert!(l < Duration::from_millis(900));
    }
}
