//! kubectl drives the local API over HTTPS through the Kubernetes CSR tutorial, verbatim:
//! openssl genrsa / req, `kubectl apply`, `get csr`, `certificate approve|deny` (protobuf on
//! 1.32+), fetching the certificate with jsonpath, describe, delete, and the error paths.
//! Runs with the oldest (1.27), a middle (1.32, /usr/bin) and the newest (1.33) kubectl.
#![allow(clippy::unwrap_used)]

mod local_api_common;
mod support;

use std::path::PathBuf;

use csr_signer::dev::{self, LocalApi, LocalApiConfig};
use kube::api::{Patch, PatchParams};
use local_api_common::*;
use serde_json::json;
use support::kubectl::{manifest, run, sh};

const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_132: &str = "/usr/bin/kubectl";
const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

struct Env {
    api: LocalApi,
    dir: tempfile::TempDir,
    kc: PathBuf,
}

async fn env() -> Env {
    let api = dev::start(LocalApiConfig::default())
        .await
        .expect("HTTPS local API");
    assert!(api.base_url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kc, &["admin", "developer", "approver"])
        .unwrap();
    Env { api, dir, kc }
}

async fn tutorial(bin: &str) {
    let e = env().await;
    let d = e.dir.path();
    sh(d, "openssl genrsa -out myuser.key 2048").await;
    sh(
        d,
        "openssl req -new -key myuser.key -out myuser.csr -subj \"/CN=developer/O=development\"",
    )
    .await;
    let req = sh(d, "cat myuser.csr | base64 | tr -d \"\\n\"").await;
    let m = manifest(
        "myuser",
        &req,
        "kubernetes.io/kube-apiserver-client",
        "86400",
        &["client auth"],
    );

    let o = run(
        bin,
        &e.kc,
        &["--context", "developer", "apply", "-f", "-"],
        Some(&m),
    )
    .await;
    assert!(o.ok, "apply: {}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/myuser created"
    );

    let o = run(bin, &e.kc, &["get", "csr"], None).await;
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        vec![
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    assert_eq!(lines[1][0], "myuser");
    assert_eq!(
        lines[1][2..],
        [
            "kubernetes.io/kube-apiserver-client",
            "developer",
            "24h",
            "Pending"
        ]
    );

    // A developer may not approve: RBAC denies the /approval update.
    let o = run(
        bin,
        &e.kc,
        &["--context", "developer", "certificate", "approve", "myuser"],
        None,
    )
    .await;
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"myuser\" is forbidden: User \"developer\" cannot update resource \"certificatesigningrequests/approval\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
    // The approver may approve only example.com signers: admission denies this one.
    let o = run(
        bin,
        &e.kc,
        &["--context", "approver", "certificate", "approve", "myuser"],
        None,
    )
    .await;
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"myuser\" is forbidden: user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""
    );

    let o = run(bin, &e.kc, &["certificate", "approve", "myuser"], None).await;
    assert!(o.ok, "approve: {}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/myuser approved"
    );

    // Deny another one.
    let m2 = manifest("other", &req, "example.com/mtls", "3600", &["client auth"]);
    let o = run(
        bin,
        &e.kc,
        &["--context", "developer", "apply", "-f", "-"],
        Some(&m2),
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    let o = run(
        bin,
        &e.kc,
        &["--context", "approver", "certificate", "deny", "other"],
        None,
    )
    .await;
    assert!(o.ok, "deny: {}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/other denied"
    );

    let o = run(bin, &e.kc, &["get", "csr"], None).await;
    let rows: Vec<Vec<&str>> = o
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][0], "myuser");
    assert_eq!(*rows[0].last().unwrap(), "Approved");
    assert_eq!(rows[1][0], "other");
    assert_eq!(
        rows[1][2..],
        ["example.com/mtls", "developer", "60m", "Denied"]
    );

    // A test client plays the signer: sign with an openssl CA and write status.certificate.
    sh(d, "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=test-ca -days 1 2>/dev/null").await;
    sh(d, "openssl x509 -req -in myuser.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out myuser.crt -days 1 2>/dev/null").await;
    let cert = std::fs::read(d.join("myuser.crt")).unwrap();
    csrs(&e.api, "admin")
        .patch_status(
            "myuser",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"certificate": b64(&cert)}})),
        )
        .await
        .unwrap();

    let o = run(
        bin,
        &e.kc,
        &[
            "get",
            "csr",
            "myuser",
            "-o",
            "jsonpath={.status.certificate}",
        ],
        None,
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    std::fs::write(d.join("fetched.b64"), o.stdout.trim()).unwrap();
    sh(d, "base64 -d fetched.b64 > fetched.crt").await;
    assert_eq!(std::fs::read(d.join("fetched.crt")).unwrap(), cert);
    let subject = sh(
        d,
        "openssl x509 -in fetched.crt -noout -subject -nameopt RFC2253",
    )
    .await;
    assert_eq!(subject.trim(), "subject=O=development,CN=developer");
    sh(d, "openssl verify -CAfile ca.crt fetched.crt").await;

    let o = run(bin, &e.kc, &["get", "csr", "myuser"], None).await;
    assert!(o.stdout.contains("Approved,Issued"), "{}", o.stdout);

    let o = run(bin, &e.kc, &["describe", "csr", "myuser"], None).await;
    assert!(o.ok, "{}", o.stderr);
    for want in [
        "Name:",
        "myuser",
        "Requesting User:     developer",
        "Signer:              kubernetes.io/kube-apiserver-client",
        "Requested Duration:  24h",
        "Status:              Approved,Issued",
        "Common Name:    developer",
        "Organization:   development",
    ] {
        assert!(
            o.stdout.contains(want),
            "describe lacks {want:?}:\n{}",
            o.stdout
        );
    }

    let o = run(bin, &e.kc, &["delete", "csr", "myuser"], None).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io \"myuser\" deleted"
    );
    let o = run(bin, &e.kc, &["get", "csr", "myuser"], None).await;
    assert!(!o.ok);
    assert_eq!(o.stderr.trim(), "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"myuser\" not found");

    e.api.shutdown().await;
}

async fn invalid_manifests(bin: &str) {
    let e = env().await;
    let d = e.dir.path();
    sh(d, "openssl genrsa -out k.key 2048 && openssl req -new -key k.key -out k.csr -subj /CN=developer/O=development").await;
    let req = sh(d, "base64 < k.csr | tr -d \"\\n\"").await;
    let cases = [
        (
            manifest("short", &req, "example.com/mtls", "599", &["client auth"]),
            "The CertificateSigningRequest \"short\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)".to_string(),
        ),
        (
            manifest("usage", &req, "example.com/mtls", "86400", &["client auth", "foo"]),
            "The CertificateSigningRequest \"usage\" is invalid: spec.usages[1]: Unsupported value: \"foo\": supported values: \"any\", \"cert sign\", \"client auth\", \"code signing\", \"content commitment\", \"crl sign\", \"data encipherment\", \"decipher only\", \"digital signature\", \"email protection\", \"encipher only\", \"ipsec end system\", \"ipsec tunnel\", \"ipsec user\", \"key agreement\", \"key encipherment\", \"microsoft sgc\", \"netscape sgc\", \"ocsp signing\", \"s/mime\", \"server auth\", \"signing\", \"timestamping\"".to_string(),
        ),
        (
            manifest("signer", &req, "example.com/a/b", "86400", &["client auth"]),
            "The CertificateSigningRequest \"signer\" is invalid: spec.signerName: Invalid value: \"example.com/a/b\": must be a fully qualified domain and path of the form 'example.com/signer-name'".to_string(),
        ),
    ];
    for (m, want) in cases {
        let o = run(
            bin,
            &e.kc,
            &["--context", "developer", "apply", "-f", "-"],
            Some(&m),
        )
        .await;
        assert!(!o.ok);
        assert_eq!(o.stderr.trim(), want);
    }
    // Unknown fields are rejected server-side (kubectl's default --validate=strict).
    let m = manifest("typo", &req, "example.com/mtls", "86400", &["client auth"])
        .replace("signerName:", "signerNam:");
    let o = run(
        bin,
        &e.kc,
        &["--context", "developer", "apply", "-f", "-"],
        Some(&m),
    )
    .await;
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "Error from server (BadRequest): error when creating \"STDIN\": CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"spec.signerNam\""
    );
    let o = run(bin, &e.kc, &["get", "csr"], None).await;
    assert_eq!(o.stderr.trim(), "No resources found");
    e.api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_tutorial() {
    tutorial(KUBECTL_127).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_tutorial() {
    tutorial(KUBECTL_132).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_tutorial() {
    tutorial(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_invalid_manifests() {
    invalid_manifests(KUBECTL_127).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_invalid_manifests() {
    invalid_manifests(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_condition_and_watch() {
    // `kubectl wait` uses a field-selected list+watch: a real watch client over HTTPS.
    let e = env().await;
    create(&e.api, "developer", "w").await;
    let kc = e.kc.clone();
    let waiter = tokio::spawn(async move {
        run(
            KUBECTL_133,
            &kc,
            &["wait", "--for=condition=Approved", "csr/w", "--timeout=60s"],
            None,
        )
        .await
    });
    while e.api.faults().open_watches() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    csrs(&e.api, "approver")
        .patch_approval(
            "w",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    let o = waiter.await.unwrap();
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "certificatesigningrequest.certificates.k8s.io/w condition met"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_table_rows() {
    for bin in [KUBECTL_127, KUBECTL_133] {
        let e = env().await;
        create(&e.api, "developer", "w").await;
        let kc = e.kc.clone();
        let watcher = tokio::spawn(async move { run(bin, &kc, &["get", "csr", "-w"], None).await });
        while e.api.faults().open_watches() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        csrs(&e.api, "approver")
            .patch_approval(
                "w",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
                ),
            )
            .await
            .unwrap();
        // Ending the watch ends `kubectl get -w`; the queued MODIFIED event is delivered first.
        e.api.faults().close_watches();
        let o = watcher.await.unwrap();
        let rows: Vec<Vec<&str>> = o
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            vec![
                "NAME",
                "AGE",
                "SIGNERNAME",
                "REQUESTOR",
                "REQUESTEDDURATION",
                "CONDITION"
            ],
            "{bin}: {}",
            o.stdout
        );
        assert_eq!(*rows[1].last().unwrap(), "Pending", "{bin}: {}", o.stdout);
        assert_eq!(*rows[2].last().unwrap(), "Approved", "{bin}: {}", o.stdout);
        assert_eq!(rows[2][2..5], ["example.com/mtls", "developer", "60m"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_configmap_and_namespace() {
    // kubectl 1.33 sends these bodies as protobuf.
    for bin in [KUBECTL_127, KUBECTL_133] {
        let e = env().await;
        let o = run(bin, &e.kc, &["create", "namespace", "zz"], None).await;
        assert_eq!(
            o.stdout.trim(),
            "namespace/zz created",
            "{bin}: {}",
            o.stderr
        );
        let o = run(
            bin,
            &e.kc,
            &[
                "-n",
                "zz",
                "create",
                "configmap",
                "cfg",
                "--from-literal=a=b",
            ],
            None,
        )
        .await;
        assert_eq!(
            o.stdout.trim(),
            "configmap/cfg created",
            "{bin}: {}",
            o.stderr
        );
        let o = run(
            bin,
            &e.kc,
            &["-n", "zz", "label", "configmap", "cfg", "x=y"],
            None,
        )
        .await;
        assert!(o.ok, "{bin}: {}", o.stderr);
        let o = run(
            bin,
            &e.kc,
            &[
                "-n",
                "zz",
                "get",
                "configmap",
                "cfg",
                "-o",
                "jsonpath={.data.a} {.metadata.labels.x}",
            ],
            None,
        )
        .await;
        assert_eq!(o.stdout, "b y", "{bin}: {}", o.stderr);
        e.api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i() {
    for bin in [KUBECTL_127, KUBECTL_133] {
        let e = env().await;
        for (ctx, args, want) in [
            ("developer", vec!["create", "csr"], "yes"),
            (
                "developer",
                vec!["update", "csr", "--subresource=approval"],
                "no",
            ),
            (
                "approver",
                vec!["update", "csr", "--subresource=approval"],
                "yes",
            ),
            ("approver", vec!["create", "csr"], "no"),
        ] {
            let mut a = vec!["--context", ctx, "auth", "can-i"];
            a.extend(args.iter().copied());
            let o = run(bin, &e.kc, &a, None).await;
            assert_eq!(o.stdout.trim(), want, "{bin} {ctx} {args:?}: {}", o.stderr);
        }
        e.api.shutdown().await;
    }
}
