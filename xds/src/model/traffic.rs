//! Native traffic policy (DestinationRule `trafficPolicy`): load balancing, connection-pool
//! limits (circuit breaking) and outlier detection, with Istio's documented defaults.
//!
//! Durations are carried as milliseconds so the model stays plain data. The proxy's decision
//! cores (breaker, outlier detector, balancer) read these settings.

use serde::{Deserialize, Serialize};

/// Istio's `consecutive5xxErrors` default.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Istio's outlier `interval` default: 10 s.
pub const DEFAULT_OUTLIER_INTERVAL_MS: u64 = 10_000;
/// Istio's `baseEjectionTime` default: 30 s.
pub const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
/// Envoy's `max_ejection_time` default: 300 s; ejection time grows up to this cap.
pub const DEFAULT_MAX_EJECTION_MS: u64 = 300_000;
/// Istio's `maxEjectionPercent` default: 10 %.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Istio's connection-pool limits default to "effectively unlimited" (Envoy's 2^32-1).
pub const UNLIMITED: u32 = u32::MAX;
/// Istio's `connectTimeout` default: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// A whole traffic policy for a cluster or subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficPolicy {
    pub load_balancer: LoadBalancer,
    pub connection_pool: ConnectionPool,
    /// `None`: outlier detection is off, as in Istio when the block is absent.
    pub outlier_detection: Option<OutlierDetection>,
    /// A budget that caps retries as a share of requests.
    pub retry_budget: Option<RetryBudget>,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency (Linkerd's default; jalin's default).
    #[default]
    P2cPeakEwma,
    LeastRequest,
    RoundRobin,
    Random,
    /// Forward to the original destination address.
    Passthrough,
    /// Ring hash on a request attribute (session affinity).
    ConsistentHash(HashKey),
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    Header(String),
    /// Cookie name; when absent the proxy sets it with `ttl_ms`.
    Cookie {
        name: String,
        path: Option<String>,
        ttl_ms: Option<u64>,
    },
    SourceIp,
    QueryParameter(String),
}

/// Connection-pool limits. Each overflow fails fast with 503 and `x-jalin-overflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionPool {
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    /// TCP keepalive: time, interval (ms) and probes; `None` uses the OS settings.
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub http1_max_pending_requests: u32,
    pub http2_max_requests: u32,
    /// 0 means unlimited.
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    /// Idle timeout for upstream connections (ms); `None` uses the proxy default.
    pub idle_timeout_ms: Option<u64>,
    pub h2_upgrade_policy: H2UpgradePolicy,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            max_connections: UNLIMITED,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            tcp_keepalive: None,
            http1_max_pending_requests: UNLIMITED,
            http2_max_requests: UNLIMITED,
            max_requests_per_connection: 0,
            max_retries: UNLIMITED,
            idle_timeout_ms: None,
            h2_upgrade_policy: H2UpgradePolicy::Default,
        }
    }
}

/// TCP keepalive settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TcpKeepalive {
    pub time_ms: Option<u64>,
    pub interval_ms: Option<u64>,
    pub probes: Option<u32>,
}

/// Whether HTTP/1.1 requests are upgraded to HTTP/2 towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// Outlier detection (passive health checking).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// `None` disables this detector; Istio's default is 5.
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failures: Option<u32>,
    pub interval_ms: u64,
    pub base_ejection_time_ms: u64,
    pub max_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
    /// Panic threshold: below this share of healthy hosts, ejection is ignored. 0 = off (Istio).
    pub min_health_percent: u32,
    /// Optional success-rate ejection.
    pub success_rate: Option<SuccessRate>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx_errors: Some(DEFAULT_CONSECUTIVE_5XX),
            consecutive_gateway_errors: None,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failures: None,
            interval_ms: DEFAULT_OUTLIER_INTERVAL_MS,
            base_ejection_time_ms: DEFAULT_BASE_EJECTION_MS,
            max_ejection_time_ms: DEFAULT_MAX_EJECTION_MS,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
            success_rate: None,
        }
    }
}

/// Success-rate ejection (Envoy's `success_rate_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuccessRate {
    pub minimum_hosts: u32,
    pub request_volume: u32,
    /// Eject hosts whose success rate is below mean - stdev * factor / 1000.
    pub stdev_factor: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        // Envoy's defaults: 5 hosts, 100 requests, factor 1900.
        Self {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }
    }
}

/// A retry budget: retries may add at most `ratio` of the request rate, plus
/// `min_retries_per_second`, over a window of `ttl_ms` (Linkerd's model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_retries_per_second: u32,
    pub ttl_ms: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        // Linkerd's defaults: 20 % extra load, 10 retries/s floor, 10 s window.
        Self {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl_ms: 10_000,
        }
    }
}
