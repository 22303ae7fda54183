//! Unit tests of the client state machine: ACK, NACK, warm-up, removal and resume.

use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::Resource;

use super::*;
use crate::transport::resource::{EncodedResource, encode, encode_with_deps};

fn state() -> ClientState {
    ClientState::new(
        NodeInfo {
            id: "proxy-1".into(),
            ..Default::default()
        },
        Kind::ALL.iter().map(|k| k.type_url().to_owned()),
        Duration::from_secs(10),
    )
}

fn response(
    kind: Kind,
    nonce: &str,
    res: &[EncodedResource],
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: kind.type_url().into(),
        system_version_info: format!("sys-{nonce}"),
        nonce: nonce.into(),
        resources: res
            .iter()
            .map(|r| Resource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.to_any()),
                ..Default::default()
            })
            .collect(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An applier that records every config it sees and fails when told to.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<AppliedConfig>>>,
    fail_with: Arc<Mutex<Option<String>>>,
}

impl Applier for Recorder {
    fn apply(&mut self, config: &AppliedConfig) -> Result<(), String> {
        if let Some(msg) = self.fail_with.lock().unwrap().clone() {
            return Err(msg);
        }
        self.seen.lock().unwrap().push(config.clone());
        Ok(())
    }
}

/// Connects and answers every type empty, as the server does on a first subscription: the
/// first (empty) configuration is applied, so later responses apply as they come.
fn started(s: &mut ClientState, rec: &mut Recorder) {
    s.on_connect();
    for kind in Kind::ALL {
        let nonce = format!("init-{}", kind.type_url());
        let out = s.on_response(&response(kind, &nonce, &[], &[]), Instant::now(), rec);
        assert!(out.iter().all(|r| r.error_detail.is_none()));
    }
    assert_eq!(s.applies(), 1);
    rec.seen.lock().unwrap().clear();
}

fn is_ack(r: &DeltaDiscoveryRequest, nonce: &str) -> bool {
    r.response_nonce == nonce && r.error_detail.is_none()
}

#[test]
fn connect_subscribes_wildcard_with_node() {
    let mut s = state();
    let reqs = s.on_connect();
    assert_eq!(reqs.len(), Kind::ALL.len());
    for r in &reqs {
        assert_eq!(r.resource_names_subscribe, vec!["*".to_string()]);
        assert_eq!(r.node.as_ref().unwrap().id, "proxy-1");
        assert!(r.initial_resource_versions.is_empty());
    }
}

#[test]
fn valid_response_is_applied_and_acked() {
    let mut s = state();
    let mut rec = Recorder::default();
    started(&mut s, &mut rec);
    let c = encode(Kind::Cluster, "payments", &1).unwrap();
    let out = s.on_response(
        &response(Kind::Cluster, "1", std::slice::from_ref(&c), &[]),
        Instant::now(),
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert!(is_ack(&out[0], "1"));
    assert_eq!(
        s.applied().get(&c.type_url, "payments").unwrap().version,
        c.version
    );
    assert_eq!(s.acked_versions()[Kind::Cluster.type_url()], "sys-1");
    assert_eq!(rec.seen.lock().unwrap().len(), 1);
    let decoded: Vec<Decoded<u32>> = s.applied().decode_kind(Kind::Cluster).unwrap();
    assert_eq!(decoded[0].body, 1);
}

#[test]
fn apply_error_becomes_nack_with_detail_and_keeps_last_good() {
    let mut s = state();
    let mut rec = Recorder::default();
    started(&mut s, &mut rec);
    let good = encode(Kind::Cluster, "payments", &1).unwrap();
    s.on_response(
        &response(Kind::Cluster, "1", std::slice::from_ref(&good), &[]),
        Instant::now(),
        &mut rec,
    );

    *rec.fail_with.lock().unwrap() =
        Some("cluster payments: field outlier.interval: expected > 0".into());
    let bad = encode(Kind::Cluster, "payments", &2).unwrap();
    let out = s.on_response(
        &response(Kind::Cluster, "2", &[bad], &[]),
        Instant::now(),
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_nonce, "2");
    let detail = out[0].error_detail.as_ref().unwrap();
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("outlier.interval"),
        "{}",
        detail.message
    );
    assert_eq!(
        s.applied().get(&good.type_url, "payments").unwrap().version,
        good.version
    );
    assert_eq!(s.acked_versions()[Kind::Cluster.type_url()], "sys-1");
    assert!(s.last_error().unwrap().contains("outlier"));

    // A later good update applies on top of the last good config, not the rejected one.
    *rec.fail_with.lock().unwrap() = None;
    let other = encode(Kind::Cluster, "orders", &1).unwrap();
    let out = s.on_response(
        &response(Kind::Cluster, "3", &[other], &[]),
        Instant::now(),
        &mut rec,
    );
    assert!(is_ack(&out[0], "3"));
    let last = rec.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        last.get(&good.type_url, "payments").unwrap().version,
        good.version
    );
    assert!(last.get(&good.type_url, "orders").is_some());
}

#[test]
fn warm_up_waits_for_dependencies_then_applies_once() {
    let mut s = state();
    let mut rec = Recorder::default();
    started(&mut s, &mut rec);
    let now = Instant::now();
    let listener = encode_with_deps(Kind::Listener, "inbound", &1, &[(Kind::Route, "r1")]).unwrap();
    let route = encode_with_deps(Kind::Route, "r1", &1, &[(Kind::Cluster, "payments")]).unwrap();
    let cluster = encode_with_deps(
        Kind::Cluster,
        "payments",
        &1,
        &[(Kind::Endpoints, "payments")],
    )
    .unwrap();
    let endpoints = encode(Kind::Endpoints, "payments", &1).unwrap();

    assert!(
        s.on_response(
            &response(Kind::Listener, "1", &[listener], &[]),
            now,
            &mut rec
        )
        .is_empty()
    );
    assert!(
        s.on_response(&response(Kind::Route, "2", &[route], &[]), now, &mut rec)
            .is_empty()
    );
    assert!(
        s.on_response(
            &response(Kind::Cluster, "3", &[cluster], &[]),
            now,
            &mut rec
        )
        .is_empty()
    );
    assert_eq!(s.pending(), 3);
    assert!(
        rec.seen.lock().unwrap().is_empty(),
        "nothing applies before the endpoints arrive"
    );
    assert!(s.applied().is_empty());

    let out = s.on_response(
        &response(Kind::Endpoints, "4", &[endpoints], &[]),
        now,
        &mut rec,
    );
    let nonces: Vec<&str> = out.iter().map(|r| r.response_nonce.as_str()).collect();
    assert_eq!(nonces, ["1", "2", "3", "4"]);
    assert!(out.iter().all(|r| r.error_detail.is_none()));
    let seen = rec.seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "applied once, with everything");
    assert_eq!(seen[0].len(), 4);
}

#[test]
fn warm_up_subscribes_to_missing_names_when_explicit() {
    let mut s = state();
    s.set_subscription(Kind::Route.type_url(), Subscription::default());
    let mut rec = Recorder::default();
    let opening = s.on_connect();
    assert!(
        opening.iter().all(|r| r.type_url != Kind::Route.type_url()),
        "an empty explicit subscription is not announced (it would read as a wildcard)"
    );
    let listener = encode_with_deps(Kind::Listener, "inbound", &1, &[(Kind::Route, "r1")]).unwrap();
    let out = s.on_response(
        &response(Kind::Listener, "1", &[listener], &[]),
        Instant::now(),
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, Kind::Route.type_url());
    assert_eq!(out[0].resource_names_subscribe, vec!["r1".to_string()]);
    assert!(out[0].response_nonce.is_empty());
}

#[test]
fn warm_up_timeout_nacks_naming_the_missing_resource() {
    let mut s = state();
    let mut rec = Recorder::default();
    s.on_connect();
    let t0 = Instant::now();
    let listener = encode_with_deps(Kind::Listener, "inbound", &1, &[(Kind::Route, "r1")]).unwrap();
    s.on_response(
        &response(Kind::Listener, "1", &[listener], &[]),
        t0,
        &mut rec,
    );
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert!(s.poll(t0 + Duration::from_secs(9)).is_empty());
    let out = s.poll(t0 + Duration::from_secs(10));
    assert_eq!(out.len(), 1);
    let msg = &out[0].error_detail.as_ref().unwrap().message;
    assert!(
        msg.contains("Listener \"inbound\" references Route \"r1\""),
        "{msg}"
    );
    assert!(s.next_deadline().is_none());
    assert!(s.applied().is_empty());
}

#[test]
fn delta_removal_leaves_the_config() {
    let mut s = state();
    let mut rec = Recorder::default();
    started(&mut s, &mut rec);
    let a = encode(Kind::Cluster, "a", &1).unwrap();
    let b = encode(Kind::Cluster, "b", &1).unwrap();
    s.on_response(
        &response(Kind::Cluster, "1", &[a, b], &[]),
        Instant::now(),
        &mut rec,
    );
    let out = s.on_response(
        &response(Kind::Cluster, "2", &[], &["a"]),
        Instant::now(),
        &mut rec,
    );
    assert!(is_ack(&out[0], "2"));
    let names: Vec<&str> = s
        .applied()
        .of_type(Kind::Cluster.type_url())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn invalid_envelope_is_nacked_without_touching_the_config() {
    let mut s = state();
    let mut rec = Recorder::default();
    s.on_connect();
    let mut bogus = encode(Kind::Cluster, "a", &1).unwrap();
    bogus.value = Bytes::from_static(b"\xff\xff\xff");
    let out = s.on_response(
        &response(Kind::Cluster, "1", &[bogus], &[]),
        Instant::now(),
        &mut rec,
    );
    assert!(out[0].error_detail.is_some());
    assert!(rec.seen.lock().unwrap().is_empty());
    assert_eq!(s.pending(), 0);
}

#[test]
fn reconnect_resumes_with_applied_versions_and_drops_pending() {
    let mut s = state();
    let mut rec = Recorder::default();
    started(&mut s, &mut rec);
    let c = encode(Kind::Cluster, "payments", &1).unwrap();
    s.on_response(
        &response(Kind::Cluster, "1", std::slice::from_ref(&c), &[]),
        Instant::now(),
        &mut rec,
    );
    let l = encode_with_deps(Kind::Listener, "inbound", &1, &[(Kind::Route, "r1")]).unwrap();
    s.on_response(
        &response(Kind::Listener, "2", &[l], &[]),
        Instant::now(),
        &mut rec,
    );
    assert_eq!(s.pending(), 1);

    let reqs = s.on_connect();
    assert_eq!(s.pending(), 0);
    let cluster_req = reqs
        .iter()
        .find(|r| r.type_url == Kind::Cluster.type_url())
        .unwrap();
    assert_eq!(
        cluster_req.initial_resource_versions.get("payments"),
        Some(&c.version)
    );
    let listener_req = reqs
        .iter()
        .find(|r| r.type_url == Kind::Listener.type_url())
        .unwrap();
    assert!(
        listener_req.initial_resource_versions.is_empty(),
        "a resource never applied is not claimed, so the server sends it again"
    );
}

#[test]
fn unsubscribed_type_is_nacked() {
    let mut s = ClientState::new(
        NodeInfo::default(),
        [Kind::Cluster.type_url().to_owned()],
        DEFAULT_WARM_TIMEOUT,
    );
    let mut rec = Recorder::default();
    let r = encode(Kind::Route, "r", &1).unwrap();
    let out = s.on_response(
        &response(Kind::Route, "1", &[r], &[]),
        Instant::now(),
        &mut rec,
    );
    assert!(
        out[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .contains("did not subscribe")
    );
}

#[test]
fn the_first_configuration_waits_for_every_subscribed_type() {
    let mut s = state();
    let mut rec = Recorder::default();
    s.on_connect();
    let t0 = Instant::now();
    let c = encode(Kind::Cluster, "payments", &1).unwrap();
    let out = s.on_response(&response(Kind::Cluster, "c", &[c], &[]), t0, &mut rec);
    assert!(
        out.is_empty(),
        "nothing is answered before every type has answered"
    );
    let policy = Kind::AuthorizationPolicy.type_url();
    for kind in Kind::ALL
        .iter()
        .filter(|k| k.type_url() != policy && **k != Kind::Cluster)
    {
        let out = s.on_response(&response(*kind, "e", &[], &[]), t0, &mut rec);
        assert!(out.is_empty());
    }
    assert!(
        rec.seen.lock().unwrap().is_empty(),
        "no policies yet: not applied"
    );
    assert_eq!(s.awaiting_first_response(), [policy.to_owned()]);

    // The warm-up deadline NACKs what waits, naming the type never received.
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
    let out = s.poll(t0 + Duration::from_secs(10));
    assert_eq!(out.len(), Kind::ALL.len() - 1);
    let msg = &out[0].error_detail.as_ref().unwrap().message;
    assert!(
        msg.contains(&format!("no response yet for {policy}")),
        "{msg}"
    );
    assert!(s.applied().is_empty());

    // The policies arrive late: everything received before (kept; the server sends it again
    // only after the policies) is applied with them, at once.
    let p = encode(Kind::AuthorizationPolicy, "a/deny", &1).unwrap();
    let out = s.on_response(
        &response(Kind::AuthorizationPolicy, "p", &[p], &[]),
        t0,
        &mut rec,
    );
    assert_eq!(out.len(), 1);
    assert!(is_ack(&out[0], "p"));
    let seen = rec.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].get(Kind::Cluster.type_url(), "payments").is_some());
    assert!(seen[0].get(policy, "a/deny").is_some());
    assert!(s.awaiting_first_response().is_empty());
}

#[test]
fn empty_first_responses_apply_an_empty_configuration_and_later_ones_apply_alone() {
    let mut s = state();
    let mut rec = Recorder::default();
    s.on_connect();
    let mut acks = 0;
    for kind in Kind::ALL {
        acks += s
            .on_response(&response(kind, "0", &[], &[]), Instant::now(), &mut rec)
            .iter()
            .filter(|r| is_ack(r, "0"))
            .count();
    }
    assert_eq!(
        acks,
        Kind::ALL.len(),
        "every first response is ACKed with the apply"
    );
    assert_eq!(rec.seen.lock().unwrap().len(), 1);
    assert!(s.applied().is_empty());

    // After a reconnect the gate is not applied again: the proxy has a configuration.
    s.on_connect();
    let c = encode(Kind::Cluster, "a", &1).unwrap();
    let out = s.on_response(
        &response(Kind::Cluster, "1", &[c], &[]),
        Instant::now(),
        &mut rec,
    );
    assert!(is_ack(&out[0], "1"));
    assert_eq!(rec.seen.lock().unwrap().len(), 2);
}
