//! The client side of a delta ADS stream, free of I/O: subscriptions, versions, nonces, warm-up
//! and ACK/NACK.
//!
//! Invariants:
//! - `applied` is the last configuration the [`Applier`] accepted; it is what the proxy runs and
//!   what it reports to the server on reconnect (`initial_resource_versions`);
//! - `candidate` is `applied` plus every response not yet answered; a response is answered (ACK or
//!   NACK) only once the candidate is closed under references (warm-up) or the warm-up deadline
//!   passes; a failed apply or a timed-out warm-up NACKs every waiting response and resets the
//!   candidate to `applied`, so one bad update never leaves a half-applied configuration;
//! - initial fetch (Envoy's): the FIRST configuration is applied only once every
//!   wildcard-subscribed type has had a response on this stream (the server answers a first
//!   subscription even when it has nothing to send), so a proxy never starts serving on half a
//!   configuration, for example with its clusters but before its AuthorizationPolicies. Until
//!   then nothing is answered; the warm-up deadline covers the wait and its NACK names the types
//!   never received. Later updates are applied as they come;
//! - before the first configuration a refused candidate is kept, not reset: the server sends
//!   what was NACKed again only after the next change it pushes (never on the NACK itself), so
//!   the response that completes the candidate finds the rest already there and applies it all
//!   at once; the later resend of unchanged resources changes nothing and is ACKed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use serde::de::DeserializeOwned;

use super::resource::{Decoded, Kind, ResourceError, decode, decode_envelope, references};
use super::{NodeInfo, ResourceKey, Subscription, WILDCARD};

/// gRPC `INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;
/// Longest NACK message sent; longer ones are cut (the control plane logs them).
const MAX_ERROR_BYTES: usize = 4096;
/// Default time a response may wait for the resources it references (Envoy's initial fetch
/// timeout is 15 s).
pub const DEFAULT_WARM_TIMEOUT: Duration = Duration::from_secs(15);

/// Applies a complete configuration atomically. An error is sent to the control plane as the NACK
/// message, so say what is wrong and where (resource kind, name, field).
pub trait Applier: Send + 'static {
    /// Replaces the running configuration with `config`, or refuses it and keeps the old one.
    fn apply(&mut self, config: &AppliedConfig) -> Result<(), String>;
}

impl<F> Applier for F
where
    F: FnMut(&AppliedConfig) -> Result<(), String> + Send + 'static,
{
    fn apply(&mut self, config: &AppliedConfig) -> Result<(), String> {
        self(config)
    }
}

/// One resource as the client holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    /// Type URL.
    pub type_url: String,
    /// Name.
    pub name: String,
    /// Version the server gave it.
    pub version: String,
    /// The protobuf message bytes.
    pub value: Bytes,
    /// Resources it references (from the jalin envelope).
    pub depends_on: Vec<ResourceKey>,
}

/// A complete configuration: every resource by type URL and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedConfig {
    types: BTreeMap<String, BTreeMap<String, Arc<ResourceState>>>,
}

impl AppliedConfig {
    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<ResourceState>> {
        self.types.get(type_url)?.get(name)
    }

    /// Every resource of a type, by name.
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = &Arc<ResourceState>> {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Decodes every resource of a jalin kind into its native model type.
    pub fn decode_kind<T: DeserializeOwned>(
        &self,
        kind: Kind,
    ) -> Result<Vec<Decoded<T>>, ResourceError> {
        self.of_type(kind.type_url())
            .map(|r| decode(&r.type_url, &r.value))
            .collect()
    }

    /// Versions in force, by type URL and name (for `/config_dump`).
    pub fn versions(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.types
            .iter()
            .map(|(t, m)| {
                (
                    t.clone(),
                    m.iter()
                        .map(|(n, r)| (n.clone(), r.version.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.types.values().map(BTreeMap::len).sum()
    }

    /// True when there is no resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// References to resources that are not present: (referrer, missing).
    pub fn missing_dependencies(&self) -> Vec<(ResourceKey, ResourceKey)> {
        let mut missing = Vec::new();
        for res in self.types.values().flat_map(|m| m.values()) {
            for dep in &res.depends_on {
                if self.get(&dep.type_url, &dep.name).is_none() {
                    missing.push((
                        ResourceKey::new(res.type_url.clone(), res.name.clone()),
                        dep.clone(),
                    ));
                }
            }
        }
        missing
    }

    fn insert(&mut self, res: ResourceState) -> bool {
        let map = self.types.entry(res.type_url.clone()).or_default();
        if map
            .get(&res.name)
            .is_some_and(|old| old.version == res.version && old.value == res.value)
        {
            return false;
        }
        map.insert(res.name.clone(), Arc::new(res));
        true
    }

    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        self.types
            .get_mut(type_url)
            .is_some_and(|m| m.remove(name).is_some())
    }
}

#[derive(Debug, Clone)]
struct Pending {
    type_url: String,
    nonce: String,
    system_version: String,
}

/// The client state machine of one proxy (it outlives streams: reconnects resume from it).
#[derive(Debug)]
pub struct ClientState {
    node: NodeInfo,
    subscriptions: BTreeMap<String, Subscription>,
    applied: AppliedConfig,
    candidate: AppliedConfig,
    dirty: bool,
    pending: Vec<Pending>,
    pending_since: Option<Instant>,
    warm_timeout: Duration,
    acked: BTreeMap<String, String>,
    last_error: Option<String>,
    applies: u64,
    /// Types with a response on the current stream (the initial fetch gate).
    received: BTreeSet<String>,
}

impl ClientState {
    /// A client for `node` with wildcard subscriptions to `type_urls`.
    pub fn new(
        node: NodeInfo,
        type_urls: impl IntoIterator<Item = String>,
        warm_timeout: Duration,
    ) -> Self {
        ClientState {
            node,
            subscriptions: type_urls
                .into_iter()
                .map(|t| (t, Subscription::wildcard()))
                .collect(),
            applied: AppliedConfig::default(),
            candidate: AppliedConfig::default(),
            dirty: false,
            pending: Vec::new(),
            pending_since: None,
            warm_timeout,
            acked: BTreeMap::new(),
            last_error: None,
            applies: 0,
            received: BTreeSet::new(),
        }
    }

    /// Replaces the subscription of `type_url` (before connecting).
    pub fn set_subscription(&mut self, type_url: impl Into<String>, sub: Subscription) {
        self.subscriptions.insert(type_url.into(), sub);
    }

    /// The configuration in force.
    pub fn applied(&self) -> &AppliedConfig {
        &self.applied
    }

    /// The system version last ACKed, per type URL.
    pub fn acked_versions(&self) -> &BTreeMap<String, String> {
        &self.acked
    }

    /// The last apply or validation error (the last NACK message).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// How many times a configuration was applied.
    pub fn applies(&self) -> u64 {
        self.applies
    }

    /// Subscription of `type_url`.
    pub fn subscription(&self, type_url: &str) -> Option<&Subscription> {
        self.subscriptions.get(type_url)
    }

    /// Responses waiting for warm-up.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When [`ClientState::poll`] must be called next, if a warm-up is in progress.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + self.warm_timeout)
    }

    /// The requests that open a new stream: one per announced type, with the subscription and the versions
    /// of the applied configuration, so the server sends only what changed. Anything waiting from a
    /// previous stream is dropped (its nonces died with that stream).
    pub fn on_connect(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.pending.clear();
        self.pending_since = None;
        self.candidate = self.applied.clone();
        self.dirty = false;
        self.received.clear();
        // A type subscribed by name with no name yet is not announced: an empty first request
        // would mean "wildcard" to the server.
        self.subscriptions
            .iter()
            .filter(|(_, sub)| sub.wildcard || !sub.names.is_empty())
            .map(|(type_url, sub)| {
                let mut subscribe: Vec<String> = Vec::with_capacity(sub.names.len() + 1);
                if sub.wildcard {
                    subscribe.push(WILDCARD.to_owned());
                }
                subscribe.extend(sub.names.iter().cloned());
                DeltaDiscoveryRequest {
                    node: Some(self.node.to_node()),
                    type_url: type_url.clone(),
                    resource_names_subscribe: subscribe,
                    initial_resource_versions: self
                        .applied
                        .of_type(type_url)
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Handles one response; returns the requests to send (ACK, NACK, dependency subscriptions).
    pub fn on_response(
        &mut self,
        resp: &DeltaDiscoveryResponse,
        now: Instant,
        applier: &mut dyn Applier,
    ) -> Vec<DeltaDiscoveryRequest> {
        let resources = match self.validate(resp) {
            Ok(r) => r,
            Err(message) => {
                self.last_error = Some(message.clone());
                return vec![nack(&resp.type_url, &resp.nonce, &message)];
            }
        };
        for res in resources {
            self.dirty |= self.candidate.insert(res);
        }
        for name in &resp.removed_resources {
            self.dirty |= self.candidate.remove(&resp.type_url, name);
        }
        self.received.insert(resp.type_url.clone());
        self.pending.push(Pending {
            type_url: resp.type_url.clone(),
            nonce: resp.nonce.clone(),
            system_version: resp.system_version_info.clone(),
        });
        self.pending_since.get_or_insert(now);
        self.try_apply(applier)
    }

    /// Ends a warm-up that has waited past its deadline: NACKs what waits, naming what is missing.
    pub fn poll(&mut self, now: Instant) -> Vec<DeltaDiscoveryRequest> {
        let Some(deadline) = self.next_deadline() else {
            return Vec::new();
        };
        if now < deadline {
            return Vec::new();
        }
        let mut missing: Vec<String> = self
            .candidate
            .missing_dependencies()
            .iter()
            .take(8)
            .map(|(from, to)| format!("{from} references {to}, which has not arrived"))
            .collect();
        let never = self.awaiting_first_response();
        if !never.is_empty() {
            missing.insert(
                0,
                format!(
                    "no response yet for {} (the first configuration waits for every \
                     subscribed type)",
                    never.join(", ")
                ),
            );
        }
        let message = format!(
            "warm-up timed out after {}s: {}; check that the control plane serves these resources to node {:?}",
            self.warm_timeout.as_secs(),
            missing.join("; "),
            self.node.id
        );
        self.reject_pending(&message)
    }

    /// Subscribes to more names of `type_url`; returns the request to send, if anything is new.
    pub fn subscribe(&mut self, type_url: &str, names: &[String]) -> Option<DeltaDiscoveryRequest> {
        let sub = self.subscriptions.entry(type_url.to_owned()).or_default();
        let new: Vec<String> = names
            .iter()
            .filter(|n| sub.names.insert((*n).clone()))
            .cloned()
            .collect();
        (!new.is_empty()).then(|| DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: new,
            ..Default::default()
        })
    }

    /// Unsubscribes from names of `type_url`; they leave the configuration, which is re-applied.
    pub fn unsubscribe(
        &mut self,
        type_url: &str,
        names: &[String],
        applier: &mut dyn Applier,
    ) -> Vec<DeltaDiscoveryRequest> {
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return Vec::new();
        };
        let gone: Vec<String> = names
            .iter()
            .filter(|n| sub.names.remove(n.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        if !sub.wildcard {
            for name in &gone {
                self.dirty |= self.candidate.remove(type_url, name);
            }
        }
        let mut out = vec![DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_unsubscribe: gone,
            ..Default::default()
        }];
        out.extend(self.try_apply(applier));
        out
    }

    fn validate(&self, resp: &DeltaDiscoveryResponse) -> Result<Vec<ResourceState>, String> {
        if !self.subscriptions.contains_key(&resp.type_url) {
            return Err(format!(
                "response for type {:?}, which this proxy did not subscribe to",
                resp.type_url
            ));
        }
        let jalin = Kind::from_type_url(&resp.type_url).is_some();
        let mut out = Vec::with_capacity(resp.resources.len());
        let mut errors = Vec::new();
        for r in &resp.resources {
            let Some(any) = &r.resource else {
                errors.push(format!("resource {:?} has no body", r.name));
                continue;
            };
            if any.type_url != resp.type_url {
                errors.push(format!(
                    "resource {:?} has type {:?} in a response for {:?}",
                    r.name, any.type_url, resp.type_url
                ));
                continue;
            }
            let depends_on = if jalin {
                match decode_envelope(&any.type_url, &any.value) {
                    Ok(env) if env.name == r.name => references(&env),
                    Ok(env) => {
                        errors.push(format!(
                            "resource {:?} carries an envelope named {:?}",
                            r.name, env.name
                        ));
                        continue;
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            out.push(ResourceState {
                type_url: resp.type_url.clone(),
                name: r.name.clone(),
                version: r.version.clone(),
                value: Bytes::from(any.value.clone()),
                depends_on,
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Before the first configuration: the wildcard-subscribed types without a response yet on
    /// this stream. Empty once a configuration was applied.
    pub fn awaiting_first_response(&self) -> Vec<String> {
        if self.applies > 0 {
            return Vec::new();
        }
        self.subscriptions
            .iter()
            .filter(|(t, sub)| sub.wildcard && !self.received.contains(*t))
            .map(|(t, _)| t.clone())
            .collect()
    }

    fn try_apply(&mut self, applier: &mut dyn Applier) -> Vec<DeltaDiscoveryRequest> {
        // Initial fetch: the first configuration is applied even when it is empty.
        if self.applies > 0 && !self.dirty {
            return self.accept_pending();
        }
        let missing = self.candidate.missing_dependencies();
        if !missing.is_empty() {
            // Warm-up: ask for what is missing where the subscription is explicit; wildcard
            // subscriptions receive everything the server scopes to us anyway.
            let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (_, dep) in missing {
                if self
                    .subscriptions
                    .get(&dep.type_url)
                    .is_some_and(|s| !s.covers(&dep.name))
                {
                    wanted.entry(dep.type_url).or_default().insert(dep.name);
                }
            }
            return wanted
                .into_iter()
                .filter_map(|(t, names)| self.subscribe(&t, &names.into_iter().collect::<Vec<_>>()))
                .collect();
        }
        if !self.awaiting_first_response().is_empty() {
            // Initial fetch: nothing is applied (or answered) before every type has answered.
            return Vec::new();
        }
        match applier.apply(&self.candidate) {
            Ok(()) => {
                self.applied = self.candidate.clone();
                self.applies += 1;
                self.last_error = None;
                self.accept_pending()
            }
            Err(message) => self.reject_pending(&message),
        }
    }

    fn accept_pending(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.dirty = false;
        self.pending_since = None;
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .map(|p| {
                self.acked.insert(p.type_url.clone(), p.system_version);
                DeltaDiscoveryRequest {
                    type_url: p.type_url,
                    response_nonce: p.nonce,
                    ..Default::default()
                }
            })
            .collect()
    }

    fn reject_pending(&mut self, message: &str) -> Vec<DeltaDiscoveryRequest> {
        if self.applies > 0 {
            self.candidate = self.applied.clone();
        }
        self.dirty = false;
        self.pending_since = None;
        self.last_error = Some(message.to_owned());
        std::mem::take(&mut self.pending)
            .iter()
            .map(|p| nack(&p.type_url, &p.nonce, message))
            .collect()
    }
}

fn nack(type_url: &str, nonce: &str, message: &str) -> DeltaDiscoveryRequest {
    let mut end = message.len().min(MAX_ERROR_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    DeltaDiscoveryRequest {
        type_url: type_url.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail: Some(Status {
            code: INVALID_ARGUMENT,
            message: message[..end].to_owned(),
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "client_state_tests.rs"]
mod tests;
