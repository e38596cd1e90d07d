//! `csr-signer ca init`: a development CA (a self-signed root, optionally with an intermediate that
//! does the signing). Production CAs come from elsewhere (see `ca/README.md`); this exists so that
//! trying csr-signer takes one command. Existing files are never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::error::crypto;
use crate::error::{Error, Result};

/// Key types a CA can be created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    P256,
    P384,
    P521,
    Ed25519,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub out: PathBuf,
    pub key_type: KeyType,
    pub days: u32,
    pub common_name: String,
    pub intermediate: bool,
}

/// The files written.
#[derive(Clone, Debug)]
pub struct Created {
    /// The signing CA certificate (`ca.crt`): the root, or the intermediate.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The trust anchor to distribute (`root.crt` with an intermediate, else `ca.crt`).
    pub trust_anchor: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Generates a private key of the given type.
pub fn generate_key(key_type: KeyType) -> Result<PKey<Private>> {
    let c = crypto("generating a key");
    let ec = |nid| -> Result<PKey<Private>> {
        let group = EcGroup::from_curve_name(nid).map_err(&c)?;
        PKey::from_ec_key(EcKey::generate(&group).map_err(&c)?).map_err(&c)
    };
    match key_type {
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).map_err(&c)?).map_err(&c),
        KeyType::Rsa3072 => PKey::from_rsa(Rsa::generate(3072).map_err(&c)?).map_err(&c),
        KeyType::Rsa4096 => PKey::from_rsa(Rsa::generate(4096).map_err(&c)?).map_err(&c),
        KeyType::P256 => ec(Nid::X9_62_PRIME256V1),
        KeyType::P384 => ec(Nid::SECP384R1),
        KeyType::P521 => ec(Nid::SECP521R1),
        KeyType::Ed25519 => PKey::generate_ed25519().map_err(&c),
    }
}

fn digest_for(key: &PKey<Private>) -> MessageDigest {
    match key.id() {
        openssl::pkey::Id::ED25519 => MessageDigest::null(),
        openssl::pkey::Id::EC if key.bits() > 384 => MessageDigest::sha512(),
        openssl::pkey::Id::EC if key.bits() > 256 => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    }
}

/// Builds a CA certificate for `key`, signed by `issuer` (or self-signed).
pub fn ca_certificate(
    key: &PKey<Private>,
    common_name: &str,
    days: u32,
    issuer: Option<(&X509, &PKey<Private>)>,
    path_len: Option<u32>,
) -> Result<X509> {
    let c = crypto("building a CA certificate");
    let mut name = X509NameBuilder::new().map_err(&c)?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .map_err(&c)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "csr-signer development")
        .map_err(&c)?;
    let name = name.build();

    let mut b = X509Builder::new().map_err(&c)?;
    b.set_version(2).map_err(&c)?;
    let mut serial = BigNum::new().map_err(&c)?;
    serial
        .rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .map_err(&c)?;
    let serial = Asn1Integer::from_bn(&serial).map_err(&c)?;
    b.set_serial_number(&serial).map_err(&c)?;
    b.set_subject_name(&name).map_err(&c)?;
    b.set_issuer_name(issuer.map(|(cert, _)| cert.subject_name()).unwrap_or(&name))
        .map_err(&c)?;
    b.set_pubkey(key).map_err(&c)?;
    // Backdated like the leaves, so a freshly created CA is usable on a machine whose clock lags.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let not_before = Asn1Time::from_unix(now - 300).map_err(&c)?;
    b.set_not_before(&not_before).map_err(&c)?;
    let not_after = Asn1Time::days_from_now(days).map_err(&c)?;
    b.set_not_after(&not_after).map_err(&c)?;
    let mut bc = BasicConstraints::new();
    bc.critical().ca();
    if let Some(n) = path_len {
        bc.pathlen(n);
    }
    b.append_extension(bc.build().map_err(&c)?).map_err(&c)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .digital_signature()
            .build()
            .map_err(&c)?,
    )
    .map_err(&c)?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|(cert, _)| cert.as_ref()), None))
        .map_err(&c)?;
    b.append_extension(ski).map_err(&c)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(issuer.map(|(cert, _)| cert.as_ref()), None))
            .map_err(&c)?;
        b.append_extension(aki).map_err(&c)?;
    }
    let signing_key = issuer.map(|(_, k)| k).unwrap_or(key);
    b.sign(signing_key, digest_for(signing_key)).map_err(&c)?;
    Ok(b.build())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let io = |error| Error::Io {
        path: path.to_owned(),
        error,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    Ok(())
}

/// Longest CA validity `ca init` makes (`Asn1Time` and clients alike choke far beyond it).
pub const MAX_DAYS: u32 = 36_500;

impl InitOptions {
    /// Refuses options that would make a useless or broken CA, naming the flag.
    fn check(&self) -> Result<()> {
        let invalid =
            |option: &'static str, message: String| Err(Error::InvalidOption { option, message });
        // With an intermediate, the intermediate ends a day before the root, so it needs two.
        let min_days = if self.intermediate { 2 } else { 1 };
        if self.days < min_days {
            return invalid(
                "--days",
                format!(
                    "must be at least {min_days}{} (got {})",
                    if self.intermediate {
                        " with --intermediate"
                    } else {
                        ""
                    },
                    self.days
                ),
            );
        }
        if self.days > MAX_DAYS {
            return invalid(
                "--days",
                format!("must be at most {MAX_DAYS} (got {})", self.days),
            );
        }
        if self.common_name.trim().is_empty() {
            return invalid("--common-name", "must not be empty".into());
        }
        Ok(())
    }
}

/// Creates the CA files in `opts.out` (created if missing). Refuses to overwrite anything.
pub fn init(opts: &InitOptions) -> Result<Created> {
    opts.check()?;
    std::fs::create_dir_all(&opts.out).map_err(|error| Error::Io {
        path: opts.out.clone(),
        error,
    })?;
    let names: &[&str] = if opts.intermediate {
        &["root.crt", "root.key", "ca.crt", "ca.key"]
    } else {
        &["ca.crt", "ca.key"]
    };
    for n in names {
        let p = opts.out.join(n);
        if p.exists() {
            return Err(Error::Io {
                path: p,
                error: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists; refusing to overwrite a CA",
                ),
            });
        }
    }
    let pem_key = |k: &PKey<Private>| {
        k.private_key_to_pem_pkcs8()
            .map_err(crypto("encoding a key"))
    };
    let pem_cert = |c: &X509| c.to_pem().map_err(crypto("encoding a certificate"));
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>, mode: u32| -> Result<PathBuf> {
        let p = opts.out.join(name);
        write_new(&p, &bytes, mode)?;
        files.push(p.clone());
        Ok(p)
    };
    let root_key = generate_key(opts.key_type)?;
    if opts.intermediate {
        let root = ca_certificate(
            &root_key,
            &format!("{} root", opts.common_name),
            opts.days,
            None,
            Some(1),
        )?;
        let int_key = generate_key(opts.key_type)?;
        // The intermediate must not outlive the root.
        let int = ca_certificate(
            &int_key,
            &opts.common_name,
            opts.days - 1,
            Some((&root, &root_key)),
            Some(0),
        )?;
        let trust_anchor = put("root.crt", pem_cert(&root)?, 0o644)?;
        put("root.key", pem_key(&root_key)?, 0o600)?;
        let cert = put("ca.crt", pem_cert(&int)?, 0o644)?;
        let key = put("ca.key", pem_key(&int_key)?, 0o600)?;
        Ok(Created {
            cert,
            key,
            trust_anchor,
            files,
        })
    } else {
        let root = ca_certificate(&root_key, &opts.common_name, opts.days, None, None)?;
        let cert = put("ca.crt", pem_cert(&root)?, 0o644)?;
        let key = put("ca.key", pem_key(&root_key)?, 0o600)?;
        Ok(Created {
            cert: cert.clone(),
            key,
            trust_anchor: cert,
            files,
        })
    }
}
