//! Accepting connections so that a local user without credentials cannot take the server down:
//! a bounded number of connections at once (the rest wait in the listen backlog), a deadline for
//! the first byte and the TLS handshake and one for each request head (which is also the
//! keep-alive idle limit), capped request heads, and a growing pause instead of a busy loop when
//! `accept` fails (EMFILE), the way Go's `net/http` server behaves.
//!
//! The server speaks HTTP/1.1 only (tls.rs selects it by ALPN), and says so to hyper-util up
//! front: its protocol sniffing runs before hyper's header timeout starts, so a connection that
//! sent nothing would be kept forever.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Request heads (start line and headers) larger than this are refused (431); it also bounds
/// hyper's read buffer, so what an idle or slow connection can make the server hold.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// File descriptors kept free for everything that is not a client connection (state file,
/// the listener, the runtime).
const RESERVED_FILES: u64 = 64;

/// The first and the longest pause after a failed `accept` (Go's net/http: 5 ms doubling to 1 s).
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// `wanted`, lowered so that that many connections fit under the soft open-file limit.
pub fn fit_open_files(wanted: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return wanted.max(1);
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Accepts and serves connections; [`Acceptor::next`] is cancel-safe so it can sit in a
/// `select!` next to the server's timers.
pub struct Acceptor {
    incoming: Incoming,
    tls: Option<Arc<SslAcceptor>>,
    handshake_timeout: Duration,
    http: Arc<auto::Builder<TokioExecutor>>,
    conns: JoinSet<()>,
}

/// The listener with its connection slots and its pause after failures.
struct Incoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// A connection slot taken before accepting, kept if the wait is cancelled.
    slot: Option<OwnedSemaphorePermit>,
    pause: Duration,
    resume_at: Option<Instant>,
}

impl Incoming {
    /// The next connection with its slot; None after a failed `accept` (and a pause is due).
    async fn next(&mut self) -> Option<(TcpStream, Option<OwnedSemaphorePermit>)> {
        if let Some(at) = self.resume_at {
            tokio::time::sleep_until(at).await;
            self.resume_at = None;
        }
        if self.slot.is_none() {
            // The semaphore is never closed.
            self.slot = self.permits.clone().acquire_owned().await.ok();
        }
        match self.listener.accept().await {
            Ok((tcp, _)) => {
                self.pause = Duration::ZERO;
                Some((tcp, self.slot.take()))
            }
            // The peer gave up before we took it: nothing to wait for.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                None
            }
            Err(e) => {
                self.pause = (self.pause * 2).clamp(ACCEPT_PAUSE.0, ACCEPT_PAUSE.1);
                tracing::warn!(error = %e, pause_ms = self.pause.as_millis() as u64,
                    "local API: accept failed; pausing before the next try");
                self.resume_at = Some(Instant::now() + self.pause);
                None
            }
        }
    }
}

impl Acceptor {
    pub fn new(listener: TcpListener, tls: Option<Arc<SslAcceptor>>, limits: &Limits) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        Acceptor {
            incoming: Incoming {
                listener,
                permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
                slot: None,
                pause: Duration::ZERO,
                resume_at: None,
            },
            tls,
            handshake_timeout: limits.handshake_timeout,
            http: Arc::new(http),
            conns: JoinSet::new(),
        }
    }

    /// Waits for one thing to happen: a connection accepted (and its task started), a finished
    /// connection reaped, or a failed `accept` (followed by a pause before the next try).
    pub async fn next(&mut self, app: &axum::Router) {
        tokio::select! {
            Some(_) = self.conns.join_next(), if !self.conns.is_empty() => {}
            Some((tcp, slot)) = self.incoming.next() => {
                self.conns.spawn(serve_one(
                    tcp,
                    slot,
                    self.tls.clone(),
                    self.handshake_timeout,
                    self.http.clone(),
                    app.clone(),
                ));
            }
            // A failed accept with nothing else to wait for: the caller loops (after the pause).
            else => {}
        }
    }

    /// Ends every open connection.
    pub async fn close(mut self) {
        self.conns.abort_all();
        while self.conns.join_next().await.is_some() {}
    }
}

/// Serves one connection. Until the client sends its first byte (within the handshake timeout)
/// the task holds only the socket: what comes after (TLS, hyper) is boxed, so its large state is
/// allocated only for a client that talks.
async fn serve_one(
    tcp: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
    tls: Option<Arc<SslAcceptor>>,
    handshake_timeout: Duration,
    http: Arc<auto::Builder<TokioExecutor>>,
    app: axum::Router,
) {
    let _ = tcp.set_nodelay(true);
    // A client sends its first bytes (TLS hello or request line) as soon as it connects.
    let deadline = Instant::now() + handshake_timeout;
    // (`peek`, not `readable`: readiness alone can be a false positive on a fresh socket.)
    let mut first = [0u8; 1];
    if !matches!(
        tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await,
        Ok(Ok(1))
    ) {
        return;
    }
    match tls {
        Some(acceptor) => Box::pin(serve_tls(tcp, acceptor, deadline, http, app)).await,
        None => {
            let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app));
            let _ = Box::pin(conn).await;
        }
    }
}

async fn serve_tls(
    tcp: TcpStream,
    acceptor: Arc<SslAcceptor>,
    deadline: Instant,
    http: Arc<auto::Builder<TokioExecutor>>,
    app: axum::Router,
) {
    let Ok(ssl) = Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
        return;
    };
    let handshake = std::pin::Pin::new(&mut stream).accept();
    if !matches!(
        tokio::time::timeout_at(deadline, handshake).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
}
