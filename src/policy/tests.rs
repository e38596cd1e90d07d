//! `decide` as a table: hand-built verified requests (no CA, no files), one expected outcome each.
//! Plus one request that goes through `csr::parse_and_verify`, generated in memory with OpenSSL, so
//! the hand-built requests stay honest about what parsing produces.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use openssl::nid::Nid;
use openssl::x509::X509Name;

use super::*;
use crate::csr::{KeyKind, VerifiedCsr};
use crate::refusal::{Reason, Refusal};

const SA: &str = "system:serviceaccount:team-a:app";
const ISTIOD: &str = "system:serviceaccount:istio-system:istiod";
const DAY: u64 = 86400;

fn policy(edit: impl FnOnce(&mut PolicySettings)) -> Policy {
    let mut s = PolicySettings::default();
    edit(&mut s);
    Policy::try_from(&s).expect("test policy is valid")
}

fn defaults(_: &mut PolicySettings) {}

fn trust_istiod(s: &mut PolicySettings) {
    s.trusted_requesters = vec![ISTIOD.into()];
}

/// A request as `csr` would hand it over, plus what the CSR object asks for.
#[derive(Clone)]
struct Req {
    csr: VerifiedCsr,
    usages: Vec<String>,
    expiration: Option<i64>,
    annotation: Option<&'static str>,
    username: &'static str,
    groups: Vec<String>,
}

/// DER of a subject with these commonNames and organizations (`30 00` when both are empty).
fn subject_der(cns: &[String], orgs: &[String]) -> Vec<u8> {
    let mut b = X509Name::builder().expect("name builder");
    for cn in cns {
        b.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    }
    for o in orgs {
        b.append_entry_by_nid(Nid::ORGANIZATIONNAME, o).expect("O");
    }
    b.build().to_der().expect("subject DER")
}

impl Req {
    /// `developer` asking for a client certificate for itself, with a P-256 key.
    fn developer() -> Req {
        Req {
            csr: VerifiedCsr {
                subject_der: Vec::new(),
                common_names: vec!["developer".into()],
                organizations: Vec::new(),
                other_attributes: Vec::new(),
                // Not read by the policy.
                spki_der: Vec::new(),
                public_key_bits: Vec::new(),
                key: KeyKind::EcP256,
                sans: Vec::new(),
                requests_ca: false,
            },
            usages: vec!["digital signature".into(), "client auth".into()],
            expiration: None,
            annotation: None,
            username: "developer",
            groups: Vec::new(),
        }
        .subject_from_fields()
    }

    /// `team-a:app` asking for its own service name and SPIFFE ID.
    fn service_account() -> Req {
        Req::developer().by(SA).cn(&["app.team-a.svc"]).sans(vec![
            San::Dns("app.team-a.svc".into()),
            San::Uri("spiffe://cluster.local/ns/team-a/sa/app".into()),
        ])
    }

    fn subject_from_fields(mut self) -> Req {
        self.csr.subject_der = subject_der(&self.csr.common_names, &self.csr.organizations);
        self
    }

    fn by(mut self, username: &'static str) -> Req {
        self.username = username;
        self
    }

    fn cn(mut self, cns: &[&str]) -> Req {
        self.csr.common_names = cns.iter().map(|s| s.to_string()).collect();
        self.subject_from_fields()
    }

    fn o(mut self, orgs: &[&str]) -> Req {
        self.csr.organizations = orgs.iter().map(|s| s.to_string()).collect();
        self.subject_from_fields()
    }

    fn attribute(mut self, oid: &str) -> Req {
        self.csr.other_attributes.push(oid.into());
        self
    }

    fn sans(mut self, sans: Vec<San>) -> Req {
        self.csr.sans = sans;
        self
    }

    fn key(mut self, key: KeyKind) -> Req {
        self.csr.key = key;
        self
    }

    fn ca(mut self) -> Req {
        self.csr.requests_ca = true;
        self
    }

    fn usages(mut self, usages: &[&str]) -> Req {
        self.usages = usages.iter().map(|s| s.to_string()).collect();
        self
    }

    fn groups(mut self, groups: &[&str]) -> Req {
        self.groups = groups.iter().map(|s| s.to_string()).collect();
        self
    }

    fn expires(mut self, seconds: i64) -> Req {
        self.expiration = Some(seconds);
        self
    }

    fn annotation(mut self, text: &'static str) -> Req {
        self.annotation = Some(text);
        self
    }

    fn decide(&self, policy: &Policy) -> Result<Grant, Refusal> {
        let ask = Ask {
            usages: &self.usages,
            expiration_seconds: self.expiration,
            duration_annotation: self.annotation,
            requester: Requester {
                username: self.username,
                groups: &self.groups,
            },
        };
        policy.decide(&self.csr, &ask)
    }
}

fn dns(names: &[&str]) -> Vec<San> {
    names.iter().map(|n| San::Dns(n.to_string())).collect()
}

/// (name, policy edit, request, reason, fragment the message must contain)
type RefusalCase = (
    &'static str,
    fn(&mut PolicySettings),
    Req,
    Reason,
    &'static str,
);

// One case a line: the table is easier to read, and to extend, than its rustfmt layout.
#[rustfmt::skip]
fn refusals() -> Vec<RefusalCase> {
    let dev = Req::developer;
    let sa = Req::service_account;
    vec![
        ("CA bit, checked first", defaults, dev().ca().usages(&["cert sign"]), Reason::CaNotAllowed, "CA:TRUE"),
        ("unknown usage", defaults, dev().usages(&["client auth", "fly"]), Reason::UnknownUsage, "\"fly\""),
        ("cert sign is never allowed", defaults, dev().usages(&["cert sign"]), Reason::UsageNotAllowed, "never allowed"),
        ("usage outside the allowed list", defaults, dev().usages(&["client auth", "code signing"]), Reason::UsageNotAllowed, "\"code signing\""),
        ("no usages", defaults, dev().usages(&[]), Reason::UsageRequired, "no usages"),
        ("none of the required usages", defaults, dev().usages(&["digital signature"]), Reason::UsageRequired, "client auth, server auth"),
        ("RSA below the minimum", defaults, dev().key(KeyKind::Rsa { bits: 1024 }), Reason::KeyTooWeak, "1024"),
        ("RSA above the maximum", defaults, dev().key(KeyKind::Rsa { bits: 16384 }), Reason::KeyTooLarge, "16384"),
        ("RSA switched off", |s| s.keys.rsa.enabled = false, dev().key(KeyKind::Rsa { bits: 2048 }), Reason::KeyTypeNotAllowed, "RSA-2048"),
        ("P-521 is never allowed", defaults, dev().key(KeyKind::EcP521), Reason::KeyTypeNotAllowed, "P-521"),
        ("Ed25519 switched off", |s| s.keys.ed25519 = false, dev().key(KeyKind::Ed25519), Reason::KeyTypeNotAllowed, "allowed: RSA 2048-8192, ECDSA P-256, ECDSA P-384"),
        ("other key types", defaults, dev().key(KeyKind::Other("DSA".into())), Reason::KeyTypeNotAllowed, "DSA"),
        ("key checked before lifetime", defaults, dev().key(KeyKind::EcP521).expires(60), Reason::KeyTypeNotAllowed, "P-521"),
        ("expirationSeconds below the minimum", defaults, dev().expires(599), Reason::LifetimeTooShort, "9m 59s"),
        ("negative expirationSeconds", defaults, dev().expires(-5), Reason::LifetimeTooShort, "0s"),
        ("annotation below the minimum", defaults, dev().annotation("5m"), Reason::LifetimeTooShort, "5m"),
        ("annotation in an unknown syntax", defaults, dev().annotation("1d"), Reason::MalformedRequest, "\"1d\""),
        ("empty subject and no SANs", defaults, dev().cn(&[]), Reason::NoIdentity, "empty subject"),
        ("organization outside the list", |s| s.subject.organizations = Some(vec!["dev".into()]), dev().o(&["ops"]), Reason::SubjectNotAllowed, "\"ops\""),
        ("system:masters", defaults, dev().o(&["system:masters"]), Reason::SubjectNotAllowed, "system:masters"),
        ("identity-bearing attribute (UID)", defaults, dev().attribute("0.9.2342.19200300.100.1.1"), Reason::SubjectNotAllowed, "0.9.2342.19200300.100.1.1"),
        ("commonName required", |s| s.subject.require_common_name = true, sa().cn(&[]), Reason::SubjectNotAllowed, "commonName is required"),
        ("wildcard commonName", defaults, dev().cn(&["*.example.com"]), Reason::SubjectNotAllowed, "wildcard"),
        ("commonName of someone else", defaults, dev().cn(&["admin"]), Reason::IdentityMismatch, "\"developer\""),
        ("commonName no pattern allows", defaults, dev().cn(&["a.b.c.d"]), Reason::SubjectNotAllowed, "a.b.c.d"),
        ("every commonName is checked", defaults, dev().cn(&["developer", "admin"]), Reason::IdentityMismatch, "\"admin\""),
        ("subject checked before SANs", defaults, dev().cn(&["admin"]).sans(dns(&["x.example.com"])), Reason::IdentityMismatch, "\"admin\""),
        ("too many SANs", |s| s.sans.max_count = 2, sa().sans(dns(&["a", "b", "c"])), Reason::TooManySans, "3 subjectAltNames"),
        ("DNS name over 253 characters", defaults, sa().sans(vec![San::Dns("a".repeat(254))]), Reason::SanNotAllowed, "254 characters"),
        ("wildcard DNS not enabled", defaults, sa().sans(dns(&["*.team-a.svc"])), Reason::SanNotAllowed, "wildcard"),
        ("wildcard DNS beyond the first label", |s| { s.sans.allow_wildcard_dns = true; s.sans.dns = vec!["*.example.com".into()]; }, sa().sans(dns(&["a.*.example.com"])), Reason::SanNotAllowed, "wildcard"),
        ("DNS name of another service account", defaults, sa().sans(dns(&["db.team-a.svc"])), Reason::IdentityMismatch, "{serviceaccount}.{namespace}.svc"),
        ("service DNS name asked by a user", defaults, dev().sans(dns(&["app.team-a.svc"])), Reason::IdentityMismatch, "\"developer\""),
        ("DNS name no pattern allows", defaults, sa().sans(dns(&["example.com"])), Reason::SanNotAllowed, "\"example.com\""),
        ("SPIFFE ID of another namespace", defaults, sa().sans(vec![San::Uri("spiffe://cluster.local/ns/team-b/sa/app".into())]), Reason::IdentityMismatch, "team-b"),
        ("URI no pattern allows", defaults, sa().sans(vec![San::Uri("https://example.com/".into())]), Reason::SanNotAllowed, "https://example.com/"),
        ("no URI pattern at all", |s| s.sans.uri.clear(), sa(), Reason::SanNotAllowed, "allowed: none"),
        ("IP SAN not enabled", defaults, sa().sans(vec![San::Ip(IpAddr::from([10, 0, 0, 1]))]), Reason::SanNotAllowed, "10.0.0.1"),
        ("email SAN not enabled", defaults, sa().sans(vec![San::Email("a@example.com".into())]), Reason::SanNotAllowed, "a@example.com"),
        ("dotted service account name in a DNS name", defaults, sa().by("system:serviceaccount:team-a:my.app").cn(&[]).sans(dns(&["my.app.team-a.svc"])), Reason::SanNotAllowed, "{serviceaccount} would be \"my.app\", which contains '.'"),
        ("dotted service account name in a commonName", defaults, sa().by("system:serviceaccount:team-a:my.app").cn(&["my.app.team-a.svc"]).sans(vec![]), Reason::SubjectNotAllowed, "contains '.'"),
        ("a user named like a service account's name", defaults, dev().by("app.team-a.svc").cn(&["app.team-a.svc"]), Reason::IdentityMismatch, "for another identity"),
        ("two patterns give one name to two identities", |s| s.sans.dns = vec!["{serviceaccount}.{namespace}.svc".into(), "{namespace}.{serviceaccount}.svc".into()], sa().cn(&[]).sans(dns(&["app.team-a.svc"])), Reason::IdentityMismatch, "\"{namespace}.{serviceaccount}.svc\" for another identity"),
        ("trusted requester: \"..\" as a SPIFFE namespace", trust_istiod, sa().by(ISTIOD).cn(&[]).sans(vec![San::Uri("spiffe://cluster.local/ns/../sa/app".into())]), Reason::SanNotAllowed, "{namespace} would be \"..\", which is not a valid namespace name"),
        ("trusted requester: '?' in a SPIFFE service account", trust_istiod, sa().by(ISTIOD).cn(&[]).sans(vec![San::Uri("spiffe://cluster.local/ns/a/sa/b?c".into())]), Reason::SanNotAllowed, "not a valid service account name"),
        ("trusted requester: leading '-' in a namespace", trust_istiod, sa().by(ISTIOD).cn(&[]).sans(dns(&["app.-a.svc"])), Reason::SanNotAllowed, "\"-a\", which is not a valid namespace name"),
        ("trusted requester: {username} that is not a path segment", |s| { s.trusted_requesters = vec![ISTIOD.into()]; s.sans.uri = vec!["spiffe://td/user/{username}".into()]; }, sa().by(ISTIOD).cn(&[]).sans(vec![San::Uri("spiffe://td/user/..".into())]), Reason::SanNotAllowed, "not a URI path segment"),
        ("trusted requester: {username} that is not a DNS label", |s| { s.trusted_requesters = vec![ISTIOD.into()]; s.sans.dns = vec!["{username}.users.example.com".into()]; }, sa().by(ISTIOD).cn(&[]).sans(dns(&["Bob.users.example.com"])), Reason::SanNotAllowed, "not a DNS label"),
        ("trusted requester names a node", trust_istiod, dev().by(ISTIOD).cn(&["system:node:node-1"]), Reason::SubjectNotAllowed, "\"system:node:node-1\" is a Kubernetes system: name"),
        ("a system group that is not the requester's", defaults, dev().o(&["system:nodes"]), Reason::SubjectNotAllowed, "organization \"system:nodes\""),
        ("a system group the requester is in, for a trusted requester's other identity", trust_istiod, sa().by(ISTIOD).o(&["system:nodes"]).groups(&["system:authenticated"]), Reason::SubjectNotAllowed, "system:nodes"),
        ("a system name through a static pattern", |s| s.subject.common_names = vec!["system:kube-proxy".into()], dev().cn(&["system:kube-proxy"]), Reason::SubjectNotAllowed, "system:kube-proxy"),
        ("unsupported SAN type", |s| { s.sans.ip = true; s.sans.email = true; }, sa().sans(vec![San::Unsupported("otherName")]), Reason::SanNotAllowed, "otherName"),
    ]
}

#[test]
fn refusals_name_one_reason_and_the_offending_value() {
    for (name, edit, req, reason, mentions) in refusals() {
        let refusal = req
            .decide(&policy(edit))
            .expect_err(&format!("{name}: expected a refusal"));
        assert_eq!(refusal.reason, reason, "{name}: {refusal}");
        assert!(
            refusal.message.contains(mentions),
            "{name}: {:?} does not mention {mentions:?}",
            refusal.message
        );
    }
}

#[test]
fn every_policy_reason_is_in_the_table() {
    let covered: BTreeSet<&str> = refusals().iter().map(|c| c.3.as_str()).collect();
    // BadSignature is decided by `csr`, before the policy sees the request.
    let expected: BTreeSet<&str> = Reason::ALL
        .iter()
        .filter(|r| **r != Reason::BadSignature && !Reason::POD_ONLY.contains(r))
        .map(|r| r.as_str())
        .collect();
    assert_eq!(covered, expected);
}

/// (name, policy edit, request, usages, lifetime, requested, outcome)
type GrantCase = (
    &'static str,
    fn(&mut PolicySettings),
    Req,
    &'static [Usage],
    u64,
    Option<u64>,
    LifetimeOutcome,
);

#[rustfmt::skip]
fn grants() -> Vec<GrantCase> {
    let dev = Req::developer;
    let sa = Req::service_account;
    let client = &[Usage::DigitalSignature, Usage::ClientAuth][..];
    vec![
        ("own username, nothing asked", defaults, dev(), client, DAY, None, LifetimeOutcome::Defaulted),
        ("usages deduplicated in request order", defaults, dev().usages(&["client auth", "digital signature", "client auth"]), &[Usage::ClientAuth, Usage::DigitalSignature], DAY, None, LifetimeOutcome::Defaulted),
        ("expirationSeconds honoured", defaults, dev().expires(3600), client, 3600, Some(3600), LifetimeOutcome::Honoured),
        ("exactly the minimum", defaults, dev().expires(600), client, 600, Some(600), LifetimeOutcome::Honoured),
        ("above the maximum is clamped", defaults, dev().expires(100 * DAY as i64), client, 30 * DAY, Some(100 * DAY), LifetimeOutcome::Clamped),
        ("annotation honoured", defaults, dev().annotation("2h0m0s"), client, 7200, Some(7200), LifetimeOutcome::Honoured),
        ("expirationSeconds wins over a bad annotation", defaults, dev().expires(3600).annotation("soon"), client, 3600, Some(3600), LifetimeOutcome::Honoured),
        ("service account with its own names", defaults, sa(), client, DAY, None, LifetimeOutcome::Defaulted),
        ("SANs only, empty subject", defaults, sa().cn(&[]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("trusted requester asks for another identity", |s| s.trusted_requesters = vec![ISTIOD.into()], sa().by(ISTIOD), client, DAY, None, LifetimeOutcome::Defaulted),
        ("RSA at both bounds", |s| s.keys.rsa.max_bits = 2048, dev().key(KeyKind::Rsa { bits: 2048 }), client, DAY, None, LifetimeOutcome::Defaulted),
        ("allowed organization", |s| s.subject.organizations = Some(vec!["dev".into()]), dev().o(&["dev"]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("wildcard DNS when enabled", |s| { s.sans.allow_wildcard_dns = true; s.sans.dns = vec!["*.example.com".into()]; }, sa().sans(dns(&["*.example.com"])), client, DAY, None, LifetimeOutcome::Defaulted),
        ("a whole username with dots as the commonName", defaults, dev().by("alice.smith").cn(&["alice.smith"]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("own system: name and groups", defaults, dev().by("system:node:node-1").cn(&["system:node:node-1"]).o(&["system:nodes"]).groups(&["system:nodes", "system:authenticated"]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("system names for others when the policy says so", |s| { s.trusted_requesters = vec![ISTIOD.into()]; s.subject.allow_system_identities = true; }, dev().by(ISTIOD).cn(&["system:node:node-1"]).o(&["system:nodes"]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("trusted requester: dotted service account in a SPIFFE ID", trust_istiod, sa().by(ISTIOD).cn(&[]).sans(vec![San::Uri("spiffe://cluster.local/ns/team-b/sa/my.app".into())]), client, DAY, None, LifetimeOutcome::Defaulted),
        ("IP and email when enabled", |s| { s.sans.ip = true; s.sans.email = true; }, sa().sans(vec![San::Ip(IpAddr::from([10, 0, 0, 1])), San::Email("a@example.com".into())]), client, DAY, None, LifetimeOutcome::Defaulted),
    ]
}

#[test]
fn grants_carry_usages_lifetime_and_sans() {
    for (name, edit, req, usages, lifetime, requested, outcome) in grants() {
        let grant = req
            .decide(&policy(edit))
            .unwrap_or_else(|r| panic!("{name}: refused: {r}"));
        assert_eq!(
            grant,
            Grant {
                usages: usages.to_vec(),
                lifetime: Duration::from_secs(lifetime),
                requested: requested.map(Duration::from_secs),
                lifetime_outcome: outcome,
                sans: req.csr.sans.clone(),
            },
            "{name}"
        );
    }
}

#[test]
fn service_account_names_are_strict() {
    let r = |username| Requester {
        username,
        groups: &[],
    };
    assert_eq!(r(SA).service_account(), Some(("team-a", "app")));
    for not_sa in [
        "developer",
        "system:serviceaccount:team-a",
        "system:serviceaccount::app",
        "system:serviceaccount:team-a:",
        "system:serviceaccount:team-a:app:x",
    ] {
        assert_eq!(r(not_sa).service_account(), None, "{not_sa}");
    }
}

/// A CSR generated in memory and parsed by `csr`, to check the hand-built requests above describe
/// what parsing really produces.
#[test]
fn a_parsed_request_is_decided_like_a_hand_built_one() {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::stack::Stack;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509ReqBuilder;

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut b = X509ReqBuilder::new().expect("builder");
    b.set_pubkey(&key).expect("pubkey");
    b.set_subject_name(
        &X509Name::from_der(&subject_der(&["app.team-a.svc".into()], &[])).expect("name"),
    )
    .expect("subject");
    let san = SubjectAlternativeName::new()
        .dns("app.team-a.svc")
        .uri("spiffe://cluster.local/ns/team-a/sa/app")
        .build(&b.x509v3_context(None))
        .expect("SAN");
    let mut exts = Stack::new().expect("stack");
    exts.push(san).expect("push");
    b.add_extensions(&exts).expect("extensions");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    let pem = b.build().to_pem().expect("pem");

    let parsed = crate::csr::parse_and_verify(&pem).expect("valid request");
    let hand_built = Req::service_account();
    assert_eq!(parsed.key, hand_built.csr.key);
    assert_eq!(parsed.common_names, hand_built.csr.common_names);
    assert_eq!(parsed.sans, hand_built.csr.sans);
    assert_eq!(parsed.subject_der, hand_built.csr.subject_der);

    let p = policy(defaults);
    let parsed_req = Req {
        csr: parsed,
        ..Req::service_account()
    };
    assert_eq!(parsed_req.decide(&p), hand_built.decide(&p));
    assert!(parsed_req.decide(&p).is_ok());
    let other = parsed_req.by("system:serviceaccount:team-b:app").decide(&p);
    assert_eq!(other.map_err(|r| r.reason), Err(Reason::IdentityMismatch));
}
