//! The object store: every object of every served resource, one global resourceVersion counter
//! (like etcd's revision), a bounded event history for watch resumption, and the open watches.
//!
//! Memory stays bounded under churn as it does in kube-apiserver: the history keeps events for a
//! window (the watch cache keeps at least 75 s, at least 100 events, at most a fixed number) and a
//! watch from before it gets 410 Gone, as after etcd's compaction; Events expire a fixed time after
//! their last write (kube-apiserver's `--event-ttl`, one hour), with a DELETED watch event, as an
//! etcd lease expiring deletes the key.
//!
//! All mutations go through [`Store::mutate`], which runs the caller's decision under the store lock
//! (the equivalent of etcd's GuaranteedUpdate), so a read-modify-write is atomic and every persisted
//! change bumps the revision and emits exactly one event. A no-op leaves the revision alone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One persisted change.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    /// When it was recorded, for the history window.
    pub at: Instant,
    pub key: &'static str,
    pub etype: EventType,
    pub old: Option<Arc<Value>>,
    pub object: Arc<Value>,
}

/// What a watch stream receives.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    Event(EventType, Arc<Value>),
    Bookmark(u64),
    /// The end of the initial state of a `sendInitialEvents=true` watch (streaming list).
    InitialEventsEnd(u64),
}

pub type Filter = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

struct Watcher {
    key: &'static str,
    namespace: Option<String>,
    filter: Filter,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl Watcher {
    /// Translates a change into what this watcher sees: objects entering or leaving its selector
    /// show up as ADDED / DELETED, as kube-apiserver's watch cache does.
    fn translate(&self, ev: &Event) -> Option<WatchMsg> {
        if ev.key != self.key {
            return None;
        }
        if let Some(ns) = &self.namespace {
            if namespace_of(&ev.object) != ns.as_str() {
                return None;
            }
        }
        let now = (self.filter)(&ev.object);
        let before = match (&ev.old, ev.etype) {
            (Some(old), EventType::Modified) => (self.filter)(old),
            _ => now,
        };
        let etype = match (before, now, ev.etype) {
            (_, _, EventType::Added) | (_, _, EventType::Deleted) if now => ev.etype,
            (true, true, EventType::Modified) => EventType::Modified,
            (false, true, EventType::Modified) => EventType::Added,
            (true, false, EventType::Modified) => EventType::Deleted,
            _ => return None,
        };
        Some(WatchMsg::Event(etype, ev.object.clone()))
    }
}

pub enum Change {
    Create(Value),
    Update(Value),
    Delete,
    /// Nothing to write; the current object is returned.
    NoOp,
}

type ObjKey = (String, String);

/// Events the history keeps whatever their age (the watch cache's lower bound capacity), so a
/// quiet server does not send every resuming watch back to a relist.
pub const MIN_HISTORY: usize = 100;

/// Resources whose objects expire a fixed time after their last write (`--event-ttl`).
pub const TTL_KEYS: &[&str] = &["core/events", "events.k8s.io/events"];

/// How much the store remembers besides the current objects.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// At most this many watch events are kept.
    pub max_history: usize,
    /// Beyond [`MIN_HISTORY`] events, those older than this are dropped.
    pub history_window: Duration,
    /// Objects of [`TTL_KEYS`] are deleted this long after their last write.
    pub event_ttl: Duration,
}

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    /// Watches starting before this revision get 410 Gone.
    floor: u64,
    retention: Retention,
    /// Last write of every object of a [`TTL_KEYS`] resource, oldest first as written; an entry
    /// whose time no longer matches `ttl_written` was superseded by a later write.
    ttl_queue: VecDeque<(Instant, &'static str, ObjKey)>,
    ttl_written: HashMap<(&'static str, ObjKey), Instant>,
    watchers: Vec<Watcher>,
}

impl Inner {
    /// Drops events beyond the count cap, and those older than the window beyond the minimum.
    fn trim_history(&mut self, now: Instant) {
        let r = self.retention;
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > r.max_history;
            let too_old = self.history.len() > MIN_HISTORY
                && now.saturating_duration_since(front.at) > r.history_window;
            if !(too_many || too_old) {
                break;
            }
            let rv = front.rv;
            self.history.pop_front();
            self.floor = self.floor.max(rv);
        }
    }
}

pub struct Store {
    inner: Mutex<Inner>,
    dirty: AtomicBool,
}

pub fn namespace_of(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("")
}

pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

impl Store {
    pub fn new(retention: Retention) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                floor: 0,
                retention: Retention {
                    max_history: retention.max_history.max(1),
                    ..retention
                },
                ttl_queue: VecDeque::new(),
                ttl_written: HashMap::new(),
                watchers: Vec::new(),
            }),
            dirty: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written object (all writes are single
        // map inserts), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let g = self.lock();
        g.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of one resource (optionally one namespace), sorted by namespace and name, plus
    /// the revision they were read at.
    pub fn list(&self, key: &str, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let g = self.lock();
        let items = g
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, g.rv)
    }

    /// Atomic read-decide-write of one object. `decide` sees the current object (if any) and the
    /// revision the write would get; the store stamps `metadata.resourceVersion`, records the
    /// event and notifies watchers. Returns the resulting object (the deleted one for Delete) and
    /// whether anything was written.
    pub fn mutate<F>(
        &self,
        key: &'static str,
        ns: &str,
        name: &str,
        decide: F,
    ) -> Result<(Arc<Value>, bool), ApiError>
    where
        F: FnOnce(Option<&Value>) -> Result<Change, ApiError>,
    {
        let mut g = self.lock();
        let k = (ns.to_string(), name.to_string());
        let current = g.objects.get(key).and_then(|m| m.get(&k)).cloned();
        let change = decide(current.as_deref())?;
        let (etype, stored, old) = match change {
            Change::NoOp => {
                return match current {
                    Some(c) => Ok((c, false)),
                    None => Err(ApiError::internal("no-op on a missing object")),
                }
            }
            Change::Create(mut v) | Change::Update(mut v) => {
                let rv = g.rv + 1;
                v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                g.rv = rv;
                let v = Arc::new(v);
                if TTL_KEYS.contains(&key) {
                    let now = Instant::now();
                    g.ttl_queue.push_back((now, key, k.clone()));
                    g.ttl_written.insert((key, k.clone()), now);
                }
                g.objects.entry(key).or_default().insert(k, v.clone());
                let etype = if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (etype, v, current)
            }
            Change::Delete => {
                let Some(cur) = current else {
                    return Err(ApiError::internal("delete of a missing object"));
                };
                let rv = g.rv + 1;
                g.rv = rv;
                if let Some(m) = g.objects.get_mut(key) {
                    m.remove(&k);
                }
                g.ttl_written.remove(&(key, k));
                // The DELETED event carries the last state with the deletion's revision.
                let mut v = (*cur).clone();
                v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                (EventType::Deleted, Arc::new(v), Some(cur))
            }
        };
        let now = Instant::now();
        let ev = Arc::new(Event {
            rv: g.rv,
            at: now,
            key,
            etype,
            old,
            object: stored.clone(),
        });
        g.history.push_back(ev.clone());
        g.trim_history(now);
        g.watchers.retain(|w| match w.translate(&ev) {
            Some(msg) => w.tx.send(msg).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.dirty.store(true, Ordering::Relaxed);
        Ok((stored, true))
    }

    /// Opens a watch. `from` None (or "0") replays the current state as ADDED events; Some(rv)
    /// replays history after rv, or fails with 410 when that history was compacted. With
    /// `initial_events` the current state is replayed and closed by an InitialEventsEnd marker.
    pub fn watch(
        &self,
        key: &'static str,
        namespace: Option<String>,
        filter: Filter,
        from: Option<u64>,
        initial_events: bool,
    ) -> Result<mpsc::UnboundedReceiver<WatchMsg>, ApiError> {
        let from = if initial_events { None } else { from };
        let mut g = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Watcher {
            key,
            namespace,
            filter,
            tx,
        };
        match from {
            None => {
                if let Some(m) = g.objects.get(key) {
                    for ((ns, _), v) in m {
                        if w.namespace.as_ref().is_some_and(|want| want != ns) {
                            continue;
                        }
                        if (w.filter)(v) {
                            let _ = w.tx.send(WatchMsg::Event(EventType::Added, v.clone()));
                        }
                    }
                }
                if initial_events {
                    let _ = w.tx.send(WatchMsg::InitialEventsEnd(g.rv));
                }
            }
            Some(rv) => {
                if rv < g.floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {} ({})",
                        rv, g.floor
                    )));
                }
                for ev in g.history.iter().filter(|e| e.rv > rv) {
                    if let Some(msg) = w.translate(ev) {
                        let _ = w.tx.send(msg);
                    }
                }
            }
        }
        g.watchers.push(w);
        Ok(rx)
    }

    /// Applies the time-based retention now: drops history past the window and deletes objects
    /// whose TTL ran out (each deletion is a normal DELETED event). Returns how many expired.
    pub fn expire(&self, now: Instant) -> usize {
        let due: Vec<(&'static str, ObjKey)> = {
            let mut g = self.lock();
            g.trim_history(now);
            let ttl = g.retention.event_ttl;
            let mut due = Vec::new();
            while let Some((at, _, _)) = g.ttl_queue.front() {
                if now.saturating_duration_since(*at) < ttl {
                    break;
                }
                let Some((at, key, k)) = g.ttl_queue.pop_front() else {
                    break;
                };
                // Only the entry of the latest write counts; older ones were superseded.
                if g.ttl_written.get(&(key, k.clone())) == Some(&at) {
                    due.push((key, k));
                }
            }
            due
        };
        let mut n = 0;
        for (key, (ns, name)) in due {
            let deleted = self.mutate(key, &ns, &name, |cur| {
                Ok(if cur.is_some() {
                    Change::Delete
                } else {
                    Change::NoOp
                })
            });
            if deleted.is_ok_and(|(_, written)| written) {
                n += 1;
            }
        }
        n
    }

    /// Watch events currently kept for resumption.
    #[cfg(test)]
    fn history_len(&self) -> usize {
        self.lock().history.len()
    }

    /// Is a list continuation / watch from `rv` still served?
    pub fn is_compacted(&self, rv: u64) -> bool {
        rv < self.lock().floor
    }

    /// Drops all history: the next watch from any older revision gets 410 Gone.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.floor = g.rv;
    }

    /// Ends every open watch stream (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.lock().watchers.clear();
    }

    pub fn open_watches(&self) -> usize {
        let mut g = self.lock();
        g.watchers.retain(|w| !w.tx.is_closed());
        g.watchers.len()
    }

    /// Sends a BOOKMARK with the current revision to every watch (that asked for them is decided
    /// by the stream, which drops bookmarks it was not asked for).
    pub fn bookmark_all(&self) {
        let mut g = self.lock();
        let rv = g.rv;
        g.watchers
            .retain(|w| w.tx.send(WatchMsg::Bookmark(rv)).is_ok());
    }

    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Everything, for `--state` persistence: (revision, [(key, object)]).
    pub fn snapshot(&self) -> (u64, Vec<(String, Value)>) {
        let g = self.lock();
        let mut out = Vec::new();
        for (k, m) in &g.objects {
            for v in m.values() {
                out.push((k.to_string(), (**v).clone()));
            }
        }
        (g.rv, out)
    }

    /// Loads objects saved by [`Store::snapshot`]; history starts empty, so older watches get 410.
    pub fn restore(&self, rv: u64, objects: Vec<(&'static str, Value)>) {
        let mut g = self.lock();
        let now = Instant::now();
        for (key, v) in objects {
            let k = (namespace_of(&v).to_string(), name_of(&v).to_string());
            if TTL_KEYS.contains(&key) {
                // The saved file has no write times: restored events get a full TTL from now.
                g.ttl_queue.push_back((now, key, k.clone()));
                g.ttl_written.insert((key, k.clone()), now);
            }
            g.objects.entry(key).or_default().insert(k, Arc::new(v));
        }
        g.rv = g.rv.max(rv);
        g.floor = g.rv;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(max_history: usize, window: Duration, ttl: Duration) -> Store {
        Store::new(Retention {
            max_history,
            history_window: window,
            event_ttl: ttl,
        })
    }

    fn put(s: &Store, key: &'static str, name: &str) -> u64 {
        let obj = json!({"metadata": {"name": name, "namespace": "default"}});
        s.mutate(key, "default", name, |cur| {
            Ok(if cur.is_some() {
                Change::Update(obj)
            } else {
                Change::Create(obj)
            })
        })
        .unwrap();
        s.current_rv()
    }

    fn watch_from(s: &Store, rv: u64) -> Result<Vec<WatchMsg>, ApiError> {
        let mut rx = s.watch("core/configmaps", None, Arc::new(|_| true), Some(rv), false)?;
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn history_is_capped_by_count_and_older_watches_get_410() {
        let s = store(150, Duration::from_secs(3600), Duration::from_secs(3600));
        let first = put(&s, "core/configmaps", "c0");
        for i in 1..200 {
            put(&s, "core/configmaps", &format!("c{i}"));
        }
        assert_eq!(s.history_len(), 150);
        // Events after rv are all still there: the 150 newest.
        let oldest_kept = s.current_rv() - 150;
        assert_eq!(watch_from(&s, oldest_kept).unwrap().len(), 150);
        let e = watch_from(&s, first).unwrap_err();
        assert_eq!(e.code, 410);
        assert_eq!(
            e.body["message"],
            format!("too old resource version: {first} ({oldest_kept})")
        );
        assert_eq!(e.body["reason"], "Expired");
    }

    #[test]
    fn history_older_than_the_window_goes_but_the_minimum_stays() {
        let window = Duration::from_secs(75);
        let s = store(100_000, window, Duration::from_secs(3600));
        for i in 0..(MIN_HISTORY + 50) {
            put(&s, "core/configmaps", &format!("c{i}"));
        }
        assert_eq!(s.history_len(), MIN_HISTORY + 50, "all within the window");
        s.expire(Instant::now() + window / 2);
        assert_eq!(s.history_len(), MIN_HISTORY + 50, "not old enough yet");
        s.expire(Instant::now() + window * 2);
        assert_eq!(s.history_len(), MIN_HISTORY, "the lower bound is kept");
        assert!(s.is_compacted(s.current_rv() - MIN_HISTORY as u64 - 1));
        assert!(!s.is_compacted(s.current_rv() - MIN_HISTORY as u64));
    }

    #[test]
    fn events_expire_after_their_last_write_with_a_deleted_event() {
        let ttl = Duration::from_secs(3600);
        let s = store(100_000, Duration::from_secs(75), ttl);
        put(&s, "core/events", "e1");
        put(&s, "events.k8s.io/events", "e2");
        put(&s, "core/configmaps", "kept");
        let mut rx = s
            .watch("core/events", None, Arc::new(|_| true), None, false)
            .unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(WatchMsg::Event(EventType::Added, _))
        ));
        assert_eq!(s.expire(Instant::now() + ttl / 2), 0);
        assert_eq!(s.expire(Instant::now() + ttl + Duration::from_secs(1)), 2);
        assert!(s.get("core/events", "default", "e1").is_none());
        assert!(s.get("events.k8s.io/events", "default", "e2").is_none());
        assert!(s.get("core/configmaps", "default", "kept").is_some());
        match rx.try_recv() {
            Ok(WatchMsg::Event(EventType::Deleted, o)) => assert_eq!(name_of(&o), "e1"),
            other => panic!("expected DELETED, got {other:?}"),
        }
        // Nothing is left to expire a second time.
        assert_eq!(s.expire(Instant::now() + ttl * 3), 0);
    }

    #[test]
    fn a_rewritten_event_lives_a_full_ttl_from_its_last_write() {
        let ttl = Duration::from_secs(60);
        let s = store(100_000, Duration::from_secs(75), ttl);
        put(&s, "core/events", "e");
        std::thread::sleep(Duration::from_millis(20));
        put(&s, "core/events", "e");
        let second = Instant::now();
        // Due for the first write, not for the second: kept.
        assert_eq!(s.expire(second + ttl - Duration::from_millis(10)), 0);
        assert!(s.get("core/events", "default", "e").is_some());
        assert_eq!(s.expire(second + ttl), 1);
        assert!(s.get("core/events", "default", "e").is_none());
    }
}
