//! Retry mechanics around the route's retry policy: jittered exponential backoff, the set of
//! endpoints already tried (so a retry goes elsewhere), and the time-windowed retry budget.
//!
//! Whether an outcome is retriable is the route's `should_retry`; whether the cluster may take
//! one more concurrent retry is `admission`'s. All three must agree before a retry is sent.

mod budget;

use std::time::Duration;

pub use budget::{RetryBudget, WindowedCounter, concurrency_limit};

use crate::balance::EndpointId;

/// Envoy's default retry back-off base interval: 25 ms.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Envoy's default cap is ten times the base interval.
pub const DEFAULT_BACKOFF_MAX_FACTOR: u32 = 10;
/// How many endpoints a request remembers having tried (Istio's `hostSelectionRetryMaxAttempts`
/// is 5; a request with more attempts than this forgets the oldest).
pub const TRIED_HOSTS_CAPACITY: usize = 8;

/// Fully jittered exponential back-off, as Envoy's router: before retry `n` (1-based) wait a
/// uniform time in `[0, base × (2^n − 1))`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BACKOFF_BASE)
    }
}

impl Backoff {
    /// Back-off with Envoy's cap of ten times `base`.
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            max: base.saturating_mul(DEFAULT_BACKOFF_MAX_FACTOR),
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), drawn with `random`
    /// (any uniformly distributed `u64`).
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let exp = retry.clamp(1, 30);
        let multiplier = (1u64 << exp) - 1;
        let base_ms = u64::try_from(self.base.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let max_ms = u64::try_from(self.max.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let ceiling = multiplier.saturating_mul(base_ms).min(max_ms);
        Duration::from_millis(random % ceiling)
    }
}

/// The endpoints a request has already tried; fixed capacity, no allocation.
#[derive(Debug, Clone, Default)]
pub struct TriedHosts {
    hosts: [Option<EndpointId>; TRIED_HOSTS_CAPACITY],
    next: usize,
}

impl TriedHosts {
    /// Records an endpoint; past capacity the oldest is forgotten.
    pub fn insert(&mut self, id: EndpointId) {
        if self.contains(id) {
            return;
        }
        self.hosts[self.next % TRIED_HOSTS_CAPACITY] = Some(id);
        self.next += 1;
    }

    /// True when `id` was tried.
    pub fn contains(&self, id: EndpointId) -> bool {
        self.hosts.contains(&Some(id))
    }

    /// Number of endpoints remembered.
    pub fn len(&self) -> usize {
        self.hosts.iter().flatten().count()
    }

    /// True when nothing was tried yet.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        assert_eq!(b.max, Duration::from_millis(250));
        let mut rng = StdRng::seed_from_u64(1);
        let ceilings = [25, 75, 175, 250, 250, 250];
        for (i, ceil) in ceilings.iter().enumerate() {
            let retry = u32::try_from(i).unwrap() + 1;
            let max_seen = (0..2_000)
                .map(|_| b.delay(retry, rng.random()).as_millis())
                .max()
                .unwrap();
            assert!(max_seen < *ceil, "retry {retry}: {max_seen} < {ceil}");
            assert!(
                max_seen >= ceil * 9 / 10,
                "retry {retry}: jitter spans the range, saw {max_seen}"
            );
        }
        assert_eq!(b.delay(1, 24), Duration::from_millis(24));
        assert_eq!(b.delay(1, 25), Duration::ZERO);
        assert!(b.delay(u32::MAX, u64::MAX) < Duration::from_millis(250));
    }

    #[test]
    fn tried_hosts_remember_and_forget_oldest() {
        let id = |i: u16| EndpointId::from(([10, 0, 0, 1], i));
        let mut t = TriedHosts::default();
        assert!(t.is_empty());
        t.insert(id(1));
        t.insert(id(1));
        assert_eq!(t.len(), 1);
        assert!(t.contains(id(1)) && !t.contains(id(2)));
        for i in 2..=9 {
            t.insert(id(i));
        }
        assert_eq!(t.len(), TRIED_HOSTS_CAPACITY);
        assert!(!t.contains(id(1)), "oldest forgotten");
        assert!(t.contains(id(9)));
    }
}
