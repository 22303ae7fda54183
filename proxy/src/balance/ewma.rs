//! Peak-EWMA latency estimate (Linkerd's default balancer load): an observation above the
//! estimate replaces it at once (peak), one below moves it by an exponentially time-weighted
//! average; with no observations the estimate decays towards zero, so a once-slow endpoint gets
//! tried again. The cost multiplies the estimate by the requests in flight plus one.

use std::time::{Duration, Instant};

/// Linkerd's decay window: 10 s.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Linkerd's initial RTT estimate for an endpoint with no observations: 30 ms.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// One endpoint's latency estimate.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// A new estimate of `initial`, as of `now`.
    pub fn new(initial: Duration, decay: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: initial.as_nanos() as f64,
            updated: now,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
        (-elapsed / self.decay_ns).exp()
    }

    /// Records an observed round-trip time.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let w = self.weight(now);
            self.estimate_ns = self.estimate_ns * w + rtt * (1.0 - w);
        }
        self.updated = now;
    }

    /// The estimate at `now`, decayed since the last observation.
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos((self.estimate_ns * self.weight(now)) as u64)
    }

    /// Load cost: decayed estimate × (in-flight + 1).
    pub fn cost(&self, in_flight: u32, now: Instant) -> f64 {
        self.estimate_ns * self.weight(now) * (f64::from(in_flight) + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_then_ewma_then_decay() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(DEFAULT_RTT, DEFAULT_DECAY, t0);
        assert_eq!(e.estimate(t0), DEFAULT_RTT);
        e.observe(Duration::from_millis(200), t0);
        assert_eq!(
            e.estimate(t0),
            Duration::from_millis(200),
            "peak taken at once"
        );
        e.observe(Duration::from_millis(10), t0 + Duration::from_secs(10));
        let est = e.estimate(t0 + Duration::from_secs(10)).as_millis();
        // w = e^-1 ≈ 0.368: 200 × 0.368 + 10 × 0.632 ≈ 80 ms.
        assert!((75..=85).contains(&est), "{est}");
        let later = e.estimate(t0 + Duration::from_secs(60)).as_millis();
        assert!(later < 1, "decays towards zero when idle: {later}");
        assert!(
            e.cost(3, t0 + Duration::from_secs(10)) > 3.9 * e.cost(0, t0 + Duration::from_secs(10))
        );
    }
}
