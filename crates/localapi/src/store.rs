//! The object store: every object of every served resource, one global resourceVersion counter
//! (like etcd's revision), a bounded event history for watch resumption, and the open watches.
//!
//! All mutations go through [`Store::mutate`], which runs the caller's decision under the store lock
//! (the equivalent of etcd's GuaranteedUpdate), so a read-modify-write is atomic and every persisted
//! change bumps the revision and emits exactly one event. A no-op leaves the revision alone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    /// Watches starting before this revision get 410 Gone.
    floor: u64,
    max_history: usize,
    watchers: Vec<Watcher>,
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
    pub fn new(max_history: usize) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                floor: 0,
                max_history: max_history.max(1),
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
                // The DELETED event carries the last state with the deletion's revision.
                let mut v = (*cur).clone();
                v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                (EventType::Deleted, Arc::new(v), Some(cur))
            }
        };
        let ev = Arc::new(Event {
            rv: g.rv,
            key,
            etype,
            old,
            object: stored.clone(),
        });
        g.history.push_back(ev.clone());
        while g.history.len() > g.max_history {
            if let Some(dropped) = g.history.pop_front() {
                g.floor = g.floor.max(dropped.rv);
            }
        }
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
        for (key, v) in objects {
            let k = (namespace_of(&v).to_string(), name_of(&v).to_string());
            g.objects.entry(key).or_default().insert(k, Arc::new(v));
        }
        g.rv = g.rv.max(rv);
        g.floor = g.rv;
    }
}
