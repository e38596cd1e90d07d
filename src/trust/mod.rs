//! Trust distribution: the ClusterTrustBundles that let clients verify what each signer issues.
//!
//! This file is pure: from a signer's loaded CA it works out the bundle that should exist (name,
//! labels, PEM) and which existing bundles are ours to replace or delete. `publish.rs` carries that
//! out against the apiserver, on the leader only.
//!
//! Rules from kube-apiserver (`ValidateClusterTrustBundleName`, `validateTrustBundle`) that shape the
//! output: a signer-linked bundle is named `<signerName with / replaced by :>:<suffix>`; the trust
//! bundle is PEM `CERTIFICATE` blocks without headers, each a CA, no duplicates, at least one.

pub mod publish;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ca::{pem, SigningCa};

/// The label every bundle we publish carries; a bundle without it is never touched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "csr-signer";
/// The stage label consumers select in a `clusterTrustBundle` projected volume.
pub const STAGE_LABEL: &str = "csr-signer/stage";

/// `trustBundles` in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrustBundleSettings {
    /// Publish a ClusterTrustBundle per signer (needs `attest` on the signerName and write access to
    /// clustertrustbundles). Off unless configured: a signer upgraded in place keeps working with
    /// the permissions it had.
    pub enabled: bool,
    /// Last part of each bundle's name, and the value of its `csr-signer/stage` label.
    pub stage: String,
    /// Also publish the intermediates (the signing CA when it is not a root, and the chain file).
    /// Off: clients should anchor on roots; the chain comes with every certificate.
    pub include_intermediates: bool,
    /// Extra labels on every bundle (the managed-by and stage labels cannot be overridden).
    pub labels: BTreeMap<String, String>,
    /// How often the published bundles are compared with the CAs even when nothing changed here
    /// (someone may have edited or deleted them).
    pub resync_seconds: u64,
}

impl Default for TrustBundleSettings {
    fn default() -> Self {
        TrustBundleSettings {
            enabled: false,
            stage: "live".into(),
            include_intermediates: false,
            labels: BTreeMap::new(),
            resync_seconds: 300,
        }
    }
}

impl TrustBundleSettings {
    /// Checks what the apiserver would otherwise refuse at every sync. The error is (key, message)
    /// relative to `trustBundles`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !is_dns1123_subdomain(&self.stage) || self.stage.contains('.') || self.stage.len() > 63 {
            return Err((
                "stage".into(),
                format!(
                    "{:?} must be a DNS label (lower case letters, digits and '-'; it is a label value and part of the bundle name)",
                    self.stage
                ),
            ));
        }
        for key in self.labels.keys() {
            if key == MANAGED_BY_LABEL || key == STAGE_LABEL {
                return Err((
                    format!("labels.{key}"),
                    "is set by csr-signer and cannot be overridden".into(),
                ));
            }
        }
        if self.resync_seconds == 0 {
            return Err(("resyncSeconds".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The signer-linked name: `example.com/mtls` + `live` → `example.com:mtls:live`.
pub fn bundle_name(signer: &str, stage: &str) -> String {
    format!("{}:{stage}", signer.replace('/', ":"))
}

/// One bundle as it should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    pub signer: String,
    pub labels: BTreeMap<String, String>,
    /// Concatenated PEM certificates, roots first, each once, in a stable order.
    pub pem: String,
    /// DER of the anchors that must be in the bundle for the signing CA's certificates to verify.
    pub required: Vec<Vec<u8>>,
}

/// Why no bundle can be made for a signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The signing CA is an intermediate and no root is configured (chainFile), and intermediates
    /// are not published: there is nothing a client could anchor on.
    NoRoot,
}

impl BundleError {
    /// The `reason` label and log field.
    pub fn as_str(&self) -> &'static str {
        match self {
            BundleError::NoRoot => "no_root",
        }
    }
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::NoRoot => f.write_str(
                "the signing CA is an intermediate and its root is unknown: put the root at the end of ca.chainFile (or set trustBundles.includeIntermediates)",
            ),
        }
    }
}

/// The bundle for `signer` signing with `ca`.
pub fn desired(
    signer: &str,
    ca: &SigningCa,
    settings: &TrustBundleSettings,
) -> Result<Bundle, BundleError> {
    let roots = der_blocks(&ca.cert_pem);
    let mut anchors = roots.clone();
    if settings.include_intermediates {
        anchors.extend(der_blocks(&ca.chain_pem));
    }
    let mut unique: Vec<Vec<u8>> = Vec::new();
    for der in anchors {
        if !unique.contains(&der) {
            unique.push(der);
        }
    }
    if unique.is_empty() {
        return Err(BundleError::NoRoot);
    }
    // With only intermediates published, the one that signs is the anchor clients need.
    let required = if roots.is_empty() {
        vec![ca.cert_der.clone()]
    } else {
        roots
    };
    let mut labels = settings.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(STAGE_LABEL.into(), settings.stage.clone());
    Ok(Bundle {
        name: bundle_name(signer, &settings.stage),
        signer: signer.to_owned(),
        labels,
        pem: unique.iter().map(|d| pem(d)).collect(),
        required,
    })
}

/// Whether a bundle found on the server is ours to change or delete.
pub fn is_ours(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Whether `published` (a bundle's PEM as found on the server) holds every anchor `required`.
pub fn covers(published: &str, required: &[Vec<u8>]) -> bool {
    let have = der_blocks(published);
    required.iter().all(|r| have.contains(r))
}

/// The DER of every `CERTIFICATE` block in `text`, in order; anything unparsable is skipped (the
/// text is either ours or the apiserver's validated bundle).
fn der_blocks(text: &str) -> Vec<Vec<u8>> {
    openssl::x509::X509::stack_from_pem(text.as_bytes())
        .map(|certs| certs.iter().filter_map(|c| c.to_der().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_signer_linked_rule() {
        assert_eq!(
            bundle_name("example.com/mtls", "live"),
            "example.com:mtls:live"
        );
    }

    #[test]
    fn settings_refuse_what_the_apiserver_would() {
        let mut s = TrustBundleSettings::default();
        assert!(s.validate().is_ok());
        for bad in ["", "Live", "a.b", "-x", "x-", "a/b", &"x".repeat(64)] {
            s.stage = bad.into();
            assert_eq!(s.validate().unwrap_err().0, "stage", "{bad:?}");
        }
        s.stage = "next".into();
        s.labels.insert(MANAGED_BY_LABEL.into(), "helm".into());
        assert_eq!(
            s.validate().unwrap_err().0,
            "labels.app.kubernetes.io/managed-by"
        );
    }

    #[test]
    fn ownership_is_the_managed_by_label_only() {
        let mut l = BTreeMap::new();
        assert!(!is_ours(None));
        assert!(!is_ours(Some(&l)));
        l.insert(MANAGED_BY_LABEL.to_string(), "Helm".to_string());
        assert!(!is_ours(Some(&l)));
        l.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
        assert!(is_ours(Some(&l)));
    }
}
