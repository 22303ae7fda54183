//! The HTTP request's way through the proxy, in request order (the one place the stack is
//! written down):
//!
//! 1. destination: the listener's service or the original destination's; at a gateway, the
//!    route table bound to it that serves the request's authority ([`crate::gateway`]);
//! 2. header rules: trust by direction, hop-by-hop, request id, forwarded-*;
//! 3. route: first matching route of the service's table (none: no timeout, and Istio's
//!    default retry policy outbound, no retries inbound); direct response, redirect, fault
//!    delay/abort, weighted destination (service and subset), rewrites, request header
//!    operations, consistent-hash key, replayable body (at most 64 KiB), mirror;
//! 4. admission ([`crate::cluster`]): priority queue slot, breaker, HTTP/1.1 connection slot;
//!    overflow answers 503 with `x-jalin-overflow` at once (or after a bounded queue wait);
//! 5. balance and send ([`attempt`]): pick among non-ejected endpoints, send under perTryTimeout
//!    and the route timeout (which keeps running over the response body), outcome to the balancer and the outlier detector, retries with
//!    back-off, tried hosts skipped, retry budgets;
//! 6. upgrade bridging; 7. response header operations, affinity cookie, metering.
//!
//! Inbound and outbound differ only in the header trust step and in authorization (inbound and
//! edge listeners only).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Either;
use jalin_xds::model::route::{PriorityClass, RetryPolicy};
use jalin_xds::model::traffic::{H2UpgradePolicy, HashKey, LoadBalancer};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use jalin_xds::model::cluster::UpstreamProtocol;
use jalin_xds::model::listener::Direction;
use metrics::SharedString;

use crate::accesslog::{Downstream, Pending};
use crate::balance::{PickContext, affinity_cookie, request_hash};
use crate::endpoint::Wire;
use crate::http::attempt::{self, Outgoing, Plan};
use crate::http::body::{ProxyBody, RequestBody};
use crate::http::headers;
use crate::http::respond::{ProxyError, error_response};
use crate::http::routing;
use crate::http::upgrade;
use crate::listener::ConnCtx;
use crate::route::{CompiledRetryPolicy, RequestView};
use crate::snapshot::Snapshot;
use crate::telemetry::{RequestMeter, ResponseFlag, ServiceMetrics, parse_grpc_status};
use crate::{inbound, outbound};

/// Proxies one request and returns the response to send downstream. Never fails: errors become
/// responses (see [`crate::http::respond`]).
pub async fn forward(mut req: Request<RequestBody>, conn: Arc<ConnCtx>) -> Response<ProxyBody> {
    let start = Instant::now();
    let direction = conn.info.direction;
    let grpc = is_grpc(req.headers());
    let snapshot = conn.shared.snapshot.load_full();

    // 1. Destination: the listener's service, or the connection's original destination.
    let service = match conn.request_destination(&snapshot, authority(&req)) {
        Ok(s) => s,
        Err(e) => {
            let label = conn
                .info
                .service
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            let metrics = Arc::new(ServiceMetrics::new(SharedString::from(label)));
            let mut meter = RequestMeter::new(start, direction, metrics, grpc);
            access_log(&mut meter, &snapshot, &req, &conn);
            return error_response(&e, grpc, Some(meter));
        }
    };
    let mut meter = RequestMeter::new(start, direction, service.metrics.clone(), grpc);

    // 2. Header rules: trust by direction, hop-by-hop, request id, forwarded-*.
    let downstream_h2 = matches!(req.version(), Version::HTTP_2 | Version::HTTP_3);
    let wants_upgrade = !downstream_h2 && headers::wants_upgrade(req.headers());
    match direction {
        Direction::Inbound => inbound::sanitize_request(req.headers_mut()),
        Direction::Outbound => outbound::sanitize_request(req.headers_mut(), &conn),
    }
    headers::strip_hop_by_hop(req.headers_mut(), wants_upgrade);
    headers::ensure_request_id(req.headers_mut());
    access_log(&mut meter, &snapshot, &req, &conn);
    if direction == Direction::Inbound || conn.info.is_edge() {
        // 2b. Authentication and authorization (after TLS and detection, before routing); at a
        //     gateway too, where Istio applies the policies selecting the gateway workload.
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
    headers::set_forwarded(req.headers_mut(), conn.peer.ip(), conn.scheme(), host);

    // 3. Route: first matching route of the service's table (none: the service itself, no
    //    timeout, Istio's default retry policy outbound and no retries inbound). Inbound never
    //    routes: as in Istio, a VirtualService acts on the calling side only, so its faults,
    //    retries and rewrites are applied once, not again by the server's proxy.
    let authority = authority(&req).unwrap_or_default().to_owned();
    let table = match direction {
        Direction::Outbound => service.routes.as_deref(),
        Direction::Inbound => None,
    };
    let (route, block) = match table {
        None => (None, None),
        Some(table) => {
            let pq = path_and_query(&req);
            let mut view = RequestView::new(
                req.method().as_str(),
                pq,
                &authority,
                req.headers(),
                conn.local.port(),
            );
            view.source_namespace = None;
            match table.match_route_hit(&view) {
                Some(hit) => (Some(hit.route), hit.block),
                None => {
                    let what = format!("{} {} in the service's route table", req.method(), pq);
                    return error_response(&ProxyError::NoRoute(what), grpc, Some(meter));
                }
            }
        }
    };
    if let Some(dr) = route.and_then(|r| r.direct_response.as_ref()) {
        let body = Bytes::from(dr.body.clone().unwrap_or_default());
        return routing::local_answer(
            dr.status,
            body,
            None,
            None,
            ResponseFlag::DirectResponse,
            meter,
        );
    }
    if let Some(route) = route.filter(|r| r.redirect.is_some()) {
        let pq = path_and_query(&req);
        let view = RequestView::new(req.method().as_str(), pq, &authority, req.headers(), 0);
        if let Some((code, location)) = route.redirect_location(&view, conn.scheme()) {
            return routing::local_answer(
                code,
                Bytes::new(),
                Some(&location),
                None,
                ResponseFlag::DirectResponse,
                meter,
            );
        }
    }
    let fault = route
        .map(|r| r.fault(rand::random(), rand::random()))
        .unwrap_or_default();
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(abort) = &fault.abort {
        return routing::abort_answer(abort, meter);
    }
    let (target_service, subset) = match route.and_then(|r| r.choose_destination(rand::random())) {
        None => (service.clone(), None),
        Some(d) => match snapshot.service(&d.host) {
            Some(s) => (s.clone(), d.subset.clone()),
            None => {
                return error_response(&ProxyError::NoService(d.host.clone()), grpc, Some(meter));
            }
        },
    };
    // Metrics name the service the request goes to (a route may send it elsewhere; at a
    // gateway the table is not a service at all); a subset keeps its service's labels.
    if !service.same_service(&target_service) {
        meter.destination(&target_service.metrics);
    }
    let Some(cluster) = target_service.cluster(subset.as_deref()).cloned() else {
        let err = ProxyError::NoSubset(target_service.name.to_string(), subset.unwrap_or_default());
        return error_response(&err, grpc, Some(meter));
    };
    if let Some(log) = meter.access_log() {
        // The upstream host is known here when there is one candidate.
        let eps = target_service.endpoints();
        let host = (subset.is_none() && eps.len() == 1).then(|| eps[0].addr());
        log.upstream(&target_service.name, host);
    }
    if let Some(route) = route {
        routing::rewrite(&mut req, route, block);
        route.apply_request_headers(req.headers_mut());
    }
    // Consistent hashing: the request's hash, and the affinity cookie to set when generated.
    let mut pick = PickContext::at(Instant::now());
    let mut set_cookie = None;
    if let LoadBalancer::ConsistentHash(key) = &cluster.policy.load_balancer {
        let pq = path_and_query(&req);
        let view = RequestView::new(req.method().as_str(), pq, &authority, req.headers(), 0);
        let h = request_hash(key, &view, Some(conn.peer.ip()), rand::random());
        pick.hash = h.hash;
        if let (Some(value), HashKey::Cookie { name, path, ttl_ms }) = (h.set_cookie, key) {
            set_cookie = Some(affinity_cookie(name, &value, path.as_deref(), *ttl_ms));
        }
    }
    pick.original_dst = conn.orig_dst;

    // 4-5. Admission, balance, send with outcome feedback, retries (http/attempt.rs).
    // h2UpgradePolicy UPGRADE: HTTP/1.1 requests go upstream as HTTP/2 (not protocol upgrades).
    let upgrade_h2 = cluster.policy.connection_pool.h2_upgrade_policy == H2UpgradePolicy::Upgrade;
    let wire = match (
        target_service.protocol,
        downstream_h2 || upgrade_h2,
        wants_upgrade,
    ) {
        (_, _, true) | (UpstreamProtocol::Http1, _, _) | (UpstreamProtocol::Auto, false, _) => {
            Wire::Http1
        }
        (UpstreamProtocol::Http2, _, _) | (UpstreamProtocol::Auto, true, _) => Wire::Http2,
    };
    // The pool key's authority falls back to the first endpoint's address.
    let fallback = target_service
        .endpoints()
        .first()
        .map_or(conn.local, |e| e.addr());
    make_absolute(&mut req, fallback);
    if wire == Wire::Http2 {
        // `:authority` carries it (RFC 9113 §8.3.1).
        req.headers_mut().remove(header::HOST);
    }
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match routing::prepare_body(body, &parts.headers).await {
        Ok((b, size)) => {
            meter.request_body(size);
            b
        }
        Err(e) => {
            tracing::debug!(error = %e, "client body failed before forwarding");
            return routing::local_answer(
                400,
                Bytes::from(format!("{e}\n")),
                None,
                None,
                ResponseFlag::DownstreamTerminated,
                meter,
            );
        }
    };
    let out = Outgoing {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        extensions: parts.extensions,
        body: Some(body),
    };
    if let (Some(dest), Some(full)) = (
        route.and_then(|r| r.mirror(rand::random())),
        out.replayable(),
    ) && let Some(mirror_cluster) = snapshot
        .service(&dest.host)
        .and_then(|s| s.cluster(dest.subset.as_deref()))
    {
        let mut copy = Request::new(Either::Right(full));
        *copy.method_mut() = out.method.clone();
        *copy.uri_mut() = out.uri.clone();
        *copy.headers_mut() = out.headers.clone();
        routing::mirror(mirror_cluster.clone(), copy, wire);
    }
    // The route timeout runs from here until the upstream response is complete (Envoy's
    // route timeout): the tries must get headers before it, and the body is cut at it.
    let deadline = route.and_then(|r| r.timeout).map(|t| Instant::now() + t);
    let plan = Plan {
        cluster: &cluster,
        retry: match route {
            Some(r) => &r.retry,
            None => default_retry(direction),
        },
        deadline,
        class: route.map_or(PriorityClass::Standard, |r| r.priority),
        wire,
        pick,
    };
    let (mut rsp, admission) = match attempt::send(plan, out).await {
        Ok(r) => r,
        Err(e) => return error_response(&e, grpc, Some(meter)),
    };

    // 6. Upgrade: join both connections once the upstream switched protocols.
    let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client)) = (switched, client_upgrade) {
        upgrade::bridge(client, hyper::upgrade::on(&mut rsp));
    }

    // 7. Response headers and metering on the way back.
    headers::strip_hop_by_hop(rsp.headers_mut(), switched);
    if let Some(route) = route {
        route.apply_response_headers(rsp.headers_mut());
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        rsp.headers_mut().append(header::SET_COOKIE, c);
    }
    if let Some(log) = meter.access_log() {
        log.response(rsp.headers());
    }
    meter.response(
        rsp.status().as_u16(),
        parse_grpc_status(rsp.headers().get("grpc-status")),
        ResponseFlag::None,
    );
    // The request's slots (http2MaxRequests, HTTP/1.1 connection) are held until the body ends;
    // the route timeout keeps running over the body (not over an upgraded connection).
    let deadline = deadline.filter(|_| !switched);
    rsp.map(|body| {
        ProxyBody::upstream(body, Some(meter))
            .holding(admission)
            .until(deadline, &cluster.name)
    })
}

/// Starts the request's access-log record when a Telemetry logs its mode; nothing otherwise.
fn access_log(
    meter: &mut RequestMeter,
    snapshot: &Snapshot,
    req: &Request<RequestBody>,
    conn: &ConnCtx,
) {
    let Some(log) = snapshot.access_log.for_direction(conn.info.direction) else {
        return;
    };
    let down = Downstream {
        remote: conn.peer,
        local: conn.local,
        peer_uri_san: conn.peer_info.as_ref().map(|p| p.tls.spiffe_id.to_string()),
    };
    meter.set_access_log(Pending::begin(log, req, down));
}

/// The request's path and query, `/` when it has none (an authority-form request).
pub(crate) fn path_and_query<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The request's authority: its Host header (HTTP/1.1), else the URI's (`:authority`).
pub(crate) fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The retry policy of a service without a route table, as Istio's default routes have it.
///
/// Outbound: Istio's default policy, 2 retries on connect-failure, refused-stream, unavailable,
/// cancelled and 503. Inbound: none. Istio's default inbound route has no retry policy; the
/// calling side retries. Retrying here as well would send each request to the local app up to
/// three times per try of the caller, multiplying the caller's retries, and the app's
/// discarded answers would be missing from `istio_requests_total{reporter="destination"}`.
fn default_retry(direction: Direction) -> &'static CompiledRetryPolicy {
    static OUTBOUND: OnceLock<CompiledRetryPolicy> = OnceLock::new();
    static INBOUND: OnceLock<CompiledRetryPolicy> = OnceLock::new();
    let (cell, policy): (_, fn() -> RetryPolicy) = match direction {
        Direction::Outbound => (&OUTBOUND, RetryPolicy::default),
        Direction::Inbound => (&INBOUND, RetryPolicy::disabled),
    };
    cell.get_or_init(|| {
        CompiledRetryPolicy::compile(&policy()).unwrap_or(CompiledRetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            on: Default::default(),
            status_codes: Vec::new(),
        })
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The value for `x-forwarded-host` when the client set none: the Host header or `:authority`.
fn forwarded_host(req: &Request<RequestBody>) -> Option<HeaderValue> {
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
fn make_absolute(req: &mut Request<RequestBody>, fallback: std::net::SocketAddr) {
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
