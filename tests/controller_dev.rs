//! `csr-signer dev`'s signer half: the dev CA is created once and reused, and the demo walks the
//! tutorial end to end against the local API over real HTTP.
#![allow(clippy::unwrap_used)]

use csr_signer::dev::{self, LocalApiConfig};
use csr_signer::devsigner::{self, DevSignerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_issues_and_verifies_and_the_dev_ca_is_reused() {
    let state = tempfile::tempdir().unwrap();
    let opts = DevSignerOptions {
        state_dir: state.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let api = dev::start(LocalApiConfig::plain_http()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (svc, ca) = devsigner::start(&api, &opts, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    assert!(ca.created);
    let mut out = Vec::new();
    devsigner::run_demo(&api, &ca, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("CN=developer, O=development"), "{text}");
    assert!(text.contains("developer.crt: OK"), "{text}");
    tx.send(()).unwrap();
    svc.wait().await.unwrap();
    let first_ca = std::fs::read(&ca.cert).unwrap();

    // Second run: same CA, not a new one.
    let again = devsigner::dev_ca(state.path()).unwrap();
    assert!(!again.created);
    assert_eq!(std::fs::read(&again.cert).unwrap(), first_ca);
    api.shutdown().await;
}

#[test]
fn dev_demo_subcommand_runs_the_tutorial_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .args(["dev", "--demo", "--port", "0", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--kubeconfig-out")
            .arg(dir.path().join("kubeconfig"))
            .output()
            .unwrap()
    };
    let first = run();
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("(created)"), "{out}");
    assert!(
        out.contains("subject:   CN=developer, O=development"),
        "{out}"
    );
    assert!(out.contains("developer.crt: OK"), "{out}");
    let second = run();
    let out = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out}");
    assert!(out.contains("(reused)"), "{out}");
}
