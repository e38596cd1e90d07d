//! Pod certificates through the engine (`SignerEngine::sign_pod`), checked with OpenSSL itself: every key
//! type a `podCertificate` volume offers, from a stub PKCS#10 request and from the v1beta1
//! `pkixPublicKey` + `proofOfPossession` pair, the validity rules kube-apiserver enforces on the status,
//! and each refusal with its condition type.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csr_signer::ca_init::KeyType;
use csr_signer::config::Settings;
use csr_signer::engine::{Decision, Engine, Issued, LifetimeOutcome, PodRequest, Reason};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::x509::{X509Req, X509};
use support::*;

const POD_UID: &str = "0d3f2c1e-5b6a-4c7d-8e9f-001122334455";

fn engine(ca: &TestCa, pod: &str) -> Engine {
    let yaml = format!(
        "{}  podCertificates: {{enabled: true{}{pod}}}\n",
        ca.settings_yaml(""),
        if pod.is_empty() { "" } else { ", " }
    );
    Engine::from_settings(&Settings::from_yaml(&yaml, "test.yaml").expect("settings"))
        .expect("engine")
}

/// What a 1.36+ kubelet sends: an empty-subject request signed by the pod's key.
fn stub(key: &PKey<Private>) -> Vec<u8> {
    let mut b = X509Req::builder().expect("builder");
    b.set_pubkey(key).expect("key");
    let md = if key.id() == openssl::pkey::Id::ED25519 {
        MessageDigest::null()
    } else {
        MessageDigest::sha256()
    };
    b.sign(key, md).expect("sign");
    b.build().to_der().expect("der")
}

/// What a 1.35 kubelet sends instead: the key's SPKI and a signature over the pod UID, made as the
/// kubelet makes it.
fn proof(key: &PKey<Private>, message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let spki = key.public_key_to_der().expect("spki");
    let sig = match key.id() {
        openssl::pkey::Id::ED25519 => {
            let mut s = Signer::new_without_digest(key).expect("signer");
            s.sign_oneshot_to_vec(message).expect("sign")
        }
        openssl::pkey::Id::RSA => {
            let mut s = Signer::new(MessageDigest::sha256(), key).expect("signer");
            s.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
                .expect("pss");
            s.set_rsa_mgf1_md(MessageDigest::sha256()).expect("mgf1");
            // Go's rsa.SignPSS with nil options: the longest salt that fits.
            s.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::MAXIMUM_LENGTH)
                .expect("salt");
            s.update(message).expect("update");
            s.sign_to_vec().expect("sign")
        }
        _ => {
            let mut s = Signer::new(MessageDigest::sha256(), key).expect("signer");
            s.update(message).expect("update");
            s.sign_to_vec().expect("sign")
        }
    };
    (spki, sig)
}

fn pod_request<'a>(stub: Option<&'a [u8]>, max: Option<i32>) -> PodRequest<'a> {
    PodRequest {
        namespace: "team-a",
        pod_name: "web-0",
        pod_uid: POD_UID,
        service_account_name: "web",
        service_account_uid: "6a1f0c1e-0000-4000-8000-000000000001",
        node_name: "node-1",
        node_uid: "6a1f0c1e-0000-4000-8000-000000000002",
        max_expiration_seconds: max,
        stub_pkcs10_request: stub,
        pkix_public_key: None,
        proof_of_possession: None,
        unverified_user_annotations: None,
    }
}

fn sign(engine: &Engine, req: &PodRequest<'_>, now: SystemTime) -> Decision {
    engine
        .signer("example.com/mtls")
        .expect("signer")
        .sign_pod(req, now)
        .expect("no transient error")
}

fn issued(d: Decision) -> Issued {
    match d {
        Decision::Issued(i) => i,
        Decision::Refused(r) => panic!("refused: {r:?}"),
    }
}

fn refused(d: Decision) -> (Reason, String) {
    match d {
        Decision::Issued(i) => panic!("issued {}", i.serial),
        Decision::Refused(r) => (r.reason, r.message),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs()
}

/// OpenSSL's view of a time in a certificate, as Unix seconds.
fn asn1_secs(t: &openssl::asn1::Asn1TimeRef) -> u64 {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).expect("epoch");
    let d = epoch.diff(t).expect("diff");
    d.days as u64 * 86400 + d.secs as u64
}

#[test]
fn every_pod_key_type_gets_a_certificate_openssl_verifies_with_the_window_the_apiserver_wants() {
    let ca = TestCa::new(KeyType::P256);
    let engine = engine(&ca, "");
    let now = SystemTime::now();
    for kind in [
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::P256,
        KeyType::P384,
        KeyType::P521,
        KeyType::Ed25519,
    ] {
        let k = key(kind);
        let der = stub(&k);
        let cert = issued(sign(&engine, &pod_request(Some(&der), None), now));
        openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path())
            .unwrap_or_else(|e| panic!("{kind:?}: openssl verify: {e}"));
        let leaf = X509::from_pem(cert.certificate_pem.as_bytes()).expect("leaf");
        assert_eq!(
            leaf.public_key()
                .expect("key")
                .public_key_to_der()
                .expect("der"),
            k.public_key_to_der().expect("der"),
            "{kind:?}: the certificate is for the requested key"
        );
        // NotBefore one minute back (kube-apiserver wants it within 5 minutes of its clock), the
        // lifetime exactly the requested default of 24 h (it must not exceed maxExpirationSeconds).
        let nb = asn1_secs(leaf.not_before());
        let na = asn1_secs(leaf.not_after());
        assert_eq!(nb, secs(now) - 60, "{kind:?}");
        assert_eq!(na - nb, 86400, "{kind:?}");
        assert_eq!((secs(cert.not_before), secs(cert.not_after)), (nb, na));
        let refresh = secs(cert.begin_refresh_at.expect("beginRefreshAt"));
        // Two thirds of the lifetime, ± 5 %.
        assert!(
            (nb + 57600 - 4320..=nb + 57600 + 4320).contains(&refresh),
            "{kind:?}: beginRefreshAt {} s after NotBefore",
            refresh - nb
        );
        assert_eq!(cert.lifetime, LifetimeOutcome::Honoured);
        let text = String::from_utf8(leaf.to_text().expect("text")).expect("utf8");
        assert!(
            text.contains("URI:spiffe://cluster.local/ns/team-a/sa/web"),
            "{kind:?}: {text}"
        );
        assert!(
            text.contains("X509v3 Subject Alternative Name: critical"),
            "{kind:?}: an empty subject makes the SANs critical"
        );
        assert!(
            text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
            "{kind:?}: {text}"
        );
        assert_eq!(leaf.subject_name().entries().count(), 0, "{kind:?}");
    }
}

#[test]
fn the_v1beta1_proof_of_possession_is_verified_as_the_kubelet_makes_it() {
    let ca = TestCa::new(KeyType::Ed25519);
    let engine = engine(&ca, "");
    let now = SystemTime::now();
    for kind in [
        KeyType::Rsa3072,
        KeyType::P256,
        KeyType::P384,
        KeyType::P521,
        KeyType::Ed25519,
    ] {
        let k = key(kind);
        let (spki, pop) = proof(&k, POD_UID.as_bytes());
        let mut req = pod_request(None, Some(3600));
        req.pkix_public_key = Some(&spki);
        req.proof_of_possession = Some(&pop);
        let cert = issued(sign(&engine, &req, now));
        openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path())
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(cert.granted_seconds, 3600);

        // The same proof for another pod's UID does not hold.
        let (_, other) = proof(&k, b"another-pod-uid");
        req.proof_of_possession = Some(&other);
        let (reason, _) = refused(sign(&engine, &req, now));
        assert_eq!(reason, Reason::BadSignature, "{kind:?}");
        assert_eq!(reason.pcr_condition(), "Denied");
    }
    // RSA with PKCS#1 v1.5 instead of PSS is not the kubelet's proof.
    let k = key(KeyType::Rsa3072);
    let mut s = Signer::new(MessageDigest::sha256(), &k).expect("signer");
    s.update(POD_UID.as_bytes()).expect("update");
    let v15 = s.sign_to_vec().expect("sign");
    let spki = k.public_key_to_der().expect("spki");
    let mut req = pod_request(None, None);
    req.pkix_public_key = Some(&spki);
    req.proof_of_possession = Some(&v15);
    assert_eq!(refused(sign(&engine, &req, now)).0, Reason::BadSignature);
}

#[test]
fn refusals_carry_the_api_reasons_and_the_right_condition() {
    let ca = TestCa::new(KeyType::P256);
    let engine = engine(&ca, "allowedAnnotations: [example.com/tier]");
    let now = SystemTime::now();

    // RSA-2048: the podCertificate volume cannot even ask for it; our policy names one to use.
    let der = stub(&key(KeyType::Rsa2048));
    let (reason, message) = refused(sign(&engine, &pod_request(Some(&der), None), now));
    assert_eq!(reason, Reason::UnsupportedKeyType);
    assert!(message.contains("use keyType"), "{message}");
    assert_eq!(reason.pcr_condition(), "Denied");

    // A stub whose signature does not verify.
    let mut bad = stub(&key(KeyType::P256));
    let last = bad.len() - 3;
    bad[last] ^= 0x40;
    let (reason, _) = refused(sign(&engine, &pod_request(Some(&bad), None), now));
    assert_eq!(reason, Reason::BadSignature);

    // No key at all (a v1 object written by a kubelet older than 1.36): nothing a policy decides.
    let (reason, message) = refused(sign(&engine, &pod_request(None, None), now));
    assert_eq!(reason, Reason::MalformedRequest, "{message}");
    assert_eq!(reason.pcr_condition(), "Failed");

    // Unknown unverified annotation keys are refused; listed ones are fine.
    let der = stub(&key(KeyType::P256));
    let unknown = [("example.com/dns".to_string(), "x".to_string())].into();
    let mut req = pod_request(Some(&der), None);
    req.unverified_user_annotations = Some(&unknown);
    let (reason, _) = refused(sign(&engine, &req, now));
    assert_eq!(reason, Reason::InvalidUnverifiedUserAnnotations);
    let known = [("example.com/tier".to_string(), "gold".to_string())].into();
    req.unverified_user_annotations = Some(&known);
    issued(sign(&engine, &req, now));
}

#[test]
fn a_ca_ending_soon_caps_the_certificate_and_refuses_below_an_hour() {
    let ca = TestCa::new(KeyType::P256);
    let engine = engine(&ca, "");
    let ca_end = secs(
        engine
            .signer("example.com/mtls")
            .expect("signer")
            .ca_not_after(),
    );
    let der = stub(&key(KeyType::P256));

    // Two hours before the CA's end: a day is asked, the certificate ends with the CA.
    let now = UNIX_EPOCH + Duration::from_secs(ca_end - 2 * 3600);
    let cert = issued(sign(&engine, &pod_request(Some(&der), None), now));
    assert_eq!(secs(cert.not_after), ca_end);
    assert_eq!(cert.lifetime, LifetimeOutcome::CappedByCa);
    let b = secs(cert.begin_refresh_at.expect("refresh"));
    assert!(b >= secs(cert.not_before) + 600 && b <= ca_end - 600);

    // Thirty minutes before: under the hour the apiserver requires; the signer cannot help it.
    let now = UNIX_EPOCH + Duration::from_secs(ca_end - 1800);
    let (reason, message) = refused(sign(&engine, &pod_request(Some(&der), None), now));
    assert_eq!(reason, Reason::CaExpiresTooSoon, "{message}");
    assert_eq!(reason.pcr_condition(), "Failed");
}

#[test]
fn a_signer_without_pod_certificates_refuses_and_says_so() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    assert!(!signer.signs_pods());
    let der = stub(&key(KeyType::P256));
    let d = signer
        .sign_pod(&pod_request(Some(&der), None), SystemTime::now())
        .expect("decision");
    let (_, message) = refused(d);
    assert!(message.contains("podCertificates.enabled"), "{message}");
}

#[test]
fn dns_names_and_common_name_come_from_the_templates() {
    let ca = TestCa::new(KeyType::P256);
    let engine = engine(
        &ca,
        "trustDomain: prod.example, dnsNames: ['{serviceaccount}.{namespace}.svc'], commonName: '{serviceaccount}'",
    );
    let der = stub(&key(KeyType::P256));
    let cert = issued(sign(
        &engine,
        &pod_request(Some(&der), None),
        SystemTime::now(),
    ));
    openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path()).expect("verify");
    let leaf = X509::from_pem(cert.certificate_pem.as_bytes()).expect("leaf");
    let text = String::from_utf8(leaf.to_text().expect("text")).expect("utf8");
    assert!(text.contains("Subject: CN=web"), "{text}");
    assert!(
        text.contains("DNS:web.team-a.svc, URI:spiffe://prod.example/ns/team-a/sa/web"),
        "{text}"
    );
    assert!(!text.contains("Subject Alternative Name: critical"));
}
