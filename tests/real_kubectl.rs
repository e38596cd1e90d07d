//! kubectl and openssl drive the Kubernetes CSR tutorial against the REAL kube-apiserver (tests/kube), with
//! `csr-signer run` as a subprocess signing for `example.com/mtls` under exactly the Helm chart's RBAC:
//!
//! - `kubectl_1_27_tutorial`, `kubectl_1_32_tutorial`, `kubectl_1_33_tutorial`: the tutorial verbatim on the
//!   shared control plane (openssl genrsa/req, `apply -f csr.yaml`, `get csr`, `certificate approve`, the
//!   certificate by jsonpath, `openssl x509`/`verify`, `describe csr` with the signer's events), and a CSR the
//!   policy refuses (CN=admin asked for by the developer) ending `Approved,Failed`.
//! - `onboarding_*`: the tutorial's exercise end to end on a private control plane whose client CA trusts
//!   csr-signer's root: a new team member's certificate, signed by csr-signer, is a kubectl client
//!   credential that authenticates as that user and team (`auth whoami`), RBAC applies to it, and a
//!   certificate the policy refuses never exists. Once with a flat CA, once with a signing intermediate.
#![allow(clippy::unwrap_used)]

#[path = "kube_support/mod.rs"]
mod kube_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use csr_signer::ca_init::KeyType;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_support::ControlPlane;
use support::kubectl::{manifest, run, sh, Out};
use support::{free_port, TestCa};

const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_132: &str = "/usr/bin/kubectl";
const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

use support::SIGNER;

/// The rows of `kubectl get csr` (header first), split on whitespace.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `csr-signer run` as a subprocess, as the signer ServiceAccount (token in its own kubeconfig).
struct Signer {
    child: std::process::Child,
    log: PathBuf,
}

impl Signer {
    /// Starts the binary with leader election on (the chart's Lease rule is exercised too) and
    /// `policy` (YAML flow-map body under `policy:`). Returns once `/readyz` answers 200.
    async fn start(cp: &ControlPlane, ca: &TestCa, dir: &Path, policy: &str) -> Signer {
        let listen = format!("127.0.0.1:{}", free_port());
        let config = dir.join("csr-signer.yaml");
        std::fs::write(
            &config,
            format!(
                "signers:\n- name: {SIGNER}\n  ca: {{certFile: {}, keyFile: {}}}\n  policy: {{{policy}}}\n\
                 controller:\n  leaderElection: {{enabled: true, namespace: {}, leaseName: csr-signer, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1}}\n\
                 server: {{listen: \"{listen}\"}}\n",
                ca.cert.display(),
                ca.key.display(),
                kube_support::SIGNER_NAMESPACE,
            ),
        )
        .unwrap();
        let kubeconfig = dir.join("signer.kubeconfig");
        std::fs::write(&kubeconfig, cp.kubeconfig_yaml(cp.token("signer"))).unwrap();
        let log = dir.join("csr-signer.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("POD_NAME", "csr-signer-0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Signer { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = reqwest::get(format!("http://{listen}/readyz")).await;
            if r.is_ok_and(|r| r.status().as_u16() == 200) {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("csr-signer exited ({st}); log:\n{}", s.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "csr-signer never ready; log:\n{}",
                s.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user's working directory: HOME for kubectl, with a copy of the control plane's kubeconfig
/// (contexts admin — the current one —, developer, approver, …).
fn workdir(cp: &ControlPlane) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::copy(&cp.ready.kubeconfig, &kc).unwrap();
    (dir, kc)
}

/// Polls `kubectl get csr NAME -o jsonpath={.status.certificate}` until it is not empty.
async fn wait_certificate(bin: &str, kc: &Path, name: &str, signer: &Signer) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = run(
            bin,
            kc,
            &["get", "csr", name, "-o", "jsonpath={.status.certificate}"],
            None,
        )
        .await;
        assert!(o.ok, "{}", o.stderr);
        if !o.stdout.trim().is_empty() {
            return o.stdout.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no certificate for {name}; csr-signer log:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls the CSR's condition types (`kubectl get -o jsonpath`) until they include `Failed`.
async fn wait_failed(bin: &str, kc: &Path, name: &str, signer: &Signer) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = run(
            bin,
            kc,
            &[
                "get",
                "csr",
                name,
                "-o",
                "jsonpath={.status.conditions[*].type}",
            ],
            None,
        )
        .await;
        assert!(o.ok, "{}", o.stderr);
        if o.stdout.contains("Failed") {
            return o.stdout.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never Failed; csr-signer log:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl describe csr NAME` once it lists an event with `reason` (events are sent asynchronously).
async fn describe_with_event(bin: &str, kc: &Path, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = run(bin, kc, &["describe", "csr", name], None).await;
        assert!(o.ok, "{}", o.stderr);
        let has = o.stdout.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 2 && w[1] == reason
        });
        if has {
            return o.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "describe never showed a {reason} event:\n{}",
            o.stdout
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_contains(text: &str, wants: &[&str]) {
    for w in wants {
        assert!(text.contains(w), "lacks {w:?}:\n{text}");
    }
}

/// Part A: the tutorial, verbatim, with one kubectl.
async fn tutorial(bin: &str) {
    let cp = kube_support::shared();
    let _guard = kube_support::exclusive().await;
    let admin = cp.client("admin").await;
    Api::<CertificateSigningRequest>::all(admin.clone())
        .delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
    Api::<Lease>::namespaced(admin, kube_support::SIGNER_NAMESPACE)
        .delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
    cp.apply_chart_rbac(&[SIGNER], "csr-signer").await;
    let ca = TestCa::new(KeyType::P256);
    let (dir, kc) = workdir(cp);
    let d = dir.path();
    let signer = Signer::start(cp, &ca, d, "").await;

    sh(d, "openssl genrsa -out developer.key 2048").await;
    sh(
        d,
        "openssl req -new -key developer.key -subj \"/CN=developer/O=development\" -out developer.csr",
    )
    .await;
    let req = sh(d, "base64 -w0 < developer.csr").await;
    std::fs::write(
        d.join("csr.yaml"),
        manifest("developer", &req, SIGNER, "86400", &["client auth"]),
    )
    .unwrap();
    let o = run(
        bin,
        &kc,
        &["--context", "developer", "apply", "-f", "csr.yaml"],
        None,
    )
    .await;
    assert!(o.ok, "apply: {}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/developer created"
    );

    let o = run(bin, &kc, &["get", "csr"], None).await;
    assert!(o.ok, "{}", o.stderr);
    let r = rows(&o.stdout);
    assert_eq!(
        r[0],
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ],
        "{}",
        o.stdout
    );
    assert_eq!(r.len(), 2, "{}", o.stdout);
    assert_eq!(r[1][0], "developer");
    assert_eq!(
        r[1][2..],
        [SIGNER, "developer", "24h", "Pending"],
        "{}",
        o.stdout
    );
    // The signer has seen it and says what it is waiting for.
    describe_with_event(bin, &kc, "developer", "WaitingForApproval").await;

    // The developer may not approve; the approver may (example.com/* signers).
    let o = run(
        bin,
        &kc,
        &[
            "--context",
            "developer",
            "certificate",
            "approve",
            "developer",
        ],
        None,
    )
    .await;
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"developer\" is forbidden: User \"developer\" cannot update resource \"certificatesigningrequests/approval\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
    let o = run(
        bin,
        &kc,
        &[
            "--context",
            "approver",
            "certificate",
            "approve",
            "developer",
        ],
        None,
    )
    .await;
    assert!(o.ok, "approve: {}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/developer approved"
    );

    let b64 = wait_certificate(bin, &kc, "developer", &signer).await;
    std::fs::write(d.join("developer.b64"), &b64).unwrap();
    sh(d, "base64 -d developer.b64 > developer.crt").await;
    let x = sh(
        d,
        "openssl x509 -in developer.crt -noout -subject -enddate -nameopt RFC2253",
    )
    .await;
    assert!(
        x.starts_with("subject=O=development,CN=developer\nnotAfter="),
        "{x}"
    );
    // 24 h requested (>= 8 h: ends at signing time + 24 h - 5 min).
    sh(d, "! openssl x509 -in developer.crt -noout -checkend 86400").await;
    sh(d, "openssl x509 -in developer.crt -noout -checkend 85500").await;
    let v = sh(
        d,
        &format!("openssl verify -CAfile {} developer.crt", ca.root.display()),
    )
    .await;
    assert_eq!(v.trim(), "developer.crt: OK");
    // The certificate is for the tutorial's key.
    let a = sh(d, "openssl x509 -in developer.crt -noout -pubkey").await;
    let b = sh(d, "openssl pkey -in developer.key -pubout").await;
    assert_eq!(a, b);

    let o = run(bin, &kc, &["get", "csr", "developer"], None).await;
    assert_eq!(
        rows(&o.stdout)[1].last().unwrap(),
        "Approved,Issued",
        "{}",
        o.stdout
    );
    let text = describe_with_event(bin, &kc, "developer", "Issued").await;
    assert_contains(
        &text,
        &[
            "Requesting User:     developer",
            "Signer:              example.com/mtls",
            "Requested Duration:  24h",
            "Status:              Approved,Issued",
            "Common Name:    developer",
            "Organization:   development",
        ],
    );
    // The Issued event names the certificate's serial and notAfter.
    let serial = sh(d, "openssl x509 -in developer.crt -noout -serial").await;
    let serial = serial
        .trim()
        .strip_prefix("serial=")
        .unwrap()
        .to_lowercase();
    let not_after = sh(
        d,
        "openssl x509 -in developer.crt -noout -enddate -dateopt iso_8601",
    )
    .await;
    let not_after = not_after
        .trim()
        .strip_prefix("notAfter=")
        .unwrap()
        .replace(' ', "T");
    let ev = events(&text);
    assert_eq!(
        ev,
        [
            (
                "Normal".to_string(),
                "WaitingForApproval".to_string(),
                "csr-signer".to_string(),
                "waiting for approval; example.com/mtls will sign once the request is approved"
                    .to_string()
            ),
            (
                "Normal".to_string(),
                "Issued".to_string(),
                "csr-signer".to_string(),
                format!("issued certificate serial {serial} valid until {not_after}; granted 86400s (requested 86400s, honoured)")
            )
        ],
        "{text}"
    );

    // A CSR the policy refuses: the developer asks for CN=admin. Approval is a person's decision;
    // the signer still checks the subject against who asked.
    request(bin, &kc, "developer", "admin", "/CN=admin").await;
    describe_with_event(bin, &kc, "admin", "WaitingForApproval").await;
    let o = run(
        bin,
        &kc,
        &["--context", "approver", "certificate", "approve", "admin"],
        None,
    )
    .await;
    assert!(o.ok, "approve: {}", o.stderr);
    let why = "IdentityMismatch: subject commonName \"admin\" does not belong to requester \"developer\" (pattern \"{username}\")";
    assert_refused(bin, &kc, "admin", why, &signer).await;
    let o = run(bin, &kc, &["get", "csr"], None).await;
    let r = rows(&o.stdout);
    assert_eq!(r.len(), 3, "{}", o.stdout);
    let admin_row = r.iter().find(|r| r[0] == "admin").unwrap();
    assert_eq!(
        admin_row[2..],
        [SIGNER, "developer", "24h", "Approved,Failed"],
        "{}",
        o.stdout
    );
    let text = describe_with_event(bin, &kc, "admin", "SigningFailed").await;
    assert_contains(
        &text,
        &[
            "Requesting User:     developer",
            "Status:              Approved,Failed",
            "Common Name:    admin",
        ],
    );
    let ev = events(&text);
    assert_eq!(
        ev.last().unwrap(),
        &(
            "Warning".to_string(),
            "SigningFailed".to_string(),
            "csr-signer".to_string(),
            why.to_string()
        ),
        "{text}"
    );
    assert_eq!(ev.len(), 2, "{text}");
    drop(signer);
}

/// Waits for `name` to fail and checks it ended with the Approved condition and exactly one Failed
/// condition carrying `why` (`Reason: message`), and no certificate.
async fn assert_refused(bin: &str, kc: &Path, name: &str, why: &str, signer: &Signer) {
    let types = wait_failed(bin, kc, name, signer).await;
    assert_eq!(types, "Approved Failed");
    let o = run(
        bin,
        kc,
        &[
            "get",
            "csr",
            name,
            "-o",
            "jsonpath={range .status.conditions[?(@.type==\"Failed\")]}{.status} {.reason}: {.message}{\"\\n\"}{end}[{.status.certificate}]",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, format!("True {why}\n[]"));
}

/// The event rows of `kubectl describe`: (type, reason, from, message).
fn events(describe: &str) -> Vec<(String, String, String, String)> {
    let mut lines = describe.lines().skip_while(|l| !l.starts_with("Events:"));
    lines.next();
    lines
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].to_string(),
                w[1].to_string(),
                w[3].to_string(),
                w[4..].join(" "),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_tutorial() {
    tutorial(KUBECTL_127).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_tutorial() {
    tutorial(KUBECTL_132).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_tutorial() {
    tutorial(KUBECTL_133).await;
}

/// Lines of kubectl's output with runs of whitespace collapsed to one space.
fn squeeze(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `kubectl config set-credentials USER --client-certificate --client-key --embed-certs` and a context
/// of the same name on the control plane's cluster.
async fn set_user(bin: &str, kc: &Path, user: &str, cert: &str, key: &str) {
    let o = run(
        bin,
        kc,
        &[
            "config",
            "set-credentials",
            user,
            &format!("--client-certificate={cert}"),
            &format!("--client-key={key}"),
            "--embed-certs=true",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout.trim(), format!("User \"{user}\" set."));
    let o = run(
        bin,
        kc,
        &[
            "config",
            "set-context",
            user,
            "--cluster=kube",
            &format!("--user={user}"),
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout.trim(), format!("Context \"{user}\" created."));
}

/// `kubectl --context USER get pods -n default` fails authentication.
async fn assert_unauthorized(bin: &str, kc: &Path, user: &str) {
    let o = run(
        bin,
        kc,
        &["--context", user, "get", "pods", "-n", "default"],
        None,
    )
    .await;
    assert!(!o.ok, "{user}: {}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        "error: You must be logged in to the server (Unauthorized)",
        "{user}"
    );
}

/// Creates a CSR for `subject` (openssl, RSA 2048) from the manifest file `NAME.yaml` with `kubectl
/// --context CONTEXT apply`; returns kubectl's answer.
async fn request(bin: &str, kc: &Path, context: &str, name: &str, subject: &str) -> Out {
    let d = kc.parent().unwrap();
    sh(
        d,
        &format!("openssl genrsa -out {name}.key 2048 && openssl req -new -key {name}.key -subj \"{subject}\" -out {name}.csr"),
    )
    .await;
    let req = sh(d, &format!("base64 -w0 < {name}.csr")).await;
    std::fs::write(
        d.join(format!("{name}.yaml")),
        manifest(name, &req, SIGNER, "86400", &["client auth"]),
    )
    .unwrap();
    let o = run(
        bin,
        kc,
        &["--context", context, "apply", "-f", &format!("{name}.yaml")],
        None,
    )
    .await;
    assert!(o.ok, "apply: {}", o.stderr);
    o
}

/// `request`, then the approver approves it.
async fn request_and_approve(bin: &str, kc: &Path, context: &str, name: &str, subject: &str) {
    request(bin, kc, context, name, subject).await;
    let o = run(
        bin,
        kc,
        &["--context", "approver", "certificate", "approve", name],
        None,
    )
    .await;
    assert!(o.ok, "approve: {}", o.stderr);
}

/// Part B: the tutorial's exercise. csr-signer's CA exists first; the cluster's client CA trusts its
/// root; a new team member (jane, team platform) gets a client certificate from csr-signer and uses it
/// with kubectl.
async fn onboarding(ca: TestCa, chain_len: usize) {
    // One private control plane at a time from this binary (the machine has 2 cores).
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE.lock().await;
    let cp = tokio::task::spawn_blocking({
        let root = ca.root.clone();
        move || {
            ControlPlane::start(&kube_support::Options {
                extra_client_ca: Some(root),
                ..Default::default()
            })
        }
    })
    .await
    .unwrap();
    cp.apply_chart_rbac(&[SIGNER], "csr-signer").await;
    let (dir, kc) = workdir(&cp);
    let d = dir.path();
    // Onboarding flow: jane has no credential for the cluster yet (that is what she is getting), so
    // she cannot create her own CSR. As in the Kubernetes tutorial's "normal user" section, a cluster
    // administrator creates the CSR for her (CN=jane, O=platform; jane's key would stay on her
    // machine, only the CSR travels) and an approver approves it. csr-signer's default identity
    // binding (CN = `{username}` of the requester) would refuse CN=jane from "admin"
    // (IdentityMismatch), so the onboarding identity is listed in `trustedRequesters`: it may fill
    // `{username}` with any single name; everything else in the policy (system:masters never,
    // usages, key, lifetime) still applies to it. Everyone else stays bound to their own name.
    // ("Any single name" includes system:* user names such as system:node:node-1 with O=system:nodes:
    // for a client CA the apiserver trusts, the approver remains the gate for the trusted identity.)
    let signer = Signer::start(&cp, &ca, d, "trustedRequesters: [admin]").await;
    let bin = KUBECTL_133;

    request_and_approve(bin, &kc, "admin", "jane", "/CN=jane/O=platform").await;
    let b64 = wait_certificate(bin, &kc, "jane", &signer).await;
    std::fs::write(d.join("jane.b64"), &b64).unwrap();
    sh(d, "base64 -d jane.b64 > jane.crt").await;
    let pem = std::fs::read_to_string(d.join("jane.crt")).unwrap();
    assert_eq!(
        pem.matches("-----BEGIN CERTIFICATE-----").count(),
        chain_len,
        "{pem}"
    );
    let x = sh(
        d,
        "openssl x509 -in jane.crt -noout -subject -ext extendedKeyUsage -nameopt RFC2253",
    )
    .await;
    assert_eq!(
        x,
        "subject=O=platform,CN=jane\nX509v3 Extended Key Usage: \n    TLS Web Client Authentication\n"
    );
    // openssl verify against the root, intermediates (if any) taken from the chain itself.
    let v = sh(
        d,
        &format!(
            "openssl verify -CAfile {} -untrusted jane.crt jane.crt",
            ca.root.display()
        ),
    )
    .await;
    assert_eq!(v.trim(), "jane.crt: OK");

    // The certificate (with the intermediates after it) and key as jane's kubectl credential.
    set_user(bin, &kc, "jane", "jane.crt", "jane.key").await;
    if chain_len > 1 {
        // Without the intermediates the apiserver (which trusts only the root) cannot build the
        // path: the chain in status.certificate is what makes an intermediate CA work as is.
        sh(d, "openssl x509 -in jane.crt -out jane-leaf.crt").await;
        set_user(bin, &kc, "jane-leaf", "jane-leaf.crt", "jane.key").await;
        assert_unauthorized(bin, &kc, "jane-leaf").await;
    }
    // The apiserver names the certificate it authenticated in the user's extra (SHA-256 of the leaf).
    let fp = sh(d, "openssl x509 -in jane.crt -noout -fingerprint -sha256").await;
    let fp = fp
        .trim()
        .split_once('=')
        .unwrap()
        .1
        .replace(':', "")
        .to_lowercase();
    // The embedded credential is the whole chain: kubectl no longer needs the files.
    std::fs::remove_file(d.join("jane.crt")).unwrap();
    std::fs::remove_file(d.join("jane.key")).unwrap();

    // The apiserver authenticates jane by the certificate: CN is the user, O the group.
    for k in [KUBECTL_132, KUBECTL_133] {
        let o = run(k, &kc, &["--context", "jane", "auth", "whoami"], None).await;
        assert!(o.ok, "{k}: {}", o.stderr);
        assert_eq!(
            squeeze(&o.stdout),
            [
                "ATTRIBUTE VALUE".to_string(),
                "Username jane".to_string(),
                "Groups [platform system:authenticated]".to_string(),
                format!("Extra: authentication.kubernetes.io/credential-id [X509SHA256={fp}]"),
            ],
            "{k}: {}",
            o.stdout
        );
    }
    // kubectl 1.27's whoami asks for authentication.k8s.io v1alpha1/v1beta1 SelfSubjectReview, which a
    // 1.37 apiserver no longer serves (version skew, not csr-signer); 1.27 still authenticates with the
    // certificate: jane (system:authenticated) may list what she can do.
    let o = run(
        KUBECTL_127,
        &kc,
        &["--context", "jane", "auth", "whoami"],
        None,
    )
    .await;
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("the selfsubjectreviews API is not enabled in the cluster"),
        "{}",
        o.stderr
    );
    let o = run(
        KUBECTL_127,
        &kc,
        &["--context", "jane", "auth", "can-i", "--list"],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("selfsubjectreviews.authentication.k8s.io"),
        "{}",
        o.stdout
    );

    // RBAC applies to jane: nothing on pods until her team is bound to a role.
    for k in [KUBECTL_127, KUBECTL_132, KUBECTL_133] {
        let o = run(
            k,
            &kc,
            &["--context", "jane", "get", "pods", "-n", "default"],
            None,
        )
        .await;
        assert!(!o.ok, "{k}: {}", o.stdout);
        assert_eq!(
            o.stderr.trim(),
            "Error from server (Forbidden): pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
            "{k}"
        );
    }
    let o = run(
        bin,
        &kc,
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            "default",
            "--verb=get",
            "--verb=list",
            "--verb=watch",
            "--resource=pods",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    let o = run(
        bin,
        &kc,
        &[
            "create",
            "rolebinding",
            "platform-pod-reader",
            "-n",
            "default",
            "--role=pod-reader",
            "--group=platform",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "rolebinding.rbac.authorization.k8s.io/platform-pod-reader created"
    );
    // The RBAC authorizer works from an informer cache: allow it a moment to see the binding.
    let deadline = Instant::now() + Duration::from_secs(20);
    for k in [KUBECTL_127, KUBECTL_132, KUBECTL_133] {
        loop {
            let o = run(
                k,
                &kc,
                &["--context", "jane", "get", "pods", "-n", "default"],
                None,
            )
            .await;
            if o.ok {
                assert_eq!(o.stdout, "", "{k}");
                assert_eq!(o.stderr.trim(), "No resources found in default namespace.");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{k}: still refused after the RoleBinding: {}",
                o.stderr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Only what the role grants, only where it is bound.
    for (args, want) in [
        (&["list", "pods", "-n", "default"][..], "yes"),
        (&["delete", "pods", "-n", "default"][..], "no"),
        (&["list", "pods", "-n", "kube-system"][..], "no"),
    ] {
        let mut a = vec!["--context", "jane", "auth", "can-i"];
        a.extend_from_slice(args);
        let o = run(bin, &kc, &a, None).await;
        assert_eq!(o.stdout.trim(), want, "{args:?}: {}", o.stderr);
    }

    // Names the policy refuses never get a certificate, approved or not:
    // - the developer asking for a colleague's name (bound to their own username);
    request_and_approve(
        bin,
        &kc,
        "developer",
        "jane-by-developer",
        "/CN=jane/O=platform",
    )
    .await;
    assert_refused(
        bin,
        &kc,
        "jane-by-developer",
        "IdentityMismatch: subject commonName \"jane\" does not belong to requester \"developer\" (pattern \"{username}\")",
        &signer,
    )
    .await;
    // - even the trusted onboarding identity asking for the cluster-admin group;
    request_and_approve(bin, &kc, "admin", "jane-admin", "/CN=jane/O=system:masters").await;
    assert_refused(
        bin,
        &kc,
        "jane-admin",
        "SubjectNotAllowed: subject organization \"system:masters\" is never allowed",
        &signer,
    )
    .await;
    // - a name that is not a single segment for `{username}`.
    request_and_approve(bin, &kc, "admin", "jane-dotted", "/CN=jane.doe/O=platform").await;
    assert_refused(
        bin,
        &kc,
        "jane-dotted",
        "SubjectNotAllowed: subject commonName \"jane.doe\" is not allowed (allowed: \"{username}\", \"{serviceaccount}.{namespace}.svc\", \"{serviceaccount}.{namespace}.svc.cluster.local\")",
        &signer,
    )
    .await;
    let o = run(bin, &kc, &["get", "csr"], None).await;
    let conditions: Vec<(String, String, String)> = rows(&o.stdout)
        .into_iter()
        .skip(1)
        .map(|r| (r[0].clone(), r[3].clone(), r[5].clone()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("jane", "admin", "Approved,Issued"),
            ("jane-admin", "admin", "Approved,Failed"),
            ("jane-by-developer", "developer", "Approved,Failed"),
            ("jane-dotted", "admin", "Approved,Failed"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
        "{}",
        o.stdout
    );

    // A client certificate from any other CA does not authenticate, whatever it claims.
    sh(
        d,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout mallory.key -out mallory.crt -subj /CN=mallory/O=system:masters -days 1 2>/dev/null",
    )
    .await;
    set_user(bin, &kc, "mallory", "mallory.crt", "mallory.key").await;
    assert_unauthorized(bin, &kc, "mallory").await;
    drop(signer);
    drop(cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_flat_ca() {
    onboarding(TestCa::new(KeyType::P256), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_intermediate_ca() {
    // status.certificate is leaf + intermediate; the client CA holds only the root.
    onboarding(TestCa::with_intermediate(KeyType::P256), 2).await;
}
