//! Publishes each signer's bundle as a ClusterTrustBundle, on the leader only.
//!
//! Every `poll` the desired bundles are recomputed from the engine's current CAs (a CA reloaded from
//! disk changes them); a bundle is written when it differs from what was last confirmed on the
//! server, and re-read every `resyncSeconds` in case someone edited or deleted it. Writes are
//! server-side apply with our field manager and without force, after a read that proves the object
//! carries our managed-by label: a bundle someone else owns is never changed, even if its name is
//! the one we would use. Failures back off (doubling from `poll` up to the resync period) and are
//! counted by reason; they never stop signing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, Preconditions,
};
use tokio::sync::watch;

use super::{
    covers, is_ours, metadata_matches, recorded_published_since, recorded_retiring_since,
    signer_bundle, Bundle, Clocks, TrustBundleSettings,
};
use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::engine::Engine;
use crate::metrics::{unix_seconds, Metrics};

const FIELD_MANAGER: &str = "csr-signer";
const GROUP: &str = "certificates.k8s.io";
/// The `via` label of the trust-bundle metrics this publisher sets.
pub const VIA: &str = "clustertrustbundle";

/// Why one sync failed (here or in `configmaps`); `as_str` is the `reason` label of
/// `trust_bundle_errors_total` and the log field.
#[derive(Debug)]
pub(super) enum SyncError {
    /// The API serves neither certificates.k8s.io/v1 nor v1beta1 clustertrustbundles.
    ApiUnavailable,
    /// The bundle's name is taken by an object without our managed-by label.
    NotOwned,
    /// See `BundleError::NoRoot`.
    NoRoot(super::BundleError),
    /// 403: usually `attest` on the signerName or a clustertrustbundles verb is missing.
    Forbidden(kube::Error),
    /// 409: from an apply, another field manager owns a field we set; from a delete, the object
    /// changed since it was read.
    Conflict(kube::Error),
    /// 422: the apiserver refused the object.
    Invalid(kube::Error),
    Api(kube::Error),
}

/// Every value of the `reason` label of `trust_bundle_errors_total`, created at zero on start.
pub const REASONS: [&str; 7] = [
    "api_unavailable",
    "not_owned",
    "no_root",
    "forbidden",
    "conflict",
    "invalid",
    "api_error",
];

impl SyncError {
    pub(super) fn from_kube(e: kube::Error) -> SyncError {
        match crate::metrics::status_code(&e) {
            403 => SyncError::Forbidden(e),
            409 => SyncError::Conflict(e),
            422 => SyncError::Invalid(e),
            _ => SyncError::Api(e),
        }
    }

    pub(super) fn as_str(&self) -> &'static str {
        match self {
            SyncError::ApiUnavailable => "api_unavailable",
            SyncError::NotOwned => "not_owned",
            SyncError::NoRoot(e) => e.as_str(),
            SyncError::Forbidden(_) => "forbidden",
            SyncError::Conflict(_) => "conflict",
            SyncError::Invalid(_) => "invalid",
            SyncError::Api(_) => "api_error",
        }
    }

    fn message(&self) -> String {
        self.describe(
            "ClusterTrustBundle",
            "\"attest\" on its signerName and get/list/create/patch/delete on clustertrustbundles",
        )
    }

    /// The log message: `kind` is the object's kind, `needs` the permissions a 403 points at.
    pub(super) fn describe(&self, kind: &str, needs: &str) -> String {
        match self {
            SyncError::ApiUnavailable => format!(
                "the apiserver serves no ClusterTrustBundle API ({GROUP}/v1 or v1beta1); trust bundles are not published"
            ),
            SyncError::NotOwned => format!(
                "a {kind} of this name exists without the label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}; it is left alone"
            ),
            SyncError::NoRoot(e) => e.to_string(),
            SyncError::Forbidden(e) => format!(
                "forbidden (the signer needs {needs}): {}",
                crate::error::chain(e)
            ),
            SyncError::Conflict(e) | SyncError::Invalid(e) | SyncError::Api(e) => {
                crate::error::chain(e)
            }
        }
    }
}

/// Where one signer's bundle stands.
#[derive(Default)]
struct SignerState {
    /// The PEM and annotations last confirmed on the server.
    confirmed: Option<(String, BTreeMap<String, String>)>,
    /// Since when each retiring CA has been retiring and each published CA in the bundle; read back
    /// from the bundle once per leadership.
    clocks: Clocks,
    seeded: bool,
    next_due: Option<Instant>,
    failures: u32,
    /// The last error's reason, so a persisting error is logged once, not at every retry.
    last_error: Option<&'static str>,
}

pub struct Publisher {
    client: kube::Client,
    engine: Arc<Engine>,
    settings: TrustBundleSettings,
    metrics: Arc<Metrics>,
    poll: Duration,
}

impl Publisher {
    pub fn new(
        client: kube::Client,
        engine: Arc<Engine>,
        settings: TrustBundleSettings,
        metrics: Arc<Metrics>,
        poll: Duration,
    ) -> Publisher {
        Publisher {
            client,
            engine,
            settings,
            metrics,
            poll,
        }
    }

    /// Publishes while this replica leads, until `stop` turns true.
    pub async fn run(self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            while !*leader.borrow() {
                tokio::select! {
                    r = leader.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
            self.lead(&mut leader, &mut stop).await;
            // Only the leader knows these times; a former leader's would go stale.
            for signer in self.engine.signers() {
                self.metrics.set_ca_published_since(signer.name(), &[]);
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn lead(&self, leader: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) {
        let resync = Duration::from_secs(self.settings.resync_seconds);
        let mut api: Option<(Api<DynamicObject>, ApiResource)> = None;
        let mut discovery_due = Instant::now();
        let mut discovery_failed = false;
        let mut states: HashMap<String, SignerState> = HashMap::new();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = leader.changed() => if r.is_err() || !*leader.borrow() { return },
                _ = stop.changed() => return,
            }
            let now = Instant::now();
            if api.is_none() && now >= discovery_due {
                match discover(&self.client).await {
                    Ok(Some(ar)) => {
                        tracing::info!(api_version = %ar.api_version, "publishing ClusterTrustBundles");
                        api = Some((Api::all_with(self.client.clone(), &ar), ar));
                        discovery_failed = false;
                    }
                    Ok(None) => {
                        // Counted at every look (once per resync) so the warning stays while the API
                        // is missing; logged once.
                        self.fail_all(&SyncError::ApiUnavailable, !discovery_failed);
                        discovery_failed = true;
                        discovery_due = now + resync;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error::chain(&e), "API discovery for ClusterTrustBundles failed; retrying");
                        discovery_due = now + self.poll * 4;
                    }
                }
            }
            let Some((api, ar)) = &api else { continue };
            for signer in self.engine.signers() {
                let name = signer.name().to_owned();
                let state = states.entry(name.clone()).or_default();
                if !state.seeded {
                    match api
                        .get_opt(&super::bundle_name(&name, &self.settings.stage))
                        .await
                    {
                        Ok(found) => {
                            if let Some(o) = found.filter(|o| is_ours(o.metadata.labels.as_ref())) {
                                state.clocks = Clocks {
                                    retiring_since: recorded_retiring_since(
                                        o.metadata.annotations.as_ref(),
                                    ),
                                    published_since: recorded_published_since(
                                        o.metadata.annotations.as_ref(),
                                    ),
                                };
                            }
                            state.seeded = true;
                        }
                        Err(e) => {
                            self.failed(&name, state, SyncError::from_kube(e), false, now, resync);
                            continue;
                        }
                    }
                }
                let (bundle, published_since) =
                    signer_bundle(signer, &mut state.clocks, &self.settings, SystemTime::now());
                let changed = match &bundle {
                    Ok(b) => {
                        state.confirmed.as_ref() != Some(&(b.pem.clone(), b.annotations.clone()))
                    }
                    Err(_) => false,
                };
                if !changed && state.next_due.is_some_and(|due| now < due) {
                    continue;
                }
                let (result, required) = match bundle {
                    Ok(b) => {
                        let required = b.required.clone();
                        (self.sync(api, ar, &b).await.map(|()| b), required)
                    }
                    Err(e) => (Err(SyncError::NoRoot(e)), Vec::new()),
                };
                match result {
                    Ok(b) => {
                        if state.last_error.take().is_some() || state.confirmed.is_none() {
                            tracing::info!(signer = %name, bundle = %b.name, "ClusterTrustBundle up to date");
                        }
                        self.metrics.record_trust_bundle_published(
                            &name,
                            VIA,
                            unix_seconds(SystemTime::now()),
                        );
                        self.metrics
                            .set_trust_bundle_missing_anchor(&name, VIA, false);
                        let since: Vec<(&str, f64)> = published_since
                            .iter()
                            .map(|(n, t)| (n.as_str(), unix_seconds(*t)))
                            .collect();
                        self.metrics.set_ca_published_since(&name, &since);
                        state.confirmed = Some((b.pem, b.annotations));
                        state.failures = 0;
                        state.next_due = Some(now + resync);
                    }
                    Err(e) => {
                        // The anchor is missing unless what the server last had already covers it.
                        let covered = !required.is_empty()
                            && state
                                .confirmed
                                .as_ref()
                                .is_some_and(|(pem, _)| covers(pem, &required));
                        self.failed(&name, state, e, covered, now, resync);
                    }
                }
            }
        }
    }

    fn failed(
        &self,
        name: &str,
        state: &mut SignerState,
        e: SyncError,
        covered: bool,
        now: Instant,
        resync: Duration,
    ) {
        let reason = e.as_str();
        self.metrics.record_trust_bundle_error(name, VIA, reason);
        self.metrics
            .set_trust_bundle_missing_anchor(name, VIA, !covered);
        if state.last_error != Some(reason) {
            tracing::error!(signer = %name, reason, error = %e.message(), "cannot publish the ClusterTrustBundle; retrying");
            state.last_error = Some(reason);
        }
        state.failures = state.failures.saturating_add(1);
        state.next_due = Some(now + backoff(self.poll, state.failures, resync));
    }

    /// The cluster has no ClusterTrustBundle API: counted (and logged if `log`). The missing-anchor gauge is
    /// left unset: there is no published bundle that could be wrong, and a critical alert on every
    /// 1.33–1.36 cluster without the beta API would be noise (the warning names the reason).
    fn fail_all(&self, e: &SyncError, log: bool) {
        if log {
            tracing::warn!(reason = e.as_str(), "{}", e.message());
        }
        for signer in self.engine.signers() {
            self.metrics
                .record_trust_bundle_error(signer.name(), VIA, e.as_str());
        }
    }

    /// Makes the server hold `b` and none of our other bundles for its signer.
    async fn sync(
        &self,
        api: &Api<DynamicObject>,
        ar: &ApiResource,
        b: &Bundle,
    ) -> Result<(), SyncError> {
        let existing = api.get_opt(&b.name).await.map_err(SyncError::from_kube)?;
        let up_to_date = match &existing {
            Some(obj) if !is_ours(obj.metadata.labels.as_ref()) => return Err(SyncError::NotOwned),
            Some(obj) => {
                obj.data["spec"]["trustBundle"].as_str() == Some(b.pem.as_str())
                    && obj.data["spec"]["signerName"].as_str() == Some(b.signer.as_str())
                    && metadata_matches(&obj.metadata, &b.labels, &b.annotations)
            }
            None => false,
        };
        if !up_to_date {
            let body = serde_json::json!({
                "apiVersion": ar.api_version,
                "kind": ar.kind,
                "metadata": { "name": b.name, "labels": b.labels, "annotations": b.annotations },
                "spec": { "signerName": b.signer, "trustBundle": b.pem },
            });
            api.patch(
                &b.name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(body),
            )
            .await
            .map_err(SyncError::from_kube)?;
            tracing::info!(signer = %b.signer, bundle = %b.name, api_version = %ar.api_version, "ClusterTrustBundle written");
        }
        // Our bundles for this signer under another name (an earlier `stage`) go.
        let ours = api
            .list(
                &ListParams::default()
                    .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
                    .fields(&format!("spec.signerName={}", b.signer)),
            )
            .await
            .map_err(SyncError::from_kube)?;
        for obj in ours.items {
            let Some(name) = obj.metadata.name.as_deref() else {
                continue;
            };
            if name == b.name || !is_ours(obj.metadata.labels.as_ref()) {
                continue;
            }
            match api.delete(name, &delete_as_read(&obj.metadata)).await {
                Ok(_) => {
                    tracing::info!(signer = %b.signer, bundle = %name, "stale ClusterTrustBundle deleted")
                }
                // Gone already, or changed since listed: the next sync looks again.
                Err(e) if matches!(crate::metrics::status_code(&e), 404 | 409) => {}
                Err(e) => return Err(SyncError::from_kube(e)),
            }
        }
        Ok(())
    }
}

/// Doubling from `poll` with each failure, at most `resync`.
pub(super) fn backoff(poll: Duration, failures: u32, resync: Duration) -> Duration {
    poll.saturating_mul(1 << failures.min(16)).min(resync)
}

/// Deletes only the object as it was read (same uid and resourceVersion): one changed since, by
/// someone who may have taken it over, is left for the next look.
pub(super) fn delete_as_read(meta: &kube::api::ObjectMeta) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

/// The ClusterTrustBundle resource the apiserver serves: v1 (1.37+), else v1beta1 (1.33–1.36 when
/// enabled), else none.
pub async fn discover(client: &kube::Client) -> Result<Option<ApiResource>, kube::Error> {
    for version in ["v1", "v1beta1"] {
        match client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
        {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.name == "clustertrustbundles") =>
            {
                let gvk = GroupVersionKind::gvk(GROUP, version, "ClusterTrustBundle");
                return Ok(Some(ApiResource::from_gvk_with_plural(
                    &gvk,
                    "clustertrustbundles",
                )));
            }
            Ok(_) => {}
            Err(e) if crate::metrics::status_code(&e) == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
