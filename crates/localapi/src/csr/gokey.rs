//! What Go's crypto/x509 and encoding/asn1 accept where OpenSSL differs: the public key of a
//! request (x509 parsePublicKey: uncompressed EC points on named NIST curves only, RSA parameters
//! NULL, exponent read into an int), crypto/rsa's exponent rule at verification, and the attribute
//! values of a subject (encoding/asn1 reads unknown types as nil, but checks the string types it
//! knows). Shared by CSR create validation and PodCertificateRequest key checks.

use openssl::pkey::{Id, PKey, Public};

/// A public key as Go's x509 parser hands it back.
pub enum GoKey {
    Ed25519(PKey<Public>),
    /// Curve name as Go prints it (`P-256`), and the key.
    Ecdsa(&'static str, PKey<Public>),
    /// Modulus size in bits as `rsa.PublicKey.Size()*8`, exponent, key.
    Rsa(u32, i64, PKey<Public>),
    /// A key Go parses to a type kube-apiserver does not take (DSA, X25519), or an algorithm Go
    /// does not know (no key at all).
    Other,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_X25519: &str = "1.3.101.110";
const OID_DSA: &str = "1.2.840.10040.4.1";

/// x509.parsePublicKey over a DER SubjectPublicKeyInfo, with Go's error texts. `unknown_ok`: an
/// algorithm Go does not know is no error (ParseCertificateRequest leaves the key nil) rather than
/// one (ParsePKIXPublicKey).
pub fn go_public_key(spki_der: &[u8], unknown_ok: bool) -> Result<GoKey, String> {
    use der::{Decode, Encode};
    let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| "x509: malformed public key".to_string())?;
    let oid = spki.algorithm.oid.to_string();
    let params = spki
        .algorithm
        .parameters
        .as_ref()
        .map(|p| p.to_der().unwrap_or_default());
    let data = spki.subject_public_key.raw_bytes();
    let openssl_key = || PKey::public_key_from_der(spki_der);
    match oid.as_str() {
        OID_RSA => {
            if params.as_deref() != Some(&[0x05, 0x00][..]) {
                return Err("x509: RSA key missing NULL parameters".into());
            }
            let rsa = openssl_key()
                .and_then(|k| k.rsa())
                .map_err(|_| "x509: invalid RSA public key".to_string())?;
            if rsa.n().is_negative() || rsa.n().num_bits() == 0 {
                return Err("x509: RSA modulus is not a positive number".into());
            }
            let e = rsa.e();
            // Read into a Go int: at most 63 bits.
            if e.num_bits() > 63 {
                return Err("x509: invalid RSA public exponent".into());
            }
            let e_val = e
                .to_vec()
                .iter()
                .fold(0i64, |a, b| (a << 8) | i64::from(*b));
            if e.is_negative() || e_val <= 0 {
                return Err("x509: RSA public exponent is not a positive number".into());
            }
            let bits = (rsa.n().num_bits() as u32).div_ceil(8) * 8;
            let key =
                PKey::from_rsa(rsa).map_err(|_| "x509: invalid RSA public key".to_string())?;
            Ok(GoKey::Rsa(bits, e_val, key))
        }
        OID_EC => {
            let curve: der::asn1::ObjectIdentifier = params
                .as_deref()
                .and_then(|p| der::asn1::ObjectIdentifier::from_der(p).ok())
                .ok_or_else(|| "x509: invalid ECDSA parameters".to_string())?;
            let (name, size) = match curve.to_string().as_str() {
                "1.3.132.0.33" => ("P-224", 28),
                "1.2.840.10045.3.1.7" => ("P-256", 32),
                "1.3.132.0.34" => ("P-384", 48),
                "1.3.132.0.35" => ("P-521", 66),
                _ => return Err("x509: unsupported elliptic curve".into()),
            };
            // ecdsa.ParseUncompressedPublicKey: the uncompressed form only (no point at infinity,
            // no compressed or hybrid points), on the curve.
            if data.first() != Some(&4) {
                return Err("ecdsa: invalid uncompressed public key".into());
            }
            // nistec's SetBytes texts name the curve without the dash.
            let nistec = name.replace('-', "");
            if data.len() != 1 + 2 * size {
                return Err(format!("invalid {nistec} point encoding"));
            }
            let key = openssl_key()
                .ok()
                .filter(|k| k.ec_key().and_then(|e| e.check_key()).is_ok())
                .ok_or_else(|| format!("{nistec} point not on curve"))?;
            Ok(GoKey::Ecdsa(name, key))
        }
        OID_ED25519 => {
            if params.is_some() {
                return Err("x509: Ed25519 key encoded with illegal parameters".into());
            }
            if data.len() != 32 {
                return Err("x509: wrong Ed25519 public key size".into());
            }
            let key = PKey::public_key_from_raw_bytes(data, Id::ED25519)
                .map_err(|_| "x509: wrong Ed25519 public key size".to_string())?;
            Ok(GoKey::Ed25519(key))
        }
        OID_X25519 => {
            if params.is_some() {
                return Err("x509: X25519 key encoded with illegal parameters".into());
            }
            if data.len() != 32 {
                return Err("crypto/ecdh: invalid public key".into());
            }
            Ok(GoKey::Other)
        }
        OID_DSA => {
            openssl_key().map_err(|_| "x509: invalid DSA public key".to_string())?;
            Ok(GoKey::Other)
        }
        _ if unknown_ok => Ok(GoKey::Other),
        _ => Err("x509: unknown public key algorithm".into()),
    }
}

/// crypto/rsa's checkPublicKey on verification: the exponent is odd and in [2, 2^31-1].
pub fn go_rsa_exponent_error(e: i64) -> Option<&'static str> {
    if e < 2 {
        Some("crypto/rsa: public exponent too small or negative")
    } else if e & 1 == 0 {
        Some("crypto/rsa: public exponent is even")
    } else if e > (1i64 << 31) - 1 {
        Some("crypto/rsa: public exponent too large")
    } else {
        None
    }
}

fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'\'' | b'(' | b')' | b'+' | b',' | b'-' | b'.' | b'/' | b':' | b'=' | b'?'
        )
        // encoding/asn1 allows both in a PrintableString it reads into `any`.
        || b == b'*'
        || b == b'&'
}

/// encoding/asn1's parse of one primitive universal value into `any` (tag, contents).
fn go_any_value(tag: u8, c: &[u8]) -> Result<(), String> {
    let syntax = |m: &str| Err(format!("asn1: syntax error: {m}"));
    match tag {
        0x13 if !c.iter().all(|b| is_printable(*b)) => {
            syntax("PrintableString contains invalid character")
        }
        0x12 if !c.iter().all(|b| b.is_ascii_digit() || *b == b' ') => {
            syntax("NumericString contains invalid character")
        }
        0x16 if !c.iter().all(u8::is_ascii) => syntax("IA5String contains invalid character"),
        0x0c if std::str::from_utf8(c).is_err() => Err("asn1: invalid UTF-8 string".into()),
        0x1e => {
            if !c.len().is_multiple_of(2) {
                return Err("invalid BMPString".into());
            }
            let c = c.strip_suffix(&[0, 0]).unwrap_or(c);
            for p in c.chunks(2) {
                let point = u16::from_be_bytes([p[0], p[1]]);
                if point == 0xfffe
                    || point == 0xffff
                    || (0xfdd0..=0xfdef).contains(&point)
                    || (0xd800..=0xdfff).contains(&point)
                {
                    return Err("invalid BMPString".into());
                }
            }
            Ok(())
        }
        0x02 => {
            let structural = |m: &str| Err(format!("asn1: structure error: {m}"));
            if c.is_empty() {
                return structural("empty integer");
            }
            if c.len() > 1
                && ((c[0] == 0 && c[1] & 0x80 == 0) || (c[0] == 0xff && c[1] & 0x80 != 0))
            {
                return structural("integer not minimally-encoded");
            }
            if c.len() > 8 {
                return structural("integer too large");
            }
            Ok(())
        }
        0x01 if !(c.len() == 1 && (c[0] == 0 || c[0] == 0xff)) => syntax("invalid boolean"),
        _ => Ok(()),
    }
}

/// The attribute values of a request's subject as Go reads them (x509 FillFromRDNSequence after
/// asn1.Unmarshal into pkix.RDNSequence).
pub fn go_subject(name: &x509_cert::name::Name) -> Result<(), String> {
    use der::Encode;
    for atv in name.iter() {
        let der = atv.value.to_der().map_err(|e| e.to_string())?;
        let tag = der.first().copied().unwrap_or(0);
        // Constructed or not universal: read as nil.
        if tag & 0x20 != 0 || tag & 0xc0 != 0 {
            continue;
        }
        go_any_value(tag, atv.value.value())?;
    }
    Ok(())
}

/// The request's self-signature checked over its raw certificationRequestInfo, for requests
/// OpenSSL will not parse (a subject value it has no string type for) but Go does. Ok(true):
/// verified; Ok(false): bad signature; Err: an algorithm Go does not implement.
pub fn verify_raw(
    key: &PKey<Public>,
    alg: &x509_cert::spki::AlgorithmIdentifierOwned,
    tbs: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    use openssl::hash::MessageDigest;
    let digest = match alg.oid.to_string().as_str() {
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => Some(MessageDigest::sha1()),
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => Some(MessageDigest::sha256()),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(MessageDigest::sha384()),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(MessageDigest::sha512()),
        "1.3.101.112" => None,
        _ => return Err("x509: cannot verify signature: algorithm unimplemented".into()),
    };
    let verifier = match digest {
        Some(md) => openssl::sign::Verifier::new(md, key),
        None => openssl::sign::Verifier::new_without_digest(key),
    };
    let mut v =
        verifier.map_err(|_| "x509: signature algorithm does not match the key".to_string())?;
    Ok(v.verify_oneshot(signature, tbs).unwrap_or(false))
}
