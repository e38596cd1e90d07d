//! The `csr-signer run` binary as a subprocess against the local API over real HTTP: kill -9 and
//! restart with 500 approved CSRs, two replicas with leader election and failover, a real
//! Prometheus server scraping it, and the CA key never appearing in what it prints or serves.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use support::{free_port, key, CsrSpec, TestCa};

const USAGES: &[&str] = &["digital signature", "client auth"];

/// A `csr-signer run` subprocess whose stderr (logs) is captured to a file.
struct Signer {
    child: Child,
    listen: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Signer {
    fn start(env: &Env, ca: &TestCa, leader_election: bool, identity: &str, qps: u32) -> Signer {
        let port = free_port();
        let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let yaml = settings_yaml(&ca.cert, &ca.key, "", leader_election, &listen.to_string())
            .replace("qps: 2000", &format!("qps: {qps}"))
            .replace("burst: 2000", &format!("burst: {}", qps.max(10)));
        let config = env.dir.path().join(format!("{identity}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let log = env
            .dir
            .path()
            .join(format!("{identity}-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .arg("run")
            .args(["--log-format", "json"])
            .arg("--config")
            .arg(&config)
            .arg("--kubeconfig")
            .arg(env.signer_kubeconfig())
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Signer { child, listen, log }
    }

    async fn metrics(&self) -> Option<String> {
        let r = reqwest::get(format!("http://{}/metrics", self.listen))
            .await
            .ok()?;
        r.text().await.ok()
    }

    async fn wait_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        for _ in 0..1200 {
            if let Some(t) = self.metrics().await {
                if let Some(v) = sample(&t, series) {
                    if pred(v) {
                        return v;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{series} never reached the expected value; log:\n{}",
            self.log_text()
        );
    }

    async fn wait_ready(&self) {
        for _ in 0..1200 {
            let r = reqwest::get(format!("http://{}/readyz", self.listen)).await;
            if r.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never ready; log:\n{}", self.log_text());
    }

    fn kill9(&mut self) {
        // Child::kill sends SIGKILL.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success());
        self.child.wait().unwrap()
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut s))
            .ok();
        s
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ISSUED: &str =
    "csr_signer_requests_total{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"example.com/mtls\"}";

async fn create_approved(env: &Env, prefix: &str, n: usize) -> Vec<String> {
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create_approved(prefix, n, &pem, USAGES).await
}

/// The base64 body of the CA key, in chunks long enough to be unmistakable.
fn key_fragments(key_file: &Path) -> Vec<String> {
    let pem = std::fs::read_to_string(key_file).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    body.as_bytes()
        .chunks(24)
        .filter(|c| c.len() == 24)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

fn assert_no_key(label: &str, text: &str, key_file: &Path) {
    assert!(
        !text.contains("PRIVATE KEY"),
        "{label} contains a PEM private key marker"
    );
    for f in key_fragments(key_file) {
        assert!(!text.contains(&f), "{label} contains CA key material");
    }
}

on_both_servers! {
    async fn kill_9_mid_run_then_restart_issues_every_csr_exactly_once(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let names = create_approved(&env, "k9", 500).await;
        // A low client QPS keeps the first run mid-way when it is killed.
        let mut first = Signer::start(&env, &ca, false, "first", 100);
        first.wait_metric(ISSUED, |v| v >= 50.0).await;
        first.kill9();
        let written_before: usize = env.status_writes_by_name().await.values().sum();
        assert!(
            written_before < names.len(),
            "the first run finished before the kill; nothing tested"
        );

        let second = Signer::start(&env, &ca, false, "second", 2000);
        env.wait_all_issued(&names).await;
        // Exactly once: every CSR has its certificate (above) from one successful write, and every other
        // write was refused by the server. The one exception is a write the first signer had in flight
        // when it was killed: kube-apiserver committed it but, its client gone, logged it as 504
        // "context canceled"; at most one per worker.
        let codes = env.status_write_codes_by_name().await;
        let mut cut_off = 0;
        for n in &names {
            let c = codes.get(n).cloned().unwrap_or_default();
            let ok = c.iter().filter(|s| (200..300).contains(*s)).count();
            match ok {
                1 => {}
                0 if c.contains(&504) => cut_off += 1,
                _ => panic!("{n}: issued exactly once across the kill; status writes answered {c:?}"),
            }
        }
        assert!(cut_off <= 4, "{cut_off} writes cut off by one kill with 4 workers");        let metrics = second.metrics().await.unwrap();
        for (label, text) in [
            ("first log", first.log_text()),
            ("second log", second.log_text()),
            ("metrics", metrics),
        ] {
            assert_no_key(label, &text, &ca.key);
        }
        // One decision line per issued CSR, with the contract's fields.
        let log = second.log_text();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "certificate issued")
            .collect();
        assert!(!lines.is_empty(), "{log}");
        for field in [
            "csr",
            "signer",
            "requester",
            "outcome",
            "reason",
            "serial",
            "not_after",
            "latency_ms",
        ] {
            assert!(
                !lines[0]["fields"][field].is_null(),
                "{field} missing in {}",
                lines[0]
            );
        }
        assert!(
            !log.contains("BEGIN CERTIFICATE"),
            "the log must not carry PEM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_do_not_print_the_ca_key() {
    let ca = TestCa::new(KeyType::P256);
    let other = TestCa::new(KeyType::P256);
    let env = Env::start().await;
    // Certificate and key that do not match.
    let yaml = settings_yaml(&ca.cert, &other.key, "", false, "127.0.0.1:0");
    let config = env.dir.path().join("mismatch.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_csr-signer"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(env.signer_kubeconfig())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("error"), "{text}");
    assert_no_key("startup error", &text, &other.key);
}

on_both_servers! {
    async fn only_the_leader_writes_and_a_standby_takes_over_after_kill_9(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let mut a = Signer::start(&env, &ca, true, "replica-a", 2000);
        a.wait_metric("csr_signer_leader", |v| v == 1.0).await;
        let b = Signer::start(&env, &ca, true, "replica-b", 2000);
        // The standby is ready (CA loaded, watch synced, lease observed) without being leader.
        b.wait_ready().await;

        let first = create_approved(&env, "ha", 30).await;
        env.wait_all_issued(&first).await;
        a.wait_metric(ISSUED, |v| v == 30.0).await;
        assert_eq!(
            sample(&b.metrics().await.unwrap(), ISSUED),
            Some(0.0),
            "the standby must not write"
        );
        assert_eq!(
            sample(&b.metrics().await.unwrap(), "csr_signer_leader"),
            Some(0.0)
        );

        a.kill9();
        // Work queued while nobody leads is picked up by the new leader.
        let second = create_approved(&env, "failover", 30).await;
        b.wait_metric("csr_signer_leader", |v| v == 1.0).await;
        env.wait_all_issued(&second).await;
        let leases: Api<Lease> = Api::namespaced(env.admin.clone(), "csr-signer");
        let lease = leases.get("csr-signer").await.unwrap();
        assert_eq!(
            lease.spec.unwrap().holder_identity.as_deref(),
            Some("replica-b")
        );
        let writes = env.status_writes_by_name().await;
        for n in first.iter().chain(&second) {
            assert_eq!(writes.get(n).copied(), Some(1), "{n}: no CSR issued twice");
        }
        assert_eq!(sample(&b.metrics().await.unwrap(), ISSUED), Some(30.0));
    }
}

on_both_servers! {
    async fn sigterm_releases_the_lease_for_an_immediate_takeover(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let mut a = Signer::start(&env, &ca, true, "term-a", 2000);
        a.wait_metric("csr_signer_leader", |v| v == 1.0).await;
        // A standby (its workers parked waiting for leadership) also stops cleanly on SIGTERM.
        let mut b = Signer::start(&env, &ca, true, "term-b", 2000);
        b.wait_ready().await;
        assert_eq!(
            sample(&b.metrics().await.unwrap(), "csr_signer_leader"),
            Some(0.0)
        );
        let status = b.sigterm();
        assert!(
            status.success(),
            "standby graceful exit: {status:?}\n{}",
            b.log_text()
        );
        let status = a.sigterm();
        assert!(
            status.success(),
            "graceful exit: {status:?}\n{}",
            a.log_text()
        );
        let leases: Api<Lease> = Api::namespaced(env.admin.clone(), "csr-signer");
        let spec = leases.get("csr-signer").await.unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity, None, "lease released on SIGTERM");
        assert!(a.log_text().contains("released lease"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_signer_and_answers_a_signing_quantile() {
    let prometheus = which("prometheus").unwrap_or_else(|| {
        panic!("prometheus is not installed: run tests/controller/setup.sh first")
    });
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start().await;
    let (svc, stop) = env
        .start_signer(env.settings(&ca.cert, &ca.key, "", false), "prom")
        .await;
    let names = create_approved(&env, "prom", 20).await;
    env.wait_all_issued(&names).await;

    let dir = env.dir.path().join("prometheus");
    std::fs::create_dir(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: csr-signer\n  static_configs:\n  - targets: [\"{}\"]\n",
            svc.listen
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let query = "histogram_quantile(0.99, sum by (le) (csr_signer_signing_duration_seconds_bucket{signer=\"example.com/mtls\"}))";
    let mut answer = None;
    for _ in 0..600 {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await;
        if let Ok(r) = r {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if let Some(s) = v["data"]["result"][0]["value"][1].as_str() {
                    answer = s.parse::<f64>().ok();
                    if answer.is_some() {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = prom.kill();
    let _ = prom.wait();
    let q = answer.expect("prometheus never answered the quantile query");
    // 20 signings happened, so the quantile is a real, positive latency within the buckets.
    assert!(q.is_finite() && q > 0.0 && q <= 0.1, "{q}");
    stop.send(()).unwrap();
    svc.wait().await.unwrap();
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}
