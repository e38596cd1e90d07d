//! Loading the signing CA: what is refused, what is warned about, what is never shown, and reloads.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use csr_signer::ca::{CaFile, SigningCa};
use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::CaSettings;
use csr_signer::engine::{Decision, LifetimeOutcome};
use csr_signer::Error;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use support::*;

fn settings(cert: &std::path::Path, key: &std::path::Path) -> CaSettings {
    CaSettings {
        name: csr_signer::config::DEFAULT_ACTIVE_CA_NAME.into(),
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
    let l = ladder(dir.path(), KeyType::P384);
    let w = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let root_path = w("root.crt", l.root.to_pem().expect("pem"));
    let mut chain = l.int1.to_pem().expect("pem");
    chain.extend(l.root.to_pem().expect("pem"));
    let ca = TestCa {
        cert: l.cert,
        key: l.key,
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
    // The error names the setting that points at the broken file, as startup would.
    match signer.reload_ca_if_changed() {
        Err(Error::Setting {
            origin,
            key,
            source,
        }) => {
            assert_eq!(origin, "test.yaml");
            assert_eq!(key, "signers[0].ca.keyFile");
            assert!(
                matches!(
                    *source,
                    Error::Ca {
                        file: CaFile::Key,
                        ..
                    }
                ),
                "{source}"
            );
        }
        other => panic!("expected a located CA error, got {other:?}"),
    }
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

/// root → int1 → int2 (signs, with a `signing` key): the certificates and keys, int2 and its key
/// written to `dir`.
struct Ladder {
    root: openssl::x509::X509,
    root_key: openssl::pkey::PKey<openssl::pkey::Private>,
    int1_key: openssl::pkey::PKey<openssl::pkey::Private>,
    int1: openssl::x509::X509,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn ladder(dir: &std::path::Path, signing: KeyType) -> Ladder {
    let root_key = key(KeyType::P256);
    let root = ca_init::ca_certificate(&root_key, "root", 30, None, Some(2)).expect("root");
    let k1 = key(KeyType::P256);
    let int1 =
        ca_init::ca_certificate(&k1, "int1", 30, Some((&root, &root_key)), Some(1)).expect("i1");
    let k2 = key(signing);
    let int2 = ca_init::ca_certificate(&k2, "int2", 30, Some((&int1, &k1)), Some(0)).expect("i2");
    let cert = dir.join("ladder.crt");
    let keyf = dir.join("ladder.key");
    std::fs::write(&cert, int2.to_pem().expect("pem")).expect("write");
    std::fs::write(&keyf, k2.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    Ladder {
        root,
        root_key,
        int1_key: k1,
        int1,
        cert,
        key: keyf,
    }
}

/// The chain file must be the signing CA's issuers, in order, each signed by the next: anything
/// else would be sent to every client. Each broken chain is refused naming the file and the culprit.
#[test]
fn chain_files_out_of_order_or_with_strangers_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let l = ladder(dir.path(), KeyType::P256);
    // Same names as int1, other key: the names chain, the signatures do not.
    let impostor_key = key(KeyType::P256);
    let impostor = ca_init::ca_certificate(
        &impostor_key,
        "int1",
        30,
        Some((&l.root, &impostor_key)),
        None,
    )
    .expect("impostor");
    let unrelated = TestCa::new(KeyType::P256).root_x509();
    let pems = |certs: &[&openssl::x509::X509]| -> Vec<u8> {
        certs
            .iter()
            .flat_map(|c| c.to_pem().expect("pem"))
            .collect()
    };
    let chain_path = dir.path().join("chain.crt");
    let with_chain = |bytes: Vec<u8>| {
        std::fs::write(&chain_path, bytes).expect("write");
        let mut s = settings(&l.cert, &l.key);
        s.chain_file = Some(chain_path.clone());
        s
    };
    // The right chain, with and without the root, loads.
    for good in [pems(&[&l.int1]), pems(&[&l.int1, &l.root])] {
        SigningCa::load(&with_chain(good), SystemTime::now()).expect("a correct chain loads");
    }
    for (bytes, mentions) in [
        (pems(&[&l.root, &l.int1]), "certificate 1 \"CN=root"),
        (pems(&[&unrelated]), "is not the issuer of the signing CA \"CN=int2"),
        (pems(&[&impostor]), "the signature of the signing CA \"CN=int2, O=csr-signer development\" does not verify with the key of certificate 1"),
        (pems(&[&l.int1, &l.root, &l.root]), "certificate 2 \"CN=root, O=csr-signer development\" is a self-signed root, so it must be the last"),
        (pems(&[&l.int1, &unrelated]), "certificate 2 \"CN=test CA"),
        (Vec::new(), "holds no certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(), "cannot parse PEM certificates"),
    ] {
        let e = match SigningCa::load(&with_chain(bytes), SystemTime::now()) {
            Ok(_) => panic!("{mentions}: loaded"),
            Err(e) => e,
        };
        assert!(matches!(e, Error::Ca { file: CaFile::Chain, .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.starts_with(&chain_path.display().to_string()), "{e}");
        assert!(e.contains(mentions), "{e}\nwanted {mentions}");
    }
    // int1's name and key without CA:TRUE: names and signatures chain, the CA bit does not.
    let mut b = openssl::x509::X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(l.int1.subject_name()).expect("subject");
    b.set_issuer_name(l.root.subject_name()).expect("issuer");
    b.set_pubkey(&l.int1_key).expect("key");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(9).expect("t"))
        .expect("na");
    b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
        .expect("ext");
    b.sign(&l.root_key, MessageDigest::sha256()).expect("sign");
    let e = match SigningCa::load(&with_chain(pems(&[&b.build()])), SystemTime::now()) {
        Ok(_) => panic!("a CA:FALSE issuer loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("certificate 1 \"CN=int1, O=csr-signer development\" is not a CA certificate"),
        "{e}"
    );
    // A self-signed signing CA has nothing above it.
    let root_ca = TestCa::new(KeyType::P256);
    std::fs::write(&chain_path, pems(&[&l.int1])).expect("write");
    let mut s = settings(&root_ca.cert, &root_ca.key);
    s.chain_file = Some(chain_path.clone());
    let e = load_err(&s);
    assert!(e.contains("self-signed root: nothing is above it"), "{e}");
}

/// A certificate the CA's NotAfter cut short says so: "capped by the CA", not what the policy
/// decided; one that ends before the CA keeps the policy's word.
#[test]
fn a_lifetime_cut_by_the_ca_is_reported_as_capped_by_the_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let created = ca_init::init(&ca_init::InitOptions {
        out: dir.path().to_owned(),
        key_type: KeyType::P256,
        days: 2,
        common_name: "short-lived CA".into(),
        intermediate: false,
    })
    .expect("ca init");
    let ca = TestCa {
        cert: created.cert,
        key: created.key,
        chain: None,
        root: created.trust_anchor,
        dir,
    };
    let engine = ca.engine("");
    let signer = engine.signer("example.com/mtls").expect("signer");
    let ca_not_after = signer.ca_not_after();
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    let issue = |seconds: i32| match signer
        .sign(
            &request(&pem, &usages, Some(seconds), "developer"),
            SystemTime::now(),
        )
        .expect("sign")
    {
        Decision::Issued(i) => i,
        Decision::Refused(r) => panic!("{r}"),
    };
    let day = 86_400;
    let cut = issue(10 * day);
    assert_eq!(cut.lifetime, LifetimeOutcome::CappedByCa);
    assert_eq!(cut.lifetime.describe(), "capped by the CA");
    assert_eq!(cut.lifetime.as_str(), "capped_by_ca");
    assert_eq!(cut.not_after, ca_not_after);
    // openssl agrees the leaf ends when the CA does.
    let leaf = openssl::x509::X509::from_pem(cut.certificate_pem.as_bytes()).expect("pem");
    let root = ca.root_x509();
    assert_eq!(
        leaf.not_after().compare(root.not_after()).expect("compare"),
        std::cmp::Ordering::Equal
    );
    // Clamped by the policy (31 days > 30) and then by the CA: the CA had the last word.
    assert_eq!(issue(31 * day).lifetime, LifetimeOutcome::CappedByCa);
    // Within the CA's life: the policy's outcome stands.
    let fits = issue(day);
    assert_eq!(fits.lifetime, LifetimeOutcome::Honoured);
    assert!(fits.not_after < ca_not_after);
}
