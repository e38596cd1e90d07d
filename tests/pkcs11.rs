//! CA keys in a PKCS#11 token, with SoftHSM2 (installed by scripts/test.sh): `ca init --pkcs11`,
//! `sign`, `check-config` and the controller issuing through the token, every certificate checked by
//! `openssl verify -x509_strict`; the key checked from outside with OpenSC's pkcs11-tool; token errors
//! in the middle of a run; and the PIN nowhere in what the signer prints.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, so this binary makes one token directory in a
//! temporary folder, with one token per test, before any test loads the module.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use controller_support::*;
use csr_signer::ca_init::{self, InitOptions, KeyType};
use csr_signer::config::{Pkcs11Settings, Settings};
use csr_signer::engine::{Decision, Engine, SignRequest};
use support::{key, openssl_verify, CsrSpec};

const MODULE: &str = support::SOFTHSM_MODULE;
/// Distinctive, so that finding it anywhere in output means it leaked.
const PIN: &str = "pin-5c1e7a93-hsm";
const TOKENS: &[&str] = &[
    "cli-rsa2048",
    "cli-p256",
    "ctl-rsa2048",
    "ctl-p256",
    "faults",
    "removed",
    "wrong-pin",
    "reload",
    "pin-change",
];

struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    pin_file: PathBuf,
}

/// The token directory of this test binary, with every token initialised.
fn hsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let conf = support::softhsm_tokens(dir.path(), TOKENS, PIN);
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        std::fs::set_permissions(
            &pin_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        SoftHsm {
            dir,
            conf,
            pin_file,
        }
    })
}

/// Some tests finalise or reset the module, which every user of it in this process feels: the tests
/// of this file run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn uri(token: &str) -> String {
    format!("pkcs11:token={token};object=ca-key")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_csr-signer"));
    c.env("SOFTHSM2_CONF", &hsm().conf);
    c
}

fn p11(token: &str) -> Pkcs11Settings {
    Pkcs11Settings {
        module: MODULE.into(),
        uri: uri(token),
        pin_file: hsm().pin_file.clone(),
        sessions: 2,
    }
}

/// `ca init --pkcs11` in-process: the key in token `token`, `ca.crt` in a new folder.
fn token_ca(token: &str, key_type: KeyType) -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir_in(hsm().dir.path()).unwrap();
    let created = ca_init::init_pkcs11(
        &InitOptions {
            out: out.path().to_owned(),
            key_type,
            days: 30,
            common_name: format!("{token} CA"),
            intermediate: false,
        },
        &p11(token),
    )
    .unwrap();
    (out, created.cert)
}

fn ca_yaml(cert: &Path, token: &str) -> String {
    format!(
        "{{certFile: {}, pkcs11: {{module: {MODULE}, uri: \"{}\", pinFile: {}}}}}",
        cert.display(),
        uri(token),
        hsm().pin_file.display()
    )
}

fn settings(cert: &Path, token: &str) -> Settings {
    Settings::from_yaml(&config_yaml(&ca_yaml(cert, token)), "test.yaml").unwrap()
}

/// A config with one signer whose `ca:` is `ca`.
fn config_yaml(ca: &str) -> String {
    format!("signers:\n- name: {SIGNER}\n  ca: {ca}\n  policy: {{}}\n")
}

/// Writes `config_yaml(ca)` to `path` and runs `check-config` on it: success, and stdout + stderr.
fn check_config(path: &Path, ca: &str) -> (bool, String) {
    std::fs::write(path, config_yaml(ca)).unwrap();
    let o = bin()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!("{}{}", text(&o.stdout), text(&o.stderr)),
    )
}

fn assert_no_pin(label: &str, output: &str) {
    assert!(!output.contains(PIN), "{label}: the PIN leaked:\n{output}");
}

/// The private key objects pkcs11-tool (OpenSC, not our code) sees in a token.
fn pkcs11_tool_private_keys(token: &str) -> String {
    let o = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm().conf)
        .args([
            "--module",
            MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
        ])
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .expect("pkcs11-tool (install opensc)");
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

fn sign_one(engine: &Engine) -> String {
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = support::strings(&["digital signature", "client auth"]);
    let req = SignRequest {
        request: &pem,
        usages: &usages,
        expiration_seconds: Some(3600),
        annotations: None,
        username: "developer",
        groups: &[],
    };
    match engine
        .signer(SIGNER)
        .unwrap()
        .sign(&req, SystemTime::now())
        .unwrap()
    {
        Decision::Issued(i) => i.certificate_pem,
        Decision::Refused(r) => panic!("refused: {r:?}"),
    }
}

#[test]
fn ca_init_sign_and_check_config_through_the_token() {
    let _serial = one_at_a_time();
    for (token, key_type, algorithm) in [
        ("cli-rsa2048", "rsa2048", "sha256WithRSAEncryption"),
        ("cli-p256", "p256", "ecdsa-with-SHA256"),
    ] {
        let h = hsm();
        let out = tempfile::tempdir_in(h.dir.path()).unwrap();
        let ca_dir = out.path().join("ca");
        let init = |dir: &Path| {
            bin()
                .args([
                    "ca",
                    "init",
                    "--key-type",
                    key_type,
                    "--pkcs11",
                    &uri(token),
                ])
                .args(["--module", MODULE, "--pin-file"])
                .arg(&h.pin_file)
                .arg("--out")
                .arg(dir)
                .output()
                .unwrap()
        };
        let o = init(&ca_dir);
        assert!(o.status.success(), "{token}: {}", text(&o.stderr));
        assert_no_pin(
            "ca init",
            &format!("{}{}", text(&o.stdout), text(&o.stderr)),
        );
        // Only the certificate is on disk; the key is in the token and cannot leave it.
        let files: Vec<_> = std::fs::read_dir(&ca_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["ca.crt"], "{token}");
        let listed = pkcs11_tool_private_keys(token);
        assert!(listed.contains("label:      ca-key"), "{listed}");
        assert!(listed.contains("never extractable"), "{listed}");
        assert!(listed.contains("Usage:      sign"), "{listed}");
        let cert = ca_dir.join("ca.crt");
        let o = Command::new("openssl")
            .args(["verify", "-x509_strict", "-CAfile"])
            .arg(&cert)
            .arg(&cert)
            .output()
            .unwrap();
        assert!(o.status.success(), "{token}: {}", text(&o.stdout));
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let shown = text(&o.stdout);
        assert!(shown.contains(algorithm), "{shown}");
        assert!(
            shown.contains("CA:TRUE") && shown.contains("Certificate Sign"),
            "{shown}"
        );

        // A second init on the same URI never makes a second key.
        let o = init(&out.path().join("again"));
        assert!(!o.status.success());
        assert!(
            text(&o.stderr).contains("already holds a key"),
            "{}",
            text(&o.stderr)
        );

        let config = out.path().join("config.yaml");
        let (ok, shown) = check_config(&config, &ca_yaml(&cert, token));
        assert!(ok, "{shown}");
        assert!(shown.contains(&uri(token)), "{shown}");
        assert_no_pin("check-config", &shown);

        let csr = out.path().join("req.csr");
        std::fs::write(
            &csr,
            CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem(),
        )
        .unwrap();
        let o = bin()
            .args([
                "--log-level",
                "debug",
                "sign",
                "--signer",
                SIGNER,
                "--requester",
                "developer",
                "--config",
            ])
            .arg(&config)
            .arg("--csr")
            .arg(&csr)
            .output()
            .unwrap();
        let stdout = text(&o.stdout);
        assert!(o.status.success(), "{token}: {}", text(&o.stderr));
        assert_no_pin("sign", &format!("{stdout}{}", text(&o.stderr)));
        openssl_verify(&stdout, &cert, out.path()).unwrap_or_else(|e| panic!("{token}: {e}"));
    }
}

#[test]
fn check_config_names_what_is_wrong_and_never_the_pin() {
    let _serial = one_at_a_time();
    let h = hsm();
    let (dir, cert) = token_ca("wrong-pin", KeyType::P256);
    let bad_pin = dir.path().join("bad-pin");
    std::fs::write(&bad_pin, "not-the-pin-77\n").unwrap();
    let other_pin = dir.path().join("other-pin");
    std::fs::write(&other_pin, format!("{PIN}x\n")).unwrap();
    let ca = ca_yaml(&cert, "wrong-pin");
    let cases = [
        (
            ca.replace(
                &h.pin_file.display().to_string(),
                &other_pin.display().to_string(),
            ),
            "signers[0].ca.pkcs11.uri: PKCS#11: logging in to the token",
        ),
        (
            ca.replace("object=ca-key", "object=no-such-key"),
            "no private key on the token matches the URI",
        ),
        (
            ca.replace("token=wrong-pin", "token=no-such-token"),
            "no token matches the URI",
        ),
        (
            ca.replace("pkcs11: {", "keyFile: /x.key, pkcs11: {"),
            "signers[0].ca: keyFile and pkcs11 are mutually exclusive",
        ),
        (
            ca.replace("object=ca-key", &format!("object=ca-key?pin-value={PIN}")),
            "signers[0].ca.pkcs11.uri: query attribute pin-value is not accepted",
        ),
        (
            ca.replace(
                &h.pin_file.display().to_string(),
                &bad_pin.display().to_string(),
            ),
            "logging in to the token",
        ),
    ];
    for (i, (ca, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("config-{i}.yaml"));
        let (ok, shown) = check_config(&config, ca);
        assert!(!ok, "{i}: {shown}");
        assert!(
            shown.contains(expected),
            "{i}: want {expected:?} in:\n{shown}"
        );
        assert_no_pin(&format!("case {i}"), &shown.replace(&format!("{PIN}x"), ""));
        assert!(!shown.contains("not-the-pin-77"), "{shown}");
    }
}

#[test]
fn a_token_error_mid_run_is_retried_and_recovers() {
    let _serial = one_at_a_time();
    let (dir, cert) = token_ca("faults", KeyType::P256);
    let engine = Engine::from_settings(&settings(&cert, "faults")).unwrap();
    let verify = |chain: &str| openssl_verify(chain, &cert, dir.path()).unwrap();
    verify(&sign_one(&engine));
    let ca = engine.signer(SIGNER).unwrap().ca();
    let key = ca.pkcs11_key().unwrap();
    assert_eq!(key.reconnects(), 0);

    // Another user of the module in this process logs out: login is per application, so the
    // signer's sessions are no longer logged in (CKR_USER_NOT_LOGGED_IN).
    let ctx = cryptoki::context::Pkcs11::new(MODULE).unwrap();
    let session = ctx.open_ro_session(slot(&ctx, "faults")).unwrap();
    session.logout().unwrap();
    drop(session);
    verify(&sign_one(&engine));
    assert_eq!(key.reconnects(), 1, "one session replaced after the logout");

    // The module is finalised under the signer: every session is gone and the library must be
    // initialised again (what a reset of a network HSM client looks like).
    ctx.finalize().unwrap();
    verify(&sign_one(&engine));
    assert_eq!(key.reconnects(), 2);
    let errors: Vec<_> = key
        .take_errors()
        .into_iter()
        .map(|(k, n)| (k.as_str(), n))
        .collect();
    assert_eq!(errors, [("module", 1), ("login", 1)]);
    // The signer keeps going.
    for _ in 0..3 {
        verify(&sign_one(&engine));
    }
    assert_eq!(key.reconnects(), 2);
}

/// The folder SoftHSM keeps a token in (its `token.object` holds the label).
fn token_folder(label: &str) -> PathBuf {
    let tokens = hsm().dir.path().join("tokens");
    std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .is_ok_and(|b| b.windows(label.len()).any(|w| w == label.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no folder for token {label}"))
}

#[test]
fn the_controller_issues_through_the_token_and_rides_out_its_removal() {
    let _serial = one_at_a_time();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(controller_rides_out_a_removal());
}

async fn controller_rides_out_a_removal() {
    for (token, key_type) in [
        ("ctl-rsa2048", KeyType::Rsa2048),
        ("ctl-p256", KeyType::P256),
    ] {
        let (dir, cert) = token_ca(token, key_type);
        let env = Env::start().await;
        let unused = Path::new("unused.key");
        let yaml = settings_yaml(&cert, unused, "", false, "127.0.0.1:0").replace(
            &format!(
                "{{certFile: {}, keyFile: {}}}",
                cert.display(),
                unused.display()
            ),
            &ca_yaml(&cert, token),
        );
        let (svc, stop) = env
            .start_signer(
                Settings::from_yaml(&yaml, "test.yaml").unwrap(),
                "replica-a",
            )
            .await;
        let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
        let usages = ["digital signature", "client auth"];
        let names = env.create_approved(token, 4, &pem, &usages).await;
        env.wait_all_issued(&names).await;
        for name in &names {
            let chain = env.wait_certificate(name).await;
            openssl_verify(&chain, &cert, dir.path()).unwrap_or_else(|e| panic!("{token}: {e}"));
        }

        // The token goes away (its files moved out), a CSR arrives, the token comes back.
        let folder = token_folder(token);
        let away = hsm().dir.path().join(format!("{token}-away"));
        std::fs::rename(&folder, &away).unwrap();
        let late = format!("{token}-while-removed");
        env.create(&late, SIGNER, &pem, &usages, None).await;
        env.approve(&late).await;
        let mut text = String::new();
        let mut seen = false;
        for _ in 0..200 {
            text = scrape(svc.listen).await;
            let errors = |kind: &str| {
                sample(
                    &text,
                    &format!(
                        "csr_signer_signing_errors_total{{error=\"{kind}\",signer=\"{SIGNER}\"}}"
                    ),
                )
                .unwrap_or(0.0)
            };
            if errors("token") + errors("device") + errors("session") + errors("key") >= 2.0 {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            seen,
            "{token}: no token errors counted while it was away:\n{text}"
        );
        let csr = env.csrs().get(&late).await.unwrap();
        assert!(
            !has_certificate(&csr),
            "{token}: signed without its token?\n{text}"
        );
        std::fs::rename(&away, &folder).unwrap();
        let chain = env.wait_certificate(&late).await;
        openssl_verify(&chain, &cert, dir.path()).unwrap_or_else(|e| panic!("{token}: {e}"));
        let csr = env.csrs().get(&late).await.unwrap();
        assert!(
            failed_conditions(&csr).is_empty(),
            "{token}: a token error is never Failed"
        );

        let text = scrape(svc.listen).await;
        assert_no_pin("metrics", &text);
        // Login is per application: a new session of this process shows whether the signer is logged in.
        assert_eq!(
            session_state(token),
            "RoUser",
            "{token}: logged in while running"
        );
        assert!(
            text.contains(
                "csr_signer_requests_total{kind=\"csr\",outcome=\"error\",reason=\"TokenUnavailable\""
            ),
            "{text}"
        );
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
        assert_eq!(
            session_state(token),
            "RoPublic",
            "{token}: logged out at shutdown"
        );
    }
}

/// The state of a new read-only session on `token` opened by this process (`RoUser` when the process
/// is logged in to the token, `RoPublic` when not).
fn session_state(token: &str) -> String {
    let ctx = cryptoki::context::Pkcs11::new(MODULE).unwrap();
    let session = ctx.open_ro_session(slot(&ctx, token)).unwrap();
    format!("{:?}", session.get_session_info().unwrap().session_state())
}

/// The slot of the token labelled `token`, found by this test (not by the signer's code).
fn slot(ctx: &cryptoki::context::Pkcs11, token: &str) -> cryptoki::slot::Slot {
    ctx.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token)
        .unwrap()
}

#[test]
fn reload_takes_a_new_pin_and_refuses_a_certificate_the_token_key_does_not_match() {
    let _serial = one_at_a_time();
    let (dir, first) = token_ca("reload", KeyType::P256);
    // A second key in the same token, with its own certificate.
    let created = ca_init::init_pkcs11(
        &InitOptions {
            out: dir.path().join("other"),
            key_type: KeyType::P256,
            days: 30,
            common_name: "other key".into(),
            intermediate: false,
        },
        &Pkcs11Settings {
            uri: "pkcs11:token=reload;object=other-key".into(),
            ..p11("reload")
        },
    )
    .unwrap();
    let cert = dir.path().join("signing.crt");
    std::fs::copy(&first, &cert).unwrap();
    let (engine, pin) = engine_with_its_own_pin(dir.path(), &cert, "reload");
    let signer = engine.signer(SIGNER).unwrap();
    assert!(!signer.reload_ca_if_changed().unwrap(), "nothing changed");

    // The other key's certificate under the URI of the first key: refused, the old CA keeps signing.
    std::fs::copy(&created.cert, &cert).unwrap();
    let e = csr_signer::error::chain(&signer.reload_ca_if_changed().unwrap_err());
    assert!(e.contains("does not match the certificate"), "{e}");
    assert_no_pin("reload error", &e);
    openssl_verify(&sign_one(&engine), &first, dir.path()).unwrap();

    // Back to the right certificate, and a rewritten PIN file: a new login with it.
    std::fs::copy(&first, &cert).unwrap();
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    let before = engine.signer(SIGNER).unwrap().ca();
    assert!(signer.reload_ca_if_changed().unwrap());
    let after = signer.ca();
    assert!(!std::sync::Arc::ptr_eq(&before, &after));
    openssl_verify(&sign_one(&engine), &first, dir.path()).unwrap();
}

#[test]
fn a_rejected_pin_is_not_tried_again_until_the_pin_file_changes() {
    let _serial = one_at_a_time();
    let (dir, cert) = token_ca("pin-change", KeyType::P256);
    let (engine, pin) = engine_with_its_own_pin(dir.path(), &cert, "pin-change");
    let signer = engine.signer(SIGNER).unwrap();
    openssl_verify(&sign_one(&engine), &cert, dir.path()).unwrap();

    // The token's officer changes the user PIN, and the module restarts: the signer must log in again
    // and its PIN is now wrong.
    let new_pin = "pin-after-rotation-42";
    let ctx = cryptoki::context::Pkcs11::new(MODULE).unwrap();
    let session = ctx.open_rw_session(slot(&ctx, "pin-change")).unwrap();
    session
        .set_pin(&PIN.to_string().into(), &new_pin.to_string().into())
        .unwrap();
    drop(session);
    ctx.finalize().unwrap();
    let req_pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = support::strings(&["digital signature", "client auth"]);
    let req = SignRequest {
        request: &req_pem,
        usages: &usages,
        expiration_seconds: None,
        annotations: None,
        username: "developer",
        groups: &[],
    };
    let first = csr_signer::error::chain(&signer.sign(&req, SystemTime::now()).unwrap_err());
    assert!(first.contains("logging in to the token"), "{first}");
    let second = csr_signer::error::chain(&signer.sign(&req, SystemTime::now()).unwrap_err());
    assert!(
        second.contains("not logging in again until the PIN file changes"),
        "{second}"
    );
    for e in [&first, &second] {
        assert_no_pin("login error", e);
        assert!(!e.contains(new_pin), "{e}");
    }
    // The new PIN arrives in the mounted Secret: the reload logs in with it.
    std::fs::write(&pin, new_pin).unwrap();
    assert!(signer.reload_ca_if_changed().unwrap());
    openssl_verify(&sign_one(&engine), &cert, dir.path()).unwrap();
}

/// An engine whose PIN file is its own (in `dir`), so a test can rewrite it.
fn engine_with_its_own_pin(dir: &Path, cert: &Path, token: &str) -> (Engine, PathBuf) {
    let pin = dir.join("pin");
    std::fs::write(&pin, PIN).unwrap();
    let ca = ca_yaml(cert, token).replace(
        &hsm().pin_file.display().to_string(),
        &pin.display().to_string(),
    );
    let settings = Settings::from_yaml(&config_yaml(&ca), "test.yaml").unwrap();
    (Engine::from_settings(&settings).unwrap(), pin)
}
