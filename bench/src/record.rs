//! Recording outcomes: HDR histograms of latency and service time, status and error counts.
//!
//! Latency is measured from a request's *intended* start (its slot in the open-loop schedule), so time
//! a request spent waiting behind a slow one is counted: this is the correction for coordinated
//! omission. Service time is measured from the moment the request was actually handed to the
//! connection; the gap between the two shows how far behind schedule the generator ran.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks: one hour, in nanoseconds. Larger values saturate to it.
const HIGHEST_TRACKABLE_NANOS: u64 = 3_600_000_000_000;
/// Three significant digits: 0.1 % value resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Distinct error messages kept per recorder; further distinct ones are counted under `OTHER_ERRORS`.
const MAX_ERROR_KINDS: usize = 32;
const OTHER_ERRORS: &str = "other errors";

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response (head and the whole body) arrived.
    Response {
        /// The HTTP status code.
        status: u16,
        /// Bytes of response body received.
        body_bytes: u64,
    },
    /// No complete response: connect, TLS, protocol, I/O failure or timeout. The text is short and
    /// stable enough to count by (`"connect: Connection refused (os error 111)"`, `"timeout"`).
    Error(String),
}

/// Timestamps of one request, as offsets from any common origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the schedule wanted the request to start.
    pub intended: Duration,
    /// When it was handed to the connection.
    pub sent: Duration,
    /// When its response was complete (or it failed).
    pub done: Duration,
}

/// Counts and histograms for one target (merged across connections).
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    send_delay: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    unsent: u64,
    body_bytes: u64,
    statuses: BTreeMap<u16, u64>,
    error_kinds: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    // Invariant: constant bounds 1 ≤ 3.6e12 and 3 significant digits are always valid.
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_NANOS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            service: new_histogram(),
            send_delay: new_histogram(),
            ok: 0,
            non_2xx: 0,
            errors: 0,
            unsent: 0,
            body_bytes: 0,
            statuses: BTreeMap::new(),
            error_kinds: BTreeMap::new(),
        }
    }

    /// Records one finished request. Only 2xx responses enter the latency histograms; non-2xx
    /// responses and errors are counted separately.
    pub fn record(&mut self, outcome: &Outcome, timing: Timing) {
        match outcome {
            Outcome::Response { status, body_bytes } => {
                *self.statuses.entry(*status).or_insert(0) += 1;
                self.body_bytes = self.body_bytes.saturating_add(*body_bytes);
                if (200..300).contains(status) {
                    self.ok += 1;
                    let latency = timing.done.saturating_sub(timing.intended);
                    let service = timing.done.saturating_sub(timing.sent);
                    let delay = timing.sent.saturating_sub(timing.intended);
                    self.latency.saturating_record(nanos(latency));
                    self.service.saturating_record(nanos(service));
                    self.send_delay.saturating_record(nanos(delay));
                } else {
                    self.non_2xx += 1;
                }
            }
            Outcome::Error(kind) => {
                self.errors += 1;
                let key = if self.error_kinds.contains_key(kind)
                    || self.error_kinds.len() < MAX_ERROR_KINDS
                {
                    kind.clone()
                } else {
                    OTHER_ERRORS.to_owned()
                };
                *self.error_kinds.entry(key).or_insert(0) += 1;
            }
        }
    }

    /// Counts `n` scheduled requests that were never sent because the run's deadline passed.
    pub fn record_unsent(&mut self, n: u64) {
        self.unsent = self.unsent.saturating_add(n);
    }

    /// Adds another recorder's counts and histograms into this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have identical bounds, so `add` cannot fail; saturate defensively anyway.
        if self.latency.add(&other.latency).is_err() {
            self.latency.saturating_record(HIGHEST_TRACKABLE_NANOS);
        }
        if self.service.add(&other.service).is_err() {
            self.service.saturating_record(HIGHEST_TRACKABLE_NANOS);
        }
        if self.send_delay.add(&other.send_delay).is_err() {
            self.send_delay.saturating_record(HIGHEST_TRACKABLE_NANOS);
        }
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.unsent += other.unsent;
        self.body_bytes = self.body_bytes.saturating_add(other.body_bytes);
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        for (kind, n) in &other.error_kinds {
            let key = if self.error_kinds.contains_key(kind)
                || self.error_kinds.len() < MAX_ERROR_KINDS
            {
                kind.clone()
            } else {
                OTHER_ERRORS.to_owned()
            };
            *self.error_kinds.entry(key).or_insert(0) += n;
        }
    }

    /// Requests that completed with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Requests that completed with a non-2xx status.
    pub fn non_2xx(&self) -> u64 {
        self.non_2xx
    }

    /// Requests that failed without a complete response.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Scheduled requests that were never sent.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// Every request accounted for: ok + non-2xx + errors + unsent.
    pub fn accounted(&self) -> u64 {
        self.ok + self.non_2xx + self.errors + self.unsent
    }

    /// Latency from the intended start (corrected for coordinated omission).
    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// Service time from the actual send.
    pub fn service(&self) -> &Histogram<u64> {
        &self.service
    }

    /// How late requests left: from the intended start to the actual send.
    pub fn send_delay(&self) -> &Histogram<u64> {
        &self.send_delay
    }

    /// The statistics of this recorder, for reports. `elapsed` is the measured wall time, used for
    /// the achieved rate.
    pub fn stats(&self, elapsed: Duration) -> TargetStats {
        let secs = elapsed.as_secs_f64();
        let completed = self.ok + self.non_2xx;
        TargetStats {
            requests: self.accounted(),
            ok: self.ok,
            non_2xx: self.non_2xx,
            errors: self.errors,
            unsent: self.unsent,
            statuses: self
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            error_kinds: self.error_kinds.clone(),
            body_bytes: self.body_bytes,
            elapsed_s: secs,
            achieved_rps: if secs > 0.0 {
                completed as f64 / secs
            } else {
                0.0
            },
            latency_us: Percentiles::of(&self.latency),
            service_time_us: Percentiles::of(&self.service),
            send_delay_us: Percentiles::of(&self.send_delay),
        }
    }
}

/// Summary percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

impl Percentiles {
    /// The percentiles of a nanosecond histogram, converted to microseconds. All zero when empty.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                min: 0.0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Self {
            count: h.len(),
            min: micros(h.min()),
            mean: h.mean() / 1_000.0,
            p50: micros(h.value_at_quantile(0.5)),
            p90: micros(h.value_at_quantile(0.9)),
            p99: micros(h.value_at_quantile(0.99)),
            p999: micros(h.value_at_quantile(0.999)),
            max: micros(h.max()),
        }
    }

    /// `self - base` at each percentile (and for the mean): the latency a hop adds.
    pub fn minus(&self, base: &Percentiles) -> Added {
        Added {
            mean: self.mean - base.mean,
            p50: self.p50 - base.p50,
            p90: self.p90 - base.p90,
            p99: self.p99 - base.p99,
            p999: self.p999 - base.p999,
            max: self.max - base.max,
        }
    }
}

/// Latency added at each percentile, in microseconds (negative when the second target was faster).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Added {
    /// Difference of the means.
    pub mean: f64,
    /// Difference of the medians.
    pub p50: f64,
    /// Difference of the 90th percentiles.
    pub p90: f64,
    /// Difference of the 99th percentiles.
    pub p99: f64,
    /// Difference of the 99.9th percentiles.
    pub p999: f64,
    /// Difference of the maxima.
    pub max: f64,
}

/// Everything measured against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    /// Measured requests accounted for (ok + non_2xx + errors + unsent); warm-up excluded.
    pub requests: u64,
    /// Completed with a 2xx status: these alone are in the latency histograms.
    pub ok: u64,
    /// Completed with another status.
    pub non_2xx: u64,
    /// Failed without a complete response (connect, TLS, protocol, I/O, timeout).
    pub errors: u64,
    /// Scheduled but never sent before the run's hard deadline.
    pub unsent: u64,
    /// Responses per status code.
    pub statuses: BTreeMap<String, u64>,
    /// Errors per kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Response body bytes received.
    pub body_bytes: u64,
    /// Measured wall time in seconds.
    pub elapsed_s: f64,
    /// Completed responses per second of measured time.
    pub achieved_rps: f64,
    /// Latency from the intended start, corrected for coordinated omission (µs).
    pub latency_us: Percentiles,
    /// Service time from the actual send (µs).
    pub service_time_us: Percentiles,
    /// From the intended start to the actual send (µs): the generator running late (CPU
    /// contention) plus, on HTTP/1.1, waiting behind a slow response on the same connection.
    pub send_delay_us: Percentiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(intended_ms: u64, sent_ms: u64, done_ms: u64) -> Timing {
        Timing {
            intended: Duration::from_millis(intended_ms),
            sent: Duration::from_millis(sent_ms),
            done: Duration::from_millis(done_ms),
        }
    }

    fn ok() -> Outcome {
        Outcome::Response {
            status: 200,
            body_bytes: 10,
        }
    }

    #[test]
    fn latency_counts_from_the_intended_start_and_service_from_the_send() {
        let mut r = Recorder::new();
        r.record(&ok(), at(0, 40, 50));
        assert_eq!(r.latency().max() / 1_000_000, 50);
        assert_eq!(r.service().max() / 1_000_000, 10);
        assert_eq!(r.send_delay().max() / 1_000_000, 40);
    }

    #[test]
    fn non_2xx_and_errors_are_counted_apart_from_latency() {
        let mut r = Recorder::new();
        r.record(&ok(), at(0, 0, 1));
        r.record(
            &Outcome::Response {
                status: 503,
                body_bytes: 0,
            },
            at(1, 1, 2),
        );
        r.record(&Outcome::Error("timeout".into()), at(2, 2, 3));
        r.record(&Outcome::Error("timeout".into()), at(3, 3, 4));
        r.record_unsent(5);
        assert_eq!((r.ok(), r.non_2xx(), r.errors(), r.unsent()), (1, 1, 2, 5));
        assert_eq!(r.latency().len(), 1);
        let stats = r.stats(Duration::from_secs(1));
        assert_eq!(stats.requests, 9);
        assert_eq!(stats.error_kinds["timeout"], 2);
        assert_eq!(stats.statuses["503"], 1);
        assert!((stats.achieved_rps - 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut r = Recorder::new();
        for i in 0..100 {
            r.record(&Outcome::Error(format!("e{i}")), at(0, 0, 0));
        }
        let stats = r.stats(Duration::from_secs(1));
        assert_eq!(stats.error_kinds.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(
            stats.error_kinds[OTHER_ERRORS],
            100 - MAX_ERROR_KINDS as u64
        );
        assert_eq!(stats.errors, 100);
    }

    #[test]
    fn merge_adds_histograms_and_counts() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record(&ok(), at(0, 0, 1));
        b.record(&ok(), at(0, 0, 3));
        b.record(&Outcome::Error("x".into()), at(0, 0, 3));
        a.merge(&b);
        assert_eq!(a.latency().len(), 2);
        assert_eq!(a.errors(), 1);
        assert_eq!(a.latency().max() / 1_000_000, 3);
    }

    #[test]
    fn added_latency_is_the_difference_at_each_percentile() {
        let mut direct = Recorder::new();
        let mut via = Recorder::new();
        for ms in 1..=100 {
            direct.record(&ok(), at(0, 0, ms));
            via.record(&ok(), at(0, 0, ms + 2));
        }
        let d = Percentiles::of(direct.latency());
        let v = Percentiles::of(via.latency());
        let added = v.minus(&d);
        // 2 ms added everywhere, within the histogram's 0.1 % resolution.
        for x in [added.p50, added.p90, added.p99, added.max, added.mean] {
            assert!((x - 2_000.0).abs() < 150.0, "{x}");
        }
    }
}
