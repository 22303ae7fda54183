//! Open-loop arrival schedule: when each request is intended to start and which connection carries it.
//!
//! Sans-I/O: the schedule only computes offsets from a start instant. Offsets use integer arithmetic
//! on the rate in requests per 1,000 s, so request `i` is intended at exactly `i / rate` seconds (floored
//! to the nanosecond) no matter how long the run is: there is no accumulated drift.
//!
//! Invariants:
//! - request `i` is carried by connection `i % connections` (fixed round-robin);
//! - the schedule over a span `S` holds every `i` with `offset(i) < S`, i.e. `ceil(S × rate)` requests.

use std::time::Duration;

/// Nanoseconds per second times the rate's fixed-point scale (1,000).
const NANOS_PER_SECOND_SCALED: u128 = 1_000_000_000 * RATE_SCALE as u128;
/// The rate is stored in requests per `RATE_SCALE` seconds: 0.001 req/s resolution.
const RATE_SCALE: u64 = 1_000;

/// Why a schedule could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    /// The rate is not a finite number ≥ 0.001 req/s.
    #[error(
        "rate {0} req/s is invalid: expected a number ≥ 0.001 and ≤ 10000000 (e.g. --rate 1000)"
    )]
    Rate(f64),
    /// Zero connections were asked for.
    #[error("connections must be ≥ 1 (e.g. --connections 16)")]
    Connections,
}

/// A constant arrival rate in requests per second, stored as an integer number of requests per 1,000 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_kilosecond: u64,
}

impl Rate {
    /// The largest rate the generator accepts: far above what one machine can send.
    pub const MAX_PER_SECOND: f64 = 10_000_000.0;

    /// A rate of `per_second` requests per second (fractional rates allowed down to 0.001).
    pub fn per_second(per_second: f64) -> Result<Self, ScheduleError> {
        if !per_second.is_finite() || !(0.001..=Self::MAX_PER_SECOND).contains(&per_second) {
            return Err(ScheduleError::Rate(per_second));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // In range by the check above: 1 ≤ value ≤ 1e10, which fits u64 exactly.
        let per_kilosecond = (per_second * RATE_SCALE as f64).round() as u64;
        Ok(Self { per_kilosecond })
    }

    /// Requests per second as a float (for reports).
    pub fn as_f64(self) -> f64 {
        self.per_kilosecond as f64 / RATE_SCALE as f64
    }

    /// The offset of request `i` from the start of the schedule.
    pub fn offset(self, i: u64) -> Duration {
        let nanos = u128::from(i) * NANOS_PER_SECOND_SCALED / u128::from(self.per_kilosecond);
        duration_from_nanos(nanos)
    }

    /// How many requests fall within `span`: the number of `i` with `offset(i) < span`.
    pub fn count_within(self, span: Duration) -> u64 {
        let scaled = span.as_nanos() * u128::from(self.per_kilosecond);
        let count = scaled.div_ceil(NANOS_PER_SECOND_SCALED);
        u64::try_from(count).unwrap_or(u64::MAX)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    #[allow(clippy::cast_possible_truncation)]
    // The remainder of a division by 1e9 is < 1e9 and fits u32.
    let sub = (nanos % 1_000_000_000) as u32;
    Duration::new(secs, sub)
}

/// The arrival schedule of one load phase: `total` requests at a constant rate over `connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    rate: Rate,
    connections: u64,
    /// Requests with an index below this are warm-up: sent on schedule but not recorded.
    warmup: u64,
    total: u64,
}

impl Schedule {
    /// The schedule for `warmup` then `measured` time at `rate`, spread over `connections`.
    pub fn new(
        rate: Rate,
        warmup: Duration,
        measured: Duration,
        connections: usize,
    ) -> Result<Self, ScheduleError> {
        if connections == 0 {
            return Err(ScheduleError::Connections);
        }
        let warm = rate.count_within(warmup);
        let total = rate.count_within(warmup.saturating_add(measured));
        Ok(Self {
            rate,
            connections: connections as u64,
            warmup: warm,
            total,
        })
    }

    /// The rate of this schedule.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Every request of the schedule, warm-up included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of measured (non-warm-up) requests.
    pub fn measured(&self) -> u64 {
        self.total - self.warmup
    }

    /// Whether request `i` is a warm-up request (sent, not recorded).
    pub fn is_warmup(&self, i: u64) -> bool {
        i < self.warmup
    }

    /// The intended start of request `i`, as an offset from the schedule's start.
    pub fn offset(&self, i: u64) -> Duration {
        self.rate.offset(i)
    }

    /// The connection that carries request `i`.
    pub fn connection_of(&self, i: u64) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        // The result is < connections, which came from a usize.
        let c = (i % self.connections) as usize;
        c
    }

    /// The requests connection `c` carries, in order: `c, c + n, c + 2n, …` below `total`.
    pub fn for_connection(&self, c: usize) -> impl Iterator<Item = u64> + Send + use<> {
        let step = self.connections;
        let total = self.total;
        let first = c as u64;
        (0..)
            .map(move |k: u64| first.saturating_add(k.saturating_mul(step)))
            .take_while(move |&i| i < total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_exact_multiples_of_the_interval() {
        let rate = Rate::per_second(1000.0).unwrap();
        assert_eq!(rate.offset(0), Duration::ZERO);
        assert_eq!(rate.offset(1), Duration::from_millis(1));
        assert_eq!(rate.offset(1_000), Duration::from_secs(1));
        // No drift after a day's worth of requests.
        assert_eq!(rate.offset(86_400_000), Duration::from_secs(86_400));
    }

    #[test]
    fn fractional_rates_floor_to_the_nanosecond() {
        let rate = Rate::per_second(3.0).unwrap();
        assert_eq!(rate.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(rate.offset(2), Duration::from_nanos(666_666_666));
        assert_eq!(rate.offset(3), Duration::from_secs(1));
        let rate = Rate::per_second(0.5).unwrap();
        assert_eq!(rate.offset(1), Duration::from_secs(2));
    }

    #[test]
    fn count_within_is_the_number_of_offsets_below_the_span() {
        let rate = Rate::per_second(1000.0).unwrap();
        assert_eq!(rate.count_within(Duration::ZERO), 0);
        assert_eq!(rate.count_within(Duration::from_secs(1)), 1000);
        // 1 ms + 1 ns covers offsets 0 and 1 ms.
        assert_eq!(rate.count_within(Duration::from_nanos(1_000_001)), 2);
        let rate = Rate::per_second(3.0).unwrap();
        assert_eq!(rate.count_within(Duration::from_secs(1)), 3);
        assert_eq!(rate.count_within(Duration::from_millis(1001)), 4);
        for i in 0..50 {
            let span = rate.offset(i) + Duration::from_nanos(1);
            assert_eq!(rate.count_within(span), i + 1, "span {span:?}");
            assert_eq!(
                rate.count_within(rate.offset(i)),
                i,
                "span {:?}",
                rate.offset(i)
            );
        }
    }

    #[test]
    fn invalid_rates_and_connections_are_rejected() {
        assert_eq!(Rate::per_second(0.0), Err(ScheduleError::Rate(0.0)));
        assert!(Rate::per_second(f64::NAN).is_err());
        assert!(Rate::per_second(-1.0).is_err());
        assert!(Rate::per_second(1e12).is_err());
        let rate = Rate::per_second(10.0).unwrap();
        assert_eq!(
            Schedule::new(rate, Duration::ZERO, Duration::from_secs(1), 0),
            Err(ScheduleError::Connections)
        );
    }

    #[test]
    fn requests_are_spread_round_robin_and_warmup_comes_first() {
        let rate = Rate::per_second(100.0).unwrap();
        let s = Schedule::new(
            rate,
            Duration::from_millis(50),
            Duration::from_millis(200),
            4,
        )
        .unwrap();
        assert_eq!(s.total(), 25);
        assert_eq!(s.measured(), 20);
        assert!(s.is_warmup(4));
        assert!(!s.is_warmup(5));
        let mut seen = Vec::new();
        for c in 0..4 {
            let mine: Vec<u64> = s.for_connection(c).collect();
            for pair in mine.windows(2) {
                assert_eq!(pair[1] - pair[0], 4);
            }
            for &i in &mine {
                assert_eq!(s.connection_of(i), c);
            }
            seen.extend(mine);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        // Each connection's requests are 40 ms apart.
        let c1: Vec<Duration> = s.for_connection(1).map(|i| s.offset(i)).collect();
        assert_eq!(c1[0], Duration::from_millis(10));
        assert_eq!(c1[1], Duration::from_millis(50));
    }
}
