//! The signer's cache of the objects it watches: a metadata-light record per CSR or PCR (no certificate
//! bytes, no managedFields; the request itself is kept only while the object waits for a decision), and
//! the rule for folding one observed version into it. Objects of either kind come in as a `Seen`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};

use super::pcr::PodFields;
use super::phase::{approved_time, is_older, phase_of, Phase};
use super::plan::Kind;

/// An object, by signer (index into the configured signers), kind, namespace (PCRs) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub signer: usize,
    pub kind: Kind,
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
}

impl Key {
    /// A CSR's key.
    pub fn csr(signer: usize, name: &str) -> Key {
        Key {
            signer,
            kind: Kind::CertificateSigningRequest,
            namespace: None,
            name: Arc::from(name),
        }
    }

    /// The `csr` log field: the CSR's name (absent for a PCR).
    pub fn csr_name(&self) -> Option<&str> {
        (self.kind == Kind::CertificateSigningRequest).then_some(&*self.name)
    }

    /// The `pcr` log field: `namespace/name` (absent for a CSR).
    pub fn pcr_name(&self) -> Option<String> {
        (self.kind == Kind::PodCertificateRequest).then(|| self.to_string())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One observed version of a watched object, whatever its kind.
#[derive(Debug)]
pub struct Seen {
    pub key: Key,
    pub uid: String,
    pub resource_version: String,
    pub phase: Phase,
    /// Since when it waits for the signer: a CSR's approval, a PCR's creation (one-second resolution).
    pub waiting_since: Option<SystemTime>,
    /// Present only while it waits for a decision.
    pub work: Option<Work>,
    /// The certificate on the object (CSR `status.certificate`, PCR `status.certificateChain`).
    pub certificate: Option<Vec<u8>>,
}

/// What a decision needs from the object; held only while it waits for one.
#[derive(Debug)]
pub struct Work {
    /// Who the certificate is for, in log lines and audit records: a CSR's `spec.username`, a PCR's
    /// service account.
    pub requester: String,
    /// A CSR's conditions, kept whole: a merge patch replaces the list, and Approved must survive a
    /// Failed write. Empty for a PCR (its status is written once, with one condition).
    pub conditions: Vec<CertificateSigningRequestCondition>,
    pub request: Request,
}

/// The kind-specific request fields.
#[derive(Debug)]
pub enum Request {
    Csr(CsrFields),
    Pod(PodFields),
}

/// What a decision needs from a CSR's spec.
#[derive(Debug)]
pub struct CsrFields {
    pub request: Vec<u8>,
    pub usages: Vec<String>,
    pub expiration_seconds: Option<i32>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub username: String,
    pub groups: Vec<String>,
}

/// The cached record of one object.
#[derive(Debug)]
struct Entry {
    uid: String,
    resource_version: String,
    phase: Phase,
    /// The Approved condition's timestamp, a PCR's creation (second resolution).
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
    pub fn observe(&self, seen: Seen, now: SystemTime) -> Observed {
        let Seen {
            key,
            uid,
            resource_version: rv,
            phase,
            waiting_since,
            work,
            certificate: _,
        } = seen;
        let mut entries = self.lock();
        let previous = entries.get(&key).filter(|p| p.uid == uid);
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
        let work = work.filter(|_| phase == Phase::Approved).map(Arc::new);
        entries.insert(
            key,
            Entry {
                uid: uid.clone(),
                resource_version: rv,
                phase,
                approved_at: waiting_since,
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

    /// After a relist of one watch (a signer's objects of one kind): drops those that no longer exist
    /// (their deletes were missed).
    pub fn retain_listed(&self, signer: usize, kind: Kind, listed: &HashSet<Key>) {
        self.lock()
            .retain(|k, _| k.signer != signer || k.kind != kind || listed.contains(k));
    }

    /// Every object waiting for a decision.
    pub fn approved_keys(&self) -> Vec<Key> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.phase == Phase::Approved)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Per watched (signer, kind): how many objects wait for a decision, and the age in seconds of the
    /// oldest.
    pub fn backlog(&self, watched: &[(usize, Kind)], now: SystemTime) -> Vec<(i64, f64)> {
        let mut out = vec![(0i64, 0f64); watched.len()];
        for (key, e) in self.lock().iter() {
            if e.phase != Phase::Approved {
                continue;
            }
            let Some(slot) = watched
                .iter()
                .position(|w| *w == (key.signer, key.kind))
                .map(|i| &mut out[i])
            else {
                continue;
            };
            let since = e.observed_approval.or(e.approved_at).unwrap_or(now);
            let age = now.duration_since(since).unwrap_or_default().as_secs_f64();
            slot.0 += 1;
            slot.1 = slot.1.max(age);
        }
        out
    }
}

/// The CSR's annotations that feed a decision (only the lifetime one; the rest, notably kubectl's
/// last-applied-configuration, a second copy of the whole request, stays out of memory).
pub(super) fn decision_annotations(
    csr: &CertificateSigningRequest,
) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = csr
        .metadata
        .annotations
        .as_ref()?
        .iter()
        .filter(|(k, _)| k.as_str() == crate::engine::DURATION_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// One observed CSR, if it is `signer`'s (`signer_name`).
pub fn seen_csr(signer: usize, signer_name: &str, csr: &CertificateSigningRequest) -> Option<Seen> {
    let name = csr.metadata.name.as_deref()?;
    // The server-side selector already filters; this guards against a server ignoring it.
    if csr.spec.signer_name != signer_name {
        return None;
    }
    let phase = phase_of(csr);
    Some(Seen {
        key: Key::csr(signer, name),
        uid: csr.metadata.uid.clone().unwrap_or_default(),
        resource_version: csr.metadata.resource_version.clone().unwrap_or_default(),
        phase,
        waiting_since: approved_time(csr),
        work: (phase == Phase::Approved).then(|| work_of(csr)),
        certificate: csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .map(|c| c.0.clone()),
    })
}

fn work_of(csr: &CertificateSigningRequest) -> Work {
    // Only the lifetime annotation feeds a decision; the rest (notably kubectl's
    // last-applied-configuration, a second copy of the whole request) stays out of memory.
    let annotations = decision_annotations(csr);
    let username = csr.spec.username.clone().unwrap_or_default();
    Work {
        requester: username.clone(),
        conditions: csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
        request: Request::Csr(CsrFields {
            request: csr.spec.request.0.clone(),
            usages: csr.spec.usages.clone().unwrap_or_default(),
            expiration_seconds: csr.spec.expiration_seconds,
            annotations,
            username,
            groups: csr.spec.groups.clone().unwrap_or_default(),
        }),
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
        let key = Key::csr(0, "a");
        let now = SystemTime::now();
        let seen = |c: &CertificateSigningRequest| seen_csr(0, "", c).unwrap();
        assert_eq!(
            store.observe(seen(&csr("u1", "10", false)), now),
            Observed::FirstSeenPending { uid: "u1".into() }
        );
        // Seen pending again: nothing new to tell.
        assert_eq!(
            store.observe(seen(&csr("u1", "11", false)), now),
            Observed::Settled
        );
        assert!(
            store.snapshot(&key).is_none(),
            "no request kept while pending"
        );
        assert_eq!(
            store.observe(seen(&csr("u1", "12", true)), now),
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
            store.observe(seen(&csr("u1", "11", false)), now),
            Observed::Stale
        );
        assert_eq!(store.snapshot(&key).unwrap().resource_version, "12");
        // Same name, new object (deleted and re-created): first seen again.
        assert_eq!(
            store.observe(seen(&csr("u2", "5", false)), now),
            Observed::FirstSeenPending { uid: "u2".into() }
        );
        assert_eq!(
            store.backlog(&[(0, Kind::CertificateSigningRequest)], now),
            vec![(0, 0.0)]
        );
        store.observe(seen(&csr("u2", "6", true)), now);
        assert_eq!(store.approved_keys(), vec![key.clone()]);
        store.retain_listed(0, Kind::CertificateSigningRequest, &HashSet::new());
        assert!(store.approved_keys().is_empty());
    }

    fn pcr_seen(name: &str, rv: &str, phase: Phase, created: SystemTime) -> Seen {
        Seen {
            key: Key {
                signer: 0,
                kind: Kind::PodCertificateRequest,
                namespace: Some(Arc::from("team-a")),
                name: Arc::from(name),
            },
            uid: format!("uid-{name}"),
            resource_version: rv.into(),
            phase,
            waiting_since: Some(created),
            work: None,
            certificate: None,
        }
    }

    #[test]
    fn kinds_keep_their_own_backlog_and_relist() {
        let store = Store::default();
        let now = SystemTime::now();
        let watched = [
            (0, Kind::CertificateSigningRequest),
            (0, Kind::PodCertificateRequest),
        ];
        // A CSR and a PCR of the same name and signer are different objects.
        store.observe(seen_csr(0, "", &csr("u1", "3", true)).unwrap(), now);
        let created = now - std::time::Duration::from_secs(90);
        assert_eq!(
            store.observe(pcr_seen("a", "4", Phase::Approved, created), now),
            Observed::Queue,
            "a PCR without a terminal condition waits for the signer at once"
        );
        store.observe(pcr_seen("b", "5", Phase::Issued, created), now);
        let backlog = store.backlog(&watched, now);
        assert_eq!(backlog[0].0, 1);
        assert_eq!(backlog[1], (1, 90.0), "a PCR waits since its creation");
        // A relist of the PCR watch that no longer has "a" drops it, not the CSR of the same name.
        store.retain_listed(0, Kind::PodCertificateRequest, &HashSet::new());
        let backlog = store.backlog(&watched, now);
        assert_eq!((backlog[0].0, backlog[1].0), (1, 0));
        assert_eq!(store.approved_keys(), vec![Key::csr(0, "a")]);
    }
}
