//! Settings: a YAML file < environment (`CSR_SIGNER__SECTION__KEY`) < command-line flags, merged by the
//! `config` crate, then validated once into newtypes so that the rest of the program cannot hold an
//! invalid value. Every error names the file and the key.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{Policy, Template};
use crate::usage::Usage;

/// A validated `spec.signerName` (k8s-csr-rules §3.C V-6): `<domain>/<path>`, lower-case DNS labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SignerName(String);

impl SignerName {
    /// Validates a signerName the way kube-apiserver does; the error text is the reason it is invalid.
    pub fn parse(s: &str) -> std::result::Result<SignerName, String> {
        let Some((domain, path)) = s.split_once('/') else {
            return Err(format!(
                "{s:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"
            ));
        };
        if path.contains('/') || domain.is_empty() || path.is_empty() {
            return Err(format!(
                "{s:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"
            ));
        }
        if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
            return Err(format!(
                "{s:?}: kubernetes.io signer names are reserved for Kubernetes"
            ));
        }
        if domain.split('.').count() < 2 {
            return Err(format!(
                "{domain:?}: should be a domain with at least two segments separated by dots"
            ));
        }
        for label in domain.split('.').chain(path.split('.')) {
            if !is_dns1123_label(label) {
                return Err(format!(
                    "{s:?}: {label:?} must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
                ));
            }
        }
        if domain.len() > 253 {
            return Err(format!("{s:?}: domain must have at most 253 bytes"));
        }
        Ok(SignerName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SignerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

// ---------------------------------------------------------------------------------------------
// The file's shape. Every struct denies unknown fields so a typo stops startup instead of being
// silently ignored.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    signers: Vec<RawSigner>,
    #[serde(default)]
    controller: ControllerSettings,
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    log: LogSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSigner {
    name: String,
    ca: CaSettings,
    #[serde(default)]
    policy: RawPolicy,
}

/// Where a signer's CA lives on disk.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSettings {
    /// PEM file with exactly one certificate: the signing CA (a root or an intermediate).
    pub cert_file: PathBuf,
    /// PEM private key of the signing CA (PKCS#8, PKCS#1 or SEC1; optionally encrypted).
    pub key_file: PathBuf,
    /// Optional PEM file with the intermediates above the signing CA (not the root), appended to every
    /// issued chain.
    #[serde(default)]
    pub chain_file: Option<PathBuf>,
    /// Optional file holding the passphrase of an encrypted key.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawPolicy {
    usages: RawUsages,
    keys: RawKeys,
    lifetime: RawLifetime,
    subject: RawSubject,
    sans: RawSans,
    trusted_requesters: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawUsages {
    allowed: Vec<String>,
    require_one_of: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawKeys {
    rsa: RawRsa,
    ecdsa: RawEcdsa,
    ed25519: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawRsa {
    enabled: bool,
    min_bits: u32,
    max_bits: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawEcdsa {
    p256: bool,
    p384: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawLifetime {
    default: String,
    min: String,
    max: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawSubject {
    common_names: Vec<String>,
    require_common_name: bool,
    organizations: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawSans {
    dns: Vec<String>,
    allow_wildcard_dns: bool,
    ip: bool,
    email: bool,
    uri: Vec<String>,
    max_count: usize,
}

impl Default for RawUsages {
    fn default() -> Self {
        RawUsages {
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

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys {
            rsa: RawRsa::default(),
            ecdsa: RawEcdsa::default(),
            ed25519: true,
        }
    }
}

impl Default for RawRsa {
    fn default() -> Self {
        RawRsa {
            enabled: true,
            min_bits: 2048,
            max_bits: 8192,
        }
    }
}

impl Default for RawEcdsa {
    fn default() -> Self {
        RawEcdsa {
            p256: true,
            p384: true,
        }
    }
}

impl Default for RawLifetime {
    fn default() -> Self {
        RawLifetime {
            default: "24h".into(),
            min: "10m".into(),
            max: "30d".into(),
        }
    }
}

impl Default for RawSubject {
    fn default() -> Self {
        RawSubject {
            common_names: [
                "{username}",
                "{serviceaccount}.{namespace}.svc",
                "{serviceaccount}.{namespace}.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            require_common_name: false,
            organizations: None,
        }
    }
}

impl Default for RawSans {
    fn default() -> Self {
        RawSans {
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

/// Controller tuning (used by `csr-signer run`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerSettings {
    /// Client-side request rate limit to the apiserver (requests per second).
    pub qps: f64,
    /// Burst allowance above `qps`.
    pub burst: u32,
    /// Concurrent signing workers.
    pub workers: usize,
    pub leader_election: LeaderElectionSettings,
    /// Record Kubernetes Events on CSRs.
    pub events: bool,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            qps: 50.0,
            burst: 100,
            workers: 4,
            leader_election: LeaderElectionSettings::default(),
            events: true,
        }
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElectionSettings {
    pub enabled: bool,
    pub lease_name: String,
    /// Lease namespace; defaults to `POD_NAMESPACE`, then `default`.
    pub namespace: Option<String>,
    pub lease_duration_seconds: u32,
    pub renew_deadline_seconds: u32,
    pub retry_period_seconds: u32,
}

impl Default for LeaderElectionSettings {
    fn default() -> Self {
        LeaderElectionSettings {
            enabled: true,
            lease_name: "csr-signer".into(),
            namespace: None,
            lease_duration_seconds: 15,
            renew_deadline_seconds: 10,
            retry_period_seconds: 2,
        }
    }
}

/// The HTTP endpoint for /metrics, /healthz and /readyz.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: SocketAddr,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive, e.g. `info` or `csr_signer=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated settings.
// ---------------------------------------------------------------------------------------------

/// One configured signer: its name, CA location and validated policy.
#[derive(Debug, Clone)]
pub struct SignerSettings {
    pub name: SignerName,
    pub ca: CaSettings,
    pub policy: Policy,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub signers: Vec<SignerSettings>,
    pub controller: ControllerSettings,
    pub server: ServerSettings,
    pub log: LogSettings,
    /// Where the settings came from, for messages.
    pub source: String,
}

/// Command-line values that override the file and the environment (`None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

impl Settings {
    /// Loads `file` (YAML), then `CSR_SIGNER__…` environment variables, then `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings> {
        let source = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
                path: path.to_owned(),
                error,
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Yaml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("CSR_SIGNER")
                .prefix_separator("__")
                .separator("__")
                .convert_case(config::Case::Camel)
                .try_parsing(true),
        );
        if let Some(listen) = overrides.listen {
            builder = builder
                .set_override("server.listen", listen.to_string())
                .map_err(|e| config_error(&source, "server.listen", e))?;
        }
        if let Some(format) = overrides.log_format {
            let value = match format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            };
            builder = builder
                .set_override("log.format", value)
                .map_err(|e| config_error(&source, "log.format", e))?;
        }
        if let Some(level) = &overrides.log_level {
            builder = builder
                .set_override("log.level", level.as_str())
                .map_err(|e| config_error(&source, "log.level", e))?;
        }
        let merged = builder.build().map_err(|e| config_error(&source, "", e))?;
        let raw: RawSettings = merged
            .try_deserialize()
            .map_err(|e| config_error(&source, "", e))?;
        Settings::validate(raw, source)
    }

    /// Parses settings from YAML text (used by tests and `csr-signer dev`).
    pub fn from_yaml(text: &str, source: &str) -> Result<Settings> {
        let raw: RawSettings = serde_yaml::from_str(text).map_err(|e| Error::Config {
            file: source.to_owned(),
            key: e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_default(),
            message: e.to_string(),
        })?;
        Settings::validate(raw, source.to_owned())
    }

    fn validate(raw: RawSettings, source: String) -> Result<Settings> {
        let err = |key: String, message: String| Error::Config {
            file: source.clone(),
            key,
            message,
        };
        if raw.signers.is_empty() {
            return Err(err(
                "signers".into(),
                "at least one signer is required".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut signers = Vec::with_capacity(raw.signers.len());
        for (i, s) in raw.signers.into_iter().enumerate() {
            let key = |k: &str| format!("signers[{i}].{k}");
            let name = SignerName::parse(&s.name).map_err(|m| err(key("name"), m))?;
            if !seen.insert(name.clone()) {
                return Err(err(key("name"), format!("duplicate signer {name}")));
            }
            let policy =
                validate_policy(&s.policy).map_err(|(k, m)| err(key(&format!("policy.{k}")), m))?;
            signers.push(SignerSettings {
                name,
                ca: s.ca,
                policy,
            });
        }
        let c = &raw.controller;
        if !c.qps.is_finite() || c.qps <= 0.0 {
            return Err(err(
                "controller.qps".into(),
                "must be greater than 0".into(),
            ));
        }
        if c.workers == 0 {
            return Err(err(
                "controller.workers".into(),
                "must be at least 1".into(),
            ));
        }
        let le = &c.leader_election;
        if le.enabled
            && !(le.lease_duration_seconds > le.renew_deadline_seconds
                && le.renew_deadline_seconds > le.retry_period_seconds
                && le.retry_period_seconds > 0)
        {
            return Err(err(
                "controller.leaderElection".into(),
                "need leaseDurationSeconds > renewDeadlineSeconds > retryPeriodSeconds > 0".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|e| err("log.level".into(), e.to_string()))?;
        Ok(Settings {
            signers,
            controller: raw.controller,
            server: raw.server,
            log: raw.log,
            source,
        })
    }

    /// The effective settings as YAML, without secrets (only file paths are printed, never contents).
    pub fn to_yaml(&self) -> String {
        let view = serde_json::json!({
            "signers": self.signers.iter().map(|s| serde_json::json!({
                "name": s.name,
                "ca": s.ca,
                "policy": s.policy.describe(),
            })).collect::<Vec<_>>(),
            "controller": self.controller,
            "server": self.server,
            "log": self.log,
        });
        serde_yaml::to_string(&view).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Finds a signer by name.
    pub fn signer(&self, name: &str) -> Option<&SignerSettings> {
        self.signers.iter().find(|s| s.name.as_str() == name)
    }
}

fn config_error(source: &str, key: &str, e: config::ConfigError) -> Error {
    // The config crate puts the failing key at the end of its message ("… for key `signers[0]`");
    // move it to the front so every configuration error reads "file: key: problem".
    let text = e.to_string();
    let (message, found_key) = match text.rsplit_once(" for key `") {
        Some((m, k)) => (m.to_owned(), k.trim_end_matches('`').to_owned()),
        None => (text, key.to_owned()),
    };
    Error::Config {
        file: source.to_owned(),
        key: found_key,
        message,
    }
}

type KeyedError = (String, String);

fn validate_policy(p: &RawPolicy) -> std::result::Result<Policy, KeyedError> {
    let usages = |key: &str, list: &[String]| -> std::result::Result<Vec<Usage>, KeyedError> {
        list.iter()
            .enumerate()
            .map(|(i, u)| {
                Usage::parse(u)
                    .ok_or_else(|| (format!("usages.{key}[{i}]"), format!("unknown usage {u:?}")))
            })
            .collect()
    };
    let allowed = usages("allowed", &p.usages.allowed)?;
    if let Some(u) = allowed
        .iter()
        .find(|u| matches!(u, Usage::CertSign | Usage::CrlSign))
    {
        return Err((
            "usages.allowed".into(),
            format!("{u:?} can never be allowed: csr-signer does not issue CA certificates"),
        ));
    }
    let require_one_of = usages("requireOneOf", &p.usages.require_one_of)?;
    if allowed.is_empty() {
        return Err(("usages.allowed".into(), "must not be empty".into()));
    }
    if let Some(u) = require_one_of.iter().find(|u| !allowed.contains(u)) {
        return Err((
            "usages.requireOneOf".into(),
            format!("{u} is required but not allowed"),
        ));
    }
    let k = &p.keys;
    if k.rsa.enabled && (k.rsa.min_bits < 2048 || k.rsa.max_bits < k.rsa.min_bits) {
        return Err(("keys.rsa".into(), "need 2048 <= minBits <= maxBits".into()));
    }
    let parse_duration = |key: &str, s: &str| -> std::result::Result<Duration, KeyedError> {
        humantime::parse_duration(s).map_err(|e| (format!("lifetime.{key}"), format!("{s:?}: {e}")))
    };
    let default = parse_duration("default", &p.lifetime.default)?;
    let min = parse_duration("min", &p.lifetime.min)?;
    let max = parse_duration("max", &p.lifetime.max)?;
    if min < Duration::from_secs(600) {
        return Err((
            "lifetime.min".into(),
            "must be at least 10m (600 s), the apiserver's minimum".into(),
        ));
    }
    // Beyond any CA's lifetime, and it keeps the time arithmetic far from overflow.
    if max > Duration::from_secs(100 * 365 * 86400) {
        return Err(("lifetime.max".into(), "must be at most 100 years".into()));
    }
    if !(min <= default && default <= max) {
        return Err(("lifetime".into(), "need min <= default <= max".into()));
    }
    let templates =
        |key: &str, list: &[String]| -> std::result::Result<Vec<Template>, KeyedError> {
            list.iter()
                .enumerate()
                .map(|(i, t)| Template::parse(t).map_err(|m| (format!("{key}[{i}]"), m)))
                .collect()
        };
    if p.sans.max_count == 0 {
        return Err(("sans.maxCount".into(), "must be at least 1".into()));
    }
    Ok(Policy {
        allowed_usages: allowed,
        required_usages: require_one_of,
        rsa: k.rsa.enabled.then_some((k.rsa.min_bits, k.rsa.max_bits)),
        p256: k.ecdsa.p256,
        p384: k.ecdsa.p384,
        ed25519: k.ed25519,
        default_lifetime: default,
        min_lifetime: min,
        max_lifetime: max,
        common_names: templates("subject.commonNames", &p.subject.common_names)?,
        require_common_name: p.subject.require_common_name,
        organizations: p.subject.organizations.clone(),
        dns: templates("sans.dns", &p.sans.dns)?,
        allow_wildcard_dns: p.sans.allow_wildcard_dns,
        allow_ip: p.sans.ip,
        allow_email: p.sans.email,
        uris: templates("sans.uri", &p.sans.uri)?,
        max_sans: p.sans.max_count,
        trusted_requesters: p.trusted_requesters.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "signers:\n- name: example.com/mtls\n  ca: {certFile: ca.crt, keyFile: ca.key}\n";

    #[test]
    fn defaults_fill_everything_but_the_signer() {
        let s = Settings::from_yaml(MINIMAL, "t.yaml").expect("valid");
        assert_eq!(s.signers[0].name.as_str(), "example.com/mtls");
        assert_eq!(s.controller.qps, 50.0);
        assert_eq!(s.signers[0].policy.min_lifetime, Duration::from_secs(600));
    }

    #[test]
    fn unknown_key_names_the_file_and_key() {
        let text = format!("{MINIMAL}  polcy: {{}}\n");
        let e = Settings::from_yaml(&text, "t.yaml")
            .expect_err("invalid")
            .to_string();
        assert!(e.starts_with("t.yaml:"), "{e}");
        assert!(e.contains("polcy"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            (
                MINIMAL.replace("example.com/mtls", "Example.com/x"),
                "signers[0].name",
            ),
            (
                format!("{MINIMAL}  policy: {{usages: {{allowed: [\"client auth\", \"cert sign\"]}}}}\n"),
                "signers[0].policy.usages.allowed",
            ),
            (
                format!("{MINIMAL}  policy: {{lifetime: {{min: 5m}}}}\n"),
                "signers[0].policy.lifetime.min",
            ),
            (
                format!("{MINIMAL}  policy: {{sans: {{dns: [\"{{nmespace}}.svc\"]}}}}\n"),
                "signers[0].policy.sans.dns[0]",
            ),
        ] {
            let e = Settings::from_yaml(&yaml, "f.yaml").expect_err(&yaml).to_string();
            assert!(e.starts_with(&format!("f.yaml: {key}:")), "{e}");
        }
    }

    #[test]
    fn signer_names_follow_the_apiserver() {
        for ok in ["example.com/mtls", "a.b.c/x.y", "example.com/my-signer"] {
            assert!(SignerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "example.com",
            "Example.com/x",
            "example.com/MTLS",
            "example/x",
            "example.com/a/b",
            "kubernetes.io/x",
            "",
        ] {
            assert!(SignerName::parse(bad).is_err(), "{bad}");
        }
    }
}
