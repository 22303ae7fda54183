//! jalin-ca: certificate authority and workload identity rooted in an agency PKI.

pub mod auth;
pub mod chain;
pub mod cli;
pub mod identity;
pub mod issue;
pub mod metrics;
pub mod server;
pub mod signer;
pub mod spiffe;
pub mod tls;
