//! Loading the signing CA: certificate, private key, optional intermediates and passphrase.
//!
//! Everything that can be checked once is checked here, at load time, so that issuance can trust
//! the CA it is handed: exactly one certificate, a CA certificate (basicConstraints CA:TRUE and
//! keyCertSign), a supported key that matches it, not expired. `Debug` never shows key material.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::Decode;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::{X509Ref, X509};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::Certificate;

use crate::config::{CaSettings, OtherCaSettings, OtherCaState};
use crate::error::crypto;
use crate::error::{Error, Result};

/// One of the files a signer's `ca:` settings name, for errors that must say which key named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaFile {
    Cert,
    Key,
    Chain,
    Passphrase,
}

impl CaFile {
    /// The key under `ca:` (`keyFile`).
    pub fn key(self) -> &'static str {
        match self {
            CaFile::Cert => "certFile",
            CaFile::Key => "keyFile",
            CaFile::Chain => "chainFile",
            CaFile::Passphrase => "passphraseFile",
        }
    }

    /// An error about this file.
    fn error(self, path: &Path, message: impl Into<String>) -> Error {
        Error::Ca {
            file: self,
            path: path.to_owned(),
            message: message.into(),
            source: None,
        }
    }
}

/// The signature algorithm a CA key signs with (k8s-csr-rules §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    RsaSha256,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    Ed25519,
}

impl SignatureAlgorithm {
    /// DER of the AlgorithmIdentifier (RSA carries NULL parameters; ECDSA and Ed25519 none).
    pub fn algorithm_identifier_der(self) -> &'static [u8] {
        match self {
            SignatureAlgorithm::RsaSha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            SignatureAlgorithm::EcdsaSha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            SignatureAlgorithm::EcdsaSha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            SignatureAlgorithm::EcdsaSha512 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
            ],
            SignatureAlgorithm::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
        }
    }

    /// The digest to sign with (`None`: the algorithm hashes internally).
    pub fn digest(self) -> Option<MessageDigest> {
        match self {
            SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => {
                Some(MessageDigest::sha256())
            }
            SignatureAlgorithm::EcdsaSha384 => Some(MessageDigest::sha384()),
            SignatureAlgorithm::EcdsaSha512 => Some(MessageDigest::sha512()),
            SignatureAlgorithm::Ed25519 => None,
        }
    }
}

/// A loaded, checked signing CA.
pub struct SigningCa {
    /// The CA key; for RSA, one independent copy per CPU (see `signing_key`).
    keys: Box<[PKey<Private>]>,
    /// DER of the CA certificate.
    pub cert_der: Vec<u8>,
    /// DER of the CA's subject Name, used verbatim as the issuer of every leaf.
    pub subject_der: Vec<u8>,
    /// The CA's subjectKeyIdentifier, copied into each leaf's authorityKeyIdentifier.
    pub subject_key_id: Option<Vec<u8>>,
    pub not_after: SystemTime,
    pub algorithm: SignatureAlgorithm,
    /// PEM appended after every leaf: the signing CA itself when it is an intermediate, then the
    /// chain file's intermediates. Never a self-signed root.
    pub chain_pem: String,
    /// PEM of the trust anchor to distribute: the root when it is known (self-signed signing CA, or
    /// a self-signed certificate at the end of the chain file).
    pub cert_pem: String,
    /// What was loaded, for messages.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa")
            .field("cert_path", &self.cert_path)
            .field("algorithm", &self.algorithm)
            .field(
                "not_after",
                &humantime::format_rfc3339_seconds(self.not_after),
            )
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The files' bytes as last read: reloading compares these, not timestamps, because a Kubernetes
/// Secret volume update swaps a symlink and may keep mtimes.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    chain: Option<Vec<u8>>,
    passphrase: Option<Vec<u8>>,
}

impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaFiles(<redacted>)")
    }
}

fn read(file: CaFile, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| Error::Ca {
        file,
        path: path.to_owned(),
        message: "cannot read".into(),
        source: Some(error),
    })
}

impl CaFiles {
    /// Reads every file named by the settings.
    pub fn read(settings: &CaSettings) -> Result<CaFiles> {
        let optional =
            |file, path: &Option<PathBuf>| path.as_deref().map(|p| read(file, p)).transpose();
        Ok(CaFiles {
            cert: read(CaFile::Cert, &settings.cert_file)?,
            key: read(CaFile::Key, &settings.key_file)?,
            chain: optional(CaFile::Chain, &settings.chain_file)?,
            passphrase: optional(CaFile::Passphrase, &settings.passphrase_file)?,
        })
    }
}

impl SigningCa {
    /// Reads and checks the CA named by `settings`.
    pub fn load(settings: &CaSettings, now: SystemTime) -> Result<(SigningCa, CaFiles)> {
        let files = CaFiles::read(settings)?;
        warn_if_key_readable_by_others(&settings.key_file);
        let ca = SigningCa::from_files(settings, &files, now)?;
        Ok((ca, files))
    }

    /// Checks CA material already read from disk.
    pub fn from_files(
        settings: &CaSettings,
        files: &CaFiles,
        now: SystemTime,
    ) -> Result<SigningCa> {
        let cert_err = |message: String| CaFile::Cert.error(&settings.cert_file, message);
        let certs = X509::stack_from_pem(&files.cert)
            .map_err(|e| cert_err(format!("cannot parse PEM certificates: {e}")))?;
        let cert = match certs.as_slice() {
            [one] => one,
            [] => return Err(cert_err("expected 1 certificate, found 0".into())),
            many => {
                return Err(cert_err(format!(
                    "expected 1 certificate, found {} (put intermediates in chainFile)",
                    many.len()
                )))
            }
        };
        let (cert_der, parsed) = der_and_parsed(cert).map_err(&cert_err)?;
        let tbs = parsed.tbs_certificate();
        if !is_ca(tbs).map_err(&cert_err)? {
            return Err(cert_err(
                "not a CA certificate: basicConstraints CA:TRUE is required".into(),
            ));
        }
        let ku: Option<(bool, KeyUsage)> = tbs
            .get_extension()
            .map_err(|e| cert_err(format!("malformed keyUsage: {e}")))?;
        if !ku.is_some_and(|(_, ku)| ku.0.contains(KeyUsages::KeyCertSign)) {
            return Err(cert_err(
                "not a CA certificate: keyUsage keyCertSign is required".into(),
            ));
        }
        let ski: Option<(bool, SubjectKeyIdentifier)> = tbs
            .get_extension()
            .map_err(|e| cert_err(format!("malformed subjectKeyIdentifier: {e}")))?;
        let subject_key_id = ski.map(|(_, s)| s.0.as_bytes().to_vec());
        if subject_key_id.is_none() {
            tracing::warn!(
                ca = %settings.cert_file.display(),
                "CA certificate has no subjectKeyIdentifier: issued certificates will carry no authorityKeyIdentifier"
            );
        }
        let not_after = tbs.validity().not_after.to_system_time();
        if not_after <= now {
            return Err(cert_err(format!(
                "CA certificate expired at {}",
                humantime::format_rfc3339_seconds(not_after)
            )));
        }
        // The issuer of every leaf must be these bytes exactly as the CA certificate holds them (a
        // re-encoding may reorder a multi-valued RDN, and chains are built by byte comparison).
        let subject_der = raw_subject(&cert_der)
            .map_err(|e| cert_err(format!("cannot read the subject: {e}")))?
            .to_vec();

        let key_err = |message: String| CaFile::Key.error(&settings.key_file, message);
        if files.passphrase.is_none() && files.key.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err(key_err(
                "the private key is encrypted: set passphraseFile".into(),
            ));
        }
        let key = match &files.passphrase {
            Some(pass) => {
                let pass = trim_newline(pass);
                PKey::private_key_from_pem_passphrase(&files.key, pass)
            }
            // Never let OpenSSL prompt on a terminal for a passphrase: a service has no one to
            // answer, and an encrypted key without passphraseFile is a configuration error.
            None => PKey::private_key_from_pem_callback(&files.key, |_buf| {
                Err(openssl::error::ErrorStack::get())
            }),
        }
        // The OpenSSL error stack names the decoder, never key bytes.
        .map_err(|e| key_err(format!("cannot read private key: {e}")))?;
        let algorithm = match key.id() {
            Id::RSA => {
                if key.bits() < 2048 {
                    return Err(key_err(format!(
                        "RSA key of {} bits; at least 2048 required",
                        key.bits()
                    )));
                }
                SignatureAlgorithm::RsaSha256
            }
            Id::EC => {
                let nid = key
                    .ec_key()
                    .ok()
                    .and_then(|ec| ec.group().curve_name())
                    .ok_or_else(|| key_err("EC key without a named curve".into()))?;
                match nid {
                    Nid::X9_62_PRIME256V1 => SignatureAlgorithm::EcdsaSha256,
                    Nid::SECP384R1 => SignatureAlgorithm::EcdsaSha384,
                    Nid::SECP521R1 => SignatureAlgorithm::EcdsaSha512,
                    other => {
                        return Err(key_err(format!(
                            "unsupported EC curve {}",
                            other.short_name().unwrap_or("unknown")
                        )))
                    }
                }
            }
            Id::ED25519 => SignatureAlgorithm::Ed25519,
            _ => {
                return Err(key_err(
                    "unsupported key type (RSA, ECDSA P-256/P-384/P-521 or Ed25519 required)"
                        .into(),
                ))
            }
        };
        let cert_key = cert
            .public_key()
            .map_err(|e| cert_err(format!("cannot read the certificate's public key: {e}")))?;
        if !cert_key.public_eq(&key) {
            return Err(key_err(format!(
                "private key does not match the certificate {}",
                settings.cert_file.display()
            )));
        }

        // OpenSSL 3.0 serialises RSA private-key operations on one key object through its shared
        // blinding state; independent copies let signing threads scale (measured: 1.7× → see README).
        let copies = if key.id() == Id::RSA {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
        } else {
            1
        };
        let mut keys = Vec::with_capacity(copies);
        if copies > 1 {
            let der = key
                .private_key_to_der()
                .map_err(|e| key_err(format!("cannot re-encode private key: {e}")))?;
            for _ in 1..copies {
                keys.push(
                    PKey::private_key_from_der(&der)
                        .map_err(|e| key_err(format!("cannot copy private key: {e}")))?,
                );
            }
        }
        keys.push(key);

        let self_signed = tbs.subject() == tbs.issuer();
        let mut chain_pem = String::new();
        let mut cert_pem = String::new();
        let ca_pem = pem(&cert_der);
        if self_signed {
            cert_pem.push_str(&ca_pem);
        } else {
            chain_pem.push_str(&ca_pem);
        }
        if let (Some(path), Some(bytes)) = (&settings.chain_file, &files.chain) {
            if self_signed {
                return Err(CaFile::Chain.error(
                    path,
                    "the signing CA is a self-signed root: nothing is above it, so chainFile must not be set",
                ));
            }
            for c in chain_above(cert, path, bytes, now)? {
                let der = c.to_der().map_err(|e| {
                    CaFile::Chain.error(path, format!("cannot encode certificate: {e}"))
                })?;
                // A root in the chain file is the trust anchor: distribute it, never send it.
                if is_self_issued(&c) {
                    cert_pem.push_str(&pem(&der));
                } else {
                    chain_pem.push_str(&pem(&der));
                }
            }
        }

        Ok(SigningCa {
            keys: keys.into_boxed_slice(),
            cert_der,
            subject_der,
            subject_key_id,
            not_after,
            algorithm,
            chain_pem,
            cert_pem,
            cert_path: settings.cert_file.clone(),
        })
    }

    /// The key copy for the calling thread. Threads take slots round-robin in the order they first
    /// sign, so as many threads as there are copies never share one. (Hashing the thread id, as this
    /// did before, put two threads on the same copy half the time: on two cores RSA then scaled
    /// 1.5× instead of 2×, depending on which thread ids the run happened to get.)
    pub(crate) fn signing_key(&self) -> &PKey<Private> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        }
        &self.keys[SLOT.with(|slot| *slot) % self.keys.len()]
    }

    /// Time left before the CA expires (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// The certificate's DER and its parse, for the checks OpenSSL's API does not offer.
/// A CA the signer trusts but does not sign with (`otherCas`): only its certificates are loaded.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    pub name: String,
    pub state: OtherCaState,
    /// DER of the CA certificate.
    pub cert_der: Vec<u8>,
    pub not_after: SystemTime,
    /// DER of the roots clients anchor on: the CA itself when self-signed, else the self-signed
    /// certificate at the end of its chain file (none when its root is unknown).
    pub roots: Vec<Vec<u8>>,
    /// DER of the CA (when not a root) and the intermediates of its chain file.
    pub intermediates: Vec<Vec<u8>>,
}

/// The bytes of an `otherCas` entry's files as last seen (`None`: unreadable then). Reloading compares
/// these, as for the signing CA; they are certificates only, nothing secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedCaFiles {
    cert: Option<Vec<u8>>,
    chain: Option<Vec<u8>>,
}

impl TrustedCaFiles {
    /// Reads what `settings` names; an unreadable file is remembered as such (loading reports why).
    pub fn read(settings: &OtherCaSettings) -> TrustedCaFiles {
        TrustedCaFiles {
            cert: std::fs::read(&settings.cert_file).ok(),
            chain: settings
                .chain_file
                .as_deref()
                .and_then(|p| std::fs::read(p).ok()),
        }
    }
}

impl TrustedCa {
    /// Reads and checks `settings` (a CA certificate; the chain as for the signing CA). Errors name
    /// the file as `CaFile::Cert` or `CaFile::Chain`; the caller adds the key.
    pub fn load(settings: &OtherCaSettings, now: SystemTime) -> Result<TrustedCa> {
        let cert_err = |message: String| CaFile::Cert.error(&settings.cert_file, message);
        let bytes = read(CaFile::Cert, &settings.cert_file)?;
        let certs = X509::stack_from_pem(&bytes)
            .map_err(|e| cert_err(format!("cannot parse PEM certificates: {e}")))?;
        let [cert] = certs.as_slice() else {
            return Err(cert_err(format!(
                "expected 1 certificate, found {} (put intermediates in chainFile)",
                certs.len()
            )));
        };
        let (cert_der, parsed) = der_and_parsed(cert).map_err(&cert_err)?;
        let tbs = parsed.tbs_certificate();
        if !is_ca(tbs).map_err(&cert_err)? {
            return Err(cert_err(
                "not a CA certificate: basicConstraints CA:TRUE is required".into(),
            ));
        }
        let not_after = tbs.validity().not_after.to_system_time();
        let mut roots = Vec::new();
        let mut intermediates = Vec::new();
        if is_self_issued(cert) {
            roots.push(cert_der.clone());
        } else {
            intermediates.push(cert_der.clone());
        }
        // An expired CA is never published, so its chain is not needed (and may have expired too).
        if let (Some(path), true) = (&settings.chain_file, not_after > now) {
            let bytes = read(CaFile::Chain, path)?;
            for c in chain_above(cert, path, &bytes, now)? {
                let der = c.to_der().map_err(|e| {
                    CaFile::Chain.error(path, format!("cannot encode certificate: {e}"))
                })?;
                if is_self_issued(&c) {
                    roots.push(der);
                } else {
                    intermediates.push(der);
                }
            }
        }
        Ok(TrustedCa {
            name: settings.name.clone(),
            state: settings.state,
            cert_der,
            not_after,
            roots,
            intermediates,
        })
    }
}

fn der_and_parsed(c: &X509Ref) -> std::result::Result<(Vec<u8>, Certificate), String> {
    let der = c
        .to_der()
        .map_err(|e| format!("cannot encode certificate: {e}"))?;
    let parsed =
        Certificate::from_der(&der).map_err(|e| format!("cannot parse certificate: {e}"))?;
    Ok((der, parsed))
}

/// basicConstraints CA:TRUE.
fn is_ca(tbs: &x509_cert::TbsCertificate) -> std::result::Result<bool, String> {
    let bc: Option<(bool, BasicConstraints)> = tbs
        .get_extension()
        .map_err(|e| format!("malformed basicConstraints: {e}"))?;
    Ok(bc.is_some_and(|(_, bc)| bc.ca))
}

fn is_self_issued(c: &X509Ref) -> bool {
    c.subject_name().to_der().ok() == c.issuer_name().to_der().ok()
}

/// `CN=…, O=…` for messages.
fn describe(c: &X509Ref) -> String {
    format!("\"{}\"", subject_text(c.subject_name()))
}

/// A Name as `CN=…, O=…` for people (messages, `ca status`, the dev demo); `?` where OpenSSL cannot
/// convert a value to UTF-8.
pub fn subject_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().map(|v| v.to_string());
            format!("{key}={}", value.as_deref().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The chain file's certificates, checked to be what issued certificates will be verified through:
/// the first issued the signing CA, each next one issued the one before (name and signature), every
/// one is a CA still valid at `now`, and a self-signed root, if any, comes last and verifies itself.
/// A chain in the wrong order or with a stranger in it would be sent to every client.
fn chain_above(signing: &X509Ref, path: &Path, bytes: &[u8], now: SystemTime) -> Result<Vec<X509>> {
    let err = |message: String| CaFile::Chain.error(path, message);
    let chain = X509::stack_from_pem(bytes)
        .map_err(|e| err(format!("cannot parse PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(err("holds no certificate".into()));
    }
    let mut child: &X509Ref = signing;
    for (i, c) in chain.iter().enumerate() {
        let n = i + 1;
        let what = if i == 0 {
            format!("the signing CA {}", describe(child))
        } else {
            format!("certificate {i} {}", describe(child))
        };
        if child.issuer_name().to_der().ok() != c.subject_name().to_der().ok() {
            return Err(err(format!(
                "certificate {n} {} is not the issuer of {what}: list the issuers in order, starting with the signing CA's",
                describe(c)
            )));
        }
        let key = c
            .public_key()
            .map_err(|e| err(format!("certificate {n}: cannot read its public key: {e}")))?;
        if !child.verify(&key).unwrap_or(false) {
            return Err(err(format!(
                "the signature of {what} does not verify with the key of certificate {n} {}",
                describe(c)
            )));
        }
        let in_n = |m: String| err(format!("certificate {n}: {m}"));
        let (_, parsed) = der_and_parsed(c).map_err(in_n)?;
        let tbs = parsed.tbs_certificate();
        if !is_ca(tbs).map_err(in_n)? {
            return Err(err(format!(
                "certificate {n} {} is not a CA certificate (basicConstraints CA:TRUE)",
                describe(c)
            )));
        }
        let not_after = tbs.validity().not_after.to_system_time();
        if not_after <= now {
            return Err(err(format!(
                "certificate {n} {} expired at {}",
                describe(c),
                humantime::format_rfc3339_seconds(not_after)
            )));
        }
        if is_self_issued(c) {
            if n != chain.len() {
                return Err(err(format!(
                    "certificate {n} {} is a self-signed root, so it must be the last",
                    describe(c)
                )));
            }
            if !c.verify(&key).unwrap_or(false) {
                return Err(err(format!(
                    "certificate {n} {} names itself as issuer but its signature does not verify with its own key",
                    describe(c)
                )));
            }
        }
        child = c;
    }
    Ok(chain)
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let mut b = b;
    while let [rest @ .., b'\n' | b'\r'] = b {
        b = rest;
    }
    b
}

/// PEM-encodes one DER certificate (64-character lines, trailing newline).
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so each chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
pub fn key_identifier(public_key_bits: &[u8]) -> Result<Vec<u8>> {
    hash(MessageDigest::sha1(), public_key_bits)
        .map(|d| d.to_vec())
        .map_err(crypto("computing a key identifier"))
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(key = %path.display(), "CA private key file is world-readable; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_path: &Path) {}

/// The subject Name of a certificate, as the bytes it holds.
/// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, signature, issuer, validity,
/// subject, … }, … }
fn raw_subject(cert_der: &[u8]) -> der::Result<&[u8]> {
    use der::Reader as _;
    let mut outer = der::SliceReader::new(cert_der)?;
    outer.sequence(|cert| {
        let tbs = cert.tlv_bytes()?;
        cert.read_slice(cert.remaining_len())?;
        let mut r = der::SliceReader::new(tbs)?;
        r.sequence(|t| {
            // [0] EXPLICIT version (tag byte 0xA0), absent for v1; then serialNumber.
            if t.tlv_bytes()?.first() == Some(&0xA0) {
                t.tlv_bytes()?;
            }
            t.tlv_bytes()?; // signature
            t.tlv_bytes()?; // issuer
            t.tlv_bytes()?; // validity
            let subject = t.tlv_bytes()?;
            t.read_slice(t.remaining_len())?;
            Ok::<_, der::Error>(subject)
        })
    })
}
