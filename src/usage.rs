//! The 23 key-usage strings of `certificates.k8s.io/v1` and what each puts into a certificate.
//!
//! Parsing happens once, at the edge (the CSR's `spec.usages`); everything downstream holds `Usage`.

use const_oid::ObjectIdentifier;

/// One value of `spec.usages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Usage {
    Signing,
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    KeyAgreement,
    DataEncipherment,
    CertSign,
    CrlSign,
    EncipherOnly,
    DecipherOnly,
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    SMime,
    IpsecEndSystem,
    IpsecTunnel,
    IpsecUser,
    Timestamping,
    OcspSigning,
    MicrosoftSgc,
    NetscapeSgc,
}

/// RFC 5280 keyUsage bit numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUsageBit {
    DigitalSignature = 0,
    ContentCommitment = 1,
    KeyEncipherment = 2,
    DataEncipherment = 3,
    KeyAgreement = 4,
    KeyCertSign = 5,
    CrlSign = 6,
    EncipherOnly = 7,
    DecipherOnly = 8,
}

/// Extended key usages, declared in the order Go's crypto/x509 sorts them, so that the derived `Ord`
/// reproduces the built-in signer's EKU order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExtKeyUsage {
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    IpsecEndSystem,
    IpsecTunnel,
    IpsecUser,
    TimeStamping,
    OcspSigning,
    MicrosoftSgc,
    NetscapeSgc,
}

/// What a usage string turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    KeyUsage(KeyUsageBit),
    ExtKeyUsage(ExtKeyUsage),
}

impl Usage {
    /// Every usage, in the bytewise-sorted order kube-apiserver lists them in validation errors.
    pub const ALL: [Usage; 23] = [
        Usage::Any,
        Usage::CertSign,
        Usage::ClientAuth,
        Usage::CodeSigning,
        Usage::ContentCommitment,
        Usage::CrlSign,
        Usage::DataEncipherment,
        Usage::DecipherOnly,
        Usage::DigitalSignature,
        Usage::EmailProtection,
        Usage::EncipherOnly,
        Usage::IpsecEndSystem,
        Usage::IpsecTunnel,
        Usage::IpsecUser,
        Usage::KeyAgreement,
        Usage::KeyEncipherment,
        Usage::MicrosoftSgc,
        Usage::NetscapeSgc,
        Usage::OcspSigning,
        Usage::SMime,
        Usage::ServerAuth,
        Usage::Signing,
        Usage::Timestamping,
    ];

    /// The exact string Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Signing => "signing",
            Usage::DigitalSignature => "digital signature",
            Usage::ContentCommitment => "content commitment",
            Usage::KeyEncipherment => "key encipherment",
            Usage::KeyAgreement => "key agreement",
            Usage::DataEncipherment => "data encipherment",
            Usage::CertSign => "cert sign",
            Usage::CrlSign => "crl sign",
            Usage::EncipherOnly => "encipher only",
            Usage::DecipherOnly => "decipher only",
            Usage::Any => "any",
            Usage::ServerAuth => "server auth",
            Usage::ClientAuth => "client auth",
            Usage::CodeSigning => "code signing",
            Usage::EmailProtection => "email protection",
            Usage::SMime => "s/mime",
            Usage::IpsecEndSystem => "ipsec end system",
            Usage::IpsecTunnel => "ipsec tunnel",
            Usage::IpsecUser => "ipsec user",
            Usage::Timestamping => "timestamping",
            Usage::OcspSigning => "ocsp signing",
            Usage::MicrosoftSgc => "microsoft sgc",
            Usage::NetscapeSgc => "netscape sgc",
        }
    }

    /// Parses one exact Kubernetes usage string (case-sensitive, as the API is).
    pub fn parse(s: &str) -> Option<Usage> {
        Usage::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// The certificate field this usage sets (k8s-csr-rules §2.10).
    pub fn effect(self) -> Effect {
        use Effect::{ExtKeyUsage as E, KeyUsage as K};
        match self {
            Usage::Signing | Usage::DigitalSignature => K(KeyUsageBit::DigitalSignature),
            Usage::ContentCommitment => K(KeyUsageBit::ContentCommitment),
            Usage::KeyEncipherment => K(KeyUsageBit::KeyEncipherment),
            Usage::KeyAgreement => K(KeyUsageBit::KeyAgreement),
            Usage::DataEncipherment => K(KeyUsageBit::DataEncipherment),
            Usage::CertSign => K(KeyUsageBit::KeyCertSign),
            Usage::CrlSign => K(KeyUsageBit::CrlSign),
            Usage::EncipherOnly => K(KeyUsageBit::EncipherOnly),
            Usage::DecipherOnly => K(KeyUsageBit::DecipherOnly),
            Usage::Any => E(ExtKeyUsage::Any),
            Usage::ServerAuth => E(ExtKeyUsage::ServerAuth),
            Usage::ClientAuth => E(ExtKeyUsage::ClientAuth),
            Usage::CodeSigning => E(ExtKeyUsage::CodeSigning),
            Usage::EmailProtection | Usage::SMime => E(ExtKeyUsage::EmailProtection),
            Usage::IpsecEndSystem => E(ExtKeyUsage::IpsecEndSystem),
            Usage::IpsecTunnel => E(ExtKeyUsage::IpsecTunnel),
            Usage::IpsecUser => E(ExtKeyUsage::IpsecUser),
            Usage::Timestamping => E(ExtKeyUsage::TimeStamping),
            Usage::OcspSigning => E(ExtKeyUsage::OcspSigning),
            Usage::MicrosoftSgc => E(ExtKeyUsage::MicrosoftSgc),
            Usage::NetscapeSgc => E(ExtKeyUsage::NetscapeSgc),
        }
    }
}

/// The first string of `spec.usages` that repeats an earlier one, with its index. kube-apiserver refuses
/// such a request at create (`spec.usages[i]: Duplicate value`, comparing the strings as given: "signing"
/// and "digital signature" are different strings for the same bit, and allowed together), so a repeat only
/// reaches a signer through another path (`csr-signer sign`, an object stored before validation existed);
/// it is refused there too rather than read as a set.
pub fn first_duplicate(usages: &[String]) -> Option<(usize, &str)> {
    usages
        .iter()
        .enumerate()
        .find(|(i, u)| usages[..*i].contains(u))
        .map(|(i, u)| (i, u.as_str()))
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ExtKeyUsage {
    /// The EKU's object identifier.
    pub fn oid(self) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(match self {
            ExtKeyUsage::Any => "2.5.29.37.0",
            ExtKeyUsage::ServerAuth => "1.3.6.1.5.5.7.3.1",
            ExtKeyUsage::ClientAuth => "1.3.6.1.5.5.7.3.2",
            ExtKeyUsage::CodeSigning => "1.3.6.1.5.5.7.3.3",
            ExtKeyUsage::EmailProtection => "1.3.6.1.5.5.7.3.4",
            ExtKeyUsage::IpsecEndSystem => "1.3.6.1.5.5.7.3.5",
            ExtKeyUsage::IpsecTunnel => "1.3.6.1.5.5.7.3.6",
            ExtKeyUsage::IpsecUser => "1.3.6.1.5.5.7.3.7",
            ExtKeyUsage::TimeStamping => "1.3.6.1.5.5.7.3.8",
            ExtKeyUsage::OcspSigning => "1.3.6.1.5.5.7.3.9",
            ExtKeyUsage::MicrosoftSgc => "1.3.6.1.4.1.311.10.3.3",
            ExtKeyUsage::NetscapeSgc => "2.16.840.1.113730.4.1",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_strings_round_trip_and_are_sorted_like_the_apiserver_lists_them() {
        let strings: Vec<&str> = Usage::ALL.iter().map(|u| u.as_str()).collect();
        let mut sorted = strings.clone();
        sorted.sort();
        assert_eq!(strings, sorted);
        for u in Usage::ALL {
            assert_eq!(Usage::parse(u.as_str()), Some(u));
        }
        assert_eq!(Usage::parse("Client Auth"), None);
    }

    #[test]
    fn duplicates_are_exact_repeats_found_at_the_repeat() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(first_duplicate(&v(&[])), None);
        assert_eq!(first_duplicate(&v(&["signing", "digital signature"])), None);
        assert_eq!(first_duplicate(&v(&["client auth", "Client Auth"])), None);
        assert_eq!(
            first_duplicate(&v(&["a", "client auth", "b", "client auth", "a"])),
            Some((3, "client auth"))
        );
    }

    #[test]
    fn eku_order_follows_go() {
        let mut ekus = vec![ExtKeyUsage::ClientAuth, ExtKeyUsage::ServerAuth];
        ekus.sort();
        assert_eq!(ekus, vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]);
    }
}
