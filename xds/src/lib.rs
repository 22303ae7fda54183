//! jalin-xds: the native resource model the proxy runs, the authorization engine, and the xDS transport.
//!
//! The control plane compiles Istio YAML into [`model`] types; the proxy reads them from its static
//! file or over xDS and compiles them once per update into matchers.

pub mod authz;
pub mod model;
pub mod transport;
