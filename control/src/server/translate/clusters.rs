//! Clusters and endpoints: one cluster per service host and port (`outbound|<port>||<host>`), one
//! per DestinationRule subset (`outbound|<port>|<subset>|<host>`), each with an Endpoints resource
//! of the same name. The DestinationRule is chosen per client namespace: the client's namespace,
//! then the service's, then the root namespace.
//!
//! Mesh mTLS: an endpoint whose workload's service account is known (the
//! `jalin.io/service-account` label the registry puts on it) is reached with `istio_mutual`,
//! its server identity `spiffe://<trust domain>/ns/<service namespace>/sa/<account>` taken from
//! the registry, as Istio's auto mTLS does; endpoints without one are reached as they are.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use jalin_xds::model::cluster::{Cluster, ClusterTls, ClusterTlsMode, Endpoint};
use jalin_xds::model::traffic::TrafficPolicy;
use jalin_xds::transport::{EncodedResource, Kind, ResourceError, encode, encode_with_deps};

use super::services::{SERVICE_ACCOUNT_LABEL, Service};
use crate::istio::convert::DestinationPolicy;

/// Istio's cluster name for a service port and subset.
pub fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// How well a DestinationRule `host` matches a service host: exact beats the longest wildcard.
fn host_match(rule_host: &str, rule_ns: &str, host: &str, domain: &str) -> Option<usize> {
    let full = if rule_host.contains('.') || rule_host.starts_with('*') {
        rule_host.to_owned()
    } else {
        // A short name is relative to the rule's namespace, as in Istio.
        format!("{rule_host}.{rule_ns}.svc.{domain}")
    };
    if full == host {
        return Some(usize::MAX);
    }
    if full == "*" {
        return Some(0);
    }
    full.strip_prefix('*')
        .filter(|suffix| host.ends_with(suffix))
        .map(str::len)
}

/// The DestinationRule of namespace `ns` that applies to `host`, if any.
pub fn rule_in<'a>(
    rules: &'a [DestinationPolicy],
    ns: &str,
    host: &str,
    domain: &str,
) -> Option<&'a DestinationPolicy> {
    rules
        .iter()
        .filter(|r| r.meta.namespace == ns)
        .filter_map(|r| host_match(&r.host, &r.meta.namespace, host, domain).map(|s| (s, r)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, r)| r)
}

/// The rule a client in `client_ns` uses for `svc`.
pub fn rule_for<'a>(
    rules: &'a [DestinationPolicy],
    client_ns: Option<&str>,
    svc: &Service,
    root_ns: &str,
    domain: &str,
) -> Option<&'a DestinationPolicy> {
    client_ns
        .and_then(|ns| rule_in(rules, ns, &svc.host, domain))
        .or_else(|| rule_in(rules, &svc.namespace, &svc.host, domain))
        .or_else(|| rule_in(rules, root_ns, &svc.host, domain))
}

/// The namespaces whose proxies may need their own variant of `svc` (they hold a rule for it).
pub fn variant_namespaces(
    rules: &[DestinationPolicy],
    svc: &Service,
    domain: &str,
) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|r| r.meta.namespace != svc.namespace)
        .filter(|r| host_match(&r.host, &r.meta.namespace, &svc.host, domain).is_some())
        .map(|r| r.meta.namespace.clone())
        .collect()
}

/// `endpoints` with mesh mTLS toward the workloads whose service account is known; applied once
/// per service by the translation, before [`resources`].
pub fn with_mesh_tls(
    endpoints: &[Endpoint],
    namespace: &str,
    trust_domain: Option<&str>,
) -> Vec<Endpoint> {
    endpoints
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let (None, Some(td), Some(sa)) =
                (&e.tls, trust_domain, e.labels.get(SERVICE_ACCOUNT_LABEL))
            {
                e.tls = Some(ClusterTls {
                    mode: ClusterTlsMode::IstioMutual,
                    identity: Some(format!("spiffe://{td}/ns/{namespace}/sa/{sa}")),
                });
            }
            e
        })
        .collect()
}

/// The Cluster and Endpoints resources of `svc` under `rule`.
pub fn resources(
    svc: &Service,
    rule: Option<&DestinationPolicy>,
) -> Result<Vec<EncodedResource>, ResourceError> {
    let mut out = Vec::new();
    for port in &svc.ports {
        let endpoints: &[Endpoint] = svc
            .endpoints
            .get(&port.number)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let addresses: Vec<SocketAddr> = svc
            .addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, port.number))
            .collect();
        let policy = rule
            .map(|r| {
                r.port_level
                    .get(&port.number)
                    .unwrap_or(&r.traffic_policy)
                    .clone()
            })
            .unwrap_or_default();
        push(
            &mut out,
            &cluster_name(port.number, "", &svc.host),
            &addresses,
            port.protocol,
            policy,
            endpoints,
        )?;
        for subset in rule.map(|r| r.subsets.as_slice()).unwrap_or_default() {
            let eps: Vec<Endpoint> = endpoints
                .iter()
                .filter(|e| {
                    subset
                        .labels
                        .iter()
                        .all(|(k, v)| e.labels.get(k) == Some(v))
                })
                .cloned()
                .collect();
            let policy = subset
                .port_level
                .get(&port.number)
                .unwrap_or(&subset.traffic_policy)
                .clone();
            // A subset is reached through routes only, never by address.
            push(
                &mut out,
                &cluster_name(port.number, &subset.name, &svc.host),
                &[],
                port.protocol,
                policy,
                &eps,
            )?;
        }
    }
    Ok(out)
}

fn push(
    out: &mut Vec<EncodedResource>,
    name: &str,
    addresses: &[SocketAddr],
    protocol: jalin_xds::model::cluster::UpstreamProtocol,
    policy: TrafficPolicy,
    endpoints: &[Endpoint],
) -> Result<(), ResourceError> {
    let cluster = Cluster {
        name: name.to_owned(),
        addresses: addresses.to_vec(),
        protocol,
        // Endpoints travel in their own resource, so an endpoint change does not touch the cluster.
        endpoints: Vec::new(),
        policy,
        tls: None,
        subsets: Vec::new(),
    };
    out.push(encode_with_deps(
        Kind::Cluster,
        name,
        &cluster,
        &[(Kind::Endpoints, name)],
    )?);
    out.push(encode(Kind::Endpoints, name, &endpoints)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jalin_xds::model::ResourceMeta;

    fn rule(ns: &str, host: &str) -> DestinationPolicy {
        DestinationPolicy {
            meta: ResourceMeta {
                name: format!("dr-{ns}"),
                namespace: ns.into(),
                source: None,
            },
            host: host.into(),
            traffic_policy: TrafficPolicy::default(),
            port_level: Default::default(),
            subsets: Vec::new(),
        }
    }

    fn svc() -> Service {
        Service {
            host: "reviews.prod.svc.cluster.local".into(),
            namespace: "prod".into(),
            origin: "test".into(),
            addresses: vec![],
            ports: vec![],
            endpoints: Default::default(),
            export_to: vec![],
        }
    }

    #[test]
    fn endpoints_of_known_workloads_get_mesh_mtls_with_their_identity() {
        let mut known = Endpoint::new("10.0.0.1:80".parse().unwrap());
        known
            .labels
            .insert(SERVICE_ACCOUNT_LABEL.into(), "reviews".into());
        let unknown = Endpoint::new("10.0.0.2:80".parse().unwrap());
        let eps = with_mesh_tls(&[known.clone(), unknown], "prod", Some("gov.example"));
        let tls = eps[0].tls.as_ref().unwrap();
        assert_eq!(tls.mode, ClusterTlsMode::IstioMutual);
        assert_eq!(
            tls.identity.as_deref(),
            Some("spiffe://gov.example/ns/prod/sa/reviews")
        );
        assert_eq!(eps[1].tls, None, "no service account: reached as it is");
        assert_eq!(with_mesh_tls(&[known], "prod", None)[0].tls, None);
    }

    #[test]
    fn rule_lookup_is_client_then_service_then_root() {
        let rules = vec![
            rule("istio-system", "*.svc.cluster.local"),
            rule("prod", "reviews"),
            rule("client", "reviews.prod.svc.cluster.local"),
        ];
        let d = "cluster.local";
        let pick = |ns| {
            rule_for(&rules, Some(ns), &svc(), "istio-system", d).map(|r| r.meta.namespace.clone())
        };
        assert_eq!(pick("client").as_deref(), Some("client"));
        assert_eq!(pick("other").as_deref(), Some("prod"));
        let only_root = vec![rules[0].clone()];
        assert_eq!(
            rule_for(&only_root, Some("other"), &svc(), "istio-system", d)
                .map(|r| r.meta.namespace.as_str()),
            Some("istio-system")
        );
        assert_eq!(
            variant_namespaces(&rules, &svc(), d)
                .into_iter()
                .collect::<Vec<_>>(),
            ["client", "istio-system"]
        );
    }
}
