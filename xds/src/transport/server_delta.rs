//! The server side of one delta (incremental) ADS stream, free of I/O.
//!
//! Invariants:
//! - per type URL, `known` holds the version of every resource the client has been sent (or told
//!   us it has, through `initial_resource_versions` on reconnect); a push carries only resources
//!   whose version differs from `known`, and removals for names in `known` that left the view;
//! - after a diff of a wildcard subscription the client has exactly the view's set, so `known` is
//!   that shared set (a mirror `Known`), not a per-stream copy: a stream's memory does not grow
//!   with the snapshot, and the next diff is the set-to-set change the server computed once per
//!   push ([`TypeSet::changes_since`]), not a lookup per resource;
//! - subscribe and unsubscribe apply whatever the nonce; ACK and NACK only match an outstanding
//!   nonce (a bounded window), others are stale;
//! - a NACK makes the server forget what the refused response carried: its resources and removals
//!   go back into `known` at an "unknown" version (`Known::forget`), so the client, which kept
//!   its older configuration, is sent them again (or told again to drop them) with the next push
//!   of that type, and with the next push of any other type it subscribes to (the refusal may
//!   have depended on it: a route whose destination was ambiguous until a service changed).
//!   Retried types go after the changed ones, so what they may depend on is applied first. An
//!   unchanged view sends nothing, and a NACK sends nothing unless the stream sent a change (of
//!   any type; a resend is not a change) after the refused response: then the client refused
//!   before it saw that change, so the retry is owed at once, not at the change after it. Every
//!   resend is thus paid for by a distinct change of the view or of a subscription, and the same
//!   bad version never ping-pongs, not even between two refused types. To know what a
//!   response carried, each outstanding response keeps the names it sent (bounded by
//!   `MAX_OUTSTANDING` per type, freed on its ACK or NACK);
//! - the first subscription of a type is answered once the view exists, even when nothing is to
//!   be sent (an empty response), as Envoy's initial fetch expects: a client waits for every type
//!   it subscribed to before it applies its first configuration, so "no AuthorizationPolicy"
//!   must be said, not left unsaid.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::retry::{Responses, push_order, seq_of};
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

    /// Marks `names` as held at an unknown version: the next diff sends each one the view has
    /// (no real version is empty, so none compares equal) and removes each one it has not
    /// (removing a name the client does not hold is a no-op for it). Returns true when anything
    /// was forgotten.
    fn forget<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a Arc<str>>,
        sub: &Subscription,
    ) -> bool {
        let mut names = names.into_iter().filter(|n| sub.covers(n)).peekable();
        if names.peek().is_none() {
            return false;
        }
        let unknown: Arc<str> = Arc::from(UNKNOWN_VERSION);
        let map = self.map_mut();
        for name in names {
            map.insert(name.clone(), unknown.clone());
        }
        true
    }
}

/// The version `known` holds for a resource whose delivery a NACK refused.
const UNKNOWN_VERSION: &str = "";

/// A response not yet answered: its number (the nonce), the set version it brought the type to,
/// and the names it added, changed or removed (what a NACK of it refused).
#[derive(Debug)]
struct Outstanding {
    seq: u64,
    version: Arc<str>,
    names: Box<[Arc<str>]>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    known: Known,
    outstanding: VecDeque<Outstanding>,
    acked_version: Option<String>,
    /// A NACK made the stream forget resources of this type, which have not been sent since.
    refused: bool,
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
    responses: Responses,
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

    /// The version of `name` the client has been sent, if any (none once a NACK refused it).
    pub fn known_version(&self, type_url: &str, name: &str) -> Option<&str> {
        let version = self.types.get(type_url)?.known.get(name)?;
        (**version != *UNKNOWN_VERSION).then_some(&**version)
    }

    /// True when a NACK refused resources of `type_url` that have not been sent again yet.
    pub fn refused(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|t| t.refused)
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
        let mut retry_now = false;

        if let Some(answered) = seq_of(&req.response_nonce)
            && let Some(pos) = state.outstanding.iter().position(|o| o.seq == answered)
            // Earlier outstanding responses are superseded (answered with this one).
            && let Some(Outstanding {
                version,
                names,
                seq,
            }) = state.outstanding.drain(..=pos).next_back()
        {
            outcome.event = Some(match &req.error_detail {
                Some(status) => {
                    // The client kept what it had before: what this response carried is no
                    // longer known to be delivered. It is sent again with the next push, or
                    // now if a push already followed it (the client refused without that change).
                    state.refused |= state.known.forget(names.iter(), &state.subscription);
                    retry_now = state.refused && self.responses.changed_since(seq);
                    StreamEvent::Nack {
                        type_url: type_url.clone(),
                        rejected_version: version.to_string(),
                        kept_version: state.acked_version.clone().unwrap_or_default(),
                        error: status.message.clone(),
                    }
                }
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
        let change = first || before != state.subscription;
        if !(change || retry_now) {
            return Ok(outcome);
        }
        // The client forgets what it unsubscribed from; so do we.
        if !state.subscription.wildcard {
            let sub = &state.subscription;
            state.known.map_mut().retain(|name, _| sub.covers(name));
        }
        if let Some(view) = self.view.clone() {
            outcome.push = self.diff(&type_url, &view, change);
        }
        Ok(outcome)
    }

    /// Takes a new view of the resources for this stream's node and returns the responses to send:
    /// for each subscribed type, only what changed or left; and, when anything changed, what a
    /// NACK refused, after the changes (the refusal may have depended on them).
    pub fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<DeltaPush> {
        self.view = Some(view.clone());
        let order = push_order(
            self.types
                .iter()
                .map(|(url, state)| (url.clone(), self.view_changed(url, view), state.refused)),
        );
        order
            .into_iter()
            .filter_map(|(url, changed)| self.diff(&url, view, changed))
            .collect()
    }

    /// The response that brings the client of `type_url` to `view`, if anything is owed;
    /// `change` says it answers a change (of the view or the subscription), not only a refusal.
    fn diff(&mut self, type_url: &Arc<str>, view: &Snapshot, change: bool) -> Option<DeltaPush> {
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
        state.refused = false;
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
        let seq = self.responses.next(change);
        if state.outstanding.len() >= MAX_OUTSTANDING {
            state.outstanding.pop_front();
        }
        state.outstanding.push_back(Outstanding {
            seq,
            version: set_version.clone(),
            names: resources
                .iter()
                .map(|e| &e.name)
                .chain(&removed)
                .cloned()
                .collect(),
        });
        Some(DeltaPush {
            type_url: type_url.clone(),
            system_version: set_version,
            nonce: seq.to_string(),
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
#[path = "server_delta_tests.rs"]
mod tests;
