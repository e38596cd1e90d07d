//! The signer's cache of the objects it watches: a metadata-light record per CSR (no certificate bytes,
//! no managedFields; the request itself is kept only while the CSR is approved and waiting), and the rule
//! for folding one observed version into it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};

use super::phase::{approved_time, is_older, phase_of, Phase};

/// An object, by signer (index into the configured signers) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub signer: usize,
    pub name: Arc<str>,
}

/// What a decision needs from the CSR; held only while the CSR is approved and waiting.
#[derive(Debug)]
pub struct Work {
    pub request: Vec<u8>,
    pub usages: Vec<String>,
    pub expiration_seconds: Option<i32>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub username: String,
    pub groups: Vec<String>,
    /// Kept whole: a merge patch replaces the list, and Approved must survive a Failed write.
    pub conditions: Vec<CertificateSigningRequestCondition>,
}

/// The cached record of one object.
#[derive(Debug)]
struct Entry {
    uid: String,
    resource_version: String,
    phase: Phase,
    /// The Approved condition's timestamp (second resolution).
    approved_at: Option<SystemTime>,
    /// When this process saw the object turn approved, if it saw it pending first: a sharper start
    /// for the latency metric than the truncated condition timestamp.
    observed_approval: Option<SystemTime>,
    work: Option<Arc<Work>>,
}

/// A snapshot of what a decision is based on.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uid: String,
    pub phase: Phase,
    pub resource_version: String,
    pub approved_at: Option<SystemTime>,
    pub observed_approval: Option<SystemTime>,
    pub work: Arc<Work>,
}

/// What folding one observed version asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// An older version than the one cached (a replay): nothing changes.
    Stale,
    /// Approved and waiting: queue it for a decision.
    Queue,
    /// Seen for the first time, pending: tell the requester it waits for approval (once).
    FirstSeenPending { uid: String },
    /// Anything else (pending seen before, issued, denied, failed): nothing to do.
    Settled,
}

#[derive(Debug, Default)]
pub struct Store {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one observed version of an object into the cache.
    pub fn observe(&self, key: &Key, csr: &CertificateSigningRequest, now: SystemTime) -> Observed {
        let rv = csr.metadata.resource_version.clone().unwrap_or_default();
        let uid = csr.metadata.uid.clone().unwrap_or_default();
        let phase = phase_of(csr);
        let mut entries = self.lock();
        let previous = entries.get(key).filter(|p| p.uid == uid);
        if previous.is_some_and(|p| is_older(&rv, &p.resource_version)) {
            return Observed::Stale;
        }
        let was_pending = previous.is_some_and(|p| p.phase == Phase::Pending);
        let observed_approval = match previous {
            Some(p) if p.phase == Phase::Approved => p.observed_approval,
            _ if was_pending && phase == Phase::Approved => Some(now),
            _ => None,
        };
        let first_seen = previous.is_none();
        let work = (phase == Phase::Approved).then(|| Arc::new(work_of(csr)));
        entries.insert(
            key.clone(),
            Entry {
                uid: uid.clone(),
                resource_version: rv,
                phase,
                approved_at: approved_time(csr),
                observed_approval,
                work,
            },
        );
        match phase {
            Phase::Approved => Observed::Queue,
            Phase::Pending if first_seen => Observed::FirstSeenPending { uid },
            _ => Observed::Settled,
        }
    }

    /// What a decision on `key` would be based on now; `None` when the object is gone or not waiting.
    pub fn snapshot(&self, key: &Key) -> Option<Snapshot> {
        let entries = self.lock();
        let e = entries.get(key)?;
        Some(Snapshot {
            uid: e.uid.clone(),
            phase: e.phase,
            resource_version: e.resource_version.clone(),
            approved_at: e.approved_at,
            observed_approval: e.observed_approval,
            work: e.work.clone()?,
        })
    }

    pub fn remove(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// After a relist: drops the signer's objects that no longer exist (their deletes were missed).
    pub fn retain_listed(&self, signer: usize, listed: &HashSet<String>) {
        self.lock()
            .retain(|k, _| k.signer != signer || listed.contains(k.name.as_ref()));
    }

    /// Every object waiting for a decision.
    pub fn approved_keys(&self) -> Vec<Key> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.phase == Phase::Approved)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Per signer: how many objects wait for a decision, and the age in seconds of the oldest.
    pub fn backlog(&self, signers: usize, now: SystemTime) -> Vec<(i64, f64)> {
        let mut out = vec![(0i64, 0f64); signers];
        for (key, e) in self.lock().iter() {
            if e.phase != Phase::Approved || key.signer >= signers {
                continue;
            }
            let since = e.observed_approval.or(e.approved_at).unwrap_or(now);
            let age = now.duration_since(since).unwrap_or_default().as_secs_f64();
            let slot = &mut out[key.signer];
            slot.0 += 1;
            slot.1 = slot.1.max(age);
        }
        out
    }
}

fn work_of(csr: &CertificateSigningRequest) -> Work {
    // Only the lifetime annotation feeds a decision; the rest (notably kubectl's
    // last-applied-configuration, a second copy of the whole request) stays out of memory.
    let annotations = csr.metadata.annotations.as_ref().and_then(|a| {
        let kept: BTreeMap<String, String> = a
            .iter()
            .filter(|(k, _)| k.as_str() == crate::engine::DURATION_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!kept.is_empty()).then_some(kept)
    });
    Work {
        request: csr.spec.request.0.clone(),
        usages: csr.spec.usages.clone().unwrap_or_default(),
        expiration_seconds: csr.spec.expiration_seconds,
        annotations,
        username: csr.spec.username.clone().unwrap_or_default(),
        groups: csr.spec.groups.clone().unwrap_or_default(),
        conditions: csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn csr(uid: &str, rv: &str, approved: bool) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("a".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            status: approved.then(|| CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn folding_versions_queues_approved_tells_pending_once_and_ignores_replays() {
        let store = Store::default();
        let key = Key {
            signer: 0,
            name: Arc::from("a"),
        };
        let now = SystemTime::now();
        assert_eq!(
            store.observe(&key, &csr("u1", "10", false), now),
            Observed::FirstSeenPending { uid: "u1".into() }
        );
        // Seen pending again: nothing new to tell.
        assert_eq!(
            store.observe(&key, &csr("u1", "11", false), now),
            Observed::Settled
        );
        assert!(
            store.snapshot(&key).is_none(),
            "no request kept while pending"
        );
        assert_eq!(
            store.observe(&key, &csr("u1", "12", true), now),
            Observed::Queue
        );
        let snap = store.snapshot(&key).unwrap();
        assert_eq!(snap.resource_version, "12");
        assert_eq!(
            snap.observed_approval,
            Some(now),
            "watched the approval happen"
        );
        // A replay of an older version changes nothing.
        assert_eq!(
            store.observe(&key, &csr("u1", "11", false), now),
            Observed::Stale
        );
        assert_eq!(store.snapshot(&key).unwrap().resource_version, "12");
        // Same name, new object (deleted and re-created): first seen again.
        assert_eq!(
            store.observe(&key, &csr("u2", "5", false), now),
            Observed::FirstSeenPending { uid: "u2".into() }
        );
        assert_eq!(store.backlog(1, now), vec![(0, 0.0)]);
        store.observe(&key, &csr("u2", "6", true), now);
        assert_eq!(store.approved_keys(), vec![key.clone()]);
        store.retain_listed(0, &HashSet::new());
        assert!(store.approved_keys().is_empty());
    }
}
