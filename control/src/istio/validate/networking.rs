//! Validation of VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, Gateway
//! and Telemetry, following Istio's documented rules.

use std::collections::BTreeSet;

use crate::istio::destination_rule::{DestinationRuleSpec, OutlierDetection, TrafficPolicy};
use crate::istio::diag::Sink;
use crate::istio::service::{
    GatewaySpec, ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec, WorkloadSelector,
};
use crate::istio::telemetry::{STANDARD_METRICS, TelemetrySpec};
use crate::istio::values::{DURATION_HINT, RETRY_ON, duration_ms, is_ip_or_cidr, is_service_port};
use crate::istio::virtual_service::{Destination, StringMatch, VirtualServiceSpec};

fn duration(sink: &mut Sink<'_>, path: &str, v: Option<&String>, allow_zero: bool) {
    let Some(v) = v else { return };
    match duration_ms(v) {
        None => sink.error(path, format!("`{v}` is not {DURATION_HINT}")),
        Some(0) if !allow_zero => sink.error(path, format!("`{v}` must be at least 1ms")),
        Some(_) => {}
    }
}

fn percent(sink: &mut Sink<'_>, path: &str, v: Option<i64>) {
    if let Some(v) = v
        && !(0..=100).contains(&v)
    {
        sink.error(
            path,
            format!("`{v}` is not a percentage; expected 0 to 100"),
        );
    }
}

fn non_negative(sink: &mut Sink<'_>, path: &str, v: Option<i64>) {
    if let Some(v) = v
        && v < 0
    {
        sink.error(path, format!("`{v}` must not be negative"));
    }
}

fn string_match(sink: &mut Sink<'_>, path: &str, m: &StringMatch) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        sink.error(path, "set exactly one of `exact`, `prefix` or `regex`");
    }
    if let Some(r) = &m.regex
        && let Err(e) = regex::Regex::new(r)
    {
        let last = e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        let first = last.strip_prefix("error: ").unwrap_or(&last).to_string();
        sink.error(
            &format!("{path}.regex"),
            format!("`{r}` is not a valid RE2 regular expression: {first}"),
        );
    }
}

fn destination(sink: &mut Sink<'_>, path: &str, d: &Destination) {
    if d.host.is_empty() {
        sink.error(&format!("{path}.host"), "`host` is required");
    }
    if let Some(p) = &d.port
        && !is_service_port(p.number)
    {
        sink.error(
            &format!("{path}.port.number"),
            format!("`{}` is not a port; expected 1 to 65535", p.number),
        );
    }
}

fn weights(sink: &mut Sink<'_>, path: &str, ws: &[Option<i64>]) {
    for (i, w) in ws.iter().enumerate() {
        if let Some(w) = w
            && *w < 0
        {
            sink.error(
                &format!("{path}[{i}].weight"),
                format!("`{w}` must not be negative"),
            );
        }
    }
    if ws.len() > 1 {
        let sum: i64 = ws.iter().map(|w| w.unwrap_or(0)).sum();
        if sum != 100 {
            sink.error(
                path,
                format!(
                    "the weights of the {} destinations add up to {sum}; they must add up to 100",
                    ws.len()
                ),
            );
        }
    }
}

/// VirtualService.
pub fn virtual_service(spec: &VirtualServiceSpec, sink: &mut Sink<'_>) {
    if spec.hosts.is_empty() {
        sink.error("spec.hosts", "a VirtualService needs at least one host");
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if h == "*" && (spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh")) {
            sink.error(
                &format!("spec.hosts[{i}]"),
                "the host `*` is only allowed on VirtualServices bound to gateways (not to `mesh`)",
            );
        }
    }
    for (i, r) in spec.http.iter().enumerate() {
        let p = format!("spec.http[{i}]");
        let actions = [
            !r.route.is_empty(),
            r.redirect.is_some(),
            r.direct_response.is_some(),
            r.delegate.is_some(),
        ];
        match actions.iter().filter(|b| **b).count() {
            0 => sink.error(
                &p,
                "an HTTP route needs one of `route`, `redirect`, `directResponse` or `delegate`",
            ),
            1 => {}
            _ => sink.error(
                &p,
                "`route`, `redirect`, `directResponse` and `delegate` are mutually exclusive",
            ),
        }
        for (j, m) in r.match_.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            for (f, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    string_match(sink, &format!("{mp}.{f}"), sm);
                }
            }
            for (f, map) in [
                ("headers", &m.headers),
                ("queryParams", &m.query_params),
                ("withoutHeaders", &m.without_headers),
            ] {
                for (k, sm) in map {
                    let hp = format!("{mp}.{f}.{k}");
                    // Istio: a header name with an empty value (`{}`) checks presence.
                    if f != "queryParams" && *sm == StringMatch::default() {
                        continue;
                    }
                    string_match(sink, &hp, sm);
                }
            }
            if let Some(port) = m.port
                && !is_service_port(port)
            {
                sink.error(
                    &format!("{mp}.port"),
                    format!("`{port}` is not a port; expected 1 to 65535"),
                );
            }
        }
        for (j, d) in r.route.iter().enumerate() {
            destination(sink, &format!("{p}.route[{j}].destination"), &d.destination);
        }
        weights(
            sink,
            &format!("{p}.route"),
            &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        );
        duration(sink, &format!("{p}.timeout"), r.timeout.as_ref(), true);
        if let Some(rt) = &r.retries {
            let rp = format!("{p}.retries");
            non_negative(sink, &format!("{rp}.attempts"), Some(rt.attempts));
            duration(
                sink,
                &format!("{rp}.perTryTimeout"),
                rt.per_try_timeout.as_ref(),
                false,
            );
            if let Some(on) = &rt.retry_on {
                for cond in on.split(',').map(str::trim) {
                    if !RETRY_ON.contains(&cond) && cond.parse::<u16>().is_err() {
                        sink.error(&format!("{rp}.retryOn"), format!("`{cond}` is not a retry condition; expected a comma-separated list of {} or HTTP status codes", RETRY_ON.join(", ")));
                    }
                }
            }
        }
        if let Some(f) = &r.fault {
            if let Some(d) = &f.delay {
                duration(
                    sink,
                    &format!("{p}.fault.delay.fixedDelay"),
                    d.fixed_delay.as_ref(),
                    true,
                );
                if let Some(pc) = &d.percentage
                    && !(0.0..=100.0).contains(&pc.value)
                {
                    sink.error(
                        &format!("{p}.fault.delay.percentage.value"),
                        format!("`{}` is not a percentage; expected 0 to 100", pc.value),
                    );
                }
            }
            if let Some(a) = &f.abort {
                if let Some(s) = a.http_status
                    && !(200..=599).contains(&s)
                {
                    sink.error(
                        &format!("{p}.fault.abort.httpStatus"),
                        format!("`{s}` is not an HTTP status; expected 200 to 599"),
                    );
                }
                if let Some(pc) = &a.percentage
                    && !(0.0..=100.0).contains(&pc.value)
                {
                    sink.error(
                        &format!("{p}.fault.abort.percentage.value"),
                        format!("`{}` is not a percentage; expected 0 to 100", pc.value),
                    );
                }
            }
        }
        if let Some(m) = &r.mirror {
            destination(sink, &format!("{p}.mirror"), m);
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            destination(
                sink,
                &format!("{p}.mirrors[{j}].destination"),
                &m.destination,
            );
        }
        if let Some(pc) = &r.mirror_percentage
            && !(0.0..=100.0).contains(&pc.value)
        {
            sink.error(
                &format!("{p}.mirrorPercentage.value"),
                format!("`{}` is not a percentage; expected 0 to 100", pc.value),
            );
        }
    }
    for (kind, routes) in [
        ("tls", spec.tls.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tcp", spec.tcp.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.iter().enumerate() {
            let p = format!("spec.{kind}[{i}].route");
            for (j, d) in route.iter().enumerate() {
                destination(sink, &format!("{p}[{j}].destination"), &d.destination);
            }
            weights(
                sink,
                &p,
                &route.iter().map(|d| d.weight).collect::<Vec<_>>(),
            );
        }
    }
    for (i, t) in spec.tcp.iter().enumerate() {
        for (j, m) in t.match_.iter().enumerate() {
            for (k, s) in m.destination_subnets.iter().enumerate() {
                if !is_ip_or_cidr(s) {
                    sink.error(
                        &format!("spec.tcp[{i}].match[{j}].destinationSubnets[{k}]"),
                        format!("`{s}` is not an IP address or CIDR block"),
                    );
                }
            }
        }
    }
}

/// DestinationRule.
pub fn destination_rule(spec: &DestinationRuleSpec, sink: &mut Sink<'_>) {
    if spec.host.is_empty() {
        sink.error("spec.host", "`host` is required");
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(sink, "spec.trafficPolicy", tp);
    }
    let mut names = BTreeSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            sink.error(&format!("{p}.name"), "a subset needs a `name`");
        } else if !names.insert(&s.name) {
            sink.error(
                &format!("{p}.name"),
                format!("subset `{}` is defined twice", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(sink, &format!("{p}.trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(sink: &mut Sink<'_>, p: &str, tp: &TrafficPolicy) {
    common_policy(
        sink,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
    );
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        match &pl.port {
            None => sink.error(&pp, "a port-level setting needs `port.number`"),
            Some(port) if !is_service_port(port.number) => sink.error(
                &format!("{pp}.port.number"),
                format!("`{}` is not a port; expected 1 to 65535", port.number),
            ),
            Some(port) if !ports.insert(port.number) => sink.error(
                &format!("{pp}.port.number"),
                format!("port {} has two port-level settings", port.number),
            ),
            Some(_) => {}
        }
        common_policy(
            sink,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
        );
    }
}

fn common_policy(
    sink: &mut Sink<'_>,
    p: &str,
    lb: Option<&crate::istio::destination_rule::LoadBalancerSettings>,
    pool: Option<&crate::istio::destination_rule::ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
) {
    if let Some(lb) = lb
        && lb.simple.is_some()
        && lb.consistent_hash.is_some()
    {
        sink.error(
            &format!("{p}.loadBalancer"),
            "`simple` and `consistentHash` are mutually exclusive",
        );
    }
    if let Some(pool) = pool {
        if let Some(tcp) = &pool.tcp {
            let tp = format!("{p}.connectionPool.tcp");
            non_negative(sink, &format!("{tp}.maxConnections"), tcp.max_connections);
            duration(
                sink,
                &format!("{tp}.connectTimeout"),
                tcp.connect_timeout.as_ref(),
                false,
            );
            duration(
                sink,
                &format!("{tp}.idleTimeout"),
                tcp.idle_timeout.as_ref(),
                true,
            );
            duration(
                sink,
                &format!("{tp}.maxConnectionDuration"),
                tcp.max_connection_duration.as_ref(),
                false,
            );
            if let Some(ka) = &tcp.tcp_keepalive {
                duration(
                    sink,
                    &format!("{tp}.tcpKeepalive.time"),
                    ka.time.as_ref(),
                    false,
                );
                duration(
                    sink,
                    &format!("{tp}.tcpKeepalive.interval"),
                    ka.interval.as_ref(),
                    false,
                );
                non_negative(sink, &format!("{tp}.tcpKeepalive.probes"), ka.probes);
            }
        }
        if let Some(http) = &pool.http {
            let hp = format!("{p}.connectionPool.http");
            for (f, v) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                non_negative(sink, &format!("{hp}.{f}"), v);
            }
            duration(
                sink,
                &format!("{hp}.idleTimeout"),
                http.idle_timeout.as_ref(),
                true,
            );
        }
    }
    if let Some(od) = od {
        let op = format!("{p}.outlierDetection");
        for (f, v) in [
            ("consecutive5xxErrors", od.consecutive_5xx_errors),
            ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
            (
                "consecutiveLocalOriginFailures",
                od.consecutive_local_origin_failures,
            ),
        ] {
            non_negative(sink, &format!("{op}.{f}"), v);
        }
        duration(sink, &format!("{op}.interval"), od.interval.as_ref(), false);
        duration(
            sink,
            &format!("{op}.baseEjectionTime"),
            od.base_ejection_time.as_ref(),
            false,
        );
        percent(
            sink,
            &format!("{op}.maxEjectionPercent"),
            od.max_ejection_percent,
        );
        percent(
            sink,
            &format!("{op}.minHealthPercent"),
            od.min_health_percent,
        );
    }
}

const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP",
];

fn protocol(sink: &mut Sink<'_>, path: &str, p: Option<&String>) {
    if let Some(p) = p
        && !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str())
    {
        sink.error(
            path,
            format!(
                "`{p}` is not a protocol; expected one of {}",
                PROTOCOLS.join(", ")
            ),
        );
    }
}

/// ServiceEntry.
pub fn service_entry(spec: &ServiceEntrySpec, sink: &mut Sink<'_>) {
    if spec.hosts.is_empty() {
        sink.error("spec.hosts", "a ServiceEntry needs at least one host");
    }
    for (i, a) in spec.addresses.iter().enumerate() {
        if !is_ip_or_cidr(a) {
            sink.error(
                &format!("spec.addresses[{i}]"),
                format!("`{a}` is not an IP address or CIDR block"),
            );
        }
    }
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if !is_service_port(p.number) {
            sink.error(
                &format!("{pp}.number"),
                format!("`{}` is not a port; expected 1 to 65535", p.number),
            );
        }
        protocol(sink, &format!("{pp}.protocol"), p.protocol.as_ref());
        if let Some(n) = &p.name
            && !names.insert(n)
        {
            sink.error(
                &format!("{pp}.name"),
                format!("port name `{n}` is used twice"),
            );
        }
    }
    if let Some(l) = &spec.location
        && !matches!(l.as_str(), "MESH_EXTERNAL" | "MESH_INTERNAL")
    {
        sink.error(
            "spec.location",
            format!("`{l}` is not a location; expected MESH_EXTERNAL or MESH_INTERNAL"),
        );
    }
    match spec.resolution.as_deref() {
        None | Some("NONE" | "DNS" | "DNS_ROUND_ROBIN") => {}
        Some("STATIC") if spec.endpoints.is_empty() && spec.workload_selector.is_none() => sink
            .error(
                "spec.resolution",
                "STATIC resolution needs `endpoints` or a `workloadSelector`",
            ),
        Some("STATIC") => {}
        Some(r) => sink.error(
            "spec.resolution",
            format!("`{r}` is not a resolution; expected NONE, STATIC, DNS or DNS_ROUND_ROBIN"),
        ),
    }
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        sink.error(
            "spec.workloadSelector",
            "`workloadSelector` and `endpoints` are mutually exclusive",
        );
    }
    networking_selector(sink, "ServiceEntry", spec.workload_selector.as_ref());
    for (i, e) in spec.endpoints.iter().enumerate() {
        workload(sink, &format!("spec.endpoints[{i}]"), e);
    }
}

/// A ServiceEntry's or Sidecar's `workloadSelector`: `labels` only, each a valid label.
fn networking_selector(sink: &mut Sink<'_>, kind: &str, selector: Option<&WorkloadSelector>) {
    let Some(selector) = selector else {
        return;
    };
    if selector.match_labels.is_some() {
        sink.error(
            "spec.workloadSelector.matchLabels",
            format!(
                "a {kind}'s `workloadSelector` has no `matchLabels`: Istio's {kind} selects workloads with `workloadSelector.labels`; rename `matchLabels` to `labels`"
            ),
        );
    }
    // As Istio validates: a Sidecar's selector needs labels, and no label key is empty.
    if kind == "Sidecar" && selector.labels.is_empty() && selector.match_labels.is_none() {
        sink.error(
            "spec.workloadSelector.labels",
            "a Sidecar's `workloadSelector` needs `labels`; remove `workloadSelector` for a namespace-wide Sidecar",
        );
    }
    if selector.labels.contains_key("") {
        sink.error(
            "spec.workloadSelector.labels",
            "a label key is empty; give each label a key",
        );
    }
}

fn workload(sink: &mut Sink<'_>, p: &str, w: &WorkloadEntrySpec) {
    if w.address.as_deref().unwrap_or("").is_empty() && w.network.is_none() {
        sink.error(
            &format!("{p}.address"),
            "`address` is required (an IP, a hostname or `unix://` path)",
        );
    }
    for (name, port) in &w.ports {
        if !is_service_port(*port) {
            sink.error(
                &format!("{p}.ports.{name}"),
                format!("`{port}` is not a port; expected 1 to 65535"),
            );
        }
    }
}

/// WorkloadEntry.
pub fn workload_entry(spec: &WorkloadEntrySpec, sink: &mut Sink<'_>) {
    workload(sink, "spec", spec);
}

/// Sidecar.
pub fn sidecar(spec: &SidecarSpec, sink: &mut Sink<'_>) {
    networking_selector(sink, "Sidecar", spec.workload_selector.as_ref());
    for (i, e) in spec.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            sink.error(
                &format!("spec.egress[{i}].hosts"),
                "an egress listener needs `hosts` in `namespace/dnsName` form",
            );
        }
        for (j, h) in e.hosts.iter().enumerate() {
            if h.split_once('/')
                .is_none_or(|(ns, host)| ns.is_empty() || host.is_empty())
            {
                sink.error(
                    &format!("spec.egress[{i}].hosts[{j}]"),
                    format!("`{h}` is not `namespace/dnsName` (e.g. `./*` or `istio-system/*`)"),
                );
            }
        }
        if let Some(p) = &e.port
            && !is_service_port(p.number)
        {
            sink.error(
                &format!("spec.egress[{i}].port.number"),
                format!("`{}` is not a port; expected 1 to 65535", p.number),
            );
        }
    }
    for (i, l) in spec.ingress.iter().enumerate() {
        match &l.port {
            None => sink.error(
                &format!("spec.ingress[{i}]"),
                "an ingress listener needs `port`",
            ),
            Some(p) if !is_service_port(p.number) => sink.error(
                &format!("spec.ingress[{i}].port.number"),
                format!("`{}` is not a port; expected 1 to 65535", p.number),
            ),
            Some(p) => protocol(
                sink,
                &format!("spec.ingress[{i}].port.protocol"),
                p.protocol.as_ref(),
            ),
        }
    }
    if let Some(o) = &spec.outbound_traffic_policy
        && let Some(m) = &o.mode
        && !matches!(m.as_str(), "REGISTRY_ONLY" | "ALLOW_ANY")
    {
        sink.error(
            "spec.outboundTrafficPolicy.mode",
            format!("`{m}` is not a mode; expected REGISTRY_ONLY or ALLOW_ANY"),
        );
    }
}

/// Gateway.
pub fn gateway(spec: &GatewaySpec, sink: &mut Sink<'_>) {
    if spec.servers.is_empty() {
        sink.error("spec.servers", "a Gateway needs at least one server");
    }
    for (i, s) in spec.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        match &s.port {
            None => sink.error(&p, "a server needs `port`"),
            Some(port) => {
                if !is_service_port(port.number) {
                    sink.error(
                        &format!("{p}.port.number"),
                        format!("`{}` is not a port; expected 1 to 65535", port.number),
                    );
                }
                protocol(sink, &format!("{p}.port.protocol"), port.protocol.as_ref());
            }
        }
        if s.hosts.is_empty() {
            sink.error(&format!("{p}.hosts"), "a server needs at least one host");
        }
        if let Some(t) = &s.tls
            && let Some(m) = &t.mode
            && !matches!(
                m.as_str(),
                "PASSTHROUGH"
                    | "SIMPLE"
                    | "MUTUAL"
                    | "AUTO_PASSTHROUGH"
                    | "ISTIO_MUTUAL"
                    | "OPTIONAL_MUTUAL"
            )
        {
            sink.error(&format!("{p}.tls.mode"), format!("`{m}` is not a TLS mode; expected PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL or OPTIONAL_MUTUAL"));
        }
    }
}

/// Telemetry.
pub fn telemetry(spec: &TelemetrySpec, sink: &mut Sink<'_>) {
    super::security::targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        sink,
    );
    for (i, t) in spec.tracing.iter().enumerate() {
        let p = format!("spec.tracing[{i}]");
        if let Some(r) = t.random_sampling_percentage
            && !(0.0..=100.0).contains(&r)
        {
            sink.error(
                &format!("{p}.randomSamplingPercentage"),
                format!("`{r}` is not a percentage; expected 0 to 100"),
            );
        }
        for (name, tag) in &t.custom_tags {
            let n = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                sink.error(
                    &format!("{p}.customTags.{name}"),
                    "a custom tag sets exactly one of `literal`, `environment` or `header`",
                );
            }
        }
    }
    for (i, m) in spec.metrics.iter().enumerate() {
        let p = format!("spec.metrics[{i}]");
        duration(
            sink,
            &format!("{p}.reportingInterval"),
            m.reporting_interval.as_ref(),
            false,
        );
        for (j, o) in m.overrides.iter().enumerate() {
            let op = format!("{p}.overrides[{j}]");
            if let Some(sel) = &o.match_
                && let Some(metric) = &sel.metric
                && !STANDARD_METRICS.contains(&metric.as_str())
            {
                sink.error(&format!("{op}.match.metric"), format!("`{metric}` is not a standard metric; expected one of {} (or use `customMetric`)", STANDARD_METRICS.join(", ")));
            }
            for (tag, t) in &o.tag_overrides {
                match t.operation.as_deref().unwrap_or("UPSERT") {
                    "UPSERT" if t.value.as_deref().unwrap_or("").is_empty() => sink.error(
                        &format!("{op}.tagOverrides.{tag}.value"),
                        "UPSERT needs a `value` expression",
                    ),
                    "UPSERT" | "REMOVE" => {}
                    other => sink.error(
                        &format!("{op}.tagOverrides.{tag}.operation"),
                        format!("`{other}` is not an operation; expected UPSERT or REMOVE"),
                    ),
                }
            }
        }
    }
    for (i, a) in spec.access_logging.iter().enumerate() {
        if let Some(f) = &a.format {
            for op in unsupported_format_operators(f) {
                sink.unsupported(
                    &format!("spec.accessLogging[{i}].format"),
                    format!("`{op}` reads Wasm filter state, which jalin (no Envoy, no Wasm) does not have; it is logged as `-`"),
                );
            }
        }
    }
}

/// Access-log command operators jalin cannot fill (`%FILTER_STATE(...)%` and its `%{...}%` spelling).
pub fn unsupported_format_operators(format: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = format;
    while let Some(start) = rest.find("FILTER_STATE(") {
        let tail = &rest[start..];
        let end = tail.find(')').map(|e| e + 1).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}
