//! csr-signer side by side with the real kube-controller-manager signer (issue 8, item 4).
//!
//! Each test starts a private control plane (etcd + kube-apiserver v1.37.2 + kube-controller-manager with the
//! csrsigning controllers, `tests/kube`) whose built-in signers use a CA created by `csr-signer ca init`, and
//! builds a csr-signer engine on the very same CA files. Every CSR of the matrix is created on the apiserver
//! (as `developer` for `kubernetes.io/kube-apiserver-client`, as `node-1` for `kubernetes.io/kubelet-serving`),
//! approved by the admin and signed by kube-controller-manager; csr-signer then signs the same PEM with the same
//! usages, expirationSeconds and requester (`spec.username`/`spec.groups` as stamped by the apiserver).
//!
//! The two certificates are compared field by field on their DER (parsed here with a minimal reader, so that no
//! library re-encoding hides a difference): version, serial (range only), both signature algorithm fields,
//! issuer bytes, validity (the KCM rules relative to each signing time, durations exactly), subject bytes,
//! SubjectPublicKeyInfo, unique IDs, every extension (OID, order, criticality, value) and the PEM chain of
//! `status.certificate`. The only differences accepted are the README's deliberate ones, each checked
//! precisely: a subjectKeyIdentifier (SHA-1 of the key bits, non-critical, in Go's slot after
//! basicConstraints) on the leaf; the subject kept as the request's bytes where Go re-encodes it (the KCM
//! subject must equal a model of Go's `pkix.Name` round trip); the intermediates after the leaf. Anything else
//! fails the test, naming the case and the field. The comparison table is printed (`--nocapture`).
//!
//! `edge_requests_*` holds valid but unusual requests (a subject equal to the CA's, an IPv4-mapped IPv6 SAN,
//! URIs Go re-serialises, an extensionRequest with two values, an unsorted multi-valued RDN).

#[path = "kube_support/mod.rs"]
mod kube_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use csr_signer::ca_init::{self, KeyType};
use csr_signer::config::Settings;
use csr_signer::engine::{Decision, Engine, SignRequest};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// kube-controller-manager's `--cluster-signing-duration` and csr-signer's lifetime default and max.
const CERT_TTL: u64 = 72 * 3600;
const BACKDATE: u64 = 300;
const SHORT: u64 = 8 * 3600;

// ---------------------------------------------------------------------------------------------------------
// A minimal DER writer, so every byte of each test request is chosen here.
// ---------------------------------------------------------------------------------------------------------

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A DER SET OF: elements sorted by their encodings.
fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(0x31, &sorted.concat())
}

fn oid(dotted: &str) -> Vec<u8> {
    let o = const_oid::ObjectIdentifier::new(dotted).expect("valid OID");
    tlv(0x06, o.as_bytes())
}

fn octets(content: &[u8]) -> Vec<u8> {
    tlv(0x04, content)
}

const PRINTABLE: u8 = 0x13;
const UTF8: u8 = 0x0c;

/// One attribute of a subject: (OID, string tag, value).
type Atv = (&'static str, u8, &'static str);

const C: &str = "2.5.4.6";
const ST: &str = "2.5.4.8";
const L: &str = "2.5.4.7";
const O: &str = "2.5.4.10";
const OU: &str = "2.5.4.11";
const CN: &str = "2.5.4.3";

fn atv((t, tag, value): Atv) -> Vec<u8> {
    seq(&[oid(t), tlv(tag, value.as_bytes())])
}

/// A Name with one attribute per RDN, in the given order.
fn name(atvs: &[Atv]) -> Vec<u8> {
    seq(&atvs.iter().map(|a| set(&[atv(*a)])).collect::<Vec<_>>())
}

/// A Name from explicit RDNs (several attributes per RDN are sorted, as DER requires).
fn name_rdns(rdns: &[&[Atv]]) -> Vec<u8> {
    seq(&rdns
        .iter()
        .map(|r| set(&r.iter().map(|a| atv(*a)).collect::<Vec<_>>()))
        .collect::<Vec<_>>())
}

#[derive(Clone, Debug)]
enum Gn {
    Dns(&'static str),
    Email(&'static str),
    Ip(Vec<u8>),
    Uri(&'static str),
}

fn ip(s: &str) -> Gn {
    match s.parse::<std::net::IpAddr>().expect("IP") {
        std::net::IpAddr::V4(a) => Gn::Ip(a.octets().to_vec()),
        std::net::IpAddr::V6(a) => Gn::Ip(a.octets().to_vec()),
    }
}

fn general_name(g: &Gn) -> Vec<u8> {
    match g {
        Gn::Email(s) => tlv(0x81, s.as_bytes()),
        Gn::Dns(s) => tlv(0x82, s.as_bytes()),
        Gn::Uri(s) => tlv(0x86, s.as_bytes()),
        Gn::Ip(b) => tlv(0x87, b),
    }
}

fn extension(id: &str, critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(vec![0x01, 0x01, 0xff]);
    }
    parts.push(octets(&value));
    seq(&parts)
}

fn san_extension(names: &[Gn], critical: bool) -> Vec<u8> {
    extension(
        "2.5.29.17",
        critical,
        seq(&names.iter().map(general_name).collect::<Vec<_>>()),
    )
}

/// Builds and signs a PKCS#10 request. `ext_values`: the values of the one extensionRequest attribute (each
/// a list of extensions); empty: no attributes at all.
fn build_csr(
    key: &PKey<Private>,
    subject: &[u8],
    ext_values: &[Vec<Vec<u8>>],
    raw_attributes: Option<&[u8]>,
) -> Vec<u8> {
    let spki = key.public_key_to_der().expect("SPKI");
    let attributes = if let Some(raw) = raw_attributes {
        raw.to_vec()
    } else if ext_values.is_empty() {
        tlv(0xa0, &[])
    } else {
        let values: Vec<Vec<u8>> = ext_values.iter().map(|exts| seq(exts)).collect();
        tlv(0xa0, &seq(&[oid("1.2.840.113549.1.9.14"), set(&values)]))
    };
    let info = seq(&[vec![0x02, 0x01, 0x00], subject.to_vec(), spki, attributes]);
    let (alg, signature) = match key.id() {
        openssl::pkey::Id::ED25519 => {
            let mut s = openssl::sign::Signer::new_without_digest(key).expect("signer");
            (
                seq(&[oid("1.3.101.112")]),
                s.sign_oneshot_to_vec(&info).expect("sign"),
            )
        }
        openssl::pkey::Id::RSA => {
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("signer");
            (
                seq(&[oid("1.2.840.113549.1.1.11"), vec![0x05, 0x00]]),
                s.sign_oneshot_to_vec(&info).expect("sign"),
            )
        }
        _ => {
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("signer");
            (
                seq(&[oid("1.2.840.10045.4.3.2")]),
                s.sign_oneshot_to_vec(&info).expect("sign"),
            )
        }
    };
    let mut bits = vec![0u8];
    bits.extend(signature);
    let der = seq(&[info, alg, tlv(0x03, &bits)]);
    // Sanity: OpenSSL parses it and the self-signature verifies.
    let req = openssl::x509::X509Req::from_der(&der).expect("OpenSSL parses the test CSR");
    assert!(
        req.verify(&req.public_key().expect("key")).expect("verify"),
        "test CSR self-signature"
    );
    der
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------------------------------------
// A minimal DER reader: raw bytes of every field, no re-encoding.
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Tlv<'a> {
    tag: u8,
    full: &'a [u8],
    content: &'a [u8],
}

fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let tag = *input.first().ok_or("truncated: no tag")?;
    if tag & 0x1f == 0x1f {
        return Err(format!("multi-byte tag {tag:#x} not expected"));
    }
    let first = *input.get(1).ok_or("truncated: no length")?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(format!("unsupported length form {first:#x}"));
        }
        let bytes = input.get(2..2 + n).ok_or("truncated length")?;
        if bytes[0] == 0 || (n == 1 && bytes[0] < 0x80) {
            return Err("non-minimal DER length".into());
        }
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let end = hdr + len;
    let full = input.get(..end).ok_or("truncated content")?;
    Ok((
        Tlv {
            tag,
            full,
            content: &full[hdr..],
        },
        &input[end..],
    ))
}

fn children(content: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = read_tlv(rest)?;
        out.push(t);
        rest = r;
    }
    Ok(out)
}

fn oid_string(content: &[u8]) -> String {
    const_oid::ObjectIdentifier::from_bytes(content)
        .map(|o| o.to_string())
        .unwrap_or_else(|_| format!("bad-oid:{}", hex(content)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Debug)]
struct Ext<'a> {
    oid: String,
    critical: bool,
    value: &'a [u8],
    full: &'a [u8],
}

#[derive(Debug)]
struct Cert<'a> {
    der: &'a [u8],
    outer_alg: &'a [u8],
    version: Option<&'a [u8]>,
    serial: Tlv<'a>,
    tbs_alg: &'a [u8],
    issuer: &'a [u8],
    not_before: Tlv<'a>,
    not_after: Tlv<'a>,
    subject: &'a [u8],
    spki: &'a [u8],
    issuer_uid: Option<&'a [u8]>,
    subject_uid: Option<&'a [u8]>,
    extensions: Vec<Ext<'a>>,
}

fn parse_cert(der: &[u8]) -> Result<Cert<'_>, String> {
    let (outer, rest) = read_tlv(der)?;
    if !rest.is_empty() || outer.tag != 0x30 {
        return Err("certificate is not one SEQUENCE".into());
    }
    let top = children(outer.content)?;
    let [tbs, alg, sig] = top.as_slice() else {
        return Err(format!("certificate has {} elements, not 3", top.len()));
    };
    if sig.tag != 0x03 {
        return Err("signature is not a BIT STRING".into());
    }
    let mut f = children(tbs.content)?.into_iter().peekable();
    let version = match f.peek() {
        Some(t) if t.tag == 0xa0 => f.next().map(|t| t.full),
        _ => None,
    };
    let mut next = |what: &str, tag: u8| -> Result<Tlv<'_>, String> {
        let t = f.next().ok_or(format!("TBSCertificate: no {what}"))?;
        if t.tag != tag {
            return Err(format!("TBSCertificate {what}: tag {:#x}", t.tag));
        }
        Ok(t)
    };
    let serial = next("serialNumber", 0x02)?;
    let tbs_alg = next("signature", 0x30)?.full;
    let issuer = next("issuer", 0x30)?.full;
    let validity = next("validity", 0x30)?;
    let subject = next("subject", 0x30)?.full;
    let spki = next("subjectPublicKeyInfo", 0x30)?.full;
    let v = children(validity.content)?;
    let [nb, na] = v.as_slice() else {
        return Err("validity is not two times".into());
    };
    let mut issuer_uid = None;
    let mut subject_uid = None;
    let mut extensions = Vec::new();
    for t in f {
        match t.tag {
            0x81 | 0xa1 => issuer_uid = Some(t.full),
            0x82 | 0xa2 => subject_uid = Some(t.full),
            0xa3 => {
                let (exts, rest) = read_tlv(t.content)?;
                if !rest.is_empty() {
                    return Err("trailing bytes after extensions".into());
                }
                for e in children(exts.content)? {
                    let parts = children(e.content)?;
                    let (id, critical, value) = match parts.as_slice() {
                        [id, value] => (id, false, value),
                        [id, c, value] if c.tag == 0x01 => (id, c.content == [0xff], value),
                        _ => return Err("malformed extension".into()),
                    };
                    extensions.push(Ext {
                        oid: oid_string(id.content),
                        critical,
                        value: value.content,
                        full: e.full,
                    });
                }
            }
            other => return Err(format!("unexpected TBSCertificate field {other:#x}")),
        }
    }
    Ok(Cert {
        der,
        outer_alg: alg.full,
        version,
        serial,
        tbs_alg,
        issuer,
        not_before: *nb,
        not_after: *na,
        subject,
        spki,
        issuer_uid,
        subject_uid,
        extensions,
    })
}

/// Seconds since the epoch of a UTCTime or GeneralizedTime.
fn time_secs(t: &Tlv<'_>) -> Result<i64, String> {
    let s = std::str::from_utf8(t.content).map_err(|e| e.to_string())?;
    let (year, rest) = match t.tag {
        0x17 => {
            let yy: i32 = s.get(0..2).and_then(|x| x.parse().ok()).ok_or("UTCTime")?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        0x18 => (
            s.get(0..4)
                .and_then(|x| x.parse().ok())
                .ok_or("GeneralizedTime")?,
            &s[4..],
        ),
        other => return Err(format!("time tag {other:#x}")),
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return Err(format!("time {s:?} is not YYMMDDHHMMSSZ"));
    }
    let n = |i: usize| -> Result<u32, String> {
        rest.get(i..i + 2)
            .and_then(|x| x.parse().ok())
            .ok_or(format!("time {s:?}"))
    };
    let (month, day, hour, minute, second) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    let dt = chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(hour, minute, second))
        .ok_or(format!("time {s:?}"))?;
    Ok(dt.and_utc().timestamp())
}

fn oid_name(oid: &str) -> &str {
    match oid {
        "2.5.29.15" => "keyUsage",
        "2.5.29.37" => "extKeyUsage",
        "2.5.29.19" => "basicConstraints",
        "2.5.29.14" => "subjectKeyIdentifier",
        "2.5.29.35" => "authorityKeyIdentifier",
        "2.5.29.17" => "subjectAltName",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.10045.2.1" => "id-ecPublicKey",
        "2.5.4.6" => "C",
        "2.5.4.8" => "ST",
        "2.5.4.7" => "L",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.9" => "street",
        "2.5.4.17" => "postalCode",
        other => other,
    }
}

fn alg_text(alg_der: &[u8]) -> String {
    let parse = || -> Result<String, String> {
        let (a, _) = read_tlv(alg_der)?;
        let parts = children(a.content)?;
        let first = parts.first().ok_or("empty AlgorithmIdentifier")?;
        let mut s = oid_name(&oid_string(first.content)).to_string();
        for p in &parts[1..] {
            s.push_str(&format!(" +{}", hex(p.full)));
        }
        Ok(s)
    };
    parse().unwrap_or_else(|e| format!("<{e}>"))
}

/// `C=DE/O=a+O=b/CN=x`, with `'` after a value encoded as UTF8String (PrintableString unmarked).
fn name_text(name_der: &[u8]) -> String {
    let parse = || -> Result<String, String> {
        let (n, _) = read_tlv(name_der)?;
        let mut rdns = Vec::new();
        for rdn in children(n.content)? {
            let mut atvs = Vec::new();
            for a in children(rdn.content)? {
                let p = children(a.content)?;
                let [t, v] = p.as_slice() else {
                    return Err("bad ATV".into());
                };
                let mark = match v.tag {
                    PRINTABLE => "",
                    UTF8 => "'",
                    _ => "?",
                };
                atvs.push(format!(
                    "{}={}{mark}",
                    oid_name(&oid_string(t.content)),
                    String::from_utf8_lossy(v.content)
                ));
            }
            rdns.push(atvs.join("+"));
        }
        Ok(if rdns.is_empty() {
            "(empty)".into()
        } else {
            rdns.join("/")
        })
    };
    parse().unwrap_or_else(|e| format!("<{e}>"))
}

fn san_text(value: &[u8]) -> String {
    let parse = || -> Result<String, String> {
        let (s, _) = read_tlv(value)?;
        let mut out = Vec::new();
        for g in children(s.content)? {
            out.push(match g.tag {
                0x81 => format!("email:{}", String::from_utf8_lossy(g.content)),
                0x82 => format!("DNS:{}", String::from_utf8_lossy(g.content)),
                0x86 => format!("URI:{}", String::from_utf8_lossy(g.content)),
                0x87 => match g.content.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(g.content).expect("4"))
                    ),
                    16 => format!(
                        "IP:{}({}B)",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(g.content).expect("16")),
                        16
                    ),
                    n => format!("IP:<{n} bytes>"),
                },
                t => format!("[{t:#x}]{}", hex(g.content)),
            });
        }
        Ok(out.join(", "))
    };
    parse().unwrap_or_else(|e| format!("<{e}>"))
}

fn ext_text(e: &Ext<'_>) -> String {
    let v = if e.oid == "2.5.29.17" {
        san_text(e.value)
    } else {
        hex(e.value)
    };
    format!("crit={} {v}", e.critical)
}

// ---------------------------------------------------------------------------------------------------------
// Go's subject round trip (crypto/x509: ParseCertificateRequest fills a pkix.Name; CreateCertificate marshals
// Name.ToRDNSequence()): one RDN per attribute type in the order C, ST, L, street, postalCode, O, OU, then
// the last CN and the last serialNumber; several values of a type share one RDN (a DER-sorted SET); a value
// is a PrintableString when every character is in Go's printable set (no '*', no '&'), else a UTF8String;
// attribute types Go does not know are dropped.
// ---------------------------------------------------------------------------------------------------------

fn go_printable(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || (b'\''..=b')').contains(&b)
            || (b'+'..=b'/').contains(&b)
            || b == b' '
            || b == b':'
            || b == b'='
            || b == b'?'
    })
}

fn go_subject(csr_subject: &[u8]) -> Result<Vec<u8>, String> {
    let (n, _) = read_tlv(csr_subject)?;
    let mut multi: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut cn: Option<String> = None;
    let mut serial: Option<String> = None;
    for rdn in children(n.content)? {
        for a in children(rdn.content)? {
            let p = children(a.content)?;
            let [t, v] = p.as_slice() else {
                return Err("bad ATV".into());
            };
            // Go's asn1 decodes these string types into a Go string.
            if ![0x0c, 0x12, 0x13, 0x14, 0x16].contains(&v.tag) {
                continue;
            }
            let value = String::from_utf8_lossy(v.content).into_owned();
            match oid_string(t.content).as_str() {
                "2.5.4.3" => cn = Some(value),
                "2.5.4.5" => serial = Some(value),
                k @ ("2.5.4.6" | "2.5.4.8" | "2.5.4.7" | "2.5.4.9" | "2.5.4.17" | "2.5.4.10"
                | "2.5.4.11") => {
                    let key: &str = match k {
                        "2.5.4.6" => C,
                        "2.5.4.8" => ST,
                        "2.5.4.7" => L,
                        "2.5.4.9" => "2.5.4.9",
                        "2.5.4.17" => "2.5.4.17",
                        "2.5.4.10" => O,
                        _ => OU,
                    };
                    multi.entry(key).or_default().push(value);
                }
                _ => {}
            }
        }
    }
    let enc = |t: &str, v: &str| {
        let tag = if go_printable(v) { PRINTABLE } else { UTF8 };
        seq(&[oid(t), tlv(tag, v.as_bytes())])
    };
    let mut rdns = Vec::new();
    for t in [C, ST, L, "2.5.4.9", "2.5.4.17", O, OU] {
        if let Some(values) = multi.get(t) {
            rdns.push(set(&values.iter().map(|v| enc(t, v)).collect::<Vec<_>>()));
        }
    }
    for (t, v) in [(CN, cn), ("2.5.4.5", serial)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            rdns.push(set(&[enc(t, &v)]));
        }
    }
    Ok(seq(&rdns))
}

// ---------------------------------------------------------------------------------------------------------
// The matrix.
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// kubernetes.io/kube-apiserver-client, created by `developer`.
    Client,
    /// kubernetes.io/kubelet-serving, created by `node-1`.
    Serving,
}

#[derive(Clone, Debug)]
enum Subject {
    Der(Vec<u8>),
    /// The CA certificate's own subject bytes.
    SameAsCa,
}

#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    kind: Kind,
    key: KeyType,
    subject: Subject,
    /// The values of the extensionRequest attribute (each a list of extensions).
    ext_values: Vec<Vec<Vec<u8>>>,
    /// The whole `[0]` attributes field, replacing `ext_values` when set.
    raw_attributes: Option<Vec<u8>>,
    usages: &'static [&'static str],
    expiration: Option<i32>,
}

fn case(
    name: &'static str,
    kind: Kind,
    key: KeyType,
    subject: Vec<u8>,
    sans: &[Gn],
    usages: &'static [&'static str],
    expiration: Option<i32>,
) -> Case {
    Case {
        name,
        kind,
        key,
        subject: Subject::Der(subject),
        ext_values: if sans.is_empty() {
            Vec::new()
        } else {
            vec![vec![san_extension(sans, false)]]
        },
        raw_attributes: None,
        usages,
        expiration,
    }
}

const NODE: &[Atv] = &[
    (O, PRINTABLE, "system:nodes"),
    (CN, PRINTABLE, "system:node:node-1"),
];

/// The regular matrix: every key type, subjects Go leaves alone and subjects it re-encodes, every SAN type,
/// lifetimes 600 s … 100 h and none.
fn standard_cases() -> Vec<Case> {
    use KeyType::*;
    use Kind::*;
    let mut v = vec![
        case(
            "c01-p256-cn-only",
            Client,
            P256,
            name(&[(CN, PRINTABLE, "developer")]),
            &[],
            &["client auth"],
            Some(3600),
        ),
        case(
            "c02-rsa2048-openssl-subject-all-san-types",
            Client,
            Rsa2048,
            name(&[
                (C, PRINTABLE, "DE"),
                (ST, UTF8, "Berlin"),
                (L, UTF8, "Berlin"),
                (O, UTF8, "development"),
                (OU, UTF8, "platform"),
                (CN, UTF8, "developer"),
            ]),
            &[
                Gn::Uri("spiffe://cluster.local/ns/team-a/sa/app"),
                ip("10.1.2.3"),
                Gn::Dns("developer.example.com"),
                Gn::Email("dev@example.com"),
                ip("2001:db8::1"),
                Gn::Dns("dev2.example.com"),
                Gn::Uri("https://example.com/developer"),
                Gn::Email("ops@example.com"),
            ],
            &["digital signature", "key encipherment", "client auth"],
            Some(600),
        ),
        case(
            "c03-rsa3072-go-canonical-multivalued-o",
            Client,
            Rsa3072,
            name_rdns(&[
                &[(C, PRINTABLE, "DE")],
                &[(O, PRINTABLE, "development"), (O, PRINTABLE, "team-a")],
                &[(OU, PRINTABLE, "platform")],
                &[(CN, PRINTABLE, "developer")],
            ]),
            &[Gn::Dns("developer.example.com")],
            &["digital signature", "client auth"],
            Some(28800),
        ),
        case(
            "c04-ed25519-empty-subject-uri-dns",
            Client,
            Ed25519,
            seq(&[]),
            &[
                Gn::Uri("spiffe://cluster.local/ns/team-a/sa/app"),
                Gn::Dns("app.team-a.svc"),
            ],
            &["client auth"],
            Some(86400),
        ),
        case(
            "c05-p384-cn-first-non-ascii-repeated-o",
            Client,
            P384,
            name(&[
                (CN, UTF8, "Jürgen Müller"),
                (O, UTF8, "development"),
                (O, UTF8, "qa"),
            ]),
            &[],
            &["key encipherment", "client auth"],
            None,
        ),
        case(
            "c06-p256-utf8-cn-wildcard-dns-email",
            Client,
            P256,
            name(&[
                (O, PRINTABLE, "development"),
                (CN, UTF8, "svc_account@example.com"),
            ]),
            &[
                Gn::Dns("*.example.com"),
                Gn::Email("svc_account@example.com"),
            ],
            &["digital signature", "client auth"],
            Some(216_000),
        ),
        case(
            "c08-p256-just-under-8h",
            Client,
            P256,
            name(&[(O, UTF8, "development"), (CN, UTF8, "developer")]),
            &[ip("10.9.8.7")],
            &["client auth"],
            Some(28799),
        ),
        case(
            "s01-p256-node-go-canonical",
            Serving,
            P256,
            name(NODE),
            &[Gn::Dns("node-1"), ip("10.0.0.1")],
            &["digital signature", "server auth"],
            Some(3600),
        ),
        case(
            "s02-rsa2048-node-openssl-subject",
            Serving,
            Rsa2048,
            name(&[(CN, UTF8, "system:node:node-1"), (O, UTF8, "system:nodes")]),
            &[
                ip("10.0.0.1"),
                Gn::Dns("node-1.cluster.local"),
                ip("fd00::1"),
            ],
            &["key encipherment", "digital signature", "server auth"],
            None,
        ),
        case(
            "s03-ed25519-node-ip-only",
            Serving,
            Ed25519,
            name(NODE),
            &[ip("192.168.1.10")],
            &["digital signature", "server auth"],
            Some(86400),
        ),
        case(
            "s04-p384-node-several-sans",
            Serving,
            P384,
            name(NODE),
            &[
                Gn::Dns("node-1"),
                Gn::Dns("node-1.example.com"),
                ip("10.0.0.1"),
                ip("10.0.0.2"),
            ],
            &["server auth", "digital signature"],
            Some(600),
        ),
        case(
            "s05-rsa3072-node-8h",
            Serving,
            Rsa3072,
            name(NODE),
            &[Gn::Dns("node-1.example.com")],
            &["digital signature", "key encipherment", "server auth"],
            Some(28800),
        ),
    ];
    // Requested extensions beyond the SANs are dropped by both (and a critical SAN request does not make the
    // certificate's SAN critical).
    v.push(Case {
        name: "c07-rsa2048-requested-extensions-dropped-100h",
        kind: Client,
        key: Rsa2048,
        subject: Subject::Der(name(&[(CN, PRINTABLE, "developer")])),
        ext_values: vec![vec![
            extension("2.5.29.15", true, vec![0x03, 0x02, 0x02, 0x84]),
            extension(
                "2.5.29.37",
                false,
                seq(&[oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2")]),
            ),
            extension("2.5.29.19", true, seq(&[])),
            extension("2.5.29.14", false, octets(&[0x11; 20])),
            extension("1.3.6.1.4.1.55555.1", true, tlv(UTF8, b"hello")),
            san_extension(&[Gn::Dns("developer.example.com")], true),
        ]],
        raw_attributes: None,
        usages: &["client auth"],
        expiration: Some(360_000),
    });
    v
}

/// The requests kube-controller-manager signs and csr-signer deliberately refuses (README, "Deliberate
/// improvements"), with the reason: requests an approver reading them with Go would see differently from
/// the bytes (so what was approved is not what would be certified), and a leaf named like its CA.
fn deliberate_refusal(case: &str) -> Option<&'static str> {
    match case {
        "e01-subject-equal-to-the-ca-subject" => Some("SubjectNotAllowed"),
        "e03-uris-go-reserialises" | "e04-extension-request-with-two-values" => {
            Some("MalformedRequest")
        }
        _ => None,
    }
}

/// Valid requests (the apiserver accepts them, OpenSSL verifies them) that exercise corners of Go's parsing
/// and re-encoding. When this was first run, csr-signer omitted the AKI on e01, wrote e02's IPv4-mapped
/// address in 16 bytes (Go: 4), certified e03's URIs as sent (Go re-serialises them) and both values of
/// e04 (Go reads the first), and refused e05 and e09 as BadSignature (it verified the signature over a
/// re-encoding whose SETs the `der` crate sorts). e02, e05 and e09 now match Go; e01, e03 and e04 are
/// refused (`deliberate_refusal`).
fn edge_cases() -> Vec<Case> {
    use KeyType::*;
    use Kind::*;
    let dev = || name(&[(CN, PRINTABLE, "developer")]);
    vec![
        Case {
            name: "e01-subject-equal-to-the-ca-subject",
            kind: Client,
            key: P256,
            subject: Subject::SameAsCa,
            ext_values: Vec::new(),
            raw_attributes: None,
            usages: &["client auth"],
            expiration: Some(3600),
        },
        case(
            "e02-ipv4-mapped-ipv6-san",
            Client,
            P256,
            dev(),
            &[ip("::ffff:10.0.0.7")],
            &["client auth"],
            Some(3600),
        ),
        case(
            "e03-uris-go-reserialises",
            Client,
            P256,
            dev(),
            &[
                Gn::Uri("SPIFFE://cluster.local/ns/team-a/sa/app"),
                Gn::Uri("https://example.com/a b"),
            ],
            &["client auth"],
            Some(3600),
        ),
        Case {
            name: "e04-extension-request-with-two-values",
            kind: Client,
            key: P256,
            subject: Subject::Der(dev()),
            ext_values: vec![
                vec![san_extension(&[Gn::Dns("a.example.com")], false)],
                vec![san_extension(&[Gn::Dns("bb.example.com")], false)],
            ],
            raw_attributes: None,
            usages: &["client auth"],
            expiration: Some(3600),
        },
        case(
            "e05-unsorted-multivalued-rdn",
            Client,
            P256,
            // One RDN {CN=developer-with-a-long-name, O=dev}: not in DER SET order (the longer CN sorts last).
            seq(&[tlv(
                0x31,
                &[
                    atv((CN, PRINTABLE, "developer-with-a-long-name")),
                    atv((O, PRINTABLE, "dev")),
                ]
                .concat(),
            )]),
            &[],
            &["client auth"],
            Some(3600),
        ),
        case(
            "e07-sorted-multivalued-rdn-cn-and-o",
            Client,
            P256,
            name_rdns(&[&[(CN, PRINTABLE, "developer"), (O, PRINTABLE, "development")]]),
            &[],
            &["client auth"],
            Some(3600),
        ),
        Case {
            // DER forbids encoding a DEFAULT value, but BER-minded CSR generators write critical FALSE.
            name: "e08-requested-san-with-explicit-critical-false",
            kind: Client,
            key: P256,
            subject: Subject::Der(dev()),
            ext_values: vec![vec![seq(&[
                oid("2.5.29.17"),
                vec![0x01, 0x01, 0x00],
                octets(&seq(&[general_name(&Gn::Dns("developer.example.com"))])),
            ])]],
            raw_attributes: None,
            usages: &["client auth"],
            expiration: Some(3600),
        },
        Case {
            // Two attributes (extensionRequest, then challengePassword) not in DER SET order.
            name: "e09-attributes-not-in-der-order",
            kind: Client,
            key: P256,
            subject: Subject::Der(dev()),
            ext_values: Vec::new(),
            raw_attributes: Some(tlv(
                0xa0,
                &[
                    seq(&[
                        oid("1.2.840.113549.1.9.14"),
                        set(&[seq(&[san_extension(
                            &[Gn::Dns("developer.example.com")],
                            false,
                        )])]),
                    ]),
                    seq(&[oid("1.2.840.113549.1.9.7"), set(&[tlv(UTF8, b"secret")])]),
                ]
                .concat(),
            )),
            usages: &["client auth"],
            expiration: Some(3600),
        },
        case(
            "e06-two-common-names",
            Client,
            P256,
            name(&[(CN, PRINTABLE, "developer"), (CN, PRINTABLE, "developer2")]),
            &[],
            &["client auth"],
            Some(3600),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Comparison.
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Same,
    /// A difference the README documents, checked to be exactly that.
    Deliberate(&'static str),
    Diff(String),
}

#[derive(Clone, Debug)]
struct Row {
    field: String,
    kcm: String,
    ours: String,
    outcome: Outcome,
}

struct Compared {
    case: String,
    header: String,
    rows: Vec<Row>,
}

impl Compared {
    fn row(&mut self, field: &str, kcm: String, ours: String, outcome: Outcome) {
        self.rows.push(Row {
            field: field.into(),
            kcm,
            ours,
            outcome,
        });
    }

    /// Same when the raw bytes are equal, else a difference showing both.
    fn bytes(&mut self, field: &str, kcm: &[u8], ours: &[u8], text: impl Fn(&[u8]) -> String) {
        let outcome = if kcm == ours {
            Outcome::Same
        } else {
            Outcome::Diff(format!("KCM {} vs csr-signer {}", hex(kcm), hex(ours)))
        };
        self.row(field, text(kcm), text(ours), outcome);
    }

    fn print(&self) {
        eprintln!("\n== {} — {}", self.case, self.header);
        eprintln!(
            "   {:<30} | {:<44} | {:<44} | outcome",
            "field", "kube-controller-manager", "csr-signer"
        );
        let cut = |s: &str| -> String {
            if s.chars().count() > 44 {
                format!("{}…", s.chars().take(43).collect::<String>())
            } else {
                s.to_string()
            }
        };
        for r in &self.rows {
            let outcome = match &r.outcome {
                Outcome::Same => "same".to_string(),
                Outcome::Deliberate(why) => format!("deliberate: {why}"),
                Outcome::Diff(_) => "DIFFERENT".to_string(),
            };
            eprintln!(
                "   {:<30} | {:<44} | {:<44} | {outcome}",
                r.field,
                cut(&r.kcm),
                cut(&r.ours)
            );
            if let Outcome::Diff(d) = &r.outcome {
                eprintln!(
                    "     └ KCM:        {}\n     └ csr-signer: {}\n     └ {d}",
                    r.kcm, r.ours
                );
            }
        }
    }
}

/// What one configuration's CA looks like to the comparison.
struct CaInfo {
    cert_der: Vec<u8>,
    /// The CA certificate file as written (PEM), what csr-signer appends after the leaf for an intermediate.
    cert_pem: String,
    subject: Vec<u8>,
    ski: Option<Vec<u8>>,
    not_after: i64,
    public_key: PKey<openssl::pkey::Public>,
    intermediate: bool,
}

/// Splits `status.certificate` into (label, DER, block text) and checks the block format Go's
/// pem.EncodeToMemory produces (64-character lines, no headers, trailing newline).
fn pem_blocks(text: &str) -> Result<Vec<(Vec<u8>, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        if !rest[..start].trim().is_empty() {
            return Err(format!("text between PEM blocks: {:?}", &rest[..start]));
        }
        let end_marker = "-----END CERTIFICATE-----\n";
        let end = rest.find(end_marker).ok_or("unterminated PEM block")? + end_marker.len();
        let block = &rest[start..end];
        let body = block
            .strip_prefix("-----BEGIN CERTIFICATE-----\n")
            .ok_or(format!("block label: {:?}", block.lines().next()))?
            .strip_suffix(end_marker)
            .ok_or("block end")?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.replace('\n', ""))
            .map_err(|e| e.to_string())?;
        if block != pem("CERTIFICATE", &der) {
            return Err("PEM block is not in the canonical 64-column form".into());
        }
        out.push((der, block.to_string()));
        rest = &rest[end..];
    }
    if !rest.trim().is_empty() {
        return Err(format!("trailing text after the PEM blocks: {rest:?}"));
    }
    Ok(out)
}

/// NotAfter by the KCM rule for a certificate signed at `signed`.
fn expected_not_after(signed: i64, expiration: Option<i32>, ca_not_after: i64) -> i64 {
    let ttl = match expiration {
        None => CERT_TTL,
        Some(s) => (s.max(0) as u64).clamp(600, CERT_TTL),
    };
    let end = if ttl < SHORT {
        signed + ttl as i64
    } else {
        signed + ttl as i64 - BACKDATE as i64
    };
    end.min(ca_not_after)
}

struct Signed {
    kcm_pem: String,
    ours_pem: String,
    csr_der: Vec<u8>,
    /// Window in which kube-controller-manager signed: [approved, certificate seen], unix seconds.
    kcm_window: (f64, f64),
    /// The `now` csr-signer was given.
    ours_now: SystemTime,
}

fn compare(case: &Case, header: String, ca: &CaInfo, s: &Signed) -> Compared {
    let mut c = Compared {
        case: case.name.to_string(),
        header,
        rows: Vec::new(),
    };
    let kcm_blocks = match pem_blocks(&s.kcm_pem) {
        Ok(b) => b,
        Err(e) => {
            c.row(
                "status.certificate (KCM)",
                e.clone(),
                String::new(),
                Outcome::Diff(e),
            );
            return c;
        }
    };
    let our_blocks = match pem_blocks(&s.ours_pem) {
        Ok(b) => b,
        Err(e) => {
            c.row(
                "status.certificate (csr-signer)",
                String::new(),
                e.clone(),
                Outcome::Diff(e),
            );
            return c;
        }
    };
    let (Some((kcm_der, _)), Some((our_der, _))) = (kcm_blocks.first(), our_blocks.first()) else {
        c.row(
            "PEM blocks",
            kcm_blocks.len().to_string(),
            our_blocks.len().to_string(),
            Outcome::Diff("no certificate".into()),
        );
        return c;
    };
    let (k, o) = match (parse_cert(kcm_der), parse_cert(our_der)) {
        (Ok(k), Ok(o)) => (k, o),
        (k, o) => {
            let e = format!("parse: KCM {:?} / csr-signer {:?}", k.err(), o.err());
            c.row(
                "DER structure",
                String::new(),
                String::new(),
                Outcome::Diff(e),
            );
            return c;
        }
    };
    let csr_subject = {
        let (req, _) = read_tlv(&s.csr_der).expect("csr");
        let parts = children(req.content).expect("csr parts");
        let info = children(parts[0].content).expect("csr info");
        (info[1].full.to_vec(), info[2].full.to_vec())
    };
    let (csr_subject, csr_spki) = csr_subject;

    // --- outer structure ---
    c.bytes(
        "version",
        k.version.unwrap_or(&[]),
        o.version.unwrap_or(&[]),
        |b| {
            if b == [0xa0, 0x03, 0x02, 0x01, 0x02] {
                "v3".into()
            } else {
                hex(b)
            }
        },
    );
    let serial_ok = |t: &Tlv<'_>| -> Result<String, String> {
        let b = t.content;
        if b.is_empty() || b[0] & 0x80 != 0 {
            return Err("not positive".into());
        }
        if b.len() > 1 && b[0] == 0 && b[1] & 0x80 == 0 {
            return Err("non-minimal INTEGER".into());
        }
        let mag = if b[0] == 0 { &b[1..] } else { b };
        if mag.len() > 16 || mag.iter().all(|x| *x == 0) {
            return Err(format!("outside [1, 2^128): {} bytes", mag.len()));
        }
        Ok(format!("{} bytes {}", mag.len(), hex(mag)))
    };
    match (serial_ok(&k.serial), serial_ok(&o.serial)) {
        (Ok(a), Ok(b)) => c.row("serialNumber (range)", a, b, Outcome::Same),
        (a, b) => {
            let (a, b) = (format!("{a:?}"), format!("{b:?}"));
            c.row(
                "serialNumber (range)",
                a.clone(),
                b.clone(),
                Outcome::Diff(format!("{a} / {b}")),
            )
        }
    }
    c.bytes("signature (TBS algorithm)", k.tbs_alg, o.tbs_alg, alg_text);
    c.bytes(
        "signatureAlgorithm (outer)",
        k.outer_alg,
        o.outer_alg,
        alg_text,
    );
    let outer_matches = |x: &Cert<'_>| x.outer_alg == x.tbs_alg;
    c.row(
        "outer alg == TBS alg",
        outer_matches(&k).to_string(),
        outer_matches(&o).to_string(),
        if outer_matches(&k) && outer_matches(&o) {
            Outcome::Same
        } else {
            Outcome::Diff("signatureAlgorithm differs from TBSCertificate.signature".into())
        },
    );
    let verifies = |x: &Cert<'_>| {
        X509::from_der(x.der)
            .and_then(|c| c.verify(&ca.public_key))
            .unwrap_or(false)
    };
    c.row(
        "signature verifies (CA key)",
        verifies(&k).to_string(),
        verifies(&o).to_string(),
        if verifies(&k) && verifies(&o) {
            Outcome::Same
        } else {
            Outcome::Diff("a signature does not verify with the CA's public key".into())
        },
    );

    // --- issuer ---
    c.bytes("issuer (bytes)", k.issuer, o.issuer, name_text);
    if o.issuer != ca.subject.as_slice() {
        c.row(
            "issuer == CA subject bytes",
            String::new(),
            name_text(o.issuer),
            Outcome::Diff(format!(
                "csr-signer issuer {} is not the CA subject {}",
                hex(o.issuer),
                hex(&ca.subject)
            )),
        );
    }

    // --- validity ---
    let times = |x: &Cert<'_>| -> Result<(i64, i64), String> {
        Ok((time_secs(&x.not_before)?, time_secs(&x.not_after)?))
    };
    match (times(&k), times(&o)) {
        (Ok((knb, kna)), Ok((onb, ona))) => {
            let tags = |x: &Cert<'_>| format!("{:#04x}/{:#04x}", x.not_before.tag, x.not_after.tag);
            c.row(
                "validity encoding (tags)",
                tags(&k),
                tags(&o),
                if tags(&k) == tags(&o) {
                    Outcome::Same
                } else {
                    Outcome::Diff("UTCTime/GeneralizedTime choice differs".into())
                },
            );
            // KCM: NotBefore = signing time − 5 min, the signing time within [approved, seen].
            let k_signed = knb + BACKDATE as i64;
            let (lo, hi) = s.kcm_window;
            let k_in_window = (k_signed as f64) >= lo.floor() && (k_signed as f64) <= hi;
            let o_signed = s
                .ours_now
                .duration_since(UNIX_EPOCH)
                .expect("time")
                .as_secs() as i64;
            let o_exact = onb == o_signed - BACKDATE as i64;
            let fmt_t = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default()
            };
            c.row(
                "notBefore = signed − 5 min",
                format!("{} (signed in window: {k_in_window})", fmt_t(knb)),
                format!("{} (exact: {o_exact})", fmt_t(onb)),
                if k_in_window && o_exact {
                    Outcome::Same
                } else {
                    Outcome::Diff(format!(
                        "KCM signing time {k_signed} vs window [{lo:.0}, {hi:.0}]; csr-signer NotBefore {onb} vs now {o_signed} − 300"
                    ))
                },
            );
            let delta = onb - knb;
            let max_delta = (o_signed as f64 - lo.floor()).ceil() as i64 + 1;
            c.row(
                "notBefore (absolute)",
                fmt_t(knb),
                format!("{} (+{delta} s)", fmt_t(onb)),
                if (0..=max_delta).contains(&delta) {
                    Outcome::Same
                } else {
                    Outcome::Diff(format!(
                        "csr-signer signed {delta} s after KCM; at most {max_delta} s passed between the two signings"
                    ))
                },
            );
            let k_exp = expected_not_after(k_signed, case.expiration, ca.not_after);
            let o_exp = expected_not_after(o_signed, case.expiration, ca.not_after);
            c.row(
                "notAfter (KCM rule)",
                format!("{} (rule: {})", fmt_t(kna), kna == k_exp),
                format!("{} (rule: {})", fmt_t(ona), ona == o_exp),
                if kna == k_exp && ona == o_exp {
                    Outcome::Same
                } else {
                    Outcome::Diff(format!(
                        "expected KCM {k_exp} got {kna}; expected csr-signer {o_exp} got {ona}"
                    ))
                },
            );
            let capped = kna == ca.not_after || ona == ca.not_after;
            let (kd, od) = (kna - knb, ona - onb);
            c.row(
                "notAfter − notBefore",
                format!(
                    "{kd} s{}",
                    if kna == ca.not_after { " (CA end)" } else { "" }
                ),
                format!(
                    "{od} s{}",
                    if ona == ca.not_after { " (CA end)" } else { "" }
                ),
                if kd == od || (capped && kna == ona && kna == ca.not_after) {
                    Outcome::Same
                } else {
                    Outcome::Diff(format!("durations {kd} s vs {od} s"))
                },
            );
        }
        (a, b) => c.row(
            "validity",
            format!("{a:?}"),
            format!("{b:?}"),
            Outcome::Diff("unreadable validity".into()),
        ),
    }

    // --- subject ---
    let go = go_subject(&csr_subject).unwrap_or_default();
    let subject_outcome = if k.subject == o.subject {
        if o.subject == csr_subject.as_slice() {
            Outcome::Same
        } else {
            Outcome::Diff(format!(
                "both equal but not the request's subject {}",
                hex(&csr_subject)
            ))
        }
    } else if o.subject == csr_subject.as_slice() && k.subject == go.as_slice() {
        Outcome::Deliberate("subject kept byte for byte (Go re-encodes)")
    } else {
        let mut why = Vec::new();
        if o.subject != csr_subject.as_slice() {
            why.push(format!(
                "csr-signer's subject {} is not the request's bytes {} ({})",
                hex(o.subject),
                hex(&csr_subject),
                name_text(&csr_subject)
            ));
        }
        if k.subject != go.as_slice() {
            why.push(format!(
                "KCM's subject {} is not the modelled Go re-encoding {}",
                hex(k.subject),
                hex(&go)
            ));
        }
        Outcome::Diff(why.join("; "))
    };
    c.row(
        "subject (bytes)",
        name_text(k.subject),
        name_text(o.subject),
        subject_outcome,
    );

    // --- public key ---
    c.bytes("subjectPublicKeyInfo", k.spki, o.spki, |b| {
        let alg = read_tlv(b)
            .ok()
            .and_then(|(t, _)| children(t.content).ok())
            .and_then(|p| p.first().map(|a| alg_text(a.full)))
            .unwrap_or_default();
        format!("{alg}, {} bytes", b.len())
    });
    if o.spki != csr_spki.as_slice() {
        c.row(
            "SPKI == request's SPKI",
            String::new(),
            hex(o.spki),
            Outcome::Diff("csr-signer's SPKI is not the request's".into()),
        );
    }
    c.bytes(
        "issuerUniqueID",
        k.issuer_uid.unwrap_or(&[]),
        o.issuer_uid.unwrap_or(&[]),
        |b| {
            if b.is_empty() {
                "absent".into()
            } else {
                hex(b)
            }
        },
    );
    c.bytes(
        "subjectUniqueID",
        k.subject_uid.unwrap_or(&[]),
        o.subject_uid.unwrap_or(&[]),
        |b| {
            if b.is_empty() {
                "absent".into()
            } else {
                hex(b)
            }
        },
    );

    // --- extensions ---
    let names = |v: &[Ext<'_>]| {
        v.iter()
            .map(|e| oid_name(&e.oid).to_string())
            .collect::<Vec<_>>()
    };
    let ski_oid = "2.5.29.14";
    let k_ski = k.extensions.iter().position(|e| e.oid == ski_oid);
    let o_ski = o.extensions.iter().position(|e| e.oid == ski_oid);
    let spki_bits = {
        let (t, _) = read_tlv(o.spki).expect("spki");
        let parts = children(t.content).expect("spki parts");
        parts[1].content[1..].to_vec()
    };
    let expected_ski = openssl::hash::hash(MessageDigest::sha1(), &spki_bits)
        .expect("sha1")
        .to_vec();
    match (k_ski, o_ski) {
        (None, Some(i)) => {
            let e = &o.extensions[i];
            let after_bc = i > 0 && o.extensions[i - 1].oid == "2.5.29.19";
            let ok = !e.critical && e.value == octets(&expected_ski).as_slice() && after_bc;
            c.row(
                "subjectKeyIdentifier",
                "absent".into(),
                ext_text(e),
                if ok {
                    Outcome::Deliberate("SKI on the leaf (SHA-1 of the key bits)")
                } else {
                    Outcome::Diff(format!(
                        "SKI must be non-critical, SHA-1 {} of the key bits, right after basicConstraints",
                        hex(&expected_ski)
                    ))
                },
            );
        }
        (a, b) => c.row(
            "subjectKeyIdentifier",
            format!("{a:?}"),
            format!("{b:?}"),
            Outcome::Diff("expected: absent from KCM's leaf, present in csr-signer's".into()),
        ),
    }
    let ours_without_ski: Vec<Ext<'_>> = o
        .extensions
        .iter()
        .filter(|e| e.oid != ski_oid)
        .cloned()
        .collect();
    let (kn, on) = (names(&k.extensions), names(&ours_without_ski));
    c.row(
        "extension order (w/o SKI)",
        kn.join(","),
        on.join(","),
        if kn == on {
            Outcome::Same
        } else {
            Outcome::Diff(format!("KCM {kn:?} vs csr-signer {on:?}"))
        },
    );
    let mut oids: Vec<String> = k.extensions.iter().map(|e| e.oid.clone()).collect();
    for e in &ours_without_ski {
        if !oids.contains(&e.oid) {
            oids.push(e.oid.clone());
        }
    }
    for id in oids {
        let ke = k.extensions.iter().find(|e| e.oid == id);
        let oe = ours_without_ski.iter().find(|e| e.oid == id);
        let field = format!("ext {}", oid_name(&id));
        let show = |e: Option<&Ext<'_>>| e.map(ext_text).unwrap_or_else(|| "absent".into());
        let outcome = match (ke, oe) {
            (Some(a), Some(b)) if a.full == b.full => Outcome::Same,
            (a, b) => {
                let mut d = format!(
                    "KCM {} vs csr-signer {}",
                    a.map(|e| hex(e.full)).unwrap_or("absent".into()),
                    b.map(|e| hex(e.full)).unwrap_or("absent".into())
                );
                if id == "2.5.29.35" && b.is_none() && o.subject == o.issuer {
                    d.push_str(
                        " — csr-signer omits the AKI because the leaf's subject bytes equal its issuer's; \
                         Go's re-encoded subject differs from the issuer, so Go keeps the AKI",
                    );
                }
                Outcome::Diff(d)
            }
        };
        c.row(&field, show(ke), show(oe), outcome);
    }
    if let Some(aki) = o.extensions.iter().find(|e| e.oid == "2.5.29.35") {
        let expected = ca.ski.as_ref().map(|id| seq(&[tlv(0x80, id)]));
        if Some(aki.value.to_vec()) != expected {
            c.row(
                "AKI == CA's SKI",
                String::new(),
                hex(aki.value),
                Outcome::Diff("csr-signer's AKI is not the CA's subjectKeyIdentifier".into()),
            );
        }
    }

    // --- the chain in status.certificate ---
    let k_leaf_text = &kcm_blocks[0].1;
    let o_leaf_text = &our_blocks[0].1;
    c.row(
        "PEM leaf block format",
        format!("{} bytes, canonical", k_leaf_text.len()),
        format!("{} bytes, canonical", o_leaf_text.len()),
        Outcome::Same,
    );
    let k_rest: Vec<&String> = kcm_blocks[1..].iter().map(|b| &b.1).collect();
    let o_rest: Vec<&String> = our_blocks[1..].iter().map(|b| &b.1).collect();
    let chain_outcome = if k_rest == o_rest {
        Outcome::Same
    } else if ca.intermediate
        && k_rest.is_empty()
        && o_rest.len() == 1
        && our_blocks[1].0 == ca.cert_der
        && *o_rest[0] == ca.cert_pem
    {
        Outcome::Deliberate("leaf followed by the intermediates")
    } else {
        Outcome::Diff(format!(
            "KCM {} extra blocks, csr-signer {} extra blocks",
            k_rest.len(),
            o_rest.len()
        ))
    };
    c.row(
        "PEM blocks after the leaf",
        format!("{}", k_rest.len()),
        if o_rest.is_empty() {
            "0".into()
        } else {
            format!("{} (the signing intermediate)", o_rest.len())
        },
        chain_outcome,
    );
    c
}

// ---------------------------------------------------------------------------------------------------------
// Running one CA configuration against a real control plane.
// ---------------------------------------------------------------------------------------------------------

struct Setup {
    label: &'static str,
    key_type: KeyType,
    days: u32,
    intermediate: bool,
}

fn policy_yaml(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        r#"signers:
- name: example.com/mtls
  ca: {{certFile: "{}", keyFile: "{}"}}
  policy:
    usages:
      allowed: [digital signature, key encipherment, client auth, server auth]
      requireOneOf: [client auth, server auth]
    lifetime: {{default: 72h, min: 10m, max: 72h}}
    subject:
      commonNames: ["*", "*.*", "*.*.*", "*.*.*.*", "*@*.*"]
      organizations: null
    sans:
      dns: ["*", "*.*", "*.*.*", "*.*.*.*"]
      allowWildcardDns: true
      ip: true
      email: true
      uri: ["spiffe://cluster.local/ns/*/sa/*", "SPIFFE://cluster.local/ns/*/sa/*", "https://example.com/*"]
      maxCount: 16
    trustedRequesters: [developer, "system:node:node-1"]
"#,
        cert.display(),
        key.display()
    )
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("time").as_secs_f64()
}

fn key_for(kind: KeyType) -> PKey<Private> {
    ca_init::generate_key(kind).expect("key")
}

/// Runs every case through kube-controller-manager and csr-signer and returns the comparisons and, for a
/// case KCM or csr-signer did not sign, why.
async fn run(setup: &Setup, cases: &[Case]) -> (Vec<Compared>, Vec<String>) {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let created = ca_init::init(&ca_init::InitOptions {
        out: dir.path().join("ca"),
        key_type: setup.key_type,
        days: setup.days,
        common_name: format!("side-by-side {} CA", setup.label),
        intermediate: setup.intermediate,
    })
    .expect("ca init");
    let ca_pem = std::fs::read_to_string(&created.cert).expect("ca.crt");
    let ca_x509 = X509::from_pem(ca_pem.as_bytes()).expect("ca pem");
    let ca_der = ca_x509.to_der().expect("ca der");
    let ca = {
        let parsed = parse_cert(&ca_der).expect("CA parses");
        CaInfo {
            cert_der: ca_der.clone(),
            cert_pem: ca_pem.clone(),
            subject: parsed.subject.to_vec(),
            ski: parsed
                .extensions
                .iter()
                .find(|e| e.oid == "2.5.29.14")
                .and_then(|e| read_tlv(e.value).ok().map(|(t, _)| t.content.to_vec())),
            not_after: time_secs(&parsed.not_after).expect("CA notAfter"),
            public_key: ca_x509.public_key().expect("CA key"),
            intermediate: setup.intermediate,
        }
    };

    let cp = tokio::task::block_in_place(|| {
        kube_support::ControlPlane::start(&kube_support::Options {
            kcm: true,
            kcm_signing: Some((created.cert.clone(), created.key.clone())),
            kcm_args: vec![format!("--cluster-signing-duration={}h", CERT_TTL / 3600)],
            ..Default::default()
        })
    });
    let settings = Settings::from_yaml(
        &policy_yaml(&created.cert, &created.key),
        "side-by-side.yaml",
    )
    .expect("settings");
    let engine = Engine::from_settings(&settings).expect("engine");
    let signer = engine.signer("example.com/mtls").expect("signer");

    let admin = Api::<CertificateSigningRequest>::all(cp.client("admin").await);
    let developer = Api::<CertificateSigningRequest>::all(cp.client("developer").await);
    let node = Api::<CertificateSigningRequest>::all(cp.client("node-1").await);

    let mut failures = Vec::new();
    let mut created_csrs = Vec::new();
    for case in cases {
        let subject = match &case.subject {
            Subject::Der(d) => d.clone(),
            Subject::SameAsCa => ca.subject.clone(),
        };
        let key = key_for(case.key);
        let der = build_csr(
            &key,
            &subject,
            &case.ext_values,
            case.raw_attributes.as_deref(),
        );
        let request = pem("CERTIFICATE REQUEST", &der);
        let (api, signer_name) = match case.kind {
            Kind::Client => (&developer, CLIENT_SIGNER),
            Kind::Serving => (&node, SERVING_SIGNER),
        };
        let obj = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(case.name.to_string()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(request.clone().into_bytes()),
                signer_name: signer_name.to_string(),
                usages: Some(case.usages.iter().map(|s| s.to_string()).collect()),
                expiration_seconds: case.expiration,
                ..Default::default()
            },
            status: None,
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(o) => created_csrs.push((case, der, request, o)),
            Err(e) => failures.push(format!(
                "{}/{}: the apiserver refused the CSR: {e}",
                setup.label, case.name
            )),
        }
    }
    // Approve everything, then collect KCM's certificates.
    let mut approved_at = Vec::new();
    for (case, ..) in &created_csrs {
        let t = SystemTime::now();
        admin
            .patch_approval(
                case.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"conditions": [{
                    "type": "Approved", "status": "True", "reason": "SideBySide",
                    "message": "approved by real_kcm_side_by_side"}]}})),
            )
            .await
            .unwrap_or_else(|e| panic!("approve {}: {e}", case.name));
        approved_at.push(t);
    }
    let mut compared = Vec::new();
    for ((case, der, request, obj), approved) in created_csrs.iter().zip(approved_at) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (kcm_pem, seen) = loop {
            let cur = admin.get(case.name).await.expect("get csr");
            let status = cur.status.clone().unwrap_or_default();
            if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                break (
                    Some(String::from_utf8(cert.0).expect("PEM is text")),
                    SystemTime::now(),
                );
            }
            if let Some(f) = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed")
            {
                failures.push(format!(
                    "{}/{}: kube-controller-manager refused: {:?}: {:?}",
                    setup.label, case.name, f.reason, f.message
                ));
                break (None, SystemTime::now());
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(cp.ready.dir.join("kube-controller-manager.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(case.name) || l.contains("rror"))
                    .collect();
                failures.push(format!(
                    "{}/{}: kube-controller-manager issued nothing within 60 s; its log says:\n{}",
                    setup.label,
                    case.name,
                    tail[tail.len().saturating_sub(10)..].join("\n")
                ));
                break (None, SystemTime::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(kcm_pem) = kcm_pem else { continue };

        // csr-signer signs exactly what the apiserver holds.
        let spec = &obj.spec;
        let usages = spec.usages.clone().unwrap_or_default();
        let groups = spec.groups.clone().unwrap_or_default();
        let username = spec.username.clone().unwrap_or_default();
        let req = SignRequest {
            request: &spec.request.0,
            usages: &usages,
            expiration_seconds: spec.expiration_seconds,
            annotations: obj.metadata.annotations.as_ref(),
            username: &username,
            groups: &groups,
        };
        assert_eq!(
            spec.request.0,
            request.as_bytes(),
            "the apiserver keeps spec.request as sent"
        );
        let now = SystemTime::now();
        let refusal_expected = deliberate_refusal(case.name);
        let ours = match signer.sign(&req, now) {
            Ok(Decision::Issued(i)) => {
                if let Some(reason) = refusal_expected {
                    failures.push(format!(
                        "{}/{}: csr-signer signed what the README says it refuses ({reason})",
                        setup.label, case.name
                    ));
                    continue;
                }
                i.certificate_pem
            }
            Ok(Decision::Refused(r)) if refusal_expected == Some(r.reason.as_str()) => {
                eprintln!(
                    "{}/{}: refused by csr-signer as the README says, signed by kube-controller-manager: {r}",
                    setup.label, case.name
                );
                continue;
            }
            Ok(Decision::Refused(r)) => {
                failures.push(format!(
                    "{}/{}: csr-signer refused what KCM signed: {r}",
                    setup.label, case.name
                ));
                continue;
            }
            Err(e) => panic!("{}: csr-signer transient error: {e}", case.name),
        };
        let header = format!(
            "{} CA ({:?}{}, {} days); {}; requester {} {:?}; usages {:?}; expirationSeconds {:?}; key {:?}",
            setup.label,
            setup.key_type,
            if setup.intermediate { ", intermediate" } else { "" },
            setup.days,
            spec.signer_name,
            username,
            groups,
            usages,
            spec.expiration_seconds,
            case.key
        );
        compared.push(compare(
            case,
            header,
            &ca,
            &Signed {
                kcm_pem,
                ours_pem: ours,
                csr_der: der.clone(),
                kcm_window: (unix(approved), unix(seen)),
                ours_now: now,
            },
        ));
    }
    eprintln!(
        "\n{}: {} cases, control plane startup {} ms, total {:.1} s",
        setup.label,
        cases.len(),
        cp.ready.startup_millis,
        started.elapsed().as_secs_f64()
    );
    (compared, failures)
}

/// Prints every table and a summary; fails naming every undocumented difference.
fn report(label: &str, compared: &[Compared], failures: &[String]) {
    for c in compared {
        c.print();
    }
    let mut diffs = Vec::new();
    let (mut same, mut deliberate) = (0, 0);
    for c in compared {
        for r in &c.rows {
            match &r.outcome {
                Outcome::Same => same += 1,
                Outcome::Deliberate(_) => deliberate += 1,
                Outcome::Diff(d) => diffs.push(format!("{label}/{} — {}: {d}", c.case, r.field)),
            }
        }
    }
    eprintln!(
        "\n{label}: {} cases compared, {same} fields same, {deliberate} deliberate (README) differences, {} undocumented differences, {} cases not compared",
        compared.len(),
        diffs.len(),
        failures.len()
    );
    let problems: Vec<String> = failures.iter().cloned().chain(diffs).collect();
    assert!(
        problems.is_empty(),
        "{label}: csr-signer and kube-controller-manager differ beyond the README's deliberate differences:\n{}",
        problems.join("\n")
    );
}

async fn matrix(setup: Setup, cases: Vec<Case>) {
    let (compared, failures) = run(&setup, &cases).await;
    report(setup.label, &compared, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_root_ca_that_expires_before_the_longer_lifetimes() {
    // The CA ends in 2 days: expirationSeconds 60 h, 100 h and none (72 h) all end at the CA's NotAfter.
    matrix(
        Setup {
            label: "p256-root-2d",
            key_type: KeyType::P256,
            days: 2,
            intermediate: false,
        },
        standard_cases(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa2048_root_ca() {
    matrix(
        Setup {
            label: "rsa2048-root",
            key_type: KeyType::Rsa2048,
            days: 365,
            intermediate: false,
        },
        standard_cases(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p384_intermediate_ca() {
    matrix(
        Setup {
            label: "p384-intermediate",
            key_type: KeyType::P384,
            days: 365,
            intermediate: true,
        },
        standard_cases(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_root_ca() {
    // kube-controller-manager's key loader (client-go keyutil.ParsePrivateKeyPEM) returns whatever PKCS#8
    // holds, and Go's x509.CreateCertificate signs with Ed25519: this records whether KCM really does.
    matrix(
        Setup {
            label: "ed25519-root",
            key_type: KeyType::Ed25519,
            days: 365,
            intermediate: false,
        },
        standard_cases(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_requests_p256_root_ca() {
    matrix(
        Setup {
            label: "edge-p256-root",
            key_type: KeyType::P256,
            days: 365,
            intermediate: false,
        },
        edge_cases(),
    )
    .await;
}
