//! The binary as a user runs it: `ca init`, `sign` (and `--explain`), `check-config`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use csr_signer::ca_init::KeyType;
use support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_csr-signer"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run csr-signer")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn ca_init_writes_private_keys_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("ca");
    let o = run(bin()
        .args([
            "ca",
            "init",
            "--key-type",
            "rsa2048",
            "--intermediate",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", text(&o.stderr));
    for (f, m) in [
        ("root.crt", 0o644),
        ("root.key", 0o600),
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
    ] {
        assert_eq!(mode(&out.join(f)), m, "{f}");
    }
    // The intermediate verifies against the root with openssl.
    let v = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(out.join("root.crt"))
        .arg(out.join("ca.crt")));
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    let before = std::fs::read(out.join("ca.key")).expect("key");
    let o = run(bin().args(["ca", "init", "--out"]).arg(&out));
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("refusing to overwrite"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(out.join("ca.key")).expect("key"), before);
}

#[test]
fn sign_prints_a_certificate_openssl_verifies() {
    let ca = TestCa::new(KeyType::Ed25519);
    let config = ca.write_settings("");
    let csr = ca.dir.path().join("dev.csr");
    std::fs::write(
        &csr,
        CsrSpec::new(
            key(KeyType::Rsa2048),
            &[("CN", "developer"), ("O", "development")],
        )
        .pem(),
    )
    .expect("csr");
    let o = run(bin()
        .args([
            "sign",
            "--signer",
            "example.com/mtls",
            "--usages",
            "digital signature,client auth",
            "--expiration-seconds",
            "86400",
            "--requester",
            "developer",
            "--config",
        ])
        .arg(&config)
        .arg("--csr")
        .arg(&csr));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let crt = ca.dir.path().join("dev.crt");
    std::fs::write(&crt, &o.stdout).expect("write");
    let v = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca.root)
        .arg(&crt));
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
}

#[test]
fn sign_refusal_exits_non_zero_with_reason_and_message() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let csr = ca.dir.path().join("dev.csr");
    std::fs::write(
        &csr,
        CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem(),
    )
    .expect("csr");
    let o = run(bin()
        .args([
            "sign",
            "--signer",
            "example.com/mtls",
            "--usages",
            "digital signature,code signing",
            "--requester",
            "developer",
            "--config",
        ])
        .arg(&config)
        .arg("--csr")
        .arg(&csr));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o.stderr).starts_with("UsageNotAllowed: usage \"code signing\" is not allowed"),
        "{}",
        text(&o.stderr)
    );

    let o = run(bin()
        .args(["sign", "--signer", "example.com/other", "--config"])
        .arg(&config)
        .arg("--csr")
        .arg(&csr));
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("\"example.com/other\" is not configured"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn explain_shows_the_decision_without_signing() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("lifetime: {max: 48h}");
    let csr = ca.dir.path().join("app.csr");
    std::fs::write(
        &csr,
        CsrSpec::new(key(KeyType::P256), &[])
            .sans(&[
                "DNS:app.team-a.svc",
                "URI:spiffe://cluster.local/ns/team-a/sa/app",
            ])
            .pem(),
    )
    .expect("csr");
    let o = run(bin()
        .args([
            "sign",
            "--explain",
            "--signer",
            "example.com/mtls",
            "--usages",
            "digital signature,server auth",
            "--expiration-seconds",
            "864000",
            "--requester",
            "system:serviceaccount:team-a:app",
            "--config",
        ])
        .arg(&config)
        .arg("--csr")
        .arg(&csr));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains("BEGIN CERTIFICATE"));
    assert!(out.contains("Decision: issue"), "{out}");
    assert!(
        out.contains("Lifetime: 2days (clamped, requested 10days)"),
        "{out}"
    );
    assert!(
        out.contains("SANs: DNS:app.team-a.svc, URI:spiffe://cluster.local/ns/team-a/sa/app"),
        "{out}"
    );
}

#[test]
fn check_config_names_file_and_key_and_prints_no_secrets() {
    let ca = TestCa::new(KeyType::P256);
    let good = ca.write_settings("");
    let o = run(bin()
        .arg("check-config")
        .arg("--config")
        .arg(&good)
        .env("CSR_SIGNER__CONTROLLER__QPS", "7"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("qps: 7.0"),
        "environment overrides the file: {out}"
    );
    assert!(out.contains("example.com/mtls"));
    assert!(!out.contains("PRIVATE KEY"));

    let bad = ca.dir.path().join("bad.yaml");
    for (yaml, expect) in [
        (
            format!(
                "{}  polcy: {{}}\n",
                std::fs::read_to_string(&good)
                    .expect("read")
                    .replace("  policy: {}\n", "")
            ),
            "signers[0]: unknown field `polcy`",
        ),
        (
            std::fs::read_to_string(&good).expect("read") + "controller: {qps: fast}\n",
            "controller.qps: invalid type",
        ),
        (
            std::fs::read_to_string(&good)
                .expect("read")
                .replace("policy: {}", "policy: {lifetime: {min: 1m}}"),
            "signers[0].policy.lifetime.min: must be at least 10m",
        ),
    ] {
        std::fs::write(&bad, yaml).expect("write");
        let o = run(bin().arg("check-config").arg("--config").arg(&bad));
        assert!(!o.status.success());
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!("{}: {expect}", bad.display())),
            "{err}"
        );
    }
}

#[test]
fn the_openssl_cli_ca_script_makes_a_ca_the_loader_accepts() {
    let dir = tempfile::tempdir().expect("dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ca/openssl-ca.sh");
    let out = dir.path().join("ca");
    let o = run(Command::new("bash").arg(&script).arg(&out));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ca = TestCa {
        cert: out.join("ca.crt"),
        key: out.join("ca.key"),
        chain: None,
        root: out.join("root.crt"),
        dir,
    };
    let config = ca.write_settings("");
    let o = run(bin().arg("check-config").arg("--config").arg(&config));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let engine = ca.engine("");
    let pem = CsrSpec::new(key(KeyType::P256), &[("CN", "developer")]).pem();
    let usages = strings(&["client auth"]);
    match engine
        .signer("example.com/mtls")
        .expect("signer")
        .sign(
            &request(&pem, &usages, None, "developer"),
            std::time::SystemTime::now(),
        )
        .expect("sign")
    {
        csr_signer::engine::Decision::Issued(i) => {
            verify_with_store(&i.certificate_pem, &ca.root_x509()).expect("verify");
            openssl_verify(&i.certificate_pem, &ca.root, ca.dir.path()).expect("openssl verify");
        }
        csr_signer::engine::Decision::Refused(r) => panic!("{r}"),
    }
}
