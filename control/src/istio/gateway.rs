//! Istio Gateway binding: which VirtualServices apply at which Gateway, and with which hosts.
//!
//! Semantics (Istio `networking.v1.Gateway` and `VirtualService.gateways`/`hosts`):
//! - a VirtualService applies at the Gateways its `spec.gateways` names (`namespace/name`, short
//!   names resolved in the VirtualService's namespace, done in [`super::routes`]);
//! - at a Gateway, each of its hosts is kept when it intersects a host of one of the Gateway's
//!   servers: a server host is `namespace/dnsName` (no namespace part: `*/`; `.`: the Gateway's
//!   namespace) and selects VirtualServices of that namespace; the dnsName is `*`, `*.suffix` or
//!   exact. Where one side is a wildcard that covers the other, the narrower host is kept (a
//!   VirtualService host `*` at a server `api.gov.example` serves `api.gov.example`), as Istio's
//!   gateway host intersection does;
//! - hosts that match no server are dropped at that Gateway, with a warning on `spec.hosts[j]`; a
//!   Gateway that does not exist is a warning on `spec.gateways[i]` (Istio analyzer IST0101);
//! - `httpsRedirect: true` on a plaintext server (HTTP, HTTP2, GRPC) answers that server's port
//!   with a 301 to `https`, for the hosts it serves: the binding carries those ports so the route
//!   table sent to the gateway starts with a redirect route matching them. On an HTTPS server the
//!   flag changes nothing (Envoy's `require_tls` is met by the TLS connection itself); redirecting
//!   there would send clients back to the same port forever.
//!
//! Pure: no I/O; the translation and the importer both call [`bind`].

use std::collections::BTreeMap;

use super::convert::NativeConfig;
use super::diag::{Finding, Severity};
use super::routes::MESH_GATEWAY;
use super::service::GatewaySpec;

/// Finding code: a VirtualService names a Gateway that does not exist (Istio IST0101).
pub const CODE_GATEWAY_NOT_FOUND: &str = "lint/gateway-not-found";
/// Finding code: a VirtualService host that no server of its Gateway serves.
pub const CODE_HOST_NOT_ON_GATEWAY: &str = "lint/host-not-on-gateway";
/// Finding code: a Gateway without `selector`.
pub const CODE_SELECTS_NOTHING: &str = "lint/gateway-selects-nothing";

/// One VirtualService as it applies at one Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayBinding {
    /// The Gateway, `namespace/name`.
    pub gateway: String,
    /// The VirtualService, `namespace/name` (an index into [`NativeConfig::routes`] by key).
    pub route: String,
    /// Its hosts that the Gateway's servers serve, narrowed as Istio does, in order.
    pub hosts: Vec<String>,
    /// Ports of servers with `tls.httpsRedirect: true` that serve one of `hosts`.
    pub https_redirect_ports: Vec<u16>,
}

/// Every binding of VirtualServices to Gateways, and what was dropped.
#[derive(Debug, Default)]
pub struct Bindings {
    pub bindings: Vec<GatewayBinding>,
    /// Warnings about missing Gateways and hosts no server serves.
    pub findings: Vec<Finding>,
}

/// The `(namespace, dnsName)` of a server host.
fn split_server_host<'a>(host: &'a str, gateway_ns: &'a str) -> (&'a str, &'a str) {
    match host.split_once('/') {
        Some((".", dns)) => (gateway_ns, dns),
        Some((ns, dns)) => (ns, dns),
        None => ("*", host),
    }
}

/// True when the host pattern `pattern` (`*`, `*.suffix` or exact) covers `host` (which may
/// itself be a wildcard: `*.a.example` is covered by `*.example`). A wildcard never covers its
/// bare suffix (`*.example` does not cover `example` or `.example`). The gateway binding, the
/// Sidecar egress scope and lint share it.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// The host a VirtualService of `vs_ns` serves through the server host `server_host` of a Gateway
/// of `gateway_ns`: the narrower of the two when one covers the other, else none.
pub fn server_host_match(
    server_host: &str,
    gateway_ns: &str,
    vs_ns: &str,
    vs_host: &str,
) -> Option<String> {
    let (ns, dns) = split_server_host(server_host, gateway_ns);
    if ns != "*" && ns != vs_ns {
        return None;
    }
    if covers(dns, vs_host) {
        Some(vs_host.to_owned())
    } else if covers(vs_host, dns) {
        Some(dns.to_owned())
    } else {
        None
    }
}

/// The hosts of a VirtualService of `vs_ns` that a Gateway serves (each host's matches, in the
/// order of the VirtualService's hosts; [`bind`] drops repeats), and the httpsRedirect ports
/// involved. An empty list at index `j` means host `j` matched no server.
fn serve(
    gateway: &GatewaySpec,
    gateway_ns: &str,
    vs_ns: &str,
    hosts: &[String],
) -> (Vec<Vec<String>>, Vec<u16>) {
    let mut redirect = Vec::new();
    let per_host = hosts
        .iter()
        .map(|h| {
            let mut out: Vec<String> = Vec::new();
            for s in &gateway.servers {
                let before = out.len();
                out.extend(
                    s.hosts
                        .iter()
                        .filter_map(|sh| server_host_match(sh, gateway_ns, vs_ns, h)),
                );
                if out.len() > before
                    && s.tls.as_ref().and_then(|t| t.https_redirect) == Some(true)
                    && is_plaintext(s)
                    && let Some(port) = s.port.as_ref().and_then(|p| u16::try_from(p.number).ok())
                    && !redirect.contains(&port)
                {
                    redirect.push(port);
                }
            }
            out
        })
        .collect();
    (per_host, redirect)
}

/// Whether a Gateway server takes plaintext HTTP, the only kind `httpsRedirect` redirects.
fn is_plaintext(server: &super::service::Server) -> bool {
    server
        .port
        .as_ref()
        .and_then(|p| p.protocol.as_deref())
        .is_some_and(|p| {
            ["HTTP", "HTTP2", "GRPC"]
                .iter()
                .any(|k| p.eq_ignore_ascii_case(k))
        })
}

/// Binds every VirtualService of `native` to the Gateways it names. `qualify` turns a
/// VirtualService host into the form the proxies match (short names fully qualified).
pub fn bind(native: &NativeConfig, qualify: &dyn Fn(&str, &str) -> String) -> Bindings {
    let gateways: BTreeMap<String, &super::convert::Kept<GatewaySpec>> =
        native.gateways.iter().map(|g| (g.meta.key(), g)).collect();
    let mut out = Bindings::default();
    for g in &native.gateways {
        if g.spec.selector.is_empty() {
            let mut f = native.finding(
                "Gateway",
                &g.meta,
                Severity::Warning,
                "spec.selector",
                "no `selector`: this Gateway selects no jalin proxy (a proxy is a gateway when its labels match a Gateway's selector), so nothing serves its routes; set the gateway workload's labels, for example `istio: ingressgateway`",
            );
            f.code = Some(CODE_SELECTS_NOTHING.into());
            out.findings.push(f);
        }
    }
    for bound in &native.routes {
        let meta = &bound.table.meta;
        let vs_ns = meta.namespace.as_str();
        let hosts: Vec<String> = bound
            .table
            .hosts
            .iter()
            .map(|h| qualify(h, vs_ns))
            .collect();
        for (i, name) in bound.gateways.iter().enumerate() {
            if name == MESH_GATEWAY {
                continue;
            }
            let Some(gw) = gateways.get(name) else {
                let known: Vec<&str> = gateways.keys().map(String::as_str).collect();
                let mut f = native.finding(
                    "VirtualService",
                    meta,
                    Severity::Warning,
                    &format!("spec.gateways[{i}]"),
                    format!(
                        "Gateway `{name}` not found (Istio IST0101), so no gateway serves these routes for it; define a Gateway with metadata.namespace `{}` and metadata.name `{}`, or name an existing one ({}); a name without `namespace/` means the VirtualService's namespace",
                        name.split('/').next().unwrap_or_default(),
                        name.rsplit('/').next().unwrap_or_default(),
                        if known.is_empty() { "none are defined".to_owned() } else { known.join(", ") },
                    ),
                );
                f.code = Some(CODE_GATEWAY_NOT_FOUND.into());
                out.findings.push(f);
                continue;
            };
            let (per_host, redirect) = serve(&gw.spec, &gw.meta.namespace, vs_ns, &hosts);
            let server_hosts: Vec<&str> = gw
                .spec
                .servers
                .iter()
                .flat_map(|s| s.hosts.iter().map(String::as_str))
                .collect();
            let mut kept: Vec<String> = Vec::new();
            for (j, served) in per_host.into_iter().enumerate() {
                if served.is_empty() {
                    let mut f = native.finding(
                        "VirtualService",
                        meta,
                        Severity::Warning,
                        &format!("spec.hosts[{j}]"),
                        format!(
                            "host `{}` matches no server host of Gateway `{name}` ({}), so it is dropped there; add it to a server's `hosts` (for a VirtualService of namespace `{vs_ns}`: `{vs_ns}/<host>`, `*/<host>` or `<host>`) or remove it",
                            hosts[j],
                            server_hosts.join(", "),
                        ),
                    );
                    f.code = Some(CODE_HOST_NOT_ON_GATEWAY.into());
                    out.findings.push(f);
                }
                for h in served {
                    if !kept.contains(&h) {
                        kept.push(h);
                    }
                }
            }
            if !kept.is_empty() {
                out.bindings.push(GatewayBinding {
                    gateway: name.clone(),
                    route: meta.key(),
                    hosts: kept,
                    https_redirect_ports: redirect,
                });
            }
        }
    }
    out
}

/// One line per Gateway saying which workloads it selects and what it serves, for the import
/// report: `gateway ns/name (file:line) selects k=v: serves VirtualService ns/name for hosts`.
pub fn summary(native: &NativeConfig, bound: &Bindings) -> Vec<String> {
    native
        .gateways
        .iter()
        .map(|g| {
            let key = g.meta.key();
            let at = g
                .meta
                .source
                .as_ref()
                .map(|s| format!(" ({}:{})", s.file, s.line))
                .unwrap_or_default();
            let selects = if g.spec.selector.is_empty() {
                "no selector, so no proxy".to_owned()
            } else {
                let labels: Vec<String> = g
                    .spec
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("proxies labelled {}", labels.join(","))
            };
            let served: Vec<String> = bound
                .bindings
                .iter()
                .filter(|b| b.gateway == key)
                .map(|b| format!("VirtualService {} for {}", b.route, b.hosts.join(", ")))
                .collect();
            let serves = if served.is_empty() {
                "no VirtualService is bound to it".to_owned()
            } else {
                format!("serves {}", served.join("; "))
            };
            format!("gateway {key}{at} selects {selects}: {serves}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts_select_by_namespace_and_narrow_wildcards() {
        // (server host, VirtualService namespace, VirtualService host, served host); the
        // Gateway is in namespace `gw`.
        let cases = [
            // No namespace part: any namespace.
            (
                "api.gov.example",
                "a",
                "api.gov.example",
                Some("api.gov.example"),
            ),
            ("a/api.gov.example", "b", "api.gov.example", None),
            (
                "./api.gov.example",
                "gw",
                "api.gov.example",
                Some("api.gov.example"),
            ),
            ("./api.gov.example", "a", "api.gov.example", None),
            (
                "*/*.gov.example",
                "a",
                "api.gov.example",
                Some("api.gov.example"),
            ),
            // The VirtualService's wildcard narrows to the server's host.
            ("api.gov.example", "a", "*", Some("api.gov.example")),
            (
                "api.gov.example",
                "a",
                "*.gov.example",
                Some("api.gov.example"),
            ),
            (
                "*.gov.example",
                "a",
                "*.x.gov.example",
                Some("*.x.gov.example"),
            ),
            ("*.gov.example", "a", "gov.example", None),
            ("api.gov.example", "a", "web.gov.example", None),
        ];
        for (server, ns, host, want) in cases {
            assert_eq!(
                server_host_match(server, "gw", ns, host).as_deref(),
                want,
                "{server} / {ns} {host}"
            );
        }
        assert!(covers("*", "anything"));
        assert!(!covers("*.example", ".example"));
    }
}
