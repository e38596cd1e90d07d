//! `csr-signer request`: get a certificate for the identity this runs as (a pod's service account),
//! through a CertificateSigningRequest, and write key, chain and trust bundle; `--renew` keeps them fresh.
//! The decisions (names, renewal time, exit codes, atomic writes) are in `csr_signer::requester`; this
//! file is the kube IO and the loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use csr_signer::ca_init::{generate_key, KeyType};
use csr_signer::requester::{self, Identity, NameOptions, Outcome, RenewPolicy, Start};
use futures::StreamExt as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tracing::{info, warn};

const AFTER_HELP: &str = "\
Exit codes: 0 certificate written (with --renew: stopped by SIGTERM/SIGINT), 1 local error (files,
kubeconfig, settings), 2 bad command line, 3 Denied by the approver, 4 Failed (the signer refused the
request), 5 no certificate within --timeout, 6 API error (refused, unreachable, no trust bundle to read,
the CSR deleted while waiting).

Every event is one log line with an `event` field (--log-format json for scripts): identity, key,
created (csr), approved, issued (csr, serial, not_after, files), renewed, renewal_scheduled, hook,
signal, stopped, watch_error, bundle_mismatch, and denied, failed, timeout, api_error, local_error
(with exit_code).

kube-controller-manager's cleaner deletes CSRs (checked hourly): issued, denied and failed ones 1 h
after the condition, pending ones after 24 h. This tool never reads a CSR again after its certificate
is written, and makes a new CSR for every renewal.";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct RequestArgs {
    /// The signerName to ask, e.g. example.com/mtls.
    #[arg(long)]
    pub signer_name: String,
    /// Kubeconfig file; default: KUBECONFIG, then in-cluster (the pod's service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Directory for tls.key, tls.crt (leaf then intermediates) and ca.crt (the trust bundle).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Private key file (default DIR/tls.key); used if it exists, else created (mode 0600).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Certificate chain file (default DIR/tls.crt).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Trust bundle file written (default DIR/ca.crt).
    #[arg(long)]
    pub bundle_file: Option<PathBuf>,
    /// Type of a new key.
    #[arg(long, value_enum, default_value = "p256")]
    pub key_type: KeyType,
    /// A new key at every renewal (default: keep the key; see README "csr-signer request").
    #[arg(long)]
    pub rotate_key: bool,
    /// commonName (default: the username, which the default policy's `{username}` template allows).
    #[arg(long)]
    pub common_name: Option<String>,
    /// Extra DNS SAN (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Extra IP SAN (repeatable).
    #[arg(long = "ip")]
    pub ip: Vec<std::net::IpAddr>,
    /// Extra URI SAN (repeatable).
    #[arg(long = "uri")]
    pub uri: Vec<String>,
    /// Leave out a service account's own names (<sa>.<ns>.svc, …svc.CLUSTER_DOMAIN, its SPIFFE ID).
    #[arg(long)]
    pub no_identity_sans: bool,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// SPIFFE trust domain of spiffe://TD/ns/<ns>/sa/<sa> (empty: no SPIFFE ID).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// spec.usages, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "digital signature,client auth,server auth"
    )]
    pub usages: Vec<String>,
    /// Requested lifetime (spec.expirationSeconds; at least 10m); default: the signer's.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How long to wait for approval and the certificate.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Take the trust bundle from this PEM file instead of the signer's ClusterTrustBundles.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The `csr-signer/stage` label of the ClusterTrustBundles to merge.
    #[arg(long, default_value = "live")]
    pub bundle_stage: String,
    /// Keep running and renew before expiry.
    #[arg(long)]
    pub renew: bool,
    /// Renew after this fraction of the validity (NotBefore → NotAfter).
    #[arg(long, default_value = "0.667")]
    pub renew_at: f64,
    /// Renew when this much validity remains (instead of --renew-at).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub renew_before: Option<Duration>,
    /// ± this fraction of the validity, at random, on the renewal time.
    #[arg(long, default_value_t = 0.05)]
    pub jitter: f64,
    /// With --renew: after every certificate written send this signal (HUP, USR1, USR2, INT, TERM) …
    #[arg(long, value_parser = parse_signal, requires_all = ["signal_target", "renew"])]
    pub signal: Option<SignalName>,
    /// … to the process whose PID this file holds …
    #[arg(long, group = "signal_target")]
    pub signal_pid_file: Option<PathBuf>,
    /// … or to every process of this name (needs shareProcessNamespace in a pod).
    #[arg(long, group = "signal_target")]
    pub signal_process: Option<String>,
    /// With --renew: after every certificate written (the first too) run this command (no shell),
    /// e.g. `-- nginx -s reload`.
    #[arg(last = true, requires = "renew")]
    pub hook: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct SignalName(&'static str, rustix::process::Signal);

fn parse_signal(s: &str) -> Result<SignalName, String> {
    use rustix::process::Signal;
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let sig = match name.as_str() {
        "HUP" => ("HUP", Signal::HUP),
        "USR1" => ("USR1", Signal::USR1),
        "USR2" => ("USR2", Signal::USR2),
        "INT" => ("INT", Signal::INT),
        "TERM" => ("TERM", Signal::TERM),
        _ => return Err(format!("{s}: one of HUP, USR1, USR2, INT, TERM")),
    };
    Ok(SignalName(sig.0, sig.1))
}

struct Paths {
    key: PathBuf,
    cert: PathBuf,
    bundle: PathBuf,
}

/// A request that ended without a certificate: the outcome (exit code) and what to tell the user.
struct Stop {
    outcome: Outcome,
    message: String,
}

impl Stop {
    fn api(what: &str, e: impl std::fmt::Display) -> Stop {
        Stop {
            outcome: Outcome::Api,
            message: format!("{what}: {e}"),
        }
    }
}

/// What a granted request produced.
struct Issued {
    key: PKey<Private>,
    chain_pem: String,
    leaf: X509,
    csr: String,
}

pub fn request(args: &RequestArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.renew_at) || !(0.0..=0.5).contains(&args.jitter) {
        anyhow::bail!("--renew-at must be in [0, 1] and --jitter in [0, 0.5]");
    }
    if args.duration.is_some_and(|d| d < Duration::from_secs(600)) {
        anyhow::bail!(
            "--duration must be at least 10m (the apiserver's minimum expirationSeconds)"
        );
    }
    let paths = Paths {
        key: args
            .key_file
            .clone()
            .unwrap_or_else(|| args.dir.join("tls.key")),
        cert: args
            .cert_file
            .clone()
            .unwrap_or_else(|| args.dir.join("tls.crt")),
        bundle: args
            .bundle_file
            .clone()
            .unwrap_or_else(|| args.dir.join("ca.crt")),
    };
    for p in [&paths.key, &paths.cert, &paths.bundle] {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config =
            super::run::kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let client = kube::Client::try_from(config).context("building the API client")?;
        let identity = match whoami(&client).await {
            Ok(id) => id,
            Err(stop) => return Ok(finish(&stop)),
        };
        info!(event = "identity", username = %identity.username, "running as {}", identity.username);
        let mut key = load_key(&paths.key)?;
        if args.renew {
            renew_loop(args, &paths, &client, &identity, key).await
        } else {
            let key = match key.take() {
                Some(k) => k,
                None => new_key(args, &paths.key)?,
            };
            // The bundle is read once before the CSR too: missing RBAC shows before an approval is spent.
            let result = async {
                trust_bundle(args, &client).await?;
                let issued = obtain(args, &client, &identity, key).await?;
                let bundle = trust_bundle(args, &client).await?;
                write(&paths, &issued, &bundle, false)
            };
            match result.await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(stop) => Ok(finish(&stop)),
            }
        }
    })
}

/// Logs why a request ended without a certificate and returns its exit code.
fn finish(stop: &Stop) -> ExitCode {
    tracing::error!(
        event = stop.outcome.as_str(),
        exit_code = stop.outcome.exit_code(),
        "{}",
        stop.message
    );
    ExitCode::from(stop.outcome.exit_code())
}

async fn whoami(client: &kube::Client) -> Result<Identity, Stop> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| Stop::api("asking the apiserver who we are (SelfSubjectReview)", e))?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Stop::api("SelfSubjectReview", "the apiserver returned no username"))?;
    Ok(Identity::from_username(&username))
}

fn load_key(path: &Path) -> anyhow::Result<Option<PKey<Private>>> {
    match std::fs::read(path) {
        Ok(pem) => Ok(Some(PKey::private_key_from_pem(&pem).with_context(
            || format!("{}: not a PEM private key", path.display()),
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn key_pem(key: &PKey<Private>) -> anyhow::Result<Vec<u8>> {
    key.private_key_to_pem_pkcs8()
        .context("encoding the private key")
}

/// Generates a key and writes it before any CSR names it, so a restart reuses it.
fn new_key(args: &RequestArgs, path: &Path) -> anyhow::Result<PKey<Private>> {
    let key = generate_key(args.key_type).context("generating a key")?;
    requester::write_atomic(path, &key_pem(&key)?, 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    info!(event = "key", key_type = ?args.key_type, file = %path.display(), "new private key written");
    Ok(key)
}

fn name_options(args: &RequestArgs) -> NameOptions {
    NameOptions {
        common_name: args.common_name.clone(),
        no_identity_sans: args.no_identity_sans,
        cluster_domain: args.cluster_domain.clone(),
        trust_domain: args.trust_domain.clone(),
        dns: args.dns.clone(),
        ips: args.ip.clone(),
        uris: args.uri.clone(),
    }
}

/// Creates the CSR and waits for its certificate (or Denied, Failed, the timeout).
async fn obtain(
    args: &RequestArgs,
    client: &kube::Client,
    identity: &Identity,
    key: PKey<Private>,
) -> Result<Issued, Stop> {
    let names = requester::names(identity, &name_options(args));
    let request = requester::build_csr(&key, &names).map_err(|e| Stop {
        outcome: Outcome::Api,
        message: format!("building the CSR: {e}"),
    })?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(identity.generate_name()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request),
            signer_name: args.signer_name.clone(),
            usages: Some(args.usages.clone()),
            expiration_seconds: args
                .duration
                .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| Stop::api("creating the CertificateSigningRequest", e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    info!(event = "created", csr = %name, signer = %args.signer_name, common_name = %names.common_name,
        dns = ?names.dns, uris = ?names.uris, expiration_seconds = csr.spec.expiration_seconds.unwrap_or_default(),
        "CertificateSigningRequest {name} created; waiting for approval and the certificate");
    let chain = match tokio::time::timeout(args.timeout, wait(&api, &name)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Stop {
                outcome: Outcome::Timeout,
                message: format!(
                    "CertificateSigningRequest {name}: no certificate after {} (approved? is the signer for {} running?)",
                    humantime::format_duration(args.timeout),
                    args.signer_name
                ),
            })
        }
    };
    let leaf = X509::from_pem(chain.as_bytes())
        .map_err(|e| Stop::api(&format!("{name}: status.certificate"), e))?;
    if !requester::key_matches(&key, &leaf) {
        return Err(Stop::api(
            &format!("{name}: status.certificate"),
            "the certificate is not for our key",
        ));
    }
    Ok(Issued {
        key,
        chain_pem: chain,
        leaf,
        csr: name,
    })
}

/// Watches one CSR (field selector metadata.name) until it has a certificate, is Denied or Failed, or
/// is deleted. The watcher lists first, so nothing that happened before the watch began is missed.
async fn wait(api: &Api<CertificateSigningRequest>, name: &str) -> Result<String, Stop> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), cfg).boxed();
    let mut approved = false;
    while let Some(ev) = stream.next().await {
        let csr = match ev {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(watcher::Event::Delete(_)) => {
                return Err(Stop::api(
                    &format!("CertificateSigningRequest {name}"),
                    "deleted before it had a certificate",
                ))
            }
            Ok(_) => continue,
            Err(e) => {
                let forbidden = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 401 || s.code == 403);
                if forbidden {
                    return Err(Stop::api(&format!("watching {name}"), e));
                }
                warn!(event = "watch_error", csr = %name, error = %e, "watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.unwrap_or_default() {
            if c.status != "True" {
                continue;
            }
            let reason = c.reason.unwrap_or_default();
            let message = c.message.unwrap_or_default();
            match c.type_.as_str() {
                "Denied" => {
                    return Err(Stop {
                        outcome: Outcome::Denied,
                        message: format!(
                            "CertificateSigningRequest {name} Denied: {reason}: {message}"
                        ),
                    })
                }
                "Failed" => {
                    return Err(Stop {
                        outcome: Outcome::Failed,
                        message: format!(
                            "CertificateSigningRequest {name} Failed: {reason}: {message}"
                        ),
                    })
                }
                "Approved" if !approved => {
                    approved = true;
                    info!(event = "approved", csr = %name, reason = %reason, "CertificateSigningRequest {name} approved");
                }
                _ => {}
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(cert.0)
                .map_err(|_| Stop::api(&format!("{name}: status.certificate"), "not PEM text"));
        }
    }
    Err(Stop::api(&format!("watching {name}"), "the watch ended"))
}

/// The trust bundle: `--ca-file`, or every ClusterTrustBundle of the signer with our stage label,
/// merged (each certificate once), as the kubelet does for a projected volume.
async fn trust_bundle(args: &RequestArgs, client: &kube::Client) -> Result<String, Stop> {
    if let Some(f) = &args.ca_file {
        let local = |m: String| Stop {
            outcome: Outcome::Local,
            message: m,
        };
        let pem = std::fs::read_to_string(f)
            .map_err(|e| local(format!("reading {}: {e}", f.display())))?;
        if !X509::stack_from_pem(pem.as_bytes()).is_ok_and(|s| !s.is_empty()) {
            return Err(local(format!("{}: no PEM certificate", f.display())));
        }
        return Ok(pem);
    }
    let ar = csr_signer::trust::publish::discover(client)
        .await
        .map_err(|e| Stop::api("discovering the ClusterTrustBundle API", e))?
        .ok_or_else(|| {
            Stop::api(
                "ClusterTrustBundles",
                "the cluster serves no ClusterTrustBundle API; pass --ca-file",
            )
        })?;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let lp = ListParams::default()
        .fields(&format!("spec.signerName={}", args.signer_name))
        .labels(&format!(
            "{}={}",
            csr_signer::trust::STAGE_LABEL,
            args.bundle_stage
        ));
    let list = api.list(&lp).await.map_err(|e| {
        Stop::api(
            "listing ClusterTrustBundles (needs get/list on clustertrustbundles; service accounts have it by default)",
            e,
        )
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for b in &list.items {
        let text = b.data["spec"]["trustBundle"].as_str().unwrap_or_default();
        for der in csr_signer::trust::der_blocks(text) {
            if seen.insert(der.clone()) {
                out.push_str(&csr_signer::ca::pem(&der));
            }
        }
    }
    if out.is_empty() {
        return Err(Stop::api(
            "ClusterTrustBundles",
            format!(
                "none for {} with label {}={}; pass --ca-file",
                args.signer_name,
                csr_signer::trust::STAGE_LABEL,
                args.bundle_stage
            ),
        ));
    }
    Ok(out)
}

/// Writes bundle, key (when new) and chain, each atomically; the chain last, so that whoever watches
/// tls.crt finds its key and its trust anchors already in place.
fn write(paths: &Paths, issued: &Issued, bundle: &str, key_changed: bool) -> Result<(), Stop> {
    let local = |what: &Path, e: &dyn std::fmt::Display| Stop {
        outcome: Outcome::Local,
        message: format!("writing {}: {e}", what.display()),
    };
    if !verifies(&issued.chain_pem, bundle) {
        warn!(event = "bundle_mismatch", csr = %issued.csr,
            "the certificate does not verify against the trust bundle (is the bundle current?)");
    }
    requester::write_atomic(&paths.bundle, bundle.as_bytes(), 0o644)
        .map_err(|e| local(&paths.bundle, &e))?;
    if key_changed {
        let pem = key_pem(&issued.key).map_err(|e| local(&paths.key, &e))?;
        requester::write_atomic(&paths.key, &pem, 0o600).map_err(|e| local(&paths.key, &e))?;
    }
    requester::write_atomic(&paths.cert, issued.chain_pem.as_bytes(), 0o644)
        .map_err(|e| local(&paths.cert, &e))?;
    let serial = issued
        .leaf
        .serial_number()
        .to_bn()
        .ok()
        .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()))
        .unwrap_or_default();
    let not_after = requester::validity(&issued.leaf)
        .map(|(_, na)| humantime::format_rfc3339_seconds(na).to_string())
        .unwrap_or_default();
    info!(event = "issued", csr = %issued.csr, serial = %serial, not_after = %not_after,
        cert = %paths.cert.display(), key = %paths.key.display(), bundle = %paths.bundle.display(),
        "certificate written");
    Ok(())
}

/// Whether the chain's leaf verifies against `bundle` (intermediates from the chain).
fn verifies(chain_pem: &str, bundle: &str) -> bool {
    let check = || -> Result<bool, openssl::error::ErrorStack> {
        let chain = X509::stack_from_pem(chain_pem.as_bytes())?;
        let mut store = openssl::x509::store::X509StoreBuilder::new()?;
        for c in X509::stack_from_pem(bundle.as_bytes())? {
            store.add_cert(c)?;
        }
        let store = store.build();
        let mut untrusted = openssl::stack::Stack::new()?;
        for c in chain.iter().skip(1) {
            untrusted.push(c.clone())?;
        }
        let Some(leaf) = chain.first() else {
            return Ok(false);
        };
        let mut ctx = openssl::x509::X509StoreContext::new()?;
        ctx.init(&store, leaf, &untrusted, |c| c.verify_cert())
    };
    check().unwrap_or(false)
}

/// The renewal time of the certificate on disk, if it is usable with `key`.
fn on_disk(
    paths: &Paths,
    key: &PKey<Private>,
    policy: &RenewPolicy,
) -> Option<(SystemTime, SystemTime, SystemTime)> {
    let pem = std::fs::read(&paths.cert).ok()?;
    let leaf = X509::from_pem(&pem).ok()?;
    if !requester::key_matches(key, &leaf) || !paths.bundle.exists() {
        return None;
    }
    let (nb, na) = requester::validity(&leaf).ok()?;
    Some((
        nb,
        na,
        requester::renew_time(nb, na, policy, jitter_sample()),
    ))
}

fn jitter_sample() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

async fn renew_loop(
    args: &RequestArgs,
    paths: &Paths,
    client: &kube::Client,
    identity: &Identity,
    key: Option<PKey<Private>>,
) -> anyhow::Result<ExitCode> {
    let policy = RenewPolicy {
        at: args.renew_at,
        before: args.renew_before,
        jitter: args.jitter,
    };
    let mut key = match key {
        Some(k) => k,
        None => new_key(args, &paths.key)?,
    };
    // Missing RBAC for the bundle shows at start, before an approval is spent.
    if let Err(stop) = trust_bundle(args, client).await {
        return Ok(finish(&stop));
    }
    let shutdown = csr_signer::service::shutdown_signal();
    tokio::pin!(shutdown);
    let now = SystemTime::now();
    let mut next = match requester::start(now, on_disk(paths, &key, &policy)) {
        Start::WaitUntil(t) => {
            info!(event = "renewal_scheduled", at = %humantime::format_rfc3339_seconds(t),
                "the certificate on disk is good; renewing at {}", humantime::format_rfc3339_seconds(t));
            t
        }
        Start::Request => now,
    };
    let mut failures = 0u32;
    let mut renewals = 0u64;
    loop {
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = &mut shutdown => {
                info!(event = "stopped", renewals, "stopping; the files stay as they are");
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let (use_key, key_changed) = if args.rotate_key && paths.cert.exists() {
            (
                generate_key(args.key_type).context("generating a key")?,
                true,
            )
        } else {
            (key.clone(), false)
        };
        let result = tokio::select! {
            _ = &mut shutdown => {
                info!(event = "stopped", renewals, "stopping while a request is pending; the files stay as they are");
                return Ok(ExitCode::SUCCESS);
            }
            r = obtain(args, client, identity, use_key) => r,
        };
        let written = match result {
            Ok(issued) => match trust_bundle(args, client).await {
                Ok(bundle) => write(paths, &issued, &bundle, key_changed).map(|()| issued),
                Err(stop) => Err(stop),
            },
            Err(stop) => Err(stop),
        };
        match written {
            Ok(issued) => {
                failures = 0;
                renewals += 1;
                key = issued.key.clone();
                let (nb, na) =
                    requester::validity(&issued.leaf).context("reading the certificate")?;
                // A floor, so a renewal time already past (a --renew-before longer than the lifetime)
                // cannot turn into a loop hammering the apiserver.
                next = requester::renew_time(nb, na, &policy, jitter_sample())
                    .max(SystemTime::now() + Duration::from_secs(5));
                info!(event = "renewed", csr = %issued.csr, renewals,
                    next = %humantime::format_rfc3339_seconds(next), "certificate renewed");
                after_renewal(args).await;
            }
            Err(stop) => {
                failures += 1;
                let retry = requester::backoff(failures);
                tracing::error!(event = stop.outcome.as_str(), exit_code = stop.outcome.exit_code(),
                    retry_in = %humantime::format_duration(retry), "{}; keeping the old files", stop.message);
                next = SystemTime::now() + retry;
            }
        }
    }
}

/// Runs the hook and sends the signal, logging each result; neither failing stops the renewals.
async fn after_renewal(args: &RequestArgs) {
    if let Some((program, rest)) = args.hook.split_first() {
        match tokio::process::Command::new(program)
            .args(rest)
            .status()
            .await
        {
            Ok(s) => {
                info!(event = "hook", command = %program, status = %s, success = s.success(), "hook finished")
            }
            Err(e) => {
                warn!(event = "hook", command = %program, error = %e, success = false, "hook did not start")
            }
        }
    }
    if let Some(sig) = args.signal {
        for pid in signal_targets(args) {
            let r = rustix::process::Pid::from_raw(pid)
                .ok_or(rustix::io::Errno::SRCH)
                .and_then(|p| rustix::process::kill_process(p, sig.1));
            match r {
                Ok(()) => info!(
                    event = "signal",
                    signal = sig.0,
                    pid,
                    success = true,
                    "signal sent"
                ),
                Err(e) => {
                    warn!(event = "signal", signal = sig.0, pid, error = %e, success = false, "signal not sent")
                }
            }
        }
    }
}

fn signal_targets(args: &RequestArgs) -> Vec<i32> {
    if let Some(f) = &args.signal_pid_file {
        return match std::fs::read_to_string(f).map(|s| s.trim().parse::<i32>()) {
            Ok(Ok(pid)) if pid > 0 => vec![pid],
            _ => {
                warn!(event = "signal", file = %f.display(), success = false, "no PID in the file");
                Vec::new()
            }
        };
    }
    let Some(name) = &args.signal_process else {
        return Vec::new();
    };
    let out = requester::pids_named(Path::new("/proc"), name, std::process::id());
    if out.is_empty() {
        warn!(event = "signal", process = %name, success = false, "no process of that name");
    }
    out
}
