//! Outbound: the local application calls a service. The application is the workload this proxy
//! speaks for, but it still must not forge a client certificate header towards its peers.

use http::HeaderMap;

use crate::http::headers::X_FORWARDED_CLIENT_CERT;

/// Istio's name for outbound traffic to an original destination no service claims.
pub const PASSTHROUGH: &str = "PassthroughCluster";

/// Header trust for outbound requests: only the peer's proxy may assert a client certificate.
pub fn sanitize_request(h: &mut HeaderMap) {
    h.remove(&X_FORWARDED_CLIENT_CERT);
}
