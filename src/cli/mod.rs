//! One file per subcommand: its flags and what it prints. The work itself is in the library.

pub mod ca;
#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "dev")]
pub mod devsigner;
pub mod request;
pub mod run;
pub mod sign;

use csr_signer::config::LogFormat;

pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a collected log file gets no escape sequences.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Values come from API users: escape control characters so none can start a line.
        LogFormat::Text => builder
            .fmt_fields(csr_signer::logging::EscapingFields)
            .init(),
    }
}
