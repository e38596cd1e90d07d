//! Kubernetes Events on CSRs and PCRs (core `v1`; a CSR's in namespace `default` as client-go records
//! events for cluster-scoped objects, a PCR's in its own namespace), so `kubectl describe` tells the
//! story: `Issued`, `SigningFailed`, `SigningDenied` (PCR), `WaitingForApproval` (CSR).
//!
//! Events are best effort: they are queued on a bounded channel and sent by one background task
//! under their own token bucket, so they never delay or block a certificate write; when the
//! bucket or the channel is full they are dropped. The same (CSR, reason) is recorded at most
//! once per `dedup_window`, which keeps a CSR stuck on a transient error from spamming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

use super::plan::Kind;
use super::ratelimit::TokenBucket;
use crate::metrics::{status_code, ApiOperation, Metrics};

const COMPONENT: &str = "csr-signer";
const EVENT_NAMESPACE: &str = "default";

/// Normal or Warning, as Kubernetes defines event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event about one CSR or PCR.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub kind: Kind,
    /// The object's API version (`certificates.k8s.io/v1`, or `v1beta1` for a PCR on 1.35/1.36).
    pub api_version: &'static str,
    /// A PCR's namespace; `None` for a CSR.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// Which (CSR, reason) pairs were recorded within the window. A deleted CSR's entries go at once
/// (`forget`); entries older than the window are swept whenever the map has doubled since the last
/// sweep (amortised constant work per event). So the memory follows the number of live CSRs and the
/// event rate, not how many CSRs were ever seen.
#[derive(Debug)]
struct Recent {
    by_uid: HashMap<String, Vec<(&'static str, Instant)>>,
    sweep_at: usize,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            by_uid: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

impl Recent {
    /// Whether `(uid, reason)` may be recorded at `now`; if so, it is remembered.
    fn admit(&mut self, uid: &str, reason: &'static str, now: Instant, window: Duration) -> bool {
        if self.by_uid.len() >= self.sweep_at {
            self.by_uid.retain(|_, list| {
                list.retain(|(_, at)| now.duration_since(*at) < window);
                !list.is_empty()
            });
            self.sweep_at = (2 * self.by_uid.len()).max(1024);
        }
        let list = self.by_uid.entry(uid.to_owned()).or_default();
        if list
            .iter()
            .any(|(r, at)| *r == reason && now.duration_since(*at) < window)
        {
            return false;
        }
        list.retain(|(r, _)| *r != reason);
        list.push((reason, now));
        true
    }

    fn forget(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_uid.values().map(Vec::len).sum()
    }
}

/// Hands events to the background sender; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: Option<mpsc::Sender<ObjectEvent>>,
    recent: Arc<Mutex<Recent>>,
    dedup_window: Duration,
}

impl EventRecorder {
    /// A recorder that records nothing (`controller.events: false`).
    pub fn disabled() -> EventRecorder {
        EventRecorder {
            tx: None,
            recent: Arc::new(Mutex::new(Recent::default())),
            dedup_window: Duration::from_secs(600),
        }
    }

    /// Starts the sender task; it stops when every recorder clone is dropped.
    pub fn start(
        client: kube::Client,
        instance: String,
        metrics: Arc<Metrics>,
        qps: f64,
        burst: u32,
    ) -> (EventRecorder, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<ObjectEvent>(1024);
        let bucket = TokenBucket::new(qps, burst);
        let task = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if !bucket.try_acquire().await {
                    tracing::debug!(object = %ev.name, reason = ev.reason, "event dropped by rate limit");
                    continue;
                }
                let obj = build_event(&ev, &instance);
                let api: Api<Event> = Api::namespaced(
                    client.clone(),
                    ev.namespace.as_deref().unwrap_or(EVENT_NAMESPACE),
                );
                if let Err(e) = api.create(&PostParams::default(), &obj).await {
                    metrics.api_error(ApiOperation::CreateEvent, status_code(&e));
                    tracing::debug!(object = %ev.name, error = %e, "could not record event");
                }
            }
        });
        (
            EventRecorder {
                tx: Some(tx),
                recent: Arc::new(Mutex::new(Recent::default())),
                dedup_window: Duration::from_secs(600),
            },
            task,
        )
    }

    /// Forgets a deleted object (its uid is never reused).
    pub fn forget(&self, uid: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(uid);
    }

    /// Queues `ev` unless the same reason was recorded for this object within the window.
    pub fn record(&self, ev: ObjectEvent) {
        let Some(tx) = &self.tx else { return };
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if !recent.admit(&ev.uid, ev.reason, Instant::now(), self.dedup_window) {
                return;
            }
        }
        if tx.try_send(ev).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

fn build_event(ev: &ObjectEvent, instance: &str) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // client-go names events "<object>.<hex nanos>"; keep within the 253-character name limit. An Event's
    // name must be a DNS subdomain while a CSR's may be any path segment (`a b`, `a?b`): such a CSR's events
    // get a fixed prefix (they still name the CSR in involvedObject, which is what `kubectl describe` uses).
    let mut prefix = if is_subdomain_prefix(&ev.name) {
        ev.name.clone()
    } else {
        ev.kind.label().to_string()
    };
    let namespace = ev.namespace.as_deref().unwrap_or(EVENT_NAMESPACE);
    prefix.truncate(230);
    let prefix = prefix.trim_end_matches(['.', '-']);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.{nanos:x}")),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(ev.api_version.to_string()),
            kind: Some(
                match ev.kind {
                    Kind::CertificateSigningRequest => "CertificateSigningRequest",
                    Kind::PodCertificateRequest => "PodCertificateRequest",
                }
                .to_string(),
            ),
            namespace: ev.namespace.clone(),
            name: Some(ev.name.clone()),
            uid: Some(ev.uid.clone()),
            ..ObjectReference::default()
        },
        reason: Some(ev.reason.to_string()),
        message: Some(ev.message.clone()),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
        ),
        source: Some(EventSource {
            component: Some(COMPONENT.to_string()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_string()),
        reporting_instance: Some(instance.to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

/// A DNS-1123 subdomain's shape: dot-separated labels of lower-case letters, digits and `-`, each starting
/// and ending with a letter or digit (the length is capped by the caller).
fn is_subdomain_prefix(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.split('.').all(|label| {
        let b = label.as_bytes();
        b.first().is_some_and(|&c| alnum(c))
            && b.last().is_some_and(|&c| alnum(c))
            && b.iter().all(|&c| alnum(c) || c == b'-')
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_name_that_is_no_dns_subdomain_gets_a_valid_event_name() {
        for (csr, prefix) in [
            ("node-csr-abc.x", "node-csr-abc.x."),
            ("a b", "csr."),
            ("a?b", "csr."),
            ("A", "csr."),
            ("a\nb", "csr."),
            ("-a", "csr."),
            ("a..b", "csr."),
            ("a-.b", "csr."),
        ] {
            let ev = ObjectEvent {
                kind: Kind::CertificateSigningRequest,
                api_version: "certificates.k8s.io/v1",
                namespace: None,
                name: csr.into(),
                uid: "u".into(),
                type_: EventType::Normal,
                reason: "Issued",
                message: String::new(),
            };
            let e = build_event(&ev, "pod-a");
            let name = e.metadata.name.unwrap();
            assert!(name.starts_with(prefix), "{csr:?} -> {name}");
            assert_eq!(e.involved_object.name.as_deref(), Some(csr));
        }
    }

    #[test]
    fn event_refers_to_the_csr_and_has_a_bounded_unique_name() {
        let ev = ObjectEvent {
            kind: Kind::CertificateSigningRequest,
            api_version: "certificates.k8s.io/v1",
            namespace: None,
            name: "x".repeat(300),
            uid: "u1".into(),
            type_: EventType::Warning,
            reason: "SigningFailed",
            message: "UsageNotAllowed: usage \"cert sign\" is not allowed".into(),
        };
        let e = build_event(&ev, "pod-a");
        let name = e.metadata.name.unwrap();
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(
            e.involved_object.kind.as_deref(),
            Some("CertificateSigningRequest")
        );
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("SigningFailed"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn a_pcr_event_lives_in_the_pcr_namespace_and_names_its_version() {
        let ev = ObjectEvent {
            kind: Kind::PodCertificateRequest,
            api_version: "certificates.k8s.io/v1beta1",
            namespace: Some("team-a".into()),
            name: "req-x7".into(),
            uid: "u9".into(),
            type_: EventType::Warning,
            reason: "SigningDenied",
            message: String::new(),
        };
        let e = build_event(&ev, "pod-a");
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-a"));
        assert!(e.metadata.name.unwrap().starts_with("req-x7."));
        let o = e.involved_object;
        assert_eq!(o.kind.as_deref(), Some("PodCertificateRequest"));
        assert_eq!(
            o.api_version.as_deref(),
            Some("certificates.k8s.io/v1beta1")
        );
        assert_eq!(o.namespace.as_deref(), Some("team-a"));
        assert_eq!(o.uid.as_deref(), Some("u9"));
        let odd = ObjectEvent {
            name: "A".into(),
            ..ev
        };
        assert!(build_event(&odd, "pod-a")
            .metadata
            .name
            .unwrap()
            .starts_with("pcr."));
    }

    #[test]
    fn remembered_pairs_leave_with_the_window_or_their_csr() {
        let mut r = Recent::default();
        let w = Duration::from_secs(600);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(r.admit(&format!("u{i}"), "Issued", t0, w));
        }
        assert!(!r.admit("u1", "Issued", t0 + Duration::from_secs(599), w));
        assert!(r.admit("u1", "SigningError", t0 + Duration::from_secs(1), w));
        r.forget("u2");
        assert_eq!(r.len(), 1000);
        // Deleted CSRs leave at once: churn with deletion keeps the map at the live set.
        for i in 0..1000 {
            r.forget(&format!("u{i}"));
        }
        assert_eq!(r.len(), 0);
        // Without deletions, a window later the next sweep drops everything older.
        for i in 0..2048 {
            assert!(r.admit(&format!("v{i}"), "Issued", t0, w));
        }
        assert!(r.admit("new", "Issued", t0 + Duration::from_secs(700), w));
        assert!(r.len() <= 2, "{}", r.len());
    }

    #[tokio::test]
    async fn same_reason_for_same_csr_is_recorded_once_per_window() {
        let (tx, mut rx) = mpsc::channel(16);
        let r = EventRecorder {
            tx: Some(tx),
            recent: Arc::new(Mutex::new(Recent::default())),
            dedup_window: Duration::from_secs(600),
        };
        let ev = |uid: &str, reason| ObjectEvent {
            kind: Kind::CertificateSigningRequest,
            api_version: "certificates.k8s.io/v1",
            namespace: None,
            name: "c".into(),
            uid: uid.into(),
            type_: EventType::Normal,
            reason,
            message: String::new(),
        };
        r.record(ev("u1", "WaitingForApproval"));
        r.record(ev("u1", "WaitingForApproval"));
        r.record(ev("u1", "Issued"));
        r.record(ev("u2", "WaitingForApproval"));
        drop(r);
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push((e.uid, e.reason));
        }
        assert_eq!(
            got,
            vec![
                ("u1".to_string(), "WaitingForApproval"),
                ("u1".to_string(), "Issued"),
                ("u2".to_string(), "WaitingForApproval"),
            ]
        );
    }
}
