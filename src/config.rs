//! Settings: a YAML file < environment (`CSR_SIGNER__SECTION__KEY`) < command-line flags, merged into
//! one YAML tree, deserialized with the path of every value tracked, then validated once into newtypes
//! so that the rest of the program cannot hold an invalid value. Every error names what set the key
//! (the file, an environment variable or a flag) and the key (`signers[0].ca.keyFile`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::approval::{AutoApprove, AutoApproveSettings};
use crate::audit::AuditSettings;
use crate::error::{Error, Result};
use crate::policy::{is_dns_label, PodCertificateSettings, PodPolicy, Policy, PolicySettings};
pub use crate::trust::TrustBundleSettings;

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
    #[serde(default)]
    trust_bundles: TrustBundleSettings,
    #[serde(default)]
    audit: AuditSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSigner {
    name: String,
    ca: CaSettings,
    #[serde(default)]
    other_cas: Vec<OtherCaSettings>,
    /// Shape, defaults and validation live with the policy (`policy::PolicySettings`).
    #[serde(default)]
    policy: PolicySettings,
    /// Shape, defaults and validation live with the pod policy (`policy::PodCertificateSettings`).
    #[serde(default)]
    pod_certificates: PodCertificateSettings,
    /// Shape, defaults and validation live with auto-approval (`approval::AutoApproveSettings`).
    #[serde(default)]
    auto_approve: AutoApproveSettings,
}

/// Where a CA that this signer trusts but does not sign with lives (`signers[i].otherCas[j]`): the
/// next CA of a rotation (`published`), or the previous one until what it signed has expired
/// (`retiring`). Only certificates are read; no key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtherCaSettings {
    /// A short name for messages, metrics (`ca` label) and `ca status`.
    pub name: String,
    pub state: OtherCaState,
    /// PEM file with exactly one certificate: the CA (root or intermediate).
    pub cert_file: PathBuf,
    /// Optional PEM file with its intermediates and root, as for the signing CA.
    #[serde(default)]
    pub chain_file: Option<PathBuf>,
}

/// The state of a CA that does not sign.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OtherCaState {
    /// Published in the trust bundle ahead of signing: the next CA.
    Published,
    /// Was the signing CA; stays in the trust bundle until every certificate it can have signed has
    /// expired, then leaves it by itself.
    Retiring,
}

impl OtherCaState {
    pub fn as_str(self) -> &'static str {
        match self {
            OtherCaState::Published => "published",
            OtherCaState::Retiring => "retiring",
        }
    }
}

/// Where a signer's CA lives on disk.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSettings {
    /// A short name for the `ca` label of the per-CA metrics and `ca status`; a DNS label, unique among
    /// the signer's CAs. Give it the name the CA had under `otherCas` before it signed, so its series
    /// carry on across the switch.
    #[serde(default = "default_active_ca_name")]
    pub name: String,
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

/// `ca.name` when none is configured.
pub const DEFAULT_ACTIVE_CA_NAME: &str = "active";

fn default_active_ca_name() -> String {
    DEFAULT_ACTIVE_CA_NAME.to_owned()
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
    /// The signing CA (state `active`).
    pub ca: CaSettings,
    /// CAs trusted but not signing.
    pub other_cas: Vec<OtherCaSettings>,
    pub policy: Policy,
    /// How PodCertificateRequests are signed; `None`: this signer leaves them alone.
    pub pod_certificates: Option<PodPolicy>,
    /// When csr-signer approves this signer's CSRs itself; `None`: never.
    pub auto_approve: Option<AutoApprove>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub signers: Vec<SignerSettings>,
    pub controller: ControllerSettings,
    pub server: ServerSettings,
    pub log: LogSettings,
    /// ClusterTrustBundle publishing (`trustBundles`).
    pub trust_bundles: TrustBundleSettings,
    pub audit: AuditSettings,
    /// Where the settings came from, for messages.
    pub source: String,
    /// What set each key, for messages about it found later (a CA file that does not load).
    origins: Origins,
}

/// Command-line values that override the file and the environment (`None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// The prefix of environment variables that set keys: `CSR_SIGNER__CONTROLLER__QPS` is `controller.qps`,
/// `CSR_SIGNER__SIGNERS__0__CA__KEY_FILE` is `signers[0].ca.keyFile` (`__` nests, a number indexes a
/// list, `_` starts a new word of a camelCase key).
pub const ENV_PREFIX: &str = "CSR_SIGNER__";

/// Where each key came from, so that every error names the file, environment variable or flag that
/// set the offending key.
#[derive(Debug, Clone, Default)]
struct Origins {
    /// The YAML file, if any.
    file: Option<PathBuf>,
    /// `(key, what set it)` for environment variables and flags, in the order applied.
    set: Vec<(String, String)>,
}

impl Origins {
    /// What set `key` (or something under it): the last environment variable or flag that did,
    /// else the file.
    fn of(&self, key: &str) -> String {
        let under = |k: &str| {
            k == key
                || k.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        match self.set.iter().rev().find(|(k, _)| under(k)) {
            Some((_, by)) => by.clone(),
            None => self.file_name(),
        }
    }

    fn file_name(&self) -> String {
        self.file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into())
    }

    /// Whether `key` was set by the file (not overridden), so a relative path in it is the file's.
    fn set_by_the_file(&self, key: &str) -> bool {
        self.file.is_some() && !self.set.iter().any(|(k, _)| k == key)
    }

    fn error(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        let key = key.into();
        Error::Config {
            origin: self.of(&key),
            key,
            message: message.into(),
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `signers[0].ca.keyFile` for display and lookups.
fn key_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        match s {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k)
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The key an environment variable sets, or why it names none.
fn env_steps(name: &str) -> std::result::Result<Vec<Step>, String> {
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name);
    rest.split("__")
        .map(|part| {
            if part.is_empty() {
                return Err("empty key segment (use `__` only between keys)".to_string());
            }
            if part.bytes().all(|b| b.is_ascii_digit()) {
                return part
                    .parse()
                    .map(Step::Index)
                    .map_err(|_| format!("index {part} is too large"));
            }
            let mut key = String::new();
            for (i, word) in part.split('_').enumerate() {
                let word = word.to_ascii_lowercase();
                let mut chars = word.chars();
                match chars.next() {
                    None => return Err(format!("{part:?}: empty word")),
                    Some(c) if i > 0 => {
                        key.push(c.to_ascii_uppercase());
                        key.extend(chars);
                    }
                    Some(c) => {
                        key.push(c);
                        key.extend(chars);
                    }
                }
            }
            Ok(Step::Key(key))
        })
        .collect()
}

/// An environment value as YAML would read the scalar (`7`, `true`, `"007"`), else the text as it is
/// (`[::]:8080` is a listen address, not a YAML list).
fn env_value(text: &str) -> serde_yaml::Value {
    use serde_yaml::Value;
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// Sets `value` at `steps` in `tree`, creating maps and appending list entries as needed.
fn set_at(
    tree: &mut serde_yaml::Value,
    steps: &[Step],
    value: serde_yaml::Value,
) -> std::result::Result<(), String> {
    use serde_yaml::Value;
    let Some((first, rest)) = steps.split_first() else {
        *tree = value;
        return Ok(());
    };
    match first {
        Step::Key(k) => {
            if tree.is_null() {
                *tree = Value::Mapping(Default::default());
            }
            let Value::Mapping(map) = tree else {
                return Err(format!("cannot set {k:?} inside a value that is not a map"));
            };
            let child = map.entry(Value::String(k.clone())).or_insert(Value::Null);
            set_at(child, rest, value)
        }
        Step::Index(i) => {
            if tree.is_null() {
                *tree = Value::Sequence(Vec::new());
            }
            let Value::Sequence(list) = tree else {
                return Err(format!(
                    "cannot index [{i}] into a value that is not a list"
                ));
            };
            if *i == list.len() {
                list.push(Value::Null);
            }
            match list.get_mut(*i) {
                Some(child) => set_at(child, rest, value),
                None => Err(format!(
                    "index {i} is past the end of a list of {} (add entries in order)",
                    list.len()
                )),
            }
        }
    }
}

/// A serde error at `path`, as `(key, message)`: `missing field `x`` and `unknown field `x``
/// name the key itself rather than the map holding it.
fn located(path: &serde_path_to_error::Path, message: String) -> (String, String) {
    let at = match path.to_string() {
        p if p == "." => String::new(),
        p => p,
    };
    let join = |field: &str| {
        if at.is_empty() {
            field.to_owned()
        } else {
            format!("{at}.{field}")
        }
    };
    let field_in = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, rest)| (field.to_owned(), rest.to_owned()))
    };
    if let Some((field, _)) = field_in("missing field `") {
        return (join(&field), "required, but not set".into());
    }
    // The path already ends at an unknown key: it was visited before being refused.
    if let Some((_, rest)) = field_in("unknown field `") {
        let expected = rest.trim_start_matches(',').trim();
        return (
            at,
            if expected.is_empty() {
                "unknown key".into()
            } else {
                format!("unknown key ({expected})")
            },
        );
    }
    (at, message)
}

impl Settings {
    /// Loads `file` (YAML), then `CSR_SIGNER__…` environment variables, then `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings> {
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| Error::Config {
                origin: format!("environment variable {name}"),
                key: String::new(),
                message: "the value is not valid UTF-8".into(),
            })?;
            env.push((name.to_owned(), value));
        }
        // Deterministic: the environment has no order of its own.
        env.sort();
        Settings::load_from(file, &env, overrides)
    }

    /// `load` with the environment given (tests need not touch the process's own).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Settings> {
        let mut origins = Origins {
            file: file.map(Path::to_owned),
            set: Vec::new(),
        };
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
                    path: path.to_owned(),
                    error,
                })?;
                parse_yaml(&text, &origins.file_name())?
            }
            None => serde_yaml::Value::Null,
        };
        for (name, text) in env {
            let by = format!("environment variable {name}");
            let bad = |key: String, message: String| Error::Config {
                origin: by.clone(),
                key,
                message,
            };
            let steps = env_steps(name).map_err(|m| bad(String::new(), m))?;
            let key = key_path(&steps);
            set_at(&mut tree, &steps, env_value(text)).map_err(|m| bad(key.clone(), m))?;
            origins.set.push((key, by));
        }
        let flags: [(&str, &str, Option<String>); 3] = [
            (
                "server.listen",
                "--listen",
                overrides.listen.map(|l| l.to_string()),
            ),
            (
                "log.format",
                "--log-format",
                overrides.log_format.map(|f| {
                    match f {
                        LogFormat::Text => "text",
                        LogFormat::Json => "json",
                    }
                    .to_owned()
                }),
            ),
            ("log.level", "--log-level", overrides.log_level.clone()),
        ];
        for (key, flag, value) in flags {
            let Some(value) = value else { continue };
            let steps: Vec<Step> = key.split('.').map(|k| Step::Key(k.into())).collect();
            set_at(&mut tree, &steps, serde_yaml::Value::String(value)).map_err(|m| {
                Error::Config {
                    origin: format!("flag {flag}"),
                    key: key.into(),
                    message: m,
                }
            })?;
            origins.set.push((key.into(), format!("flag {flag}")));
        }
        let settings = Settings::from_tree(tree, origins)?;
        Ok(settings.with_paths_relative_to_the_file())
    }

    /// Parses settings from YAML text (used by tests and `csr-signer dev`).
    pub fn from_yaml(text: &str, source: &str) -> Result<Settings> {
        let tree = parse_yaml(text, source)?;
        let origins = Origins {
            file: Some(PathBuf::from(source)),
            set: Vec::new(),
        };
        Settings::from_tree(tree, origins)
    }

    fn from_tree(mut tree: serde_yaml::Value, origins: Origins) -> Result<Settings> {
        // An empty file is an empty map (every key at its default).
        if tree.is_null() {
            tree = serde_yaml::Value::Mapping(Default::default());
        }
        let raw: RawSettings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let (key, message) = located(e.path(), e.inner().to_string());
            origins.error(key, message)
        })?;
        Settings::validate(raw, origins)
    }

    /// A relative CA (or audit file) path written in the file is relative to the file's folder, wherever the
    /// signer was started from; one given by an environment variable stays relative to the
    /// working directory, like any path given to a process.
    fn with_paths_relative_to_the_file(mut self) -> Settings {
        let Some(dir) = self
            .origins
            .file
            .as_ref()
            .and_then(|f| f.parent())
            .map(Path::to_owned)
        else {
            return self;
        };
        for (i, s) in self.signers.iter_mut().enumerate() {
            let origins = &self.origins;
            let resolve = |name: &str, p: &mut PathBuf| {
                if p.is_relative() && origins.set_by_the_file(&format!("signers[{i}].ca.{name}")) {
                    *p = dir.join(&*p);
                }
            };
            resolve("certFile", &mut s.ca.cert_file);
            resolve("keyFile", &mut s.ca.key_file);
            if let Some(p) = s.ca.chain_file.as_mut() {
                resolve("chainFile", p);
            }
            if let Some(p) = s.ca.passphrase_file.as_mut() {
                resolve("passphraseFile", p);
            }
            for (j, o) in s.other_cas.iter_mut().enumerate() {
                let resolve = |name: &str, p: &mut PathBuf| {
                    if p.is_relative()
                        && origins.set_by_the_file(&format!("signers[{i}].otherCas[{j}].{name}"))
                    {
                        *p = dir.join(&*p);
                    }
                };
                resolve("certFile", &mut o.cert_file);
                if let Some(p) = o.chain_file.as_mut() {
                    resolve("chainFile", p);
                }
            }
        }
        if let Some(p) = self.audit.file.as_mut() {
            if p.is_relative() && self.origins.set_by_the_file("audit.file") {
                *p = dir.join(&*p);
            }
        }
        self
    }

    /// What set `key` (`signers[0].ca.keyFile`): the file, an environment variable or a flag.
    pub fn origin_of(&self, key: &str) -> String {
        self.origins.of(key)
    }

    fn validate(raw: RawSettings, origins: Origins) -> Result<Settings> {
        let err = |key: String, message: String| origins.error(key, message);
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
            let pod_certificates = s
                .pod_certificates
                .policy()
                .map_err(|e| err(key(&format!("podCertificates.{}", e.key)), e.message))?;
            let auto_approve = s
                .auto_approve
                .validate()
                .map_err(|e| err(key(&format!("autoApprove.{}", e.key)), e.message))?;
            if !is_dns_label(&s.ca.name) {
                return Err(err(
                    key("ca.name"),
                    format!("{:?} must be a DNS label (lower case letters, digits, '-'): it becomes a metric label", s.ca.name),
                ));
            }
            let mut ca_names = BTreeSet::from([s.ca.name.clone()]);
            for (j, o) in s.other_cas.iter().enumerate() {
                let k = key(&format!("otherCas[{j}].name"));
                if !is_dns_label(&o.name) {
                    return Err(err(
                        k,
                        format!("{:?} must be a DNS label (lower case letters, digits, '-'): it becomes a metric label", o.name),
                    ));
                }
                if !ca_names.insert(o.name.clone()) {
                    let what = if o.name == s.ca.name {
                        " (it is the signing CA's ca.name)"
                    } else {
                        ""
                    };
                    return Err(err(k, format!("duplicate CA name {:?}{what}", o.name)));
                }
            }
            signers.push(SignerSettings {
                name,
                ca: s.ca,
                other_cas: s.other_cas,
                policy,
                pod_certificates,
                auto_approve,
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
        raw.trust_bundles
            .validate()
            .map_err(|(k, m)| err(format!("trustBundles.{k}"), m))?;
        if raw.trust_bundles.config_maps.enabled {
            for s in &signers {
                let key = crate::trust::configmap_key(s.name.as_str());
                if key.len() > crate::trust::CONFIGMAP_KEY_MAX {
                    return Err(err(
                        "trustBundles.configMaps".into(),
                        format!(
                            "signer {:?} would be the ConfigMap key {key:?}, longer than {} bytes",
                            s.name.as_str(),
                            crate::trust::CONFIGMAP_KEY_MAX
                        ),
                    ));
                }
            }
        }
        raw.audit
            .validate()
            .map_err(|(k, m)| err(format!("audit.{k}"), m))?;
        Ok(Settings {
            signers,
            controller: raw.controller,
            server: raw.server,
            log: raw.log,
            trust_bundles: raw.trust_bundles,
            audit: raw.audit,
            source: origins.file_name(),
            origins,
        })
    }

    /// The effective settings as YAML, without secrets (only file paths are printed, never contents).
    pub fn to_yaml(&self) -> String {
        let view = serde_json::json!({
            "signers": self.signers.iter().map(|s| serde_json::json!({
                "name": s.name,
                "ca": s.ca,
                "otherCas": s.other_cas,
                "policy": s.policy.describe(),
                "podCertificates": s.pod_certificates.as_ref().map(PodPolicy::describe),
                "autoApprove": s.auto_approve.as_ref().map(AutoApprove::describe),
            })).collect::<Vec<_>>(),
            "controller": self.controller,
            "server": self.server,
            "log": self.log,
            "trustBundles": self.trust_bundles,
            "audit": self.audit,
        });
        serde_yaml::to_string(&view).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Finds a signer by name.
    pub fn signer(&self, name: &str) -> Option<&SignerSettings> {
        self.signers.iter().find(|s| s.name.as_str() == name)
    }
}

/// YAML text as a tree; a syntax error names the line and column.
fn parse_yaml(text: &str, origin: &str) -> Result<serde_yaml::Value> {
    serde_yaml::from_str(text).map_err(|e| Error::Config {
        origin: origin.to_owned(),
        key: e
            .location()
            .map(|l| format!("line {} column {}", l.line(), l.column()))
            .unwrap_or_default(),
        message: e.to_string(),
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
        assert_eq!(
            s.signers[0].policy.min_lifetime(),
            std::time::Duration::from_secs(600)
        );
    }

    #[test]
    fn the_signing_ca_has_a_name_unique_among_the_signers_cas() {
        let s = Settings::from_yaml(MINIMAL, "t.yaml").expect("valid");
        assert_eq!(s.signers[0].ca.name, DEFAULT_ACTIVE_CA_NAME);
        let with = |ca_name: &str, other: &str| {
            format!("signers:\n- name: example.com/mtls\n  ca: {{name: {ca_name}, certFile: ca.crt, keyFile: ca.key}}\n  otherCas: [{{name: {other}, state: retiring, certFile: old.crt}}]\n")
        };
        let s = Settings::from_yaml(&with("ca-2027", "ca-2026"), "t.yaml").expect("valid");
        assert_eq!(s.signers[0].ca.name, "ca-2027");
        let e = Settings::from_yaml(&with("Next", "old"), "t.yaml")
            .expect_err("not a DNS label")
            .to_string();
        assert!(
            e.starts_with("t.yaml: signers[0].ca.name: \"Next\" must be a DNS label"),
            "{e}"
        );
        let e = Settings::from_yaml(&with("next", "next"), "t.yaml")
            .expect_err("duplicate")
            .to_string();
        assert!(
            e.starts_with("t.yaml: signers[0].otherCas[0].name: duplicate CA name \"next\" (it is the signing CA's ca.name)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_the_file_and_key() {
        let text = format!("{MINIMAL}  polcy: {{}}\n");
        let e = Settings::from_yaml(&text, "t.yaml")
            .expect_err("invalid")
            .to_string();
        assert!(
            e.starts_with("t.yaml: signers[0].polcy: unknown key (expected one of `name`"),
            "{e}"
        );
    }

    #[test]
    fn environment_variable_names_map_to_key_paths() {
        for (var, key) in [
            ("CSR_SIGNER__CONTROLLER__QPS", "controller.qps"),
            (
                "CSR_SIGNER__SIGNERS__0__CA__KEY_FILE",
                "signers[0].ca.keyFile",
            ),
            (
                "CSR_SIGNER__CONTROLLER__LEADER_ELECTION__LEASE_DURATION_SECONDS",
                "controller.leaderElection.leaseDurationSeconds",
            ),
            (
                "CSR_SIGNER__SIGNERS__1__POLICY__SANS__DNS__0",
                "signers[1].policy.sans.dns[0]",
            ),
            (
                "CSR_SIGNER__SIGNERS__0__POLICY__KEYS__ECDSA__P256",
                "signers[0].policy.keys.ecdsa.p256",
            ),
        ] {
            assert_eq!(key_path(&env_steps(var).expect(var)), key, "{var}");
        }
        for bad in [
            "CSR_SIGNER__",
            "CSR_SIGNER__LOG____LEVEL",
            "CSR_SIGNER__LOG__LEVEL_",
            "CSR_SIGNER__SIGNERS__99999999999999999999999",
        ] {
            assert!(env_steps(bad).is_err(), "{bad}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_values_override_the_file_and_build_lists() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, MINIMAL).expect("write");
        let s = Settings::load_from(
            Some(&file),
            &env(&[
                ("CSR_SIGNER__CONTROLLER__QPS", "7"),
                (
                    "CSR_SIGNER__CONTROLLER__LEADER_ELECTION__LEASE_NAME",
                    "\"007\"",
                ),
                ("CSR_SIGNER__SERVER__LISTEN", "[::1]:9000"),
                (
                    "CSR_SIGNER__SIGNERS__0__POLICY__TRUSTED_REQUESTERS__0",
                    "istiod",
                ),
                ("CSR_SIGNER__SIGNERS__1__NAME", "example.com/b"),
                ("CSR_SIGNER__SIGNERS__1__CA__CERT_FILE", "b.crt"),
                ("CSR_SIGNER__SIGNERS__1__CA__KEY_FILE", "/abs/b.key"),
            ]),
            &Overrides {
                log_level: Some("debug".into()),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(s.controller.qps, 7.0);
        assert_eq!(s.controller.leader_election.lease_name, "007");
        assert_eq!(s.server.listen, "[::1]:9000".parse().expect("addr"));
        assert_eq!(s.log.level, "debug");
        assert_eq!(
            s.signers[0].policy.describe()["trustedRequesters"][0],
            "istiod"
        );
        assert_eq!(s.signers[1].name.as_str(), "example.com/b");
        // From the file: relative to its folder. From the environment: as given.
        assert_eq!(s.signers[0].ca.cert_file, dir.path().join("ca.crt"));
        assert_eq!(s.signers[1].ca.cert_file, PathBuf::from("b.crt"));
        assert_eq!(
            s.origin_of("signers[1].ca.keyFile"),
            "environment variable CSR_SIGNER__SIGNERS__1__CA__KEY_FILE"
        );
        assert_eq!(
            s.origin_of("signers[0].ca.keyFile"),
            file.display().to_string()
        );
        assert_eq!(s.origin_of("log.level"), "flag --log-level");
    }

    #[test]
    #[rustfmt::skip]
    fn errors_name_what_set_the_key() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("CSR_SIGNER__CONTROLLER__QPS", "fast")], "environment variable CSR_SIGNER__CONTROLLER__QPS: controller.qps: invalid type: string \"fast\""),
            (&[("CSR_SIGNER__CONTROLLER__WORKERS", "0")], "environment variable CSR_SIGNER__CONTROLLER__WORKERS: controller.workers: must be at least 1"),
            (&[("CSR_SIGNER__CONTROLLER__QPSS", "1")], "environment variable CSR_SIGNER__CONTROLLER__QPSS: controller.qpss: unknown key"),
            (&[("CSR_SIGNER__SIGNERS__0__POLICY__LIFETIME__MIN", "1m")], "environment variable CSR_SIGNER__SIGNERS__0__POLICY__LIFETIME__MIN: signers[0].policy.lifetime.min: must be at least 10m"),
            (&[("CSR_SIGNER__SIGNERS__2__NAME", "example.com/c")], "environment variable CSR_SIGNER__SIGNERS__2__NAME: signers[2].name: index 2 is past the end of a list of 1"),
            (&[("CSR_SIGNER__SIGNERS__1__NAME", "example.com/b")], "signers[1].ca: required, but not set"),
            (&[("CSR_SIGNER__LOG__LEVEL__X", "1")], "environment variable CSR_SIGNER__LOG__LEVEL__X: log.level.x: cannot set \"x\" inside a value that is not a map"),
        ];
        for (vars, expected) in cases {
            let e = Settings::load_from(None, &env(&[("CSR_SIGNER__SIGNERS__0__NAME", "example.com/a"), ("CSR_SIGNER__SIGNERS__0__CA__CERT_FILE", "a"), ("CSR_SIGNER__SIGNERS__0__CA__KEY_FILE", "b"), ("CSR_SIGNER__LOG__LEVEL", "info")]).into_iter().chain(env(vars)).collect::<Vec<_>>(), &Overrides::default())
                .expect_err(expected)
                .to_string();
            assert!(e.starts_with(expected) || e.ends_with(expected), "{e}\nwanted {expected}");
        }
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
