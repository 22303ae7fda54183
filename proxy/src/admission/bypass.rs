//! The bounded, audited bypass: critical and emergency requests may pass a breaker limit or an
//! outlier ejection at most `max_per_window` times per window, and every bypass returns an audit
//! record for the caller to log and count. Standard traffic never bypasses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use jalin_xds::model::route::PriorityClass;
use jalin_xds::model::traffic::BypassPolicy;

use super::breaker::Overflow;

/// Counter incremented for every granted bypass, labelled `cluster` and `class`.
pub const BYPASS_METRIC: &str = "jalin_emergency_bypass_total";

/// What was bypassed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassKind {
    /// A connection-pool limit.
    Breaker(Overflow),
    /// An endpoint's outlier ejection.
    Outlier,
}

/// The audit record of one bypass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BypassAudit {
    pub at: Instant,
    pub cluster: String,
    pub class: PriorityClass,
    pub kind: BypassKind,
    /// Bypasses in the current window, this one included.
    pub used: u32,
    pub max_per_window: u32,
}

/// Why a bypass was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BypassDenied {
    #[error("only critical and emergency traffic may bypass a limit")]
    NotPriority,
    #[error("the bypass allowance for this window is spent")]
    Exhausted,
}

/// The bypass allowance of one cluster.
#[derive(Debug)]
pub struct BypassLimiter {
    cluster: String,
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl BypassLimiter {
    /// An allowance for `cluster` from its policy.
    pub fn new(cluster: &str, policy: &BypassPolicy) -> Self {
        Self {
            cluster: cluster.to_owned(),
            max: policy.max_per_window,
            window: Duration::from_millis(policy.window_ms),
            recent: VecDeque::with_capacity(
                usize::try_from(policy.max_per_window.min(1_024)).unwrap_or(0),
            ),
        }
    }

    /// Asks to bypass `kind` for a request of `class` at `now`.
    pub fn try_bypass(
        &mut self,
        class: PriorityClass,
        kind: BypassKind,
        now: Instant,
    ) -> Result<BypassAudit, BypassDenied> {
        if !class.is_priority() {
            return Err(BypassDenied::NotPriority);
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        let used = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if used >= self.max {
            return Err(BypassDenied::Exhausted);
        }
        self.recent.push_back(now);
        tracing::warn!(
            target: "jalin::audit",
            cluster = %self.cluster,
            class = class.as_str(),
            bypassed = ?kind,
            used = used + 1,
            max_per_window = self.max,
            "emergency bypass granted"
        );
        metrics::counter!(BYPASS_METRIC, "cluster" => self.cluster.clone(), "class" => class.as_str()).increment(1);
        Ok(BypassAudit {
            at: now,
            cluster: self.cluster.clone(),
            class,
            kind,
            used: used + 1,
            max_per_window: self.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_k_per_window_each_audited() {
        let t0 = Instant::now();
        let mut l = BypassLimiter::new(
            "emergency-response-service|critical",
            &BypassPolicy {
                max_per_window: 2,
                window_ms: 1_000,
            },
        );
        let kind = BypassKind::Breaker(Overflow::Requests);
        assert_eq!(
            l.try_bypass(PriorityClass::Standard, kind, t0),
            Err(BypassDenied::NotPriority)
        );
        let a = l.try_bypass(PriorityClass::Emergency, kind, t0).unwrap();
        assert_eq!(
            (a.used, a.max_per_window, a.class),
            (1, 2, PriorityClass::Emergency)
        );
        assert_eq!(a.cluster, "emergency-response-service|critical");
        let b = l
            .try_bypass(
                PriorityClass::Critical,
                BypassKind::Outlier,
                t0 + Duration::from_millis(500),
            )
            .unwrap();
        assert_eq!(b.used, 2);
        assert_eq!(
            l.try_bypass(
                PriorityClass::Critical,
                kind,
                t0 + Duration::from_millis(900)
            ),
            Err(BypassDenied::Exhausted)
        );
        let c = l
            .try_bypass(
                PriorityClass::Critical,
                kind,
                t0 + Duration::from_millis(1_000),
            )
            .unwrap();
        assert_eq!(c.used, 2, "the first bypass left the window");
    }

    #[test]
    fn zero_allowance_never_bypasses() {
        let mut l = BypassLimiter::new(
            "c",
            &BypassPolicy {
                max_per_window: 0,
                window_ms: 1_000,
            },
        );
        assert_eq!(
            l.try_bypass(PriorityClass::Critical, BypassKind::Outlier, Instant::now()),
            Err(BypassDenied::Exhausted)
        );
    }
}
