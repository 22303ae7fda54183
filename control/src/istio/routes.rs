//! VirtualService → native routes (`jalin_xds::model::route`): every field honoured, mapped with a
//! warning, or reported unsupported with the reason; and the priority class of each route.
//!
//! Priority rule (README, "Policy import", *Routes and priority*): a route's class comes from the subsets its
//! destinations name — `critical` → critical, `emergency` → emergency, otherwise standard (the
//! most urgent named subset wins). The `jalin.io/priority` annotation on the VirtualService
//! overrides it per route: `"<route>=<class>,..."` where `<route>` is the route's `name` or
//! `http[i]`. A request header never sets a class by itself: it selects a route, and the route's
//! destination says how urgent the traffic is.

use std::collections::BTreeMap;

use jalin_xds::model::route::{self, PriorityClass};
use serde::Serialize;

use super::diag::{Finding, Severity};
use super::parse::Resource;
use super::values::duration_ms;
use super::virtual_service::{self as vs, VirtualServiceSpec};

/// The annotation that sets a route's priority class explicitly.
pub const PRIORITY_ANNOTATION: &str = "jalin.io/priority";
/// The gateway name Istio reserves for "every sidecar in the mesh".
pub const MESH_GATEWAY: &str = "mesh";

/// One VirtualService as native routes, with the proxies it is bound to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoundRoutes {
    /// `spec.gateways` as `namespace/name` (short names resolved in the VirtualService's
    /// namespace), or `mesh` for the sidecars; `["mesh"]` when the VirtualService names none, as
    /// in Istio.
    pub gateways: Vec<String>,
    pub table: route::RouteTable,
}

/// Convert one valid VirtualService. Unsupported and mapped fields are appended to `findings`;
/// a route table the proxy would reject (cannot happen after validation, but checked) is an
/// error there.
pub fn virtual_service(
    r: &Resource,
    meta: jalin_xds::model::ResourceMeta,
    s: &VirtualServiceSpec,
    findings: &mut Vec<Finding>,
) -> BoundRoutes {
    let mut f = Out { r, findings };
    if !s.export_to.is_empty() {
        f.unsupported("spec.exportTo", "jalin sends every VirtualService to the proxies it is bound to (`gateways`); `exportTo` visibility is not applied");
    }
    for (i, _) in s.tls.iter().enumerate() {
        f.unsupported(&format!("spec.tls[{i}]"), "jalin's native route table carries HTTP routes; SNI-based TLS passthrough routing is not applied, so these connections go to the destination the client dialled");
    }
    for (i, _) in s.tcp.iter().enumerate() {
        f.unsupported(&format!("spec.tcp[{i}]"), "jalin's native route table carries HTTP routes; TCP routing by VirtualService is not applied, so these connections go to the destination the client dialled");
    }
    let overrides = priority_overrides(&mut f, s);
    let http = s
        .http
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut out = http_route(&mut f, &format!("spec.http[{i}]"), h);
            let label = format!("http[{i}]");
            let explicit = overrides
                .get(&label)
                .or_else(|| h.name.as_ref().and_then(|n| overrides.get(n)));
            out.priority = explicit.copied().unwrap_or_else(|| derived_priority(&out));
            out
        })
        .collect();
    let gateways = if s.gateways.is_empty() {
        vec![MESH_GATEWAY.to_string()]
    } else {
        s.gateways
            .iter()
            .map(|g| {
                if g == MESH_GATEWAY || g.contains('/') {
                    g.clone()
                } else {
                    format!("{}/{g}", r.namespace)
                }
            })
            .collect()
    };
    let table = route::RouteTable {
        meta,
        hosts: s.hosts.clone(),
        // Istio's default binding (`mesh` only) stays implicit in the native table.
        gateways: if s.gateways.is_empty() {
            Vec::new()
        } else {
            gateways.clone()
        },
        http,
    };
    if let Err(e) = table.validate() {
        let path = format!("spec.{}", e.path);
        f.findings
            .push(r.finding(Severity::Error, &path, e.message));
    }
    BoundRoutes { gateways, table }
}

/// The class a route's destinations imply: the most urgent subset named `critical` or
/// `emergency` among destinations that receive traffic (weight > 0).
pub fn derived_priority(r: &route::HttpRoute) -> PriorityClass {
    r.destinations
        .iter()
        .filter(|d| d.weight > 0)
        .filter_map(|d| match d.destination.subset.as_deref() {
            Some("critical") => Some(PriorityClass::Critical),
            Some("emergency") => Some(PriorityClass::Emergency),
            _ => None,
        })
        .min()
        .unwrap_or_default()
}

struct Out<'a> {
    r: &'a Resource,
    findings: &'a mut Vec<Finding>,
}

impl Out<'_> {
    fn unsupported(&mut self, path: &str, why: &str) {
        self.findings
            .push(self.r.finding(Severity::Unsupported, path, why));
    }
    fn warning(&mut self, path: &str, what: &str) {
        self.findings
            .push(self.r.finding(Severity::Warning, path, what));
    }
    fn error(&mut self, path: &str, what: String) {
        self.findings
            .push(self.r.finding(Severity::Error, path, what));
    }
}

/// `jalin.io/priority: "emergency-route=emergency, http[2]=critical"`.
fn priority_overrides(f: &mut Out<'_>, s: &VirtualServiceSpec) -> BTreeMap<String, PriorityClass> {
    let mut out = BTreeMap::new();
    let Some(text) = f.r.metadata.annotations.get(PRIORITY_ANNOTATION).cloned() else {
        return out;
    };
    let path = format!("metadata.annotations[\"{PRIORITY_ANNOTATION}\"]");
    for item in text.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let Some((route_ref, class)) = item.split_once('=') else {
            f.error(&path, format!("`{item}` is not `<route>=<class>`; expected e.g. `http[0]=emergency` or `my-route=critical`"));
            continue;
        };
        let (route_ref, class) = (route_ref.trim(), class.trim());
        let class = match class {
            "critical" => PriorityClass::Critical,
            "emergency" => PriorityClass::Emergency,
            "standard" => PriorityClass::Standard,
            other => {
                f.error(
                    &path,
                    format!("`{other}` is not a priority class; expected critical, emergency or standard"),
                );
                continue;
            }
        };
        let known = s.http.iter().enumerate().any(|(i, h)| {
            route_ref == format!("http[{i}]") || h.name.as_deref() == Some(route_ref)
        });
        if !known {
            f.error(
                &path,
                format!("`{route_ref}` names no HTTP route of this VirtualService; use a route's `name` or `http[i]` (0 to {})", s.http.len().saturating_sub(1)),
            );
            continue;
        }
        out.insert(route_ref.to_string(), class);
    }
    out
}

fn string_match(m: &vs::StringMatch, presence: bool) -> Option<route::StringMatch> {
    if let Some(v) = &m.exact {
        Some(route::StringMatch::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(route::StringMatch::Prefix(v.clone()))
    } else if let Some(v) = &m.regex {
        Some(route::StringMatch::Regex(v.clone()))
    } else if presence {
        Some(route::StringMatch::Present)
    } else {
        None
    }
}

fn string_map(
    m: &BTreeMap<String, vs::StringMatch>,
    lower: bool,
) -> BTreeMap<String, route::StringMatch> {
    m.iter()
        .filter_map(|(k, v)| {
            let k = if lower {
                k.to_ascii_lowercase()
            } else {
                k.clone()
            };
            string_match(v, true).map(|v| (k, v))
        })
        .collect()
}

fn port(n: u64) -> Option<u16> {
    u16::try_from(n).ok()
}

fn destination(d: &vs::Destination) -> route::Destination {
    route::Destination {
        host: d.host.clone(),
        subset: d.subset.clone(),
        port: d.port.as_ref().and_then(|p| port(p.number)),
    }
}

fn header_ops(h: Option<&vs::HeaderOperations>) -> route::HeaderOps {
    h.map(|h| route::HeaderOps {
        set: h
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: h
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: h.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    })
    .unwrap_or_default()
}

fn headers(h: Option<&vs::Headers>) -> route::HeaderOperations {
    route::HeaderOperations {
        request: header_ops(h.and_then(|h| h.request.as_ref())),
        response: header_ops(h.and_then(|h| h.response.as_ref())),
    }
}

/// Layer destination-level operations over the route's (the more specific one wins a `set`).
/// `None` when an `add` of the same header would need two values, which the model cannot hold.
fn layer(route: &mut route::HeaderOps, dest: route::HeaderOps) -> Result<(), String> {
    for (k, v) in &dest.add {
        if route.add.get(k).is_some_and(|have| have != v) {
            return Err(k.clone());
        }
    }
    route.set.extend(dest.set);
    route.add.extend(dest.add);
    for k in dest.remove {
        if !route.remove.contains(&k) {
            route.remove.push(k);
        }
    }
    Ok(())
}

fn http_match(f: &mut Out<'_>, p: &str, m: &vs::HttpMatchRequest) -> route::RouteMatch {
    if m.scheme.is_some() {
        f.unsupported(&format!("{p}.scheme"), "jalin matches sidecar traffic, which is plain HTTP between the application and its proxy; a `scheme` condition is not applied (the block matches whatever the scheme)");
    }
    if !m.gateways.is_empty() {
        f.unsupported(&format!("{p}.gateways"), "per-match `gateways` is not applied: this match block applies on every proxy the VirtualService is bound to (`spec.gateways`); split the VirtualService per gateway instead");
    }
    if m.stat_prefix.is_some() {
        f.unsupported(&format!("{p}.statPrefix"), "jalin labels route metrics with the route's `name`; a per-match stat prefix is not applied");
    }
    route::RouteMatch {
        name: m.name.clone(),
        uri: m.uri.as_ref().and_then(|u| string_match(u, false)),
        method: m.method.as_ref().and_then(|u| string_match(u, false)),
        authority: m.authority.as_ref().and_then(|u| string_match(u, false)),
        headers: string_map(&m.headers, true),
        without_headers: string_map(&m.without_headers, true),
        query_params: string_map(&m.query_params, false),
        port: m.port.and_then(port),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        ignore_uri_case: m.ignore_uri_case,
    }
}

fn http_route(f: &mut Out<'_>, p: &str, h: &vs::HttpRoute) -> route::HttpRoute {
    let mut out = route::HttpRoute {
        name: h.name.clone(),
        matches: h
            .match_
            .iter()
            .enumerate()
            .map(|(j, m)| http_match(f, &format!("{p}.match[{j}]"), m))
            .collect(),
        headers: headers(h.headers.as_ref()),
        ..Default::default()
    };
    let single = h.route.len() == 1;
    for (j, d) in h.route.iter().enumerate() {
        out.destinations.push(route::RouteDestination {
            destination: destination(&d.destination),
            weight: if single {
                route::SINGLE_DESTINATION_WEIGHT
            } else {
                u32::try_from(d.weight.unwrap_or(0).max(0)).unwrap_or(u32::MAX)
            },
        });
        let Some(dh) = &d.headers else { continue };
        let dp = format!("{p}.route[{j}].headers");
        if single {
            let dh = headers(Some(dh));
            let layered = layer(&mut out.headers.request, dh.request)
                .and_then(|()| layer(&mut out.headers.response, dh.response));
            if let Err(name) = layered {
                f.unsupported(&dp, &format!("the route and its destination both `add` `{name}` with different values; jalin adds one value per header, the route's is kept"));
            }
        } else {
            f.unsupported(&dp, "header operations per weighted destination are not applied: jalin applies header operations per route; move them to the route's `headers` if every destination needs them");
        }
    }
    if let Some(t) = &h.timeout {
        // Istio: `0s` disables the timeout.
        out.timeout_ms = duration_ms(t).filter(|ms| *ms > 0);
    }
    if let Some(rt) = &h.retries {
        out.retries = route::RetryPolicy::istio(
            u32::try_from(rt.attempts.max(0)).unwrap_or(u32::MAX),
            rt.per_try_timeout.as_deref().and_then(duration_ms),
            rt.retry_on.as_deref(),
        );
        if rt.retry_remote_localities.is_some() {
            f.unsupported(&format!("{p}.retries.retryRemoteLocalities"), "jalin does not partition endpoints by locality; a retry may go to any healthy endpoint of the destination, local or remote");
        }
    }
    if let Some(fault) = &h.fault {
        out.fault = Some(fault_injection(f, &format!("{p}.fault"), fault));
    }
    mirror(f, p, h, &mut out);
    if let Some(rw) = &h.rewrite {
        out.rewrite = Some(route::Rewrite {
            uri: rw.uri.clone(),
            authority: rw.authority.clone(),
            uri_regex_rewrite: rw.uri_regex_rewrite.as_ref().map(|x| route::RegexRewrite {
                pattern: x.match_.clone(),
                rewrite: x.rewrite.clone(),
            }),
        });
    }
    if let Some(rd) = &h.redirect {
        if rd.derive_port.is_some() {
            f.unsupported(&format!("{p}.redirect.derivePort"), "the redirect keeps the request's port unless `port` is set; deriving it from the scheme or request is not applied");
        }
        out.redirect = Some(route::Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            port: rd.port.and_then(port),
            scheme: rd.scheme.clone(),
            redirect_code: rd
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(route::DEFAULT_REDIRECT_CODE),
        });
    }
    if let Some(dr) = &h.direct_response {
        let body = dr.body.as_ref().and_then(|b| {
            if b.contains_key("bytes") {
                f.unsupported(&format!("{p}.directResponse.body.bytes"), "jalin answers direct responses with a text body; a `bytes` (base64) body is not sent, the response has no body; use `string`");
            }
            b.get("string").cloned()
        });
        out.direct_response = Some(route::DirectResponse {
            status: u16::try_from(dr.status).unwrap_or(500),
            body,
        });
    }
    if let Some(d) = &h.delegate {
        let target = format!(
            "{}/{}",
            d.namespace.as_deref().unwrap_or(&f.r.namespace),
            d.name
        );
        f.unsupported(&format!("{p}.delegate"), &format!("jalin does not merge delegate VirtualServices; requests matching this route are answered 503 (fail closed) instead of being routed by `{target}`: inline its routes here"));
        out.direct_response = Some(route::DirectResponse {
            status: 503,
            body: Some(format!(
                "route delegates to VirtualService {target}, which jalin does not resolve\n"
            )),
        });
    }
    if h.cors_policy.is_some() {
        f.unsupported(&format!("{p}.corsPolicy"), "jalin does not answer CORS preflights or add CORS response headers; requests, preflights included, reach the application, which must apply its CORS policy");
    }
    out
}

fn fault_injection(f: &mut Out<'_>, p: &str, fault: &vs::HttpFaultInjection) -> route::Fault {
    let delay = fault.delay.as_ref().map(|d| {
        let percentage = match (&d.percentage, d.percent) {
            (Some(pc), _) => pc.value,
            (None, Some(n)) => {
                f.warning(
                    &format!("{p}.delay.percent"),
                    "`percent` is deprecated; mapped to `percentage.value`",
                );
                n as f64
            }
            // Istio: no percentage means no request is delayed.
            (None, None) => 0.0,
        };
        route::FaultDelay {
            fixed_delay_ms: d.fixed_delay.as_deref().and_then(duration_ms).unwrap_or(0),
            percentage,
        }
    });
    let abort = fault.abort.as_ref().and_then(|a| {
        let percentage = a.percentage.as_ref().map_or(0.0, |pc| pc.value);
        let error = if let Some(s) = a.http_status {
            route::AbortError::HttpStatus(u16::try_from(s).unwrap_or(500))
        } else if let Some(g) = &a.grpc_status {
            match grpc_code(g) {
                Some(c) => route::AbortError::GrpcStatus(c),
                None => {
                    f.unsupported(&format!("{p}.abort.grpcStatus"), &format!("`{g}` is not a gRPC status name; no abort is injected. Expected e.g. UNAVAILABLE or DEADLINE_EXCEEDED"));
                    return None;
                }
            }
        } else {
            if a.http2_error.is_some() {
                f.unsupported(&format!("{p}.abort.http2Error"), "jalin injects HTTP or gRPC status aborts; an HTTP/2 stream reset with a chosen error code is not injected");
            }
            return None;
        };
        Some(route::FaultAbort { error, percentage })
    });
    route::Fault { delay, abort }
}

fn mirror(f: &mut Out<'_>, p: &str, h: &vs::HttpRoute, out: &mut route::HttpRoute) {
    if h.mirror.is_none() {
        for (field, set) in [
            ("mirrorPercentage", h.mirror_percentage.is_some()),
            ("mirrorPercent", h.mirror_percent.is_some()),
        ] {
            if set {
                f.unsupported(&format!("{p}.{field}"), "applies to `mirror`, which this route does not set, so it has no effect; give each of `mirrors` its own `percentage`");
            }
        }
    }
    let legacy = h.mirror_percent.filter(|_| h.mirror.is_some()).map(|n| {
        f.warning(
            &format!("{p}.mirrorPercent"),
            "`mirrorPercent` is deprecated; mapped to `mirrorPercentage.value`",
        );
        f64::from(n)
    });
    let pct = h.mirror_percentage.as_ref().map(|x| x.value).or(legacy);
    if let Some(m) = &h.mirror {
        out.mirror = Some(route::Mirror {
            destination: destination(m),
            percentage: pct.unwrap_or(route::DEFAULT_MIRROR_PERCENT),
        });
    }
    for (k, m) in h.mirrors.iter().enumerate() {
        if out.mirror.is_none() {
            out.mirror = Some(route::Mirror {
                destination: destination(&m.destination),
                percentage: m
                    .percentage
                    .as_ref()
                    .map_or(route::DEFAULT_MIRROR_PERCENT, |x| x.value),
            });
        } else {
            f.unsupported(&format!("{p}.mirrors[{k}]"), "jalin mirrors each route to one destination (`mirror`, or the first of `mirrors`); this additional mirror is not sent");
        }
    }
}

/// gRPC status names (`google.rpc.Code`) to their numbers.
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    if let Ok(n) = name.parse::<u32>() {
        return (n < 17).then_some(n);
    }
    CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_names() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("ok"), Some(0));
        assert_eq!(grpc_code("16"), Some(16));
        assert_eq!(grpc_code("17"), None);
        assert_eq!(grpc_code("NOPE"), None);
    }

    #[test]
    fn priority_from_the_most_urgent_weighted_subset() {
        let d = |subset: &str, weight| route::RouteDestination {
            destination: route::Destination {
                host: "h".into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight,
        };
        let mut r = route::HttpRoute {
            destinations: vec![d("standard", 50), d("emergency", 50)],
            ..Default::default()
        };
        assert_eq!(derived_priority(&r), PriorityClass::Emergency);
        r.destinations.push(d("critical", 1));
        assert_eq!(derived_priority(&r), PriorityClass::Critical);
        r.destinations = vec![d("critical", 0), d("standard", 100)];
        assert_eq!(
            derived_priority(&r),
            PriorityClass::Standard,
            "weight 0 carries no traffic"
        );
    }
}
