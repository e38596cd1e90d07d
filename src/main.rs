use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "csr-signer", version, about = "Kubernetes CSR signer")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a local in-memory Kubernetes certificates API (and write a kubeconfig for it).
    Dev {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 6443)]
        port: u16,
        /// Serve plain HTTP instead of HTTPS.
        #[arg(long)]
        plain_http: bool,
        /// Where to write the kubeconfig (contexts admin, developer, approver).
        #[arg(long, default_value = "csr-signer-dev.kubeconfig")]
        kubeconfig_out: PathBuf,
        /// Keep objects in this file across restarts (in memory only by default).
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Dev {
            port,
            plain_http,
            kubeconfig_out,
            state,
        }) => {
            csr_signer::dev::run_dev(csr_signer::dev::DevOptions {
                port,
                plain_http,
                kubeconfig_out,
                state,
            })
            .await?;
        }
        None => {}
    }
    Ok(())
}
