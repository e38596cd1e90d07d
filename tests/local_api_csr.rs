//! CertificateSigningRequest semantics of the local API, driven by kube-rs and raw HTTP:
//! create, subresources (§3.D), validation rules (§3.C, one test per rule), RV conflicts (§3.E),
//! admission and RBAC (§3.F), errors (§3.H), delete (§3.I).
//!
//! Differential: every rule test runs its scenario against a fresh local API and against the real
//! kube-apiserver v1.37.2 of this test binary (`kube_support::shared()`), asserts the expected answers on
//! both, and then requires the local API's transcript (status codes and bodies of every raw request, and
//! the notes of typed calls) to equal the real server's, after masking identifiers, resource versions and
//! timestamps (`local_api_common::normalized`). Objects on the real server are cluster-wide and shared by
//! all tests of this binary, so names are unique per test and lists are scoped with a label selector.
#![allow(clippy::unwrap_used)]

mod local_api_common;
mod support;

#[path = "kube_support/mod.rs"]
mod kube_support;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use local_api_common::*;
use openssl::hash::MessageDigest;
use serde_json::{json, Value};

const SIGNER_USER: &str = csr_signer::dev::SIGNER_USER;

// ---------- the differential harness ----------

/// The local API's default users and the real control plane's contexts for the same people.
const CONTEXTS: &[(&str, &str)] = &[
    ("admin", "admin"),
    ("developer", "developer"),
    ("approver", "approver"),
    (SIGNER_USER, "signer"),
    ("system:serviceaccount:team-a:app", "team-a"),
    ("system:serviceaccount:team-b:app", "team-b"),
];

/// The real kube-apiserver of this test binary, with the local API's default users. The signer's
/// ServiceAccount gets the RBAC of the local API's default signer user (`signer_user(SIGNER_USER,
/// ["example.com/mtls"])`), applied once.
async fn real_srv() -> Srv {
    let cp = tokio::task::spawn_blocking(kube_support::shared)
        .await
        .unwrap();
    let tokens: BTreeMap<String, String> = CONTEXTS
        .iter()
        .map(|(user, ctx)| (user.to_string(), cp.token(ctx).to_string()))
        .collect();
    let ca = std::fs::read_to_string(&cp.ready.serving_ca).unwrap();
    let s = Srv::remote("real kube-apiserver", &cp.ready.server, &ca, tokens);
    static RBAC: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    RBAC.get_or_init(|| signer_rbac(&s)).await;
    s
}

/// The local API's default signer rules (crates/localapi/src/auth.rs `signer_user`) as RBAC objects on the real server.
async fn signer_rbac(s: &Srv) {
    let admin = s.client("admin");
    let ns = kube_support::SIGNER_NAMESPACE;
    let sa = json!([{"kind": "ServiceAccount", "name": kube_support::SIGNER_SERVICE_ACCOUNT, "namespace": ns}]);
    let certs = "certificates.k8s.io";
    let objects = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "local-api-signer"},
            "rules": [
                {"apiGroups": [certs], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [certs], "resources": ["certificatesigningrequests/status"], "verbs": ["update", "patch"]},
                {"apiGroups": [certs], "resources": ["podcertificaterequests"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [certs], "resources": ["podcertificaterequests/status"], "verbs": ["update", "patch"]},
                {"apiGroups": [certs], "resources": ["signers"], "resourceNames": [SIGNER], "verbs": ["sign", "attest"]},
                {"apiGroups": [certs], "resources": ["clustertrustbundles"],
                 "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["configmaps"],
                 "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "local-api-signer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "local-api-signer"},
            "subjects": sa}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "local-api-signer", "namespace": ns},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "verbs": ["get", "list", "watch", "create", "update", "patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "local-api-signer", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "local-api-signer"},
            "subjects": sa}),
    ];
    for o in objects {
        kube_support::apply(&admin, o).await;
    }
    wait_allowed(s, SIGNER_USER, "sign", "signers", SIGNER).await;
}

/// Waits until the real server's RBAC authorizer has seen new rules (its informer lags the write).
async fn wait_allowed(s: &Srv, user: &str, verb: &str, resource: &str, name: &str) {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"group": "certificates.k8s.io", "resource": resource,
                 "verb": verb, "name": name}}});
    for _ in 0..200 {
        let v: Value = access_review(s, user, &review).await;
        if v["status"]["allowed"] == true {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{user} never became allowed to {verb} {resource} {name}");
}

/// An unrecorded SelfSubjectAccessReview.
async fn access_review(s: &Srv, user: &str, review: &Value) -> Value {
    let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(s.client(user));
    let r: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview =
        serde_json::from_value(review.clone()).unwrap();
    serde_json::to_value(api.create(&PostParams::default(), &r).await.unwrap()).unwrap()
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(panic)".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs `scenario` against a fresh local API and the real kube-apiserver (concurrently), then fails if
/// either run failed its own assertions or if the two transcripts differ.
async fn both<F, Fut>(scenario: F)
where
    F: Fn(Arc<Srv>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = Arc::new(Srv::local().await);
    let real = Arc::new(real_srv().await);
    let l = tokio::spawn(scenario(local.clone()));
    let r = tokio::spawn(scenario(real.clone()));
    let (l, r) = (l.await, r.await);
    let mut report = Vec::new();
    if let Err(e) = r {
        report.push(format!(
            "on the real kube-apiserver the scenario failed: {}",
            panic_text(e)
        ));
    }
    if let Err(e) = l {
        report.push(format!(
            "on the local API the scenario failed: {}",
            panic_text(e)
        ));
    }
    let diffs = transcript_differences(&real, &local);
    if !diffs.is_empty() {
        report.push(format!(
            "the local API answered differently from kube-apiserver:\n{}",
            diffs.join("\n")
        ));
    }
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}

/// Bytes made once per label and reused, so both servers get byte-identical requests (error messages
/// quote request bytes).
fn fixed(label: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    static MEMO: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(b) = memo.lock().unwrap().get(label) {
        return b.clone();
    }
    let b = make();
    memo.lock()
        .unwrap()
        .entry(label.to_string())
        .or_insert(b)
        .clone()
}

/// A CSR PEM (EC P-256) for `cn`, the same bytes on every call.
fn req_pem(cn: &str) -> Vec<u8> {
    fixed(&format!("csr:{cn}"), || csr_pem(cn))
}

/// A self-signed certificate PEM for `cn`, the same bytes on every call.
fn cert(cn: &str, ca: bool) -> Vec<u8> {
    fixed(&format!("cert:{cn}:{ca}"), || cert_pem(cn, ca))
}

fn rsa_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    let der = fixed("rsa-key", || {
        openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_der()
            .unwrap()
    });
    openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::private_key_from_der(&der).unwrap()).unwrap()
}

/// `csr_json` with fixed request bytes.
fn csr(name: &str, signer: &str, usages: &[&str], expiration: Option<i64>) -> Value {
    let mut v = csr_json(name, signer, usages, expiration);
    let cn = if name.is_empty() { "anonymous" } else { name };
    v["spec"]["request"] = json!(b64(&req_pem(cn)));
    v
}

/// The CSR `csr_typed` describes (usages digital signature + client auth, 3600 s), with fixed bytes.
fn typed(name: &str, signer: &str) -> CertificateSigningRequest {
    let mut c = csr_typed(name, signer);
    c.spec.request = k8s_openapi::ByteString(req_pem(name));
    c
}

fn with_labels(mut v: Value, labels: Value) -> Value {
    v["metadata"]["labels"] = labels;
    v
}

fn named(name: &str) -> String {
    format!("{CSR_PATH}/{name}")
}

/// Creates `typed(name, SIGNER)` through raw JSON, asserting 201.
async fn create(s: &Srv, user: &str, name: &str) -> Value {
    create_obj(s, user, &serde_json::to_value(typed(name, SIGNER)).unwrap()).await
}

async fn create_obj(s: &Srv, user: &str, obj: &Value) -> Value {
    let (code, v) = s.post(user, CSR_PATH, obj).await;
    assert_eq!(code, 201, "create failed: {v}");
    v
}

/// The outcome of a typed kube-rs call, for `Srv::note`.
fn outcome<T: serde::Serialize>(r: &Result<T, kube::Error>) -> Value {
    match r {
        Ok(v) => serde_json::to_value(v).unwrap(),
        Err(kube::Error::Api(st)) => serde_json::to_value(st).unwrap(),
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn names_of(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Posts `obj` as admin and checks the 422 body: message `<kind> "<name>" is invalid: <message>` and a
/// cause for `field`.
async fn expect_invalid(s: &Srv, obj: Value, field: &str, message: &str) -> Value {
    let (code, body) = s.post("admin", CSR_PATH, &obj).await;
    assert_eq!(code, 422, "{body}");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        format!("CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: {message}"),
        "{body}"
    );
    let causes = body["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == field),
        "no cause for {field}: {body}"
    );
    body
}

// ---------- create semantics (3.B) ----------

#[tokio::test]
async fn create_stamps_identity_and_wipes_status() {
    both(|s| async move {
        let user = "system:serviceaccount:team-a:app";
        let mut obj = csr(
            "svc-a",
            SIGNER,
            &["digital signature", "client auth"],
            Some(3600),
        );
        obj["spec"]["username"] = json!("ignored");
        obj["spec"]["groups"] = json!(["system:masters"]);
        obj["status"] = json!({"certificate": b64(&cert("x", false)),
                               "conditions": [{"type": "Approved", "status": "True"}]});
        let v = create_obj(&s, user, &obj).await;
        assert_eq!(v["spec"]["username"], user);
        assert_eq!(
            v["spec"]["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ])
        );
        let uid = match &s.local {
            Some(api) => api.user(user).unwrap().uid,
            None => {
                let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    Api::namespaced(s.client("admin"), "team-a");
                sas.get("app").await.unwrap().metadata.uid.unwrap()
            }
        };
        assert_eq!(v["spec"]["uid"], json!(uid));
        assert_eq!(v["status"], json!({}));
        assert!(v["metadata"]["uid"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(v["metadata"]["resourceVersion"].as_str().is_some());
        assert!(v["metadata"]["creationTimestamp"].as_str().is_some());
        assert_eq!(v["kind"], "CertificateSigningRequest");
    })
    .await;
}

#[tokio::test]
async fn create_with_generate_name() {
    both(|s| async move {
        let mut obj = csr("", SIGNER, &["client auth"], None);
        obj["metadata"] = json!({"generateName": "csr-"});
        let v = create_obj(&s, "developer", &obj).await;
        let name = v["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("csr-") && name.len() == 9, "{name}");
    })
    .await;
}

#[tokio::test]
async fn create_existing_name_conflicts() {
    both(|s| async move {
        let obj = csr("dup", SIGNER, &["client auth"], None);
        create_obj(&s, "developer", &obj).await;
        let (code, body) = s.post("developer", CSR_PATH, &obj).await;
        assert_eq!(code, 409);
        assert_eq!(body["reason"], "AlreadyExists");
        assert_eq!(
            body["message"],
            "certificatesigningrequests.certificates.k8s.io \"dup\" already exists"
        );
        assert_eq!(
            body["details"],
            json!({"name": "dup", "group": "certificates.k8s.io", "kind": "certificatesigningrequests"})
        );
    })
    .await;
}

#[tokio::test]
async fn names_are_nearly_unrestricted() {
    both(|s| async move {
        let obj = csr("CSR_FOR octopus:2020", SIGNER, &["client auth"], None);
        create_obj(&s, "developer", &obj).await;
        let (code, got) = s
            .get("developer", &named("CSR_FOR%20octopus:2020"))
            .await;
        assert_eq!(code, 200);
        assert_eq!(got["metadata"]["name"], "CSR_FOR octopus:2020");
        let (code, body) = s
            .post(
                "developer",
                CSR_PATH,
                &csr("a%b", SIGNER, &["client auth"], None),
            )
            .await;
        assert_eq!(code, 422);
        assert_eq!(body["message"], "CertificateSigningRequest.certificates.k8s.io \"a%b\" is invalid: metadata.name: Invalid value: \"a%b\": may not contain '%'");
    })
    .await;
}

#[tokio::test]
async fn kube_rs_create_get_list_delete() {
    both(|s| async move {
        let c = s.csrs("developer");
        let labelled = |name: &str| {
            let mut t = typed(name, SIGNER);
            t.metadata.labels = Some([("scope".to_string(), "kcgld".to_string())].into());
            t
        };
        let created = c
            .create(&PostParams::default(), &labelled("kcgld-one"))
            .await;
        s.note("create kcgld-one", outcome(&created));
        assert_eq!(created.unwrap().spec.username.as_deref(), Some("developer"));
        let created = c
            .create(&PostParams::default(), &labelled("kcgld-two"))
            .await;
        s.note("create kcgld-two", outcome(&created));
        let list = c
            .list(&ListParams::default().labels("scope=kcgld"))
            .await
            .unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["kcgld-one", "kcgld-two"]);
        s.note("list", serde_json::to_value(&list.items).unwrap());
        let admin = s.csrs("admin");
        let st = admin
            .delete("kcgld-one", &DeleteParams::default())
            .await
            .unwrap();
        assert!(st.is_right(), "CSR delete returns a Status");
        assert!(admin.get_opt("kcgld-one").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn delete_returns_success_status_with_uid() {
    both(|s| async move {
        let v = create_obj(
            &s,
            "developer",
            &csr("gone", SIGNER, &["client auth"], None),
        )
        .await;
        let (code, body) = s.delete("admin", &named("gone")).await;
        assert_eq!(code, 200);
        assert_eq!(
            body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": "gone", "group": "certificates.k8s.io", "kind": "certificatesigningrequests", "uid": v["metadata"]["uid"]}})
        );
        let (code, body) = s.delete("admin", &named("gone")).await;
        assert_eq!(code, 404);
        assert_eq!(
            body["message"],
            "certificatesigningrequests.certificates.k8s.io \"gone\" not found"
        );
    })
    .await;
}

#[tokio::test]
async fn deletecollection_returns_deleted_items() {
    both(|s| async move {
        for name in ["dc-a", "dc-b"] {
            let obj = with_labels(
                csr(name, SIGNER, &["client auth"], None),
                json!({"scope": "dc"}),
            );
            create_obj(&s, "developer", &obj).await;
        }
        let (code, body) = s
            .delete("admin", &format!("{CSR_PATH}?labelSelector=scope%3Ddc"))
            .await;
        assert_eq!(code, 200);
        assert_eq!(body["kind"], "CertificateSigningRequestList");
        assert_eq!(body["items"].as_array().unwrap().len(), 2);
        let (_, left) = s
            .get("admin", &format!("{CSR_PATH}?labelSelector=scope%3Ddc"))
            .await;
        assert!(left["items"].as_array().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    both(|s| async move {
        let mut obj = csr("fin", SIGNER, &["client auth"], None);
        obj["metadata"]["finalizers"] = json!(["example.com/keep"]);
        create_obj(&s, "admin", &obj).await;
        let (code, body) = s.delete("admin", &named("fin")).await;
        assert_eq!(code, 200);
        assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
        let (code, _) = s
            .patch(
                "admin",
                &named("fin"),
                "application/merge-patch+json",
                &json!({"metadata": {"finalizers": null}}),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(s.get("admin", &named("fin")).await.0, 404);
    })
    .await;
}

// ---------- validation: spec (V-1…V-7) ----------

#[tokio::test]
async fn v1_name_required() {
    both(|s| async move {
        let mut obj = csr("", SIGNER, &["client auth"], None);
        obj["metadata"] = json!({});
        expect_invalid(
            &s,
            obj,
            "metadata.name",
            "metadata.name: Required value: name or generateName is required",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn v2_request_not_pem_rejected() {
    both(|s| async move {
        let mut obj = csr("v2", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(b"--"));
        // A []byte value prints as JSON: the base64 string.
        expect_invalid(
            &s,
            obj,
            "spec.request",
            "spec.request: Invalid value: \"LS0=\": PEM block type must be CERTIFICATE REQUEST",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn v2_request_wrong_pem_type_rejected() {
    both(|s| async move {
        let mut obj = csr("v2b", SIGNER, &["client auth"], None);
        let pem = cert("x", false);
        obj["spec"]["request"] = json!(b64(&pem));
        let body = expect_invalid(
            &s,
            obj,
            "spec.request",
            &format!(
                "spec.request: Invalid value: \"{}\": PEM block type must be CERTIFICATE REQUEST",
                b64(&pem)
            ),
        )
        .await;
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueInvalid");
    })
    .await;
}

/// A CSR whose signature is another key's (ECDSA): it parses, but the self-signature fails.
fn spliced_signature_pem() -> Vec<u8> {
    fixed("spliced-ecdsa", || {
        let a = csr_pem("a");
        let other = openssl::x509::X509Req::from_pem(&csr_pem_with(
            &ec_key(),
            "a",
            &[],
            MessageDigest::sha256(),
        ))
        .unwrap();
        let mut req = openssl::x509::X509Req::from_pem(&a)
            .unwrap()
            .to_der()
            .unwrap();
        let sig_other = other.to_der().unwrap();
        // The signature BIT STRING is the last element; replace the tail bytes with the other CSR's.
        let n = 20.min(req.len()).min(sig_other.len());
        let len = req.len();
        req[len - n..].copy_from_slice(&sig_other[sig_other.len() - n..]);
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            b64(&req)
        )
        .into_bytes()
    })
}

#[tokio::test]
async fn v2_request_bad_signature_rejected() {
    both(|s| async move {
        let mut obj = csr("v2c", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(&spliced_signature_pem()));
        let (code, body) = s.post("admin", CSR_PATH, &obj).await;
        assert_eq!(code, 422, "{body}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.ends_with(": x509: ECDSA verification failure"), "{msg}");
        assert_eq!(body["details"]["causes"][0]["field"], "spec.request");
    })
    .await;
}

#[tokio::test]
async fn v2_request_rsa_bad_signature_rejected() {
    both(|s| async move {
        let pem = fixed("rsa-flipped", || {
            let pem = csr_pem_with(&rsa_key(), "r", &[], MessageDigest::sha256());
            let mut der = openssl::x509::X509Req::from_pem(&pem)
                .unwrap()
                .to_der()
                .unwrap();
            let last = der.len() - 1;
            der[last] ^= 0x01;
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
                b64(&der)
            )
            .into_bytes()
        });
        let mut obj = csr("v2r", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(&pem));
        let (code, body) = s.post("admin", CSR_PATH, &obj).await;
        assert_eq!(code, 422);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .ends_with(": crypto/rsa: verification error"),
            "{body}"
        );
    })
    .await;
}

/// Kept difference: Go parses the CSR with encoding/asn1 and reports its text ("asn1: structure
/// error: …"); the local API says `x509: malformed certificate request`. Compared: status, reason and
/// the cause's field.
#[tokio::test]
async fn v2_request_malformed_der_rejected() {
    both(|s| async move {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQE=\n-----END CERTIFICATE REQUEST-----\n";
        let mut obj = csr("v2d", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(pem.as_bytes()));
        let (code, body) = s.post("admin", CSR_PATH, &obj).await;
        s.relax_last("Go's encoding/asn1 error text is not reproduced");
        assert_eq!(code, 422, "{body}");
        assert_eq!(body["details"]["causes"][0]["field"], "spec.request");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "CertificateSigningRequest.certificates.k8s.io \"v2d\" is invalid: spec.request: Invalid value: \"{}\": ",
                b64(pem.as_bytes())
            )),
            "{msg}"
        );
    })
    .await;
}

#[tokio::test]
async fn v2_sha1_signature_accepted() {
    both(|s| async move {
        let pem = fixed("sha1", || {
            csr_pem_with(&rsa_key(), "s", &[], MessageDigest::sha1())
        });
        let mut obj = csr("sha1", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(&pem));
        create_obj(&s, "developer", &obj).await;
    })
    .await;
}

#[tokio::test]
async fn v2_md5_signature_refused() {
    both(|s| async move {
        let pem = fixed("md5", || {
            csr_pem_with(&rsa_key(), "m", &[], MessageDigest::md5())
        });
        let mut obj = csr("md5", SIGNER, &["client auth"], None);
        obj["spec"]["request"] = json!(b64(&pem));
        let (code, body) = s.post("developer", CSR_PATH, &obj).await;
        assert_eq!(code, 422);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .ends_with(": x509: cannot verify signature: insecure algorithm MD5-RSA"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn v3_usages_required() {
    both(|s| async move {
        let obj = csr("v3", SIGNER, &[], None);
        expect_invalid(&s, obj, "spec.usages", "spec.usages: Required value").await;
    })
    .await;
}

#[tokio::test]
async fn v4_unknown_usage_rejected() {
    both(|s| async move {
        let obj = csr("v4", SIGNER, &["client auth", "foo"], None);
        expect_invalid(&s, obj, "spec.usages[1]", "spec.usages[1]: Unsupported value: \"foo\": supported values: \"any\", \"cert sign\", \"client auth\", \"code signing\", \"content commitment\", \"crl sign\", \"data encipherment\", \"decipher only\", \"digital signature\", \"email protection\", \"encipher only\", \"ipsec end system\", \"ipsec tunnel\", \"ipsec user\", \"key agreement\", \"key encipherment\", \"microsoft sgc\", \"netscape sgc\", \"ocsp signing\", \"s/mime\", \"server auth\", \"signing\", \"timestamping\"").await;
    })
    .await;
}

#[tokio::test]
async fn v5_duplicate_usage_rejected() {
    both(|s| async move {
        let obj = csr(
            "v5",
            SIGNER,
            &["client auth", "digital signature", "client auth"],
            None,
        );
        let body = expect_invalid(
            &s,
            obj,
            "spec.usages[2]",
            "spec.usages[2]: Duplicate value: \"client auth\"",
        )
        .await;
        assert_eq!(
            body["details"]["causes"][0]["reason"],
            "FieldValueDuplicate"
        );
    })
    .await;
}

#[tokio::test]
async fn v6_legacy_signer_rejected() {
    both(|s| async move {
        let obj = csr(
            "v6a",
            "kubernetes.io/legacy-unknown",
            &["client auth"],
            None,
        );
        expect_invalid(&s, obj, "spec.signerName", "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version").await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_required() {
    both(|s| async move {
        let obj = csr("v6b", "", &["client auth"], None);
        expect_invalid(
            &s,
            obj,
            "spec.signerName",
            "spec.signerName: Required value",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_needs_exactly_one_slash() {
    both(|s| async move {
        expect_invalid(&s, csr("v6c", "example.com/a/b", &["client auth"], None), "spec.signerName",
            "spec.signerName: Invalid value: \"example.com/a/b\": must be a fully qualified domain and path of the form 'example.com/signer-name'").await;
        expect_invalid(&s, csr("v6d", "example.com", &["client auth"], None), "spec.signerName",
            "spec.signerName: Invalid value: \"example.com\": must be a fully qualified domain and path of the form 'example.com/signer-name'").await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_domain_label_invalid() {
    both(|s| async move {
        expect_invalid(&s, csr("v6e", "Example.com/x", &["client auth"], None), "spec.signerName",
            "spec.signerName: Invalid value: \"Example.com\": validating label \"Example\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')").await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_domain_needs_two_labels() {
    both(|s| async move {
        expect_invalid(&s, csr("v6f", "example/x", &["client auth"], None), "spec.signerName",
            "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots").await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_path_invalid() {
    both(|s| async move {
        expect_invalid(&s, csr("v6g", "example.com/MTLS", &["client auth"], None), "spec.signerName",
            "spec.signerName: Invalid value: \"MTLS\": validating label \"MTLS\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')").await;
    })
    .await;
}

#[tokio::test]
async fn v6_signer_domain_too_long() {
    both(|s| async move {
        let domain = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        let body = expect_invalid(
            &s,
            csr("v6h", &format!("{domain}/x"), &["client auth"], None),
            "spec.signerName",
            "spec.signerName: Too long: may not be more than 253 bytes",
        )
        .await;
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueTooLong");
    })
    .await;
}

#[tokio::test]
async fn v7_expiration_below_600_rejected() {
    both(|s| async move {
        let obj = csr("svc-a", SIGNER, &["client auth"], Some(599));
        let (code, body) = s.post("developer", CSR_PATH, &obj).await;
        assert_eq!(code, 422);
        // Appendix A.5, byte for byte (modulo key order).
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
             "message":"CertificateSigningRequest.certificates.k8s.io \"svc-a\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)",
             "reason":"Invalid","details":{"name":"svc-a","group":"certificates.k8s.io","kind":"CertificateSigningRequest",
             "causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)","field":"spec.expirationSeconds"}]},
             "code":422})
        );
    })
    .await;
}

#[tokio::test]
async fn v7_negative_expiration_rejected_and_600_accepted() {
    both(|s| async move {
        expect_invalid(&s, csr("neg", SIGNER, &["client auth"], Some(-1)), "spec.expirationSeconds",
            "spec.expirationSeconds: Invalid value: -1: may not specify a duration less than 600 seconds (10 minutes)").await;
        create_obj(
            &s,
            "developer",
            &csr("six", SIGNER, &["client auth"], Some(600)),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn several_errors_are_aggregated_in_order() {
    both(|s| async move {
        let mut obj = csr("multi", "example", &["foo"], Some(10));
        obj["spec"]["request"] = json!(b64(b"x"));
        let (code, body) = s.post("admin", CSR_PATH, &obj).await;
        assert_eq!(code, 422);
        let fields: Vec<&str> = body["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.request",
                "spec.usages[0]",
                "spec.signerName",
                "spec.expirationSeconds"
            ]
        );
        let msg = body["message"].as_str().unwrap();
        assert!(msg.starts_with("CertificateSigningRequest.certificates.k8s.io \"multi\" is invalid: [spec.request: Invalid value: \"eA==\": PEM block type must be CERTIFICATE REQUEST, spec.usages[0]: Unsupported value: \"foo\""), "{msg}");
        assert!(msg.ends_with("spec.expirationSeconds: Invalid value: 10: may not specify a duration less than 600 seconds (10 minutes)]"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn wrong_json_type_is_bad_request() {
    both(|s| async move {
        let mut obj = csr("types", SIGNER, &["client auth"], None);
        obj["spec"]["expirationSeconds"] = json!("3600");
        let (code, body) = s.post("developer", CSR_PATH, &obj).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["reason"], "BadRequest");
    })
    .await;
}

// ---------- conditions (C-1…C-8) and subresources (3.D) ----------

async fn approval_put(s: &Srv, user: &str, name: &str, conds: Value) -> (u16, Value) {
    let (_, mut cur) = s.get("admin", &named(name)).await;
    cur["status"]["conditions"] = conds;
    s.put(user, &format!("{}/approval", named(name)), &cur)
        .await
}

async fn status_put(s: &Srv, user: &str, name: &str, f: impl FnOnce(&mut Value)) -> (u16, Value) {
    let (_, mut cur) = s.get("admin", &named(name)).await;
    f(&mut cur);
    s.put(user, &format!("{}/status", named(name)), &cur).await
}

fn assert_422(code: u16, body: &Value, name: &str, msg: &str) {
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        format!("CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: {msg}"),
        "{body}"
    );
}

#[tokio::test]
async fn c1_condition_type_required() {
    both(|s| async move {
        create(&s, "developer", "c1").await;
        let (code, body) =
            approval_put(&s, "admin", "c1", json!([{"type": "", "status": "True"}])).await;
        assert_422(
            code,
            &body,
            "c1",
            "status.conditions[0].type: Required value",
        );
    })
    .await;
}

#[tokio::test]
async fn c2_condition_status_required() {
    both(|s| async move {
        create(&s, "developer", "c2").await;
        let (code, body) = approval_put(
            &s,
            "admin",
            "c2",
            json!([{"type": "Approved", "reason": "R"}]),
        )
        .await;
        assert_422(
            code,
            &body,
            "c2",
            "status.conditions[0].status: Required value",
        );
    })
    .await;
}

#[tokio::test]
async fn c3_approved_allows_only_true() {
    both(|s| async move {
        create(&s, "developer", "c3").await;
        let (code, body) = approval_put(
            &s,
            "admin",
            "c3",
            json!([{"type": "Approved", "status": "False"}]),
        )
        .await;
        assert_422(
            code,
            &body,
            "c3",
            "status.conditions[0].status: Unsupported value: \"False\": supported values: \"True\"",
        );
        assert_eq!(
            body["details"]["causes"][0]["reason"],
            "FieldValueNotSupported"
        );
    })
    .await;
}

#[tokio::test]
async fn c4_custom_condition_status_values() {
    both(|s| async move {
        create(&s, "developer", "c4").await;
        let (code, body) = approval_put(
            &s,
            "admin",
            "c4",
            json!([{"type": "Custom", "status": "Maybe"}]),
        )
        .await;
        assert_422(code, &body, "c4", "status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"");
        let (code, body) = approval_put(
            &s,
            "admin",
            "c4",
            json!([{"type": "Custom", "status": "Unknown"}]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn c5_approved_and_denied_exclusive() {
    both(|s| async move {
        create(&s, "developer", "c5").await;
        let (code, body) = approval_put(
            &s,
            "admin",
            "c5",
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
        )
        .await;
        // 1.37: the declarative zeroOrOneOf union replaces the handwritten message.
        assert_422(
            code,
            &body,
            "c5",
            r#"status.conditions: Invalid value: "{conditions[{\"type\": \"Approved\"}], conditions[{\"type\": \"Denied\"}]}": must specify at most one of: `conditions[{"type": "Approved"}]`, `conditions[{"type": "Denied"}]`"#,
        );
    })
    .await;
}

#[tokio::test]
async fn c6_duplicate_condition_type() {
    both(|s| async move {
        create(&s, "developer", "c6").await;
        let (code, body) = approval_put(
            &s,
            "admin",
            "c6",
            json!([{"type": "Failed", "status": "True"}, {"type": "Failed", "status": "True"}]),
        )
        .await;
        assert_422(
            code,
            &body,
            "c6",
            "status.conditions[1].type: Duplicate value: \"Failed\"",
        );
    })
    .await;
}

#[tokio::test]
async fn c7_removing_failed_forbidden() {
    both(|s| async move {
        create(&s, "developer", "c7").await;
        let (code, _) = status_put(&s, "admin", "c7", |v| {
            v["status"]["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": "no"}]);
        })
        .await;
        assert_eq!(code, 200);
        let (code, body) = status_put(&s, "admin", "c7", |v| {
            v["status"]["conditions"] = json!([])
        })
        .await;
        assert_422(
            code,
            &body,
            "c7",
            "status.conditions: Forbidden: updates may not remove a condition of type \"Failed\"",
        );
        // Appendix A.4: a second Failed is a duplicate.
        let (code, body) = status_put(&s, "admin", "c7", |v| {
            v["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "Failed", "status": "True"}));
        })
        .await;
        assert_422(
            code,
            &body,
            "c7",
            "status.conditions[1].type: Duplicate value: \"Failed\"",
        );
    })
    .await;
}

#[tokio::test]
async fn c7_removing_approved_via_approval_forbidden() {
    both(|s| async move {
        create(&s, "developer", "c7b").await;
        let (code, _) = approval_put(
            &s,
            "admin",
            "c7b",
            json!([{"type": "Approved", "status": "True"}]),
        )
        .await;
        assert_eq!(code, 200);
        let (code, body) = approval_put(&s, "admin", "c7b", json!([])).await;
        assert_422(
            code,
            &body,
            "c7b",
            "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\"",
        );
    })
    .await;
}

#[tokio::test]
async fn c8_adding_approved_via_status_forbidden() {
    both(|s| async move {
        create(&s, "developer", "c8").await;
        let (code, body) = status_put(&s, "admin", "c8", |v| {
            v["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}])
        })
        .await;
        assert_422(
            code,
            &body,
            "c8",
            "status.conditions: Forbidden: updates may not add a condition of type \"Approved\"",
        );
    })
    .await;
}

#[tokio::test]
async fn status_reverts_edits_of_existing_approved() {
    both(|s| async move {
        create(&s, "developer", "rev").await;
        let (_, approved) = approval_put(
            &s,
            "admin",
            "rev",
            json!([{"type": "Approved", "status": "True", "reason": "Ok", "message": "fine"}]),
        )
        .await;
        let (code, body) = status_put(&s, "admin", "rev", |v| {
            v["status"]["conditions"][0]["message"] = json!("edited");
            v["metadata"]["labels"] = json!({"persisted": "yes"});
        })
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["status"]["conditions"], approved["status"]["conditions"],
            "Approved edit silently reverted"
        );
        assert_eq!(
            body["metadata"]["labels"]["persisted"], "yes",
            "metadata via /status persists (3.D.4)"
        );
    })
    .await;
}

#[tokio::test]
async fn approval_fills_timestamps_and_bumps_rv() {
    both(|s| async move {
        let c = create(&s, "developer", "ts").await;
        let rv0: u64 = c["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (code, body) = approval_put(
            &s,
            "approver",
            "ts",
            json!([{"type": "Approved", "status": "True", "reason": "AutoApproved"}]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        let cond = &body["status"]["conditions"][0];
        assert!(
            cond["lastUpdateTime"].is_string() && cond["lastTransitionTime"].is_string(),
            "{cond}"
        );
        let rv1: u64 = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv1 > rv0);
    })
    .await;
}

#[tokio::test]
async fn approval_ignores_certificate_and_main_ignores_status() {
    both(|s| async move {
        create(&s, "developer", "ign").await;
        let cert = b64(&cert("leaf", false));
        let (_, mut cur) = s.get("admin", &named("ign")).await;
        cur["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": cert});
        let (code, body) = s
            .put("admin", &format!("{}/approval", named("ign")), &cur)
            .await;
        assert_eq!(code, 200, "{body}");
        assert!(
            body["status"]["certificate"].is_null(),
            "certificate via /approval ignored"
        );
        // Main resource: spec and status changes dropped, labels applied.
        let (_, mut cur) = s.get("admin", &named("ign")).await;
        cur["spec"]["signerName"] = json!("other.com/x");
        cur["status"]["certificate"] = json!(cert);
        cur["metadata"]["labels"] = json!({"a": "b"});
        let (code, body) = s.put("admin", &named("ign"), &cur).await;
        assert_eq!(code, 200);
        assert_eq!(body["spec"]["signerName"], SIGNER);
        assert!(body["status"]["certificate"].is_null());
        assert_eq!(body["metadata"]["labels"]["a"], "b");
    })
    .await;
}

#[tokio::test]
async fn kube_rs_patch_approval_and_status() {
    both(|s| async move {
        create(&s, "developer", "kp").await;
        let approver = s.csrs("approver");
        let patch = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "ByTest", "message": "ok"}]}});
        let got = approver
            .patch_approval("kp", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        s.note("patch_approval", outcome(&got));
        let conds = got.unwrap().status.unwrap().conditions.unwrap();
        assert_eq!(conds[0].type_, "Approved");
        let signer = s.csrs(SIGNER_USER);
        let cert = cert("kp", false);
        let patch = json!({"status": {"certificate": b64(&cert)}});
        let got = signer
            .patch_status("kp", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        s.note("patch_status", outcome(&got));
        let got = got.unwrap();
        assert_eq!(
            got.status.as_ref().unwrap().certificate.as_ref().unwrap().0,
            cert
        );
        assert_eq!(
            got.status.unwrap().conditions.unwrap().len(),
            1,
            "Approved survives a status merge patch of the certificate"
        );
    })
    .await;
}

#[tokio::test]
async fn strategic_merge_replaces_condition_list() {
    both(|s| async move {
        create(&s, "developer", "smp").await;
        let p = PatchParams::default();
        let c = s.csrs("admin");
        let got = c
            .patch_status(
                "smp",
                &p,
                &Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Custom", "status": "True"}]}}),
                ),
            )
            .await;
        s.note("merge", outcome(&got));
        // SMP with a different list: the whole list is replaced, so Custom is gone (no merge key).
        let got = c
            .patch_status(
                "smp",
                &p,
                &Patch::Strategic(
                    json!({"status": {"conditions": [{"type": "Other", "status": "False"}]}}),
                ),
            )
            .await;
        s.note("strategic", outcome(&got));
        let types: Vec<String> = got
            .unwrap()
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(types, vec!["Other"]);
    })
    .await;
}

#[tokio::test]
async fn json_patch_appends_failed_condition() {
    both(|s| async move {
        create(&s, "developer", "jp").await;
        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/status/conditions", "value": [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}]}
        ])).unwrap();
        let got = s
            .csrs(SIGNER_USER)
            .patch_status("jp", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await;
        s.note("json patch", outcome(&got));
        assert_eq!(got.unwrap().status.unwrap().conditions.unwrap()[0].type_, "Failed");
    })
    .await;
}

#[tokio::test]
async fn typed_conditions_roundtrip() {
    both(|s| async move {
        create(&s, "developer", "typed").await;
        let c = s.csrs("admin");
        let mut cur = c.get("typed").await.unwrap();
        cur.status.get_or_insert_with(Default::default).conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("Typed".into()),
                ..Default::default()
            }]);
        let got = c
            .replace_subresource("approval", "typed", &PostParams::default(), &cur)
            .await;
        s.note("replace approval", outcome(&got));
        let got: CertificateSigningRequest = got.unwrap();
        assert_eq!(
            got.status.unwrap().conditions.unwrap()[0].reason.as_deref(),
            Some("Typed")
        );
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_of_failed_does_not_conflict_with_approval() {
    // Conditions are keyed by type: the signer applying Failed does not touch the approver's
    // Approved item, so there is no conflict (as with kube-apiserver's listType=map).
    both(|s| async move {
        create(&s, "developer", "ssa").await;
        let got = s
            .csrs("approver")
            .patch_approval(
                "ssa",
                &PatchParams {
                    field_manager: Some("approver-tool".into()),
                    ..Default::default()
                },
                &Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
                ),
            )
            .await;
        s.note("approve", outcome(&got));
        got.unwrap();
        let apply = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": "no"}]}});
        let got = s
            .csrs(SIGNER_USER)
            .patch_status(
                "ssa",
                &PatchParams::apply("csr-signer"),
                &Patch::Apply(&apply),
            )
            .await;
        s.note("apply Failed", outcome(&got));
        let types: Vec<String> = got
            .unwrap()
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(types, vec!["Approved", "Failed"]);
        // Neither write was tracked: a CSR created with nothing but spec has no managed fields, and
        // updates of such an object are not tracked until its first apply; the signer's apply
        // through /status owned nothing either (status.conditions is reset on that path).
        // The first apply through /approval attributes the existing conditions to
        // "before-first-apply", so changing a field of Approved conflicts with that manager.
        let steal = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "status": {"conditions": [{"type": "Approved", "status": "True", "lastUpdateTime": "2020-01-01T00:00:00Z"}]}});
        let got = s
            .csrs("admin")
            .patch_approval("ssa", &PatchParams::apply("other"), &Patch::Apply(&steal))
            .await;
        s.note("apply conflicting Approved", outcome(&got));
        let (code, _, msg) = api_err(got.unwrap_err());
        assert_eq!(code, 409);
        assert_eq!(msg, "Apply failed with 1 conflict: conflict with \"before-first-apply\" with subresource \"approval\" using certificates.k8s.io/v1: .status.conditions[type=\"Approved\"].lastUpdateTime");
    })
    .await;
}

// ---------- certificate (K-1…K-8) ----------

async fn put_cert(s: &Srv, name: &str, cert: &[u8]) -> (u16, Value) {
    status_put(s, "admin", name, |v| {
        v["status"]["certificate"] = json!(b64(cert))
    })
    .await
}

#[tokio::test]
async fn k1_only_certificate_blocks() {
    both(|s| async move {
        create(&s, "developer", "k1").await;
        let mut pem = cert("a", false);
        pem.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let (code, body) = put_cert(&s, "k1", &pem).await;
        assert_422(code, &body, "k1", "status.certificate: Invalid value: \"<certificate data>\": only CERTIFICATE PEM blocks are allowed, found \"PRIVATE KEY\"");
    })
    .await;
}

#[tokio::test]
async fn k2_no_pem_headers() {
    both(|s| async move {
        create(&s, "developer", "k2").await;
        let pem = String::from_utf8(cert("a", false)).unwrap().replacen(
            "-----\n",
            "-----\nProc-Type: 4,ENCRYPTED\n\n",
            1,
        );
        let (code, body) = put_cert(&s, "k2", pem.as_bytes()).await;
        assert_422(code, &body, "k2", "status.certificate: Invalid value: \"<certificate data>\": no PEM block headers are permitted");
    })
    .await;
}

#[tokio::test]
async fn k3_needs_a_pem_block() {
    both(|s| async move {
        create(&s, "developer", "k3").await;
        let (code, body) = put_cert(&s, "k3", b"not pem").await;
        assert_422(code, &body, "k3", "status.certificate: Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block");
    })
    .await;
}

#[tokio::test]
async fn k4_empty_certificate_block() {
    both(|s| async move {
        create(&s, "developer", "k4").await;
        let (code, body) = put_cert(
            &s,
            "k4",
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .await;
        assert_422(code, &body, "k4", "status.certificate: Invalid value: \"<certificate data>\": found CERTIFICATE PEM block containing 0 certificates");
    })
    .await;
}

#[tokio::test]
async fn k5_malformed_der_and_multi_cert_block() {
    both(|s| async move {
        create(&s, "developer", "k5").await;
        let (code, body) = put_cert(
            &s,
            "k5",
            b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        )
        .await;
        assert_422(
            code,
            &body,
            "k5",
            "status.certificate: Invalid value: \"<certificate data>\": x509: malformed tbs certificate",
        );
        // Two DER certificates in one PEM block are legal.
        let a = openssl::x509::X509::from_pem(&cert("a", false))
            .unwrap()
            .to_der()
            .unwrap();
        let b = openssl::x509::X509::from_pem(&cert("b", true))
            .unwrap()
            .to_der()
            .unwrap();
        let both = [a, b].concat();
        let pem = format!(
            "junk before\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\ntrailing",
            b64(&both)
        );
        let (code, body) = put_cert(&s, "k5", pem.as_bytes()).await;
        assert_eq!(code, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn k7_certificate_write_once() {
    both(|s| async move {
        create(&s, "developer", "k7").await;
        let first = cert("a", false);
        let (code, body) = put_cert(&s, "k7", &first).await;
        assert_eq!(code, 200);
        let rv = body["metadata"]["resourceVersion"].clone();
        let local_rv = s.local.as_ref().map(|api| api.resource_version());
        let (code, body) = put_cert(&s, "k7", &first).await;
        assert_eq!(code, 200, "identical bytes may be written again");
        assert_eq!(
            body["metadata"]["resourceVersion"], rv,
            "no-op write does not bump the resourceVersion"
        );
        assert_eq!(s.local.as_ref().map(|api| api.resource_version()), local_rv);
        let (code, body) = put_cert(&s, "k7", &cert("b", false)).await;
        assert_422(
            code,
            &body,
            "k7",
            "status.certificate: Forbidden: updates may not modify existing certificate content",
        );
        let (code, body) = status_put(&s, "admin", "k7", |v| {
            v["status"].as_object_mut().unwrap().remove("certificate");
        })
        .await;
        assert_422(
            code,
            &body,
            "k7",
            "status.certificate: Forbidden: updates may not modify existing certificate content",
        );
    })
    .await;
}

#[tokio::test]
async fn k8_certificate_on_pending_or_denied_accepted() {
    both(|s| async move {
        create(&s, "developer", "k8").await;
        approval_put(
            &s,
            "admin",
            "k8",
            json!([{"type": "Denied", "status": "True"}]),
        )
        .await;
        let (code, body) = put_cert(&s, "k8", &cert("unrelated", false)).await;
        assert_eq!(
            code, 200,
            "the API does not check approval or key match: {body}"
        );
    })
    .await;
}

// ---------- resourceVersion (3.E) ----------

#[tokio::test]
async fn stale_update_conflicts() {
    both(|s| async move {
        let c = s.csrs("admin");
        let old: CertificateSigningRequest =
            serde_json::from_value(create(&s, "developer", "rv").await).unwrap();
        let mut fresh = old.clone();
        fresh.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
        let got = c.replace("rv", &PostParams::default(), &fresh).await;
        s.note("replace", outcome(&got));
        got.unwrap();
        let mut stale = old.clone();
        stale.metadata.labels = Some([("a".to_string(), "2".to_string())].into());
        let got = c.replace("rv", &PostParams::default(), &stale).await;
        s.note("stale replace", outcome(&got));
        let (code, reason, msg) = api_err(got.unwrap_err());
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        assert_eq!(msg, "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io \"rv\": the object has been modified; please apply your changes to the latest version and try again");
        // Stale status write conflicts too.
        let mut st = old.clone();
        st.status = Some(Default::default());
        st.status.as_mut().unwrap().certificate =
            Some(k8s_openapi::ByteString(cert("x", false)));
        let got = c.replace_status("rv", &PostParams::default(), &st).await;
        s.note("stale replace_status", outcome(&got));
        let (code, _, _) = api_err(got.unwrap_err());
        assert_eq!(code, 409);
    })
    .await;
}

#[tokio::test]
async fn put_without_resource_version_is_unconditional() {
    both(|s| async move {
        create(&s, "developer", "uncond").await;
        let (_, mut cur) = s.get("admin", &named("uncond")).await;
        cur["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        cur["metadata"]["labels"] = json!({"x": "y"});
        let (code, body) = s.put("admin", &named("uncond"), &cur).await;
        assert_eq!(code, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn patch_with_stale_resource_version_conflicts() {
    both(|s| async move {
        create(&s, "developer", "prv").await;
        let p = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}});
        let (code, body) = s
            .patch("admin", &named("prv"), "application/merge-patch+json", &p)
            .await;
        assert_eq!(code, 409, "{body}");
        let p = json!({"metadata": {"labels": {"a": "b"}}});
        let (code, _) = s
            .patch("admin", &named("prv"), "application/merge-patch+json", &p)
            .await;
        assert_eq!(code, 200);
    })
    .await;
}

#[tokio::test]
async fn put_name_mismatch_is_bad_request() {
    both(|s| async move {
        create(&s, "developer", "nm").await;
        let (_, mut cur) = s.get("admin", &named("nm")).await;
        cur["metadata"]["name"] = json!("other");
        let (code, body) = s.put("admin", &named("nm"), &cur).await;
        assert_eq!(code, 400);
        assert_eq!(
            body["message"],
            "the name of the object (other) does not match the name on the URL (nm)"
        );
    })
    .await;
}

/// Local API only: the real server never stores a CSR whose request does not verify, so this state
/// cannot be reached there; the rule (3.D.7) is the same validation the create tests compare.
#[tokio::test]
async fn update_re_verifies_request_signature() {
    // A stored object whose request no longer verifies fails every update (3.D.7). Seed one
    // through a state file, since the API itself would never store it.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let pem = csr_pem("seeded");
    let mut der = openssl::x509::X509Req::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let bad = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64(&der)
    );
    let obj = json!({"kind": "CertificateSigningRequest", "apiVersion": "certificates.k8s.io/v1",
        "metadata": {"name": "seeded", "uid": "u-1", "resourceVersion": "5", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"request": b64(bad.as_bytes()), "signerName": SIGNER, "usages": ["client auth"], "username": "x"},
        "status": {}});
    std::fs::write(&state, serde_json::to_vec(&json!({"resourceVersion": 5, "objects": [{"key": "certificates.k8s.io/certificatesigningrequests", "object": obj}]})).unwrap()).unwrap();
    let api = csr_signer::dev::start(csr_signer::dev::LocalApiConfig {
        state_file: Some(state),
        ..csr_signer::dev::LocalApiConfig::plain_http()
    })
    .await
    .unwrap();
    let (_, mut cur) = get_json(&api, "admin", &named("seeded")).await;
    cur["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
    let (code, body) = put_json(
        &api,
        "admin",
        &format!("{}/approval", named("seeded")),
        &cur,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spec.request: Invalid value: \"LS0tLS1CRUdJTi"),
        "{body}"
    );
    // Labels-only writes through the main resource fail too.
    let (code, _) = patch_json(
        &api,
        "admin",
        &named("seeded"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(code, 422);
}

// ---------- admission and RBAC (3.F) ----------

#[tokio::test]
async fn no_token_is_anonymous_and_unknown_token_unauthorized() {
    both(|s| async move {
        // No credentials: the anonymous user, who may see only health and version endpoints.
        let (code, body) = s.raw(None, "GET", CSR_PATH, None).await;
        assert_eq!(code, 403);
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:anonymous\" cannot list resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope",
                   "reason":"Forbidden","details":{"group":"certificates.k8s.io","kind":"certificatesigningrequests"},"code":403})
        );
        let (code, body) = s.raw(None, "GET", "/apis", None).await;
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "forbidden: User \"system:anonymous\" cannot get path \"/apis\""
        );
        let (code, v) = s.raw(None, "GET", "/version", None).await;
        assert_eq!(code, 200);
        assert_eq!((&v["major"], &v["minor"]), (&json!("1"), &json!("37")));
        // The build's identity is the local API's own, not kube-apiserver v1.37.2's.
        s.mask_last(&["/gitVersion", "/gitCommit", "/buildDate", "/goVersion"]);
        assert_eq!(s.raw(None, "GET", "/healthz", None).await.0, 200);
        // A token nobody issued: 401 everywhere, even where anonymous requests are allowed.
        for path in [CSR_PATH, "/version", "/healthz"] {
            let (code, body) = s.raw_with_token("no-such-token", "GET", path).await;
            assert_eq!(code, 401, "{path}");
            assert_eq!(
                body,
                json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
            );
        }
    })
    .await;
}

#[tokio::test]
async fn rbac_forbidden_messages() {
    both(|s| async move {
        let (code, body) = s
            .get("approver", "/api/v1/namespaces/default/configmaps")
            .await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "configmaps is forbidden: User \"approver\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\"");
        create(&s, "developer", "fb").await;
        let (_, cur) = s.get("admin", &named("fb")).await;
        let (code, body) = s
            .put("developer", &format!("{}/status", named("fb")), &cur)
            .await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"fb\" is forbidden: User \"developer\" cannot update resource \"certificatesigningrequests/status\" in API group \"certificates.k8s.io\" at the cluster scope");
        assert_eq!(
            body["details"],
            json!({"name": "fb", "group": "certificates.k8s.io", "kind": "certificatesigningrequests"})
        );
        let (code, body) = s
            .post(
                "approver",
                CSR_PATH,
                &csr("x", SIGNER, &["client auth"], None),
            )
            .await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io is forbidden: User \"approver\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope");
    })
    .await;
}

#[tokio::test]
async fn approve_requires_signer_permission() {
    both(|s| async move {
        create_obj(
            &s,
            "developer",
            &csr("apr", "other.io/x", &["client auth"], None),
        )
        .await;
        let (code, body) = approval_put(
            &s,
            "approver",
            "apr",
            json!([{"type": "Approved", "status": "True"}]),
        )
        .await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"apr\" is forbidden: user not permitted to approve requests with signerName \"other.io/x\"");
        // The approver holds approve on example.com/*: any example.com signer works (3.F.1 b).
        create_obj(
            &s,
            "developer",
            &csr("apr2", "example.com/anything", &["client auth"], None),
        )
        .await;
        let (code, _) = approval_put(
            &s,
            "approver",
            "apr2",
            json!([{"type": "Approved", "status": "True"}]),
        )
        .await;
        assert_eq!(code, 200);
    })
    .await;
}

#[tokio::test]
async fn sign_requires_signer_permission() {
    both(|s| async move {
        create_obj(
            &s,
            "developer",
            &csr("sg", "example.com/other", &["client auth"], None),
        )
        .await;
        let status = format!("{}/status", named("sg"));
        let (_, mut cur) = s.get("admin", &named("sg")).await;
        cur["status"]["certificate"] = json!(b64(&cert("x", false)));
        let (code, body) = s.put(SIGNER_USER, &status, &cur).await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"sg\" is forbidden: user not permitted to sign requests with signerName \"example.com/other\"");
        // Adding Failed is a condition change: needs sign too (3.F.3).
        let (_, mut cur) = s.get("admin", &named("sg")).await;
        cur["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
        let (code, _) = s.put(SIGNER_USER, &status, &cur).await;
        assert_eq!(code, 403);
        // A labels-only /status write needs no sign.
        let (_, mut cur) = s.get("admin", &named("sg")).await;
        cur["metadata"]["labels"] = json!({"seen": "1"});
        let (code, body) = s.put(SIGNER_USER, &status, &cur).await;
        assert_eq!(code, 200, "{body}");
        // Its own signer works.
        create(&s, "developer", "mine").await;
        let (_, mut cur) = s.get("admin", &named("mine")).await;
        cur["status"]["certificate"] = json!(b64(&cert("x", false)));
        let (code, _) = s
            .put(SIGNER_USER, &format!("{}/status", named("mine")), &cur)
            .await;
        assert_eq!(code, 200);
    })
    .await;
}

#[tokio::test]
async fn invalid_beats_forbidden() {
    // 422 before 403 (3.E.1): an invalid certificate from someone without sign.
    both(|s| async move {
        create_obj(
            &s,
            "developer",
            &csr("ord", "other.io/x", &["client auth"], None),
        )
        .await;
        let (_, mut cur) = s.get("admin", &named("ord")).await;
        cur["status"]["certificate"] = json!(b64(b"junk"));
        let (code, _) = s
            .put(SIGNER_USER, &format!("{}/status", named("ord")), &cur)
            .await;
        assert_eq!(code, 422);
    })
    .await;
}

#[tokio::test]
async fn subject_restriction_for_kube_apiserver_client() {
    both(|s| async move {
        let mut obj = csr(
            "masters",
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            None,
        );
        let pem = fixed("masters", || {
            csr_pem_with(&ec_key(), "evil", &["system:masters"], MessageDigest::sha256())
        });
        obj["spec"]["request"] = json!(b64(&pem));
        let (code, body) = s.post("developer", CSR_PATH, &obj).await;
        assert_eq!(code, 403);
        assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"masters\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed");
    })
    .await;
}

/// The user `alice` of `custom_users_with_rules`: a ServiceAccount (the real server's users come from a
/// fixed token file, but ServiceAccount tokens can be made at any time) allowed to get one CSR by name.
const ALICE: &str = "system:serviceaccount:default:csr-alice";

async fn add_alice(s: &Srv) {
    use csr_signer::dev::{Rule, User};
    let rule = Rule::new(
        &["certificates.k8s.io"],
        &["certificatesigningrequests"],
        &["get"],
    )
    .names(&["only-this"]);
    if let Some(api) = &s.local {
        api.add_user(User::service_account("default", "csr-alice").with_rule(rule));
        return;
    }
    let admin = s.client("admin");
    let subject = json!([{"kind": "ServiceAccount", "name": "csr-alice", "namespace": "default"}]);
    for o in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "csr-alice", "namespace": "default"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "csr-alice"},
               "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                          "verbs": ["get"], "resourceNames": ["only-this"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "csr-alice"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "csr-alice"},
               "subjects": subject}),
    ] {
        kube_support::apply(&admin, o).await;
    }
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin, "default");
    let tr = sas
        .create_token_request("csr-alice", &PostParams::default(), &Default::default())
        .await
        .unwrap();
    s.add_token(ALICE, &tr.status.unwrap().token.unwrap());
    wait_allowed(s, ALICE, "get", "certificatesigningrequests", "only-this").await;
}

#[tokio::test]
async fn custom_users_with_rules() {
    both(|s| async move {
        add_alice(&s).await;
        create(&s, "developer", "only-this").await;
        create(&s, "developer", "not-this").await;
        assert_eq!(s.get(ALICE, &named("only-this")).await.0, 200);
        assert_eq!(s.get(ALICE, &named("not-this")).await.0, 403);
        assert_eq!(
            s.get(ALICE, CSR_PATH).await.0,
            403,
            "resourceNames never match a list"
        );
    })
    .await;
}

// ---------- list and selectors (3.G) ----------

#[tokio::test]
async fn list_with_field_selector_and_paging() {
    both(|s| async move {
        let scope = json!({"scope": "fsp"});
        for (name, signer) in [("f1", SIGNER), ("f2", SIGNER), ("f3", "other.io/x")] {
            let obj = with_labels(csr(name, signer, &["client auth"], None), scope.clone());
            create_obj(&s, "developer", &obj).await;
        }
        let c = s.csrs("developer");
        let lp = ListParams::default()
            .labels("scope=fsp")
            .fields(&format!("spec.signerName={SIGNER}"));
        let names: Vec<String> = c
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.metadata.name.unwrap())
            .collect();
        assert_eq!(names, vec!["f1", "f2"]);
        let lp = ListParams::default()
            .labels("scope=fsp")
            .fields("metadata.name!=f1,spec.signerName!=other.io/x");
        let names: Vec<String> = c
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.metadata.name.unwrap())
            .collect();
        assert_eq!(names, vec!["f2"]);
        let (code, page) = s
            .get(
                "developer",
                &format!("{CSR_PATH}?labelSelector=scope%3Dfsp&limit=2"),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(names_of(&page), vec!["f1", "f2"]);
        let token = page["metadata"]["continue"].as_str().unwrap().to_string();
        let (code, rest) = s
            .get(
                "developer",
                &format!("{CSR_PATH}?labelSelector=scope%3Dfsp&limit=2&continue={token}"),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(names_of(&rest), vec!["f3"]);
    })
    .await;
}

#[tokio::test]
async fn unsupported_field_selector_is_bad_request() {
    both(|s| async move {
        let (code, body) = s
            .get(
                "developer",
                &format!("{CSR_PATH}?fieldSelector=spec.foo%3Dbar"),
            )
            .await;
        assert_eq!(code, 400);
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"field label not supported: spec.foo","reason":"BadRequest","code":400})
        );
    })
    .await;
}

#[tokio::test]
async fn label_selector_filters() {
    both(|s| async move {
        let l1 = with_labels(
            csr("l1", SIGNER, &["client auth"], None),
            json!({"scope": "lsf", "team": "a"}),
        );
        create_obj(&s, "developer", &l1).await;
        let l2 = with_labels(
            csr("l2", SIGNER, &["client auth"], None),
            json!({"scope": "lsf"}),
        );
        create_obj(&s, "developer", &l2).await;
        let (_, got) = s
            .get(
                "developer",
                &format!("{CSR_PATH}?labelSelector=scope%3Dlsf,team%20in%20(a,b)"),
            )
            .await;
        assert_eq!(names_of(&got), vec!["l1"]);
        let (_, got) = s
            .get(
                "developer",
                &format!("{CSR_PATH}?labelSelector=scope%3Dlsf,!team"),
            )
            .await;
        assert_eq!(names_of(&got), vec!["l2"]);
    })
    .await;
}

#[tokio::test]
async fn list_items_have_no_kind_and_list_has_rv() {
    both(|s| async move {
        let obj = with_labels(
            csr("lk", SIGNER, &["client auth"], None),
            json!({"scope": "lk"}),
        );
        create_obj(&s, "developer", &obj).await;
        let (_, body) = s
            .get("developer", &format!("{CSR_PATH}?labelSelector=scope%3Dlk"))
            .await;
        assert_eq!(body["kind"], "CertificateSigningRequestList");
        assert!(body["metadata"]["resourceVersion"].is_string());
        assert!(body["items"][0]["kind"].is_null());
    })
    .await;
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn table_output_columns() {
    both(|s| async move {
        let obj = with_labels(
            csr("tb", SIGNER, &["client auth"], Some(86400)),
            json!({"scope": "tb"}),
        );
        create_obj(&s, "developer", &obj).await;
        let (code, _, t) = s
            .raw_h(
                Some("developer"),
                "GET",
                &format!("{CSR_PATH}?labelSelector=scope%3Dtb"),
                &[("accept", TABLE)],
                None,
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(t["kind"], "Table");
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            vec![
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "tb");
        assert_eq!(cells[2], SIGNER);
        assert_eq!(cells[3], "developer");
        assert_eq!(cells[4], "24h");
        assert_eq!(cells[5], "Pending");
    })
    .await;
}

#[tokio::test]
async fn condition_summary_in_table() {
    both(|s| async move {
        create(&s, "developer", "cs").await;
        approval_put(
            &s,
            "admin",
            "cs",
            json!([{"type": "Approved", "status": "True"}]),
        )
        .await;
        put_cert(&s, "cs", &cert("x", false)).await;
        status_put(&s, "admin", "cs", |v| {
            v["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "Failed", "status": "True"}))
        })
        .await;
        let (_, _, t) = s
            .raw_h(
                Some("admin"),
                "GET",
                &named("cs"),
                &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
                None,
            )
            .await;
        assert_eq!(t["rows"][0]["cells"][5], "Approved,Failed,Issued");
    })
    .await;
}

// ---------- dry run ----------

#[tokio::test]
async fn dry_run_persists_nothing() {
    both(|s| async move {
        let (code, body) = s
            .post(
                "developer",
                &format!("{CSR_PATH}?dryRun=All"),
                &csr("dry", SIGNER, &["client auth"], None),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["spec"]["username"], "developer");
        assert_eq!(s.get("admin", &named("dry")).await.0, 404);
        let wet = create(&s, "developer", "wet").await;
        let local_rv = s.local.as_ref().map(|api| api.resource_version());
        let (code, body) = s
            .patch(
                "admin",
                &format!("{}?dryRun=All", named("wet")),
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"a": "b"}}}),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(body["metadata"]["labels"]["a"], "b");
        let (code, _) = s
            .delete("admin", &format!("{}?dryRun=All", named("wet")))
            .await;
        assert_eq!(code, 200);
        assert_eq!(
            s.local.as_ref().map(|api| api.resource_version()),
            local_rv,
            "nothing written"
        );
        let (_, stored) = s.get("admin", &named("wet")).await;
        assert_eq!(
            stored["metadata"]["resourceVersion"],
            wet["metadata"]["resourceVersion"]
        );
        assert!(stored["metadata"]["labels"].is_null());
    })
    .await;
}
