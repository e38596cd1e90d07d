//! `Policy::decide`: one verified request in, a `Grant` or exactly one `Refusal` out.
//!
//! Checks run in a fixed order (CA bit, usages, key, lifetime, subject, SANs) so that a request
//! breaking several rules always gets the same reason. Pure: no IO, no clock, no configuration
//! parsing (a `Policy` is already valid when it gets here).

use std::time::Duration;

use super::go_duration::parse_go_duration;
use super::template::{Binding, Fit, Template};
use super::{Ask, Grant, LifetimeOutcome, Policy, Requester};
use crate::csr::{San, VerifiedCsr};
use crate::refusal::{Reason, Refusal};
use crate::usage::Usage;

/// Longest DNS name (RFC 1035), so a requester cannot make matching work on an absurd value.
const MAX_DNS_NAME: usize = 253;

impl Policy {
    /// Decides a verified request (see the module docs for the order of the checks).
    pub fn decide(&self, csr: &VerifiedCsr, ask: &Ask<'_>) -> Result<Grant, Refusal> {
        if csr.requests_ca {
            return Err(Refusal::new(
                Reason::CaNotAllowed,
                "the request asks for basicConstraints CA:TRUE; this signer never issues CA certificates",
            ));
        }
        let usages = self.check_usages(ask.usages)?;
        self.keys.check(&csr.key)?;
        let (lifetime, requested, lifetime_outcome) = self.lifetime(ask)?;
        let who = self.binding(ask);
        self.check_subject(csr, &who, &ask.requester)?;
        self.check_sans(csr, &who)?;
        Ok(Grant {
            usages,
            lifetime,
            requested,
            lifetime_outcome,
            sans: csr.sans.clone(),
        })
    }

    /// Trusted requesters may ask for any identity; everyone else only for their own.
    fn binding<'a>(&self, ask: &Ask<'a>) -> Binding<'a> {
        let r = ask.requester;
        if self.trusted_requesters.iter().any(|t| t == r.username) {
            Binding::Any
        } else {
            Binding::Identity {
                username: r.username,
                service_account: r.service_account(),
            }
        }
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

    /// `spec.expirationSeconds` wins over the annotation; too long is clamped (what kube's own
    /// signers do), too short is refused (the apiserver would reject it anyway).
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

    fn check_subject(
        &self,
        csr: &VerifiedCsr,
        who: &Binding<'_>,
        requester: &Requester<'_>,
    ) -> Result<(), Refusal> {
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
        self.check_system_names(csr, requester)?;
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
            check_templated(
                cn,
                &self.common_names,
                who,
                "subject commonName",
                Reason::SubjectNotAllowed,
            )?;
        }
        Ok(())
    }

    /// Names in Kubernetes' reserved `system:` namespace are users and groups the apiserver trusts
    /// (`system:node:<name>` with `system:nodes` passes the Node authorizer). If this CA is also an
    /// apiserver client CA, certifying them for someone else is impersonation gated only by the
    /// approver: only the requester's own name and groups are allowed, unless the policy says
    /// `subject.allowSystemIdentities`.
    fn check_system_names(
        &self,
        csr: &VerifiedCsr,
        requester: &Requester<'_>,
    ) -> Result<(), Refusal> {
        if self.allow_system_identities {
            return Ok(());
        }
        let refuse = |what: &str, value: &str, own: &str| {
            Refusal::new(
                Reason::SubjectNotAllowed,
                format!(
                    "subject {what} {value:?} is a Kubernetes system: name that is not the requester's own {own} (policy subject.allowSystemIdentities allows it)"
                ),
            )
        };
        if let Some(cn) = csr
            .common_names
            .iter()
            .find(|cn| is_system_name(cn) && cn.as_str() != requester.username)
        {
            return Err(refuse("commonName", cn, "username"));
        }
        if let Some(o) = csr
            .organizations
            .iter()
            .find(|o| is_system_name(o) && !requester.groups.contains(o))
        {
            return Err(refuse("organization", o, "group"));
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
                San::Dns(name) => self.check_dns(name, who)?,
                San::Uri(uri) => check_templated(
                    uri,
                    &self.uris,
                    who,
                    "URI subjectAltName",
                    Reason::SanNotAllowed,
                )?,
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

    fn check_dns(&self, name: &str, who: &Binding<'_>) -> Result<(), Refusal> {
        if name.len() > MAX_DNS_NAME {
            return Err(Refusal::new(
                Reason::SanNotAllowed,
                format!(
                    "DNS subjectAltName of {} characters is longer than {MAX_DNS_NAME}",
                    name.len()
                ),
            ));
        }
        // Only a single leading "*." label, and only when the policy allows wildcards at all.
        let wildcard = name.contains('*');
        if wildcard
            && !(self.allow_wildcard_dns && name.starts_with("*.") && !name[1..].contains('*'))
        {
            return Err(Refusal::new(
                Reason::SanNotAllowed,
                format!("wildcard DNS subjectAltName {name:?} is not allowed"),
            ));
        }
        check_templated(
            name,
            &self.dns,
            who,
            "DNS subjectAltName",
            Reason::SanNotAllowed,
        )
    }
}

/// Kubernetes reserves the `system:` prefix for the users and groups it creates itself.
fn is_system_name(s: &str) -> bool {
    s.starts_with("system:")
}

/// Allowed when some template fits for this requester, and no other template gives the same value
/// to someone else (`{username}` for a user named `app.team-a.svc` against
/// `{serviceaccount}.{namespace}.svc`). When none fits but a template that names the requester would
/// fit for *someone*, the refusal says the identity is wrong.
fn check_templated(
    value: &str,
    templates: &[Template],
    who: &Binding<'_>,
    what: &str,
    reason: Reason,
) -> Result<(), Refusal> {
    let mut unusable = None;
    for t in templates {
        match t.fit(value, who) {
            Fit::Yes => return unambiguous(value, t, templates, who, what),
            Fit::Unusable(why) => {
                unusable.get_or_insert(why);
            }
            Fit::No => {}
        }
    }
    if let Some(why) = unusable {
        return Err(Refusal::new(reason, format!("{what} {value:?}: {why}")));
    }
    if let Binding::Identity { username, .. } = who {
        if let Some(t) = templates
            .iter()
            .find(|t| t.binds_identity() && t.fit(value, &Binding::Any) == Fit::Yes)
        {
            return Err(Refusal::new(
                Reason::IdentityMismatch,
                format!(
                    "{what} {value:?} does not belong to requester {username:?} (pattern {:?})",
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

/// `value` fitted `granted` for the requester; refused when another identity-bound template would
/// give it to a different identity. Trusted requesters may name anyone, so nothing to check.
fn unambiguous(
    value: &str,
    granted: &Template,
    templates: &[Template],
    who: &Binding<'_>,
    what: &str,
) -> Result<(), Refusal> {
    let Binding::Identity { username, .. } = who else {
        return Ok(());
    };
    match templates.iter().find(|t| {
        t.binds_identity() && t.fit(value, &Binding::Any) == Fit::Yes && t.fit(value, who) != Fit::Yes
    }) {
        None => Ok(()),
        Some(other) => Err(Refusal::new(
            Reason::IdentityMismatch,
            format!(
                "{what} {value:?} fits {:?} for requester {username:?} but {:?} for another identity: one name must not stand for two identities",
                granted.as_str(),
                other.as_str()
            ),
        )),
    }
}

/// `a, b, c` for a refusal message.
fn list(usages: &[Usage]) -> String {
    usages
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
