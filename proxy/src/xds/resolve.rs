//! Route destinations from the control plane, resolved to the clusters it sent. The control
//! plane writes a destination as Istio does, a fully qualified service host with an optional
//! port and subset (`echo.prod.svc.cluster.local`, `80`, `v1`), and names its clusters Istio's
//! way, `outbound|<port>|<subset>|<host>`, one per service port and one per subset. The data path
//! looks a destination up by service name, so each destination is rewritten here to the name of
//! the cluster that carries it. Pure: no I/O.
//!
//! Rules (Istio's): a destination with a port picks that port's cluster; one without a port
//! picks the service's only port; a subset picks the subset's own cluster. A destination that
//! already names a received cluster is left as it is. A destination whose host, port or subset
//! was not received is not a configuration error, as in Istio: it routes to an empty cluster of
//! that name, so its requests answer 503 (no healthy upstream) while the rest of the table
//! works. Only an ambiguous destination (several ports to choose from) refuses the update,
//! naming the route, the field and what to write.

use std::collections::{BTreeMap, BTreeSet};

use jalin_xds::model::cluster::Cluster;
use jalin_xds::model::route::{Destination, RouteTable};

use super::convert::ConvertError;

/// The parts of an Istio cluster name `outbound|<port>|<subset>|<host>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstioCluster<'a> {
    /// Service port.
    pub port: u16,
    /// Subset name; empty for the whole service.
    pub subset: &'a str,
    /// Fully qualified service host.
    pub host: &'a str,
}

impl<'a> IstioCluster<'a> {
    /// Parses `outbound|<port>|<subset>|<host>`; `None` for any other name.
    pub fn parse(name: &'a str) -> Option<Self> {
        let mut parts = name.splitn(4, '|');
        if parts.next()? != "outbound" {
            return None;
        }
        let port = parts.next()?.parse().ok()?;
        let subset = parts.next()?;
        let host = parts.next()?;
        (!host.is_empty()).then_some(IstioCluster { port, subset, host })
    }
}

/// Received clusters by service host: port -> subset -> cluster name.
type ByHost<'a> = BTreeMap<&'a str, BTreeMap<u16, BTreeMap<&'a str, &'a str>>>;

/// Rewrites every destination and mirror of `routes` to the name of the cluster in `clusters`
/// that carries it. Returns the names of the clusters routes name but `clusters` lacks (each
/// with the reason), for the caller to add empty.
pub fn resolve_destinations(
    routes: &mut [RouteTable],
    clusters: &[Cluster],
) -> Result<BTreeMap<String, String>, ConvertError> {
    let mut missing = BTreeMap::new();
    let names: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    let mut by_host: ByHost<'_> = BTreeMap::new();
    for c in clusters {
        if let Some(ic) = IstioCluster::parse(&c.name) {
            by_host
                .entry(ic.host)
                .or_default()
                .entry(ic.port)
                .or_default()
                .insert(ic.subset, c.name.as_str());
        }
    }
    for table in routes.iter_mut() {
        let key = table.meta.key();
        for (r, route) in table.http.iter_mut().enumerate() {
            let destinations = route
                .destinations
                .iter_mut()
                .enumerate()
                .map(|(d, rd)| (format!("http[{r}].destinations[{d}]"), &mut rd.destination));
            let mirror = route
                .mirror
                .iter_mut()
                .map(|m| (format!("http[{r}].mirror"), &mut m.destination));
            for (path, dest) in destinations.chain(mirror) {
                resolve(dest, &names, &by_host, &key, &path, &mut missing)?;
            }
        }
    }
    Ok(missing)
}

/// A cluster with no endpoints and default policy: what a route destination that was not
/// received routes to (503, no healthy upstream).
pub fn empty_cluster(name: String) -> Cluster {
    Cluster {
        name,
        addresses: Vec::new(),
        protocol: Default::default(),
        endpoints: Vec::new(),
        policy: Default::default(),
        tls: None,
        subsets: Vec::new(),
    }
}

fn resolve(
    dest: &mut Destination,
    names: &BTreeSet<&str>,
    by_host: &ByHost<'_>,
    route: &str,
    path: &str,
    missing: &mut BTreeMap<String, String>,
) -> Result<(), ConvertError> {
    if names.contains(dest.host.as_str()) {
        return Ok(());
    }
    let refuse = |field: &str, message: String| ConvertError {
        kind: "Route",
        name: route.to_owned(),
        message: format!("{path}.{field}: {message}"),
    };
    let subset = dest.subset.clone().unwrap_or_default();
    // Not received: an empty cluster of the Istio name answers 503 at request time.
    let mut absent = |dest: &mut Destination, port: u16, why: String| {
        let name = format!("outbound|{port}|{subset}|{}", dest.host);
        missing
            .entry(name.clone())
            .or_insert_with(|| format!("Route {route:?} {path}: {why}"));
        *dest = Destination {
            host: name,
            subset: None,
            port: None,
        };
    };
    let Some(ports) = by_host.get(dest.host.as_str()) else {
        let why = format!(
            "no cluster for `{}` was received: the service is unknown to the control plane or \
             outside this proxy's Sidecar scope; define it (ServiceEntry, Kubernetes Service) or \
             fix the VirtualService",
            dest.host
        );
        absent(dest, dest.port.unwrap_or(0), why);
        return Ok(());
    };
    let port = match dest.port {
        Some(p) => p,
        None => {
            let whole: Vec<u16> = ports
                .iter()
                .filter(|(_, subsets)| subsets.contains_key(""))
                .map(|(p, _)| *p)
                .collect();
            match whole.as_slice() {
                [only] => *only,
                [] => {
                    let why = format!(
                        "service `{}` has no whole-service cluster received",
                        dest.host
                    );
                    absent(dest, 0, why);
                    return Ok(());
                }
                many => {
                    return Err(refuse(
                        "port",
                        format!(
                            "service `{}` has several ports {many:?}; a destination without \
                             `port` needs a service with exactly one",
                            dest.host
                        ),
                    ));
                }
            }
        }
    };
    let Some(subsets) = ports.get(&port) else {
        let why = format!(
            "service `{}` has no port {port}; its ports: {:?}",
            dest.host,
            ports.keys().collect::<Vec<_>>()
        );
        absent(dest, port, why);
        return Ok(());
    };
    let Some(name) = subsets.get(subset.as_str()) else {
        let known: Vec<&str> = subsets.keys().copied().filter(|s| !s.is_empty()).collect();
        let why = format!(
            "service `{}` port {port} has no subset `{subset}`; its subsets: {known:?}; define \
             it in the service's DestinationRule or fix the VirtualService",
            dest.host
        );
        absent(dest, port, why);
        return Ok(());
    };
    *dest = Destination {
        host: (*name).to_owned(),
        subset: None,
        port: None,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use jalin_xds::model::ResourceMeta;
    use jalin_xds::model::route::{HttpRoute, Mirror, RouteDestination};

    use super::*;

    const ECHO: &str = "echo.prod.svc.cluster.local";

    fn cluster(name: &str) -> Cluster {
        empty_cluster(name.into())
    }

    fn dest(host: &str, port: Option<u16>, subset: Option<&str>) -> Destination {
        Destination {
            host: host.into(),
            port,
            subset: subset.map(Into::into),
        }
    }

    fn table(dests: Vec<Destination>, mirror: Option<Destination>) -> RouteTable {
        RouteTable {
            meta: ResourceMeta {
                name: "echo".into(),
                namespace: "prod".into(),
                source: None,
            },
            hosts: vec![ECHO.into()],
            gateways: Vec::new(),
            http: vec![HttpRoute {
                destinations: dests
                    .into_iter()
                    .map(|destination| RouteDestination {
                        destination,
                        weight: 50,
                    })
                    .collect(),
                mirror: mirror.map(|destination| Mirror {
                    destination,
                    percentage: 100.0,
                }),
                ..Default::default()
            }],
        }
    }

    fn resolved(t: &RouteTable) -> Vec<String> {
        let r = &t.http[0];
        r.destinations
            .iter()
            .map(|d| &d.destination)
            .chain(r.mirror.iter().map(|m| &m.destination))
            .map(|d| {
                assert_eq!((d.port, d.subset.as_deref()), (None, None));
                d.host.clone()
            })
            .collect()
    }

    #[test]
    fn istio_cluster_names_parse() {
        let ic = IstioCluster::parse("outbound|80|v1|echo.prod.svc.cluster.local").unwrap();
        assert_eq!((ic.port, ic.subset, ic.host), (80, "v1", ECHO));
        assert_eq!(IstioCluster::parse("outbound|80||a").unwrap().subset, "");
        for bad in [
            "echo",
            "inbound|80||a",
            "outbound|x||a",
            "outbound|80||",
            "outbound|80",
        ] {
            assert_eq!(IstioCluster::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_port_and_subset_become_the_cluster_name() {
        let clusters = [
            cluster(&format!("outbound|80||{ECHO}")),
            cluster(&format!("outbound|80|v1|{ECHO}")),
            cluster(&format!("outbound|80|v2|{ECHO}")),
            cluster("local"),
        ];
        let mut routes = vec![table(
            vec![
                dest(ECHO, None, None),
                dest(ECHO, Some(80), Some("v1")),
                dest(ECHO, None, Some("v2")),
                dest("local", None, None),
            ],
            Some(dest(ECHO, Some(80), None)),
        )];
        resolve_destinations(&mut routes, &clusters).unwrap();
        assert_eq!(
            resolved(&routes[0]),
            [
                format!("outbound|80||{ECHO}"),
                format!("outbound|80|v1|{ECHO}"),
                format!("outbound|80|v2|{ECHO}"),
                "local".to_owned(),
                format!("outbound|80||{ECHO}"),
            ]
        );
    }

    #[test]
    fn an_ambiguous_destination_names_the_route_and_field() {
        let two_ports = [
            cluster(&format!("outbound|80||{ECHO}")),
            cluster(&format!("outbound|8080||{ECHO}")),
        ];
        let mut routes = vec![table(
            vec![dest(ECHO, Some(80), None), dest(ECHO, None, None)],
            None,
        )];
        let e = resolve_destinations(&mut routes, &two_ports).unwrap_err();
        assert_eq!((e.kind, e.name.as_str()), ("Route", "prod/echo"));
        assert!(
            e.message.starts_with("http[0].destinations[1].port:"),
            "{e}"
        );
        assert!(e.message.contains("several ports [80, 8080]"), "{e}");
    }

    #[test]
    fn destinations_not_received_route_to_empty_clusters_as_in_istio() {
        let clusters = [
            cluster(&format!("outbound|80||{ECHO}")),
            cluster(&format!("outbound|8080||{ECHO}")),
            cluster(&format!("outbound|80|v1|{ECHO}")),
        ];
        let db = "db.prod.svc.cluster.local";
        let mut routes = vec![table(
            vec![
                dest(ECHO, Some(9090), None),
                dest(db, None, None),
                dest(ECHO, Some(80), Some("v1")),
            ],
            Some(dest(ECHO, Some(80), Some("v9"))),
        )];
        let missing = resolve_destinations(&mut routes, &clusters).unwrap();
        assert_eq!(
            resolved(&routes[0]),
            [
                format!("outbound|9090||{ECHO}"),
                format!("outbound|0||{db}"),
                format!("outbound|80|v1|{ECHO}"),
                format!("outbound|80|v9|{ECHO}"),
            ]
        );
        let names: Vec<&str> = missing.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 3, "{missing:?}");
        let why = &missing[&format!("outbound|80|v9|{ECHO}")];
        assert!(
            why.contains("http[0].mirror") && why.contains("no subset `v9`"),
            "{why}"
        );
        assert!(missing[&format!("outbound|0||{db}")].contains("no cluster for"));
        // A subset-only port has no whole-service cluster: routed empty too.
        let only_subset = [cluster(&format!("outbound|80|v1|{ECHO}"))];
        let mut routes = vec![table(vec![dest(ECHO, None, None)], None)];
        let missing = resolve_destinations(&mut routes, &only_subset).unwrap();
        assert!(missing.contains_key(&format!("outbound|0||{ECHO}")));
    }
}
