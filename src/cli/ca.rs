//! `csr-signer ca init`: a development CA.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use csr_signer::ca_init::{self, InitOptions, KeyType};

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a development CA (self-signed root, optionally with a signing intermediate).
    Init(CaInitArgs),
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
    println!(
        "  ca: {{certFile: {}, keyFile: {}}}",
        created.cert.display(),
        created.key.display()
    );
    Ok(ExitCode::SUCCESS)
}
