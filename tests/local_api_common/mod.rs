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
use serde_json::{json, Value};

#[allow(unused_imports)]
pub use crate::support::SIGNER;

pub async fn plain() -> LocalApi {
    dev::start(LocalApiConfig::plain_http())
        .await
        .expect("local API starts")
}

pub fn ec_key() -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
}

/// A CSR for `O=<orgs>…, CN=<cn>` signed with `md` (built by the shared `support::CsrSpec`).
pub fn csr_pem_with(key: &PKey<Private>, cn: &str, orgs: &[&str], md: MessageDigest) -> Vec<u8> {
    let mut subject: Vec<(&str, &str)> = orgs.iter().map(|o| ("O", *o)).collect();
    subject.push(("CN", cn));
    let mut spec = crate::support::CsrSpec::new(key.clone(), &subject);
    spec.digest = md;
    spec.pem()
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
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
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

// ---------- differential tests: one scenario against the local API and the real kube-apiserver ----------

/// What a scenario observed: one raw request and its answer, or a note of a typed call's result.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: String,
    pub code: u16,
    pub body: Value,
    /// `Some(why)`: a deliberate, documented difference; only the code, `reason` and cause fields are compared.
    pub relaxed: Option<&'static str>,
}

/// One API server as a differential test sees it: the local API (`local`) or the real kube-apiserver. Raw
/// HTTP with bearer tokens looked up by the local API's user names, kube-rs clients, and a transcript of
/// every answer (`exchanges`) that the test compares between the two servers.
pub struct Srv {
    pub name: &'static str,
    pub base: String,
    pub local: Option<LocalApi>,
    ca_pem: Option<String>,
    http: reqwest::Client,
    tokens: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    log: std::sync::Mutex<Vec<Exchange>>,
}

impl Srv {
    /// A fresh plain-HTTP local API.
    pub async fn local() -> Srv {
        let api = plain().await;
        Srv {
            name: "local API",
            base: api.base_url(),
            ca_pem: None,
            http: reqwest::Client::new(),
            tokens: Default::default(),
            log: Default::default(),
            local: Some(api),
        }
    }

    /// A remote server over HTTPS trusting `ca_pem`, with bearer tokens by (local API) user name.
    pub fn remote(
        name: &'static str,
        base: &str,
        ca_pem: &str,
        tokens: std::collections::BTreeMap<String, String>,
    ) -> Srv {
        let mut http = reqwest::Client::builder();
        for c in openssl::x509::X509::stack_from_pem(ca_pem.as_bytes()).unwrap() {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&c.to_pem().unwrap()).unwrap(),
            );
        }
        Srv {
            name,
            base: base.to_string(),
            local: None,
            ca_pem: Some(ca_pem.to_string()),
            http: http.build().unwrap(),
            tokens: std::sync::Mutex::new(tokens),
            log: Default::default(),
        }
    }

    pub fn is_real(&self) -> bool {
        self.local.is_none()
    }

    /// The local API (panics on the real server: for checks only the local API can make).
    pub fn api(&self) -> &LocalApi {
        self.local.as_ref().expect("the local API")
    }

    pub fn add_token(&self, user: &str, token: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert(user.to_string(), token.to_string());
    }

    pub fn token(&self, user: &str) -> String {
        if let Some(api) = &self.local {
            return api.token(user).unwrap_or_else(|| panic!("no user {user}"));
        }
        self.tokens
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .unwrap_or_else(|| panic!("no token for {user} on the {}", self.name))
    }

    /// A kube-rs client authenticating as `user`.
    pub fn client(&self, user: &str) -> kube::Client {
        if let Some(api) = &self.local {
            return api.client(user).expect("client");
        }
        let mut cfg = kube::Config::new(self.base.parse().unwrap());
        let pem = self.ca_pem.as_deref().unwrap_or_default();
        cfg.root_cert = Some(
            openssl::x509::X509::stack_from_pem(pem.as_bytes())
                .unwrap()
                .iter()
                .map(|c| c.to_der().unwrap())
                .collect(),
        );
        cfg.auth_info.token = Some(self.token(user).into());
        kube::Client::try_from(cfg).unwrap()
    }

    pub fn csrs(&self, user: &str) -> Api<CertificateSigningRequest> {
        Api::all(self.client(user))
    }

    /// A raw request (recorded); returns (status, headers, JSON body or Null).
    pub async fn raw_h(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let token = user.map(|u| self.token(u));
        let who = user.unwrap_or("(no token)").to_string();
        self.send(token.as_deref(), &who, method, path, headers, body)
            .await
    }

    /// A raw request with an arbitrary bearer token (e.g. one no server knows).
    pub async fn raw_with_token(&self, token: &str, method: &str, path: &str) -> (u16, Value) {
        let (code, _, v) = self
            .send(Some(token), "(unknown token)", method, path, &[], None)
            .await;
        (code, v)
    }

    async fn send(
        &self,
        token: Option<&str>,
        who: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.record(format!("{method} {path} as {who}"), code, v.clone());
        (code, headers, v)
    }

    pub async fn raw(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let (code, _, v) = self.raw_h(user, method, path, &[], body).await;
        (code, v)
    }

    pub async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.raw(Some(user), "GET", path, None).await
    }

    pub async fn delete(&self, user: &str, path: &str) -> (u16, Value) {
        self.raw(Some(user), "DELETE", path, None).await
    }

    pub async fn post(&self, user: &str, path: &str, v: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(v).unwrap();
        self.raw(Some(user), "POST", path, Some(("application/json", body)))
            .await
    }

    pub async fn put(&self, user: &str, path: &str, v: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(v).unwrap();
        self.raw(Some(user), "PUT", path, Some(("application/json", body)))
            .await
    }

    pub async fn patch(&self, user: &str, path: &str, ct: &str, v: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(v).unwrap();
        self.raw(Some(user), "PATCH", path, Some((ct, body))).await
    }

    /// Records a typed call's outcome for the comparison.
    pub fn note(&self, what: &str, v: Value) {
        self.record(format!("note: {what}"), 0, v);
    }

    /// Marks the last exchange as a deliberate difference (see `Exchange::relaxed`).
    pub fn relax_last(&self, why: &'static str) {
        if let Some(e) = self.log.lock().unwrap().last_mut() {
            e.relaxed = Some(why);
        }
    }

    /// Masks values of the last answer that are deliberately not compared (JSON pointers).
    pub fn mask_last(&self, pointers: &[&str]) {
        if let Some(e) = self.log.lock().unwrap().last_mut() {
            for p in pointers {
                if let Some(v) = e.body.pointer_mut(p) {
                    *v = json!("<masked>");
                }
            }
        }
    }

    fn record(&self, request: String, code: u16, body: Value) {
        // Continue tokens are opaque and differ per server.
        let request = match request.find("continue=") {
            Some(i) => {
                let end = request[i..]
                    .find(['&', ' '])
                    .map_or(request.len(), |j| i + j);
                format!("{}continue=<token>{}", &request[..i], &request[end..])
            }
            None => request,
        };
        self.log.lock().unwrap().push(Exchange {
            request,
            code,
            body,
            relaxed: None,
        });
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

/// Replaces the values that legitimately differ between two servers (identifiers, resource versions,
/// timestamps and the Table Age cells computed from them, continue tokens, generated names) with placeholders, so two answers can be compared.
pub fn normalized(v: &Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                let generated = m
                    .get("generateName")
                    .is_some_and(|g| g.as_str().is_some_and(|s| !s.is_empty()));
                for (k, x) in m.iter_mut() {
                    let volatile = matches!(
                        k.as_str(),
                        "uid"
                            | "resourceVersion"
                            | "creationTimestamp"
                            | "deletionTimestamp"
                            | "lastUpdateTime"
                            | "lastTransitionTime"
                            | "time"
                            | "continue"
                    ) || (generated && k == "name");
                    match x {
                        Value::String(s) if volatile && !s.is_empty() => *s = format!("<{k}>"),
                        // A service-account token's id differs per token.
                        Value::Array(a) if k == "authentication.kubernetes.io/credential-id" => {
                            *a = vec![json!("<credential-id>")]
                        }
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = v.clone();
    walk(&mut v);
    // A Table's Age cells are computed from creationTimestamp at the moment of the answer.
    if v["kind"] == "Table" {
        let ages: Vec<usize> = v["columnDefinitions"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .enumerate()
                    .filter(|(_, c)| c["name"] == "Age")
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(rows) = v["rows"].as_array_mut() {
            for row in rows {
                for &i in &ages {
                    if let Some(cell) = row["cells"].get_mut(i) {
                        *cell = json!("<age>");
                    }
                }
            }
        }
    }
    v
}

/// The parts of an answer compared for a deliberate difference: code, reason and the cause fields.
fn relaxed_view(e: &Exchange) -> Value {
    let fields: Vec<Value> = e.body["details"]["causes"]
        .as_array()
        .map(|a| a.iter().map(|c| json!([c["field"], c["reason"]])).collect())
        .unwrap_or_default();
    json!({"code": e.code, "reason": e.body["reason"], "causes": fields})
}

/// Compares two transcripts exchange by exchange; returns a description of every difference.
pub fn transcript_differences(a: &Srv, b: &Srv) -> Vec<String> {
    let (ea, eb) = (a.exchanges(), b.exchanges());
    let mut out = Vec::new();
    if ea.len() != eb.len() {
        out.push(format!(
            "{} made {} requests, {} made {}",
            a.name,
            ea.len(),
            b.name,
            eb.len()
        ));
    }
    for (i, (x, y)) in ea.iter().zip(eb.iter()).enumerate() {
        if x.request != y.request {
            out.push(format!("#{i}: {} vs {}", x.request, y.request));
            continue;
        }
        let (vx, vy) = match x.relaxed.or(y.relaxed) {
            Some(_) => (relaxed_view(x), relaxed_view(y)),
            None => (
                json!({"code": x.code, "body": normalized(&x.body)}),
                json!({"code": y.code, "body": normalized(&y.body)}),
            ),
        };
        if vx != vy {
            let mut d = Vec::new();
            json_diff("", &vx, &vy, &mut d);
            out.push(format!(
                "#{i} {} ({} vs {}):\n{}",
                x.request,
                a.name,
                b.name,
                d.join("\n")
            ));
        }
    }
    out
}

/// The leaves where two JSON values differ, as `  /pointer: a | b` lines.
fn json_diff(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let n = Value::Null;
                json_diff(
                    &format!("{at}/{k}"),
                    x.get(k).unwrap_or(&n),
                    y.get(k).unwrap_or(&n),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                json_diff(&format!("{at}/{i}"), p, q, out);
            }
        }
        _ if a != b => out.push(format!("  {at}: {a} | {b}")),
        _ => {}
    }
}
