//! The signer policy: what a signer will issue, and the pure decision on one verified request.
//!
//! Input: a request whose self-signature `csr` has verified, the requested usages and lifetime, and
//! who asked. Output: the issuance parameters (`Grant`), or exactly one `Refusal` whose `Reason` is
//! used verbatim as the Failed condition's reason, the metric label and the log field. Deny by
//! default: anything not explicitly allowed is refused.
//!
//! Layout: `decide` (the decision), `template` (name patterns bound to the requester), `keys`
//! (accepted key algorithms), `go_duration` (the request-duration annotation's syntax) and
//! `settings` (the `policy:` configuration block, its validation into a `Policy`, and the
//! description `check-config` prints).
//!
//! Must not: do IO, read a clock, import kube or Kubernetes types, or parse certificate requests
//! (that is `csr`). A `Policy` exists only through `Policy::try_from(&PolicySettings)`, so the
//! decision never meets an unvalidated policy.

mod decide;
mod go_duration;
mod keys;
mod pod;
mod settings;
mod template;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::csr::San;
use crate::usage::Usage;

pub use keys::{KeyAlgorithm, KeyAlgorithms, MIN_RSA_BITS};
pub use pod::{
    refresh_offset, PodCertificateSettings, PodGrant, PodIdentity, PodPolicy, MIN_POD_LIFETIME,
};
pub use settings::{
    EcdsaSettings, KeySettings, LifetimeSettings, PolicyError, PolicySettings, RsaSettings,
    SanSettings, SubjectSettings, UsageSettings,
};
pub(crate) use template::is_dns_label;
pub use template::{Field, Template};

// Transitional: `Reason` and `Refusal` live in `crate::refusal`; this re-export keeps code written
// against the old path compiling (src/controller/plan_tests.rs) until it imports `crate::refusal`.
// Re-exporting is not importing back: `refusal` still depends on nothing.
pub use crate::refusal::{Reason, Refusal};

/// One signer's validated policy. Built only by `Policy::try_from(&PolicySettings)`.
#[derive(Clone, Debug)]
pub struct Policy {
    allowed_usages: Vec<Usage>,
    /// At least one of these must be requested (empty: no requirement).
    required_usages: Vec<Usage>,
    keys: KeyAlgorithms,
    default_lifetime: Duration,
    min_lifetime: Duration,
    max_lifetime: Duration,
    /// Allowed commonName patterns (empty: no commonName allowed).
    common_names: Vec<Template>,
    require_common_name: bool,
    /// Allowed organizations (`None`: any).
    organizations: Option<Vec<String>>,
    /// Whether CN and O may hold `system:` names other than the requester's own.
    allow_system_identities: bool,
    dns: Vec<Template>,
    allow_wildcard_dns: bool,
    allow_ip: bool,
    allow_email: bool,
    uris: Vec<Template>,
    max_sans: usize,
    /// Usernames exempt from identity binding (e.g. istiod acting as a registration authority).
    trusted_requesters: Vec<String>,
}

impl Policy {
    /// The accepted public-key algorithms.
    pub fn key_algorithms(&self) -> &KeyAlgorithms {
        &self.keys
    }

    /// Granted when the request asks for no lifetime.
    pub fn default_lifetime(&self) -> Duration {
        self.default_lifetime
    }

    /// Shorter requests are refused (`LifetimeTooShort`).
    pub fn min_lifetime(&self) -> Duration {
        self.min_lifetime
    }

    /// Longer requests are granted this (`LifetimeOutcome::Clamped`).
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }
}

/// Who created the CSR (`spec.username`, `spec.groups`), as stamped by the apiserver.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

impl<'a> Requester<'a> {
    /// `(namespace, name)` for `system:serviceaccount:<ns>:<sa>`.
    pub fn service_account(&self) -> Option<(&'a str, &'a str)> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        let (ns, sa) = rest.split_once(':')?;
        (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
    }
}

/// What the requester asked for, besides the CSR itself.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// `spec.usages`, unparsed: unknown strings are refused here.
    pub usages: &'a [String],
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i64>,
    /// The `experimental.cert-manager.io/request-duration` annotation (Go duration syntax).
    pub duration_annotation: Option<&'a str>,
    pub requester: Requester<'a>,
}

/// How the granted lifetime relates to the requested one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifetimeOutcome {
    /// Granted as requested.
    Honoured,
    /// Requested more than the maximum: granted the maximum.
    Clamped,
    /// Nothing requested: granted the default.
    Defaulted,
    /// The certificate would have outlived the CA: it ends at the CA's NotAfter instead. Decided at
    /// issuance (the policy does not know the CA), whatever the policy decided before.
    CappedByCa,
}

impl LifetimeOutcome {
    /// Every outcome, for metric pre-registration.
    pub const ALL: [LifetimeOutcome; 4] = [
        LifetimeOutcome::Honoured,
        LifetimeOutcome::Clamped,
        LifetimeOutcome::Defaulted,
        LifetimeOutcome::CappedByCa,
    ];

    /// The `result` metric label and log field: one word, like every other label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LifetimeOutcome::Honoured => "honoured",
            LifetimeOutcome::Clamped => "clamped",
            LifetimeOutcome::Defaulted => "defaulted",
            LifetimeOutcome::CappedByCa => "capped_by_ca",
        }
    }

    /// The words in the Issued event and `sign` output.
    pub fn describe(self) -> &'static str {
        match self {
            LifetimeOutcome::CappedByCa => "capped by the CA",
            other => other.as_str(),
        }
    }
}

/// The approved content of a certificate, ready for `issue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Usages, deduplicated, in request order.
    pub usages: Vec<Usage>,
    pub lifetime: Duration,
    pub requested: Option<Duration>,
    pub lifetime_outcome: LifetimeOutcome,
    /// SANs to put in the certificate (all supported types, as requested).
    pub sans: Vec<San>,
}
