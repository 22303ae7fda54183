//! Unit tests of the delta server state machine ([`super::DeltaStream`]), without sockets.

use envoy_types::pb::envoy::config::core::v3::Node;

use super::*;
use crate::transport::resource::{Kind, encode};
use crate::transport::test_support::{CLUSTER, ROUTE, refusal, snap};

fn req(sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "proxy-1".into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn names(p: &DeltaPush) -> Vec<&str> {
    p.resources.iter().map(|e| &*e.name).collect()
}

#[test]
fn only_changes_and_removals_are_pushed() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1), ("b", 1), ("c", 1)]));
    let p1 = s.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    assert_eq!(names(&p1), ["a", "b", "c"]);
    let out = s.on_request(&req(&[], &[], &p1.nonce)).unwrap();
    assert!(matches!(out.event, Some(StreamEvent::Ack { .. })));
    assert!(out.push.is_none());

    let p2 = s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).remove(0);
    assert_eq!(names(&p2), ["b"]);
    assert_eq!(p2.removed, vec![Arc::<str>::from("c")]);
    assert!(s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).is_empty());
}

#[test]
fn linked_pushes_send_the_change_and_a_missed_one_is_diffed_whole() {
    let mut s = DeltaStream::new();
    let v1 = snap(&[("a", 1), ("b", 1), ("c", 1)]);
    s.on_snapshot(&v1);
    let p1 = s.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    s.on_request(&req(&[], &[], &p1.nonce)).unwrap();

    // v2 is linked to v1 (as `XdsServer::push` does): the stream sends the change only.
    let mut v2 = v1.with([encode(Kind::Cluster, "b", &2).unwrap()]);
    v2.link_from(&v1);
    assert!(v2.type_set(CLUSTER).unwrap().changes().is_some());
    let p2 = s.on_snapshot(&Arc::new(v2.clone())).remove(0);
    assert_eq!(names(&p2), ["b"]);
    assert!(p2.removed.is_empty());
    assert_eq!(
        s.known_version(CLUSTER, "b"),
        Some(&*p2.resources[0].version)
    );

    // v3 is linked to v2, but the stream never saw v2: it diffs v3 against v1 whole.
    let mut other = DeltaStream::new();
    other.on_snapshot(&v1);
    other.on_request(&req(&[], &[], "")).unwrap();
    let mut v3 = v2.without([(CLUSTER, "c")]);
    v3.link_from(&v2);
    let p3 = other.on_snapshot(&Arc::new(v3)).remove(0);
    assert_eq!(names(&p3), ["b"], "b changed in the missed v2");
    assert_eq!(p3.removed, vec![Arc::<str>::from("c")]);
}

#[test]
fn a_first_subscription_is_answered_once_even_empty() {
    // Subscribed before the first view: the view's arrival answers it.
    let mut s = DeltaStream::new();
    assert!(s.on_request(&req(&[], &[], "")).unwrap().push.is_none());
    let pushes = s.on_snapshot(&snap(&[]));
    assert_eq!(pushes.len(), 1);
    assert!(pushes[0].resources.is_empty() && pushes[0].removed.is_empty());
    let out = s.on_request(&req(&[], &[], &pushes[0].nonce)).unwrap();
    assert!(matches!(out.event, Some(StreamEvent::Ack { .. })));
    assert!(
        s.on_snapshot(&snap(&[])).is_empty(),
        "answered once: an unchanged empty view sends nothing more"
    );

    // Subscribed after the first view, and on a reconnect that already has everything.
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1)]));
    let mut r = req(&[], &[], "");
    let p = s.on_request(&r).unwrap().push.unwrap();
    r.initial_resource_versions = p
        .resources
        .iter()
        .map(|e| (e.name.to_string(), e.version.to_string()))
        .collect();
    let mut again = DeltaStream::new();
    again.on_snapshot(&snap(&[("a", 1)]));
    let p = again.on_request(&r).unwrap().push.unwrap();
    assert!(p.resources.is_empty() && p.removed.is_empty());
}

#[test]
fn leaving_the_wildcard_keeps_only_explicit_names() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1), ("b", 1)]));
    let p1 = s.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    let out = s.on_request(&req(&["a"], &["*"], &p1.nonce)).unwrap();
    assert!(out.push.is_none(), "a is already there");
    assert_eq!(s.known_version(CLUSTER, "b"), None, "b is forgotten");
    assert!(s.known_version(CLUSTER, "a").is_some());
    // A change to b is no longer sent; a change to a is.
    assert!(s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).is_empty());
    let p2 = s.on_snapshot(&snap(&[("a", 2), ("b", 2)])).remove(0);
    assert_eq!(names(&p2), ["a"]);
}

#[test]
fn explicit_subscribe_unsubscribe() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1), ("b", 1)]));
    let p1 = s.on_request(&req(&["a"], &[], "")).unwrap().push.unwrap();
    assert_eq!(names(&p1), ["a"]);
    assert!(!s.subscription(CLUSTER).unwrap().wildcard);
    let p2 = s
        .on_request(&req(&["b"], &[], &p1.nonce))
        .unwrap()
        .push
        .unwrap();
    assert_eq!(names(&p2), ["b"]);
    let out = s.on_request(&req(&[], &["a"], &p2.nonce)).unwrap();
    assert!(out.push.is_none(), "unsubscribing sends nothing");
    assert_eq!(s.known_version(CLUSTER, "a"), None);
    // A change to the unsubscribed resource is not pushed; removal of one subscribed is.
    assert!(s.on_snapshot(&snap(&[("a", 2), ("b", 1)])).is_empty());
    let p3 = s.on_snapshot(&snap(&[("a", 2)])).remove(0);
    assert_eq!(p3.removed, vec![Arc::<str>::from("b")]);
    // Explicit wildcard subscription brings everything.
    let p4 = s
        .on_request(&req(&["*"], &[], &p3.nonce))
        .unwrap()
        .push
        .unwrap();
    assert_eq!(names(&p4), ["a"]);
}

#[test]
fn nack_with_detail_keeps_acked_version() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1)]));
    let p1 = s.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    s.on_request(&req(&[], &[], &p1.nonce)).unwrap();
    let p2 = s.on_snapshot(&snap(&[("a", 2)])).remove(0);
    let mut nack = req(&[], &[], &p2.nonce);
    nack.error_detail = Some(refusal("cluster a: bad"));
    let out = s.on_request(&nack).unwrap();
    match out.event {
        Some(StreamEvent::Nack {
            rejected_version,
            kept_version,
            error,
            ..
        }) => {
            assert_eq!(rejected_version, &*p2.system_version);
            assert_eq!(kept_version, &*p1.system_version);
            assert_eq!(error, "cluster a: bad");
        }
        other => panic!("expected NACK, got {other:?}"),
    }
    assert_eq!(s.acked_version(CLUSTER), Some(&*p1.system_version));
    assert!(
        s.on_snapshot(&snap(&[("a", 2)])).is_empty(),
        "an unchanged view does not resend the rejected content"
    );
}

#[test]
fn stale_nonce_does_not_ack() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1)]));
    s.on_request(&req(&[], &[], "")).unwrap();
    let out = s.on_request(&req(&[], &[], "999")).unwrap();
    assert!(out.event.is_none());
    assert_eq!(s.acked_version(CLUSTER), None);
}

#[test]
fn reconnect_with_initial_versions_resumes() {
    let view = snap(&[("a", 1), ("b", 1), ("gone", 1)]);
    let mut first = DeltaStream::new();
    first.on_snapshot(&view);
    let p = first.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    let versions: HashMap<String, String> = p
        .resources
        .iter()
        .map(|e| (e.name.to_string(), e.version.to_string()))
        .collect();

    // The control plane moved on while the client was away: b changed, gone was deleted.
    let mut again = DeltaStream::new();
    again.on_snapshot(&snap(&[("a", 1), ("b", 2)]));
    let mut r = req(&[], &[], "");
    r.initial_resource_versions = versions;
    let p = again.on_request(&r).unwrap().push.unwrap();
    assert_eq!(names(&p), ["b"], "a is unchanged and must not be resent");
    assert_eq!(p.removed, vec![Arc::<str>::from("gone")]);
}

const LISTENER: &str = "type.googleapis.com/jalin.v1.Listener";

fn answer(type_url: &str, nonce: &str, error: Option<&str>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        error_detail: error.map(refusal),
        ..Default::default()
    }
}

fn ack(s: &mut DeltaStream, p: &DeltaPush) {
    let out = s.on_request(&answer(&p.type_url, &p.nonce, None)).unwrap();
    assert!(matches!(out.event, Some(StreamEvent::Ack { .. })));
    assert!(out.push.is_none());
}

/// NACKs `p`; returns what the NACK itself sends (only when a push followed `p`).
fn nack_then(s: &mut DeltaStream, p: &DeltaPush) -> Option<DeltaPush> {
    let out = s
        .on_request(&answer(&p.type_url, &p.nonce, Some("refused")))
        .unwrap();
    assert!(matches!(out.event, Some(StreamEvent::Nack { .. })));
    out.push
}

/// NACKs the stream's latest response `p`: that sends nothing.
fn nack(s: &mut DeltaStream, p: &DeltaPush) {
    assert!(
        nack_then(s, p).is_none(),
        "a NACK of the latest response sends nothing"
    );
}

/// A wildcard stream on clusters that has ACKed a first configuration of `items`.
fn acked(items: &[(&str, u32)]) -> DeltaStream {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(items));
    let p = s.on_request(&req(&[], &[], "")).unwrap().push.unwrap();
    ack(&mut s, &p);
    s
}

fn typed(mut r: DeltaDiscoveryRequest, type_url: &str) -> DeltaDiscoveryRequest {
    r.type_url = type_url.into();
    r
}

fn mixed(routes: &[(&str, u32)], clusters: &[(&str, u32)], listener: u32) -> Arc<Snapshot> {
    let routes = routes.iter().map(|(n, v)| encode(Kind::Route, n, v));
    let clusters = clusters.iter().map(|(n, v)| encode(Kind::Cluster, n, v));
    let listener = encode(Kind::Listener, "inbound", &listener);
    Arc::new(Snapshot::new(
        routes.chain(clusters).chain([listener]).map(|r| r.unwrap()),
    ))
}

/// A stream subscribed to routes and clusters that has ACKed a first configuration of route
/// `r`, cluster `c` and listener `inbound`, each at version 1.
fn acked_routes_and_clusters() -> DeltaStream {
    let mut s = DeltaStream::new();
    s.on_snapshot(&mixed(&[("r", 1)], &[("c", 1)], 1));
    for url in [ROUTE, CLUSTER] {
        let p = s
            .on_request(&typed(req(&[], &[], ""), url))
            .unwrap()
            .push
            .unwrap();
        ack(&mut s, &p);
    }
    s
}

#[test]
fn a_nacked_resource_is_resent_with_the_next_change_of_its_type_and_not_before() {
    let mut s = acked(&[("a", 1), ("b", 1)]);
    let p2 = s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).remove(0);
    assert_eq!(names(&p2), ["b"]);
    nack(&mut s, &p2);
    assert!(s.refused(CLUSTER));
    assert_eq!(s.known_version(CLUSTER, "b"), None, "b@2 is not delivered");
    assert!(s.known_version(CLUSTER, "a").is_some(), "a was not refused");

    // No ping-pong: the same view (the bad b@2 unchanged) sends nothing, however often.
    for _ in 0..3 {
        assert!(s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).is_empty());
    }
    // An unrelated change of the same type carries b@2 again.
    let pushes = s.on_snapshot(&snap(&[("a", 2), ("b", 2)]));
    assert_eq!(pushes.len(), 1);
    let p3 = &pushes[0];
    assert_eq!(names(p3), ["a", "b"]);
    assert_eq!(&*p3.resources[1].version, &*p2.resources[0].version);
    assert!(p3.removed.is_empty());
    assert!(!s.refused(CLUSTER));

    // Refused again: forgotten again, resent with the next change again.
    nack(&mut s, p3);
    assert_eq!(s.known_version(CLUSTER, "a"), None);
    assert!(s.on_snapshot(&snap(&[("a", 2), ("b", 2)])).is_empty());
    let p4 = s.on_snapshot(&snap(&[("a", 2), ("b", 3)])).remove(0);
    assert_eq!(names(&p4), ["a", "b"]);
    ack(&mut s, &p4);
    assert!(s.on_snapshot(&snap(&[("a", 2), ("b", 3)])).is_empty());
    let p5 = s.on_snapshot(&snap(&[("a", 3), ("b", 3)])).remove(0);
    assert_eq!(names(&p5), ["a"], "after the ACK only changes are sent");
}

#[test]
fn a_nacked_removal_is_sent_again() {
    let mut s = acked(&[("a", 1), ("b", 1)]);
    let p2 = s.on_snapshot(&snap(&[("a", 1)])).remove(0);
    assert_eq!(p2.removed, vec![Arc::<str>::from("b")]);
    nack(&mut s, &p2);
    assert!(s.on_snapshot(&snap(&[("a", 1)])).is_empty());
    let p3 = s.on_snapshot(&snap(&[("a", 2)])).remove(0);
    assert_eq!(names(&p3), ["a"]);
    assert_eq!(
        p3.removed,
        vec![Arc::<str>::from("b")],
        "the client kept b when it refused its removal"
    );
}

#[test]
fn only_the_refused_response_is_forgotten() {
    let mut s = acked(&[("a", 1), ("b", 1), ("c", 1)]);
    let p2 = s
        .on_snapshot(&snap(&[("a", 1), ("b", 2), ("c", 1)]))
        .remove(0);
    let p3 = s
        .on_snapshot(&snap(&[("a", 1), ("b", 2), ("c", 2)]))
        .remove(0);
    assert_eq!(names(&p3), ["c"]);
    // The client refused p2, then applied p3 (without b@2). It refused b@2 before it saw c@2,
    // which may be what b lacked: the NACK itself sends b@2 again, and nothing else.
    let again = nack_then(&mut s, &p2).expect("b@2 is owed at once: p3 followed p2");
    assert_eq!(names(&again), ["b"]);
    ack(&mut s, &p3);
    assert_eq!(
        s.known_version(CLUSTER, "c"),
        Some(&*p3.resources[0].version)
    );
    // Refused again, now after c@2: not sent again until the view changes.
    nack(&mut s, &again);
    assert_eq!(s.known_version(CLUSTER, "b"), None);
    assert!(
        s.on_snapshot(&snap(&[("a", 1), ("b", 2), ("c", 2)]))
            .is_empty()
    );
    let p4 = s
        .on_snapshot(&snap(&[("a", 2), ("b", 2), ("c", 2)]))
        .remove(0);
    assert_eq!(names(&p4), ["a", "b"], "c@2 was applied and is not resent");
}

#[test]
fn a_nack_overtaken_by_a_push_of_another_type_is_retried_at_once() {
    // The route is refused while the cluster it needs is on its way: the NACK crosses the
    // cluster's push, so the route is owed at once; a second refusal waits for a change.
    let mut s = acked_routes_and_clusters();
    let route = s.on_snapshot(&mixed(&[("r", 2)], &[("c", 1)], 1)).remove(0);
    let cluster = s.on_snapshot(&mixed(&[("r", 2)], &[("c", 2)], 1)).remove(0);
    assert_eq!(&*cluster.type_url, CLUSTER);
    let again = nack_then(&mut s, &route).expect("the route is resent at once");
    assert_eq!((&*again.type_url, names(&again)), (ROUTE, vec!["r"]));
    ack(&mut s, &cluster);
    nack(&mut s, &again);
    assert!(s.refused(ROUTE));
    assert!(
        s.on_snapshot(&mixed(&[("r", 2)], &[("c", 2)], 1))
            .is_empty()
    );
}

#[test]
fn a_nack_forgets_only_names_still_subscribed() {
    let mut s = DeltaStream::new();
    s.on_snapshot(&snap(&[("a", 1), ("b", 1)]));
    let p1 = s
        .on_request(&req(&["a", "b"], &[], ""))
        .unwrap()
        .push
        .unwrap();
    ack(&mut s, &p1);
    let p2 = s.on_snapshot(&snap(&[("a", 1), ("b", 2)])).remove(0);
    // The client drops b, then refuses the response that carried it.
    assert!(s.on_request(&req(&[], &["b"], "")).unwrap().push.is_none());
    nack(&mut s, &p2);
    assert!(!s.refused(CLUSTER));
    let p3 = s.on_snapshot(&snap(&[("a", 2), ("b", 2)])).remove(0);
    assert_eq!(names(&p3), ["a"]);
    assert!(p3.removed.is_empty(), "b is not the client's any more");
}

#[test]
fn a_refused_type_is_resent_after_a_change_of_another_subscribed_type() {
    // A route refused while its destination is ambiguous; a cluster change may resolve it.
    let mut s = acked_routes_and_clusters();
    let p2 = s.on_snapshot(&mixed(&[("r", 2)], &[("c", 1)], 1)).remove(0);
    assert_eq!(&*p2.type_url, ROUTE);
    nack(&mut s, &p2);
    assert!(s.refused(ROUTE));

    // Unchanged, or changed only in a type this stream does not subscribe to: nothing.
    assert!(
        s.on_snapshot(&mixed(&[("r", 2)], &[("c", 1)], 1))
            .is_empty()
    );
    assert!(
        s.on_snapshot(&mixed(&[("r", 2)], &[("c", 1)], 2))
            .is_empty()
    );

    // The cluster change goes first, then the refused route again.
    let pushes = s.on_snapshot(&mixed(&[("r", 2)], &[("c", 2)], 2));
    let order: Vec<(&str, Vec<&str>)> = pushes.iter().map(|p| (&*p.type_url, names(p))).collect();
    assert_eq!(order, [(CLUSTER, vec!["c"]), (ROUTE, vec!["r"])]);
    assert!(!s.refused(ROUTE));
    for p in &pushes {
        ack(&mut s, p);
    }
    assert!(s.on_snapshot(&mixed(&[("r", 2)], &[("c", 3)], 2)).len() == 1);
    assert_eq!(s.known_version(LISTENER, "inbound"), None);
}

#[test]
fn refusals_of_two_types_never_ping_pong() {
    // A client that refuses everything, answering each response as it comes: the resends one
    // NACK causes must not make the other type's NACK owe a resend, and so on forever.
    let mut s = acked_routes_and_clusters();
    let mut queue: VecDeque<DeltaPush> = s.on_snapshot(&mixed(&[("r", 2)], &[("c", 2)], 1)).into();
    assert_eq!(queue.len(), 2);
    let mut sent = 0;
    while let Some(p) = queue.pop_front() {
        sent += 1;
        assert!(sent <= 3, "resends ping-pong: {sent} responses");
        queue.extend(nack_then(&mut s, &p));
    }
    // The first refused type was refused before the second's change reached the client: one
    // resend is owed to it, no more.
    assert_eq!(sent, 3);
    assert!(s.refused(ROUTE) && s.refused(CLUSTER));
    assert!(
        s.on_snapshot(&mixed(&[("r", 2)], &[("c", 2)], 1))
            .is_empty()
    );
}
