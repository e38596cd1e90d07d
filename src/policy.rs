//! The signer policy: a pure decision, no IO and no Kubernetes types.
//!
//! Input: a verified request, the requested usages and lifetime, and who asked. Output: the issuance
//! parameters, or exactly one `Refusal` with a stable machine reason (used verbatim as the Failed
//! condition's reason, the metric label and the log field) and a message naming the offending value.
//! Deny by default: anything not explicitly allowed is refused.

use std::time::Duration;

use crate::csr::{KeyKind, San, VerifiedCsr};
use crate::usage::Usage;

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
}

impl Reason {
    /// Every reason, for metric pre-registration and docs.
    pub const ALL: [Reason; 15] = [
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
    ];

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
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A terminal policy refusal: written once as a `Failed` condition, never retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
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

// ---------------------------------------------------------------------------------------------
// Templates: patterns that may name the requester.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: one or more characters, never the separator (`.` in DNS names, `/` in URIs).
    Star,
    Namespace,
    ServiceAccount,
    Username,
}

/// A pattern such as `{serviceaccount}.{namespace}.svc`, `*.example.com` or
/// `spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{s:?}: unclosed '{{'"))?;
                let piece = match &rest[1..end] {
                    "namespace" => Piece::Namespace,
                    "serviceaccount" => Piece::ServiceAccount,
                    "username" => Piece::Username,
                    other => {
                        return Err(format!(
                            "{s:?}: unknown placeholder {{{other}}} (known: {{namespace}}, {{serviceaccount}}, {{username}})"
                        ))
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &rest[end + 1..];
            } else if c == '*' {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Star);
                rest = &rest[1..];
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if pieces.is_empty() {
            return Err("empty pattern".into());
        }
        // Two wildcards side by side ("**", "{namespace}{serviceaccount}") are ambiguous, and each
        // extra one multiplies the matching work on a requester-chosen value.
        if pieces
            .windows(2)
            .any(|w| !matches!(w[0], Piece::Literal(_)) && !matches!(w[1], Piece::Literal(_)))
        {
            return Err(format!(
                "{s:?}: wildcards and placeholders must be separated by literal text"
            ));
        }
        Ok(Template {
            source: s.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn binds_identity(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Namespace | Piece::ServiceAccount | Piece::Username
            )
        })
    }

    /// Whether `value` matches with the placeholders bound to `who` (or to any single segment when
    /// `who` is `Binding::Any`).
    fn matches(&self, value: &str, who: &Binding<'_>, separator: char) -> bool {
        match_pieces(&self.pieces, value, who, separator)
    }
}

/// How placeholders are bound while matching.
enum Binding<'a> {
    /// The requester's identity: a placeholder matches only its own value (a non-service-account
    /// requester has no namespace or service account, so those placeholders never match).
    Requester(&'a Requester<'a>),
    /// A trusted requester (or the "would this match anyone" check): any single segment.
    Any,
}

fn match_pieces(pieces: &[Piece], value: &str, who: &Binding<'_>, sep: char) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return value.is_empty();
    };
    let bound = |p: &Piece| -> Option<Option<&str>> {
        let Binding::Requester(r) = who else {
            return None;
        };
        Some(match p {
            Piece::Namespace => r.service_account().map(|(ns, _)| ns),
            Piece::ServiceAccount => r.service_account().map(|(_, sa)| sa),
            Piece::Username => Some(r.username),
            _ => None,
        })
    };
    match first {
        Piece::Literal(l) => value
            .strip_prefix(l.as_str())
            .is_some_and(|v| match_pieces(rest, v, who, sep)),
        Piece::Star => segment_splits(value, sep).any(|tail| match_pieces(rest, tail, who, sep)),
        p => match bound(p) {
            Some(Some(v)) => value
                .strip_prefix(v)
                .is_some_and(|tail| !v.is_empty() && match_pieces(rest, tail, who, sep)),
            Some(None) => false,
            None => segment_splits(value, sep).any(|tail| match_pieces(rest, tail, who, sep)),
        },
    }
}

/// The tails left after consuming 1..n characters of `value` that contain no separator.
fn segment_splits(value: &str, sep: char) -> impl Iterator<Item = &str> {
    let limit = value.find(sep).unwrap_or(value.len());
    value
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(move |&end| end <= limit)
        .map(move |end| &value[end..])
}

// ---------------------------------------------------------------------------------------------
// The policy.
// ---------------------------------------------------------------------------------------------

/// Who created the CSR (`spec.username`, `spec.groups`), as stamped by the apiserver.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

impl Requester<'_> {
    /// `(namespace, name)` for `system:serviceaccount:<ns>:<sa>`.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        let (ns, sa) = rest.split_once(':')?;
        (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
    }
}

/// One signer's validated policy (built by `config`).
#[derive(Clone, Debug)]
pub struct Policy {
    pub allowed_usages: Vec<Usage>,
    /// At least one of these must be requested (empty: no requirement).
    pub required_usages: Vec<Usage>,
    /// `(min_bits, max_bits)` when RSA keys are allowed.
    pub rsa: Option<(u32, u32)>,
    pub p256: bool,
    pub p384: bool,
    pub ed25519: bool,
    pub default_lifetime: Duration,
    pub min_lifetime: Duration,
    pub max_lifetime: Duration,
    /// Allowed commonName patterns (empty: no commonName allowed).
    pub common_names: Vec<Template>,
    pub require_common_name: bool,
    /// Allowed organizations (`None`: any).
    pub organizations: Option<Vec<String>>,
    pub dns: Vec<Template>,
    pub allow_wildcard_dns: bool,
    pub allow_ip: bool,
    pub allow_email: bool,
    pub uris: Vec<Template>,
    pub max_sans: usize,
    /// Usernames exempt from identity binding (e.g. istiod acting as a registration authority).
    pub trusted_requesters: Vec<String>,
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
}

impl LifetimeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LifetimeOutcome::Honoured => "honoured",
            LifetimeOutcome::Clamped => "clamped",
            LifetimeOutcome::Defaulted => "defaulted",
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

impl Policy {
    /// Decides a verified request. Checks run in a fixed order (CA bit, usages, key, lifetime,
    /// subject, SANs) so that a request breaking several rules always gets the same reason.
    pub fn decide(&self, csr: &VerifiedCsr, ask: &Ask<'_>) -> Result<Grant, Refusal> {
        if csr.requests_ca {
            return Err(Refusal::new(
                Reason::CaNotAllowed,
                "the request asks for basicConstraints CA:TRUE; this signer never issues CA certificates",
            ));
        }
        let usages = self.check_usages(ask.usages)?;
        self.check_key(&csr.key)?;
        let (lifetime, requested, lifetime_outcome) = self.lifetime(ask)?;
        let trusted = self
            .trusted_requesters
            .iter()
            .any(|t| t == ask.requester.username);
        let who = if trusted {
            Binding::Any
        } else {
            Binding::Requester(&ask.requester)
        };
        self.check_subject(csr, &who)?;
        self.check_sans(csr, &who)?;
        Ok(Grant {
            usages,
            lifetime,
            requested,
            lifetime_outcome,
            sans: csr.sans.clone(),
        })
    }

    fn check_usages(&self, asked: &[String]) -> Result<Vec<Usage>, Refusal> {
        let mut usages: Vec<Usage> = Vec::with_capacity(asked.len());
        for s in asked {
            let u = Usage::parse(s).ok_or_else(|| {
                Refusal::new(Reason::UnknownUsage, format!("unknown usage {s:?}"))
            })?;
            if !usages.contains(&u) {
                usages.push(u);
            }
        }
        if let Some(u) = usages
            .iter()
            .find(|u| matches!(u, Usage::CertSign | Usage::CrlSign))
        {
            return Err(Refusal::new(
                Reason::UsageNotAllowed,
                format!(
                    "usage {:?} is never allowed: this signer does not issue CA certificates",
                    u.as_str()
                ),
            ));
        }
        if let Some(u) = usages.iter().find(|u| !self.allowed_usages.contains(u)) {
            return Err(Refusal::new(
                Reason::UsageNotAllowed,
                format!(
                    "usage {:?} is not allowed (allowed: {})",
                    u.as_str(),
                    list(&self.allowed_usages)
                ),
            ));
        }
        if usages.is_empty() {
            return Err(Refusal::new(Reason::UsageRequired, "no usages requested"));
        }
        if !self.required_usages.is_empty()
            && !usages.iter().any(|u| self.required_usages.contains(u))
        {
            return Err(Refusal::new(
                Reason::UsageRequired,
                format!(
                    "at least one of these usages is required: {}",
                    list(&self.required_usages)
                ),
            ));
        }
        Ok(usages)
    }

    fn check_key(&self, key: &KeyKind) -> Result<(), Refusal> {
        let not_allowed = || {
            Err(Refusal::new(
                Reason::KeyTypeNotAllowed,
                format!(
                    "{key} keys are not allowed (allowed: {})",
                    self.allowed_keys()
                ),
            ))
        };
        match key {
            KeyKind::Rsa { bits } => match self.rsa {
                None => not_allowed(),
                Some((min, _)) if *bits < min => Err(Refusal::new(
                    Reason::KeyTooWeak,
                    format!("RSA key of {bits} bits is below the minimum of {min}"),
                )),
                Some((_, max)) if *bits > max => Err(Refusal::new(
                    Reason::KeyTooLarge,
                    format!("RSA key of {bits} bits is above the maximum of {max}"),
                )),
                Some(_) => Ok(()),
            },
            KeyKind::EcP256 if self.p256 => Ok(()),
            KeyKind::EcP384 if self.p384 => Ok(()),
            KeyKind::Ed25519 if self.ed25519 => Ok(()),
            _ => not_allowed(),
        }
    }

    fn allowed_keys(&self) -> String {
        let mut v = Vec::new();
        if let Some((min, max)) = self.rsa {
            v.push(format!("RSA {min}-{max}"));
        }
        if self.p256 {
            v.push("ECDSA P-256".into());
        }
        if self.p384 {
            v.push("ECDSA P-384".into());
        }
        if self.ed25519 {
            v.push("Ed25519".into());
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    fn lifetime(
        &self,
        ask: &Ask<'_>,
    ) -> Result<(Duration, Option<Duration>, LifetimeOutcome), Refusal> {
        let requested = match (ask.expiration_seconds, ask.duration_annotation) {
            (Some(secs), _) => Some(Duration::from_secs(secs.max(0) as u64)),
            (None, Some(text)) => Some(parse_go_duration(text).ok_or_else(|| {
                Refusal::new(
                    Reason::MalformedRequest,
                    format!("annotation experimental.cert-manager.io/request-duration: cannot parse {text:?}"),
                )
            })?),
            (None, None) => None,
        };
        match requested {
            None => Ok((self.default_lifetime, None, LifetimeOutcome::Defaulted)),
            Some(r) if r < self.min_lifetime => Err(Refusal::new(
                Reason::LifetimeTooShort,
                format!(
                    "requested lifetime {} is below the minimum of {}",
                    humantime::format_duration(r),
                    humantime::format_duration(self.min_lifetime)
                ),
            )),
            Some(r) if r > self.max_lifetime => {
                Ok((self.max_lifetime, Some(r), LifetimeOutcome::Clamped))
            }
            Some(r) => Ok((r, Some(r), LifetimeOutcome::Honoured)),
        }
    }

    fn check_subject(&self, csr: &VerifiedCsr, who: &Binding<'_>) -> Result<(), Refusal> {
        if csr.subject_is_empty() && csr.sans.is_empty() {
            return Err(Refusal::new(
                Reason::NoIdentity,
                "the request has an empty subject and no subjectAltNames",
            ));
        }
        if let Some(allowed) = &self.organizations {
            if let Some(o) = csr.organizations.iter().find(|o| !allowed.contains(o)) {
                return Err(Refusal::new(
                    Reason::SubjectNotAllowed,
                    format!("subject organization {o:?} is not allowed"),
                ));
            }
        }
        // Only C, ST, L, O, OU and CN are allowed: emailAddress, UID, DC and the like would let a
        // client claim an identity (OpenSSL matches emailAddress when there is no email SAN).
        if let Some(oid) = csr.other_attributes.first() {
            return Err(Refusal::new(
                Reason::SubjectNotAllowed,
                format!("subject attribute {oid} is not allowed (allowed: C, ST, L, O, OU, CN)"),
            ));
        }
        if csr.organizations.iter().any(|o| o == "system:masters") {
            return Err(Refusal::new(
                Reason::SubjectNotAllowed,
                "subject organization \"system:masters\" is never allowed",
            ));
        }
        if self.require_common_name && csr.common_names.is_empty() {
            return Err(Refusal::new(
                Reason::SubjectNotAllowed,
                "a subject commonName is required",
            ));
        }
        if let Some(cn) = csr
            .common_names
            .iter()
            .find(|cn| cn.contains('*') && !self.allow_wildcard_dns)
        {
            return Err(Refusal::new(
                Reason::SubjectNotAllowed,
                format!("wildcard subject commonName {cn:?} is not allowed"),
            ));
        }
        for cn in &csr.common_names {
            self.check_templated(
                cn,
                &self.common_names,
                who,
                '.',
                "subject commonName",
                Reason::SubjectNotAllowed,
            )?;
        }
        Ok(())
    }

    fn check_sans(&self, csr: &VerifiedCsr, who: &Binding<'_>) -> Result<(), Refusal> {
        if csr.sans.len() > self.max_sans {
            return Err(Refusal::new(
                Reason::TooManySans,
                format!(
                    "the request has {} subjectAltNames, more than the {} allowed",
                    csr.sans.len(),
                    self.max_sans
                ),
            ));
        }
        for san in &csr.sans {
            match san {
                San::Dns(name) => {
                    if name.len() > 253 {
                        return Err(Refusal::new(
                            Reason::SanNotAllowed,
                            format!(
                                "DNS subjectAltName of {} characters is longer than 253",
                                name.len()
                            ),
                        ));
                    }
                    let wildcard = name.contains('*');
                    if wildcard
                        && !(self.allow_wildcard_dns
                            && name.starts_with("*.")
                            && !name[1..].contains('*'))
                    {
                        return Err(Refusal::new(
                            Reason::SanNotAllowed,
                            format!("wildcard DNS subjectAltName {name:?} is not allowed"),
                        ));
                    }
                    self.check_templated(
                        name,
                        &self.dns,
                        who,
                        '.',
                        "DNS subjectAltName",
                        Reason::SanNotAllowed,
                    )?;
                }
                San::Uri(uri) => {
                    self.check_templated(
                        uri,
                        &self.uris,
                        who,
                        '/',
                        "URI subjectAltName",
                        Reason::SanNotAllowed,
                    )?;
                }
                San::Ip(ip) if !self.allow_ip => {
                    return Err(Refusal::new(
                        Reason::SanNotAllowed,
                        format!("IP subjectAltName {ip} is not allowed"),
                    ))
                }
                San::Email(e) if !self.allow_email => {
                    return Err(Refusal::new(
                        Reason::SanNotAllowed,
                        format!("email subjectAltName {e:?} is not allowed"),
                    ))
                }
                San::Unsupported(kind) => {
                    return Err(Refusal::new(
                        Reason::SanNotAllowed,
                        format!("{kind} subjectAltNames are not supported"),
                    ))
                }
                San::Ip(_) | San::Email(_) => {}
            }
        }
        Ok(())
    }

    /// Allowed when some template matches for this requester. When none does but a template that
    /// names the requester would match for *someone*, the refusal says the identity is wrong.
    fn check_templated(
        &self,
        value: &str,
        templates: &[Template],
        who: &Binding<'_>,
        sep: char,
        what: &str,
        reason: Reason,
    ) -> Result<(), Refusal> {
        if templates.iter().any(|t| t.matches(value, who, sep)) {
            return Ok(());
        }
        if let Binding::Requester(r) = who {
            if let Some(t) = templates
                .iter()
                .find(|t| t.binds_identity() && t.matches(value, &Binding::Any, sep))
            {
                return Err(Refusal::new(
                    Reason::IdentityMismatch,
                    format!(
                        "{what} {value:?} does not belong to requester {:?} (pattern {:?})",
                        r.username,
                        t.as_str()
                    ),
                ));
            }
        }
        Err(Refusal::new(
            reason,
            format!(
                "{what} {value:?} is not allowed (allowed: {})",
                if templates.is_empty() {
                    "none".to_string()
                } else {
                    templates
                        .iter()
                        .map(|t| format!("{:?}", t.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ))
    }

    /// A human-readable view of the policy, for `check-config` and `--explain`.
    pub fn describe(&self) -> serde_json::Value {
        let strs = |v: &[Template]| v.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
        serde_json::json!({
            "usages": {
                "allowed": self.allowed_usages.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
                "requireOneOf": self.required_usages.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
            },
            "keys": self.allowed_keys(),
            "lifetime": {
                "default": humantime::format_duration(self.default_lifetime).to_string(),
                "min": humantime::format_duration(self.min_lifetime).to_string(),
                "max": humantime::format_duration(self.max_lifetime).to_string(),
            },
            "subject": {
                "commonNames": strs(&self.common_names),
                "requireCommonName": self.require_common_name,
                "organizations": self.organizations,
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

fn list(usages: &[Usage]) -> String {
    usages
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a Go `time.Duration` string such as `1h`, `90m` or `2160h0m0s` (what cert-manager and
/// Istio put in the request-duration annotation).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(username: &'a str) -> Requester<'a> {
        Requester {
            username,
            groups: &[],
        }
    }

    fn m(t: &str, value: &str, who: &str, sep: char) -> bool {
        let r = req(who);
        Template::parse(t)
            .expect("template")
            .matches(value, &Binding::Requester(&r), sep)
    }

    #[test]
    fn templates_bind_service_accounts() {
        let sa = "system:serviceaccount:team-a:app";
        assert!(m(
            "{serviceaccount}.{namespace}.svc",
            "app.team-a.svc",
            sa,
            '.'
        ));
        assert!(!m(
            "{serviceaccount}.{namespace}.svc",
            "db.team-a.svc",
            sa,
            '.'
        ));
        assert!(!m(
            "{serviceaccount}.{namespace}.svc",
            "app.team-a.svc",
            "developer",
            '.'
        ));
        assert!(m("{username}", "developer", "developer", '.'));
        assert!(m(
            "spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}",
            "spiffe://cluster.local/ns/team-a/sa/app",
            sa,
            '/'
        ));
        assert!(m("*.example.com", "a.example.com", "x", '.'));
        assert!(!m("*.example.com", "a.b.example.com", "x", '.'));
        assert!(!m("*.example.com", ".example.com", "x", '.'));
    }

    #[test]
    fn template_errors_are_explicit() {
        assert!(Template::parse("{nmespace}.svc").is_err());
        assert!(Template::parse("{namespace.svc").is_err());
        assert!(Template::parse("").is_err());
        assert!(Template::parse("**.example.com").is_err());
        assert!(Template::parse("{namespace}{serviceaccount}.svc").is_err());
        assert!(Template::parse("{namespace}-{serviceaccount}.svc").is_ok());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_go_duration("2160h0m0s"),
            Some(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
