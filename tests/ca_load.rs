//! Loading the signing CA: what is refused, what is warned about, what is never shown, and reloads.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use csr_signer::ca::SigningCa;
use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::CaSettings;
use csr_signer::engine::Decision;
use csr_signer::Error;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use support::*;

fn settings(cert: &std::path::Path, key: &std::path::Path) -> CaSettings {
    CaSettings {
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        chain_file: None,
        passphrase_file: None,
    }
}

fn load_err(s: &CaSettings) -> String {
    match SigningCa::load(s, SystemTime::now()) {
        Ok(_) => panic!("expected an error for {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn key_not_matching_the_certificate_is_refused() {
    let a = TestCa::new(KeyType::P256);
    let b = TestCa::new(KeyType::P256);
    let e = load_err(&settings(&a.cert, &b.key));
    assert!(e.contains("does not match"), "{e}");
    assert!(
        e.contains(&b.key.display().to_string()),
        "names the key file: {e}"
    );
}

/// A self-signed certificate with the given CA bit and key usage.
fn self_signed(
    dir: &std::path::Path,
    ca: bool,
    cert_sign: bool,
    not_after: Asn1Time,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = key(KeyType::P256);
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "odd").expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    let nb = Asn1Time::from_unix(0).expect("time");
    b.set_not_before(&nb).expect("nb");
    b.set_not_after(&not_after).expect("na");
    let mut bc = BasicConstraints::new();
    bc.critical();
    if ca {
        bc.ca();
    }
    b.append_extension(bc.build().expect("bc")).expect("ext");
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if cert_sign {
        ku.key_cert_sign();
    }
    b.append_extension(ku.build().expect("ku")).expect("ext");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    let cert = dir.join(format!("odd-{ca}-{cert_sign}.crt"));
    let keyf = dir.join(format!("odd-{ca}-{cert_sign}.key"));
    std::fs::write(&cert, b.build().to_pem().expect("pem")).expect("write");
    std::fs::write(&keyf, key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    (cert, keyf)
}

#[test]
fn certificates_that_are_not_usable_cas_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let later = Asn1Time::days_from_now(30).expect("time");
    let (c, k) = self_signed(dir.path(), false, true, later);
    assert!(load_err(&settings(&c, &k)).contains("basicConstraints CA:TRUE"));
    let later = Asn1Time::days_from_now(30).expect("time");
    let (c, k) = self_signed(dir.path(), true, false, later);
    assert!(load_err(&settings(&c, &k)).contains("keyCertSign"));
    let past = Asn1Time::from_unix(1_000_000).expect("time");
    let (c, k) = self_signed(dir.path(), true, true, past);
    let e = load_err(&settings(&c, &k));
    assert!(e.contains("expired"), "{e}");
    assert!(e.contains(&c.display().to_string()), "names the file: {e}");
}

#[test]
fn more_than_one_certificate_in_the_cert_file_is_refused() {
    let ca = TestCa::new(KeyType::P256);
    let both = ca.dir.path().join("both.crt");
    let mut pem = std::fs::read(&ca.cert).expect("read");
    pem.extend(std::fs::read(&ca.cert).expect("read"));
    std::fs::write(&both, pem).expect("write");
    let e = load_err(&settings(&both, &ca.key));
    assert!(e.contains("expected 1 certificate, found 2"), "{e}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_world_readable_key_is_loaded_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let ca = TestCa::new(KeyType::P256);
    std::fs::set_permissions(&ca.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        SigningCa::load(&settings(&ca.cert, &ca.key), SystemTime::now()).expect("loads");
    });
    let logs = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("world-readable"), "{logs}");
}

#[test]
fn encrypted_keys_need_their_passphrase_and_never_leak() {
    let ca = TestCa::new(KeyType::P256);
    let key = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&ca.key).expect("key"))
        .expect("parse");
    let enc = ca.dir.path().join("enc.key");
    std::fs::write(
        &enc,
        key.private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
            .expect("encrypt"),
    )
    .expect("write");
    let pass = ca.dir.path().join("pass");
    std::fs::write(&pass, "s3cret\n").expect("write");
    let mut s = settings(&ca.cert, &enc);
    let e = load_err(&s);
    assert!(e.contains("encrypted: set passphraseFile"), "{e}");
    s.passphrase_file = Some(pass);
    let (loaded, files) = SigningCa::load(&s, SystemTime::now()).expect("loads with passphrase");

    let key_pem = String::from_utf8(std::fs::read(&ca.key).expect("key")).expect("utf8");
    let secret_line = key_pem.lines().nth(1).expect("a base64 line");
    for shown in [format!("{loaded:?}"), format!("{files:?}"), e] {
        assert!(
            !shown.contains(secret_line)
                && !shown.contains("s3cret")
                && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
    }
    let engine = ca.engine("");
    let shown = format!("{engine:?}");
    assert!(
        !shown.contains(secret_line) && shown.contains("redacted"),
        "{shown}"
    );
}

#[test]
fn chain_file_intermediates_follow_the_signing_ca() {
    // root → intermediate 1 (in chainFile) → intermediate 2 (signs).
    let dir = tempfile::tempdir().expect("dir");
    let root_key = key(KeyType::P256);
    let root = ca_init::ca_certificate(&root_key, "root", 30, None, Some(2)).expect("root");
    let k1 = key(KeyType::P256);
    let i1 =
        ca_init::ca_certificate(&k1, "int1", 30, Some((&root, &root_key)), Some(1)).expect("i1");
    let k2 = key(KeyType::P384);
    let i2 = ca_init::ca_certificate(&k2, "int2", 30, Some((&i1, &k1)), Some(0)).expect("i2");
    let w = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let root_path = w("root.crt", root.to_pem().expect("pem"));
    let mut chain = i1.to_pem().expect("pem");
    chain.extend(root.to_pem().expect("pem"));
    let ca = TestCa {
        cert: w("ca.crt", i2.to_pem().expect("pem")),
        key: w("ca.key", k2.private_key_to_pem_pkcs8().expect("pem")),
        chain: Some(w("chain.crt", chain)),
        root: root_path,
        dir,
    };
    let engine = ca.engine("");
    let pem = CsrSpec::new(key(KeyType::Ed25519), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    let Decision::Issued(cert) = engine
        .signer("example.com/mtls")
        .expect("signer")
        .sign(
            &request(&pem, &usages, None, "developer"),
            SystemTime::now(),
        )
        .expect("sign")
    else {
        panic!("refused")
    };
    let chain = openssl::x509::X509::stack_from_pem(cert.certificate_pem.as_bytes()).expect("pem");
    let subjects: Vec<String> = chain
        .iter()
        .map(|c| {
            format!(
                "{:?}",
                c.subject_name()
                    .entries()
                    .last()
                    .map(|e| e.data().to_string())
            )
        })
        .collect();
    assert_eq!(
        chain.len(),
        3,
        "leaf, int2, int1 — and not the root: {subjects:?}"
    );
    verify_with_store(&cert.certificate_pem, &ca.root_x509()).expect("store verify");
    openssl_verify(&cert.certificate_pem, &ca.root, ca.dir.path()).expect("openssl verify");
    assert!(
        engine
            .signer("example.com/mtls")
            .expect("s")
            .ca()
            .cert_pem
            .contains("BEGIN CERTIFICATE"),
        "root kept as trust anchor"
    );
}

#[test]
fn reload_swaps_valid_files_and_keeps_the_old_ca_on_a_broken_swap() {
    let ca = TestCa::new(KeyType::P256);
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let old_root = ca.root_x509();
    assert!(!signer.reload_ca_if_changed().expect("unchanged"));

    // A broken swap: a key that does not match. The old CA keeps signing.
    let other = TestCa::new(KeyType::P256);
    std::fs::copy(&other.key, &ca.key).expect("copy");
    assert!(matches!(
        signer.reload_ca_if_changed(),
        Err(Error::Ca { .. })
    ));
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    let sign = || match signer
        .sign(
            &request(&pem, &usages, None, "developer"),
            SystemTime::now(),
        )
        .expect("sign")
    {
        Decision::Issued(i) => i.certificate_pem,
        Decision::Refused(r) => panic!("{r}"),
    };
    verify_with_store(&sign(), &old_root).expect("still the old CA");

    // A complete swap: new certificates chain to the new CA only.
    std::fs::copy(&other.cert, &ca.cert).expect("copy");
    assert!(signer.reload_ca_if_changed().expect("swapped"));
    let pem_new = sign();
    verify_with_store(&pem_new, &other.root_x509()).expect("new CA");
    assert!(
        verify_with_store(&pem_new, &old_root).is_err(),
        "no longer the old CA"
    );
}
