//! The ConfigMap fallback for trust anchors (`trustBundles.configMaps`), on the real kube-apiserver with
//! the chart's RBAC and on the local API: every namespace the selector matches gets one ConfigMap with our
//! labels and, under `example.com_mtls.pem`, byte for byte the PEM of the signer's ClusterTrustBundle (and
//! `openssl verify` accepts an issued certificate against it alone); an unselected namespace gets none, a
//! namespace labelled later gets it within seconds, and loses it when unlabelled; a CA change on disk
//! updates every ConfigMap; a same-named ConfigMap someone else owns is never changed or deleted, and is
//! counted. On the real apiserver the chart's rules are exactly what it uses, and without them the signer
//! counts `forbidden` and keeps signing.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;
mod trust_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use controller_support::*;
use csr_signer::ca_init::KeyType;
use csr_signer::config::Settings;
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use support::{cert_der, cert_ders, key, CsrSpec, TestCa};
use trust_support::*;

/// The label `tests/chart/render.py --config-maps` selects on.
const LABEL: &str = "csr-signer-test/trust";
const NAME: &str = "csr-signer-trust-bundle";
const KEY: &str = "example.com_mtls.pem";

fn cm_settings(cert: &Path, key: &Path, ctb: bool) -> Settings {
    cm_settings_resync(cert, key, ctb, 1)
}

fn cm_settings_resync(cert: &Path, key: &Path, ctb: bool, resync: u64) -> Settings {
    let yaml = format!(
        "{}trustBundles: {{enabled: {ctb}, resyncSeconds: {resync}, configMaps: {{enabled: true, namespaceSelector: {{matchLabels: {{{LABEL}: \"yes\"}}}}}}}}\n",
        settings_yaml(cert, key, "", false, "127.0.0.1:0")
    );
    Settings::from_yaml(&yaml, "test.yaml").unwrap()
}

fn series(name: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{name}{{reason=\"{r}\",signer=\"{SIGNER}\",via=\"configmap\"}}"),
        None => format!("{name}{{signer=\"{SIGNER}\",via=\"configmap\"}}"),
    }
}

/// The environment with the signer bound to the chart's RBAC for ConfigMaps (real apiserver) and no
/// namespace left selected by an earlier test (namespaces outlive tests on the shared server).
async fn cm_env(server: Server) -> Env {
    let env = Env::on(server).await;
    if env.is_real() {
        kube_support::shared()
            .apply_chart_rbac_with(&[SIGNER], "csr-signer", &["--config-maps"])
            .await;
    }
    let nss: Api<Namespace> = Api::all(env.admin.clone());
    for ns in nss
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .items
    {
        label(&env, ns.metadata.name.as_deref().unwrap(), false).await;
    }
    env
}

/// A fresh namespace (unique: a deleted one would stay Terminating on the real apiserver, which runs no
/// namespace controller).
async fn namespace(env: &Env, tag: &str, selected: bool) -> String {
    let name = format!(
        "cm-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut labels = BTreeMap::new();
    if selected {
        labels.insert(LABEL.to_string(), "yes".to_string());
    }
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

async fn label(env: &Env, ns: &str, on: bool) {
    let value = if on {
        serde_json::json!("yes")
    } else {
        serde_json::Value::Null
    };
    Api::<Namespace>::all(env.admin.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {LABEL: value}}})),
        )
        .await
        .unwrap();
}

fn configmaps(env: &Env, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(env.admin.clone(), ns)
}

async fn wait_cm(env: &Env, ns: &str, ok: impl Fn(&ConfigMap) -> bool) -> ConfigMap {
    let mut last = None;
    for _ in 0..300 {
        last = configmaps(env, ns).get_opt(NAME).await.unwrap();
        if last.as_ref().is_some_and(&ok) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ConfigMap {ns}/{NAME} never reached the expected state; last: {last:?}");
}

async fn wait_no_cm(env: &Env, ns: &str) {
    for _ in 0..300 {
        if configmaps(env, ns).get_opt(NAME).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ConfigMap {ns}/{NAME} was not deleted");
}

fn pem_of(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .cloned()
        .unwrap_or_default()
}

fn labels_of(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.metadata.labels.clone().unwrap_or_default()
}

fn foreign_cm(name: &str, data: &[(&str, &str)], labels: &[(&str, &str)]) -> ConfigMap {
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(map(labels)),
            ..Default::default()
        },
        data: Some(map(data)),
        ..Default::default()
    }
}

on_both_servers! {
    async fn selected_namespaces_get_the_bundle_and_follow_labels_and_ca_changes(server) {
        let env = cm_env(server).await;
        let (a, b) = (TestCa::new(KeyType::P256), TestCa::new(KeyType::Rsa2048));
        let (cert, key_file) = (env.dir.path().join("ca.crt"), env.dir.path().join("ca.key"));
        std::fs::copy(&a.cert, &cert).unwrap();
        std::fs::copy(&a.key, &key_file).unwrap();
        let selected = namespace(&env, "selected", true).await;
        let other = namespace(&env, "other", false).await;
        let (svc, stop) = env.start_signer(cm_settings(&cert, &key_file, true), "cm").await;

        let first = wait_cm(&env, &selected, |_| true).await;
        let labels = labels_of(&first);
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("csr-signer"));
        assert_eq!(labels.get("csr-signer/stage").map(String::as_str), Some("live"));
        assert_eq!(first.data.as_ref().unwrap().keys().collect::<Vec<_>>(), vec![KEY]);
        assert_eq!(cert_ders(&pem_of(&first)), vec![cert_der(&a.root)]);
        // Byte for byte what the ClusterTrustBundle publishes.
        let ctbs: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
        let mut ctb = None;
        for _ in 0..300 {
            ctb = ctbs.get_opt("example.com:mtls:live").await.unwrap();
            if ctb.as_ref().is_some_and(|c| cert_ders(&c.spec.trust_bundle) == vec![cert_der(&a.root)]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ctb.unwrap().spec.trust_bundle, pem_of(&first));
        issued_verifies_against(&env, "cm-a", &pem_of(&first)).await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_missing_anchor", None), |v| v == 0.0).await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_published_timestamp_seconds", None), |v| v > 0.0).await;

        // Two resyncs later the unselected namespace still has nothing.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(configmaps(&env, &other).get_opt(NAME).await.unwrap().is_none());

        // Labelled now: it gets the ConfigMap from the namespace watch, well before the next resync
        // would matter (the assertion allows for a slow machine).
        let labelled_at = Instant::now();
        label(&env, &other, true).await;
        let later = wait_cm(&env, &other, |_| true).await;
        let took = labelled_at.elapsed();
        eprintln!("a namespace labelled now got its ConfigMap after {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(pem_of(&later), pem_of(&first));

        // A new CA on disk: every ConfigMap follows, updated in place.
        std::fs::copy(&b.key, &key_file).unwrap();
        std::fs::copy(&b.cert, &cert).unwrap();
        let want = vec![cert_der(&b.root)];
        let sel2 = wait_cm(&env, &selected, |c| cert_ders(&pem_of(c)) == want).await;
        let oth2 = wait_cm(&env, &other, |c| cert_ders(&pem_of(c)) == want).await;
        assert_eq!(sel2.metadata.uid, first.metadata.uid, "updated in place, not recreated");
        assert_eq!(pem_of(&sel2), pem_of(&oth2));
        issued_verifies_against(&env, "cm-b", &pem_of(&oth2)).await;

        // Someone deletes one: the next resync puts it back.
        configmaps(&env, &selected).delete(NAME, &Default::default()).await.unwrap();
        let back = wait_cm(&env, &selected, |_| true).await;
        assert_eq!(pem_of(&back), pem_of(&sel2));

        // Unlabelled: our ConfigMap goes; the other namespace keeps its own.
        label(&env, &selected, false).await;
        wait_no_cm(&env, &selected).await;
        assert!(configmaps(&env, &other).get_opt(NAME).await.unwrap().is_some());
        wait_metric(&svc, &series("csr_signer_trust_bundle_missing_anchor", None), |v| v == 0.0).await;
        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

on_both_servers! {
    async fn someone_elses_configmap_is_never_touched_and_is_counted(server) {
        let env = cm_env(server).await;
        let ca = TestCa::new(KeyType::P256);
        let squatted = namespace(&env, "squatted", true).await;
        let stale = namespace(&env, "stale", false).await;
        let foreign = namespace(&env, "foreign", false).await;
        let pp = PostParams::default();
        // Same name as ours in a selected namespace, someone else's: must stay byte for byte.
        let theirs = configmaps(&env, &squatted)
            .create(&pp, &foreign_cm(NAME, &[(KEY, "not a certificate"), ("other", "x")], &[("app.kubernetes.io/managed-by", "Helm")]))
            .await
            .unwrap();
        // Ours (an earlier run) in a namespace no longer selected: must go.
        configmaps(&env, &stale)
            .create(&pp, &foreign_cm(NAME, &[(KEY, "old")], &[("app.kubernetes.io/managed-by", "csr-signer")]))
            .await
            .unwrap();
        // Someone else's in a namespace not selected: must stay.
        let unrelated = configmaps(&env, &foreign)
            .create(&pp, &foreign_cm(NAME, &[("x", "y")], &[]))
            .await
            .unwrap();

        let (svc, stop) = env.start_signer(cm_settings(&ca.cert, &ca.key, false), "cm").await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_errors_total", Some("not_owned")), |v| v >= 1.0).await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_missing_anchor", None), |v| v == 1.0).await;
        wait_no_cm(&env, &stale).await;
        // Signing goes on regardless.
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        env.create("cm-still-signs", SIGNER, &pem, USAGES, None).await;
        env.approve("cm-still-signs").await;
        env.wait_certificate("cm-still-signs").await;
        // Counted once per resync (1 s here), not at every 200 ms poll.
        let before = metric(&svc, &series("csr_signer_trust_bundle_errors_total", Some("not_owned"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let after_count = metric(&svc, &series("csr_signer_trust_bundle_errors_total", Some("not_owned"))).await.unwrap();
        assert!((1.0..=6.0).contains(&(after_count - before)), "{before} -> {after_count}");
        let after = configmaps(&env, &squatted).get(NAME).await.unwrap();
        assert_eq!(after.metadata.resource_version, theirs.metadata.resource_version);
        assert_eq!(after.data, theirs.data);
        assert_eq!(after.metadata.labels, theirs.metadata.labels);
        assert_eq!(after.metadata.annotations, theirs.metadata.annotations);
        // Unselected, it is not deleted either.
        label(&env, &squatted, false).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let kept = configmaps(&env, &squatted).get(NAME).await.unwrap();
        assert_eq!(kept.metadata.resource_version, theirs.metadata.resource_version);
        let unrelated_now = configmaps(&env, &foreign).get(NAME).await.unwrap();
        assert_eq!(unrelated_now.metadata.resource_version, unrelated.metadata.resource_version);
        // Nothing left selected lacks the anchor.
        wait_metric(&svc, &series("csr_signer_trust_bundle_missing_anchor", None), |v| v == 0.0).await;
        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

on_both_servers! {
    /// With a resync far away, only the namespace watch can make a namespace labelled (or unlabelled)
    /// after the start get (or lose) its ConfigMap within seconds.
    async fn the_namespace_watch_reacts_between_resyncs(server) {
        let env = cm_env(server).await;
        let ca = TestCa::new(KeyType::P256);
        let ns = namespace(&env, "watched", false).await;
        let (svc, stop) = env.start_signer(cm_settings_resync(&ca.cert, &ca.key, false, 120), "cm").await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_published_timestamp_seconds", None), |v| v > 0.0).await;
        let t = Instant::now();
        label(&env, &ns, true).await;
        wait_cm(&env, &ns, |_| true).await;
        let added = t.elapsed();
        let t = Instant::now();
        label(&env, &ns, false).await;
        wait_no_cm(&env, &ns).await;
        let removed = t.elapsed();
        eprintln!("labelled -> ConfigMap {added:?}; unlabelled -> deleted {removed:?}");
        assert!(added < Duration::from_secs(10) && removed < Duration::from_secs(10));
        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

const RETIRING: &str = "csr-signer/retiring-since";

fn annotation(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(RETIRING).cloned()
}

on_both_servers! {
    /// A retiring CA is in the ConfigMap as in the ClusterTrustBundle, with its clock recorded on the
    /// ConfigMap; a new leader reads the clock back instead of restarting it (which would keep the old CA
    /// in the ConfigMaps longer than in the bundle).
    async fn a_retiring_ca_is_published_and_keeps_its_clock_across_a_restart(server) {
        let env = cm_env(server).await;
        let (new, old) = (TestCa::new(KeyType::P256), TestCa::new(KeyType::P256));
        let yaml = |identity_note: &str| {
            let base = settings_yaml(&new.cert, &new.key, "", false, "127.0.0.1:0").replacen(
                "\n  policy:",
                &format!("\n  otherCas: [{{name: old, state: retiring, certFile: {}}}]\n  policy:", old.cert.display()),
                1,
            );
            let yaml = format!(
                "{base}trustBundles: {{enabled: true, resyncSeconds: 1, configMaps: {{enabled: true, namespaceSelector: {{matchLabels: {{{LABEL}: \"yes\"}}}}}}}}\n# {identity_note}\n"
            );
            Settings::from_yaml(&yaml, "test.yaml").unwrap()
        };
        let ns = namespace(&env, "retiring", true).await;
        let both = vec![cert_der(&new.root), cert_der(&old.root)];
        let (svc, stop) = env.start_signer(yaml("first"), "cm-1").await;
        let first = wait_cm(&env, &ns, |c| cert_ders(&pem_of(c)) == both).await;
        let recorded = annotation(&first.metadata).expect("no retiring-since annotation on the ConfigMap");
        let ctbs: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
        let mut ctb = None;
        for _ in 0..300 {
            ctb = ctbs.get_opt("example.com:mtls:live").await.unwrap();
            if ctb.as_ref().is_some_and(|c| cert_ders(&c.spec.trust_bundle) == both) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ctb = ctb.unwrap();
        assert_eq!(ctb.spec.trust_bundle, pem_of(&first));
        // The same CA under the same key; the two publishers start their clocks within a poll.
        let parse = |v: &str| serde_json::from_str::<BTreeMap<String, String>>(v).unwrap();
        let (in_cm, in_ctb) = (parse(&recorded), parse(&annotation(&ctb.metadata).unwrap()));
        assert_eq!(in_cm.keys().collect::<Vec<_>>(), in_ctb.keys().collect::<Vec<_>>());
        for (fp, t) in &in_cm {
            let a = humantime::parse_rfc3339(t).unwrap();
            let b = humantime::parse_rfc3339(&in_ctb[fp]).unwrap();
            let gap = a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap();
            assert!(gap <= Duration::from_secs(2), "{t} vs {}", in_ctb[fp]);
        }
        let _ = stop.send(());
        svc.wait().await.unwrap();

        // Later, another leader: the recorded clock stands (a restarted one would be seconds later).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (svc, stop) = env.start_signer(yaml("second"), "cm-2").await;
        wait_metric(&svc, &series("csr_signer_trust_bundle_published_timestamp_seconds", None), |v| v > 0.0).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let after = configmaps(&env, &ns).get(NAME).await.unwrap();
        assert_eq!(annotation(&after.metadata).as_deref(), Some(recorded.as_str()));
        assert_eq!(cert_ders(&pem_of(&after)), both);
        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}

/// (resource, verb) the chart rendered with `--config-maps` grants the signer on core namespaces and
/// configmaps.
fn chart_core_grants() -> BTreeSet<(String, String)> {
    let objects = kube_support::render_chart_with(
        kube_support::SIGNER_NAMESPACE,
        kube_support::SIGNER_NAMESPACE,
        &[SIGNER],
        "csr-signer",
        &["--config-maps"],
    );
    let mut out = BTreeSet::new();
    for o in objects.iter().filter(|o| o["kind"] == "ClusterRole") {
        let name = o["metadata"]["name"].as_str().unwrap();
        if name.ends_with("-requester") || name.ends_with("-approver") {
            continue;
        }
        for rule in o["rules"].as_array().unwrap() {
            if rule["apiGroups"] != serde_json::json!([""]) {
                continue;
            }
            for r in rule["resources"].as_array().unwrap() {
                let r = r.as_str().unwrap();
                if r == "namespaces" || r == "configmaps" {
                    for v in rule["verbs"].as_array().unwrap() {
                        out.insert((r.to_string(), v.as_str().unwrap().to_string()));
                    }
                }
            }
        }
    }
    out
}

/// On the real apiserver: the chart's namespaces and configmaps rules are exactly what the publisher uses
/// (create, update, delete of ours, a foreign one read and left, the namespace watch), judged from the
/// audit log; then, with the chart rendered without ConfigMaps, the same signer is refused, counts
/// `forbidden` and keeps signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_is_exactly_what_configmaps_need_real_apiserver() {
    let env = cm_env(Server::Real).await;
    let started = chrono::Utc::now();
    let ca = TestCa::new(KeyType::P256);
    let (a, gone) = (
        namespace(&env, "rbac-a", true).await,
        namespace(&env, "rbac-gone", true).await,
    );
    let squatted = namespace(&env, "rbac-squat", true).await;
    configmaps(&env, &squatted)
        .create(
            &PostParams::default(),
            &foreign_cm(NAME, &[("x", "y")], &[]),
        )
        .await
        .unwrap();
    let (svc, stop) = env
        .start_signer(cm_settings(&ca.cert, &ca.key, false), "cm")
        .await;
    wait_cm(&env, &a, |_| true).await;
    wait_cm(&env, &gone, |_| true).await;
    // An edit is patched back (an apply that updates), an unlabelled namespace loses ours (delete).
    configmaps(&env, &a)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {KEY: "edited"}})),
        )
        .await
        .unwrap();
    label(&env, &gone, false).await;
    wait_no_cm(&env, &gone).await;
    let want = cert_ders(&std::fs::read_to_string(&ca.root).unwrap());
    wait_cm(&env, &a, |c| cert_ders(&pem_of(c)) == want).await;
    wait_metric(
        &svc,
        &series("csr_signer_trust_bundle_errors_total", Some("not_owned")),
        |v| v >= 1.0,
    )
    .await;
    // The namespace watch is audited when it ends.
    let _ = stop.send(());
    svc.wait().await.unwrap();

    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for ev in kube_support::shared().audit_events().await {
        if ev["user"]["username"] != env.signer_user() || ev["objectRef"].is_null() {
            continue;
        }
        let when = ev["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if when.is_none_or(|t| t < started) {
            continue;
        }
        let r = &ev["objectRef"];
        let resource = r["resource"].as_str().unwrap_or("").to_string();
        if resource != "namespaces" && resource != "configmaps" {
            continue;
        }
        let grant = (resource, ev["verb"].as_str().unwrap().to_string());
        if ev["responseStatus"]["code"] == 403 {
            refused.push(grant.clone());
        }
        used.insert(grant);
    }
    assert!(
        refused.is_empty(),
        "the chart's RBAC is missing: {refused:?}"
    );
    // `create` is checked inside the apply that creates (the audit log records a patch); the ConfigMaps
    // above were created through it.
    let granted: BTreeSet<(String, String)> = chart_core_grants()
        .into_iter()
        .filter(|(r, v)| !(r == "configmaps" && v == "create"))
        .collect();
    assert_eq!(
        used, granted,
        "used by the publisher vs granted by the chart"
    );

    // The chart without ConfigMaps: no namespaces or configmaps rules.
    kube_support::shared()
        .apply_chart_rbac(&[SIGNER], "csr-signer")
        .await;
    let b = namespace(&env, "rbac-b", true).await;
    let (svc, stop) = env
        .start_signer(cm_settings(&ca.cert, &ca.key, false), "cm")
        .await;
    wait_metric(
        &svc,
        &series("csr_signer_trust_bundle_errors_total", Some("forbidden")),
        |v| v >= 1.0,
    )
    .await;
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    env.create("cm-forbidden", SIGNER, &pem, USAGES, None).await;
    env.approve("cm-forbidden").await;
    env.wait_certificate("cm-forbidden").await;
    assert!(configmaps(&env, &b).get_opt(NAME).await.unwrap().is_none());
    let _ = stop.send(());
    svc.wait().await.unwrap();
}

/// The point of the fallback: on a kube-apiserver serving no ClusterTrustBundle API at all, with both
/// switches on, the ClusterTrustBundle side reports `api_unavailable` and the ConfigMaps are published
/// all the same, and `openssl verify` accepts an issued certificate against one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmaps_are_published_without_the_clustertrustbundle_api_real_apiserver() {
    let cp = kube_support::ControlPlane::start(&kube_support::Options {
        apiserver_args: vec![
            "--runtime-config=certificates.k8s.io/v1/clustertrustbundles=false,certificates.k8s.io/v1beta1/clustertrustbundles=false".into(),
        ],
        ..Default::default()
    });
    cp.apply_chart_rbac_with(&[SIGNER], "csr-signer", &["--config-maps"])
        .await;
    let admin = cp.client("admin").await;
    let ns = "cm-no-ctb";
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(ns.into()),
                    labels: Some([(LABEL.to_string(), "yes".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ca = TestCa::new(KeyType::P256);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = csr_signer::service::start(
        cm_settings(&ca.cert, &ca.key, true),
        cp.client("signer").await,
        async move {
            let _ = rx.await;
        },
        csr_signer::service::RunOptions {
            identity: Some("cm".into()),
            ca_poll_interval: Some(Duration::from_millis(200)),
        },
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let mut found = None;
    for _ in 0..300 {
        found = api.get_opt(NAME).await.unwrap();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cm = found.expect("no ConfigMap without the ClusterTrustBundle API");
    assert_eq!(cert_ders(&pem_of(&cm)), vec![cert_der(&ca.root)]);
    wait_metric(
        &svc,
        &format!("csr_signer_trust_bundle_errors_total{{reason=\"api_unavailable\",signer=\"{SIGNER}\",via=\"clustertrustbundle\"}}"),
        |v| v >= 1.0,
    )
    .await;
    wait_metric(
        &svc,
        &series("csr_signer_trust_bundle_missing_anchor", None),
        |v| v == 0.0,
    )
    .await;
    // A certificate issued on this cluster verifies against the ConfigMap's PEM alone.
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        Api::all(admin.clone());
    let csr_pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    // Created by the developer: the default policy binds the subject to the requester.
    Api::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>::all(
        cp.client("developer").await,
    )
    .create(
        &PostParams::default(),
        &support::csr_object("cm-no-ctb", SIGNER, &csr_pem, USAGES, None),
    )
    .await
    .unwrap();
    support::approve_now(&csrs, "cm-no-ctb").await;
    let mut chain = None;
    for _ in 0..300 {
        chain = csrs
            .get("cm-no-ctb")
            .await
            .unwrap()
            .status
            .and_then(|s| s.certificate)
            .map(|c| String::from_utf8(c.0).unwrap());
        if chain.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors.pem");
    std::fs::write(&anchors, pem_of(&cm)).unwrap();
    support::openssl_verify(&chain.expect("no certificate"), &anchors, dir.path()).unwrap();
    let _ = tx.send(());
    svc.wait().await.unwrap();
}
