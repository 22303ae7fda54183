//! jalin-proxy: the data plane, a sidecar and gateway proxy.

pub mod config;
pub mod detect;
pub mod endpoint;
pub mod limits;
pub mod snapshot;
pub mod telemetry;
