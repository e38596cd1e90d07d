//! The pod-certificate policy (`signers[i].podCertificates`): what a signer puts in a certificate for a
//! PodCertificateRequest, decided from the request's identity alone.
//!
//! A PCR is not approved by anyone: the kubelet creates it, kube-apiserver checks that the pod, its
//! service account and its node are real and belong together (NodeRestriction), and the signer issues
//! or refuses directly. So unlike a CSR the request names no SANs: the identity (namespace, service
//! account, pod, node) is rendered into the certificate by this policy's templates. The stub PKCS#10
//! request only carries the key.
//!
//! Must not, like the rest of `policy`: do IO, read a clock, import kube.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::KeyAlgorithms;
use super::settings::{EcdsaSettings, KeySettings, PolicyError, RsaSettings};
use super::template::is_dns_label;
use super::LifetimeOutcome;
use crate::csr::{KeyKind, San};
use crate::refusal::{Reason, Refusal};
use crate::usage::Usage;

/// The shortest certificate kube-apiserver accepts on a PodCertificateRequest (and the smallest
/// `spec.maxExpirationSeconds` it admits).
pub const MIN_POD_LIFETIME: Duration = Duration::from_secs(3600);
/// `beginRefreshAt` must lie at least this far inside the validity on both ends.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(600);

/// `spec.maxExpirationSeconds` when the request leaves it out (the apiserver defaults it to this).
const DEFAULT_MAX_EXPIRATION: u64 = 86400;

/// The `podCertificates:` block of a signer as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodCertificateSettings {
    /// Sign PodCertificateRequests for this signerName at all. Off by default: turning it on gives
    /// every pod in the cluster that mounts a `podCertificate` volume for this signer a certificate
    /// naming its service account.
    pub enabled: bool,
    /// The SPIFFE trust domain, `{trustDomain}` in the templates.
    pub trust_domain: String,
    /// URI SANs, rendered for the pod.
    pub uri_sans: Vec<String>,
    /// DNS SANs, rendered for the pod (none by default: a pod is not a DNS name unless a Service says so).
    pub dns_names: Vec<String>,
    /// Subject commonName, rendered for the pod; empty: an empty subject (the SANs are critical then).
    pub common_name: String,
    /// Namespaces whose pods may get certificates; empty: all.
    pub namespaces: Vec<String>,
    pub keys: KeySettings,
    pub usages: Vec<String>,
    /// The longest certificate this signer issues to a pod (humantime); a request's
    /// `maxExpirationSeconds` shortens it, never lengthens it.
    pub max_lifetime: String,
    /// `beginRefreshAt` as a fraction of the lifetime after NotBefore.
    pub refresh_at: f64,
    /// ± this fraction of the lifetime around `refreshAt`, so a fleet started together does not renew
    /// together.
    pub refresh_jitter: f64,
    /// Keys of `spec.unverifiedUserAnnotations` that are accepted (and ignored); any other key is
    /// refused with `InvalidUnverifiedUserAnnotations`, as the API asks signers to do.
    pub allowed_annotations: Vec<String>,
}

impl Default for PodCertificateSettings {
    fn default() -> Self {
        PodCertificateSettings {
            enabled: false,
            trust_domain: "cluster.local".into(),
            uri_sans: vec!["spiffe://{trustDomain}/ns/{namespace}/sa/{serviceaccount}".into()],
            dns_names: Vec::new(),
            common_name: String::new(),
            namespaces: Vec::new(),
            // What the podCertificate volume offers, except RSA-2048 which the API does not.
            keys: KeySettings {
                rsa: RsaSettings {
                    enabled: true,
                    min_bits: 3072,
                    max_bits: 4096,
                },
                ecdsa: EcdsaSettings {
                    p256: true,
                    p384: true,
                    p521: true,
                },
                ed25519: true,
            },
            usages: [
                "digital signature",
                "key encipherment",
                "client auth",
                "server auth",
            ]
            .map(String::from)
            .to_vec(),
            max_lifetime: "24h".into(),
            refresh_at: 2.0 / 3.0,
            refresh_jitter: 0.05,
            allowed_annotations: Vec::new(),
        }
    }
}

/// Which kind of value a template renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Uri,
    Dns,
    CommonName,
}

impl Kind {
    fn separator(self) -> char {
        match self {
            Kind::Uri => '/',
            Kind::Dns | Kind::CommonName => '.',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Namespace,
    ServiceAccount,
    Pod,
    Node,
}

/// A pattern rendered from a pod's identity: `spiffe://{trustDomain}/ns/{namespace}/sa/{serviceaccount}`,
/// `{serviceaccount}.{namespace}.svc`. `{trustDomain}` is replaced at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTemplate {
    source: String,
    kind: Kind,
    pieces: Vec<Piece>,
}

impl PodTemplate {
    fn parse(s: &str, kind: Kind, trust_domain: &str) -> Result<PodTemplate, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if c != '{' {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            }
            let end = rest
                .find('}')
                .ok_or_else(|| format!("{s:?}: unclosed '{{'"))?;
            let piece = match &rest[1..end] {
                "trustDomain" => {
                    literal.push_str(trust_domain);
                    rest = &rest[end + 1..];
                    continue;
                }
                "namespace" => Piece::Namespace,
                "serviceaccount" => Piece::ServiceAccount,
                "pod" => Piece::Pod,
                "node" => Piece::Node,
                other => {
                    return Err(format!(
                        "{s:?}: unknown placeholder {{{other}}} (known: {{trustDomain}}, {{namespace}}, {{serviceaccount}}, {{pod}}, {{node}})"
                    ))
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            // Two values must be parted by the separator, or `{namespace}-{pod}` would read the same
            // for two different pods.
            if let Some(prev) = pieces.last() {
                let parted = match prev {
                    Piece::Literal(l) => l.contains(kind.separator()),
                    _ => false,
                };
                if !parted && pieces.iter().any(|p| !matches!(p, Piece::Literal(_))) {
                    return Err(format!(
                        "{s:?}: two placeholders must be parted by a literal containing {:?}",
                        kind.separator()
                    ));
                }
            }
            pieces.push(piece);
            rest = &rest[end + 1..];
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let t = PodTemplate {
            source: s.to_string(),
            kind,
            pieces,
        };
        // A template that cannot render a valid value for an ordinary pod is a typo.
        let sample = PodIdentity {
            namespace: "ns",
            pod_name: "pod",
            service_account: "sa",
            node_name: "node",
        };
        t.render(&sample)
            .map_err(|why| format!("{s:?}: renders an invalid value: {why}"))?;
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The value for `id`, or why it cannot be certified.
    fn render(&self, id: &PodIdentity<'_>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.pieces {
            let (name, value) = match p {
                Piece::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Piece::Namespace => ("namespace", id.namespace),
                Piece::ServiceAccount => ("service account name", id.service_account),
                Piece::Pod => ("pod name", id.pod_name),
                Piece::Node => ("node name", id.node_name),
            };
            let ok = match self.kind {
                Kind::Dns => is_dns_label(value),
                Kind::Uri => {
                    !value.is_empty()
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                }
                Kind::CommonName => !value.is_empty() && !value.contains('.'),
            };
            if !ok {
                return Err(format!(
                    "{name} {value:?} cannot fill one {} of {:?}",
                    match self.kind {
                        Kind::Uri => "path segment",
                        _ => "label",
                    },
                    self.source
                ));
            }
            out.push_str(value);
        }
        match self.kind {
            Kind::Dns if !is_dns_name(&out) => Err(format!("{out:?} is not a valid DNS name")),
            Kind::Uri if !is_uri(&out) => Err(format!("{out:?} is not an absolute URI")),
            Kind::CommonName if out.is_empty() || out.len() > 64 => {
                Err(format!("commonName {out:?} must have 1 to 64 characters"))
            }
            _ => Ok(out),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label)
}

/// `scheme://authority/path` with a lower-case scheme and nothing a URI may not hold unescaped.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    scheme_ok
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=%".contains(&b))
}

/// Who a PodCertificateRequest is for, as kube-apiserver checked it against the live pod.
#[derive(Clone, Copy, Debug)]
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub service_account: &'a str,
    pub node_name: &'a str,
}

/// A validated `podCertificates` block. Exists only when enabled.
#[derive(Clone, Debug)]
pub struct PodPolicy {
    uris: Vec<PodTemplate>,
    dns: Vec<PodTemplate>,
    common_name: Option<PodTemplate>,
    namespaces: Vec<String>,
    keys: KeyAlgorithms,
    usages: Vec<Usage>,
    max_lifetime: Duration,
    refresh_at: f64,
    refresh_jitter: f64,
    allowed_annotations: Vec<String>,
}

/// What a pod's certificate holds, ready for issuance.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGrant {
    pub usages: Vec<Usage>,
    pub sans: Vec<San>,
    pub common_name: Option<String>,
    pub lifetime: Duration,
    /// `spec.maxExpirationSeconds` (defaulted as the apiserver does).
    pub requested: Duration,
    pub lifetime_outcome: LifetimeOutcome,
    /// Where `beginRefreshAt` falls, as a fraction of the lifetime, before jitter.
    pub refresh_at: f64,
    pub refresh_jitter: f64,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.into(),
        message: message.into(),
    }
}

impl PodCertificateSettings {
    /// `None` when disabled; the error's key is relative to `podCertificates`.
    pub fn policy(&self) -> Result<Option<PodPolicy>, PolicyError> {
        if !self.enabled {
            return Ok(None);
        }
        if !is_dns_name(&self.trust_domain) {
            return Err(invalid(
                "trustDomain",
                format!(
                    "{:?} must be a lower-case DNS name (SPIFFE trust domain)",
                    self.trust_domain
                ),
            ));
        }
        let templates = |key: &str, list: &[String], kind: Kind| {
            list.iter()
                .enumerate()
                .map(|(i, t)| {
                    PodTemplate::parse(t, kind, &self.trust_domain)
                        .map_err(|m| invalid(format!("{key}[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let uris = templates("uriSans", &self.uri_sans, Kind::Uri)?;
        let dns = templates("dnsNames", &self.dns_names, Kind::Dns)?;
        let common_name = if self.common_name.is_empty() {
            None
        } else {
            Some(
                PodTemplate::parse(&self.common_name, Kind::CommonName, &self.trust_domain)
                    .map_err(|m| invalid("commonName", m))?,
            )
        };
        if uris.is_empty() && dns.is_empty() && common_name.is_none() {
            return Err(invalid(
                "uriSans",
                "a pod certificate must name the pod somehow: set uriSans, dnsNames or commonName",
            ));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return Err(invalid(
                    format!("namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        let keys = self.keys.algorithms().map_err(|e| {
            invalid(
                format!("keys.{}", e.key.trim_start_matches("keys.")),
                e.message,
            )
        })?;
        if keys.iter().next().is_none() {
            return Err(invalid("keys", "no key type is allowed"));
        }
        if let Some((i, u)) = crate::usage::first_duplicate(&self.usages) {
            return Err(invalid(
                format!("usages[{i}]"),
                format!("{u:?} is listed twice"),
            ));
        }
        let usages = self
            .usages
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let parsed = Usage::parse(u).ok_or_else(|| {
                    invalid(format!("usages[{i}]"), format!("unknown usage {u:?}"))
                })?;
                if matches!(parsed, Usage::CertSign | Usage::CrlSign) {
                    return Err(invalid(
                        format!("usages[{i}]"),
                        format!(
                            "{u:?} can never be allowed: csr-signer does not issue CA certificates"
                        ),
                    ));
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if usages.is_empty() {
            return Err(invalid("usages", "must not be empty"));
        }
        let max_lifetime = humantime::parse_duration(&self.max_lifetime)
            .map_err(|e| invalid("maxLifetime", format!("{:?}: {e}", self.max_lifetime)))?;
        if max_lifetime < MIN_POD_LIFETIME {
            return Err(invalid(
                "maxLifetime",
                "must be at least 1h (kube-apiserver refuses shorter pod certificates)",
            ));
        }
        let r = self.refresh_at;
        if !(r.is_finite() && r > 0.0 && r < 1.0) {
            return Err(invalid("refreshAt", format!("{r} must be between 0 and 1")));
        }
        let j = self.refresh_jitter;
        if !(j.is_finite() && (0.0..=0.25).contains(&j)) {
            return Err(invalid(
                "refreshJitter",
                format!("{j} must be between 0 and 0.25"),
            ));
        }
        for (i, k) in self.allowed_annotations.iter().enumerate() {
            if k.split_once('/')
                .is_none_or(|(d, n)| !is_dns_name(d) || n.is_empty())
            {
                return Err(invalid(
                    format!("allowedAnnotations[{i}]"),
                    format!("{k:?} must be a domain-prefixed key (example.com/name), as the API requires"),
                ));
            }
        }
        Ok(Some(PodPolicy {
            uris,
            dns,
            common_name,
            namespaces: self.namespaces.clone(),
            keys,
            usages,
            max_lifetime,
            refresh_at: r,
            refresh_jitter: j,
            allowed_annotations: self.allowed_annotations.clone(),
        }))
    }
}

impl PodPolicy {
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    pub fn key_algorithms(&self) -> &KeyAlgorithms {
        &self.keys
    }

    /// Refuses a key this signer does not certify for pods, naming a keyType of the
    /// `podCertificate` volume to use instead (the API asks signers to suggest one).
    pub fn check_key(&self, key: &KeyKind) -> Result<(), Refusal> {
        self.keys.check(key).map_err(|r| {
            let suggest = self
                .keys
                .iter()
                .find_map(|a| match a {
                    super::KeyAlgorithm::EcdsaP256 => Some("ECDSAP256"),
                    super::KeyAlgorithm::EcdsaP384 => Some("ECDSAP384"),
                    super::KeyAlgorithm::EcdsaP521 => Some("ECDSAP521"),
                    super::KeyAlgorithm::Ed25519 => Some("ED25519"),
                    super::KeyAlgorithm::Rsa { max_bits, .. } if max_bits >= 4096 => {
                        Some("RSA4096")
                    }
                    super::KeyAlgorithm::Rsa { min_bits, .. } if min_bits <= 3072 => {
                        Some("RSA3072")
                    }
                    super::KeyAlgorithm::Rsa { .. } => None,
                })
                .unwrap_or("ECDSAP256");
            Refusal::new(
                Reason::UnsupportedKeyType,
                format!("{} (use keyType {suggest})", r.message),
            )
        })
    }

    /// Decides what the certificate for this pod holds. Checks run in a fixed order: annotations,
    /// namespace, lifetime, names.
    pub fn decide(
        &self,
        id: &PodIdentity<'_>,
        max_expiration_seconds: Option<i32>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<PodGrant, Refusal> {
        if let Some(k) = annotations
            .into_iter()
            .flat_map(|a| a.keys())
            .find(|k| !self.allowed_annotations.contains(k))
        {
            let allowed = if self.allowed_annotations.is_empty() {
                "none".to_string()
            } else {
                self.allowed_annotations.join(", ")
            };
            return Err(Refusal::new(
                Reason::InvalidUnverifiedUserAnnotations,
                format!(
                    "unverifiedUserAnnotations key {:?} is not one this signer understands (accepted: {allowed})",
                    k.chars().take(128).collect::<String>()
                ),
            ));
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == id.namespace) {
            return Err(Refusal::new(
                Reason::IdentityNotAllowed,
                format!(
                    "namespace {:?} may not get pod certificates from this signer",
                    id.namespace
                ),
            ));
        }
        let requested = Duration::from_secs(
            max_expiration_seconds.map_or(DEFAULT_MAX_EXPIRATION, |s| s.max(0) as u64),
        );
        if requested < MIN_POD_LIFETIME {
            return Err(Refusal::new(
                Reason::LifetimeTooShort,
                format!(
                    "spec.maxExpirationSeconds {} is below the 3600 kube-apiserver requires",
                    requested.as_secs()
                ),
            ));
        }
        let (lifetime, lifetime_outcome) = if requested > self.max_lifetime {
            (self.max_lifetime, LifetimeOutcome::Clamped)
        } else {
            (requested, LifetimeOutcome::Honoured)
        };
        let render = |t: &PodTemplate, what: &str| {
            t.render(id).map_err(|why| {
                Refusal::new(
                    Reason::SanNotAllowed,
                    format!("cannot name the pod in the {what}: {why}"),
                )
            })
        };
        let mut sans = Vec::with_capacity(self.uris.len() + self.dns.len());
        for t in &self.dns {
            let v = San::Dns(render(t, "DNS subjectAltName")?);
            if !sans.contains(&v) {
                sans.push(v);
            }
        }
        for t in &self.uris {
            let v = San::Uri(render(t, "URI subjectAltName")?);
            if !sans.contains(&v) {
                sans.push(v);
            }
        }
        let common_name = match &self.common_name {
            Some(t) => Some(render(t, "subject commonName")?),
            None => None,
        };
        Ok(PodGrant {
            usages: self.usages.clone(),
            sans,
            common_name,
            lifetime,
            requested,
            lifetime_outcome,
            refresh_at: self.refresh_at,
            refresh_jitter: self.refresh_jitter,
        })
    }

    /// What `check-config` prints.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "uriSans": self.uris.iter().map(PodTemplate::as_str).collect::<Vec<_>>(),
            "dnsNames": self.dns.iter().map(PodTemplate::as_str).collect::<Vec<_>>(),
            "commonName": self.common_name.as_ref().map(PodTemplate::as_str),
            "namespaces": self.namespaces,
            "keys": self.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "usages": self.usages.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
            "maxLifetime": humantime::format_duration(self.max_lifetime).to_string(),
            "refreshAt": self.refresh_at,
            "refreshJitter": self.refresh_jitter,
            "allowedAnnotations": self.allowed_annotations,
        })
    }
}

/// `beginRefreshAt`, as an offset from NotBefore, for a certificate of `lifetime`: at `refresh_at` of
/// the lifetime, moved by up to ± `jitter` of it according to `spread` (in [0, 1), derived from
/// something that differs between pods), and always inside the window kube-apiserver accepts
/// ([NotBefore + 10 min, NotAfter − 10 min]).
pub fn refresh_offset(lifetime: Duration, refresh_at: f64, jitter: f64, spread: f64) -> Duration {
    let secs = lifetime.as_secs_f64();
    let at = secs * (refresh_at + jitter * (2.0 * spread.clamp(0.0, 1.0) - 1.0));
    let lo = REFRESH_MARGIN.as_secs_f64();
    let hi = (secs - lo).max(lo);
    Duration::from_secs(at.clamp(lo, hi).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<Option<PodPolicy>, PolicyError> {
        let mut s: PodCertificateSettings = serde_yaml::from_str(yaml).expect("yaml");
        s.enabled = true;
        s.policy()
    }

    const POD: PodIdentity<'static> = PodIdentity {
        namespace: "team-a",
        pod_name: "web-7d9f",
        service_account: "web",
        node_name: "node-1",
    };

    #[test]
    fn default_names_the_service_account_as_a_spiffe_id_and_nothing_else() {
        let p = policy("{}").expect("valid").expect("enabled");
        let g = p.decide(&POD, None, None).expect("granted");
        assert_eq!(
            g.sans,
            vec![San::Uri("spiffe://cluster.local/ns/team-a/sa/web".into())]
        );
        assert_eq!(g.common_name, None);
        assert_eq!(g.lifetime, Duration::from_secs(86400));
        assert_eq!(g.lifetime_outcome, LifetimeOutcome::Honoured);
        assert_eq!(
            g.usages,
            vec![
                Usage::DigitalSignature,
                Usage::KeyEncipherment,
                Usage::ClientAuth,
                Usage::ServerAuth
            ]
        );
    }

    #[test]
    fn templates_render_the_pod_identity() {
        let p = policy(
            "{trustDomain: prod.example, dnsNames: ['{serviceaccount}.{namespace}.svc', '{pod}.{namespace}.pod.cluster.local'], commonName: '{serviceaccount}.{namespace}'}",
        )
        .expect("valid")
        .expect("enabled");
        let g = p.decide(&POD, Some(7200), None).expect("granted");
        assert_eq!(
            g.sans,
            vec![
                San::Dns("web.team-a.svc".into()),
                San::Dns("web-7d9f.team-a.pod.cluster.local".into()),
                San::Uri("spiffe://prod.example/ns/team-a/sa/web".into()),
            ]
        );
        assert_eq!(g.common_name.as_deref(), Some("web.team-a"));
        assert_eq!(g.lifetime, Duration::from_secs(7200));
    }

    #[test]
    fn the_request_shortens_the_lifetime_never_lengthens_it() {
        let p = policy("{maxLifetime: 12h}")
            .expect("valid")
            .expect("enabled");
        let g = p.decide(&POD, Some(86400), None).expect("granted");
        assert_eq!(g.lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(g.lifetime_outcome, LifetimeOutcome::Clamped);
        assert_eq!(g.requested, Duration::from_secs(86400));
        let g = p.decide(&POD, Some(3600), None).expect("granted");
        assert_eq!(g.lifetime, Duration::from_secs(3600));
        let r = p.decide(&POD, Some(1800), None).expect_err("refused");
        assert_eq!(r.reason, Reason::LifetimeTooShort);
    }

    #[test]
    fn unknown_annotation_keys_are_refused_listed_ones_accepted() {
        let p = policy("{allowedAnnotations: [example.com/ok]}")
            .expect("valid")
            .expect("enabled");
        let ok: BTreeMap<String, String> = [("example.com/ok".into(), "x".into())].into();
        assert!(p.decide(&POD, None, Some(&ok)).is_ok());
        let bad: BTreeMap<String, String> = [("example.com/other".into(), "x".into())].into();
        let r = p.decide(&POD, None, Some(&bad)).expect_err("refused");
        assert_eq!(r.reason, Reason::InvalidUnverifiedUserAnnotations);
        assert!(r.message.contains("example.com/other"), "{}", r.message);
    }

    #[test]
    fn namespaces_limit_who_gets_certificates() {
        let p = policy("{namespaces: [team-b]}")
            .expect("valid")
            .expect("enabled");
        let r = p.decide(&POD, None, None).expect_err("refused");
        assert_eq!(r.reason, Reason::IdentityNotAllowed);
    }

    #[test]
    fn a_name_that_cannot_fill_one_label_is_refused_not_split() {
        let p = policy("{dnsNames: ['{pod}.{namespace}.pod']}")
            .expect("valid")
            .expect("enabled");
        let dotted = PodIdentity {
            pod_name: "a.b",
            ..POD
        };
        let r = p.decide(&dotted, None, None).expect_err("refused");
        assert_eq!(r.reason, Reason::SanNotAllowed);
        assert!(r.message.contains("\"a.b\""), "{}", r.message);
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (yaml, key) in [
            ("{trustDomain: 'Not A Domain'}", "trustDomain"),
            ("{uriSans: ['spiffe://x/{namespace}{pod}']}", "uriSans[0]"),
            ("{uriSans: ['spiffe://x/{nmespace}']}", "uriSans[0]"),
            ("{dnsNames: ['{pod}..x']}", "dnsNames[0]"),
            ("{uriSans: [], dnsNames: []}", "uriSans"),
            ("{usages: ['cert sign']}", "usages[0]"),
            ("{usages: ['client auth', 'client auth']}", "usages[1]"),
            ("{maxLifetime: 30m}", "maxLifetime"),
            ("{refreshAt: 1.0}", "refreshAt"),
            ("{refreshJitter: 0.5}", "refreshJitter"),
            ("{allowedAnnotations: [nodomain]}", "allowedAnnotations[0]"),
            ("{namespaces: ['A']}", "namespaces[0]"),
            ("{keys: {rsa: {enabled: false}, ecdsa: {p256: false, p384: false, p521: false}, ed25519: false}}", "keys"),
        ] {
            let e = policy(yaml).expect_err(yaml);
            assert_eq!(e.key, key, "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn disabled_is_no_policy() {
        let s = PodCertificateSettings::default();
        assert!(s.policy().expect("valid").is_none());
    }

    #[test]
    fn unsupported_keys_suggest_a_key_type() {
        let p = policy("{keys: {rsa: {enabled: false}, ed25519: false}}")
            .expect("valid")
            .expect("enabled");
        let r = p
            .check_key(&KeyKind::Rsa { bits: 3072 })
            .expect_err("refused");
        assert_eq!(r.reason, Reason::UnsupportedKeyType);
        assert!(
            r.message.ends_with("(use keyType ECDSAP256)"),
            "{}",
            r.message
        );
        // A `keys` block replaces the pod defaults: what it leaves out takes the CSR defaults.
        assert!(p.check_key(&KeyKind::EcP521).is_err());
        let default = policy("{}").expect("valid").expect("enabled");
        assert!(default.check_key(&KeyKind::EcP521).is_ok());
        let r = default
            .check_key(&KeyKind::Rsa { bits: 2048 })
            .expect_err("refused");
        assert_eq!(r.reason, Reason::UnsupportedKeyType);
    }

    #[test]
    fn refresh_is_inside_the_window_the_apiserver_accepts() {
        let hour = Duration::from_secs(3600);
        // Two thirds of a day, ± 5 % of it.
        let day = Duration::from_secs(86400);
        assert_eq!(refresh_offset(day, 2.0 / 3.0, 0.05, 0.5).as_secs(), 57600);
        assert_eq!(
            refresh_offset(day, 2.0 / 3.0, 0.05, 0.0).as_secs(),
            57600 - 4320
        );
        assert_eq!(
            refresh_offset(day, 2.0 / 3.0, 0.05, 1.0).as_secs(),
            57600 + 4320
        );
        for spread in [0.0, 0.3, 0.999] {
            for f in [0.01, 0.5, 0.99] {
                let o = refresh_offset(hour, f, 0.25, spread);
                assert!(o >= REFRESH_MARGIN && o <= hour - REFRESH_MARGIN, "{o:?}");
            }
        }
    }
}
