//! The admin server: `/live`, `/ready`, `/metrics` (Prometheus text), `/config_dump` (JSON with
//! the config version and hash) and `/logging` (read or change the log filter at run time).
//!
//! It binds loopback by default and serves HTTP/1.1 only; it is for the kubelet, Prometheus and
//! operators on the host, never for mesh traffic.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::Shared;
use crate::limits::HEADER_READ_TIMEOUT;

/// Serves the admin API on `socket` until the proxy has drained.
pub async fn serve(socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = tokio::select! {
            () = shared.stopped.cancelled() => break,
            r = socket.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if shared.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut rsp = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            rsp
        }
        (&Method::GET, "/config_dump") => config_dump(shared),
        (&Method::GET, "/logging") => match crate::telemetry::log_control() {
            Some(c) => text(StatusCode::OK, &format!("level={}\n", c.current())),
            None => text(
                StatusCode::NOT_FOUND,
                "logging is not controlled by this proxy\n",
            ),
        },
        (&Method::PUT | &Method::POST, "/logging") => set_logging(req),
        (_, "/live" | "/ready" | "/metrics" | "/config_dump" | "/logging") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /metrics, /config_dump, /logging\n",
        ),
    }
}

fn set_logging(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let level = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("level="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    let Some(level) = level else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected ?level=<filter>, for example ?level=debug\n",
        );
    };
    let Some(control) = crate::telemetry::log_control() else {
        return text(
            StatusCode::NOT_FOUND,
            "logging is not controlled by this proxy\n",
        );
    };
    match control.set(&level) {
        Ok(()) => {
            tracing::info!(%level, "log filter changed");
            text(StatusCode::OK, &format!("level={level}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    }
}

fn config_dump(shared: &Shared) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load();
    let body = serde_json::json!({
        "version": snap.version,
        "sha256": snap.origin.sha256,
        "source": snap.origin.file,
        "config": &*snap.config,
        // xDS mode: connection to the control plane, versions in force per kind and name,
        // and the last NACK.
        "xds": shared.xds.as_ref().map(|x| x.dump()),
        "tls": shared.identity.as_ref().map(|i| serde_json::json!({
            "spiffe_id": i.spiffe_id.to_string(),
            "policy": i.policy.name,
            "fips_active": i.fips_active(),
            "certificate": i.manager().and_then(|m| m.current()).map(|c| serde_json::json!({
                "serial": c.serial_hex,
                "fingerprint_sha256": c.fingerprint_sha256,
                "generation": c.generation,
                "not_after_unix": c.not_after.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            })),
        })),
    });
    match serde_json::to_vec_pretty(&body) {
        Ok(json) => {
            let mut rsp = Response::new(Full::new(Bytes::from(json)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialise: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}
