//! Trust distribution: the ClusterTrustBundles that let clients verify what each signer issues.
//!
//! This file is pure: from a signer's loaded CA it works out the bundle that should exist (name,
//! labels, PEM) and which existing bundles are ours to replace or delete. `publish.rs` carries that
//! out against the apiserver, on the leader only.
//!
//! Rules from kube-apiserver (`ValidateClusterTrustBundleName`, `validateTrustBundle`) that shape the
//! output: a signer-linked bundle is named `<signerName with / replaced by :>:<suffix>`; the trust
//! bundle is PEM `CERTIFICATE` blocks without headers, each a CA, no duplicates, at least one.

pub mod configmaps;
pub mod publish;
pub mod rotation;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::ca::{pem, SigningCa, TrustedCa};
use crate::config::OtherCaState;

/// The label every bundle we publish carries; a bundle without it is never touched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "csr-signer";
/// The stage label consumers select in a `clusterTrustBundle` projected volume.
pub const STAGE_LABEL: &str = "csr-signer/stage";

/// `trustBundles` in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    /// The same anchors as ConfigMaps in selected namespaces, for clusters (or consumers) without
    /// ClusterTrustBundles. Independent of `enabled`.
    pub config_maps: ConfigMapSettings,
}

/// `trustBundles.configMaps`: one ConfigMap per selected namespace, one key per signer
/// (`configmap_key`), holding exactly the PEM of the signer's ClusterTrustBundle.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConfigMapSettings {
    pub enabled: bool,
    /// Which namespaces get the ConfigMap: a Kubernetes label selector (`matchLabels`,
    /// `matchExpressions`). Required when enabled, and must select something narrower than
    /// every namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// The ConfigMap's name in every selected namespace.
    pub name: String,
}

impl Default for ConfigMapSettings {
    fn default() -> Self {
        ConfigMapSettings {
            enabled: false,
            namespace_selector: None,
            name: "csr-signer-trust-bundle".into(),
        }
    }
}

/// A ConfigMap key holds only `[-._a-zA-Z0-9]`, at most 253 bytes.
pub const CONFIGMAP_KEY_MAX: usize = 253;

/// The ConfigMap key of a signer's PEM: `example.com/mtls` → `example.com_mtls.pem`. One-to-one: a
/// valid signerName has exactly one `/` and no `_` (its parts are DNS labels and subdomains).
pub fn configmap_key(signer: &str) -> String {
    format!("{}.pem", signer.replace('/', "_"))
}

impl ConfigMapSettings {
    /// The selector as the `labelSelector` query parameter, checked the way the apiserver checks it.
    pub fn selector(&self) -> Result<String, String> {
        let Some(sel) = &self.namespace_selector else {
            return Err("is required when configMaps.enabled is true".into());
        };
        let exprs = sel.match_expressions.as_deref().unwrap_or_default();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_label_key(k)?;
            check_label_value(v)?;
        }
        for e in exprs {
            check_label_key(&e.key)?;
            for v in e.values.iter().flatten() {
                check_label_value(v)?;
            }
            let n = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if n == 0 => {
                    return Err(format!("{}: operator {} needs values", e.key, e.operator))
                }
                "Exists" | "DoesNotExist" if n > 0 => {
                    return Err(format!(
                        "{}: operator {} takes no values",
                        e.key, e.operator
                    ))
                }
                _ => {}
            }
        }
        let parsed = kube::core::Selector::try_from(sel.clone()).map_err(|e| e.to_string())?;
        if parsed.selects_all() {
            return Err(
                "selects every namespace: give matchLabels or matchExpressions (label the namespaces that want the ConfigMap)"
                    .into(),
            );
        }
        Ok(parsed.to_string())
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 bytes.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns1123_subdomain(p)) || !is_label_value(name) || name.is_empty()
    {
        return Err(format!("{key:?} is not a valid label key"));
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), String> {
    if is_label_value(v) {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

/// Empty, or at most 63 of `[-_.A-Za-z0-9]` starting and ending with an alphanumeric.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl Default for TrustBundleSettings {
    fn default() -> Self {
        TrustBundleSettings {
            enabled: false,
            stage: "live".into(),
            include_intermediates: false,
            labels: BTreeMap::new(),
            resync_seconds: 300,
            config_maps: ConfigMapSettings::default(),
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
        let cm = &self.config_maps;
        if !is_dns1123_subdomain(&cm.name) {
            return Err((
                "configMaps.name".into(),
                format!(
                    "{:?} must be a DNS subdomain (lower case letters, digits, '-' and '.')",
                    cm.name
                ),
            ));
        }
        if cm.enabled {
            cm.selector()
                .map_err(|m| ("configMaps.namespaceSelector".into(), m))?;
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

/// The annotation that remembers since when each retiring CA has been retiring, so that a restart or a
/// new leader does not restart its clock: JSON `{"<CA fingerprint>": "<RFC 3339>"}`.
pub const RETIRING_SINCE_ANNOTATION: &str = "csr-signer/retiring-since";

/// The annotation that remembers since when each published CA has been in the bundle (same format),
/// so that how long clients have had it survives restarts and failovers: the age a switch waits for,
/// and what `CsrSignerRotationStuckInPublished` measures.
pub const PUBLISHED_SINCE_ANNOTATION: &str = "csr-signer/published-since";

/// The annotations of a bundle that csr-signer writes (and compares).
pub const ANNOTATIONS: [&str; 2] = [RETIRING_SINCE_ANNOTATION, PUBLISHED_SINCE_ANNOTATION];

/// One bundle as it should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    pub signer: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Concatenated PEM certificates, each once: the signing CA's anchors, then the published CAs',
    /// then the retiring CAs' that still have certificates out.
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

/// Everything a signer's bundle is made from.
pub struct Inputs<'a> {
    pub signer: &'a str,
    pub active: &'a SigningCa,
    pub others: &'a [TrustedCa],
    /// When each retiring CA (by `fingerprint`) was first seen retiring.
    pub retiring_since: &'a BTreeMap<String, SystemTime>,
    /// When each published CA (by `fingerprint`) first went into the bundle.
    pub published_since: &'a BTreeMap<String, SystemTime>,
    /// The longest lifetime the signer grants: what a retiring CA signed last expires at most this
    /// long after it stopped signing.
    pub max_lifetime: Duration,
    pub now: SystemTime,
}

/// A CA's key in `retiring_since`: the first 16 bytes of the SHA-256 of its certificate, in hex
/// (stable across renames in the configuration).
pub fn fingerprint(cert_der: &[u8]) -> String {
    openssl::sha::sha256(cert_der)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Until when a retiring CA stays in the bundle: its last certificate ends at most `max_lifetime`
/// after it stopped signing, and never after the CA itself.
pub fn retiring_until(ca: &TrustedCa, since: SystemTime, max_lifetime: Duration) -> SystemTime {
    ca.not_after.min(since + max_lifetime)
}

/// Whether `ca` belongs in the bundle at `now`.
pub fn in_bundle(ca: &TrustedCa, inp: &Inputs<'_>) -> bool {
    if ca.not_after <= inp.now {
        return false;
    }
    match ca.state {
        OtherCaState::Published => true,
        OtherCaState::Retiring => {
            let since = inp
                .retiring_since
                .get(&fingerprint(&ca.cert_der))
                .copied()
                .unwrap_or(inp.now);
            inp.now < retiring_until(ca, since, inp.max_lifetime)
        }
    }
}

/// The bundle for one signer.
pub fn desired(inp: &Inputs<'_>, settings: &TrustBundleSettings) -> Result<Bundle, BundleError> {
    let active_roots = der_blocks(&inp.active.cert_pem);
    let required = if active_roots.is_empty() {
        if !settings.include_intermediates {
            return Err(BundleError::NoRoot);
        }
        // With only intermediates published, the one that signs is the anchor clients need.
        vec![inp.active.cert_der.clone()]
    } else {
        active_roots.clone()
    };
    let mut anchors = active_roots;
    if settings.include_intermediates {
        anchors.extend(der_blocks(&inp.active.chain_pem));
    }
    let mut retiring = BTreeMap::new();
    let mut published = BTreeMap::new();
    for state in [OtherCaState::Published, OtherCaState::Retiring] {
        for ca in inp.others.iter().filter(|c| c.state == state) {
            let fp = fingerprint(&ca.cert_der);
            // A retiring CA's clock is kept even once it left the bundle (until it leaves otherCas);
            // a published CA's only while it is in the bundle.
            let (record, since) = match state {
                OtherCaState::Retiring => (&mut retiring, inp.retiring_since),
                OtherCaState::Published => (&mut published, inp.published_since),
            };
            let in_it = in_bundle(ca, inp);
            if let (Some(t), true) = (since.get(&fp), in_it || state == OtherCaState::Retiring) {
                record.insert(fp, humantime::format_rfc3339_seconds(*t).to_string());
            }
            if !in_it {
                continue;
            }
            anchors.extend(ca.roots.iter().cloned());
            if settings.include_intermediates || ca.roots.is_empty() {
                anchors.extend(ca.intermediates.iter().cloned());
            }
        }
    }
    let mut unique: Vec<Vec<u8>> = Vec::new();
    for der in anchors {
        if !unique.contains(&der) {
            unique.push(der);
        }
    }
    let mut labels = settings.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(STAGE_LABEL.into(), settings.stage.clone());
    let mut annotations = BTreeMap::new();
    for (key, record) in [
        (RETIRING_SINCE_ANNOTATION, retiring),
        (PUBLISHED_SINCE_ANNOTATION, published),
    ] {
        if !record.is_empty() {
            annotations.insert(
                key.to_owned(),
                serde_json::to_string(&record).unwrap_or_default(),
            );
        }
    }
    Ok(Bundle {
        name: bundle_name(inp.signer, &settings.stage),
        signer: inp.signer.to_owned(),
        labels,
        annotations,
        pem: unique.iter().map(|d| pem(d)).collect(),
        required,
    })
}

/// The clocks a publisher keeps for one signer, by CA `fingerprint`, and records on what it writes.
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    /// When each retiring CA was first seen retiring.
    pub retiring_since: BTreeMap<String, SystemTime>,
    /// When each published CA first went into the bundle.
    pub published_since: BTreeMap<String, SystemTime>,
}

/// A signer's bundle now, with the published-since time of each published CA it holds (by name, for
/// the gauge). The clocks are first brought up to date: a CA newly retiring or published starts its
/// clock at `now` (whole seconds, as the annotation records them, so a new leader reads back the same
/// time); one no longer in that state is forgotten; a retiring CA keeps its clock after it expired
/// (until it leaves otherCas), a file changed in place is a new CA with a new clock. Both publishers
/// call this, so the ClusterTrustBundle and the ConfigMaps carry the same PEM.
pub fn signer_bundle(
    signer: &crate::engine::SignerEngine,
    clocks: &mut Clocks,
    settings: &TrustBundleSettings,
    now: SystemTime,
) -> (Result<Bundle, BundleError>, Vec<(String, SystemTime)>) {
    let others = signer.other_cas();
    let retiring: std::collections::BTreeSet<String> = others
        .iter()
        .filter(|c| c.state == OtherCaState::Retiring)
        .map(|c| fingerprint(&c.cert_der))
        .collect();
    let published: std::collections::BTreeSet<String> = others
        .iter()
        .filter(|c| c.state == OtherCaState::Published && c.not_after > now)
        .map(|c| fingerprint(&c.cert_der))
        .collect();
    let started = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
    for (since, current) in [
        (&mut clocks.retiring_since, retiring),
        (&mut clocks.published_since, published),
    ] {
        since.retain(|fp, _| current.contains(fp));
        for fp in current {
            since.entry(fp).or_insert(started);
        }
    }
    let active = signer.ca();
    let inputs = Inputs {
        signer: signer.name(),
        active: &active,
        others: &others,
        retiring_since: &clocks.retiring_since,
        published_since: &clocks.published_since,
        max_lifetime: signer.policy().max_lifetime(),
        now,
    };
    let published_since = others
        .iter()
        .filter(|c| c.state == OtherCaState::Published && in_bundle(c, &inputs))
        .filter_map(|c| {
            let t = clocks.published_since.get(&fingerprint(&c.cert_der))?;
            Some((c.name.clone(), *t))
        })
        .collect();
    (desired(&inputs, settings), published_since)
}

/// The retiring-since times recorded on a bundle (unparsable entries are ignored: the CA's clock
/// then starts again, which keeps it in the bundle longer, never shorter).
pub fn recorded_retiring_since(
    annotations: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, SystemTime> {
    recorded(annotations, RETIRING_SINCE_ANNOTATION)
}

/// The published-since times recorded on a bundle (unparsable entries are ignored: the clock starts
/// again, which makes the CA look younger, so a switch waits longer, never shorter).
pub fn recorded_published_since(
    annotations: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, SystemTime> {
    recorded(annotations, PUBLISHED_SINCE_ANNOTATION)
}

fn recorded(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
) -> BTreeMap<String, SystemTime> {
    annotations
        .and_then(|a| a.get(key))
        .and_then(|v| serde_json::from_str::<BTreeMap<String, String>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(fp, t)| Some((fp, humantime::parse_rfc3339(&t).ok()?)))
        .collect()
}

/// Whether a bundle found on the server is ours to change or delete.
pub fn is_ours(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Whether an object found on the server carries `labels` (others may have added more) and exactly
/// our retiring-since record.
pub fn metadata_matches(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    labels.iter().all(|(k, v)| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|have| have == v)
    }) && ANNOTATIONS
        .iter()
        .all(|k| meta.annotations.as_ref().and_then(|a| a.get(*k)) == annotations.get(*k))
}

/// Whether `published` (a bundle's PEM as found on the server) holds every anchor `required`.
pub fn covers(published: &str, required: &[Vec<u8>]) -> bool {
    let have = der_blocks(published);
    required.iter().all(|r| have.contains(r))
}

/// The DER of every `CERTIFICATE` block in `text`, in order; anything unparsable is skipped (the
/// text is either ours or the apiserver's validated bundle).
pub fn der_blocks(text: &str) -> Vec<Vec<u8>> {
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

    fn cm_settings(yaml: &str) -> Result<String, (String, String)> {
        let s: TrustBundleSettings = serde_yaml::from_str(yaml).unwrap();
        s.validate()?;
        s.config_maps.selector().map_err(|m| ("selector".into(), m))
    }

    #[test]
    fn configmaps_need_a_narrow_valid_selector_and_a_valid_name() {
        // Off by default, with a default name, and then no selector is needed.
        let off = TrustBundleSettings::default();
        assert!(!off.config_maps.enabled);
        assert_eq!(off.config_maps.name, "csr-signer-trust-bundle");
        assert!(off.validate().is_ok());
        assert_eq!(
            cm_settings("configMaps: {enabled: true, namespaceSelector: {matchLabels: {csr-signer.example.com/trust: \"true\"}}}"),
            Ok("csr-signer.example.com/trust=true".into())
        );
        assert_eq!(
            cm_settings("configMaps: {enabled: true, namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [a, b]}, {key: legacy, operator: DoesNotExist}]}}"),
            Ok("team in (a,b),!legacy".into())
        );
        for (yaml, key) in [
            ("configMaps: {enabled: true}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {}}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {matchLabels: {\"a b\": x}}}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {matchLabels: {a: \"x y\"}}}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}", "configMaps.namespaceSelector"),
            ("configMaps: {enabled: true, namespaceSelector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}}", "configMaps.namespaceSelector"),
            ("configMaps: {name: Trust_Bundle}", "configMaps.name"),
            ("configMaps: {name: \"\"}", "configMaps.name"),
        ] {
            assert_eq!(cm_settings(yaml).unwrap_err().0, key, "{yaml}");
        }
    }

    #[test]
    fn configmap_keys_are_one_to_one_and_allowed() {
        assert_eq!(configmap_key("example.com/mtls"), "example.com_mtls.pem");
        assert_ne!(configmap_key("a.com/b.c"), configmap_key("a.com.b/c"));
        for s in ["example.com/mtls", "a.b.c/x-y.z"] {
            let k = configmap_key(s);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{k}"
            );
        }
    }

    use crate::ca_init::{init, InitOptions, KeyType};
    use crate::config::{CaSettings, OtherCaSettings};

    fn ca(dir: &std::path::Path, name: &str, intermediate: bool) -> crate::ca_init::Created {
        init(&InitOptions {
            out: dir.join(name),
            key_type: KeyType::P256,
            days: 30,
            common_name: format!("{name} CA"),
            intermediate,
        })
        .unwrap()
    }

    /// The default-settings bundle of `example.com/mtls` for these CAs and clocks at `now`.
    fn bundle_at(
        active: &SigningCa,
        others: &[TrustedCa],
        (retiring_since, published_since): (
            &BTreeMap<String, SystemTime>,
            &BTreeMap<String, SystemTime>,
        ),
        max_lifetime: Duration,
        now: SystemTime,
    ) -> Bundle {
        desired(
            &Inputs {
                signer: "example.com/mtls",
                active,
                others,
                retiring_since,
                published_since,
                max_lifetime,
                now,
            },
            &TrustBundleSettings::default(),
        )
        .unwrap()
    }

    fn trusted(c: &crate::ca_init::Created, name: &str, state: OtherCaState) -> TrustedCa {
        let chain = (c.trust_anchor != c.cert).then(|| c.trust_anchor.clone());
        TrustedCa::load(
            &OtherCaSettings {
                name: name.into(),
                state,
                cert_file: c.cert.clone(),
                chain_file: chain,
            },
            SystemTime::now(),
        )
        .unwrap()
    }

    fn root_der(c: &crate::ca_init::Created) -> Vec<u8> {
        der_blocks(&std::fs::read_to_string(&c.trust_anchor).unwrap()).remove(0)
    }

    #[test]
    fn a_rotation_keeps_every_anchor_until_nothing_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (old, next) = (ca(dir.path(), "old", false), ca(dir.path(), "next", true));
        let (active, _) = SigningCa::load(
            &CaSettings {
                name: crate::config::DEFAULT_ACTIVE_CA_NAME.into(),
                cert_file: next.cert.clone(),
                key_file: next.key.clone(),
                chain_file: Some(next.trust_anchor.clone()),
                passphrase_file: None,
            },
            SystemTime::now(),
        )
        .unwrap();
        let retiring = trusted(&old, "old", OtherCaState::Retiring);
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let since = BTreeMap::from([(fingerprint(&retiring.cert_der), now - day)]);
        let settings = TrustBundleSettings::default();
        let none = BTreeMap::new();
        let at = |t: SystemTime| {
            bundle_at(
                &active,
                std::slice::from_ref(&retiring),
                (&since, &none),
                2 * day,
                t,
            )
        };
        // Retiring for a day with 2-day certificates: both roots, the signing CA's first.
        let b = at(now);
        assert_eq!(der_blocks(&b.pem), vec![root_der(&next), root_der(&old)]);
        assert_eq!(b.required, vec![root_der(&next)]);
        let recorded = recorded_retiring_since(Some(&b.annotations));
        assert_eq!(
            recorded.keys().collect::<Vec<_>>(),
            since.keys().collect::<Vec<_>>()
        );
        // One second before the last certificate it can have signed ends, still there; after, gone.
        assert_eq!(
            der_blocks(&at(now + day - Duration::from_secs(1)).pem).len(),
            2
        );
        assert_eq!(der_blocks(&at(now + day).pem), vec![root_der(&next)]);
        // A published CA is in the bundle whatever the time, until it expires itself.
        let published = trusted(&old, "old", OtherCaState::Published);
        let with_published = |t: SystemTime| {
            bundle_at(
                &active,
                std::slice::from_ref(&published),
                (&none, &none),
                2 * day,
                t,
            )
        };
        assert_eq!(der_blocks(&with_published(now + 10 * day).pem).len(), 2);
        assert_eq!(der_blocks(&with_published(now + 31 * day).pem).len(), 1);
        // An intermediate signing CA whose root is unknown has nothing to anchor on.
        let (bare, _) = SigningCa::load(
            &CaSettings {
                name: crate::config::DEFAULT_ACTIVE_CA_NAME.into(),
                cert_file: next.cert.clone(),
                key_file: next.key.clone(),
                chain_file: None,
                passphrase_file: None,
            },
            SystemTime::now(),
        )
        .unwrap();
        let inputs = Inputs {
            signer: "example.com/mtls",
            active: &bare,
            others: &[],
            retiring_since: &BTreeMap::new(),
            published_since: &BTreeMap::new(),
            max_lifetime: day,
            now,
        };
        assert_eq!(desired(&inputs, &settings), Err(BundleError::NoRoot));
    }

    #[test]
    fn a_published_ca_carries_its_published_since_while_in_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (active_ca, next) = (
            ca(dir.path(), "active", false),
            ca(dir.path(), "next", false),
        );
        let (active, _) = SigningCa::load(
            &CaSettings {
                name: crate::config::DEFAULT_ACTIVE_CA_NAME.into(),
                cert_file: active_ca.cert.clone(),
                key_file: active_ca.key.clone(),
                chain_file: None,
                passphrase_file: None,
            },
            SystemTime::now(),
        )
        .unwrap();
        let published = trusted(&next, "next", OtherCaState::Published);
        let now = SystemTime::now();
        let since_t = now - Duration::from_secs(3 * 86_400);
        let since = BTreeMap::from([(fingerprint(&published.cert_der), since_t)]);
        let none = BTreeMap::new();
        let at = |t: SystemTime| {
            bundle_at(
                &active,
                std::slice::from_ref(&published),
                (&none, &since),
                Duration::from_secs(86_400),
                t,
            )
        };
        let b = at(now);
        assert_eq!(
            der_blocks(&b.pem),
            vec![root_der(&active_ca), root_der(&next)]
        );
        assert!(!b.annotations.contains_key(RETIRING_SINCE_ANNOTATION));
        let back = recorded_published_since(Some(&b.annotations));
        // Seconds resolution: what a new leader reads back is the time to the second.
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(back.len(), 1);
        assert_eq!(secs(back[&fingerprint(&published.cert_der)]), secs(since_t));
        assert!(recorded_retiring_since(Some(&b.annotations)).is_empty());
        // Once the CA has expired it is neither in the bundle nor recorded.
        let late = at(now + Duration::from_secs(31 * 86_400));
        assert_eq!(der_blocks(&late.pem), vec![root_der(&active_ca)]);
        assert!(late.annotations.is_empty(), "{:?}", late.annotations);
    }

    #[test]
    fn a_lost_or_garbled_record_restarts_the_clock_rather_than_shortening_it() {
        let mut a = BTreeMap::new();
        assert!(recorded_retiring_since(Some(&a)).is_empty());
        a.insert(
            RETIRING_SINCE_ANNOTATION.to_string(),
            "{not json".to_string(),
        );
        assert!(recorded_retiring_since(Some(&a)).is_empty());
        a.insert(
            RETIRING_SINCE_ANNOTATION.to_string(),
            r#"{"aa": "2026-11-29T00:00:00Z", "bb": "yesterday"}"#.to_string(),
        );
        let r = recorded_retiring_since(Some(&a));
        assert_eq!(r.keys().collect::<Vec<_>>(), vec!["aa"]);
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
