//! CertificateSigningRequest semantics of kube-apiserver (k8s-csr-rules.md §3.B–3.F): create and
//! update strategies per write path (main, /status, /approval), validation V-1…V-7, C-1…C-8,
//! K-1…K-7 with the exact field paths and messages, and the CertificateApproval /
//! CertificateSigning / CertificateSubjectRestriction admission checks.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::auth::User;
use super::status::{go_bytes, quote, ApiError, FieldError, Gr};

pub const GR: Gr<'static> = Gr {
    group: "certificates.k8s.io",
    resource: "certificatesigningrequests",
    kind: "CertificateSigningRequest",
};

/// `allValidUsages`, sorted bytewise.
pub const VALID_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    Main,
    Status,
    Approval,
}

impl WritePath {
    pub fn from_subresource(s: &str) -> Option<Self> {
        match s {
            "" => Some(WritePath::Main),
            "status" => Some(WritePath::Status),
            "approval" => Some(WritePath::Approval),
            _ => None,
        }
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn bytes_field(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

fn conditions(v: &Value) -> Vec<Value> {
    v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cond_type(c: &Value) -> &str {
    c["type"].as_str().unwrap_or("")
}

/// Rejects bodies Go's JSON decoder would refuse (wrong types, bad base64) with a 400, before any
/// semantic validation, as kube-apiserver's decode step does.
pub fn check_types(obj: &Value) -> Result<(), ApiError> {
    // encoding/json's UnmarshalTypeError: "cannot unmarshal <JSON type> into Go struct field …".
    let bad_value = |v: &Value, field: &str, want: &str| {
        let got = match v {
            Value::String(_) => "string".to_string(),
            Value::Bool(_) => "bool".to_string(),
            Value::Array(_) => "array".to_string(),
            Value::Object(_) => "object".to_string(),
            Value::Number(n) if want.starts_with("int") || want.starts_with("uint") => {
                format!("number {n}")
            }
            Value::Number(_) => "number".to_string(),
            Value::Null => "null".to_string(),
        };
        Err(ApiError::bad_request(format!(
            "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: json: cannot unmarshal {got} into Go struct field {field} of type {want}"
        )))
    };
    let spec = &obj["spec"];
    if !spec.is_null() && !spec.is_object() {
        return bad_value(
            spec,
            "CertificateSigningRequest.spec",
            "v1.CertificateSigningRequestSpec",
        );
    }
    for f in ["request"] {
        match &spec[f] {
            Value::Null => {}
            Value::String(s) => {
                if B64.decode(s).is_err() {
                    return Err(ApiError::bad_request(format!(
                        "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data in spec.{f}"
                    )));
                }
            }
            v => return bad_value(v, "CertificateSigningRequestSpec.spec.request", "[]uint8"),
        }
    }
    for f in ["signerName", "username", "uid"] {
        if !(spec[f].is_null() || spec[f].is_string()) {
            return bad_value(
                &spec[f],
                &format!("CertificateSigningRequestSpec.spec.{f}"),
                "string",
            );
        }
    }
    match &spec["expirationSeconds"] {
        Value::Null => {}
        v @ Value::Number(n) => {
            if n.as_i64().is_none_or(|x| i32::try_from(x).is_err()) {
                return bad_value(
                    v,
                    "CertificateSigningRequestSpec.spec.expirationSeconds",
                    "int32",
                );
            }
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestSpec.spec.expirationSeconds",
                "int32",
            )
        }
    }
    for (f, item) in [("usages", "v1.KeyUsage"), ("groups", "string")] {
        let field = format!("CertificateSigningRequestSpec.spec.{f}");
        match &spec[f] {
            Value::Null => {}
            Value::Array(a) => {
                if let Some(v) = a.iter().find(|v| !v.is_string()) {
                    return bad_value(v, &field, item);
                }
            }
            v => return bad_value(v, &field, &format!("[]{item}")),
        }
    }
    let status = &obj["status"];
    if !status.is_null() && !status.is_object() {
        return bad_value(
            status,
            "CertificateSigningRequest.status",
            "v1.CertificateSigningRequestStatus",
        );
    }
    match &status["certificate"] {
        Value::Null => {}
        Value::String(s) if B64.decode(s).is_ok() => {}
        Value::String(_) => {
            return Err(ApiError::bad_request(
                "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data in status.certificate",
            ))
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestStatus.status.certificate",
                "[]uint8",
            )
        }
    }
    match &status["conditions"] {
        Value::Null => {}
        Value::Array(a) => {
            for c in a {
                if !c.is_object() {
                    return bad_value(
                        c,
                        "CertificateSigningRequestStatus.status.conditions",
                        "v1.CertificateSigningRequestCondition",
                    );
                }
                for f in [
                    "type",
                    "status",
                    "reason",
                    "message",
                    "lastUpdateTime",
                    "lastTransitionTime",
                ] {
                    if !(c[f].is_null() || c[f].is_string()) {
                        return bad_value(
                            &c[f],
                            &format!("CertificateSigningRequestCondition.status.conditions.{f}"),
                            "string",
                        );
                    }
                }
                for f in ["lastUpdateTime", "lastTransitionTime"] {
                    if let Some(t) = c[f].as_str() {
                        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
                            return Err(ApiError::bad_request(format!(
                                "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: parsing time {} as \"2006-01-02T15:04:05Z07:00\": cannot parse",
                                quote(t)
                            )));
                        }
                    }
                }
            }
        }
        v => {
            return bad_value(
                v,
                "CertificateSigningRequestStatus.status.conditions",
                "[]v1.CertificateSigningRequestCondition",
            )
        }
    }
    Ok(())
}

/// Re-encodes spec and status the way Go would after decoding into the typed struct: unknown
/// fields dropped, empty optional fields omitted, `status` always present.
pub fn normalize(obj: &mut Value) {
    let spec = obj["spec"].clone();
    let mut s = Map::new();
    s.insert(
        "request".into(),
        spec["request"]
            .as_str()
            .map(|x| json!(x))
            .unwrap_or(Value::Null),
    );
    if let Some(x) = spec["signerName"].as_str() {
        s.insert("signerName".into(), json!(x));
    }
    if let Some(x) = spec["expirationSeconds"].as_i64() {
        s.insert("expirationSeconds".into(), json!(x));
    }
    for f in ["usages", "groups"] {
        if let Some(a) = spec[f].as_array() {
            if !a.is_empty() {
                s.insert(f.into(), Value::Array(a.clone()));
            }
        }
    }
    for f in ["username", "uid"] {
        if let Some(x) = spec[f].as_str() {
            if !x.is_empty() {
                s.insert(f.into(), json!(x));
            }
        }
    }
    if let Some(e) = spec["extra"].as_object() {
        if !e.is_empty() {
            s.insert("extra".into(), Value::Object(e.clone()));
        }
    }
    let mut st = Map::new();
    let conds: Vec<Value> = conditions(obj)
        .into_iter()
        .map(|c| {
            let mut m = Map::new();
            for f in [
                "type",
                "status",
                "reason",
                "message",
                "lastUpdateTime",
                "lastTransitionTime",
            ] {
                if let Some(x) = c[f].as_str() {
                    if !x.is_empty() {
                        m.insert(f.into(), json!(x));
                    }
                }
            }
            // type and status are not omitempty in Go.
            for f in ["type", "status"] {
                m.entry(f).or_insert(json!(""));
            }
            Value::Object(m)
        })
        .collect();
    if !conds.is_empty() {
        st.insert("conditions".into(), Value::Array(conds));
    }
    if let Some(c) = obj["status"]["certificate"].as_str() {
        if !c.is_empty() {
            st.insert("certificate".into(), json!(c));
        }
    }
    obj["spec"] = Value::Object(s);
    obj["status"] = Value::Object(st);
}

/// Create strategy: identity from the authenticated user, status wiped (3.B.2).
pub fn prepare_create(obj: &mut Value, user: &User) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if let Some(m) = spec.as_object_mut() {
        for f in ["username", "uid", "groups", "extra"] {
            m.remove(f);
        }
        m.insert("username".into(), json!(user.name));
        m.insert("uid".into(), json!(user.uid));
        m.insert("groups".into(), json!(user.groups));
        if !user.extra.is_empty() {
            m.insert("extra".into(), json!(user.extra));
        }
    }
    obj["status"] = json!({});
}

fn preserve_instances(new: &mut [Value], old: &[Value], t: &str) {
    let oi: Vec<usize> = old
        .iter()
        .enumerate()
        .filter(|(_, c)| cond_type(c) == t)
        .map(|(i, _)| i)
        .collect();
    let ni: Vec<usize> = new
        .iter()
        .enumerate()
        .filter(|(_, c)| cond_type(c) == t)
        .map(|(i, _)| i)
        .collect();
    if oi.len() != ni.len() {
        return;
    }
    for (o, n) in oi.iter().zip(ni.iter()) {
        new[*n] = old[*o].clone();
    }
}

fn populate_timestamps(new: &mut [Value], old: &[Value], now: &str) {
    for c in new.iter_mut() {
        if c["lastUpdateTime"].as_str().unwrap_or("").is_empty() {
            c["lastUpdateTime"] = json!(now);
        }
        if c["lastTransitionTime"].as_str().unwrap_or("").is_empty() {
            let ltt = old
                .iter()
                .find(|o| {
                    o["type"] == c["type"]
                        && o["status"] == c["status"]
                        && !o["lastTransitionTime"].as_str().unwrap_or("").is_empty()
                })
                .map(|o| o["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now));
            c["lastTransitionTime"] = ltt;
        }
    }
}

/// PrepareForUpdate of the three strategies (3.D): what each path keeps from the stored object.
pub fn prepare_update(new: &mut Value, old: &Value, path: WritePath, now: &str) {
    new["spec"] = old["spec"].clone();
    match path {
        WritePath::Main => new["status"] = old["status"].clone(),
        WritePath::Status => {
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            let oldc = conditions(old);
            let mut c = conditions(new);
            preserve_instances(&mut c, &oldc, "Approved");
            preserve_instances(&mut c, &oldc, "Denied");
            populate_timestamps(&mut c, &oldc, now);
            new["status"]["conditions"] = Value::Array(c);
        }
        WritePath::Approval => {
            let oldc = conditions(old);
            let mut c = conditions(new);
            populate_timestamps(&mut c, &oldc, now);
            new["status"] = old["status"].clone();
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = Value::Array(c);
        }
    }
    normalize(new);
}

// --- signerName (core/validation ValidateSignerName) ---

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label_chars(l: &str) -> bool {
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
struct Der<'a>(&'a [u8]);

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;

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
fn go_parse_ai(mut ai: Der<'_>) -> Result<(), String> {
    ai.oid().ok_or("x509: malformed OID")?;
    if !ai.is_empty() && ai.any().is_none() {
        return Err("x509: malformed parameters".into());
    }
    Ok(())
}

/// The structural part of Go's `x509.parseCertificate`, with its error strings; returns the length
/// of the certificate's DER. What it does not check itself (names, times, keys, extensions) is left
/// to OpenSSL, whose failures are reported as Go's most general `x509: malformed certificate`.
fn go_parse_certificate(der: &[u8]) -> Result<usize, String> {
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

/// validateCSR (V-2): parse the first PEM block as a CSR and verify its self-signature.
pub fn check_request(pem: &[u8]) -> Result<(), String> {
    let first = pem_blocks(pem).into_iter().next();
    let Some(block) = first.filter(|b| b.label == "CERTIFICATE REQUEST") else {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    };
    use der::Decode;
    let parsed = x509_cert::request::CertReq::from_der(&block.der)
        .map_err(|_| "x509: malformed certificate request".to_string())?;
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
    let req = openssl::x509::X509Req::from_der(&block.der)
        .map_err(|_| "x509: malformed certificate request".to_string())?;
    let key = req
        .public_key()
        .map_err(|_| "x509: unsupported public key algorithm".to_string())?;
    let ok = req.verify(&key).unwrap_or(false);
    if ok {
        return Ok(());
    }
    use openssl::pkey::Id;
    Err(match key.id() {
        Id::RSA | Id::RSA_PSS => "crypto/rsa: verification error".into(),
        Id::EC => "x509: ECDSA verification failure".into(),
        Id::ED25519 => "x509: Ed25519 verification failure".into(),
        _ => "x509: signature verification failure".into(),
    })
}

/// validateCertificateSigningRequest plus, for updates, validateCertificateSigningRequestUpdate.
/// Metadata checks are done by the caller (generic for every resource).
pub fn validate(new: &Value, old: Option<&Value>, path: WritePath) -> Vec<FieldError> {
    let mut el = Vec::new();
    let spec = &new["spec"];
    let old_conds = old.map(conditions).unwrap_or_default();
    let old_has = |t: &str| old_conds.iter().filter(|c| cond_type(c) == t).count();

    // Compatibility options (getValidationOptions): rules the stored object already breaks are relaxed.
    let old_usages: Vec<&str> = old
        .and_then(|o| o["spec"]["usages"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let allow_unknown_usages = old_usages.iter().any(|u| !VALID_USAGES.contains(u));
    let allow_dup_usages = old_usages
        .iter()
        .enumerate()
        .any(|(i, u)| old_usages[..i].contains(u));
    let allow_legacy =
        old.is_some_and(|o| o["spec"]["signerName"] == "kubernetes.io/legacy-unknown");
    let allow_dup_types = old_conds
        .iter()
        .enumerate()
        .any(|(i, c)| old_conds[..i].iter().any(|p| cond_type(p) == cond_type(c)));
    let allow_empty_type = old_conds.iter().any(|c| cond_type(c).is_empty());
    let allow_both = old_has("Approved") > 0 && old_has("Denied") > 0;

    let request = bytes_field(&spec["request"]);
    if let Err(e) = check_request(&request) {
        let value = spec["request"].as_str().map(|_| request.as_slice());
        el.push(FieldError::invalid("spec.request", go_bytes(value), e));
    }
    let usages: Vec<&str> = spec["usages"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        el.push(FieldError::required("spec.usages", ""));
    }
    if !allow_unknown_usages {
        for (i, u) in usages.iter().enumerate() {
            if !VALID_USAGES.contains(u) {
                el.push(FieldError::not_supported(
                    format!("spec.usages[{i}]"),
                    u,
                    VALID_USAGES,
                ));
            }
        }
    }
    if !allow_dup_usages {
        for (i, u) in usages.iter().enumerate() {
            if usages[..i].contains(u) {
                el.push(FieldError::duplicate(format!("spec.usages[{i}]"), u));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or("");
    if !allow_legacy && signer == "kubernetes.io/legacy-unknown" {
        el.push(FieldError::invalid(
            "spec.signerName",
            quote(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        el.extend(validate_signer_name("spec.signerName", signer));
    }
    if let Some(secs) = spec["expirationSeconds"].as_i64() {
        if secs < 600 {
            el.push(FieldError::invalid(
                "spec.expirationSeconds",
                secs.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }

    // Conditions (C-1…C-6).
    let conds = conditions(new);
    let mut seen: Vec<&str> = Vec::new();
    let (mut has_approved, mut has_denied) = (false, false);
    for (i, c) in conds.iter().enumerate() {
        let t = cond_type(c);
        let s = c["status"].as_str().unwrap_or("");
        if !allow_empty_type && t.is_empty() {
            el.push(FieldError::required(
                format!("status.conditions[{i}].type"),
                "",
            ));
        }
        let allowed: &[&str] = if matches!(t, "Approved" | "Denied" | "Failed") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if s.is_empty() {
            el.push(FieldError::required(
                format!("status.conditions[{i}].status"),
                "",
            ));
        } else if !allowed.contains(&s) {
            el.push(FieldError::not_supported(
                format!("status.conditions[{i}].status"),
                s,
                allowed,
            ));
        }
        match t {
            "Approved" => has_approved = true,
            "Denied" => has_denied = true,
            _ => {}
        }
        if !allow_dup_types {
            if seen.contains(&t) {
                el.push(FieldError::duplicate(
                    format!("status.conditions[{i}].type"),
                    t,
                ));
            }
            seen.push(t);
        }
    }

    // Certificate format (K-1…K-5), checked only when it changed.
    let cert = bytes_field(&new["status"]["certificate"]);
    let old_cert = old
        .map(|o| bytes_field(&o["status"]["certificate"]))
        .unwrap_or_default();
    if cert != old_cert {
        if let Err(e) = check_certificate(&cert) {
            el.push(FieldError::invalid(
                "status.certificate",
                quote("<certificate data>"),
                e,
            ));
        }
    }

    let union = approved_denied_union(has_approved && has_denied && !allow_both);
    if old.is_none() {
        el.extend(union);
        return el;
    }
    for t in ["Approved", "Denied", "Failed"] {
        let n = conds.iter().filter(|c| cond_type(c) == t).count();
        if n < old_has(t) {
            el.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {}", quote(t)),
            ));
        }
    }
    if path != WritePath::Approval {
        for t in ["Approved", "Denied"] {
            let newc: Vec<&Value> = conds.iter().filter(|c| cond_type(c) == t).collect();
            let oldc: Vec<&Value> = old_conds.iter().filter(|c| cond_type(c) == t).collect();
            if newc.len() > oldc.len() {
                el.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not add a condition of type {}", quote(t)),
                ));
            } else if newc.len() == oldc.len() && newc != oldc {
                el.push(FieldError::forbidden(
                    "status.conditions",
                    format!(
                        "updates may not modify a condition of type {}\n{}",
                        quote(t),
                        diff_text(&oldc, &newc)
                    ),
                ));
            }
        }
    }
    if cert != old_cert {
        if path != WritePath::Status {
            el.push(FieldError::forbidden(
                "status.certificate",
                "updates may not set certificate content",
            ));
        } else if !old_cert.is_empty() {
            el.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    el.extend(union);
    el
}

/// C-5 as kube-apiserver 1.37 reports it: the handwritten "Approved and Denied conditions are
/// mutually exclusive" errors are covered by the declarative `+k8s:zeroOrOneOfMember` union on
/// `status.conditions` (DeclarativeValidationBeta, on by default), whose single error replaces them
/// and comes after every handwritten error. It is not re-checked when the stored object already had
/// both (the union membership did not change).
fn approved_denied_union(both: bool) -> Option<FieldError> {
    const MEMBERS: [&str; 2] = [
        r#"conditions[{"type": "Approved"}]"#,
        r#"conditions[{"type": "Denied"}]"#,
    ];
    both.then(|| {
        FieldError::invalid(
            "status.conditions",
            quote(&format!("{{{}}}", MEMBERS.join(", "))),
            format!(
                "must specify at most one of: {}",
                MEMBERS
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn diff_text(old: &[&Value], new: &[&Value]) -> String {
    format!(
        "  []certificates.CertificateSigningRequestCondition{{\n-\t{}\n+\t{}\n  }}",
        serde_json::to_string(old).unwrap_or_default(),
        serde_json::to_string(new).unwrap_or_default()
    )
}

/// Admission on create: CertificateSubjectRestriction (3.F.4).
pub fn admit_create(obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if obj["spec"]["signerName"] != "kubernetes.io/kube-apiserver-client" {
        return Ok(());
    }
    let request = bytes_field(&obj["spec"]["request"]);
    let block = pem_blocks(&request).into_iter().next();
    let req = block
        .filter(|b| b.label == "CERTIFICATE REQUEST")
        .and_then(|b| openssl::x509::X509Req::from_der(&b.der).ok());
    let Some(req) = req else {
        return Err(ApiError::forbidden(
            GR,
            name,
            "failed to parse CSR: PEM block type must be CERTIFICATE REQUEST",
        ));
    };
    let masters = req
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONNAME)
        .any(|e| e.data().as_slice() == b"system:masters");
    if masters {
        return Err(ApiError::forbidden(
            GR,
            name,
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
        ));
    }
    Ok(())
}

/// Admission on update: CertificateApproval on /approval, CertificateSigning on /status (3.F.2–3).
pub fn admit_update(
    new: &Value,
    old: &Value,
    path: WritePath,
    user: &User,
) -> Result<(), ApiError> {
    let name = old["metadata"]["name"].as_str().unwrap_or("");
    let signer = old["spec"]["signerName"].as_str().unwrap_or("");
    match path {
        WritePath::Main => Ok(()),
        WritePath::Approval => {
            if user.allowed_for_signer("approve", signer) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    GR,
                    name,
                    &format!(
                        "user not permitted to approve requests with signerName {}",
                        quote(signer)
                    ),
                ))
            }
        }
        WritePath::Status => {
            let same = new["status"]["certificate"] == old["status"]["certificate"]
                && conditions(new) == conditions(old);
            if same || user.allowed_for_signer("sign", signer) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    GR,
                    name,
                    &format!(
                        "user not permitted to sign requests with signerName {}",
                        quote(signer)
                    ),
                ))
            }
        }
    }
}

/// The CONDITION column of `kubectl get csr` (printers extractCSRStatus).
pub fn condition_summary(obj: &Value) -> String {
    let conds = conditions(obj);
    let has = |t: &str| conds.iter().any(|c| cond_type(c) == t);
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if !obj["status"]["certificate"]
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        s.push_str(",Issued");
    }
    s
}

/// Fields Go's strict decoder would not recognise (`fieldValidation=Strict|Warn`).
pub fn unknown_fields(obj: &Value) -> Vec<String> {
    const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    const SPEC: &[&str] = &[
        "request",
        "signerName",
        "expirationSeconds",
        "usages",
        "username",
        "uid",
        "groups",
        "extra",
    ];
    const STATUS: &[&str] = &["conditions", "certificate"];
    const COND: &[&str] = &[
        "type",
        "status",
        "reason",
        "message",
        "lastUpdateTime",
        "lastTransitionTime",
    ];
    let mut out = Vec::new();
    let mut check = |v: &Value, known: &[&str], prefix: &str| {
        if let Some(m) = v.as_object() {
            for k in m.keys() {
                if !known.contains(&k.as_str()) {
                    out.push(format!("{prefix}{k}"));
                }
            }
        }
    };
    check(obj, TOP, "");
    check(&obj["metadata"], META, "metadata.");
    check(&obj["spec"], SPEC, "spec.");
    check(&obj["status"], STATUS, "status.");
    if let Some(conds) = obj["status"]["conditions"].as_array() {
        for (i, c) in conds.iter().enumerate() {
            check(c, COND, &format!("status.conditions[{i}]."));
        }
    }
    out
}
