//! Steps 4 to 6 of a request: admission, endpoint choice and send, with outcome feedback and
//! retries. One loop, in this order per try: admission (priority queue, breaker, connection
//! slot) -> retry allowance (breaker `maxRetries`/retry budget and the time-windowed budget,
//! retries only) -> balancer pick over available endpoints (tried hosts avoided) -> send under
//! perTryTimeout and the route timeout (to the response headers here; the body's share is
//! enforced by [`crate::http::body::ProxyBody::until`]) -> outcome to the balancer and the outlier detector ->
//! `should_retry` -> jittered back-off.
//!
//! Retries need the request again: only requests whose body is replayable (none, or buffered
//! because it is at most [`MAX_REPLAY_BODY`]) are retried; a streamed body is sent once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use jalin_xds::model::route::PriorityClass;

use crate::balance::PickContext;
use crate::cluster::{Admission, ClusterState};
use crate::endpoint::{SendError, UpstreamBody, Wire};
use crate::http::respond::ProxyError;
use crate::outlier::{HostResult, LocalOrigin};
use crate::retry::{Backoff, TriedHosts};
use crate::route::{CompiledRetryPolicy, Outcome, should_retry};
use crate::telemetry::parse_grpc_status;

/// Largest request body buffered so the request can be retried or mirrored: 64 KiB. Larger (or
/// unknown-length) bodies are streamed and never retried.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// The request to send, once or more.
pub struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub extensions: http::Extensions,
    /// `Right` when replayable.
    pub body: Option<UpstreamBody>,
}

impl Outgoing {
    /// A buffered copy of the body, when it is replayable.
    pub fn replayable(&self) -> Option<Full<Bytes>> {
        match &self.body {
            Some(Either::Right(full)) => Some(full.clone()),
            _ => None,
        }
    }

    /// The request for one try: a copy while it may be retried, the original for the last.
    fn take(&mut self, last: bool) -> Option<Request<UpstreamBody>> {
        let body = if last {
            self.body.take()?
        } else {
            match &self.body {
                Some(Either::Right(full)) => Either::Right(full.clone()),
                _ => self.body.take()?,
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        if last {
            *req.headers_mut() = std::mem::take(&mut self.headers);
            *req.extensions_mut() = std::mem::take(&mut self.extensions);
        } else {
            *req.headers_mut() = self.headers.clone();
        }
        Some(req)
    }
}

/// How to send: the cluster, the route's retry policy and timeout, the request's class.
pub struct Plan<'a> {
    pub cluster: &'a Arc<ClusterState>,
    pub retry: &'a CompiledRetryPolicy,
    /// The route timeout's end: every try must have its response headers by then (else 504),
    /// and [`crate::http::body::ProxyBody::until`] cuts a body still streaming at that instant.
    /// `None`: no timeout.
    pub deadline: Option<Instant>,
    pub class: PriorityClass,
    pub wire: Wire,
    pub pick: PickContext,
}

/// Sends `out` under `plan`, retrying as the policy allows. The [`Admission`] returned with the
/// response holds the request's slots until the response body is done (drop it then).
pub async fn send(
    plan: Plan<'_>,
    mut out: Outgoing,
) -> Result<(Response<Incoming>, Admission), ProxyError> {
    let start = Instant::now();
    let deadline = plan.deadline;
    let cluster = plan.cluster;
    cluster.deposit(start);
    let replayable = matches!(out.body, Some(Either::Right(_)));
    let max_tries = if replayable {
        plan.retry.attempts + 1
    } else {
        1
    };
    let backoff = Backoff::default();
    let mut tried = TriedHosts::default();
    let mut last: Option<Result<(Response<Incoming>, Admission), ProxyError>> = None;
    for n in 0..max_tries {
        let _retry_slot = if n == 0 {
            None
        } else {
            // A retry needs the breaker's maxRetries/retry budget and the windowed budget.
            let now = Instant::now();
            let Ok(slot) = cluster.breaker.try_retry(now) else {
                metrics::counter!(crate::admission::OVERFLOW_METRIC, "cluster" => cluster.name.to_string(), "limit" => "maxRetries").increment(1);
                break;
            };
            if !cluster.withdraw_retry(now) {
                metrics::counter!("jalin_retry_budget_exhausted_total", "cluster" => cluster.name.to_string()).increment(1);
                break;
            }
            let wait = backoff.delay(n, rand::random());
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                break;
            }
            tokio::time::sleep(wait).await;
            Some(slot)
        };
        let admission = match cluster.admit(plan.class, plan.wire == Wire::Http1).await {
            Ok(a) => a,
            // A retry that finds the pool full is not sent: the last try's answer stands.
            Err(_) if last.is_some() => break,
            Err(refusal) => {
                // Overflow is never retried: a retry would only add load to the full limit.
                return Err(ProxyError::Overflow {
                    cluster: cluster.name.to_string(),
                    limit: refusal.label,
                });
            }
        };
        let mut ctx = plan.pick;
        ctx.now = Instant::now();
        let Some(flight) = cluster.pick(&ctx, &tried, plan.class) else {
            if last.is_some() {
                break;
            }
            let name = cluster.name.to_string();
            return Err(if cluster.is_empty() {
                ProxyError::NoEndpoints(name)
            } else {
                ProxyError::AllEjected(name)
            });
        };
        tried.insert(flight.endpoint.addr());
        let last_try = n + 1 == max_tries;
        let Some(req) = out.take(last_try) else { break };
        let try_limit = match (plan.retry.per_try_timeout, deadline) {
            (Some(p), Some(d)) => Some((Instant::now() + p).min(d)),
            (Some(p), None) => Some(Instant::now() + p),
            (None, d) => d,
        };
        let fut = flight.endpoint.send(req, plan.wire);
        let result = match try_limit {
            Some(at) => tokio::time::timeout_at(at.into(), fut).await.ok(),
            None => Some(fut.await),
        };
        if result.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            crate::http::body::count_route_timeout(&cluster.name, "headers");
        }
        let (outcome, host, answer) = classify(result, start, &cluster.name);
        match host {
            Some(h) => flight.finish(h),
            None => drop(flight),
        }
        let retry = !last_try
            && should_retry(plan.retry, &outcome)
            && deadline.is_none_or(|d| Instant::now() < d);
        if !retry {
            last = Some(answer.map(|rsp| (rsp, admission)));
            break;
        }
        drop(admission);
        last = Some(answer.map(|rsp| (rsp, Admission::default())));
        metrics::counter!("jalin_upstream_retries_total", "cluster" => cluster.name.to_string())
            .increment(1);
    }
    last.unwrap_or_else(|| Err(ProxyError::NoEndpoints(cluster.name.to_string())))
}

/// One try's result as the retry classifier, the outlier detector and the client see it.
fn classify(
    result: Option<Result<Response<Incoming>, SendError>>,
    start: Instant,
    cluster: &str,
) -> (
    Outcome,
    Option<HostResult>,
    Result<Response<Incoming>, ProxyError>,
) {
    match result {
        None => (
            Outcome::PerTryTimeout,
            Some(HostResult::Local(LocalOrigin::Timeout)),
            Err(ProxyError::Timeout(start.elapsed().as_millis())),
        ),
        Some(Ok(rsp)) => {
            let status = rsp.status().as_u16();
            let grpc_status = parse_grpc_status(rsp.headers().get("grpc-status")).map(u32::from);
            (
                Outcome::Response {
                    status,
                    grpc_status,
                },
                Some(HostResult::Http(status)),
                Ok(rsp),
            )
        }
        Some(Err(e)) => {
            if let Some(o) = e.overflow() {
                metrics::counter!(crate::admission::OVERFLOW_METRIC, "cluster" => cluster.to_owned(), "limit" => o.as_str()).increment(1);
                let cluster = cluster.to_owned();
                return (
                    Outcome::Overflow,
                    None,
                    Err(ProxyError::Overflow {
                        cluster,
                        limit: o.as_str(),
                    }),
                );
            }
            if e.connect {
                return (
                    Outcome::ConnectFailure,
                    Some(HostResult::Local(LocalOrigin::ConnectFailed)),
                    Err(ProxyError::Connect(e)),
                );
            }
            let outcome = if refused_stream(&e) {
                Outcome::RefusedStream
            } else {
                Outcome::Reset
            };
            (
                outcome,
                Some(HostResult::Local(LocalOrigin::Reset)),
                Err(ProxyError::Upstream(e)),
            )
        }
    }
}

/// True when the upstream refused the HTTP/2 stream (it did not process the request).
fn refused_stream(e: &SendError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e.source);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = err.source();
    }
    false
}
