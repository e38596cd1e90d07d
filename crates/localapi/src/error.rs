//! The local API's one error type: what stops it from starting or from writing its files. Errors of
//! requests it serves are Kubernetes Status bodies (`status.rs`), not this.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file (state, kubeconfig) could not be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating the serving certificates failed.
    #[error("{context}")]
    Tls {
        context: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// A bad setting or a broken state file.
    #[error("{0}")]
    Invalid(String),
}
