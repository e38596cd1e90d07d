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

/// `csr-signer sign --signer example.com/mtls --config CONFIG --csr CSR ARGS…`.
fn sign(config: &Path, csr: &Path, args: &[&str]) -> Output {
    run(bin()
        .args(["sign", "--signer", "example.com/mtls", "--config"])
        .arg(config)
        .arg("--csr")
        .arg(csr)
        .args(args))
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
    let o = sign(
        &config,
        &csr,
        &[
            "--usages",
            "digital signature,client auth",
            "--expiration-seconds",
            "86400",
            "--requester",
            "developer",
        ],
    );
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
fn check_config_takes_the_environment_and_prints_no_secrets() {
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

/// Every refused `ca init` option names its flag, and nothing is written.
#[test]
fn ca_init_refuses_useless_options_naming_the_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("ca");
    for (args, expected) in [
        (&["--days", "0"][..], "--days: must be at least 1 (got 0)"),
        (
            &["--days", "1", "--intermediate"][..],
            "--days: must be at least 2 with --intermediate",
        ),
        (&["--days", "36501"][..], "--days: must be at most 36500"),
        (
            &["--common-name", ""][..],
            "--common-name: must not be empty",
        ),
        (
            &["--common-name", "  "][..],
            "--common-name: must not be empty",
        ),
    ] {
        let o = run(bin().args(["ca", "init", "--out"]).arg(&out).args(args));
        assert!(!o.status.success(), "{args:?}");
        let err = text(&o.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing may be written");
    }
    // The smallest valid CA lasts a day, as openssl reads it.
    let o = run(bin().args(["ca", "init", "--days", "1", "--out"]).arg(&out));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let end = |secs: &str| {
        run(Command::new("openssl")
            .args(["x509", "-noout", "-checkend", secs, "-in"])
            .arg(out.join("ca.crt")))
        .status
        .success()
    };
    assert!(end("86000"), "valid for almost a day");
    assert!(!end("86500"), "but not more");
}

/// A bad configuration stops the binary naming what set the key (the file or the environment
/// variable), the key path, and for CA files the file itself.
#[test]
fn bad_configs_name_the_file_or_variable_and_the_key() {
    let ca = TestCa::new(KeyType::P256);
    let other = TestCa::new(KeyType::P256);
    let good = std::fs::read_to_string(ca.write_settings("")).expect("read");
    let bad = ca.dir.path().join("bad.yaml");
    let file = bad.display().to_string();
    let cert = ca.cert.display().to_string();
    let key = ca.key.display().to_string();
    let missing = ca.dir.path().join("missing.key").display().to_string();
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        good.replace(from, to)
    };
    // (file content, environment, the error's beginning)
    type Case<'a> = (String, Vec<(&'a str, String)>, String);
    let cases: Vec<Case> = vec![
        (edit("  policy: {}\n", "  polcy: {}\n"), vec![], format!("{file}: signers[0].polcy: unknown key (expected one of `name`, `ca`, `otherCas`, `policy`, `podCertificates`, `autoApprove`)")),
        (edit(&format!(", keyFile: {key}"), ""), vec![], format!("{file}: signers[0].ca: set keyFile (a PEM private key) or pkcs11 (a key in a token)")),
        (good.clone() + "controller: {qps: fast}\n", vec![], format!("{file}: controller.qps: invalid type: string \"fast\"")),
        (edit("policy: {}", "policy: {lifetime: {min: 1m}}"), vec![], format!("{file}: signers[0].policy.lifetime.min: must be at least 10m")),
        (edit("policy: {}", "policy: {sans: {dns: [\"{namespace}-{serviceaccount}.x\"]}}"), vec![], format!("{file}: signers[0].policy.sans.dns[0]: \"{{namespace}}-{{serviceaccount}}.x\": {{namespace}} and {{serviceaccount}} must be separated by text containing '.'")),
        (edit(&key, &missing), vec![], format!("{file}: signers[0].ca.keyFile: {missing}: cannot read: No such file or directory")),
        (edit(&format!("certFile: {cert}"), &format!("certFile: {key}")), vec![], format!("{file}: signers[0].ca.certFile: {key}: expected 1 certificate, found 0")),
        (edit(&key, &other.key.display().to_string()), vec![], format!("{file}: signers[0].ca.keyFile: {}: private key does not match the certificate", other.key.display())),
        (good.clone(), vec![("CSR_SIGNER__CONTROLLER__QPS", "fast".into())], "environment variable CSR_SIGNER__CONTROLLER__QPS: controller.qps: invalid type: string \"fast\"".into()),
        (good.clone(), vec![("CSR_SIGNER__SIGNERS__0__CA__KEY_FILE", missing.clone())], format!("environment variable CSR_SIGNER__SIGNERS__0__CA__KEY_FILE: signers[0].ca.keyFile: {missing}: cannot read")),
        (good.clone(), vec![("CSR_SIGNER__SIGNERS__0__POLICY__LIFETIME__MAX", "1m".into())], "environment variable CSR_SIGNER__SIGNERS__0__POLICY__LIFETIME__MAX: signers[0].policy.lifetime: need min <= default <= max".into()),
        (good.clone(), vec![("CSR_SIGNER__SIGNERS__3__NAME", "example.com/x".into())], "environment variable CSR_SIGNER__SIGNERS__3__NAME: signers[3].name: index 3 is past the end of a list of 1".into()),
    ];
    for (yaml, vars, expected) in cases {
        std::fs::write(&bad, &yaml).expect("write");
        let o = run(bin()
            .arg("check-config")
            .arg("--config")
            .arg(&bad)
            .envs(vars.iter().map(|(k, v)| (k, v))));
        assert!(!o.status.success(), "{expected}");
        let err = text(&o.stderr);
        assert!(
            err.starts_with(&format!("error: {expected}")),
            "got      {err}wanted   {expected}"
        );
    }
}

/// Relative CA paths in the file are the file's neighbours, wherever the binary runs; relative paths
/// from the environment are the working directory's.
#[test]
fn relative_ca_paths_follow_the_config_file() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.dir.path().join("relative.yaml");
    std::fs::write(
        &config,
        "signers:\n- name: example.com/mtls\n  ca: {certFile: ca.crt, keyFile: ./ca.key}\n",
    )
    .expect("write");
    let elsewhere = tempfile::tempdir().expect("dir");
    let o = run(bin()
        .current_dir(elsewhere.path())
        .arg("check-config")
        .arg("--config")
        .arg(&config));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!(
            "certFile: {}",
            ca.dir.path().join("ca.crt").display()
        )),
        "{}",
        text(&o.stdout)
    );

    // The same name from the environment is looked up in the working directory.
    let from_env = |cwd: &Path| {
        run(bin()
            .current_dir(cwd)
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env("CSR_SIGNER__SIGNERS__0__CA__KEY_FILE", "ca.key"))
    };
    let o = from_env(elsewhere.path());
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).starts_with("error: environment variable CSR_SIGNER__SIGNERS__0__CA__KEY_FILE: signers[0].ca.keyFile: ca.key: cannot read"),
        "{}",
        text(&o.stderr)
    );
    let o = from_env(ca.dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// The identity rules through `sign`, as an operator reproduces a decision: each refusal exits 2
/// with one reason and a message naming the value; a node's own system: names are issued.
#[test]
fn sign_applies_one_name_one_identity_and_system_names() {
    let ca = TestCa::new(KeyType::P256);
    let istiod = "system:serviceaccount:istio-system:istiod";
    let config = ca.write_settings(&format!("trustedRequesters: [\"{istiod}\"]"));
    let csr = ca.dir.path().join("x.csr");
    // (subject, SANs, requester, groups, expected stderr beginning; None: issued)
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a str,
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case; 6] = [
        (&[], &["URI:spiffe://cluster.local/ns/-a/sa/app"], istiod, "", Some("SanNotAllowed: URI subjectAltName \"spiffe://cluster.local/ns/-a/sa/app\": {namespace} would be \"-a\", which is not a valid namespace name")),
        (&[], &["DNS:my.app.team-a.svc"], "system:serviceaccount:team-a:my.app", "", Some("SanNotAllowed: DNS subjectAltName \"my.app.team-a.svc\": {serviceaccount} would be \"my.app\", which contains '.'")),
        (&[("CN", "app.team-a.svc")], &[], "app.team-a.svc", "", Some("IdentityMismatch: subject commonName \"app.team-a.svc\" fits \"{username}\" for requester \"app.team-a.svc\" but \"{serviceaccount}.{namespace}.svc\" for another identity")),
        (&[("CN", "developer"), ("O", "system:nodes")], &[], "developer", "system:authenticated", Some("SubjectNotAllowed: subject organization \"system:nodes\" is a Kubernetes system: name that is not the requester's own group")),
        (&[("CN", "system:node:node-1")], &[], istiod, "", Some("SubjectNotAllowed: subject commonName \"system:node:node-1\" is a Kubernetes system: name that is not the requester's own username")),
        (&[("CN", "system:node:node-1"), ("O", "system:nodes")], &[], "system:node:node-1", "system:nodes,system:authenticated", None),
    ];
    for (subject, sans, requester, groups, expected) in cases {
        std::fs::write(
            &csr,
            CsrSpec::new(key(KeyType::P256), subject).sans(sans).pem(),
        )
        .expect("csr");
        let o = sign(
            &config,
            &csr,
            &[
                "--usages",
                "digital signature,client auth",
                "--requester",
                requester,
                "--groups",
                groups,
            ],
        );
        match expected {
            Some(refusal) => {
                assert_eq!(
                    o.status.code(),
                    Some(2),
                    "{requester} {subject:?} {sans:?}: {}",
                    text(&o.stderr)
                );
                assert!(
                    text(&o.stderr).starts_with(refusal),
                    "got    {}wanted {refusal}",
                    text(&o.stderr)
                );
            }
            None => {
                assert!(o.status.success(), "{}", text(&o.stderr));
                assert!(text(&o.stdout).contains("BEGIN CERTIFICATE"));
            }
        }
    }
}
