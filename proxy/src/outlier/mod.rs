//! Outlier detection for one cluster: passive health checking from request results, with
//! Istio's settings and Envoy's algorithm, minus the surprises users report.
//!
//! Invariants:
//! - at most `floor(hosts × maxEjectionPercent / 100)` hosts are ejected at once; when that is
//!   0 (a single host at 10 %, or 9 hosts at 10 %) nothing is ever ejected. Envoy instead allows
//!   one ejection whenever the ejected share is still below the percentage, which ejects the only
//!   host of a single-host cluster (istio#13682);
//! - an ejection lasts `baseEjectionTime × ejection count`, capped at `max(maxEjectionTime,
//!   baseEjectionTime)`; the count drops by one for every sweep the host spends admitted;
//! - below `minHealthPercent` healthy hosts (panic; off when 0) ejections are ignored by load
//!   balancing, but kept, so hosts come back on their own schedule;
//! - every ejection, skipped ejection and re-admission is returned as an [`OutlierEvent`].
//!
//! Sans-I/O: the caller reports results with [`OutlierDetector::record`] and calls
//! [`OutlierDetector::sweep`] every `interval` (see [`OutlierDetector::next_sweep`]).

mod success_rate;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jalin_xds::model::traffic::{OutlierDetection, SuccessRate};

use crate::balance::EndpointId;

/// The result of one request to a host, as the detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostResult {
    /// The upstream answered with this HTTP status (externally originated).
    Http(u16),
    /// A result that originated in the proxy itself.
    Local(LocalOrigin),
}

/// Locally originated results (Envoy's `LocalOrigin*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalOrigin {
    /// The TCP/TLS connection could not be established.
    ConnectFailed,
    /// The request timed out waiting for the upstream.
    Timeout,
    /// The connection was reset.
    Reset,
    /// The connection was established (only counted with split errors).
    Success,
}

/// Why a host was (or would have been) ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
    ConsecutiveLocalOriginFailures,
    SuccessRate,
}

impl EjectReason {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "consecutive_5xx",
            Self::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            Self::ConsecutiveLocalOriginFailures => "consecutive_local_origin_failures",
            Self::SuccessRate => "success_rate",
        }
    }
}

/// Something the detector did; log it and count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutlierEvent {
    Ejected {
        host: EndpointId,
        reason: EjectReason,
        ejection_count: u32,
        duration: Duration,
    },
    /// The host met an ejection condition but the `maxEjectionPercent` cap held it in.
    EjectionSkipped {
        host: EndpointId,
        reason: EjectReason,
        ejected: u32,
        cap: u32,
    },
    Readmitted {
        host: EndpointId,
    },
}

impl OutlierEvent {
    /// Stable label for the event counter.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ejected { .. } => "ejected",
            Self::EjectionSkipped { .. } => "ejection_skipped",
            Self::Readmitted { .. } => "readmitted",
        }
    }
}

/// Counter incremented for every event, labelled `cluster`, `event` and `reason`.
pub const OUTLIER_METRIC: &str = "jalin_outlier_events_total";

#[derive(Debug, Clone, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    ejection_count: u32,
    ejected_until: Option<Instant>,
    /// Requests and successes since the last sweep, for success-rate ejection.
    requests: u64,
    successes: u64,
}

impl HostState {
    fn reset_counters(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local = 0;
    }
}

/// The outlier detector of one cluster.
#[derive(Debug)]
pub struct OutlierDetector {
    cluster: String,
    cfg: OutlierDetection,
    hosts: BTreeMap<EndpointId, HostState>,
    next_sweep: Instant,
}

impl OutlierDetector {
    /// A detector for `cluster` (named in logs and metrics) with no hosts; the first sweep is
    /// due one `interval` after `now`.
    pub fn new(cluster: &str, cfg: OutlierDetection, now: Instant) -> Self {
        let next_sweep = now + Duration::from_millis(cfg.interval_ms.max(1));
        Self {
            cluster: cluster.to_owned(),
            cfg,
            hosts: BTreeMap::new(),
            next_sweep,
        }
    }

    /// Replaces the membership: new hosts start healthy, removed hosts are forgotten (with their
    /// ejections), hosts that stay keep their state.
    pub fn set_hosts(&mut self, hosts: impl IntoIterator<Item = EndpointId>) {
        let mut next = BTreeMap::new();
        for h in hosts {
            let state = self.hosts.remove(&h).unwrap_or_default();
            next.insert(h, state);
        }
        self.hosts = next;
    }

    /// Number of hosts tracked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is tracked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts currently ejected.
    pub fn ejected_count(&self) -> u32 {
        u32::try_from(
            self.hosts
                .values()
                .filter(|s| s.ejected_until.is_some())
                .count(),
        )
        .unwrap_or(u32::MAX)
    }

    /// The most hosts that may be ejected at once: `floor(hosts × maxEjectionPercent / 100)`.
    pub fn ejection_cap(&self) -> u32 {
        let n = u64::try_from(self.hosts.len()).unwrap_or(u64::MAX);
        u32::try_from(n * u64::from(self.cfg.max_ejection_percent.min(100)) / 100)
            .unwrap_or(u32::MAX)
    }

    /// True when `host` is ejected (whatever the panic state).
    pub fn is_ejected(&self, host: EndpointId) -> bool {
        self.hosts
            .get(&host)
            .is_some_and(|s| s.ejected_until.is_some())
    }

    /// True when fewer than `minHealthPercent` of the hosts are admitted: load balancing then
    /// ignores ejections (Envoy's panic threshold). Always false when the threshold is 0.
    pub fn in_panic(&self) -> bool {
        let n = self.hosts.len();
        if self.cfg.min_health_percent == 0 || n == 0 {
            return false;
        }
        let healthy = n - usize::try_from(self.ejected_count()).unwrap_or(n);
        (healthy * 100) < n * usize::try_from(self.cfg.min_health_percent).unwrap_or(100)
    }

    /// Whether load balancing may pick `host`: not ejected, or the cluster is in panic.
    pub fn is_available(&self, host: EndpointId) -> bool {
        !self.is_ejected(host) || self.in_panic()
    }

    /// The ejection multiplier of `host` (0 for a host never ejected or fully recovered).
    pub fn ejection_count(&self, host: EndpointId) -> u32 {
        self.hosts.get(&host).map_or(0, |s| s.ejection_count)
    }

    /// When the caller should next call [`Self::sweep`].
    pub fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Records the result of one request to `host`; consecutive-error ejections happen at once.
    pub fn record(
        &mut self,
        host: EndpointId,
        result: HostResult,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let split = self.cfg.split_external_local_origin_errors;
        let code = match result {
            HostResult::Http(code) => code,
            HostResult::Local(local) if split => return self.record_local(host, local, now),
            // Without the split, local failures count as the status the proxy answers with.
            HostResult::Local(LocalOrigin::ConnectFailed | LocalOrigin::Reset) => 503,
            HostResult::Local(LocalOrigin::Timeout) => 504,
            HostResult::Local(LocalOrigin::Success) => return None,
        };
        let state = self.hosts.get_mut(&host)?;
        if state.ejected_until.is_some() {
            return None;
        }
        state.requests += 1;
        if !(500..=599).contains(&code) {
            state.successes += 1;
            state.consecutive_5xx = 0;
            state.consecutive_gateway = 0;
            return None;
        }
        if matches!(code, 502..=504) {
            state.consecutive_gateway += 1;
        } else {
            state.consecutive_gateway = 0;
        }
        state.consecutive_5xx += 1;
        let (gw, fxx) = (state.consecutive_gateway, state.consecutive_5xx);
        if self
            .cfg
            .consecutive_gateway_errors
            .is_some_and(|t| t > 0 && gw >= t)
        {
            return Some(self.eject(host, EjectReason::ConsecutiveGatewayErrors, now));
        }
        if self
            .cfg
            .consecutive_5xx_errors
            .is_some_and(|t| t > 0 && fxx >= t)
        {
            return Some(self.eject(host, EjectReason::Consecutive5xx, now));
        }
        None
    }

    fn record_local(
        &mut self,
        host: EndpointId,
        local: LocalOrigin,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let state = self.hosts.get_mut(&host)?;
        if state.ejected_until.is_some() {
            return None;
        }
        if local == LocalOrigin::Success {
            state.consecutive_local = 0;
            return None;
        }
        state.consecutive_local += 1;
        let n = state.consecutive_local;
        if self
            .cfg
            .consecutive_local_origin_failures
            .is_some_and(|t| t > 0 && n >= t)
        {
            return Some(self.eject(host, EjectReason::ConsecutiveLocalOriginFailures, now));
        }
        None
    }

    fn eject(&mut self, host: EndpointId, reason: EjectReason, now: Instant) -> OutlierEvent {
        let event = self.eject_inner(host, reason, now);
        self.emit(&event);
        event
    }

    /// Logs and counts an event (`OUTLIER_METRIC`).
    fn emit(&self, event: &OutlierEvent) {
        let cluster = self.cluster.clone();
        match event {
            OutlierEvent::Ejected {
                host,
                reason,
                ejection_count,
                duration,
            } => {
                tracing::warn!(%cluster, %host, reason = reason.as_str(), ejection_count, ejection_ms = duration.as_millis(), "outlier ejected");
                metrics::counter!(OUTLIER_METRIC, "cluster" => cluster, "event" => event.as_str(), "reason" => reason.as_str()).increment(1);
            }
            OutlierEvent::EjectionSkipped {
                host,
                reason,
                ejected,
                cap,
            } => {
                tracing::info!(%cluster, %host, reason = reason.as_str(), ejected, cap, "outlier not ejected: maxEjectionPercent cap reached");
                metrics::counter!(OUTLIER_METRIC, "cluster" => cluster, "event" => event.as_str(), "reason" => reason.as_str()).increment(1);
            }
            OutlierEvent::Readmitted { host } => {
                tracing::info!(%cluster, %host, "outlier re-admitted");
                metrics::counter!(OUTLIER_METRIC, "cluster" => cluster, "event" => event.as_str(), "reason" => "ejection_time_elapsed").increment(1);
            }
        }
    }

    fn eject_inner(&mut self, host: EndpointId, reason: EjectReason, now: Instant) -> OutlierEvent {
        let (ejected, cap) = (self.ejected_count(), self.ejection_cap());
        let base = Duration::from_millis(self.cfg.base_ejection_time_ms);
        let max = Duration::from_millis(self.cfg.max_ejection_time_ms).max(base);
        let Some(state) = self.hosts.get_mut(&host) else {
            return OutlierEvent::EjectionSkipped {
                host,
                reason,
                ejected,
                cap,
            };
        };
        state.reset_counters();
        if ejected >= cap {
            return OutlierEvent::EjectionSkipped {
                host,
                reason,
                ejected,
                cap,
            };
        }
        state.ejection_count = state.ejection_count.saturating_add(1);
        let duration = base.saturating_mul(state.ejection_count).min(max);
        state.ejected_until = Some(now + duration);
        OutlierEvent::Ejected {
            host,
            reason,
            ejection_count: state.ejection_count,
            duration,
        }
    }

    /// The interval sweep at `now`: re-admits hosts whose ejection ended, decays the ejection
    /// multiplier of admitted hosts, and runs success-rate ejection when configured.
    pub fn sweep(&mut self, now: Instant) -> Vec<OutlierEvent> {
        let mut events: Vec<OutlierEvent> = Vec::new();
        for (host, state) in &mut self.hosts {
            match state.ejected_until {
                Some(until) if until <= now => {
                    state.ejected_until = None;
                    state.reset_counters();
                    events.push(OutlierEvent::Readmitted { host: *host });
                }
                Some(_) => {}
                None => state.ejection_count = state.ejection_count.saturating_sub(1),
            }
        }
        for e in &events {
            self.emit(e);
        }
        if let Some(sr) = self.cfg.success_rate.clone() {
            for (host, reason) in self.success_rate_outliers(&sr) {
                events.push(self.eject(host, reason, now));
            }
        }
        for state in self.hosts.values_mut() {
            state.requests = 0;
            state.successes = 0;
        }
        let interval = Duration::from_millis(self.cfg.interval_ms.max(1));
        self.next_sweep = now + interval;
        events
    }

    fn success_rate_outliers(&self, sr: &SuccessRate) -> Vec<(EndpointId, EjectReason)> {
        let samples: Vec<(EndpointId, f64)> = self
            .hosts
            .iter()
            .filter(|(_, s)| {
                s.ejected_until.is_none()
                    && s.requests >= u64::from(sr.request_volume)
                    && s.requests > 0
            })
            .map(|(h, s)| (*h, s.successes as f64 * 100.0 / s.requests as f64))
            .collect();
        success_rate::outliers(&samples, sr)
            .into_iter()
            .map(|h| (h, EjectReason::SuccessRate))
            .collect()
    }
}
