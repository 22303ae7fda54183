//! HTTP upstreams (HTTP/1.1 and h2c on one port):
//! - [`HttpUpstream`]: `/headers` answers with the request's method, version and headers as
//!   JSON; `/status/NNN` answers with that status; any other path streams the request body
//!   back. Every response carries `x-upstream: <name>`.
//! - [`StreamingUpstream`]: answers every request with a first chunk at once and the rest only
//!   when the test releases it, to prove the proxy streams instead of buffering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::AbortOnDrop;

type BoxBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An HTTP echo server.
#[derive(Debug)]
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    requests: Arc<AtomicU64>,
    _task: AbortOnDrop,
}

impl HttpUpstream {
    /// Starts a server that names itself `name` in `x-upstream`.
    pub async fn start(name: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(serve(listener, move |req| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(echo(name, req).await) }
        }));
        Ok(Self {
            addr,
            name,
            requests,
            _task: AbortOnDrop(task),
        })
    }

    /// Requests this server has received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn echo(name: &'static str, req: Request<Incoming>) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    let mut rsp = if path == "/headers" {
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers
                .entry(k.as_str())
                .and_modify(|prev| {
                    if let serde_json::Value::String(s) = prev {
                        s.push_str(", ");
                        s.push_str(&v);
                    }
                })
                .or_insert(serde_json::Value::String(v));
        }
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "version": format!("{:?}", req.version()),
            "uri": req.uri().to_string(),
            "headers": headers,
        });
        Response::new(full(body.to_string()))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut rsp = Response::new(full(format!("status {code}\n")));
        *rsp.status_mut() = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        rsp
    } else {
        Response::new(req.into_body().map_err(Into::into).boxed_unsync())
    };
    rsp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    rsp
}

fn full(s: String) -> BoxBody {
    Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An upstream whose responses send `first` at once and `rest` only after [`release`](Self::release).
#[derive(Debug)]
pub struct StreamingUpstream {
    pub addr: SocketAddr,
    release: mpsc::Sender<()>,
    _task: AbortOnDrop,
}

impl StreamingUpstream {
    /// The first chunk every response sends.
    pub const FIRST: &'static [u8] = b"first chunk\n";
    /// What follows once released.
    pub const REST: &'static [u8] = b"the rest\n";

    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (release, rx) = mpsc::channel::<()>(16);
        let rx = Arc::new(Mutex::new(rx));
        let task = tokio::spawn(serve(listener, move |_req| {
            let rx = rx.clone();
            async move {
                let (tx, body_rx) = mpsc::channel::<
                    Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
                >(2);
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(Self::FIRST))))
                        .await;
                    // Hold the rest until the test has seen the first chunk.
                    let _ = rx.lock().await.recv().await;
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(Self::REST))))
                        .await;
                });
                let stream = futures::stream::unfold(body_rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                let body: BoxBody =
                    BodyExt::boxed_unsync(StreamBody::new(StreamExt::boxed(stream)));
                Ok::<_, Infallible>(Response::new(body))
            }
        }));
        Ok(Self {
            addr,
            release,
            _task: AbortOnDrop(task),
        })
    }

    /// Lets one held response send the rest of its body.
    pub async fn release(&self) {
        let _ = self.release.send(()).await;
    }
}

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<BoxBody>, Infallible>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(handler);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}
