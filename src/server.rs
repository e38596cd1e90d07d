//! The HTTP endpoints SREs and the kubelet look at: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive and serving) and `/readyz` (watches synced, CA loaded, and either leader
//! or a standby that is taking part in the election).
//!
//! This module only reads shared state; the controller and the elector write it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/readyz` reports, written by the controller and the leader elector.
#[derive(Debug)]
pub struct Readiness {
    signers: usize,
    synced: AtomicUsize,
    ca_loaded: AtomicBool,
    leader: AtomicBool,
    standby_ready: AtomicBool,
}

impl Readiness {
    /// `signers` is how many watches must report their initial list complete.
    pub fn new(signers: usize) -> Readiness {
        Readiness {
            signers,
            synced: AtomicUsize::new(0),
            ca_loaded: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            standby_ready: AtomicBool::new(false),
        }
    }

    /// Called once per signer watch when its first full list has been applied.
    pub fn mark_synced(&self) {
        self.synced.fetch_add(1, Ordering::SeqCst);
    }

    pub fn set_ca_loaded(&self, loaded: bool) {
        self.ca_loaded.store(loaded, Ordering::SeqCst);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// A standby is ready once it has seen the lease (it can take over) or when election is off.
    pub fn set_standby_ready(&self, ready: bool) {
        self.standby_ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn watches_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst) >= self.signers
    }

    /// The reasons this replica is not ready; empty means ready.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.watches_synced() {
            out.push("watches not synced");
        }
        if !self.ca_loaded.load(Ordering::SeqCst) {
            out.push("CA not loaded");
        }
        if !self.leader.load(Ordering::SeqCst) && !self.standby_ready.load(Ordering::SeqCst) {
            out.push("leader election not running");
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The router, separate from binding so tests can serve it on any listener.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz_handler(State(state): State<AppState>) -> Response {
    let problems = state.readiness.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
            .into_response()
    }
}

/// Binds `addr` (fails fast so a port clash stops startup) and returns the bound address and a
/// future serving until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<(
    SocketAddr,
    impl std::future::Future<Output = crate::Result<()>> + Send,
)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| crate::Error::Listen { addr, error })?;
    let local = listener
        .local_addr()
        .map_err(|error| crate::Error::Listen { addr, error })?;
    let app = router(metrics, readiness);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|error| crate::Error::Listen { addr: local, error })
    };
    Ok((local, fut))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_sync_ca_and_election() {
        let r = Readiness::new(2);
        assert_eq!(
            r.problems(),
            vec![
                "watches not synced",
                "CA not loaded",
                "leader election not running"
            ]
        );
        r.mark_synced();
        r.set_ca_loaded(true);
        r.set_standby_ready(true);
        assert_eq!(r.problems(), vec!["watches not synced"]);
        r.mark_synced();
        assert!(r.problems().is_empty());
        r.set_standby_ready(false);
        r.set_leader(true);
        assert!(r.problems().is_empty());
    }

    #[tokio::test]
    async fn serves_endpoints_over_http() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let readiness = Arc::new(Readiness::new(1));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, fut) = bind(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            readiness.clone(),
            async move {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
        let task = tokio::spawn(fut);
        let client = reqwest::Client::new();
        let get = |p: &'static str| {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{addr}{p}"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await.0, 200);
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("CA not loaded"), "{body}");
        readiness.mark_synced();
        readiness.set_ca_loaded(true);
        readiness.set_leader(true);
        assert_eq!(get("/readyz").await.0, 200);
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("csr_signer_build_info"), "{body}");
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
