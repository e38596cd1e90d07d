//! The HTTP endpoints SREs and the kubelet look at: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive and serving) and `/readyz` (watches synced, CA loaded, and either leader
//! or a standby that is taking part in the election).
//!
//! This module only reads shared state; the controller and the elector write it.
//!
//! The server must keep answering the kubelet's probes whatever else reaches the port: it serves
//! a bounded number of connections at once (the rest wait in the listen backlog), closes a
//! connection that has not sent a whole request head within a few seconds (also the keep-alive
//! idle limit), caps request heads, never reads a request body (no handler takes one: hyper
//! closes such a connection after the answer), and pauses instead of spinning when `accept` fails
//! at the open-file limit, which [`raise_open_file_limit`] lifts at start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// Raises the soft open-file limit to the hard one (a process starts with the soft limit, often
/// 1024, which a few hundred idle connections use up); returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// How much of the process the HTTP server may hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// A whole request head must arrive within this, from the connection's start or its
    /// previous answer.
    pub header_timeout: Duration,
    /// Bytes of request head (and of hyper's read buffer) per connection.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Descriptors kept for the signer itself (CA files, API connections, the runtime).
const RESERVED_FILES: u64 = 256;

/// First and longest pause after a failed `accept` (as Go's net/http server: 5 ms doubling to 1 s).
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(5);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// How long shutdown waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(5);

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
    bind_with(addr, metrics, readiness, shutdown, Limits::default()).await
}

/// [`bind`] with explicit limits.
pub async fn bind_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
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
    Ok((local, serve(listener, app, limits, shutdown)))
}

async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let open_files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let room = usize::try_from(open_files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    let slots = Arc::new(Semaphore::new(limits.max_connections.min(room).max(1)));
    // Probes and Prometheus speak HTTP/1.1; choosing it up front (no sniffing for HTTP/2) keeps
    // the header timeout running from the first byte.
    let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    let mut pause = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                pause = Duration::ZERO;
                tcp
            }
            Err(e) if is_peer_gone(&e) => continue,
            Err(error) => {
                pause = (pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
                tracing::warn!(%error, pause_ms = pause.as_millis() as u64,
                    "metrics server: accept failed; pausing before the next try");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let (http, app, watcher) = (http.clone(), app.clone(), graceful.watcher());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // Until its first byte a connection holds only its socket: hyper's state and read
            // buffer are allocated (boxed) for clients that talk. `peek`, not `readable`, which
            // can be a false positive on a fresh socket.
            let mut first = [0u8; 1];
            let talked = tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await;
            if !matches!(talked, Ok(Ok(1))) {
                return;
            }
            let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app));
            let _ = Box::pin(watcher.watch(conn)).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

/// The client went away between connecting and our accept: retry at once.
fn is_peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
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

    /// Connections beyond the limit wait in the backlog until a slot frees.
    #[tokio::test]
    async fn excess_connections_wait_for_a_free_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits {
            max_connections: 3,
            header_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let (addr, fut) = bind_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new().unwrap()),
            Arc::new(Readiness::new(1)),
            async move {
                let _ = rx.await;
            },
            limits,
        )
        .await
        .unwrap();
        let task = tokio::spawn(fut);
        // Three slow clients take every slot with half a request head.
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /heal").await.unwrap();
            slow.push(c);
        }
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            probe.read_to_string(&mut answer),
        )
        .await;
        assert!(early.is_err(), "served beyond the limit: {answer}");
        drop(slow.pop());
        tokio::time::timeout(Duration::from_secs(20), probe.read_to_string(&mut answer))
            .await
            .expect("served once a slot was free")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tx.send(()).unwrap();
        drop(slow);
        task.await.unwrap().unwrap();
    }
}
