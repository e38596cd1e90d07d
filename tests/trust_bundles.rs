//! The signer publishes its trust anchors as a ClusterTrustBundle, on the real kube-apiserver and on the
//! local API: right name, signerName, labels and PEM (and a certificate it issues verifies with
//! `openssl verify` against nothing but that bundle); a CA change on disk updates it; a bundle someone
//! else owns is never touched, while our own stale ones are deleted; missing RBAC is an error metric, not
//! a crash; and the API version comes from discovery (v1, else v1beta1, else off).
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;
mod trust_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use csr_signer::config::Settings;
use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use kube::api::{Api, DeleteParams, PostParams};
use support::{cert_der, cert_ders, key, CsrSpec, TestCa};
use trust_support::*;

const BUNDLE: &str = "example.com:mtls:live";

fn trust_settings(cert: &Path, key: &Path) -> Settings {
    let yaml = format!(
        "{}trustBundles: {{enabled: true, resyncSeconds: 1}}\n",
        settings_yaml(cert, key, "", false, "127.0.0.1:0")
    );
    Settings::from_yaml(&yaml, "test.yaml").unwrap()
}

fn bundles(env: &Env) -> Api<ClusterTrustBundle> {
    Api::all(env.admin.clone())
}

async fn wait_bundle(
    env: &Env,
    name: &str,
    ok: impl Fn(&ClusterTrustBundle) -> bool,
) -> ClusterTrustBundle {
    let mut last = None;
    for _ in 0..300 {
        last = bundles(env).get_opt(name).await.unwrap();
        if let Some(b) = &last {
            if ok(b) {
                return b.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bundle {name} never reached the expected state; last: {last:?}");
}

fn foreign_bundle(name: &str, pem: &str, labels: &[(&str, &str)]) -> ClusterTrustBundle {
    ClusterTrustBundle {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: ClusterTrustBundleSpec {
            signer_name: Some(SIGNER.into()),
            trust_bundle: pem.into(),
        },
    }
}

on_both_servers! {
    async fn publishes_the_bundle_and_follows_a_ca_change(server) {
        let env = Env::on(server).await;
        no_bundles(&env).await;
        let (a, b) = (TestCa::new(KeyType::P256), TestCa::new(KeyType::Rsa2048));
        let (cert, key_file) = (env.dir.path().join("ca.crt"), env.dir.path().join("ca.key"));
        std::fs::copy(&a.cert, &cert).unwrap();
        std::fs::copy(&a.key, &key_file).unwrap();
        let (svc, stop) = env.start_signer(trust_settings(&cert, &key_file), "tb").await;

        let first = wait_bundle(&env, BUNDLE, |_| true).await;
        assert_eq!(first.spec.signer_name.as_deref(), Some(SIGNER));
        let labels = first.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("csr-signer"));
        assert_eq!(labels.get("csr-signer/stage").map(String::as_str), Some("live"));
        assert_eq!(cert_ders(&first.spec.trust_bundle), vec![cert_der(&a.root)]);
        issued_verifies_against(&env, "tb-a", &first.spec.trust_bundle).await;
        wait_metric(&svc, &format!("csr_signer_trust_bundle_missing_anchor{{signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"), |v| v == 0.0).await;
        wait_metric(&svc, &format!("csr_signer_trust_bundle_published_timestamp_seconds{{signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"), |v| v > 0.0).await;

        // A new CA on disk: the bundle follows it.
        std::fs::copy(&b.key, &key_file).unwrap();
        std::fs::copy(&b.cert, &cert).unwrap();
        let second = wait_bundle(&env, BUNDLE, |x| cert_ders(&x.spec.trust_bundle) == vec![cert_der(&b.root)]).await;
        assert_eq!(second.metadata.uid, first.metadata.uid, "updated in place, not recreated");
        issued_verifies_against(&env, "tb-b", &second.spec.trust_bundle).await;

        // Someone deletes it: the next resync puts it back.
        bundles(&env).delete(BUNDLE, &DeleteParams::default()).await.unwrap();
        let third = wait_bundle(&env, BUNDLE, |_| true).await;
        assert_eq!(third.spec.trust_bundle, second.spec.trust_bundle);

        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

on_both_servers! {
    async fn leaves_other_owners_bundles_alone_and_deletes_its_own_stale_ones(server) {
        let env = Env::on(server).await;
        no_bundles(&env).await;
        let ours = TestCa::new(KeyType::P256);
        let theirs = TestCa::new(KeyType::P256);
        let their_pem = std::fs::read_to_string(&theirs.root).unwrap();
        let api = bundles(&env);
        let pp = PostParams::default();
        // Same name as ours, someone else's: must stay as it is.
        let squatter = api
            .create(&pp, &foreign_bundle(BUNDLE, &their_pem, &[("app.kubernetes.io/managed-by", "Helm")]))
            .await
            .unwrap();
        // Ours from an earlier stage name: must go.
        api.create(&pp, &foreign_bundle("example.com:mtls:old", &their_pem, &[("app.kubernetes.io/managed-by", "csr-signer"), ("csr-signer/stage", "old")]))
            .await
            .unwrap();
        // Not ours, another name: must stay.
        api.create(&pp, &foreign_bundle("example.com:mtls:other", &their_pem, &[]))
            .await
            .unwrap();

        let (svc, stop) = env.start_signer(trust_settings(&ours.cert, &ours.key), "tb").await;
        wait_metric(&svc, &format!("csr_signer_trust_bundle_errors_total{{reason=\"not_owned\",signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"), |v| v >= 1.0).await;
        wait_metric(&svc, &format!("csr_signer_trust_bundle_missing_anchor{{signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"), |v| v == 1.0).await;
        // Signing goes on regardless.
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        env.create("tb-still-signs", SIGNER, &pem, USAGES, None).await;
        env.approve("tb-still-signs").await;
        env.wait_certificate("tb-still-signs").await;
        // Several resyncs later the squatter is unchanged.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = api.get(BUNDLE).await.unwrap();
        assert_eq!(after.metadata.resource_version, squatter.metadata.resource_version);
        assert_eq!(after.spec.trust_bundle, their_pem);
        assert!(api.get_opt("example.com:mtls:other").await.unwrap().is_some());
        // Our stale bundle is removed only once the live one is in place (a client must never be left
        // with fewer anchors than before): free the name and both happen.
        api.delete(BUNDLE, &DeleteParams::default()).await.unwrap();
        let live = wait_bundle(&env, BUNDLE, |_| true).await;
        assert_eq!(cert_ders(&live.spec.trust_bundle), vec![cert_der(&ours.root)]);
        for _ in 0..300 {
            if api.get_opt("example.com:mtls:old").await.unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(api.get_opt("example.com:mtls:old").await.unwrap().is_none(), "our stale bundle was not deleted");
        assert!(api.get_opt("example.com:mtls:other").await.unwrap().is_some(), "someone else's bundle was deleted");
        wait_metric(&svc, &format!("csr_signer_trust_bundle_missing_anchor{{signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"), |v| v == 0.0).await;
        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

/// The chart without trust bundles grants neither `attest` nor clustertrustbundles: a signer configured
/// to publish anyway reports `forbidden` and keeps signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_attest_the_signer_reports_forbidden_and_keeps_signing_real_apiserver() {
    let env = Env::start_real().await;
    no_bundles(&env).await;
    kube_support::shared()
        .apply_chart_rbac_with(&[SIGNER], "csr-signer", &["--no-trust-bundles"])
        .await;
    let ca = TestCa::new(KeyType::P256);
    let (svc, stop) = env
        .start_signer(trust_settings(&ca.cert, &ca.key), "tb")
        .await;
    wait_metric(
        &svc,
        &format!(
            "csr_signer_trust_bundle_errors_total{{reason=\"forbidden\",signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"
        ),
        |v| v >= 1.0,
    )
    .await;
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create("tb-forbidden", SIGNER, &pem, USAGES, None).await;
    env.approve("tb-forbidden").await;
    env.wait_certificate("tb-forbidden").await;
    assert!(bundles(&env).get_opt(BUNDLE).await.unwrap().is_none());
    let _ = stop.send(());
    svc.wait().await.unwrap();
    // Later tests get the full chart RBAC back from Env::start_real.
}

/// Version by discovery on a real apiserver: with v1 ClusterTrustBundles turned off the bundle is written
/// through v1beta1; with both off, publishing is off with one error reason and signing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_version_comes_from_discovery_real_apiserver() {
    for (runtime_config, expect) in [
        ("certificates.k8s.io/v1/clustertrustbundles=false", Some("v1beta1")),
        (
            "certificates.k8s.io/v1/clustertrustbundles=false,certificates.k8s.io/v1beta1/clustertrustbundles=false",
            None,
        ),
    ] {
        let cp = kube_support::ControlPlane::start(&kube_support::Options {
            apiserver_args: vec![format!("--runtime-config={runtime_config}")],
            ..Default::default()
        });
        cp.apply_chart_rbac(&[SIGNER], "csr-signer").await;
        let signer = cp.client("signer").await;
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(KeyType::P256);
        let yaml = format!(
            "{}trustBundles: {{enabled: true, resyncSeconds: 1}}\n",
            settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0")
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = csr_signer::service::start(
            Settings::from_yaml(&yaml, "test.yaml").unwrap(),
            signer,
            async move {
                let _ = rx.await;
            },
            csr_signer::service::RunOptions {
                identity: Some("tb".into()),
                ca_poll_interval: Some(Duration::from_millis(200)),
            },
        )
        .await
        .unwrap();
        let admin = cp.client("admin").await;
        match expect {
            Some(version) => {
                let ar = kube::api::ApiResource::from_gvk_with_plural(
                    &kube::api::GroupVersionKind::gvk("certificates.k8s.io", version, "ClusterTrustBundle"),
                    "clustertrustbundles",
                );
                let api: Api<kube::api::DynamicObject> = Api::all_with(admin.clone(), &ar);
                let mut found = None;
                for _ in 0..300 {
                    found = api.get_opt(BUNDLE).await.unwrap();
                    if found.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let found = found.unwrap_or_else(|| panic!("no bundle through {version}"));
                assert_eq!(
                    cert_ders(found.data["spec"]["trustBundle"].as_str().unwrap()),
                    vec![cert_der(&ca.root)]
                );
                // The audit log says which version wrote it.
                let writes: Vec<String> = cp
                    .requests()
                    .await
                    .into_iter()
                    .filter(|r| r.path.contains("clustertrustbundles") && r.method == http::Method::PATCH)
                    .map(|r| r.path)
                    .collect();
                assert!(!writes.is_empty() && writes.iter().all(|p| p.contains(&format!("/{version}/"))), "{writes:?}");
            }
            None => {
                wait_metric(
                    &svc,
                    &format!("csr_signer_trust_bundle_errors_total{{reason=\"api_unavailable\",signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"),
                    |v| v >= 1.0,
                )
                .await;
                // Counted once per resync (1 s here), not at every 200 ms poll, so the warning stays while
                // the API is missing; no bundle, so no anchor can be missing from it.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                let count = metric(&svc, &format!("csr_signer_trust_bundle_errors_total{{reason=\"api_unavailable\",signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}")).await.unwrap();
                assert!((2.0..=5.0).contains(&count), "{count}");
                assert_eq!(
                    metric(&svc, &format!("csr_signer_trust_bundle_missing_anchor{{signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}")).await,
                    Some(0.0)
                );
            }
        }
        let _ = tx.send(());
        svc.wait().await.unwrap();
        drop(dir);
    }
}
