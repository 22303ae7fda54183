//! The demo's applications: small in-process HTTP/1.1 servers behind the server sidecars. Each
//! answers with its instance name; the failing one turns to 503 after a while so the mesh has
//! a failing upstream to count and eject. Each counts what it served, for the summary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::DemoError;
use super::example::{Behaviour, Instance};

/// The header every demo app sets to its instance name, so a client sees who answered.
pub const INSTANCE_HEADER: &str = "x-demo-instance";

/// What one application served.
#[derive(Debug, Default)]
pub struct AppCounters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// A running application.
#[derive(Debug)]
pub struct App {
    pub instance: Instance,
    pub addr: SocketAddr,
    pub counters: Arc<AppCounters>,
}

/// All applications; dropping it stops them.
#[derive(Debug)]
pub struct Apps {
    pub apps: Vec<App>,
    _tasks: JoinSet<()>,
}

impl Apps {
    /// Binds one application per instance on 127.0.0.1 (a free port each) and starts serving.
    pub async fn start(instances: &[Instance]) -> Result<Self, DemoError> {
        let mut tasks = JoinSet::new();
        let mut apps = Vec::with_capacity(instances.len());
        let started = Instant::now();
        for instance in instances {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| DemoError::Bind(format!("app {}: {e}", instance.name)))?;
            let addr = listener
                .local_addr()
                .map_err(|e| DemoError::Bind(format!("app {}: {e}", instance.name)))?;
            let counters = Arc::new(AppCounters::default());
            tasks.spawn(serve(listener, *instance, counters.clone(), started));
            apps.push(App {
                instance: *instance,
                addr,
                counters,
            });
        }
        Ok(Self {
            apps,
            _tasks: tasks,
        })
    }

    /// The application of the instance named `name`.
    pub fn get(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.instance.name == name)
    }
}

async fn serve(
    listener: TcpListener,
    instance: Instance,
    counters: Arc<AppCounters>,
    started: Instant,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let counters = counters.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let counters = counters.clone();
                async move { Ok::<_, Infallible>(answer(&req, instance, &counters, started)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connection tasks so the set stays bounded by the live connections.
        while connections.try_join_next().is_some() {}
    }
}

fn answer(
    req: &Request<Incoming>,
    instance: Instance,
    counters: &AppCounters,
    started: Instant,
) -> Response<Full<Bytes>> {
    let failing = match instance.behaviour {
        Behaviour::Echo => false,
        Behaviour::FailAfter(after) => started.elapsed() >= after,
    };
    let (status, body) = if failing {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"instance\":\"{}\",\"error\":\"failing on purpose (jalin demo)\"}}\n",
                instance.name
            ),
        )
    } else {
        counters.ok.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::OK,
            format!(
                "{{\"instance\":\"{}\",\"method\":\"{}\",\"path\":\"{}\"}}\n",
                instance.name,
                req.method(),
                req.uri().path()
            ),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(instance.name) {
        resp.headers_mut().insert(INSTANCE_HEADER, v);
    }
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
