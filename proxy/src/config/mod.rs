//! The proxy's configuration file: typed YAML for the admin server, listeners and services
//! (clusters with their endpoints), read strictly and validated whole before it is used.
//!
//! Every error a person sees names the file, line and column, the field path (for example
//! `listeners[1].service`), what was expected and what to do. A file is accepted whole or
//! rejected whole; nothing is applied from a file that has one error.

mod gateway;
mod path;
pub mod watch;

pub use gateway::server_tls_error;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jalin_xds::model::cluster::{Cluster, ClusterTlsMode};
use jalin_xds::model::listener::Listener;
use jalin_xds::model::peer_auth::MtlsMode;
use jalin_xds::model::route::RouteTable;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::limits::MAX_CONFIG_BYTES;
use crate::xds::ControlPlaneConfig;

/// The admin server's address when the file names none: Istio's and Envoy's admin port, on
/// loopback so it is not reachable from outside the pod or host.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:15000";

/// The admin server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/live`, `/ready`, `/metrics`, `/config_dump` and `/logging`.
    pub address: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        #[allow(clippy::expect_used)] // Invariant: the constant is a valid socket address.
        let address = DEFAULT_ADMIN_ADDRESS
            .parse()
            .expect("DEFAULT_ADMIN_ADDRESS parses");
        Self { address }
    }
}

/// The file as written, with the location of each listener and service for error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    listeners: Vec<Spanned<Listener>>,
    #[serde(default)]
    services: Vec<Spanned<Cluster>>,
    /// xDS mode: the control plane that sends the dynamic part (`crate::xds`).
    #[serde(default)]
    control_plane: Option<Spanned<ControlPlaneConfig>>,
    #[serde(default)]
    identity: Option<crate::identity::IdentitySection>,
    #[serde(default)]
    authorization: crate::authz::AuthorizationSection,
    /// Route tables (VirtualServices in the native model); a table applies to the services its
    /// `hosts` name.
    #[serde(default)]
    routes: Vec<Spanned<RouteTable>>,
    /// Access-log providers and the workload's selection labels (`crate::accesslog`).
    #[serde(default)]
    access_log: crate::accesslog::AccessLogSection,
    /// Istio `telemetry.istio.io` Telemetry documents (their `accessLogging` is applied).
    #[serde(default)]
    telemetry: Vec<Spanned<serde_json::Value>>,
}

/// A validated configuration: what the proxy runs and what `/config_dump` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyConfig {
    pub admin: AdminConfig,
    pub listeners: Vec<Listener>,
    pub services: Vec<Cluster>,
    /// Set in xDS mode: listeners, services and policies also come from this control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneConfig>,
    /// The workload's identity and mTLS settings; absent: no TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentitySection>,
    /// Authorization, request authentication and peer authentication policies.
    pub authorization: crate::authz::AuthorizationSection,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteTable>,
    /// Access-log providers and selection labels.
    #[serde(skip_serializing_if = "is_default")]
    pub access_log: crate::accesslog::AccessLogSection,
    /// Telemetry documents: the file's, then the control plane's (named `ns/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub telemetry: Vec<serde_json::Value>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Where the text of a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigOrigin {
    /// The file, or `<inline>` for text handed over in-process.
    pub file: String,
    /// SHA-256 of the text, lowercase hex: what `/config_dump` reports as the config hash.
    pub sha256: String,
}

/// A configuration error a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<inline>`.
    pub file: String,
    /// 1-based line; 0 when the error is not tied to a line (the file could not be read).
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// Field path such as `listeners[1].service`; empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl ConfigError {
    /// An error about the field at `path` of `file` that is not tied to a line (found after
    /// parsing: a value that cannot be used, a port that cannot be bound).
    pub fn field(
        file: &str,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_owned(),
            line: 0,
            column: 0,
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// Reads and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<(ProxyConfig, ConfigOrigin), ConfigError> {
    let file = path.display().to_string();
    let unreadable = |message: String| {
        ConfigError::field(
            &file,
            "",
            message,
            "check the path given with --config and the file's permissions",
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(unreadable(format!(
            "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
    parse(&file, &text)
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<(ProxyConfig, ConfigOrigin), ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let raw: FileConfig = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| syntax_error(file, text, &e))?;
    let config = validate(file, raw, Stage::File)?;
    let origin = ConfigOrigin {
        file: file.to_owned(),
        sha256: sha256_hex(text.as_bytes()),
    };
    Ok((config, origin))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn syntax_error(file: &str, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = strip_location_suffix(&err.to_string());
    if message.contains("socket address") {
        message.push_str("; expected IP:port, for example 127.0.0.1:8080 or [::1]:8080");
    }
    ConfigError {
        file: file.to_owned(),
        line,
        column,
        path: if line > 0 {
            path::yaml_path_at(text, line as usize)
        } else {
            String::new()
        },
        message,
        hint: "see ARCHITECTURE.md, Configuration and reload, for the configuration fields".into(),
    }
}

/// serde-saphyr appends " at line L, column C"; the error carries the location separately.
fn strip_location_suffix(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// What is being validated: a file as written, or the bootstrap merged with the control
/// plane's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    File,
    Merged,
}

fn validate(file: &str, raw: FileConfig, stage: Stage) -> Result<ProxyConfig, ConfigError> {
    // A bootstrap with a control plane may name the control plane's clusters in its listeners
    // (`outbound|80||echo.prod.svc.cluster.local`): they are checked once merged, and until the
    // first configuration arrives the proxy is not ready.
    let dynamic_clusters = stage == Stage::File && raw.control_plane.is_some();
    let at = |loc: serde_saphyr::Location, path: String, message: String, hint: &str| ConfigError {
        file: file.to_owned(),
        line: loc.line(),
        column: loc.column(),
        path,
        message,
        hint: hint.to_owned(),
    };

    let mut service_names: HashMap<&str, usize> = HashMap::new();
    let mut vips: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, svc) in raw.services.iter().enumerate() {
        let loc = svc.referenced;
        let c = &svc.value;
        if !is_name(&c.name) {
            return Err(at(
                loc,
                format!("services[{i}].name"),
                format!("`{}` is not a valid name", c.name),
                "use 1-253 characters of a-z, 0-9, `-`, `.`, `_` and `|`",
            ));
        }
        if let Some(first) = service_names.insert(&c.name, i) {
            return Err(at(
                loc,
                format!("services[{i}].name"),
                format!(
                    "service `{}` is already defined as services[{first}]",
                    c.name
                ),
                "give each service a unique name",
            ));
        }
        for (j, addr) in c.addresses.iter().enumerate() {
            if let Some(first) = vips.insert(*addr, i) {
                return Err(at(
                    loc,
                    format!("services[{i}].addresses[{j}]"),
                    format!("address {addr} already identifies services[{first}]"),
                    "an original destination must map to one service",
                ));
            }
        }
        let mut seen = HashSet::new();
        for (j, ep) in c.endpoints.iter().enumerate() {
            if ep.weight == 0 {
                return Err(at(
                    loc,
                    format!("services[{i}].endpoints[{j}].weight"),
                    "weight is 0; expected at least 1".into(),
                    "remove the endpoint to stop sending it traffic",
                ));
            }
            if !seen.insert(ep.address) {
                return Err(at(
                    loc,
                    format!("services[{i}].endpoints[{j}].address"),
                    format!("endpoint {} is listed twice", ep.address),
                    "list each endpoint once; use `weight` to send it more traffic",
                ));
            }
        }
    }

    let mut listener_names: HashMap<&str, usize> = HashMap::new();
    let mut bound: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let loc = l.referenced;
        let l = &l.value;
        if !is_name(&l.name) {
            return Err(at(
                loc,
                format!("listeners[{i}].name"),
                format!("`{}` is not a valid name", l.name),
                "use 1-253 characters of a-z, 0-9, `-`, `.`, `_` and `|`",
            ));
        }
        if let Some(first) = listener_names.insert(&l.name, i) {
            return Err(at(
                loc,
                format!("listeners[{i}].name"),
                format!(
                    "listener `{}` is already defined as listeners[{first}]",
                    l.name
                ),
                "give each listener a unique name",
            ));
        }
        let clash = l.address == raw.admin.address;
        if l.address.port() != 0 && (clash || bound.insert(l.address, i).is_some()) {
            return Err(at(
                loc,
                format!("listeners[{i}].address"),
                format!(
                    "address {} is already used by another listener or the admin server",
                    l.address
                ),
                "give each listener its own port",
            ));
        }
        if let Some(svc) = &l.service
            && !service_names.contains_key(svc.as_str())
            && !(dynamic_clusters && crate::xds::resolve::IstioCluster::parse(svc).is_some())
        {
            {
                let mut known: Vec<&str> = service_names.keys().copied().collect();
                known.sort_unstable();
                return Err(at(
                    loc,
                    format!("listeners[{i}].service"),
                    format!(
                        "unknown service `{svc}`; defined services: [{}]",
                        known.join(", ")
                    ),
                    "define it under `services:` or fix the name",
                ));
            }
        }
    }

    for (i, l) in raw.listeners.iter().enumerate() {
        gateway::check_listener(file, i, l.referenced, &l.value)?;
    }
    if let Some(cp) = &raw.control_plane
        && let Err(p) = cp.value.validate()
    {
        return Err(at(
            cp.referenced,
            format!("control_plane.{}", p.path),
            p.message,
            &p.hint,
        ));
    }
    if raw.identity.is_none() {
        let mtls =
            raw.listeners.iter().enumerate().find(|(_, l)| {
                matches!(l.value.mtls, Some(MtlsMode::Strict | MtlsMode::Permissive))
            });
        let tls = raw.services.iter().enumerate().find(|(_, s)| {
            s.value
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == ClusterTlsMode::IstioMutual)
        });
        if let Some((i, l)) = mtls {
            return Err(at(
                l.referenced,
                format!("listeners[{i}].mtls"),
                "mTLS needs the workload's certificate".into(),
                "add an `identity` section, or set `mtls: DISABLE`",
            ));
        }
        if let Some((i, s)) = tls {
            return Err(at(
                s.referenced,
                format!("services[{i}].tls"),
                "istio_mutual needs the workload's certificate".into(),
                "add an `identity` section",
            ));
        }
    }
    for (i, s) in raw.services.iter().enumerate() {
        let all = std::iter::once((format!("services[{i}].tls"), &s.value.tls)).chain(
            s.value
                .endpoints
                .iter()
                .enumerate()
                .map(|(j, e)| (format!("services[{i}].endpoints[{j}].tls"), &e.tls)),
        );
        for (path, t) in all {
            let Some(t) = t else { continue };
            if t.mode != ClusterTlsMode::IstioMutual {
                continue;
            }
            let ok = t
                .identity
                .as_deref()
                .is_some_and(|id| jalin_ca::spiffe::SpiffeId::parse(id).is_ok());
            if !ok {
                return Err(at(
                    s.referenced,
                    format!("{path}.identity"),
                    format!(
                        "{:?} is not a SPIFFE ID",
                        t.identity.as_deref().unwrap_or("")
                    ),
                    "name the server's identity, e.g. spiffe://cluster.local/ns/app/sa/server",
                ));
            }
        }
    }
    for (i, table) in raw.routes.iter().enumerate() {
        let loc = table.referenced;
        if let Err(e) = crate::route::CompiledRouteTable::compile(&table.value) {
            return Err(at(
                loc,
                format!("routes[{i}].{}", e.path),
                e.message,
                "fix the route; see xds/src/model/route.rs for the fields",
            ));
        }
        for (r, route) in table.value.http.iter().enumerate() {
            let mirrors = route
                .mirror
                .iter()
                .map(|m| (&m.destination, "mirror".to_owned()));
            let dests = route
                .destinations
                .iter()
                .enumerate()
                .map(|(d, rd)| (&rd.destination, format!("destinations[{d}]")));
            for (dest, field) in dests.chain(mirrors) {
                let path = format!("routes[{i}].http[{r}].{field}");
                let Some(svc) = raw.services.iter().find(|s| s.value.name == dest.host) else {
                    let mut known: Vec<&str> = service_names.keys().copied().collect();
                    known.sort_unstable();
                    return Err(at(
                        loc,
                        format!("{path}.host"),
                        format!(
                            "unknown service `{}`; defined services: [{}]",
                            dest.host,
                            known.join(", ")
                        ),
                        "a destination host names a service under `services:`",
                    ));
                };
                if let Some(subset) = &dest.subset
                    && !svc.value.subsets.iter().any(|s| &s.name == subset)
                {
                    return Err(at(
                        loc,
                        format!("{path}.subset"),
                        format!("service `{}` has no subset `{subset}`", dest.host),
                        "define it under the service's `subsets:` or fix the name",
                    ));
                }
            }
        }
    }

    let telemetry: Vec<serde_json::Value> = raw.telemetry.iter().map(|t| t.value.clone()).collect();
    let workload = telemetry_workload(
        &raw.access_log,
        raw.identity.as_ref(),
        raw.control_plane.as_ref().map(|c| &c.value),
        &raw.authorization.root_namespace,
    );
    if let Err(e) = crate::accesslog::compile(&telemetry, &raw.access_log, &workload) {
        let loc = e
            .document
            .and_then(|i| raw.telemetry.get(i))
            .map_or(Location::UNKNOWN, |t| t.referenced);
        return Err(at(loc, e.path, e.message, &e.hint));
    }

    Ok(ProxyConfig {
        access_log: raw.access_log,
        telemetry,
        admin: raw.admin,
        routes: raw.routes.into_iter().map(|r| r.value).collect(),
        listeners: raw.listeners.into_iter().map(|l| l.value).collect(),
        services: raw.services.into_iter().map(|s| s.value).collect(),
        control_plane: raw.control_plane.map(|c| c.value),
        identity: raw.identity,
        authorization: raw.authorization,
    })
}

/// Validates a configuration assembled in memory (the bootstrap merged with what the control
/// plane sent) with the same rules as a file; errors carry no line, only `source` and the path.
pub fn validate_config(source: &str, config: ProxyConfig) -> Result<ProxyConfig, ConfigError> {
    fn span<T>(v: T) -> Spanned<T> {
        Spanned::new(v, Location::UNKNOWN, Location::UNKNOWN)
    }
    let raw = FileConfig {
        admin: config.admin,
        listeners: config.listeners.into_iter().map(span).collect(),
        services: config.services.into_iter().map(span).collect(),
        control_plane: config.control_plane.map(span),
        identity: config.identity,
        authorization: config.authorization,
        routes: config.routes.into_iter().map(span).collect(),
        access_log: config.access_log,
        telemetry: config.telemetry.into_iter().map(span).collect(),
    };
    validate(source, raw, Stage::Merged)
}

/// The workload Telemetry selection sees: namespace and labels from `access_log`, else the
/// identity, else the control plane node.
fn telemetry_workload(
    section: &crate::accesslog::AccessLogSection,
    identity: Option<&crate::identity::IdentitySection>,
    control_plane: Option<&ControlPlaneConfig>,
    root_namespace: &str,
) -> crate::accesslog::select::Workload {
    let (namespace, labels) = match (identity, control_plane) {
        (Some(id), _) => (id.namespace.clone(), id.labels.clone()),
        (None, Some(cp)) => (cp.node.namespace.clone(), cp.node.labels.clone()),
        (None, None) => (String::new(), Default::default()),
    };
    let root_namespace = if root_namespace.is_empty() {
        jalin_xds::authz::DEFAULT_ROOT_NAMESPACE
    } else {
        root_namespace
    };
    crate::accesslog::select::Workload {
        root_namespace: root_namespace.to_owned(),
        namespace: section.namespace.clone().unwrap_or(namespace),
        labels: if section.labels.is_empty() {
            labels
        } else {
            section.labels.clone()
        },
    }
}

impl ProxyConfig {
    /// The workload Telemetry selection sees for this configuration.
    pub fn telemetry_workload(&self) -> crate::accesslog::select::Workload {
        telemetry_workload(
            &self.access_log,
            self.identity.as_ref(),
            self.control_plane.as_ref(),
            &self.authorization.root_namespace,
        )
    }
}

/// DNS-label-like names, so they are safe in metric labels and logs; `|` too, for Istio's
/// cluster names (`outbound|8080|v2|reviews.prod.svc.cluster.local`) sent by the control plane.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._|".contains(&b))
}

/// Where the configuration comes from: a file (watched and reloaded) or text held in memory.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file; reloaded on SIGHUP and on change.
    File(PathBuf),
    /// YAML text (tests, embedding); never reloaded.
    Inline(String),
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<(ProxyConfig, ConfigOrigin), ConfigError> {
        match self {
            ConfigSource::File(p) => load_file(p),
            ConfigSource::Inline(text) => parse("<inline>", text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: out
    address: 127.0.0.1:0
    direction: outbound
    service: echo
services:
  - name: echo
    endpoints:
      - address: 127.0.0.1:8080
        labels: { version: v1 }
      - address: 127.0.0.1:8081
        weight: 3
";

    #[test]
    fn good_file_parses_with_defaults() {
        let (cfg, origin) = parse("f.yaml", GOOD).unwrap();
        assert_eq!(cfg.listeners[0].service.as_deref(), Some("echo"));
        assert_eq!(cfg.services[0].endpoints[0].weight, 1);
        assert_eq!(cfg.services[0].endpoints[1].weight, 3);
        assert_eq!(cfg.services[0].endpoints[0].labels["version"], "v1");
        assert_eq!(origin.sha256.len(), 64);
    }

    #[test]
    fn unknown_field_names_line_and_path() {
        let text = GOOD.replace(
            "    direction: outbound",
            "    direction: outbound\n    colour: red",
        );
        let err = parse("f.yaml", &text).unwrap_err();
        assert_eq!(err.line, 7, "{err}");
        assert_eq!(err.path, "listeners[0].colour", "{err}");
        assert!(err.message.contains("colour"), "{err}");
        assert!(err.to_string().starts_with("f.yaml:7:"), "{err}");
    }

    #[test]
    fn bad_address_names_its_line() {
        let text = GOOD.replace("127.0.0.1:8081", "not-an-address");
        let err = parse("f.yaml", &text).unwrap_err();
        assert_eq!(err.line, 13, "{err}");
        assert!(err.to_string().contains("expected IP:port"), "{err}");
        assert_eq!(err.path, "services[0].endpoints[1].address", "{err}");
    }

    #[test]
    fn unknown_service_is_rejected_with_the_listener_line() {
        let text = GOOD.replace("service: echo", "service: nope");
        let err = parse("f.yaml", &text).unwrap_err();
        assert_eq!(err.path, "listeners[0].service");
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("[echo]"), "{err}");
    }

    #[test]
    fn zero_weight_and_duplicates_are_rejected() {
        let err = parse("f.yaml", &GOOD.replace("weight: 3", "weight: 0")).unwrap_err();
        assert_eq!(err.path, "services[0].endpoints[1].weight");
        let err = parse("f.yaml", &GOOD.replace("8081", "8080")).unwrap_err();
        assert_eq!(err.path, "services[0].endpoints[1].address");
    }

    #[test]
    fn traffic_policy_is_carried() {
        let text = format!(
            "{GOOD}    policy:\n      load_balancer: round_robin\n      connection_pool:\n        max_connections: 10\n"
        );
        let (cfg, _) = parse("f.yaml", &text).unwrap();
        assert_eq!(cfg.services[0].policy.connection_pool.max_connections, 10);
    }

    fn with_routes(routes: &str) -> String {
        format!(
            "{GOOD}    subsets:\n      - name: v1\n        labels: {{ version: v1 }}\nroutes:\n{routes}"
        )
    }

    #[test]
    fn routes_and_subsets_parse() {
        let text = with_routes(
            "  - meta: { name: echo, namespace: default }
    hosts: [echo]
    http:
      - destinations:
          - destination: { host: echo, subset: v1 }
            weight: 100
",
        );
        let (cfg, _) = parse("f.yaml", &text).unwrap();
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.services[0].subsets[0].name, "v1");
    }

    #[test]
    fn route_to_an_unknown_subset_names_the_field() {
        let text = with_routes(
            "  - meta: { name: echo, namespace: default }
    hosts: [echo]
    http:
      - destinations:
          - destination: { host: echo, subset: v9 }
            weight: 100
",
        );
        let e = parse("f.yaml", &text).unwrap_err();
        assert_eq!(e.path, "routes[0].http[0].destinations[0].subset");
        assert!(e.message.contains("no subset `v9`"), "{e}");
        assert!(e.line > 0);
    }

    #[test]
    fn route_to_an_unknown_service_names_the_field() {
        let text = with_routes(
            "  - meta: { name: echo, namespace: default }
    hosts: [echo]
    http:
      - destinations:
          - destination: { host: nope }
            weight: 100
",
        );
        let e = parse("f.yaml", &text).unwrap_err();
        assert_eq!(e.path, "routes[0].http[0].destinations[0].host");
        assert!(e.message.contains("unknown service `nope`"), "{e}");
    }

    #[test]
    fn invalid_route_regex_is_rejected_with_its_path() {
        let text = with_routes(
            "  - meta: { name: echo, namespace: default }
    hosts: [echo]
    http:
      - matches: [{ uri: { regex: \"(\" } }]
        destinations:
          - destination: { host: echo }
            weight: 100
",
        );
        let e = parse("f.yaml", &text).unwrap_err();
        assert!(e.path.starts_with("routes[0].http[0].match[0]"), "{e}");
    }

    #[test]
    fn a_bootstrap_listener_may_name_a_control_plane_cluster() {
        let listener = "listeners:\n  - name: out\n    address: 127.0.0.1:0\n    direction: outbound\n    service: outbound|80||echo.prod.svc.cluster.local\n";
        let cp = "control_plane:\n  address: 127.0.0.1:15010\n  insecure_plaintext: true\n  node: { id: n, namespace: prod }\n";
        let (cfg, _) = parse(
            "f.yaml",
            &format!("admin:\n  address: 127.0.0.1:0\n{cp}{listener}"),
        )
        .unwrap();
        // Merged without that cluster, it is refused.
        let e = validate_config("f.yaml + xDS", cfg).unwrap_err();
        assert_eq!(e.path, "listeners[0].service");
        // Without a control plane, or with a name that is not a control plane's, it is a typo.
        let e = parse(
            "f.yaml",
            &format!("admin:\n  address: 127.0.0.1:0\n{listener}"),
        )
        .unwrap_err();
        assert_eq!(e.path, "listeners[0].service");
        let typo = listener.replace("outbound|80||echo.prod.svc.cluster.local", "ech0");
        let e = parse(
            "f.yaml",
            &format!("admin:\n  address: 127.0.0.1:0\n{cp}{typo}"),
        )
        .unwrap_err();
        assert_eq!(e.path, "listeners[0].service");
    }
}
