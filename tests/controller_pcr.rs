//! Pod certificates end to end, on the real kube-apiserver (the judge) and the local API: a Node, a ServiceAccount and a Pod bound
//! to the node; the node (its own identity, under NodeRestriction) asks for certificates the way a kubelet
//! does (v1 and v1beta1 with a stub PKCS#10 request made by the openssl CLI, and v1beta1 with the legacy
//! public key + proof of possession a 1.35 kubelet sends, which shows no key at all through v1); csr-signer,
//! running as its ServiceAccount with the chart's RBAC, issues them in one status write the apiserver's
//! validation accepts (it checks the leaf's times against notBefore/notAfter, beginRefreshAt's window, the
//! leaf key against the requested one). The chain verifies with `openssl verify`, the leaf carries the pod's
//! SPIFFE ID, refused requests end Denied with their reason, a request for another signerName is never
//! touched, events land on the PCRs and the metrics count all of it under kind="pcr".
//!
//! The same body runs on both servers; the local API's answers to the same requests are compared with the
//! real apiserver's in tests/local_api_pcr.rs.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::path::Path;
use std::time::Duration;

use controller_support::pcr::*;
use controller_support::*;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::certificates::v1;
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use support::TestCa;

const OTHER_SIGNER: &str = "example.com/other";

/// Pods are signed with beginRefreshAt at 3/4 of the lifetime, without jitter (so the test can say where it
/// falls), with one user annotation allowed and ECDSA keys limited to P-256.
const POD_CERTIFICATES: &str = "  podCertificates: {enabled: true, refreshAt: 0.75, refreshJitter: 0, \
    allowedAnnotations: [example.com/tier], keys: {ecdsa: {p256: true, p384: false, p521: false}}}\n";

/// The tests' signer settings with `POD_CERTIFICATES` on the signer.
fn pod_settings(ca: &TestCa) -> csr_signer::config::Settings {
    let yaml = settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0");
    let (head, tail) = yaml.split_once("controller:").unwrap();
    csr_signer::config::Settings::from_yaml(
        &format!("{head}{POD_CERTIFICATES}controller:{tail}"),
        "test.yaml",
    )
    .unwrap()
}

/// "notBefore=2026-11-29 05:30:00Z" → "2026-11-29T05:30:00Z" (metav1.Time's form).
fn openssl_time(line: &str) -> String {
    line.split_once('=').unwrap().1.trim().replacen(' ', "T", 1)
}

fn rfc3339(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn unix(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second()
}

/// Checks one issued PCR with the openssl CLI; returns the leaf's notBefore and notAfter (RFC 3339).
fn check_issued(
    ca: &TestCa,
    dir: &Path,
    pcr: &v1::PodCertificateRequest,
    key: &Path,
) -> (String, String) {
    let name = pcr.metadata.name.as_deref().unwrap();
    let st = pcr.status.as_ref().unwrap();
    let conds = st.conditions.as_ref().unwrap();
    assert_eq!(conds.len(), 1, "{name}: {conds:?}");
    assert_eq!(
        (conds[0].type_.as_str(), conds[0].status.as_str()),
        ("Issued", "True"),
        "{name}"
    );
    let chain = st.certificate_chain.as_deref().unwrap();
    support::openssl_verify(chain, &ca.root, dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let leaf = dir.join(format!("{name}.crt"));
    let first =
        chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    std::fs::write(&leaf, &chain[..first]).unwrap();
    let leaf = leaf.to_str().unwrap();
    let dates = String::from_utf8(openssl(&[
        "x509",
        "-in",
        leaf,
        "-noout",
        "-startdate",
        "-enddate",
        "-dateopt",
        "iso_8601",
    ]))
    .unwrap();
    let mut lines = dates.lines();
    let nb = openssl_time(lines.next().unwrap());
    let na = openssl_time(lines.next().unwrap());
    assert_eq!(
        rfc3339(st.not_before.as_ref().unwrap()),
        nb,
        "{name}: notBefore"
    );
    assert_eq!(
        rfc3339(st.not_after.as_ref().unwrap()),
        na,
        "{name}: notAfter"
    );
    let san = String::from_utf8(openssl(&[
        "x509",
        "-in",
        leaf,
        "-noout",
        "-ext",
        "subjectAltName",
    ]))
    .unwrap();
    assert!(
        san.contains(&format!(
            "URI:spiffe://cluster.local/ns/{NS}/sa/{SERVICE_ACCOUNT}"
        )),
        "{name}: {san}"
    );
    let leaf_key = openssl(&["x509", "-in", leaf, "-noout", "-pubkey"]);
    let requested = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(
        leaf_key, requested,
        "{name}: the leaf certifies the requested key"
    );
    (nb, na)
}

async fn pcr_flow(server: Server) {
    let ca = TestCa::new(KeyType::P256);
    let env = Env::on(server).await;
    if env.is_real() {
        kube_support::shared()
            .apply_chart_rbac_with(&[SIGNER], "csr-signer", &["--pod-certificates"])
            .await;
    }
    let dir = env.dir.path().to_path_buf();
    let f = fixture(&env, &[SIGNER, OTHER_SIGNER]).await;
    let node = env.node().await;
    let pcrs = Api::<v1::PodCertificateRequest>::namespaced(env.admin.clone(), NS);
    pcrs.delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();

    let k1 = key(&dir, "k1", P256);
    // Another signer's request, there before the signer starts: never touched.
    create_v1(&node, "other", spec_v1(&f, OTHER_SIGNER, stub_request(&k1))).await;

    let settings = pod_settings(&ca);
    let (svc, stop) = env.start_signer(settings, "pcr-replica").await;

    create_v1(&node, "v1-stub", spec_v1(&f, SIGNER, stub_request(&k1))).await;
    let k2 = key(&dir, "k2", P256);
    create_v1beta1(
        &node,
        "v1beta1-stub",
        spec_v1(&f, SIGNER, stub_request(&k2)),
        None,
    )
    .await;
    let k3 = key(&dir, "k3", P256);
    let legacy = legacy_key(&dir, &k3, &f.pod_uid);
    create_v1beta1(
        &node,
        "v1beta1-legacy",
        spec_v1(&f, SIGNER, Vec::new()),
        Some(legacy),
    )
    .await;
    // Refused by the policy: a key type it does not take, and an annotation it does not know.
    let k4 = key(&dir, "k4", P384);
    create_v1(&node, "p384", spec_v1(&f, SIGNER, stub_request(&k4))).await;
    let mut annotated = spec_v1(&f, SIGNER, stub_request(&k1));
    annotated.unverified_user_annotations =
        Some([("example.com/unknown".to_string(), "x".to_string())].into());
    create_v1(&node, "annotated", annotated).await;

    for (name, key) in [
        ("v1-stub", &k1),
        ("v1beta1-stub", &k2),
        ("v1beta1-legacy", &k3),
    ] {
        let pcr = wait_terminal(&env, name).await;
        let (nb, na) = check_issued(&ca, &dir, &pcr, key);
        // refreshAt 0.75 without jitter: three quarters of the leaf's lifetime after its NotBefore.
        let (nb, na) = (unix(&nb), unix(&na));
        let bra = unix(&rfc3339(
            pcr.status
                .as_ref()
                .unwrap()
                .begin_refresh_at
                .as_ref()
                .unwrap(),
        ));
        assert_eq!(
            bra,
            nb + ((na - nb) as f64 * 0.75).round() as i64,
            "{name}: beginRefreshAt"
        );
    }
    for (name, reason) in [
        ("p384", "UnsupportedKeyType"),
        ("annotated", "InvalidUnverifiedUserAnnotations"),
    ] {
        let pcr = wait_terminal(&env, name).await;
        let st = pcr.status.unwrap();
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_str()),
            ("Denied", reason),
            "{name}: {c:?}"
        );
        assert!(
            st.certificate_chain.is_none() && st.not_before.is_none(),
            "{name}"
        );
    }

    // Events on the PCRs, in their namespace.
    let events = Api::<Event>::namespaced(env.admin.clone(), NS);
    let expected = [
        ("v1-stub", "Issued"),
        ("v1beta1-stub", "Issued"),
        ("v1beta1-legacy", "Issued"),
        ("p384", "SigningDenied"),
        ("annotated", "SigningDenied"),
    ];
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("PodCertificateRequest"))
            .map(|e| {
                (
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                )
            })
            .collect();
        if expected
            .iter()
            .all(|(n, r)| seen.contains(&(n.to_string(), r.to_string())))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, reason) in expected {
        assert!(
            seen.contains(&(name.to_string(), reason.to_string())),
            "no {reason} event on {name}: {seen:?}"
        );
    }

    let text = scrape(svc.listen).await;
    let series = |outcome: &str, reason: &str| {
        format!("csr_signer_requests_total{{kind=\"pcr\",outcome=\"{outcome}\",reason=\"{reason}\",signer=\"{SIGNER}\"}}")
    };
    assert_eq!(
        sample(&text, &series("issued", "None")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("failed", "UnsupportedKeyType")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("failed", "InvalidUnverifiedUserAnnotations")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("csr_signer_certificates_signed_total{{kind=\"pcr\",signer=\"{SIGNER}\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "csr_signer_issuance_latency_seconds_count{{kind=\"pcr\",signer=\"{SIGNER}\"}}"
            )
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("csr_signer_approved_not_issued{{kind=\"pcr\",signer=\"{SIGNER}\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &format!("csr_signer_requests_total{{kind=\"csr\",outcome=\"issued\",reason=\"None\",signer=\"{SIGNER}\"}}")),
        Some(0.0),
        "the CSR series stay apart"
    );

    // The other signer's request: still without status, and the signer never wrote to it.
    let other = pcrs.get("other").await.unwrap();
    assert!(other
        .status
        .is_none_or(|s| s.conditions.is_none() && s.certificate_chain.is_none()));
    let _ = stop.send(());
    if env.is_real() {
        let touched: Vec<_> = kube_support::shared()
            .audit_events()
            .await
            .into_iter()
            .filter(|ev| {
                ev["user"]["username"] == env.signer_user()
                    && ev["objectRef"]["resource"] == "podcertificaterequests"
                    && ev["objectRef"]["name"] == "other"
            })
            .collect();
        assert!(touched.is_empty(), "{touched:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_certificates_are_issued_denied_and_left_alone_on_the_real_apiserver() {
    pcr_flow(Server::Real).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_certificates_are_issued_denied_and_left_alone_on_the_local_api() {
    pcr_flow(Server::Local).await
}
