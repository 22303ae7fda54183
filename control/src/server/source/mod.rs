//! Configuration sources of the control plane: the watched directory ([`files`]) and the
//! Kubernetes API ([`kubernetes`]). Both send [`Update`]s into one channel that the store task
//! reads.

pub mod files;
pub mod kubernetes;

use crate::istio::Loaded;
use crate::k8s::{IstioObject, ObjectKey, ServiceRegistry};

/// Bound of the update channel shared by the sources.
pub const UPDATE_QUEUE: usize = 1024;

/// One change a source reports.
#[derive(Debug)]
pub enum Update {
    /// The whole directory, re-imported.
    Files {
        /// The directory.
        origin: String,
        /// What the importer read.
        loaded: Loaded,
    },
    /// An Istio object from Kubernetes was added or changed.
    KubeUpsert(ObjectKey, Box<IstioObject>),
    /// An Istio object from Kubernetes was deleted.
    KubeDelete(ObjectKey),
    /// The service registry, derived again after Services, EndpointSlices or Pods changed.
    Registry(Box<ServiceRegistry>),
    /// The Kubernetes source listed every kind once.
    KubeReady,
}
