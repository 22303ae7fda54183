//! The Kubernetes configuration source: Istio custom resources, Services, EndpointSlices, Pods
//! and Namespaces read through kube-rs watchers into one store, and the service registry derived
//! from them.
//!
//! Start with [`KubeSource::new`] and [`KubeSource::start`]: it returns a [`KubeSourceHandle`]
//! (the live [`Store`], the derived [`ServiceRegistry`]) and a channel of [`SourceEvent`]s:
//! `Upsert`/`Delete` per object, `Ready` once every kind has been listed, then incremental events.
//! Istio objects arrive raw ([`IstioObject`]: JSON value plus a `k8s://kind/ns/name@rv` origin)
//! for the Istio parser. [`ServiceRegistry::from_store`] (or [`registry::derive`]) gives service
//! discovery; [`inject`] and [`webhook`] are the sidecar-injection webhook's core.
//!
//! Tests (here and in the e2e crate) use the fake API server in [`fake`], behind the `testing`
//! feature: `jalin-control = { workspace = true, features = ["testing"] }`.

pub mod drain;
pub mod inject;
mod kinds;
pub mod probes;
pub mod redirect;
pub mod registry;
mod source;
mod store;
pub mod webhook;
pub mod webhook_server;

#[cfg(feature = "testing")]
pub mod fake;

pub use kinds::{
    IstioObject, KubeObject, NETWORKING_GROUP, ObjectKey, ResourceKind, SECURITY_GROUP,
    SharedObject, TELEMETRY_GROUP, origin,
};
pub use registry::{RegistrySettings, ServiceRegistry};
pub use source::{
    ConfigSource, DEFAULT_EVENT_BUFFER, DEFAULT_PAGE_SIZE, DEFAULT_WATCH_TIMEOUT_SECS, KubeSource,
    KubeSourceConfig, KubeSourceHandle, SourceError, StoreReader, WatchedKind, istio_object,
};
pub use store::{Reconciler, SourceEvent, Store};
