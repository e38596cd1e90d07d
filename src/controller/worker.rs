//! The workers: take a key from the queue, ask the engine, let `plan` decide, and carry the plan out
//! (status write, then metrics, log line and event). No decision is made here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::events::ObjectEvent;
use super::plan::{self, AfterWriteError, Plan, Signed, Subject, API_ERROR};
use super::store::{Key, Request, Snapshot};
use super::{Shared, Unconfirmed};
use crate::audit::{self, Confirmed, Event, Record};
use crate::engine::{Decision, PodRequest, SignRequest};
use crate::metrics::Outcome;

/// The error class of a signature dropped because its audit record could not be written.
pub const AUDIT_UNAVAILABLE: &str = "AuditUnavailable";

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
    let snap = match with_legacy_key(shared, key, snap).await {
        Ok(snap) => snap,
        Err((snap, e)) => return api_trouble(shared, key, &snap, e, started),
    };
    let (signed, record) = sign(shared, key, signer, &snap).await;
    let Some(plan) = make_plan(key, &snap, &signed) else {
        return Step::Done;
    };
    let Some(patch) = &plan.write else {
        return transient(shared, key, &snap, &plan, started);
    };
    // A certificate from an earlier attempt that never showed up is superseded by this one.
    shared.take_unconfirmed(key);
    match shared.writer.write(key, signer, patch).await {
        Ok(written) => {
            record_written(
                shared,
                key,
                &snap,
                &plan,
                started,
                record.as_ref(),
                Confirmed::Write,
            );
            if let Some(seen) = written {
                shared.apply(seen);
            }
            Step::Done
        }
        Err((code, e)) => {
            // The write may have been applied even though it failed (the answer was lost, a 5xx after
            // the commit, or a 409 on the client's own retry of such a write): until the CSR is seen
            // again, remember what we sent, so finding it there counts it as issued, once.
            // (A CSR holds the PEM bytes as written, a PCR the chain string: the same bytes.)
            if let (Signed::Decision(Decision::Issued(issued)), Some(record)) = (&signed, &record) {
                shared.remember_unconfirmed(
                    key,
                    Unconfirmed {
                        certificate: issued.certificate_pem.clone().into_bytes(),
                        snap: snap.clone(),
                        plan: plan.clone(),
                        record: record.clone(),
                        started,
                    },
                );
            }
            match plan::after_write_error(code) {
                AfterWriteError::Forget => {
                    shared.remove(key);
                    Step::Done
                }
                AfterWriteError::Reread => {
                    tracing::debug!(csr = key.csr_name().map(tracing::field::display), pcr = key.pcr_name(), signer = %signer, "conflict on status write; re-reading");
                    reread(shared, key, &snap, e, started, Step::Again).await
                }
                AfterWriteError::Retry if record.is_some() => {
                    // Did the certificate land? One read tells, and settles the count now.
                    reread(shared, key, &snap, e, started, Step::Retry).await
                }
                AfterWriteError::Retry => api_trouble(shared, key, &snap, e, started),
            }
        }
    }
}

/// A PCR that shows no key through v1 (made by a 1.35 kubelet through v1beta1 with the legacy fields)
/// gets them from one read through v1beta1; everything else passes unchanged. The spec is immutable, so
/// the key read now is the key of the version the decision is written against.
async fn with_legacy_key(
    shared: &Shared,
    key: &Key,
    snap: Snapshot,
) -> Result<Snapshot, (Snapshot, kube::Error)> {
    let Request::Pod(p) = &snap.work.request else {
        return Ok(snap);
    };
    if !p.lacks_key() {
        return Ok(snap);
    }
    let (pkix, pop) = match shared.writer.legacy_key(key).await {
        Ok(Some(k)) => k,
        Ok(None) => return Ok(snap),
        Err(e) => return Err((snap, e)),
    };
    let mut pod = p.clone();
    pod.pkix_public_key = Some(pkix);
    pod.proof_of_possession = Some(pop);
    let work = Arc::new(super::store::Work {
        requester: snap.work.requester.clone(),
        conditions: Vec::new(),
        request: Request::Pod(pod),
    });
    Ok(Snapshot { work, ..snap })
}

/// Reads the object again after a failed write; `then` when it still waits for a decision.
async fn reread(
    shared: &Arc<Shared>,
    key: &Key,
    snap: &Snapshot,
    write_error: kube::Error,
    started: Instant,
    then: Step,
) -> Step {
    let signer = shared.signer_names[key.signer].as_str();
    match shared.writer.reread(key, signer).await {
        Ok(Some(seen)) => {
            let waiting = plan::wants_decision(seen.phase);
            shared.observe(seen, Confirmed::Reread);
            match then {
                Step::Retry if waiting => api_trouble(shared, key, snap, write_error, started),
                Step::Retry => Step::Done,
                other => other,
            }
        }
        Ok(None) => {
            shared.remove(key);
            Step::Done
        }
        Err(e) => api_trouble(shared, key, snap, e, started),
    }
}

fn make_plan(key: &Key, snap: &Snapshot, signed: &Signed) -> Option<Plan> {
    plan::plan(
        key.kind,
        snap.phase,
        Subject {
            resource_version: &snap.resource_version,
            conditions: &snap.work.conditions,
        },
        signed,
        SystemTime::now(),
    )
}

/// Runs the engine for one snapshot on the blocking pool (signing is CPU work). A certificate comes back
/// only once its `signed` audit record exists: logged, counted and, with an audit file, synced to it.
async fn sign(
    shared: &Shared,
    key: &Key,
    signer: &str,
    snap: &Snapshot,
) -> (Signed, Option<Record>) {
    let engine = shared.engine.clone();
    let work = snap.work.clone();
    let name = signer.to_string();
    let audit_file = shared.audit.clone();
    let metrics = shared.metrics.clone();
    let kind = key.kind.label();
    let mut record = Record {
        time: String::new(),
        event: Event::Signed,
        signer: signer.to_string(),
        // A PCR as namespace/name.
        csr: key.to_string(),
        uid: snap.uid.clone(),
        requester: snap.work.requester.clone(),
        serial: String::new(),
        not_before: String::new(),
        not_after: String::new(),
        sha256: String::new(),
        replica: shared.identity.clone(),
        confirmed_by: None,
    };
    let res = tokio::task::spawn_blocking(move || {
        let s = engine
            .signer(&name)
            .ok_or_else(|| crate::Error::UnknownSigner(name.clone()))?;
        let t = Instant::now();
        let d = match &work.request {
            Request::Csr(c) => s.sign(
                &SignRequest {
                    request: &c.request,
                    usages: &c.usages,
                    expiration_seconds: c.expiration_seconds,
                    annotations: c.annotations.as_ref(),
                    username: &c.username,
                    groups: &c.groups,
                },
                SystemTime::now(),
            ),
            Request::Pod(p) => s.sign_pod(
                &PodRequest {
                    namespace: &p.namespace,
                    pod_name: &p.pod_name,
                    pod_uid: &p.pod_uid,
                    service_account_name: &p.service_account_name,
                    service_account_uid: &p.service_account_uid,
                    node_name: &p.node_name,
                    node_uid: &p.node_uid,
                    max_expiration_seconds: p.max_expiration_seconds,
                    stub_pkcs10_request: (!p.stub_pkcs10_request.is_empty())
                        .then_some(p.stub_pkcs10_request.as_slice()),
                    pkix_public_key: p.pkix_public_key.as_deref(),
                    proof_of_possession: p.proof_of_possession.as_deref(),
                    unverified_user_annotations: p.unverified_user_annotations.as_ref(),
                },
                SystemTime::now(),
            ),
        };
        let took = t.elapsed();
        // Token errors, the ones recovered from by reconnecting included.
        if let Some(key) = s.ca().pkcs11_key() {
            for (kind, n) in key.take_errors() {
                metrics.record_signing_errors(&name, kind, n);
            }
        }
        // Recorded here, on the blocking pool, the moment the signature exists.
        let audited = match &d {
            Ok(Decision::Issued(issued)) => {
                // A record without the hash would not identify the certificate: treated like any
                // signing failure (transient, the certificate is dropped).
                record.sha256 =
                    audit::leaf_sha256(issued.certificate_pem.as_bytes()).map_err(|error| {
                        metrics.record_signed(&name, kind);
                        tracing::error!(csr = %record.csr, signer = %name, serial = %issued.serial, "certificate signed but not hashed for its audit record; discarded");
                        crate::Error::Crypto {
                            context: "hashing the issued certificate for the audit record",
                            error,
                        }
                    })?;
                record.time = audit::timestamp(SystemTime::now());
                record.serial = issued.serial.clone();
                record.not_before = audit::timestamp(issued.not_before);
                record.not_after = humantime::format_rfc3339_seconds(issued.not_after).to_string();
                let written = audit_file.as_ref().map(|f| f.append(&record));
                Some((record, written))
            }
            _ => None,
        };
        Ok::<_, crate::Error>((d, took, audited))
    })
    .await;
    match res {
        Ok(Ok((Ok(decision), took, audited))) => {
            shared.metrics.record_signing(signer, kind, took);
            let Some((record, written)) = audited else {
                return (Signed::Decision(decision), None);
            };
            shared.metrics.record_signed(signer, kind);
            log_record(&record, "certificate signed");
            match written {
                Some(Err(e)) => {
                    // Fail closed: the certificate never leaves the process; the CSR is retried.
                    shared.metrics.audit_write_error(Event::Signed);
                    tracing::error!(
                        csr = %record.csr,
                        signer = %signer,
                        serial = %record.serial,
                        error = %crate::error::chain(&e),
                        "audit record not written; certificate discarded, will retry"
                    );
                    (
                        Signed::Error {
                            class: AUDIT_UNAVAILABLE,
                            message: "the audit file cannot be written".to_string(),
                        },
                        None,
                    )
                }
                _ => (Signed::Decision(decision), Some(record)),
            }
        }
        Ok(Ok((Err(e), _, _))) | Ok(Err(e)) => (
            Signed::Error {
                class: error_class(&e),
                message: crate::error::chain(&e),
            },
            None,
        ),
        Err(join) => (
            Signed::Error {
                class: "Internal",
                message: join.to_string(),
            },
            None,
        ),
    }
}

/// The log line of an audit record (the same fields as the file's JSON).
fn log_record(r: &Record, message: &'static str) {
    tracing::info!(
        audit = match r.event {
            Event::Signed => "signed",
            Event::Issued => "issued",
        },
        csr = %r.csr,
        uid = %r.uid,
        signer = %r.signer,
        requester = %r.requester,
        serial = %r.serial,
        not_before = %r.not_before,
        not_after = %r.not_after,
        sha256 = %r.sha256,
        confirmed_by = r.confirmed_by.map(Confirmed::as_str),
        "{message}"
    );
}

/// Writes the `issued` record to the audit file (off the async threads); a failure is counted and
/// logged, it cannot take the certificate back.
fn audit_issued(shared: &Shared, record: &Record, via: Confirmed) {
    let mut r = record.clone();
    r.event = Event::Issued;
    r.time = audit::timestamp(SystemTime::now());
    r.confirmed_by = Some(via);
    let Some(file) = shared.audit.clone() else {
        return;
    };
    let metrics = shared.metrics.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.append(&r) {
            metrics.audit_write_error(Event::Issued);
            tracing::error!(csr = %r.csr, serial = %r.serial, error = %crate::error::chain(&e), "audit record of an issued certificate not written");
        }
    });
}

/// Error class for the `reason` label of `outcome="error"`.
fn error_class(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::CaExpired { .. } => "CaExpired",
        crate::Error::Ca { .. } => "CaUnavailable",
        crate::Error::Crypto { .. } => "Crypto",
        crate::Error::Token { .. } => "TokenUnavailable",
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
    match make_plan(key, snap, &signed) {
        Some(plan) => transient(shared, key, snap, &plan, started),
        None => Step::Done,
    }
}

fn transient(shared: &Shared, key: &Key, snap: &Snapshot, plan: &Plan, started: Instant) -> Step {
    let signer = shared.signer_names[key.signer].as_str();
    shared
        .metrics
        .decision(signer, key.kind.label(), Outcome::Error, plan.reason);
    tracing::warn!(
        csr = key.csr_name().map(tracing::field::display),
        pcr = key.pcr_name(),
        signer = %signer,
        requester = %snap.work.requester,
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

fn record_written(
    shared: &Shared,
    key: &Key,
    snap: &Snapshot,
    plan: &Plan,
    started: Instant,
    record: Option<&Record>,
    via: Confirmed,
) {
    let signer = shared.signer_names[key.signer].as_str();
    match (&plan.issued, plan.outcome) {
        (Some(facts), _) => {
            if let Some(r) = record {
                audit_issued(shared, r, via);
            }
            let latency = issuance_latency(snap, SystemTime::now());
            shared.metrics.record_issued(
                signer,
                key.kind.label(),
                latency,
                facts.granted_seconds,
                facts.lifetime,
            );
            tracing::info!(
                csr = key.csr_name().map(tracing::field::display),
                pcr = key.pcr_name(),
                signer = %signer,
                requester = %snap.work.requester,
                outcome = "issued",
                reason = plan.reason,
                uid = %snap.uid,
                serial = %facts.serial,
                not_after = %facts.not_after,
                sha256 = record.map(|r| r.sha256.as_str()),
                confirmed_by = via.as_str(),
                granted_seconds = facts.granted_seconds,
                // Left out of the line when the request named no lifetime.
                requested_seconds = facts.requested_seconds,
                lifetime = facts.lifetime,
                latency_ms = latency.as_secs_f64() * 1e3,
                "certificate issued"
            );
        }
        (None, outcome) => {
            shared
                .metrics
                .decision(signer, key.kind.label(), outcome, plan.reason);
            tracing::info!(
                csr = key.csr_name().map(tracing::field::display),
                pcr = key.pcr_name(),
                signer = %signer,
                requester = %snap.work.requester,
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

/// A certificate whose write failed turned up on the CSR: it is issued, and counted as such now.
pub(super) fn confirm_unconfirmed(shared: &Shared, key: &Key, u: Unconfirmed, via: Confirmed) {
    record_written(
        shared,
        key,
        &u.snap,
        &u.plan,
        u.started,
        Some(&u.record),
        via,
    );
}

fn record_event(shared: &Shared, key: &Key, snap: &Snapshot, plan: &Plan) {
    if let Some(ev) = &plan.event {
        shared.events.record(ObjectEvent {
            kind: key.kind,
            api_version: shared.api_version(key.kind),
            namespace: key.namespace.as_deref().map(str::to_string),
            name: key.name.to_string(),
            uid: snap.uid.clone(),
            type_: ev.type_,
            reason: ev.reason,
            message: ev.message.clone(),
        });
    }
}

/// Approval (a PCR: creation) → certificate written. The timestamp has one-second resolution; when this
/// process watched the approval happen within that second, its own observation is the sharper start.
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
    use crate::controller::store::{CsrFields, Work};

    #[test]
    fn latency_prefers_a_sharp_observation_within_the_timestamp_second() {
        let now = SystemTime::now();
        let work = Arc::new(Work {
            requester: String::new(),
            conditions: vec![],
            request: Request::Csr(CsrFields {
                request: vec![],
                usages: vec![],
                expiration_seconds: None,
                annotations: None,
                username: String::new(),
                groups: vec![],
            }),
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
