//! The refusal vocabulary: why a request is refused (`Reason`) and what the requester is told
//! (`Refusal`).
//!
//! Shared by `csr` (a request that cannot be parsed or whose signature does not verify), `policy` (a
//! request that is well formed but not allowed), the controller, metrics and logs. `Reason::as_str` is
//! the one string used as the `Failed` condition's reason, the `reason` metric label and the log
//! field, so status, metrics and logs always agree.
//!
//! This module only names outcomes: it decides nothing, parses nothing and depends on no other module
//! of the crate (which is what lets `csr` and `policy` both use it without importing each other).

/// Why a request was refused. The string form is part of the public contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    MalformedRequest,
    BadSignature,
    UnknownUsage,
    UsageNotAllowed,
    UsageRequired,
    KeyTypeNotAllowed,
    KeyTooWeak,
    KeyTooLarge,
    CaNotAllowed,
    SanNotAllowed,
    TooManySans,
    SubjectNotAllowed,
    IdentityMismatch,
    NoIdentity,
    LifetimeTooShort,
    /// Pod certificates: the key type is not one this signer certifies (the API's well-known reason).
    UnsupportedKeyType,
    /// Pod certificates: `spec.unverifiedUserAnnotations` holds a key the signer does not understand
    /// (the API's well-known reason).
    InvalidUnverifiedUserAnnotations,
    /// Pod certificates: the pod's namespace is not one the policy serves.
    IdentityNotAllowed,
    /// Pod certificates: the CA ends too soon for the shortest certificate the API accepts (1 h).
    CaExpiresTooSoon,
}

impl Reason {
    /// Every reason, for metric pre-registration and docs.
    pub const ALL: [Reason; 19] = [
        Reason::MalformedRequest,
        Reason::BadSignature,
        Reason::UnknownUsage,
        Reason::UsageNotAllowed,
        Reason::UsageRequired,
        Reason::KeyTypeNotAllowed,
        Reason::KeyTooWeak,
        Reason::KeyTooLarge,
        Reason::CaNotAllowed,
        Reason::SanNotAllowed,
        Reason::TooManySans,
        Reason::SubjectNotAllowed,
        Reason::IdentityMismatch,
        Reason::NoIdentity,
        Reason::LifetimeTooShort,
        Reason::UnsupportedKeyType,
        Reason::InvalidUnverifiedUserAnnotations,
        Reason::IdentityNotAllowed,
        Reason::CaExpiresTooSoon,
    ];

    /// Reasons only pod certificates give (the CSR policy never does).
    pub const POD_ONLY: [Reason; 4] = [
        Reason::UnsupportedKeyType,
        Reason::InvalidUnverifiedUserAnnotations,
        Reason::IdentityNotAllowed,
        Reason::CaExpiresTooSoon,
    ];

    /// The condition reason, metric label and log field. Never change a value: alerts and
    /// dashboards select on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedRequest => "MalformedRequest",
            Reason::BadSignature => "BadSignature",
            Reason::UnknownUsage => "UnknownUsage",
            Reason::UsageNotAllowed => "UsageNotAllowed",
            Reason::UsageRequired => "UsageRequired",
            Reason::KeyTypeNotAllowed => "KeyTypeNotAllowed",
            Reason::KeyTooWeak => "KeyTooWeak",
            Reason::KeyTooLarge => "KeyTooLarge",
            Reason::CaNotAllowed => "CaNotAllowed",
            Reason::SanNotAllowed => "SanNotAllowed",
            Reason::TooManySans => "TooManySans",
            Reason::SubjectNotAllowed => "SubjectNotAllowed",
            Reason::IdentityMismatch => "IdentityMismatch",
            Reason::NoIdentity => "NoIdentity",
            Reason::LifetimeTooShort => "LifetimeTooShort",
            Reason::UnsupportedKeyType => "UnsupportedKeyType",
            Reason::InvalidUnverifiedUserAnnotations => "InvalidUnverifiedUserAnnotations",
            Reason::IdentityNotAllowed => "IdentityNotAllowed",
            Reason::CaExpiresTooSoon => "CaExpiresTooSoon",
        }
    }

    /// The condition a refusal of a PodCertificateRequest is written as: `Failed` when the signer
    /// cannot serve a request the apiserver admitted (its CA ends too soon, or the request holds
    /// something the signer cannot read), `Denied` when the policy says no. Both are terminal: the
    /// kubelet makes a new request later.
    pub fn pcr_condition(self) -> &'static str {
        match self {
            Reason::CaExpiresTooSoon | Reason::MalformedRequest => "Failed",
            _ => "Denied",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A terminal refusal: written once as a `Failed` condition, never retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// For the requester: names the offending value.
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_reason_has_its_own_string_which_is_its_name() {
        let strings: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            strings.len(),
            Reason::ALL.len(),
            "two reasons share a string"
        );
        for r in Reason::ALL {
            // The Debug name and the contract string are the same word, so a renamed variant shows
            // up here before it silently changes a metric label.
            assert_eq!(format!("{r:?}"), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
            assert!(r.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn refusal_displays_reason_then_message() {
        let r = Refusal::new(Reason::KeyTooWeak, "RSA key of 1024 bits");
        assert_eq!(r.to_string(), "KeyTooWeak: RSA key of 1024 bits");
    }
}
