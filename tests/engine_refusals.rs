//! Hostile and invalid requests: each ends in exactly one refusal with a stable reason and a message
//! that names the offending value. None of them panics.

mod support;

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use csr_signer::ca_init::KeyType;
use csr_signer::engine::{Decision, Reason, SignRequest};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use support::*;

struct Case {
    name: &'static str,
    pem: Vec<u8>,
    usages: Vec<String>,
    expiration: Option<i32>,
    annotation: Option<&'static str>,
    requester: &'static str,
    reason: Reason,
    /// A fragment the message must contain (the offending value).
    mentions: &'static str,
}

fn pem_wrap(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).expect("ascii"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s.into_bytes()
}

fn good_csr() -> CsrSpec<'static> {
    CsrSpec::new(
        key(KeyType::P256),
        &[("CN", "developer"), ("O", "development")],
    )
}

fn cases() -> Vec<Case> {
    let client = strings(&["digital signature", "client auth"]);
    let sa = "system:serviceaccount:team-a:app";
    let good_der = good_csr().build().to_der().expect("der");
    let case = |name, pem: Vec<u8>, reason, mentions| Case {
        name,
        pem,
        usages: client.clone(),
        expiration: None,
        annotation: None,
        requester: "developer",
        reason,
        mentions,
    };

    let mut tampered = good_der.clone();
    let pos = tampered
        .windows(9)
        .position(|w| w == b"developer")
        .expect("CN in DER");
    tampered[pos + 8] = b'x';

    let dsa = PKey::from_dsa(openssl::dsa::Dsa::generate(2048).expect("dsa")).expect("pkey");
    let k1 = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::SECP256K1).expect("group")).expect("key"),
    )
    .expect("pkey");
    let rsa1024 = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).expect("rsa")).expect("pkey");
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("DNS:h{i}.example.com"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut huge = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
    huge.extend(std::iter::repeat_n(b'A', 1 << 20));
    huge.extend(b"\n-----END CERTIFICATE REQUEST-----\n");

    vec![
        case(
            "emailAddress in the subject",
            CsrSpec::new(
                key(KeyType::P256),
                &[("CN", "developer"), ("emailAddress", "admin@corp.example")],
            )
            .pem(),
            Reason::SubjectNotAllowed,
            "1.2.840.113549.1.9.1",
        ),
        Case {
            requester: sa,
            ..case(
                "partial-label wildcard DNS",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["DNS:f*.team-a.svc"])
                    .pem(),
                Reason::SanNotAllowed,
                "f*.team-a.svc",
            )
        },
        case(
            "wildcard commonName",
            CsrSpec::new(key(KeyType::P256), &[("CN", "*.example.com")]).pem(),
            Reason::SubjectNotAllowed,
            "*.example.com",
        ),
        case(
            "garbage",
            b"\x00\xffnot a request at all".to_vec(),
            Reason::MalformedRequest,
            "CERTIFICATE REQUEST",
        ),
        case(
            "wrong PEM type",
            pem_wrap("CERTIFICATE", &good_der),
            Reason::MalformedRequest,
            "\"CERTIFICATE\"",
        ),
        case(
            "NEW CERTIFICATE REQUEST label",
            pem_wrap("NEW CERTIFICATE REQUEST", &good_der),
            Reason::MalformedRequest,
            "NEW CERTIFICATE REQUEST",
        ),
        case(
            "truncated DER",
            pem_wrap("CERTIFICATE REQUEST", &good_der[..good_der.len() / 2]),
            Reason::MalformedRequest,
            "parse",
        ),
        case(
            "tampered subject",
            pem_wrap("CERTIFICATE REQUEST", &tampered),
            Reason::BadSignature,
            "signature",
        ),
        case(
            "RSA-1024",
            CsrSpec::new(rsa1024, &[("CN", "developer")]).pem(),
            Reason::KeyTooWeak,
            "1024",
        ),
        case(
            "DSA key",
            CsrSpec::new(dsa, &[("CN", "developer")]).pem(),
            Reason::KeyTypeNotAllowed,
            "DSA",
        ),
        case(
            "secp256k1 key",
            CsrSpec::new(k1, &[("CN", "developer")]).pem(),
            Reason::KeyTypeNotAllowed,
            "secp256k1",
        ),
        Case {
            usages: strings(&["client auth", "frobnicate"]),
            ..case(
                "unknown usage",
                good_csr().pem(),
                Reason::UnknownUsage,
                "frobnicate",
            )
        },
        Case {
            usages: strings(&["cert sign", "client auth"]),
            ..case(
                "cert sign usage",
                good_csr().pem(),
                Reason::UsageNotAllowed,
                "cert sign",
            )
        },
        Case {
            usages: strings(&["code signing", "client auth"]),
            ..case(
                "usage outside the allowed set",
                good_csr().pem(),
                Reason::UsageNotAllowed,
                "code signing",
            )
        },
        Case {
            usages: strings(&["digital signature"]),
            ..case(
                "no auth usage",
                good_csr().pem(),
                Reason::UsageRequired,
                "client auth",
            )
        },
        case(
            "CA:TRUE requested",
            good_csr().request_ca().pem(),
            Reason::CaNotAllowed,
            "CA:TRUE",
        ),
        Case {
            requester: sa,
            ..case(
                "DNS outside the allowed patterns",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["DNS:evil.example.org"])
                    .pem(),
                Reason::SanNotAllowed,
                "evil.example.org",
            )
        },
        Case {
            requester: sa,
            ..case(
                "wildcard DNS when disallowed",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["DNS:*.team-a.svc"])
                    .pem(),
                Reason::SanNotAllowed,
                "*.team-a.svc",
            )
        },
        Case {
            requester: sa,
            ..case(
                "IP when disallowed",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["IP:10.1.2.3"])
                    .pem(),
                Reason::SanNotAllowed,
                "10.1.2.3",
            )
        },
        Case {
            requester: sa,
            ..case(
                "URI of another identity",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["URI:spiffe://cluster.local/ns/team-b/sa/db"])
                    .pem(),
                Reason::IdentityMismatch,
                "team-b",
            )
        },
        Case {
            requester: sa,
            ..case(
                "DNS of another service account",
                CsrSpec::new(key(KeyType::P256), &[])
                    .sans(&["DNS:db.team-a.svc"])
                    .pem(),
                Reason::IdentityMismatch,
                "db.team-a.svc",
            )
        },
        case(
            "CN of another user",
            CsrSpec::new(key(KeyType::P256), &[("CN", "admin")]).pem(),
            Reason::IdentityMismatch,
            "admin",
        ),
        case(
            "system:masters organization",
            CsrSpec::new(
                key(KeyType::P256),
                &[("CN", "developer"), ("O", "system:masters")],
            )
            .pem(),
            Reason::SubjectNotAllowed,
            "system:masters",
        ),
        case(
            "10,000 SANs",
            CsrSpec::new(key(KeyType::P256), &[("CN", "developer")])
                .sans(&many)
                .pem(),
            Reason::TooManySans,
            "10000",
        ),
        case("1 MiB request", huge, Reason::MalformedRequest, "bytes"),
        case(
            "empty subject and no SANs",
            CsrSpec::new(key(KeyType::P256), &[]).pem(),
            Reason::NoIdentity,
            "empty subject",
        ),
        Case {
            expiration: Some(599),
            ..case(
                "lifetime below 600 s",
                good_csr().pem(),
                Reason::LifetimeTooShort,
                "9m 59s",
            )
        },
        Case {
            annotation: Some("5m"),
            ..case(
                "annotation lifetime below the minimum",
                good_csr().pem(),
                Reason::LifetimeTooShort,
                "5m",
            )
        },
        Case {
            annotation: Some("forever"),
            ..case(
                "unparseable duration annotation",
                good_csr().pem(),
                Reason::MalformedRequest,
                "forever",
            )
        },
    ]
}

#[test]
fn hostile_requests_are_refused_with_their_reason() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let mut failures = Vec::new();
    for c in cases() {
        let annotations: Option<BTreeMap<String, String>> = c.annotation.map(|a| {
            BTreeMap::from([(
                "experimental.cert-manager.io/request-duration".to_string(),
                a.to_string(),
            )])
        });
        let req = SignRequest {
            request: &c.pem,
            usages: &c.usages,
            expiration_seconds: c.expiration,
            annotations: annotations.as_ref(),
            username: c.requester,
            groups: &[],
        };
        match signer.sign(&req, SystemTime::now()) {
            Ok(Decision::Refused(r)) if r.reason == c.reason && r.message.contains(c.mentions) => {}
            other => failures.push(format!(
                "{}: expected {:?} mentioning {:?}, got {other:?}",
                c.name, c.reason, c.mentions
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_requests_pass_when_the_policy_allows_them() {
    // Guards the table above: each refusal comes from the rule under test, not from a broken CSR.
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine(
        "sans: {dns: [\"*.example.org\", \"*.team-a.svc\"], allowWildcardDns: true, ip: true}",
    );
    let signer = engine.signer("example.com/mtls").expect("signer");
    let usages = strings(&["digital signature", "client auth"]);
    for (spec, who) in [
        (
            CsrSpec::new(key(KeyType::P256), &[]).sans(&["DNS:evil.example.org"]),
            "system:serviceaccount:team-a:app",
        ),
        (
            CsrSpec::new(key(KeyType::P256), &[]).sans(&["DNS:*.team-a.svc"]),
            "system:serviceaccount:team-a:app",
        ),
        (
            CsrSpec::new(key(KeyType::P256), &[]).sans(&["IP:10.1.2.3"]),
            "system:serviceaccount:team-a:app",
        ),
        (
            CsrSpec::new(key(KeyType::P256), &[])
                .sans(&["URI:spiffe://cluster.local/ns/team-a/sa/app"]),
            "system:serviceaccount:team-a:app",
        ),
        (good_csr(), "developer"),
    ] {
        let pem = spec.pem();
        match signer
            .sign(&request(&pem, &usages, Some(600), who), SystemTime::now())
            .expect("sign")
        {
            Decision::Issued(i) => {
                verify_with_store(&i.certificate_pem, &ca.root_x509()).expect("verify")
            }
            Decision::Refused(r) => panic!("{who}: {r}"),
        }
    }
}

#[test]
fn trusted_requesters_are_exempt_from_identity_binding() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("trustedRequesters: [\"system:serviceaccount:istio-system:istiod\"]");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let pem = CsrSpec::new(key(KeyType::P256), &[])
        .sans(&["URI:spiffe://cluster.local/ns/team-b/sa/db"])
        .pem();
    let usages = strings(&["digital signature", "client auth", "server auth"]);
    let d = signer
        .sign(
            &request(
                &pem,
                &usages,
                None,
                "system:serviceaccount:istio-system:istiod",
            ),
            SystemTime::now(),
        )
        .expect("sign");
    assert!(matches!(d, Decision::Issued(_)), "{d:?}");
    let d = signer
        .sign(
            &request(&pem, &usages, None, "system:serviceaccount:team-a:app"),
            SystemTime::now(),
        )
        .expect("sign");
    assert!(
        matches!(d, Decision::Refused(ref r) if r.reason == Reason::IdentityMismatch),
        "{d:?}"
    );
}

#[test]
fn disabled_key_types_are_refused() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca
        .engine("keys: {ed25519: false, rsa: {enabled: false}, ecdsa: {p256: true, p384: false}}");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let usages = strings(&["client auth"]);
    for kind in [
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::P384,
        KeyType::P521,
    ] {
        let pem = CsrSpec::new(key(kind), &[("CN", "developer")]).pem();
        let d = signer
            .sign(
                &request(&pem, &usages, None, "developer"),
                SystemTime::now(),
            )
            .expect("sign");
        assert!(
            matches!(d, Decision::Refused(ref r) if r.reason == Reason::KeyTypeNotAllowed),
            "{kind:?}: {d:?}"
        );
    }
}

#[test]
fn sha1_and_rsa_pss_signed_requests_verify() {
    // kube-apiserver accepts both (k8s-csr-rules §3.C V-2), so the signer must not call them tampered.
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let usages = strings(&["client auth"]);
    let mut spec = CsrSpec::new(key(KeyType::Rsa2048), &[("CN", "developer")]);
    spec.digest = openssl::hash::MessageDigest::sha1();
    let pem = spec.pem();
    let d = signer
        .sign(
            &request(&pem, &usages, None, "developer"),
            SystemTime::now(),
        )
        .expect("sign");
    assert!(matches!(d, Decision::Issued(_)), "sha1: {d:?}");

    let dir = tempfile::tempdir().expect("dir");
    let k = dir.path().join("k.pem");
    let csr = dir.path().join("r.csr");
    let ok = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&k)
        .args([
            "-subj",
            "/CN=developer",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sha256",
            "-out",
        ])
        .arg(&csr)
        .status()
        .expect("openssl");
    assert!(ok.success());
    let pem = std::fs::read(&csr).expect("csr");
    let d = signer
        .sign(
            &request(&pem, &usages, None, "developer"),
            SystemTime::now(),
        )
        .expect("sign");
    assert!(matches!(d, Decision::Issued(_)), "pss: {d:?}");
}

#[test]
fn auto_approval_and_signing_agree_on_every_case() {
    use csr_signer::approval::{Approval, AutoApproveSettings, NotApproved};
    use csr_signer::policy::Requester;
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let approver: AutoApproveSettings = serde_yaml::from_str(
        "{enabled: true, rules: [{name: everyone-here, users: [developer], serviceAccountNamespaces: [team-a]}]}",
    )
    .expect("yaml");
    let approver = approver.validate().expect("valid").expect("enabled");
    let good = good_csr().pem();
    let client = strings(&["digital signature", "client auth"]);
    type Row<'a> = (
        String,
        Vec<u8>,
        Vec<String>,
        Option<i32>,
        Option<&'a str>,
        &'a str,
    );
    let mut all: Vec<Row> = cases()
        .into_iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.pem,
                c.usages,
                c.expiration,
                c.annotation,
                c.requester,
            )
        })
        .collect();
    all.push((
        "good".into(),
        good.clone(),
        client.clone(),
        None,
        None,
        "developer",
    ));
    all.push((
        "good, lifetime".into(),
        good,
        client,
        Some(3600),
        Some("2h"),
        "developer",
    ));
    let (mut approved, mut left) = (0, 0);
    for (name, pem, usages, expiration, annotation, requester) in &all {
        let annotations: Option<BTreeMap<String, String>> = annotation.map(|a| {
            BTreeMap::from([(
                "experimental.cert-manager.io/request-duration".to_string(),
                a.to_string(),
            )])
        });
        let req = SignRequest {
            request: pem,
            usages,
            expiration_seconds: *expiration,
            annotations: annotations.as_ref(),
            username: requester,
            groups: &[],
        };
        let who = Requester {
            username: requester,
            groups: &[],
        };
        let approval = approver.decide(signer.name(), &who, &signer.explain(&req));
        let decision = signer.sign(&req, SystemTime::now()).expect("sign");
        match (&approval, &decision) {
            (Approval::Approve { .. }, Decision::Issued(_)) => approved += 1,
            (
                Approval::Leave {
                    reason: NotApproved::PolicyWouldRefuse,
                    ..
                },
                Decision::Refused(_),
            ) => left += 1,
            _ => panic!("{name}: approval {approval:?} but signing {decision:?}"),
        }
    }
    assert_eq!(approved, 2, "the two good requests are approved");
    assert_eq!(left, all.len() - 2);
}
