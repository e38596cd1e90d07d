//! Helpers shared by the local API tests: CSR generation with openssl, raw HTTP calls with exact
//! bodies, and typed kube-rs handles.
#![allow(dead_code, clippy::unwrap_used)]

use base64::Engine;
use csr_signer::dev::{self, LocalApi, LocalApiConfig};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509Req};
use serde_json::{json, Value};

pub const SIGNER: &str = "example.com/mtls";

pub async fn plain() -> LocalApi {
    dev::start(LocalApiConfig::plain_http())
        .await
        .expect("local API starts")
}

pub fn ec_key() -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
}

pub fn csr_pem_with(key: &PKey<Private>, cn: &str, orgs: &[&str], md: MessageDigest) -> Vec<u8> {
    let mut name = X509NameBuilder::new().unwrap();
    for o in orgs {
        name.append_entry_by_text("O", o).unwrap();
    }
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Req::builder().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, md).unwrap();
    b.build().to_pem().unwrap()
}

/// A fresh EC P-256 CSR PEM.
pub fn csr_pem(cn: &str) -> Vec<u8> {
    csr_pem_with(&ec_key(), cn, &[], MessageDigest::sha256())
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn csr_json(name: &str, signer: &str, usages: &[&str], expiration: Option<i64>) -> Value {
    let cn = if name.is_empty() { "anonymous" } else { name };
    let mut spec = json!({"request": b64(&csr_pem(cn)), "signerName": signer, "usages": usages});
    if let Some(e) = expiration {
        spec["expirationSeconds"] = json!(e);
    }
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name}, "spec": spec})
}

pub fn csr_typed(name: &str, signer: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem(name)),
            signer_name: signer.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        status: None,
    }
}

pub fn csrs(api: &LocalApi, user: &str) -> Api<CertificateSigningRequest> {
    Api::all(api.client(user).expect("client"))
}

pub async fn create(api: &LocalApi, user: &str, name: &str) -> CertificateSigningRequest {
    csrs(api, user)
        .create(&PostParams::default(), &csr_typed(name, SIGNER))
        .await
        .expect("create CSR")
}

/// A raw request; returns (status, JSON body or Null).
pub async fn raw(
    api: &LocalApi,
    user: Option<&str>,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let (code, _, v) = raw_h(api, user, method, path, body).await;
    (code, v)
}

pub async fn raw_h(
    api: &LocalApi,
    user: Option<&str>,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(m, format!("{}{}", api.base_url(), path));
    if let Some(u) = user {
        req = req.bearer_auth(api.token(u).expect("known user"));
    }
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (
        code,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub const CSR_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

pub async fn post_json(api: &LocalApi, user: &str, path: &str, v: &Value) -> (u16, Value) {
    raw(
        api,
        Some(user),
        "POST",
        path,
        Some(("application/json", serde_json::to_vec(v).unwrap())),
    )
    .await
}

pub async fn put_json(api: &LocalApi, user: &str, path: &str, v: &Value) -> (u16, Value) {
    raw(
        api,
        Some(user),
        "PUT",
        path,
        Some(("application/json", serde_json::to_vec(v).unwrap())),
    )
    .await
}

pub async fn patch_json(
    api: &LocalApi,
    user: &str,
    path: &str,
    ct: &str,
    v: &Value,
) -> (u16, Value) {
    raw(
        api,
        Some(user),
        "PATCH",
        path,
        Some((ct, serde_json::to_vec(v).unwrap())),
    )
    .await
}

pub async fn get_json(api: &LocalApi, user: &str, path: &str) -> (u16, Value) {
    raw(api, Some(user), "GET", path, None).await
}

/// Creates a CSR through raw JSON as `user`, asserting 201; returns the stored object.
pub async fn create_raw(api: &LocalApi, user: &str, obj: &Value) -> Value {
    let (code, v) = post_json(api, user, CSR_PATH, obj).await;
    assert_eq!(code, 201, "create failed: {v}");
    v
}

/// A self-signed certificate PEM (CA or leaf) for certificate-field tests.
pub fn cert_pem(cn: &str, ca: bool) -> Vec<u8> {
    use openssl::x509::extension::BasicConstraints;
    let key = ec_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_u32())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let mut bc = BasicConstraints::new();
    if ca {
        bc.critical().ca();
    }
    b.append_extension(bc.build().unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

fn rand_u32() -> u32 {
    use rand::Rng;
    rand::rng().random_range(1..u32::MAX)
}

/// The message of a kube-rs API error.
pub fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}
