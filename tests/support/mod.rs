//! The one test-support module of every test and bench: the signerName they sign for, throwaway CAs, and
//! CSRs built with OpenSSL (`CsrSpec`). Other helper modules (controller_support, local_api_common) build
//! on it; benches include it with `#[path = "../tests/support/mod.rs"]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::Settings;
use csr_signer::engine::{Engine, SignRequest};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Extension, X509NameBuilder, X509Req, X509ReqBuilder, X509};

pub mod kubectl;

/// A free TCP port on loopback (for a listener a subprocess binds).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The signerName the tests and benches sign for.
pub const SIGNER: &str = "example.com/mtls";

/// A CA on disk in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
    /// The self-signed root to verify against.
    pub root: PathBuf,
}

impl TestCa {
    pub fn new(key_type: KeyType) -> TestCa {
        TestCa::create(key_type, false)
    }

    pub fn with_intermediate(key_type: KeyType) -> TestCa {
        TestCa::create(key_type, true)
    }

    fn create(key_type: KeyType, intermediate: bool) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = ca_init::init(&ca_init::InitOptions {
            out: dir.path().to_owned(),
            key_type,
            days: 365,
            common_name: "test CA".into(),
            intermediate,
        })
        .expect("ca init");
        TestCa {
            cert: created.cert,
            key: created.key,
            chain: None,
            root: created.trust_anchor,
            dir,
        }
    }

    pub fn root_x509(&self) -> X509 {
        X509::from_pem(&std::fs::read(&self.root).expect("root")).expect("root pem")
    }

    /// YAML for one signer `example.com/mtls` using this CA, with extra policy YAML (indented under
    /// `policy:`), e.g. `"sans: {ip: true}"`.
    pub fn settings_yaml(&self, policy: &str) -> String {
        let chain = self
            .chain
            .as_ref()
            .map(|c| format!(", chainFile: {}", c.display()))
            .unwrap_or_default();
        format!(
            "signers:\n- name: example.com/mtls\n  ca: {{certFile: {}, keyFile: {}{chain}}}\n  policy: {{{policy}}}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    pub fn engine(&self, policy: &str) -> Engine {
        let settings =
            Settings::from_yaml(&self.settings_yaml(policy), "test.yaml").expect("settings");
        Engine::from_settings(&settings).expect("engine")
    }

    pub fn write_settings(&self, policy: &str) -> PathBuf {
        let p = self.dir.path().join("config.yaml");
        std::fs::write(&p, self.settings_yaml(policy)).expect("write config");
        p
    }
}

/// What a test CSR contains.
pub struct CsrSpec<'a> {
    pub key: PKey<Private>,
    pub subject: &'a [(&'a str, &'a str)],
    /// openssl-style SAN list, e.g. `DNS:a.example.com,IP:10.0.0.1`.
    pub sans: Vec<String>,
    pub request_ca: bool,
    pub digest: MessageDigest,
}

impl<'a> CsrSpec<'a> {
    pub fn new(key: PKey<Private>, subject: &'a [(&'a str, &'a str)]) -> CsrSpec<'a> {
        let digest = if key.id() == openssl::pkey::Id::ED25519 {
            MessageDigest::null()
        } else {
            MessageDigest::sha256()
        };
        CsrSpec {
            key,
            subject,
            sans: Vec::new(),
            request_ca: false,
            digest,
        }
    }

    pub fn sans(mut self, sans: &[&str]) -> Self {
        self.sans = sans.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn request_ca(mut self) -> Self {
        self.request_ca = true;
        self
    }

    pub fn build(&self) -> X509Req {
        let mut b = X509ReqBuilder::new().expect("builder");
        let mut name = X509NameBuilder::new().expect("name");
        for (k, v) in self.subject {
            name.append_entry_by_text(k, v).expect("name entry");
        }
        b.set_subject_name(&name.build()).expect("subject");
        b.set_pubkey(&self.key).expect("pubkey");
        let mut exts = Stack::<X509Extension>::new().expect("stack");
        if !self.sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in &self.sans {
                let (kind, value) = s.split_once(':').expect("KIND:value");
                match kind {
                    "DNS" => san.dns(value),
                    "IP" => san.ip(value),
                    "email" => san.email(value),
                    "URI" => san.uri(value),
                    other => panic!("unknown SAN kind {other}"),
                };
            }
            exts.push(san.build(&b.x509v3_context(None)).expect("san"))
                .expect("push");
        }
        if self.request_ca {
            exts.push(BasicConstraints::new().critical().ca().build().expect("bc"))
                .expect("push");
        }
        if !exts.is_empty() {
            b.add_extensions(&exts).expect("extensions");
        }
        b.sign(&self.key, self.digest).expect("sign csr");
        b.build()
    }

    pub fn pem(&self) -> Vec<u8> {
        self.build().to_pem().expect("pem")
    }
}

pub fn key(kind: KeyType) -> PKey<Private> {
    ca_init::generate_key(kind).expect("key")
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A sign request with the given fields and no annotations.
pub fn request<'a>(
    pem: &'a [u8],
    usages: &'a [String],
    expiration_seconds: Option<i32>,
    username: &'a str,
) -> SignRequest<'a> {
    SignRequest {
        request: pem,
        usages,
        expiration_seconds,
        annotations: None,
        username,
        groups: &[],
    }
}

/// Verifies `chain_pem` (leaf first, then intermediates) against `root` with OpenSSL's
/// X509StoreContext, as a TLS peer would.
pub fn verify_with_store(chain_pem: &str, root: &X509) -> Result<(), String> {
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyFlags;
    use openssl::x509::X509StoreContext;
    let certs = X509::stack_from_pem(chain_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (leaf, rest) = certs.split_first().ok_or("empty chain")?;
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    store.add_cert(root.clone()).map_err(|e| e.to_string())?;
    store
        .set_flags(X509VerifyFlags::X509_STRICT)
        .map_err(|e| e.to_string())?;
    let store = store.build();
    let mut chain = Stack::new().map_err(|e| e.to_string())?;
    for c in rest {
        chain.push(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    ctx.init(&store, leaf, &chain, |c| {
        let ok = c.verify_cert()?;
        Ok(if ok {
            Ok(())
        } else {
            Err(c.error().to_string())
        })
    })
    .map_err(|e| e.to_string())?
}

/// Runs `openssl verify -x509_strict` on the chain; returns stdout+stderr on failure.
pub fn openssl_verify(chain_pem: &str, root: &Path, dir: &Path) -> Result<(), String> {
    let certs = X509::stack_from_pem(chain_pem.as_bytes()).map_err(|e| e.to_string())?;
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, certs[0].to_pem().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-CAfile"]).arg(root);
    if certs.len() > 1 {
        let untrusted = dir.join("untrusted.pem");
        let mut pem = Vec::new();
        for c in &certs[1..] {
            pem.extend(c.to_pem().map_err(|e| e.to_string())?);
        }
        std::fs::write(&untrusted, pem).map_err(|e| e.to_string())?;
        cmd.arg("-untrusted").arg(untrusted);
    }
    let out = cmd.arg(&leaf).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CertificateSigningRequest object as a requester creates it.
pub fn csr_object(
    name: &str,
    signer: &str,
    pem: &[u8],
    usages: &[&str],
    expiration: Option<i32>,
) -> k8s_openapi::api::certificates::v1::CertificateSigningRequest {
    k8s_openapi::api::certificates::v1::CertificateSigningRequest {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(pem.to_vec()),
            signer_name: signer.to_string(),
            usages: Some(usages.iter().map(|s| s.to_string()).collect()),
            expiration_seconds: expiration,
            ..Default::default()
        },
        status: None,
    }
}

pub fn with_annotation(
    mut csr: k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    k: &str,
    v: &str,
) -> k8s_openapi::api::certificates::v1::CertificateSigningRequest {
    csr.metadata
        .annotations
        .get_or_insert_with(std::collections::BTreeMap::new)
        .insert(k.to_string(), v.to_string());
    csr
}

/// Approves `name` with one merge patch on `/approval` (no resourceVersion: for fresh CSRs in benches).
pub async fn approve_now(
    api: &kube::Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest>,
    name: &str,
) {
    let cond = k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("Bench".into()),
        ..Default::default()
    };
    api.patch_approval(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": [cond]}})),
    )
    .await
    .unwrap_or_else(|e| panic!("approve {name}: {e}"));
}

/// The DER of every certificate in a PEM text, in order (empty when it holds none), read by OpenSSL.
#[allow(dead_code)]
pub fn cert_ders(pem: &str) -> Vec<Vec<u8>> {
    X509::stack_from_pem(pem.as_bytes())
        .map(|s| s.iter().map(|c| c.to_der().expect("der")).collect())
        .unwrap_or_default()
}

/// The DER of the one certificate in a PEM file.
#[allow(dead_code)]
pub fn cert_der(path: &Path) -> Vec<u8> {
    X509::from_pem(&std::fs::read(path).expect("read"))
        .expect("pem")
        .to_der()
        .expect("der")
}

/// notAfter of the certificate in a PEM file as the `openssl x509` command reads it.
pub fn openssl_not_after(cert: &Path) -> std::time::SystemTime {
    let text = openssl_x509(cert, &["-enddate", "-dateopt", "iso_8601"]);
    let text = text
        .trim()
        .trim_start_matches("notAfter=")
        .replacen(' ', "T", 1);
    humantime::parse_rfc3339(&text).expect("openssl date")
}

/// The SHA-256 fingerprint of the certificate in a PEM file as the `openssl x509` command computes it:
/// lower-case hex, no colons.
pub fn openssl_sha256_fingerprint(cert: &Path) -> String {
    openssl_x509(cert, &["-fingerprint", "-sha256"])
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .replace(':', "")
        .to_lowercase()
}

fn openssl_x509(cert: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout"])
        .args(args)
        .arg("-in")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl x509 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
