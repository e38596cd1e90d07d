//! The `csr-signer` binary: parse the command line, set up logging, run one subcommand (`cli/`).
//! Nothing else lives here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::ca::CaCommand;
use csr_signer::config::{LogFormat, Overrides};

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
    Run(cli::run::RunArgs),
    /// Validate a configuration file and print the effective settings (no secrets).
    CheckConfig(cli::sign::ConfigArg),
    /// Sign one CSR offline with exactly the controller's policy and issuance.
    Sign(cli::sign::SignArgs),
    /// Get a certificate for the identity this runs as (a pod's service account) through a CSR, and
    /// write key, chain and trust bundle; `--renew` keeps renewing them.
    Request(Box<cli::request::RequestArgs>),
    /// CA tooling.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Local Kubernetes certificates API + dev CA + this signer for example.com/mtls.
    #[cfg(feature = "dev")]
    Dev(cli::dev::DevArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` sets up logging itself once its settings (file < env < flags) are known.
    if !matches!(cli.command, None | Some(Command::Run(_))) {
        cli::init_tracing(
            cli.log_format.unwrap_or_default(),
            cli.log_level.as_deref().unwrap_or("info"),
        );
    }
    let overrides = Overrides {
        listen: None,
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
    };
    let default_run = cli::run::RunArgs {
        config: std::env::var_os("CSR_SIGNER_CONFIG").map(PathBuf::from),
        ..cli::run::RunArgs::default()
    };
    let result = match &cli.command {
        None => cli::run::run(&default_run, &overrides),
        Some(Command::Run(a)) => cli::run::run(a, &overrides),
        Some(Command::CheckConfig(a)) => cli::sign::check_config(a, &overrides),
        Some(Command::Sign(a)) => cli::sign::sign(a, &overrides),
        Some(Command::Request(a)) => cli::request::request(a),
        Some(Command::Ca(CaCommand::Init(a))) => cli::ca::ca_init(a),
        Some(Command::Ca(CaCommand::Status(a))) => cli::ca::ca_status(a, &overrides),
        Some(Command::Ca(CaCommand::PlanRotation(a))) => cli::ca::ca_plan_rotation(a, &overrides),
        #[cfg(feature = "dev")]
        Some(Command::Dev(a)) => cli::dev::dev(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
