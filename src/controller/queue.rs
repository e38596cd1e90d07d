//! A deduplicating work queue keyed by CSR, with the semantics of client-go's workqueue: a key is
//! queued at most once, a key being processed is never handed to a second worker, and a key added
//! while being processed is queued again when its worker finishes. Together with per-key backoff
//! this turns duplicate and out-of-order watch events into at most one decision in flight per CSR.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
struct Inner<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    shutting_down: bool,
}

/// The queue; cheap to clone (shared).
#[derive(Debug)]
pub struct WorkQueue<K> {
    inner: Arc<Mutex<Inner<K>>>,
    notify: Arc<Notify>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> WorkQueue<K> {
    pub fn new() -> WorkQueue<K> {
        WorkQueue {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                shutting_down: false,
            })),
            notify: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // A poisoned lock only means a worker panicked mid-update of plain sets; the data is
        // still consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already queued.
    pub fn add(&self, key: K) {
        let mut q = self.lock();
        if q.shutting_down || q.dirty.contains(&key) {
            return;
        }
        q.dirty.insert(key.clone());
        if !q.processing.contains(&key) {
            q.queue.push_back(key);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay` (backoff).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// The next key to work on; `None` once the queue is shut down (stop taking work).
    pub async fn pop(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.lock();
                if q.shutting_down {
                    return None;
                }
                if let Some(key) = q.queue.pop_front() {
                    q.dirty.remove(&key);
                    q.processing.insert(key.clone());
                    if !q.queue.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.contains(key) && !q.shutting_down {
            q.queue.push_back(key.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Stops handing out work; workers' `pop` returns `None`.
    pub fn shutdown(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_waiters();
    }

    /// Queued (not in-flight) keys.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_queued_keys() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().await, Some("a"));
        assert_eq!(q.pop().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn key_added_while_processing_is_requeued_on_done_not_handed_out_twice() {
        let q = WorkQueue::new();
        q.add("a");
        assert_eq!(q.pop().await, Some("a"));
        q.add("a");
        assert!(
            q.is_empty(),
            "in-flight key must not be queued for a second worker"
        );
        q.done(&"a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn shutdown_wakes_waiting_workers() {
        let q: WorkQueue<&str> = WorkQueue::new();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
        q.add("late");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_delays() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.len(), 1);
    }
}
