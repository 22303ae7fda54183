//! The running control plane: sources -> store -> translation -> xDS push, the CA issuance
//! service, and the health port, started together and stopped together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use jalin_ca::auth::{
    AnyOf, Authenticator, CertificateAuthenticator, JoinTokenAuthenticator, JoinTokenStore,
};
use jalin_ca::issue::{AuditLog, CaConfig, WorkloadCa};
use jalin_ca::server::server_identity;
use jalin_xds::transport::XdsServer;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::admit::Admission;
use super::health::{self, HealthState};
use super::listeners::{self, Issuer, SERVER_CERT_TTL};
use super::scope::ControlScope;
use super::source::{self, Update};
use super::store::{ConfigStore, StoreStatus};
use super::translate::{self, Settings, TrustBundle};
use super::webhook::{Webhook, WebhookConfig, WebhookError};
use crate::k8s::RegistrySettings;

/// Everything `jalin control` needs, already resolved from flags and the mesh config.
#[derive(Clone)]
pub struct ControlConfig {
    /// Directory of Istio YAML to watch.
    pub config_dir: Option<PathBuf>,
    /// Kubernetes client, when the Kubernetes source is on.
    pub kube_client: Option<kube::Client>,
    /// xDS listen address.
    pub xds_listen: SocketAddr,
    /// CA issuance service listen address (needs `ca`).
    pub ca_listen: Option<SocketAddr>,
    /// Health port.
    pub health_listen: SocketAddr,
    /// The CA; required unless `insecure_xds`.
    pub ca: Option<CaConfig>,
    /// Serve xDS without TLS (tests and demos only).
    pub insecure_xds: bool,
    /// Istio's root namespace.
    pub root_namespace: String,
    /// Kubernetes cluster DNS domain.
    pub cluster_domain: String,
    /// DNS names on the control plane's serving certificate.
    pub dns_names: Vec<String>,
    /// Join-token store for bare-metal bootstrap (none: join tokens are refused).
    pub join_tokens: Option<PathBuf>,
    /// The sidecar-injection webhook (needs `kube_client` and `ca`; none: not served).
    pub webhook: Option<WebhookConfig>,
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("config_dir", &self.config_dir)
            .field("kubernetes", &self.kube_client.is_some())
            .field("xds_listen", &self.xds_listen)
            .field("ca_listen", &self.ca_listen)
            .field("health_listen", &self.health_listen)
            .field("webhook", &self.webhook.as_ref().map(|w| w.listen))
            .field("insecure_xds", &self.insecure_xds)
            .field("root_namespace", &self.root_namespace)
            .finish_non_exhaustive()
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}; is another process using the port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Nothing to read configuration from.
    #[error("no configuration source: pass --config-dir DIR, --kubernetes, or both")]
    NoSource,
    /// xDS without TLS was not explicitly allowed and there is no CA.
    #[error(
        "xDS is served over mTLS with a certificate from the mesh CA: pass --ca-dir or --mesh-config with a `ca:` section (or --insecure-xds for tests and demos only)"
    )]
    NoCa,
    /// The CA did not load.
    #[error("the CA did not load: {0}")]
    Ca(#[from] jalin_ca::issue::CaLoadError),
    /// The serving certificate could not be issued.
    #[error("the control plane's serving certificate: {0}")]
    ServerCert(#[from] jalin_ca::server::ServeError),
    /// The directory source failed.
    #[error(transparent)]
    Files(#[from] source::files::FilesError),
    /// The Kubernetes source failed.
    #[error("Kubernetes source: {0}")]
    Kube(#[from] crate::k8s::SourceError),
    /// The webhook was asked for without what it needs.
    #[error(
        "the injection webhook needs {0}: it reads namespaces from the Kubernetes API and serves HTTPS with a certificate from the mesh CA"
    )]
    WebhookNeeds(&'static str),
    /// The webhook's serving certificate or TLS configuration failed.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// What the health port shows, shared with the store task.
#[derive(Debug, Default)]
struct Shared {
    ready: bool,
    store: StoreStatus,
    pushed_version: u64,
    resources: usize,
    translation_warnings: Vec<String>,
}

struct Health {
    shared: Arc<Mutex<Shared>>,
    xds: XdsServer,
}

impl HealthState for Health {
    fn ready(&self) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
    }

    fn debug_config(&self) -> serde_json::Value {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let proxies: serde_json::Map<String, serde_json::Value> = self
            .xds
            .statuses()
            .into_iter()
            .map(|(id, st)| {
                let types: serde_json::Map<String, serde_json::Value> = st
                    .types
                    .into_iter()
                    .map(|(t, ts)| {
                        (t, json!({"acked_version": ts.acked_version, "last_nack": ts.last_nack.map(|(v, e)| json!({"version": v, "error": e}))}))
                    })
                    .collect();
                (id, json!({"streams": st.streams, "types": types}))
            })
            .collect();
        json!({
            "ready": s.ready,
            "accepted_version": s.store.accepted_version,
            "accepted_at_unix": s.store.accepted_at_unix,
            "pushed_version": s.pushed_version,
            "resources_in_force": s.store.resources,
            "xds_resources": s.resources,
            "kubernetes_services": s.store.kubernetes_services,
            "rejected_total": s.store.rejected_total,
            "rejected": s.store.rejected,
            "warnings": s.store.warnings.iter().chain(s.translation_warnings.iter()).collect::<Vec<_>>(),
            "proxies": proxies,
        })
    }
}

/// How far the store task has got, for whoever needs to wait on it (tests, the demo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Updates handled (accepted or rejected).
    pub updates: u64,
    /// The store's accepted version.
    pub accepted_version: u64,
    /// Rejected updates so far.
    pub rejected_total: u64,
    /// The accepted version last pushed to the xDS server (0: none yet).
    pub pushed_version: u64,
}

/// A running control plane.
#[derive(Debug)]
pub struct Control {
    /// Where xDS is served.
    pub xds_addr: SocketAddr,
    /// Where the CA issuance service is served.
    pub ca_addr: Option<SocketAddr>,
    /// Where the health port is served.
    pub health_addr: SocketAddr,
    /// Where the injection webhook is served.
    pub webhook_addr: Option<SocketAddr>,
    /// The xDS server (for events and statuses).
    pub xds: XdsServer,
    /// The CA, when one is loaded.
    pub ca: Option<Arc<WorkloadCa>>,
    ready: watch::Receiver<bool>,
    progress: watch::Receiver<Progress>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ControlError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Bind { addr, what, source })
}

impl Control {
    /// Loads the CA, binds every listener, starts the sources and serves.
    pub async fn start(config: ControlConfig) -> Result<Control, ControlError> {
        if config.config_dir.is_none() && config.kube_client.is_none() {
            return Err(ControlError::NoSource);
        }
        let now = SystemTime::now();
        let ca = match &config.ca {
            Some(c) => Some(Arc::new(WorkloadCa::load(
                c,
                AuditLog::to_writer(std::io::stderr()),
                now,
            )?)),
            None => None,
        };
        if ca.is_none() && !config.insecure_xds {
            return Err(ControlError::NoCa);
        }
        let issuer = ca.as_ref().map(|ca| Issuer {
            ca: ca.clone(),
            dns_names: config.dns_names.clone(),
        });
        // Fail at start-up, not in the listener task, when the CA cannot issue for these names.
        if let Some(ca) = &ca {
            server_identity(ca, &config.dns_names, SERVER_CERT_TTL, now)?;
        }
        let trust = ca.as_ref().map(|ca| TrustBundle {
            trust_domain: ca.trust_domain().to_string(),
            roots_pem: ca.roots_pem(),
        });

        if config.webhook.is_some() {
            if config.kube_client.is_none() {
                return Err(ControlError::WebhookNeeds("--kubernetes"));
            }
            if ca.is_none() {
                return Err(ControlError::WebhookNeeds(
                    "the mesh CA (--ca-dir, or --mesh-config with a `ca:` section)",
                ));
            }
        }
        let xds_listener = bind(config.xds_listen, "xDS").await?;
        let health_listener = bind(config.health_listen, "health").await?;
        let ca_listener = match (config.ca_listen, &ca) {
            (Some(addr), Some(_)) => Some(bind(addr, "CA").await?),
            _ => None,
        };
        let xds_addr = local(&xds_listener, config.xds_listen);
        let health_addr = local(&health_listener, config.health_listen);
        let ca_addr = ca_listener.as_ref().map(|l| local(l, config.xds_listen));
        let webhook_listener = match &config.webhook {
            Some(w) => Some(bind(w.listen, "injection webhook").await?),
            None => None,
        };
        let webhook_addr = webhook_listener
            .as_ref()
            .zip(config.webhook.as_ref())
            .map(|(l, w)| local(l, w.listen));

        let scope = ControlScope::with_admission(Admission {
            trust_domain: ca.as_ref().map(|ca| ca.trust_domain().to_string()),
            trust_metadata_without_certificate: config.insecure_xds,
        });
        let xds = XdsServer::new(scope.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut tasks = Vec::new();

        // Sources.
        let (tx, rx) = mpsc::channel(source::UPDATE_QUEUE);
        let files = match &config.config_dir {
            Some(dir) => Some(source::files::watch(dir, tx.clone()).await?),
            None => None,
        };
        let registry_settings = RegistrySettings {
            cluster_domain: config.cluster_domain.clone(),
        };
        let kube = match &config.kube_client {
            Some(client) => Some(
                source::kubernetes::start(client.clone(), registry_settings, tx.clone()).await?,
            ),
            None => None,
        };
        drop(tx);

        // The injection webhook: its certificate is issued before the listener accepts.
        if let (Some(listener), Some(w), Some(ca), Some(kube)) =
            (webhook_listener, &config.webhook, &ca, &kube)
        {
            let webhook = Webhook::new(ca.clone(), config.dns_names.clone()).await?;
            tasks.push(tokio::spawn(webhook.serve(
                listener,
                kube.reader(),
                w.injection.clone(),
                shutdown_rx.clone(),
            )));
        }
        let settings = Settings {
            root_namespace: config.root_namespace.clone(),
            cluster_domain: config.cluster_domain.clone(),
        };
        let pipeline = Pipeline {
            store: ConfigStore::new(),
            settings,
            trust,
            scope,
            xds: xds.clone(),
            shared: shared.clone(),
            ready: ready_tx,
            progress: progress_tx,
            updates: 0,
            need_files: config.config_dir.is_some(),
            need_kube: config.kube_client.is_some(),
        };
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // The sources live as long as the pipeline task.
            let _sources = (files, kube);
            tokio::select! {
                () = pipeline.run(rx) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }));

        // xDS.
        let xds_issuer = if config.insecure_xds {
            None
        } else {
            issuer.clone()
        };
        tasks.push(tokio::spawn(listeners::serve_xds(
            xds.clone(),
            xds_listener,
            xds_issuer,
            shutdown_rx.clone(),
        )));

        // CA.
        if let (Some(listener), Some(issuer)) = (ca_listener, issuer) {
            tasks.push(tokio::spawn(listeners::serve_ca(
                issuer,
                authenticators(&config),
                xds.clone(),
                listener,
                shutdown_rx.clone(),
            )));
        }

        // xDS metrics from the server's event feed.
        tasks.push(tokio::spawn(xds_metrics(xds.clone(), shutdown_rx.clone())));

        // Health.
        let _ = health::prometheus();
        let state: Arc<dyn HealthState> = Arc::new(Health {
            shared,
            xds: xds.clone(),
        });
        tasks.push(tokio::spawn(health::serve(
            health_listener,
            state,
            shutdown_rx,
        )));

        tracing::info!(%xds_addr, ?ca_addr, %health_addr, ?webhook_addr, insecure_xds = config.insecure_xds, "control plane started");
        Ok(Control {
            xds_addr,
            ca_addr,
            health_addr,
            webhook_addr,
            xds,
            ca,
            ready,
            progress,
            shutdown,
            tasks,
        })
    }

    /// Waits until the first complete configuration has been pushed.
    pub async fn ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|r| *r).await;
    }

    /// The store task's progress; wait on it with `wait_for`.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops every server (streams end with `UNAVAILABLE`, so proxies reconnect elsewhere) and
    /// waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Counts pushes, ACKs and NACKs by type and tracks connected streams:
/// `jalin_control_xds_pushes_total{type}`, `jalin_control_xds_acks_total{type}`,
/// `jalin_control_xds_nacks_total{type}`, `jalin_control_xds_streams`.
async fn xds_metrics(xds: XdsServer, mut stop: watch::Receiver<bool>) {
    use jalin_xds::transport::StreamEvent;
    use jalin_xds::transport::server::ServerEvent;
    use tokio::sync::broadcast::error::RecvError;
    fn short(type_url: &str) -> String {
        type_url.rsplit('.').next().unwrap_or(type_url).to_owned()
    }
    let mut events = xds.events();
    let streams = metrics::gauge!("jalin_control_xds_streams");
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ev {
            Ok(ServerEvent::Connected { .. }) => streams.increment(1.0),
            Ok(ServerEvent::Disconnected { .. }) => streams.decrement(1.0),
            Ok(ServerEvent::Pushed { type_url, .. }) => {
                metrics::counter!("jalin_control_xds_pushes_total", "type" => short(&type_url))
                    .increment(1);
            }
            Ok(ServerEvent::Stream {
                event: StreamEvent::Ack { type_url, .. },
                ..
            }) => {
                metrics::counter!("jalin_control_xds_acks_total", "type" => short(&type_url))
                    .increment(1);
            }
            Ok(ServerEvent::Stream {
                event: StreamEvent::Nack { type_url, .. },
                ..
            }) => {
                metrics::counter!("jalin_control_xds_nacks_total", "type" => short(&type_url))
                    .increment(1);
            }
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("jalin_control_xds_events_dropped_total").increment(n);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

fn authenticators(config: &ControlConfig) -> Arc<dyn Authenticator> {
    let mut list: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let Some(path) = &config.join_tokens {
        list.push(Arc::new(JoinTokenAuthenticator::new(Arc::new(
            JoinTokenStore::at_path(path),
        ))));
    }
    if let Some(client) = &config.kube_client {
        list.push(Arc::new(super::token_review::authenticator(
            client.clone(),
            config
                .ca
                .as_ref()
                .map(|c| c.trust_domain.as_str())
                .unwrap_or_default(),
        )));
    }
    // Renewal: a proxy presenting its current certificate gets its own identity again.
    list.push(Arc::new(CertificateAuthenticator));
    Arc::new(AnyOf(list))
}

/// The store task: applies updates, translates, pushes.
struct Pipeline {
    store: ConfigStore,
    settings: Settings,
    trust: Option<TrustBundle>,
    scope: ControlScope,
    xds: XdsServer,
    shared: Arc<Mutex<Shared>>,
    ready: watch::Sender<bool>,
    progress: watch::Sender<Progress>,
    updates: u64,
    need_files: bool,
    need_kube: bool,
}

impl Pipeline {
    async fn run(mut self, mut rx: mpsc::Receiver<Update>) {
        let mut pushed: Option<u64> = None;
        while let Some(first) = rx.recv().await {
            self.apply(first);
            // Coalesce a burst into one translation.
            while let Ok(more) = rx.try_recv() {
                self.apply(more);
            }
            let complete = !self.need_files && !self.need_kube;
            if complete && pushed != Some(self.store.version()) {
                self.push();
                pushed = Some(self.store.version());
            }
            self.publish(pushed);
        }
    }

    fn apply(&mut self, update: Update) {
        self.updates += 1;
        match update {
            Update::Files { origin, loaded } => {
                self.need_files = false;
                let _ = self.store.apply_files(&origin, loaded);
            }
            Update::KubeUpsert(key, obj) => {
                let _ = self.store.upsert_istio(key, &obj);
            }
            Update::KubeDelete(key) => {
                self.store.delete_istio(&key);
            }
            Update::Registry(r) => self.store.set_registry(*r),
            Update::KubeReady => self.need_kube = false,
        }
    }

    fn push(&mut self) {
        let native = self.store.native();
        match translate::translate(
            &native,
            self.store.registry(),
            self.trust.as_ref(),
            &self.settings,
        ) {
            Ok(t) => {
                let resources = t.snapshot.len();
                self.scope.set(t.index);
                self.xds.push(t.snapshot);
                let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                s.resources = resources;
                s.translation_warnings = t.warnings;
                s.ready = true;
                tracing::info!(
                    version = self.store.version(),
                    resources,
                    "configuration pushed"
                );
            }
            Err(e) => {
                // A body that does not serialise is a bug in the model, not in the user's input;
                // the last pushed snapshot stays in force.
                tracing::error!(
                    "translation failed, the last pushed configuration stays in force: {e}"
                );
            }
        }
        self.ready.send_replace(true);
    }

    fn publish(&self, pushed: Option<u64>) {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.store = self.store.status();
        s.ready = pushed.is_some();
        s.pushed_version = pushed.unwrap_or_default();
        drop(s);
        self.progress.send_replace(Progress {
            updates: self.updates,
            accepted_version: self.store.version(),
            rejected_total: self.store.status().rejected_total,
            pushed_version: pushed.unwrap_or_default(),
        });
    }
}
