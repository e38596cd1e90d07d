//! Building PodCertificateRequests the way a kubelet does, for the local API and signer tests: a key of
//! each type the API takes (and some it refuses), the empty stub PKCS#10 request, the v1beta1
//! proof of possession, the Node + ServiceAccount + Pod a request names, PCR bodies, and leaf
//! certificates for status updates. Everything is built with OpenSSL.
#![allow(dead_code, clippy::unwrap_used)]

use base64::Engine;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509NameBuilder, X509ReqBuilder, X509};
use serde_json::{json, Value};

/// The key types kube-apiserver accepts in a request (`csr_signer::ca_init::KeyType` keys, made by
/// `support::key`, so the including test crate has `mod support;`).
pub const ACCEPTED_KEYS: &[KeyType] = &[
    KeyType::Rsa3072,
    KeyType::Rsa4096,
    KeyType::P256,
    KeyType::P384,
    KeyType::P521,
    KeyType::Ed25519,
];

fn ec(nid: Nid) -> PKey<Private> {
    let group = EcGroup::from_curve_name(nid).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// Keys kube-apiserver refuses in a request: P-224 (a curve Go knows), secp256k1 (one it does
/// not), Ed448 (an algorithm it does not know). RSA-2048 is `support::key(KeyType::Rsa2048)`.
pub fn p224_key() -> PKey<Private> {
    ec(Nid::SECP224R1)
}

pub fn secp256k1_key() -> PKey<Private> {
    ec(Nid::SECP256K1)
}

pub fn ed448_key() -> PKey<Private> {
    PKey::generate_ed448().unwrap()
}

fn digest_for(key: &PKey<Private>) -> MessageDigest {
    match key.id() {
        openssl::pkey::Id::ED25519 | openssl::pkey::Id::ED448 => MessageDigest::null(),
        _ => MessageDigest::sha256(),
    }
}

/// The stub request a 1.36+ kubelet sends: DER PKCS#10 with an empty subject and no attributes,
/// self-signed with the key.
pub fn stub_request(key: &PKey<Private>) -> Vec<u8> {
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_version(0).unwrap();
    b.set_subject_name(&X509NameBuilder::new().unwrap().build())
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, digest_for(key)).unwrap();
    b.build().to_der().unwrap()
}

/// DER SubjectPublicKeyInfo (`spec.pkixPublicKey`).
pub fn spki(key: &PKey<Private>) -> Vec<u8> {
    key.public_key_to_der().unwrap()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    openssl::sha::sha256(b).to_vec()
}

/// `spec.proofOfPossession` as the kubelet makes it over the pod UID: Ed25519 over the bytes, ECDSA
/// (ASN.1) over their SHA-256 on every curve, RSA-PSS with SHA-256 and the largest salt.
pub fn proof_of_possession(key: &PKey<Private>, pod_uid: &str) -> Vec<u8> {
    use openssl::pkey::Id;
    match key.id() {
        Id::ED25519 => {
            let mut s = openssl::sign::Signer::new_without_digest(key).unwrap();
            s.sign_oneshot_to_vec(pod_uid.as_bytes()).unwrap()
        }
        Id::EC => {
            openssl::ecdsa::EcdsaSig::sign(&sha256(pod_uid.as_bytes()), &key.ec_key().unwrap())
                .unwrap()
                .to_der()
                .unwrap()
        }
        Id::RSA => {
            let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key).unwrap();
            ctx.sign_init().unwrap();
            ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
                .unwrap();
            ctx.set_signature_md(openssl::md::Md::sha256()).unwrap();
            ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
            ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::MAXIMUM_LENGTH)
                .unwrap();
            let mut sig = Vec::new();
            ctx.sign_to_vec(&sha256(pod_uid.as_bytes()), &mut sig)
                .unwrap();
            sig
        }
        other => panic!("no proof of possession for {other:?}"),
    }
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The Node, ServiceAccount and Pod (bound to the node, mounting a podCertificate volume for
/// `signer`) a request names, with the UIDs the server gave them.
#[derive(Debug, Clone)]
pub struct NodePod {
    pub namespace: String,
    pub node: String,
    pub node_uid: String,
    pub pod: String,
    pub pod_uid: String,
    pub service_account: String,
    pub service_account_uid: String,
}

/// A pod manifest bound to `node`, running as `sa`, with a podCertificate volume for `signer` (if any).
pub fn pod_manifest(name: &str, node: &str, sa: Option<&str>, signer: Option<&str>) -> Value {
    let mut spec = json!({"nodeName": node,
        "containers": [{"name": "app", "image": "registry.example/app:1"}]});
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
    }
    if let Some(signer) = signer {
        spec["volumes"] = json!([{"name": "mtls", "projected": {"sources": [{"podCertificate": {
            "signerName": signer, "keyType": "ECDSAP256", "credentialBundlePath": "credentialbundle.pem"}}]}}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

async fn create_or_get<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let typed: K = serde_json::from_value(obj).unwrap();
    match api.create(&PostParams::default(), &typed).await {
        Ok(o) => o,
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await.unwrap(),
        Err(e) => panic!("create {name}: {e}"),
    }
}

/// Creates (as `admin`, an all-powerful client) the Node, ServiceAccount and Pod of a request.
pub async fn node_pod(
    admin: &kube::Client,
    namespace: &str,
    node: &str,
    pod: &str,
    service_account: &str,
    signer: &str,
) -> NodePod {
    let nodes: Api<Node> = Api::all(admin.clone());
    let n = create_or_get(
        &nodes,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let sa = create_or_get(
        &sas,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let p = create_or_get(
        &pods,
        pod_manifest(pod, node, Some(service_account), Some(signer)),
    )
    .await;
    NodePod {
        namespace: namespace.into(),
        node: node.into(),
        node_uid: n.metadata.uid.unwrap(),
        pod: pod.into(),
        pod_uid: p.metadata.uid.unwrap(),
        service_account: service_account.into(),
        service_account_uid: sa.metadata.uid.unwrap(),
    }
}

/// How the request carries its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// `stubPKCS10Request` (v1 and v1beta1).
    Stub,
    /// v1beta1 `pkixPublicKey` + `proofOfPossession`.
    ProofOfPossession,
}

/// A PodCertificateRequest body for `f` and `signer` in `version` with `key` carried as `carrier`.
pub fn pcr_body(
    version: &str,
    name: &str,
    f: &NodePod,
    signer: &str,
    key: &PKey<Private>,
    carrier: Carrier,
) -> Value {
    let mut spec = json!({
        "signerName": signer,
        "podName": f.pod, "podUID": f.pod_uid,
        "serviceAccountName": f.service_account, "serviceAccountUID": f.service_account_uid,
        "nodeName": f.node, "nodeUID": f.node_uid,
    });
    match carrier {
        Carrier::Stub => spec["stubPKCS10Request"] = json!(b64(&stub_request(key))),
        Carrier::ProofOfPossession => {
            spec["pkixPublicKey"] = json!(b64(&spki(key)));
            spec["proofOfPossession"] = json!(b64(&proof_of_possession(key, &f.pod_uid)));
        }
    }
    json!({"apiVersion": format!("certificates.k8s.io/{version}"), "kind": "PodCertificateRequest",
           "metadata": {"name": name, "namespace": f.namespace}, "spec": spec})
}

/// The collection path of PCRs in `namespace` through `version`.
pub fn pcr_path(version: &str, namespace: &str) -> String {
    format!("/apis/certificates.k8s.io/{version}/namespaces/{namespace}/podcertificaterequests")
}

/// A self-signed CA for leaf certificates in status updates.
pub fn issuing_ca() -> (PKey<Private>, X509) {
    let key = ec(Nid::X9_62_PRIME256V1);
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "pcr test CA").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.append_extension(
        openssl::x509::extension::BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (key, b.build())
}

/// A leaf certificate PEM for `subject` (any public key), valid [not_before, not_after] (Unix
/// seconds), with these DNS SANs, signed by the CA.
pub fn leaf_pem<T: openssl::pkey::HasPublic>(
    ca: &(PKey<Private>, X509),
    subject: &PKey<T>,
    not_before: i64,
    not_after: i64,
    dns: &[&str],
) -> String {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "pod").unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(ca.1.subject_name()).unwrap();
    b.set_pubkey(subject).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    if !dns.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        let ext = san.build(&b.x509v3_context(Some(&ca.1), None)).unwrap();
        b.append_extension(ext).unwrap();
    }
    b.sign(&ca.0, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

/// RFC 3339 in whole seconds, as metav1.Time serialises.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An Issued status for a leaf valid [nb, na] that begins refreshing at `bra`.
pub fn issued_status(chain: &str, nb: i64, na: i64, bra: i64) -> Value {
    json!({"conditions": [{"type": "Issued", "status": "True", "reason": "Issued", "message": "issued",
                           "lastTransitionTime": rfc3339(nb.max(now() - 1))}],
           "certificateChain": chain, "notBefore": rfc3339(nb), "notAfter": rfc3339(na),
           "beginRefreshAt": rfc3339(bra)})
}

/// A one-condition terminal status (Denied / Failed).
pub fn condition_status(kind: &str, reason: &str) -> Value {
    json!({"conditions": [{"type": kind, "status": "True", "reason": reason, "message": "m",
                           "lastTransitionTime": rfc3339(now())}]})
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
