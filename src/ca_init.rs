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

/// `ca init --pkcs11`: the key pair is generated inside the token (sensitive, not extractable); only
/// the self-signed CA certificate is written, to `opts.out/ca.crt`. The certificate is signed by the
/// token and checked with OpenSSL against the public key the token returned.
pub fn init_pkcs11(opts: &InitOptions, p11: &crate::config::Pkcs11Settings) -> Result<Created> {
    use crate::pkcs11::{Pin, Pkcs11Key, TokenKeyType};
    opts.check()?;
    if opts.intermediate {
        return Err(Error::InvalidOption {
            option: "--intermediate",
            message: "not with --pkcs11: the token key is the signing CA; create an intermediate's key in the token and have it signed by your root".into(),
        });
    }
    crate::pkcs11::Pkcs11Uri::parse(&p11.uri).map_err(|message| Error::InvalidOption {
        option: "--pkcs11",
        message,
    })?;
    std::fs::create_dir_all(&opts.out).map_err(|error| Error::Io {
        path: opts.out.clone(),
        error,
    })?;
    let cert_path = opts.out.join("ca.crt");
    if cert_path.exists() {
        return Err(Error::Io {
            path: cert_path,
            error: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists; refusing to overwrite a CA",
            ),
        });
    }
    let pin_bytes = std::fs::read(&p11.pin_file).map_err(|error| Error::Io {
        path: p11.pin_file.clone(),
        error,
    })?;
    let pin = || {
        Pin::from_bytes(&pin_bytes).ok_or_else(|| Error::InvalidOption {
            option: "--pin-file",
            message: "must hold one line of UTF-8 text (the PIN)".into(),
        })
    };
    let key_type = match opts.key_type {
        KeyType::Rsa2048 => TokenKeyType::Rsa(2048),
        KeyType::Rsa3072 => TokenKeyType::Rsa(3072),
        KeyType::Rsa4096 => TokenKeyType::Rsa(4096),
        KeyType::P256 => TokenKeyType::Ec(Nid::X9_62_PRIME256V1),
        KeyType::P384 => TokenKeyType::Ec(Nid::SECP384R1),
        KeyType::P521 => TokenKeyType::Ec(Nid::SECP521R1),
        KeyType::Ed25519 => TokenKeyType::Ed25519,
    };
    let public = crate::pkcs11::generate(p11, &pin()?, key_type)?.public_key;
    let algorithm = crate::ca::signature_algorithm(&public).map_err(|message| Error::Encode {
        context: "the token's public key",
        message,
    })?;
    let key = Pkcs11Key::open(p11, pin()?, algorithm)?;
    let der = self_signed(&public, algorithm, &opts.common_name, opts.days, |tbs| {
        key.sign(tbs)
    })?;
    let cert = X509::from_der(&der).map_err(crypto("reading the new CA certificate"))?;
    if !cert
        .verify(&public)
        .map_err(crypto("verifying the new CA certificate"))?
    {
        return Err(Error::Encode {
            context: "the new CA certificate",
            message: "its signature by the token does not verify with the token's public key"
                .into(),
        });
    }
    let pem = cert.to_pem().map_err(crypto("encoding a certificate"))?;
    write_new(&cert_path, &pem, 0o644)?;
    Ok(Created {
        cert: cert_path.clone(),
        key: PathBuf::new(),
        trust_anchor: cert_path.clone(),
        files: vec![cert_path],
    })
}

/// A self-signed CA certificate for `public` whose signature comes from `sign` (the token), built
/// like `ca_certificate`: CA:TRUE (critical), keyCertSign+cRLSign+digitalSignature (critical), SKI.
fn self_signed(
    public: &PKey<openssl::pkey::Public>,
    algorithm: crate::ca::SignatureAlgorithm,
    common_name: &str,
    days: u32,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    use crate::issue::{enc, extension, key_usage_bits, CertificateDer, TbsCertificate};
    use der::asn1::{AnyRef, BitStringRef, OctetString, UintRef};
    use der::{Decode, Encode};
    let c = crypto("building a CA certificate");
    let mut name = X509NameBuilder::new().map_err(&c)?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .map_err(&c)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "csr-signer")
        .map_err(&c)?;
    let name_der = name.build().to_der().map_err(&c)?;
    let spki_der = public.public_key_to_der().map_err(&c)?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&spki_der).map_err(enc("public key"))?;
    let ski = crate::ca::key_identifier(spki.subject_public_key.raw_bytes())?;

    let mut serial = [0u8; 16];
    openssl::rand::rand_bytes(&mut serial).map_err(&c)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let now = std::time::SystemTime::now();
    let not_before = now - std::time::Duration::from_secs(300);
    let not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    // digitalSignature (0), keyCertSign (5), cRLSign (6).
    let ku = key_usage_bits((1 << 0) | (1 << 5) | (1 << 6))?.unwrap_or_default();
    let bc = x509_cert::ext::pkix::BasicConstraints {
        ca: true,
        path_len_constraint: None,
    }
    .to_der()
    .map_err(enc("basicConstraints"))?;
    let ski = x509_cert::ext::pkix::SubjectKeyIdentifier(
        OctetString::new(ski).map_err(enc("subjectKeyIdentifier"))?,
    )
    .to_der()
    .map_err(enc("subjectKeyIdentifier"))?;
    let alg = AnyRef::from_der(algorithm.algorithm_identifier_der()).map_err(enc("algorithm"))?;
    let name = AnyRef::from_der(&name_der).map_err(enc("name"))?;
    let tbs = TbsCertificate {
        version: 2,
        serial_number: UintRef::new(&serial).map_err(enc("serial number"))?,
        signature: alg,
        issuer: name,
        validity: x509_cert::time::Validity::new(
            x509_cert::time::Time::try_from(not_before).map_err(enc("notBefore"))?,
            x509_cert::time::Time::try_from(not_after).map_err(enc("notAfter"))?,
        ),
        subject: name,
        subject_public_key_info: AnyRef::from_der(&spki_der).map_err(enc("public key"))?,
        extensions: vec![
            extension(crate::issue::OID_BASIC_CONSTRAINTS, true, bc)?,
            extension(crate::issue::OID_KEY_USAGE, true, ku)?,
            extension(crate::issue::OID_SKI, false, ski)?,
        ],
    }
    .to_der()
    .map_err(enc("TBSCertificate"))?;
    let signature = sign(&tbs)?;
    CertificateDer {
        tbs_certificate: AnyRef::from_der(&tbs).map_err(enc("certificate"))?,
        signature_algorithm: alg,
        signature: BitStringRef::from_bytes(&signature).map_err(enc("signature"))?,
    }
    .to_der()
    .map_err(enc("certificate"))
}
