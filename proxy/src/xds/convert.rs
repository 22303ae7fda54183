//! From the resources the control plane sent to the proxy's configuration: decode each jalin kind
//! into its native model type, join clusters with their endpoints, check what only the dynamic
//! part can get wrong, and merge it with the bootstrap's static part. Pure: no I/O.
//!
//! The contract (the control plane's translation writes the same):
//! - `Listener` `<name>`: [`Listener`];
//! - `Cluster` `<name>` (Istio's `outbound|port|subset|host`): [`Cluster`], with its endpoints
//!   inline or (usually) in the `Endpoints` resource of the same name;
//! - `Endpoints` `<cluster name>`: a JSON array of [`Endpoint`];
//! - `Route` `<ns/name>`: [`RouteTable`], destinations as fully qualified hosts (optional port
//!   and subset), rewritten here to the names of the clusters received (`super::resolve`);
//! - `AuthorizationPolicy` / `PeerAuthentication` / `RequestAuthentication` `<ns/name>`: the
//!   authz model types;
//! - `TrustBundle` `<trust domain>`: [`TrustBundle`];
//! - `Telemetry` `<ns/name>`: an Istio Telemetry document as JSON (or its `spec` alone), merged
//!   into the configuration's `telemetry` list; its `accessLogging` is compiled with the file's
//!   (`crate::accesslog`), so a bad one is refused like a bad file.

use std::collections::{BTreeMap, HashMap, HashSet};

use jalin_xds::model::authz::{AuthorizationPolicy, RequestAuthentication};
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::model::listener::Listener;
use jalin_xds::model::peer_auth::PeerAuthentication;
use jalin_xds::model::route::RouteTable;
use jalin_xds::transport::{AppliedConfig, Decoded, Kind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ConfigOrigin, ProxyConfig};

/// A trust bundle: the roots of one trust domain (several during a root rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Root certificates, PEM.
    pub roots_pem: String,
}

/// Versions in force: short kind name (`Listener`, `Cluster`, ...) -> resource name -> version.
pub type Versions = BTreeMap<String, BTreeMap<String, String>>;

/// The dynamic part of the configuration, decoded from one complete set of xDS resources.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DynamicConfig {
    /// Listeners, in name order.
    pub listeners: Vec<Listener>,
    /// Services (clusters) with their endpoints joined in, in name order.
    pub services: Vec<Cluster>,
    /// HTTP route tables, in `ns/name` order.
    pub routes: Vec<RouteTable>,
    /// Authorization policies, in `ns/name` order.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// Peer authentication policies, in `ns/name` order.
    pub peer_authentications: Vec<PeerAuthentication>,
    /// Request authentication (JWT) policies, in `ns/name` order.
    pub request_authentications: Vec<RequestAuthentication>,
    /// Trust bundles, by trust domain.
    pub trust_bundles: Vec<TrustBundle>,
    /// Telemetry resources as sent.
    pub telemetry: BTreeMap<String, serde_json::Value>,
    /// Versions of every resource this was decoded from.
    pub versions: Versions,
    /// A content hash over every (kind, name, version): the dynamic part's identity.
    pub digest: String,
}

/// Why a set of resources cannot become the proxy's configuration. Its text is the NACK message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {message}")]
pub struct ConvertError {
    /// Short kind name.
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn short(kind: Kind) -> &'static str {
    kind.type_url().rsplit('.').next().unwrap_or("Resource")
}

fn decode_all<T: DeserializeOwned>(
    applied: &AppliedConfig,
    kind: Kind,
) -> Result<Vec<Decoded<T>>, ConvertError> {
    applied.decode_kind::<T>(kind).map_err(|e| ConvertError {
        kind: short(kind),
        name: String::new(),
        message: format!("{e}; the control plane and proxy disagree on the model (versions?)"),
    })
}

/// The bodies of every resource of `kind` in `applied`.
fn bodies<T: DeserializeOwned>(
    applied: &AppliedConfig,
    kind: Kind,
) -> Result<Vec<T>, ConvertError> {
    Ok(decode_all::<T>(applied, kind)?
        .into_iter()
        .map(|d| d.body)
        .collect())
}

impl DynamicConfig {
    /// Decodes every jalin resource of `applied` and joins clusters with their endpoints.
    pub fn decode(applied: &AppliedConfig) -> Result<Self, ConvertError> {
        let listeners: Vec<Listener> = decode_all::<Listener>(applied, Kind::Listener)?
            .into_iter()
            .map(|d| named(d, |l| &l.name))
            .collect::<Result<_, _>>()?;
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> =
            decode_all::<Vec<Endpoint>>(applied, Kind::Endpoints)?
                .into_iter()
                .map(|d| (d.name, d.body))
                .collect();
        let mut services = Vec::new();
        for d in decode_all::<Cluster>(applied, Kind::Cluster)? {
            let mut cluster = named(d, |c| &c.name)?;
            if let Some(eps) = endpoints.remove(&cluster.name) {
                if !cluster.endpoints.is_empty() {
                    return Err(ConvertError {
                        kind: "Cluster",
                        name: cluster.name,
                        message: "carries endpoints inline and has an Endpoints resource; \
                                  send them in one place"
                            .into(),
                    });
                }
                cluster.endpoints = eps;
            }
            services.push(cluster);
        }
        // Endpoints left over belong to clusters this proxy was not sent (scoping); unused.
        let mut routes: Vec<RouteTable> = bodies(applied, Kind::Route)?;
        for (name, why) in super::resolve::resolve_destinations(&mut routes, &services)? {
            // Istio's behaviour for a route to a service it does not know: 503 at request time.
            tracing::warn!(cluster = %name, reason = %why, "route destination not received; its requests answer 503");
            services.push(super::resolve::empty_cluster(name));
        }
        let authorization_policies =
            bodies::<AuthorizationPolicy>(applied, Kind::AuthorizationPolicy)?;
        let peer_authentications = bodies::<PeerAuthentication>(applied, Kind::PeerAuthentication)?;
        let request_authentications =
            bodies::<RequestAuthentication>(applied, Kind::RequestAuthentication)?;
        let trust_bundles = bodies::<TrustBundle>(applied, Kind::TrustBundle)?;
        let telemetry = decode_all::<serde_json::Value>(applied, Kind::Telemetry)?
            .into_iter()
            .map(|d| (d.name, d.body))
            .collect();
        let versions: Versions = applied
            .versions()
            .into_iter()
            .map(|(type_url, names)| {
                let kind = Kind::from_type_url(&type_url).map_or(type_url, |k| short(k).into());
                (kind, names)
            })
            .collect();
        let digest = digest(&versions);
        let out = DynamicConfig {
            listeners,
            services,
            routes,
            authorization_policies,
            peer_authentications,
            request_authentications,
            trust_bundles,
            telemetry,
            versions,
            digest,
        };
        out.check()?;
        Ok(out)
    }

    /// What the file validation cannot see: routes and authorization policies must compile.
    fn check(&self) -> Result<(), ConvertError> {
        for table in &self.routes {
            crate::route::CompiledRouteTable::compile(table).map_err(|e| ConvertError {
                kind: "Route",
                name: table.meta.key(),
                message: e.to_string(),
            })?;
        }
        jalin_xds::authz::Engine::compile(
            &self.authorization_policies,
            &jalin_xds::authz::EngineConfig::default(),
        )
        .map_err(|e| ConvertError {
            kind: "AuthorizationPolicy",
            name: String::new(),
            message: e.to_string(),
        })?;
        let mut seen = HashSet::new();
        for p in &self.peer_authentications {
            if !seen.insert(p.meta.key()) {
                return Err(ConvertError {
                    kind: "PeerAuthentication",
                    name: p.meta.key(),
                    message: "is sent twice".into(),
                });
            }
        }
        Ok(())
    }

    /// Number of resources.
    pub fn resources(&self) -> usize {
        self.versions.values().map(BTreeMap::len).sum()
    }
}

/// The body of `d`, checked to carry the resource's own name.
fn named<T>(d: Decoded<T>, name_of: impl Fn(&T) -> &String) -> Result<T, ConvertError> {
    if name_of(&d.body) != &d.name {
        return Err(ConvertError {
            kind: short(d.kind),
            name: d.name.clone(),
            message: format!(
                "the body is named {:?}; a resource's body must carry its resource name",
                name_of(&d.body)
            ),
        });
    }
    Ok(d.body)
}

fn digest(versions: &Versions) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for (kind, names) in versions {
        for (name, version) in names {
            parts.push(kind.as_bytes());
            parts.push(name.as_bytes());
            parts.push(version.as_bytes());
        }
    }
    jalin_xds::transport::resource::content_version(&parts)
}

/// Merges the bootstrap's static part with the dynamic part and validates the result exactly as
/// a file is validated. Static listeners and services come first; a dynamic one with a static
/// one's name is refused (the bootstrap is not overridden silently).
pub fn merge(
    bootstrap: ProxyConfig,
    origin: &ConfigOrigin,
    dynamic: &DynamicConfig,
) -> Result<(ProxyConfig, ConfigOrigin), ConfigError> {
    let source = format!("{} + xDS", origin.file);
    let static_listeners = bootstrap.listeners.len();
    let static_services = bootstrap.services.len();
    let mut config = bootstrap;
    append(
        &source,
        "listeners",
        &mut config.listeners,
        &dynamic.listeners,
        |l| l.name.clone(),
    )?;
    append(
        &source,
        "services",
        &mut config.services,
        &dynamic.services,
        |c| c.name.clone(),
    )?;
    append(
        &source,
        "routes",
        &mut config.routes,
        &dynamic.routes,
        |r| r.meta.key(),
    )?;
    let a = &mut config.authorization;
    append(
        &source,
        "authorization.policies",
        &mut a.policies,
        &dynamic.authorization_policies,
        |p| p.meta.key(),
    )?;
    append(
        &source,
        "authorization.peer_authentications",
        &mut a.peer_authentications,
        &dynamic.peer_authentications,
        |p| p.meta.key(),
    )?;
    append(
        &source,
        "authorization.request_authentications",
        &mut a.request_authentications,
        &dynamic.request_authentications,
        |p| p.meta.key(),
    )?;
    let telemetry: Vec<serde_json::Value> = dynamic
        .telemetry
        .iter()
        .map(|(key, body)| crate::accesslog::document_from_resource(key, body))
        .collect();
    append(
        &source,
        "telemetry",
        &mut config.telemetry,
        &telemetry,
        crate::accesslog::document_key,
    )?;
    let config = crate::config::validate_config(&source, config).map_err(|mut e| {
        let path = name_dynamic(
            &e.path,
            "listeners",
            static_listeners,
            &dynamic.listeners,
            |l| &l.name,
        );
        let path = name_dynamic(&path, "services", static_services, &dynamic.services, |c| {
            &c.name
        });
        if path != e.path {
            e.path = path;
            e.hint = "fix the resource at the control plane's source; this proxy keeps its last \
                      good configuration meanwhile"
                .into();
        }
        e
    })?;
    let merged = ConfigOrigin {
        file: source,
        sha256: format!("{}+{}", origin.sha256, dynamic.digest),
    };
    Ok((config, merged))
}

/// Appends the control plane's `dynamic` items to the bootstrap's `statics`; an item whose name
/// (or `ns/name`) the bootstrap already has is refused: the bootstrap is not overridden silently.
fn append<T: Clone>(
    source: &str,
    what: &str,
    statics: &mut Vec<T>,
    dynamic: &[T],
    name_of: impl Fn(&T) -> String,
) -> Result<(), ConfigError> {
    // Name -> first index, built once: a per-item scan would be quadratic in the resources.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(statics.len() + dynamic.len());
    for (i, s) in statics.iter().enumerate() {
        index.entry(name_of(s)).or_insert(i);
    }
    for item in dynamic {
        let name = name_of(item);
        if let Some(&i) = index.get(&name) {
            return Err(ConfigError::field(
                source,
                format!("{what}[{i}]"),
                format!("`{name}` comes from the bootstrap file and from the control plane"),
                "remove it from the bootstrap file or rename it in the control plane",
            ));
        }
        index.insert(name, statics.len());
        statics.push(item.clone());
    }
    Ok(())
}

/// Rewrites `listeners[7].service` into `listeners[7] (xDS Listener "out").service` when item 7
/// came from the control plane, so the NACK names the resource.
fn name_dynamic<T>(
    path: &str,
    what: &str,
    statics: usize,
    items: &[T],
    name_of: impl Fn(&T) -> &String,
) -> String {
    let Some(rest) = path.strip_prefix(what).and_then(|r| r.strip_prefix('[')) else {
        return path.to_owned();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_owned();
    };
    let Some(item) = index
        .parse::<usize>()
        .ok()
        .and_then(|i| i.checked_sub(statics))
        .and_then(|i| items.get(i))
    else {
        return path.to_owned();
    };
    let kind = if what == "listeners" {
        "Listener"
    } else {
        "Cluster"
    };
    format!("{what}[{index}] (xDS {kind} {:?}){tail}", name_of(item))
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
