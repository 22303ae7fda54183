//! The native model: validated, serialisable configuration the proxy runs.
//!
//! These types are the contract between the control plane (which produces them from Istio YAML)
//! and the proxy (which reads them from its static file or over xDS). They carry no YAML quirks:
//! deprecated Istio spellings are mapped by the importer, and every default is a named constant.

pub mod authz;
pub mod cluster;
pub mod drain;
pub mod listener;
pub mod meta;
pub mod peer_auth;
pub mod route;
pub mod traffic;

pub use meta::{ResourceMeta, SourceRef, WorkloadSelector};
