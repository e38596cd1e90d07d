//! `csr-signer` as child processes for load and soak runs (tests and benches, with
//! `#[path = "../tests/process_support/mod.rs"]`): `csr-signer dev --no-signer` on a free port,
//! `csr-signer run` against it, and their resident memory as the kernel reports it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_csr-signer"))
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
            panic!("{} exited ({status}); log:\n{}", self.log.display(), self.log_text());
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
        let mut proc = Proc::spawn(dir, "dev", &args);
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

/// Settings for `csr-signer run` signing [`crate::support::SIGNER`] with the CA in `ca_dir`.
pub fn run_settings(ca_cert: &Path, ca_key: &Path, listen: std::net::SocketAddr, qps: u32) -> String {
    format!(
        "signers:\n- name: {}\n  ca: {{certFile: {}, keyFile: {}}}\n\
         controller: {{qps: {qps}, burst: {qps}, workers: 4, events: true, leaderElection: {{enabled: false}}}}\n\
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
