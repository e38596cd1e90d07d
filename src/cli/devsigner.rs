//! The signer half of `csr-signer dev`: a development CA created on first run under a state
//! directory (reused afterwards), this controller signing for `example.com/mtls` against the local
//! API, and `--demo`, which walks the tutorial by itself (key, CSR, create, approve, wait, inspect,
//! verify) and exits.
//!
//! The local API itself is crates/localapi (`csr_signer::dev`); this module only adds the signer to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};

use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::Settings;
use csr_signer::dev::{LocalApi, SIGNER_USER};
use csr_signer::error::crypto;
use csr_signer::service::{self, RunOptions, Service};

/// The signerName `csr-signer dev` signs for.
pub const DEV_SIGNER: &str = "example.com/mtls";

/// Where the dev CA lives and how the dev signer listens.
#[derive(Debug, Clone)]
pub struct DevSignerOptions {
    /// State directory; the CA goes to `<state_dir>/ca/`.
    pub state_dir: PathBuf,
    /// Address for the signer's /metrics, /healthz, /readyz.
    pub listen: std::net::SocketAddr,
}

/// The dev CA's files.
#[derive(Debug, Clone)]
pub struct DevCa {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when this call created it.
    pub created: bool,
}

/// Creates a P-256 development CA under `<state_dir>/ca` on first use and reuses it afterwards.
pub fn dev_ca(state_dir: &Path) -> csr_signer::Result<DevCa> {
    let dir = state_dir.join("ca");
    let cert = dir.join("ca.crt");
    let key = dir.join("ca.key");
    if cert.exists() && key.exists() {
        return Ok(DevCa {
            cert,
            key,
            created: false,
        });
    }
    let made = ca_init::init(&ca_init::InitOptions {
        out: dir,
        key_type: KeyType::P256,
        days: 365,
        common_name: "csr-signer dev CA".into(),
        intermediate: false,
    })?;
    Ok(DevCa {
        cert: made.cert,
        key: made.key,
        created: true,
    })
}

/// Settings for the dev signer: the default mTLS policy (identity-bound subjects and SANs,
/// client/server auth usages, 10 min – 30 d lifetimes), pod certificates with the default pod policy
/// (a SPIFFE ID per service account), no leader election (one process), and the CA published as a
/// ClusterTrustBundle.
pub fn dev_settings(ca: &DevCa, listen: std::net::SocketAddr) -> csr_signer::Result<Settings> {
    let yaml = format!(
        "signers:\n- name: {DEV_SIGNER}\n  ca: {{certFile: {}, keyFile: {}}}\n  podCertificates: {{enabled: true}}\n\
         controller: {{qps: 50, burst: 100, workers: 2, events: true, leaderElection: {{enabled: false}}}}\n\
         server: {{listen: \"{listen}\"}}\n\
         trustBundles: {{enabled: true}}\n",
        ca.cert.display(),
        ca.key.display()
    );
    Settings::from_yaml(&yaml, "csr-signer dev")
}

/// Starts the dev signer against `api` as the signer's identity; it stops when `shutdown` resolves.
pub async fn start(
    api: &LocalApi,
    opts: &DevSignerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> csr_signer::Result<(Service, DevCa)> {
    let ca = dev_ca(&opts.state_dir)?;
    let settings = dev_settings(&ca, opts.listen)?;
    let client = api.client(SIGNER_USER)?;
    let svc = service::start(
        settings,
        client,
        shutdown,
        RunOptions {
            identity: Some("csr-signer-dev".into()),
            ca_poll_interval: None,
        },
    )
    .await?;
    Ok((svc, ca))
}

fn kube_err(context: &str) -> impl Fn(kube::Error) -> csr_signer::Error + '_ {
    move |e| csr_signer::Error::Kube {
        context: context.to_string(),
        error: Box::new(e),
    }
}

/// The tutorial, performed by itself: a developer creates a CSR, an approver approves it, the
/// signer issues, and the certificate is inspected and verified against the dev CA. Writes the
/// story to `out`; the private key stays in memory.
pub async fn run_demo(
    api: &LocalApi,
    ca: &DevCa,
    out: &mut (dyn Write + Send),
) -> csr_signer::Result<()> {
    let io = |e: std::io::Error| csr_signer::Error::Service(format!("writing demo output: {e}"));
    let key = ca_init::generate_key(KeyType::P256)?;
    let mut req = openssl::x509::X509ReqBuilder::new().map_err(crypto("CSR"))?;
    let mut name = openssl::x509::X509NameBuilder::new().map_err(crypto("CSR subject"))?;
    name.append_entry_by_text("CN", "developer")
        .map_err(crypto("CSR subject"))?;
    name.append_entry_by_text("O", "development")
        .map_err(crypto("CSR subject"))?;
    req.set_subject_name(&name.build())
        .map_err(crypto("CSR subject"))?;
    req.set_pubkey(&key).map_err(crypto("CSR key"))?;
    req.sign(&key, openssl::hash::MessageDigest::sha256())
        .map_err(crypto("signing the CSR"))?;
    let pem = req.build().to_pem().map_err(crypto("CSR PEM"))?;
    writeln!(
        out,
        "1. generated a P-256 key and a CSR for /CN=developer/O=development"
    )
    .map_err(io)?;

    let csr_name = format!(
        "developer-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let developer: Api<CertificateSigningRequest> = Api::all(api.client("developer")?);
    let approver: Api<CertificateSigningRequest> = Api::all(api.client("approver")?);
    developer
        .create(
            &PostParams::default(),
            &CertificateSigningRequest {
                metadata: ObjectMeta {
                    name: Some(csr_name.clone()),
                    ..Default::default()
                },
                spec: CertificateSigningRequestSpec {
                    request: ByteString(pem),
                    signer_name: DEV_SIGNER.into(),
                    expiration_seconds: Some(86400),
                    usages: Some(vec!["client auth".into()]),
                    ..Default::default()
                },
                status: None,
            },
        )
        .await
        .map_err(kube_err("creating the CSR as developer"))?;
    writeln!(out, "2. developer created CertificateSigningRequest {csr_name} (signerName {DEV_SIGNER}, expirationSeconds 86400, usages [client auth])").map_err(io)?;

    let approved = CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("DemoApproved".into()),
        message: Some("approved by csr-signer dev --demo".into()),
        ..Default::default()
    };
    approver
        .patch_approval(
            &csr_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"conditions": [approved]}})),
        )
        .await
        .map_err(kube_err("approving the CSR as approver"))?;
    writeln!(
        out,
        "3. approver approved it (kubectl certificate approve {csr_name})"
    )
    .map_err(io)?;

    let mut chain = None;
    for _ in 0..600 {
        let csr = developer
            .get(&csr_name)
            .await
            .map_err(kube_err("reading the CSR"))?;
        let status = csr.status.unwrap_or_default();
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            chain = Some(c.0);
            break;
        }
        if let Some(f) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Failed")
        {
            return Err(csr_signer::Error::Service(format!(
                "the signer refused the demo CSR: {}: {}",
                f.reason.unwrap_or_default(),
                f.message.unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain = chain.ok_or_else(|| {
        csr_signer::Error::Service("no certificate after 30 s; is the signer running?".into())
    })?;
    let certs =
        openssl::x509::X509::stack_from_pem(&chain).map_err(crypto("reading the certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| csr_signer::Error::Service("empty status.certificate".into()))?;
    writeln!(out, "4. the signer issued a certificate:").map_err(io)?;
    writeln!(
        out,
        "   subject:   {}",
        csr_signer::ca::subject_text(leaf.subject_name())
    )
    .map_err(io)?;
    let sans: Vec<String> = leaf
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    n.dnsname()
                        .map(|d| format!("DNS:{d}"))
                        .or_else(|| n.uri().map(|u| format!("URI:{u}")))
                        .or_else(|| n.email().map(|m| format!("email:{m}")))
                        .unwrap_or_else(|| "IP/other".into())
                })
                .collect()
        })
        .unwrap_or_default();
    writeln!(
        out,
        "   SANs:      {}",
        if sans.is_empty() {
            "none".into()
        } else {
            sans.join(", ")
        }
    )
    .map_err(io)?;
    writeln!(out, "   notBefore: {}", leaf.not_before()).map_err(io)?;
    writeln!(out, "   notAfter:  {}", leaf.not_after()).map_err(io)?;
    writeln!(
        out,
        "   serial:    {}",
        leaf.serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str())
            .map(|s| s.to_string())
            .unwrap_or_default()
    )
    .map_err(io)?;

    // Verify with the openssl CLI, as the tutorial does.
    verify_step(out, 5, ca, leaf, "developer.crt")?;
    Ok(())
}

/// The pod-certificate flow, performed by itself: an admin creates a Node and a Pod bound to it that
/// mounts a `podCertificate` volume; the node's kubelet identity asks for the pod's certificate with a
/// PodCertificateRequest (no approval step); the signer issues it; the certificate is inspected and
/// verified against the dev CA.
pub async fn run_pod_demo(
    api: &LocalApi,
    ca: &DevCa,
    out: &mut (dyn Write + Send),
) -> csr_signer::Result<()> {
    use k8s_openapi::api::certificates::v1::PodCertificateRequest;
    use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
    let io = |e: std::io::Error| csr_signer::Error::Service(format!("writing demo output: {e}"));
    const NODE: &str = "node-1";
    const NS: &str = "team-a";
    writeln!(out).map_err(io)?;
    writeln!(
        out,
        "6. pod certificates: admin creates Node {NODE} and Pod {NS}/web (service account web) with a podCertificate volume"
    )
    .map_err(io)?;
    let admin = api.client("admin")?;
    let pp = PostParams::default();
    let node: Node = Api::<Node>::all(admin.clone())
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": NODE}}))?,
        )
        .await
        .map_err(kube_err("creating the demo Node"))?;
    let sa: ServiceAccount = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": "web"}}))?,
        )
        .await
        .map_err(kube_err("creating the demo ServiceAccount"))?;
    let pod: Pod = Api::<Pod>::namespaced(admin.clone(), NS)
        .create(
            &pp,
            &from_json(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {
                    "nodeName": NODE, "serviceAccountName": "web",
                    "containers": [{"name": "web", "image": "registry.example/web:1"}],
                    "volumes": [{"name": "mtls", "projected": {"sources": [{"podCertificate": {
                        "signerName": DEV_SIGNER, "keyType": "ECDSAP256",
                        "credentialBundlePath": "credentialbundle.pem"}}]}}],
                },
            }))?,
        )
        .await
        .map_err(kube_err("creating the demo Pod"))?;
    let uid = |m: &ObjectMeta| m.uid.clone().unwrap_or_default();

    // What the kubelet does: a fresh key, a stub request carrying it, a PCR as the node.
    let key = ca_init::generate_key(KeyType::P256)?;
    let mut stub = openssl::x509::X509ReqBuilder::new().map_err(crypto("stub request"))?;
    stub.set_pubkey(&key).map_err(crypto("stub request"))?;
    stub.sign(&key, openssl::hash::MessageDigest::sha256())
        .map_err(crypto("stub request"))?;
    let stub = stub.build().to_der().map_err(crypto("stub request"))?;
    api.add_user(csr_signer::dev::User::node(NODE));
    let kubelet = api.client(&format!("system:node:{NODE}"))?;
    let pcrs: Api<PodCertificateRequest> = Api::namespaced(kubelet, NS);
    let created = pcrs
        .create(
            &pp,
            &from_json(serde_json::json!({
                "metadata": {"generateName": "req-web-"},
                "spec": {
                    "signerName": DEV_SIGNER,
                    "podName": "web", "podUID": uid(&pod.metadata),
                    "serviceAccountName": "web", "serviceAccountUID": uid(&sa.metadata),
                    "nodeName": NODE, "nodeUID": uid(&node.metadata),
                    "maxExpirationSeconds": 86400,
                    "stubPKCS10Request": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &stub),
                },
            }))?,
        )
        .await
        .map_err(kube_err("creating the demo PodCertificateRequest"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    writeln!(
        out,
        "7. the kubelet (system:node:{NODE}) created PodCertificateRequest {NS}/{name}: no approval step"
    )
    .map_err(io)?;
    let mut issued = None;
    for _ in 0..600 {
        let pcr = pcrs
            .get(&name)
            .await
            .map_err(kube_err("reading the demo PodCertificateRequest"))?;
        let status = pcr.status.unwrap_or_default();
        let conditions = status.conditions.clone().unwrap_or_default();
        if let Some(c) = conditions.iter().find(|c| c.type_ != "Issued") {
            return Err(csr_signer::Error::Service(format!(
                "the signer refused the demo PodCertificateRequest: {} {}: {}",
                c.type_, c.reason, c.message
            )));
        }
        if conditions.iter().any(|c| c.type_ == "Issued") {
            issued = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = issued.ok_or_else(|| {
        csr_signer::Error::Service("no pod certificate after 30 s; is the signer running?".into())
    })?;
    let chain = status.certificate_chain.unwrap_or_default();
    let certs = openssl::x509::X509::stack_from_pem(chain.as_bytes())
        .map_err(crypto("reading the pod certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| csr_signer::Error::Service("empty status.certificateChain".into()))?;
    let sans: Vec<String> = leaf
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.uri()
                        .map(|u| format!("URI:{u}"))
                        .or_else(|| n.dnsname().map(|d| format!("DNS:{d}")))
                })
                .collect()
        })
        .unwrap_or_default();
    let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_default()
    };
    writeln!(
        out,
        "8. the signer issued the pod certificate (status Issued):"
    )
    .map_err(io)?;
    writeln!(out, "   SANs:           {}", sans.join(", ")).map_err(io)?;
    writeln!(out, "   notBefore:      {}", time(status.not_before)).map_err(io)?;
    writeln!(out, "   notAfter:       {}", time(status.not_after)).map_err(io)?;
    writeln!(
        out,
        "   beginRefreshAt: {} (the kubelet renews from then on)",
        time(status.begin_refresh_at)
    )
    .map_err(io)?;
    verify_step(out, 9, ca, leaf, "web.crt")?;
    Ok(())
}

/// A demo object from its JSON.
fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> csr_signer::Result<T> {
    serde_json::from_value(v).map_err(|e| csr_signer::Error::Service(format!("demo object: {e}")))
}

/// Step `n` of a demo: `openssl verify -CAfile <dev CA> <file>` on `leaf`, as the tutorial does.
fn verify_step(
    out: &mut (dyn Write + Send),
    n: u32,
    ca: &DevCa,
    leaf: &openssl::x509::X509Ref,
    file: &str,
) -> csr_signer::Result<()> {
    let io = |e: std::io::Error| csr_signer::Error::Service(format!("writing demo output: {e}"));
    let dir = tempfile_dir()?;
    let leaf_path = dir.join(file);
    std::fs::write(&leaf_path, leaf.to_pem().map_err(crypto("leaf PEM"))?).map_err(|error| {
        csr_signer::Error::Io {
            path: leaf_path.clone(),
            error,
        }
    })?;
    let verify = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca.cert)
        .arg(&leaf_path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match verify {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            writeln!(
                out,
                "{n}. openssl verify -CAfile {} {file}: {text}",
                ca.cert.display()
            )
            .map_err(io)?;
            if !o.status.success() {
                return Err(csr_signer::Error::Service(format!(
                    "openssl verify failed: {text} {}",
                    String::from_utf8_lossy(&o.stderr)
                )));
            }
        }
        Err(e) => {
            writeln!(
                out,
                "{n}. openssl CLI not available ({e}); skipped the CLI verification"
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

fn tempfile_dir() -> csr_signer::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("csr-signer-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(|error| csr_signer::Error::Io {
        path: dir.clone(),
        error,
    })?;
    Ok(dir)
}

/// Everything `csr-signer dev` needs.
#[derive(Debug, Clone)]
pub struct DevCommand {
    /// The local API's options (port, TLS, kubeconfig path, object state file).
    pub api: csr_signer::dev::DevOptions,
    /// The dev CA directory and the signer's metrics address.
    pub signer: DevSignerOptions,
    /// Run the tutorial by itself and exit.
    pub demo: bool,
}

/// `csr-signer dev`: the local API, a dev CA and this signer for `example.com/mtls`; with
/// `demo`, runs the tutorial and exits, else serves until Ctrl-C / SIGTERM.
pub async fn run(cmd: DevCommand) -> csr_signer::Result<()> {
    let api = csr_signer::dev::start(csr_signer::dev::LocalApiConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], cmd.api.port)),
        tls: !cmd.api.plain_http,
        state_file: cmd.api.state.clone(),
        event_ttl: cmd.api.event_ttl,
        ..Default::default()
    })
    .await?;
    api.write_kubeconfig(&cmd.api.kubeconfig_out, &["admin", "developer", "approver"])?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (svc, ca) = start(&api, &cmd.signer, async move {
        let _ = stop_rx.await;
    })
    .await?;
    let mut out = std::io::stdout();
    let io = |e: std::io::Error| csr_signer::Error::Service(format!("writing to stdout: {e}"));
    writeln!(
        out,
        "csr-signer dev: Kubernetes certificates API listening on {}",
        api.base_url()
    )
    .map_err(io)?;
    writeln!(
        out,
        "signer {DEV_SIGNER}: CA {} ({}), metrics on http://{}/metrics",
        ca.cert.display(),
        if ca.created { "created" } else { "reused" },
        svc.listen
    )
    .map_err(io)?;
    let kc = cmd.api.kubeconfig_out.display();
    writeln!(
        out,
        "kubeconfig: {kc} (contexts admin, developer, approver)"
    )
    .map_err(io)?;
    let result = if cmd.demo {
        writeln!(out).map_err(io)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut r = run_demo(&api, &ca, &mut buf).await;
        if r.is_ok() {
            r = run_pod_demo(&api, &ca, &mut buf).await;
        }
        out.write_all(&buf).map_err(io)?;
        r
    } else {
        writeln!(out).map_err(io)?;
        writeln!(out, "Try:").map_err(io)?;
        writeln!(out, "  export KUBECONFIG={kc}").map_err(io)?;
        writeln!(
            out,
            "  kubectl --context developer apply -f csr.yaml      # spec.signerName: {DEV_SIGNER}"
        )
        .map_err(io)?;
        writeln!(
            out,
            "  kubectl --context approver certificate approve <name>"
        )
        .map_err(io)?;
        writeln!(
            out,
            "  kubectl get csr <name> -o jsonpath='{{.status.certificate}}' | base64 -d"
        )
        .map_err(io)?;
        let bundle = csr_signer::trust::bundle_name(DEV_SIGNER, "live");
        writeln!(
            out,
            "  kubectl get clustertrustbundle {bundle} -o jsonpath='{{.spec.trustBundle}}'   # the CA to trust"
        )
        .map_err(io)?;
        writeln!(out, "Press Ctrl-C to stop.").map_err(io)?;
        csr_signer::service::shutdown_signal().await;
        Ok(())
    };
    let _ = stop_tx.send(());
    let stopped = svc.wait().await;
    api.shutdown().await;
    result.and(stopped)
}
