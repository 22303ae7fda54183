//! Native HTTP routes (a VirtualService's `http:` list): matches, weighted destinations, timeouts,
//! retries, faults, mirroring, rewrites, redirects, header operations, direct responses and the
//! priority class of each route.
//!
//! The shape follows Istio's `HTTPRoute` so the importer maps field by field; every Istio default
//! is a named constant here. Durations are milliseconds. The proxy compiles a [`RouteTable`] once
//! per update (regexes included) and matches requests against the compiled form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::meta::ResourceMeta;

/// Istio's default retry count when a route says nothing about retries.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Istio's default `retryOn` (pilot's `defaultPolicy()`); `retriable-status-codes` refers to
/// [`DEFAULT_RETRIABLE_STATUS_CODES`].
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// The status codes Istio's default policy retries under `retriable-status-codes`: 503 only.
pub const DEFAULT_RETRIABLE_STATUS_CODES: &[u16] = &[503];
/// The gateway name that binds a route table to the sidecars (Istio's reserved `mesh`).
pub const MESH_GATEWAY: &str = "mesh";
/// Istio's default `mirrorPercentage` when a mirror is given without one: all traffic.
pub const DEFAULT_MIRROR_PERCENT: f64 = 100.0;
/// Istio's default redirect status (`redirectCode`): 301 Moved Permanently.
pub const DEFAULT_REDIRECT_CODE: u16 = 301;
/// Weight a single destination gets when the route lists only one (Istio: implied 100).
pub const SINGLE_DESTINATION_WEIGHT: u32 = 100;

/// The routes of one VirtualService, in the order written: the first matching route wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub meta: ResourceMeta,
    /// `spec.hosts`: the authorities this table serves (`*` and `*.suffix` wildcards allowed).
    pub hosts: Vec<String>,
    /// `spec.gateways` as `namespace/name`, and `mesh` for the sidecars. Empty means `mesh` only,
    /// Istio's default: a table applies to sidecars when this is empty or names `mesh`, and to a
    /// gateway listener when it names that listener's gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// `spec.http`, in order.
    pub http: Vec<HttpRoute>,
}

impl RouteTable {
    /// True when the table applies to sidecars: no `gateways`, or `mesh` among them.
    pub fn binds_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == MESH_GATEWAY)
    }

    /// True when the table applies to the gateway listener of `gateway` (`namespace/name`).
    pub fn binds_gateway(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| g == gateway)
    }
}

/// One `http:` entry: how a matching request is routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpRoute {
    /// Route name, used in metrics, logs and errors.
    pub name: Option<String>,
    /// Match blocks, ORed. Empty: the route matches every request.
    pub matches: Vec<RouteMatch>,
    /// Weighted destinations. Empty only when `redirect` or `direct_response` is set.
    pub destinations: Vec<RouteDestination>,
    /// Whole-request timeout (ms). `None`: no timeout, as Istio since 1.x (`timeout: 0s`).
    pub timeout_ms: Option<u64>,
    /// Retry policy; defaults to Istio's (2 attempts on connect-failure, refused-stream,
    /// unavailable, cancelled and 503).
    pub retries: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirror: Option<Mirror>,
    pub rewrite: Option<Rewrite>,
    pub redirect: Option<Redirect>,
    pub headers: HeaderOperations,
    pub direct_response: Option<DirectResponse>,
    /// Priority class of the traffic this route carries (admission and queueing order).
    pub priority: PriorityClass,
}

/// Priority class of a request, most urgent first. The derived order makes `Critical` the
/// smallest, so sorting puts it first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// Life-safety traffic: always admitted first, may use every reserved slot.
    Critical,
    /// Emergency access (for example `x-child-access-reason: emergency`).
    Emergency,
    /// Everything else; shed first under overload.
    #[default]
    Standard,
}

impl PriorityClass {
    /// Stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Emergency => "emergency",
            Self::Standard => "standard",
        }
    }

    /// True for the classes that may use reserved capacity and the audited bypass.
    pub fn is_priority(self) -> bool {
        !matches!(self, Self::Standard)
    }
}

/// One match block (`HTTPMatchRequest`): every condition given must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteMatch {
    pub name: Option<String>,
    /// Path without the query string.
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    /// `:authority` / `Host`, port included as sent.
    pub authority: Option<StringMatch>,
    /// Header name (lower case) to condition; all must hold.
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must NOT match (Istio `withoutHeaders`).
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameters (exact or regex in Istio; prefix is accepted too).
    pub query_params: BTreeMap<String, StringMatch>,
    /// Destination port the request was sent to.
    pub port: Option<u16>,
    /// Labels the calling workload must carry.
    pub source_labels: BTreeMap<String, String>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
    /// Compare `uri` case-insensitively (exact and prefix only, as Istio).
    pub ignore_uri_case: bool,
}

/// A string condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, anchored at both ends (Envoy's `safe_regex` full match).
    Regex(String),
    /// The header or parameter is present, whatever its value (Istio's empty match `{}`).
    Present,
}

/// Where traffic goes: a service host, optionally a subset and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

/// A destination with its relative weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    /// Relative weight; the importer fills [`SINGLE_DESTINATION_WEIGHT`] for a lone destination.
    pub weight: u32,
}

/// Retry policy (`HTTPRetry`). `attempts == 0` disables retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first try (Envoy `num_retries`).
    pub attempts: u32,
    /// Timeout of each try (ms); `None`: each try may use the rest of the route timeout.
    pub per_try_timeout_ms: Option<u64>,
    /// Comma-separated conditions (Envoy `retry_on` vocabulary plus numeric status codes).
    pub retry_on: String,
    /// Codes retried under `retriable-status-codes` besides numeric tokens in `retry_on`.
    pub retriable_status_codes: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            per_try_timeout_ms: None,
            retry_on: DEFAULT_RETRY_ON.to_owned(),
            retriable_status_codes: DEFAULT_RETRIABLE_STATUS_CODES.to_vec(),
        }
    }
}

impl RetryPolicy {
    /// Istio's conversion of an `HTTPRetry` block: `attempts == 0` disables retries; without
    /// `retryOn` the default conditions (and 503) apply; with `retryOn` exactly those conditions
    /// apply, numeric tokens being the only retriable status codes.
    pub fn istio(attempts: u32, per_try_timeout_ms: Option<u64>, retry_on: Option<&str>) -> Self {
        if attempts == 0 {
            return Self::disabled();
        }
        match retry_on.map(str::trim).filter(|s| !s.is_empty()) {
            None => Self {
                attempts,
                per_try_timeout_ms,
                ..Self::default()
            },
            Some(on) => Self {
                attempts,
                per_try_timeout_ms,
                retry_on: on.to_owned(),
                retriable_status_codes: Vec::new(),
            },
        }
    }

    /// A policy that never retries.
    pub fn disabled() -> Self {
        Self {
            attempts: 0,
            per_try_timeout_ms: None,
            retry_on: String::new(),
            retriable_status_codes: Vec::new(),
        }
    }
}

/// Fault injection (`HTTPFaultInjection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// Delay a share of requests before forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, 0.0..=100.0.
    pub percentage: f64,
}

/// Answer a share of requests with an error instead of forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub error: AbortError,
    /// Share of requests aborted, 0.0..=100.0.
    pub percentage: f64,
}

/// What an injected abort answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AbortError {
    HttpStatus(u16),
    /// gRPC status code (Istio `grpcStatus`, e.g. `UNAVAILABLE` mapped to 14).
    GrpcStatus(u32),
}

/// Mirror a share of requests to another destination (fire and forget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub destination: Destination,
    /// Share of requests mirrored; [`DEFAULT_MIRROR_PERCENT`] when Istio's field is absent.
    pub percentage: f64,
}

/// Rewrite before forwarding (`HTTPRewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Rewrite {
    /// Replaces the matched prefix (prefix match) or the whole path (other matches).
    pub uri: Option<String>,
    pub authority: Option<String>,
    /// Regex substitution on the path; exclusive with `uri`.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `uriRegexRewrite`: replace every match of `pattern` with `rewrite` (`\1` style groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub rewrite: String,
}

/// Answer with a redirect instead of forwarding (`HTTPRedirect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub redirect_code: u16,
}

impl Default for Redirect {
    fn default() -> Self {
        Self {
            uri: None,
            authority: None,
            port: None,
            scheme: None,
            redirect_code: DEFAULT_REDIRECT_CODE,
        }
    }
}

/// Answer directly with a fixed status and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
}

/// Header manipulation on the request towards the upstream and on the response back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderOperations {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// `set` overwrites, `add` appends, `remove` deletes; applied remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderOps {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// True when nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A route table that cannot be used, with the field path of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {path}: {message}")]
pub struct RouteError {
    /// `namespace/name` of the VirtualService.
    pub resource: String,
    /// Field path, e.g. `http[1].match[0].headers.x-reason.regex`.
    pub path: String,
    /// What was expected and what to do.
    pub message: String,
}

impl RouteTable {
    /// Checks what the proxy relies on: regexes compile, percentages are in range, weights sum
    /// to something, and every route has somewhere to go.
    pub fn validate(&self) -> Result<(), RouteError> {
        let err = |path: String, message: String| RouteError {
            resource: self.meta.key(),
            path,
            message,
        };
        for (i, route) in self.http.iter().enumerate() {
            let at = format!("http[{i}]");
            for (j, m) in route.matches.iter().enumerate() {
                let mat = format!("{at}.match[{j}]");
                let conds = [
                    ("uri", m.uri.as_ref()),
                    ("method", m.method.as_ref()),
                    ("authority", m.authority.as_ref()),
                ];
                for (field, cond) in conds {
                    if let Some(cond) = cond {
                        check_string_match(cond, false)
                            .map_err(|e| err(format!("{mat}.{field}"), e))?;
                    }
                }
                for (kind, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                    ("queryParams", &m.query_params),
                ] {
                    for (name, cond) in map {
                        check_string_match(cond, true)
                            .map_err(|e| err(format!("{mat}.{kind}.{name}"), e))?;
                    }
                }
            }
            let terminal = route.redirect.is_some() || route.direct_response.is_some();
            if route.destinations.is_empty() && !terminal {
                return Err(err(
                    format!("{at}.route"),
                    "expected at least one destination, a redirect or a directResponse; add a `route:` entry".into(),
                ));
            }
            if !route.destinations.is_empty() && route.destinations.iter().all(|d| d.weight == 0) {
                return Err(err(
                    format!("{at}.route"),
                    "every destination has weight 0; give at least one a positive weight".into(),
                ));
            }
            if let Some(f) = &route.fault {
                if let Some(d) = &f.delay {
                    check_percent(d.percentage)
                        .map_err(|e| err(format!("{at}.fault.delay.percentage"), e))?;
                }
                if let Some(a) = &f.abort {
                    check_percent(a.percentage)
                        .map_err(|e| err(format!("{at}.fault.abort.percentage"), e))?;
                }
            }
            if let Some(m) = &route.mirror {
                check_percent(m.percentage)
                    .map_err(|e| err(format!("{at}.mirrorPercentage"), e))?;
            }
            if let Some(rw) = &route.rewrite {
                if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                    return Err(err(
                        format!("{at}.rewrite"),
                        "`uri` and `uriRegexRewrite` are exclusive; keep one".into(),
                    ));
                }
                if let Some(rr) = &rw.uri_regex_rewrite {
                    regex::Regex::new(&rr.pattern).map_err(|e| {
                        err(
                            format!("{at}.rewrite.uriRegexRewrite.match"),
                            format!("invalid regex: {e}"),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn check_string_match(m: &StringMatch, presence_allowed: bool) -> Result<(), String> {
    match m {
        StringMatch::Regex(re) => regex::Regex::new(re).map(|_| ()).map_err(|e| format!("invalid RE2 regex: {e}")),
        StringMatch::Present if !presence_allowed => {
            Err("a presence match is only valid for headers and query parameters; use exact, prefix or regex".into())
        }
        _ => Ok(()),
    }
}

fn check_percent(p: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("expected a percentage in 0..=100, got {p}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(route: HttpRoute) -> RouteTable {
        RouteTable {
            meta: ResourceMeta {
                name: "vs".into(),
                namespace: "ns".into(),
                source: None,
            },
            hosts: vec!["svc".into()],
            gateways: Vec::new(),
            http: vec![route],
        }
    }

    #[test]
    fn tables_bind_to_the_mesh_by_default_and_to_named_gateways() {
        let mut t = table(HttpRoute::default());
        assert!(t.binds_mesh());
        assert!(!t.binds_gateway("istio-system/ingress"));
        t.gateways = vec!["istio-system/ingress".into()];
        assert!(!t.binds_mesh());
        assert!(t.binds_gateway("istio-system/ingress"));
        assert!(!t.binds_gateway("istio-system/other"));
        t.gateways.push(MESH_GATEWAY.into());
        assert!(t.binds_mesh());
    }

    fn dest(weight: u32) -> RouteDestination {
        RouteDestination {
            destination: Destination {
                host: "svc".into(),
                subset: None,
                port: None,
            },
            weight,
        }
    }

    #[test]
    fn defaults_are_istios() {
        let r = HttpRoute::default();
        assert_eq!(r.timeout_ms, None);
        assert_eq!(r.retries.attempts, 2);
        assert_eq!(r.retries.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(r.retries.retriable_status_codes, vec![503]);
        assert_eq!(r.priority, PriorityClass::Standard);
        assert!(PriorityClass::Critical < PriorityClass::Emergency);
        assert!(PriorityClass::Emergency < PriorityClass::Standard);
    }

    #[test]
    fn istio_retry_conversion() {
        let d = RetryPolicy::istio(3, Some(2_000), None);
        assert_eq!((d.attempts, d.per_try_timeout_ms), (3, Some(2_000)));
        assert_eq!(
            (d.retry_on.as_str(), d.retriable_status_codes.as_slice()),
            (DEFAULT_RETRY_ON, &[503][..])
        );
        let e = RetryPolicy::istio(2, None, Some("5xx,reset"));
        assert_eq!(e.retry_on, "5xx,reset");
        assert!(
            e.retriable_status_codes.is_empty(),
            "an explicit retryOn replaces the default codes"
        );
        assert_eq!(
            RetryPolicy::istio(0, None, Some("5xx")),
            RetryPolicy::disabled()
        );
    }

    #[test]
    fn validate_reports_field_path() {
        let mut r = HttpRoute {
            destinations: vec![dest(100)],
            ..Default::default()
        };
        r.matches.push(RouteMatch::default());
        r.matches[0]
            .headers
            .insert("x-a".into(), StringMatch::Regex("(".into()));
        let e = table(r).validate().unwrap_err();
        assert_eq!(e.path, "http[0].match[0].headers.x-a");
        assert!(e.to_string().starts_with("ns/vs: "));
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        assert!(
            table(HttpRoute::default()).validate().is_err(),
            "no destination"
        );
        assert!(
            table(HttpRoute {
                destinations: vec![dest(0)],
                ..Default::default()
            })
            .validate()
            .is_err()
        );
        let mut r = HttpRoute {
            destinations: vec![dest(1)],
            ..Default::default()
        };
        r.fault = Some(Fault {
            delay: Some(FaultDelay {
                fixed_delay_ms: 1,
                percentage: 101.0,
            }),
            abort: None,
        });
        assert!(table(r).validate().is_err());
        let mut r = HttpRoute {
            destinations: vec![dest(1)],
            ..Default::default()
        };
        r.matches.push(RouteMatch {
            uri: Some(StringMatch::Present),
            ..Default::default()
        });
        assert!(table(r).validate().is_err());
        let ok = HttpRoute {
            direct_response: Some(DirectResponse {
                status: 200,
                body: None,
            }),
            ..Default::default()
        };
        assert!(table(ok).validate().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let mut r = HttpRoute {
            destinations: vec![dest(90), dest(10)],
            priority: PriorityClass::Emergency,
            ..Default::default()
        };
        r.matches.push(RouteMatch {
            uri: Some(StringMatch::Prefix("/a".into())),
            ..Default::default()
        });
        let t = table(r);
        let json = serde_json::to_string(&t).unwrap();
        let back: RouteTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
