//! The circuit breaker of one cluster (or subset): Istio's `connectionPool` limits enforced with
//! atomic counters and RAII permits. Acquiring never waits: it returns a [`Permit`] that gives the
//! slot back when dropped, or an [`Overflow`] naming the limit, at once.
//!
//! Invariant: a counter never exceeds its limit because of this code (acquire is a
//! compare-and-swap that only increments below the limit), and every increment is undone by
//! exactly one `Drop`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jalin_xds::model::traffic::{ConcurrencyRetryBudget, ConnectionPool, UNLIMITED};

use crate::retry::WindowedCounter;

/// Response header naming the limit that overflowed.
pub const OVERFLOW_HEADER: &str = "x-jalin-overflow";
/// Counter incremented on every overflow, labelled `cluster` and `limit`.
pub const OVERFLOW_METRIC: &str = "jalin_upstream_overflow_total";

/// Which connection-pool limit refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Overflow {
    /// `tcp.maxConnections`.
    #[error("connection pool overflow: maxConnections reached")]
    Connections,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection.
    #[error("connection pool overflow: http1MaxPendingRequests reached")]
    Pending,
    /// `http.http2MaxRequests`: concurrent requests.
    #[error("connection pool overflow: http2MaxRequests reached")]
    Requests,
    /// `http.maxRetries` or the retry budget: concurrent retries.
    #[error("connection pool overflow: maxRetries (or the retry budget) reached")]
    Retries,
}

impl Overflow {
    /// Stable label for `x-jalin-overflow` and the metric: the Istio field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "maxConnections",
            Self::Pending => "http1MaxPendingRequests",
            Self::Requests => "http2MaxRequests",
            Self::Retries => "maxRetries",
        }
    }
}

/// The limits in force; `UNLIMITED` (`u32::MAX`) means no limit, Istio's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    /// When set, replaces `max_retries` (Envoy: a retry budget overrides `max_retries`).
    pub retry_budget: Option<ConcurrencyRetryBudget>,
}

impl Limits {
    /// The limits of a `connectionPool`, with an optional DestinationRule `retryBudget`.
    pub fn from_pool(pool: &ConnectionPool, retry_budget: Option<&ConcurrencyRetryBudget>) -> Self {
        Self {
            max_connections: pool.max_connections,
            max_pending: pool.http1_max_pending_requests,
            max_requests: pool.http2_max_requests,
            max_requests_per_connection: pool.max_requests_per_connection,
            max_retries: pool.max_retries,
            retry_budget: retry_budget.cloned(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_pool(&ConnectionPool::default(), None)
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// The breaker of one cluster; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct Breaker {
    cluster: Arc<str>,
    limits: Arc<Limits>,
    counters: Arc<Counters>,
    /// Requests started within `budgetInterval`, when the retry budget has one.
    started: Option<Arc<WindowedCounter>>,
}

/// A held slot; dropping it releases the slot.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub struct Permit {
    counters: Arc<Counters>,
    kind: Overflow,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let c = match self.kind {
            Overflow::Connections => &self.counters.connections,
            Overflow::Pending => &self.counters.pending,
            Overflow::Requests => &self.counters.requests,
            Overflow::Retries => &self.counters.retries,
        };
        c.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Permit {
    /// Which limit this permit counts against.
    pub fn kind(&self) -> Overflow {
        self.kind
    }
}

impl Breaker {
    /// A breaker with fresh counters.
    pub fn new(cluster: &str, limits: Limits, now: Instant) -> Self {
        let started = limits
            .retry_budget
            .as_ref()
            .and_then(|b| b.budget_interval_ms)
            .filter(|ms| *ms > 0)
            .map(|ms| Arc::new(WindowedCounter::new(Duration::from_millis(ms), now)));
        Self {
            cluster: cluster.into(),
            limits: Arc::new(limits),
            counters: Arc::default(),
            started,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A slot for a new upstream connection.
    pub fn try_connection(&self) -> Result<Permit, Overflow> {
        self.acquire(Overflow::Connections, self.limits.max_connections)
    }

    /// A slot for a request waiting for a connection (HTTP/1.1 pool exhausted).
    pub fn try_pending(&self) -> Result<Permit, Overflow> {
        self.acquire(Overflow::Pending, self.limits.max_pending)
    }

    /// A slot for an active request started at `now`.
    pub fn try_request(&self, now: Instant) -> Result<Permit, Overflow> {
        let permit = self.acquire(Overflow::Requests, self.limits.max_requests)?;
        if let Some(started) = &self.started {
            started.add(now, 1);
        }
        Ok(permit)
    }

    /// A slot for a retry: `maxRetries`, or the retry budget when one is configured — at most
    /// `percent` % of active plus pending requests (or, with `budgetInterval`, of the requests
    /// started within it), never fewer than `min_retry_concurrency`.
    pub fn try_retry(&self, now: Instant) -> Result<Permit, Overflow> {
        let limit = match &self.limits.retry_budget {
            None => self.limits.max_retries,
            Some(b) => {
                let base = match &self.started {
                    Some(started) => u32::try_from(started.sum(now)).unwrap_or(u32::MAX),
                    None => self
                        .active_requests()
                        .saturating_add(self.pending_requests()),
                };
                crate::retry::concurrency_limit(b, base)
            }
        };
        self.acquire(Overflow::Retries, limit)
    }

    /// True when a connection that has served `served` requests must not take another one
    /// (`maxRequestsPerConnection`; 0 is unlimited).
    pub fn connection_exhausted(&self, served: u32) -> bool {
        let max = self.limits.max_requests_per_connection;
        max != 0 && served >= max
    }

    pub fn active_connections(&self) -> u32 {
        self.counters.connections.load(Ordering::Acquire)
    }

    pub fn pending_requests(&self) -> u32 {
        self.counters.pending.load(Ordering::Acquire)
    }

    pub fn active_requests(&self) -> u32 {
        self.counters.requests.load(Ordering::Acquire)
    }

    pub fn active_retries(&self) -> u32 {
        self.counters.retries.load(Ordering::Acquire)
    }

    fn acquire(&self, kind: Overflow, limit: u32) -> Result<Permit, Overflow> {
        let counter = match kind {
            Overflow::Connections => &self.counters.connections,
            Overflow::Pending => &self.counters.pending,
            Overflow::Requests => &self.counters.requests,
            Overflow::Retries => &self.counters.retries,
        };
        let taken = if limit == UNLIMITED {
            counter.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
        };
        if taken {
            Ok(Permit {
                counters: Arc::clone(&self.counters),
                kind,
            })
        } else {
            metrics::counter!(OVERFLOW_METRIC, "cluster" => self.cluster.to_string(), "limit" => kind.as_str()).increment(1);
            Err(kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        // The breaker without `budgetInterval` ignores time; any instant will do.
        Instant::now()
    }

    fn limits(conn: u32, pending: u32, req: u32, retries: u32) -> Limits {
        Limits {
            max_connections: conn,
            max_pending: pending,
            max_requests: req,
            max_requests_per_connection: 5,
            max_retries: retries,
            retry_budget: None,
        }
    }

    #[test]
    fn each_limit_overflows_at_once_and_releases_on_drop() {
        let b = Breaker::new("child-profile-service|emergency", limits(2, 1, 3, 1), now());
        let c1 = b.try_connection().unwrap();
        let _c2 = b.try_connection().unwrap();
        assert_eq!(b.try_connection().unwrap_err(), Overflow::Connections);
        drop(c1);
        assert!(b.try_connection().is_ok(), "slot given back on drop");

        let _p = b.try_pending().unwrap();
        assert_eq!(b.try_pending().unwrap_err(), Overflow::Pending);

        let reqs: Vec<_> = (0..3).map(|_| b.try_request(now()).unwrap()).collect();
        assert_eq!(b.try_request(now()).unwrap_err(), Overflow::Requests);
        assert_eq!(b.active_requests(), 3);
        drop(reqs);
        assert_eq!(b.active_requests(), 0);

        let r = b.try_retry(now()).unwrap();
        assert_eq!(r.kind(), Overflow::Retries);
        assert_eq!(b.try_retry(now()).unwrap_err(), Overflow::Retries);
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(Overflow::Connections.as_str(), "maxConnections");
        assert_eq!(Overflow::Pending.as_str(), "http1MaxPendingRequests");
        assert_eq!(Overflow::Requests.as_str(), "http2MaxRequests");
        assert_eq!(Overflow::Retries.as_str(), "maxRetries");
        assert_eq!(OVERFLOW_HEADER, "x-jalin-overflow");
    }

    #[test]
    fn defaults_are_effectively_unlimited() {
        let b = Breaker::new("c", Limits::default(), now());
        let permits: Vec<_> = (0..10_000).map(|_| b.try_request(now()).unwrap()).collect();
        assert_eq!(b.active_requests(), 10_000);
        assert!(!b.connection_exhausted(1_000_000));
        drop(permits);
        assert_eq!(b.active_requests(), 0);
    }

    #[test]
    fn max_requests_per_connection() {
        let b = Breaker::new("c", limits(1, 1, 1, 1), now());
        assert!(!b.connection_exhausted(4));
        assert!(b.connection_exhausted(5));
    }

    #[test]
    fn retry_budget_tracks_active_requests() {
        let mut l = limits(UNLIMITED, UNLIMITED, UNLIMITED, 0);
        l.retry_budget = Some(ConcurrencyRetryBudget {
            percent: 20.0,
            min_retry_concurrency: 3,
            budget_interval_ms: None,
        });
        let b = Breaker::new("c", l, now());
        let floor: Vec<_> = (0..3).map(|_| b.try_retry(now()).unwrap()).collect();
        assert_eq!(
            b.try_retry(now()).unwrap_err(),
            Overflow::Retries,
            "min concurrency 3 with no traffic"
        );
        let reqs: Vec<_> = (0..50).map(|_| b.try_request(now()).unwrap()).collect();
        let more: Vec<_> = (0..7).map(|_| b.try_retry(now()).unwrap()).collect();
        assert_eq!(
            b.try_retry(now()).unwrap_err(),
            Overflow::Retries,
            "20 % of 50 active = 10"
        );
        drop((floor, more, reqs));
        assert_eq!(b.active_retries(), 0);
    }

    #[test]
    fn retry_budget_interval_counts_recent_requests() {
        let t0 = Instant::now();
        let mut l = limits(UNLIMITED, UNLIMITED, UNLIMITED, 0);
        l.retry_budget = Some(ConcurrencyRetryBudget {
            percent: 10.0,
            min_retry_concurrency: 1,
            budget_interval_ms: Some(1_000),
        });
        let b = Breaker::new("c", l, t0);
        for _ in 0..40 {
            drop(b.try_request(t0).unwrap());
        }
        let held: Vec<_> = (0..4).map(|_| b.try_retry(t0).unwrap()).collect();
        assert_eq!(
            b.try_retry(t0).unwrap_err(),
            Overflow::Retries,
            "10 % of 40 recent requests"
        );
        drop(held);
        let later = t0 + Duration::from_secs(2);
        let one = b.try_retry(later).unwrap();
        assert_eq!(
            b.try_retry(later).unwrap_err(),
            Overflow::Retries,
            "window expired: min concurrency only"
        );
        drop(one);
    }

    #[test]
    fn concurrent_acquire_never_exceeds_the_limit() {
        let b = Breaker::new("c", limits(UNLIMITED, UNLIMITED, 8, 0), now());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        if let Ok(p) = b.try_request(now()) {
                            assert!(b.active_requests() <= 8);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.active_requests(), 0);
    }
}
