//! The xDS transport: aggregated discovery (ADS) over gRPC, state-of-the-world and delta, between
//! the control plane (server) and the proxies (clients).
//!
//! Layout, in the order a change travels:
//! - [`resource`]: jalin's own resource messages (`type.googleapis.com/jalin.v1.<Kind>`) and the
//!   JSON body codec;
//! - [`snapshot`]: a set of resources encoded once and shared by every stream;
//! - [`server_sotw`] and [`server_delta`]: the per-stream server state machines (no I/O), with
//!   the NACK-retry bookkeeping they share in `retry`;
//! - [`frames`], [`wire`] and [`server`]: response framing without per-stream buffers, the ADS
//!   service and [`XdsServer`];
//! - [`client_state`]: the client state machine with warm-up and ACK/NACK (no I/O);
//! - [`backoff`] and [`client`]: [`XdsClient`], which keeps a stream up and the last good config.

pub mod backoff;
pub mod client;
pub mod client_state;
pub mod frames;
pub mod resource;
mod retry;
pub mod server;
pub mod server_delta;
pub mod server_sotw;
pub mod snapshot;
#[cfg(test)]
mod test_support;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub use backoff::Backoff;
pub use client::{ClientConfig, ClientError, ClientStatus, XdsClient};
pub use client_state::{AppliedConfig, Applier, ClientState, ResourceState};
pub use resource::{
    Decoded, EncodedResource, Kind, ResourceError, decode, encode, encode_with_deps,
};
pub use server::{AllResources, NodeStatus, Peer, Scope, TypeStatus, XdsServer};
pub use snapshot::{Entry, Snapshot};

/// The wildcard resource name (subscribe to every resource of a type).
pub const WILDCARD: &str = "*";

/// A resource's identity: its type URL and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// Type URL.
    pub type_url: String,
    /// Name, unique per type URL.
    pub name: String,
}

impl ResourceKey {
    /// A key.
    pub fn new(type_url: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey {
            type_url: type_url.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `type.googleapis.com/jalin.v1.Listener` reads as `Listener`.
        let short = self
            .type_url
            .rsplit(['/', '.'])
            .next()
            .unwrap_or(&self.type_url);
        write!(f, "{short} {:?}", self.name)
    }
}

/// Which resources of a type a stream wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Every resource of the type (what the server's scope lets this proxy see).
    pub wildcard: bool,
    /// Names asked for explicitly.
    pub names: BTreeSet<String>,
}

impl Subscription {
    /// The wildcard subscription.
    pub fn wildcard() -> Self {
        Subscription {
            wildcard: true,
            names: BTreeSet::new(),
        }
    }

    /// True when `name` is covered.
    pub fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// The proxy identity a stream announced in its first request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// The string-valued entries of `node.metadata` (labels, namespace, service account, ...).
    pub metadata: BTreeMap<String, String>,
}

impl NodeInfo {
    /// Reads an Envoy `Node`; non-string metadata values are left out.
    pub fn from_node(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Self {
        use envoy_types::pb::google::protobuf::value::Kind as V;
        let metadata = node
            .metadata
            .iter()
            .flat_map(|s| s.fields.iter())
            .filter_map(|(k, v)| match &v.kind {
                Some(V::StringValue(s)) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect();
        NodeInfo {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            metadata,
        }
    }

    /// As an Envoy `Node` (string metadata).
    pub fn to_node(&self) -> envoy_types::pb::envoy::config::core::v3::Node {
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as V};
        let fields = self
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        kind: Some(V::StringValue(v.clone())),
                    },
                )
            })
            .collect();
        envoy_types::pb::envoy::config::core::v3::Node {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            metadata: (!self.metadata.is_empty()).then_some(Struct { fields }),
            ..Default::default()
        }
    }
}

/// What a server stream learned from a request, for status reporting and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The client applied `version` of `type_url`.
    Ack {
        /// Type URL.
        type_url: Arc<str>,
        /// The version the client now runs.
        version: String,
    },
    /// The client rejected `rejected_version` of `type_url` and keeps running `kept_version`.
    Nack {
        /// Type URL.
        type_url: Arc<str>,
        /// The version the client refused.
        rejected_version: String,
        /// The version the client says it still runs (its `version_info`).
        kept_version: String,
        /// The client's error message.
        error: String,
    },
}

/// A request that breaks the protocol; the server ends the stream with `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A request without a type URL on an aggregated stream.
    #[error(
        "xDS request without type_url on an aggregated stream; every ADS request must name its resource type"
    )]
    MissingTypeUrl,
    /// The first request carried no node.
    #[error(
        "the first xDS request on a stream carried no node; set node.id to the proxy's identity"
    )]
    MissingNode,
    /// Too many names subscribed for one type.
    #[error(
        "xDS stream subscribed to more than {0} names of one type; subscribe with a wildcard instead"
    )]
    TooManyNames(usize),
    /// Too many distinct types on one stream.
    #[error(
        "xDS stream asked for more than {0} resource types; this bound protects the control plane"
    )]
    TooManyTypes(usize),
}

/// Bound on explicitly subscribed names per type and stream (a hostile or broken proxy must not
/// grow the control plane's memory without limit).
pub const MAX_NAMES_PER_TYPE: usize = 100_000;

/// Bound on distinct type URLs per stream (jalin has 8; Envoy uses about 10).
pub const MAX_TYPES_PER_STREAM: usize = 64;

/// Checks the head every ADS request (SotW or delta) carries: records the node from a stream's
/// first request (a first request without one is refused) and refuses a request naming no type.
pub(crate) fn check_request_head(
    stream_node: &mut Option<NodeInfo>,
    req_node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
    type_url: &str,
) -> Result<(), ProtocolError> {
    if stream_node.is_none() {
        let node = req_node.ok_or(ProtocolError::MissingNode)?;
        *stream_node = Some(NodeInfo::from_node(node));
    }
    if type_url.is_empty() {
        return Err(ProtocolError::MissingTypeUrl);
    }
    Ok(())
}

/// The key a stream keeps `type_url`'s state under, and whether this is the type's first request
/// on the stream; a new type past [`MAX_TYPES_PER_STREAM`] is refused.
pub(crate) fn type_key<S>(
    types: &HashMap<Arc<str>, S>,
    type_url: &str,
) -> Result<(Arc<str>, bool), ProtocolError> {
    match types.get_key_value(type_url) {
        Some((k, _)) => Ok((k.clone(), false)),
        None if types.len() >= MAX_TYPES_PER_STREAM => {
            Err(ProtocolError::TooManyTypes(MAX_TYPES_PER_STREAM))
        }
        None => Ok((Arc::<str>::from(type_url), true)),
    }
}
