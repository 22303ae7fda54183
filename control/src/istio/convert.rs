//! Conversion of valid Istio resources into jalin's native model (`jalin_xds::model`), reporting
//! every field jalin accepts but does not act on, with the reason.
//!
//! VirtualServices become native route tables ([`super::routes`]). Kinds whose native model is
//! produced by a later stage (ServiceEntry, Sidecar, Gateway, WorkloadEntry, Telemetry) are
//! carried as their typed, validated Istio form.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jalin_xds::model::{ResourceMeta, SourceRef, WorkloadSelector, authz, peer_auth, traffic};
use serde::Serialize;

use super::destination_rule::{
    self as dr, ClientTlsSettings, DestinationRuleSpec, SimpleLb, TlsMode,
};
use super::diag::{Finding, Severity};
use super::parse::{Resource, Spec};
use super::routes::{self, BoundRoutes};
use super::security::{self as sec, AuthzAction, MtlsMode};
use super::service::{GatewaySpec, ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec};
use super::telemetry::TelemetrySpec;
use super::validate::security::DRY_RUN_ANNOTATION;
use super::values::{duration_ms, unevaluable_key};
use super::yaml::Locator;

/// A resource kept in its typed Istio form, with its native identity.
#[derive(Debug, Clone, Serialize)]
pub struct Kept<T> {
    pub meta: ResourceMeta,
    pub spec: T,
}

/// A DestinationRule as native traffic policies: the host's policy, per-port overrides, and each
/// subset's policy already merged with the host's (as Istio merges them, field by field).
#[derive(Debug, Clone, Serialize)]
pub struct DestinationPolicy {
    pub meta: ResourceMeta,
    pub host: String,
    pub traffic_policy: traffic::TrafficPolicy,
    pub port_level: BTreeMap<u16, traffic::TrafficPolicy>,
    pub subsets: Vec<SubsetPolicy>,
}

/// One subset: its labels and effective policy.
#[derive(Debug, Clone, Serialize)]
pub struct SubsetPolicy {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: traffic::TrafficPolicy,
    pub port_level: BTreeMap<u16, traffic::TrafficPolicy>,
}

/// Everything `jalin import` writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NativeConfig {
    pub authorization_policies: Vec<authz::AuthorizationPolicy>,
    pub request_authentications: Vec<authz::RequestAuthentication>,
    pub peer_authentications: Vec<peer_auth::PeerAuthentication>,
    pub destination_policies: Vec<DestinationPolicy>,
    /// One route table per VirtualService, with the proxies it is bound to.
    pub routes: Vec<BoundRoutes>,
    pub service_entries: Vec<Kept<ServiceEntrySpec>>,
    pub sidecars: Vec<Kept<SidecarSpec>>,
    pub gateways: Vec<Kept<GatewaySpec>>,
    pub workload_entries: Vec<Kept<WorkloadEntrySpec>>,
    pub telemetry: Vec<Kept<TelemetrySpec>>,
    /// Where each field of each resource was written (`Kind/namespace/name`), for findings
    /// raised after conversion (gateway binding in the translation).
    #[serde(skip)]
    pub locators: HashMap<String, Arc<Locator>>,
}

impl NativeConfig {
    /// A finding about `path` of the `kind` resource `meta`, at the line its field was written
    /// (the resource's own line when the field is not known).
    pub fn finding(
        &self,
        kind: &str,
        meta: &ResourceMeta,
        severity: Severity,
        path: &str,
        message: impl Into<String>,
    ) -> Finding {
        let id = format!("{kind}/{}/{}", meta.namespace, meta.name);
        let source = meta.source.as_ref();
        let file = source.map(|s| s.file.clone()).unwrap_or_default();
        match self.locators.get(&id) {
            Some(l) => Finding::located(severity, file, id, l, path, message),
            None => Finding {
                severity,
                file,
                line: source.map_or(0, |s| s.line),
                resource: Some(id),
                path: path.to_owned(),
                message: message.into(),
                code: None,
            },
        }
    }
}

fn meta(r: &Resource) -> ResourceMeta {
    ResourceMeta {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        source: Some(SourceRef {
            file: r.file.clone(),
            line: r.line,
        }),
    }
}

/// An Istio `selector` as the native model's.
pub(crate) fn selector(s: Option<&sec::WorkloadSelector>) -> Option<WorkloadSelector> {
    s.map(|s| WorkloadSelector {
        match_labels: s.match_labels.clone(),
    })
}

/// Convert valid resources; unsupported fields are appended to `findings`, and so are the
/// VirtualServices' references to Gateways that do not exist and hosts no server of their
/// Gateway serves ([`super::gateway::bind`], short hosts qualified under `cluster.local`).
pub fn convert(resources: &[Resource], findings: &mut Vec<Finding>) -> NativeConfig {
    let out = convert_only(resources, findings);
    findings.extend(super::gateway::bind(&out, &crate::lint::fqdn).findings);
    out
}

/// As [`convert`], without the findings about Gateway bindings.
pub fn convert_only(resources: &[Resource], findings: &mut Vec<Finding>) -> NativeConfig {
    let mut out = NativeConfig::default();
    for r in resources {
        out.locators.insert(r.id(), r.locator.clone());
        match &r.spec {
            Spec::AuthorizationPolicy(s) => {
                out.authorization_policies.push(authorization_policy(r, s))
            }
            Spec::PeerAuthentication(s) => out.peer_authentications.push(peer_authentication(r, s)),
            Spec::RequestAuthentication(s) => out
                .request_authentications
                .push(request_authentication(r, s, findings)),
            Spec::DestinationRule(s) => out
                .destination_policies
                .push(destination_rule(r, s, findings)),
            Spec::VirtualService(s) => {
                out.routes
                    .push(routes::virtual_service(r, meta(r), s, findings))
            }
            Spec::ServiceEntry(s) => out.service_entries.push(Kept {
                meta: meta(r),
                spec: s.clone(),
            }),
            Spec::Sidecar(s) => out.sidecars.push(Kept {
                meta: meta(r),
                spec: s.clone(),
            }),
            Spec::Gateway(s) => out.gateways.push(Kept {
                meta: meta(r),
                spec: s.clone(),
            }),
            Spec::WorkloadEntry(s) => out.workload_entries.push(Kept {
                meta: meta(r),
                spec: s.clone(),
            }),
            Spec::Telemetry(s) => out.telemetry.push(Kept {
                meta: meta(r),
                spec: s.clone(),
            }),
        }
    }
    out
}

/// AuthorizationPolicy: field for field; `rules` absent or empty allows nothing.
pub fn authorization_policy(
    r: &Resource,
    s: &sec::AuthorizationPolicySpec,
) -> authz::AuthorizationPolicy {
    let action = match s.action.unwrap_or_default() {
        AuthzAction::Allow => authz::Action::Allow,
        AuthzAction::Deny => authz::Action::Deny,
        AuthzAction::Audit => authz::Action::Audit,
        AuthzAction::Custom => authz::Action::Custom,
    };
    let rules = s
        .rules
        .iter()
        .flatten()
        .map(|rule| authz::Rule {
            from: rule
                .from
                .iter()
                .flatten()
                .filter_map(|f| f.source.as_ref())
                .map(source)
                .collect(),
            to: rule
                .to
                .iter()
                .flatten()
                .filter_map(|t| t.operation.as_ref())
                .map(operation)
                .collect(),
            when: rule
                .when
                .iter()
                .map(|c| authz::Condition {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    not_values: c.not_values.clone(),
                    // Reported `unsupported:` at load time (import mode); fails closed.
                    unknown_key: unevaluable_key(&c.key),
                })
                .collect(),
        })
        .collect();
    authz::AuthorizationPolicy {
        meta: meta(r),
        selector: selector(s.selector.as_ref()),
        action,
        provider: s.provider.as_ref().map(|p| p.name.clone()),
        rules,
        dry_run: r
            .metadata
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v == "true"),
    }
}

fn source(s: &sec::Source) -> authz::Source {
    authz::Source {
        principals: s.principals.clone(),
        not_principals: s.not_principals.clone(),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        service_accounts: s.service_accounts.clone(),
        not_service_accounts: s.not_service_accounts.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    }
}

fn operation(o: &sec::Operation) -> authz::Operation {
    authz::Operation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn mtls(m: Option<&sec::Mtls>) -> peer_auth::MtlsMode {
    match m.map(|m| m.mode).unwrap_or_default() {
        MtlsMode::Unset => peer_auth::MtlsMode::Unset,
        MtlsMode::Disable => peer_auth::MtlsMode::Disable,
        MtlsMode::Permissive => peer_auth::MtlsMode::Permissive,
        MtlsMode::Strict => peer_auth::MtlsMode::Strict,
    }
}

/// PeerAuthentication (ports were range-checked by validation).
pub fn peer_authentication(
    r: &Resource,
    s: &sec::PeerAuthenticationSpec,
) -> peer_auth::PeerAuthentication {
    peer_auth::PeerAuthentication {
        meta: meta(r),
        selector: selector(s.selector.as_ref()),
        mode: mtls(s.mtls.as_ref()),
        // Without a selector, port-level modes were accepted only when redundant (validation).
        port_level: s
            .port_level_mtls
            .iter()
            .filter(|_| s.selector.is_some())
            .filter_map(|(p, m)| Some((u16::try_from(*p).ok()?, mtls(Some(m)))))
            .collect(),
    }
}

/// RequestAuthentication.
pub fn request_authentication(
    r: &Resource,
    s: &sec::RequestAuthenticationSpec,
    findings: &mut Vec<Finding>,
) -> authz::RequestAuthentication {
    let mut rules = Vec::new();
    for (i, j) in s.jwt_rules.iter().enumerate() {
        let p = format!("spec.jwtRules[{i}]");
        if !j.from_cookies.is_empty() {
            findings.push(r.finding(Severity::Unsupported, &format!("{p}.fromCookies"), "jalin reads tokens from headers and query parameters only; a token sent in a cookie is not read, so the request is treated as unauthenticated (fail closed)"));
        }
        if j.output_payload_to_header.is_some() {
            findings.push(r.finding(Severity::Unsupported, &format!("{p}.outputPayloadToHeader"), "jalin does not forward the decoded JWT payload; use `outputClaimToHeaders` for the claims the application needs"));
        }
        if j.timeout.is_some() {
            findings.push(r.finding(Severity::Unsupported, &format!("{p}.timeout"), "the JWKS fetch timeout is jalin's own (bounded, 5 s); the per-rule value is not applied"));
        }
        rules.push(authz::JwtRule {
            issuer: j.issuer.clone(),
            audiences: j.audiences.clone(),
            jwks: j.jwks.clone(),
            jwks_uri: j.jwks_uri.clone(),
            from_headers: j
                .from_headers
                .iter()
                .map(|h| authz::JwtHeader {
                    name: h.name.clone(),
                    prefix: h.prefix.clone(),
                })
                .collect(),
            from_params: j.from_params.clone(),
            forward_original_token: j.forward_original_token,
            output_claim_to_headers: j
                .output_claim_to_headers
                .iter()
                .map(|c| authz::ClaimToHeader {
                    header: c.header.clone(),
                    claim: c.claim.clone(),
                })
                .collect(),
        });
    }
    authz::RequestAuthentication {
        meta: meta(r),
        selector: selector(s.selector.as_ref()),
        jwt_rules: rules,
    }
}

/// DestinationRule: host policy, port-level policies and merged subset policies.
pub fn destination_rule(
    r: &Resource,
    s: &DestinationRuleSpec,
    findings: &mut Vec<Finding>,
) -> DestinationPolicy {
    if !s.export_to.is_empty() {
        findings.push(r.finding(Severity::Unsupported, "spec.exportTo", "jalin sends every DestinationRule to the proxies of the mesh; `exportTo` visibility is not applied"));
    }
    if s.workload_selector.is_some() {
        findings.push(r.finding(Severity::Unsupported, "spec.workloadSelector", "jalin applies a DestinationRule to every client of the host; per-client `workloadSelector` is not applied"));
    }
    let empty = dr::TrafficPolicy::default();
    let top = s.traffic_policy.as_ref().unwrap_or(&empty);
    let (traffic_policy, port_level) = policy_with_ports(r, "spec.trafficPolicy", top, findings);
    let subsets = s
        .subsets
        .iter()
        .enumerate()
        .map(|(i, sub)| {
            let merged = merge(top, sub.traffic_policy.as_ref());
            let (tp, pl) = match &sub.traffic_policy {
                Some(_) => policy_with_ports(
                    r,
                    &format!("spec.subsets[{i}].trafficPolicy"),
                    &merged,
                    &mut Vec::new(),
                ),
                None => (traffic_policy.clone(), port_level.clone()),
            };
            if let Some(own) = &sub.traffic_policy {
                // Report unsupported fields of the subset's own policy once, at its own path.
                let _ = policy_with_ports(
                    r,
                    &format!("spec.subsets[{i}].trafficPolicy"),
                    own,
                    findings,
                );
            }
            SubsetPolicy {
                name: sub.name.clone(),
                labels: sub.labels.clone(),
                traffic_policy: tp,
                port_level: pl,
            }
        })
        .collect();
    DestinationPolicy {
        meta: meta(r),
        host: s.host.clone(),
        traffic_policy,
        port_level,
        subsets,
    }
}

/// Istio merges a subset's policy over the host's field by field (a set field replaces).
fn merge(top: &dr::TrafficPolicy, sub: Option<&dr::TrafficPolicy>) -> dr::TrafficPolicy {
    let Some(sub) = sub else { return top.clone() };
    dr::TrafficPolicy {
        load_balancer: sub
            .load_balancer
            .clone()
            .or_else(|| top.load_balancer.clone()),
        connection_pool: sub
            .connection_pool
            .clone()
            .or_else(|| top.connection_pool.clone()),
        outlier_detection: sub
            .outlier_detection
            .clone()
            .or_else(|| top.outlier_detection.clone()),
        tls: sub.tls.clone().or_else(|| top.tls.clone()),
        port_level_settings: if sub.port_level_settings.is_empty() {
            top.port_level_settings.clone()
        } else {
            sub.port_level_settings.clone()
        },
        tunnel: sub.tunnel.clone().or_else(|| top.tunnel.clone()),
        proxy_protocol: sub
            .proxy_protocol
            .clone()
            .or_else(|| top.proxy_protocol.clone()),
        retry_budget: sub
            .retry_budget
            .clone()
            .or_else(|| top.retry_budget.clone()),
    }
}

fn policy_with_ports(
    r: &Resource,
    p: &str,
    tp: &dr::TrafficPolicy,
    f: &mut Vec<Finding>,
) -> (
    traffic::TrafficPolicy,
    BTreeMap<u16, traffic::TrafficPolicy>,
) {
    let base = policy(
        r,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
        f,
    );
    let mut base = base;
    if tp.tunnel.is_some() {
        f.push(r.finding(Severity::Unsupported, &format!("{p}.tunnel"), "HTTP CONNECT tunnelling to upstreams is not part of jalin's proxy; traffic goes directly to the endpoint"));
    }
    if tp.proxy_protocol.is_some() {
        f.push(r.finding(Severity::Unsupported, &format!("{p}.proxyProtocol"), "jalin does not send PROXY protocol headers upstream; the upstream sees the sidecar's address"));
    }
    if let Some(rb) = &tp.retry_budget {
        let mut b = traffic::RetryBudget::default();
        if let Some(pc) = &rb.percent {
            b.ratio = pc.value / 100.0;
        }
        if let Some(m) = rb.min_retry_concurrency {
            b.min_retries_per_second = m;
        }
        base.retry_budget = Some(b);
    }
    let mut ports = BTreeMap::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        let Some(port) = pl.port.as_ref().and_then(|x| u16::try_from(x.number).ok()) else {
            continue;
        };
        // Port-level settings replace the host's fields they set, as in Istio.
        let merged = dr::TrafficPolicy {
            load_balancer: pl
                .load_balancer
                .clone()
                .or_else(|| tp.load_balancer.clone()),
            connection_pool: pl
                .connection_pool
                .clone()
                .or_else(|| tp.connection_pool.clone()),
            outlier_detection: pl
                .outlier_detection
                .clone()
                .or_else(|| tp.outlier_detection.clone()),
            tls: pl.tls.clone().or_else(|| tp.tls.clone()),
            ..Default::default()
        };
        let mut own = Vec::new();
        let mut native = policy(
            r,
            &pp,
            merged.load_balancer.as_ref(),
            merged.connection_pool.as_ref(),
            merged.outlier_detection.as_ref(),
            pl.tls.as_ref(),
            &mut own,
        );
        native.retry_budget = base.retry_budget.clone();
        f.extend(own.into_iter().filter(|x| x.path.starts_with(&pp)));
        ports.insert(port, native);
    }
    (base, ports)
}

fn limit(v: Option<i64>) -> u32 {
    // Istio: 0 or unset means the default ("effectively unlimited").
    match v {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(traffic::UNLIMITED),
        _ => traffic::UNLIMITED,
    }
}

fn ms(v: Option<&String>) -> Option<u64> {
    v.and_then(|s| duration_ms(s))
}

fn count(v: Option<i64>) -> Option<u32> {
    v.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

fn policy(
    r: &Resource,
    p: &str,
    lb: Option<&dr::LoadBalancerSettings>,
    pool: Option<&dr::ConnectionPoolSettings>,
    od: Option<&dr::OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    f: &mut Vec<Finding>,
) -> traffic::TrafficPolicy {
    let mut out = traffic::TrafficPolicy::default();
    if let Some(lb) = lb {
        let lp = format!("{p}.loadBalancer");
        out.load_balancer = match (lb.simple, &lb.consistent_hash) {
            (Some(SimpleLb::LeastRequest), _) => traffic::LoadBalancer::LeastRequest,
            (Some(SimpleLb::RoundRobin), _) => traffic::LoadBalancer::RoundRobin,
            (Some(SimpleLb::Random), _) => traffic::LoadBalancer::Random,
            (Some(SimpleLb::Passthrough), _) => traffic::LoadBalancer::Passthrough,
            (_, Some(ch)) => consistent_hash(r, &format!("{lp}.consistentHash"), ch, f),
            _ => traffic::LoadBalancer::default(),
        };
        for (field, set) in [
            ("localityLbSetting", lb.locality_lb_setting.is_some()),
            ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
            ("warmup", lb.warmup.is_some()),
        ] {
            if set {
                f.push(r.finding(Severity::Unsupported, &format!("{lp}.{field}"), match field {
                    "localityLbSetting" => "jalin balances over all healthy endpoints of the cluster; locality-weighted distribution and failover are not applied",
                    _ => "jalin sends new endpoints full traffic at once (P2C with peak-EWMA already avoids overloading a cold endpoint); slow-start warmup is not applied",
                }));
            }
        }
    }
    if let Some(pool) = pool {
        let cp = &mut out.connection_pool;
        if let Some(tcp) = &pool.tcp {
            let tp = format!("{p}.connectionPool.tcp");
            cp.max_connections = limit(tcp.max_connections);
            if let Some(v) = ms(tcp.connect_timeout.as_ref()) {
                cp.connect_timeout_ms = v;
            }
            cp.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| traffic::TcpKeepalive {
                time_ms: ms(k.time.as_ref()),
                interval_ms: ms(k.interval.as_ref()),
                probes: count(k.probes),
            });
            cp.idle_timeout_ms = ms(tcp.idle_timeout.as_ref());
            if tcp.max_connection_duration.is_some() {
                f.push(r.finding(Severity::Unsupported, &format!("{tp}.maxConnectionDuration"), "jalin keeps upstream connections until they are idle (`idleTimeout`) or the endpoint goes away; a maximum connection lifetime is not applied"));
            }
        }
        if let Some(http) = &pool.http {
            let hp = format!("{p}.connectionPool.http");
            cp.http1_max_pending_requests = limit(http.http1_max_pending_requests);
            cp.http2_max_requests = limit(http.http2_max_requests);
            cp.max_requests_per_connection = count(http.max_requests_per_connection).unwrap_or(0);
            cp.max_retries = limit(http.max_retries);
            if let Some(v) = ms(http.idle_timeout.as_ref()) {
                cp.idle_timeout_ms = Some(v);
            }
            cp.h2_upgrade_policy = match http.h2_upgrade_policy {
                Some(dr::H2UpgradePolicy::Upgrade) => traffic::H2UpgradePolicy::Upgrade,
                Some(dr::H2UpgradePolicy::DoNotUpgrade) => traffic::H2UpgradePolicy::DoNotUpgrade,
                _ => traffic::H2UpgradePolicy::Default,
            };
            if http.use_client_protocol.is_some() {
                f.push(r.finding(Severity::Unsupported, &format!("{hp}.useClientProtocol"), "jalin always speaks multiplexed HTTP/2 mTLS between sidecars and the application's own protocol to the application; the client protocol is preserved end to end already"));
            }
            if http.max_concurrent_streams.is_some() {
                f.push(r.finding(Severity::Unsupported, &format!("{hp}.maxConcurrentStreams"), "the HTTP/2 stream limit per upstream connection is set by the proxy (bounded); `http2MaxRequests` limits the cluster's concurrent requests"));
            }
        }
    }
    if let Some(od) = od {
        let d = traffic::OutlierDetection::default();
        out.outlier_detection = Some(traffic::OutlierDetection {
            consecutive_5xx_errors: match od.consecutive_5xx_errors {
                Some(0) => None,
                Some(n) => count(Some(n)),
                None => d.consecutive_5xx_errors,
            },
            consecutive_gateway_errors: count(od.consecutive_gateway_errors).filter(|n| *n > 0),
            split_external_local_origin_errors: od
                .split_external_local_origin_errors
                .unwrap_or(false),
            consecutive_local_origin_failures: count(od.consecutive_local_origin_failures)
                .filter(|n| *n > 0),
            interval_ms: ms(od.interval.as_ref()).unwrap_or(d.interval_ms),
            base_ejection_time_ms: ms(od.base_ejection_time.as_ref())
                .unwrap_or(d.base_ejection_time_ms),
            max_ejection_time_ms: d.max_ejection_time_ms,
            max_ejection_percent: count(od.max_ejection_percent).unwrap_or(d.max_ejection_percent),
            min_health_percent: count(od.min_health_percent).unwrap_or(d.min_health_percent),
            success_rate: None,
        });
    }
    if let Some(tls) = tls {
        match tls.mode {
            None | Some(TlsMode::IstioMutual) => {
                let overrides = !tls.subject_alt_names.is_empty()
                    || tls.sni.is_some()
                    || tls.credential_name.is_some()
                    || tls.client_certificate.is_some()
                    || tls.private_key.is_some()
                    || tls.ca_certificates.is_some()
                    || tls.ca_crl.is_some()
                    || tls.insecure_skip_verify.is_some();
                if overrides {
                    f.push(r.finding(
                        Severity::Unsupported,
                        &format!("{p}.tls"),
                        "with mesh mTLS jalin presents the workload certificate and verifies the \
                         server's SPIFFE identity from the registry; certificate, SNI and SAN \
                         overrides are not applied",
                    ));
                }
            }
            Some(TlsMode::Disable) => f.push(r.finding(Severity::Unsupported, &format!("{p}.tls.mode"), "jalin never turns mesh mTLS off from the client side; relax the server with PeerAuthentication PERMISSIVE instead")),
            Some(TlsMode::Simple | TlsMode::Mutual) => f.push(r.finding(Severity::Unsupported, &format!("{p}.tls"), "TLS origination to a non-mesh upstream belongs to the egress cluster model, which this importer does not produce; traffic to this host uses mesh mTLS")),
        }
    }
    out
}

fn consistent_hash(
    r: &Resource,
    p: &str,
    ch: &dr::ConsistentHashLb,
    f: &mut Vec<Finding>,
) -> traffic::LoadBalancer {
    if ch.ring_hash.is_some() || ch.maglev.is_some() || ch.minimum_ring_size.is_some() {
        f.push(r.finding(Severity::Unsupported, p, "jalin uses one consistent-hash ring of its own size; `ringHash`, `maglev` and `minimumRingSize` tuning is not applied"));
    }
    let key = if let Some(h) = &ch.http_header_name {
        traffic::HashKey::Header(h.clone())
    } else if let Some(c) = &ch.http_cookie {
        traffic::HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl_ms: ms(c.ttl.as_ref()),
        }
    } else if let Some(q) = &ch.http_query_parameter_name {
        traffic::HashKey::QueryParameter(q.clone())
    } else {
        traffic::HashKey::SourceIp
    };
    traffic::LoadBalancer::ConsistentHash(key)
}
