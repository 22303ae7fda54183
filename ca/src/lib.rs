//! jalin-ca: certificate authority and workload identity rooted in an agency PKI.

pub mod identity;
pub mod spiffe;
pub mod tls;
