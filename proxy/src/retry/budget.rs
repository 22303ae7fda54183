//! Retry budgets that keep retries from amplifying an outage: a lock-free time-windowed counter,
//! and Linkerd's budget (`ratio` of recent requests plus a `min_retries_per_second` reserve,
//! remembered for `ttl`).
//!
//! Invariant: over any `ttl` window, retries ≤ `min_retries_per_second × ttl + ratio × requests`
//! (up to one bucket of slack at the window edge). Every request deposits, every retry withdraws;
//! withdrawals expire with the window, so the budget refills once the outage ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jalin_xds::model::traffic::{ConcurrencyRetryBudget, RetryBudget as RetryBudgetConfig};

/// Buckets per window; the window edge is accurate to `ttl / BUCKETS`.
pub const BUCKETS: usize = 10;

/// Events counted over a sliding window of `BUCKETS` buckets. `&self` everywhere: shared by the
/// requests of a cluster without a lock. Racing updates at a bucket boundary may lose a count,
/// which only makes the budget more generous by that count.
#[derive(Debug)]
pub struct WindowedCounter {
    epoch: Instant,
    width: Duration,
    slots: [AtomicU64; BUCKETS],
    counts: [AtomicU64; BUCKETS],
}

impl WindowedCounter {
    /// A counter over `window` starting at `epoch` (take it from the same clock as `now`).
    pub fn new(window: Duration, epoch: Instant) -> Self {
        let width = (window / u32::try_from(BUCKETS).unwrap_or(1)).max(Duration::from_millis(1));
        Self {
            epoch,
            width,
            // Slot 0 is "empty": real slots are numbered from 1.
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Adds `n` events at `now`.
    pub fn add(&self, now: Instant, n: u64) {
        let slot = self.slot(now);
        let i = usize::try_from(slot % BUCKETS as u64).unwrap_or(0);
        let seen = self.slots[i].load(Ordering::Acquire);
        if seen != slot
            && self.slots[i]
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.counts[i].store(0, Ordering::Release);
        }
        self.counts[i].fetch_add(n, Ordering::AcqRel);
    }

    /// Events within the window ending at `now`.
    pub fn sum(&self, now: Instant) -> u64 {
        let current = self.slot(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        (0..BUCKETS)
            .filter(|&i| (oldest..=current).contains(&self.slots[i].load(Ordering::Acquire)))
            .map(|i| self.counts[i].load(Ordering::Acquire))
            .sum()
    }
}

/// DestinationRule `retryBudget` (Envoy's `retry_budget`): the most concurrent retries allowed
/// when `base` requests are active (or, with `budgetInterval`, were started within it):
/// `percent` % of `base`, rounded down, but never fewer than `min_retry_concurrency`.
pub fn concurrency_limit(budget: &ConcurrencyRetryBudget, base: u32) -> u32 {
    let share = (f64::from(base) * budget.percent.clamp(0.0, 100.0) / 100.0).floor();
    // The share is at most `base`, so it fits in a u32.
    (share as u32).max(budget.min_retry_concurrency)
}

/// Linkerd's retry budget for one cluster.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    deposits: WindowedCounter,
    withdrawals: WindowedCounter,
}

impl RetryBudget {
    /// A budget from the native config, its window starting at `now`.
    pub fn new(cfg: &RetryBudgetConfig, now: Instant) -> Self {
        let ttl = Duration::from_millis(cfg.ttl_ms.max(1));
        Self {
            ratio: cfg.ratio.max(0.0),
            reserve: f64::from(cfg.min_retries_per_second) * ttl.as_secs_f64(),
            deposits: WindowedCounter::new(ttl, now),
            withdrawals: WindowedCounter::new(ttl, now),
        }
    }

    /// Records an original request (not a retry).
    pub fn deposit(&self, now: Instant) {
        self.deposits.add(now, 1);
    }

    /// Takes one retry from the budget; `false` when the budget is spent (do not retry).
    pub fn try_withdraw(&self, now: Instant) -> bool {
        if self.balance(now) < 1.0 {
            return false;
        }
        self.withdrawals.add(now, 1);
        true
    }

    /// Retries still allowed in the current window.
    pub fn balance(&self, now: Instant) -> f64 {
        self.reserve + self.ratio * self.deposits.sum(now) as f64 - self.withdrawals.sum(now) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, min: u32, ttl_ms: u64) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ratio,
            min_retries_per_second: min,
            ttl_ms,
        }
    }

    #[test]
    fn concurrency_limit_is_a_share_with_a_floor() {
        let b = ConcurrencyRetryBudget::default();
        assert_eq!(concurrency_limit(&b, 0), 3, "Istio's minRetryConcurrency");
        assert_eq!(concurrency_limit(&b, 14), 3);
        assert_eq!(concurrency_limit(&b, 100), 20, "Istio's 20 %");
        assert_eq!(concurrency_limit(&b, u32::MAX), u32::MAX / 5);
    }

    #[test]
    fn windowed_counter_slides() {
        let t0 = Instant::now();
        let c = WindowedCounter::new(Duration::from_secs(10), t0);
        c.add(t0, 5);
        c.add(t0 + Duration::from_secs(3), 2);
        assert_eq!(c.sum(t0 + Duration::from_secs(9)), 7);
        assert_eq!(
            c.sum(t0 + Duration::from_millis(10_500)),
            2,
            "first bucket expired"
        );
        assert_eq!(c.sum(t0 + Duration::from_secs(14)), 0);
        c.add(t0 + Duration::from_secs(20), 1);
        assert_eq!(
            c.sum(t0 + Duration::from_secs(20)),
            1,
            "a reused bucket starts from zero"
        );
    }

    #[test]
    fn budget_caps_retries_during_an_outage() {
        // 20 % of requests plus 1 retry/s over 10 s: 100 requests/s for 10 s, all failing.
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.2, 1, 10_000), t0);
        let (mut requests, mut retries) = (0u64, 0u64);
        for ms in (0..10_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            b.deposit(now);
            requests += 1;
            // Every request fails and wants up to 3 retries.
            for _ in 0..3 {
                if b.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        let cap = (0.2 * requests as f64 + 10.0) as u64;
        assert!(
            retries <= cap,
            "{retries} retries for {requests} requests (cap {cap})"
        );
        assert!(
            retries >= cap - 2,
            "the budget is usable: {retries} of {cap}"
        );
        assert!(retries < requests, "retries did not multiply the load");
    }

    #[test]
    fn budget_refills_after_the_window() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.0, 2, 1_000), t0);
        assert!(b.try_withdraw(t0));
        assert!(b.try_withdraw(t0));
        assert!(!b.try_withdraw(t0), "reserve of 2 spent");
        assert!(!b.try_withdraw(t0 + Duration::from_millis(900)));
        assert!(
            b.try_withdraw(t0 + Duration::from_millis(1_100)),
            "withdrawals expired, budget refilled"
        );
    }

    #[test]
    fn deposits_earn_retries() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.5, 0, 10_000), t0);
        assert!(!b.try_withdraw(t0), "no reserve, no requests");
        for _ in 0..4 {
            b.deposit(t0);
        }
        assert!(b.try_withdraw(t0) && b.try_withdraw(t0));
        assert!(!b.try_withdraw(t0));
    }
}
