//! csr-signer: a Kubernetes CertificateSigningRequest signer for custom signerNames.
//!
//! The flow a request takes, and the module responsible for each step:
//!
//! ```text
//! spec.request ─► csr (parse, verify self-signature) ─► policy (pure decision) ─► issue (pure: build + sign)
//!        ▲                                                                               │
//!        └──────────── controller (the only kube IO for CSRs: watch, write status) ◄─────┘
//! ```
//!
//! `config` validates settings at the edge into newtypes, `ca` loads and hot-reloads the signing CA,
//! `engine` glues csr → policy → issue per signerName, `metrics`/`server` expose what SREs watch, and
//! `dev` (feature `dev`) re-exports the in-memory Kubernetes certificates API of crates/localapi.

pub mod approval;
pub mod audit;
pub mod ca;
pub mod ca_init;
pub mod config;
pub mod controller;
pub mod csr;
/// The in-memory Kubernetes API (crates/localapi), for `csr-signer dev` and tests.
#[cfg(feature = "dev")]
pub use localapi as dev;
pub mod engine;
pub mod error;
pub mod issue;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod pem;
pub mod policy;
pub mod refusal;
pub mod requester;
pub mod server;
pub mod service;
pub mod trust;
pub mod usage;

pub use error::{Error, Result};
