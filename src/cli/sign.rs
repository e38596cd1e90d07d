//! `csr-signer sign` and `check-config`: the controller's exact decision and issuance, offline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;
use csr_signer::config::{Overrides, Settings};
use csr_signer::engine::{Decision, Engine, Explanation, SignRequest};

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(long, env = "CSR_SIGNER_CONFIG")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The signerName to sign for (must be configured).
    #[arg(long)]
    pub signer: String,
    /// The PEM certificate request.
    #[arg(long)]
    pub csr: PathBuf,
    /// Comma-separated usages, as in `spec.usages`.
    #[arg(long, default_value = "digital signature,key encipherment,client auth")]
    pub usages: String,
    /// Requested lifetime, as in `spec.expirationSeconds`.
    #[arg(long)]
    pub expiration_seconds: Option<i32>,
    /// Who is asking, as in `spec.username` (identity-bound policies use it).
    #[arg(long, default_value = "")]
    pub requester: String,
    /// Groups of the requester, comma-separated, as in `spec.groups`.
    #[arg(long, default_value = "")]
    pub groups: String,
    /// Print the decision (granted lifetime, usages, SANs, or the refusal) without signing.
    #[arg(long)]
    pub explain: bool,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub fn check_config(args: &ConfigArg, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(&args.config), overrides)?;
    // Loading the CAs proves the files are usable, not only named.
    Engine::from_settings(&settings)?;
    print!("{}", settings.to_yaml());
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: &SignArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(&args.config.config), overrides)?;
    let engine = Engine::from_settings(&settings)?;
    let signer = engine.require(&args.signer)?;
    let request =
        std::fs::read(&args.csr).with_context(|| format!("reading {}", args.csr.display()))?;
    let usages = split_list(&args.usages);
    let groups = split_list(&args.groups);
    let req = SignRequest {
        request: &request,
        usages: &usages,
        expiration_seconds: args.expiration_seconds,
        annotations: None,
        username: &args.requester,
        groups: &groups,
    };
    if args.explain {
        return Ok(match signer.explain(&req) {
            Explanation::Grant(g) => {
                println!("Decision: issue");
                println!(
                    "Usages: {}",
                    g.usages
                        .iter()
                        .map(|u| u.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!(
                    "Lifetime: {} ({}{})",
                    humantime::format_duration(g.lifetime),
                    g.lifetime_outcome.as_str(),
                    g.requested
                        .map(|r| format!(", requested {}", humantime::format_duration(r)))
                        .unwrap_or_default()
                );
                let sans: Vec<String> = g.sans.iter().map(|s| s.to_string()).collect();
                println!(
                    "SANs: {}",
                    if sans.is_empty() {
                        "none".into()
                    } else {
                        sans.join(", ")
                    }
                );
                ExitCode::SUCCESS
            }
            Explanation::Refused(r) => {
                eprintln!("{}: {}", r.reason, r.message);
                ExitCode::from(2)
            }
        });
    }
    match signer.sign(&req, SystemTime::now())? {
        Decision::Issued(issued) => {
            print!("{}", issued.certificate_pem);
            Ok(ExitCode::SUCCESS)
        }
        Decision::Refused(r) => {
            eprintln!("{}: {}", r.reason, r.message);
            Ok(ExitCode::from(2))
        }
    }
}
