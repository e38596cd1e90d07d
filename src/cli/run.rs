//! `csr-signer run`: the service against a real cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use csr_signer::config::{Overrides, Settings};

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "CSR_SIGNER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kubeconfig file; default: KUBECONFIG, then in-cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Config> {
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
    Ok(config)
}

pub fn run(args: &RunArgs, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let _ = csr_signer::server::raise_open_file_limit();
    let overrides = Overrides {
        listen: args.listen,
        ..overrides.clone()
    };
    let settings = Settings::load(args.config.as_deref(), &overrides)?;
    super::init_tracing(settings.log.format, &settings.log.level);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config = kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let metrics = std::sync::Arc::new(csr_signer::metrics::Metrics::new()?);
        let client = csr_signer::controller::client::build(config, metrics.clone())?;
        csr_signer::service::start_with_metrics(
            settings,
            client,
            csr_signer::service::shutdown_signal(),
            csr_signer::service::RunOptions::default(),
            metrics,
        )
        .await?
        .wait()
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
