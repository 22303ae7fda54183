//! Route stage: a VirtualService's HTTP routes compiled once per update, and the per-request
//! decisions made from them — which route matches, which weighted destination, whether a fault is
//! injected, whether to mirror, how to rewrite, redirect or answer directly.
//!
//! Invariants:
//! - compilation does all the work that can fail (regexes, header names, retryOn tokens); the
//!   per-request path never compiles, parses YAML or takes a lock;
//! - first match wins; match blocks of a route are ORed, the conditions inside a block ANDed; a
//!   route without match blocks matches everything;
//! - every random decision takes the caller's random number, so tests are deterministic.

mod matcher;
mod retry_on;
#[cfg(test)]
mod tests;

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use jalin_xds::model::route::{
    AbortError, Destination, DirectResponse, HttpRoute, PriorityClass, Redirect, RouteError,
    RouteTable,
};
use regex::Regex;

pub use matcher::{CompiledMatch, Matcher, REGEX_SIZE_LIMIT, RequestView};
pub use retry_on::{CompiledRetryPolicy, Outcome, RetryOn, RetryOnError, grpc, should_retry};

/// A compiled VirtualService.
#[derive(Debug, Clone)]
pub struct CompiledRouteTable {
    /// `namespace/name`, for logs and metrics.
    pub name: String,
    hosts: Vec<String>,
    routes: Vec<CompiledRoute>,
}

/// One compiled `http:` route.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// Route name, or `http[i]` when unnamed.
    pub name: String,
    pub matches: Vec<CompiledMatch>,
    destinations: Vec<(Destination, u64)>,
    total_weight: u64,
    /// Whole-request timeout; `None`: none.
    pub timeout: Option<Duration>,
    pub retry: CompiledRetryPolicy,
    fault_delay: Option<(Duration, f64)>,
    fault_abort: Option<(AbortError, f64)>,
    mirror: Option<(Destination, f64)>,
    rewrite_uri: Option<String>,
    rewrite_regex: Option<(Regex, String)>,
    /// Authority to send upstream instead of the client's.
    pub rewrite_authority: Option<String>,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
    request_headers: CompiledHeaderOps,
    response_headers: CompiledHeaderOps,
    pub priority: PriorityClass,
}

/// A matched route and the index of the match block that matched (`None` for a catch-all).
#[derive(Debug, Clone, Copy)]
pub struct RouteHit<'a> {
    pub route: &'a CompiledRoute,
    pub block: Option<usize>,
}

/// What fault injection decided for one request; both may apply (delay, then abort).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<AbortError>,
}

impl CompiledRouteTable {
    /// Validates and compiles a route table. Errors carry the field path inside the resource.
    pub fn compile(table: &RouteTable) -> Result<Self, RouteError> {
        table.validate()?;
        let name = table.meta.key();
        let routes = table
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                CompiledRoute::compile(r, i).map_err(|(path, message)| RouteError {
                    resource: name.clone(),
                    path,
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name,
            hosts: table.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            routes,
        })
    }

    /// One table serving `hosts` with the routes of `tables` in order (the first route that
    /// matches wins across all of them), named `a/x+b/y`. Istio's merge of the VirtualServices a
    /// gateway binds for the same host.
    pub fn merged(hosts: Vec<String>, tables: &[&Self]) -> Self {
        Self {
            name: tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            hosts,
            routes: tables
                .iter()
                .flat_map(|t| t.routes.iter().cloned())
                .collect(),
        }
    }

    /// True when this table serves `authority` (port ignored): exact host, `*`, or `*.suffix`.
    pub fn serves(&self, authority: &str) -> bool {
        let host = host_of(authority);
        self.hosts.iter().any(|h| host_match(h, host).is_some())
    }

    /// The table's hosts (lower case), as written.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(String::as_str)
    }

    /// The first route that matches, with the matching block.
    pub fn match_route_hit(&self, req: &RequestView<'_>) -> Option<RouteHit<'_>> {
        self.routes.iter().find_map(|route| {
            if route.matches.is_empty() {
                return Some(RouteHit { route, block: None });
            }
            route
                .matches
                .iter()
                .position(|m| m.matches(req))
                .map(|i| RouteHit {
                    route,
                    block: Some(i),
                })
        })
    }

    /// The first route that matches (first match wins).
    pub fn match_route(&self, req: &RequestView<'_>) -> Option<&CompiledRoute> {
        self.match_route_hit(req).map(|h| h.route)
    }

    /// The compiled routes, in order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The host of an authority: without port, brackets and trailing dot (`[::1]:443` -> `::1`);
/// letter case is kept (host matching ignores it).
pub fn host_of(authority: &str) -> &str {
    strip_port(authority.trim()).trim_end_matches('.')
}

/// How specifically one host pattern matched a host; greater is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostMatch {
    /// `*`.
    Any,
    /// `*.suffix`, with the suffix's length (longer is more specific).
    Wildcard(usize),
    /// The host itself.
    Exact,
}

/// How `pattern` (a route table host: exact, `*`, or `*.suffix`) matches `host` (already
/// [`host_of`]), if at all; letter case is ignored.
pub fn host_match(pattern: &str, host: &str) -> Option<HostMatch> {
    if pattern == "*" {
        return Some(HostMatch::Any);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        let fits = host.len() > suffix.len()
            && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes());
        return fits.then_some(HostMatch::Wildcard(suffix.len()));
    }
    pattern
        .trim_end_matches('.')
        .eq_ignore_ascii_case(host)
        .then_some(HostMatch::Exact)
}

impl CompiledRoute {
    fn compile(r: &HttpRoute, i: usize) -> Result<Self, (String, String)> {
        let at = format!("http[{i}]");
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(j, m)| {
                CompiledMatch::compile(m)
                    .map_err(|e| (format!("{at}.match[{j}].{}", e.path), e.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let retry = CompiledRetryPolicy::compile(&r.retries)
            .map_err(|e| (format!("{at}.retries.retryOn"), e.to_string()))?;
        let destinations: Vec<(Destination, u64)> = r
            .destinations
            .iter()
            .map(|d| (d.destination.clone(), u64::from(d.weight)))
            .collect();
        let total_weight = destinations.iter().map(|(_, w)| w).sum();
        let fault = r.fault.as_ref();
        let rewrite = r.rewrite.as_ref();
        let rewrite_regex = rewrite
            .and_then(|rw| rw.uri_regex_rewrite.as_ref())
            .map(|rr| {
                regex::RegexBuilder::new(&rr.pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(|re| (re, envoy_substitution(&rr.rewrite)))
                    .map_err(|e| {
                        (
                            format!("{at}.rewrite.uriRegexRewrite.match"),
                            format!("invalid RE2 regex: {e}"),
                        )
                    })
            })
            .transpose()?;
        Ok(Self {
            name: r.name.clone().unwrap_or_else(|| at.clone()),
            matches,
            destinations,
            total_weight,
            timeout: r.timeout_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
            retry,
            fault_delay: fault
                .and_then(|f| f.delay.as_ref())
                .map(|d| (Duration::from_millis(d.fixed_delay_ms), d.percentage)),
            fault_abort: fault
                .and_then(|f| f.abort.as_ref())
                .map(|a| (a.error.clone(), a.percentage)),
            mirror: r
                .mirror
                .as_ref()
                .map(|m| (m.destination.clone(), m.percentage)),
            rewrite_uri: rewrite.and_then(|rw| rw.uri.clone()),
            rewrite_regex,
            rewrite_authority: rewrite.and_then(|rw| rw.authority.clone()),
            redirect: r.redirect.clone(),
            direct_response: r.direct_response.clone(),
            request_headers: CompiledHeaderOps::compile(
                &r.headers.request,
                &format!("{at}.headers.request"),
            )?,
            response_headers: CompiledHeaderOps::compile(
                &r.headers.response,
                &format!("{at}.headers.response"),
            )?,
            priority: r.priority,
        })
    }

    /// The weighted destination chosen by `random` (any uniformly distributed `u64`).
    /// `None` when the route has no destinations (redirect or direct response).
    pub fn choose_destination(&self, random: u64) -> Option<&Destination> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = random % self.total_weight;
        for (d, w) in &self.destinations {
            if point < *w {
                return Some(d);
            }
            point -= w;
        }
        None
    }

    /// The destinations with their weights.
    pub fn destinations(&self) -> impl Iterator<Item = (&Destination, u64)> {
        self.destinations.iter().map(|(d, w)| (d, *w))
    }

    /// Fault decision from two uniform numbers in `[0, 1)`: one for the delay, one for the abort
    /// (Envoy draws them independently).
    pub fn fault(&self, delay_random: f64, abort_random: f64) -> FaultDecision {
        FaultDecision {
            delay: self
                .fault_delay
                .filter(|(_, pct)| hit(*pct, delay_random))
                .map(|(d, _)| d),
            abort: self
                .fault_abort
                .as_ref()
                .filter(|(_, pct)| hit(*pct, abort_random))
                .map(|(e, _)| e.clone()),
        }
    }

    /// The mirror destination, when this request (uniform `random` in `[0, 1)`) is mirrored.
    pub fn mirror(&self, random: f64) -> Option<&Destination> {
        self.mirror
            .as_ref()
            .filter(|(_, pct)| hit(*pct, random))
            .map(|(d, _)| d)
    }

    /// The upstream path after `rewrite`, or `None` when unchanged. `block` is the match block
    /// that matched: a prefix match has only its prefix replaced, as Istio does.
    pub fn rewrite_path(&self, path: &str, block: Option<usize>) -> Option<String> {
        if let Some(new) = &self.rewrite_uri {
            let prefix = block
                .and_then(|b| self.matches.get(b))
                .and_then(|m| m.uri.as_ref())
                .and_then(Matcher::prefix_len);
            return Some(match prefix {
                Some(n) if n <= path.len() => format!("{new}{}", &path[n..]),
                _ => new.clone(),
            });
        }
        let (re, with) = self.rewrite_regex.as_ref()?;
        Some(re.replace_all(path, with.as_str()).into_owned())
    }

    /// The redirect answer: status and `Location`, when this route redirects.
    pub fn redirect_location(&self, req: &RequestView<'_>, scheme: &str) -> Option<(u16, String)> {
        let r = self.redirect.as_ref()?;
        let scheme = r.scheme.as_deref().unwrap_or(scheme);
        let host = r
            .authority
            .as_deref()
            .unwrap_or_else(|| strip_port(req.authority));
        let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = r.uri.as_deref().unwrap_or(req.path);
        let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
        Some((
            r.redirect_code,
            format!("{scheme}://{host}{port}{path}{query}"),
        ))
    }

    /// Applies the route's request header operations (remove, set, add).
    pub fn apply_request_headers(&self, headers: &mut HeaderMap) {
        self.request_headers.apply(headers);
    }

    /// Applies the route's response header operations (remove, set, add).
    pub fn apply_response_headers(&self, headers: &mut HeaderMap) {
        self.response_headers.apply(headers);
    }
}

/// Converts an Envoy/Istio substitution (`\\1` for group 1) to the regex crate's `${1}`, and
/// escapes a literal `$`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// True with probability `percent / 100` for a uniform `random` in `[0, 1)`.
fn hit(percent: f64, random: f64) -> bool {
    random * 100.0 < percent
}

/// Header operations with names and values parsed at compile time.
#[derive(Debug, Clone, Default)]
struct CompiledHeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledHeaderOps {
    fn compile(
        ops: &jalin_xds::model::route::HeaderOps,
        at: &str,
    ) -> Result<Self, (String, String)> {
        let name = |n: &str, path: String| {
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| (path, format!("`{n}` is not a valid HTTP header name")))
        };
        let pair = |(n, v): (&String, &String), kind: &str| {
            let path = format!("{at}.{kind}.{n}");
            let hv = HeaderValue::from_str(v).map_err(|_| {
                (
                    path.clone(),
                    "header value has characters HTTP forbids (CR, LF, NUL)".to_owned(),
                )
            })?;
            Ok::<_, (String, String)>((name(n, path)?, hv))
        };
        Ok(Self {
            remove: ops
                .remove
                .iter()
                .map(|n| name(n, format!("{at}.remove")))
                .collect::<Result<_, _>>()?,
            set: ops
                .set
                .iter()
                .map(|p| pair(p, "set"))
                .collect::<Result<_, _>>()?,
            add: ops
                .add
                .iter()
                .map(|p| pair(p, "add"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}
