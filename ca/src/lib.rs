//! jalin-ca: certificate authority and workload identity rooted in an agency PKI.

pub mod chain;
pub mod issue;
pub mod metrics;
pub mod signer;
