//! PeerAuthentication precedence: workload over namespace over mesh, port-level overrides,
//! UNSET inheritance, the PERMISSIVE mesh default, and the deterministic tie-break.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

use std::collections::BTreeMap;

use jalin_xds::authz::peer_auth::{explain_mtls, resolve_mtls};
use jalin_xds::model::peer_auth::{MtlsMode, PeerAuthentication};
use jalin_xds::model::{ResourceMeta, WorkloadSelector};

use MtlsMode::{Disable, Permissive, Strict, Unset};

const ROOT: &str = "istio-system";

fn pa(
    ns: &str,
    name: &str,
    selector: Option<&[(&str, &str)]>,
    mode: MtlsMode,
    ports: &[(u16, MtlsMode)],
) -> PeerAuthentication {
    PeerAuthentication {
        meta: ResourceMeta {
            name: name.into(),
            namespace: ns.into(),
            source: None,
        },
        selector: selector.map(|l| WorkloadSelector {
            match_labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        mode,
        port_level: ports.iter().copied().collect(),
    }
}

fn app(a: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), a.to_string())])
}

fn mode(ps: &[PeerAuthentication], ns: &str, a: &str, port: u16) -> MtlsMode {
    resolve_mtls(ps, ROOT, ns, &app(a), port)
}

#[test]
fn mesh_default_is_permissive() {
    assert_eq!(mode(&[], "foo", "web", 80), Permissive);
}

#[test]
fn mesh_policy_applies_everywhere() {
    let ps = [pa(ROOT, "default", None, Strict, &[])];
    assert_eq!(mode(&ps, "foo", "web", 80), Strict);
    assert_eq!(mode(&ps, "bar", "db", 5432), Strict);
}

#[test]
fn namespace_overrides_mesh_and_only_in_its_namespace() {
    let ps = [
        pa(ROOT, "default", None, Strict, &[]),
        pa("legacy", "default", None, Permissive, &[]),
    ];
    assert_eq!(mode(&ps, "legacy", "web", 80), Permissive);
    assert_eq!(mode(&ps, "foo", "web", 80), Strict);
}

#[test]
fn workload_overrides_namespace_only_for_selected_workloads() {
    let ps = [
        pa("foo", "ns", None, Strict, &[]),
        pa("foo", "web", Some(&[("app", "web")]), Disable, &[]),
    ];
    assert_eq!(mode(&ps, "foo", "web", 80), Disable);
    assert_eq!(mode(&ps, "foo", "api", 80), Strict);
}

#[test]
fn unset_inherits_from_the_level_above() {
    let ps = [
        pa(ROOT, "default", None, Strict, &[]),
        pa("foo", "ns", None, Unset, &[]),
        pa("foo", "web", Some(&[("app", "web")]), Unset, &[]),
    ];
    assert_eq!(mode(&ps, "foo", "web", 80), Strict);
    let r = explain_mtls(&ps, ROOT, "foo", &app("web"), 80);
    assert_eq!(r.policy.as_deref(), Some("istio-system/default"));
}

#[test]
fn port_level_overrides_the_workload_mode() {
    let ps = [
        pa("foo", "ns", None, Strict, &[]),
        pa(
            "foo",
            "web",
            Some(&[("app", "web")]),
            Unset,
            &[(8080, Disable), (9090, Unset)],
        ),
    ];
    assert_eq!(mode(&ps, "foo", "web", 8080), Disable);
    assert_eq!(
        mode(&ps, "foo", "web", 9090),
        Strict,
        "UNSET at port level inherits"
    );
    assert_eq!(mode(&ps, "foo", "web", 443), Strict);
    let r = explain_mtls(&ps, ROOT, "foo", &app("web"), 8080);
    assert!(r.port_level);
    assert_eq!(r.policy.as_deref(), Some("foo/web"));
}

#[test]
fn port_level_without_selector_is_ignored() {
    let ps = [pa("foo", "ns", None, Strict, &[(8080, Disable)])];
    assert_eq!(mode(&ps, "foo", "web", 8080), Strict);
}

#[test]
fn a_selector_policy_in_the_root_namespace_is_ignored() {
    let ps = [pa(ROOT, "sel", Some(&[("app", "web")]), Disable, &[])];
    assert_eq!(mode(&ps, "foo", "web", 80), Permissive);
    assert_eq!(mode(&ps, ROOT, "web", 80), Permissive);
}

#[test]
fn competing_workload_policies_tie_break_by_name() {
    let ps = [
        pa("foo", "zz-later", Some(&[("app", "web")]), Disable, &[]),
        pa("foo", "aa-first", Some(&[("app", "web")]), Strict, &[]),
    ];
    assert_eq!(mode(&ps, "foo", "web", 80), Strict);
    let reversed: Vec<_> = ps.iter().rev().cloned().collect();
    assert_eq!(
        mode(&reversed, "foo", "web", 80),
        Strict,
        "independent of input order"
    );
}
