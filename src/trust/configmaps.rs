//! Publishes every signer's bundle as one ConfigMap in each namespace `trustBundles.configMaps`
//! selects, on the leader only, whether or not the cluster serves ClusterTrustBundles.
//!
//! The ConfigMap (`configMaps.name`) has one key per signer (`configmap_key`: `example.com_mtls.pem`)
//! holding exactly the PEM of the signer's ClusterTrustBundle (`signer_bundle`, the same function the
//! ClusterTrustBundle publisher calls). The selected namespaces are listed at every resync and again
//! whenever a watch on them reports a change, so a namespace labelled now gets its ConfigMap within
//! a poll. Writes are server-side apply with our field manager, after a read that proves the
//! ConfigMap carries our managed-by label (forced, so an edit of an anchor is undone); a ConfigMap of
//! that name without the label is never changed or deleted (counted once per resync). Our ConfigMaps in namespaces no longer selected are
//! deleted, each after a read proving it ours and with its uid and resourceVersion as preconditions.
//! Failures back off per namespace (doubling from `poll` up to the resync period), are counted in
//! the trust-bundle metrics with `via="configmap"` and never stop signing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;

use super::publish::{backoff, delete_as_read, SyncError};
use super::{
    configmap_key, covers, is_ours, metadata_matches, recorded_retiring_since, signer_bundle,
    Bundle, BundleError, Clocks, TrustBundleSettings, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    RETIRING_SINCE_ANNOTATION,
};
use crate::engine::Engine;
use crate::metrics::{status_code, unix_seconds, Metrics};

const FIELD_MANAGER: &str = "csr-signer";
/// The `via` label of the trust-bundle metrics this publisher sets.
pub const VIA: &str = "configmap";

/// Every value of the `reason` label this publisher counts, created at zero on start.
pub const REASONS: [&str; 6] = [
    "not_owned",
    "no_root",
    "forbidden",
    "conflict",
    "invalid",
    "api_error",
];

/// The permissions a 403 points at.
const NEEDS: &str = "list/watch on namespaces and get/list/create/patch/delete on configmaps (the chart grants them with trustBundles.configMaps.enabled)";

/// What every selected namespace's ConfigMap should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    data: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// Where one namespace's ConfigMap stands.
#[derive(Default)]
struct NsState {
    /// What was last confirmed on the server (`None`: not yet, or not ours).
    confirmed: Option<Content>,
    next_due: Option<Instant>,
    failures: u32,
    /// The last error's reason, so a persisting error is logged once, not at every retry.
    last_error: Option<&'static str>,
}

/// A signer's side: its retiring clocks and the last bundle it could make.
#[derive(Default)]
struct SignerState {
    /// Only the retiring clocks are recorded on the ConfigMaps (published-since is the bundle's).
    clocks: Clocks,
    last_good: Option<Bundle>,
    no_root_logged: bool,
}

pub struct ConfigMapPublisher {
    client: kube::Client,
    engine: Arc<Engine>,
    settings: TrustBundleSettings,
    metrics: Arc<Metrics>,
    poll: Duration,
}

/// The state of one leadership term.
struct Term {
    selector: String,
    /// Selected namespaces that are not terminating, from the last list.
    selected: BTreeSet<String>,
    /// Namespaces where a ConfigMap of ours may remain although they are no longer selected.
    leaving: BTreeSet<String>,
    namespaces: HashMap<String, NsState>,
    signers: HashMap<String, SignerState>,
    /// Retiring clocks were read back from our ConfigMaps (once per term, before the first write).
    seeded: bool,
    list_due: Instant,
    resync_due: Instant,
    list_failures: u32,
    list_error: Option<&'static str>,
}

impl ConfigMapPublisher {
    pub fn new(
        client: kube::Client,
        engine: Arc<Engine>,
        settings: TrustBundleSettings,
        metrics: Arc<Metrics>,
        poll: Duration,
    ) -> ConfigMapPublisher {
        ConfigMapPublisher {
            client,
            engine,
            settings,
            metrics,
            poll,
        }
    }

    /// Publishes while this replica leads, until `stop` turns true.
    pub async fn run(self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let selector = match self.settings.config_maps.selector() {
            Ok(s) => s,
            Err(e) => {
                // Refused at load; only a Settings built by hand gets here.
                tracing::error!(error = %e, "trustBundles.configMaps.namespaceSelector is invalid; no ConfigMaps are published");
                return;
            }
        };
        loop {
            if *leader.borrow() {
                self.lead(&selector, &mut leader, &mut stop).await;
            } else {
                tokio::select! {
                    r = leader.changed() => if r.is_err() { return },
                    _ = stop.changed() => {}
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn lead(
        &self,
        selector: &str,
        leader: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let resync = Duration::from_secs(self.settings.resync_seconds);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        // Only a trigger: whatever it reports, the selected set comes from a fresh list.
        let mut changes = watcher(namespaces, watcher::Config::default().labels(selector))
            .default_backoff()
            .boxed();
        let mut watch_error_logged = false;
        let now = Instant::now();
        let mut term = Term {
            selector: selector.to_owned(),
            selected: BTreeSet::new(),
            leaving: BTreeSet::new(),
            namespaces: HashMap::new(),
            signers: HashMap::new(),
            seeded: false,
            list_due: now,
            resync_due: now,
            list_failures: 0,
            list_error: None,
        };
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                ev = changes.next() => match ev {
                    Some(Ok(_)) => {
                        watch_error_logged = false;
                        term.list_due = term.list_due.min(Instant::now());
                        continue;
                    }
                    Some(Err(e)) => {
                        if !watch_error_logged {
                            tracing::warn!(error = %crate::error::chain(&e), "watching namespaces failed; selected namespaces are still listed every resync");
                            watch_error_logged = true;
                        }
                        continue;
                    }
                    None => {}
                },
                r = leader.changed() => if r.is_err() || !*leader.borrow() { return },
                _ = stop.changed() => return,
            }
            self.pass(&mut term, resync).await;
        }
    }

    /// One round: relist if due, make the content, bring every namespace in line.
    async fn pass(&self, term: &mut Term, resync: Duration) {
        let now = Instant::now();
        let resync_now = now >= term.resync_due;
        if resync_now || now >= term.list_due {
            match self.list(term).await {
                Ok(()) => {
                    if term.list_error.take().is_some() {
                        tracing::info!("listing namespaces and ConfigMaps works again");
                    }
                    term.list_failures = 0;
                    term.list_due = now + resync;
                    if resync_now {
                        term.resync_due = now + resync;
                    }
                }
                Err(e) => {
                    self.count(e.as_str());
                    if term.list_error != Some(e.as_str()) {
                        tracing::error!(reason = e.as_str(), error = %e.describe("ConfigMap", NEEDS), "cannot list the namespaces selected for trust ConfigMaps; retrying");
                        term.list_error = Some(e.as_str());
                    }
                    term.list_failures = term.list_failures.saturating_add(1);
                    term.list_due = now + self.backoff(term.list_failures, resync);
                    term.resync_due = term.list_due;
                }
            }
        }
        if !term.seeded {
            return;
        }
        let Some(content) = self.content(term, resync_now) else {
            return;
        };
        let mut verified = resync_now;
        let selected: Vec<String> = term.selected.iter().cloned().collect();
        for ns in &selected {
            let state = term.namespaces.entry(ns.clone()).or_default();
            let changed = state.confirmed.as_ref() != Some(&content);
            if !changed && state.next_due.is_some_and(|due| now < due) {
                continue;
            }
            if state.confirmed.is_none() && state.next_due.is_some_and(|due| now < due) {
                // Failing (or not ours): wait for the backoff even though the content changed.
                continue;
            }
            match self.sync(ns, &content).await {
                Ok(()) => {
                    if state.last_error.take().is_some() || state.confirmed.is_none() {
                        tracing::info!(namespace = %ns, configmap = %self.settings.config_maps.name, "trust ConfigMap up to date");
                    }
                    state.confirmed = Some(content.clone());
                    verified = true;
                    state.failures = 0;
                    state.next_due = Some(now + resync);
                }
                Err(e) => {
                    let reason = e.as_str();
                    self.count(reason);
                    if state.last_error != Some(reason) {
                        tracing::error!(namespace = %ns, configmap = %self.settings.config_maps.name, reason, error = %e.describe("ConfigMap", NEEDS), "cannot publish the trust ConfigMap; retrying");
                        state.last_error = Some(reason);
                    }
                    state.confirmed = None;
                    state.failures = state.failures.saturating_add(1);
                    // Someone else's ConfigMap is looked at again once per resync, not at every poll.
                    let wait = match e {
                        SyncError::NotOwned => resync,
                        _ => self.backoff(state.failures, resync),
                    };
                    state.next_due = Some(now + wait);
                }
            }
        }
        let leaving: Vec<String> = term.leaving.iter().cloned().collect();
        for ns in leaving {
            let state = term.namespaces.entry(ns.clone()).or_default();
            if state.next_due.is_some_and(|due| now < due) && state.failures > 0 {
                continue;
            }
            match self.remove(&ns).await {
                Ok(()) => {
                    term.leaving.remove(&ns);
                    term.namespaces.remove(&ns);
                }
                Err(e) => {
                    let reason = e.as_str();
                    self.count(reason);
                    if state.last_error != Some(reason) {
                        tracing::error!(namespace = %ns, reason, error = %e.describe("ConfigMap", NEEDS), "cannot delete the trust ConfigMap of a namespace no longer selected; retrying");
                        state.last_error = Some(reason);
                    }
                    state.failures = state.failures.saturating_add(1);
                    state.next_due = Some(now + self.backoff(state.failures, resync));
                }
            }
        }
        self.report(term, &content, verified);
    }

    /// Lists the selected namespaces and our ConfigMaps (finding ours in namespaces no longer
    /// selected, and, once per term, the retiring clocks recorded on them).
    async fn list(&self, term: &mut Term) -> Result<(), SyncError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let listed = namespaces
            .list(&ListParams::default().labels(&term.selector))
            .await
            .map_err(SyncError::from_kube)?;
        // A terminating namespace takes no new objects, and its deletion removes ours.
        let selected: BTreeSet<String> = listed
            .items
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let all_listed: BTreeSet<String> = listed
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let configmaps: Api<ConfigMap> = Api::all(self.client.clone());
        let ours = configmaps
            .list(
                &ListParams::default()
                    .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
                    .fields(&format!("metadata.name={}", self.settings.config_maps.name)),
            )
            .await
            .map_err(SyncError::from_kube)?;
        let mut recorded: BTreeMap<String, SystemTime> = BTreeMap::new();
        for cm in &ours.items {
            if !is_ours(cm.metadata.labels.as_ref()) {
                continue;
            }
            // The latest record wins: a retiring CA then stays longer, never shorter.
            for (fp, t) in recorded_retiring_since(cm.metadata.annotations.as_ref()) {
                let e = recorded.entry(fp).or_insert(t);
                *e = (*e).max(t);
            }
            if let Some(ns) = cm.metadata.namespace.as_deref() {
                if !all_listed.contains(ns) {
                    term.leaving.insert(ns.to_owned());
                }
            }
        }
        for ns in term.selected.difference(&all_listed) {
            term.leaving.insert(ns.clone());
        }
        for ns in &selected {
            term.leaving.remove(ns);
        }
        term.namespaces
            .retain(|ns, _| selected.contains(ns) || term.leaving.contains(ns));
        term.selected = selected;
        if !term.seeded {
            for signer in self.engine.signers() {
                term.signers
                    .entry(signer.name().to_owned())
                    .or_default()
                    .clocks
                    .retiring_since = recorded.clone();
            }
            term.seeded = true;
        }
        Ok(())
    }

    /// Every signer's current bundle as one ConfigMap's content. A signer that cannot make a bundle
    /// (`no_root`) keeps the last one it made; with none made yet nothing is written, so a broken
    /// configuration never takes anchors away from a namespace.
    fn content(&self, term: &mut Term, count_errors: bool) -> Option<Content> {
        let wall = SystemTime::now();
        let mut bundles = Vec::new();
        let mut complete = true;
        for signer in self.engine.signers() {
            let name = signer.name().to_owned();
            let state = term.signers.entry(name.clone()).or_default();
            match signer_bundle(signer, &mut state.clocks, &self.settings, wall).0 {
                Ok(b) => {
                    state.no_root_logged = false;
                    state.last_good = Some(b.clone());
                    bundles.push(b);
                }
                Err(e @ BundleError::NoRoot) => {
                    if count_errors {
                        self.metrics
                            .record_trust_bundle_error(&name, VIA, e.as_str());
                    }
                    if !state.no_root_logged {
                        tracing::error!(signer = %name, reason = e.as_str(), error = %e, "cannot make the trust bundle for the ConfigMaps");
                        state.no_root_logged = true;
                    }
                    match &state.last_good {
                        Some(b) => bundles.push(b.clone()),
                        None => complete = false,
                    }
                }
            }
        }
        if !complete {
            return None;
        }
        let mut data = BTreeMap::new();
        let mut labels = BTreeMap::new();
        let mut retiring: BTreeMap<String, String> = BTreeMap::new();
        for b in bundles {
            data.insert(configmap_key(&b.signer), b.pem);
            labels.extend(b.labels);
            if let Some(v) = b.annotations.get(RETIRING_SINCE_ANNOTATION) {
                if let Ok(m) = serde_json::from_str::<BTreeMap<String, String>>(v) {
                    for (fp, t) in m {
                        // RFC 3339 in UTC with seconds compares as text; the later one wins.
                        let e = retiring.entry(fp).or_insert_with(|| t.clone());
                        if t > *e {
                            *e = t;
                        }
                    }
                }
            }
        }
        let mut annotations = BTreeMap::new();
        if !retiring.is_empty() {
            annotations.insert(
                RETIRING_SINCE_ANNOTATION.to_owned(),
                serde_json::to_string(&retiring).unwrap_or_default(),
            );
        }
        Some(Content {
            data,
            labels,
            annotations,
        })
    }

    /// Makes namespace `ns` hold `content` in our ConfigMap, unless the name is someone else's.
    async fn sync(&self, ns: &str, content: &Content) -> Result<(), SyncError> {
        let name = &self.settings.config_maps.name;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let existing = api.get_opt(name).await.map_err(SyncError::from_kube)?;
        let up_to_date = match &existing {
            Some(cm) if !is_ours(cm.metadata.labels.as_ref()) => return Err(SyncError::NotOwned),
            Some(cm) => {
                cm.data.as_ref() == Some(&content.data)
                    && metadata_matches(&cm.metadata, &content.labels, &content.annotations)
            }
            None => false,
        };
        if up_to_date {
            return Ok(());
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": content.labels,
                "annotations": content.annotations,
            },
            "data": content.data,
        });
        // Forced: the read above proved the ConfigMap ours, and an edit of an anchor (which moves the
        // field to the editor's manager) must be undone, not reported as a conflict forever. Only the
        // fields we set are taken back; anything else in the ConfigMap stays as it is.
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(SyncError::from_kube)?;
        tracing::info!(namespace = %ns, configmap = %name, "trust ConfigMap written");
        Ok(())
    }

    /// Deletes our ConfigMap from a namespace no longer selected; someone else's stays.
    async fn remove(&self, ns: &str) -> Result<(), SyncError> {
        let name = &self.settings.config_maps.name;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let Some(cm) = api.get_opt(name).await.map_err(SyncError::from_kube)? else {
            return Ok(());
        };
        if !is_ours(cm.metadata.labels.as_ref()) {
            return Ok(());
        }
        match api.delete(name, &delete_as_read(&cm.metadata)).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, configmap = %name, "trust ConfigMap of a namespace no longer selected deleted");
                Ok(())
            }
            Err(e) if status_code(&e) == 404 => Ok(()),
            Err(e) => Err(SyncError::from_kube(e)),
        }
    }

    /// A namespace's ConfigMap carries every signer, so its failure counts for each.
    fn count(&self, reason: &str) {
        for signer in self.engine.signers() {
            self.metrics
                .record_trust_bundle_error(signer.name(), VIA, reason);
        }
    }

    /// Per signer: when every selected namespace was last confirmed current (`verified`: this pass
    /// read or wrote the server), and whether one of them lacks the signing CA's anchor.
    fn report(&self, term: &Term, content: &Content, verified: bool) {
        let all_current = term.selected.iter().all(|ns| {
            term.namespaces
                .get(ns)
                .is_some_and(|s| s.confirmed.as_ref() == Some(content))
        });
        for signer in self.engine.signers() {
            let name = signer.name();
            let Some(required) = term
                .signers
                .get(name)
                .and_then(|s| s.last_good.as_ref())
                .map(|b| &b.required)
            else {
                continue;
            };
            let key = configmap_key(name);
            let holds = |c: &Content| c.data.get(&key).is_some_and(|pem| covers(pem, required));
            // Most namespaces hold the current content: its PEM is parsed once, not per namespace.
            let current_holds = holds(content);
            let missing = term.selected.iter().any(|ns| {
                match term.namespaces.get(ns).and_then(|s| s.confirmed.as_ref()) {
                    Some(c) if c == content => !current_holds,
                    Some(c) => !holds(c),
                    None => true,
                }
            });
            self.metrics
                .set_trust_bundle_missing_anchor(name, VIA, missing);
            if all_current && verified {
                self.metrics.record_trust_bundle_published(
                    name,
                    VIA,
                    unix_seconds(SystemTime::now()),
                );
            }
        }
    }

    fn backoff(&self, failures: u32, resync: Duration) -> Duration {
        backoff(self.poll, failures, resync)
    }
}
