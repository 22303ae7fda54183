//! Unit tests of the conversion: resources in through the real client state machine, a merged
//! and validated `ProxyConfig` out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use jalin_xds::transport::{
    AppliedConfig, ClientState, EncodedResource, Kind, NodeInfo, encode, encode_with_deps,
};

use super::*;
use crate::config::parse;

fn applied(resources: &[EncodedResource]) -> AppliedConfig {
    let mut state = ClientState::new(
        NodeInfo::default(),
        Kind::ALL.iter().map(|k| k.type_url().to_owned()),
        Duration::from_secs(5),
    );
    let out = std::sync::Arc::new(std::sync::Mutex::new(AppliedConfig::default()));
    let sink = out.clone();
    let mut capture = move |c: &AppliedConfig| -> Result<(), String> {
        *sink.lock().unwrap() = c.clone();
        Ok(())
    };
    for kind in Kind::ALL {
        let of_kind: Vec<Resource> = resources
            .iter()
            .filter(|r| r.type_url == kind.type_url())
            .map(|r| Resource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.to_any()),
                ..Default::default()
            })
            .collect();
        // Every type answers, empty or not (the first configuration waits for all of them).
        let resp = DeltaDiscoveryResponse {
            type_url: kind.type_url().into(),
            nonce: "1".into(),
            resources: of_kind,
            ..Default::default()
        };
        state.on_response(&resp, Instant::now(), &mut capture);
    }
    drop(capture);
    out.lock().unwrap().clone()
}

fn listener(name: &str, service: &str) -> Listener {
    Listener {
        name: name.into(),
        address: "127.0.0.1:0".parse().unwrap(),
        direction: Direction::Outbound,
        service: Some(service.into()),
        protocol: ListenerProtocol::Detect,
        mtls: None,
        gateway: None,
        tls: None,
        http3: false,
    }
}

fn cluster(name: &str) -> Cluster {
    crate::xds::resolve::empty_cluster(name.into())
}

fn endpoints(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint::new(a.parse::<SocketAddr>().unwrap()))
        .collect()
}

const BOOT: &str = "admin:\n  address: 127.0.0.1:0\n";

fn basic() -> Vec<EncodedResource> {
    let name = "outbound|80||echo.prod.svc.cluster.local";
    vec![
        encode(Kind::Listener, "out", &listener("out", name)).unwrap(),
        encode_with_deps(
            Kind::Cluster,
            name,
            &cluster(name),
            &[(Kind::Endpoints, name)],
        )
        .unwrap(),
        encode(Kind::Endpoints, name, &endpoints(&["127.0.0.1:9001"])).unwrap(),
    ]
}

#[test]
fn clusters_are_joined_with_their_endpoints_and_merged() {
    let dynamic = DynamicConfig::decode(&applied(&basic())).unwrap();
    assert_eq!(dynamic.services.len(), 1);
    assert_eq!(dynamic.services[0].endpoints.len(), 1);
    assert_eq!(dynamic.versions["Listener"].len(), 1);
    assert_eq!(dynamic.versions["Endpoints"].len(), 1);
    let (boot, origin) = parse("boot.yaml", BOOT).unwrap();
    let (config, merged) = merge(boot, &origin, &dynamic).unwrap();
    assert_eq!(config.listeners[0].name, "out");
    assert_eq!(merged.file, "boot.yaml + xDS");
    assert!(merged.sha256.ends_with(&dynamic.digest));
}

#[test]
fn a_listener_naming_a_missing_cluster_is_refused_with_its_resource_name() {
    let mut res = basic();
    res[0] = encode(Kind::Listener, "out", &listener("out", "nope")).unwrap();
    let dynamic = DynamicConfig::decode(&applied(&res)).unwrap();
    let (boot, origin) = parse("boot.yaml", BOOT).unwrap();
    let err = merge(boot, &origin, &dynamic).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(r#"listeners[0] (xDS Listener "out").service"#),
        "{text}"
    );
    assert!(text.contains("unknown service `nope`"), "{text}");
}

#[test]
fn a_name_in_both_bootstrap_and_xds_is_refused() {
    let name = "outbound|80||echo.prod.svc.cluster.local";
    let boot_text = format!("{BOOT}services:\n  - name: {name}\n");
    let (boot, origin) = parse("boot.yaml", &boot_text).unwrap();
    let dynamic = DynamicConfig::decode(&applied(&basic())).unwrap();
    let err = merge(boot, &origin, &dynamic).unwrap_err();
    assert!(
        err.to_string()
            .contains("from the bootstrap file and from the control plane")
    );
}

#[test]
fn a_body_that_does_not_match_the_model_is_refused() {
    let bad = encode(Kind::Endpoints, "x", &"not a list").unwrap();
    let err = DynamicConfig::decode(&applied(&[bad])).unwrap_err();
    assert_eq!(err.kind, "Endpoints");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn a_body_named_differently_from_its_resource_is_refused() {
    let bad = encode(Kind::Listener, "a", &listener("b", "svc")).unwrap();
    let err = DynamicConfig::decode(&applied(&[bad])).unwrap_err();
    assert!(err.to_string().contains(r#"Listener "a""#), "{err}");
}

#[test]
fn endpoints_inline_and_separate_are_refused() {
    let name = "c";
    let mut c = cluster(name);
    c.endpoints = endpoints(&["127.0.0.1:1"]);
    let res = vec![
        encode_with_deps(Kind::Cluster, name, &c, &[(Kind::Endpoints, name)]).unwrap(),
        encode(Kind::Endpoints, name, &endpoints(&["127.0.0.1:2"])).unwrap(),
    ];
    let err = DynamicConfig::decode(&applied(&res)).unwrap_err();
    assert!(err.to_string().contains("in one place"), "{err}");
}

#[test]
fn the_digest_follows_the_versions() {
    let a = DynamicConfig::decode(&applied(&basic())).unwrap();
    let mut res = basic();
    let name = "outbound|80||echo.prod.svc.cluster.local";
    res[2] = encode(Kind::Endpoints, name, &endpoints(&["127.0.0.1:9002"])).unwrap();
    let b = DynamicConfig::decode(&applied(&res)).unwrap();
    assert_ne!(a.digest, b.digest);
    assert_eq!(
        a.digest,
        DynamicConfig::decode(&applied(&basic())).unwrap().digest
    );
}

fn route(dest_host: &str, port: Option<u16>) -> jalin_xds::model::route::RouteTable {
    use jalin_xds::model::route::{Destination, HttpRoute, RouteDestination, RouteTable};
    RouteTable {
        meta: jalin_xds::model::ResourceMeta {
            name: "echo".into(),
            namespace: "prod".into(),
            source: None,
        },
        hosts: vec!["echo.prod.svc.cluster.local".into()],
        gateways: Vec::new(),
        http: vec![HttpRoute {
            destinations: vec![RouteDestination {
                destination: Destination {
                    host: dest_host.into(),
                    subset: None,
                    port,
                },
                weight: 100,
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn control_plane_routes_name_hosts_and_are_resolved_to_clusters() {
    let mut res = basic();
    let table = route("echo.prod.svc.cluster.local", None);
    res.push(encode(Kind::Route, "prod/echo", &table).unwrap());
    let dynamic = DynamicConfig::decode(&applied(&res)).unwrap();
    let dest = &dynamic.routes[0].http[0].destinations[0].destination;
    assert_eq!(dest.host, "outbound|80||echo.prod.svc.cluster.local");
    let (boot, origin) = parse("boot.yaml", BOOT).unwrap();
    let (config, _) = merge(boot, &origin, &dynamic).unwrap();
    assert_eq!(config.routes.len(), 1);

    // A port the service does not have: an empty cluster, so those requests answer 503.
    let mut res = basic();
    let table = route("echo.prod.svc.cluster.local", Some(8080));
    res.push(encode(Kind::Route, "prod/echo", &table).unwrap());
    let dynamic = DynamicConfig::decode(&applied(&res)).unwrap();
    let absent = "outbound|8080||echo.prod.svc.cluster.local";
    let dest = &dynamic.routes[0].http[0].destinations[0].destination;
    assert_eq!(dest.host, absent);
    let empty = dynamic.services.iter().find(|c| c.name == absent).unwrap();
    assert!(empty.endpoints.is_empty());
    let (boot, origin) = parse("boot.yaml", BOOT).unwrap();
    merge(boot, &origin, &dynamic).unwrap();
}
