//! The auto-approver of one signer (`autoApprove`), leader only: watches the signer's pending CSRs and
//! hands each new version to `approve::auto_approve`. Kept apart from the signing path on purpose: it
//! is another role (an approver), off by default, and its mistakes must not be able to stall signing.
//!
//! Every version of a pending CSR is decided once; a CSR left pending is reported (event, metric, log
//! line) once, not at every update; a transient API error is retried with backoff. Leaving the watch's
//! objects in memory is bounded by the number of pending CSRs of this signer (the cluster deletes
//! pending CSRs after 24 h).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::mpsc;

use super::approve::{auto_approve, Outcome};
use super::events::{EventType, ObjectEvent};
use super::plan::Kind;
use super::{phase_of, Phase, Shared, WatchBackoff};

/// Runs until the watch ends (at shutdown, when the task is aborted).
pub(super) async fn approver(shared: Arc<Shared>, signer: usize) {
    let name = shared.signer_names[signer].clone();
    let Some(engine) = shared.engine.signers().nth(signer) else {
        return;
    };
    let Some(rules) = engine.auto_approve() else {
        return;
    };
    shared.metrics.init_auto_approval(&name, rules.rule_names());
    let api: Api<CertificateSigningRequest> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.signerName={name}"));
    let mut stream = watcher(api, cfg)
        .backoff(WatchBackoff::new(shared.watch_backoff_max))
        .boxed();
    let mut leader = shared.leader.clone();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<String>();
    let mut pending: HashMap<String, CertificateSigningRequest> = HashMap::new();
    // uid → the resourceVersion last decided (a replay of it is not decided again).
    let mut decided: HashMap<String, String> = HashMap::new();
    // uids whose "left pending" was reported.
    let mut reported: HashSet<String> = HashSet::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    tracing::info!(signer = %name, rules = ?rules.rule_names().collect::<Vec<_>>(), "auto-approval on");
    loop {
        let todo: Vec<String> = tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr)) => {
                        let n = csr.name_any();
                        if phase_of(&csr) == Phase::Pending && csr.spec.signer_name == name {
                            pending.insert(n.clone(), csr);
                            vec![n]
                        } else {
                            if let Some(uid) = csr.uid() {
                                decided.remove(&uid);
                                reported.remove(&uid);
                            }
                            pending.remove(&n);
                            failures.remove(&n);
                            Vec::new()
                        }
                    }
                    Ok(watcher::Event::Delete(csr)) => {
                        if let Some(uid) = csr.uid() {
                            decided.remove(&uid);
                            reported.remove(&uid);
                        }
                        pending.remove(&csr.name_any());
                        failures.remove(&csr.name_any());
                        Vec::new()
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
                    Err(e) => {
                        tracing::warn!(signer = %name, error = %e, "auto-approval watch failed; retrying");
                        Vec::new()
                    }
                }
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new leader looks at everything pending: the old one may have left some undecided.
                if *leader.borrow_and_update() { pending.keys().cloned().collect() } else { Vec::new() }
            }
            Some(n) = retry_rx.recv() => vec![n],
        };
        if !shared.is_leader() {
            continue;
        }
        for n in todo {
            let Some(csr) = pending.get(&n).cloned() else {
                continue;
            };
            let uid = csr.uid().unwrap_or_default();
            let rv = csr.resource_version().unwrap_or_default();
            if decided.get(&uid) == Some(&rv) {
                continue;
            }
            let outcome = auto_approve(&shared.client, &shared.metrics, engine, rules, &csr).await;
            let event = |type_, reason, message: String| ObjectEvent {
                kind: Kind::CertificateSigningRequest,
                api_version: "certificates.k8s.io/v1",
                namespace: None,
                name: n.clone(),
                uid: uid.clone(),
                type_,
                reason,
                message,
            };
            match outcome {
                Outcome::Approved { rule } => {
                    decided.insert(uid.clone(), rv);
                    failures.remove(&n);
                    shared
                        .metrics
                        .auto_approvals
                        .with_label_values(&[name.as_str(), rule.as_str()])
                        .inc();
                    tracing::info!(csr = %n, signer = %name, requester = csr.spec.username.as_deref().unwrap_or(""), rule = %rule, "auto-approved");
                    shared.events.record(event(
                        EventType::Normal,
                        "AutoApproved",
                        crate::approval::approved_message(&name, &rule),
                    ));
                }
                Outcome::Left { reason, message } => {
                    decided.insert(uid.clone(), rv);
                    failures.remove(&n);
                    if reported.insert(uid.clone()) {
                        shared
                            .metrics
                            .not_auto_approved
                            .with_label_values(&[name.as_str(), reason.as_str()])
                            .inc();
                        tracing::info!(csr = %n, signer = %name, requester = csr.spec.username.as_deref().unwrap_or(""), reason = reason.as_str(), "left pending for a person: {message}");
                        shared
                            .events
                            .record(event(EventType::Normal, "NotAutoApproved", message));
                    }
                }
                // The watch brings the new version (or the deletion).
                Outcome::Changed | Outcome::Gone => {}
                Outcome::Transient { message } => {
                    let f = failures.entry(n.clone()).or_insert(0);
                    *f = f.saturating_add(1);
                    let delay = Duration::from_millis(200)
                        .saturating_mul(1 << (*f).min(10))
                        .min(Duration::from_secs(60));
                    tracing::warn!(csr = %n, signer = %name, error = %message, retry_in = ?delay, "auto-approval failed; retrying");
                    let tx = retry_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(n);
                    });
                }
            }
        }
    }
}
