//! `csr-signer dev`'s signer half, as a user runs it: the demo walks the tutorial end to end against the
//! local API over real HTTP and verifies the certificate, then the pod-certificate flow (a kubelet's
//! PodCertificateRequest); the dev CA is created once and reused.
#![allow(clippy::unwrap_used)]

#[test]
fn dev_demo_runs_the_tutorial_verifies_and_reuses_the_dev_ca() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_csr-signer"))
            .args(["dev", "--demo", "--port", "0", "--state-dir"])
            .arg(&state)
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
    // The pod-certificate half: the kubelet's PodCertificateRequest, issued without approval, for the
    // pod's service account, and verified by openssl against the same CA.
    assert!(
        out.contains("SANs:           URI:spiffe://cluster.local/ns/team-a/sa/web"),
        "{out}"
    );
    assert!(out.contains("beginRefreshAt: "), "{out}");
    assert!(out.contains("web.crt: OK"), "{out}");
    let ca = state.join("ca").join("ca.crt");
    let first_ca = std::fs::read(&ca).unwrap();

    // Second run: the same CA, not a new one.
    let second = run();
    let out = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out}");
    assert!(out.contains("(reused)"), "{out}");
    assert!(out.contains("developer.crt: OK"), "{out}");
    assert_eq!(std::fs::read(&ca).unwrap(), first_ca);
}
