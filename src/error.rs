//! The crate's one error type. A policy refusal is not an error (see `refusal::Refusal`): errors are
//! what the controller retries with backoff, and what stops startup.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one adapter from an OpenSSL error to `Error::Crypto`, for `.map_err(crypto("what was being done"))`.
pub fn crypto(context: &'static str) -> impl Fn(openssl::error::ErrorStack) -> Error {
    move |error| Error::Crypto { context, error }
}

/// An error and its causes on one line (`outer: cause: root cause`), for logs and messages that are not
/// printed through anyhow's `{:#}`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Error {
    /// The kind of a token error (through `Setting`), for the `kind` metric label.
    pub fn token_kind(&self) -> Option<crate::pkcs11::TokenErrorKind> {
        match self {
            Error::Token { kind, .. } => Some(*kind),
            Error::Setting { source, .. } => source.token_kind(),
            _ => None,
        }
    }
}

/// Everything that can go wrong outside a policy decision. Causes are kept as `source`s, so callers
/// see the whole chain (`{:#}` with anyhow, `chain` elsewhere).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or value is invalid. Names what set it (the file, `environment variable
    /// NAME` or `flag --name`) and the key (`signers[0].policy.lifetime.min`).
    #[error("{origin}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Config {
        origin: String,
        key: String,
        message: String,
    },

    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },

    /// The CA material is unusable (unreadable, bad PEM, key mismatch, not a CA, ...). Names the file;
    /// `Setting` around it names the key that points at the file.
    #[error("{}: {message}", path.display())]
    Ca {
        /// Which of the `ca:` files.
        file: crate::ca::CaFile,
        path: PathBuf,
        message: String,
        /// Set when the file could not be read.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A setting points at something unusable (a CA file that does not load). Names what set the key
    /// (the file or `environment variable NAME`) and the key (`signers[0].ca.keyFile`); the cause
    /// names the file and the problem.
    #[error("{origin}: {key}")]
    Setting {
        origin: String,
        key: String,
        #[source]
        source: Box<Error>,
    },

    /// The CA cannot sign now (expired); transient from the controller's point of view.
    #[error("the signer has expired: NotAfter={not_after}")]
    CaExpired { not_after: String },

    /// An OpenSSL operation failed while building or signing a certificate.
    #[error("{context}")]
    Crypto {
        context: &'static str,
        #[source]
        error: openssl::error::ErrorStack,
    },

    /// A PKCS#11 token (HSM) could not be reached or refused an operation; transient for the
    /// controller (retried with backoff). `kind` is the metric label. Never carries the PIN.
    #[error("PKCS#11: {context}")]
    Token {
        kind: crate::pkcs11::TokenErrorKind,
        context: String,
        #[source]
        source: Option<Box<cryptoki::error::Error>>,
    },

    /// DER encoding of an issued certificate failed.
    #[error("encoding {context}: {message}")]
    Encode {
        context: &'static str,
        message: String,
    },

    /// A command-line option has a value that cannot be used. Names the option.
    #[error("{option}: {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },

    /// The signerName asked for is not configured in this process.
    #[error("signer {0:?} is not configured")]
    UnknownSigner(String),

    /// A Prometheus metric could not be registered or encoded.
    #[error("metrics: {0}")]
    Metrics(String),

    /// A kube-apiserver request failed; `context` says which (e.g. "update status of csr x").
    #[error("{context}")]
    Kube {
        context: String,
        #[source]
        error: Box<kube::Error>,
    },

    /// The HTTP server could not bind or serve.
    #[error("listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
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
