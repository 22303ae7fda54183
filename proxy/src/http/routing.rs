//! Step 3 of a request, the route stage's effects: answers that never reach an upstream (direct
//! response, redirect, injected abort), path and authority rewrites, the replayable-body
//! decision, and mirroring (fire and forget, bounded in number and time).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Body;
use jalin_xds::model::route::AbortError;
use tokio::sync::Semaphore;

use crate::balance::PickContext;
use crate::cluster::ClusterState;
use crate::endpoint::{UpstreamBody, Wire};
use crate::http::attempt::MAX_REPLAY_BODY;
use crate::http::body::{Counted, ProxyBody, RequestBody};
use crate::retry::TriedHosts;
use crate::route::CompiledRoute;
use crate::telemetry::{RequestMeter, RequestSize, ResponseFlag};

/// Most mirrored requests in flight per process; beyond it a mirror is skipped and counted.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// Longest a mirrored request may take before it is abandoned.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// A locally generated answer (direct response, redirect, fault abort).
pub fn local_answer(
    status: u16,
    body: Bytes,
    location: Option<&str>,
    grpc_status: Option<u32>,
    flag: ResponseFlag,
    mut meter: RequestMeter,
) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let grpc = grpc_status.and_then(|g| u8::try_from(g).ok());
    meter.response(
        if grpc.is_some() { 200 } else { status.as_u16() },
        grpc,
        flag,
    );
    let mut rsp = Response::new(ProxyBody::local(body, Some(meter)));
    if let Some(g) = grpc {
        let h = rsp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(u16::from(g)));
        return rsp;
    }
    *rsp.status_mut() = status;
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        rsp.headers_mut().insert(header::LOCATION, loc);
    }
    rsp
}

/// The answer for an injected abort: an HTTP status, or a gRPC status for gRPC requests.
pub fn abort_answer(err: &AbortError, meter: RequestMeter) -> Response<ProxyBody> {
    let (status, grpc) = match err {
        AbortError::HttpStatus(s) => (*s, None),
        AbortError::GrpcStatus(g) => (200, Some(*g)),
    };
    let body = Bytes::from_static(b"fault filter abort\n");
    local_answer(status, body, None, grpc, ResponseFlag::FaultInjected, meter)
}

/// Rewrites the path (keeping the query) and the authority as the route says.
pub fn rewrite(req: &mut Request<RequestBody>, route: &CompiledRoute, block: Option<usize>) {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let new_path = route.rewrite_path(&path, block);
    let new_authority = route
        .rewrite_authority
        .as_deref()
        .and_then(|a| Authority::try_from(a).ok());
    if new_path.is_none() && new_authority.is_none() {
        return;
    }
    if let Some(a) = &new_authority
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if let Some(p) = new_path {
        let pq = match query {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        if let Ok(pq) = PathAndQuery::try_from(pq) {
            parts.path_and_query = Some(pq);
        }
    }
    if let (Some(a), true) = (new_authority, parts.authority.is_some()) {
        parts.authority = Some(a);
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// The body to send: buffered (replayable) when it is empty or declares a length of at most
/// [`MAX_REPLAY_BODY`], else streamed, and how its size is known (the buffer's length, or a
/// count the streamed body keeps). `Err` when the client's body failed while buffering.
pub async fn prepare_body(
    body: RequestBody,
    headers: &http::HeaderMap,
) -> Result<(UpstreamBody, RequestSize), String> {
    if body.is_end_stream() {
        return Ok((
            Either::Right(Full::new(Bytes::new())),
            RequestSize::Known(0),
        ));
    }
    let small = crate::http::headers::content_length(headers).is_some_and(|n| n <= MAX_REPLAY_BODY);
    if !small {
        let count = Arc::new(AtomicU64::new(0));
        let size = RequestSize::Counted(count.clone());
        return Ok((Either::Left(Counted::new(body, count)), size));
    }
    let limit = usize::try_from(MAX_REPLAY_BODY).unwrap_or(usize::MAX);
    let collected = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("reading the request body: {e}"))?
        .to_bytes();
    let size = RequestSize::Known(collected.len() as u64);
    Ok((Either::Right(Full::new(collected)), size))
}

fn mirrors() -> &'static Arc<Semaphore> {
    static S: OnceLock<Arc<Semaphore>> = OnceLock::new();
    S.get_or_init(|| Arc::new(Semaphore::new(MAX_MIRRORS_IN_FLIGHT)))
}

/// Sends a copy of the request to `cluster` in the background; its answer is discarded. The
/// authority gets Istio's `-shadow` suffix. Skipped (and counted) when too many are in flight.
pub fn mirror(cluster: Arc<ClusterState>, mut req: Request<UpstreamBody>, wire: Wire) {
    let Ok(permit) = mirrors().clone().try_acquire_owned() else {
        metrics::counter!("jalin_mirror_skipped_total", "cluster" => cluster.name.to_string())
            .increment(1);
        return;
    };
    let shadow = req.uri().authority().map(|a| match a.port() {
        Some(p) => format!("{}-shadow:{}", a.host(), p.as_str()),
        None => format!("{}-shadow", a.host()),
    });
    if let Some(s) = shadow {
        if let Ok(a) = Authority::try_from(s.as_str()) {
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.authority = Some(a);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        if let Ok(v) = HeaderValue::from_str(&s) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    tokio::spawn(async move {
        let _permit = permit;
        let ctx = PickContext::at(Instant::now());
        let Some(flight) = cluster.pick(&ctx, &TriedHosts::default(), Default::default()) else {
            return;
        };
        let send = flight.endpoint.send(req, wire);
        if let Ok(Ok(rsp)) = tokio::time::timeout(MIRROR_TIMEOUT, send).await {
            let status = rsp.status().as_u16();
            // Drain the body so the connection returns to the pool; bounded by the timeout.
            let _ = tokio::time::timeout(MIRROR_TIMEOUT, rsp.into_body().collect()).await;
            flight.finish(crate::outlier::HostResult::Http(status));
        }
    });
}
