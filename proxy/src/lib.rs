//! jalin-proxy: the data plane, a sidecar and gateway proxy.

pub mod admission;
pub mod balance;
pub mod outlier;
pub mod retry;
pub mod route;
