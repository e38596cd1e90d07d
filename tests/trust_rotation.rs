//! A CA rotation without a gap, on the real kube-apiserver and on the local API. The old CA `A` (short-lived,
//! so the test can watch it leave) signs; the new CA `B` is added as `published`; then `B` signs and `A` is
//! `retiring`. At every step a TLS client that trusts nothing but the published ClusterTrustBundle completes
//! a real handshake with a server presenting each certificate issued so far; `A` leaves the bundle by itself,
//! and not before its last certificate has expired.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use controller_support::*;
use csr_signer::ca_init::KeyType;
use csr_signer::config::Settings;
use csr_signer::service::Service;
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use kube::api::Api;
use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use support::{
    cert_der, cert_ders, key, openssl_not_after, openssl_sha256_fingerprint, CsrSpec, TestCa,
};

const BUNDLE: &str = "example.com:mtls:live";
const USAGES: &[&str] = &["digital signature", "server auth"];

/// A self-signed P-256 CA valid from 10 minutes ago for `seconds` more.
fn short_lived_ca(dir: &Path, seconds: u32) -> (PathBuf, PathBuf, SystemTime) {
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
    let key = key(KeyType::P256);
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "old CA").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(7)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 600).unwrap())
        .unwrap();
    let end = now + i64::from(seconds);
    b.set_not_after(&Asn1Time::from_unix(end).unwrap()).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let cert = dir.join("old.crt");
    let key_file = dir.join("old.key");
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (
        cert,
        key_file,
        SystemTime::UNIX_EPOCH + Duration::from_secs(end as u64),
    )
}

fn settings(cert: &Path, key: &Path, other_cas: &str) -> Settings {
    settings_with_policy(cert, key, other_cas, "")
}

fn settings_with_policy(cert: &Path, key: &Path, other_cas: &str, policy: &str) -> Settings {
    let yaml = settings_yaml(cert, key, policy, false, "127.0.0.1:0").replacen(
        "\n  policy:",
        &format!("\n  otherCas: [{other_cas}]\n  policy:"),
        1,
    );
    let yaml = format!("{yaml}trustBundles: {{enabled: true, resyncSeconds: 1}}\n");
    Settings::from_yaml(&yaml, "test.yaml").unwrap()
}

async fn wait_bundle(env: &Env, want: &[Vec<u8>]) -> String {
    let api: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
    let mut last = None;
    for _ in 0..400 {
        if let Some(b) = api.get_opt(BUNDLE).await.unwrap() {
            if cert_ders(&b.spec.trust_bundle) == want {
                return b.spec.trust_bundle;
            }
            last = Some(b.spec.trust_bundle);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the bundle never held the expected anchors; last: {last:?}");
}

/// A server presenting `chain` (leaf first) with `key`, and a client trusting only `anchors`, complete a
/// TLS handshake (hostname checks off: this is about the chain).
fn handshake(chain: &str, key: &PKey<Private>, anchors: &str, dir: &Path) -> Result<(), String> {
    let anchors_file = dir.join("anchors.pem");
    std::fs::write(&anchors_file, anchors).unwrap();
    let certs = X509::stack_from_pem(chain.as_bytes()).unwrap();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_private_key(key).unwrap();
    acceptor.set_certificate(&certs[0]).unwrap();
    for c in &certs[1..] {
        acceptor.add_extra_chain_cert(c.clone()).unwrap();
    }
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        acceptor
            .accept(stream)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_ca_file(&anchors_file).unwrap();
    connector.set_verify(SslVerifyMode::PEER);
    let connector = connector.build();
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let client = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", stream)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = server.join();
    client
}

struct Issued {
    name: &'static str,
    chain: String,
    key: PKey<Private>,
}

async fn issue(env: &Env, name: &'static str) -> Issued {
    let key = key(KeyType::P256);
    let pem = CsrSpec::new(key.clone(), &[("CN", "developer")]).pem();
    env.create(name, SIGNER, &pem, USAGES, None).await;
    env.approve(name).await;
    Issued {
        name,
        chain: env.wait_certificate(name).await,
        key,
    }
}

fn all_verify(issued: &[Issued], anchors: &str, dir: &Path, when: &str) {
    for i in issued {
        handshake(&i.chain, &i.key, anchors, dir).unwrap_or_else(|e| {
            panic!("{when}: {} does not verify against the bundle: {e}", i.name)
        });
    }
}

async fn restart(
    env: &Env,
    running: (Service, tokio::sync::oneshot::Sender<()>),
    next: Settings,
) -> (Service, tokio::sync::oneshot::Sender<()>) {
    let _ = running.1.send(());
    running.0.wait().await.unwrap();
    env.start_signer(next, "rotation").await
}

on_both_servers! {
    async fn a_rotation_never_leaves_a_certificate_without_a_trusted_anchor(server) {
        let env = Env::on(server).await;
        no_bundles(&env).await;
        let dir = env.dir.path();
        let (a_cert, a_key, a_not_after) = short_lived_ca(dir, 50);
        let b = TestCa::with_intermediate(KeyType::P256);
        let (a_root, b_root) = (cert_der(&a_cert), cert_der(&b.root));
        let b_chain = b.root.display().to_string();

        // 1. A signs alone.
        let signer = env.start_signer(settings(&a_cert, &a_key, ""), "rotation").await;
        let bundle = wait_bundle(&env, std::slice::from_ref(&a_root)).await;
        let mut issued = vec![issue(&env, "rot-1-a").await];
        all_verify(&issued, &bundle, dir, "A alone");

        // 2. B is published ahead of signing: clients learn it while A still signs.
        let published = format!("{{name: next, state: published, certFile: {}, chainFile: {b_chain}}}", b.cert.display());
        let signer = restart(&env, signer, settings(&a_cert, &a_key, &published)).await;
        let bundle = wait_bundle(&env, &[a_root.clone(), b_root.clone()]).await;
        issued.push(issue(&env, "rot-2-a").await);
        all_verify(&issued, &bundle, dir, "B published");

        // 3. B signs, A is retiring: A's certificates keep verifying, B's verify at once.
        let mut switched = settings(&b.cert, &b.key, &format!("{{name: old, state: retiring, certFile: {}}}", a_cert.display()));
        switched.signers[0].ca.chain_file = Some(b.root.clone());
        let signer = restart(&env, signer, switched).await;
        let bundle = wait_bundle(&env, &[b_root.clone(), a_root.clone()]).await;
        issued.push(issue(&env, "rot-3-b").await);
        all_verify(&issued, &bundle, dir, "A retiring");
        let a_leaves: Vec<X509> = issued[..2]
            .iter()
            .map(|i| X509::stack_from_pem(i.chain.as_bytes()).unwrap().remove(0))
            .collect();

        // 4. A leaves the bundle by itself, once nothing it signed is valid any more.
        let bundle = wait_bundle_until(&env, std::slice::from_ref(&b_root), a_not_after + Duration::from_secs(60)).await;
        let left_at = SystemTime::now();
        assert!(left_at >= a_not_after, "A left the bundle before it expired");
        let now = Asn1Time::from_unix(
            left_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64,
        )
        .unwrap();
        for leaf in &a_leaves {
            assert!(leaf.not_after() <= now, "A left the bundle while one of its certificates was valid");
        }
        all_verify(&issued[2..], &bundle, dir, "A gone");

        let _ = signer.1.send(());
        signer.0.wait().await.unwrap();
    }
}

async fn wait_bundle_until(env: &Env, want: &[Vec<u8>], deadline: SystemTime) -> String {
    let api: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
    loop {
        let b = api.get(BUNDLE).await.unwrap();
        if cert_ders(&b.spec.trust_bundle) == want {
            return b.spec.trust_bundle;
        }
        assert!(
            SystemTime::now() < deadline,
            "the retiring CA never left the bundle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_text(svc: &Service) -> String {
    scrape(svc.listen).await
}

/// Waits until `series` has a value `ok` accepts; returns it.
async fn wait_sample(svc: &Service, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..300 {
        if let Some(v) = sample(&metrics_text(svc).await, series).filter(|v| ok(*v)) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{series} never reached the expected value:\n{}",
        metrics_text(svc).await
    );
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as f64
}

/// The published-since record of the bundle, keyed by fingerprint (first 32 hex digits of SHA-256).
async fn published_since(env: &Env) -> std::collections::BTreeMap<String, SystemTime> {
    let b = Api::<ClusterTrustBundle>::all(env.admin.clone())
        .get(BUNDLE)
        .await
        .unwrap();
    let text = b
        .metadata
        .annotations
        .unwrap_or_default()
        .get("csr-signer/published-since")
        .cloned()
        .unwrap_or_else(|| panic!("no published-since annotation on {BUNDLE}"));
    serde_json::from_str::<std::collections::BTreeMap<String, String>>(&text)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, humantime::parse_rfc3339(&v).unwrap()))
        .collect()
}

/// Replaces `to` with `from` the way a Secret volume update does: a new file renamed over the old one.
fn swap_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

on_both_servers! {
    async fn a_published_ca_changed_on_disk_is_republished_without_a_restart(server) {
        let env = Env::on(server).await;
        no_bundles(&env).await;
        let dir = env.dir.path();
        let active = TestCa::new(KeyType::P256);
        let first = TestCa::new(KeyType::P256);
        let second_dir = dir.join("second");
        std::fs::create_dir_all(&second_dir).unwrap();
        let (second, _, _) = short_lived_ca(&second_dir, 30 * 86_400);
        let next = dir.join("next.crt");
        swap_file(&first.cert, &next);
        let mut cfg = settings_with_policy(
            &active.cert,
            &active.key,
            &format!("{{name: next, state: published, certFile: {}}}", next.display()),
            "lifetime: {max: 36h}",
        );
        cfg.signers[0].ca.name = "ca-2026".into();
        let started = SystemTime::now();
        let (svc, stop) = env.start_signer(cfg, "reload").await;
        wait_bundle(&env, &[cert_der(&active.root), cert_der(&first.cert)]).await;

        // Every CA has its notAfter under its name and state; the lifetime the alerts compare with is there.
        let not_after = |ca: &str, state: &str| {
            format!("csr_signer_ca_certificate_not_after_timestamp_seconds{{ca=\"{ca}\",signer=\"{SIGNER}\",state=\"{state}\"}}")
        };
        let text = metrics_text(&svc).await;
        assert_eq!(sample(&text, &not_after("ca-2026", "active")), Some(unix(openssl_not_after(&active.cert))), "{text}");
        assert_eq!(sample(&text, &not_after("next", "published")), Some(unix(openssl_not_after(&first.cert))), "{text}");
        assert_eq!(sample(&text, &format!("csr_signer_max_lifetime_seconds{{signer=\"{SIGNER}\"}}")), Some(129_600.0));
        // Published since it first went into the bundle: the annotation (by the CA's SHA-256 as openssl
        // computes it) and the gauge agree, and it is not before the signer started.
        let since_series = format!("csr_signer_ca_published_since_timestamp_seconds{{ca=\"next\",signer=\"{SIGNER}\"}}");
        let since = wait_sample(&svc, &since_series, |v| v > 0.0).await;
        let record = published_since(&env).await;
        let first_fp = openssl_sha256_fingerprint(&first.cert)[..32].to_string();
        assert_eq!(record.keys().collect::<Vec<_>>(), vec![&first_fp]);
        assert_eq!(unix(record[&first_fp]), since);
        assert!(since >= unix(started).floor() && since <= unix(SystemTime::now()), "{since}");

        // The file changes in place (a Secret updated under the running pod): the bundle follows without a
        // restart, the gauge shows the new CA's end, and the new CA's published clock starts afresh.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        swap_file(&second, &next);
        wait_bundle(&env, &[cert_der(&active.root), cert_der(&second)]).await;
        wait_sample(&svc, &not_after("next", "published"), |v| v == unix(openssl_not_after(&second))).await;
        let second_fp = openssl_sha256_fingerprint(&second)[..32].to_string();
        let record = published_since(&env).await;
        assert_eq!(record.keys().collect::<Vec<_>>(), vec![&second_fp]);
        assert!(unix(record[&second_fp]) > since, "a new CA under the same name gets a new clock");
        wait_sample(&svc, &since_series, |v| v == unix(record[&second_fp])).await;

        // A broken file is refused: counted once, the previous CA stays published.
        let errors = format!("csr_signer_ca_reload_errors_total{{signer=\"{SIGNER}\"}}");
        assert_eq!(sample(&metrics_text(&svc).await, &errors), Some(0.0));
        std::fs::write(next.with_extension("tmp"), "not a certificate").unwrap();
        std::fs::rename(next.with_extension("tmp"), &next).unwrap();
        wait_sample(&svc, &errors, |v| v == 1.0).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sample(&metrics_text(&svc).await, &errors), Some(1.0), "counted once per breakage");
        let still = Api::<ClusterTrustBundle>::all(env.admin.clone()).get(BUNDLE).await.unwrap();
        assert_eq!(cert_ders(&still.spec.trust_bundle), vec![cert_der(&active.root), cert_der(&second)]);
        assert_eq!(sample(&metrics_text(&svc).await, &not_after("next", "published")), Some(unix(openssl_not_after(&second))));

        let _ = stop.send(());
        svc.wait().await.unwrap();
    }
}
