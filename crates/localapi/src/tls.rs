//! The local API's own serving PKI: a throwaway CA (its certificate goes into kubeconfigs) and a
//! serving certificate for 127.0.0.1 / ::1 / localhost. Keys live only in memory.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};

use crate::{Error, Result};

fn crypto(context: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> Error {
    move |source| Error::Tls { context, source }
}

fn key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(crypto("serving key"))?;
    let ec = EcKey::generate(&group).map_err(crypto("serving key"))?;
    PKey::from_ec_key(ec).map_err(crypto("serving key"))
}

fn name(cn: &str) -> Result<X509Name> {
    let mut b = X509Name::builder().map_err(crypto("serving name"))?;
    b.append_entry_by_nid(Nid::COMMONNAME, cn)
        .map_err(crypto("serving name"))?;
    Ok(b.build())
}

fn serial() -> Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new().map_err(crypto("serial"))?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)
        .map_err(crypto("serial"))?;
    bn.to_asn1_integer().map_err(crypto("serial"))
}

/// The serving CA certificate (PEM) and a TLS acceptor using a leaf it signed.
pub struct ServingPki {
    pub ca_pem: String,
    pub acceptor: SslAcceptor,
}

pub fn generate() -> Result<ServingPki> {
    let ctx = crypto("serving certificate");
    let ca_key = key()?;
    let ca_name = name("csr-signer-dev-apiserver-ca")?;
    let mut b = X509::builder().map_err(crypto("serving CA"))?;
    b.set_version(2).map_err(crypto("serving CA"))?;
    let ca_serial = serial()?;
    b.set_serial_number(&ca_serial)
        .map_err(crypto("serving CA"))?;
    b.set_subject_name(&ca_name).map_err(crypto("serving CA"))?;
    b.set_issuer_name(&ca_name).map_err(crypto("serving CA"))?;
    b.set_pubkey(&ca_key).map_err(crypto("serving CA"))?;
    let nb = Asn1Time::days_from_now(0).map_err(crypto("serving CA"))?;
    let na = Asn1Time::days_from_now(3650).map_err(crypto("serving CA"))?;
    b.set_not_before(&nb).map_err(crypto("serving CA"))?;
    b.set_not_after(&na).map_err(crypto("serving CA"))?;
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .map_err(crypto("serving CA"))?,
    )
    .map_err(crypto("serving CA"))?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .map_err(crypto("serving CA"))?,
    )
    .map_err(crypto("serving CA"))?;
    let skid = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(crypto("serving CA"))?;
    b.append_extension(skid).map_err(crypto("serving CA"))?;
    b.sign(&ca_key, MessageDigest::sha256())
        .map_err(crypto("serving CA"))?;
    let ca = b.build();

    let leaf_key = key()?;
    let mut l = X509::builder().map_err(crypto("serving certificate"))?;
    l.set_version(2).map_err(crypto("serving certificate"))?;
    let leaf_serial = serial()?;
    l.set_serial_number(&leaf_serial)
        .map_err(crypto("serving certificate"))?;
    let leaf_name = name("kube-apiserver")?;
    l.set_subject_name(&leaf_name)
        .map_err(crypto("serving certificate"))?;
    l.set_issuer_name(ca.subject_name())
        .map_err(crypto("serving certificate"))?;
    l.set_pubkey(&leaf_key)
        .map_err(crypto("serving certificate"))?;
    l.set_not_before(&nb)
        .map_err(crypto("serving certificate"))?;
    l.set_not_after(&na)
        .map_err(crypto("serving certificate"))?;
    l.append_extension(
        BasicConstraints::new()
            .build()
            .map_err(crypto("serving certificate"))?,
    )
    .map_err(crypto("serving certificate"))?;
    l.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .map_err(crypto("serving certificate"))?,
    )
    .map_err(crypto("serving certificate"))?;
    l.append_extension(
        ExtendedKeyUsage::new()
            .server_auth()
            .build()
            .map_err(crypto("serving certificate"))?,
    )
    .map_err(crypto("serving certificate"))?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .ip("::1")
        .build(&l.x509v3_context(Some(&ca), None))
        .map_err(crypto("serving certificate"))?;
    l.append_extension(san)
        .map_err(crypto("serving certificate"))?;
    l.sign(&ca_key, MessageDigest::sha256())
        .map_err(crypto("serving certificate"))?;
    let leaf = l.build();

    let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(crypto("TLS acceptor"))?;
    acc.set_private_key(&leaf_key)
        .map_err(crypto("TLS acceptor"))?;
    acc.set_certificate(&leaf).map_err(crypto("TLS acceptor"))?;
    acc.add_extra_chain_cert(ca.clone())
        .map_err(crypto("TLS acceptor"))?;
    acc.check_private_key().map_err(crypto("TLS acceptor"))?;
    // Idle connections (pooled clients, quiet watches) give their record buffers back.
    acc.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    // kubectl/client-go negotiate HTTP/2 when offered; HTTP/1.1 keeps watch streaming simple.
    acc.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x08http/1.1", client)
            .ok_or(openssl::ssl::AlpnError::NOACK)
    });
    let ca_pem = String::from_utf8(ca.to_pem().map_err(ctx)?).unwrap_or_default();
    Ok(ServingPki {
        ca_pem,
        acceptor: acc.build(),
    })
}
