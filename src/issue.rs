//! Building and signing a leaf certificate: pure, no IO, no Kubernetes.
//!
//! Faithful to kube-controller-manager's signer (k8s-csr-rules §2, Appendix B): v3, random 128-bit
//! serial, NotBefore = now − 5 min, the 8 h "short" rule for NotAfter, capped at the CA's NotAfter,
//! issuer = CA subject bytes, keyUsage (critical) and extKeyUsage from the granted usages,
//! basicConstraints CA:FALSE (critical), authorityKeyIdentifier from the CA's SKI, SANs (critical when
//! the subject is empty), every other requested extension dropped.
//!
//! Deliberate differences, documented in the README: a subjectKeyIdentifier on the leaf (RFC 5280
//! SHOULD), the subject kept byte-for-byte as requested, and the output is the leaf followed by the
//! intermediates.
//!
//! The TBSCertificate is assembled here from the request's own DER (subject, SubjectPublicKeyInfo) so
//! OpenSSL is used only for the signature: re-decoding and re-encoding the key through OpenSSL costs
//! more than the signature itself for ECDSA and Ed25519 CAs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{AnyRef, BitString, BitStringRef, Ia5String, OctetString, UintRef};
use der::{Decode, Encode};
use openssl::sign::Signer;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::time::{Time, Validity};

use crate::ca::{key_identifier, pem, SigningCa};
use crate::csr::{San, VerifiedCsr};
use crate::error::crypto;
use crate::error::{Error, Result};
use crate::policy::Grant;
use crate::usage::{Effect, ExtKeyUsage};

/// Backdating of NotBefore, for clock skew between the signer and the certificate's users.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Below this lifetime NotAfter is not backdated (so the total validity is lifetime + 5 min).
pub const SHORT: Duration = Duration::from_secs(8 * 60 * 60);

const OID_KEY_USAGE: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_EXT_KEY_USAGE: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_BASIC_CONSTRAINTS: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_SKI: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AKI: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_SAN: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("2.5.29.17");

/// An issued certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf followed by the intermediates (never the root), PEM.
    pub certificate_pem: String,
    /// DER of the leaf.
    pub der: Vec<u8>,
    /// Serial number, lower-case hex without leading zeros.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The validity window for a lifetime signed at `now` by a CA expiring at `ca_not_after`
/// (k8s-csr-rules §2.7). Errors when the CA has expired.
pub fn validity(
    now: SystemTime,
    lifetime: Duration,
    ca_not_after: SystemTime,
) -> Result<(SystemTime, SystemTime)> {
    // Certificates carry whole seconds; truncate first so the arithmetic matches what is encoded.
    let now = UNIX_EPOCH
        + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let expired = || Error::CaExpired {
        not_after: humantime::format_rfc3339_seconds(ca_not_after).to_string(),
    };
    let not_before = now.checked_sub(BACKDATE).ok_or_else(expired)?;
    let end = if lifetime < SHORT {
        now.checked_add(lifetime)
    } else {
        now.checked_add(lifetime - BACKDATE)
    };
    // Past the end of representable time means "as long as the CA lives", which the cap below
    // applies anyway.
    let mut not_after = end.unwrap_or(ca_not_after);
    if not_after >= ca_not_after {
        not_after = ca_not_after;
    }
    if not_before >= ca_not_after || now >= ca_not_after {
        return Err(expired());
    }
    Ok((not_before, not_after))
}

#[derive(der::Sequence)]
struct TbsCertificate<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial_number: UintRef<'a>,
    signature: AnyRef<'a>,
    issuer: AnyRef<'a>,
    validity: Validity,
    subject: AnyRef<'a>,
    subject_public_key_info: AnyRef<'a>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<Extension>,
}

#[derive(der::Sequence)]
struct CertificateDer<'a> {
    tbs_certificate: AnyRef<'a>,
    signature_algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
}

fn enc(context: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| Error::Encode {
        context,
        message: e.to_string(),
    }
}

fn extension(id: const_oid::ObjectIdentifier, critical: bool, value: Vec<u8>) -> Result<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value).map_err(enc("extension value"))?,
    })
}

/// The keyUsage BIT STRING with RFC 5280 bit numbering and minimal length.
fn key_usage_bits(bits: u16) -> Result<Option<Vec<u8>>> {
    if bits == 0 {
        return Ok(None);
    }
    let highest = 15 - bits.leading_zeros() as u8;
    let mut bytes = Vec::with_capacity(2);
    // Bit n of the usage set is bit (7 - n % 8) of byte n / 8.
    for byte_index in 0..=(highest / 8) {
        let mut b = 0u8;
        for bit in 0..8u8 {
            let n = byte_index * 8 + bit;
            if n <= 15 && bits & (1 << n) != 0 {
                b |= 0x80 >> bit;
            }
        }
        bytes.push(b);
    }
    let unused = 7 - (highest % 8);
    let bs = BitString::new(unused, bytes).map_err(enc("keyUsage"))?;
    Ok(Some(bs.to_der().map_err(enc("keyUsage"))?))
}

fn general_name(san: &San) -> Result<Option<GeneralName>> {
    let ia5 = |s: &str| Ia5String::new(s).map_err(enc("subjectAltName"));
    Ok(Some(match san {
        San::Dns(s) => GeneralName::DnsName(ia5(s)?),
        San::Email(s) => GeneralName::Rfc822Name(ia5(s)?),
        San::Ip(ip) => GeneralName::from(*ip),
        San::Uri(s) => GeneralName::UniformResourceIdentifier(ia5(s)?),
        San::Unsupported(_) => return Ok(None),
    }))
}

/// Builds and signs the certificate for a verified request and its grant.
pub fn issue(ca: &SigningCa, csr: &VerifiedCsr, grant: &Grant, now: SystemTime) -> Result<Issued> {
    let (not_before, not_after) = validity(now, grant.lifetime, ca.not_after)?;
    issue_between(ca, csr, grant, not_before, not_after)
}

/// `issue` with the validity window chosen by the caller (pod certificates have their own rules:
/// kube-apiserver wants NotBefore within 5 minutes of its clock). `grant.lifetime` is not read.
pub fn issue_between(
    ca: &SigningCa,
    csr: &VerifiedCsr,
    grant: &Grant,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Issued> {
    let mut serial_bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut serial_bytes).map_err(crypto("generating a serial number"))?;
    let serial = UintRef::new(&serial_bytes).map_err(enc("serial number"))?;

    let mut ku = 0u16;
    let mut ekus: Vec<ExtKeyUsage> = Vec::new();
    for u in &grant.usages {
        match u.effect() {
            Effect::KeyUsage(bit) => ku |= 1 << (bit as u16),
            Effect::ExtKeyUsage(e) => {
                if !ekus.contains(&e) {
                    ekus.push(e)
                }
            }
        }
    }
    ekus.sort();

    let mut extensions = Vec::with_capacity(6);
    if let Some(value) = key_usage_bits(ku)? {
        extensions.push(extension(OID_KEY_USAGE, true, value)?);
    }
    if !ekus.is_empty() {
        let value = ExtendedKeyUsage(ekus.iter().map(|e| e.oid()).collect())
            .to_der()
            .map_err(enc("extKeyUsage"))?;
        extensions.push(extension(OID_EXT_KEY_USAGE, false, value)?);
    }
    let bc = BasicConstraints {
        ca: false,
        path_len_constraint: None,
    }
    .to_der()
    .map_err(enc("basicConstraints"))?;
    extensions.push(extension(OID_BASIC_CONSTRAINTS, true, bc)?);
    let ski = SubjectKeyIdentifier(
        OctetString::new(key_identifier(&csr.public_key_bits)?)
            .map_err(enc("subjectKeyIdentifier"))?,
    )
    .to_der()
    .map_err(enc("subjectKeyIdentifier"))?;
    extensions.push(extension(OID_SKI, false, ski)?);
    if let Some(id) = &ca.subject_key_id {
        if csr.subject_der != ca.subject_der {
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(id.clone()).map_err(enc("authorityKeyIdentifier"))?,
                ),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            }
            .to_der()
            .map_err(enc("authorityKeyIdentifier"))?;
            extensions.push(extension(OID_AKI, false, aki)?);
        }
    }
    // Go's order: DNS, email, IP, URI.
    let mut names = Vec::with_capacity(grant.sans.len());
    for kind in 0..4 {
        for san in &grant.sans {
            let k = match san {
                San::Dns(_) => 0,
                San::Email(_) => 1,
                San::Ip(_) => 2,
                San::Uri(_) => 3,
                San::Unsupported(_) => continue,
            };
            if k == kind {
                if let Some(n) = general_name(san)? {
                    names.push(n);
                }
            }
        }
    }
    if !names.is_empty() {
        let value = SubjectAltName(names)
            .to_der()
            .map_err(enc("subjectAltName"))?;
        extensions.push(extension(OID_SAN, csr.subject_is_empty(), value)?);
    }

    let alg =
        AnyRef::from_der(ca.algorithm.algorithm_identifier_der()).map_err(enc("algorithm"))?;
    let tbs = TbsCertificate {
        version: 2,
        serial_number: serial,
        signature: alg,
        issuer: AnyRef::from_der(&ca.subject_der).map_err(enc("issuer"))?,
        validity: Validity::new(
            Time::try_from(not_before).map_err(enc("notBefore"))?,
            Time::try_from(not_after).map_err(enc("notAfter"))?,
        ),
        subject: AnyRef::from_der(&csr.subject_der).map_err(enc("subject"))?,
        subject_public_key_info: AnyRef::from_der(&csr.spki_der).map_err(enc("public key"))?,
        extensions,
    };
    let tbs_der = tbs.to_der().map_err(enc("TBSCertificate"))?;

    let crypto = crypto("signing the certificate");
    let signature = match ca.algorithm.digest() {
        Some(md) => Signer::new(md, ca.signing_key())
            .and_then(|mut s| s.sign_oneshot_to_vec(&tbs_der))
            .map_err(crypto)?,
        None => Signer::new_without_digest(ca.signing_key())
            .and_then(|mut s| s.sign_oneshot_to_vec(&tbs_der))
            .map_err(crypto)?,
    };
    let cert = CertificateDer {
        tbs_certificate: AnyRef::from_der(&tbs_der).map_err(enc("certificate"))?,
        signature_algorithm: alg,
        signature: BitStringRef::from_bytes(&signature).map_err(enc("signature"))?,
    };
    let der = cert.to_der().map_err(enc("certificate"))?;

    let mut certificate_pem = pem(&der);
    certificate_pem.push_str(&ca.chain_pem);
    Ok(Issued {
        certificate_pem,
        der,
        serial: hex(serial.as_bytes()),
        not_before,
        not_after,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    if s.is_empty() {
        s.push('0');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn short_lifetimes_are_not_backdated_at_the_end() {
        let now = t(1_800_000_000);
        let far = t(4_000_000_000);
        let (nb, na) = validity(now, Duration::from_secs(3600), far).expect("valid");
        assert_eq!(nb, t(1_800_000_000 - 300));
        assert_eq!(na, t(1_800_000_000 + 3600));
        let (_, na) = validity(now, Duration::from_secs(86400), far).expect("valid");
        assert_eq!(na, t(1_800_000_000 + 86400 - 300));
        let (_, na) = validity(now, Duration::from_secs(28800), far).expect("valid");
        assert_eq!(
            na,
            t(1_800_000_000 + 28800 - 300),
            "8 h exactly is not short"
        );
    }

    #[test]
    fn capped_at_ca_expiry_and_refused_after_it() {
        let now = t(1_800_000_000);
        let ca = t(1_800_000_000 + 1000);
        let (_, na) = validity(now, Duration::from_secs(86400), ca).expect("valid");
        assert_eq!(na, ca);
        assert!(matches!(
            validity(t(1_800_001_000), Duration::from_secs(600), ca),
            Err(Error::CaExpired { .. })
        ));
    }

    #[test]
    fn key_usage_bits_are_minimal() {
        // digitalSignature + keyEncipherment = bits 0 and 2: 0b1010_0000, 5 unused bits.
        let der = key_usage_bits(0b101).expect("ok").expect("some");
        assert_eq!(der, vec![0x03, 0x02, 0x05, 0xa0]);
        // decipherOnly (bit 8) needs a second byte.
        let der = key_usage_bits(1 << 8).expect("ok").expect("some");
        assert_eq!(der, vec![0x03, 0x03, 0x07, 0x00, 0x80]);
        assert_eq!(key_usage_bits(0).expect("ok"), None);
    }
}
