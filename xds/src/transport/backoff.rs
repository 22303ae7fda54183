//! Reconnect backoff: exponential with jitter, free of I/O (the caller supplies the randomness).

use std::time::Duration;

/// First reconnect delay (Envoy's gRPC retry base is 500 ms; a control plane restart is the
/// common case and should be picked up quickly).
pub const DEFAULT_BASE: Duration = Duration::from_millis(250);
/// Longest delay between attempts, so a proxy finds a restarted control plane within this time.
pub const DEFAULT_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with "equal jitter": the delay is uniformly drawn from [d/2, d] where d
/// doubles each attempt up to the maximum, so 10,000 proxies do not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE, DEFAULT_MAX)
    }
}

impl Backoff {
    /// A backoff from `base` doubling to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `unit` is a uniform random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Forgets past failures (after a stream delivered a response).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(300));
        for _ in 0..100 {
            assert!(b.next_delay(1.0) <= Duration::from_millis(1000));
        }
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }
}
