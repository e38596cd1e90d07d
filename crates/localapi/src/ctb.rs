//! ClusterTrustBundle rules (new-apis.md §1.3): signer-linked naming, signerName format and
//! immutability, trust bundle contents, and the ClusterTrustBundleAttest admission check.

use serde_json::Value;

use super::auth::User;
use super::csr::{dns1123_subdomain_errors, pem_blocks, validate_signer_name};
use super::status::{quote, ApiError, FieldError, Gr};

pub const GR: Gr<'static> = Gr {
    group: "certificates.k8s.io",
    resource: "clustertrustbundles",
    kind: "ClusterTrustBundle",
};

const MAX_TRUST_BUNDLE_SIZE: usize = 1024 * 1024;

fn signer(v: &Value) -> &str {
    v["spec"]["signerName"].as_str().unwrap_or("")
}

/// ValidateClusterTrustBundleName: errors for `metadata.name`.
fn name_errors(name: &str, signer_name: &str) -> Vec<String> {
    if signer_name.is_empty() {
        if name.contains(':') {
            return vec![
                "ClusterTrustBundle without signer name must not have \":\" in its name".into(),
            ];
        }
        return dns1123_subdomain_errors(name);
    }
    let prefix = format!("{}:", signer_name.replace('/', ":"));
    match name.strip_prefix(&prefix) {
        Some(rest) => dns1123_subdomain_errors(rest),
        None => vec![format!(
            "ClusterTrustBundle for signerName {signer_name} must be named with prefix {prefix}"
        )],
    }
}

fn is_ca(der: &[u8]) -> Option<(bool, bool)> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let exts = cert
        .tbs_certificate()
        .extensions()
        .cloned()
        .unwrap_or_default();
    for e in exts {
        if e.extn_id.to_string() == "2.5.29.19" {
            let bc =
                x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()?;
            return Some((bc.ca, true));
        }
    }
    Some((false, false))
}

fn validate_trust_bundle(bundle: &str) -> Vec<FieldError> {
    const F: &str = "spec.trustBundle";
    let omitted = quote("<value omitted>");
    let mut el = Vec::new();
    if bundle.len() > MAX_TRUST_BUNDLE_SIZE {
        el.push(FieldError::too_long(F, MAX_TRUST_BUNDLE_SIZE));
        return el;
    }
    let blocks = pem_blocks(bundle.as_bytes());
    let mut seen: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.label != "CERTIFICATE" {
            el.push(FieldError::invalid(
                F,
                omitted.clone(),
                format!("entry {i} has bad block type: {}", b.label),
            ));
            continue;
        }
        if b.has_headers {
            el.push(FieldError::invalid(
                F,
                omitted.clone(),
                format!("entry {i} has PEM block headers"),
            ));
            continue;
        }
        match is_ca(&b.der) {
            None => {
                el.push(FieldError::invalid(
                    F,
                    omitted.clone(),
                    format!("entry {i} does not parse as X.509"),
                ));
                continue;
            }
            Some((false, _)) => {
                el.push(FieldError::invalid(
                    F,
                    omitted.clone(),
                    format!("entry {i} does not have the CA bit set"),
                ));
                continue;
            }
            Some((true, _)) => {}
        }
        match seen.iter_mut().find(|(d, _)| *d == b.der) {
            Some((_, idx)) => idx.push(i),
            None => seen.push((b.der.clone(), vec![i])),
        }
    }
    if blocks.is_empty() && el.is_empty() {
        el.push(FieldError::invalid(
            F,
            omitted.clone(),
            "at least one trust anchor must be provided",
        ));
    }
    for (_, idx) in seen {
        if idx.len() > 1 {
            let list: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
            el.push(FieldError::invalid(
                F,
                omitted.clone(),
                format!("duplicate trust anchor (indices [{}])", list.join(" ")),
            ));
        }
    }
    el
}

/// Create/update validation. Bundle parsing is skipped when an update leaves it unchanged.
pub fn validate(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut el = Vec::new();
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    let s = signer(new);
    if !name.is_empty() {
        for m in name_errors(name, s) {
            el.push(FieldError::invalid("metadata.name", quote(name), m));
        }
    }
    if !s.is_empty() {
        el.extend(validate_signer_name("spec.signerName", s));
    }
    let bundle = new["spec"]["trustBundle"].as_str().unwrap_or("");
    let unchanged = old.is_some_and(|o| o["spec"]["trustBundle"].as_str().unwrap_or("") == bundle);
    if !unchanged {
        el.extend(validate_trust_bundle(bundle));
    }
    if let Some(o) = old {
        if signer(o) != s {
            el.push(FieldError::invalid(
                "spec.signerName",
                quote(s),
                "field is immutable",
            ));
        }
    }
    el
}

fn without_gc_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        for f in [
            "ownerReferences",
            "finalizers",
            "resourceVersion",
            "managedFields",
        ] {
            m.remove(f);
        }
    }
    v
}

/// ClusterTrustBundleAttest: writing a signer-linked bundle needs `attest` on the signer.
pub fn admit(new: &Value, old: Option<&Value>, user: &User) -> Result<(), ApiError> {
    let s = signer(new);
    if s.is_empty() {
        return Ok(());
    }
    if let Some(o) = old {
        if without_gc_fields(o) == without_gc_fields(new) {
            return Ok(());
        }
    }
    if user.allowed_for_signer("attest", s) {
        return Ok(());
    }
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::forbidden(
        GR,
        name,
        &format!("user not permitted to attest for signerName {}", quote(s)),
    ))
}
