//! The injection webhook's HTTPS endpoint: `POST /inject` with a Pod `AdmissionReview`, answered
//! from the Kubernetes source's store by [`super::webhook::review`]. TLS is the caller's (a
//! certificate for the webhook Service's DNS name, issued by jalin's CA); requests are bounded
//! in size and time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::inject::InjectSettings;
use super::source::StoreReader;
use super::webhook::review;

/// The path the MutatingWebhookConfiguration points at.
pub const INJECT_PATH: &str = "/inject";
/// Largest review accepted: the API server caps objects at 3 MiB; the envelope adds little.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;
/// Bound of a TLS handshake; the API server's webhook timeout is 10 s by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of reading one review body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the webhook answers with.
#[derive(Clone, Debug)]
pub struct WebhookState {
    /// Namespace labels come from here.
    pub store: StoreReader,
    /// How pods are injected.
    pub settings: Arc<InjectSettings>,
}

/// Serves the webhook on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: WebhookState) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let state = state.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, "injection webhook TLS handshake failed: {error}; check the caBundle of the MutatingWebhookConfiguration");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn problem(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, &json!({"error": message}))
}

async fn handle(state: &WebhookState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != INJECT_PATH {
        return problem(
            StatusCode::NOT_FOUND,
            "the injection webhook serves POST /inject only",
        );
    }
    if request.method() != Method::POST {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST with an AdmissionReview",
        );
    }
    let body = Limited::new(request.into_body(), MAX_REVIEW_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes"),
                )
            } else {
                problem(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {error}"),
                )
            };
        }
        Err(_) => {
            return problem(
                StatusCode::REQUEST_TIMEOUT,
                "the request body took too long",
            );
        }
    };
    let admission: AdmissionReview<Pod> = match serde_json::from_slice(&bytes) {
        Ok(review) => review,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected an admission.k8s.io/v1 AdmissionReview of a Pod: {error}; check that \
                     the MutatingWebhookConfiguration's rules select only pods"
                ),
            );
        }
    };
    let answer = state
        .store
        .read(|store| review(admission, store, &state.settings));
    respond(StatusCode::OK, &answer)
}
