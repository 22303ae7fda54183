//! The one place that maps a proxy error to what the client sees (HTTP status, gRPC status),
//! the metric's response flag, and the log line. Errors say where they came from and what to
//! check.

use std::net::SocketAddr;

use http::{HeaderValue, Response, StatusCode, header};

use crate::endpoint::SendError;
use crate::http::body::ProxyBody;
use crate::telemetry::{RequestMeter, ResponseFlag};

/// gRPC `UNAVAILABLE`: the request did not reach a server; clients may retry it.
const GRPC_UNAVAILABLE: u8 = 14;
/// gRPC `INTERNAL`.
const GRPC_INTERNAL: u8 = 13;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Policy/config: an explicit listener names a service that the current config lacks.
    #[error("no service `{0}` in the current configuration")]
    NoService(String),
    /// Downstream/config: a transparent listener got a connection with no original destination.
    #[error(
        "connection to {0} has no original destination; install the iptables REDIRECT rule or set `service:` on the listener for explicit mode"
    )]
    NoOriginalDst(SocketAddr),
    /// Upstream: the service has no endpoints.
    #[error("service `{0}` has no endpoints")]
    NoEndpoints(String),
    /// Upstream: every endpoint of the cluster is ejected by outlier detection and no audited
    /// bypass applies (standard class, or the allowance is spent).
    #[error(
        "every endpoint of cluster `{0}` is ejected by outlier detection; check the endpoints' health (ejections are logged and counted in jalin_outlier_events_total)"
    )]
    AllEjected(String),
    /// Upstream: no connection could be made; nothing reached the upstream (safe to retry).
    #[error("{0}; check that the endpoint is listening and reachable")]
    Connect(SendError),
    /// Upstream: the exchange failed after it started.
    #[error("{0}")]
    Upstream(SendError),
    /// Policy: a connection-pool limit of the cluster refused the request (circuit breaking).
    #[error(
        "cluster `{cluster}` overflow: {limit} reached; raise the DestinationRule connectionPool limit or add capacity"
    )]
    Overflow {
        cluster: String,
        limit: &'static str,
    },
    /// Upstream: no response headers within the route timeout or perTryTimeout.
    #[error("upstream request timeout after {0} ms (route timeout / perTryTimeout)")]
    Timeout(u128),
    /// Policy: no route for the request (the service's route table has none, or no table bound
    /// to the gateway serves the host). The text says which.
    #[error("no route for {0}")]
    NoRoute(String),
    /// Policy: the route names a subset the service does not define.
    #[error("service `{0}` has no subset `{1}`")]
    NoSubset(String, String),
}

impl ProxyError {
    /// The HTTP status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoService(_)
            | ProxyError::NoOriginalDst(_)
            | ProxyError::NoEndpoints(_)
            | ProxyError::AllEjected(_)
            | ProxyError::NoSubset(..)
            | ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The metric's response flag.
    pub fn flag(&self) -> ResponseFlag {
        match self {
            ProxyError::NoService(_) | ProxyError::NoOriginalDst(_) | ProxyError::NoRoute(_) => {
                ResponseFlag::NoRoute
            }
            ProxyError::NoEndpoints(_) | ProxyError::AllEjected(_) | ProxyError::NoSubset(..) => {
                ResponseFlag::NoHealthyUpstream
            }
            ProxyError::Overflow { .. } => ResponseFlag::UpstreamOverflow,
            ProxyError::Timeout(_) => ResponseFlag::UpstreamRequestTimeout,
            ProxyError::Connect(_) => ResponseFlag::UpstreamConnectFailure,
            ProxyError::Upstream(_) => ResponseFlag::UpstreamTerminated,
        }
    }

    /// True when the request is known not to have reached any upstream.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProxyError::Upstream(_) | ProxyError::Timeout(_))
    }

    fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::Upstream(_) => GRPC_INTERNAL,
            _ => GRPC_UNAVAILABLE,
        }
    }
}

/// The response for `err`. gRPC clients get a trailers-only response (HTTP 200 with
/// `grpc-status`), which is what gRPC libraries expect from a proxy.
pub fn error_response(
    err: &ProxyError,
    grpc: bool,
    mut meter: Option<RequestMeter>,
) -> Response<ProxyBody> {
    tracing::warn!(error = %err, "request failed in the proxy");
    let text = err.to_string();
    if grpc {
        let status = err.grpc_status();
        if let Some(m) = meter.as_mut() {
            m.response(200, Some(status), err.flag());
        }
        let mut rsp = Response::new(ProxyBody::local(bytes::Bytes::new(), meter));
        let h = rsp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(u16::from(status)));
        if let ProxyError::Overflow { limit, .. } = err {
            h.insert(
                crate::admission::OVERFLOW_HEADER,
                HeaderValue::from_static(limit),
            );
        }
        if let Ok(msg) = HeaderValue::from_str(&percent_encode_grpc(&text)) {
            h.insert("grpc-message", msg);
        }
        return rsp;
    }
    let status = err.status();
    if let Some(m) = meter.as_mut() {
        m.response(status.as_u16(), None, err.flag());
    }
    let mut rsp = Response::new(ProxyBody::local(format!("{text}\n"), meter));
    *rsp.status_mut() = status;
    if let ProxyError::Overflow { limit, .. } = err {
        rsp.headers_mut().insert(
            crate::admission::OVERFLOW_HEADER,
            HeaderValue::from_static(limit),
        );
    }
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// gRPC's `grpc-message` is percent-encoded (gRPC over HTTP/2 spec: outside 0x20-0x7E and `%`).
fn percent_encode_grpc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
