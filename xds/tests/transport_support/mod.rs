//! Shared helpers for the transport integration tests: a server on 127.0.0.1:0, a test applier,
//! and bounded waits on status channels.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jalin_xds::transport::client::ClientStatus;
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{AppliedConfig, Applier, ClientConfig, Kind, NodeInfo, XdsServer};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::ServerTlsConfig;

/// Safety net for every wait; tests synchronise on channels, this only bounds a hang.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running server that is stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops the server and waits until it has ended every stream and closed its listener.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops")
                .expect("server task");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves `server` on `listener`.
pub fn serve(server: &XdsServer, listener: TcpListener, tls: Option<ServerTlsConfig>) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server.clone();
    let task = tokio::spawn(async move {
        server
            .serve(listener, tls, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Serves `server` on a fresh 127.0.0.1:0 listener.
pub async fn serve_local(server: &XdsServer) -> Running {
    serve(
        server,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
}

/// A client config with fast reconnects for tests.
pub fn config(node_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new(NodeInfo {
        id: node_id.into(),
        ..Default::default()
    });
    c.backoff_base = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// An applier that refuses any cluster whose JSON body has `"port": 0`, like a real validator
/// refusing an invalid field, and records what it applied.
#[derive(Clone, Default)]
pub struct TestApplier {
    pub applied: Arc<Mutex<Vec<AppliedConfig>>>,
}

impl Applier for TestApplier {
    fn apply(&mut self, config: &AppliedConfig) -> Result<(), String> {
        let clusters = config
            .decode_kind::<serde_json::Value>(Kind::Cluster)
            .map_err(|e| e.to_string())?;
        for c in clusters {
            if c.body.get("port").and_then(serde_json::Value::as_u64) == Some(0) {
                return Err(format!(
                    "cluster {:?}: field port: expected 1-65535, got 0; fix the ServiceEntry port",
                    c.name
                ));
            }
        }
        self.applied.lock().unwrap().push(config.clone());
        Ok(())
    }
}

/// Waits until `pred` holds for the client's status.
pub async fn wait_status(
    rx: &mut watch::Receiver<ClientStatus>,
    what: &str,
    pred: impl FnMut(&ClientStatus) -> bool,
) -> ClientStatus {
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
        .expect("client alive")
        .clone()
}

/// Waits for a server event matching `pred`.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<ServerEvent>,
    what: &str,
    mut pred: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) if pred(&ev) => return ev,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("server gone"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// The version of `name` of `kind` in the client's applied config.
pub fn version_of(status: &ClientStatus, kind: Kind, name: &str) -> Option<String> {
    status
        .applied
        .get(kind.type_url(), name)
        .map(|r| r.version.clone())
}
