//! The request classes csr-signer used to certify although it must not (issue 10, items 1, 2, 5 and 6),
//! each through `csr-signer sign` and through the controller on both API servers; where kube-apiserver
//! itself rejects the request at create, that rejection is asserted too (it is the evidence of what Go
//! makes of the request). Tricky requests that are valid are issued, and the certificates are checked with
//! `openssl verify` and Go's crypto/x509.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod gopem;
mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use controller_support::*;
use csr_signer::ca_init::KeyType;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, PointConversionForm};
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509Req, X509};
use support::{key, openssl_verify, CsrSpec, TestCa};

// ---------------------------------------------------------------------------------------------------
// DER, by hand: these requests are ones no library would build.

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    der::asn1::AnyRef::new(der::Tag::from_der(&[tag]).unwrap(), content)
        .unwrap()
        .to_der()
        .unwrap()
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A positive INTEGER from big-endian magnitude bytes.
fn int(magnitude: &[u8]) -> Vec<u8> {
    let mut m: Vec<u8> = magnitude.iter().copied().skip_while(|&b| b == 0).collect();
    if m.first().is_none_or(|&b| b & 0x80 != 0) {
        m.insert(0, 0);
    }
    tlv(0x02, &m)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

const OID_CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
const OID_OU: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0b];
const OID_O: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
const OID_C: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x06];
const NULL: &[u8] = &[0x05, 0x00];

fn oid_rsa() -> Vec<u8> {
    tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
    )
}
fn oid_ec() -> Vec<u8> {
    tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01])
}
fn oid_p256() -> Vec<u8> {
    tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07])
}
fn oid_ed25519() -> Vec<u8> {
    tlv(0x06, &[0x2b, 0x65, 0x70])
}
fn alg_rsa_sha256() -> Vec<u8> {
    seq(&[
        &tlv(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        ),
        NULL,
    ])
}
fn alg_ecdsa_sha256() -> Vec<u8> {
    seq(&[&tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
    )])
}
fn alg_ed25519() -> Vec<u8> {
    seq(&[&oid_ed25519()])
}

/// One attribute: (type OID, whole value TLV).
fn atv(oid: &[u8], value: &[u8]) -> Vec<u8> {
    seq(&[oid, value])
}

/// A Name from RDNs, each a SET of attributes (possibly none).
fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let sets: Vec<Vec<u8>> = rdns.iter().map(|rdn| tlv(0x31, &rdn.concat())).collect();
    tlv(0x30, &sets.concat())
}

fn utf8(s: &str) -> Vec<u8> {
    tlv(0x0c, s.as_bytes())
}
fn printable(s: &str) -> Vec<u8> {
    tlv(0x13, s.as_bytes())
}

/// CN=developer (what the default policy allows the test's requester).
fn developer() -> Vec<u8> {
    name(&[vec![atv(OID_CN, &utf8("developer"))]])
}

fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    seq(&[
        &seq(&[&oid_rsa(), NULL]),
        &bit_string(&seq(&[&int(n), &int(e)])),
    ])
}
fn ec_spki(point: &[u8]) -> Vec<u8> {
    seq(&[&seq(&[&oid_ec(), &oid_p256()]), &bit_string(point)])
}
fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    seq(&[&seq(&[&oid_ed25519()]), &bit_string(key)])
}

/// CertificationRequestInfo with no attributes.
fn info(subject: &[u8], spki: &[u8]) -> Vec<u8> {
    seq(&[&int(&[0]), subject, spki, &[0xa0, 0x00]])
}

/// The request, PEM-encoded, with `signature` over `info`.
fn request(info: &[u8], alg: &[u8], signature: &[u8]) -> Vec<u8> {
    pem(
        "CERTIFICATE REQUEST",
        &seq(&[info, alg, &bit_string(signature)]),
    )
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s.into_bytes()
}

fn sign_with(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut signer = if key.id() == openssl::pkey::Id::ED25519 {
        Signer::new_without_digest(key).unwrap()
    } else {
        Signer::new(MessageDigest::sha256(), key).unwrap()
    };
    signer.sign_oneshot_to_vec(data).unwrap()
}

/// A request with this subject and a real P-256 key, properly signed.
fn p256_request(subject: &[u8]) -> Vec<u8> {
    let key = key(KeyType::P256);
    let ec = key.ec_key().unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let info = info(subject, &ec_spki(&point));
    request(&info, &alg_ecdsa_sha256(), &sign_with(&key, &info))
}

// ---------------------------------------------------------------------------------------------------
// Forgeries: keys for which a valid self-signature exists without any private key.

/// EMSA-PKCS1-v1_5 with SHA-256 for a modulus of `k` bytes.
fn pkcs1_sha256(data: &[u8], k: usize) -> Vec<u8> {
    let t = [
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ][..],
        &hash(MessageDigest::sha256(), data).unwrap(),
    ]
    .concat();
    let mut em = vec![0x00, 0x01];
    em.extend(std::iter::repeat_n(0xff, k - t.len() - 3));
    em.push(0);
    em.extend(t);
    em
}

/// RSA with e = 1: the signature is the padded digest itself.
fn rsa_e1_forged() -> Vec<u8> {
    let n = Rsa::generate(2048).unwrap().n().to_vec();
    let info = info(&developer(), &rsa_spki(&n, &[1]));
    request(&info, &alg_rsa_sha256(), &pkcs1_sha256(&info, n.len()))
}

/// RSA with e = 2 (Rabin): a square root of the padded digest, computed from the factors (the requester
/// made the modulus); the subject varies until the digest is a square.
fn rsa_e2_signed() -> Vec<u8> {
    let mut ctx = BigNumContext::new().unwrap();
    let prime = || {
        let mut p = BigNum::new().unwrap();
        let four = BigNum::from_u32(4).unwrap();
        let three = BigNum::from_u32(3).unwrap();
        p.generate_prime(1024, false, Some(&four), Some(&three))
            .unwrap();
        p
    };
    // A 2048-bit modulus, so that the key is not refused for its size instead.
    let (p, q, n) = loop {
        let (p, q) = (prime(), prime());
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&p, &q, &mut ctx).unwrap();
        if n.num_bits() == 2048 {
            break (p, q, n);
        }
    };
    let k = n.num_bytes() as usize;
    let one = BigNum::from_u32(1).unwrap();
    // sqrt mod a prime r ≡ 3 (mod 4) is m^((r+1)/4); it is a root only when m is a square.
    let root = |m: &BigNum, r: &BigNum, ctx: &mut BigNumContext| {
        let mut exp = BigNum::new().unwrap();
        exp.checked_add(r, &one).unwrap();
        let exp = &exp >> 2;
        let mut s = BigNum::new().unwrap();
        s.mod_exp(m, &exp, r, ctx).unwrap();
        let mut check = BigNum::new().unwrap();
        check.mod_sqr(&s, r, ctx).unwrap();
        let mut reduced = BigNum::new().unwrap();
        reduced.nnmod(m, r, ctx).unwrap();
        (check == reduced).then_some(s)
    };
    for i in 0.. {
        let subject = name(&[
            vec![atv(OID_CN, &utf8("developer"))],
            vec![atv(OID_OU, &utf8(&format!("try {i}")))],
        ]);
        let info = info(&subject, &rsa_spki(&n.to_vec(), &[2]));
        let m = BigNum::from_slice(&pkcs1_sha256(&info, k)).unwrap();
        let (Some(sp), Some(sq)) = (root(&m, &p, &mut ctx), root(&m, &q, &mut ctx)) else {
            continue;
        };
        // CRT: s = sp + p * ((sq - sp) * p^-1 mod q)
        let (mut p_inv, mut diff, mut h, mut s) = (
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
        );
        p_inv.mod_inverse(&p, &q, &mut ctx).unwrap();
        diff.mod_sub(&sq, &sp, &q, &mut ctx).unwrap();
        h.mod_mul(&diff, &p_inv, &q, &mut ctx).unwrap();
        let mut ph = BigNum::new().unwrap();
        ph.checked_mul(&p, &h, &mut ctx).unwrap();
        s.checked_add(&sp, &ph).unwrap();
        return request(
            &info,
            &alg_rsa_sha256(),
            &s.to_vec_padded(k as i32).unwrap(),
        );
    }
    unreachable!()
}

/// A real RSA key with e = 3, properly signed (Go accepts e = 3).
fn rsa_e3_signed() -> Vec<u8> {
    let rsa = Rsa::generate_with_e(2048, &BigNum::from_u32(3).unwrap()).unwrap();
    let key = PKey::from_rsa(rsa).unwrap();
    CsrSpec::new(key, &[("CN", "developer")]).pem()
}

/// ECDSA P-256 with the point at infinity: u1·G + u2·O = u1·G, so r = x(G), s = H(m) (k = 1) verifies.
fn ec_infinity_forged() -> Vec<u8> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let (mut order, mut gx, mut gy) = (
        BigNum::new().unwrap(),
        BigNum::new().unwrap(),
        BigNum::new().unwrap(),
    );
    group.order(&mut order, &mut ctx).unwrap();
    group
        .generator_opt()
        .unwrap()
        .affine_coordinates(&group, &mut gx, &mut gy, &mut ctx)
        .unwrap();
    let info = info(&developer(), &ec_spki(&[0x00]));
    let e = BigNum::from_slice(&hash(MessageDigest::sha256(), &info).unwrap()).unwrap();
    let mut s = BigNum::new().unwrap();
    s.nnmod(&e, &order, &mut ctx).unwrap();
    let mut r = BigNum::new().unwrap();
    r.nnmod(&gx, &order, &mut ctx).unwrap();
    let sig = seq(&[&int(&r.to_vec()), &int(&s.to_vec())]);
    request(&info, &alg_ecdsa_sha256(), &sig)
}

/// A real P-256 key whose point is sent in another form than uncompressed; properly signed.
fn ec_point_form(form: PointConversionForm) -> Vec<u8> {
    let key = key(KeyType::P256);
    let ec = key.ec_key().unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = ec
        .public_key()
        .to_bytes(ec.group(), form, &mut ctx)
        .unwrap();
    let info = info(&developer(), &ec_spki(&point));
    request(&info, &alg_ecdsa_sha256(), &sign_with(&key, &info))
}

/// A P-256 point moved off the curve (y + 1); signed with the original key.
fn ec_off_curve() -> Vec<u8> {
    let key = key(KeyType::P256);
    let ec = key.ec_key().unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let mut point = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let last = point.len() - 1;
    point[last] ^= 1;
    let info = info(&developer(), &ec_spki(&point));
    request(&info, &alg_ecdsa_sha256(), &sign_with(&key, &info))
}

/// Ed25519 with a small-order public key A: with S = 1 and R = B (the base point), [S]B = R + [k]A holds
/// whenever [k]A is the identity, which is always for A = identity.
fn ed25519_small_order(public: [u8; 32]) -> Vec<u8> {
    let mut base = [0x66u8; 32];
    base[0] = 0x58;
    let mut s = [0u8; 32];
    s[0] = 1;
    let info = info(&developer(), &ed25519_spki(&public));
    request(&info, &alg_ed25519(), &[base, s].concat())
}

fn ed25519_identity() -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = 1;
    k
}

/// An order-8 point (y = y8).
fn ed25519_order8() -> [u8; 32] {
    let hex = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

// ---------------------------------------------------------------------------------------------------
// The refused classes.

struct Refused {
    name: &'static str,
    pem: Vec<u8>,
    usages: Vec<&'static str>,
    reason: &'static str,
    /// kube-apiserver accepts the object at create (Go's CSR parser and signature check pass), so the
    /// signer is what stops it; otherwise the apiserver's own 422 is asserted.
    apiserver_accepts: bool,
}

const CLIENT: &[&str] = &["digital signature", "client auth"];

fn refused_cases() -> Vec<Refused> {
    let case = |name, pem, reason, apiserver_accepts| Refused {
        name,
        pem,
        usages: CLIENT.to_vec(),
        reason,
        apiserver_accepts,
    };
    let ou = |value: Vec<u8>| {
        p256_request(&name(&[
            vec![atv(OID_CN, &utf8("developer"))],
            vec![atv(OID_OU, &value)],
        ]))
    };
    vec![
        // item 2: keys anyone can sign with
        case("rsa-exponent-1", rsa_e1_forged(), "KeyTooWeak", false),
        case("rsa-exponent-2", rsa_e2_signed(), "KeyTooWeak", false),
        case("rsa-exponent-3", rsa_e3_signed(), "KeyTooWeak", true),
        case(
            "ec-point-at-infinity",
            ec_infinity_forged(),
            "KeyTooWeak",
            false,
        ),
        case(
            "ec-compressed-point",
            ec_point_form(PointConversionForm::COMPRESSED),
            "MalformedRequest",
            false,
        ),
        case(
            "ec-hybrid-point",
            ec_point_form(PointConversionForm::HYBRID),
            "MalformedRequest",
            false,
        ),
        case(
            "ec-point-off-the-curve",
            ec_off_curve(),
            "MalformedRequest",
            false,
        ),
        case(
            "ed25519-identity",
            ed25519_small_order(ed25519_identity()),
            "KeyTooWeak",
            true,
        ),
        case(
            "ed25519-order-8",
            ed25519_small_order(ed25519_order8()),
            "KeyTooWeak",
            false,
        ),
        // item 5: subjects Go cannot parse in a certificate, empty RDNs
        case("ou-sequence", ou(seq(&[])), "MalformedRequest", true),
        case("ou-integer", ou(int(&[5])), "MalformedRequest", true),
        case(
            "ou-octet-string",
            ou(tlv(0x04, b"AB")),
            "MalformedRequest",
            true,
        ),
        case("ou-null", ou(NULL.to_vec()), "MalformedRequest", true),
        case(
            "ou-printable-with-at",
            ou(printable("a@b")),
            "MalformedRequest",
            false,
        ),
        case(
            "ou-bad-utf8",
            ou(tlv(0x0c, b"\xff\xfe")),
            "MalformedRequest",
            false,
        ),
        case(
            "ou-bmp-surrogate",
            ou(tlv(0x1e, &[0xd8, 0x00])),
            "MalformedRequest",
            false,
        ),
        case(
            "c-three-letters",
            p256_request(&name(&[
                vec![atv(OID_C, &printable("USA"))],
                vec![atv(OID_CN, &utf8("developer"))],
            ])),
            "MalformedRequest",
            true,
        ),
        case(
            "c-utf8string",
            p256_request(&name(&[
                vec![atv(OID_C, &utf8("US"))],
                vec![atv(OID_CN, &utf8("developer"))],
            ])),
            "MalformedRequest",
            true,
        ),
        case(
            "subject-one-empty-rdn",
            p256_request(&name(&[vec![]])),
            "MalformedRequest",
            true,
        ),
        case(
            "subject-with-an-empty-rdn",
            p256_request(&name(&[vec![atv(OID_CN, &utf8("developer"))], vec![]])),
            "MalformedRequest",
            true,
        ),
        // item 6: duplicate usages
        Refused {
            usages: vec!["client auth", "digital signature", "client auth"],
            ..case(
                "duplicate-usage",
                p256_request(&developer()),
                "MalformedRequest",
                false,
            )
        },
    ]
}

/// What the message names, for the cases where the reason alone could come from another check.
const MENTIONS: &[(&str, &str)] = &[
    ("rsa-exponent-1", "exponent 1 "),
    ("rsa-exponent-2", "exponent 2 "),
    ("rsa-exponent-3", "exponent 3 "),
    ("ec-point-at-infinity", "point at infinity"),
    ("ec-compressed-point", "compressed point"),
    ("ec-hybrid-point", "not an uncompressed point"),
    ("ec-point-off-the-curve", "not a point of the curve"),
    ("ed25519-identity", "small order"),
    ("ed25519-order-8", "small order"),
    ("ou-sequence", "OU is not a string type"),
    ("ou-integer", "OU is not a string type"),
    ("ou-octet-string", "OU is not a string type"),
    ("ou-null", "OU is not a string type"),
    ("ou-printable-with-at", "OU is a PrintableString"),
    ("ou-bad-utf8", "not valid UTF-8"),
    ("ou-bmp-surrogate", "invalid BMPString"),
    ("c-three-letters", "C must be a PrintableString of 2"),
    ("c-utf8string", "C must be a PrintableString of 2"),
    ("subject-one-empty-rdn", "empty relative distinguished name"),
    (
        "subject-with-an-empty-rdn",
        "empty relative distinguished name",
    ),
    (
        "duplicate-usage",
        "spec.usages[2]: duplicate value \"client auth\"",
    ),
];

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_csr-signer"))
}

/// `csr-signer sign` as a user runs it: (exit code, stdout, stderr).
fn sign_cli(config: &Path, dir: &Path, pem: &[u8], usages: &[&str]) -> (i32, String, String) {
    let csr = dir.join("request.csr");
    std::fs::write(&csr, pem).unwrap();
    let o = cli()
        .args(["sign", "--signer", SIGNER, "--usages"])
        .arg(usages.join(","))
        .args(["--requester", "developer", "--config"])
        .arg(config)
        .arg("--csr")
        .arg(&csr)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn each_class_is_refused_by_sign_with_its_reason() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let mut failures = Vec::new();
    for c in refused_cases() {
        let (code, stdout, stderr) = sign_cli(&config, ca.dir.path(), &c.pem, &c.usages);
        let mentions = MENTIONS
            .iter()
            .find(|(n, _)| *n == c.name)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("{}: no MENTIONS entry", c.name));
        if code != 2
            || !stdout.is_empty()
            || !stderr.starts_with(&format!("{}: ", c.reason))
            || !stderr.contains(mentions)
        {
            failures.push(format!(
                "{}: expected {} mentioning {mentions:?} (exit 2), got exit {code}: {stderr}{}",
                c.name,
                c.reason,
                &stdout[..stdout.len().min(80)]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The forged requests really verify with OpenSSL (as csr-signer used to check them): the key checks,
/// not the signature, are what stops them.
#[test]
fn forged_requests_verify_with_openssl() {
    for (what, pem) in [
        ("e = 1", rsa_e1_forged()),
        ("e = 2", rsa_e2_signed()),
        ("e = 3", rsa_e3_signed()),
        ("point at infinity", ec_infinity_forged()),
        ("Ed25519 identity", ed25519_small_order(ed25519_identity())),
        (
            "compressed point",
            ec_point_form(PointConversionForm::COMPRESSED),
        ),
    ] {
        let req = X509Req::from_pem(&pem).unwrap_or_else(|e| panic!("{what}: {e}"));
        let key = req.public_key().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            req.verify(&key).unwrap_or(false),
            "{what}: OpenSSL does not verify it"
        );
    }
}

on_both_servers! {
    async fn each_class_ends_in_one_failed_condition_or_is_rejected_at_create(server) {
        let ca = TestCa::new(KeyType::P256);
        let env = Env::on(server).await;
        let (svc, stop) = env
            .start_signer(env.settings(&ca.cert, &ca.key, "", false), "replica-a")
            .await;
        let mut created = Vec::new();
        let mut failures = Vec::new();
        for c in refused_cases() {
            let obj = csr_object(c.name, SIGNER, &c.pem, &c.usages, None);
            let accepted = match env.try_create_as(&env.developer, &obj).await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 422 => false,
                Err(e) => panic!("create {}: {e}", c.name),
            };
            // The local API reads requests as kube-apiserver 1.37.2 does (Go's x509 and asn1
            // rules), so both servers admit and refuse the same classes.
            if accepted != c.apiserver_accepts {
                failures.push(format!(
                    "{}: {} at create",
                    c.name,
                    if accepted { "accepted" } else { "rejected" }
                ));
            }
            if accepted {
                env.approve(c.name).await;
                created.push(c);
            }
        }
        for c in &created {
            let csr = env
                .wait_for(c.name, "a Failed condition", |o| !failed_conditions(o).is_empty())
                .await;
            let failed = failed_conditions(&csr);
            let mentions = MENTIONS.iter().find(|(n, _)| *n == c.name).map_or("", |(_, m)| *m);
            if failed.len() != 1
                || failed[0].reason.as_deref() != Some(c.reason)
                || !failed[0].message.as_deref().unwrap_or("").contains(mentions)
            {
                failures.push(format!("{}: expected one Failed {}, got {failed:?}", c.name, c.reason));
            }
            assert!(certificate(&csr).is_none(), "{} must not be signed", c.name);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        stop.send(()).unwrap();
        svc.wait().await.unwrap();
    }
}

/// The create-time answer to each refused class is kube-apiserver's own: code, cause field and message
/// (Go's x509 / asn1 / crypto/rsa texts) on the local API and on the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_time_answers_equal_the_real_apiservers() {
    let local = Env::on(Server::Local).await;
    let real = Env::on(Server::Real).await;
    let answer = |r: Result<_, kube::Error>| match r {
        Ok(_) => (201, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("{e}"),
    };
    let mut diffs = Vec::new();
    for c in refused_cases() {
        let obj = csr_object(c.name, SIGNER, &c.pem, &c.usages, None);
        let l = answer(local.try_create_as(&local.developer, &obj).await);
        let r = answer(real.try_create_as(&real.developer, &obj).await);
        if l != r {
            diffs.push(format!(
                "{}:\n  local API: {l:?}\n  real:      {r:?}",
                c.name
            ));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

// ---------------------------------------------------------------------------------------------------
// Item 7: the key is checked against the policy before the signature.

#[test]
fn key_size_is_refused_before_the_signature_is_verified() {
    let ca = TestCa::new(KeyType::P256);
    // A modulus above the policy's maximum, and one above anything csr-signer looks at; both with a
    // signature that does not verify, which would be BadSignature if it were checked first.
    let config = ca.write_settings("keys: {rsa: {maxBits: 3072}}");
    let n4096 = Rsa::generate(4096).unwrap().n().to_vec();
    let info4096 = info(&developer(), &rsa_spki(&n4096, &[1, 0, 1]));
    let pem = request(&info4096, &alg_rsa_sha256(), &[1u8; 512]);
    let (code, _, stderr) = sign_cli(&config, ca.dir.path(), &pem, CLIENT);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("KeyTooLarge: RSA key of 4096 bits"),
        "{stderr}"
    );

    let config = ca.write_settings("keys: {rsa: {maxBits: 100000}}");
    let mut huge = vec![0xc3u8; 2056];
    huge[2055] |= 1;
    let info_huge = info(&developer(), &rsa_spki(&huge, &[1, 0, 1]));
    let pem = request(&info_huge, &alg_rsa_sha256(), &[1u8; 2056]);
    let (code, _, stderr) = sign_cli(&config, ca.dir.path(), &pem, CLIENT);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("KeyTooLarge: RSA key of 16448 bits"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Item 5: a leaf named like its CA.

#[test]
fn a_subject_equal_to_the_ca_subject_is_refused() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let ca_cert = X509::from_pem(&std::fs::read(&ca.cert).unwrap()).unwrap();
    let subject = ca_cert.subject_name().to_der().unwrap();
    let (code, _, stderr) = sign_cli(&config, ca.dir.path(), &p256_request(&subject), CLIENT);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("SubjectNotAllowed: the subject is the signing CA's own subject"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Valid but unusual requests: issued, and the certificates are what OpenSSL and Go accept.

fn issued(config: &Path, dir: &Path, pem: &[u8]) -> String {
    let (code, stdout, stderr) = sign_cli(config, dir, pem, CLIENT);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

fn leaf_der(chain: &str) -> Vec<u8> {
    X509::stack_from_pem(chain.as_bytes()).unwrap()[0]
        .to_der()
        .unwrap()
}

#[test]
fn unusual_but_valid_subjects_are_issued_and_go_reads_them() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let t61 = tlv(0x14, b"developer");
    let bmp: Vec<u8> = "developer"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    // (subject, how Go prints it)
    let cases = [
        (name(&[vec![atv(OID_CN, &t61)]]), "CN=developer"),
        (name(&[vec![atv(OID_CN, &tlv(0x1e, &bmp))]]), "CN=developer"),
        (
            name(&[vec![atv(OID_CN, &tlv(0x16, b"developer"))]]),
            "CN=developer",
        ),
        (
            name(&[
                vec![atv(OID_C, &printable("NZ"))],
                vec![atv(OID_O, &tlv(0x12, b"12 34"))],
                vec![atv(OID_OU, &printable("a*b&c"))],
                vec![atv(OID_OU, &tlv(0x14, b"caf\xe9"))],
                vec![atv(OID_CN, &printable("developer"))],
            ]),
            "CN=developer,OU=a*b&c+OU=café,O=12 34,C=NZ",
        ),
    ];
    for (subject, go_subject) in cases {
        let chain = issued(&config, ca.dir.path(), &p256_request(&subject));
        openssl_verify(&chain, &ca.root, ca.dir.path()).unwrap();
        let der = leaf_der(&chain);
        // The subject is copied byte for byte.
        let cert = X509::from_der(&der).unwrap();
        assert_eq!(cert.subject_name().to_der().unwrap(), subject);
        assert_eq!(gopem::go_parse_certificate(&der).as_deref(), Ok(go_subject));
    }
}

#[test]
fn the_block_go_finds_is_the_one_issued() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let reviewed = p256_request(&developer());
    let other = p256_request(&name(&[
        vec![atv(OID_CN, &utf8("developer"))],
        vec![atv(OID_OU, &utf8("nobody reviewed this"))],
    ]));
    let other = String::from_utf8(other).unwrap();
    let reviewed_text = String::from_utf8(reviewed.clone()).unwrap();
    let body = |p: &str| {
        p.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let inputs = [
        // a BEGIN line not ended by a newline: Go skips that block
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----{}-----END CERTIFICATE REQUEST-----\n{reviewed_text}",
            body(&other)
        ),
        // a form feed inside the base64
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n\x0c{}-----END CERTIFICATE REQUEST-----\n{reviewed_text}",
            body(&other)
        ),
        // CR/LF, text around, spaces and tabs in the base64
        format!(
            "some text\r\n{}trailing",
            reviewed_text.replace('\n', " \t\r\n")
        ),
    ];
    let want = X509Req::from_pem(&reviewed)
        .unwrap()
        .subject_name()
        .to_der()
        .unwrap();
    for input in inputs {
        let (block, _) = csr_signer::pem::decode(input.as_bytes());
        assert!(block.is_some(), "Go finds a block in {input:?}");
        let chain = issued(&config, ca.dir.path(), input.as_bytes());
        openssl_verify(&chain, &ca.root, ca.dir.path()).unwrap();
        let der = leaf_der(&chain);
        assert_eq!(
            X509::from_der(&der)
                .unwrap()
                .subject_name()
                .to_der()
                .unwrap(),
            want,
            "{input:?}"
        );
        assert_eq!(
            gopem::go_parse_certificate(&der).as_deref(),
            Ok("CN=developer")
        );
    }
}

/// kube-apiserver accepts PEM headers in `spec.request` (it never looks at them); csr-signer refuses
/// them, and a request with no PEM block at all, as `MalformedRequest`.
#[test]
fn pem_headers_and_missing_blocks_are_malformed() {
    let ca = TestCa::new(KeyType::P256);
    let config = ca.write_settings("");
    let good = String::from_utf8(p256_request(&developer())).unwrap();
    let with_header = good.replacen("-----\n", "-----\nComment: hello\n\n", 1);
    for (input, message) in [
        (with_header, "PEM headers are not allowed"),
        ("no block here".to_string(), "no PEM block found"),
        (
            good.replace(
                "-----END CERTIFICATE REQUEST-----",
                "-----END CERTIFICATE-----",
            ),
            "no PEM block found",
        ),
    ] {
        let (code, _, stderr) = sign_cli(&config, ca.dir.path(), input.as_bytes(), CLIENT);
        assert_eq!(code, 2, "{input}");
        assert!(
            stderr.starts_with("MalformedRequest: ") && stderr.contains(message),
            "{stderr}"
        );
    }
}
