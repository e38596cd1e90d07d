//! CertificateSigningRequest semantics of the local API, driven by kube-rs and raw HTTP:
//! create, subresources (§3.D), validation rules (§3.C, one test per rule), RV conflicts (§3.E),
//! admission and RBAC (§3.F), errors (§3.H), delete (§3.I).
#![allow(clippy::unwrap_used)]

mod local_api_common;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use local_api_common::*;
use openssl::hash::MessageDigest;
use serde_json::{json, Value};

fn named(name: &str) -> String {
    format!("{CSR_PATH}/{name}")
}

async fn expect_invalid(obj: Value, field: &str, message: &str) -> Value {
    let api = plain().await;
    let (code, body) = post_json(&api, "admin", CSR_PATH, &obj).await;
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
    let api = plain().await;
    let mut obj = csr_json(
        "svc-a",
        SIGNER,
        &["digital signature", "client auth"],
        Some(3600),
    );
    obj["spec"]["username"] = json!("ignored");
    obj["spec"]["groups"] = json!(["system:masters"]);
    obj["status"] = json!({"certificate": b64(&cert_pem("x", false)),
                           "conditions": [{"type": "Approved", "status": "True"}]});
    let v = create_raw(&api, "system:serviceaccount:team-a:app", &obj).await;
    assert_eq!(v["spec"]["username"], "system:serviceaccount:team-a:app");
    assert_eq!(
        v["spec"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );
    assert_eq!(
        v["spec"]["uid"],
        json!(api.user("system:serviceaccount:team-a:app").unwrap().uid)
    );
    assert_eq!(v["status"], json!({}));
    assert!(v["metadata"]["uid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["metadata"]["resourceVersion"].as_str().is_some());
    assert!(v["metadata"]["creationTimestamp"].as_str().is_some());
    assert_eq!(v["kind"], "CertificateSigningRequest");
}

#[tokio::test]
async fn create_with_generate_name() {
    let api = plain().await;
    let mut obj = csr_json("", SIGNER, &["client auth"], None);
    obj["metadata"] = json!({"generateName": "csr-"});
    let v = create_raw(&api, "developer", &obj).await;
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("csr-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn create_existing_name_conflicts() {
    let api = plain().await;
    let obj = csr_json("dup", SIGNER, &["client auth"], None);
    create_raw(&api, "developer", &obj).await;
    let (code, body) = post_json(&api, "developer", CSR_PATH, &obj).await;
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
}

#[tokio::test]
async fn names_are_nearly_unrestricted() {
    let api = plain().await;
    let obj = csr_json("CSR_FOR octopus:2020", SIGNER, &["client auth"], None);
    create_raw(&api, "developer", &obj).await;
    let (code, got) = get_json(&api, "developer", &named("CSR_FOR%20octopus:2020")).await;
    assert_eq!(code, 200);
    assert_eq!(got["metadata"]["name"], "CSR_FOR octopus:2020");
    let (code, body) = post_json(
        &api,
        "developer",
        CSR_PATH,
        &csr_json("a%b", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["message"], "CertificateSigningRequest.certificates.k8s.io \"a%b\" is invalid: metadata.name: Invalid value: \"a%b\": may not contain '%'");
}

#[tokio::test]
async fn kube_rs_create_get_list_delete() {
    let api = plain().await;
    let c = csrs(&api, "developer");
    let created = create(&api, "developer", "one").await;
    assert_eq!(created.spec.username.as_deref(), Some("developer"));
    create(&api, "developer", "two").await;
    let list = c.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|i| i.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["one", "two"]);
    let admin = csrs(&api, "admin");
    let st = admin.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(st.is_right(), "CSR delete returns a Status");
    assert!(admin.get_opt("one").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_returns_success_status_with_uid() {
    let api = plain().await;
    let v = create_raw(
        &api,
        "developer",
        &csr_json("gone", SIGNER, &["client auth"], None),
    )
    .await;
    let (code, body) = raw(&api, Some("admin"), "DELETE", &named("gone"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "gone", "group": "certificates.k8s.io", "kind": "certificatesigningrequests", "uid": v["metadata"]["uid"]}})
    );
    let (code, body) = raw(&api, Some("admin"), "DELETE", &named("gone"), None).await;
    assert_eq!(code, 404);
    assert_eq!(
        body["message"],
        "certificatesigningrequests.certificates.k8s.io \"gone\" not found"
    );
}

#[tokio::test]
async fn deletecollection_returns_deleted_items() {
    let api = plain().await;
    create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    let (code, body) = raw(&api, Some("admin"), "DELETE", CSR_PATH, None).await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "CertificateSigningRequestList");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert!(csrs(&api, "admin")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let api = plain().await;
    let mut obj = csr_json("fin", SIGNER, &["client auth"], None);
    obj["metadata"]["finalizers"] = json!(["example.com/keep"]);
    create_raw(&api, "admin", &obj).await;
    let (code, body) = raw(&api, Some("admin"), "DELETE", &named("fin"), None).await;
    assert_eq!(code, 200);
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    let (code, _) = patch_json(
        &api,
        "admin",
        &named("fin"),
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(code, 200);
    assert!(csrs(&api, "admin").get_opt("fin").await.unwrap().is_none());
}

// ---------- validation: spec (V-1…V-7) ----------

#[tokio::test]
async fn v1_name_required() {
    let mut obj = csr_json("", SIGNER, &["client auth"], None);
    obj["metadata"] = json!({});
    expect_invalid(
        obj,
        "metadata.name",
        "metadata.name: Required value: name or generateName is required",
    )
    .await;
}

#[tokio::test]
async fn v2_request_not_pem_rejected() {
    let mut obj = csr_json("v2", SIGNER, &["client auth"], None);
    obj["spec"]["request"] = json!(b64(b"--"));
    expect_invalid(obj, "spec.request", "spec.request: Invalid value: []byte{0x2d, 0x2d}: PEM block type must be CERTIFICATE REQUEST").await;
}

#[tokio::test]
async fn v2_request_wrong_pem_type_rejected() {
    let mut obj = csr_json("v2b", SIGNER, &["client auth"], None);
    let pem = cert_pem("x", false);
    obj["spec"]["request"] = json!(b64(&pem));
    let body =
        expect_invalid(
            obj,
            "spec.request",
            &format!(
        "spec.request: Invalid value: []byte{{{}}}: PEM block type must be CERTIFICATE REQUEST",
        pem.iter().map(|b| format!("0x{b:x}")).collect::<Vec<_>>().join(", ")
    ),
        )
        .await;
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueInvalid");
}

#[tokio::test]
async fn v2_request_bad_signature_rejected() {
    // Splice another key's signature: parses, but the self-signature fails (ECDSA).
    let a = csr_pem("a");
    let key = ec_key();
    let other =
        openssl::x509::X509Req::from_pem(&csr_pem_with(&key, "a", &[], MessageDigest::sha256()))
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
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64(&req)
    );
    let api = plain().await;
    let mut obj = csr_json("v2c", SIGNER, &["client auth"], None);
    obj["spec"]["request"] = json!(b64(pem.as_bytes()));
    let (code, body) = post_json(&api, "admin", CSR_PATH, &obj).await;
    assert_eq!(code, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.ends_with(": x509: ECDSA verification failure")
            || msg.ends_with(": x509: malformed certificate request"),
        "{msg}"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "spec.request");
}

#[tokio::test]
async fn v2_request_rsa_bad_signature_rejected() {
    let key = PKeyRsa::new();
    let pem = csr_pem_with(&key.0, "r", &[], MessageDigest::sha256());
    let mut der = openssl::x509::X509Req::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64(&der)
    );
    let api = plain().await;
    let mut obj = csr_json("v2r", SIGNER, &["client auth"], None);
    obj["spec"]["request"] = json!(b64(pem.as_bytes()));
    let (code, body) = post_json(&api, "admin", CSR_PATH, &obj).await;
    assert_eq!(code, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with(": crypto/rsa: verification error"),
        "{body}"
    );
}

struct PKeyRsa(openssl::pkey::PKey<openssl::pkey::Private>);
impl PKeyRsa {
    fn new() -> Self {
        PKeyRsa(openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap())
    }
}

#[tokio::test]
async fn v2_sha1_signature_accepted() {
    let api = plain().await;
    let key = PKeyRsa::new();
    let mut obj = csr_json("sha1", SIGNER, &["client auth"], None);
    obj["spec"]["request"] = json!(b64(&csr_pem_with(&key.0, "s", &[], MessageDigest::sha1())));
    create_raw(&api, "developer", &obj).await;
}

#[tokio::test]
async fn v3_usages_required() {
    let obj = csr_json("v3", SIGNER, &[], None);
    expect_invalid(obj, "spec.usages", "spec.usages: Required value").await;
}

#[tokio::test]
async fn v4_unknown_usage_rejected() {
    let obj = csr_json("v4", SIGNER, &["client auth", "foo"], None);
    expect_invalid(obj, "spec.usages[1]", "spec.usages[1]: Unsupported value: \"foo\": supported values: \"any\", \"cert sign\", \"client auth\", \"code signing\", \"content commitment\", \"crl sign\", \"data encipherment\", \"decipher only\", \"digital signature\", \"email protection\", \"encipher only\", \"ipsec end system\", \"ipsec tunnel\", \"ipsec user\", \"key agreement\", \"key encipherment\", \"microsoft sgc\", \"netscape sgc\", \"ocsp signing\", \"s/mime\", \"server auth\", \"signing\", \"timestamping\"").await;
}

#[tokio::test]
async fn v5_duplicate_usage_rejected() {
    let obj = csr_json(
        "v5",
        SIGNER,
        &["client auth", "digital signature", "client auth"],
        None,
    );
    let body = expect_invalid(
        obj,
        "spec.usages[2]",
        "spec.usages[2]: Duplicate value: \"client auth\"",
    )
    .await;
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "FieldValueDuplicate"
    );
}

#[tokio::test]
async fn v6_legacy_signer_rejected() {
    let obj = csr_json(
        "v6a",
        "kubernetes.io/legacy-unknown",
        &["client auth"],
        None,
    );
    expect_invalid(obj, "spec.signerName", "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version").await;
}

#[tokio::test]
async fn v6_signer_required() {
    let obj = csr_json("v6b", "", &["client auth"], None);
    expect_invalid(obj, "spec.signerName", "spec.signerName: Required value").await;
}

#[tokio::test]
async fn v6_signer_needs_exactly_one_slash() {
    expect_invalid(csr_json("v6c", "example.com/a/b", &["client auth"], None), "spec.signerName",
        "spec.signerName: Invalid value: \"example.com/a/b\": must be a fully qualified domain and path of the form 'example.com/signer-name'").await;
    expect_invalid(csr_json("v6d", "example.com", &["client auth"], None), "spec.signerName",
        "spec.signerName: Invalid value: \"example.com\": must be a fully qualified domain and path of the form 'example.com/signer-name'").await;
}

#[tokio::test]
async fn v6_signer_domain_label_invalid() {
    expect_invalid(csr_json("v6e", "Example.com/x", &["client auth"], None), "spec.signerName",
        "spec.signerName: Invalid value: \"Example.com\": validating label \"Example\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')").await;
}

#[tokio::test]
async fn v6_signer_domain_needs_two_labels() {
    expect_invalid(csr_json("v6f", "example/x", &["client auth"], None), "spec.signerName",
        "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots").await;
}

#[tokio::test]
async fn v6_signer_path_invalid() {
    expect_invalid(csr_json("v6g", "example.com/MTLS", &["client auth"], None), "spec.signerName",
        "spec.signerName: Invalid value: \"MTLS\": validating label \"MTLS\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')").await;
}

#[tokio::test]
async fn v6_signer_domain_too_long() {
    let domain = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    let body = expect_invalid(
        csr_json("v6h", &format!("{domain}/x"), &["client auth"], None),
        "spec.signerName",
        "spec.signerName: Too long: must have at most 253 bytes",
    )
    .await;
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueTooLong");
}

#[tokio::test]
async fn v7_expiration_below_600_rejected() {
    let api = plain().await;
    let obj = csr_json("svc-a", SIGNER, &["client auth"], Some(599));
    let (code, body) = post_json(&api, "developer", CSR_PATH, &obj).await;
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
}

#[tokio::test]
async fn v7_negative_expiration_rejected_and_600_accepted() {
    expect_invalid(csr_json("neg", SIGNER, &["client auth"], Some(-1)), "spec.expirationSeconds",
        "spec.expirationSeconds: Invalid value: -1: may not specify a duration less than 600 seconds (10 minutes)").await;
    let api = plain().await;
    create_raw(
        &api,
        "developer",
        &csr_json("six", SIGNER, &["client auth"], Some(600)),
    )
    .await;
}

#[tokio::test]
async fn several_errors_are_aggregated_in_order() {
    let mut obj = csr_json("multi", "example", &["foo"], Some(10));
    obj["spec"]["request"] = json!(b64(b"x"));
    let api = plain().await;
    let (code, body) = post_json(&api, "admin", CSR_PATH, &obj).await;
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
    assert!(msg.starts_with("CertificateSigningRequest.certificates.k8s.io \"multi\" is invalid: [spec.request: Invalid value: []byte{0x78}: PEM block type must be CERTIFICATE REQUEST, spec.usages[0]: Unsupported value: \"foo\""), "{msg}");
    assert!(msg.ends_with("spec.expirationSeconds: Invalid value: 10: may not specify a duration less than 600 seconds (10 minutes)]"), "{msg}");
}

#[tokio::test]
async fn wrong_json_type_is_bad_request() {
    let api = plain().await;
    let mut obj = csr_json("types", SIGNER, &["client auth"], None);
    obj["spec"]["expirationSeconds"] = json!("3600");
    let (code, body) = post_json(&api, "developer", CSR_PATH, &obj).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["reason"], "BadRequest");
}

// ---------- conditions (C-1…C-8) and subresources (3.D) ----------

async fn approval_put(
    api: &csr_signer::dev::LocalApi,
    user: &str,
    name: &str,
    conds: Value,
) -> (u16, Value) {
    let (_, mut cur) = get_json(api, "admin", &named(name)).await;
    cur["status"]["conditions"] = conds;
    put_json(api, user, &format!("{}/approval", named(name)), &cur).await
}

async fn status_put(
    api: &csr_signer::dev::LocalApi,
    user: &str,
    name: &str,
    f: impl FnOnce(&mut Value),
) -> (u16, Value) {
    let (_, mut cur) = get_json(api, "admin", &named(name)).await;
    f(&mut cur);
    put_json(api, user, &format!("{}/status", named(name)), &cur).await
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
    let api = plain().await;
    create(&api, "developer", "c1").await;
    let (code, body) =
        approval_put(&api, "admin", "c1", json!([{"type": "", "status": "True"}])).await;
    assert_422(
        code,
        &body,
        "c1",
        "status.conditions[0].type: Required value",
    );
}

#[tokio::test]
async fn c2_condition_status_required() {
    let api = plain().await;
    create(&api, "developer", "c2").await;
    let (code, body) = approval_put(
        &api,
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
}

#[tokio::test]
async fn c3_approved_allows_only_true() {
    let api = plain().await;
    create(&api, "developer", "c3").await;
    let (code, body) = approval_put(
        &api,
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
}

#[tokio::test]
async fn c4_custom_condition_status_values() {
    let api = plain().await;
    create(&api, "developer", "c4").await;
    let (code, body) = approval_put(
        &api,
        "admin",
        "c4",
        json!([{"type": "Custom", "status": "Maybe"}]),
    )
    .await;
    assert_422(code, &body, "c4", "status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"");
    let (code, body) = approval_put(
        &api,
        "admin",
        "c4",
        json!([{"type": "Custom", "status": "Unknown"}]),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn c5_approved_and_denied_exclusive() {
    let api = plain().await;
    create(&api, "developer", "c5").await;
    let (code, body) = approval_put(
        &api,
        "admin",
        "c5",
        json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
    )
    .await;
    assert_422(code, &body, "c5", "status.conditions: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive");
}

#[tokio::test]
async fn c6_duplicate_condition_type() {
    let api = plain().await;
    create(&api, "developer", "c6").await;
    let (code, body) = approval_put(
        &api,
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
}

#[tokio::test]
async fn c7_removing_failed_forbidden() {
    let api = plain().await;
    create(&api, "developer", "c7").await;
    let (code, _) = status_put(&api, "admin", "c7", |v| {
        v["status"]["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": "no"}]);
    })
    .await;
    assert_eq!(code, 200);
    let (code, body) = status_put(&api, "admin", "c7", |v| {
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
    let (code, body) = status_put(&api, "admin", "c7", |v| {
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
}

#[tokio::test]
async fn c7_removing_approved_via_approval_forbidden() {
    let api = plain().await;
    create(&api, "developer", "c7b").await;
    let (code, _) = approval_put(
        &api,
        "admin",
        "c7b",
        json!([{"type": "Approved", "status": "True"}]),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = approval_put(&api, "admin", "c7b", json!([])).await;
    assert_422(
        code,
        &body,
        "c7b",
        "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\"",
    );
}

#[tokio::test]
async fn c8_adding_approved_via_status_forbidden() {
    let api = plain().await;
    create(&api, "developer", "c8").await;
    let (code, body) = status_put(&api, "admin", "c8", |v| {
        v["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}])
    })
    .await;
    assert_422(
        code,
        &body,
        "c8",
        "status.conditions: Forbidden: updates may not add a condition of type \"Approved\"",
    );
}

#[tokio::test]
async fn status_reverts_edits_of_existing_approved() {
    let api = plain().await;
    create(&api, "developer", "rev").await;
    let (_, approved) = approval_put(
        &api,
        "admin",
        "rev",
        json!([{"type": "Approved", "status": "True", "reason": "Ok", "message": "fine"}]),
    )
    .await;
    let (code, body) = status_put(&api, "admin", "rev", |v| {
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
}

#[tokio::test]
async fn approval_fills_timestamps_and_bumps_rv() {
    let api = plain().await;
    let c = create(&api, "developer", "ts").await;
    let rv0: u64 = c.metadata.resource_version.unwrap().parse().unwrap();
    let (code, body) = approval_put(
        &api,
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
}

#[tokio::test]
async fn approval_ignores_certificate_and_main_ignores_status() {
    let api = plain().await;
    create(&api, "developer", "ign").await;
    let cert = b64(&cert_pem("leaf", false));
    let (_, mut cur) = get_json(&api, "admin", &named("ign")).await;
    cur["status"] =
        json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": cert});
    let (code, body) = put_json(&api, "admin", &format!("{}/approval", named("ign")), &cur).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["status"]["certificate"].is_null(),
        "certificate via /approval ignored"
    );
    // Main resource: spec and status changes dropped, labels applied.
    let (_, mut cur) = get_json(&api, "admin", &named("ign")).await;
    cur["spec"]["signerName"] = json!("other.com/x");
    cur["status"]["certificate"] = json!(cert);
    cur["metadata"]["labels"] = json!({"a": "b"});
    let (code, body) = put_json(&api, "admin", &named("ign"), &cur).await;
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["signerName"], SIGNER);
    assert!(body["status"]["certificate"].is_null());
    assert_eq!(body["metadata"]["labels"]["a"], "b");
}

#[tokio::test]
async fn kube_rs_patch_approval_and_status() {
    let api = plain().await;
    create(&api, "developer", "kp").await;
    let approver = csrs(&api, "approver");
    let patch = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "ByTest", "message": "ok"}]}});
    let got = approver
        .patch_approval("kp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    assert_eq!(conds[0].type_, "Approved");
    let signer = csrs(&api, csr_signer::dev::SIGNER_USER);
    let cert = cert_pem("kp", false);
    let patch = json!({"status": {"certificate": b64(&cert)}});
    let got = signer
        .patch_status("kp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        got.status.as_ref().unwrap().certificate.as_ref().unwrap().0,
        cert
    );
    assert_eq!(
        got.status.unwrap().conditions.unwrap().len(),
        1,
        "Approved survives a status merge patch of the certificate"
    );
}

#[tokio::test]
async fn strategic_merge_replaces_condition_list() {
    let api = plain().await;
    create(&api, "developer", "smp").await;
    let p = PatchParams::default();
    let c = csrs(&api, "admin");
    c.patch_status(
        "smp",
        &p,
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Custom", "status": "True"}]}})),
    )
    .await
    .unwrap();
    // SMP with a different list: the whole list is replaced, so Custom is gone (no merge key).
    let got = c
        .patch_status(
            "smp",
            &p,
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Other", "status": "False"}]}}),
            ),
        )
        .await
        .unwrap();
    let types: Vec<String> = got
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, vec!["Other"]);
}

#[tokio::test]
async fn json_patch_appends_failed_condition() {
    let api = plain().await;
    create(&api, "developer", "jp").await;
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/status/conditions", "value": [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}]}
    ])).unwrap();
    let got = csrs(&api, csr_signer::dev::SIGNER_USER)
        .patch_status("jp", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(got.status.unwrap().conditions.unwrap()[0].type_, "Failed");
}

// ---------- certificate (K-1…K-8) ----------

async fn put_cert(api: &csr_signer::dev::LocalApi, name: &str, cert: &[u8]) -> (u16, Value) {
    status_put(api, "admin", name, |v| {
        v["status"]["certificate"] = json!(b64(cert))
    })
    .await
}

#[tokio::test]
async fn k1_only_certificate_blocks() {
    let api = plain().await;
    create(&api, "developer", "k1").await;
    let mut pem = cert_pem("a", false);
    pem.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let (code, body) = put_cert(&api, "k1", &pem).await;
    assert_422(code, &body, "k1", "status.certificate: Invalid value: \"<certificate data>\": only CERTIFICATE PEM blocks are allowed, found \"PRIVATE KEY\"");
}

#[tokio::test]
async fn k2_no_pem_headers() {
    let api = plain().await;
    create(&api, "developer", "k2").await;
    let pem = String::from_utf8(cert_pem("a", false)).unwrap().replacen(
        "-----\n",
        "-----\nProc-Type: 4,ENCRYPTED\n\n",
        1,
    );
    let (code, body) = put_cert(&api, "k2", pem.as_bytes()).await;
    assert_422(code, &body, "k2", "status.certificate: Invalid value: \"<certificate data>\": no PEM block headers are permitted");
}

#[tokio::test]
async fn k3_needs_a_pem_block() {
    let api = plain().await;
    create(&api, "developer", "k3").await;
    let (code, body) = put_cert(&api, "k3", b"not pem").await;
    assert_422(code, &body, "k3", "status.certificate: Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block");
}

#[tokio::test]
async fn k4_empty_certificate_block() {
    let api = plain().await;
    create(&api, "developer", "k4").await;
    let (code, body) = put_cert(
        &api,
        "k4",
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .await;
    assert_422(code, &body, "k4", "status.certificate: Invalid value: \"<certificate data>\": found CERTIFICATE PEM block containing 0 certificates");
}

#[tokio::test]
async fn k5_malformed_der_and_multi_cert_block() {
    let api = plain().await;
    create(&api, "developer", "k5").await;
    let (code, body) = put_cert(
        &api,
        "k5",
        b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
    )
    .await;
    assert_422(
        code,
        &body,
        "k5",
        "status.certificate: Invalid value: \"<certificate data>\": x509: malformed certificate",
    );
    // Two DER certificates in one PEM block are legal.
    let a = openssl::x509::X509::from_pem(&cert_pem("a", false))
        .unwrap()
        .to_der()
        .unwrap();
    let b = openssl::x509::X509::from_pem(&cert_pem("b", true))
        .unwrap()
        .to_der()
        .unwrap();
    let both = [a, b].concat();
    let pem = format!(
        "junk before\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\ntrailing",
        b64(&both)
    );
    let (code, body) = put_cert(&api, "k5", pem.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn k7_certificate_write_once() {
    let api = plain().await;
    create(&api, "developer", "k7").await;
    let first = cert_pem("a", false);
    assert_eq!(put_cert(&api, "k7", &first).await.0, 200);
    let rv = api.resource_version();
    let (code, _) = put_cert(&api, "k7", &first).await;
    assert_eq!(code, 200, "identical bytes may be written again");
    assert_eq!(
        api.resource_version(),
        rv,
        "no-op write does not bump the resourceVersion"
    );
    let (code, body) = put_cert(&api, "k7", &cert_pem("b", false)).await;
    assert_422(
        code,
        &body,
        "k7",
        "status.certificate: Forbidden: updates may not modify existing certificate content",
    );
    let (code, body) = status_put(&api, "admin", "k7", |v| {
        v["status"].as_object_mut().unwrap().remove("certificate");
    })
    .await;
    assert_422(
        code,
        &body,
        "k7",
        "status.certificate: Forbidden: updates may not modify existing certificate content",
    );
}

#[tokio::test]
async fn k8_certificate_on_pending_or_denied_accepted() {
    let api = plain().await;
    create(&api, "developer", "k8").await;
    approval_put(
        &api,
        "admin",
        "k8",
        json!([{"type": "Denied", "status": "True"}]),
    )
    .await;
    let (code, body) = put_cert(&api, "k8", &cert_pem("unrelated", false)).await;
    assert_eq!(
        code, 200,
        "the API does not check approval or key match: {body}"
    );
}

// ---------- resourceVersion (3.E) ----------

#[tokio::test]
async fn stale_update_conflicts() {
    let api = plain().await;
    let c = csrs(&api, "admin");
    let old = create(&api, "developer", "rv").await;
    let mut fresh = old.clone();
    fresh.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    c.replace("rv", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let mut stale = old.clone();
    stale.metadata.labels = Some([("a".to_string(), "2".to_string())].into());
    let (code, reason, msg) = api_err(
        c.replace("rv", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(msg, "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io \"rv\": the object has been modified; please apply your changes to the latest version and try again");
    // Stale status write conflicts too.
    let mut st = old.clone();
    st.status = Some(Default::default());
    st.status.as_mut().unwrap().certificate = Some(k8s_openapi::ByteString(cert_pem("x", false)));
    let (code, _, _) = api_err(
        c.replace_status("rv", &PostParams::default(), &st)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
}

#[tokio::test]
async fn put_without_resource_version_is_unconditional() {
    let api = plain().await;
    create(&api, "developer", "uncond").await;
    let (_, mut cur) = get_json(&api, "admin", &named("uncond")).await;
    cur["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    cur["metadata"]["labels"] = json!({"x": "y"});
    let (code, body) = put_json(&api, "admin", &named("uncond"), &cur).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn patch_with_stale_resource_version_conflicts() {
    let api = plain().await;
    create(&api, "developer", "prv").await;
    let p = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}});
    let (code, body) = patch_json(
        &api,
        "admin",
        &named("prv"),
        "application/merge-patch+json",
        &p,
    )
    .await;
    assert_eq!(code, 409, "{body}");
    let p = json!({"metadata": {"labels": {"a": "b"}}});
    let (code, _) = patch_json(
        &api,
        "admin",
        &named("prv"),
        "application/merge-patch+json",
        &p,
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn put_name_mismatch_is_bad_request() {
    let api = plain().await;
    create(&api, "developer", "nm").await;
    let (_, mut cur) = get_json(&api, "admin", &named("nm")).await;
    cur["metadata"]["name"] = json!("other");
    let (code, body) = put_json(&api, "admin", &named("nm"), &cur).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "the name of the object (other) does not match the name on the URL (nm)"
    );
}

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
    let (code, body) = approval_put(
        &api,
        "admin",
        "seeded",
        json!([{"type": "Approved", "status": "True"}]),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spec.request: Invalid value: []byte{0x2d, 0x2d,"),
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
async fn no_token_is_unauthorized() {
    let api = plain().await;
    let (code, body) = raw(&api, None, "GET", CSR_PATH, None).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
    );
}

#[tokio::test]
async fn rbac_forbidden_messages() {
    let api = plain().await;
    let (code, body) = get_json(&api, "approver", "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "configmaps is forbidden: User \"approver\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\"");
    create(&api, "developer", "fb").await;
    let (_, cur) = get_json(&api, "admin", &named("fb")).await;
    let (code, body) = put_json(&api, "developer", &format!("{}/status", named("fb")), &cur).await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"fb\" is forbidden: User \"developer\" cannot update resource \"certificatesigningrequests/status\" in API group \"certificates.k8s.io\" at the cluster scope");
    assert_eq!(
        body["details"],
        json!({"name": "fb", "group": "certificates.k8s.io", "kind": "certificatesigningrequests"})
    );
    let (code, body) = post_json(
        &api,
        "approver",
        CSR_PATH,
        &csr_json("x", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io is forbidden: User \"approver\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope");
}

#[tokio::test]
async fn approve_requires_signer_permission() {
    let api = plain().await;
    let mut obj = csr_json("apr", "other.io/x", &["client auth"], None);
    create_raw(&api, "developer", &obj).await;
    let (code, body) = approval_put(
        &api,
        "approver",
        "apr",
        json!([{"type": "Approved", "status": "True"}]),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"apr\" is forbidden: user not permitted to approve requests with signerName \"other.io/x\"");
    // The approver holds approve on example.com/*: any example.com signer works (3.F.1 b).
    obj = csr_json("apr2", "example.com/anything", &["client auth"], None);
    create_raw(&api, "developer", &obj).await;
    let (code, _) = approval_put(
        &api,
        "approver",
        "apr2",
        json!([{"type": "Approved", "status": "True"}]),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn sign_requires_signer_permission() {
    let api = plain().await;
    create_raw(
        &api,
        "developer",
        &csr_json("sg", "example.com/other", &["client auth"], None),
    )
    .await;
    let signer = csr_signer::dev::SIGNER_USER;
    let (_, mut cur) = get_json(&api, "admin", &named("sg")).await;
    cur["status"]["certificate"] = json!(b64(&cert_pem("x", false)));
    let (code, body) = put_json(&api, signer, &format!("{}/status", named("sg")), &cur).await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"sg\" is forbidden: user not permitted to sign requests with signerName \"example.com/other\"");
    // Adding Failed is a condition change: needs sign too (3.F.3).
    let (_, mut cur) = get_json(&api, "admin", &named("sg")).await;
    cur["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
    let (code, _) = put_json(&api, signer, &format!("{}/status", named("sg")), &cur).await;
    assert_eq!(code, 403);
    // A labels-only /status write needs no sign.
    let (_, mut cur) = get_json(&api, "admin", &named("sg")).await;
    cur["metadata"]["labels"] = json!({"seen": "1"});
    let (code, body) = put_json(&api, signer, &format!("{}/status", named("sg")), &cur).await;
    assert_eq!(code, 200, "{body}");
    // Its own signer works.
    create(&api, "developer", "mine").await;
    let (_, mut cur) = get_json(&api, "admin", &named("mine")).await;
    cur["status"]["certificate"] = json!(b64(&cert_pem("x", false)));
    let (code, _) = put_json(&api, signer, &format!("{}/status", named("mine")), &cur).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn invalid_beats_forbidden() {
    // 422 before 403 (3.E.1): an invalid certificate from someone without sign.
    let api = plain().await;
    create_raw(
        &api,
        "developer",
        &csr_json("ord", "other.io/x", &["client auth"], None),
    )
    .await;
    let (_, mut cur) = get_json(&api, "admin", &named("ord")).await;
    cur["status"]["certificate"] = json!(b64(b"junk"));
    let (code, _) = put_json(
        &api,
        csr_signer::dev::SIGNER_USER,
        &format!("{}/status", named("ord")),
        &cur,
    )
    .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn subject_restriction_for_kube_apiserver_client() {
    let api = plain().await;
    let mut obj = csr_json(
        "masters",
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
        None,
    );
    obj["spec"]["request"] = json!(b64(&csr_pem_with(
        &ec_key(),
        "evil",
        &["system:masters"],
        MessageDigest::sha256()
    )));
    let (code, body) = post_json(&api, "developer", CSR_PATH, &obj).await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "certificatesigningrequests.certificates.k8s.io \"masters\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed");
}

#[tokio::test]
async fn custom_users_with_rules() {
    use csr_signer::dev::{Rule, User};
    let api = plain().await;
    let user = User::new("alice").with_rule(
        Rule::new(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["get"],
        )
        .names(&["only-this"]),
    );
    api.add_user(user);
    create(&api, "developer", "only-this").await;
    create(&api, "developer", "not-this").await;
    assert_eq!(get_json(&api, "alice", &named("only-this")).await.0, 200);
    assert_eq!(get_json(&api, "alice", &named("not-this")).await.0, 403);
    assert_eq!(
        get_json(&api, "alice", CSR_PATH).await.0,
        403,
        "resourceNames never match a list"
    );
}

// ---------- list and selectors (3.G) ----------

#[tokio::test]
async fn list_with_field_selector_and_paging() {
    let api = plain().await;
    create(&api, "developer", "f1").await;
    create(&api, "developer", "f2").await;
    create_raw(
        &api,
        "developer",
        &csr_json("f3", "other.io/x", &["client auth"], None),
    )
    .await;
    let c = csrs(&api, "developer");
    let lp = ListParams::default().fields(&format!("spec.signerName={SIGNER}"));
    let names: Vec<String> = c
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.metadata.name.unwrap())
        .collect();
    assert_eq!(names, vec!["f1", "f2"]);
    let lp = ListParams::default().fields("metadata.name!=f1,spec.signerName!=other.io/x");
    let names: Vec<String> = c
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.metadata.name.unwrap())
        .collect();
    assert_eq!(names, vec!["f2"]);
    let page = c.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = c
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].metadata.name.as_deref(), Some("f3"));
}

#[tokio::test]
async fn unsupported_field_selector_is_bad_request() {
    let api = plain().await;
    let (code, body) = get_json(
        &api,
        "developer",
        &format!("{CSR_PATH}?fieldSelector=spec.foo%3Dbar"),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"field label not supported: spec.foo","reason":"BadRequest","code":400})
    );
}

#[tokio::test]
async fn label_selector_filters() {
    let api = plain().await;
    let mut obj = csr_json("l1", SIGNER, &["client auth"], None);
    obj["metadata"]["labels"] = json!({"team": "a"});
    create_raw(&api, "developer", &obj).await;
    create(&api, "developer", "l2").await;
    let c = csrs(&api, "developer");
    let got = c
        .list(&ListParams::default().labels("team in (a,b)"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 1);
    let got = c
        .list(&ListParams::default().labels("!team"))
        .await
        .unwrap();
    assert_eq!(got.items[0].metadata.name.as_deref(), Some("l2"));
}

#[tokio::test]
async fn list_items_have_no_kind_and_list_has_rv() {
    let api = plain().await;
    create(&api, "developer", "lk").await;
    let (_, body) = get_json(&api, "developer", CSR_PATH).await;
    assert_eq!(body["kind"], "CertificateSigningRequestList");
    assert!(body["metadata"]["resourceVersion"].is_string());
    assert!(body["items"][0]["kind"].is_null());
}

#[tokio::test]
async fn table_output_columns() {
    let api = plain().await;
    create_raw(
        &api,
        "developer",
        &csr_json("tb", SIGNER, &["client auth"], Some(86400)),
    )
    .await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}{CSR_PATH}", api.base_url()))
        .bearer_auth(api.token("developer").unwrap())
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap();
    let t: Value = resp.json().await.unwrap();
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
}

#[tokio::test]
async fn condition_summary_in_table() {
    let api = plain().await;
    create(&api, "developer", "cs").await;
    approval_put(
        &api,
        "admin",
        "cs",
        json!([{"type": "Approved", "status": "True"}]),
    )
    .await;
    put_cert(&api, "cs", &cert_pem("x", false)).await;
    status_put(&api, "admin", "cs", |v| {
        v["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Failed", "status": "True"}))
    })
    .await;
    let client = reqwest::Client::new();
    let t: Value = client
        .get(format!("{}{CSR_PATH}/cs", api.base_url()))
        .bearer_auth(api.token("admin").unwrap())
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["rows"][0]["cells"][5], "Approved,Failed,Issued");
}

#[tokio::test]
async fn typed_conditions_roundtrip() {
    let api = plain().await;
    create(&api, "developer", "typed").await;
    let c = csrs(&api, "admin");
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
    let got: CertificateSigningRequest = got.unwrap();
    assert_eq!(
        got.status.unwrap().conditions.unwrap()[0].reason.as_deref(),
        Some("Typed")
    );
}

#[tokio::test]
async fn v2_md5_signature_refused() {
    let key = PKeyRsa::new();
    let pem = csr_pem_with(&key.0, "m", &[], MessageDigest::md5());
    let api = plain().await;
    let mut obj = csr_json("md5", SIGNER, &["client auth"], None);
    obj["spec"]["request"] = json!(b64(&pem));
    let (code, body) = post_json(&api, "developer", CSR_PATH, &obj).await;
    assert_eq!(code, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with(": x509: cannot verify signature: insecure algorithm MD5-RSA"),
        "{body}"
    );
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    let api = plain().await;
    let (code, body) = post_json(
        &api,
        "developer",
        &format!("{CSR_PATH}?dryRun=All"),
        &csr_json("dry", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["username"], "developer");
    assert_eq!(get_json(&api, "admin", &named("dry")).await.0, 404);
    create(&api, "developer", "wet").await;
    let rv = api.resource_version();
    let (code, body) = patch_json(
        &api,
        "admin",
        &format!("{}?dryRun=All", named("wet")),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["metadata"]["labels"]["a"], "b");
    let (code, _) = raw(
        &api,
        Some("admin"),
        "DELETE",
        &format!("{}?dryRun=All", named("wet")),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(api.resource_version(), rv, "nothing written");
    let (_, stored) = get_json(&api, "admin", &named("wet")).await;
    assert!(stored["metadata"]["labels"].is_null());
}

#[tokio::test]
async fn server_side_apply_of_failed_does_not_conflict_with_approval() {
    // Conditions are keyed by type: the signer applying Failed does not touch the approver's
    // Approved item, so there is no conflict (as with kube-apiserver's listType=map).
    let api = plain().await;
    create(&api, "developer", "ssa").await;
    csrs(&api, "approver")
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
        .await
        .unwrap();
    let apply = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": "no"}]}});
    let got = csrs(&api, csr_signer::dev::SIGNER_USER)
        .patch_status(
            "ssa",
            &PatchParams::apply("csr-signer"),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    let types: Vec<String> = got
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, vec!["Approved", "Failed"]);
    // Changing a field of the approver's item conflicts (adding an unowned field would not).
    let steal = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "status": {"conditions": [{"type": "Approved", "status": "True", "lastUpdateTime": "2020-01-01T00:00:00Z"}]}});
    let err = csrs(&api, "admin")
        .patch_approval("ssa", &PatchParams::apply("other"), &Patch::Apply(&steal))
        .await
        .unwrap_err();
    let (code, _, msg) = api_err(err);
    assert_eq!(code, 409);
    assert!(msg.contains("conflict with \"approver-tool\""), "{msg}");
}
