//! The proxy as an xDS client: when the bootstrap names a `control_plane`, listeners, services,
//! routes and policies come over one ADS stream and are applied through the same path as a file
//! reload (validate -> bind new listeners -> one snapshot swap), whole or not at all.
//!
//! ```text
//! xDS thread (own runtime)                     proxy runtime
//! XdsClient (stream, reconnect with backoff+jitter, warm-up, ACK/NACK)
//!   -> applier: DynamicConfig::decode ------->  apply task: Inner::reload_with(dynamic)
//!      waits for the verdict  <---------------     Ok(version) | Err(ConfigError)
//!   -> ACK, or NACK with the error text
//! ```
//!
//! Invariants:
//! - the configuration in force is always one the proxy validated and bound whole; a refused
//!   update leaves it untouched, and so does losing the control plane (the client keeps the last
//!   applied set and resumes from its versions on reconnect);
//! - the client runs on its own thread and runtime because the transport's applier is
//!   synchronous while binding listeners is not: the applier blocks that thread only, never a
//!   proxy worker, so it cannot deadlock a single-threaded proxy.
//!
//! Readiness in xDS mode: the proxy is ready once the first configuration from the control
//! plane is applied ([`XdsState::is_ready`]); that first configuration waits for every
//! subscribed type (the client's initial fetch), and no listener, not even a bootstrap one, is
//! bound before it, so a proxy never serves without its AuthorizationPolicies. The workload certificate is the second gate: when
//! the identity manager lands, `Shared::is_ready` also requires its first certificate.

pub mod bootstrap;
pub mod convert;
pub mod dial;
pub mod resolve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use jalin_xds::transport::{AppliedConfig, ClientStatus, XdsClient};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

pub use bootstrap::{ControlPlaneConfig, ControlPlaneTls, NodeConfig};
pub use convert::{ConvertError, DynamicConfig, TrustBundle, Versions};

use crate::config::{ConfigError, ProxyConfig};

/// 1 while a stream to the control plane is open, else 0.
pub const XDS_CONNECTED: &str = "jalin_xds_connected";
/// Updates refused (NACKed) since start.
pub const XDS_NACKS: &str = "jalin_xds_nacks_total";

/// The last update the proxy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The NACK message sent to the control plane.
    pub error: String,
    /// When it was sent (milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
}

/// What the xDS client has done, for `/config_dump`, readiness and tests.
#[derive(Debug)]
pub struct XdsState {
    control_plane: ControlPlaneConfig,
    in_force: ArcSwapOption<DynamicConfig>,
    status: ArcSwapOption<ClientStatus>,
    last_nack: Mutex<Option<Nack>>,
    ready: AtomicBool,
    started: Instant,
    first_applied_ms: Mutex<Option<u64>>,
    /// Bumped on every status change and apply, so observers wait instead of polling.
    changes: watch::Sender<u64>,
}

impl XdsState {
    /// State for a proxy bootstrapped with `control_plane`.
    pub fn new(control_plane: ControlPlaneConfig) -> Self {
        XdsState {
            control_plane,
            in_force: ArcSwapOption::empty(),
            status: ArcSwapOption::empty(),
            last_nack: Mutex::new(None),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            first_applied_ms: Mutex::new(None),
            changes: watch::Sender::new(0),
        }
    }

    /// A receiver that wakes on every change of status, NACK or configuration in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The bootstrap's `control_plane` section.
    pub fn control_plane(&self) -> &ControlPlaneConfig {
        &self.control_plane
    }

    /// The dynamic configuration in force, once one was applied.
    pub fn in_force(&self) -> Option<Arc<DynamicConfig>> {
        self.in_force.load_full()
    }

    /// The xDS client's last published status.
    pub fn status(&self) -> Option<Arc<ClientStatus>> {
        self.status.load_full()
    }

    /// The last refused update.
    pub fn last_nack(&self) -> Option<Nack> {
        self.last_nack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Ready: a first configuration from the control plane is in force.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records that `dynamic` is now in force (called with the snapshot swap).
    pub(crate) fn set_in_force(&self, dynamic: Arc<DynamicConfig>) {
        self.in_force.store(Some(dynamic));
        self.changes.send_modify(|n| *n += 1);
        if !self.ready.swap(true, Ordering::AcqRel) {
            let ms = self.started.elapsed().as_millis() as u64;
            *self
                .first_applied_ms
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(ms);
            tracing::info!(
                after_ms = ms,
                "first configuration from the control plane applied; ready"
            );
        }
    }

    fn observe(&self, status: ClientStatus) {
        let previous = self.status.load_full();
        let before = previous.as_ref().map_or(0, |p| p.nacks);
        metrics::gauge!(XDS_CONNECTED).set(if status.connected { 1.0 } else { 0.0 });
        metrics::counter!(XDS_NACKS).increment(status.nacks.saturating_sub(before));
        let new_nack = before < status.nacks;
        if new_nack && let Some(error) = &status.last_error {
            *self
                .last_nack
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Nack {
                error: error.clone(),
                at_unix_ms: unix_ms(SystemTime::now()),
            });
        }
        self.status.store(Some(Arc::new(status)));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Refuses a reloaded bootstrap whose `control_plane` differs from the running one.
    pub(crate) fn check_unchanged(
        xds: Option<&XdsState>,
        config: &ProxyConfig,
        file: &str,
    ) -> Result<(), ConfigError> {
        let running = xds.map(|x| &x.control_plane);
        if running == config.control_plane.as_ref() {
            return Ok(());
        }
        Err(ConfigError::field(
            file,
            "control_plane",
            "changed while running; the proxy keeps its control-plane stream as started",
            "restore the old section, or restart the proxy to change control planes",
        ))
    }

    /// The `xds` section of `/config_dump`: connection, versions in force, last NACK.
    pub fn dump(&self) -> serde_json::Value {
        let status = self.status();
        let in_force = self.in_force();
        let last_nack = self.last_nack();
        json!({
            "control_plane": {
                "address": self.control_plane.endpoint(),
                "identity": self.control_plane.identity,
                "node": self.control_plane.node.id,
                "namespace": self.control_plane.node.namespace,
            },
            "connection": {
                "connected": status.as_ref().is_some_and(|s| s.connected),
                "streams_opened": status.as_ref().map_or(0, |s| s.streams),
                "last_disconnect": status.as_ref().and_then(|s| s.last_disconnect.clone()),
            },
            "ready": self.is_ready(),
            "first_applied_after_ms": *self.first_applied_ms.lock().unwrap_or_else(PoisonError::into_inner),
            "applies": status.as_ref().map_or(0, |s| s.applies),
            "acked_system_versions": status.as_ref().map(|s| s.acked.clone()).unwrap_or_default(),
            "digest": in_force.as_ref().map(|d| d.digest.clone()),
            "versions": in_force.as_ref().map(|d| d.versions.clone()).unwrap_or_default(),
            "nacks": status.as_ref().map_or(0, |s| s.nacks),
            "last_nack": last_nack.map(|n| json!({"error": n.error, "at_unix_ms": n.at_unix_ms})),
            "dynamic": in_force.as_deref().map(|d| json!({
                "routes": d.routes,
                "authorization_policies": d.authorization_policies,
                "peer_authentications": d.peer_authentications,
                "request_authentications": d.request_authentications,
                "trust_domains": d.trust_bundles.iter().map(|t| &t.trust_domain).collect::<Vec<_>>(),
                "telemetry": d.telemetry,
            })),
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One update handed from the client thread to the proxy's runtime.
struct ApplyJob {
    dynamic: Arc<DynamicConfig>,
    reply: std::sync::mpsc::SyncSender<Result<u64, ConfigError>>,
}

/// Starts the client for `inner`'s proxy: the apply task on this runtime, the stream on its own
/// thread. Returns once the client is configured (TLS files read, endpoint parsed); the stream
/// itself connects, and reconnects, in the background.
pub(crate) async fn start(inner: Arc<crate::Inner>, state: Arc<XdsState>) -> Result<(), String> {
    let cp = state.control_plane.clone();
    let factory = cp.channel_factory()?;
    let endpoint = cp.dial_uri();
    let client_config = cp.client_config();
    let (apply_tx, mut apply_rx) = mpsc::unbounded_channel::<ApplyJob>();
    let stopped = inner.shared.stopped.clone();

    tokio::spawn(async move {
        while let Some(job) = apply_rx.recv().await {
            let result = inner.reload_with(Some(job.dynamic)).await;
            let _ = job.reply.send(result);
        }
    });

    let applier_tx = apply_tx.clone();
    let applier = move |applied: &AppliedConfig| -> Result<(), String> {
        let dynamic = DynamicConfig::decode(applied).map_err(|e| e.to_string())?;
        let (reply, verdict) = std::sync::mpsc::sync_channel(1);
        applier_tx
            .send(ApplyJob {
                dynamic: Arc::new(dynamic),
                reply,
            })
            .map_err(|_| "the proxy is shutting down; update not applied".to_owned())?;
        // Blocks this (the xDS) thread only; the apply is local work (bind, compile, swap).
        match verdict.recv() {
            Ok(Ok(_version)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the proxy stopped while applying the update".to_owned()),
        }
    };

    let (started_tx, started_rx) = oneshot::channel::<Result<(), String>>();
    let thread_state = state.clone();
    std::thread::Builder::new()
        .name("jalin-xds".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(format!("cannot start the xDS runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let client = match factory {
                    Some(f) => XdsClient::connect_with(&endpoint, f, client_config, applier),
                    None => XdsClient::connect(&endpoint, None, client_config, applier),
                };
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                tracing::info!(control_plane = %thread_state.control_plane.endpoint(), node = %thread_state.control_plane.node.id, "xDS client started");
                let mut status = client.status();
                loop {
                    tokio::select! {
                        () = stopped.cancelled() => break,
                        () = apply_tx.closed() => break,
                        changed = status.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            let s = status.borrow_and_update().clone();
                            thread_state.observe(s);
                        }
                    }
                }
                drop(client);
            });
        })
        .map_err(|e| format!("cannot start the xDS thread: {e}"))?;
    started_rx
        .await
        .map_err(|_| "the xDS thread ended before starting its client".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> ControlPlaneConfig {
        ControlPlaneConfig {
            address: "127.0.0.1:15010".into(),
            identity: None,
            node: NodeConfig {
                id: "n1".into(),
                namespace: "prod".into(),
                service_account: String::new(),
                labels: Default::default(),
            },
            tls: None,
            insecure_plaintext: true,
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            connect_timeout_ms: 1000,
        }
    }

    #[test]
    fn a_nack_is_recorded_once_with_its_error() {
        let state = XdsState::new(cp());
        let changes = state.changes();
        state.observe(ClientStatus {
            connected: true,
            ..Default::default()
        });
        assert!(state.last_nack().is_none());
        state.observe(ClientStatus {
            connected: true,
            nacks: 1,
            last_error: Some("Listener \"x\": bad".into()),
            ..Default::default()
        });
        assert!(changes.has_changed().unwrap());
        let nack = state.last_nack().unwrap();
        assert_eq!(nack.error, "Listener \"x\": bad");
        // A later successful apply clears the client's last_error; the dump keeps the NACK.
        state.observe(ClientStatus {
            connected: true,
            nacks: 1,
            ..Default::default()
        });
        assert_eq!(state.last_nack().unwrap(), nack);
        let dump = state.dump();
        assert_eq!(dump["last_nack"]["error"], "Listener \"x\": bad");
        assert_eq!(dump["nacks"], 1);
        assert_eq!(dump["ready"], false);
    }

    #[test]
    fn readiness_follows_the_first_apply() {
        let state = XdsState::new(cp());
        assert!(!state.is_ready());
        state.set_in_force(Arc::new(DynamicConfig::default()));
        assert!(state.is_ready());
        assert!(state.dump()["first_applied_after_ms"].is_u64());
    }

    #[test]
    fn the_control_plane_section_cannot_change_on_reload() {
        let (mut config, _) =
            crate::config::parse("f.yaml", "admin:\n  address: 127.0.0.1:0\n").unwrap();
        assert!(XdsState::check_unchanged(None, &config, "f.yaml").is_ok());
        let state = XdsState::new(cp());
        let err = XdsState::check_unchanged(Some(&state), &config, "f.yaml").unwrap_err();
        assert_eq!(err.path, "control_plane");
        config.control_plane = Some(cp());
        assert!(XdsState::check_unchanged(Some(&state), &config, "f.yaml").is_ok());
        assert!(XdsState::check_unchanged(None, &config, "f.yaml").is_err());
    }
}
