//! Per-key exponential backoff with jitter for transient failures (API errors, an expired or
//! unreadable CA): 200 ms doubling up to a cap of a few minutes, like kube-controller-manager's
//! certificate queue, with ±25 % jitter so CSRs that failed together do not retry in lockstep.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Remembers how often each key failed in a row.
#[derive(Debug)]
pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    failures: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    pub fn new(base: Duration, max: Duration) -> Backoff<K> {
        Backoff {
            base,
            max,
            failures: HashMap::new(),
        }
    }

    /// Records one more failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&mut self, key: &K) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let exp = (*n).min(30);
        *n = n.saturating_add(1);
        let raw = self.base.saturating_mul(1u32 << exp.min(31)).min(self.max);
        let factor = 0.75 + rand::random::<f64>() * 0.5;
        raw.mul_f64(factor).min(self.max)
    }

    /// Forgets `key` after a success (or when it no longer needs work).
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Keeps only the keys `keep` accepts (after a relist, CSRs deleted meanwhile go).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.failures.retain(|k, _| keep(k));
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_within_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(300));
        let k = "csr-a";
        for n in 0..12u32 {
            let d = b.next_delay(&k);
            let nominal = Duration::from_millis(200 * (1u64 << n)).min(Duration::from_secs(300));
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay(&k) <= Duration::from_secs(300));
        }
        assert!(b.failures(&k) > 100);
    }

    #[test]
    fn forget_restarts_from_base_and_keys_are_independent() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(300));
        for _ in 0..5 {
            b.next_delay(&"a");
        }
        assert!(b.next_delay(&"b") <= Duration::from_millis(250));
        b.forget(&"a");
        assert_eq!(b.failures(&"a"), 0);
        assert!(b.next_delay(&"a") <= Duration::from_millis(250));
    }
}
