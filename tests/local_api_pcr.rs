//! PodCertificateRequests on the local API against the real kube-apiserver 1.37.2: the same creates
//! (v1 and v1beta1, every key type, each invalid spec, each NodeRestriction refusal) and the same
//! status updates (each Issued/Denied/Failed rule) are sent to both, and both must answer alike: the
//! status code, the reason, each cause's reason and field, and the message (with the servers' UIDs
//! masked).
#![allow(clippy::unwrap_used)]

mod kube_support;
mod local_api_common;
mod pcr_support;
mod support;

use std::collections::BTreeMap;

use csr_signer::ca_init::KeyType;
use csr_signer::dev::{Rule, User, SIGNER_USER};
use local_api_common::Srv;
use openssl::pkey::{PKey, Private};
use pcr_support::*;
use serde_json::{json, Value};

const NS: &str = "default";
const SIGNER: &str = support::SIGNER;
const NODE: &str = "node-1";
const NODE_USER: &str = "system:node:node-1";
/// May update PCR status but may not `sign`.
const STATUS_ONLY: &str = "system:serviceaccount:team-a:app";
const CERTS: &str = "certificates.k8s.io";

/// What one answer is compared on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    code: u16,
    reason: String,
    causes: Vec<(String, String)>,
    message: String,
}

fn outcome(code: u16, body: &Value, uids: &[String]) -> Outcome {
    let mut message = body["message"].as_str().unwrap_or("").to_string();
    for u in uids.iter().filter(|u| !u.is_empty()) {
        message = message.replace(u.as_str(), "<uid>");
    }
    if code < 300 {
        message.clear();
    }
    // A certificate chain as a field value: each server's has its own leaf.
    const END: &str = "-----\\n\": ";
    while let Some(start) = message.find("\"-----BEGIN") {
        let Some(len) = message[start..].find(END) else {
            break;
        };
        message.replace_range(start..start + len + END.len(), "<chain>: ");
    }
    let causes = body["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["reason"].as_str().unwrap_or("").to_string(),
                        c["field"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Outcome {
        code,
        reason: body["reason"].as_str().unwrap_or("").to_string(),
        causes,
        message,
    }
}

async fn local_srv() -> Srv {
    let s = Srv::local().await;
    let api = s.api();
    api.add_user(User::node(NODE));
    api.add_user(
        User::service_account("team-a", "app")
            .with_rule(Rule::new(&[CERTS], &["podcertificaterequests"], &["get"]))
            .with_rule(Rule::new(
                &[CERTS],
                &["podcertificaterequests/status"],
                &["update", "patch"],
            )),
    );
    s
}

/// The real control plane with the same identities and RBAC as `local_srv`.
async fn real_srv() -> Srv {
    let cp = tokio::task::spawn_blocking(kube_support::shared)
        .await
        .unwrap();
    let tokens: BTreeMap<String, String> = [
        ("admin", "admin"),
        ("developer", "developer"),
        (NODE_USER, "node-1"),
        (SIGNER_USER, "signer"),
        (STATUS_ONLY, "team-a"),
    ]
    .iter()
    .map(|(u, c)| (u.to_string(), cp.token(c).to_string()))
    .collect();
    let ca = std::fs::read_to_string(&cp.ready.serving_ca).unwrap();
    let s = Srv::remote("real kube-apiserver", &cp.ready.server, &ca, tokens);
    let admin = s.client("admin");
    let rbac = "rbac.authorization.k8s.io/v1";
    let bind = |name: &str, ns: &str, sa: &str| {
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
    };
    let objects = [
        // crates/localapi signer_user's PCR rules.
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "pcr-signer"}, "rules": [
            {"apiGroups": [CERTS], "resources": ["podcertificaterequests"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [CERTS], "resources": ["podcertificaterequests/status"], "verbs": ["update", "patch"]},
            {"apiGroups": [CERTS], "resources": ["signers"], "resourceNames": [SIGNER], "verbs": ["sign", "attest"]}]}),
        bind(
            "pcr-signer",
            kube_support::SIGNER_NAMESPACE,
            kube_support::SIGNER_SERVICE_ACCOUNT,
        ),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "pcr-status-only"}, "rules": [
            {"apiGroups": [CERTS], "resources": ["podcertificaterequests"], "verbs": ["get"]},
            {"apiGroups": [CERTS], "resources": ["podcertificaterequests/status"], "verbs": ["update", "patch"]}]}),
        bind("pcr-status-only", "team-a", "app"),
    ];
    for o in objects {
        kube_support::apply(&admin, o).await;
    }
    s
}

/// The keys both servers get requests for (generated once: RSA-4096 takes a while).
struct Keys {
    accepted: Vec<(KeyType, PKey<Private>)>,
    rsa2048: PKey<Private>,
    p224: PKey<Private>,
    secp256k1: PKey<Private>,
    ed448: PKey<Private>,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            accepted: ACCEPTED_KEYS
                .iter()
                .map(|k| (*k, support::key(*k)))
                .collect(),
            rsa2048: support::key(KeyType::Rsa2048),
            p224: p224_key(),
            secp256k1: secp256k1_key(),
            ed448: ed448_key(),
        }
    }

    fn get(&self, k: KeyType) -> &PKey<Private> {
        &self.accepted.iter().find(|(a, _)| *a == k).unwrap().1
    }
}

/// What a server's fixture is: the objects a request names, plus a pod elsewhere and a mirror pod.
struct World {
    f: NodePod,
    uids: Vec<String>,
}

async fn world(s: &Srv) -> World {
    let admin = s.client("admin");
    let f = node_pod(&admin, NS, NODE, "pcr-pod", "pcr-app", SIGNER).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(admin.clone(), NS);
    let mut uids = vec![
        f.node_uid.clone(),
        f.pod_uid.clone(),
        f.service_account_uid.clone(),
    ];
    for (name, manifest) in [
        (
            "pcr-pod-elsewhere",
            pod_manifest("pcr-pod-elsewhere", "node-2", Some("pcr-app"), Some(SIGNER)),
        ),
        ("pcr-mirror", {
            let mut m = pod_manifest("pcr-mirror", NODE, None, None);
            m["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "mirror"});
            m
        }),
    ] {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(manifest).unwrap();
        let created = pods
            .create(&Default::default(), &p)
            .await
            .unwrap_or_else(|e| panic!("{}: create pod {name}: {e}", s.name));
        uids.push(created.metadata.uid.unwrap());
    }
    // NodeRestriction reads pods, nodes and service accounts from informers: wait until a valid
    // request is admitted, so that informer lag does not decide a case.
    let probe_key = support::key(KeyType::P256);
    for attempt in 0.. {
        let body = pcr_body("v1", "probe", &f, SIGNER, &probe_key, Carrier::Stub);
        let (code, v) = s.post(NODE_USER, &pcr_path("v1", NS), &body).await;
        if code == 201 {
            s.delete("admin", &format!("{}/probe", pcr_path("v1", NS)))
                .await;
            break;
        }
        assert!(attempt < 100, "{}: probe never admitted: {v}", s.name);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    World { f, uids }
}

struct CreateCase {
    name: &'static str,
    user: &'static str,
    version: &'static str,
    body: Value,
}

/// Every create case for one server's fixture.
fn create_cases(w: &World, keys: &Keys) -> Vec<CreateCase> {
    let f = &w.f;
    let mut cases = Vec::new();
    let mut add = |name: &'static str, user: &'static str, version: &'static str, body: Value| {
        let mut body = body;
        body["metadata"]["name"] = json!(name);
        body["apiVersion"] = json!(format!("certificates.k8s.io/{version}"));
        cases.push(CreateCase {
            name,
            user,
            version,
            body,
        });
    };
    let stub = |key: &PKey<Private>| pcr_body("v1", "x", f, SIGNER, key, Carrier::Stub);
    let pop =
        |key: &PKey<Private>| pcr_body("v1beta1", "x", f, SIGNER, key, Carrier::ProofOfPossession);
    let names: [(&str, &str, &str); 6] = [
        ("v1-rsa3072", "v1beta1-stub-rsa3072", "v1beta1-pop-rsa3072"),
        ("v1-rsa4096", "v1beta1-stub-rsa4096", "v1beta1-pop-rsa4096"),
        ("v1-p256", "v1beta1-stub-p256", "v1beta1-pop-p256"),
        ("v1-p384", "v1beta1-stub-p384", "v1beta1-pop-p384"),
        ("v1-p521", "v1beta1-stub-p521", "v1beta1-pop-p521"),
        ("v1-ed25519", "v1beta1-stub-ed25519", "v1beta1-pop-ed25519"),
    ];
    for ((_, key), (a, b, c)) in keys.accepted.iter().zip(names) {
        add(a, NODE_USER, "v1", stub(key));
        add(b, NODE_USER, "v1beta1", stub(key));
        add(c, NODE_USER, "v1beta1", pop(key));
    }
    let p256 = keys.get(KeyType::P256);
    let with = |mut body: Value, ptr: &str, v: Value| {
        let (parent, field) = ptr.rsplit_once('/').unwrap();
        body.pointer_mut(parent).unwrap()[field] = v;
        body
    };
    let without = |mut body: Value, field: &str| {
        body["spec"].as_object_mut().unwrap().remove(field);
        body
    };
    // The key and its carriers.
    add(
        "v1-no-stub",
        NODE_USER,
        "v1",
        without(stub(p256), "stubPKCS10Request"),
    );
    add(
        "v1-pkix-only",
        NODE_USER,
        "v1",
        without(pop(p256), "stubPKCS10Request"),
    );
    add("v1-rsa2048", NODE_USER, "v1", stub(&keys.rsa2048));
    add("v1-p224", NODE_USER, "v1", stub(&keys.p224));
    add("v1-secp256k1", NODE_USER, "v1", stub(&keys.secp256k1));
    add("v1-ed448", NODE_USER, "v1", stub(&keys.ed448));
    add(
        "v1-stub-garbage",
        NODE_USER,
        "v1",
        with(
            stub(p256),
            "/spec/stubPKCS10Request",
            json!(b64(b"not a request")),
        ),
    );
    let mut tampered = stub_request(p256);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    add(
        "v1-stub-bad-signature",
        NODE_USER,
        "v1",
        with(stub(p256), "/spec/stubPKCS10Request", json!(b64(&tampered))),
    );
    let mut both = pop(p256);
    both["spec"]["stubPKCS10Request"] = json!(b64(&stub_request(p256)));
    add("v1beta1-stub-and-pkix", NODE_USER, "v1beta1", both);
    add(
        "v1beta1-pkix-without-pop",
        NODE_USER,
        "v1beta1",
        without(pop(p256), "proofOfPossession"),
    );
    for (name, kind) in [
        ("v1beta1-pop-other-uid-rsa", KeyType::Rsa3072),
        ("v1beta1-pop-other-uid-p384", KeyType::P384),
        ("v1beta1-pop-other-uid-ed25519", KeyType::Ed25519),
    ] {
        let key = keys.get(kind);
        add(
            name,
            NODE_USER,
            "v1beta1",
            with(
                pop(key),
                "/spec/proofOfPossession",
                json!(b64(&proof_of_possession(key, "another-uid"))),
            ),
        );
    }
    // ECDSA over SHA-384 on P-384: Go hashes with SHA-256 on every curve.
    let p384 = keys.get(KeyType::P384);
    let sha384 = openssl::sha::sha384(f.pod_uid.as_bytes());
    let sig = openssl::ecdsa::EcdsaSig::sign(&sha384, &p384.ec_key().unwrap()).unwrap();
    add(
        "v1beta1-pop-p384-sha384",
        NODE_USER,
        "v1beta1",
        with(
            pop(p384),
            "/spec/proofOfPossession",
            json!(b64(&sig.to_der().unwrap())),
        ),
    );
    // PKCS#1 v1.5 where PSS is expected.
    let rsa = keys.get(KeyType::Rsa3072);
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), rsa).unwrap();
    let v15 = signer.sign_oneshot_to_vec(f.pod_uid.as_bytes()).unwrap();
    add(
        "v1beta1-pop-rsa-pkcs1v15",
        NODE_USER,
        "v1beta1",
        with(pop(rsa), "/spec/proofOfPossession", json!(b64(&v15))),
    );
    add(
        "v1beta1-pkix-rsa2048",
        NODE_USER,
        "v1beta1",
        pop(&keys.rsa2048),
    );
    add("v1beta1-pkix-p224", NODE_USER, "v1beta1", pop(&keys.p224));
    add(
        "v1beta1-pkix-garbage",
        NODE_USER,
        "v1beta1",
        with(pop(p256), "/spec/pkixPublicKey", json!(b64(b"not a key"))),
    );
    // The rest of the spec (as admin: NodeRestriction does not apply).
    add("defaulted-expiry", "admin", "v1", stub(p256));
    add(
        "expiry-too-short",
        "admin",
        "v1",
        with(stub(p256), "/spec/maxExpirationSeconds", json!(3599)),
    );
    add(
        "expiry-too-long",
        "admin",
        "v1",
        with(stub(p256), "/spec/maxExpirationSeconds", json!(7862401)),
    );
    add(
        "expiry-91-days",
        "admin",
        "v1",
        with(stub(p256), "/spec/maxExpirationSeconds", json!(7862400)),
    );
    let k8s = with(
        stub(p256),
        "/spec/signerName",
        json!("kubernetes.io/kube-apiserver-client-pod"),
    );
    add(
        "kubernetes-signer-25h",
        "admin",
        "v1",
        with(k8s.clone(), "/spec/maxExpirationSeconds", json!(90000)),
    );
    add("kubernetes-signer-24h", "admin", "v1", k8s);
    add(
        "signer-without-domain",
        "admin",
        "v1",
        with(stub(p256), "/spec/signerName", json!("mtls")),
    );
    // One key each: Go walks the map in random order, so several bad keys come in any order.
    for (name, key) in [
        ("annotation-upper-case", "Example.com/Mode"),
        ("annotation-plain", "plain"),
        ("annotation-three-parts", "a/b/c"),
        ("annotation-bad-prefix", "-x.com/y"),
    ] {
        let body = with(
            stub(p256),
            "/spec/unverifiedUserAnnotations",
            json!({key: "v"}),
        );
        add(name, "admin", "v1", body);
    }
    add(
        "empty-pod-uid",
        "admin",
        "v1",
        with(stub(p256), "/spec/podUID", json!("")),
    );
    add(
        "long-node-uid",
        "admin",
        "v1",
        with(stub(p256), "/spec/nodeUID", json!("u".repeat(129))),
    );
    add(
        "bad-names",
        "admin",
        "v1",
        with(
            with(stub(p256), "/spec/nodeName", json!("Node_1")),
            "/spec/serviceAccountName",
            json!("-sa"),
        ),
    );
    // NodeRestriction.
    for (name, ptr, value) in [
        ("node-names-another-node", "/spec/nodeName", json!("node-2")),
        ("node-uid-mismatch", "/spec/nodeUID", json!("other")),
        ("pod-missing", "/spec/podName", json!("nope")),
        ("pod-uid-mismatch", "/spec/podUID", json!("other")),
        (
            "service-account-name-mismatch",
            "/spec/serviceAccountName",
            json!("other"),
        ),
        (
            "service-account-uid-mismatch",
            "/spec/serviceAccountUID",
            json!("other"),
        ),
        (
            "signer-not-mounted",
            "/spec/signerName",
            json!("example.com/other"),
        ),
    ] {
        add(name, NODE_USER, "v1", with(stub(p256), ptr, value));
    }
    for (name, pod, uid) in [
        ("pod-on-another-node", "pcr-pod-elsewhere", &w.uids[3]),
        ("mirror-pod", "pcr-mirror", &w.uids[4]),
    ] {
        let body = with(stub(p256), "/spec/podName", json!(pod));
        add(
            name,
            NODE_USER,
            "v1",
            with(body, "/spec/podUID", json!(uid)),
        );
    }
    add("developer-may-not-create", "developer", "v1", stub(p256));
    cases
}

/// The real server's answers to some cases: (case, code, first cause's field).
fn expect(results: &[(String, Outcome, Outcome)], want: &[(&str, u16, &str)]) {
    for (name, code, field) in want {
        let (_, _, real) = results.iter().find(|(n, _, _)| n == name).unwrap();
        let got_field = real.causes.first().map_or("", |(_, f)| f.as_str());
        assert_eq!((real.code, got_field), (*code, *field), "{name}: {real:?}");
    }
}

fn compare(kind: &str, results: &[(String, Outcome, Outcome)]) {
    let mut diffs = Vec::new();
    for (name, local, real) in results {
        if local != real {
            diffs.push(format!(
                "{kind} {name}:\n  local API: {local:?}\n  real:      {real:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_status_updates_and_reads_agree_with_the_real_apiserver() {
    let keys = Keys::new();
    let local = local_srv().await;
    let real = real_srv().await;
    let lw = world(&local).await;
    let rw = world(&real).await;

    // Creates.
    let mut results = Vec::new();
    let (lc, rc) = (create_cases(&lw, &keys), create_cases(&rw, &keys));
    for (l, r) in lc.iter().zip(&rc) {
        let (lcode, lbody) = local.post(l.user, &pcr_path(l.version, NS), &l.body).await;
        let (rcode, rbody) = real.post(r.user, &pcr_path(r.version, NS), &r.body).await;
        results.push((
            l.name.to_string(),
            outcome(lcode, &lbody, &lw.uids),
            outcome(rcode, &rbody, &rw.uids),
        ));
        if lcode == 201 && rcode == 201 {
            // What was stored, as each version shows it.
            for v in ["v1", "v1beta1"] {
                let path = format!("{}/{}", pcr_path(v, NS), l.name);
                let (_, lo) = local.get("admin", &path).await;
                let (_, ro) = real.get("admin", &path).await;
                let keys_of = |o: &Value| {
                    let spec = o["spec"].as_object().unwrap();
                    let mut k: Vec<String> = spec
                        .iter()
                        .map(|(k, v)| format!("{k}{}", if v.is_null() { "=null" } else { "" }))
                        .collect();
                    k.sort();
                    (
                        k,
                        o["spec"]["maxExpirationSeconds"].clone(),
                        o["status"].clone(),
                        o["apiVersion"].clone(),
                    )
                };
                assert_eq!(
                    keys_of(&lo),
                    keys_of(&ro),
                    "{} read through {v}: {lo}",
                    l.name
                );
            }
        }
    }
    compare("create", &results);
    // Not only alike: as kube-apiserver 1.37.2 is documented to answer.
    let mut want: Vec<(&str, u16, &str)> = ACCEPTED_KEYS
        .iter()
        .enumerate()
        .flat_map(|(i, _)| {
            let n = &lc[i * 3..i * 3 + 3];
            [
                (n[0].name, 201, ""),
                (n[1].name, 201, ""),
                (n[2].name, 201, ""),
            ]
        })
        .collect();
    want.extend([
        ("v1-rsa2048", 422, "spec.stubPKCS10Request"),
        ("v1beta1-pop-p384-sha384", 422, "spec.proofOfPossession"),
        ("expiry-91-days", 201, ""),
        ("kubernetes-signer-25h", 422, "spec.maxExpirationSeconds"),
        ("annotation-upper-case", 201, ""),
        ("annotation-plain", 422, "spec.unverifiedUserAnnotations"),
        ("pod-on-another-node", 403, ""),
        ("pod-uid-mismatch", 500, ""),
        ("developer-may-not-create", 403, ""),
    ]);
    expect(&results, &want);

    // Reads by the node (the Node authorizer) and field selectors.
    let mut reads = Vec::new();
    for (name, user, query) in [
        (
            "node-lists-own",
            NODE_USER,
            "?fieldSelector=spec.nodeName%3Dnode-1",
        ),
        ("node-lists-all", NODE_USER, ""),
        (
            "node-lists-other",
            NODE_USER,
            "?fieldSelector=spec.nodeName%3Dnode-2",
        ),
        (
            "by-signer",
            "admin",
            "?fieldSelector=spec.signerName%3Dexample.com%2Fmtls",
        ),
        ("by-pod", "admin", "?fieldSelector=spec.podName%3Dpcr-pod"),
        (
            "by-namespace",
            "admin",
            "?fieldSelector=metadata.namespace%3Ddefault",
        ),
        ("by-uid", "admin", "?fieldSelector=spec.podUID%3Dx"),
    ] {
        let path = format!("{}{query}", pcr_path("v1", NS));
        let (lcode, lbody) = local.get(user, &path).await;
        let (rcode, rbody) = real.get(user, &path).await;
        let count = |code: u16, b: &Value| {
            if code == 200 {
                b["items"].as_array().map_or(0, Vec::len).to_string()
            } else {
                String::new()
            }
        };
        let mut lo = outcome(lcode, &lbody, &lw.uids);
        let mut ro = outcome(rcode, &rbody, &rw.uids);
        lo.message.push_str(&count(lcode, &lbody));
        ro.message.push_str(&count(rcode, &rbody));
        reads.push((name.to_string(), lo, ro));
    }
    for (name, user) in [("node-gets-own", NODE_USER), ("signer-gets", SIGNER_USER)] {
        let path = format!("{}/v1-p256", pcr_path("v1", NS));
        let (lcode, lbody) = local.get(user, &path).await;
        let (rcode, rbody) = real.get(user, &path).await;
        reads.push((
            name.to_string(),
            outcome(lcode, &lbody, &lw.uids),
            outcome(rcode, &rbody, &rw.uids),
        ));
    }
    compare("read", &reads);

    // Status updates.
    let mut results = Vec::new();
    for case in status_cases() {
        // One clock reading for both servers, so the times in their messages are the same.
        let now = now();
        let l = run_status(&local, &lw, &keys, &case, now).await;
        let r = run_status(&real, &rw, &keys, &case, now).await;
        results.push((case.name.to_string(), l, r));
    }
    compare("status", &results);

    // `kubectl get podcertificaterequests`: the Table (columns, and the cells of two requests).
    let (lt, rt) = (table(&local).await, table(&real).await);
    assert_eq!(lt.0, rt.0, "Table columns");
    assert_eq!(lt.1, rt.1, "Table rows");
    let row = |name: &str| rt.1.iter().find(|r| r["cells"][0] == name).unwrap()["cells"].clone();
    assert_eq!(row("st-issued")[5], "Issued");
    assert_eq!(row("st-denied")[5], "Denied");
    assert_eq!(row("annotation-upper-case")[6], "Example.com/Mode=v");
    expect(
        &results,
        &[
            ("issued", 200, ""),
            ("denied", 200, ""),
            ("failed", 200, ""),
            ("issued-again", 422, "status"),
            ("other-key", 422, "status.certificateChain"),
            ("without-sign", 422, "spec.signerName"),
            ("node-may-not-write-status", 403, ""),
            ("issued-by-merge-patch", 200, ""),
            ("issued-ed25519", 200, ""),
            ("issued-rsa", 200, ""),
            ("issued-to-pkix-key", 200, ""),
            ("pkix-key-other-leaf", 422, "status.certificateChain"),
        ],
    );
}

/// The Table of the requests for the fixture's pod (`kubectl get podcertificaterequests`): column
/// definitions and rows without their objects.
async fn table(s: &Srv) -> (Value, Vec<Value>) {
    let path = format!(
        "{}?fieldSelector=spec.podName%3Dpcr-pod",
        pcr_path("v1", NS)
    );
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let (code, _, t) = s
        .raw_h(Some("admin"), "GET", &path, &[("accept", accept)], None)
        .await;
    assert_eq!(code, 200, "{}: {t}", s.name);
    let mut rows = t["rows"].as_array().unwrap().clone();
    for r in &mut rows {
        r.as_object_mut().unwrap().remove("object");
    }
    (t["columnDefinitions"].clone(), rows)
}

struct StatusCase {
    name: &'static str,
    user: &'static str,
    max_expiration: i64,
    /// Issue first (as the signer), then send this.
    after_issue: bool,
    keep_resource_version: bool,
    /// The request's key and how it carries it (v1beta1 for the proof of possession).
    key: KeyType,
    carrier: Carrier,
    /// Written with a JSON merge patch of `status` (as the signer does) instead of a PUT.
    merge_patch: bool,
    status: fn(&Ctx) -> Value,
}

/// What a status body is built from.
struct Ctx {
    ca: (PKey<Private>, openssl::x509::X509),
    key: PKey<Private>,
    other: PKey<Private>,
    now: i64,
}

impl Ctx {
    fn leaf(&self, nb: i64, na: i64, dns: &[&str]) -> String {
        leaf_pem(&self.ca, &self.key, nb, na, dns)
    }
    fn nb(&self) -> i64 {
        self.now - 60
    }
}

fn issued_ok(c: &Ctx) -> Value {
    let nb = c.nb();
    issued_status(&c.leaf(nb, nb + 7200, &[]), nb, nb + 7200, nb + 3600)
}

fn status_cases() -> Vec<StatusCase> {
    let case = |name, status| StatusCase {
        name,
        user: SIGNER_USER,
        max_expiration: 86400,
        after_issue: false,
        keep_resource_version: true,
        key: KeyType::P256,
        carrier: Carrier::Stub,
        merge_patch: false,
        status,
    };
    vec![
        case("issued", issued_ok),
        StatusCase {
            after_issue: true,
            ..case("denied-after-issued", |_| {
                condition_status("Denied", "Policy")
            })
        },
        StatusCase {
            after_issue: true,
            ..case("issued-again", issued_ok)
        },
        case("denied", |_| {
            condition_status("Denied", "UnsupportedKeyType")
        }),
        case("failed", |_| condition_status("Failed", "CAUnavailable")),
        case("denied-with-chain", |c| {
            let mut s = condition_status("Denied", "Policy");
            s["certificateChain"] = issued_ok(c)["certificateChain"].clone();
            s
        }),
        case("pending-condition", |_| {
            condition_status("Pending", "Waiting")
        }),
        case("issued-and-denied", |c| {
            let mut s = issued_ok(c);
            let d = condition_status("Denied", "Policy")["conditions"][0].clone();
            s["conditions"].as_array_mut().unwrap().push(d);
            s
        }),
        case("issued-false", |c| {
            let mut s = issued_ok(c);
            s["conditions"][0]["status"] = json!("False");
            s
        }),
        case("bad-reason", |_| condition_status("Denied", "not a reason")),
        case("no-transition-time", |_| {
            let mut s = condition_status("Failed", "X");
            s["conditions"][0]
                .as_object_mut()
                .unwrap()
                .remove("lastTransitionTime");
            s
        }),
        case("other-key", |c| {
            let nb = c.nb();
            issued_status(
                &leaf_pem(&c.ca, &c.other, nb, nb + 7200, &[]),
                nb,
                nb + 7200,
                nb + 3600,
            )
        }),
        case("not-before-differs", |c| {
            let nb = c.nb();
            issued_status(&c.leaf(nb, nb + 7200, &[]), nb + 1, nb + 7200, nb + 3600)
        }),
        case("not-before-old", |c| {
            let nb = c.now - 600;
            issued_status(&c.leaf(nb, nb + 7200, &[]), nb, nb + 7200, nb + 3600)
        }),
        case("not-after-differs", |c| {
            let nb = c.nb();
            issued_status(&c.leaf(nb, nb + 7200, &[]), nb, nb + 7201, nb + 3600)
        }),
        case("lifetime-30m", |c| {
            let nb = c.nb();
            issued_status(&c.leaf(nb, nb + 1800, &[]), nb, nb + 1800, nb + 900)
        }),
        StatusCase {
            max_expiration: 3600,
            ..case("lifetime-over-max", issued_ok)
        },
        case("refresh-too-early", |c| {
            let nb = c.nb();
            issued_status(&c.leaf(nb, nb + 7200, &[]), nb, nb + 7200, nb + 60)
        }),
        case("refresh-too-late", |c| {
            let nb = c.nb();
            issued_status(&c.leaf(nb, nb + 7200, &[]), nb, nb + 7200, nb + 7140)
        }),
        case("no-refresh", |c| {
            let mut s = issued_ok(c);
            s.as_object_mut().unwrap().remove("beginRefreshAt");
            s
        }),
        case("no-certificate", |c| {
            let mut s = issued_ok(c);
            s["certificateChain"] = json!("garbage");
            s
        }),
        case("dns-names", |c| {
            let nb = c.nb();
            issued_status(
                &c.leaf(
                    nb,
                    nb + 7200,
                    &["a..b.example", ".lead.example", "ok.example"],
                ),
                nb,
                nb + 7200,
                nb + 3600,
            )
        }),
        case("bad-intermediate", |c| {
            let mut s = issued_ok(c);
            let chain = format!(
                "{}-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                s["certificateChain"].as_str().unwrap(),
                b64(b"not a certificate")
            );
            s["certificateChain"] = json!(chain);
            s
        }),
        case(
            "chain-without-condition",
            |c| json!({"certificateChain": issued_ok(c)["certificateChain"]}),
        ),
        StatusCase {
            user: STATUS_ONLY,
            ..case("without-sign", issued_ok)
        },
        StatusCase {
            user: NODE_USER,
            ..case("node-may-not-write-status", issued_ok)
        },
        StatusCase {
            keep_resource_version: false,
            ..case("put-without-resource-version", issued_ok)
        },
        StatusCase {
            merge_patch: true,
            ..case("issued-by-merge-patch", issued_ok)
        },
        StatusCase {
            merge_patch: true,
            ..case("denied-by-merge-patch", |_| {
                condition_status("Denied", "Policy")
            })
        },
        StatusCase {
            merge_patch: true,
            ..case("pending-by-merge-patch", |_| {
                condition_status("Pending", "Waiting")
            })
        },
        StatusCase {
            key: KeyType::Ed25519,
            ..case("issued-ed25519", issued_ok)
        },
        StatusCase {
            key: KeyType::Rsa3072,
            ..case("issued-rsa", issued_ok)
        },
        StatusCase {
            key: KeyType::P384,
            carrier: Carrier::ProofOfPossession,
            ..case("issued-to-pkix-key", issued_ok)
        },
        StatusCase {
            key: KeyType::P384,
            carrier: Carrier::ProofOfPossession,
            ..case("pkix-key-other-leaf", |c| {
                let nb = c.nb();
                issued_status(
                    &leaf_pem(&c.ca, &c.other, nb, nb + 7200, &[]),
                    nb,
                    nb + 7200,
                    nb + 3600,
                )
            })
        },
    ]
}

/// Creates a fresh request (as the node), then PUTs the case's status as its user.
async fn run_status(s: &Srv, w: &World, keys: &Keys, case: &StatusCase, now: i64) -> Outcome {
    let key = keys.get(case.key).clone();
    let other = if case.key == KeyType::P256 {
        KeyType::P384
    } else {
        KeyType::P256
    };
    let ctx = Ctx {
        ca: issuing_ca(),
        key: key.clone(),
        other: keys.get(other).clone(),
        now,
    };
    let name = format!("st-{}", case.name);
    let version = match case.carrier {
        Carrier::Stub => "v1",
        Carrier::ProofOfPossession => "v1beta1",
    };
    let mut body = pcr_body(version, &name, &w.f, SIGNER, &key, case.carrier);
    body["spec"]["maxExpirationSeconds"] = json!(case.max_expiration);
    let (code, v) = s.post(NODE_USER, &pcr_path(version, NS), &body).await;
    assert_eq!(code, 201, "{}: create {name}: {v}", s.name);
    let path = format!("{}/{name}", pcr_path("v1", NS));
    let put = |user: &'static str, status: Value, keep_rv: bool| {
        let path = path.clone();
        async move {
            let (_, mut obj) = s.get("admin", &path).await;
            obj["status"] = status;
            if !keep_rv {
                obj["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("resourceVersion");
            }
            s.put(user, &format!("{path}/status"), &obj).await
        }
    };
    if case.after_issue {
        let (code, v) = put(SIGNER_USER, issued_ok(&ctx), true).await;
        assert_eq!(code, 200, "{}: issue {name}: {v}", s.name);
    }
    let status = (case.status)(&ctx);
    let (code, v) = if case.merge_patch {
        let patch = json!({"status": status});
        let ct = "application/merge-patch+json";
        s.patch(case.user, &format!("{path}/status"), ct, &patch)
            .await
    } else {
        put(case.user, status, case.keep_resource_version).await
    };
    outcome(code, &v, &w.uids)
}
