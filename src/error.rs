//! The crate's one error type. A policy refusal is not an error (see `refusal::Refusal`): errors are
//! what the controller retries with backoff, and what stops startup.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one adapter from an OpenSSL error to `Error::Crypto`, for `.map_err(crypto("what was being done"))`.
pub fn crypto(context: &'static str) -> impl Fn(openssl::error::ErrorStack) -> Error {
    move |error| Error::Crypto { context, error }
}

/// Everything that can go wrong outside a policy decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or value is invalid. Names the file and the key.
    #[error("{file}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Config {
        file: String,
        key: String,
        message: String,
    },

    /// A file could not be read or written.
    // The cause is part of the message rather than a chained `source`, so `{:#}` does not print
    // it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The CA material is unusable (bad PEM, key mismatch, not a CA, ...). Names the file.
    #[error("CA {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },

    /// The CA cannot sign now (expired); transient from the controller's point of view.
    #[error("the signer has expired: NotAfter={not_after}")]
    CaExpired { not_after: String },

    /// An OpenSSL operation failed while building or signing a certificate.
    #[error("{context}: {error}")]
    Crypto {
        context: &'static str,
        error: openssl::error::ErrorStack,
    },

    /// DER encoding of an issued certificate failed.
    #[error("encoding {context}: {message}")]
    Encode {
        context: &'static str,
        message: String,
    },

    /// The signerName asked for is not configured in this process.
    #[error("signer {0:?} is not configured")]
    UnknownSigner(String),

    /// A Prometheus metric could not be registered or encoded.
    #[error("metrics: {0}")]
    Metrics(String),

    /// A kube-apiserver request failed; `context` says which (e.g. "update status of csr x").
    /// The cause is part of the message (not a chained source), like `Io`.
    #[error("{context}: {error}")]
    Kube {
        context: String,
        error: Box<kube::Error>,
    },

    /// The HTTP server could not bind or serve.
    #[error("listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },

    /// A background task of the service stopped unexpectedly.
    #[error("{0}")]
    Service(String),

    /// The local (dev/test) Kubernetes API could not start or persist its state.
    #[cfg(feature = "dev")]
    #[error("local API")]
    LocalApi(#[from] localapi::Error),
}
