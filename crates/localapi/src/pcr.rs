//! PodCertificateRequest rules (KEP-4317) as kube-apiserver 1.37.2 applies them: decoding and
//! defaulting, ValidatePodCertificateRequestCreate (key types, the stub PKCS#10 request or the
//! deprecated v1beta1 proof of possession), the NodeRestriction admission checks for a node creator,
//! the Node authorizer's PCR rules, and the status strategy (ValidatePodCertificateRequestStatusUpdate
//! and the `sign` check). The field paths and messages are Go's (pkg/apis/certificates/validation).

use std::collections::BTreeMap;

use base64::Engine;
use openssl::pkey::{PKey, Public};
use serde_json::{json, Value};

use super::auth::User;
use super::csr::dns1123_subdomain_errors;
use super::csr::validate_signer_name;
use super::csr::{go_public_key, go_rsa_exponent_error, GoKey};
use super::status::{go_bytes, quote, ApiError, FieldError, FieldErrorKind, Gr};
use super::store::Store;

pub const GR: Gr<'static> = Gr {
    group: "certificates.k8s.io",
    resource: "podcertificaterequests",
    kind: "PodCertificateRequest",
};

const MAX_KEY_SIZE: usize = 10 * 1024;
const MAX_POP_SIZE: usize = 10 * 1024;
const MAX_STUB_SIZE: usize = 10 * 1024;
const MAX_CHAIN_SIZE: usize = 100 * 1024;
const MIN_MAX_EXPIRATION: i64 = 3600;
const MAX_MAX_EXPIRATION: i64 = 91 * 24 * 3600;
const KUBERNETES_MAX_MAX_EXPIRATION: i64 = 24 * 3600;
const DEFAULT_MAX_EXPIRATION: i64 = 86400;
/// apimachinery's TotalAnnotationSizeLimitB.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Fields v1 does not have (v1beta1 only; dropped by conversion to and from v1).
const V1BETA1_ONLY: &[&str] = &["pkixPublicKey", "proofOfPossession"];
const SPEC_STRINGS: &[&str] = &[
    "signerName",
    "podName",
    "podUID",
    "serviceAccountName",
    "serviceAccountUID",
    "nodeName",
    "nodeUID",
];
const SPEC_BYTES: &[&str] = &["pkixPublicKey", "proofOfPossession", "stubPKCS10Request"];
const TERMINAL: &[&str] = &["Issued", "Denied", "Failed"];

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn spec_str<'a>(v: &'a Value, f: &str) -> &'a str {
    v["spec"][f].as_str().unwrap_or("")
}

fn spec_bytes(v: &Value, f: &str) -> Vec<u8> {
    v["spec"][f]
        .as_str()
        .and_then(|s| b64().decode(s).ok())
        .unwrap_or_default()
}

/// The object as a client of `version` sees it: v1 has no pkixPublicKey / proofOfPossession.
pub fn to_version(v: &mut Value, version: &str) {
    if version == "v1" {
        if let Some(spec) = v["spec"].as_object_mut() {
            for f in V1BETA1_ONLY {
                spec.remove(*f);
            }
        }
    }
}

/// Go's JSON decoding into the typed struct: wrong types and bad base64 are 400s.
pub fn check_types(obj: &Value, version: &str) -> Result<(), ApiError> {
    let bad = |why: String| {
        Err(ApiError::bad_request(format!(
            "PodCertificateRequest in version \"{version}\" cannot be handled as a PodCertificateRequest: {why}"
        )))
    };
    let spec = &obj["spec"];
    if !spec.is_null() && !spec.is_object() {
        return bad(
            "json: cannot unmarshal into Go struct field PodCertificateRequest.spec".into(),
        );
    }
    for f in SPEC_STRINGS {
        if !(spec[*f].is_null() || spec[*f].is_string()) {
            return bad(format!(
                "json: cannot unmarshal into Go struct field PodCertificateRequestSpec.spec.{f} of type string"
            ));
        }
    }
    for f in SPEC_BYTES {
        match &spec[*f] {
            Value::Null => {}
            Value::String(s) if b64().decode(s).is_ok() => {}
            Value::String(_) => return bad(format!("illegal base64 data in spec.{f}")),
            _ => {
                return bad(format!(
                    "json: cannot unmarshal into Go struct field PodCertificateRequestSpec.spec.{f} of type []uint8"
                ))
            }
        }
    }
    match &spec["maxExpirationSeconds"] {
        Value::Null => {}
        Value::Number(n) if n.as_i64().is_some_and(|x| i32::try_from(x).is_ok()) => {}
        v => {
            return bad(format!(
                "json: cannot unmarshal {v} into Go struct field PodCertificateRequestSpec.spec.maxExpirationSeconds of type int32"
            ))
        }
    }
    match &spec["unverifiedUserAnnotations"] {
        Value::Null => {}
        Value::Object(m) if m.values().all(Value::is_string) => {}
        _ => {
            return bad(
                "json: cannot unmarshal into Go struct field PodCertificateRequestSpec.spec.unverifiedUserAnnotations of type map[string]string"
                    .into(),
            )
        }
    }
    let status = &obj["status"];
    if !status.is_null() && !status.is_object() {
        return bad(
            "json: cannot unmarshal into Go struct field PodCertificateRequest.status".into(),
        );
    }
    Ok(())
}

/// Re-encodes spec and status the way the typed struct serialises (known fields only, omitempty).
fn normalize(obj: &mut Value) {
    let spec = obj["spec"].clone();
    let mut out = serde_json::Map::new();
    for f in SPEC_STRINGS {
        out.insert((*f).into(), json!(spec[*f].as_str().unwrap_or("")));
    }
    if let Some(n) = spec["maxExpirationSeconds"].as_i64() {
        out.insert("maxExpirationSeconds".into(), json!(n));
    }
    for f in SPEC_BYTES {
        // Not omitempty: an empty []byte is written as null. Re-encoded: Go decodes the bytes and
        // writes them back in canonical base64.
        let bytes = spec[*f]
            .as_str()
            .and_then(|s| b64().decode(s).ok())
            .unwrap_or_default();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            json!(b64().encode(bytes))
        };
        out.insert((*f).into(), v);
    }
    if let Some(m) = spec["unverifiedUserAnnotations"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        out.insert("unverifiedUserAnnotations".into(), Value::Object(m.clone()));
    }
    obj["spec"] = Value::Object(out);
    let status = obj["status"].clone();
    let mut st = serde_json::Map::new();
    if let Some(c) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
        let conds: Vec<Value> = c.iter().map(normalize_condition).collect();
        st.insert("conditions".into(), Value::Array(conds));
    }
    if let Some(s) = status["certificateChain"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        st.insert("certificateChain".into(), json!(s));
    }
    for f in ["notBefore", "beginRefreshAt", "notAfter"] {
        if let Some(s) = status[f].as_str().filter(|s| !s.is_empty()) {
            st.insert(f.into(), json!(s));
        }
    }
    obj["status"] = Value::Object(st);
}

/// metav1.Condition as Go writes it back (all six fields; observedGeneration omitempty).
fn normalize_condition(c: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for f in ["type", "status"] {
        m.insert(f.into(), json!(c[f].as_str().unwrap_or("")));
    }
    if let Some(g) = c["observedGeneration"].as_i64().filter(|g| *g != 0) {
        m.insert("observedGeneration".into(), json!(g));
    }
    m.insert(
        "lastTransitionTime".into(),
        c["lastTransitionTime"]
            .as_str()
            .map_or(Value::Null, |s| json!(s)),
    );
    for f in ["reason", "message"] {
        m.insert(f.into(), json!(c[f].as_str().unwrap_or("")));
    }
    Value::Object(m)
}

/// Decoding through `version` (v1 drops the v1beta1-only fields), defaulting
/// (maxExpirationSeconds 86400) and PrepareForCreate (status cleared).
pub fn prepare_create(obj: &mut Value, version: &str) {
    to_version(obj, version);
    if obj["spec"]["maxExpirationSeconds"].is_null() {
        obj["spec"]["maxExpirationSeconds"] = json!(DEFAULT_MAX_EXPIRATION);
    }
    obj["status"] = json!({});
    normalize(obj);
}

/// PrepareForUpdate of the main resource (status kept) or of /status (spec and most metadata kept).
pub fn prepare_update(new: &mut Value, old: &Value, version: &str, status: bool) {
    if status {
        new["spec"] = old["spec"].clone();
        for f in [
            "deletionTimestamp",
            "generation",
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
    } else {
        to_version(new, version);
        if new["spec"]["maxExpirationSeconds"].is_null() {
            new["spec"]["maxExpirationSeconds"] = json!(DEFAULT_MAX_EXPIRATION);
        }
        new["status"] = old["status"].clone();
    }
    normalize(new);
}

// --- create ---

fn is_kubernetes_signer(s: &str) -> bool {
    let host = s.split('/').next().unwrap_or("");
    host == "kubernetes.io" || host.ends_with(".kubernetes.io")
}

fn label_key_chars(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const LABEL_KEY_REGEX_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// content.IsLabelKey.
fn label_key_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            n
        }
        _ => {
            return vec![format!(
                "a valid label key {LABEL_KEY_REGEX_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 bytes".into());
    }
    if !label_key_chars(name) {
        errs.push(format!("name part {LABEL_KEY_REGEX_MSG}"));
    }
    errs
}

/// ValidateUserAnnotations.
fn validate_user_annotations(m: &serde_json::Map<String, Value>) -> Vec<FieldError> {
    const F: &str = "spec.unverifiedUserAnnotations";
    let mut el = Vec::new();
    let mut size = 0usize;
    for (k, v) in m {
        size += k.len() + v.as_str().map_or(0, str::len);
        let key = k.to_lowercase();
        if key.is_empty() {
            el.push(FieldError::required(F, ""));
            continue;
        }
        let errs = label_key_errors(&key);
        if !errs.is_empty() {
            for e in errs {
                el.push(FieldError::invalid(F, quote(&key), e));
            }
            continue;
        }
        if key.split('/').count() != 2 {
            el.push(FieldError::invalid(
                F,
                quote(&key),
                "must be a domain-prefixed key (such as \"acme.io/foo\")",
            ));
        }
    }
    if size > TOTAL_ANNOTATION_SIZE {
        el.push(FieldError::too_long(F, TOTAL_ANNOTATION_SIZE));
    }
    el
}

fn name_errors(field: &str, value: &str, el: &mut Vec<FieldError>) {
    for m in dns1123_subdomain_errors(value) {
        el.push(FieldError::invalid(field, quote(value), m));
    }
}

fn uid_errors(field: &str, value: &str, el: &mut Vec<FieldError>) {
    if value.is_empty() {
        el.push(FieldError::invalid(
            field,
            quote(value),
            "must not be empty",
        ));
    }
    if value.len() > 128 {
        el.push(FieldError::too_long(field, 128));
    }
}

fn omitted(field: &str, detail: &str) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.into(),
        value: None,
        detail: detail.into(),
    }
}

/// ValidatePodCertificateRequestCreate (metadata.name is checked by the generic create path).
pub fn validate_create(obj: &Value) -> Vec<FieldError> {
    let mut el = Vec::new();
    let signer = spec_str(obj, "signerName");
    el.extend(validate_signer_name("spec.signerName", signer));
    if let Some(m) = obj["spec"]["unverifiedUserAnnotations"].as_object() {
        el.extend(validate_user_annotations(m));
    }
    name_errors("spec.podName", spec_str(obj, "podName"), &mut el);
    uid_errors("spec.podUID", spec_str(obj, "podUID"), &mut el);
    name_errors(
        "spec.serviceAccountName",
        spec_str(obj, "serviceAccountName"),
        &mut el,
    );
    uid_errors(
        "spec.serviceAccountUID",
        spec_str(obj, "serviceAccountUID"),
        &mut el,
    );
    name_errors("spec.nodeName", spec_str(obj, "nodeName"), &mut el);
    uid_errors("spec.nodeUID", spec_str(obj, "nodeUID"), &mut el);
    let Some(max) = obj["spec"]["maxExpirationSeconds"].as_i64() else {
        el.push(FieldError::required(
            "spec.maxExpirationSeconds",
            "must be set",
        ));
        return el;
    };
    let hi = if is_kubernetes_signer(signer) {
        KUBERNETES_MAX_MAX_EXPIRATION
    } else {
        MAX_MAX_EXPIRATION
    };
    if !(MIN_MAX_EXPIRATION..=hi).contains(&max) {
        el.push(FieldError::invalid(
            "spec.maxExpirationSeconds",
            max.to_string(),
            format!("must be in the range [{MIN_MAX_EXPIRATION}, {hi}]"),
        ));
    }
    let stub = spec_bytes(obj, "stubPKCS10Request");
    let pkix = spec_bytes(obj, "pkixPublicKey");
    let pop = spec_bytes(obj, "proofOfPossession");
    if !stub.is_empty() && pkix.is_empty() && pop.is_empty() {
        el.extend(validate_stub(&stub));
    } else if stub.is_empty() && !pkix.is_empty() && !pop.is_empty() {
        el.extend(validate_pkix(&pkix, &pop, spec_str(obj, "podUID")));
    } else {
        el.push(omitted(
            "spec",
            "exactly one of (stubPKCS10Request) or (pkixPublicKey, proofOfPossession) must be set",
        ));
    }
    el
}

// --- keys as Go's crypto/x509 reads them ---

/// The SubjectPublicKeyInfo of a DER PKCS#10 request, if it parses as one.
fn request_spki(der: &[u8]) -> Option<Vec<u8>> {
    use der::{Decode, Encode};
    let req = x509_cert::request::CertReq::from_der(der).ok()?;
    req.info.public_key.to_der().ok()
}

/// validateStubPKCS10Request.
fn validate_stub(stub: &[u8]) -> Vec<FieldError> {
    const F: &str = "spec.stubPKCS10Request";
    if stub.len() > MAX_STUB_SIZE {
        return vec![FieldError::too_long(F, MAX_STUB_SIZE)];
    }
    let invalid = || vec![omitted(F, "must be a valid PKCS#10 CSR")];
    let Some(spki) = request_spki(stub) else {
        return invalid();
    };
    let Ok(req) = openssl::x509::X509Req::from_der(stub) else {
        return invalid();
    };
    let key = match go_public_key(&spki, true) {
        Ok(k) => k,
        Err(_) => return invalid(),
    };
    let key = match key {
        GoKey::Ed25519(k) => k,
        GoKey::Ecdsa(curve, k) => {
            if curve == "P-224" {
                return vec![FieldError::invalid(
                    F,
                    quote(&format!("curve {curve}")),
                    "elliptic public keys must use curve P256, P384, or P521",
                )];
            }
            k
        }
        GoKey::Rsa(bits, e, k) => {
            if bits != 3072 && bits != 4096 {
                return vec![FieldError::invalid(
                    F,
                    quote(&format!("{bits}-bit modulus")),
                    "RSA keys must have modulus size 3072 or 4096",
                )];
            }
            if go_rsa_exponent_error(e).is_some() {
                return vec![omitted(F, "invalid signature")];
            }
            k
        }
        GoKey::Other => {
            return vec![omitted(
                F,
                "unknown public key type; supported types are Ed25519, ECDSA, and RSA",
            )]
        }
    };
    if !req.verify(&key).unwrap_or(false) {
        return vec![omitted(F, "invalid signature")];
    }
    Vec::new()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    openssl::sha::sha256(b).to_vec()
}

fn verify_pop(key: &GoKey, pod_uid: &[u8], pop: &[u8]) -> bool {
    use openssl::pkey_ctx::PkeyCtx;
    match key {
        GoKey::Ed25519(k) => openssl::sign::Verifier::new_without_digest(k)
            .and_then(|mut v| v.verify_oneshot(pop, pod_uid))
            .unwrap_or(false),
        GoKey::Ecdsa(_, k) => {
            let Ok(sig) = openssl::ecdsa::EcdsaSig::from_der(pop) else {
                return false;
            };
            // ecdsa.VerifyASN1 parses strictly: the DER must re-encode identically.
            if sig.to_der().ok().as_deref() != Some(pop) {
                return false;
            }
            k.ec_key()
                .and_then(|ec| sig.verify(&sha256(pod_uid), &ec))
                .unwrap_or(false)
        }
        GoKey::Rsa(_, e, k) => {
            if go_rsa_exponent_error(*e).is_some() {
                return false;
            }
            let run = || -> Result<bool, openssl::error::ErrorStack> {
                let mut ctx = PkeyCtx::new(k)?;
                ctx.verify_init()?;
                ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)?;
                ctx.set_signature_md(openssl::md::Md::sha256())?;
                ctx.set_rsa_mgf1_md(openssl::md::Md::sha256())?;
                // -2: on verification, the salt length is read from the signature (Go's
                // PSSSaltLengthAuto).
                ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::MAXIMUM_LENGTH)?;
                ctx.verify(&sha256(pod_uid), pop)
            };
            run().unwrap_or(false)
        }
        GoKey::Other => false,
    }
}

/// validateDeprecatedPKIXPublicKey.
fn validate_pkix(pkix: &[u8], pop: &[u8], pod_uid: &str) -> Vec<FieldError> {
    const PKIX: &str = "spec.pkixPublicKey";
    const POP: &str = "spec.proofOfPossession";
    if pkix.len() > MAX_KEY_SIZE {
        return vec![FieldError::too_long(PKIX, MAX_KEY_SIZE)];
    }
    if pop.len() > MAX_POP_SIZE {
        return vec![FieldError::too_long(POP, MAX_POP_SIZE)];
    }
    // x509.ParsePKIXPublicKey: no trailing data, known algorithm.
    let whole = {
        use der::Decode;
        x509_cert::spki::SubjectPublicKeyInfoRef::from_der(pkix).is_ok()
    };
    let key = match whole.then(|| go_public_key(pkix, false).ok()).flatten() {
        Some(k) => k,
        None => {
            return vec![FieldError::invalid(
                PKIX,
                go_bytes(Some(pkix)),
                "must be a valid PKIX-serialized public key",
            )]
        }
    };
    match &key {
        GoKey::Ed25519(_) => {}
        GoKey::Ecdsa(curve, _) => {
            if *curve == "P-224" {
                return vec![FieldError::invalid(
                    PKIX,
                    quote(&format!("curve {curve}")),
                    "elliptic public keys must use curve P256 or P384",
                )];
            }
        }
        GoKey::Rsa(bits, _, _) => {
            if *bits != 3072 && *bits != 4096 {
                return vec![FieldError::invalid(
                    PKIX,
                    quote(&format!("{bits}-bit modulus")),
                    "RSA keys must have modulus size 3072 or 4096",
                )];
            }
        }
        GoKey::Other => {
            return vec![FieldError::invalid(
                PKIX,
                go_bytes(Some(pkix)),
                "unknown public key type; supported types are Ed25519, ECDSA, and RSA",
            )]
        }
    }
    if !verify_pop(&key, pod_uid.as_bytes(), pop) {
        return vec![omitted(
            POP,
            "could not verify proof-of-possession signature",
        )];
    }
    Vec::new()
}

// --- NodeRestriction and the Node authorizer ---

/// The node a user is (`system:node:<name>` in group `system:nodes`), as NodeIdentity decides.
pub fn node_identity(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// The Node authorizer's decision for a node on podcertificaterequests: allowed, or no opinion
/// with its reason (RBAC decides then). `stored_node`: the spec.nodeName of the addressed object,
/// for get (the graph's pcr -> node edge).
pub fn node_authorizes(
    node: &str,
    verb: &str,
    subresource: &str,
    field_selector: Option<&str>,
    stored_node: Option<&str>,
) -> Result<(), String> {
    if !subresource.is_empty() {
        return Err("nodes may not access the status subresource of PodCertificateRequests".into());
    }
    match verb {
        "create" => Ok(()),
        "get" if stored_node == Some(node) => Ok(()),
        "get" => Err(format!(
            "no relationship found between node '{node}' and this object"
        )),
        "list" | "watch" => {
            let own = [
                format!("spec.nodeName={node}"),
                format!("spec.nodeName=={node}"),
            ];
            let selected = field_selector
                .is_some_and(|fs| fs.split(',').any(|req| own.iter().any(|o| o == req.trim())));
            if selected {
                Ok(())
            } else {
                Err(
                    "can only list/watch podcertificaterequests with nodeName field selector"
                        .into(),
                )
            }
        }
        _ => Err(format!("nodes may not {verb} podcertificaterequests")),
    }
}

fn internal(message: String) -> ApiError {
    ApiError::new(500, "", message, None)
}

const PODS: &str = "core/pods";
const NODES: &str = "core/nodes";
const SERVICE_ACCOUNTS: &str = "core/serviceaccounts";

/// NodeRestriction's admitPodCertificateRequest for a node creator (nothing for anyone else).
/// Errors that "could be caused by informer lag" are plain errors in Go: 500 with reason Unknown.
pub fn admit_create(
    store: &Store,
    obj: &Value,
    user: &User,
    namespace: &str,
) -> Result<(), ApiError> {
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let forbidden = |why: String| ApiError::forbidden(GR, name, &why);
    let Some(node_name) = node_identity(user).filter(|n| !n.is_empty()) else {
        return Err(forbidden(format!(
            "could not determine node from user {}",
            quote(&user.name)
        )));
    };
    let spec_node = spec_str(obj, "nodeName");
    if spec_node != node_name {
        return Err(forbidden(format!(
            "PodCertificateRequest.Spec.NodeName={}, which is not the requesting node {}",
            quote(spec_node),
            quote(node_name)
        )));
    }
    let pod_name = spec_str(obj, "podName");
    let pod_ref = format!("{namespace}/{pod_name}");
    let Some(node) = store.get(NODES, "", spec_node) else {
        return Err(internal(format!(
            "while retrieving node {} named in the PodCertificateRequest: node {} not found",
            quote(spec_node),
            quote(spec_node)
        )));
    };
    let node_uid = node["metadata"]["uid"].as_str().unwrap_or("");
    if node_uid != spec_str(obj, "nodeUID") {
        return Err(internal(format!(
            "PodCertificateRequest for pod {} names node UID {}, inconsistent with the running node ({})",
            quote(&pod_ref),
            quote(spec_str(obj, "nodeUID")),
            quote(node_uid)
        )));
    }
    let Some(pod) = store.get(PODS, namespace, pod_name) else {
        return Err(internal(format!(
            "while retrieving pod {} named in the PodCertificateRequest: pod {} not found",
            quote(&pod_ref),
            quote(pod_name)
        )));
    };
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    if spec_str(obj, "podUID") != pod_uid {
        return Err(internal(format!(
            "PodCertificateRequest for pod {} contains pod UID ({}) which differs from running pod {}",
            quote(&pod_ref),
            quote(spec_str(obj, "podUID")),
            quote(pod_uid)
        )));
    }
    if pod["spec"]["nodeName"].as_str().unwrap_or("") != spec_node {
        return Err(forbidden(format!(
            "pod {} is not running on node {} named in the PodCertificateRequest",
            quote(&pod_ref),
            quote(spec_node)
        )));
    }
    if pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return Err(forbidden(format!(
            "pod {} is a mirror pod",
            quote(&pod_ref)
        )));
    }
    let pod_sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("");
    let sa_name = spec_str(obj, "serviceAccountName");
    if sa_name != pod_sa {
        return Err(forbidden(format!(
            "PodCertificateRequest for pod {} contains serviceAccountName ({}) that differs from running pod ({})",
            quote(&pod_ref),
            quote(sa_name),
            quote(pod_sa)
        )));
    }
    let sa_ref = format!("{namespace}/{sa_name}");
    let Some(sa) = store.get(SERVICE_ACCOUNTS, namespace, sa_name) else {
        return Err(internal(format!(
            "while retrieving service account {} named in the PodCertificateRequest: serviceaccount {} not found",
            quote(&sa_ref),
            quote(sa_name)
        )));
    };
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap_or("");
    if spec_str(obj, "serviceAccountUID") != sa_uid {
        return Err(internal(format!(
            "PodCertificateRequest for pod {} names service account UID {}, which differs from the running service account ({})",
            quote(&pod_ref),
            quote(spec_str(obj, "serviceAccountUID")),
            quote(sa_uid)
        )));
    }
    let signer = spec_str(obj, "signerName");
    let mounts = pod["spec"]["volumes"].as_array().is_some_and(|vols| {
        vols.iter().any(|v| {
            v["projected"]["sources"].as_array().is_some_and(|srcs| {
                srcs.iter()
                    .any(|s| s["podCertificate"]["signerName"].as_str() == Some(signer))
            })
        })
    });
    let rbac_allows = user.allowed(&super::auth::Attributes {
        verb: "request-serviceaccounts-podcertificate-signer",
        group: GR.group,
        resource: &signer.replace('/', ":"),
        subresource: "",
        name: sa_name,
        namespace,
    });
    if !mounts && !rbac_allows {
        return Err(forbidden(format!(
            "pod {} does not mount a podCertificate projected volume for signer {}",
            quote(&pod_ref),
            quote(signer)
        )));
    }
    Ok(())
}

// --- /status ---

fn conditions(v: &Value) -> Vec<Value> {
    v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_true(v: &Value, t: &str) -> bool {
    conditions(v)
        .iter()
        .any(|c| c["type"] == t && c["status"] == "True")
}

fn is_terminal(v: &Value) -> bool {
    TERMINAL.iter().any(|t| has_true(v, t))
}

fn condition_reason_ok(r: &str) -> bool {
    let b = r.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && (b.len() == 1 || (b[b.len() - 1].is_ascii_alphanumeric() || b[b.len() - 1] == b'_'))
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':'))
}

/// metav1validation.ValidateConditions.
fn validate_conditions(conds: &[Value]) -> Vec<FieldError> {
    let mut el = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in conds.iter().enumerate() {
        let p = format!("status.conditions[{i}]");
        let t = c["type"].as_str().unwrap_or("");
        if seen.contains_key(t) {
            el.push(FieldError::duplicate(p.clone(), t));
        } else {
            seen.insert(t.to_string(), i);
        }
        if t.is_empty() {
            el.push(FieldError::required(format!("{p}.type"), "is required"));
        } else {
            for m in label_key_errors(t) {
                el.push(FieldError::invalid(format!("{p}.type"), quote(t), m));
            }
        }
        let s = c["status"].as_str().unwrap_or("");
        if s.is_empty() {
            el.push(FieldError::required(format!("{p}.status"), ""));
        } else if !["False", "True", "Unknown"].contains(&s) {
            el.push(FieldError::not_supported(
                format!("{p}.status"),
                s,
                &["False", "True", "Unknown"],
            ));
        }
        if let Some(g) = c["observedGeneration"].as_i64().filter(|g| *g < 0) {
            el.push(FieldError::invalid(
                format!("{p}.observedGeneration"),
                g.to_string(),
                "must be greater than or equal to zero",
            ));
        }
        if c["lastTransitionTime"].as_str().unwrap_or("").is_empty() {
            el.push(FieldError::required(format!("{p}.lastTransitionTime"), ""));
        }
        let r = c["reason"].as_str().unwrap_or("");
        if r.is_empty() {
            el.push(FieldError::required(format!("{p}.reason"), ""));
        } else {
            if !condition_reason_ok(r) {
                el.push(FieldError::invalid(
                    format!("{p}.reason"),
                    quote(r),
                    "a condition reason must start with alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName',  or 'ReasonA,ReasonB',  or 'ReasonA:ReasonB', regex used for validation is '[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?')",
                ));
            }
            if r.len() > 1024 {
                el.push(FieldError::too_long(format!("{p}.reason"), 1024));
            }
        }
        if c["message"].as_str().unwrap_or("").len() > 32 * 1024 {
            el.push(FieldError::too_long(format!("{p}.message"), 32 * 1024));
        }
    }
    el
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// How Go prints a time.Time field value (json.Marshal: RFC 3339, quoted).
fn go_time(t: chrono::DateTime<chrono::Utc>) -> String {
    quote(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn asn1_time(t: &openssl::asn1::Asn1TimeRef) -> Option<chrono::DateTime<chrono::Utc>> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    chrono::DateTime::from_timestamp(i64::from(d.days) * 86400 + i64::from(d.secs), 0)
}

/// The key the request names: from the stub request, else the v1beta1 pkixPublicKey.
fn requested_key(old: &Value) -> Result<Option<PKey<Public>>, FieldError> {
    let stub = spec_bytes(old, "stubPKCS10Request");
    if !stub.is_empty() {
        let key = openssl::x509::X509Req::from_der(&stub)
            .and_then(|r| r.public_key())
            .map_err(|_| omitted("spec.stubPKCS10Request", "must be a valid PKCS#10 CSR"))?;
        return Ok(Some(key));
    }
    let pkix = spec_bytes(old, "pkixPublicKey");
    PKey::public_key_from_der(&pkix).map(Some).map_err(|_| {
        omitted(
            "spec.pkixPublicKey",
            "must be a valid PKIX-serialized public key",
        )
    })
}

/// ValidatePodCertificateRequestStatusUpdate (the strategy has already reset spec and metadata).
pub fn validate_status_update(
    new: &Value,
    old: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<FieldError> {
    let mut el = Vec::new();
    let conds = conditions(new);
    let mut known = 0;
    for (i, c) in conds.iter().enumerate() {
        let t = c["type"].as_str().unwrap_or("");
        if TERMINAL.contains(&t) {
            known += 1;
            if known > 1 {
                el.push(FieldError::invalid(
                    format!("status.conditions.[{i}].type"),
                    quote(t),
                    "There may be at most one condition with type \"Issued\", \"Denied\", or \"Failed\"",
                ));
            }
            let s = c["status"].as_str().unwrap_or("");
            if s != "True" {
                el.push(FieldError::not_supported(
                    format!("status.conditions.[{i}].status"),
                    s,
                    &["True"],
                ));
            }
        } else {
            el.push(FieldError::not_supported(
                format!("status.conditions.[{i}].type"),
                t,
                TERMINAL,
            ));
        }
    }
    el.extend(validate_conditions(&conds));
    if !el.is_empty() {
        return el;
    }
    if is_terminal(old) {
        if new["status"] != old["status"] {
            el.push(omitted(
                "status",
                "immutable after PodCertificateRequest is issued, denied, or failed",
            ));
        }
        return el;
    }
    if has_true(new, "Denied") || has_true(new, "Failed") {
        let only_conditions = new["status"]
            .as_object()
            .is_none_or(|m| m.keys().all(|k| k == "conditions"));
        if !only_conditions {
            el.push(omitted(
                "status",
                "non-condition status fields must be empty when denying or failing the PodCertificateRequest",
            ));
        }
        return el;
    }
    if has_true(new, "Issued") {
        return validate_issued(new, old, now);
    }
    if new["status"] != old["status"] {
        el.push(omitted(
            "status",
            "status is immutable unless transitioning to \"Issued\", \"Denied\", or \"Failed\"",
        ));
    }
    el
}

fn validate_issued(
    new: &Value,
    old: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<FieldError> {
    const CHAIN: &str = "status.certificateChain";
    const NB: &str = "status.notBefore";
    const NA: &str = "status.notAfter";
    const BRA: &str = "status.beginRefreshAt";
    let chain = new["status"]["certificateChain"].as_str().unwrap_or("");
    let chain_q = quote(chain);
    if chain.len() > MAX_CHAIN_SIZE {
        return vec![FieldError::too_long(CHAIN, MAX_CHAIN_SIZE)];
    }
    let blocks = super::csr::pem_blocks(chain.as_bytes());
    let Some(leaf_block) = blocks.first() else {
        return vec![FieldError::invalid(
            CHAIN,
            chain_q,
            "issued certificate chain must contain at least one certificate",
        )];
    };
    if leaf_block.label != "CERTIFICATE" {
        return vec![FieldError::invalid(
            CHAIN,
            chain_q,
            "issued certificate chain must consist entirely of CERTIFICATE PEM blocks",
        )];
    }
    let Ok(leaf) = openssl::x509::X509::from_der(&leaf_block.der) else {
        return vec![FieldError::invalid(
            CHAIN,
            chain_q,
            "leaf certificate does not parse as valid X.509",
        )];
    };
    let mut el = Vec::new();
    if let Some(sans) = leaf.subject_alt_names() {
        for gn in sans.iter() {
            if let Some(d) = gn.dnsname() {
                if d.is_empty() {
                    el.push(FieldError::invalid(
                        CHAIN,
                        quote(d),
                        "leaf certificate should not contain empty DNSName",
                    ));
                }
                if d.contains("..") {
                    el.push(FieldError::invalid(
                        CHAIN,
                        quote(d),
                        "leaf certificate's DNSName should not contain '..'",
                    ));
                }
                if d.starts_with('.') || d.ends_with('.') {
                    el.push(FieldError::invalid(
                        CHAIN,
                        quote(d),
                        "leaf certificate's DNSName should not start or end with '.'",
                    ));
                }
            }
        }
    }
    let want = match requested_key(old) {
        Ok(k) => k,
        Err(e) => {
            el.push(e);
            return el;
        }
    };
    let leaf_key = leaf.public_key().ok();
    if let (Some(want), Some(got)) = (&want, &leaf_key) {
        if !want.public_eq(got) {
            el.push(FieldError::invalid(
                CHAIN,
                chain_q,
                "leaf certificate was not issued to the requested public key",
            ));
            return el;
        }
    }
    let time = |f: &str| new["status"][f].as_str().and_then(parse_time);
    let (nb, na, bra) = (time("notBefore"), time("notAfter"), time("beginRefreshAt"));
    if nb.is_none() {
        el.push(FieldError::required(
            NB,
            "must be present and consistent with the issued certificate",
        ));
    }
    if na.is_none() {
        el.push(FieldError::required(
            NA,
            "must be present and consistent with the issued certificate",
        ));
    }
    if bra.is_none() {
        el.push(FieldError::required(
            BRA,
            "must be present and in the range [notbefore+10min, notafter-10min]",
        ));
    }
    let (Some(nb), Some(na), Some(bra)) = (nb, na, bra) else {
        return el;
    };
    if !el.is_empty() {
        return el;
    }
    let (Some(leaf_nb), Some(leaf_na)) =
        (asn1_time(leaf.not_before()), asn1_time(leaf.not_after()))
    else {
        return vec![FieldError::invalid(
            CHAIN,
            chain_q,
            "leaf certificate does not parse as valid X.509",
        )];
    };
    if nb != leaf_nb {
        return vec![FieldError::invalid(
            NB,
            go_time(nb),
            "must be set to the NotBefore time encoded in the leaf certificate",
        )];
    }
    let skew = chrono::Duration::minutes(5);
    if !(nb > now - skew && nb < now + skew) {
        return vec![FieldError::invalid(
            NB,
            go_time(nb),
            "must be set to within 5 minutes of kube-apiserver's current time",
        )];
    }
    if na != leaf_na {
        return vec![FieldError::invalid(
            NA,
            go_time(na),
            "must be set to the NotAfter time encoded in the leaf certificate",
        )];
    }
    let lifetime = leaf_na - leaf_nb;
    let nanos = lifetime.num_nanoseconds().unwrap_or(i64::MAX).to_string();
    if lifetime < chrono::Duration::hours(1) {
        return vec![FieldError::invalid(
            CHAIN,
            nanos,
            "leaf certificate lifetime must be >= 1 hour",
        )];
    }
    let max = new["spec"]["maxExpirationSeconds"].as_i64().unwrap_or(0);
    if lifetime > chrono::Duration::seconds(max) {
        return vec![FieldError::invalid(
            CHAIN,
            nanos,
            format!("leaf certificate lifetime must be <= spec.maxExpirationSeconds ({max})"),
        )];
    }
    let ten = chrono::Duration::minutes(10);
    if bra < nb + ten {
        return vec![FieldError::invalid(
            BRA,
            go_time(bra),
            "must be at least 10 minutes after status.notBefore",
        )];
    }
    if bra > na - ten {
        return vec![FieldError::invalid(
            BRA,
            go_time(bra),
            "must be at least 10 minutes before status.notAfter",
        )];
    }
    for b in &blocks[1..] {
        if b.label != "CERTIFICATE" {
            return vec![FieldError::invalid(
                CHAIN,
                chain_q,
                "issued certificate chain must consist entirely of CERTFICATE PEM blocks",
            )];
        }
        if openssl::x509::X509::from_der(&b.der).is_err() {
            return vec![FieldError::invalid(
                CHAIN,
                chain_q,
                "intermediate certificate does not parse as valid X.509",
            )];
        }
    }
    el
}

/// StatusStrategy.ValidateUpdate's authorization: changing the status needs `sign` on the signer.
pub fn sign_check(new: &Value, old: &Value, user: &User) -> Vec<FieldError> {
    if new["status"] == old["status"] {
        return Vec::new();
    }
    let signer = spec_str(old, "signerName");
    if user.allowed_for_signer("sign", signer) {
        return Vec::new();
    }
    vec![FieldError::forbidden(
        "spec.signerName",
        format!(
            "User {} is not permitted to \"sign\" for signer {}",
            quote(&user.name),
            quote(signer)
        ),
    )]
}

/// ValidatePodCertificateRequestUpdate (main resource): the spec is immutable.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    if new["spec"] != old["spec"] {
        return vec![omitted("spec", "field is immutable")];
    }
    Vec::new()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openssl::pkey::Private;

    fn kubelet_proof(key: &PKey<Private>, uid: &str) -> Vec<u8> {
        use openssl::pkey_ctx::PkeyCtx;
        match key.id() {
            openssl::pkey::Id::ED25519 => openssl::sign::Signer::new_without_digest(key)
                .unwrap()
                .sign_oneshot_to_vec(uid.as_bytes())
                .unwrap(),
            openssl::pkey::Id::EC => {
                openssl::ecdsa::EcdsaSig::sign(&sha256(uid.as_bytes()), &key.ec_key().unwrap())
                    .unwrap()
                    .to_der()
                    .unwrap()
            }
            _ => {
                let mut ctx = PkeyCtx::new(key).unwrap();
                ctx.sign_init().unwrap();
                ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
                    .unwrap();
                ctx.set_signature_md(openssl::md::Md::sha256()).unwrap();
                ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
                let mut sig = Vec::new();
                ctx.sign_to_vec(&sha256(uid.as_bytes()), &mut sig).unwrap();
                sig
            }
        }
    }

    fn ec(nid: openssl::nid::Nid) -> PKey<Private> {
        let g = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
        PKey::from_ec_key(openssl::ec::EcKey::generate(&g).unwrap()).unwrap()
    }

    #[test]
    fn proofs_of_possession_verify_as_go_checks_them() {
        use openssl::nid::Nid;
        let keys = [
            PKey::generate_ed25519().unwrap(),
            ec(Nid::X9_62_PRIME256V1),
            ec(Nid::SECP384R1),
            // SHA-256 on P-521 too: the digest is shorter than the order.
            ec(Nid::SECP521R1),
            PKey::from_rsa(openssl::rsa::Rsa::generate(3072).unwrap()).unwrap(),
        ];
        for key in &keys {
            let spki = key.public_key_to_der().unwrap();
            let proof = kubelet_proof(key, "pod-uid-1");
            assert!(
                validate_pkix(&spki, &proof, "pod-uid-1").is_empty(),
                "{:?}",
                key.id()
            );
            let errs = validate_pkix(&spki, &proof, "pod-uid-2");
            assert_eq!(errs.len(), 1, "{:?}", key.id());
            assert_eq!(errs[0].to_string(), "spec.proofOfPossession: Invalid value: could not verify proof-of-possession signature");
        }
        // A P-256 key named as P-224 would be: the curve check comes before the proof.
        let p224 = ec(Nid::SECP224R1);
        let errs = validate_pkix(&p224.public_key_to_der().unwrap(), b"x", "u");
        assert_eq!(errs[0].to_string(), "spec.pkixPublicKey: Invalid value: \"curve P-224\": elliptic public keys must use curve P256 or P384");
    }

    fn status(conditions: Value, rest: Value) -> Value {
        let mut s = rest;
        s["conditions"] = conditions;
        json!({"spec": {"signerName": "example.com/x", "maxExpirationSeconds": 86400}, "status": s})
    }

    fn cond(t: &str) -> Value {
        json!([{"type": t, "status": "True", "reason": "R", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    }

    #[test]
    fn terminal_status_is_immutable_and_denial_carries_only_conditions() {
        let now = chrono::Utc::now();
        let pending = json!({"spec": {}, "status": {}});
        let denied = status(cond("Denied"), json!({}));
        assert!(validate_status_update(&denied, &pending, now).is_empty());
        let with_chain = status(cond("Failed"), json!({"certificateChain": "x"}));
        assert_eq!(
            validate_status_update(&with_chain, &pending, now)[0].to_string(),
            "status: Invalid value: non-condition status fields must be empty when denying or failing the PodCertificateRequest"
        );
        let failed = status(cond("Failed"), json!({}));
        assert_eq!(
            validate_status_update(&failed, &denied, now)[0].to_string(),
            "status: Invalid value: immutable after PodCertificateRequest is issued, denied, or failed"
        );
        assert!(validate_status_update(&denied, &denied, now).is_empty());
    }

    #[test]
    fn the_node_authorizer_allows_create_own_gets_and_selected_lists() {
        assert!(node_authorizes("n1", "create", "", None, None).is_ok());
        assert!(node_authorizes("n1", "get", "", None, Some("n1")).is_ok());
        assert!(node_authorizes("n1", "get", "", None, Some("n2")).is_err());
        assert!(node_authorizes("n1", "list", "", Some("spec.nodeName=n1"), None).is_ok());
        assert!(node_authorizes("n1", "watch", "", Some("spec.nodeName=n2"), None).is_err());
        assert!(node_authorizes("n1", "update", "status", None, Some("n1")).is_err());
        assert!(node_authorizes("n1", "delete", "", None, Some("n1")).is_err());
    }
}
