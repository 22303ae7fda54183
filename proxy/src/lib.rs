//! jalin-proxy: the data plane, a sidecar and gateway proxy.
//!
//! A connection's way: [`listener`] (accept; original destination or explicit service) ->
//! [`detect`] (HTTP/1.1, HTTP/2, opaque) -> [`http::server`] or [`tcp`]. An HTTP request's way:
//! [`http::forward`] (destination, or at a [`gateway`] the route table serving the authority;
//! header rules from [`inbound`] / [`outbound`], endpoint choice)
//! -> [`endpoint`] (pooled upstream connection) -> response, metered by [`telemetry`]. The live
//! configuration is a [`snapshot::Snapshot`] read per request from an `ArcSwap`; [`config`] loads
//! and validates it, and [`Proxy`] reloads it without dropping a request.

pub mod accesslog;
pub mod admin;
pub mod admission;
pub mod authz;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod detect;
pub mod endpoint;
pub mod gateway;
pub mod h3;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod limits;
pub mod listener;
pub mod outbound;
pub mod outlier;
pub mod retry;
pub mod route;
pub mod snapshot;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod xds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ConfigError, ConfigSource, ProxyConfig};

use crate::listener::ListenerSet;
use crate::snapshot::Snapshot;

/// How often the Prometheus recorder's histograms are compacted.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force; read once per request or connection.
    pub snapshot: ArcSwap<Snapshot>,
    /// Cancelled when the proxy starts draining: listeners stop accepting, HTTP connections
    /// finish their requests and close.
    pub drain: CancellationToken,
    /// Cancelled when draining is over; the admin server stops.
    pub stopped: CancellationToken,
    /// Every connection task, so draining can wait for them.
    pub tasks: TaskTracker,
    pub metrics: PrometheusHandle,
    /// One permit per open downstream connection ([`limits::MAX_DOWNSTREAM_CONNECTIONS`]).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Set in xDS mode: the client's state (versions in force, connection, last NACK).
    pub xds: Option<Arc<xds::XdsState>>,
    /// The workload identity (certificate, mTLS configs), when the file has an `identity`.
    pub identity: Option<Arc<identity::ProxyIdentity>>,
    /// Authorization and peer authentication, compiled for this workload; swapped on reload.
    pub security: ArcSwap<authz::Security>,
    ready: AtomicBool,
}

impl Shared {
    /// Ready: listeners are bound, the proxy is not draining, and in xDS mode the first
    /// configuration from the control plane is in force. (Identity hook: also require the first
    /// workload certificate here once the identity manager is wired in.)
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && !self.drain.is_cancelled()
            && self.xds.as_ref().is_none_or(|x| x.is_ready())
            && self.identity.as_ref().is_none_or(|i| i.is_ready())
    }
}

/// The outcome of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    /// Counts attempts from 1.
    pub attempt: u64,
    /// The new version, or why the file was rejected (the old config stays in force).
    pub result: Result<u64, ConfigError>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind the admin server on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch the configuration file: {0}")]
    Watch(#[from] notify::Error),
    #[error("control_plane: {0}")]
    Xds(String),
}

/// Parts an embedder hands to [`Proxy::start_with`].
#[derive(Default)]
pub struct StartOptions {
    /// The certificate source for `identity.certificate: external` (for example a `DevCa`).
    pub certificate_source: Option<Arc<dyn jalin_ca::identity::CertificateSource>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("certificate_source", &self.certificate_source.is_some())
            .finish()
    }
}

/// Starts proxies.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Loads the configuration, binds the admin server and every listener, and starts serving.
    /// A file source is reloaded on SIGHUP and on change. Must run inside a tokio runtime.
    pub async fn start(source: ConfigSource) -> Result<ProxyHandle, StartError> {
        Self::start_with(source, StartOptions::default()).await
    }

    /// [`Proxy::start`] with embedder-provided parts (a certificate source for
    /// `identity.certificate: external`).
    pub async fn start_with(
        source: ConfigSource,
        options: StartOptions,
    ) -> Result<ProxyHandle, StartError> {
        let (config, origin) = source.load()?;
        let identity = match &config.identity {
            Some(section) => Some(Arc::new(identity::ProxyIdentity::start(
                section,
                &origin.file,
                options.certificate_source,
            )?)),
            None => None,
        };
        let security = authz::Security::build(&config, &origin.file).await?;
        let admin_socket = tokio::net::TcpListener::bind(config.admin.address)
            .await
            .map_err(|source| StartError::Admin {
                addr: config.admin.address,
                source,
            })?;
        let admin_addr = admin_socket
            .local_addr()
            .map_err(|source| StartError::Admin {
                addr: config.admin.address,
                source,
            })?;
        let metrics = telemetry::metrics_handle();
        let mut listeners = ListenerSet::default();
        // xDS mode: no listener is bound before the first configuration from the control plane
        // (its AuthorizationPolicies included) is in force: never serve fail-open at start.
        let serving: &[_] = if config.control_plane.is_some() {
            &[]
        } else {
            &config.listeners
        };
        let prepared = listeners.prepare(serving, &origin.file).await?;
        let xds_state = config
            .control_plane
            .clone()
            .map(|cp| Arc::new(xds::XdsState::new(cp)));
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::build_with(
                1,
                config,
                origin,
                None,
                identity.as_ref().map(|i| &*i.outbound),
            )),
            identity,
            security: ArcSwap::from_pointee(security),
            drain: CancellationToken::new(),
            stopped: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics,
            connections: Arc::new(tokio::sync::Semaphore::new(
                limits::MAX_DOWNSTREAM_CONNECTIONS,
            )),
            xds: xds_state.clone(),
            ready: AtomicBool::new(false),
        });
        let bound = listeners.commit(prepared, &shared);
        shared.ready.store(true, Ordering::Relaxed);
        tokio::spawn(admin::serve(admin_socket, shared.clone()));
        let upkeep = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tokio::select! {
                    () = upkeep.stopped.cancelled() => break,
                    _ = tick.tick() => upkeep.metrics.run_upkeep(),
                }
            }
        });
        // SIGUSR1 reopens the access-log files after logrotate moved them, as with Envoy.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                let stopped = shared.stopped.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stopped.cancelled() => break,
                            Some(()) = usr1.recv() => {
                                tracing::info!("SIGUSR1: reopening the access-log files");
                                accesslog::writer::reopen();
                            }
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGUSR1; access-log files are not reopened on rotation");
            }
        }

        let (events, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            source: source.clone(),
            listeners: Mutex::new(listeners),
            bound: ArcSwap::from_pointee(bound),
            events,
            attempts: std::sync::atomic::AtomicU64::new(0),
        });
        if let ConfigSource::File(path) = &source {
            // Listeners' certificate files: replacing them reloads as SIGHUP does; after each
            // reload the files the configuration then names are watched.
            let cert_files = |shared: &Shared| -> Vec<std::path::PathBuf> {
                shared
                    .snapshot
                    .load()
                    .config
                    .listeners
                    .iter()
                    .filter_map(|l| l.tls.as_ref())
                    .flat_map(|t| t.files())
                    .map(std::path::PathBuf::from)
                    .collect()
            };
            let (mut triggers, rewatch) =
                config::watch::spawn(path, &cert_files(&shared), shared.drain.clone())?;
            let reloader = inner.clone();
            tokio::spawn(async move {
                while triggers.recv().await.is_some() {
                    if reloader.reload().await.is_ok()
                        && let Err(e) = rewatch.set(&cert_files(&reloader.shared))
                    {
                        tracing::warn!(error = %e, "cannot watch the configuration's files; reload with SIGHUP");
                    }
                }
            });
        }
        tokio::spawn(inner.clone().refresh_jwks());
        if let Some(state) = xds_state {
            xds::start(inner.clone(), state)
                .await
                .map_err(StartError::Xds)?;
        }
        tracing::info!(admin = %admin_addr, "jalin-proxy started");
        Ok(ProxyHandle { inner, admin_addr })
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    source: ConfigSource,
    listeners: Mutex<ListenerSet>,
    bound: ArcSwap<HashMap<String, SocketAddr>>,
    events: watch::Sender<Option<ReloadEvent>>,
    attempts: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// Fetches the remote JWKS documents again every refresh interval (sooner after a failed
    /// fetch) and puts changed keys in force, so an identity provider's key rotation needs no
    /// reload. Serialized with reloads; a round that raced a reload is dropped, as the reload
    /// fetched the documents anew. A failed fetch keeps the last good document.
    async fn refresh_jwks(self: Arc<Self>) {
        let mut failed = false;
        loop {
            let interval =
                authz::Security::jwks_refresh_interval(&self.shared.snapshot.load().config);
            let delay = if failed {
                interval.min(authz::JWKS_RETRY_AFTER)
            } else {
                interval
            };
            tokio::select! {
                () = self.shared.stopped.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let snapshot = self.shared.snapshot.load_full();
            let security = self.shared.security.load_full();
            let (file, config) = (&snapshot.origin.file, &snapshot.config);
            let round = match security.refresh_jwks(config, file).await {
                None => {
                    failed = false;
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; the last good keys stay");
                    metrics::counter!(authz::JWKS_REFRESHES, "outcome" => "failed").increment(1);
                    failed = true;
                    continue;
                }
                Some(Ok(round)) => round,
            };
            failed = round.failed > 0;
            metrics::counter!(authz::JWKS_REFRESHES, "outcome" => round.outcome()).increment(1);
            if !round.changed {
                continue;
            }
            let _reloads = self.listeners.lock().await;
            if self.shared.snapshot.load().version != snapshot.version {
                continue;
            }
            match authz::Security::build_with_jwks(config, file, round.documents) {
                Ok(next) => {
                    self.shared.security.store(Arc::new(next));
                    tracing::info!("JWKS refreshed: the identity provider's new keys are in force");
                }
                Err(e) => {
                    tracing::error!(error = %e, "refreshed JWKS rejected; the last good keys stay");
                }
            }
        }
    }

    /// Loads the source again; applies it whole or not at all.
    async fn reload(&self) -> Result<u64, ConfigError> {
        self.reload_with(None).await
    }

    /// Loads the source again, merged in xDS mode with `update` (or, for a file reload, with the
    /// dynamic part in force); applies it whole or not at all.
    async fn reload_with(
        &self,
        update: Option<Arc<xds::DynamicConfig>>,
    ) -> Result<u64, ConfigError> {
        let mut listeners = self.listeners.lock().await;
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let xds = self.shared.xds.as_deref();
        let dynamic = update.or_else(|| xds.and_then(xds::XdsState::in_force));
        let result = self.try_reload(&mut listeners, dynamic.clone()).await;
        match &result {
            Ok(v) => {
                metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "accepted").increment(1);
                tracing::info!(version = v, "configuration reloaded");
            }
            Err(e) => {
                metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "rejected").increment(1);
                tracing::error!(error = %e, "configuration rejected; the previous one stays in force");
            }
        }
        self.events.send_replace(Some(ReloadEvent {
            attempt,
            result: result.clone(),
        }));
        // Last, so whoever sees the new versions also finds the new snapshot, listeners and
        // reload event.
        if let (Ok(_), Some(x), Some(d)) = (&result, xds, dynamic) {
            x.set_in_force(d);
        }
        result
    }

    async fn try_reload(
        &self,
        listeners: &mut ListenerSet,
        dynamic: Option<Arc<xds::DynamicConfig>>,
    ) -> Result<u64, ConfigError> {
        let (mut config, mut origin) = self.source.load()?;
        xds::XdsState::check_unchanged(self.shared.xds.as_deref(), &config, &origin.file)?;
        if let Some(d) = &dynamic {
            (config, origin) = xds::convert::merge(config, &origin, d)?;
        }
        let current = self.shared.snapshot.load_full();
        // Unchanged text is a no-op, unless listeners terminate TLS with their own certificate
        // files: a reload (SIGHUP) is how rotated files are read again.
        let own_tls = config.listeners.iter().any(|l| l.tls.is_some());
        if origin.sha256 == current.origin.sha256 && !own_tls {
            return Ok(current.version);
        }
        if config.admin.address != current.config.admin.address {
            return Err(ConfigError::field(
                &origin.file,
                "admin.address",
                format!(
                    "changed from {} to {}; the admin server cannot move while running",
                    current.config.admin.address, config.admin.address
                ),
                "restore the old address, or restart the proxy to move the admin server",
            ));
        }
        if config.identity != current.config.identity {
            return Err(ConfigError::field(
                &origin.file,
                "identity",
                "changed; the workload identity cannot change while running",
                "restore the old section, or restart the proxy",
            ));
        }
        let security = authz::Security::build(&config, &origin.file).await?;
        // xDS mode before the first configuration: still nothing bound (see `start`).
        let serving: &[_] = if self.shared.xds.is_some() && dynamic.is_none() {
            &[]
        } else {
            &config.listeners
        };
        let prepared = listeners.prepare(serving, &origin.file).await?;
        let version = current.version + 1;
        let outbound = self.shared.identity.as_ref().map(|i| &*i.outbound);
        let next = Snapshot::build_with(version, config, origin, Some(&current), outbound);
        self.shared.security.store(Arc::new(security));
        self.shared.snapshot.store(Arc::new(next));
        let bound = listeners.commit(prepared, &self.shared);
        self.bound.store(Arc::new(bound));
        Ok(version)
    }
}

/// A running proxy.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
    admin_addr: SocketAddr,
}

impl ProxyHandle {
    /// The admin server's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner.bound.load().get(name).copied()
    }

    /// The workload identity, when configured (certificate notifications: `manager().subscribe()`).
    pub fn identity(&self) -> Option<&Arc<identity::ProxyIdentity>> {
        self.inner.shared.identity.as_ref()
    }

    /// The version of the configuration in force (1 at start, +1 per accepted reload).
    pub fn config_version(&self) -> u64 {
        self.inner.shared.snapshot.load().version
    }

    /// The xDS client's state in xDS mode (versions in force, connection, last NACK).
    pub fn xds(&self) -> Option<Arc<xds::XdsState>> {
        self.inner.shared.xds.clone()
    }

    /// Reloads the configuration now (as SIGHUP does).
    pub async fn reload(&self) -> Result<u64, ConfigError> {
        self.inner.reload().await
    }

    /// Every reload attempt's outcome, including those the file watcher and SIGHUP start.
    pub fn reload_events(&self) -> watch::Receiver<Option<ReloadEvent>> {
        self.inner.events.subscribe()
    }

    /// Drains: stop accepting, let in-flight requests and connections finish, and give up on
    /// those still open after `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        let shared = &self.inner.shared;
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "draining");
        shared.drain.cancel();
        shared.tasks.close();
        if tokio::time::timeout(deadline, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = shared.tasks.len(),
                "drain deadline passed; closing the rest"
            );
        }
        shared.stopped.cancel();
    }

    /// Serves until SIGTERM or SIGINT, then drains with `deadline`.
    pub async fn run_until_signal(&self, deadline: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        self.shutdown(deadline).await;
        Ok(())
    }
}

/// The longest `--drain-duration` accepted, shared with the injector that renders the flag.
pub use jalin_xds::model::drain::MAX_DRAIN as MAX_DRAIN_DURATION;

/// Parses `--drain-duration`: whole seconds or minutes (`25s`, `2m`; a bare number is seconds),
/// at least 1 s (a zero drain cuts every in-flight request) and at most
/// [`MAX_DRAIN_DURATION`]. The error says what was expected.
pub fn parse_drain_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration from 1s to 10m such as `25s`";
    let d = jalin_ca::cli::files::parse_duration(s).map_err(|e| format!("{e}; {EXPECTED}"))?;
    if d.is_zero() {
        return Err(format!(
            "`{}` would cut every in-flight request; {EXPECTED}",
            s.trim()
        ));
    }
    if d > MAX_DRAIN_DURATION {
        return Err(format!("`{}` is too long; {EXPECTED}", s.trim()));
    }
    Ok(d)
}

#[cfg(test)]
mod drain_duration_tests {
    use super::*;

    #[test]
    fn drain_durations_are_bounded_and_say_what_is_expected() {
        assert_eq!(parse_drain_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_drain_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_drain_duration("10m"), Ok(MAX_DRAIN_DURATION));
        for bad in ["0s", "0", "11m", "1h", "abc", "-1s", "1.5s", ""] {
            let e = parse_drain_duration(bad).unwrap_err();
            assert!(
                e.contains("expected a duration from 1s to 10m"),
                "{bad}: {e}"
            );
        }
        assert!(
            parse_drain_duration("0s")
                .unwrap_err()
                .contains("cut every in-flight")
        );
        assert!(parse_drain_duration("1h").unwrap_err().contains("too long"));
    }
}
