//! signerName validation and the request/certificate parsing kube-apiserver does with Go's encoding/pem
//! and crypto/x509: block selection, the structural DER checks with Go's error texts, and the CSR's
//! self-signature.

#[allow(unused_imports)]
use super::*;
use openssl::pkey::{Id, PKey};

// --- signerName (core/validation ValidateSignerName) ---

pub(super) const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(super) const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub(super) fn is_label_chars(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// IsDNS1123Label error strings.
pub fn dns1123_label_errors(l: &str) -> Vec<String> {
    let mut e = Vec::new();
    if l.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !is_label_chars(l) {
        e.push(LABEL_MSG.to_string());
    }
    e
}

/// IsDNS1123Subdomain error strings.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_string());
    }
    if s.is_empty() || !s.split('.').all(is_label_chars) {
        e.push(SUBDOMAIN_MSG.to_string());
    }
    e
}

pub fn validate_signer_name(field: &str, name: &str) -> Vec<FieldError> {
    let mut el = Vec::new();
    if name.is_empty() {
        el.push(FieldError::required(field, ""));
        return el;
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() != 2 {
        el.push(FieldError::invalid(
            field,
            quote(name),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return el;
    }
    let (domain, path) = (segments[0], segments[1]);
    if domain.len() > 253 {
        el.push(FieldError::too_long(field, 253));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for l in &labels {
        let errs = dns1123_label_errors(l);
        if !errs.is_empty() {
            for e in errs {
                el.push(FieldError::invalid(
                    field,
                    quote(domain),
                    format!("validating label {}: {}", quote(l), e),
                ));
            }
            break;
        }
    }
    if labels.len() < 2 {
        el.push(FieldError::invalid(
            field,
            quote(domain),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for l in path.split('.') {
        let errs = dns1123_subdomain_errors(l);
        if !errs.is_empty() {
            for e in errs {
                el.push(FieldError::invalid(
                    field,
                    quote(path),
                    format!("validating label {}: {}", quote(l), e),
                ));
            }
            break;
        }
    }
    let max = 253 + (253 + 63 + 1) + 1;
    if name.len() > max {
        el.push(FieldError::too_long(field, max));
    }
    el
}

// --- PEM (encoding/pem Decode semantics) ---

pub struct PemBlock {
    pub label: String,
    pub has_headers: bool,
    pub der: Vec<u8>,
}

/// Decodes the PEM blocks in order. Like Go's pem.Decode, malformed blocks are skipped and text
/// between blocks is ignored.
pub fn pem_blocks(data: &[u8]) -> Vec<PemBlock> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(pos) = rest.find("-----BEGIN ") {
        let after = &rest[pos + 11..];
        let Some(eol) = after.find("-----") else {
            break;
        };
        let label = &after[..eol];
        let body_start = &after[eol + 5..];
        // The BEGIN line must end right after the dashes.
        let body_start = body_start.trim_start_matches([' ', '\t']);
        let body_start = match body_start
            .strip_prefix("\r\n")
            .or_else(|| body_start.strip_prefix('\n'))
        {
            Some(b) => b,
            None => {
                rest = after;
                continue;
            }
        };
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            rest = after;
            continue;
        };
        let body = &body_start[..end];
        let mut has_headers = false;
        let mut b64 = String::new();
        let mut in_headers = true;
        for line in body.lines() {
            if in_headers {
                if line.contains(':') {
                    has_headers = true;
                    continue;
                }
                in_headers = false;
                if line.trim().is_empty() && has_headers {
                    continue;
                }
            }
            b64.push_str(line.trim());
        }
        rest = &body_start[end + end_marker.len()..];
        match B64.decode(b64.as_bytes()) {
            Ok(der) => out.push(PemBlock {
                label: label.to_string(),
                has_headers,
                der,
            }),
            Err(_) => continue,
        }
    }
    out
}

/// A DER reader with `golang.org/x/crypto/cryptobyte`'s rules (low tag numbers only, minimal
/// definite lengths of at most four octets), for reproducing Go's x509 parse errors.
#[derive(Clone, Copy)]
pub(super) struct Der<'a>(&'a [u8]);

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const OID: u8 = 0x06;
pub(super) const BIT_STRING: u8 = 0x03;

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self, tag: u8) -> bool {
        self.0.first() == Some(&tag)
    }

    /// The next element: (tag, whole element, contents).
    fn any(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let s = self.0;
        if s.len() < 2 || s[0] & 0x1f == 0x1f {
            return None;
        }
        let (header, len) = if s[1] & 0x80 == 0 {
            (2usize, s[1] as usize)
        } else {
            let n = (s[1] & 0x7f) as usize;
            if n == 0 || n > 4 || s.len() < 2 + n {
                return None;
            }
            let len = s[2..2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            if len < 128 || s[2] == 0 {
                return None;
            }
            (2 + n, len)
        };
        let total = header.checked_add(len)?;
        if s.len() < total {
            return None;
        }
        self.0 = &s[total..];
        Some((s[0], &s[..total], &s[header..total]))
    }

    /// ReadASN1Element: the whole element if its tag is `tag`.
    fn element(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.any().filter(|(t, _, _)| *t == tag).map(|(_, e, _)| e)
    }

    /// ReadASN1: the contents if the tag is `tag`.
    fn read(&mut self, tag: u8) -> Option<Der<'a>> {
        self.any()
            .filter(|(t, _, _)| *t == tag)
            .map(|(_, _, c)| Der(c))
    }

    /// ReadASN1Integer: a minimally encoded INTEGER; returns its contents.
    fn integer(&mut self) -> Option<&'a [u8]> {
        let c = self.read(INTEGER)?.0;
        let ok = match c {
            [] => false,
            [_] => true,
            [0, b, ..] => b & 0x80 != 0,
            [0xff, b, ..] => b & 0x80 == 0,
            _ => true,
        };
        ok.then_some(c)
    }

    fn oid(&mut self) -> Option<()> {
        let c = self.read(OID)?.0;
        let mut start = true;
        for (i, b) in c.iter().enumerate() {
            if start && *b == 0x80 {
                return None;
            }
            start = b & 0x80 == 0;
            if i + 1 == c.len() && !start {
                return None;
            }
        }
        (!c.is_empty()).then_some(())
    }
}

/// parseAI.
pub(super) fn go_parse_ai(mut ai: Der<'_>) -> Result<(), String> {
    ai.oid().ok_or("x509: malformed OID")?;
    if !ai.is_empty() && ai.any().is_none() {
        return Err("x509: malformed parameters".into());
    }
    Ok(())
}

/// The structural part of Go's `x509.parseCertificate`, with its error strings; returns the length
/// of the certificate's DER. What it does not check itself (names, times, keys, extensions) is left
/// to OpenSSL, whose failures are reported as Go's most general `x509: malformed certificate`.
pub(super) fn go_parse_certificate(der: &[u8]) -> Result<usize, String> {
    let malformed = |what: &str| format!("x509: malformed {what}");
    let mut input = Der(der);
    let raw = input.element(SEQUENCE).ok_or(malformed("certificate"))?;
    let mut cert = Der(raw).read(SEQUENCE).ok_or(malformed("certificate"))?;
    let tbs_raw = cert.element(SEQUENCE).ok_or(malformed("tbs certificate"))?;
    let mut tbs = Der(tbs_raw)
        .read(SEQUENCE)
        .ok_or(malformed("tbs certificate"))?;
    let mut version = 0i64;
    if tbs.peek(0xa0) {
        let mut v = tbs.read(0xa0).ok_or(malformed("version"))?;
        let int = v.integer().filter(|i| i.len() <= 8 && v.is_empty());
        let int = int.ok_or(malformed("version"))?;
        version = int
            .iter()
            .fold(if int[0] & 0x80 != 0 { -1i64 } else { 0 }, |a, b| {
                (a << 8) | *b as i64
            });
    }
    if version < 0 {
        return Err(malformed("version"));
    }
    if version + 1 > 3 {
        return Err("x509: invalid version".into());
    }
    let serial = tbs.integer().ok_or(malformed("serial number"))?;
    if serial[0] & 0x80 != 0 {
        return Err("x509: negative serial number".into());
    }
    let sig_ai = tbs
        .read(SEQUENCE)
        .ok_or(malformed("signature algorithm identifier"))?;
    let outer_ai = cert
        .read(SEQUENCE)
        .ok_or(malformed("algorithm identifier"))?;
    if outer_ai.0 != sig_ai.0 {
        return Err("x509: inner and outer signature algorithm identifiers don't match".into());
    }
    go_parse_ai(sig_ai)?;
    tbs.element(SEQUENCE).ok_or(malformed("issuer"))?;
    tbs.read(SEQUENCE).ok_or(malformed("validity"))?;
    // Go's own message for a malformed subject.
    tbs.element(SEQUENCE).ok_or(malformed("issuer"))?;
    let mut spki = tbs
        .element(SEQUENCE)
        .and_then(|e| Der(e).read(SEQUENCE))
        .ok_or(malformed("spki"))?;
    let pk_ai = spki
        .read(SEQUENCE)
        .ok_or(malformed("public key algorithm identifier"))?;
    go_parse_ai(pk_ai)?;
    spki.read(BIT_STRING).ok_or(malformed("subjectPublicKey"))?;
    openssl::x509::X509::from_der(raw).map_err(|_| malformed("certificate"))?;
    Ok(raw.len())
}

/// validateCertificate (K-1…K-5): Ok or the Go error text.
pub fn check_certificate(pem: &[u8]) -> Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    let blocks = pem_blocks(pem);
    if blocks.is_empty() {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    for b in blocks {
        if b.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {}",
                quote(&b.label)
            ));
        }
        if b.has_headers {
            return Err("no PEM block headers are permitted".into());
        }
        // x509.ParseCertificates: one or more certificates, concatenated.
        let mut der: &[u8] = &b.der;
        if der.is_empty() {
            return Err("found CERTIFICATE PEM block containing 0 certificates".into());
        }
        while !der.is_empty() {
            let n = go_parse_certificate(der)?;
            der = &der[n..];
        }
    }
    Ok(())
}

/// validateCSR (V-2): parse the first PEM block as a CSR the way Go's x509.ParseCertificateRequest
/// does (public key, then subject) and verify its self-signature with crypto/rsa's exponent rule.
pub fn check_request(pem: &[u8]) -> Result<(), String> {
    let first = pem_blocks(pem).into_iter().next();
    let Some(block) = first.filter(|b| b.label == "CERTIFICATE REQUEST") else {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    };
    use der::{Decode, Encode};
    let parsed = x509_cert::request::CertReq::from_der(&block.der)
        .map_err(|_| "x509: malformed certificate request".to_string())?;
    let spki = parsed
        .info
        .public_key
        .to_der()
        .map_err(|_| "x509: malformed certificate request".to_string())?;
    let go_key = go_public_key(&spki, true)?;
    go_subject(&parsed.info.subject)?;
    let alg = parsed.algorithm.oid.to_string();
    let insecure = match alg.as_str() {
        "1.2.840.113549.1.1.4" => Some("MD5-RSA"),
        "1.2.840.113549.1.1.2" => Some("MD2-RSA"),
        _ => None,
    };
    if let Some(name) = insecure {
        return Err(format!(
            "x509: cannot verify signature: insecure algorithm {name}"
        ));
    }
    if let GoKey::Rsa(_, e, _) = &go_key {
        if let Some(why) = go_rsa_exponent_error(*e) {
            return Err(why.into());
        }
    }
    let key = PKey::public_key_from_der(&spki)
        .map_err(|_| "x509: unsupported public key algorithm".to_string())?;
    let ok = match openssl::x509::X509Req::from_der(&block.der) {
        Ok(req) => req.verify(&key).unwrap_or(false),
        // OpenSSL has no string type for some subject values Go reads (INTEGER, OCTET STRING,
        // NULL): check the signature over the raw request info instead.
        Err(_) => {
            let tbs = parsed
                .info
                .to_der()
                .map_err(|_| "x509: malformed certificate request".to_string())?;
            let sig = parsed.signature.raw_bytes();
            verify_raw(&key, &parsed.algorithm, &tbs, sig)?
        }
    };
    if ok {
        return Ok(());
    }
    Err(match key.id() {
        Id::RSA | Id::RSA_PSS => "crypto/rsa: verification error".into(),
        Id::EC => "x509: ECDSA verification failure".into(),
        Id::ED25519 => "x509: Ed25519 verification failure".into(),
        _ => "x509: signature verification failure".into(),
    })
}
