//! `csr-signer` as child processes for load and soak runs (tests and benches, with
//! `#[path = "../tests/process_support/mod.rs"]`): `csr-signer dev --no-signer` on a free port,
//! `csr-signer run` against it, and their resident memory as the kernel reports it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/<pid>/status); None once it exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A child `csr-signer`, killed when dropped; its stderr (logs) goes to a file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, args: &[&std::ffi::OsStr]) -> Proc {
        Proc::spawn_limited(dir, name, None, args)
    }

    /// [`Proc::spawn`] with the open-file limit (soft and hard) set to `nofile` by the shell
    /// that execs it, so the process cannot raise it.
    pub fn spawn_limited(
        dir: &Path,
        name: &str,
        nofile: Option<u64>,
        args: &[&std::ffi::OsStr],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let bin = env!("CARGO_BIN_EXE_csr-signer");
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        let child = cmd
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB; panics (with the log) if the process is gone.
    pub fn rss_kib(&mut self) -> u64 {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); log:\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        rss_kib(self.pid()).unwrap()
    }

    /// Seconds of CPU (user + system) used so far, from /proc/<pid>/stat (clock ticks of 1/100 s).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `csr-signer dev --no-signer` on a free loopback port.
pub struct DevApi {
    pub proc: Proc,
    pub port: u16,
    pub tls: bool,
    /// Contexts admin, developer and approver.
    pub kubeconfig: PathBuf,
}

impl DevApi {
    /// Starts it and waits until it has written its kubeconfig (it listens by then).
    pub async fn start(dir: &Path, tls: bool) -> DevApi {
        DevApi::start_with(dir, tls, &[]).await
    }

    /// [`DevApi::start`] with more command-line arguments.
    pub async fn start_with(dir: &Path, tls: bool, extra: &[&str]) -> DevApi {
        DevApi::start_limited(dir, tls, extra, None).await
    }

    /// [`DevApi::start_with`] under an open-file limit it cannot raise.
    pub async fn start_limited(
        dir: &Path,
        tls: bool,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> DevApi {
        let port = crate::support::free_port();
        let kubeconfig = dir.join("dev.kubeconfig");
        let port_s = port.to_string();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "dev".as_ref(),
            "--no-signer".as_ref(),
            "--port".as_ref(),
            port_s.as_ref(),
            "--kubeconfig-out".as_ref(),
            kubeconfig.as_os_str(),
        ];
        if !tls {
            args.push("--plain-http".as_ref());
        }
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let mut proc = Proc::spawn_limited(dir, "dev", nofile, &args);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !kubeconfig.exists() {
            assert!(
                Instant::now() < deadline,
                "csr-signer dev did not start; log:\n{}",
                proc.log_text()
            );
            let _ = proc.rss_kib();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        DevApi {
            proc,
            port,
            tls,
            kubeconfig,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A kube client for one of the kubeconfig's contexts (`admin`, `developer`, `approver`).
    pub async fn client(&self, context: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let opts = kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// The bearer token of a kubeconfig user (`admin`, `developer`, `approver`).
    pub fn token(&self, user: &str) -> String {
        let kc: serde_yaml::Value =
            serde_yaml::from_slice(&std::fs::read(&self.kubeconfig).unwrap()).unwrap();
        kc["users"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|u| u["name"] == user)
            .and_then(|u| u["user"]["token"].as_str())
            .unwrap()
            .to_string()
    }

    /// The serving CA (PEM) from the kubeconfig, for raw TLS clients.
    pub fn ca_pem(&self) -> Vec<u8> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let data = kc.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .certificate_authority_data
            .clone()
            .unwrap();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }
}

/// `csr-signer run` with `config_yaml` against `kubeconfig`'s `context`; returns once its
/// `/healthz` at `listen` answers.
pub async fn run_signer(
    dir: &Path,
    config_yaml: &str,
    kubeconfig: &Path,
    context: &str,
    listen: std::net::SocketAddr,
) -> Proc {
    let config = dir.join("run.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let mut proc = Proc::spawn(
        dir,
        "run",
        &[
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--context".as_ref(),
            context.as_ref(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = proc.rss_kib();
        if let Ok(r) = reqwest::get(format!("http://{listen}/healthz")).await {
            if r.status() == 200 {
                return proc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "csr-signer run did not serve /healthz; log:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings for `csr-signer run` signing [`crate::support::SIGNER`] with the CA at
/// `ca_cert`/`ca_key`, recording Events.
pub fn run_settings(
    ca_cert: &Path,
    ca_key: &Path,
    listen: std::net::SocketAddr,
    qps: u32,
) -> String {
    run_settings_events(ca_cert, ca_key, listen, qps, true)
}

/// [`run_settings`] with Events on or off.
pub fn run_settings_events(
    ca_cert: &Path,
    ca_key: &Path,
    listen: std::net::SocketAddr,
    qps: u32,
    events: bool,
) -> String {
    format!(
        "signers:\n- name: {}\n  ca: {{certFile: {}, keyFile: {}}}\n\
         controller: {{qps: {qps}, burst: {qps}, workers: 4, events: {events}, leaderElection: {{enabled: false}}}}\n\
         server: {{listen: \"{listen}\"}}\n",
        crate::support::SIGNER,
        ca_cert.display(),
        ca_key.display()
    )
}

/// Waits until `f` holds, polling every 100 ms, or panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} (after {limit:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` connections that connect and then say nothing.
pub async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(200);
        let conns = futures::future::join_all((0..batch).map(|_| TcpStream::connect(addr))).await;
        out.extend(conns.into_iter().map(|c| c.unwrap()));
    }
    out
}

/// Writes `head` then `body_len` bytes of junk while reading the answer; returns the answer's
/// status code, or 0 when the server cut the connection before one was read. Bounded: 60 s.
pub async fn send_body<S: AsyncRead + AsyncWrite>(stream: S, head: String, body_len: usize) -> u16 {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
        let _ = wr.flush().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(reader, writer).0
    })
    .await
    .unwrap_or(0)
}

/// Samples `pid`'s RSS every 50 ms until `stop` is set; the task returns the peak (KiB).
pub fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let peak = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if let Some(kb) = rss_kib(pid) {
                peak.fetch_max(kb, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak.load(Ordering::SeqCst)
    })
}

/// What the attackers of [`attack`] saw.
#[derive(Debug)]
pub struct AttackReport {
    /// Status codes the body senders got (0: cut before an answer).
    pub codes: std::collections::BTreeMap<u16, usize>,
    /// Silent connections (of 20 sampled) the server had not closed by the deadline.
    pub kept_open: usize,
}

/// Opens `idle` silent connections to `addr`, then runs `floods` body senders (`flood(i)`) at
/// once; `ready` fires when all are under way. Afterwards checks that the server closed the silent
/// connections within `close_within` of their opening. Runs on its own two-thread runtime on its
/// own OS thread, so that the attackers' work (thousands of sockets, encrypting junk) does not
/// starve the caller's checks.
pub fn attack<F, Fut>(
    addr: SocketAddr,
    idle: usize,
    floods: usize,
    flood: F,
    close_within: Duration,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::thread::JoinHandle<AttackReport>,
)
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut silent = open_idle(addr, idle).await;
            let opened = Instant::now();
            let senders: Vec<_> = (0..floods).map(|i| tokio::spawn(flood(i))).collect();
            let _ = ready_tx.send(());
            let mut codes = std::collections::BTreeMap::new();
            for s in senders {
                *codes.entry(s.await.unwrap()).or_default() += 1;
            }
            let kept_open = still_open(&mut silent, 20, opened + close_within).await;
            AttackReport { codes, kept_open }
        })
    });
    (ready, thread)
}

/// Reads from each of the first `n` of `conns` until `by`; returns how many the server did not
/// close by then.
pub async fn still_open(conns: &mut [TcpStream], n: usize, by: Instant) -> usize {
    let mut kept = 0;
    for conn in conns.iter_mut().take(n) {
        let left = by.saturating_duration_since(Instant::now());
        let mut b = [0u8; 1];
        if !matches!(
            tokio::time::timeout(left, conn.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        ) {
            kept += 1;
        }
    }
    kept
}

/// The load of the abuse tests: silent connections, body senders, and each body's size (the
/// apiserver's 3 MiB limit).
pub const SILENT: usize = 2000;
pub const BODIES: usize = 500;
pub const BODY_BYTES: usize = 3 * 1024 * 1024;

/// How far above its baseline a server's RSS may go under that load, and where it must be back
/// to afterwards (MiB; measured: +3 to +6).
pub const PEAK_OVER_BASELINE_MIB: f64 = 48.0;
pub const RETURN_MIB: f64 = 32.0;

/// Asserts the attack's peak against the baseline, then waits (up to 60 s) for RSS to come back
/// within [`RETURN_MIB`] of it; returns the RSS after (KiB).
pub async fn assert_memory_bounded(proc: &mut Proc, baseline: u64, peak: u64) -> u64 {
    assert!(
        mib(peak) < mib(baseline) + PEAK_OVER_BASELINE_MIB,
        "peak RSS {:.1} MiB (baseline {:.1} MiB)",
        mib(peak),
        mib(baseline)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = proc.rss_kib();
    while mib(now) > mib(baseline) + RETURN_MIB && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = proc.rss_kib();
    }
    assert!(
        mib(now) <= mib(baseline) + RETURN_MIB,
        "RSS {:.1} MiB after the attack, baseline {:.1} MiB",
        mib(now),
        mib(baseline)
    );
    now
}
