//! `csr-signer request` as a subprocess, on the local API and on the real kube-apiserver, running as the
//! service account team-a:app with the signer for example.com/mtls in front of it: the certificate it
//! writes verifies (`openssl verify`) against the bundle it wrote from the ClusterTrustBundle; Denied,
//! Failed and a timeout exit with their codes and say why; `--renew` renews several times, runs its hook
//! after each, and a TLS server reloading the files on every connection keeps handshaking throughout;
//! after `kill -9` it resumes with the same key, and a restart with a good certificate on disk makes no CSR.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod process_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use kube::api::ListParams;
use openssl::x509::X509;
use support::{openssl_verify, TestCa};
use tokio::io::{AsyncBufReadExt, BufReader};

const TEAM_A: &str = "system:serviceaccount:team-a:app";

/// The signer (with ClusterTrustBundles) running, and a kubeconfig for team-a:app, which may create and
/// watch CSRs (the RBAC docs/helm.md gives a requesting pod) and, as every service account, read
/// ClusterTrustBundles (kube-apiserver's default binding system:cluster-trust-bundle-discovery).
struct Setup {
    env: Env,
    _ca: TestCa,
    _signer: (
        csr_signer::service::Service,
        tokio::sync::oneshot::Sender<()>,
    ),
    kubeconfig: PathBuf,
    developer_kubeconfig: PathBuf,
}

async fn setup(server: Server) -> Setup {
    let env = Env::on(server).await;
    let ca = TestCa::new(KeyType::P256);
    let yaml = format!(
        "{}trustBundles: {{enabled: true, resyncSeconds: 1}}\n",
        settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0")
    );
    let settings = csr_signer::config::Settings::from_yaml(&yaml, "test.yaml").unwrap();
    let signer = env.start_signer(settings, env.signer_user()).await;
    let (token, developer, serving_ca) = match &env.backend {
        Backend::Local(api) => (
            api.token(TEAM_A).unwrap(),
            api.token("developer").unwrap(),
            None,
        ),
        Backend::Real(_) => {
            let cp = kube_support::shared();
            (
                cp.token("team-a").to_string(),
                cp.token("developer").to_string(),
                Some(cp.ready.serving_ca.clone()),
            )
        }
    };
    let kubeconfig = env.dir.path().join("team-a.kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_yaml(&env.base, &token, serving_ca.as_deref()),
    )
    .unwrap();
    // The developer (a person, not a service account) may create CSRs but not read ClusterTrustBundles.
    let developer_kubeconfig = env.dir.path().join("developer.kubeconfig");
    std::fs::write(
        &developer_kubeconfig,
        kubeconfig_yaml(&env.base, &developer, serving_ca.as_deref()),
    )
    .unwrap();
    // The signer publishes its bundle within a second; the requester reads it after issuance.
    let bundles: kube::Api<k8s_openapi::api::certificates::v1::ClusterTrustBundle> =
        kube::Api::all(env.admin.clone());
    for _ in 0..200 {
        if bundles
            .get_opt("example.com:mtls:live")
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Setup {
        env,
        _ca: ca,
        _signer: signer,
        kubeconfig,
        developer_kubeconfig,
    }
}

/// `csr-signer request` running, its JSON log lines collected as they come.
struct Requester {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    raw: Arc<Mutex<String>>,
}

impl Requester {
    fn start(s: &Setup, dir: &Path, extra: &[&str]) -> Requester {
        Requester::start_as(&s.kubeconfig, dir, extra)
    }

    fn start_as(kubeconfig: &Path, dir: &Path, extra: &[&str]) -> Requester {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .args(["--log-format", "json", "request", "--signer-name", SIGNER])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
        let (l, r) = (lines.clone(), raw.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                r.lock().unwrap().push_str(&format!("{line}\n"));
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    l.lock().unwrap().push(v["fields"].clone());
                }
            }
        });
        Requester { child, lines, raw }
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["event"] == event)
            .cloned()
            .collect()
    }

    /// Waits for the `n`th (from 1) log line with this event.
    async fn nth(&self, event: &str, n: usize) -> serde_json::Value {
        for _ in 0..1200 {
            if let Some(v) = self.events(event).get(n - 1) {
                return v.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no {n}th {event:?} log line; log:\n{}",
            self.raw.lock().unwrap()
        );
    }

    async fn exit_code(mut self) -> (i32, String) {
        let Ok(status) = tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await
        else {
            panic!("request did not exit; log:\n{}", self.raw.lock().unwrap());
        };
        let status = status.unwrap();
        // Let the reader drain the last lines.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let raw = self.raw.lock().unwrap().clone();
        (status.code().unwrap_or(-1), raw)
    }
}

/// Approves (or denies) the next `n` CSRs the requester creates, each as its `created` line appears.
async fn decide(env: &Env, r: &Requester, n: usize, approve: bool) -> Vec<String> {
    let mut names = Vec::new();
    for i in 1..=n {
        let name = r.nth("created", i).await["csr"]
            .as_str()
            .unwrap()
            .to_string();
        if approve {
            env.approve(&name).await;
        } else {
            env.deny(&name).await;
        }
        names.push(name);
    }
    names
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn serial_hex(pem: &str) -> String {
    let c = X509::from_pem(pem.as_bytes()).unwrap();
    c.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// The public key of the key file, as `openssl pkey -pubout` prints it (independent of our code).
fn public_key_of(key_file: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The public key in the certificate file, as `openssl x509 -pubkey` prints it.
fn public_key_in_cert(cert_file: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(cert_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The files verify, the key is the certificate's and 0600, and the names are the service account's.
fn check_files(dir: &Path) {
    let chain = read(&dir.join("tls.crt"));
    openssl_verify(&chain, &dir.join("ca.crt"), dir)
        .unwrap_or_else(|e| panic!("the certificate does not verify against ca.crt: {e}"));
    assert_eq!(
        public_key_of(&dir.join("tls.key")),
        public_key_in_cert(&dir.join("tls.crt"))
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "tls.key mode {mode:o}");
    let text = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(dir.join("tls.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for want in [
        "CN=system:serviceaccount:team-a:app",
        "DNS:app.team-a.svc",
        "DNS:app.team-a.svc.cluster.local",
        "URI:spiffe://cluster.local/ns/team-a/sa/app",
    ] {
        assert!(
            text.replace(" = ", "=").contains(want),
            "{want} missing in:\n{text}"
        );
    }
}

on_both_servers! {
    async fn a_service_account_gets_a_certificate_that_verifies_against_the_bundle(server) {
        let s = setup(server).await;
        // A directory that does not exist yet: request creates it.
        let dir = s.env.dir.path().join("out/tls");
        let r = Requester::start(&s, &dir, &["--duration", "10m"]);
        let names = decide(&s.env, &r, 1, true).await;
        let identity = r.nth("identity", 1).await;
        let issued = r.nth("issued", 1).await;
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 0, "{log}");
        assert_eq!(identity["username"], TEAM_A);
        check_files(&dir);
        // The log line names what was written: the serial and notAfter of tls.crt.
        let chain = read(&dir.join("tls.crt"));
        assert_eq!(issued["serial"], serial_hex(&chain));
        assert_eq!(issued["csr"], names[0].as_str());
        let leaf = X509::from_pem(chain.as_bytes()).unwrap();
        let (nb, na) = csr_signer::requester::validity(&leaf).unwrap();
        assert_eq!(issued["not_after"], humantime::format_rfc3339_seconds(na).to_string());
        // spec.expirationSeconds was 600: lifetime 10 min after the 5 min backdating.
        assert_eq!(na.duration_since(nb).unwrap(), Duration::from_secs(900));
        // The CSR was created by team-a:app with generateName.
        let csr = s.env.csrs().get(&names[0]).await.unwrap();
        assert_eq!(csr.spec.username.as_deref(), Some(TEAM_A));
        assert!(names[0].starts_with("team-a-app-"), "{}", names[0]);
        assert_eq!(csr.spec.expiration_seconds, Some(600));

        // An Ed25519 key and the bundle from a file (the one just written), same checks.
        let dir2 = s.env.dir.path().join("out2");
        std::fs::create_dir(&dir2).unwrap();
        let r = Requester::start(&s, &dir2, &[
            "--key-type", "ed25519", "--ca-file", dir.join("ca.crt").to_str().unwrap(),
        ]);
        decide(&s.env, &r, 1, true).await;
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 0, "{log}");
        check_files(&dir2);
        assert!(public_key_of(&dir2.join("tls.key")).contains("MCowBQYDK2Vw"), "an Ed25519 key");
    }
}

on_both_servers! {
    async fn denied_failed_and_timeout_exit_with_their_codes_and_reasons(server) {
        let s = setup(server).await;
        let dir = s.env.dir.path().join("out");
        std::fs::create_dir(&dir).unwrap();

        let r = Requester::start(&s, &dir, &[]);
        let names = decide(&s.env, &r, 1, false).await;
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 3, "{log}");
        assert!(log.contains(&format!("CertificateSigningRequest {} Denied: TestDenied: Denied by the test", names[0])), "{log}");
        assert!(log.contains(r#""event":"denied""#), "{log}");
        assert!(!dir.join("tls.crt").exists());

        // A name that is not team-a's: approved, then refused by the signer's policy.
        let r = Requester::start(&s, &dir, &["--dns", "app.team-b.svc"]);
        decide(&s.env, &r, 1, true).await;
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 4, "{log}");
        assert!(log.contains("Failed: IdentityMismatch: "), "{log}");
        assert!(log.contains("app.team-b.svc"), "{log}");
        assert!(log.contains(r#""event":"failed""#), "{log}");
        assert!(!dir.join("tls.crt").exists());

        // Nobody approves.
        let r = Requester::start(&s, &dir, &["--timeout", "2s"]);
        r.nth("created", 1).await;
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 5, "{log}");
        assert!(log.contains("no certificate after 2s"), "{log}");

        // A lifetime the apiserver would refuse: a local error before anything is created.
        let r = Requester::start(&s, &dir, &["--duration", "5m"]);
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 1, "{log}");
        assert!(log.contains("--duration must be at least 10m"), "{log}");

        // Credentials the apiserver does not accept: an API error (6) before anything is created.
        let bad = s.env.dir.path().join("bad.kubeconfig");
        std::fs::write(&bad, read(&s.kubeconfig).replace("token: \"", "token: \"x")).unwrap();
        let r = Requester::start_as(&bad, &dir, &["--timeout", "5s"]);
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 6, "{log}");
        assert!(log.contains(r#""event":"api_error""#) && log.contains("SelfSubjectReview"), "{log}");

        // No permission to read the signer's ClusterTrustBundles: an API error before any CSR exists.
        let before = s.env.csrs().list(&ListParams::default()).await.unwrap().items.len();
        let dir_d = s.env.dir.path().join("developer");
        let r = Requester::start_as(&s.developer_kubeconfig, &dir_d, &[]);
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 6, "{log}");
        assert!(log.contains("listing ClusterTrustBundles"), "{log}");
        assert!(log.contains("forbidden") || log.contains("Forbidden"), "{log}");
        assert_eq!(s.env.csrs().list(&ListParams::default()).await.unwrap().items.len(), before);

        // The same key was used throughout: it was created once and reused.
        let keys = Requester::start(&s, &dir, &["--timeout", "1s"]);
        let (code, log) = keys.exit_code().await;
        assert_eq!(code, 5, "{log}");
        assert!(!log.contains(r#""event":"key""#), "the key on disk is reused: {log}");
    }
}

/// A TLS server that loads tls.key and tls.crt afresh for every connection (as a server that reloads
/// on change would), and a client that handshakes every 100 ms verifying against ca.crt and the
/// service's DNS name. Returns the serials seen and the failures.
fn tls_traffic(
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sdir = dir.clone();
    let server_errors = Arc::new(Mutex::new(Vec::new()));
    let se = server_errors.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let acceptor = (|| {
                let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
                b.set_private_key_file(sdir.join("tls.key"), SslFiletype::PEM)?;
                b.set_certificate_chain_file(sdir.join("tls.crt"))?;
                b.check_private_key()?;
                Ok::<_, openssl::error::ErrorStack>(b.build())
            })();
            match acceptor {
                Ok(a) => {
                    if let Err(e) = a.accept(conn) {
                        se.lock().unwrap().push(format!("accept: {e}"));
                    }
                }
                Err(e) => se.lock().unwrap().push(format!("loading the files: {e}")),
            }
        }
    });
    std::thread::spawn(move || {
        let mut serials = Vec::new();
        let mut failures = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let r = (|| -> Result<String, String> {
                let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
                b.set_ca_file(dir.join("ca.crt"))
                    .map_err(|e| e.to_string())?;
                let c = b.build();
                let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                let s = c
                    .connect("app.team-a.svc", tcp)
                    .map_err(|e| e.to_string())?;
                let cert = s.ssl().peer_certificate().ok_or("no peer certificate")?;
                Ok(cert
                    .serial_number()
                    .to_bn()
                    .unwrap()
                    .to_hex_str()
                    .unwrap()
                    .to_string())
            })();
            match r {
                Ok(s) => {
                    if serials.last() != Some(&s) {
                        serials.push(s);
                    }
                }
                Err(e) => failures.push(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        failures.extend(server_errors.lock().unwrap().iter().cloned());
        (serials, failures)
    })
}

on_both_servers! {
    async fn renews_runs_the_hook_keeps_serving_and_resumes_after_kill(server) {
        let s = setup(server).await;
        let dir = s.env.dir.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let hooks = s.env.dir.path().join("hooks.log");
        let hook = format!("echo renewed >> {}", hooks.display());
        // 600 s certificates renewed when 597 s remain: 3 s after issuance (the floor is 5 s).
        let renew = ["--renew", "--duration", "10m", "--renew-before", "597s", "--jitter", "0"];
        // A process that counts the signals it gets, as a server reloading on a signal would. USR1, not HUP: a
        // shell cannot trap a signal that was ignored when it started, and under `nohup` HUP is.
        let pid_file = s.env.dir.path().join("app.pid");
        let hups = s.env.dir.path().join("signals.log");
        let mut app = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'echo usr1 >> {}' USR1; echo $$ > {}; while :; do sleep 0.1; done",
                hups.display(),
                pid_file.display()
            ))
            .spawn()
            .unwrap();
        let mut args: Vec<&str> = renew.to_vec();
        args.extend(["--signal", "USR1", "--signal-pid-file", pid_file.to_str().unwrap()]);
        args.extend(["--", "sh", "-c", &hook]);
        let r = Requester::start(&s, &dir, &args);
        decide(&s.env, &r, 1, true).await;
        r.nth("renewed", 1).await;
        check_files(&dir);
        let key_before = public_key_of(&dir.join("tls.key"));
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = tls_traffic(dir.clone(), stop.clone());
        // Three more renewals while the server serves.
        decide_more(&s.env, &r, 2, 4).await;
        r.nth("renewed", 4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let (serials, failures) = traffic.join().unwrap();
        assert!(failures.is_empty(), "handshakes failed across renewals: {failures:?}");
        assert!(serials.len() >= 3, "the server served the renewed certificates: {serials:?}");
        for h in r.events("hook") {
            assert_eq!(h["success"], true, "{h}");
        }
        assert_eq!(r.events("hook").len(), 4);
        assert_eq!(read(&hooks).lines().count(), 4, "the hook ran after each renewal");
        assert_eq!(r.events("signal").len(), 4);
        assert_eq!(read(&hups).lines().count(), 4, "the process got SIGUSR1 after each renewal");
        let _ = app.kill();
        let _ = app.wait();
        // The key is kept across renewals (no --rotate-key), and each certificate verifies.
        assert_eq!(public_key_of(&dir.join("tls.key")), key_before);
        check_files(&dir);

        // kill -9 and restart: the key on disk is reused; the certificate (due already) is renewed.
        let pid = r.child.id().unwrap();
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        let (code, _) = r.exit_code().await;
        assert_eq!(code, -1, "killed by a signal");
        let serial_before = serial_hex(&read(&dir.join("tls.crt")));
        let r = Requester::start(&s, &dir, &args);
        decide(&s.env, &r, 1, true).await;
        r.nth("renewed", 1).await;
        assert!(r.events("key").is_empty(), "no new key after a restart");
        assert_eq!(public_key_of(&dir.join("tls.key")), key_before);
        assert_ne!(serial_hex(&read(&dir.join("tls.crt"))), serial_before);
        check_files(&dir);
        drop(r);

        // A restart with a certificate that is not due: no CSR, only the schedule.
        let before = list_ours(&s.env).await;
        let r = Requester::start(&s, &dir, &["--renew", "--duration", "10m"]);
        let scheduled = r.nth("renewal_scheduled", 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(r.events("created").is_empty(), "{:?}", r.events("created"));
        assert_eq!(list_ours(&s.env).await, before);
        assert!(scheduled["at"].as_str().is_some());
        assert_eq!(public_key_of(&dir.join("tls.key")), key_before);
        // SIGTERM: a clean stop, exit 0.
        std::process::Command::new("kill").args(["-TERM", &r.child.id().unwrap().to_string()]).status().unwrap();
        let (code, log) = r.exit_code().await;
        assert_eq!(code, 0, "{log}");
    }
}

/// Approves the `from`th to the `to`th CSR the requester creates.
async fn decide_more(env: &Env, r: &Requester, from: usize, to: usize) {
    for i in from..=to {
        let name = r.nth("created", i).await["csr"]
            .as_str()
            .unwrap()
            .to_string();
        env.approve(&name).await;
    }
}

async fn list_ours(env: &Env) -> usize {
    env.csrs()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.spec.username.as_deref() == Some(TEAM_A))
        .count()
}

on_both_servers! {
    async fn self_subject_review_names_the_service_account(server) {
        // The identity `request` reads: the same answer on the local API as on kube-apiserver.
        let s = setup(server).await;
        let client = client_from(&s.kubeconfig).await;
        let review: k8s_openapi::api::authentication::v1::SelfSubjectReview = kube::Api::all(client)
            .create(&Default::default(), &Default::default())
            .await
            .unwrap();
        let info = review.status.unwrap().user_info.unwrap();
        assert_eq!(info.username.as_deref(), Some(TEAM_A));
        assert_eq!(
            info.groups.unwrap(),
            ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]
        );
        assert!(info.uid.is_some_and(|u| !u.is_empty()));
        assert!(info.extra.unwrap()["authentication.kubernetes.io/credential-id"][0].starts_with("JTI="));
    }
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// `kubectl auth whoami` (1.33, a protobuf request body) against `csr-signer dev` over TLS.
#[tokio::test]
async fn kubectl_auth_whoami_on_csr_signer_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = process_support::DevApi::start(dir.path(), true).await;
    let out = support::kubectl::run(
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        &dev.kubeconfig,
        &["--context", "developer", "auth", "whoami", "-o", "json"],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "SelfSubjectReview");
    assert_eq!(v["status"]["userInfo"]["username"], "developer");
    assert_eq!(
        v["status"]["userInfo"]["groups"],
        serde_json::json!(["system:authenticated"])
    );
}

on_both_servers! {
    async fn rotate_key_makes_a_new_key_for_each_renewal_and_a_failing_hook_stops_nothing(server) {
        let s = setup(server).await;
        let dir = s.env.dir.path().join("out");
        let r = Requester::start(&s, &dir, &[
            "--renew", "--rotate-key", "--duration", "10m", "--renew-before", "597s", "--jitter", "0",
            "--", "false",
        ]);
        decide(&s.env, &r, 1, true).await;
        r.nth("renewed", 1).await;
        let first = public_key_of(&dir.join("tls.key"));
        check_files(&dir);
        decide_more(&s.env, &r, 2, 2).await;
        r.nth("renewed", 2).await;
        assert_ne!(public_key_of(&dir.join("tls.key")), first, "a new key at the renewal");
        check_files(&dir);
        r.nth("hook", 2).await;
        for h in r.events("hook") {
            assert_eq!(h["success"], false, "{h}");
            assert_eq!(h["status"], "exit status: 1", "{h}");
        }
    }
}
