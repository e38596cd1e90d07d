//! In-process fault injection for tests (not reachable over HTTP): failing the next N matching
//! requests, added latency, closing watches, compacting history, forcing write conflicts. Also
//! keeps a log of the most recent served requests (a ring: the oldest go first) so tests can
//! assert what a client did without the log growing with the server's lifetime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::Method;

use super::status::ApiError;
use super::store::Store;

/// Which requests a fault applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub method: Option<Method>,
    /// Substring of the URL path, e.g. `"/certificatesigningrequests/"` or `"/status"`.
    pub path_contains: Option<String>,
}

impl Match {
    pub fn any() -> Self {
        Match::default()
    }

    pub fn new(method: Option<Method>, path_contains: &str) -> Self {
        Match {
            method,
            path_contains: Some(path_contains.to_string()),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
    }
}

/// The failure a matching request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 500 InternalError.
    InternalError,
    /// 503 ServiceUnavailable.
    ServiceUnavailable,
    /// 429 TooManyRequests with `Retry-After: <secs>`.
    TooManyRequests { retry_after_secs: u64 },
}

impl Failure {
    fn error(self) -> ApiError {
        match self {
            Failure::InternalError => ApiError::internal("injected fault"),
            Failure::ServiceUnavailable => ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
                None,
            ),
            Failure::TooManyRequests { retry_after_secs } => {
                ApiError::too_many_requests(retry_after_secs)
            }
        }
    }
}

struct FailRule {
    m: Match,
    remaining: usize,
    failure: Failure,
}

/// One served request, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: Method,
    pub path: String,
    /// The raw (percent-encoded) query string, empty when none.
    pub query: String,
    /// The authenticated user, empty when the token was missing or unknown.
    pub user: String,
    pub status: u16,
}

struct State {
    fail: Vec<FailRule>,
    latency: Vec<(Match, Duration)>,
    conflicts: Vec<Match>,
    log: VecDeque<RequestRecord>,
    log_capacity: usize,
}

pub(crate) enum Injected {
    None,
    Latency(Duration),
    Fail(ApiError, Duration),
}

/// Handle for injecting faults into a running local API.
pub struct Faults {
    state: Mutex<State>,
    store: Arc<Store>,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Faults {
    /// `log_capacity`: how many of the latest requests [`Faults::requests`] remembers.
    pub(crate) fn new(store: Arc<Store>, log_capacity: usize) -> Self {
        Faults {
            state: Mutex::new(State {
                fail: Vec::new(),
                latency: Vec::new(),
                conflicts: Vec::new(),
                log: VecDeque::new(),
                log_capacity,
            }),
            store,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    /// Requests received and not yet answered (a watch counts until its response starts).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` requests matching `m` fail with `failure`.
    pub fn fail_next(&self, n: usize, m: Match, failure: Failure) {
        self.lock().fail.push(FailRule {
            m,
            remaining: n,
            failure,
        });
    }

    /// Every request matching `m` is delayed by `d` (until [`Faults::clear`]).
    pub fn add_latency(&self, m: Match, d: Duration) {
        self.lock().latency.push((m, d));
    }

    /// The next PUT/PATCH matching `m` gets 409 Conflict as if its resourceVersion were stale.
    pub fn conflict_next_write(&self, m: Match) {
        self.lock().conflicts.push(m);
    }

    /// Removes all pending failures, latencies and conflicts.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.fail.clear();
        s.latency.clear();
        s.conflicts.clear();
    }

    /// Ends every open watch stream.
    pub fn close_watches(&self) {
        self.store.close_watches();
    }

    /// Compacts history: the next watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.store.compact();
    }

    /// Number of open watch streams.
    pub fn open_watches(&self) -> usize {
        self.store.open_watches()
    }

    /// The latest requests served (method, path, status), oldest first; at most the configured
    /// `request_log` of them.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    /// Number of served requests with this method whose path contains `path_contains`.
    pub fn count(&self, method: &Method, path_contains: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == *method && r.path.contains(path_contains))
            .count()
    }

    pub(crate) fn check(&self, method: &Method, path: &str) -> Injected {
        let mut s = self.lock();
        let delay: Duration = s
            .latency
            .iter()
            .filter(|(m, _)| m.matches(method, path))
            .map(|(_, d)| *d)
            .sum();
        if let Some(rule) = s
            .fail
            .iter_mut()
            .find(|r| r.remaining > 0 && r.m.matches(method, path))
        {
            rule.remaining -= 1;
            let e = rule.failure.error();
            s.fail.retain(|r| r.remaining > 0);
            return Injected::Fail(e, delay);
        }
        if delay.is_zero() {
            Injected::None
        } else {
            Injected::Latency(delay)
        }
    }

    pub(crate) fn take_conflict(&self, method: &Method, path: &str) -> bool {
        let mut s = self.lock();
        match s.conflicts.iter().position(|m| m.matches(method, path)) {
            Some(i) => {
                s.conflicts.remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn record(&self, method: &Method, path: &str, query: &str, user: &str, status: u16) {
        let mut s = self.lock();
        if s.log_capacity == 0 {
            return;
        }
        while s.log.len() >= s.log_capacity {
            s.log.pop_front();
        }
        s.log.push_back(RequestRecord {
            method: method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            user: user.to_string(),
            status,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::Retention;

    fn faults(capacity: usize) -> Faults {
        let store = Arc::new(Store::new(Retention {
            max_history: 10,
            history_window: Duration::from_secs(75),
            event_ttl: Duration::from_secs(3600),
        }));
        Faults::new(store, capacity)
    }

    #[test]
    fn request_log_keeps_the_latest_in_order() {
        let f = faults(3);
        for i in 0..5 {
            f.record(&Method::GET, &format!("/p{i}"), "", "u", 200);
        }
        let paths: Vec<String> = f.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/p2", "/p3", "/p4"]);
        assert_eq!(f.count(&Method::GET, "/p"), 3);
        assert_eq!(f.count(&Method::GET, "/p0"), 0);
    }

    #[test]
    fn a_zero_capacity_log_records_nothing() {
        let f = faults(0);
        f.record(&Method::GET, "/p", "", "u", 200);
        assert!(f.requests().is_empty());
    }
}
