//! `csr-signer ca init` (a development CA), `ca status` and `ca plan-rotation`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use csr_signer::ca_init::{self, InitOptions, KeyType};
use csr_signer::config::{OtherCaState, Overrides, Settings};
use csr_signer::engine::Engine;
use csr_signer::trust::{
    self,
    rotation::{self, fmt, CaFacts},
};
use openssl::pkey::Id;
use openssl::x509::X509;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a development CA (self-signed root, optionally with a signing intermediate).
    Init(CaInitArgs),
    /// Each signer's CAs: name, state, key, validity, SKI, whether the trust bundle holds them and (read
    /// from the cluster) since when a published CA is in it or a retiring one retires.
    Status(CaStatusArgs),
    /// The steps of the next CA rotation with their dates, for the current configuration.
    PlanRotation(CaStatusArgs),
}

#[derive(Args, Debug)]
pub struct CaInitArgs {
    /// Directory to write into (created if missing; existing CA files are never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "p256")]
    pub key_type: KeyType,
    /// Validity of the CA in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    #[arg(long, default_value = "csr-signer development CA")]
    pub common_name: String,
    /// Create a root and an intermediate; the intermediate signs.
    #[arg(long)]
    pub intermediate: bool,
}

pub fn ca_init(args: &CaInitArgs) -> anyhow::Result<ExitCode> {
    let created = ca_init::init(&InitOptions {
        out: args.out.clone(),
        key_type: args.key_type,
        days: args.days,
        common_name: args.common_name.clone(),
        intermediate: args.intermediate,
    })?;
    for f in &created.files {
        println!("created {}", f.display());
    }
    println!();
    println!(
        "Signing CA:   {} (key {})",
        created.cert.display(),
        created.key.display()
    );
    println!(
        "Trust anchor: {} (distribute this to clients)",
        created.trust_anchor.display()
    );
    println!();
    println!("Config snippet:");
    if created.trust_anchor == created.cert {
        println!(
            "  ca: {{certFile: {}, keyFile: {}}}",
            created.cert.display(),
            created.key.display()
        );
    } else {
        // The root as chainFile: it is what the trust bundle publishes (and is never sent in chains).
        println!(
            "  ca: {{certFile: {}, keyFile: {}, chainFile: {}}}",
            created.cert.display(),
            created.key.display(),
            created.trust_anchor.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct CaStatusArgs {
    #[command(flatten)]
    pub config: super::sign::ConfigArg,
    /// Read the published ClusterTrustBundles from this cluster (default: compute them from the
    /// configuration only).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (implies reading the cluster).
    #[arg(long)]
    pub context: Option<String>,
    /// How long clients need to receive a new bundle (kubelet refresh, application reload).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub propagation: std::time::Duration,
}

/// One CA of a signer as `ca status` prints it.
struct Row {
    name: String,
    state: &'static str,
    subject: String,
    key: String,
    not_before: SystemTime,
    not_after: SystemTime,
    ski: String,
    roots: Vec<Vec<u8>>,
    in_bundle: String,
    /// Since when a published CA has been in the bundle, or a retiring one retiring (read from the
    /// cluster's bundle).
    since: Option<SystemTime>,
    facts: CaFacts,
}

fn describe_cert(der: &[u8]) -> anyhow::Result<(String, String, SystemTime, SystemTime, String)> {
    let cert = X509::from_der(der)?;
    let subject = csr_signer::ca::subject_text(cert.subject_name());
    let pkey = cert.public_key()?;
    let key = match pkey.id() {
        Id::RSA => format!("RSA-{}", pkey.bits()),
        Id::EC => {
            let curve = pkey
                .ec_key()?
                .group()
                .curve_name()
                .and_then(|n| n.short_name().ok())
                .unwrap_or("?");
            let curve = match curve {
                "prime256v1" => "P-256",
                "secp384r1" => "P-384",
                "secp521r1" => "P-521",
                other => other,
            };
            format!("ECDSA {curve}")
        }
        Id::ED25519 => "Ed25519".into(),
        _ => "other".into(),
    };
    let ski = cert
        .subject_key_id()
        .map(|k| {
            k.as_slice()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_else(|| "-".into());
    let time = |t: &openssl::asn1::Asn1TimeRef| -> anyhow::Result<SystemTime> {
        let epoch = openssl::asn1::Asn1Time::from_unix(0)?;
        let d = epoch.diff(t)?;
        Ok(SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(
                (i64::from(d.days) * 86_400 + i64::from(d.secs)).max(0) as u64,
            ))
    };
    Ok((
        subject,
        key,
        time(cert.not_before())?,
        time(cert.not_after())?,
        ski,
    ))
}

/// The bundle of each signer as published in the cluster: PEM and retiring-since times.
async fn published_bundles(
    args: &CaStatusArgs,
    settings: &Settings,
) -> anyhow::Result<Option<Vec<Option<ClusterBundle>>>> {
    if args.kubeconfig.is_none() && args.context.is_none() {
        return Ok(None);
    }
    let config =
        super::run::kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let Some(ar) = csr_signer::trust::publish::discover(&client).await? else {
        anyhow::bail!(
            "the cluster serves no ClusterTrustBundle API (certificates.k8s.io v1 or v1beta1)"
        );
    };
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client, &ar);
    let mut out = Vec::new();
    for s in &settings.signers {
        let name = trust::bundle_name(s.name.as_str(), &settings.trust_bundles.stage);
        out.push(api.get_opt(&name).await?.map(|o| {
            ClusterBundle {
                pem: o.data["spec"]["trustBundle"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                retiring_since: trust::recorded_retiring_since(o.metadata.annotations.as_ref()),
                published_since: trust::recorded_published_since(o.metadata.annotations.as_ref()),
                ours: trust::is_ours(o.metadata.labels.as_ref()),
            }
        }));
    }
    Ok(Some(out))
}

struct ClusterBundle {
    pem: String,
    retiring_since: std::collections::BTreeMap<String, SystemTime>,
    published_since: std::collections::BTreeMap<String, SystemTime>,
    ours: bool,
}

fn rows(
    signer: &csr_signer::engine::SignerEngine,
    settings: &Settings,
    cluster: Option<&Option<ClusterBundle>>,
    now: SystemTime,
) -> anyhow::Result<(Vec<Row>, String)> {
    let active = signer.ca();
    let max = signer.policy().max_lifetime();
    let (since, published_since) = match cluster {
        Some(Some(b)) => (b.retiring_since.clone(), b.published_since.clone()),
        _ => Default::default(),
    };
    let others = signer.other_cas();
    let inputs = trust::Inputs {
        signer: signer.name(),
        active: &active,
        others: &others,
        retiring_since: &since,
        published_since: &published_since,
        max_lifetime: max,
        now,
    };
    let mut out = Vec::new();
    let (subject, key, nb, na, ski) = describe_cert(&active.cert_der)?;
    let active_roots = trust::der_blocks(&active.cert_pem);
    out.push(Row {
        name: signer.ca_name().into(),
        state: "active",
        subject,
        key,
        not_before: nb,
        not_after: na,
        ski,
        roots: active_roots,
        in_bundle: String::new(),
        since: None,
        facts: CaFacts {
            name: signer.ca_name().into(),
            state: None,
            not_after: na,
            leaves_bundle: None,
        },
    });
    for o in others.iter() {
        let (subject, key, nb, na, ski) = describe_cert(&o.cert_der)?;
        let leaves = (o.state == OtherCaState::Retiring).then(|| {
            let s = since
                .get(&trust::fingerprint(&o.cert_der))
                .copied()
                .unwrap_or(now);
            trust::retiring_until(o, s, max)
        });
        let computed = trust::in_bundle(o, &inputs);
        out.push(Row {
            name: o.name.clone(),
            state: o.state.as_str(),
            subject,
            key,
            not_before: nb,
            not_after: na,
            ski,
            roots: if o.roots.is_empty() {
                o.intermediates.clone()
            } else {
                o.roots.clone()
            },
            in_bundle: if computed { "yes".into() } else { "no".into() },
            since: match o.state {
                OtherCaState::Published => &published_since,
                OtherCaState::Retiring => &since,
            }
            .get(&trust::fingerprint(&o.cert_der))
            .copied(),
            facts: CaFacts {
                name: o.name.clone(),
                state: Some(o.state),
                not_after: na,
                leaves_bundle: leaves,
            },
        });
    }
    out[0].in_bundle = if out[0].roots.is_empty() {
        "no (root unknown)".into()
    } else {
        "yes".into()
    };
    let note = match cluster {
        None => format!(
            "IN BUNDLE computed from the configuration (bundle {}); pass --kubeconfig to read the cluster",
            trust::bundle_name(signer.name(), &settings.trust_bundles.stage)
        ),
        Some(None) => {
            for r in &mut out {
                r.in_bundle = "no (bundle absent)".into();
            }
            format!(
                "bundle {} does not exist in the cluster",
                trust::bundle_name(signer.name(), &settings.trust_bundles.stage)
            )
        }
        Some(Some(b)) => {
            for r in &mut out {
                r.in_bundle = if !r.roots.is_empty() && trust::covers(&b.pem, &r.roots) {
                    "yes".into()
                } else {
                    "no".into()
                };
            }
            format!(
                "IN BUNDLE read from the cluster's {}{}",
                trust::bundle_name(signer.name(), &settings.trust_bundles.stage),
                if b.ours {
                    ""
                } else {
                    " (not managed by csr-signer!)"
                }
            )
        }
    };
    Ok((out, note))
}

fn load(args: &CaStatusArgs, overrides: &Overrides) -> anyhow::Result<(Settings, Engine)> {
    let settings = Settings::load(Some(&args.config.config), overrides)?;
    let engine = Engine::from_settings(&settings)?;
    Ok((settings, engine))
}

fn cluster_bundles(
    args: &CaStatusArgs,
    settings: &Settings,
) -> anyhow::Result<Option<Vec<Option<ClusterBundle>>>> {
    tokio::runtime::Runtime::new()?.block_on(published_bundles(args, settings))
}

/// `csr-signer ca status`: every CA of every signer, with its state and whether clients can trust it.
pub fn ca_status(args: &CaStatusArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let (settings, engine) = load(args, overrides)?;
    let cluster = cluster_bundles(args, &settings)?;
    let now = SystemTime::now();
    for (i, signer) in engine.signers().enumerate() {
        let (rows, note) = rows(signer, &settings, cluster.as_ref().map(|c| &c[i]), now)?;
        println!(
            "signer {} (lifetime.max {})",
            signer.name(),
            humantime::format_duration(signer.policy().max_lifetime())
        );
        println!(
            "  {:<10} {:<10} {:<20} {:<20} {:<20} {:<20} {:<20} {:<20} SUBJECT / SKI",
            "NAME",
            "STATE",
            "KEY",
            "NOT BEFORE",
            "NOT AFTER",
            "IN BUNDLE",
            "STATE SINCE",
            "LEAVES BUNDLE"
        );
        for r in &rows {
            println!(
                "  {:<10} {:<10} {:<20} {:<20} {:<20} {:<20} {:<20} {:<20} {} / {}",
                r.name,
                r.state,
                r.key,
                fmt(r.not_before),
                fmt(r.not_after),
                r.in_bundle,
                r.since.map(fmt).unwrap_or_else(|| "-".into()),
                r.facts.leaves_bundle.map(fmt).unwrap_or_else(|| "-".into()),
                r.subject,
                r.ski
            );
        }
        println!("  {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `csr-signer ca plan-rotation`: the next steps of a rotation and their dates.
pub fn ca_plan_rotation(args: &CaStatusArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let (settings, engine) = load(args, overrides)?;
    let cluster = cluster_bundles(args, &settings)?;
    let now = SystemTime::now();
    for (i, signer) in engine.signers().enumerate() {
        let (rows, _) = rows(signer, &settings, cluster.as_ref().map(|c| &c[i]), now)?;
        let max = signer.policy().max_lifetime();
        println!(
            "signer {}: signing CA expires {}; lifetime.max {}; propagation {}",
            signer.name(),
            fmt(rows[0].facts.not_after),
            humantime::format_duration(max),
            humantime::format_duration(args.propagation)
        );
        let others: Vec<CaFacts> = rows[1..].iter().map(|r| r.facts.clone()).collect();
        for (n, step) in rotation::plan(&rows[0].facts, &others, max, args.propagation, now)
            .iter()
            .enumerate()
        {
            let when = match (step.from, step.by) {
                (Some(f), Some(b)) => format!("from {} by {}", fmt(f), fmt(b)),
                (Some(f), None) => format!("from {}", fmt(f)),
                (None, Some(b)) => format!("by {}", fmt(b)),
                (None, None) => "-".into(),
            };
            let flag = if step.overdue { " [OVERDUE]" } else { "" };
            println!("  {}. {when}{flag}: {}", n + 1, step.what);
        }
    }
    Ok(ExitCode::SUCCESS)
}
