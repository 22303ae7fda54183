//! mTLS between proxies: rustls configs (aws-lc-rs) for inbound and outbound, SPIFFE peer
//! verification with one refusal taxonomy, TLS policies, trust bundles and TLS detection.
//!
//! Request order: [`detect`] (is it TLS? per-port mode) → [`inbound`] (terminate, verify the
//! client, [`PeerIdentity`]) / [`outbound`] (originate, verify the server's SPIFFE ID). Both
//! verifiers share [`verify::verify_peer`] and [`reason::Refusal`].
//!
//! How the proxy wires it (one [`crate::identity::WorkloadIdentity`] per proxy, issued by the CA
//! through `GrpcCertificateSource::identity(IdentityConfig::new(id), GrpcSourceConfig::new(ca,
//! ca_id, bootstrap), trust)`, spawned, and awaited with `ready()` before the proxy is ready):
//! - inbound: `server_config(&policy, identity.trust(), identity.server_resolver())`, then per
//!   connection [`inbound_action`] on the first bytes for the port's mode; on
//!   `TerminateMtls` accept with tokio-rustls and put [`peer_identity`] in the request
//!   context; on `Refuse` call [`record_refusal`]; on a failed accept call
//!   [`record_handshake_error`] (certificate refusals were already logged by the verifier).
//! - outbound: `OutboundTls::new(policy, identity.trust(), identity.client_resolver())`, then
//!   `config_for(&expected_spiffe_id)` per destination; the TLS server name is SNI only.
//! - `/config_dump`: `policy.fips_active()` (or [`fips_active`] for the government policy).
//!
//! Session resumption is disabled on both sides: every handshake verifies the current chain,
//! so a rotated root or a revoked trust domain takes effect on the next connection, and the
//! peer identity and expiry handed to the request are never those of a cached session.

pub mod detect;
pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod reason;
pub mod trust;
pub mod verify;

pub use detect::{Detection, InboundAction, PortMtlsMode, classify, inbound_action};
pub use inbound::{
    PeerIdentity, PeerIdentityError, SpiffeClientVerifier, fingerprint_sha256, peer_identity,
    server_config,
};
pub use outbound::{
    MAX_CACHED_CLIENT_CONFIGS, OutboundConfigError, OutboundTls, SpiffeServerVerifier,
    client_config,
};
pub use policy::{
    GOVERNMENT_CIPHER_SUITES, TlsPolicy, TlsPolicyName, UnknownCipherSuite, fips_active,
    with_cipher_suites,
};
pub use reason::{
    Direction, HANDSHAKE_FAILURES_METRIC, Refusal, RefusalReason, record_handshake_error,
    record_refusal,
};
pub use trust::{TrustBundle, TrustBundleError, TrustStore};
pub use verify::{PeerRole, VerifiedPeer, verify_peer};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
