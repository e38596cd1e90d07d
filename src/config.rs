//! Settings: a YAML file < environment (`CSR_SIGNER__SECTION__KEY`) < command-line flags, merged by the
//! `config` crate, then validated once into newtypes so that the rest of the program cannot hold an
//! invalid value. Every error names the file and the key.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{is_dns_label, Policy, PolicySettings};

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
            if !is_dns_label(label) {
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
    /// Shape, defaults and validation live with the policy (`policy::PolicySettings`).
    #[serde(default)]
    policy: PolicySettings,
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
            let policy = Policy::try_from(&s.policy)
                .map_err(|e| err(key(&format!("policy.{}", e.key)), e.message))?;
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
        assert_eq!(
            s.signers[0].policy.min_lifetime(),
            std::time::Duration::from_secs(600)
        );
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
