//! A real gRPC server: tonic-health's `grpc.health.v1.Health`. `check("jalin.ok")` answers
//! `SERVING`; an unknown service answers status `NOT_FOUND`, so suites see both an OK status in
//! trailers and a non-OK status.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::AbortOnDrop;

/// The service name that reports `SERVING`.
pub const SERVING_SERVICE: &str = "jalin.ok";

#[derive(Debug)]
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl GrpcUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVING_SERVICE, ServingStatus::Serving)
            .await;
        let task = tokio::spawn(async move {
            let _reporter = reporter;
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Ok(Self {
            addr,
            _task: AbortOnDrop(task),
        })
    }
}
