//! `csr-signer ca status` and `ca plan-rotation`: offline from the configuration, and against the real
//! kube-apiserver reading the published ClusterTrustBundle. Dates are checked against `openssl x509`.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use controller_support::*;
use csr_signer::config::Settings;
use support::openssl_not_after;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_csr-signer"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ca_init(dir: &Path, name: &str, days: u32, intermediate: bool) {
    let mut cmd = bin();
    cmd.args(["ca", "init", "--out"])
        .arg(dir.join(name))
        .args(["--days", &days.to_string()]);
    if intermediate {
        cmd.arg("--intermediate");
    }
    ok(&mut cmd);
}

fn fmt(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn config(dir: &Path) -> std::path::PathBuf {
    ca_init(dir, "old", 100, false);
    ca_init(dir, "next", 400, true);
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        "signers:\n- name: example.com/mtls\n  ca: {certFile: old/ca.crt, keyFile: old/ca.key}\n  otherCas:\n  - {name: next, state: published, certFile: next/ca.crt, chainFile: next/root.crt}\n  policy: {lifetime: {max: 30d}}\ntrustBundles: {enabled: true, resyncSeconds: 1}\ncontroller: {leaderElection: {enabled: false}}\n",
    )
    .unwrap();
    file
}

#[test]
fn offline_status_and_plan_follow_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path());
    let status = ok(bin().args(["ca", "status", "--config"]).arg(&file));
    let old_end = openssl_not_after(&dir.path().join("old/ca.crt"));
    let next_end = openssl_not_after(&dir.path().join("next/ca.crt"));
    let line = |name: &str| {
        status
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{status}"))
            .to_string()
    };
    let (active, next) = (line("active "), line("next "));
    assert!(
        active.contains("active") && active.contains(&fmt(old_end)),
        "{status}"
    );
    assert!(active.contains("ECDSA P-256"), "{status}");
    assert!(
        next.contains("published") && next.contains(&fmt(next_end)),
        "{status}"
    );
    assert!(
        status.contains("computed from the configuration"),
        "{status}"
    );

    let plan = ok(bin().args(["ca", "plan-rotation", "--config"]).arg(&file));
    // Switch before certificates would be cut short: the signing CA's end minus 30 days.
    let switch_by = old_end - Duration::from_secs(30 * 86_400);
    assert!(
        plan.contains(&format!("1. by {}:", fmt(switch_by)))
            && plan.contains("make `next` the signing `ca`"),
        "{plan}"
    );
    assert!(!plan.contains("OVERDUE"), "{plan}");

    // Without a next CA the first step is to publish one, 7 days (the default propagation) earlier.
    let bare = dir.path().join("bare.yaml");
    std::fs::write(
        &bare,
        "signers:\n- name: example.com/mtls\n  ca: {certFile: old/ca.crt, keyFile: old/ca.key}\n  policy: {lifetime: {max: 30d}}\n",
    )
    .unwrap();
    let plan = ok(bin().args(["ca", "plan-rotation", "--config"]).arg(&bare));
    let publish_by = switch_by - Duration::from_secs(7 * 86_400);
    assert!(
        plan.contains(&format!("1. by {}:", fmt(publish_by)))
            && plan.contains("add it to otherCas as `published`"),
        "{plan}"
    );
    // A 100-day CA with 95-day certificates: too late to publish, and a switch 7 days after publishing
    // would come after certificates started getting shorter.
    std::fs::write(
        &bare,
        "signers:\n- name: example.com/mtls\n  ca: {certFile: old/ca.crt, keyFile: old/ca.key}\n  policy: {lifetime: {max: 95d}}\n",
    )
    .unwrap();
    let plan = ok(bin().args(["ca", "plan-rotation", "--config"]).arg(&bare));
    assert_eq!(plan.matches("[OVERDUE]").count(), 2, "{plan}");
}

/// Against the real apiserver: IN BUNDLE comes from the published bundle, before and after it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_published_bundle_real_apiserver() {
    let env = Env::start_real().await;
    let bundles: kube::Api<k8s_openapi::api::certificates::v1::ClusterTrustBundle> =
        kube::Api::all(env.admin.clone());
    let _ = bundles
        .delete("example.com:mtls:live", &Default::default())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path());
    let kubeconfig = kube_support::shared().ready.kubeconfig.clone();
    let status = |f: &Path| {
        ok(bin()
            .args(["ca", "status", "--config"])
            .arg(f)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--context", "admin"]))
    };
    let before = status(&file);
    assert!(before.contains("does not exist in the cluster"), "{before}");

    let settings = Settings::load(Some(&file), &Default::default()).unwrap();
    let (svc, stop) = env.start_signer(settings, "status").await;
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
    let after = status(&file);
    assert!(
        after.contains("read from the cluster's example.com:mtls:live"),
        "{after}"
    );
    for row in ["active ", "next "] {
        let line = after
            .lines()
            .find(|l| l.trim_start().starts_with(row))
            .unwrap();
        assert!(line.contains(" yes "), "{after}");
    }
    // STATE SINCE of the published CA is the bundle's record for it (keyed by the SHA-256 openssl computes).
    let bundle = bundles.get("example.com:mtls:live").await.unwrap();
    let record: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &bundle.metadata.annotations.unwrap_or_default()["csr-signer/published-since"],
    )
    .unwrap();
    let fp = support::openssl_sha256_fingerprint(&dir.path().join("next/ca.crt"))[..32].to_string();
    let next_row = after
        .lines()
        .find(|l| l.trim_start().starts_with("next "))
        .unwrap();
    assert!(next_row.contains(&record[&fp]), "{after}\n{record:?}");
    let _ = stop.send(());
    svc.wait().await.unwrap();
}
