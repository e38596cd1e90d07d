//! `csr-signer run`: wires the engine, the controller, leader election and the HTTP server, and
//! shuts them down in the order that loses nothing: stop taking work, finish in-flight decisions,
//! release the lease (so a standby takes over at once), then stop serving /metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::controller::{Controller, ControllerConfig};
use crate::engine::Engine;
use crate::leader::{default_identity, LeaderElector, LeaseConfig};
use crate::metrics::unix_seconds;
use crate::metrics::Metrics;
use crate::server::{self, Readiness};

/// Options that do not come from the settings file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Leader-election identity; default `POD_NAME`, else hostname + random suffix.
    pub identity: Option<String>,
    /// How often CA files are checked for a change (default 2 s).
    pub ca_poll_interval: Option<Duration>,
}

/// A started service.
#[derive(Debug)]
pub struct Service {
    /// The address /metrics, /healthz and /readyz are served on (useful with port 0).
    pub listen: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    task: JoinHandle<crate::Result<()>>,
}

impl Service {
    /// Waits until the service has shut down.
    pub async fn wait(self) -> crate::Result<()> {
        self.task
            .await
            .map_err(|e| crate::Error::Service(format!("service task: {e}")))?
    }
}

/// Runs the signer until `shutdown` resolves, then shuts down gracefully.
pub async fn run(
    settings: Settings,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    start(settings, client, shutdown, RunOptions::default())
        .await?
        .wait()
        .await
}

/// Loads the CAs, binds the HTTP server and starts everything; returns once serving.
/// Startup errors (bad CA, port in use) are returned here, before anything runs.
pub async fn start(
    settings: Settings,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: RunOptions,
) -> crate::Result<Service> {
    start_with_metrics(settings, client, shutdown, opts, Arc::new(Metrics::new()?)).await
}

/// `start` with metrics made beforehand: the client built by `controller::client::build` counts its
/// retries in them.
pub async fn start_with_metrics(
    settings: Settings,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: RunOptions,
    metrics: Arc<Metrics>,
) -> crate::Result<Service> {
    // Before anything runs: a signer that cannot keep its audit trail must not start.
    let audit = crate::audit::AuditFile::open(&settings.audit)
        .map_err(|e| crate::Error::Service(crate::error::chain(&e)))?
        .map(Arc::new);
    let readiness = Arc::new(Readiness::new(settings.signers.len()));
    let engine = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || Engine::from_settings(&s))
            .await
            .map_err(|e| crate::Error::Service(format!("loading CAs: {e}")))??
    };
    for signer in engine.signers() {
        metrics.init_signer(signer.name());
        metrics.set_ca_not_after(signer.name(), unix_seconds(signer.ca_not_after()));
        crate::controller::set_ca_gauges(&metrics, signer);
        metrics.set_max_lifetime(signer.name(), signer.policy().max_lifetime().as_secs_f64());
    }
    readiness.set_ca_loaded(true);
    let engine = Arc::new(engine);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (listen, serve) = server::bind(
        settings.server.listen,
        metrics.clone(),
        readiness.clone(),
        async move {
            let _ = server_stop_rx.await;
        },
    )
    .await?;
    let server_task = tokio::spawn(serve);

    let identity = opts.identity.unwrap_or_else(default_identity);
    let le = &settings.controller.leader_election;
    let mut elector = None;
    let mut always_leader = None;
    let leader_rx = if le.enabled {
        let namespace = le
            .namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_string());
        let (e, rx) = LeaderElector::new(
            client.clone(),
            LeaseConfig {
                lease_name: le.lease_name.clone(),
                namespace,
                identity: identity.clone(),
                lease_duration: Duration::from_secs(u64::from(le.lease_duration_seconds.max(1))),
                renew_deadline: Duration::from_secs(u64::from(le.renew_deadline_seconds.max(1))),
                retry_period: Duration::from_secs(u64::from(le.retry_period_seconds.max(1))),
            },
            metrics.clone(),
            readiness.clone(),
        );
        elector = Some(e);
        rx
    } else {
        readiness.set_leader(true);
        readiness.set_standby_ready(true);
        metrics.leader.set(1);
        let (tx, rx) = watch::channel(true);
        // Held by the service task: a dropped sender would look like "leadership gone".
        always_leader = Some(tx);
        rx
    };

    let mut cfg = ControllerConfig::from_settings(&settings.controller, identity.clone());
    cfg.audit = audit;
    if let Some(p) = opts.ca_poll_interval {
        cfg.ca_poll_interval = p;
    }
    for signer in engine.signers() {
        if settings.trust_bundles.enabled {
            metrics.init_trust_bundle(
                signer.name(),
                crate::trust::publish::VIA,
                &crate::trust::publish::REASONS,
            );
        }
        if settings.trust_bundles.config_maps.enabled {
            metrics.init_trust_bundle(
                signer.name(),
                crate::trust::configmaps::VIA,
                &crate::trust::configmaps::REASONS,
            );
        }
    }
    let publisher = settings.trust_bundles.enabled.then(|| {
        crate::trust::publish::Publisher::new(
            client.clone(),
            engine.clone(),
            settings.trust_bundles.clone(),
            metrics.clone(),
            cfg.ca_poll_interval,
        )
    });
    let configmaps = settings.trust_bundles.config_maps.enabled.then(|| {
        crate::trust::configmaps::ConfigMapPublisher::new(
            client.clone(),
            engine.clone(),
            settings.trust_bundles.clone(),
            metrics.clone(),
            cfg.ca_poll_interval,
        )
    });
    let publisher_leader = leader_rx.clone();
    let configmaps_leader = leader_rx.clone();
    let controller = Controller::new(
        client,
        engine,
        metrics.clone(),
        readiness.clone(),
        leader_rx,
        cfg,
    );

    let task = tokio::spawn(async move {
        let elector_task = elector.map(|mut e| {
            let rx = stop_rx.clone();
            tokio::spawn(async move {
                e.run(rx).await;
                e
            })
        });
        let publisher_task =
            publisher.map(|p| tokio::spawn(p.run(publisher_leader, stop_rx.clone())));
        let configmaps_task =
            configmaps.map(|p| tokio::spawn(p.run(configmaps_leader, stop_rx.clone())));
        let controller_task = tokio::spawn(controller.run(stop_rx));
        shutdown.await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
        let controller_result = controller_task
            .await
            .map_err(|e| crate::Error::Service(format!("controller task: {e}")))
            .and_then(|r| r);
        for t in [publisher_task, configmaps_task].into_iter().flatten() {
            let _ = t.await;
        }
        if let Some(t) = elector_task {
            match t.await {
                Ok(mut e) => {
                    if let Err(err) = e.release().await {
                        tracing::warn!(error = %crate::error::chain(&err), "could not release the lease; it will expire");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "leader election task failed"),
            }
        }
        let _ = server_stop_tx.send(());
        let server_result = server_task
            .await
            .map_err(|e| crate::Error::Service(format!("server task: {e}")))
            .and_then(|r| r);
        drop(always_leader);
        controller_result.and(server_result)
    });

    Ok(Service {
        listen,
        metrics,
        readiness,
        task,
    })
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
