//! Parsing and verifying a PKCS#10 request from `spec.request`.
//!
//! Order matters: the size cap, then the first PEM block Go finds (of type `CERTIFICATE REQUEST`), then
//! the DER, then the public key (`parse`: keys anyone could sign for are refused here, and the caller
//! may refuse the key's type or size before paying for a verification), then the self-signature
//! (`ParsedCsr::verify`) — and only after the signature verifies is anything else (subject, SANs,
//! requested extensions) read out. Nothing here decides policy and nothing here panics on input.

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode, Tagged};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use openssl::x509::X509Req;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::request::CertReq;

use crate::refusal::{Reason, Refusal};

/// Largest `spec.request` accepted. Large enough for a request with thousands of SANs (so that such a
/// request is refused for what it asks, not for its size), small enough to bound parsing work.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_EXTENSION_REQ: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const OID_ST: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.8");
const OID_L: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.7");
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

/// The public key type and size of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa {
        bits: u32,
    },
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
    /// Anything else (DSA, other curves, ...), described for the refusal message.
    Other(String),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::EcP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcP384 => f.write_str("ECDSA P-384"),
            KeyKind::EcP521 => f.write_str("ECDSA P-521"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Other(s) => f.write_str(s),
        }
    }
}

/// A subjectAltName from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Email(String),
    Ip(IpAddr),
    Uri(String),
    /// otherName, directoryName, registeredID, …: named for the refusal message.
    Unsupported(&'static str),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(s) => write!(f, "DNS:{s}"),
            San::Email(s) => write!(f, "email:{s}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
            San::Uri(s) => write!(f, "URI:{s}"),
            San::Unsupported(kind) => write!(f, "{kind}"),
        }
    }
}

/// A request whose self-signature has been verified, with what the policy and issuance need.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// The subject exactly as requested (DER of the Name).
    pub subject_der: Vec<u8>,
    /// Every commonName value, in order.
    pub common_names: Vec<String>,
    /// Every organization value, in order.
    pub organizations: Vec<String>,
    /// Subject attribute types other than C, ST, L, O, OU and CN (dotted OIDs).
    pub other_attributes: Vec<String>,
    /// The SubjectPublicKeyInfo exactly as requested (DER).
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey bits (for the subject key identifier).
    pub public_key_bits: Vec<u8>,
    pub key: KeyKind,
    pub sans: Vec<San>,
    /// The request asked for basicConstraints CA:TRUE.
    pub requests_ca: bool,
}

impl VerifiedCsr {
    /// The subject is an empty SEQUENCE.
    pub fn subject_is_empty(&self) -> bool {
        self.subject_der == [0x30, 0x00]
    }
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::new(Reason::MalformedRequest, message)
}

/// The received bytes of the parts that are signed or copied into the certificate.
struct RawRequest<'a> {
    /// CertificationRequestInfo, whole TLV: what the signature covers.
    info: &'a [u8],
    /// Its subject Name, whole TLV.
    subject: &'a [u8],
}

impl<'a> RawRequest<'a> {
    /// CertificationRequest ::= SEQUENCE { info SEQUENCE { version, subject, spki, [0] attributes }, … }
    fn split(der_bytes: &'a [u8]) -> der::Result<RawRequest<'a>> {
        use der::{Decode as _, Reader as _};
        let mut outer = der::SliceReader::new(der_bytes)?;
        let info = outer.sequence(|r| {
            let info = r.tlv_bytes()?;
            // algorithm and signature: parsed (and checked) by CertReq; skipped here.
            r.tlv_bytes()?;
            r.tlv_bytes()?;
            Ok::<_, der::Error>(info)
        })?;
        outer.finish()?;
        let mut inner = der::SliceReader::new(info)?;
        let subject = inner.sequence(|r| {
            u8::decode(r)?;
            let subject = r.tlv_bytes()?;
            r.read_slice(r.remaining_len())?;
            Ok::<_, der::Error>(subject)
        })?;
        Ok(RawRequest { info, subject })
    }
}

/// A request that parsed and whose key was checked for what anyone could sign with, but whose
/// self-signature has not been verified yet: the caller may refuse its key (type, size) before paying
/// for a verification.
pub struct ParsedCsr {
    der: Vec<u8>,
    req: CertReq,
    key: KeyKind,
    pkey: Option<PKey<Public>>,
}

impl std::fmt::Debug for ParsedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCsr").field("key", &self.key).finish()
    }
}

/// Parses `spec.request` (PEM bytes) and checks its public key, without verifying the signature.
pub fn parse(pem: &[u8]) -> Result<ParsedCsr, Refusal> {
    if pem.len() > MAX_REQUEST_BYTES {
        return Err(malformed(format!(
            "request is {} bytes, more than the {MAX_REQUEST_BYTES} allowed",
            pem.len()
        )));
    }
    parse_der(request_der(pem)?)
}

/// Parses a DER request (a PodCertificateRequest's `stubPKCS10Request`) and checks its public key,
/// without verifying the signature.
pub fn parse_der(der: Vec<u8>) -> Result<ParsedCsr, Refusal> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(malformed(format!(
            "request is {} bytes, more than the {MAX_REQUEST_BYTES} allowed",
            der.len()
        )));
    }
    let req = CertReq::from_der(&der)
        .map_err(|e| malformed(format!("cannot parse the certificate request: {e}")))?;
    RawRequest::split(&der)
        .map_err(|e| malformed(format!("cannot parse the certificate request: {e}")))?;
    let (key, pkey) = public_key(&req.info.public_key)?;
    Ok(ParsedCsr {
        der,
        req,
        key,
        pkey,
    })
}

/// A public key given on its own (a v1beta1 PodCertificateRequest's `pkixPublicKey`), checked for what
/// anyone could sign with, its proof of possession not verified yet.
pub struct ParsedKey {
    spki_der: Vec<u8>,
    public_key_bits: Vec<u8>,
    key: KeyKind,
    pkey: Option<PKey<Public>>,
}

/// A key whose holder proved possession: what issuance needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenKey {
    /// The SubjectPublicKeyInfo as received (DER).
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey bits (for the subject key identifier).
    pub public_key_bits: Vec<u8>,
    pub key: KeyKind,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey").field("key", &self.key).finish()
    }
}

/// Parses a DER SubjectPublicKeyInfo and checks the key as `parse` does.
pub fn parse_public_key(der: &[u8]) -> Result<ParsedKey, Refusal> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(malformed(format!(
            "public key is {} bytes, more than the {MAX_REQUEST_BYTES} allowed",
            der.len()
        )));
    }
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|e| malformed(format!("cannot parse the public key: {e}")))?;
    let (key, pkey) = public_key(&spki)?;
    Ok(ParsedKey {
        spki_der: der.to_vec(),
        public_key_bits: spki.subject_public_key.raw_bytes().to_vec(),
        key,
        pkey,
    })
}

impl ParsedKey {
    pub fn key(&self) -> &KeyKind {
        &self.key
    }

    /// Verifies a v1beta1 PodCertificateRequest's `proofOfPossession`: a signature over `message` (the
    /// pod UID's bytes) as the kubelet makes it and kube-apiserver checks it — Ed25519 over the bytes,
    /// ECDSA (ASN.1) over their SHA-256 on every curve, RSA-PSS with SHA-256 and any salt length.
    pub fn verify_proof(self, message: &[u8], proof: &[u8]) -> Result<ProvenKey, Refusal> {
        let bad = || {
            Refusal::new(
                Reason::BadSignature,
                "proofOfPossession does not verify with pkixPublicKey over the pod UID",
            )
        };
        let pkey = self.pkey.as_ref().ok_or_else(|| {
            Refusal::new(
                Reason::UnsupportedKeyType,
                format!("{} keys are not supported", self.key),
            )
        })?;
        let ok = (|| -> Result<bool, openssl::error::ErrorStack> {
            match self.key {
                KeyKind::Ed25519 => {
                    let mut v = Verifier::new_without_digest(pkey)?;
                    v.verify_oneshot(proof, message)
                }
                KeyKind::Rsa { .. } => {
                    let mut v = Verifier::new(MessageDigest::sha256(), pkey)?;
                    v.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)?;
                    v.set_rsa_mgf1_md(MessageDigest::sha256())?;
                    // -2 is RSA_PSS_SALTLEN_AUTO when verifying: Go's SignPSS with nil options uses
                    // the longest salt that fits, and Go's verifier accepts any length.
                    v.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::custom(-2))?;
                    v.update(message)?;
                    v.verify(proof)
                }
                _ => {
                    let mut v = Verifier::new(MessageDigest::sha256(), pkey)?;
                    v.update(message)?;
                    v.verify(proof)
                }
            }
        })()
        .unwrap_or(false);
        if !ok {
            return Err(bad());
        }
        Ok(ProvenKey {
            spki_der: self.spki_der,
            public_key_bits: self.public_key_bits,
            key: self.key,
        })
    }
}

impl VerifiedCsr {
    /// The verified request's key, for a PodCertificateRequest (whose stub request carries nothing else).
    pub fn proven_key(&self) -> ProvenKey {
        ProvenKey {
            spki_der: self.spki_der.clone(),
            public_key_bits: self.public_key_bits.clone(),
            key: self.key.clone(),
        }
    }
}

/// Parses `spec.request` (PEM bytes), verifies the self-signature and extracts its content.
pub fn parse_and_verify(pem: &[u8]) -> Result<VerifiedCsr, Refusal> {
    parse(pem)?.verify()
}

impl ParsedCsr {
    /// The public key's type and size.
    pub fn key(&self) -> &KeyKind {
        &self.key
    }

    /// Verifies the self-signature, then reads out what the policy and issuance need.
    pub fn verify(self) -> Result<VerifiedCsr, Refusal> {
        let ParsedCsr {
            der,
            req,
            key,
            pkey,
        } = self;
        // The signature covers the CertificationRequestInfo bytes as received. Re-encoding the parsed
        // value is not the same: the `der` crate sorts SET OF members (a multi-valued RDN, the
        // attributes) while decoding, so a valid request whose sets were not in DER order would fail to
        // verify (Go and OpenSSL verify the received bytes, and so must we).
        let raw = RawRequest::split(&der)
            .map_err(|e| malformed(format!("cannot parse the certificate request: {e}")))?;
        let signature = req
            .signature
            .as_bytes()
            .ok_or_else(|| malformed("signature is not a whole number of bytes"))?;
        let fast = pkey.and_then(|k| verify(&k, &req.algorithm.oid, raw.info, signature));
        let verified = match fast {
            Some(ok) => ok,
            // Keys or algorithms without a fast path (DSA, other curves, RSA-PSS): let OpenSSL verify
            // the whole request, so a well-formed but disallowed key is refused for its type, not its
            // signature.
            None => X509Req::from_der(&der)
                .and_then(|r| {
                    let k = r.public_key()?;
                    r.verify(&k)
                })
                .unwrap_or(false),
        };
        if !verified {
            return Err(Refusal::new(
                Reason::BadSignature,
                "the request's self-signature does not verify with its public key",
            ));
        }
        extract(&req, raw.subject, key)
    }
}

/// Everything after the signature check.
fn extract(req: &CertReq, raw_subject: &[u8], key: KeyKind) -> Result<VerifiedCsr, Refusal> {
    let spki = &req.info.public_key;
    // Kept byte for byte as received (see above: a re-encoding may reorder a multi-valued RDN).
    let subject_der = raw_subject.to_vec();
    let mut common_names = Vec::new();
    let mut organizations = Vec::new();
    let mut other_attributes = Vec::new();
    for rdn in req.info.subject.iter_rdn() {
        // RFC 5280: RelativeDistinguishedName ::= SET SIZE (1..MAX). An empty one names nobody, and a
        // subject of one empty RDN is not the empty subject `NoIdentity` looks for.
        if rdn.is_empty() {
            return Err(malformed(
                "the subject has an empty relative distinguished name (a SET with no attribute)",
            ));
        }
    }
    for atv in req.info.subject.iter() {
        // The subject is copied into the certificate as it is, so every value must be one Go's
        // certificate parser reads (kube-apiserver and Go clients reject the certificate otherwise).
        let value = go_attribute_string(&atv.value).map_err(|why| {
            malformed(format!(
                "subject attribute {} {why}, which Go's crypto/x509 cannot parse in a certificate",
                attribute_name(&atv.oid)
            ))
        })?;
        if atv.oid == OID_C {
            // RFC 5280 (X.520): CountryName ::= PrintableString (SIZE (2)).
            if atv.value.tag() != der::Tag::PrintableString || value.len() != 2 {
                return Err(malformed(format!(
                    "subject attribute C must be a PrintableString of 2 characters, got {:?}",
                    value.chars().take(64).collect::<String>()
                )));
            }
        }
        if atv.oid == OID_CN {
            common_names.push(value);
        } else if atv.oid == OID_O {
            organizations.push(value);
        } else if ![OID_C, OID_ST, OID_L, OID_OU].contains(&atv.oid) {
            other_attributes.push(atv.oid.to_string());
        }
    }

    let spki_der = spki
        .to_der()
        .map_err(|e| malformed(format!("cannot encode the public key: {e}")))?;
    let public_key_bits = spki.subject_public_key.raw_bytes().to_vec();

    let mut sans = Vec::new();
    let mut requests_ca = false;
    // Go reads the first value of each extensionRequest attribute, and of several subjectAltName
    // extensions keeps the last: anything but one of each is read differently by an approver, so it is
    // refused rather than interpreted.
    let ext_requests = req
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == OID_EXTENSION_REQ)
        .count();
    if ext_requests > 1 {
        return Err(malformed("more than one extensionRequest attribute"));
    }
    let mut san_extensions = 0;
    for attr in req.info.attributes.iter() {
        if attr.oid != OID_EXTENSION_REQ {
            continue;
        }
        if attr.values.len() != 1 {
            return Err(malformed(format!(
                "the extensionRequest attribute has {} values, expected one",
                attr.values.len()
            )));
        }
        for value in attr.values.iter() {
            let exts: Vec<x509_cert::ext::Extension> = value
                .decode_as()
                .map_err(|e| malformed(format!("malformed extension request: {e}")))?;
            for ext in exts {
                if ext.extn_id == OID_SAN {
                    san_extensions += 1;
                    if san_extensions > 1 {
                        return Err(malformed("more than one subjectAltName extension"));
                    }
                    let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                        .map_err(|e| malformed(format!("malformed subjectAltName: {e}")))?;
                    for name in san.0 {
                        sans.push(general_name(name)?);
                    }
                } else if ext.extn_id == OID_BASIC_CONSTRAINTS {
                    let bc = BasicConstraints::from_der(ext.extn_value.as_bytes())
                        .map_err(|e| malformed(format!("malformed basicConstraints: {e}")))?;
                    requests_ca |= bc.ca;
                }
            }
        }
    }

    Ok(VerifiedCsr {
        subject_der,
        common_names,
        organizations,
        other_attributes,
        spki_der,
        public_key_bits,
        key,
        sans,
        requests_ca,
    })
}

/// The DER of the block kube-apiserver validated: the first block Go's `pem.Decode` returns (found by
/// the same algorithm, see `crate::pem`), which must be a `CERTIFICATE REQUEST` (k8s-csr-rules §1.6).
/// Text before and after it is ignored, as kube-apiserver does. kube-apiserver also accepts PEM headers
/// (it never looks at them); a request carries none, so they are refused rather than ignored.
fn request_der(input: &[u8]) -> Result<Vec<u8>, Refusal> {
    let (block, _) = crate::pem::decode(input);
    let block = block.ok_or_else(|| {
        malformed("no PEM block found; PEM block type must be CERTIFICATE REQUEST")
    })?;
    if block.label != b"CERTIFICATE REQUEST" {
        let label: String = String::from_utf8_lossy(&block.label)
            .chars()
            .take(64)
            .collect();
        return Err(malformed(format!(
            "PEM block type must be CERTIFICATE REQUEST, found {label:?}"
        )));
    }
    if !block.headers.is_empty() {
        return Err(malformed("PEM headers are not allowed"));
    }
    Ok(block.bytes)
}

/// Builds an OpenSSL key from the SPKI's parts for the supported types. Building it from its
/// components is several times cheaper than OpenSSL 3.0's generic DER decoder.
fn public_key(
    spki: &spki::SubjectPublicKeyInfoOwned,
) -> Result<(KeyKind, Option<PKey<Public>>), Refusal> {
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed("public key is not a whole number of bytes"))?;
    let alg = spki.algorithm.oid;
    if alg == OID_RSA {
        let (n, e) = rsa_components(bits)?;
        check_rsa(n, e)?;
        let n = BigNum::from_slice(n).map_err(|e| malformed(format!("RSA modulus: {e}")))?;
        let e = BigNum::from_slice(e).map_err(|e| malformed(format!("RSA exponent: {e}")))?;
        let size = n.num_bits() as u32;
        let rsa =
            Rsa::from_public_components(n, e).map_err(|e| malformed(format!("RSA key: {e}")))?;
        let pkey = PKey::from_rsa(rsa).map_err(|e| malformed(format!("RSA key: {e}")))?;
        return Ok((KeyKind::Rsa { bits: size }, Some(pkey)));
    }
    if alg == OID_EC {
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok())
            .ok_or_else(|| malformed("EC key without a named curve"))?;
        let (kind, nid) = if curve == OID_P256 {
            (KeyKind::EcP256, Nid::X9_62_PRIME256V1)
        } else if curve == OID_P384 {
            (KeyKind::EcP384, Nid::SECP384R1)
        } else if curve == OID_P521 {
            (KeyKind::EcP521, Nid::SECP521R1)
        } else {
            return Ok((
                KeyKind::Other(format!("ECDSA {} ({curve})", oid_name(&curve))),
                None,
            ));
        };
        check_ec_encoding(&kind, bits)?;
        let pkey = (|| {
            let group = ec_group(nid)?;
            let mut ctx = BigNumContext::new()?;
            let point = EcPoint::from_bytes(group, bits, &mut ctx)?;
            let ec = EcKey::from_public_key(group, &point)?;
            PKey::from_ec_key(ec)
        })()
        // OpenSSL refuses a point that is not on the curve (or has a coordinate >= p), as Go does.
        .map_err(|e| {
            malformed(format!(
                "{kind} public key is not a point of the curve: {e}"
            ))
        })?;
        return Ok((kind, Some(pkey)));
    }
    if alg == OID_ED25519 {
        if ED25519_SMALL_ORDER.contains(&bits) {
            return Err(Refusal::new(
                Reason::KeyTooWeak,
                "the Ed25519 public key is a point of small order: anyone can sign for it",
            ));
        }
        let pkey = PKey::public_key_from_raw_bytes(bits, Id::ED25519)
            .map_err(|e| malformed(format!("Ed25519 public key: {e}")))?;
        return Ok((KeyKind::Ed25519, Some(pkey)));
    }
    Ok((KeyKind::Other(format!("{} ({alg})", oid_name(&alg))), None))
}

/// Largest RSA modulus looked at: above it a key is refused before anything is computed with it, whatever
/// the policy says (policy ranges are checked too, also before the signature, by the engine).
pub const MAX_RSA_BITS: u32 = 16384;

/// Go's own limit (crypto/rsa refuses larger exponents, so neither kube-apiserver nor a Go client
/// could use the key).
const MAX_RSA_EXPONENT: u64 = (1 << 31) - 1;

/// Refuses RSA keys anyone can sign for or nobody can use. With e = 1 the signature is the padded
/// digest itself; small exponents (3, …) allow Bleichenbacher-style forgeries against lax verifiers;
/// an even e (or an even modulus) is not an RSA key at all. FIPS 186-5 asks for an odd 2^16 < e; there is
/// no setting for it, as no client needs anything else than 65537.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), Refusal> {
    // `UintRef` bytes have no leading zeros.
    let n_bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if n_bits > MAX_RSA_BITS as usize {
        return Err(Refusal::new(
            Reason::KeyTooLarge,
            format!("RSA key of {n_bits} bits is above the largest supported, {MAX_RSA_BITS}"),
        ));
    }
    if n.last().is_none_or(|b| b.is_multiple_of(2)) {
        return Err(Refusal::new(Reason::KeyTooWeak, "the RSA modulus is even"));
    }
    let exponent = (e.len() <= 8).then(|| e.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)));
    match exponent {
        Some(e) if e.is_multiple_of(2) || e < 65537 => Err(Refusal::new(
            Reason::KeyTooWeak,
            format!("RSA public exponent {e} is not allowed: it must be odd and at least 65537"),
        )),
        Some(e) if e <= MAX_RSA_EXPONENT => Ok(()),
        _ => Err(Refusal::new(
            Reason::KeyTypeNotAllowed,
            "RSA public exponents above 2^31-1 are not allowed: Go (kube-apiserver, clients) cannot use them",
        )),
    }
}

/// Only the uncompressed form `04 || X || Y`, as Go parses (`ecdsa.ParseUncompressedPublicKey`): a
/// certificate with a compressed or hybrid point is one Go cannot read, and `00` is the point at
/// infinity, which any signature verifies against for a suitably chosen `r`.
fn check_ec_encoding(kind: &KeyKind, point: &[u8]) -> Result<(), Refusal> {
    let field_bytes = match kind {
        KeyKind::EcP256 => 32,
        KeyKind::EcP384 => 48,
        _ => 66,
    };
    match point.first() {
        None | Some(0) => Err(Refusal::new(
            Reason::KeyTooWeak,
            format!("the {kind} public key is the point at infinity: anyone can sign for it"),
        )),
        Some(4) if point.len() == 1 + 2 * field_bytes => Ok(()),
        Some(2 | 3) => Err(malformed(format!(
            "the {kind} public key is a compressed point; Go's crypto/x509 (kube-apiserver, clients) only reads uncompressed points"
        ))),
        _ => Err(malformed(format!(
            "the {kind} public key is not an uncompressed point of {} bytes",
            1 + 2 * field_bytes
        ))),
    }
}

/// The Ed25519 public keys of small order, any signature check against which can be satisfied without
/// a private key. The curve's 8-torsion has 8 points: the identity (y = 1), one point of order 2
/// (y = -1), two of order 4 (y = 0) and four of order 8 (y = ±y8); with their non-canonical
/// encodings (x = 0 with the sign bit set, and y = p or y = p + 1, i.e. 0 and 1 not reduced) that makes
/// 14 encodings. This is the well-known list that libsodium and others check against; the unit test
/// below recomputes each entry's order with OpenSSL's X25519 instead of trusting the list.
const ED25519_SMALL_ORDER: [&[u8]; 14] = [
    // identity, y = 1
    &hex32("0100000000000000000000000000000000000000000000000000000000000000"),
    // order 2, y = p - 1
    &hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    // order 4, y = 0
    &hex32("0000000000000000000000000000000000000000000000000000000000000000"),
    &hex32("0000000000000000000000000000000000000000000000000000000000000080"),
    // order 8, y = y8 and y = p - y8
    &hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    &hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    &hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    &hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    // non-canonical: x = 0 with the sign bit set
    &hex32("0100000000000000000000000000000000000000000000000000000000000080"),
    &hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
    // non-canonical: y = p (0) and y = p + 1 (1), either sign
    &hex32("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    &hex32("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
    &hex32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    &hex32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
];

const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// A readable name for an OID in a refusal message (OpenSSL knows more curves than const-oid).
fn oid_name(oid: &ObjectIdentifier) -> String {
    openssl::asn1::Asn1Object::from_str(&oid.to_string())
        .ok()
        .and_then(|o| o.nid().short_name().ok().map(str::to_owned))
        .or_else(|| const_oid::db::DB.by_oid(oid).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The curve's group, built once: OpenSSL's group construction costs about as much as a tenth of an
/// ECDSA verification.
fn ec_group(nid: Nid) -> Result<&'static EcGroup, openssl::error::ErrorStack> {
    use std::sync::OnceLock;
    static P256: OnceLock<EcGroup> = OnceLock::new();
    static P384: OnceLock<EcGroup> = OnceLock::new();
    static P521: OnceLock<EcGroup> = OnceLock::new();
    let cell = match nid {
        Nid::SECP384R1 => &P384,
        Nid::SECP521R1 => &P521,
        _ => &P256,
    };
    if let Some(g) = cell.get() {
        return Ok(g);
    }
    let group = EcGroup::from_curve_name(nid)?;
    Ok(cell.get_or_init(|| group))
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_components(bits: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        n: der::asn1::UintRef<'a>,
        e: der::asn1::UintRef<'a>,
    }
    let key = RsaPublicKey::from_der(bits).map_err(|e| malformed(format!("RSA key: {e}")))?;
    Ok((key.n.as_bytes(), key.e.as_bytes()))
}

/// Verifies `signature` over `data` for the common algorithms: RSA PKCS#1 v1.5 and ECDSA with
/// SHA-1/256/384/512, and Ed25519. `None` when the algorithm has no fast path here (RSA-PSS, …).
fn verify(
    key: &PKey<Public>,
    alg: &ObjectIdentifier,
    data: &[u8],
    signature: &[u8],
) -> Option<bool> {
    const RSA_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
    const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
    const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
    const ECDSA_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
    const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
    // The algorithm must fit the key: OpenSSL would otherwise verify, say, an "RSA" label over an
    // EC key.
    let (family, digest) = match *alg {
        RSA_SHA1 => (Id::RSA, Some(MessageDigest::sha1())),
        RSA_SHA256 => (Id::RSA, Some(MessageDigest::sha256())),
        RSA_SHA384 => (Id::RSA, Some(MessageDigest::sha384())),
        RSA_SHA512 => (Id::RSA, Some(MessageDigest::sha512())),
        ECDSA_SHA1 => (Id::EC, Some(MessageDigest::sha1())),
        ECDSA_SHA256 => (Id::EC, Some(MessageDigest::sha256())),
        ECDSA_SHA384 => (Id::EC, Some(MessageDigest::sha384())),
        ECDSA_SHA512 => (Id::EC, Some(MessageDigest::sha512())),
        OID_ED25519 => (Id::ED25519, None),
        _ => return None,
    };
    if key.id() != family {
        return Some(false);
    }
    let result = match digest {
        Some(md) => Verifier::new(md, key).and_then(|mut v| v.verify_oneshot(signature, data)),
        None => {
            Verifier::new_without_digest(key).and_then(|mut v| v.verify_oneshot(signature, data))
        }
    };
    // A malformed signature (bad DER in an ECDSA signature, wrong length) is an error in OpenSSL;
    // for the requester it is simply a signature that does not verify.
    Some(result.unwrap_or(false))
}

/// An attribute value as Go's certificate parser reads it (`parseASN1String` in crypto/x509/parser.go),
/// or why Go refuses it. Go's CSR parser accepts any value, so kube-apiserver admits requests whose
/// certificate its own parser would then reject.
fn go_attribute_string(value: &der::Any) -> Result<String, &'static str> {
    use der::Tag;
    let bytes = value.value();
    match value.tag() {
        // T.61, read as Latin-1 (as Go and BoringSSL do).
        Tag::TeletexString => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::PrintableString => bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b" '()+,-./:=?*&".contains(&b))
            .then(|| String::from_utf8_lossy(bytes).into_owned())
            .ok_or("is a PrintableString with a character outside its set"),
        Tag::Utf8String => std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| "is a UTF8String that is not valid UTF-8"),
        Tag::BmpString => {
            let bad = "is an invalid BMPString";
            if !bytes.len().is_multiple_of(2) {
                return Err(bad);
            }
            let bytes = bytes.strip_suffix(&[0, 0]).unwrap_or(bytes);
            bytes
                .chunks(2)
                .map(|c| {
                    let unit = u16::from_be_bytes([c[0], c[1]]);
                    let reserved =
                        matches!(unit, 0xfffe | 0xffff | 0xfdd0..=0xfdef | 0xd800..=0xdfff);
                    // Without surrogates every unit is one character.
                    char::from_u32(u32::from(unit))
                        .filter(|_| !reserved)
                        .ok_or(bad)
                })
                .collect()
        }
        Tag::Ia5String => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned())
            .ok_or("is an IA5String with a non-ASCII byte"),
        Tag::NumericString => bytes
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b' ')
            .then(|| String::from_utf8_lossy(bytes).into_owned())
            .ok_or("is a NumericString with a character other than a digit or space"),
        _ => Err("is not a string type"),
    }
}

/// `CN`, `O`, … for the kept attributes, the dotted OID for any other.
fn attribute_name(oid: &ObjectIdentifier) -> String {
    [
        (OID_CN, "CN"),
        (OID_O, "O"),
        (OID_OU, "OU"),
        (OID_C, "C"),
        (OID_ST, "ST"),
        (OID_L, "L"),
    ]
    .iter()
    .find(|(o, _)| o == oid)
    .map_or_else(|| oid.to_string(), |(_, n)| (*n).to_owned())
}

fn ia5(s: &Ia5String) -> String {
    s.to_string()
}

fn general_name(name: GeneralName) -> Result<San, Refusal> {
    Ok(match name {
        GeneralName::DnsName(s) => San::Dns(ia5(&s)),
        GeneralName::Rfc822Name(s) => San::Email(ia5(&s)),
        GeneralName::UniformResourceIdentifier(s) => San::Uri(canonical_uri(ia5(&s))?),
        GeneralName::IpAddress(bytes) => San::Ip(ip_address(&bytes)?),
        GeneralName::OtherName(_) => San::Unsupported("otherName"),
        GeneralName::DirectoryName(_) => San::Unsupported("directoryName"),
        GeneralName::EdiPartyName(_) => San::Unsupported("ediPartyName"),
        GeneralName::RegisteredId(_) => San::Unsupported("registeredID"),
    })
}

/// A URI SAN must already be in the form Go's `url.Parse` + `String` gives back (a lower-case scheme, only
/// RFC 3986 characters, `%` only before two hex digits): Go re-serialises URIs when it signs and an
/// approver reading the request with Go sees that form, so anything else would be certified as a
/// different string from the one approved. Refused rather than rewritten.
fn canonical_uri(uri: String) -> Result<String, Refusal> {
    let bad = |why: &str| malformed(format!("URI subjectAltName {uri:?} {why}"));
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(bad("has no scheme"));
    };
    let mut sc = scheme.chars();
    if !sc.next().is_some_and(|c| c.is_ascii_lowercase())
        || !sc.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(bad("needs a lower-case scheme"));
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(bad("has a % not followed by two hex digits"));
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&c)) {
            return Err(bad("has a character that must be percent-encoded"));
        }
        i += 1;
    }
    if rest.ends_with('#') {
        return Err(bad("has an empty fragment"));
    }
    Ok(uri)
}

fn ip_address(bytes: &OctetString) -> Result<IpAddr, Refusal> {
    let b = bytes.as_bytes();
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address to Go (net.IP.To4), which an
        // approver sees and Go writes in 4 bytes; so do we, or a client comparing IPv4 bytes would fail.
        let v6 = std::net::Ipv6Addr::from(v6);
        Ok(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
    } else {
        Err(malformed(format!(
            "IP subjectAltName has {} bytes, expected 4 or 16",
            b.len()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Each listed key is of small order, recomputed independently: the birational map
    /// u = (1 + y) / (1 - y) takes an Edwards point to the Montgomery point X25519 works on (the sign of x
    /// does not matter), and OpenSSL's X25519 refuses to derive when the result is all zeros, which
    /// happens exactly for points of small order. y = 1 (the identity) has no u and is checked by value.
    #[test]
    fn the_ed25519_small_order_list_is_right() {
        use openssl::derive::Deriver;
        let mut ctx = BigNumContext::new().unwrap();
        let p = {
            let mut two_255 = BigNum::new().unwrap();
            two_255.lshift(&BigNum::from_u32(1).unwrap(), 255).unwrap();
            &two_255 - &BigNum::from_u32(19).unwrap()
        };
        let mut small_order = |enc: &[u8]| -> bool {
            let mut le = enc.to_vec();
            le[31] &= 0x7f;
            le.reverse();
            let mut y = BigNum::new().unwrap();
            y.nnmod(&BigNum::from_slice(&le).unwrap(), &p, &mut ctx)
                .unwrap();
            if y == BigNum::from_u32(1).unwrap() {
                return true;
            }
            let one = BigNum::from_u32(1).unwrap();
            let (mut num, mut den, mut inv, mut u) = (
                BigNum::new().unwrap(),
                BigNum::new().unwrap(),
                BigNum::new().unwrap(),
                BigNum::new().unwrap(),
            );
            num.mod_add(&one, &y, &p, &mut ctx).unwrap();
            den.mod_sub(&one, &y, &p, &mut ctx).unwrap();
            inv.mod_inverse(&den, &p, &mut ctx).unwrap();
            u.mod_mul(&num, &inv, &p, &mut ctx).unwrap();
            let mut u_le = u.to_vec_padded(32).unwrap();
            u_le.reverse();
            let peer = PKey::public_key_from_raw_bytes(&u_le, Id::X25519).unwrap();
            let ours = PKey::generate_x25519().unwrap();
            let mut d = Deriver::new(&ours).unwrap();
            d.set_peer(&peer).unwrap();
            d.derive_to_vec().is_err()
        };
        for enc in ED25519_SMALL_ORDER {
            assert!(small_order(enc), "{enc:02x?} is not of small order");
        }
        let mut distinct: Vec<&[u8]> = ED25519_SMALL_ORDER.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 14);
        // A real key is not, so the check above can fail.
        for _ in 0..20 {
            let key = PKey::generate_ed25519().unwrap().raw_public_key().unwrap();
            assert!(!small_order(&key));
            assert!(!ED25519_SMALL_ORDER.contains(&key.as_slice()));
        }
    }

    #[test]
    fn rsa_exponents_and_moduli() {
        let n = [0xc5u8; 256];
        let refused = |n: &[u8], e: &[u8]| check_rsa(n, e).err().map(|r| r.reason);
        assert_eq!(refused(&n, &[1, 0, 1]), None);
        assert_eq!(refused(&n, &[0x7f, 0xff, 0xff, 0xff]), None);
        for weak in [
            &[1u8][..],
            &[2],
            &[3],
            &[1, 0, 0],
            &[1, 0, 3][..1],
            &[0, 1, 0, 0][1..],
            &[1, 0, 2],
        ] {
            assert_eq!(refused(&n, weak), Some(Reason::KeyTooWeak), "{weak:?}");
        }
        assert_eq!(
            refused(&n, &[0x80, 0, 0, 1]),
            Some(Reason::KeyTypeNotAllowed)
        );
        assert_eq!(
            refused(&[1u8; 40], &[1, 0, 1, 0, 0, 0, 0, 0, 1]),
            Some(Reason::KeyTypeNotAllowed)
        );
        assert_eq!(
            refused(&[0xc4u8; 256], &[1, 0, 1]),
            Some(Reason::KeyTooWeak)
        );
        assert_eq!(
            refused(&[0xffu8; 2049], &[1, 0, 1]),
            Some(Reason::KeyTooLarge)
        );
        assert_eq!(refused(&[0xffu8; 2048], &[1, 0, 1]), None);
    }

    #[test]
    fn uri_sans_must_be_in_the_form_go_writes_back() {
        for ok in [
            "spiffe://cluster.local/ns/team-a/sa/app",
            "https://example.com/a%20b?x=1#frag",
            "urn:example:a-b",
        ] {
            assert_eq!(canonical_uri(ok.to_string()).unwrap(), ok);
        }
        for bad in [
            "SPIFFE://cluster.local/ns/a/sa/b",
            "https://example.com/a b",
            "https://example.com/%zz",
            "https://example.com/#",
            "no-scheme",
            "1http://x",
            "https://example.com/\u{e9}",
        ] {
            let r = canonical_uri(bad.to_string()).unwrap_err();
            assert_eq!(r.reason, Reason::MalformedRequest, "{bad}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address_as_go_reads_it() {
        let mapped =
            OctetString::new(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7]).unwrap();
        assert_eq!(
            ip_address(&mapped).unwrap(),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        let v6 = OctetString::new(
            "fd00::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        )
        .unwrap();
        assert_eq!(
            ip_address(&v6).unwrap(),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
        assert!(ip_address(&OctetString::new(vec![1, 2, 3]).unwrap()).is_err());
    }
}
