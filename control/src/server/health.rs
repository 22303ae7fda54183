//! The health and debug port: `/ready` (200 once the first complete configuration is pushed),
//! `/live`, `/metrics` (Prometheus text) and `/debug/config` (JSON: accepted version, rejected
//! updates with their reasons, proxies and what they ACKed).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Time a client has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 64;

/// What the health port reads: readiness and the `/debug/config` document.
pub trait HealthState: Send + Sync + 'static {
    /// True once the control plane serves a complete configuration.
    fn ready(&self) -> bool;
    /// The `/debug/config` JSON document.
    fn debug_config(&self) -> serde_json::Value;
}

/// The process-wide Prometheus recorder (installed once; later control planes in the same
/// process, as in tests, share it).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("metrics recorder not installed ({e}); /metrics will be empty");
                None
            }
        })
        .as_ref()
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn route(state: &dyn HealthState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/live" => respond(StatusCode::OK, "text/plain", "live\n"),
        "/ready" if state.ready() => respond(StatusCode::OK, "text/plain", "ready\n"),
        "/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: the first complete configuration is not pushed yet (see /debug/config)\n",
        ),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus()
                .map(PrometheusHandle::render)
                .unwrap_or_default(),
        ),
        "/debug/config" => {
            let body = serde_json::to_vec_pretty(&state.debug_config()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /ready, /live, /metrics or /debug/config\n",
        ),
    }
}

/// Serves the health port on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<dyn HealthState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.len() >= MAX_CONNECTIONS {
            if conns.join_next().await.is_none() {
                break;
            }
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let state = state.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = route(&*state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}
