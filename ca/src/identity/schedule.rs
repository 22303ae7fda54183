//! When to renew: at a fraction of the certificate's lifetime (half by default), moved by a
//! jitter so a fleet issued together does not renew together. Pure: takes `now` and the
//! random sample as inputs.

use std::time::{Duration, SystemTime};

/// Renewal timing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// Fraction of the lifetime after which to renew (0.5 = half life, as the issue asks).
    pub fraction: f64,
    /// Maximum jitter, as a fraction of the lifetime, applied ± around `fraction`.
    pub jitter: f64,
    /// Floor on the delay, so an already-due renewal does not spin.
    pub min_delay: Duration,
}

impl RenewalPolicy {
    /// Half life, ±5 % of the lifetime (a 24 h certificate renews between 10.8 h and 13.2 h),
    /// at least 100 ms apart.
    pub const DEFAULT: Self = Self {
        fraction: 0.5,
        jitter: 0.05,
        min_delay: Duration::from_millis(100),
    };

    /// Checks the fractions; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(format!(
                "renewal fraction {} must be strictly between 0 and 1 (0.5 = half life)",
                self.fraction
            ));
        }
        if !(self.jitter >= 0.0 && self.jitter < self.fraction && self.fraction + self.jitter < 1.0)
        {
            return Err(format!(
                "renewal jitter {} must be >= 0, below the fraction {} and keep fraction + jitter < 1",
                self.jitter, self.fraction
            ));
        }
        Ok(())
    }

    /// How long to wait from `now` before renewing a certificate valid from `not_before` to
    /// `not_after`. `sample` is uniform in [-1, 1] (clamped).
    pub fn delay(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        now: SystemTime,
        sample: f64,
    ) -> Duration {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        let at = (self.fraction + self.jitter * sample.clamp(-1.0, 1.0)).clamp(0.0, 1.0);
        let renew_at = not_before + lifetime.mul_f64(at);
        renew_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .max(self.min_delay)
    }
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renews_at_half_life_with_bounded_jitter() {
        let p = RenewalPolicy::DEFAULT;
        let day = 86_400;
        assert_eq!(
            p.delay(t(0), t(day), t(0), 0.0),
            Duration::from_secs(day / 2)
        );
        assert_eq!(
            p.delay(t(0), t(day), t(0), 1.0),
            Duration::from_secs(day * 55 / 100)
        );
        assert_eq!(
            p.delay(t(0), t(day), t(0), -1.0),
            Duration::from_secs(day * 45 / 100)
        );
        assert_eq!(
            p.delay(t(0), t(day), t(0), 7.0),
            Duration::from_secs(day * 55 / 100)
        );
        // Measured from notBefore, not from now.
        assert_eq!(
            p.delay(t(0), t(day), t(day / 4), 0.0),
            Duration::from_secs(day / 4)
        );
    }

    #[test]
    fn overdue_renewal_waits_the_floor() {
        let p = RenewalPolicy::DEFAULT;
        assert_eq!(p.delay(t(0), t(10), t(20), 0.0), p.min_delay);
        assert_eq!(p.delay(t(10), t(0), t(20), 0.0), p.min_delay);
    }

    #[test]
    fn validates() {
        assert!(RenewalPolicy::DEFAULT.validate().is_ok());
        let bad = RenewalPolicy {
            fraction: 1.0,
            ..RenewalPolicy::DEFAULT
        };
        assert!(bad.validate().unwrap_err().contains("between 0 and 1"));
        let bad = RenewalPolicy {
            jitter: 0.6,
            ..RenewalPolicy::DEFAULT
        };
        assert!(bad.validate().is_err());
    }
}
