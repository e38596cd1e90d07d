//! The only code that talks to the apiserver about CertificateSigningRequests and PodCertificateRequests.
//! One core serves both kinds; what differs (API and version, key, phase, request fields, status patch)
//! sits in `store::seen_csr`/`phase.rs` (CSR), `pcr.rs` (PCR) and `plan::Kind`.
//!
//! ```text
//!  CSR watch (one per signerName, fieldSelector spec.signerName=<name>, cluster-scoped)
//!  PCR watch (one per signerName whose engine signs pods, same selector, all namespaces;
//!             certificates.k8s.io/v1, else v1beta1, else none: discovery at startup)
//!     │  every add/update, duplicates and replays included, folded into a kind-neutral `Seen`
//!     ▼
//!  store.rs: a metadata-light record per object; phase.rs / pcr.rs say where it stands
//!     ▼
//!  queue (dedup per object, per-key backoff) ──► worker.rs: engine.sign | sign_pod ──► plan.rs (pure)
//!                                                                                     ──► write.rs
//!      CSR Issued  → merge-patch /status {certificate} with metadata.resourceVersion precondition
//!      CSR Refused → merge-patch /status {conditions + one Failed} with the same precondition
//!      PCR Issued  → merge-patch /status {conditions [Issued], certificateChain, notBefore, notAfter,
//!                    beginRefreshAt} with the same precondition (one write: the status is final)
//!      PCR Refused → merge-patch /status {conditions [Denied | Failed]} with the same precondition
//!      Err         → transient: retry with backoff, never a terminal condition
//!      409         → re-read the object and decide again
//!      404         → deleted (a PCR's cleaner deletes it 15 min after creation): forget it
//! ```
//!
//! Exactly-once issuance does not rest on this process's memory: every write carries the
//! resourceVersion the decision was made on, and the apiserver refuses to change a certificate once
//! set (a PCR's whole status once terminal), so a replayed event, a restart or a second replica can at
//! worst cause a 409.

mod approve;
mod approver;
pub mod backoff;
mod ca_reload;
pub(crate) use ca_reload::set_ca_gauges;
pub mod client;
pub mod events;
pub mod pcr;
pub mod phase;
pub mod plan;
pub mod queue;
pub mod ratelimit;
mod store;
mod worker;
mod write;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::audit::{AuditFile, Confirmed, Record};
use crate::engine::Engine;
use crate::metrics::{status_code, ApiOperation, Metrics};
use crate::server::Readiness;
use backoff::Backoff;
use events::{EventRecorder, EventType, ObjectEvent};
use pcr::PcrVersion;
pub use phase::{phase_of, Phase};
use plan::Kind;
use queue::WorkQueue;
use ratelimit::TokenBucket;
use store::{Key, Observed, Seen, Store};
pub use write::path_segment;
use write::StatusWriter;

/// Controller tuning, from `ControllerSettings`.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub qps: f64,
    pub burst: u32,
    pub workers: usize,
    pub events: bool,
    /// Reported as the events' `reportingInstance`.
    pub identity: String,
    /// How often the CA files are checked for a change.
    pub ca_poll_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Cap of the watch's reconnect backoff: how long after the apiserver returns the signer may still
    /// be waiting to notice.
    pub watch_backoff_max: Duration,
    /// The audit file (`audit.file`), opened at startup.
    pub audit: Option<Arc<AuditFile>>,
}

impl ControllerConfig {
    pub fn from_settings(s: &crate::config::ControllerSettings, identity: String) -> Self {
        ControllerConfig {
            qps: s.qps,
            burst: s.burst,
            workers: s.workers.max(1),
            events: s.events,
            identity,
            ca_poll_interval: Duration::from_secs(2),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(300),
            watch_backoff_max: Duration::from_secs(5),
            audit: None,
        }
    }
}

/// State shared between watchers, workers and housekeeping.
struct Shared {
    client: kube::Client,
    engine: Arc<Engine>,
    signer_names: Vec<String>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    store: Store,
    queue: WorkQueue<Key>,
    backoff: Mutex<Backoff<Key>>,
    writer: StatusWriter,
    events: EventRecorder,
    leader: watch::Receiver<bool>,
    watch_backoff_max: Duration,
    /// The (signer, kind) pairs watched: every signer's CSRs, and PCRs once discovery found the API.
    watched: Mutex<Vec<(usize, Kind)>>,
    audit: Option<Arc<AuditFile>>,
    /// Reported in audit records.
    identity: String,
    /// Certificates written without a success answer, until the CSR is seen again.
    unconfirmed: Mutex<HashMap<Key, Unconfirmed>>,
}

/// A certificate whose status write failed: it may be on the CSR all the same.
pub(crate) struct Unconfirmed {
    /// The chain as written.
    certificate: Vec<u8>,
    snap: store::Snapshot,
    plan: plan::Plan,
    record: Record,
    started: std::time::Instant,
}

impl Shared {
    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff<Key>> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    fn remember_unconfirmed(&self, key: &Key, u: Unconfirmed) {
        self.unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), u);
    }

    fn take_unconfirmed(&self, key: &Key) -> Option<Unconfirmed> {
        self.unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// Folds one observed version of an object into the store and queues it when it needs a decision.
    fn apply(&self, seen: Seen) {
        self.observe(seen, Confirmed::Watch);
    }

    /// `apply`, saying how the version was obtained (for a certificate confirmed by it).
    fn observe(&self, seen: Seen, via: Confirmed) {
        let key = seen.key.clone();
        if !matches!(seen.phase, Phase::Approved | Phase::Pending) {
            self.settle_unconfirmed(&key, seen.certificate.as_deref(), via);
        }
        match self.store.observe(seen, SystemTime::now()) {
            Observed::Stale => {}
            Observed::Queue => self.queue.add(key),
            Observed::FirstSeenPending { uid } => {
                if self.is_leader() {
                    self.events.record(ObjectEvent {
                        kind: key.kind,
                        api_version: self.api_version(key.kind),
                        namespace: key.namespace.as_deref().map(str::to_string),
                        name: key.name.to_string(),
                        uid,
                        type_: EventType::Normal,
                        reason: "WaitingForApproval",
                        message: format!(
                            "waiting for approval; {} will sign once the request is approved",
                            self.signer_names[key.signer]
                        ),
                    });
                }
            }
            Observed::Settled => self.backoff().forget(&key),
        }
    }

    /// The API version objects of `kind` are read and written in.
    fn api_version(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CertificateSigningRequest => "certificates.k8s.io/v1",
            Kind::PodCertificateRequest => self.writer.pcr_version().api_version(),
        }
    }

    /// The object reached a final state: a certificate we wrote without an answer is issued if it is
    /// the one there; otherwise it was never used (its `signed` record says what was signed).
    fn settle_unconfirmed(&self, key: &Key, on_object: Option<&[u8]>, via: Confirmed) {
        let Some(u) = self.take_unconfirmed(key) else {
            return;
        };
        if on_object == Some(u.certificate.as_slice()) {
            worker::confirm_unconfirmed(self, key, u, via);
        } else {
            tracing::info!(
                csr = key.csr_name().map(tracing::field::display),
                pcr = key.pcr_name(),
                signer = %self.signer_names[key.signer],
                serial = %u.record.serial,
                sha256 = %u.record.sha256,
                "a certificate signed for this request was not used: the object holds another or none"
            );
        }
    }

    fn remove(&self, key: &Key) {
        self.take_unconfirmed(key);
        self.store.remove(key);
        self.backoff().forget(key);
    }

    /// Updates the approved-not-issued gauges from the store.
    fn update_gauges(&self) {
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let backlog = self.store.backlog(&watched, SystemTime::now());
        for ((signer, kind), (count, oldest)) in watched.iter().zip(backlog) {
            self.metrics
                .set_backlog(&self.signer_names[*signer], kind.label(), count, oldest);
        }
    }

    /// Queues every CSR that waits for a decision (after gaining leadership, or a CA reload).
    fn enqueue_all_approved(&self) {
        for k in self.store.approved_keys() {
            self.queue.add(k);
        }
    }
}

/// The controller: owns the watches, the queue and the workers.
pub struct Controller {
    shared: Arc<Shared>,
    workers: usize,
    ca_poll_interval: Duration,
    events_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("signers", &self.shared.signer_names)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Controller {
    pub fn new(
        client: kube::Client,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        leader: watch::Receiver<bool>,
        cfg: ControllerConfig,
    ) -> Controller {
        let signer_names: Vec<String> = engine.signers().map(|s| s.name().to_string()).collect();
        let (events, events_task) = if cfg.events {
            // Events get their own budget (a fifth of the API budget) so they never slow writes.
            let (r, t) = EventRecorder::start(
                client.clone(),
                cfg.identity.clone(),
                metrics.clone(),
                (cfg.qps / 5.0).max(1.0),
                (cfg.burst / 2).max(10),
            );
            (r, Some(t))
        } else {
            (EventRecorder::disabled(), None)
        };
        let watched = (0..signer_names.len())
            .map(|s| (s, Kind::CertificateSigningRequest))
            .collect();
        let shared = Arc::new(Shared {
            client: client.clone(),
            engine,
            signer_names,
            readiness,
            store: Store::default(),
            queue: WorkQueue::new(),
            backoff: Mutex::new(Backoff::new(cfg.backoff_base, cfg.backoff_max)),
            writer: StatusWriter::new(
                client.clone(),
                TokenBucket::new(cfg.qps, cfg.burst),
                metrics.clone(),
            ),
            metrics,
            events,
            leader,
            watch_backoff_max: cfg.watch_backoff_max,
            watched: Mutex::new(watched),
            audit: cfg.audit.clone(),
            identity: cfg.identity.clone(),
            unconfirmed: Mutex::new(HashMap::new()),
        });
        Controller {
            shared,
            workers: cfg.workers,
            ca_poll_interval: cfg.ca_poll_interval,
            events_task,
        }
    }

    /// Runs until `shutdown` turns true: then stops taking work, lets in-flight decisions finish
    /// and returns (the caller releases the lease afterwards).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> crate::Result<()> {
        let shared = self.shared.clone();
        let mut background = tokio::task::JoinSet::new();
        for signer in 0..shared.signer_names.len() {
            background.spawn(watch_kind(
                shared.clone(),
                signer,
                Kind::CertificateSigningRequest,
                Api::<CertificateSigningRequest>::all(shared.client.clone()),
                store::seen_csr,
            ));
        }
        background.spawn(start_pcr_watches(shared.clone()));
        for (signer, s) in shared.engine.signers().enumerate() {
            if s.auto_approve().is_some() {
                background.spawn(approver::approver(shared.clone(), signer));
            }
        }
        background.spawn(leadership_changes(shared.clone()));
        background.spawn(gauges(shared.clone()));
        let reload = shared.clone();
        background.spawn(ca_reload::ca_reload(
            shared.engine.clone(),
            shared.signer_names.clone(),
            shared.metrics.clone(),
            self.ca_poll_interval,
            move || reload.enqueue_all_approved(),
        ));

        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.workers {
            workers.spawn(worker::worker(shared.clone(), shutdown.clone()));
        }
        tracing::info!(signers = ?shared.signer_names, workers = self.workers, "controller started");

        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tracing::info!("shutting down: finishing in-flight work");
        shared.queue.shutdown();
        while workers.join_next().await.is_some() {}
        background.shutdown().await;
        shared.update_gauges();
        if let Some(t) = self.events_task.take() {
            // The sender task ends when the last recorder (held by `Shared`) is dropped; give
            // queued events a moment to go out, they are best effort.
            drop(shared);
            drop(self);
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        tracing::info!("controller stopped");
        Ok(())
    }
}

/// Finds the served PCR version and starts a PCR watch for every signer whose engine signs pods. The
/// CSR watches run meanwhile: a cluster without PCRs (1.35/1.36 without opt-in) is logged once, and
/// a failed discovery is retried.
async fn start_pcr_watches(shared: Arc<Shared>) {
    let signers: Vec<usize> = shared
        .engine
        .signers()
        .enumerate()
        .filter(|(_, s)| s.signs_pods())
        .map(|(i, _)| i)
        .collect();
    if signers.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(500);
    let served = loop {
        match pcr::discover(&shared.client).await {
            Ok(Some(v)) => break v,
            Ok(None) => {
                tracing::warn!(
                    signers = ?signers.iter().map(|&s| &shared.signer_names[s]).collect::<Vec<_>>(),
                    "the cluster serves no PodCertificateRequest API (certificates.k8s.io/v1 or v1beta1): pod certificates are not signed, CSRs are"
                );
                return;
            }
            Err(e) => {
                shared
                    .metrics
                    .api_error(ApiOperation::List, crate::metrics::status_code(&e));
                tracing::warn!(error = %crate::error::chain(&e), "API discovery for PodCertificateRequests failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(shared.watch_backoff_max.max(Duration::from_secs(1)));
            }
        }
    };
    shared.writer.set_pcr_served(served);
    let version = served.version;
    tracing::info!(api_version = version.api_version(), signers = ?signers.iter().map(|&s| &shared.signer_names[s]).collect::<Vec<_>>(), "watching PodCertificateRequests");
    let mut watches = tokio::task::JoinSet::new();
    for signer in signers {
        shared.metrics.init_kind(
            &shared.signer_names[signer],
            Kind::PodCertificateRequest.label(),
        );
        shared
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((signer, Kind::PodCertificateRequest));
        let shared = shared.clone();
        match version {
            PcrVersion::V1 => watches.spawn(watch_kind(
                shared.clone(),
                signer,
                Kind::PodCertificateRequest,
                Api::<k8s_openapi::api::certificates::v1::PodCertificateRequest>::all(
                    shared.client.clone(),
                ),
                pcr::seen_v1,
            )),
            PcrVersion::V1beta1 => watches.spawn(watch_kind(
                shared.clone(),
                signer,
                Kind::PodCertificateRequest,
                Api::<k8s_openapi::api::certificates::v1beta1::PodCertificateRequest>::all(
                    shared.client.clone(),
                ),
                pcr::seen_v1beta1,
            )),
        };
    }
    // The watches live as long as this task (aborted with the other background tasks).
    while watches.join_next().await.is_some() {}
}

/// One watch: a signer's objects of one kind, folded into the store through `seen_of`.
async fn watch_kind<K>(
    shared: Arc<Shared>,
    signer: usize,
    kind: Kind,
    api: Api<K>,
    seen_of: fn(usize, &str, &K) -> Option<Seen>,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let name = shared.signer_names[signer].clone();
    let cfg = watcher::Config::default().fields(&format!("spec.signerName={name}"));
    // Not `default_backoff()`: client-go's reflector numbers (0.8 s doubling to 30 s, reset only after
    // two quiet minutes) leave a signer idle for up to 30 s after the apiserver is back.
    let mut stream = watcher(api, cfg)
        .backoff(WatchBackoff::new(shared.watch_backoff_max))
        .boxed();
    let mut synced = false;
    let mut relist: Option<HashSet<Key>> = None;
    let key_of = |o: &K| Key {
        signer,
        kind,
        namespace: o.namespace().map(Arc::from),
        name: Arc::from(o.name_any()),
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(o)) => {
                if let Some(seen) = seen_of(signer, &name, &o) {
                    shared.apply(seen);
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(uid) = o.uid() {
                    shared.events.forget(&uid);
                }
                shared.remove(&key_of(&o));
            }
            Ok(watcher::Event::Init) => relist = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert(key_of(&o));
                }
                if let Some(seen) = seen_of(signer, &name, &o) {
                    shared.apply(seen);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relist.take() {
                    if synced {
                        tracing::info!(signer = %name, kind = kind.label(), objects = seen.len(), "relisted after a watch failure");
                    }
                    // Objects deleted while the watch was down never sent a Delete.
                    shared.store.retain_listed(signer, kind, &seen);
                    shared
                        .backoff()
                        .retain(|k| k.signer != signer || k.kind != kind || seen.contains(k));
                }
                if !synced {
                    synced = true;
                    // Readiness counts the CSR watches (one per signer); a PCR watch that cannot
                    // sync shows in its logs and watch_restarts_total{kind="pcr"}.
                    if kind == Kind::CertificateSigningRequest {
                        shared.readiness.mark_synced();
                    }
                    tracing::info!(signer = %name, kind = kind.label(), "watch synced");
                }
            }
            Err(e) => {
                let (op, code) = match &e {
                    watcher::Error::InitialListFailed(e) => (ApiOperation::List, status_code(e)),
                    watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
                        (ApiOperation::Watch, status_code(e))
                    }
                    watcher::Error::WatchError(s) => (ApiOperation::Watch, s.code),
                    watcher::Error::NoResourceVersion => (ApiOperation::Watch, 0),
                };
                shared.metrics.api_error(op, code);
                shared
                    .metrics
                    .watch_restarts
                    .with_label_values(&[name.as_str(), kind.label()])
                    .inc();
                // 410 Gone is routine (history compacted): the watcher relists by itself.
                if code == 410 {
                    tracing::info!(signer = %name, kind = kind.label(), error = %e, "watch expired; relisting");
                } else {
                    tracing::warn!(signer = %name, kind = kind.label(), error = %e, "watch failed; retrying");
                }
            }
        }
    }
}

/// Watch reconnect delays: 250 ms doubling up to `max`, with ±20 % jitter so replicas do not reconnect in
/// step; back to 250 ms as soon as the watch yields again.
struct WatchBackoff {
    next: Duration,
    max: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> WatchBackoff {
        WatchBackoff {
            next: Self::FIRST.min(max),
            max,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        Some(d.mul_f64(rand::random_range(0.8..1.2)))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

async fn leadership_changes(shared: Arc<Shared>) {
    let mut rx = shared.leader.clone();
    loop {
        if *rx.borrow_and_update() {
            shared.enqueue_all_approved();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn gauges(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        shared.update_gauges();
    }
}

#[cfg(test)]
mod tests {
    use super::WatchBackoff;
    use kube::runtime::utils::Backoff as _;
    use std::time::Duration;

    #[test]
    fn watch_backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = WatchBackoff::new(Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).filter_map(|_| b.next()).collect();
        // 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s, each within ±20 %.
        let nominal = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000];
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(
                *d >= n.mul_f64(0.8) && *d <= n.mul_f64(1.2),
                "{d:?} vs {n:?}"
            );
        }
        b.reset();
        assert!(b.next().is_some_and(|d| d <= Duration::from_millis(300)));
    }
}
