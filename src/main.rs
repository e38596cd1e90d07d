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
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the signer controller (the default).
    Run(RunArgs),
    /// Validate a configuration file and print the effective settings (no secrets).
    CheckConfig(ConfigArg),
    /// Sign one CSR offline with exactly the controller's policy and issuance.
    Sign(SignArgs),
    /// CA tooling.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Local Kubernetes certificates API + dev CA + this signer for example.com/mtls.
    Dev(DevArgs),
}

#[derive(Args, Debug)]
struct DevArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Where to write the kubeconfig (contexts admin, developer, approver).
    #[arg(long, default_value = "csr-signer-dev.kubeconfig")]
    kubeconfig_out: PathBuf,
    /// Keep API objects in this file across restarts (in memory only by default).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory for the dev CA (created on first run, reused after); default
    /// $XDG_STATE_HOME/csr-signer-dev, else ~/.local/state/csr-signer-dev.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address for the signer's /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: std::net::SocketAddr,
    /// Run the tutorial (key, CSR, create, approve, wait, inspect, verify) and exit.
    #[arg(long, conflicts_with = "no_signer")]
    demo: bool,
    /// Serve only the local API, without the dev CA and signer.
    #[arg(long)]
    no_signer: bool,
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

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "CSR_SIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Kubeconfig file; default: KUBECONFIG, then in-cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
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

async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("loading kubeconfig (KUBECONFIG, ~/.kube/config)")?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster")?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn run(args: &RunArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        listen: args.listen,
        ..overrides.clone()
    };
    let settings = Settings::load(args.config.as_deref(), &overrides)?;
    init_tracing(settings.log.format, &settings.log.level);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        csr_signer::service::run(settings, client, csr_signer::service::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn default_dev_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("csr-signer-dev")
}

fn dev(args: &DevArgs) -> anyhow::Result<ExitCode> {
    let cmd = csr_signer::devsigner::DevCommand {
        api: csr_signer::dev::DevOptions {
            port: args.port,
            plain_http: args.plain_http,
            kubeconfig_out: args.kubeconfig_out.clone(),
            state: args.state.clone(),
        },
        signer: csr_signer::devsigner::DevSignerOptions {
            state_dir: args.state_dir.clone().unwrap_or_else(default_dev_state_dir),
            listen: args.metrics_listen,
        },
        demo: args.demo,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if args.no_signer {
        runtime.block_on(csr_signer::dev::run_dev(cmd.api))?;
    } else {
        runtime.block_on(csr_signer::devsigner::run(cmd))?;
    }
    Ok(ExitCode::SUCCESS)
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
    // `run` sets up logging itself once its settings (file < env < flags) are known.
    if !matches!(cli.command, None | Some(Command::Run(_))) {
        init_tracing(
            cli.log_format.unwrap_or_default(),
            cli.log_level.as_deref().unwrap_or("info"),
        );
    }
    let overrides = Overrides {
        listen: None,
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
    };
    let default_run = RunArgs {
        config: std::env::var_os("CSR_SIGNER_CONFIG").map(PathBuf::from),
        ..RunArgs::default()
    };
    let result = match &cli.command {
        None => run(&default_run, &overrides),
        Some(Command::Run(a)) => run(a, &overrides),
        Some(Command::CheckConfig(a)) => check_config(a, &overrides),
        Some(Command::Sign(a)) => sign(a, &overrides),
        Some(Command::Ca(CaCommand::Init(a))) => ca_init(a),
        Some(Command::Dev(a)) => dev(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
