//! The HTTP request's way through the proxy, in request order: destination, header rules,
//! endpoint choice, send on the endpoint's pool, upgrade bridging, response header rules, and
//! metering on the way back. Inbound and outbound differ only in the header trust step.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use jalin_xds::model::cluster::UpstreamProtocol;
use jalin_xds::model::listener::Direction;
use metrics::SharedString;

use crate::endpoint::Wire;
use crate::http::body::ProxyBody;
use crate::http::headers;
use crate::http::respond::{ProxyError, error_response};
use crate::http::upgrade;
use crate::listener::ConnCtx;
use crate::telemetry::{RequestMeter, ResponseFlag, ServiceMetrics, parse_grpc_status};
use crate::{inbound, outbound};

/// Proxies one request and returns the response to send downstream. Never fails: errors become
/// responses (see [`crate::http::respond`]).
pub async fn forward(mut req: Request<Incoming>, conn: Arc<ConnCtx>) -> Response<ProxyBody> {
    let start = Instant::now();
    let direction = conn.info.direction;
    let grpc = is_grpc(req.headers());
    let snapshot = conn.shared.snapshot.load_full();

    // 1. Destination: the listener's service, or the connection's original destination.
    let service = match conn.destination(&snapshot) {
        Ok(s) => s,
        Err(e) => {
            let label = conn
                .info
                .service
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            let metrics = Arc::new(ServiceMetrics::new(SharedString::from(label)));
            let meter = RequestMeter::new(start, direction, metrics, grpc);
            return error_response(&e, grpc, Some(meter));
        }
    };
    let mut meter = RequestMeter::new(start, direction, service.metrics.clone(), grpc);

    // 2. Header rules: trust by direction, hop-by-hop, request id, forwarded-*.
    let downstream_h2 = req.version() == Version::HTTP_2;
    let wants_upgrade = !downstream_h2 && headers::wants_upgrade(req.headers());
    match direction {
        Direction::Inbound => inbound::sanitize_request(req.headers_mut()),
        Direction::Outbound => outbound::sanitize_request(req.headers_mut()),
    }
    headers::strip_hop_by_hop(req.headers_mut(), wants_upgrade);
    headers::ensure_request_id(req.headers_mut());
    if direction == Direction::Inbound {
        // 2b. Authentication and authorization (after TLS and detection, before routing).
        let security = conn.shared.security.load_full();
        if let Err(refused) = crate::authz::check(&mut req, &conn, &security).await {
            meter.response(refused.status.as_u16(), None, ResponseFlag::None);
            let mut rsp = Response::new(ProxyBody::local(refused.body, Some(meter)));
            *rsp.status_mut() = refused.status;
            *rsp.headers_mut() = refused.headers;
            return rsp;
        }
        if let (Some(peer), Some(identity)) = (&conn.peer_info, &conn.shared.identity) {
            inbound::set_peer_headers(req.headers_mut(), peer, identity);
        }
    }
    let host = forwarded_host(&req);
    headers::set_forwarded(req.headers_mut(), conn.peer.ip(), "http", host);

    // 3. Endpoint: choosing it is its own step; sending is the endpoint's.
    let Some(endpoint) = service.pick() else {
        return error_response(
            &ProxyError::NoEndpoints(service.name.to_string()),
            grpc,
            Some(meter),
        );
    };
    let wire = match (service.protocol, downstream_h2, wants_upgrade) {
        (_, _, true) | (UpstreamProtocol::Http1, _, _) | (UpstreamProtocol::Auto, false, _) => {
            Wire::Http1
        }
        (UpstreamProtocol::Http2, _, _) | (UpstreamProtocol::Auto, true, _) => Wire::Http2,
    };
    make_absolute(&mut req, endpoint.addr());
    if wire == Wire::Http2 {
        // `:authority` carries it (RFC 9113 §8.3.1).
        req.headers_mut().remove(header::HOST);
    }
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

    // 4. Send on the endpoint's pool.
    let mut rsp = match endpoint.send(req, wire).await {
        Ok(rsp) => rsp,
        Err(e) => {
            let err = if e.connect {
                ProxyError::Connect(e)
            } else {
                ProxyError::Upstream(e)
            };
            return error_response(&err, grpc, Some(meter));
        }
    };

    // 5. Upgrade: join both connections once the upstream switched protocols.
    let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client)) = (switched, client_upgrade) {
        upgrade::bridge(client, hyper::upgrade::on(&mut rsp));
    }

    // 6. Response headers and metering on the way back.
    headers::strip_hop_by_hop(rsp.headers_mut(), switched);
    meter.response(
        rsp.status().as_u16(),
        parse_grpc_status(rsp.headers().get("grpc-status")),
        ResponseFlag::None,
    );
    rsp.map(|body| ProxyBody::upstream(body, Some(meter)))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The value for `x-forwarded-host` when the client set none: the Host header or `:authority`.
fn forwarded_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.headers().contains_key(&headers::X_FORWARDED_HOST) {
        return None;
    }
    req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Gives the request an absolute URI (`http://authority/path`), which keys the endpoint's pool:
/// the authority is the request's own (Host header for HTTP/1.1), or the endpoint's address.
fn make_absolute(req: &mut Request<Incoming>, fallback: std::net::SocketAddr) {
    if req.uri().scheme().is_some() && req.uri().authority().is_some() {
        return;
    }
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| req.uri().authority().cloned())
        .or_else(|| Authority::try_from(fallback.to_string()).ok());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}
