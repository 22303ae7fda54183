//! The server side of one state-of-the-world ADS stream, free of I/O.
//!
//! Invariants:
//! - per type URL, the stream remembers the version and nonce it sent last; a request whose
//!   `response_nonce` is not that nonce is stale and changes nothing (xDS "stale nonce" rule);
//! - a request with the current nonce and `error_detail` is a NACK: the client keeps running the
//!   version it names in `version_info`. Any change of the type sends its whole set anyway
//!   (SotW), the refused resources with it; and, as the delta stream does, a change of any other
//!   subscribed type sends the refused type again too, after the changed ones (the refusal may
//!   have depended on them). An unchanged view sends nothing, and a NACK sends nothing unless a
//!   change of another type (a resend is not a change) followed the refused response (the client
//!   refused before it saw that change: the retry is owed at once). Every resend is paid for by
//!   a distinct change, so the same rejected set never ping-pongs, not even between two types;
//! - a response always carries the full subscribed set of its type (SotW), and is sent only when
//!   that set's version differs from the one sent last, or the subscription changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::retry::{Responses, push_order, seq_of};
use super::snapshot::{Entry, Snapshot, set_version};
use super::{
    MAX_NAMES_PER_TYPE, NodeInfo, ProtocolError, StreamEvent, Subscription, WILDCARD,
    check_request_head, type_key,
};

/// A response the stream should send.
#[derive(Debug, Clone)]
pub struct SotwPush {
    /// Type URL.
    pub type_url: Arc<str>,
    /// Version of the whole set.
    pub version: Arc<str>,
    /// Nonce the client echoes in its ACK or NACK.
    pub nonce: String,
    /// Every subscribed resource of the type.
    pub resources: Vec<Arc<Entry>>,
}

/// What one request produced.
#[derive(Debug, Default)]
pub struct SotwOutcome {
    /// An ACK or NACK, if the request was one.
    pub event: Option<StreamEvent>,
    /// A response to send, if the subscription changed or this is the first request of a type.
    pub push: Option<SotwPush>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    sent_version: Option<Arc<str>>,
    /// Number (nonce) of the last response of this type.
    sent_seq: Option<u64>,
    acked_version: Option<String>,
    /// The client NACKed the last response of this type, which has not been sent again since.
    refused: bool,
}

/// One state-of-the-world stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    node: Option<NodeInfo>,
    types: HashMap<Arc<str>, TypeState>,
    view: Option<Arc<Snapshot>>,
    responses: Responses,
}

impl SotwStream {
    /// A stream that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node from the first request.
    pub fn node(&self) -> Option<&NodeInfo> {
        self.node.as_ref()
    }

    /// The version the client last ACKed for `type_url`.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    /// The subscription for `type_url`.
    pub fn subscription(&self, type_url: &str) -> Option<&Subscription> {
        self.types.get(type_url).map(|t| &t.subscription)
    }

    /// Handles one request from the client.
    pub fn on_request(&mut self, req: &DiscoveryRequest) -> Result<SotwOutcome, ProtocolError> {
        check_request_head(&mut self.node, req.node.as_ref(), &req.type_url)?;
        if req.resource_names.len() > MAX_NAMES_PER_TYPE {
            return Err(ProtocolError::TooManyNames(MAX_NAMES_PER_TYPE));
        }
        let (type_url, first) = type_key(&self.types, &req.type_url)?;
        let state = self.types.entry(type_url.clone()).or_default();
        let mut outcome = SotwOutcome::default();
        let mut retry_now = false;

        if !req.response_nonce.is_empty() {
            let Some(seq) = state
                .sent_seq
                .filter(|&sent| seq_of(&req.response_nonce) == Some(sent))
            else {
                // Stale: an answer to a response that has since been superseded.
                return Ok(outcome);
            };
            match &req.error_detail {
                Some(status) => {
                    state.refused = true;
                    retry_now = self.responses.changed_since(seq);
                    outcome.event = Some(StreamEvent::Nack {
                        type_url: type_url.clone(),
                        rejected_version: state
                            .sent_version
                            .as_deref()
                            .unwrap_or_default()
                            .to_owned(),
                        kept_version: req.version_info.clone(),
                        error: status.message.clone(),
                    });
                    state.acked_version =
                        (!req.version_info.is_empty()).then(|| req.version_info.clone());
                }
                None => {
                    state.acked_version = Some(req.version_info.clone());
                    outcome.event = Some(StreamEvent::Ack {
                        type_url: type_url.clone(),
                        version: req.version_info.clone(),
                    });
                }
            }
        }

        let subscription = sotw_subscription(&req.resource_names, first, &state.subscription);
        let change = first || subscription != state.subscription;
        state.subscription = subscription;
        if !(change || retry_now) {
            return Ok(outcome);
        }
        let Some(view) = self.view.clone() else {
            return Ok(outcome);
        };
        let (version, resources) = select(&view, &type_url, &state.subscription);
        if first
            && req.response_nonce.is_empty()
            && !req.version_info.is_empty()
            && *req.version_info == *version
        {
            // A client reconnecting with the set it already runs: nothing to send.
            state.sent_version = Some(version);
            state.acked_version = Some(req.version_info.clone());
            return Ok(outcome);
        }
        outcome.push = Some(self.push(type_url, version, resources, change));
        Ok(outcome)
    }

    /// Takes a new view of the resources for this stream's node and returns the responses to send:
    /// one per subscribed type whose set changed; and, when any did, one per type whose last
    /// response was NACKed, after the changed ones.
    pub fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<SotwPush> {
        self.view = Some(view.clone());
        let order = push_order(self.types.iter().map(|(type_url, state)| {
            let (version, resources) = select(view, type_url, &state.subscription);
            let changed = state.sent_version.as_deref() != Some(&*version);
            (
                (type_url.clone(), version, resources),
                changed,
                state.refused,
            )
        }));
        order
            .into_iter()
            .map(|((url, version, resources), change)| self.push(url, version, resources, change))
            .collect()
    }

    /// Records and returns a response; `change` says it answers a change (of the view or the
    /// subscription), not only a refusal.
    fn push(
        &mut self,
        type_url: Arc<str>,
        version: Arc<str>,
        resources: Vec<Arc<Entry>>,
        change: bool,
    ) -> SotwPush {
        let seq = self.responses.next(change);
        if let Some(state) = self.types.get_mut(&type_url) {
            state.sent_version = Some(version.clone());
            state.sent_seq = Some(seq);
            state.refused = false;
        }
        SotwPush {
            type_url,
            version,
            nonce: seq.to_string(),
            resources,
        }
    }
}

/// The subscription a SotW request asks for: `*` or an empty first request means wildcard; an
/// empty list later keeps a wildcard and empties an explicit subscription.
fn sotw_subscription(names: &[String], first: bool, prev: &Subscription) -> Subscription {
    let wildcard =
        names.iter().any(|n| n == WILDCARD) || (names.is_empty() && (first || prev.wildcard));
    Subscription {
        wildcard,
        names: names
            .iter()
            .filter(|n| *n != WILDCARD)
            .cloned()
            .collect::<BTreeSet<_>>(),
    }
}

/// The resources of `type_url` that `sub` covers, and their set version. A wildcard reuses the
/// snapshot's precomputed set version (no hashing per stream).
fn select(view: &Snapshot, type_url: &str, sub: &Subscription) -> (Arc<str>, Vec<Arc<Entry>>) {
    let Some(set) = view.type_set(type_url) else {
        return (Arc::from(set_version(std::iter::empty())), Vec::new());
    };
    if sub.wildcard {
        return (
            set.version.clone(),
            set.resources.values().cloned().collect(),
        );
    }
    let resources: Vec<Arc<Entry>> = sub
        .names
        .iter()
        .filter_map(|n| set.resources.get(n.as_str()).cloned())
        .collect();
    (Arc::from(set_version(resources.iter())), resources)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;

    use super::*;
    use crate::transport::resource::{Kind, encode};
    use crate::transport::test_support::{CLUSTER, ROUTE, refusal, snap};

    fn req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: "proxy-1".into(),
                ..Default::default()
            }),
            type_url: CLUSTER.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(p: &SotwPush) -> Vec<&str> {
        p.resources.iter().map(|e| &*e.name).collect()
    }

    #[test]
    fn first_request_gets_the_full_set_and_ack_records_version() {
        let mut s = SotwStream::new();
        s.on_snapshot(&snap(&[("a", 1), ("b", 1)]));
        let out = s.on_request(&req(&[], "", "")).unwrap();
        let push = out.push.unwrap();
        assert_eq!(names(&push), ["a", "b"]);
        assert_eq!(s.node().unwrap().id, "proxy-1");

        let out = s.on_request(&req(&[], &push.version, &push.nonce)).unwrap();
        assert!(out.push.is_none());
        assert_eq!(
            out.event,
            Some(StreamEvent::Ack {
                type_url: CLUSTER.into(),
                version: push.version.to_string()
            })
        );
        assert_eq!(s.acked_version(CLUSTER), Some(&*push.version));
    }

    #[test]
    fn a_first_request_for_a_type_with_nothing_is_answered_empty() {
        // Before and after the first view: the client's initial fetch needs the answer.
        let mut before = SotwStream::new();
        assert!(before.on_request(&req(&[], "", "")).unwrap().push.is_none());
        let pushes = before.on_snapshot(&snap(&[]));
        assert_eq!(pushes.len(), 1);
        assert!(pushes[0].resources.is_empty());
        let mut after = SotwStream::new();
        after.on_snapshot(&snap(&[]));
        let push = after.on_request(&req(&[], "", "")).unwrap().push.unwrap();
        assert!(push.resources.is_empty());
    }

    #[test]
    fn nack_keeps_last_acked_version_and_is_not_resent() {
        let mut s = SotwStream::new();
        s.on_snapshot(&snap(&[("a", 1)]));
        let p1 = s.on_request(&req(&[], "", "")).unwrap().push.unwrap();
        s.on_request(&req(&[], &p1.version, &p1.nonce)).unwrap();

        let pushes = s.on_snapshot(&snap(&[("a", 2)]));
        assert_eq!(pushes.len(), 1);
        let p2 = &pushes[0];
        let mut nack = req(&[], &p1.version, &p2.nonce);
        nack.error_detail = Some(refusal("cluster a: bad breaker"));
        let out = s.on_request(&nack).unwrap();
        match out.event {
            Some(StreamEvent::Nack {
                rejected_version,
                kept_version,
                error,
                ..
            }) => {
                assert_eq!(rejected_version, &*p2.version);
                assert_eq!(kept_version, &*p1.version);
                assert_eq!(error, "cluster a: bad breaker");
            }
            other => panic!("expected a NACK, got {other:?}"),
        }
        assert!(out.push.is_none());
        assert_eq!(s.acked_version(CLUSTER), Some(&*p1.version));
        // The same rejected content is not pushed again; a fix is.
        assert!(s.on_snapshot(&snap(&[("a", 2)])).is_empty());
        assert_eq!(s.on_snapshot(&snap(&[("a", 3)])).len(), 1);
    }

    fn typed(mut r: DiscoveryRequest, url: &str) -> DiscoveryRequest {
        r.type_url = url.into();
        r
    }

    /// Route `r` and cluster `c` at the given versions, and listener `inbound` if given.
    fn view(route: u32, cluster: u32, listener: Option<u32>) -> Arc<Snapshot> {
        let listener = listener.map(|l| encode(Kind::Listener, "inbound", &l).unwrap());
        Arc::new(Snapshot::new(
            [
                encode(Kind::Route, "r", &route).unwrap(),
                encode(Kind::Cluster, "c", &cluster).unwrap(),
            ]
            .into_iter()
            .chain(listener),
        ))
    }

    /// A NACK of `p` with `message`.
    fn refuse(p: &SotwPush, message: &str) -> DiscoveryRequest {
        let mut r = typed(req(&[], "", &p.nonce), &p.type_url);
        r.error_detail = Some(refusal(message));
        r
    }

    /// A stream subscribed to routes and clusters that has ACKed a first configuration of `v`.
    fn acked_routes_and_clusters(v: &Arc<Snapshot>) -> SotwStream {
        let mut s = SotwStream::new();
        s.on_snapshot(v);
        for url in [ROUTE, CLUSTER] {
            let p = s
                .on_request(&typed(req(&[], "", ""), url))
                .unwrap()
                .push
                .unwrap();
            s.on_request(&typed(req(&[], &p.version, &p.nonce), url))
                .unwrap();
        }
        s
    }

    #[test]
    fn a_refused_type_is_resent_after_a_change_of_another_subscribed_type() {
        let mut s = acked_routes_and_clusters(&view(1, 1, Some(1)));
        let p2 = s.on_snapshot(&view(2, 1, Some(1))).remove(0);
        assert_eq!(&*p2.type_url, ROUTE);
        let out = s
            .on_request(&refuse(&p2, "route r: ambiguous destination"))
            .unwrap();
        assert!(matches!(out.event, Some(StreamEvent::Nack { .. })));
        assert!(out.push.is_none(), "a NACK itself never sends anything");
        // Unchanged, or changed only in a type this stream does not subscribe to: nothing.
        assert!(s.on_snapshot(&view(2, 1, Some(1))).is_empty());
        assert!(s.on_snapshot(&view(2, 1, Some(2))).is_empty());
        // The cluster change goes first, then the refused route set again.
        let v3 = view(2, 2, Some(2));
        let pushes = s.on_snapshot(&v3);
        let order: Vec<(&str, &str)> = pushes.iter().map(|p| (&*p.type_url, &*p.version)).collect();
        let clusters = &v3.type_set(CLUSTER).unwrap().version;
        assert_eq!(order, [(CLUSTER, &**clusters), (ROUTE, &*p2.version)]);
        // Sent again: the next unrelated change does not repeat it.
        let pushes = s.on_snapshot(&view(2, 3, Some(2)));
        assert_eq!(pushes.len(), 1);
        assert_eq!(&*pushes[0].type_url, CLUSTER);
    }

    #[test]
    fn a_nack_overtaken_by_a_push_of_another_type_is_retried_at_once() {
        let refuse = |p: &SotwPush| refuse(p, "route r: no cluster serves its destination");
        let mut s = acked_routes_and_clusters(&view(1, 1, None));
        let route = s.on_snapshot(&view(2, 1, None)).remove(0);
        let cluster = s.on_snapshot(&view(2, 2, None)).remove(0);
        assert_eq!(&*cluster.type_url, CLUSTER);
        // The NACK crossed the cluster push: the route set is owed at once.
        let again = s.on_request(&refuse(&route)).unwrap().push.unwrap();
        assert_eq!(
            (&*again.type_url, &*again.version),
            (ROUTE, &*route.version)
        );
        s.on_request(&typed(req(&[], &cluster.version, &cluster.nonce), CLUSTER))
            .unwrap();
        // Refused again after the cluster: nothing until the view changes.
        let out = s.on_request(&refuse(&again)).unwrap();
        assert!(matches!(out.event, Some(StreamEvent::Nack { .. })));
        assert!(out.push.is_none());
        assert!(s.on_snapshot(&view(2, 2, None)).is_empty());
    }

    #[test]
    fn refusals_of_two_types_never_ping_pong() {
        let mut s = acked_routes_and_clusters(&view(1, 1, None));
        // A client that refuses every response, answering each as it comes.
        let mut queue: std::collections::VecDeque<SotwPush> =
            s.on_snapshot(&view(2, 2, None)).into();
        assert_eq!(queue.len(), 2);
        let mut sent = 0;
        while let Some(p) = queue.pop_front() {
            sent += 1;
            assert!(sent <= 3, "resends ping-pong: {sent} responses");
            queue.extend(s.on_request(&refuse(&p, "refused")).unwrap().push);
        }
        assert_eq!(
            sent, 3,
            "one resend owed: the first refusal crossed the second change"
        );
        assert!(s.on_snapshot(&view(2, 2, None)).is_empty());
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let mut s = SotwStream::new();
        s.on_snapshot(&snap(&[("a", 1)]));
        let p1 = s.on_request(&req(&[], "", "")).unwrap().push.unwrap();
        let p2 = s.on_snapshot(&snap(&[("a", 2)])).remove(0);
        // The ACK of p1 arrives after p2 was sent: stale.
        let out = s.on_request(&req(&["x"], &p1.version, &p1.nonce)).unwrap();
        assert!(out.event.is_none() && out.push.is_none());
        assert_eq!(s.acked_version(CLUSTER), None);
        assert!(
            s.subscription(CLUSTER).unwrap().wildcard,
            "a stale request must not change the subscription"
        );
        let out = s.on_request(&req(&[], &p2.version, &p2.nonce)).unwrap();
        assert!(matches!(out.event, Some(StreamEvent::Ack { .. })));
    }

    #[test]
    fn explicit_subscribe_and_unsubscribe() {
        let mut s = SotwStream::new();
        s.on_snapshot(&snap(&[("a", 1), ("b", 1), ("c", 1)]));
        let p1 = s.on_request(&req(&["a"], "", "")).unwrap().push.unwrap();
        assert_eq!(names(&p1), ["a"]);
        // Change to b has no effect on a stream subscribed to a only.
        assert!(
            s.on_snapshot(&snap(&[("a", 1), ("b", 2), ("c", 1)]))
                .is_empty()
        );
        let p2 = s
            .on_request(&req(&["a", "c"], &p1.version, &p1.nonce))
            .unwrap()
            .push
            .unwrap();
        assert_eq!(names(&p2), ["a", "c"]);
        let p3 = s
            .on_request(&req(&["c"], &p2.version, &p2.nonce))
            .unwrap()
            .push
            .unwrap();
        assert_eq!(names(&p3), ["c"]);
        let p4 = s
            .on_request(&req(&[], &p3.version, &p3.nonce))
            .unwrap()
            .push
            .unwrap();
        assert!(
            p4.resources.is_empty(),
            "an empty list after explicit names unsubscribes all"
        );
    }

    #[test]
    fn removal_sends_the_smaller_set() {
        let mut s = SotwStream::new();
        s.on_snapshot(&snap(&[("a", 1), ("b", 1)]));
        s.on_request(&req(&[], "", "")).unwrap();
        let p = s.on_snapshot(&snap(&[("b", 1)])).remove(0);
        assert_eq!(names(&p), ["b"]);
    }

    #[test]
    fn reconnect_with_current_version_sends_nothing() {
        let view = snap(&[("a", 1)]);
        let mut s = SotwStream::new();
        s.on_snapshot(&view);
        let p = s.on_request(&req(&[], "", "")).unwrap().push.unwrap();
        let mut again = SotwStream::new();
        again.on_snapshot(&view);
        let out = again.on_request(&req(&[], &p.version, "")).unwrap();
        assert!(out.push.is_none());
        assert_eq!(again.acked_version(CLUSTER), Some(&*p.version));
        assert_eq!(again.on_snapshot(&snap(&[("a", 2)])).len(), 1);
    }

    #[test]
    fn protocol_errors() {
        let mut s = SotwStream::new();
        let mut r = req(&[], "", "");
        r.node = None;
        assert_eq!(s.on_request(&r).unwrap_err(), ProtocolError::MissingNode);
        let mut r = req(&[], "", "");
        r.type_url.clear();
        assert_eq!(s.on_request(&r).unwrap_err(), ProtocolError::MissingTypeUrl);
    }
}
