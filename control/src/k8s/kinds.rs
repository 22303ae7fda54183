//! The resource kinds the Kubernetes source watches, their API coordinates, and the object and key
//! types the source and its store hold.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

/// The `security.istio.io` API group.
pub const SECURITY_GROUP: &str = "security.istio.io";
/// The `networking.istio.io` API group.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// The `telemetry.istio.io` API group.
pub const TELEMETRY_GROUP: &str = "telemetry.istio.io";

/// A kind of object the Kubernetes source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceKind {
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `telemetry.istio.io` Telemetry.
    Telemetry,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Namespace (cluster-scoped).
    Namespace,
}

impl ResourceKind {
    /// Every kind, Istio kinds first.
    pub const ALL: [ResourceKind; 14] = [
        Self::AuthorizationPolicy,
        Self::PeerAuthentication,
        Self::RequestAuthentication,
        Self::VirtualService,
        Self::DestinationRule,
        Self::ServiceEntry,
        Self::Sidecar,
        Self::Gateway,
        Self::WorkloadEntry,
        Self::Telemetry,
        Self::Service,
        Self::EndpointSlice,
        Self::Pod,
        Self::Namespace,
    ];

    /// The Istio custom resource kinds (watched as dynamic objects).
    pub const ISTIO: [ResourceKind; 10] = [
        Self::AuthorizationPolicy,
        Self::PeerAuthentication,
        Self::RequestAuthentication,
        Self::VirtualService,
        Self::DestinationRule,
        Self::ServiceEntry,
        Self::Sidecar,
        Self::Gateway,
        Self::WorkloadEntry,
        Self::Telemetry,
    ];

    /// The `kind` field value, e.g. `AuthorizationPolicy`.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::PeerAuthentication => "PeerAuthentication",
            Self::RequestAuthentication => "RequestAuthentication",
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
            Self::ServiceEntry => "ServiceEntry",
            Self::Sidecar => "Sidecar",
            Self::Gateway => "Gateway",
            Self::WorkloadEntry => "WorkloadEntry",
            Self::Telemetry => "Telemetry",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::Pod => "Pod",
            Self::Namespace => "Namespace",
        }
    }

    /// The kind whose `kind` field value is `name`.
    pub fn from_kind_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.kind_name() == name)
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy | Self::PeerAuthentication | Self::RequestAuthentication => {
                SECURITY_GROUP
            }
            Self::VirtualService
            | Self::DestinationRule
            | Self::ServiceEntry
            | Self::Sidecar
            | Self::Gateway
            | Self::WorkloadEntry => NETWORKING_GROUP,
            Self::Telemetry => TELEMETRY_GROUP,
            Self::Service | Self::Pod | Self::Namespace => "",
            Self::EndpointSlice => "discovery.k8s.io",
        }
    }

    /// The lower-case plural resource name used in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy => "authorizationpolicies",
            Self::PeerAuthentication => "peerauthentications",
            Self::RequestAuthentication => "requestauthentications",
            Self::VirtualService => "virtualservices",
            Self::DestinationRule => "destinationrules",
            Self::ServiceEntry => "serviceentries",
            Self::Sidecar => "sidecars",
            Self::Gateway => "gateways",
            Self::WorkloadEntry => "workloadentries",
            Self::Telemetry => "telemetries",
            Self::Service => "services",
            Self::EndpointSlice => "endpointslices",
            Self::Pod => "pods",
            Self::Namespace => "namespaces",
        }
    }

    /// Whether this is an Istio custom resource kind.
    pub fn is_istio(self) -> bool {
        Self::ISTIO.contains(&self)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Self::Namespace
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_name())
    }
}

/// Identifies one object: its kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: ResourceKind,
    /// The namespace; empty for a Namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// A key for `kind` `namespace/name`.
    pub fn new(kind: ResourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// An Istio custom resource as read from the API server, handed to the Istio parser unparsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IstioObject {
    /// Which Istio kind this is.
    pub kind: ResourceKind,
    /// The `apiVersion` it was served at, e.g. `security.istio.io/v1`.
    pub api_version: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The `metadata.resourceVersion` the object was read at.
    pub resource_version: String,
    /// A synthetic origin for error messages: `k8s://<kind>/<ns>/<name>@<resourceVersion>`.
    pub origin: String,
    /// The whole object (`apiVersion`, `kind`, `metadata`, `spec`, ...), as the parser reads it.
    pub value: serde_json::Value,
}

/// One object held by the Kubernetes source.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeObject {
    /// An Istio custom resource, raw.
    Istio(IstioObject),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Namespace.
    Namespace(Box<Namespace>),
}

impl KubeObject {
    /// The object's kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Istio(o) => o.kind,
            Self::Service(_) => ResourceKind::Service,
            Self::EndpointSlice(_) => ResourceKind::EndpointSlice,
            Self::Pod(_) => ResourceKind::Pod,
            Self::Namespace(_) => ResourceKind::Namespace,
        }
    }

    fn meta(&self) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
        match self {
            Self::Istio(_) => None,
            Self::Service(o) => Some(&o.metadata),
            Self::EndpointSlice(o) => Some(&o.metadata),
            Self::Pod(o) => Some(&o.metadata),
            Self::Namespace(o) => Some(&o.metadata),
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        match self {
            Self::Istio(o) => ObjectKey::new(o.kind, o.namespace.clone(), o.name.clone()),
            _ => {
                let meta = self.meta();
                let namespace = if self.kind().namespaced() {
                    meta.and_then(|m| m.namespace.clone()).unwrap_or_default()
                } else {
                    String::new()
                };
                let name = meta.and_then(|m| m.name.clone()).unwrap_or_default();
                ObjectKey::new(self.kind(), namespace, name)
            }
        }
    }

    /// The `metadata.resourceVersion` the object was read at (empty when the server sent none).
    pub fn resource_version(&self) -> &str {
        match self {
            Self::Istio(o) => &o.resource_version,
            _ => self
                .meta()
                .and_then(|m| m.resource_version.as_deref())
                .unwrap_or_default(),
        }
    }

    /// The synthetic origin used in messages: `k8s://<kind>/<ns>/<name>@<resourceVersion>`.
    pub fn origin(&self) -> String {
        match self {
            Self::Istio(o) => o.origin.clone(),
            _ => origin(&self.key(), self.resource_version()),
        }
    }

    /// The Istio object, if this is one.
    pub fn as_istio(&self) -> Option<&IstioObject> {
        match self {
            Self::Istio(o) => Some(o),
            _ => None,
        }
    }
}

/// The synthetic origin of an object: `k8s://<kind>/<ns>/<name>@<resourceVersion>` (no namespace
/// segment for cluster-scoped kinds).
pub fn origin(key: &ObjectKey, resource_version: &str) -> String {
    format!("k8s://{key}@{resource_version}")
}

/// A shared, immutable object as stored and emitted.
pub type SharedObject = Arc<KubeObject>;
