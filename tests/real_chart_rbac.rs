//! The Helm chart's RBAC is exactly what the signer uses, judged by the real kube-apiserver: the signer runs
//! as a ServiceAccount bound only to the chart's rendered ClusterRole/Role, goes through its whole life
//! (leader election, a pending CSR, an issued one, a refused one, events, SIGTERM releasing the Lease; then
//! two replicas without leader election racing for the same CSRs, so status writes meet 409 Conflicts and
//! the loser re-reads the CSR), and the apiserver's audit log of its requests is compared with the chart's
//! grants. The signer also publishes its ClusterTrustBundle (apply-create, a stale bundle deleted, an edit
//! patched back), and signs pod certificates (a PodCertificateRequest through v1, and one a 1.35 kubelet made
//! through v1beta1 with the legacy key, which the signer reads through v1beta1). A verb the signer needed
//! but lacked fails the flow (403); a granted verb it never used fails the comparison.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use kube::api::{Api, PostParams};
use support::{key, CsrSpec, TestCa};

const USAGES: &[&str] = &["digital signature", "client auth"];
const PODS: &str = "  podCertificates: {enabled: true}\n";

/// (API group, resource[/subresource], verb)
type Grant = (String, String, String);

/// The chart's RBAC for `SIGNER` signing CSRs and pods.
const RENDER: &[&str] = &["--pod-certificates"];

fn granted_by_chart() -> BTreeSet<Grant> {
    let objects = kube_support::render_chart_with(
        kube_support::SIGNER_NAMESPACE,
        kube_support::SIGNER_NAMESPACE,
        &[SIGNER],
        "csr-signer",
        RENDER,
    );
    let mut out = BTreeSet::new();
    for o in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        // The chart's requester/approver roles are for people, not the signer.
        let name = o["metadata"]["name"].as_str().unwrap();
        if name.ends_with("-requester") || name.ends_with("-approver") {
            continue;
        }
        for rule in o["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

async fn can(env: &Env, verb: &str, resource: &str, name: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(env.signer_user().to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:csr-signer".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(env.admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

fn spawn_signer(
    env: &Env,
    config: &std::path::Path,
    log: &std::path::Path,
    identity: &str,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_csr-signer"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(env.signer_kubeconfig())
        .env("POD_NAME", identity)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Whether the signer met a 409 writing a CSR's status (the apiserver's audit log says).
async fn csr_conflict_seen(env: &Env) -> bool {
    kube_support::shared()
        .audit_events()
        .await
        .iter()
        .any(|ev| {
            ev["user"]["username"] == env.signer_user()
                && ev["objectRef"]["resource"] == "certificatesigningrequests"
                && ev["objectRef"]["subresource"] == "status"
                && ev["responseStatus"]["code"] == 409
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_grants_exactly_the_verbs_the_signer_uses_on_the_real_apiserver() {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::start_real().await;
    kube_support::shared()
        .apply_chart_rbac_with(&[SIGNER], "csr-signer", RENDER)
        .await;
    let config = env.dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "{}trustBundles: {{enabled: true, resyncSeconds: 1}}\n",
            pcr::with_pod_certificates(
                &settings_yaml(&ca.cert, &ca.key, "", true, "127.0.0.1:0"),
                PODS
            )
        ),
    )
    .unwrap();
    let f = pcr::fixture(&env, &[SIGNER]).await;
    let node = env.node().await;
    // One of our bundles under an earlier stage name, so the signer lists and deletes a stale bundle.
    let bundles: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
    for b in bundles.list(&Default::default()).await.unwrap().items {
        let _ = bundles
            .delete(b.metadata.name.as_deref().unwrap(), &Default::default())
            .await;
    }
    let stale = ClusterTrustBundle {
        metadata: kube::api::ObjectMeta {
            name: Some("example.com:mtls:old".into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "csr-signer".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: ClusterTrustBundleSpec {
            signer_name: Some(SIGNER.into()),
            trust_bundle: std::fs::read_to_string(&ca.root).unwrap(),
        },
    };
    bundles
        .create(&PostParams::default(), &stale)
        .await
        .unwrap();
    let log = env.dir.path().join("signer.log");
    let mut signer = spawn_signer(&env, &config, &log, "rbac-replica");

    let good = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let bad = CsrSpec::new(key(KeyType::P256), &[("CN", "admin")]).pem();
    env.create("rbac-pending", SIGNER, &good, USAGES, None)
        .await;
    env.create("rbac-good", SIGNER, &good, USAGES, None).await;
    env.create("rbac-refused", SIGNER, &bad, USAGES, None).await;
    env.approve("rbac-good").await;
    env.approve("rbac-refused").await;
    env.wait_certificate("rbac-good").await;
    // Pod certificates: through v1, and a 1.35 kubelet's legacy key read through v1beta1.
    let dir = env.dir.path();
    let k = pcr::key(dir, "pod", pcr::P256);
    pcr::create_v1(
        &node,
        "rbac-pod",
        pcr::spec_v1(&f, SIGNER, pcr::stub_request(&k)),
    )
    .await;
    pcr::create_v1beta1(
        &node,
        "rbac-pod-legacy",
        pcr::spec_v1(&f, SIGNER, Vec::new()),
        Some(pcr::legacy_key(dir, &k, &f.pod_uid)),
    )
    .await;
    for name in ["rbac-pod", "rbac-pod-legacy"] {
        let p = pcr::wait_terminal(&env, name).await;
        let c = &p.status.unwrap().conditions.unwrap()[0];
        assert_eq!(c.type_, "Issued", "{name}: {c:?}");
    }
    // The trust bundle is published (get, create through apply, then a second apply after a CA change
    // would patch: the resync re-reads it) and the stale one deleted.
    for _ in 0..400 {
        if bundles
            .get_opt("example.com:mtls:live")
            .await
            .unwrap()
            .is_some()
            && bundles
                .get_opt("example.com:mtls:old")
                .await
                .unwrap()
                .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bundles
        .get_opt("example.com:mtls:old")
        .await
        .unwrap()
        .is_none());
    // Someone edits our bundle's labels away from what we set: the next resync patches it back.
    let live = bundles.get("example.com:mtls:live").await.unwrap();
    let mut edited = live.clone();
    edited
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("csr-signer/stage".into(), "edited".into());
    bundles
        .replace("example.com:mtls:live", &PostParams::default(), &edited)
        .await
        .unwrap();
    for _ in 0..400 {
        let now = bundles.get("example.com:mtls:live").await.unwrap();
        if now
            .metadata
            .labels
            .unwrap_or_default()
            .get("csr-signer/stage")
            .map(String::as_str)
            == Some("live")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.wait_for("rbac-refused", "Failed", |c| {
        !failed_conditions(c).is_empty()
    })
    .await;
    // The pending CSR's WaitingForApproval event is the last thing written before shutdown.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(env.admin.clone());
    for _ in 0..400 {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.involved_object.name.as_deref() == Some("rbac-pending")
                && e.reason.as_deref() == Some("WaitingForApproval")
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = signer.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = signer.wait().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "signer exit {status:?}\n{log_text}");
    assert!(log_text.contains("released lease"), "{log_text}");

    // Two replicas with leader election off race for every CSR: one write wins, the other meets a 409
    // (resourceVersion precondition or the write-once certificate) and re-reads the CSR by name.
    let racing = env.dir.path().join("racing.yaml");
    std::fs::write(
        &racing,
        pcr::with_pod_certificates(
            &settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0"),
            PODS,
        ),
    )
    .unwrap();
    let mut racers = [
        spawn_signer(&env, &racing, &env.dir.path().join("a.log"), "racer-a"),
        spawn_signer(&env, &racing, &env.dir.path().join("b.log"), "racer-b"),
    ];
    // Whether the losing replica meets a 409 on a CSR depends on timing: race batches until one has (the
    // re-read by name, `get`, is what the chart grants for it).
    let mut names = Vec::new();
    for round in 0..6 {
        let batch = env
            .create_approved(&format!("rbac-race-{round}"), 40, &good, USAGES)
            .await;
        env.wait_all_issued(&batch).await;
        names.extend(batch);
        if csr_conflict_seen(&env).await {
            break;
        }
    }
    // Pod certificates race too: each PCR gets exactly one terminal status (the loser's write meets a 409).
    let pod_stub = pcr::stub_request(&k);
    for i in 0..10 {
        pcr::create_v1(
            &node,
            &format!("rbac-pod-race-{i}"),
            pcr::spec_v1(&f, SIGNER, pod_stub.clone()),
        )
        .await;
    }
    env.wait_all_issued(&names).await;
    for i in 0..10 {
        let p = pcr::wait_terminal(&env, &format!("rbac-pod-race-{i}")).await;
        assert_eq!(p.status.unwrap().conditions.unwrap()[0].type_, "Issued");
    }
    for r in &mut racers {
        let _ = r.kill();
        let _ = r.wait();
    }

    assert!(
        csr_conflict_seen(&env).await,
        "{} CSRs raced by two replicas produced no 409 on a CSR: the re-read path was not exercised",
        names.len()
    );
    // What the signer asked the apiserver for, and what it was refused.
    let mut used = BTreeSet::new();
    let mut forbidden = Vec::new();
    let mut conflicts = 0;
    for ev in kube_support::shared().audit_events().await {
        if ev["user"]["username"] != env.signer_user() || ev["objectRef"].is_null() {
            continue;
        }
        let r = &ev["objectRef"];
        let resource = match r["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", r["resource"].as_str().unwrap()),
            None => r["resource"].as_str().unwrap().to_string(),
        };
        let grant = (
            r["apiGroup"].as_str().unwrap_or("").to_string(),
            resource,
            ev["verb"].as_str().unwrap().to_string(),
        );
        if ev["responseStatus"]["code"] == 403 {
            forbidden.push(grant.clone());
        }
        if ev["responseStatus"]["code"] == 409 {
            conflicts += 1;
        }
        used.insert(grant);
    }
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC is missing: {forbidden:?}"
    );
    assert!(
        conflicts > 0,
        "40 CSRs raced by two replicas produced no 409: the re-read path was not exercised"
    );
    // `sign` on signers is checked inside the status write (CertificateSigning admission), not requested
    // on its own; it is checked by name below.
    // Likewise `create` on clustertrustbundles is checked inside the apply that creates the bundle (the
    // audit log records a patch); without it that apply is refused (seen while writing this test), and
    // the bundle above was created.
    let granted: BTreeSet<Grant> = granted_by_chart()
        .into_iter()
        .filter(|(_, r, _)| r != "signers")
        .filter(|(_, r, v)| !(r == "clustertrustbundles" && v == "create"))
        .collect();
    let excess: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "used but not granted by the chart: {missing:?}"
    );
    assert!(
        excess.is_empty(),
        "granted by the chart but never used by the signer: {excess:?} (used: {used:?})"
    );

    assert!(can(&env, "sign", "signers", SIGNER).await);
    assert!(can(&env, "attest", "signers", SIGNER).await);
    assert!(!can(&env, "attest", "signers", "example.com/other").await);
    for other in ["example.com/other", "kubernetes.io/kube-apiserver-client"] {
        assert!(
            !can(&env, "sign", "signers", other).await,
            "the signer may sign for {other}"
        );
    }
}
