//! Parsing and verifying a PKCS#10 request from `spec.request`.
//!
//! Order matters: the size cap, then the first PEM block Go finds (of type `CERTIFICATE REQUEST`), then the DER,
//! then the self-signature — and only after the signature verifies is anything else (subject, SANs,
//! key, requested extensions) read out. Nothing here decides policy and nothing here panics on input.

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode};
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

/// Parses `spec.request` (PEM bytes), verifies the self-signature and extracts its content.
pub fn parse_and_verify(pem: &[u8]) -> Result<VerifiedCsr, Refusal> {
    if pem.len() > MAX_REQUEST_BYTES {
        return Err(malformed(format!(
            "request is {} bytes, more than the {MAX_REQUEST_BYTES} allowed",
            pem.len()
        )));
    }
    let der = request_der(pem)?;
    let req = CertReq::from_der(&der)
        .map_err(|e| malformed(format!("cannot parse the certificate request: {e}")))?;
    // The signature covers the CertificationRequestInfo bytes as received. Re-encoding the parsed value is
    // not the same: the `der` crate sorts SET OF members (a multi-valued RDN, the attributes) while
    // decoding, so a valid request whose sets were not in DER order would fail to verify (Go and OpenSSL
    // verify the received bytes, and so must we).
    let raw = RawRequest::split(&der)
        .map_err(|e| malformed(format!("cannot parse the certificate request: {e}")))?;
    let info_der = raw.info.to_vec();
    let spki = &req.info.public_key;
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature is not a whole number of bytes"))?;
    let (key, pkey) = public_key(spki)?;
    let fast = pkey.and_then(|k| verify(&k, &req.algorithm.oid, &info_der, signature));
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

    // Kept byte for byte as received (see above: a re-encoding may reorder a multi-valued RDN).
    let subject_der = raw.subject.to_vec();
    let mut common_names = Vec::new();
    let mut organizations = Vec::new();
    let mut other_attributes = Vec::new();
    for atv in req.info.subject.iter() {
        let known = ["2.5.4.6", "2.5.4.8", "2.5.4.7", "2.5.4.11"];
        if atv.oid != OID_CN && atv.oid != OID_O && !known.contains(&atv.oid.to_string().as_str()) {
            other_attributes.push(atv.oid.to_string());
            continue;
        }
        let into = if atv.oid == OID_CN {
            &mut common_names
        } else if atv.oid == OID_O {
            &mut organizations
        } else {
            continue;
        };
        into.push(
            directory_string(&atv.value).ok_or_else(|| {
                malformed(format!("subject attribute {} is not a string", atv.oid))
            })?,
        );
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
        let pkey = (|| {
            let group = ec_group(nid)?;
            let mut ctx = BigNumContext::new()?;
            let point = EcPoint::from_bytes(group, bits, &mut ctx)?;
            let ec = EcKey::from_public_key(group, &point)?;
            PKey::from_ec_key(ec)
        })()
        .map_err(|e| malformed(format!("EC public key: {e}")))?;
        return Ok((kind, Some(pkey)));
    }
    if alg == OID_ED25519 {
        let pkey = PKey::public_key_from_raw_bytes(bits, Id::ED25519)
            .map_err(|e| malformed(format!("Ed25519 public key: {e}")))?;
        return Ok((KeyKind::Ed25519, Some(pkey)));
    }
    Ok((KeyKind::Other(format!("{} ({alg})", oid_name(&alg))), None))
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

fn directory_string(value: &der::Any) -> Option<String> {
    use der::{Tag, Tagged};
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        Tag::BmpString => der::asn1::BmpString::from_der(&value.to_der().ok()?)
            .ok()
            .map(|s| s.to_string()),
        _ => None,
    }
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
