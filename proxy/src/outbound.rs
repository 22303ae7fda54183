//! Outbound: the local application calls a service. The application is the workload this proxy
//! speaks for, but it still must not forge a client certificate header towards its peers. At an
//! edge listener (a gateway, or one with its own TLS) the clients are outside the mesh: no
//! identity or `x-jalin-*` header they send is trusted, and in `MUTUAL` mode the proxy states
//! the verified client certificate itself (Envoy's `SANITIZE_SET`).

use http::HeaderMap;

use crate::http::headers::{self, X_FORWARDED_CLIENT_CERT};
use crate::listener::ConnCtx;

/// Istio's name for outbound traffic to an original destination no service claims.
pub const PASSTHROUGH: &str = "PassthroughCluster";

/// Header trust for outbound requests: only the peer's proxy may assert a client certificate;
/// at an edge listener every identity and jalin header from the client is dropped, and the
/// verified client certificate of a `MUTUAL` connection is set as `x-forwarded-client-cert`;
/// a client's `x-forwarded-proto` is replaced by the scheme the listener saw.
pub fn sanitize_request(h: &mut HeaderMap, conn: &ConnCtx) {
    if conn.info.is_edge() {
        headers::strip_untrusted(h);
        // The scheme is the one this listener saw (Envoy's `use_remote_address` at the edge).
        h.remove(&headers::X_FORWARDED_PROTO);
    } else {
        h.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if let Some(v) = conn.client_cert.as_ref().and_then(|c| c.xfcc.clone()) {
        h.insert(&X_FORWARDED_CLIENT_CERT, v);
    }
}
