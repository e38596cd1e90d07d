//! A token bucket for client-side apiserver request limits (`controller.qps` / `controller.burst`),
//! so a backlog of thousands of approved CSRs cannot flood a real apiserver.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

/// Tokens refill at `qps` per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<State>,
}

impl TokenBucket {
    /// A non-positive or non-finite `qps` disables limiting.
    pub fn new(qps: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    fn unlimited(&self) -> bool {
        !(self.qps.is_finite() && self.qps > 0.0)
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.qps).min(self.burst);
        s.last = now;
    }

    /// Waits until a request may be sent. Tokens are reserved before sleeping so waiters are
    /// served in order without a thundering herd.
    pub async fn acquire(&self) {
        if self.unlimited() {
            return;
        }
        let wait = {
            let mut s = self.state.lock().await;
            self.refill(&mut s, Instant::now());
            s.tokens -= 1.0;
            if s.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.tokens / self.qps)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token if one is available now; never waits. For work that may be dropped (events).
    pub async fn try_acquire(&self) -> bool {
        if self.unlimited() {
            return true;
        }
        let mut s = self.state.lock().await;
        self.refill(&mut s, Instant::now());
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_qps() {
        let b = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire().await;
        }
        assert_eq!(Instant::now(), start, "burst must not wait");
        b.acquire().await;
        // Paused clock: the sleep advanced time by exactly one token's worth.
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
        for _ in 0..10 {
            b.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_drops_when_empty_and_refills() {
        let b = TokenBucket::new(2.0, 2);
        assert!(b.try_acquire().await);
        assert!(b.try_acquire().await);
        assert!(!b.try_acquire().await);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.try_acquire().await);
        assert!(!b.try_acquire().await);
    }

    #[tokio::test]
    async fn zero_qps_is_unlimited() {
        let b = TokenBucket::new(0.0, 1);
        for _ in 0..1000 {
            b.acquire().await;
        }
        assert!(b.try_acquire().await);
    }
}
