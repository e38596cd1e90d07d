//! `csr-signer dev` as a subprocess: it prints how to use it, writes a working kubeconfig,
//! stops cleanly on SIGTERM, and `--state` keeps objects across restarts.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

async fn start(kc: &Path, state: &Path) -> (Child, String) {
    start_with(kc, state, &["--no-signer"]).await
}

async fn start_with(kc: &Path, state: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csr-signer"))
        .arg("dev")
        .args(extra)
        .args(["--port", "0", "--kubeconfig-out"])
        .arg(kc)
        .arg("--state")
        .arg(state)
        .arg("--state-dir")
        .arg(state.parent().unwrap())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    // Keep reading so the server's later output has somewhere to go.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, printed)
}

async fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", kc)
        .env("HOME", kc.parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).await.unwrap();
    }
    drop(pipe);
    let o = child.wait_with_output().await.unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A developer creates CSR `name` (CN `cn`) with kubectl, and the approver approves it.
async fn request_and_approve(kc: &Path, name: &str, cn: &str) {
    let pem = support::CsrSpec::new(
        support::key(csr_signer::ca_init::KeyType::P256),
        &[("CN", cn)],
    )
    .pem();
    let req = base64::engine::general_purpose::STANDARD.encode(pem);
    let manifest = format!("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {req}\n  signerName: example.com/mtls\n  usages: [client auth]\n");
    let (ok, _, err) = kubectl(
        kc,
        &["--context", "developer", "apply", "-f", "-"],
        Some(&manifest),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        kc,
        &["--context", "approver", "certificate", "approve", name],
        None,
    )
    .await;
    assert!(ok, "{err}");
}

async fn terminate(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "clean exit on SIGTERM, got {status:?}");
}

/// The command `csr-signer dev` prints for the CA to trust works, and what it prints is the anchor of the
/// certificates the dev signer issues (`openssl verify` with nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_command_publishes_the_ca_as_a_cluster_trust_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let (child, printed) = start_with(&kc, &dir.path().join("state.json"), &[]).await;
    let hint = printed
        .lines()
        .find(|l| l.contains("clustertrustbundle"))
        .unwrap_or_else(|| panic!("no trust bundle hint in:\n{printed}"));
    let command = hint.trim().split("   #").next().unwrap();
    let args: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace('\'', ""))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut bundle = String::new();
    for _ in 0..100 {
        let (ok, out, _) = kubectl(&kc, &args, None).await;
        if ok && out.contains("BEGIN CERTIFICATE") {
            bundle = out;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!bundle.is_empty(), "`{command}` never printed a bundle");

    request_and_approve(&kc, "tb", "developer").await;
    let mut chain = String::new();
    for _ in 0..100 {
        let (_, out, _) = kubectl(
            &kc,
            &["get", "csr", "tb", "-o", "jsonpath={.status.certificate}"],
            None,
        )
        .await;
        if !out.is_empty() {
            chain = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(out.trim())
                    .unwrap(),
            )
            .unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!chain.is_empty(), "tb was never issued");
    let anchors = dir.path().join("bundle.pem");
    std::fs::write(&anchors, &bundle).unwrap();
    support::openssl_verify(&chain, &anchors, dir.path()).unwrap();
    terminate(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_command_serves_kubectl_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let state = dir.path().join("state.json");
    let (child, printed) = start(&kc, &state).await;
    assert!(
        printed.contains("listening on https://127.0.0.1:"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("export KUBECONFIG={}", kc.display())),
        "{printed}"
    );

    let (ok, out, err) = kubectl(&kc, &["config", "get-contexts", "-o", "name"], None).await;
    assert!(ok, "{err}");
    let mut contexts: Vec<&str> = out.lines().collect();
    contexts.sort();
    assert_eq!(contexts, vec!["admin", "approver", "developer"]);

    request_and_approve(&kc, "kept", "app").await;
    terminate(child).await;
    assert!(state.exists(), "state saved on shutdown");

    let (child, _) = start(&kc, &state).await;
    let (ok, out, err) = kubectl(&kc, &["get", "csr", "kept", "--no-headers"], None).await;
    assert!(ok, "{err}");
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(cols[0], "kept");
    assert_eq!(*cols.last().unwrap(), "Approved");
    assert_eq!(cols[3], "developer");
    terminate(child).await;
}
