//! `csr-signer dev`: the local Kubernetes certificates API, a development CA and this signer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,
    /// Where to write the kubeconfig (contexts admin, developer, approver).
    #[arg(long, default_value = "csr-signer-dev.kubeconfig")]
    pub kubeconfig_out: PathBuf,
    /// Keep API objects in this file across restarts (in memory only by default).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Events are deleted this long after their last write, as with kube-apiserver's flag.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub event_ttl: std::time::Duration,
    /// Directory for the dev CA (created on first run, reused after); default
    /// $XDG_STATE_HOME/csr-signer-dev, else ~/.local/state/csr-signer-dev.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Address for the signer's /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_listen: std::net::SocketAddr,
    /// Run the tutorial (key, CSR, create, approve, wait, inspect, verify) and exit.
    #[arg(long, conflicts_with = "no_signer")]
    pub demo: bool,
    /// Serve only the local API, without the dev CA and signer.
    #[arg(long)]
    pub no_signer: bool,
}

fn default_dev_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("csr-signer-dev")
}

pub fn dev(args: &DevArgs) -> anyhow::Result<ExitCode> {
    let _ = csr_signer::server::raise_open_file_limit();
    let cmd = super::devsigner::DevCommand {
        api: csr_signer::dev::DevOptions {
            port: args.port,
            plain_http: args.plain_http,
            kubeconfig_out: args.kubeconfig_out.clone(),
            state: args.state.clone(),
            event_ttl: args.event_ttl,
        },
        signer: super::devsigner::DevSignerOptions {
            state_dir: args.state_dir.clone().unwrap_or_else(default_dev_state_dir),
            listen: args.metrics_listen,
        },
        demo: args.demo,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if args.no_signer {
        runtime.block_on(csr_signer::dev::run_dev(
            cmd.api,
            csr_signer::service::shutdown_signal(),
        ))?;
    } else {
        runtime.block_on(super::devsigner::run(cmd))?;
    }
    Ok(ExitCode::SUCCESS)
}
