//! The route tables a client sidecar needs: the imported VirtualServices bound to the sidecars
//! (`gateways` holds `mesh`) that serve a host the client calls, with every short host name
//! qualified the way Istio does (`<name>.<VirtualService namespace>.svc.cluster.local`), so the
//! table's hosts and destinations name the sidecar's clusters.

use std::collections::BTreeSet;

use jalin_xds::model::route::RouteTable;

use crate::istio::convert::NativeConfig;
use crate::istio::routes::MESH_GATEWAY;

/// Istio's short-name rule: a host without a dot is `<name>.<namespace>.svc.cluster.local`.
pub fn qualify(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// The sidecar route tables serving any of `hosts`, qualified, and the destination hosts they
/// name that are not in `hosts` (the caller gives them a cluster of their own, so a route to a
/// service with no workloads answers 503 instead of making the table invalid).
pub fn route_tables_for(hosts: &[&str], native: &NativeConfig) -> (Vec<RouteTable>, Vec<String>) {
    let mut tables = Vec::new();
    let mut extra = BTreeSet::new();
    for bound in &native.routes {
        if !bound.gateways.iter().any(|g| g == MESH_GATEWAY) {
            continue;
        }
        let ns = bound.table.meta.namespace.clone();
        let mut table = bound.table.clone();
        table.hosts = table.hosts.iter().map(|h| qualify(h, &ns)).collect();
        if !hosts.iter().any(|h| serves(&table, h)) {
            continue;
        }
        for route in &mut table.http {
            for d in &mut route.destinations {
                d.destination.host = qualify(&d.destination.host, &ns);
                if !hosts.contains(&d.destination.host.as_str()) {
                    extra.insert(d.destination.host.clone());
                }
            }
            if let Some(m) = &mut route.mirror {
                m.destination.host = qualify(&m.destination.host, &ns);
                if !hosts.contains(&m.destination.host.as_str()) {
                    extra.insert(m.destination.host.clone());
                }
            }
        }
        tables.push(table);
    }
    (tables, extra.into_iter().collect())
}

fn serves(table: &RouteTable, host: &str) -> bool {
    table.hosts.iter().any(|h| {
        h == "*"
            || h == host
            || h.strip_prefix('*')
                .is_some_and(|suffix| host.ends_with(suffix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::example::{CHILD_PROFILE, COMPLIANCE_REPORTING, INSTANCES, materialise};

    fn native() -> NativeConfig {
        let dir = tempfile::tempdir().unwrap();
        let ports = INSTANCES
            .iter()
            .map(|i| (i.example_port, i.example_port + 1000))
            .collect();
        materialise(dir.path(), &ports).unwrap();
        crate::demo::mesh::import(dir.path()).unwrap().native
    }

    #[test]
    fn child_profile_routes_are_qualified_and_name_the_subsets() {
        let (tables, extra) = route_tables_for(&[CHILD_PROFILE], &native());
        assert_eq!(tables.len(), 1, "policies-17 only");
        let t = &tables[0];
        assert_eq!(t.hosts, vec![CHILD_PROFILE.to_owned()]);
        let first = &t.http[0].destinations[0].destination;
        assert_eq!(first.host, CHILD_PROFILE);
        assert_eq!(first.subset.as_deref(), Some("emergency"));
        assert!(extra.is_empty());
    }

    #[test]
    fn government_routes_bring_the_service_without_workloads_as_extra() {
        let (tables, extra) = route_tables_for(&[COMPLIANCE_REPORTING], &native());
        assert_eq!(tables.len(), 1, "policies-19 only");
        assert_eq!(
            extra,
            vec!["emergency-coordination-service.government.svc.cluster.local".to_owned()]
        );
        let native = native();
        let c = crate::demo::mesh::cluster_without_entry(&extra[0], &native);
        assert!(c.endpoints.is_empty(), "declared without instances");
        assert_eq!(c.subsets[0].name, "emergency");
    }

    #[test]
    fn gateway_bound_tables_are_not_for_sidecars() {
        let native = native();
        let (tables, _) = route_tables_for(&["anything.example"], &native);
        assert!(tables.is_empty());
    }
}
