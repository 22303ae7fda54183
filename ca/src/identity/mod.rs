//! The proxy's workload identity: a locally generated key, a CSR to the CA, rotation at half
//! life, hot-swapped into live rustls configs, with readiness and rotation notifications.

pub mod dev_ca;
pub mod grpc_source;
pub mod manager;
pub mod schedule;
pub mod source;
pub mod store;

pub use dev_ca::{DevCa, DevCaError};
pub use grpc_source::{Bootstrap, GrpcCertificateSource, GrpcSourceConfig};
pub use manager::{
    CERT_EXPIRY_METRIC, CertInfo, IdentityConfig, IdentityError, RENEWAL_FAILURES_METRIC,
    WorkloadIdentity,
};
pub use schedule::RenewalPolicy;
pub use source::{CertificateSource, IssuedChain, SourceError};
pub use store::CertStore;
