//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one writes
//! certificates while the others keep their CA loaded and their watches warm.
//!
//! The protocol is client-go's `leaderelection` over a Lease, written against kube 5 directly (the
//! maintained crates either target older kube or use patch types the local API does not need to
//! serve). Every write is a PUT carrying the resourceVersion that was read, so two candidates racing
//! for an expired lease cannot both win: the loser gets 409 and reads again.
//!
//! Expiry is judged on this replica's clock from when it *observed* the lease last change, never by
//! comparing the holder's `renewTime` with the local clock (clocks of two nodes may differ).
//! Correctness of issuance does not depend on this module: the controller's resourceVersion
//! precondition already makes a second certificate impossible; the lease only avoids wasted work.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::path_segment;
use crate::metrics::{status_code, ApiOperation, Metrics};
use crate::server::Readiness;

/// Lease parameters, validated from `LeaderElectionSettings`.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub lease_name: String,
    pub namespace: String,
    /// This replica's identity in `spec.holderIdentity` (POD_NAME, else hostname + random suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What the last look at the lease showed, and when this replica saw it change.
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    lease_duration: Duration,
    since: Instant,
}

/// Runs the election and publishes "am I the leader" on a watch channel.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    leader_tx: watch::Sender<bool>,
    observed: Option<Observed>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Outcome of one attempt to acquire or renew.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the lease now.
    Held,
    /// Someone else holds a live lease, or we lost a race; try again later.
    NotHeld,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        cfg: LeaseConfig,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> (LeaderElector, watch::Receiver<bool>) {
        let (leader_tx, leader_rx) = watch::channel(false);
        let api = Api::namespaced(client, &path_segment(&cfg.namespace));
        (
            LeaderElector {
                api,
                cfg,
                metrics,
                readiness,
                leader_tx,
                observed: None,
            },
            leader_rx,
        )
    }

    fn set_leader(&self, leader: bool) {
        if *self.leader_tx.borrow() != leader {
            if leader {
                tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "became leader");
            } else {
                tracing::warn!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "lost leadership");
            }
        }
        self.metrics.leader.set(i64::from(leader));
        self.readiness.set_leader(leader);
        self.leader_tx.send_replace(leader);
    }

    /// Campaigns and renews until `shutdown` flips to true. Leadership is published on the
    /// channel returned by [`LeaderElector::new`]. Does not release the lease: the caller first
    /// drains in-flight work, then calls [`LeaderElector::release`].
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        let mut last_renew: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    last_renew = Some(now);
                    self.readiness.set_standby_ready(true);
                    self.set_leader(true);
                }
                Ok(Attempt::NotHeld) => {
                    self.readiness.set_standby_ready(true);
                    last_renew = None;
                    self.set_leader(false);
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), lease = %self.cfg.lease_name, "lease request failed");
                    // A leader that cannot renew within the deadline must stop writing before
                    // the lease can expire for the others.
                    if let Some(t) = last_renew {
                        if now.duration_since(t) >= self.cfg.renew_deadline {
                            last_renew = None;
                            self.set_leader(false);
                        }
                    }
                }
            }
            let period = jittered(self.cfg.retry_period, *self.leader_tx.borrow());
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.set_leader(false);
    }

    async fn try_acquire_or_renew(&mut self) -> crate::Result<Attempt> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&path_segment(&self.cfg.lease_name))
            .await
            .map_err(|e| self.api_error("get lease", e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.lease_name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    Ok(Attempt::NotHeld)
                }
                Err(e) => Err(self.api_error("create lease", e)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.cfg.identity.as_str());
        if !ours && holder.is_some() && !self.observed_expired() {
            return Ok(Attempt::NotHeld);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.holder_identity = Some(self.cfg.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration_secs);
        match self
            .api
            .replace(
                &path_segment(&self.cfg.lease_name),
                &PostParams::default(),
                &lease,
            )
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                self.metrics.api_error(ApiOperation::Lease, 409);
                Ok(Attempt::NotHeld)
            }
            Err(e) => Err(self.api_error("update lease", e)),
        }
    }

    /// Records the lease as seen now; the expiry clock restarts only when it actually changed.
    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone();
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let lease_duration = spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs);
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version != rv || o.holder != holder);
        if changed {
            self.observed = Some(Observed {
                resource_version: rv,
                holder,
                lease_duration,
                since: Instant::now(),
            });
        }
    }

    fn observed_expired(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|o| o.since.elapsed() >= o.lease_duration)
    }

    fn api_error(&self, context: &str, e: kube::Error) -> crate::Error {
        self.metrics.api_error(ApiOperation::Lease, status_code(&e));
        crate::Error::Kube {
            context: format!("{context} {}/{}", self.cfg.namespace, self.cfg.lease_name),
            error: Box::new(e),
        }
    }

    /// Gives the lease up (holder cleared, duration 1 s) so a standby takes over at once instead of
    /// waiting for expiry. Only touches a lease we still hold.
    pub async fn release(&mut self) -> crate::Result<()> {
        self.set_leader(false);
        let Some(mut lease) = self
            .api
            .get_opt(&path_segment(&self.cfg.lease_name))
            .await
            .map_err(|e| self.api_error("get lease", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        self.api
            .replace(
                &path_segment(&self.cfg.lease_name),
                &PostParams::default(),
                &lease,
            )
            .await
            .map_err(|e| self.api_error("release lease", e))?;
        tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "released lease");
        Ok(())
    }
}

/// Spreads retries of several standbys apart; the leader renews on the plain period.
fn jittered(period: Duration, leader: bool) -> Duration {
    if leader {
        return period;
    }
    let extra = rand::random::<f64>() * 0.2;
    period.mul_f64(1.0 + extra)
}

/// The identity for `holderIdentity`: `POD_NAME` when set, else `<hostname>_<random>`.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME") {
        if !name.is_empty() {
            return name;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "csr-signer".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn leader_renews_on_the_period_and_standbys_jitter_up_to_20_percent() {
        let p = Duration::from_secs(2);
        assert_eq!(jittered(p, true), p);
        for _ in 0..100 {
            let j = jittered(p, false);
            assert!(j >= p && j <= p.mul_f64(1.2), "{j:?}");
        }
    }

    fn elector() -> LeaderElector {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let readiness = Arc::new(Readiness::new(1));
        LeaderElector::new(
            client,
            LeaseConfig {
                lease_name: "l".into(),
                namespace: "ns".into(),
                identity: "me".into(),
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
            },
            metrics,
            readiness,
        )
        .0
    }

    fn lease(rv: &str, holder: &str, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                ..Default::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_counts_from_when_the_lease_was_last_seen_changing() {
        let mut e = elector();
        assert!(e.observed_expired(), "never seen: free to take");
        e.observe(&lease("1", "other", 4));
        assert!(!e.observed_expired());
        tokio::time::advance(Duration::from_secs(3)).await;
        // Same resourceVersion again: the clock keeps running.
        e.observe(&lease("1", "other", 4));
        assert!(!e.observed_expired());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(e.observed_expired(), "4 s unchanged with a 4 s lease");
        // A renewal (new resourceVersion) restarts it, using the lease's own duration.
        e.observe(&lease("2", "other", 4));
        assert!(!e.observed_expired());
    }

    #[test]
    fn identity_is_never_empty() {
        assert!(!default_identity().is_empty());
    }
}
