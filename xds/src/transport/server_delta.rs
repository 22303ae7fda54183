//! The server side of one delta (incremental) ADS stream, free of I/O.
//!
//! Invariants:
//! - per type URL, `known` holds the version of every resource the client has been sent (or told
//!   us it has, through `initial_resource_versions` on reconnect); a push carries only resources
//!   whose version differs from `known`, and removals for names in `known` that left the view;
//! - after a diff of a wildcard subscription the client has exactly the view's set, so `known` is
//!   that shared set ([`Known::Mirror`]), not a per-stream copy: a stream's memory does not grow
//!   with the snapshot, and the next diff is the set-to-set change the server computed once per
//!   push ([`TypeSet::changes_since`]), not a lookup per resource;
//! - subscribe and unsubscribe apply whatever the nonce; ACK and NACK only match an outstanding
//!   nonce (a bounded window), others are stale;
//! - after a NACK the rejected resources stay in `known`, so they are resent only when they change;
//! - the first subscription of a type is answered once the view exists, even when nothing is to
//!   be sent (an empty response), as Envoy's initial fetch expects: a client waits for every type
//!   it subscribed to before it applies its first configuration, so "no AuthorizationPolicy"
//!   must be said, not left unsaid.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::snapshot::{Entry, Snapshot, TypeSet};
use super::{
    MAX_NAMES_PER_TYPE, NodeInfo, ProtocolError, StreamEvent, Subscription, WILDCARD,
    check_request_head, type_key,
};

/// Outstanding (un-answered) responses remembered per type; older ones count as stale.
const MAX_OUTSTANDING: usize = 16;

/// A response the stream should send.
#[derive(Debug, Clone)]
pub struct DeltaPush {
    /// Type URL.
    pub type_url: Arc<str>,
    /// Version of the type's whole set in the view (`system_version_info`).
    pub system_version: Arc<str>,
    /// Nonce the client echoes in its ACK or NACK.
    pub nonce: String,
    /// Added or changed resources.
    pub resources: Vec<Arc<Entry>>,
    /// Names of resources the client has and should drop.
    pub removed: Vec<Arc<str>>,
}

/// What one request produced.
#[derive(Debug, Default)]
pub struct DeltaOutcome {
    /// An ACK or NACK, if the request answered an outstanding response.
    pub event: Option<StreamEvent>,
    /// A response to send, if the subscription change brought anything new.
    pub push: Option<DeltaPush>,
}

/// What the client has of one type: exactly the resources of a shared set (`mirror`), or, when
/// its resources are not one set of the view, a name-to-version map.
#[derive(Debug, Default)]
struct Known {
    mirror: Option<Arc<TypeSet>>,
    /// Used only while `mirror` is `None`.
    map: HashMap<Arc<str>, Arc<str>>,
}

impl Known {
    fn mirror(set: Arc<TypeSet>) -> Self {
        Known {
            mirror: Some(set),
            map: HashMap::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<str>> {
        match &self.mirror {
            Some(set) => set.resources.get(name).map(|e| &e.version),
            None => self.map.get(name),
        }
    }

    /// The map form, materialised from the mirror when needed.
    fn map_mut(&mut self) -> &mut HashMap<Arc<str>, Arc<str>> {
        if let Some(set) = self.mirror.take() {
            self.map = set
                .resources
                .iter()
                .map(|(n, e)| (n.clone(), e.version.clone()))
                .collect();
        }
        &mut self.map
    }

    fn names(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match &self.mirror {
            Some(set) => Box::new(set.resources.keys()),
            None => Box::new(self.map.keys()),
        }
    }
}

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    known: Known,
    outstanding: VecDeque<(String, Arc<str>)>,
    acked_version: Option<String>,
    /// Set version of the view last diffed; an unchanged view is skipped without a diff.
    diffed_version: Option<Arc<str>>,
    /// A response of this type was sent on this stream (the first one is sent even empty).
    answered: bool,
}

/// One delta stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    node: Option<NodeInfo>,
    types: HashMap<Arc<str>, TypeState>,
    view: Option<Arc<Snapshot>>,
    next_nonce: u64,
}

impl DeltaStream {
    /// A stream that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node from the first request.
    pub fn node(&self) -> Option<&NodeInfo> {
        self.node.as_ref()
    }

    /// The system version the client last ACKed for `type_url`.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    /// The subscription for `type_url`.
    pub fn subscription(&self, type_url: &str) -> Option<&Subscription> {
        self.types.get(type_url).map(|t| &t.subscription)
    }

    /// The version of `name` the client has been sent, if any.
    pub fn known_version(&self, type_url: &str, name: &str) -> Option<&str> {
        self.types.get(type_url)?.known.get(name).map(|v| &**v)
    }

    /// Handles one request from the client.
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
    ) -> Result<DeltaOutcome, ProtocolError> {
        check_request_head(&mut self.node, req.node.as_ref(), &req.type_url)?;
        let (type_url, first) = type_key(&self.types, &req.type_url)?;
        let state = self.types.entry(type_url.clone()).or_default();
        let mut outcome = DeltaOutcome::default();

        if !req.response_nonce.is_empty()
            && let Some(pos) = state
                .outstanding
                .iter()
                .position(|(n, _)| *n == req.response_nonce)
        {
            let (_, version) = state.outstanding[pos].clone();
            state.outstanding.drain(..=pos);
            outcome.event = Some(match &req.error_detail {
                Some(status) => StreamEvent::Nack {
                    type_url: type_url.clone(),
                    rejected_version: version.to_string(),
                    kept_version: state.acked_version.clone().unwrap_or_default(),
                    error: status.message.clone(),
                },
                None => {
                    state.acked_version = Some(version.to_string());
                    StreamEvent::Ack {
                        type_url: type_url.clone(),
                        version: version.to_string(),
                    }
                }
            });
        }

        if first {
            state.subscription.wildcard = req.resource_names_subscribe.is_empty();
            let known = state.known.map_mut();
            for (name, version) in &req.initial_resource_versions {
                known.insert(Arc::from(name.as_str()), Arc::from(version.as_str()));
            }
        }
        let before = state.subscription.clone();
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                state.subscription.wildcard = true;
            } else {
                state.subscription.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                state.subscription.wildcard = false;
            } else {
                state.subscription.names.remove(name);
            }
        }
        if state.subscription.names.len() > MAX_NAMES_PER_TYPE {
            return Err(ProtocolError::TooManyNames(MAX_NAMES_PER_TYPE));
        }
        // An ACK or NACK that changes no subscription needs no more work (this path runs once
        // per proxy per push, so it must not walk `known`).
        if !(first || before != state.subscription) {
            return Ok(outcome);
        }
        // The client forgets what it unsubscribed from; so do we.
        if !state.subscription.wildcard {
            let sub = &state.subscription;
            state.known.map_mut().retain(|name, _| sub.covers(name));
        }
        if let Some(view) = self.view.clone() {
            outcome.push = self.diff(&type_url, &view);
        }
        Ok(outcome)
    }

    /// Takes a new view of the resources for this stream's node and returns the responses to send:
    /// for each subscribed type, only what changed or left.
    pub fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<DeltaPush> {
        self.view = Some(view.clone());
        let urls: Vec<Arc<str>> = self
            .types
            .keys()
            .filter(|url| self.view_changed(url, view))
            .cloned()
            .collect();
        urls.iter().filter_map(|url| self.diff(url, view)).collect()
    }

    fn diff(&mut self, type_url: &Arc<str>, view: &Snapshot) -> Option<DeltaPush> {
        let state = self.types.get_mut(type_url)?;
        let set = view.shared_type_set(type_url);
        let set_version: Arc<str> = set
            .map(|s| s.version.clone())
            .unwrap_or_else(|| Arc::from(""));
        let wildcard = state.subscription.wildcard;
        let (resources, mut removed) = match (&state.known.mirror, set) {
            // In sync with a set: the set-to-set change, shared by every such stream.
            (Some(old), Some(set)) if wildcard => set.changes_since(old),
            (Some(old), None) if wildcard => (Vec::new(), old.resources.keys().cloned().collect()),
            _ => {
                let known = &state.known;
                let mut resources = Vec::new();
                if let Some(set) = set {
                    if wildcard {
                        for entry in set.resources.values() {
                            if !known_at(known, entry) {
                                resources.push(entry.clone());
                            }
                        }
                    } else {
                        for name in &state.subscription.names {
                            if let Some(entry) = set.resources.get(name.as_str())
                                && !known_at(known, entry)
                            {
                                resources.push(entry.clone());
                            }
                        }
                    }
                }
                let removed = known
                    .names()
                    .filter(|name| set.is_none_or(|s| !s.resources.contains_key(*name)))
                    .cloned()
                    .collect();
                (resources, removed)
            }
        };
        state.diffed_version = Some(set_version.clone());
        if wildcard {
            // The client now has exactly the view's set.
            state.known = match set {
                Some(set) => Known::mirror(set.clone()),
                None => Known::default(),
            };
        } else if !(resources.is_empty() && removed.is_empty()) {
            let known = state.known.map_mut();
            for entry in &resources {
                known.insert(entry.name.clone(), entry.version.clone());
            }
            for name in &removed {
                known.remove(name);
            }
        }
        if resources.is_empty() && removed.is_empty() && state.answered {
            return None;
        }
        state.answered = true;
        removed.sort();
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        if state.outstanding.len() >= MAX_OUTSTANDING {
            state.outstanding.pop_front();
        }
        state
            .outstanding
            .push_back((nonce.clone(), set_version.clone()));
        Some(DeltaPush {
            type_url: type_url.clone(),
            system_version: set_version,
            nonce,
            resources,
            removed,
        })
    }

    /// True when the view of `type_url` changed since the last diff (a cheap pre-check).
    pub fn view_changed(&self, type_url: &str, view: &Snapshot) -> bool {
        let Some(state) = self.types.get(type_url) else {
            return false;
        };
        let now = view.type_set(type_url).map(|s| &*s.version).unwrap_or("");
        state.diffed_version.as_deref() != Some(now)
    }

    /// Names currently subscribed explicitly for `type_url`.
    pub fn explicit_names(&self, type_url: &str) -> BTreeSet<String> {
        self.types
            .get(type_url)
            .map(|t| t.subscription.names.clone())
            .unwrap_or_default()
    }
}

/// True when the client already has `entry` at its version. Versions the client was sent are the
/// entries' own `Arc`s, so an unchanged entry compares by pointer without reading the string.
fn known_at(known: &Known, entry: &Entry) -> bool {
    known
        .get(&entry.name)
        .is_some_and(|v| Arc::ptr_eq(v, &entry.version) || **v == *entry.version)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::transport::resource::{Kind, encode};

    const CLUSTER: &str = "type.googleapis.com/jalin.v1.Cluster";

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

    fn snap(items: &[(&str, u32)]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(
            items
                .iter()
                .map(|(n, v)| encode(Kind::Cluster, n, v).unwrap()),
        ))
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
        nack.error_detail = Some(Status {
            code: 3,
            message: "cluster a: bad".into(),
            details: vec![],
        });
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
            "rejected content is not resent"
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
}
