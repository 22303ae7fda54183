//! Premature stream resets per downstream connection: Envoy's heuristic against HTTP/2 "rapid
//! reset" attackers that pace their resets under h2's own flood limits.
//!
//! A stream is *premature* when it ended before the proxy produced its response head (the
//! client reset it, so the service future was dropped) and it lived no longer than
//! [`PrematureResetConfig::min_stream_lifetime`]. A stream that got a response head, or that the
//! client cancelled after waiting longer than that, is an ordinary stream.
//!
//! The verdict follows Envoy's `premature_reset_total_stream_count` semantics: once the
//! connection has ended `total_stream_count` streams, it is closed when more than half of all its
//! ended streams were premature; before that, it is closed early as soon as the premature ones
//! alone reach half of `total_stream_count` (Envoy's early check: waiting for the count would only
//! let the attacker reset more). Counts are per connection and never decay, as in Envoy.
//!
//! Invariants: [`PrematureResets::stream_ended`] answers [`Verdict::Close`] at most once per
//! connection; it does no I/O and reads no clock (`now` and the stream's start are inputs).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::limits::{PREMATURE_RESET_MIN_STREAM_LIFETIME, PREMATURE_RESET_TOTAL_STREAM_COUNT};

/// Connections closed because too many of their streams were reset prematurely, by listener.
pub const PREMATURE_RESET_CLOSED: &str = "jalin_downstream_premature_reset_closed_total";

/// The heuristic's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrematureResetConfig {
    /// Ended streams after which the premature share is judged (Envoy: 500).
    pub total_stream_count: u64,
    /// A stream reset after living longer than this is not premature (Envoy: 1 s).
    pub min_stream_lifetime: Duration,
}

impl Default for PrematureResetConfig {
    fn default() -> Self {
        Self {
            total_stream_count: PREMATURE_RESET_TOTAL_STREAM_COUNT,
            min_stream_lifetime: PREMATURE_RESET_MIN_STREAM_LIFETIME,
        }
    }
}

/// What the connection should do after a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Too many premature resets: send GOAWAY and close the connection.
    Close,
}

/// The counts of one connection.
#[derive(Debug, Clone)]
pub struct PrematureResets {
    config: PrematureResetConfig,
    /// Streams that ended, with or without a response.
    total: u64,
    premature: u64,
    closed: bool,
}

impl PrematureResets {
    pub fn new(config: PrematureResetConfig) -> Self {
        Self {
            config,
            total: 0,
            premature: 0,
            closed: false,
        }
    }

    /// Records a stream that started at `started` and ended at `now`, `responded` when the
    /// proxy had produced its response head by then.
    pub fn stream_ended(&mut self, started: Instant, responded: bool, now: Instant) -> Verdict {
        self.total = self.total.saturating_add(1);
        let lifetime = now.saturating_duration_since(started);
        if !responded && lifetime <= self.config.min_stream_lifetime {
            self.premature = self.premature.saturating_add(1);
        }
        if self.closed || !self.over_limit() {
            return Verdict::Keep;
        }
        self.closed = true;
        Verdict::Close
    }

    fn over_limit(&self) -> bool {
        let limit = self.config.total_stream_count;
        let doubled = self.premature.saturating_mul(2);
        if self.total < limit {
            doubled >= limit
        } else {
            doubled > self.total
        }
    }

    /// Streams ended so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Premature resets so far.
    pub fn premature(&self) -> u64 {
        self.premature
    }
}

/// The per-connection tracker shared by the connection's stream futures: counts streams and
/// cancels [`ConnTracker::close_requested`] when the verdict is [`Verdict::Close`].
#[derive(Debug)]
pub struct ConnTracker {
    counts: Mutex<PrematureResets>,
    close: CancellationToken,
}

impl ConnTracker {
    pub fn new(config: PrematureResetConfig) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(PrematureResets::new(config)),
            close: CancellationToken::new(),
        })
    }

    /// A guard for a stream that starts now; see [`StreamGuard`].
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        StreamGuard {
            tracker: self.clone(),
            started: Instant::now(),
            responded: false,
        }
    }

    /// Cancelled once the connection should be closed.
    pub fn close_requested(&self) -> &CancellationToken {
        &self.close
    }

    /// `(total, premature)` streams so far.
    pub fn counts(&self) -> (u64, u64) {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (c.total(), c.premature())
    }

    fn ended(&self, started: Instant, responded: bool) {
        let verdict = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stream_ended(started, responded, Instant::now());
        if verdict == Verdict::Close {
            self.close.cancel();
        }
    }
}

/// Records one stream when dropped: premature unless [`StreamGuard::responded`] was called, or
/// the stream outlived the minimum lifetime. Held by the stream's service future, so a client
/// reset (which drops that future) records it.
#[derive(Debug)]
pub struct StreamGuard {
    tracker: Arc<ConnTracker>,
    started: Instant,
    responded: bool,
}

impl StreamGuard {
    /// The response head was produced.
    pub fn responded(mut self) {
        self.responded = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.tracker.ended(self.started, self.responded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn counts() -> PrematureResets {
        PrematureResets::new(PrematureResetConfig::default())
    }

    /// Ends `n` streams of `lifetime`, returning the 1-based index of the one that closed.
    fn run(r: &mut PrematureResets, n: u64, responded: bool, lifetime: Duration) -> Option<u64> {
        let t0 = Instant::now();
        let mut closed_at = None;
        for i in 1..=n {
            if r.stream_ended(t0, responded, t0 + lifetime) == Verdict::Close {
                assert!(closed_at.is_none(), "Close is answered once");
                closed_at = Some(i);
            }
        }
        closed_at
    }

    #[test]
    fn defaults_are_envoys() {
        let c = PrematureResetConfig::default();
        assert_eq!(c.total_stream_count, 500);
        assert_eq!(c.min_stream_lifetime, Duration::from_secs(1));
    }

    #[test]
    fn only_resets_close_early_at_half_the_count() {
        let mut r = counts();
        assert_eq!(run(&mut r, 1000, false, MS), Some(250));
        assert_eq!((r.total(), r.premature()), (1000, 1000));
    }

    #[test]
    fn responded_streams_never_close() {
        let mut r = counts();
        assert_eq!(run(&mut r, 100_000, true, MS), None);
        assert_eq!(r.premature(), 0);
    }

    #[test]
    fn a_reset_after_the_response_head_is_not_premature() {
        let mut r = counts();
        assert_eq!(run(&mut r, 1000, true, Duration::ZERO), None);
    }

    #[test]
    fn resets_after_the_min_lifetime_are_not_premature() {
        let mut r = counts();
        assert_eq!(run(&mut r, 1000, false, Duration::from_secs(1) + MS), None);
        assert_eq!(r.premature(), 0);
        // At exactly the minimum lifetime it still counts (Envoy: lifetime > min is ordinary).
        let mut r = counts();
        assert_eq!(run(&mut r, 250, false, Duration::from_secs(1)), Some(250));
    }

    #[test]
    fn after_the_count_half_premature_closes() {
        let mut r = counts();
        // 400 good streams, then resets: closed when premature reach half of the total.
        assert_eq!(run(&mut r, 400, true, MS), None);
        // Before 500 ended streams, 249 resets keep the connection (early check needs 250)...
        assert_eq!(run(&mut r, 100, false, MS), None);
        assert_eq!(r.total(), 500);
        // ...at 500 ended, 100 of 500 premature is fine; k more resets close once
        // 2 * (100 + k) > 500 + k, that is at k = 301.
        assert_eq!(run(&mut r, 400, false, MS), Some(301));
        assert_eq!((r.total(), r.premature()), (900, 500));
    }

    #[test]
    fn a_quarter_cancelled_is_a_normal_client() {
        let mut r = counts();
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let responded = i % 4 != 0;
            assert_eq!(r.stream_ended(t0, responded, t0 + MS), Verdict::Keep, "{i}");
        }
        assert_eq!(r.premature(), 25_000);
    }

    #[test]
    fn just_under_half_keeps_the_connection() {
        let mut r = counts();
        let t0 = Instant::now();
        // Alternate good and premature, good first: premature never exceed half of the total.
        for i in 0..10_000u32 {
            let responded = i % 2 == 0;
            assert_eq!(r.stream_ended(t0, responded, t0 + MS), Verdict::Keep, "{i}");
        }
        assert_eq!((r.total(), r.premature()), (10_000, 5_000));
        // One more premature makes it more than half: closed.
        assert_eq!(r.stream_ended(t0, false, t0 + MS), Verdict::Close);
    }

    #[test]
    fn guards_record_and_cancel() {
        let t = ConnTracker::new(PrematureResetConfig {
            total_stream_count: 4,
            min_stream_lifetime: Duration::from_secs(60),
        });
        t.stream().responded();
        assert_eq!(t.counts(), (1, 0));
        drop(t.stream());
        assert!(!t.close_requested().is_cancelled());
        drop(t.stream());
        assert_eq!(t.counts(), (3, 2));
        assert!(t.close_requested().is_cancelled(), "2 of a count of 4");
    }
}
