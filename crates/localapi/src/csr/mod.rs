//! CertificateSigningRequest semantics of kube-apiserver (k8s-csr-rules.md §3.B–3.F): create and
//! update strategies per write path (main, /status, /approval), validation V-1…V-7, C-1…C-8,
//! K-1…K-7 with the exact field paths and messages, and the CertificateApproval /
//! CertificateSigning / CertificateSubjectRestriction admission checks.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::auth::User;
use super::status::{go_bytes, quote, ApiError, FieldError, Gr};

pub const GR: Gr<'static> = Gr {
    group: "certificates.k8s.io",
    resource: "certificatesigningrequests",
    kind: "CertificateSigningRequest",
};

/// `allValidUsages`, sorted bytewise.
pub const VALID_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    Main,
    Status,
    Approval,
}

impl WritePath {
    pub fn from_subresource(s: &str) -> Option<Self> {
        match s {
            "" => Some(WritePath::Main),
            "status" => Some(WritePath::Status),
            "approval" => Some(WritePath::Approval),
            _ => None,
        }
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn bytes_field(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

fn conditions(v: &Value) -> Vec<Value> {
    v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cond_type(c: &Value) -> &str {
    c["type"].as_str().unwrap_or("")
}

mod decode;
mod x509;

mod gokey;
pub use decode::*;
pub use gokey::*;
pub use x509::*;

/// Create strategy: identity from the authenticated user, status wiped (3.B.2).
pub fn prepare_create(obj: &mut Value, user: &User) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if let Some(m) = spec.as_object_mut() {
        for f in ["username", "uid", "groups", "extra"] {
            m.remove(f);
        }
        m.insert("username".into(), json!(user.name));
        m.insert("uid".into(), json!(user.uid));
        m.insert("groups".into(), json!(user.groups));
        if !user.extra.is_empty() {
            m.insert("extra".into(), json!(user.extra));
        }
    }
    obj["status"] = json!({});
}

fn preserve_instances(new: &mut [Value], old: &[Value], t: &str) {
    let oi: Vec<usize> = old
        .iter()
        .enumerate()
        .filter(|(_, c)| cond_type(c) == t)
        .map(|(i, _)| i)
        .collect();
    let ni: Vec<usize> = new
        .iter()
        .enumerate()
        .filter(|(_, c)| cond_type(c) == t)
        .map(|(i, _)| i)
        .collect();
    if oi.len() != ni.len() {
        return;
    }
    for (o, n) in oi.iter().zip(ni.iter()) {
        new[*n] = old[*o].clone();
    }
}

fn populate_timestamps(new: &mut [Value], old: &[Value], now: &str) {
    for c in new.iter_mut() {
        if c["lastUpdateTime"].as_str().unwrap_or("").is_empty() {
            c["lastUpdateTime"] = json!(now);
        }
        if c["lastTransitionTime"].as_str().unwrap_or("").is_empty() {
            let ltt = old
                .iter()
                .find(|o| {
                    o["type"] == c["type"]
                        && o["status"] == c["status"]
                        && !o["lastTransitionTime"].as_str().unwrap_or("").is_empty()
                })
                .map(|o| o["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now));
            c["lastTransitionTime"] = ltt;
        }
    }
}

/// PrepareForUpdate of the three strategies (3.D): what each path keeps from the stored object.
pub fn prepare_update(new: &mut Value, old: &Value, path: WritePath, now: &str) {
    new["spec"] = old["spec"].clone();
    match path {
        WritePath::Main => new["status"] = old["status"].clone(),
        WritePath::Status => {
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            let oldc = conditions(old);
            let mut c = conditions(new);
            preserve_instances(&mut c, &oldc, "Approved");
            preserve_instances(&mut c, &oldc, "Denied");
            populate_timestamps(&mut c, &oldc, now);
            new["status"]["conditions"] = Value::Array(c);
        }
        WritePath::Approval => {
            let oldc = conditions(old);
            let mut c = conditions(new);
            populate_timestamps(&mut c, &oldc, now);
            new["status"] = old["status"].clone();
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = Value::Array(c);
        }
    }
    normalize(new);
}

/// validateCertificateSigningRequest plus, for updates, validateCertificateSigningRequestUpdate.
/// Metadata checks are done by the caller (generic for every resource).
pub fn validate(new: &Value, old: Option<&Value>, path: WritePath) -> Vec<FieldError> {
    let mut el = Vec::new();
    let spec = &new["spec"];
    let old_conds = old.map(conditions).unwrap_or_default();
    let old_has = |t: &str| old_conds.iter().filter(|c| cond_type(c) == t).count();

    // Compatibility options (getValidationOptions): rules the stored object already breaks are relaxed.
    let old_usages: Vec<&str> = old
        .and_then(|o| o["spec"]["usages"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let allow_unknown_usages = old_usages.iter().any(|u| !VALID_USAGES.contains(u));
    let allow_dup_usages = old_usages
        .iter()
        .enumerate()
        .any(|(i, u)| old_usages[..i].contains(u));
    let allow_legacy =
        old.is_some_and(|o| o["spec"]["signerName"] == "kubernetes.io/legacy-unknown");
    let allow_dup_types = old_conds
        .iter()
        .enumerate()
        .any(|(i, c)| old_conds[..i].iter().any(|p| cond_type(p) == cond_type(c)));
    let allow_empty_type = old_conds.iter().any(|c| cond_type(c).is_empty());
    let allow_both = old_has("Approved") > 0 && old_has("Denied") > 0;

    let request = bytes_field(&spec["request"]);
    if let Err(e) = check_request(&request) {
        let value = spec["request"].as_str().map(|_| request.as_slice());
        el.push(FieldError::invalid("spec.request", go_bytes(value), e));
    }
    let usages: Vec<&str> = spec["usages"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        el.push(FieldError::required("spec.usages", ""));
    }
    if !allow_unknown_usages {
        for (i, u) in usages.iter().enumerate() {
            if !VALID_USAGES.contains(u) {
                el.push(FieldError::not_supported(
                    format!("spec.usages[{i}]"),
                    u,
                    VALID_USAGES,
                ));
            }
        }
    }
    if !allow_dup_usages {
        for (i, u) in usages.iter().enumerate() {
            if usages[..i].contains(u) {
                el.push(FieldError::duplicate(format!("spec.usages[{i}]"), u));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or("");
    if !allow_legacy && signer == "kubernetes.io/legacy-unknown" {
        el.push(FieldError::invalid(
            "spec.signerName",
            quote(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        el.extend(validate_signer_name("spec.signerName", signer));
    }
    if let Some(secs) = spec["expirationSeconds"].as_i64() {
        if secs < 600 {
            el.push(FieldError::invalid(
                "spec.expirationSeconds",
                secs.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }

    // Conditions (C-1…C-6).
    let conds = conditions(new);
    let mut seen: Vec<&str> = Vec::new();
    let (mut has_approved, mut has_denied) = (false, false);
    for (i, c) in conds.iter().enumerate() {
        let t = cond_type(c);
        let s = c["status"].as_str().unwrap_or("");
        if !allow_empty_type && t.is_empty() {
            el.push(FieldError::required(
                format!("status.conditions[{i}].type"),
                "",
            ));
        }
        let allowed: &[&str] = if matches!(t, "Approved" | "Denied" | "Failed") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if s.is_empty() {
            el.push(FieldError::required(
                format!("status.conditions[{i}].status"),
                "",
            ));
        } else if !allowed.contains(&s) {
            el.push(FieldError::not_supported(
                format!("status.conditions[{i}].status"),
                s,
                allowed,
            ));
        }
        match t {
            "Approved" => has_approved = true,
            "Denied" => has_denied = true,
            _ => {}
        }
        if !allow_dup_types {
            if seen.contains(&t) {
                el.push(FieldError::duplicate(
                    format!("status.conditions[{i}].type"),
                    t,
                ));
            }
            seen.push(t);
        }
    }

    // Certificate format (K-1…K-5), checked only when it changed.
    let cert = bytes_field(&new["status"]["certificate"]);
    let old_cert = old
        .map(|o| bytes_field(&o["status"]["certificate"]))
        .unwrap_or_default();
    if cert != old_cert {
        if let Err(e) = check_certificate(&cert) {
            el.push(FieldError::invalid(
                "status.certificate",
                quote("<certificate data>"),
                e,
            ));
        }
    }

    let union = approved_denied_union(has_approved && has_denied && !allow_both);
    if old.is_none() {
        el.extend(union);
        return el;
    }
    for t in ["Approved", "Denied", "Failed"] {
        let n = conds.iter().filter(|c| cond_type(c) == t).count();
        if n < old_has(t) {
            el.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {}", quote(t)),
            ));
        }
    }
    if path != WritePath::Approval {
        for t in ["Approved", "Denied"] {
            let newc: Vec<&Value> = conds.iter().filter(|c| cond_type(c) == t).collect();
            let oldc: Vec<&Value> = old_conds.iter().filter(|c| cond_type(c) == t).collect();
            if newc.len() > oldc.len() {
                el.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not add a condition of type {}", quote(t)),
                ));
            } else if newc.len() == oldc.len() && newc != oldc {
                el.push(FieldError::forbidden(
                    "status.conditions",
                    format!(
                        "updates may not modify a condition of type {}\n{}",
                        quote(t),
                        diff_text(&oldc, &newc)
                    ),
                ));
            }
        }
    }
    if cert != old_cert {
        if path != WritePath::Status {
            el.push(FieldError::forbidden(
                "status.certificate",
                "updates may not set certificate content",
            ));
        } else if !old_cert.is_empty() {
            el.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    el.extend(union);
    el
}

/// C-5 as kube-apiserver 1.37 reports it: the handwritten "Approved and Denied conditions are
/// mutually exclusive" errors are covered by the declarative `+k8s:zeroOrOneOfMember` union on
/// `status.conditions` (DeclarativeValidationBeta, on by default), whose single error replaces them
/// and comes after every handwritten error. It is not re-checked when the stored object already had
/// both (the union membership did not change).
fn approved_denied_union(both: bool) -> Option<FieldError> {
    const MEMBERS: [&str; 2] = [
        r#"conditions[{"type": "Approved"}]"#,
        r#"conditions[{"type": "Denied"}]"#,
    ];
    both.then(|| {
        FieldError::invalid(
            "status.conditions",
            quote(&format!("{{{}}}", MEMBERS.join(", "))),
            format!(
                "must specify at most one of: {}",
                MEMBERS
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn diff_text(old: &[&Value], new: &[&Value]) -> String {
    format!(
        "  []certificates.CertificateSigningRequestCondition{{\n-\t{}\n+\t{}\n  }}",
        serde_json::to_string(old).unwrap_or_default(),
        serde_json::to_string(new).unwrap_or_default()
    )
}

/// Admission on create: CertificateSubjectRestriction (3.F.4).
pub fn admit_create(obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if obj["spec"]["signerName"] != "kubernetes.io/kube-apiserver-client" {
        return Ok(());
    }
    let request = bytes_field(&obj["spec"]["request"]);
    let block = pem_blocks(&request).into_iter().next();
    let req = block
        .filter(|b| b.label == "CERTIFICATE REQUEST")
        .and_then(|b| openssl::x509::X509Req::from_der(&b.der).ok());
    let Some(req) = req else {
        return Err(ApiError::forbidden(
            GR,
            name,
            "failed to parse CSR: PEM block type must be CERTIFICATE REQUEST",
        ));
    };
    let masters = req
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONNAME)
        .any(|e| e.data().as_slice() == b"system:masters");
    if masters {
        return Err(ApiError::forbidden(
            GR,
            name,
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
        ));
    }
    Ok(())
}

/// Admission on update: CertificateApproval on /approval, CertificateSigning on /status (3.F.2–3).
pub fn admit_update(
    new: &Value,
    old: &Value,
    path: WritePath,
    user: &User,
) -> Result<(), ApiError> {
    let name = old["metadata"]["name"].as_str().unwrap_or("");
    let signer = old["spec"]["signerName"].as_str().unwrap_or("");
    match path {
        WritePath::Main => Ok(()),
        WritePath::Approval => {
            if user.allowed_for_signer("approve", signer) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    GR,
                    name,
                    &format!(
                        "user not permitted to approve requests with signerName {}",
                        quote(signer)
                    ),
                ))
            }
        }
        WritePath::Status => {
            let same = new["status"]["certificate"] == old["status"]["certificate"]
                && conditions(new) == conditions(old);
            if same || user.allowed_for_signer("sign", signer) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    GR,
                    name,
                    &format!(
                        "user not permitted to sign requests with signerName {}",
                        quote(signer)
                    ),
                ))
            }
        }
    }
}

/// The CONDITION column of `kubectl get csr` (printers extractCSRStatus).
pub fn condition_summary(obj: &Value) -> String {
    let conds = conditions(obj);
    let has = |t: &str| conds.iter().any(|c| cond_type(c) == t);
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if !obj["status"]["certificate"]
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        s.push_str(",Issued");
    }
    s
}
