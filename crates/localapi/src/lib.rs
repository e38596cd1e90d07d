//! An in-memory Kubernetes API for the certificates workflow, faithful to kube-apiserver for what
//! the signer, its users and kubectl touch (see docs/local-api.md for the conformance table).
//!
//! It serves CertificateSigningRequests (with /status and /approval, validation, admission and
//! RBAC as kube-apiserver applies them), PodCertificateRequests (validation, NodeRestriction and
//! the Node authorizer for kubelet identities, the signing strategy on /status), ClusterTrustBundles,
//! Leases, Events, ConfigMaps, Namespaces and the Pods, Nodes and ServiceAccounts a PCR names, over
//! HTTPS (or plain HTTP) on loopback, plus discovery and Table output for kubectl.
//! Used by `csr-signer dev` (behind csr-signer's `dev` feature, on by default and off in the container
//! image) and by the integration tests; it is never part of a production path.
//!
//! ```no_run
//! # async fn demo() -> localapi::Result<()> {
//! use localapi::LocalApiConfig;
//! let api = localapi::start(LocalApiConfig::default()).await?;
//! let client = api.client("developer")?;
//! # let _ = client; api.shutdown().await; Ok(()) }
//! ```

mod auth;
mod csr;
mod ctb;
mod discovery;
mod error;
mod faults;
mod managed;
mod openapi;
mod pcr;
mod protobuf;
mod resources;
mod response;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::{default_users, signer_user, Rule, User, SIGNER_USER};
pub use faults::{Failure, Faults, Match, RequestRecord};
pub use table::human_duration;

pub use error::{Error, Result};
use server::Shared;
use store::Store;

/// Namespaces that exist from the start (as in a fresh cluster, plus the signer's own).
pub const INITIAL_NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "csr-signer",
    "team-a",
    "team-b",
];

/// How to run a local API.
#[derive(Debug, Clone)]
pub struct LocalApiConfig {
    /// Listen address; port 0 picks a free port. Must be loopback.
    pub listen: SocketAddr,
    /// HTTPS with a generated serving CA (true) or plain HTTP (false).
    pub tls: bool,
    /// Users and their RBAC rules; [`default_users`] by default.
    pub users: Vec<User>,
    /// Persist objects to this JSON file (loaded at start, saved on change and at shutdown).
    pub state_file: Option<PathBuf>,
    /// How often open watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// At most this many watch events are kept for resumption; older resourceVersions get 410.
    pub max_history: usize,
    /// Watch events older than this are dropped too (beyond the newest 100), as kube-apiserver's
    /// watch cache keeps 75 s of history.
    pub history_window: Duration,
    /// Events (core and events.k8s.io) are deleted this long after their last write, as with
    /// kube-apiserver's `--event-ttl` (one hour).
    pub event_ttl: Duration,
    /// How many of the latest requests [`Faults::requests`] remembers.
    pub request_log: usize,
    /// Connections served at once; more wait in the listen backlog. Lowered at start to fit the
    /// process's open-file limit.
    pub max_connections: usize,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub handshake_timeout: Duration,
    /// A connection that has not sent a whole request head by then (from its start, or since its
    /// previous response) is closed; this is also the keep-alive idle limit.
    pub idle_timeout: Duration,
    /// Request bodies being read at once, all connections together, in bytes (each is at most
    /// 3 MiB, as kube-apiserver's limit); requests over it wait, then get 429.
    pub body_bytes_in_flight: usize,
}

impl Default for LocalApiConfig {
    fn default() -> Self {
        LocalApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            users: default_users(),
            state_file: None,
            bookmark_interval: Duration::from_secs(5),
            max_history: 10_000,
            history_window: Duration::from_secs(75),
            event_ttl: Duration::from_secs(3600),
            request_log: 50_000,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_bytes_in_flight: 64 << 20,
        }
    }
}

impl LocalApiConfig {
    /// Plain HTTP on a random loopback port (what most tests use).
    pub fn plain_http() -> Self {
        LocalApiConfig {
            tls: false,
            ..Default::default()
        }
    }
}

/// A running local API. Dropping it without [`LocalApi::shutdown`] aborts the server task.
pub struct LocalApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    state_file: Option<PathBuf>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn local_err(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// Starts a local API and returns once it accepts connections.
pub async fn start(cfg: LocalApiConfig) -> Result<LocalApi> {
    if !cfg.listen.ip().is_loopback() {
        return Err(local_err(format!(
            "refusing to listen on non-loopback address {}",
            cfg.listen
        )));
    }
    let store = Arc::new(Store::new(store::Retention {
        max_history: cfg.max_history,
        history_window: cfg.history_window,
        event_ttl: cfg.event_ttl,
    }));
    seed_namespaces(&store);
    if let Some(path) = &cfg.state_file {
        load_state(&store, path)?;
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| local_err(format!("bind {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| local_err(format!("local address: {e}")))?;
    let pki = if cfg.tls {
        Some(tls::generate()?)
    } else {
        None
    };
    let ca_pem = pki.as_ref().map(|p| p.ca_pem.clone());
    let shared = Arc::new(Shared {
        store: store.clone(),
        users: RwLock::new(cfg.users.clone()),
        faults: Faults::new(store.clone(), cfg.request_log),
        server_address: addr.to_string(),
        started: Instant::now(),
        bodies: server::BodyBudget::new(cfg.body_bytes_in_flight),
    });
    let app = axum::Router::new()
        .fallback(server::handle)
        .with_state(shared.clone());
    let (stop, stop_rx) = watch::channel(false);
    let acceptor = pki.map(|p| Arc::new(p.acceptor));
    let limits = server::conn::Limits {
        max_connections: server::conn::fit_open_files(cfg.max_connections),
        handshake_timeout: cfg.handshake_timeout,
        idle_timeout: cfg.idle_timeout,
    };
    let task = tokio::spawn(serve(
        server::conn::Acceptor::new(listener, acceptor, &limits),
        app,
        Background {
            stop: stop_rx,
            store,
            bookmark_interval: cfg.bookmark_interval,
            state_file: cfg.state_file.clone(),
        },
    ));
    Ok(LocalApi {
        shared,
        addr,
        ca_pem,
        state_file: cfg.state_file,
        stop,
        task: Some(task),
    })
}

fn seed_namespaces(store: &Store) {
    let now = response::now_rfc3339();
    for ns in INITIAL_NAMESPACES {
        let obj = json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let _ = store.mutate("core/namespaces", "", ns, |cur| {
            Ok(if cur.is_some() {
                store::Change::NoOp
            } else {
                store::Change::Create(obj)
            })
        });
    }
}

fn load_state(store: &Store, path: &Path) -> Result<()> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    let v: Value = serde_json::from_slice(&data)
        .map_err(|e| local_err(format!("{}: invalid state file: {e}", path.display())))?;
    let rv = v["resourceVersion"].as_u64().unwrap_or(1);
    let mut objects = Vec::new();
    for item in v["objects"].as_array().cloned().unwrap_or_default() {
        let Some(def) = item["key"].as_str().and_then(resources::by_key) else {
            continue;
        };
        objects.push((def.key(), item["object"].clone()));
    }
    store.restore(rv, objects);
    Ok(())
}

fn save_state(store: &Store, path: &Path) -> Result<()> {
    let (rv, objs) = store.snapshot();
    let objects: Vec<Value> = objs
        .into_iter()
        .map(|(k, o)| json!({"key": k, "object": o}))
        .collect();
    let data = serde_json::to_vec_pretty(&json!({"resourceVersion": rv, "objects": objects}))
        .map_err(|e| local_err(format!("encoding state: {e}")))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// What the serving task does besides serving connections.
struct Background {
    stop: watch::Receiver<bool>,
    store: Arc<Store>,
    bookmark_interval: Duration,
    state_file: Option<PathBuf>,
}

async fn serve(mut conns: server::conn::Acceptor, app: axum::Router, mut bg: Background) {
    let mut bookmarks = tokio::time::interval_at(
        tokio::time::Instant::now() + bg.bookmark_interval,
        bg.bookmark_interval,
    );
    let mut save = tokio::time::interval(Duration::from_millis(500));
    let mut expire = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = bg.stop.changed() => break,
            _ = bookmarks.tick() => bg.store.bookmark_all(),
            _ = expire.tick() => {
                bg.store.expire(Instant::now());
            }
            _ = save.tick() => {
                if let Some(p) = &bg.state_file {
                    if bg.store.take_dirty() {
                        if let Err(e) = save_state(&bg.store, p) {
                            tracing::warn!(error = %e, "saving local API state failed");
                        }
                    }
                }
            }
            () = conns.next(&app) => {}
        }
    }
    bg.store.close_watches();
    conns.close().await;
}

impl LocalApi {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>` (or `http://…` without TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the serving CA (None for plain HTTP).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Bearer token of a user by name.
    pub fn token(&self, user: &str) -> Option<String> {
        let users = self.shared.users.read().unwrap_or_else(|p| p.into_inner());
        users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.token.clone())
    }

    /// The full user record (name, uid, groups, rules).
    pub fn user(&self, user: &str) -> Option<User> {
        let users = self.shared.users.read().unwrap_or_else(|p| p.into_inner());
        users.iter().find(|u| u.name == user).cloned()
    }

    /// Adds (or replaces, by name) a user; returns its token.
    pub fn add_user(&self, user: User) -> String {
        let token = user.token.clone();
        let mut users = self.shared.users.write().unwrap_or_else(|p| p.into_inner());
        users.retain(|u| u.name != user.name);
        users.push(user);
        token
    }

    /// A kube client configuration authenticating as `user`.
    pub fn kube_config(&self, user: &str) -> Result<kube::Config> {
        let token = self
            .token(user)
            .ok_or_else(|| local_err(format!("unknown user {user:?}")))?;
        let url: http::Uri = self
            .base_url()
            .parse()
            .map_err(|e| local_err(format!("url: {e}")))?;
        let mut cfg = kube::Config::new(url);
        if let Some(pem) = &self.ca_pem {
            let ca = openssl::x509::X509::from_pem(pem.as_bytes())
                .map_err(|e| local_err(format!("serving CA: {e}")))?;
            let der = ca
                .to_der()
                .map_err(|e| local_err(format!("serving CA: {e}")))?;
            cfg.root_cert = Some(vec![der]);
        }
        cfg.auth_info.token = Some(token.into());
        Ok(cfg)
    }

    /// A kube client authenticating as `user`.
    pub fn client(&self, user: &str) -> Result<kube::Client> {
        kube::Client::try_from(self.kube_config(user)?)
            .map_err(|e| local_err(format!("kube client: {e}")))
    }

    /// A kubeconfig with one context per user (named after the user, cluster `csr-signer-dev`);
    /// the first user's context is current.
    pub fn kubeconfig_yaml(&self, users: &[&str]) -> Result<String> {
        use base64::Engine;
        let mut cluster = json!({"server": self.base_url()});
        if let Some(pem) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        let mut contexts = Vec::new();
        let mut kusers = Vec::new();
        for u in users {
            let token = self
                .token(u)
                .ok_or_else(|| local_err(format!("unknown user {u:?}")))?;
            let ctx = context_name(u);
            contexts
                .push(json!({"name": ctx, "context": {"cluster": "csr-signer-dev", "user": ctx}}));
            kusers.push(json!({"name": ctx, "user": {"token": token}}));
        }
        let current = users.first().map(|u| context_name(u)).unwrap_or_default();
        let doc = json!({"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "csr-signer-dev", "cluster": cluster}],
            "contexts": contexts, "users": kusers, "current-context": current});
        serde_yaml::to_string(&doc).map_err(|e| local_err(format!("kubeconfig: {e}")))
    }

    /// Writes [`LocalApi::kubeconfig_yaml`] to `path` (mode 0600: it holds tokens).
    pub fn write_kubeconfig(&self, path: &Path, users: &[&str]) -> Result<()> {
        let yaml = self.kubeconfig_yaml(users)?;
        std::fs::write(path, yaml).map_err(|e| io_err(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(())
    }

    /// Fault injection and the request log.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.current_rv()
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Stops accepting, ends watches and open connections, and saves state if configured.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(p) = &self.state_file {
            if let Err(e) = save_state(&self.shared.store, p) {
                tracing::warn!(error = %e, "saving local API state failed");
            }
        }
    }
}

impl Drop for LocalApi {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// kubeconfig context name for a user (`system:serviceaccount:ns:sa` → `ns-sa`).
pub fn context_name(user: &str) -> String {
    match user.strip_prefix("system:serviceaccount:") {
        Some(rest) => rest.replace(':', "-"),
        None => user.to_string(),
    }
}

/// Options of `csr-signer dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub port: u16,
    pub plain_http: bool,
    pub kubeconfig_out: PathBuf,
    pub state: Option<PathBuf>,
    /// Events are deleted this long after their last write (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
}

/// Prints a line to stdout; a closed stdout (piped to a finished process) must not stop the server.
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// `csr-signer dev`: serve until `shutdown` completes (the CLI passes Ctrl-C / SIGTERM).
pub async fn run_dev(
    opts: DevOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let cfg = LocalApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], opts.port)),
        tls: !opts.plain_http,
        state_file: opts.state.clone(),
        event_ttl: opts.event_ttl,
        ..Default::default()
    };
    let api = start(cfg).await?;
    api.write_kubeconfig(&opts.kubeconfig_out, &["admin", "developer", "approver"])?;
    let kc = opts.kubeconfig_out.display();
    say(format_args!(
        "csr-signer dev: Kubernetes certificates API listening on {}",
        api.base_url()
    ));
    say(format_args!(
        "kubeconfig written to {kc} (contexts: admin, developer, approver)"
    ));
    say(format_args!(""));
    say(format_args!("  export KUBECONFIG={kc}"));
    say(format_args!(
        "  kubectl --context developer apply -f csr.yaml"
    ));
    say(format_args!("  kubectl get csr"));
    say(format_args!(
        "  kubectl --context approver certificate approve <name>"
    ));
    say(format_args!(
        "  kubectl get csr <name> -o jsonpath='{{.status.certificate}}' | base64 -d"
    ));
    say(format_args!(""));
    match &opts.state {
        Some(p) => say(format_args!("objects are kept in {}", p.display())),
        None => say(format_args!(
            "objects are kept in memory only (use --state FILE to keep them)"
        )),
    }
    say(format_args!("Press Ctrl-C to stop."));
    shutdown.await;
    say(format_args!("stopping"));
    api.shutdown().await;
    Ok(())
}
