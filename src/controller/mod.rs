//! The only code that talks to the apiserver about CertificateSigningRequests.
//!
//! ```text
//!  watch (one per signerName, fieldSelector spec.signerName=<name>)
//!     │  every add/update, duplicates and replays included
//!     ▼
//!  store: a metadata-light record per CSR (no certificate bytes, no managedFields; the request
//!     │   itself is kept only while the CSR is approved and waiting)
//!     ▼
//!  queue (dedup per CSR, per-key backoff) ──► worker: decide (Appendix B) ──► engine.sign
//!                                                    │
//!            Issued  → merge-patch /status {certificate} with metadata.resourceVersion precondition
//!            Refused → merge-patch /status {conditions + one Failed} with the same precondition
//!            Err     → transient: retry with backoff, never Failed
//!            409     → re-read the CSR and decide again
//! ```
//!
//! Exactly-once issuance does not rest on this process's memory: every write carries the
//! resourceVersion the decision was made on, and the apiserver refuses to change a certificate once
//! set, so a replayed event, a restart or a second replica can at worst cause a 409.

pub mod backoff;
pub mod events;
pub mod queue;
pub mod ratelimit;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use crate::engine::{Decision, Engine, SignRequest};
use crate::leader::status_code;
use crate::metrics::{ApiOperation, Metrics, Outcome};
use crate::server::Readiness;
use backoff::Backoff;
use events::{CsrEvent, EventRecorder, EventType};
use queue::WorkQueue;
use ratelimit::TokenBucket;

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
        }
    }
}

/// A CSR, by signer (index into the configured signers) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    signer: usize,
    name: Arc<str>,
}

/// Where a CSR stands, from our point of view (k8s-csr-rules §1.3–1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No Approved/Denied/Failed condition and no certificate.
    Pending,
    /// Approved, not denied, not failed, no certificate: ours to decide.
    Approved,
    /// Has a certificate.
    Issued,
    /// Denied (whatever else it has).
    Denied,
    /// Has a Failed condition with status True (or empty).
    Failed,
}

/// What a decision needs from the CSR; held only while the CSR is approved and waiting.
#[derive(Debug)]
struct Work {
    request: Vec<u8>,
    usages: Vec<String>,
    expiration_seconds: Option<i32>,
    annotations: Option<BTreeMap<String, String>>,
    username: String,
    groups: Vec<String>,
    /// Kept whole: a merge patch replaces the list, and Approved must survive a Failed write.
    conditions: Vec<CertificateSigningRequestCondition>,
}

/// The cached record of one CSR.
#[derive(Debug)]
struct Entry {
    uid: String,
    resource_version: String,
    phase: Phase,
    /// The Approved condition's timestamp (second resolution).
    approved_at: Option<SystemTime>,
    /// When this process saw the CSR turn approved, if it saw it pending first: a sharper start
    /// for the latency metric than the truncated condition timestamp.
    observed_approval: Option<SystemTime>,
    work: Option<Arc<Work>>,
}

/// Classifies a CSR per Appendix B.
pub fn phase_of(csr: &CertificateSigningRequest) -> Phase {
    let status = csr.status.as_ref();
    if status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return Phase::Issued;
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t);
    if has("Denied") {
        return Phase::Denied;
    }
    if conditions
        .iter()
        .any(|c| c.type_ == "Failed" && (c.status.is_empty() || c.status == "True"))
    {
        return Phase::Failed;
    }
    if has("Approved") {
        return Phase::Approved;
    }
    Phase::Pending
}

fn approved_time(csr: &CertificateSigningRequest) -> Option<SystemTime> {
    let c = csr
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Approved")?;
    let t = c
        .last_update_time
        .as_ref()
        .or(c.last_transition_time.as_ref())?;
    Some(SystemTime::from(t.0))
}

/// resourceVersions are opaque, but every apiserver we talk to issues increasing decimals; when
/// both parse, an older one is a replayed event and can be skipped. Correctness never depends on
/// this (the write precondition does), it only saves a wasted 409.
fn is_older(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n < o,
        _ => false,
    }
}

/// State shared between watchers, workers and housekeeping.
struct Shared {
    engine: Arc<Engine>,
    signer_names: Vec<String>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    store: Mutex<HashMap<Key, Entry>>,
    queue: WorkQueue<Key>,
    backoff: Mutex<Backoff<Key>>,
    limiter: TokenBucket,
    events: EventRecorder,
    leader: watch::Receiver<bool>,
    apis: Vec<Api<CertificateSigningRequest>>,
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff<Key>> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Folds one observed version of a CSR into the store and queues it when it needs a decision.
    fn apply(&self, signer: usize, csr: &CertificateSigningRequest) {
        let Some(name) = csr.metadata.name.as_deref() else {
            return;
        };
        // The server-side selector already filters; this guards against a server ignoring it.
        if csr.spec.signer_name != self.signer_names[signer] {
            return;
        }
        let rv = csr.metadata.resource_version.clone().unwrap_or_default();
        let uid = csr.metadata.uid.clone().unwrap_or_default();
        let phase = phase_of(csr);
        let key = Key {
            signer,
            name: Arc::from(name),
        };
        let mut first_seen_pending = false;
        {
            let mut store = self.store();
            let previous = store.get(&key);
            if let Some(prev) = previous {
                if prev.uid == uid && is_older(&rv, &prev.resource_version) {
                    return;
                }
            }
            let was_pending = previous.is_some_and(|p| p.uid == uid && p.phase == Phase::Pending);
            let observed_approval = match previous {
                Some(p) if p.uid == uid && p.phase == Phase::Approved => p.observed_approval,
                _ if was_pending && phase == Phase::Approved => Some(SystemTime::now()),
                _ => None,
            };
            if phase == Phase::Pending && previous.is_none_or(|p| p.uid != uid) {
                first_seen_pending = true;
            }
            let work = (phase == Phase::Approved).then(|| Arc::new(work_of(csr)));
            store.insert(
                key.clone(),
                Entry {
                    uid: uid.clone(),
                    resource_version: rv,
                    phase,
                    approved_at: approved_time(csr),
                    observed_approval,
                    work,
                },
            );
        }
        match phase {
            Phase::Approved => self.queue.add(key),
            Phase::Pending if first_seen_pending && self.is_leader() => {
                self.events.record(CsrEvent {
                    csr_name: name.to_string(),
                    csr_uid: uid,
                    type_: EventType::Normal,
                    reason: "WaitingForApproval",
                    message: format!(
                        "waiting for approval; {} will sign once the request is approved",
                        self.signer_names[signer]
                    ),
                });
            }
            _ => self.backoff().forget(&key),
        }
    }

    fn remove(&self, signer: usize, name: &str) {
        let key = Key {
            signer,
            name: Arc::from(name),
        };
        self.store().remove(&key);
        self.backoff().forget(&key);
    }

    /// Updates the approved-not-issued gauges from the store.
    fn update_gauges(&self) {
        let now = SystemTime::now();
        let mut counts = vec![0i64; self.signer_names.len()];
        let mut oldest = vec![0f64; self.signer_names.len()];
        for (key, e) in self.store().iter() {
            if e.phase == Phase::Approved {
                counts[key.signer] += 1;
                let since = e.observed_approval.or(e.approved_at).unwrap_or(now);
                let age = now.duration_since(since).unwrap_or_default().as_secs_f64();
                if age > oldest[key.signer] {
                    oldest[key.signer] = age;
                }
            }
        }
        for (i, name) in self.signer_names.iter().enumerate() {
            self.metrics
                .approved_not_issued
                .with_label_values(&[name.as_str()])
                .set(counts[i]);
            self.metrics
                .oldest_approved_not_issued
                .with_label_values(&[name.as_str()])
                .set(oldest[i]);
        }
    }

    /// Queues every CSR that waits for a decision (after gaining leadership).
    fn enqueue_all_approved(&self) {
        let keys: Vec<Key> = self
            .store()
            .iter()
            .filter(|(_, e)| e.phase == Phase::Approved)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.queue.add(k);
        }
    }
}

fn work_of(csr: &CertificateSigningRequest) -> Work {
    // Only the lifetime annotation feeds a decision; the rest (notably kubectl's
    // last-applied-configuration, a second copy of the whole request) stays out of memory.
    let annotations = csr.metadata.annotations.as_ref().and_then(|a| {
        let kept: BTreeMap<String, String> = a
            .iter()
            .filter(|(k, _)| k.as_str() == crate::engine::DURATION_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
    Work {
        request: csr.spec.request.0.clone(),
        usages: csr.spec.usages.clone().unwrap_or_default(),
        expiration_seconds: csr.spec.expiration_seconds,
        annotations,
        username: csr.spec.username.clone().unwrap_or_default(),
        groups: csr.spec.groups.clone().unwrap_or_default(),
        conditions: csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

/// What happened to one queued key.
enum Step {
    /// Nothing more to do for this CSR.
    Done,
    /// Decide again now (the CSR changed under us).
    Again,
    /// Transient failure: retry after backoff.
    Retry,
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
        let apis = signer_names
            .iter()
            .map(|_| Api::<CertificateSigningRequest>::all(client.clone()))
            .collect();
        let shared = Arc::new(Shared {
            engine,
            signer_names,
            metrics,
            readiness,
            store: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(),
            backoff: Mutex::new(Backoff::new(cfg.backoff_base, cfg.backoff_max)),
            limiter: TokenBucket::new(cfg.qps, cfg.burst),
            events,
            leader,
            apis,
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
            background.spawn(watch_signer(shared.clone(), signer));
        }
        background.spawn(leadership_changes(shared.clone()));
        background.spawn(gauges(shared.clone()));
        background.spawn(ca_reload(shared.clone(), self.ca_poll_interval));

        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.workers {
            workers.spawn(worker(shared.clone(), shutdown.clone()));
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

async fn watch_signer(shared: Arc<Shared>, signer: usize) {
    let name = shared.signer_names[signer].clone();
    let api = shared.apis[signer].clone();
    let cfg = watcher::Config::default().fields(&format!("spec.signerName={name}"));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut synced = false;
    let mut relist: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(csr)) => shared.apply(signer, &csr),
            Ok(watcher::Event::Delete(csr)) => {
                if let Some(n) = csr.metadata.name.as_deref() {
                    shared.remove(signer, n);
                }
            }
            Ok(watcher::Event::Init) => relist = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(csr)) => {
                if let (Some(seen), Some(n)) = (relist.as_mut(), csr.metadata.name.as_deref()) {
                    seen.insert(n.to_string());
                }
                shared.apply(signer, &csr);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relist.take() {
                    // CSRs deleted while the watch was down never sent a Delete.
                    shared
                        .store()
                        .retain(|k, _| k.signer != signer || seen.contains(k.name.as_ref()));
                }
                if !synced {
                    synced = true;
                    shared.readiness.mark_synced();
                    tracing::info!(signer = %name, "watch synced");
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
                // 410 Gone is routine (history compacted): the watcher relists by itself.
                if code == 410 {
                    tracing::debug!(signer = %name, error = %e, "watch expired; relisting");
                } else {
                    tracing::warn!(signer = %name, error = %e, "watch failed; retrying");
                }
            }
        }
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

async fn ca_reload(shared: Arc<Shared>, every: Duration) {
    // Count a broken CA once per breakage, not once per poll.
    let mut last_error: Vec<Option<String>> = vec![None; shared.signer_names.len()];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for (i, name) in shared.signer_names.iter().enumerate() {
            let engine = shared.engine.clone();
            let n = name.clone();
            let res = tokio::task::spawn_blocking(move || {
                engine
                    .signer(&n)
                    .map(|s| (s.reload_ca_if_changed(), s.ca_not_after()))
            })
            .await;
            let Ok(Some((result, not_after))) = res else {
                continue;
            };
            match result {
                Ok(true) => {
                    last_error[i] = None;
                    let ts = unix_seconds(not_after);
                    shared
                        .metrics
                        .ca_not_after
                        .with_label_values(&[name.as_str()])
                        .set(ts);
                    tracing::info!(signer = %name, ca_not_after = ts, "CA reloaded");
                    // CSRs waiting on an expired CA may now be signable.
                    shared.enqueue_all_approved();
                }
                Ok(false) => last_error[i] = None,
                Err(e) => {
                    let msg = e.to_string();
                    if last_error[i].as_deref() != Some(msg.as_str()) {
                        shared
                            .metrics
                            .ca_reload_errors
                            .with_label_values(&[name.as_str()])
                            .inc();
                        tracing::error!(signer = %name, error = %msg, "new CA files rejected; still signing with the previous CA");
                        last_error[i] = Some(msg);
                    }
                }
            }
        }
    }
}

/// Seconds since the Unix epoch (negative before it), for gauges.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

async fn worker(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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

/// A snapshot of what the decision is based on.
struct Snapshot {
    uid: String,
    resource_version: String,
    approved_at: Option<SystemTime>,
    observed_approval: Option<SystemTime>,
    work: Arc<Work>,
}

async fn process(shared: &Arc<Shared>, key: &Key) -> Step {
    let snap = {
        let store = shared.store();
        let Some(e) = store.get(key) else {
            return Step::Done;
        };
        if e.phase != Phase::Approved {
            return Step::Done;
        }
        let Some(work) = e.work.clone() else {
            return Step::Done;
        };
        Snapshot {
            uid: e.uid.clone(),
            resource_version: e.resource_version.clone(),
            approved_at: e.approved_at,
            observed_approval: e.observed_approval,
            work,
        }
    };
    let signer_name = shared.signer_names[key.signer].clone();
    let started = Instant::now();

    let engine = shared.engine.clone();
    let work = snap.work.clone();
    let sname = signer_name.clone();
    let signed = tokio::task::spawn_blocking(move || {
        let signer = engine
            .signer(&sname)
            .ok_or_else(|| crate::Error::UnknownSigner(sname.clone()))?;
        let req = SignRequest {
            request: &work.request,
            usages: &work.usages,
            expiration_seconds: work.expiration_seconds,
            annotations: work.annotations.as_ref(),
            username: &work.username,
            groups: &work.groups,
        };
        let t = Instant::now();
        let d = signer.sign(&req, SystemTime::now());
        Ok::<_, crate::Error>((d, t.elapsed()))
    })
    .await;

    let decision = match signed {
        Ok(Ok((Ok(decision), took))) => {
            shared
                .metrics
                .signing_duration
                .with_label_values(&[signer_name.as_str()])
                .observe(took.as_secs_f64());
            decision
        }
        Ok(Ok((Err(e), _))) | Ok(Err(e)) => {
            return transient(
                shared,
                key,
                &snap,
                &signer_name,
                error_class(&e),
                &e.to_string(),
                started,
            );
        }
        Err(join) => {
            return transient(
                shared,
                key,
                &snap,
                &signer_name,
                "Internal",
                &join.to_string(),
                started,
            );
        }
    };

    let api = &shared.apis[key.signer];
    match decision {
        Decision::Issued(issued) => {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": snap.resource_version },
                "status": {
                    "certificate": base64::engine::general_purpose::STANDARD
                        .encode(issued.certificate_pem.as_bytes()),
                },
            });
            match write_status(shared, api, &key.name, patch).await {
                Ok(csr) => {
                    let not_after = humantime::format_rfc3339_seconds(issued.not_after).to_string();
                    let latency = issuance_latency(&snap);
                    let m = &shared.metrics;
                    m.decision(&signer_name, Outcome::Issued, "None");
                    m.issuance_latency
                        .with_label_values(&[signer_name.as_str()])
                        .observe(latency.as_secs_f64());
                    m.granted_lifetime
                        .with_label_values(&[signer_name.as_str()])
                        .observe(issued.granted_seconds as f64);
                    m.lifetime_requests
                        .with_label_values(&[signer_name.as_str(), issued.lifetime.as_str()])
                        .inc();
                    tracing::info!(
                        csr = %key.name,
                        signer = %signer_name,
                        requester = %snap.work.username,
                        outcome = "issued",
                        reason = "None",
                        serial = %issued.serial,
                        not_after = %not_after,
                        granted_seconds = issued.granted_seconds,
                        requested_seconds = ?issued.requested_seconds,
                        lifetime = issued.lifetime.as_str(),
                        latency_ms = latency.as_secs_f64() * 1e3,
                        "certificate issued"
                    );
                    let requested = issued
                        .requested_seconds
                        .map_or_else(|| "none".to_string(), |s| format!("{s}s"));
                    shared.events.record(CsrEvent {
                        csr_name: key.name.to_string(),
                        csr_uid: snap.uid.clone(),
                        type_: EventType::Normal,
                        reason: "Issued",
                        message: format!(
                            "issued certificate serial {} valid until {not_after}; granted {}s (requested {requested}, {})",
                            issued.serial,
                            issued.granted_seconds,
                            issued.lifetime.as_str()
                        ),
                    });
                    shared.apply(key.signer, &csr);
                    Step::Done
                }
                Err(w) => after_write_error(shared, key, &snap, &signer_name, w, started).await,
            }
        }
        Decision::Refused(refusal) => {
            let reason = refusal.reason.as_str();
            let mut conditions: Vec<serde_json::Value> = snap
                .work
                .conditions
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            let failed = CertificateSigningRequestCondition {
                type_: "Failed".to_string(),
                status: "True".to_string(),
                reason: Some(reason.to_string()),
                message: Some(refusal.message.clone()),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                last_transition_time: None,
            };
            match serde_json::to_value(&failed) {
                Ok(v) => conditions.push(v),
                Err(e) => {
                    return transient(
                        shared,
                        key,
                        &snap,
                        &signer_name,
                        "Encode",
                        &e.to_string(),
                        started,
                    )
                }
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": snap.resource_version },
                "status": { "conditions": conditions },
            });
            match write_status(shared, api, &key.name, patch).await {
                Ok(csr) => {
                    shared
                        .metrics
                        .decision(&signer_name, Outcome::Failed, reason);
                    tracing::info!(
                        csr = %key.name,
                        signer = %signer_name,
                        requester = %snap.work.username,
                        outcome = "failed",
                        reason,
                        message = %refusal.message,
                        latency_ms = started.elapsed().as_secs_f64() * 1e3,
                        "request refused"
                    );
                    shared.events.record(CsrEvent {
                        csr_name: key.name.to_string(),
                        csr_uid: snap.uid.clone(),
                        type_: EventType::Warning,
                        reason: "SigningFailed",
                        message: format!("{reason}: {}", refusal.message),
                    });
                    shared.apply(key.signer, &csr);
                    Step::Done
                }
                Err(w) => after_write_error(shared, key, &snap, &signer_name, w, started).await,
            }
        }
    }
}

fn issuance_latency(snap: &Snapshot) -> Duration {
    let now = SystemTime::now();
    // The condition timestamp has one-second resolution; when we watched the approval happen
    // within that second, our own observation is the sharper start.
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

/// Error class for the `reason` label of `outcome="error"`.
fn error_class(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::CaExpired { .. } => "CaExpired",
        crate::Error::Ca { .. } => "CaUnavailable",
        crate::Error::Crypto { .. } => "Crypto",
        crate::Error::Encode { .. } => "Encode",
        crate::Error::Kube { .. } => "ApiError",
        _ => "Internal",
    }
}

fn transient(
    shared: &Arc<Shared>,
    key: &Key,
    snap: &Snapshot,
    signer_name: &str,
    class: &'static str,
    message: &str,
    started: Instant,
) -> Step {
    shared.metrics.decision(signer_name, Outcome::Error, class);
    let failures = shared.backoff().failures(key);
    tracing::warn!(
        csr = %key.name,
        signer = %signer_name,
        requester = %snap.work.username,
        outcome = "error",
        reason = class,
        error = %message,
        attempt = failures + 1,
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "transient failure; will retry"
    );
    if class != "ApiError" {
        shared.events.record(CsrEvent {
            csr_name: key.name.to_string(),
            csr_uid: snap.uid.clone(),
            type_: EventType::Warning,
            reason: "SigningError",
            message: format!("{class}: {message} (will retry)"),
        });
    }
    Step::Retry
}

async fn write_status(
    shared: &Arc<Shared>,
    api: &Api<CertificateSigningRequest>,
    name: &str,
    patch: serde_json::Value,
) -> Result<CertificateSigningRequest, kube::Error> {
    shared.limiter.acquire().await;
    let res = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    if let Err(e) = &res {
        shared
            .metrics
            .api_error(ApiOperation::UpdateStatus, status_code(e));
    }
    res
}

async fn after_write_error(
    shared: &Arc<Shared>,
    key: &Key,
    snap: &Snapshot,
    signer_name: &str,
    e: kube::Error,
    started: Instant,
) -> Step {
    let code = status_code(&e);
    match code {
        409 => {
            // The CSR changed since we read it: re-read and decide again.
            tracing::debug!(csr = %key.name, signer = %signer_name, "conflict on status write; re-reading");
            shared.limiter.acquire().await;
            match shared.apis[key.signer].get_opt(&key.name).await {
                Ok(Some(csr)) => {
                    shared.apply(key.signer, &csr);
                    Step::Again
                }
                Ok(None) => {
                    shared.remove(key.signer, &key.name);
                    Step::Done
                }
                Err(e) => {
                    shared.metrics.api_error(ApiOperation::Get, status_code(&e));
                    transient(
                        shared,
                        key,
                        snap,
                        signer_name,
                        "ApiError",
                        &e.to_string(),
                        started,
                    )
                }
            }
        }
        404 => {
            shared.remove(key.signer, &key.name);
            Step::Done
        }
        _ => transient(
            shared,
            key,
            snap,
            signer_name,
            "ApiError",
            &e.to_string(),
            started,
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;
    use k8s_openapi::ByteString;

    fn csr(conds: &[(&str, &str)], cert: Option<&[u8]>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: cert.map(|c| ByteString(c.to_vec())),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_appendix_b() {
        assert_eq!(phase_of(&csr(&[], None)), Phase::Pending);
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], None)),
            Phase::Approved
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Denied", "True")], None)),
            Phase::Denied
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "True")], None)),
            Phase::Failed
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "")], None)),
            Phase::Failed
        );
        // A Failed condition with status False does not stop signing (HasTrueCondition).
        assert_eq!(
            phase_of(&csr(&[("Approved", "True"), ("Failed", "False")], None)),
            Phase::Approved
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], Some(b"x"))),
            Phase::Issued
        );
        assert_eq!(
            phase_of(&csr(&[("Approved", "True")], Some(b""))),
            Phase::Approved
        );
        assert_eq!(phase_of(&csr(&[("Denied", "True")], None)), Phase::Denied);
    }

    #[test]
    fn older_resource_versions_are_detected_only_when_numeric() {
        assert!(is_older("9", "10"));
        assert!(!is_older("10", "10"));
        assert!(!is_older("11", "10"));
        assert!(!is_older("abc", "10"));
    }

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
            resource_version: String::new(),
            approved_at: at,
            observed_approval: obs,
            work: work.clone(),
        };
        // Observed 10 s after the condition time: the watch lagged, trust the condition.
        let l = issuance_latency(&snap(Some(now), Some(now - Duration::from_secs(10))));
        assert!(l >= Duration::from_secs(10));
        // Observed within the truncated second: trust the observation.
        let l = issuance_latency(&snap(Some(now), Some(now - Duration::from_millis(900))));
        assert!(l < Duration::from_millis(900));
    }
}
