//! The public-key algorithms a signer accepts, as a set of `KeyAlgorithm`s (never loose booleans),
//! and the check of a request's key against it.
//!
//! Validated when built (an RSA range starts at 2048 bits, at most one RSA range), so the check
//! cannot meet a nonsensical set. It reads the key kind `csr` extracted; it never parses a key.

use crate::csr::KeyKind;
use crate::refusal::{Reason, Refusal};

/// Smallest RSA modulus any policy may accept (NIST SP 800-131A).
pub const MIN_RSA_BITS: u32 = 2048;

/// One accepted key algorithm. The declaration order is the order used in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyAlgorithm {
    /// RSA with a modulus of `min_bits..=max_bits`.
    Rsa {
        min_bits: u32,
        max_bits: u32,
    },
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAlgorithm::Rsa { min_bits, max_bits } => write!(f, "RSA {min_bits}-{max_bits}"),
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A validated set of accepted algorithms, sorted and without duplicates (it may be empty: then
/// every key is refused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyAlgorithms(Vec<KeyAlgorithm>);

impl KeyAlgorithms {
    /// Validates the set; the error says what is wrong (for the `keys` configuration key).
    pub fn new(
        algorithms: impl IntoIterator<Item = KeyAlgorithm>,
    ) -> Result<KeyAlgorithms, String> {
        let mut set: Vec<KeyAlgorithm> = algorithms.into_iter().collect();
        set.sort();
        set.dedup();
        let mut rsa_ranges = 0;
        for a in &set {
            if let KeyAlgorithm::Rsa { min_bits, max_bits } = *a {
                if min_bits < MIN_RSA_BITS || max_bits < min_bits {
                    return Err(format!("need {MIN_RSA_BITS} <= minBits <= maxBits"));
                }
                rsa_ranges += 1;
            }
        }
        // Two ranges would make "too weak" and "too large" ambiguous.
        if rsa_ranges > 1 {
            return Err("at most one RSA range".into());
        }
        Ok(KeyAlgorithms(set))
    }

    pub fn iter(&self) -> impl Iterator<Item = KeyAlgorithm> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, algorithm: KeyAlgorithm) -> bool {
        self.0.contains(&algorithm)
    }

    /// `(min_bits, max_bits)` when RSA keys are accepted.
    pub fn rsa(&self) -> Option<(u32, u32)> {
        self.0.iter().find_map(|a| match *a {
            KeyAlgorithm::Rsa { min_bits, max_bits } => Some((min_bits, max_bits)),
            _ => None,
        })
    }

    /// Accepts `key` or says why not: `KeyTooWeak`/`KeyTooLarge` for an RSA key outside the range,
    /// `KeyTypeNotAllowed` for any other algorithm not in the set.
    pub fn check(&self, key: &KeyKind) -> Result<(), Refusal> {
        let wanted = match key {
            KeyKind::Rsa { bits } => return self.check_rsa(key, *bits),
            KeyKind::EcP256 => Some(KeyAlgorithm::EcdsaP256),
            KeyKind::EcP384 => Some(KeyAlgorithm::EcdsaP384),
            KeyKind::EcP521 => Some(KeyAlgorithm::EcdsaP521),
            KeyKind::Ed25519 => Some(KeyAlgorithm::Ed25519),
            KeyKind::Other(_) => None,
        };
        match wanted {
            Some(a) if self.contains(a) => Ok(()),
            _ => Err(self.not_allowed(key)),
        }
    }

    fn check_rsa(&self, key: &KeyKind, bits: u32) -> Result<(), Refusal> {
        match self.rsa() {
            None => Err(self.not_allowed(key)),
            Some((min, _)) if bits < min => Err(Refusal::new(
                Reason::KeyTooWeak,
                format!("RSA key of {bits} bits is below the minimum of {min}"),
            )),
            Some((_, max)) if bits > max => Err(Refusal::new(
                Reason::KeyTooLarge,
                format!("RSA key of {bits} bits is above the maximum of {max}"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn not_allowed(&self, key: &KeyKind) -> Refusal {
        Refusal::new(
            Reason::KeyTypeNotAllowed,
            format!("{key} keys are not allowed (allowed: {self})"),
        )
    }
}

/// `RSA 2048-8192, ECDSA P-256, …`, or `none`.
impl std::fmt::Display for KeyAlgorithms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: KeyAlgorithm = KeyAlgorithm::Rsa {
        min_bits: 2048,
        max_bits: 4096,
    };

    #[test]
    fn set_is_sorted_deduplicated_and_validated() {
        let set = KeyAlgorithms::new([
            KeyAlgorithm::Ed25519,
            RSA,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Ed25519,
        ])
        .expect("valid");
        assert_eq!(set.to_string(), "RSA 2048-4096, ECDSA P-256, Ed25519");
        assert_eq!(KeyAlgorithms::default().to_string(), "none");
        for bad in [
            vec![KeyAlgorithm::Rsa {
                min_bits: 1024,
                max_bits: 4096,
            }],
            vec![KeyAlgorithm::Rsa {
                min_bits: 4096,
                max_bits: 2048,
            }],
            vec![
                RSA,
                KeyAlgorithm::Rsa {
                    min_bits: 3072,
                    max_bits: 4096,
                },
            ],
        ] {
            assert!(KeyAlgorithms::new(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_names_the_reason() {
        let set = KeyAlgorithms::new([RSA, KeyAlgorithm::EcdsaP384]).expect("valid");
        let reason = |k: KeyKind| set.check(&k).err().map(|r| r.reason);
        assert_eq!(reason(KeyKind::Rsa { bits: 2048 }), None);
        assert_eq!(reason(KeyKind::Rsa { bits: 4096 }), None);
        assert_eq!(reason(KeyKind::EcP384), None);
        assert_eq!(
            reason(KeyKind::Rsa { bits: 1024 }),
            Some(Reason::KeyTooWeak)
        );
        assert_eq!(
            reason(KeyKind::Rsa { bits: 8192 }),
            Some(Reason::KeyTooLarge)
        );
        for k in [
            KeyKind::EcP256,
            KeyKind::EcP521,
            KeyKind::Ed25519,
            KeyKind::Other("DSA".into()),
        ] {
            assert_eq!(reason(k.clone()), Some(Reason::KeyTypeNotAllowed), "{k}");
        }
        let none = KeyAlgorithms::default()
            .check(&KeyKind::Rsa { bits: 2048 })
            .expect_err("empty set");
        assert_eq!(none.reason, Reason::KeyTypeNotAllowed);
        assert_eq!(
            none.message,
            "RSA-2048 keys are not allowed (allowed: none)"
        );
    }
}
