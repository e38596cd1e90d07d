//! Issued certificates, checked with OpenSSL itself: chain verification (X509StoreContext and the
//! `openssl verify -x509_strict` CLI), a real mutual-TLS handshake, validity arithmetic and the
//! extensions a Kubernetes signer must produce.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csr_signer::ca_init::KeyType;
use csr_signer::engine::{Decision, Issued, LifetimeOutcome};
use csr_signer::Error;
use openssl::x509::X509;
use support::*;

fn issued(d: Decision) -> Issued {
    match d {
        Decision::Issued(i) => i,
        Decision::Refused(r) => panic!("refused: {r:?}"),
    }
}

fn sign_client(ca: &TestCa, expiration: Option<i32>) -> Issued {
    let engine = ca.engine("");
    let pem = CsrSpec::new(
        key(KeyType::P256),
        &[("CN", "developer"), ("O", "development")],
    )
    .pem();
    let usages = strings(&["digital signature", "client auth"]);
    issued(
        engine
            .signer("example.com/mtls")
            .expect("signer")
            .sign(
                &request(&pem, &usages, expiration, "developer"),
                SystemTime::now(),
            )
            .expect("sign"),
    )
}

#[test]
fn every_ca_key_type_issues_certificates_openssl_accepts() {
    for kind in [
        KeyType::Rsa2048,
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
    ] {
        let ca = TestCa::new(kind);
        let cert = sign_client(&ca, Some(86400));
        verify_with_store(&cert.certificate_pem, &ca.root_x509())
            .unwrap_or_else(|e| panic!("{kind:?}: X509StoreContext: {e}"));
        openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path())
            .unwrap_or_else(|e| panic!("{kind:?}: openssl verify: {e}"));
        let chain = X509::stack_from_pem(cert.certificate_pem.as_bytes()).expect("pem");
        assert_eq!(
            chain.len(),
            1,
            "a root-signed leaf comes alone, never with the root"
        );
    }
}

#[test]
fn intermediate_ca_chain_is_leaf_then_intermediate_and_verifies_against_the_root() {
    let ca = TestCa::with_intermediate(KeyType::P384);
    let cert = sign_client(&ca, None);
    let chain = X509::stack_from_pem(cert.certificate_pem.as_bytes()).expect("pem");
    assert_eq!(chain.len(), 2);
    let intermediate = X509::from_pem(&std::fs::read(&ca.cert).expect("ca")).expect("ca pem");
    assert_eq!(
        chain[1].to_der().expect("der"),
        intermediate.to_der().expect("der")
    );
    verify_with_store(&cert.certificate_pem, &ca.root_x509()).expect("store verify");
    openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path()).expect("openssl verify");
    // Without the intermediate the leaf alone must not verify: the chain really is needed.
    let leaf_only = String::from_utf8(chain[0].to_pem().expect("pem")).expect("utf8");
    assert!(verify_with_store(&leaf_only, &ca.root_x509()).is_err());
}

#[test]
fn certificate_content_follows_the_kubernetes_signer() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("sans: {dns: [\"*.example.com\"], ip: true, email: true}");
    let csr_key = key(KeyType::Rsa2048);
    let pem = CsrSpec::new(csr_key, &[])
        .sans(&[
            "URI:spiffe://cluster.local/ns/team-a/sa/app",
            "IP:10.0.0.1",
            "DNS:a.example.com",
            "email:a@example.com",
        ])
        .pem();
    let usages = strings(&[
        "key encipherment",
        "digital signature",
        "client auth",
        "server auth",
    ]);
    let cert = issued(
        engine
            .signer("example.com/mtls")
            .expect("signer")
            .sign(
                &request(
                    &pem,
                    &usages,
                    Some(3600),
                    "system:serviceaccount:team-a:app",
                ),
                SystemTime::now(),
            )
            .expect("sign"),
    );
    let text = openssl_text(&cert.certificate_pem);
    assert!(text.contains("Version: 3 (0x2)"), "{text}");
    assert!(
        text.contains(
            "X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment"
        ),
        "{text}"
    );
    // EKU in Go's order (serverAuth before clientAuth), whatever the request order.
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
        "{text}"
    );
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    // Empty subject: SANs are critical, grouped DNS, email, IP, URI.
    assert!(text.contains("X509v3 Subject Alternative Name: critical\n                DNS:a.example.com, email:a@example.com, IP Address:10.0.0.1, URI:spiffe://cluster.local/ns/team-a/sa/app"), "{text}");
    assert!(
        text.contains("Signature Algorithm: ecdsa-with-SHA256"),
        "{text}"
    );
    // 128-bit random serials: at most 16 significant bytes.
    assert!(cert.serial.len() <= 32 && !cert.serial.is_empty());
    verify_with_store(&cert.certificate_pem, &ca.root_x509()).expect("verify");
}

#[test]
fn requested_extensions_are_dropped_and_serials_differ() {
    use openssl::stack::Stack;
    use openssl::x509::extension::KeyUsage;
    use openssl::x509::{X509Extension, X509NameBuilder, X509ReqBuilder};
    let ca = TestCa::new(KeyType::P256);
    // A request that asks for its own keyUsage (cert sign) and an arbitrary extension.
    let k = key(KeyType::P256);
    let mut b = X509ReqBuilder::new().expect("builder");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "developer").expect("cn");
    b.set_subject_name(&name.build()).expect("subject");
    b.set_pubkey(&k).expect("pubkey");
    let mut exts = Stack::<X509Extension>::new().expect("stack");
    exts.push(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .build()
            .expect("ku"),
    )
    .expect("push");
    #[allow(deprecated)]
    exts.push(
        X509Extension::new_nid(None, None, openssl::nid::Nid::NETSCAPE_COMMENT, "hello")
            .expect("ext"),
    )
    .expect("push");
    b.add_extensions(&exts).expect("exts");
    b.sign(&k, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    let pem = b.build().to_pem().expect("pem");
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let usages = strings(&["client auth"]);
    let a = issued(
        signer
            .sign(
                &request(&pem, &usages, None, "developer"),
                SystemTime::now(),
            )
            .expect("sign"),
    );
    let b = issued(
        signer
            .sign(
                &request(&pem, &usages, None, "developer"),
                SystemTime::now(),
            )
            .expect("sign"),
    );
    assert_ne!(a.serial, b.serial);
    let text = openssl_text(&a.certificate_pem);
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("X509v3 ") && l.ends_with(':')
                || l.starts_with("X509v3 ") && l.ends_with("critical")
        })
        .collect();
    assert_eq!(
        names,
        [
            "X509v3 extensions:",
            "X509v3 Extended Key Usage:",
            "X509v3 Basic Constraints: critical",
            "X509v3 Subject Key Identifier:",
            "X509v3 Authority Key Identifier:"
        ],
        "only what the grant allows: {text}"
    );
    assert!(
        !text.contains("Certificate Sign") && !text.contains("hello"),
        "{text}"
    );
}

fn openssl_text(pem: &str) -> String {
    X509::stack_from_pem(pem.as_bytes()).expect("pem")[0]
        .to_text()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .expect("text")
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).expect("epoch").as_secs() as i64
}

/// NotBefore/NotAfter as OpenSSL reads them from the certificate, in seconds since the epoch.
fn openssl_validity(pem: &str) -> (i64, i64) {
    let cert = &X509::stack_from_pem(pem.as_bytes()).expect("pem")[0];
    let epoch = openssl::asn1::Asn1Time::from_unix(0).expect("epoch");
    let at = |t: &openssl::asn1::Asn1TimeRef| {
        let d = epoch.diff(t).expect("diff");
        i64::from(d.days) * 86400 + i64::from(d.secs)
    };
    (at(cert.not_before()), at(cert.not_after()))
}

#[test]
fn validity_arithmetic() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("lifetime: {default: 24h, min: 10m, max: 48h}");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    let now = SystemTime::now();
    let n = secs(now);
    // (expirationSeconds, expected NotAfter - now, outcome)
    let cases: &[(Option<i32>, i64, LifetimeOutcome)] = &[
        (Some(600), 600, LifetimeOutcome::Honoured),
        (Some(3600), 3600, LifetimeOutcome::Honoured),
        (Some(28800), 28800 - 300, LifetimeOutcome::Honoured),
        (Some(86400), 86400 - 300, LifetimeOutcome::Honoured),
        (Some(10 * 86400), 48 * 3600 - 300, LifetimeOutcome::Clamped),
        (None, 86400 - 300, LifetimeOutcome::Defaulted),
    ];
    for (exp, after, outcome) in cases {
        let cert = issued(
            signer
                .sign(&request(&pem, &usages, *exp, "developer"), now)
                .expect("sign"),
        );
        let (nb, na) = openssl_validity(&cert.certificate_pem);
        assert_eq!(nb, n - 300, "{exp:?}: NotBefore is backdated 5 minutes");
        assert_eq!(na, n + after, "{exp:?}");
        assert_eq!(cert.lifetime, *outcome, "{exp:?}");
        assert_eq!(cert.granted_seconds as i64, na - nb);
        assert_eq!(cert.requested_seconds, exp.map(|e| e as u64));
    }
}

#[test]
fn validity_is_capped_by_a_ca_that_expires_sooner_and_an_expired_ca_is_transient() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("lifetime: {max: 3650d, default: 24h}");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let ca_not_after = signer.ca_not_after();
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    // Asking for two years from a CA that has one: NotAfter is the CA's.
    let cert = issued(
        signer
            .sign(
                &request(&pem, &usages, Some(2 * 365 * 86400), "developer"),
                SystemTime::now(),
            )
            .expect("sign"),
    );
    let (_, na) = openssl_validity(&cert.certificate_pem);
    assert_eq!(na, secs(ca_not_after));
    // At a time after the CA expired, signing is an error (retried), never a refusal.
    let later = ca_not_after + Duration::from_secs(1);
    match signer.sign(&request(&pem, &usages, None, "developer"), later) {
        Err(Error::CaExpired { .. }) => {}
        other => panic!("expected CaExpired, got {other:?}"),
    }
}

/// A real TLS 1.3 handshake over loopback with certificates issued by the engine.
mod mtls {
    use super::*;
    use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
    use std::net::{TcpListener, TcpStream};

    fn issue(
        ca: &TestCa,
        usages: &[&str],
        subject: &str,
        sans: &[&str],
    ) -> (String, openssl::pkey::PKey<openssl::pkey::Private>) {
        let engine =
            ca.engine("sans: {dns: [\"localhost\"], ip: true}, subject: {commonNames: [\"*\"]}");
        let k = key(KeyType::P256);
        let pem = CsrSpec::new(k.clone(), &[("CN", subject)]).sans(sans).pem();
        let cert = issued(
            engine
                .signer("example.com/mtls")
                .expect("signer")
                .sign(
                    &request(&pem, &strings(usages), None, "anyone"),
                    SystemTime::now(),
                )
                .expect("sign"),
        );
        (cert.certificate_pem, k)
    }

    fn handshake(
        ca: &TestCa,
        server_usages: &[&str],
        client_usages: &[&str],
    ) -> Result<(), String> {
        let (server_pem, server_key) = issue(
            ca,
            server_usages,
            "server",
            &["DNS:localhost", "IP:127.0.0.1"],
        );
        let (client_pem, client_key) = issue(ca, client_usages, "client", &[]);
        let root = ca.root.clone();

        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server_cert = X509::from_pem(server_pem.as_bytes()).map_err(|e| e.to_string())?;
        let client_cert = X509::from_pem(client_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut acceptor =
            SslAcceptor::mozilla_modern_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
        acceptor
            .set_private_key(&server_key)
            .map_err(|e| e.to_string())?;
        acceptor
            .set_certificate(&server_cert)
            .map_err(|e| e.to_string())?;
        acceptor.set_ca_file(&root).map_err(|e| e.to_string())?;
        acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = acceptor.build();
        let server = std::thread::spawn(move || -> Result<(), String> {
            let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
            let mut tls = acceptor
                .accept(stream)
                .map_err(|e| format!("server: {e}"))?;
            use std::io::{Read, Write};
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf)
                .map_err(|e| format!("server read: {e}"))?;
            tls.write_all(b"pong").map_err(|e| e.to_string())?;
            Ok(())
        });

        let mut connector = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        connector.set_ca_file(&root).map_err(|e| e.to_string())?;
        connector
            .set_private_key(&client_key)
            .map_err(|e| e.to_string())?;
        connector
            .set_certificate(&client_cert)
            .map_err(|e| e.to_string())?;
        let connector = connector.build();
        let client = (|| -> Result<(), String> {
            let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            let mut tls = connector
                .connect("localhost", stream)
                .map_err(|e| format!("client: {e}"))?;
            use std::io::{Read, Write};
            tls.write_all(b"ping").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            // With TLS 1.3 a rejected client certificate surfaces on the first read.
            tls.read_exact(&mut buf)
                .map_err(|e| format!("client read: {e}"))?;
            if &buf != b"pong" {
                return Err("bad reply".into());
            }
            Ok(())
        })();
        let server = server
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        match (client, server) {
            (Ok(()), Ok(())) => Ok(()),
            (c, s) => Err(format!("client: {c:?}; server: {s:?}")),
        }
    }

    #[test]
    fn mutual_tls_succeeds_with_server_and_client_certificates() {
        let ca = TestCa::new(KeyType::P256);
        handshake(
            &ca,
            &["digital signature", "server auth"],
            &["digital signature", "client auth"],
        )
        .expect("handshake");
    }

    #[test]
    fn mutual_tls_fails_when_the_client_certificate_is_only_for_servers() {
        let ca = TestCa::new(KeyType::P256);
        let err = handshake(
            &ca,
            &["digital signature", "server auth"],
            &["digital signature", "server auth"],
        )
        .expect_err("a server-auth-only certificate must not authenticate a client");
        assert!(
            err.contains("unsuitable certificate purpose")
                || err.contains("unsupported certificate purpose"),
            "{err}"
        );
    }

    #[test]
    fn mutual_tls_fails_when_the_server_certificate_is_only_for_clients() {
        let ca = TestCa::new(KeyType::Rsa2048);
        handshake(
            &ca,
            &["digital signature", "client auth"],
            &["digital signature", "client auth"],
        )
        .expect_err("a client-auth-only certificate must not serve TLS");
    }
}
