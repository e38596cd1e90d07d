//! The `policy:` block of a signer's configuration: its shape (serde, unknown keys refused, defaults
//! for everything), its validation into a `Policy` (the only way to build one), and the reverse, the
//! human description `check-config` prints.
//!
//! Every validation error names the key relative to the `policy:` block (`lifetime.min`,
//! `sans.dns[0]`), so `config` can prefix the file and signer. Nothing here decides a request, reads
//! a file or knows where the settings came from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{KeyAlgorithm, KeyAlgorithms};
use super::template::{Field, Template};
use super::Policy;
use crate::usage::Usage;

/// The apiserver refuses `spec.expirationSeconds` below 600, so no policy may demand less.
const MIN_LIFETIME_FLOOR: Duration = Duration::from_secs(600);
/// Beyond any CA's lifetime, and it keeps the time arithmetic far from overflow.
const MAX_LIFETIME_CEILING: Duration = Duration::from_secs(100 * 365 * 86400);

/// A policy setting that cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// The offending key, relative to the `policy:` block (`usages.allowed`, `sans.uri[2]`).
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.into(),
        message: message.into(),
    }
}

/// The `policy:` block as written. Defaults are the identity-bound mTLS policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicySettings {
    pub usages: UsageSettings,
    pub keys: KeySettings,
    pub lifetime: LifetimeSettings,
    pub subject: SubjectSettings,
    pub sans: SanSettings,
    pub trusted_requesters: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UsageSettings {
    pub allowed: Vec<String>,
    pub require_one_of: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KeySettings {
    pub rsa: RsaSettings,
    pub ecdsa: EcdsaSettings,
    pub ed25519: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RsaSettings {
    pub enabled: bool,
    pub min_bits: u32,
    pub max_bits: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EcdsaSettings {
    pub p256: bool,
    pub p384: bool,
    /// Off by default for CSRs (few clients use it); on for pod certificates, whose API offers it.
    pub p521: bool,
}

/// Lifetimes in humantime syntax (`10m`, `24h`, `30d`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LifetimeSettings {
    pub default: String,
    pub min: String,
    pub max: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SubjectSettings {
    pub common_names: Vec<String>,
    pub require_common_name: bool,
    pub organizations: Option<Vec<String>>,
    /// Lets CN and O hold Kubernetes `system:` users and groups other than the requester's own
    /// (`system:node:n1`, `system:nodes`). Off: an apiserver that trusts this CA for client
    /// certificates must not see them minted for someone else.
    pub allow_system_identities: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SanSettings {
    pub dns: Vec<String>,
    pub allow_wildcard_dns: bool,
    pub ip: bool,
    pub email: bool,
    pub uri: Vec<String>,
    pub max_count: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            allowed: [
                "digital signature",
                "key encipherment",
                "client auth",
                "server auth",
            ]
            .map(String::from)
            .to_vec(),
            require_one_of: ["client auth", "server auth"].map(String::from).to_vec(),
        }
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            rsa: RsaSettings::default(),
            ecdsa: EcdsaSettings::default(),
            ed25519: true,
        }
    }
}

impl Default for RsaSettings {
    fn default() -> Self {
        RsaSettings {
            enabled: true,
            min_bits: 2048,
            max_bits: 8192,
        }
    }
}

impl Default for EcdsaSettings {
    fn default() -> Self {
        EcdsaSettings {
            p256: true,
            p384: true,
            p521: false,
        }
    }
}

impl Default for LifetimeSettings {
    fn default() -> Self {
        LifetimeSettings {
            default: "24h".into(),
            min: "10m".into(),
            max: "30d".into(),
        }
    }
}

impl Default for SubjectSettings {
    fn default() -> Self {
        SubjectSettings {
            common_names: [
                "{username}",
                "{serviceaccount}.{namespace}.svc",
                "{serviceaccount}.{namespace}.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            require_common_name: false,
            organizations: None,
            allow_system_identities: false,
        }
    }
}

impl Default for SanSettings {
    fn default() -> Self {
        SanSettings {
            dns: [
                "{serviceaccount}.{namespace}.svc",
                "{serviceaccount}.{namespace}.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            allow_wildcard_dns: false,
            ip: false,
            email: false,
            uri: vec!["spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}".into()],
            max_count: 16,
        }
    }
}

impl KeySettings {
    /// The switches as a validated set.
    pub(super) fn algorithms(&self) -> Result<KeyAlgorithms, PolicyError> {
        let rsa = self.rsa.enabled.then_some(KeyAlgorithm::Rsa {
            min_bits: self.rsa.min_bits,
            max_bits: self.rsa.max_bits,
        });
        let set = [
            rsa,
            self.ecdsa.p256.then_some(KeyAlgorithm::EcdsaP256),
            self.ecdsa.p384.then_some(KeyAlgorithm::EcdsaP384),
            self.ecdsa.p521.then_some(KeyAlgorithm::EcdsaP521),
            self.ed25519.then_some(KeyAlgorithm::Ed25519),
        ];
        // Only the RSA range can be invalid in a set built from these switches.
        KeyAlgorithms::new(set.into_iter().flatten()).map_err(|m| invalid("keys.rsa", m))
    }
}

/// The validating constructor: the only way to obtain a `Policy`. Checks run in the order the keys
/// appear in the documentation, so the first problem reported is stable.
impl TryFrom<&PolicySettings> for Policy {
    type Error = PolicyError;

    fn try_from(p: &PolicySettings) -> Result<Policy, PolicyError> {
        let allowed = usages("allowed", &p.usages.allowed)?;
        if let Some(u) = allowed
            .iter()
            .find(|u| matches!(u, Usage::CertSign | Usage::CrlSign))
        {
            return Err(invalid(
                "usages.allowed",
                format!("{u:?} can never be allowed: csr-signer does not issue CA certificates"),
            ));
        }
        let require_one_of = usages("requireOneOf", &p.usages.require_one_of)?;
        if allowed.is_empty() {
            return Err(invalid("usages.allowed", "must not be empty"));
        }
        if let Some(u) = require_one_of.iter().find(|u| !allowed.contains(u)) {
            return Err(invalid(
                "usages.requireOneOf",
                format!("{u} is required but not allowed"),
            ));
        }
        let keys = p.keys.algorithms()?;
        let default = duration("default", &p.lifetime.default)?;
        let min = duration("min", &p.lifetime.min)?;
        let max = duration("max", &p.lifetime.max)?;
        if min < MIN_LIFETIME_FLOOR {
            return Err(invalid(
                "lifetime.min",
                "must be at least 10m (600 s), the apiserver's minimum",
            ));
        }
        if max > MAX_LIFETIME_CEILING {
            return Err(invalid("lifetime.max", "must be at most 100 years"));
        }
        if !(min <= default && default <= max) {
            return Err(invalid("lifetime", "need min <= default <= max"));
        }
        if let Some((i, _)) = p
            .subject
            .organizations
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, o)| *o == "system:masters")
        {
            return Err(invalid(
                format!("subject.organizations[{i}]"),
                "\"system:masters\" can never be allowed: it bypasses all authorization in the apiserver",
            ));
        }
        if p.sans.max_count == 0 {
            return Err(invalid("sans.maxCount", "must be at least 1"));
        }
        Ok(Policy {
            allowed_usages: allowed,
            required_usages: require_one_of,
            keys,
            default_lifetime: default,
            min_lifetime: min,
            max_lifetime: max,
            common_names: templates(
                "subject.commonNames",
                &p.subject.common_names,
                Field::CommonName,
            )?,
            require_common_name: p.subject.require_common_name,
            organizations: p.subject.organizations.clone(),
            allow_system_identities: p.subject.allow_system_identities,
            dns: templates("sans.dns", &p.sans.dns, Field::Dns)?,
            allow_wildcard_dns: p.sans.allow_wildcard_dns,
            allow_ip: p.sans.ip,
            allow_email: p.sans.email,
            uris: templates("sans.uri", &p.sans.uri, Field::Uri)?,
            max_sans: p.sans.max_count,
            trusted_requesters: p.trusted_requesters.clone(),
        })
    }
}

fn usages(key: &str, list: &[String]) -> Result<Vec<Usage>, PolicyError> {
    // The apiserver refuses a CSR listing a usage twice; a configuration doing so is a typo too.
    if let Some((i, u)) = crate::usage::first_duplicate(list) {
        return Err(invalid(
            format!("usages.{key}[{i}]"),
            format!("{u:?} is listed twice"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, u)| {
            Usage::parse(u).ok_or_else(|| {
                invalid(format!("usages.{key}[{i}]"), format!("unknown usage {u:?}"))
            })
        })
        .collect()
}

fn duration(key: &str, s: &str) -> Result<Duration, PolicyError> {
    humantime::parse_duration(s)
        .map_err(|e| invalid(format!("lifetime.{key}"), format!("{s:?}: {e}")))
}

fn templates(key: &str, list: &[String], field: Field) -> Result<Vec<Template>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, t)| Template::parse(t, field).map_err(|m| invalid(format!("{key}[{i}]"), m)))
        .collect()
}

impl Policy {
    /// A human-readable view of the policy, for `check-config` and `--explain`.
    pub fn describe(&self) -> serde_json::Value {
        let strs = |v: &[Template]| v.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
        let names = |v: &[Usage]| v.iter().map(|u| u.as_str()).collect::<Vec<_>>();
        serde_json::json!({
            "usages": {
                "allowed": names(&self.allowed_usages),
                "requireOneOf": names(&self.required_usages),
            },
            "keys": self.keys.to_string(),
            "lifetime": {
                "default": humantime::format_duration(self.default_lifetime).to_string(),
                "min": humantime::format_duration(self.min_lifetime).to_string(),
                "max": humantime::format_duration(self.max_lifetime).to_string(),
            },
            "subject": {
                "commonNames": strs(&self.common_names),
                "requireCommonName": self.require_common_name,
                "organizations": self.organizations,
                "allowSystemIdentities": self.allow_system_identities,
            },
            "sans": {
                "dns": strs(&self.dns),
                "allowWildcardDns": self.allow_wildcard_dns,
                "ip": self.allow_ip,
                "email": self.allow_email,
                "uri": strs(&self.uris),
                "maxCount": self.max_sans,
            },
            "trustedRequesters": self.trusted_requesters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(edit: impl FnOnce(&mut PolicySettings)) -> PolicyError {
        let mut s = PolicySettings::default();
        edit(&mut s);
        Policy::try_from(&s).expect_err("invalid settings")
    }

    #[test]
    fn defaults_are_valid_and_described() {
        let p = Policy::try_from(&PolicySettings::default()).expect("defaults");
        assert_eq!(p.min_lifetime(), Duration::from_secs(600));
        assert_eq!(p.default_lifetime(), Duration::from_secs(86400));
        assert_eq!(p.max_lifetime(), Duration::from_secs(30 * 86400));
        let d = p.describe();
        assert_eq!(
            d["keys"],
            "RSA 2048-8192, ECDSA P-256, ECDSA P-384, Ed25519"
        );
        assert_eq!(d["lifetime"]["max"], "30days");
        assert_eq!(d["usages"]["requireOneOf"][1], "server auth");
        assert_eq!(d["sans"]["maxCount"], 16);
        assert_eq!(d["subject"]["organizations"], serde_json::Value::Null);
    }

    #[test]
    #[rustfmt::skip]
    fn each_invalid_setting_names_its_key() {
        type Edit = fn(&mut PolicySettings);
        let cases: Vec<(&str, &str, Edit)> = vec![
            ("usages.allowed[4]", "unknown usage \"nope\"", |s| s.usages.allowed.push("nope".into())),
            ("usages.allowed", "can never be allowed", |s| s.usages.allowed.push("cert sign".into())),
            ("usages.allowed[4]", "listed twice", |s| s.usages.allowed.push("client auth".into())),
            ("usages.requireOneOf[2]", "listed twice", |s| s.usages.require_one_of.push("server auth".into())),
            ("usages.allowed", "must not be empty", |s| { s.usages.allowed.clear(); s.usages.require_one_of.clear(); }),
            ("usages.requireOneOf", "server auth is required but not allowed", |s| s.usages.allowed = vec!["client auth".into()]),
            ("keys.rsa", "need 2048 <= minBits <= maxBits", |s| s.keys.rsa.min_bits = 1024),
            ("keys.rsa", "need 2048 <= minBits <= maxBits", |s| s.keys.rsa.max_bits = 1024),
            ("lifetime.default", "\"soon\"", |s| s.lifetime.default = "soon".into()),
            ("lifetime.min", "must be at least 10m", |s| s.lifetime.min = "5m".into()),
            ("lifetime.max", "at most 100 years", |s| s.lifetime.max = "200years".into()),
            ("lifetime", "need min <= default <= max", |s| s.lifetime.default = "90d".into()),
            ("sans.maxCount", "must be at least 1", |s| s.sans.max_count = 0),
            ("subject.commonNames[0]", "unknown placeholder {user}", |s| s.subject.common_names[0] = "{user}".into()),
            ("subject.organizations[1]", "\"system:masters\" can never be allowed", |s| s.subject.organizations = Some(vec!["dev".into(), "system:masters".into()])),
            ("sans.dns[1]", "must be separated by text containing '.'", |s| s.sans.dns[1] = "**.x".into()),
            ("sans.dns[0]", "must be separated by text containing '.'", |s| s.sans.dns[0] = "{namespace}-{serviceaccount}.x".into()),
            ("subject.commonNames[1]", "must be separated by text containing '.'", |s| s.subject.common_names[1] = "{serviceaccount}-{namespace}".into()),
            ("sans.uri[0]", "must be separated by text containing '/'", |s| s.sans.uri[0] = "spiffe://td/{namespace}.{serviceaccount}".into()),
            ("sans.uri[0]", "empty pattern", |s| s.sans.uri[0] = String::new()),
        ];
        for (key, mentions, edit) in cases {
            let e = error(edit);
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(mentions), "{e}");
            assert_eq!(e.to_string(), format!("{}: {}", e.key, e.message));
        }
    }

    #[test]
    fn rsa_bounds_are_ignored_when_rsa_is_off() {
        let mut s = PolicySettings::default();
        s.keys.rsa = RsaSettings {
            enabled: false,
            min_bits: 1,
            max_bits: 0,
        };
        s.keys.ecdsa.p384 = false;
        let p = Policy::try_from(&s).expect("valid");
        assert_eq!(p.key_algorithms().to_string(), "ECDSA P-256, Ed25519");
        assert_eq!(p.key_algorithms().rsa(), None);
    }
}
