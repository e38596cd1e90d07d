//! The `csr-signer` binary: parse the command line, load settings, set up logging, run one
//! subcommand. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use csr_signer::ca_init::{self, InitOptions, KeyType};
use csr_signer::config::{LogFormat, Overrides, Settings};
use csr_signer::engine::{Decision, Engine, Explanation, SignRequest};

#[derive(Parser, Debug)]
#[command(
    name = "csr-signer",
    version,
    about = "Signs Kubernetes CertificateSigningRequests for its own signerNames"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `csr_signer=debug`.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file and print the effective settings (no secrets).
    CheckConfig(ConfigArg),
    /// Sign one CSR offline with exactly the controller's policy and issuance.
    Sign(SignArgs),
    /// CA tooling.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(long, env = "CSR_SIGNER_CONFIG")]
    config: PathBuf,
}

#[derive(Args, Debug)]
struct SignArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The signerName to sign for (must be configured).
    #[arg(long)]
    signer: String,
    /// The PEM certificate request.
    #[arg(long)]
    csr: PathBuf,
    /// Comma-separated usages, as in `spec.usages`.
    #[arg(long, default_value = "digital signature,key encipherment,client auth")]
    usages: String,
    /// Requested lifetime, as in `spec.expirationSeconds`.
    #[arg(long)]
    expiration_seconds: Option<i32>,
    /// Who is asking, as in `spec.username` (identity-bound policies use it).
    #[arg(long, default_value = "")]
    requester: String,
    /// Groups of the requester, comma-separated, as in `spec.groups`.
    #[arg(long, default_value = "")]
    groups: String,
    /// Print the decision (granted lifetime, usages, SANs, or the refusal) without signing.
    #[arg(long)]
    explain: bool,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a development CA (self-signed root, optionally with a signing intermediate).
    Init(CaInitArgs),
}

#[derive(Args, Debug)]
struct CaInitArgs {
    /// Directory to write into (created if missing; existing CA files are never overwritten).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "p256")]
    key_type: KeyType,
    /// Validity of the CA in days.
    #[arg(long, default_value_t = 3650)]
    days: u32,
    #[arg(long, default_value = "csr-signer development CA")]
    common_name: String,
    /// Create a root and an intermediate; the intermediate signs.
    #[arg(long)]
    intermediate: bool,
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn check_config(args: &ConfigArg, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(&args.config), overrides)?;
    // Loading the CAs proves the files are usable, not only named.
    Engine::from_settings(&settings)?;
    print!("{}", settings.to_yaml());
    Ok(ExitCode::SUCCESS)
}

fn sign(args: &SignArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
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

fn ca_init(args: &CaInitArgs) -> anyhow::Result<ExitCode> {
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
    println!(
        "  ca: {{certFile: {}, keyFile: {}}}",
        created.cert.display(),
        created.key.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(
        cli.log_format.unwrap_or_default(),
        cli.log_level.as_deref().unwrap_or("info"),
    );
    let overrides = Overrides {
        listen: None,
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
    };
    let result = match &cli.command {
        Command::CheckConfig(a) => check_config(a, &overrides),
        Command::Sign(a) => sign(a, &overrides),
        Command::Ca(CaCommand::Init(a)) => ca_init(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
