//! Inbound: a peer sidecar, gateway or outside client calls the local application. Requests
//! come from outside this workload's trust, so identity headers they carry are dropped before
//! anything reads them.

use http::HeaderMap;

use crate::http::headers;

/// Istio's name for inbound traffic to an original destination no service claims.
pub const PASSTHROUGH: &str = "InboundPassthroughCluster";

/// Header trust for inbound requests: a client must not assert a client certificate or any
/// `x-jalin-*` decision; the proxy sets those itself.
pub fn sanitize_request(h: &mut HeaderMap) {
    headers::strip_untrusted(h);
}
