//! The proxy's workload identity manager: makes a P-256 key in process, sends a CSR with the
//! SPIFFE URI SAN to a [`CertificateSource`], checks what comes back, installs it into the
//! live rustls resolvers, and renews at half life with jitter.
//!
//! Invariants:
//! - the private key is generated here, handed only to rustls, and never serialised to a log,
//!   a file or the network;
//! - a certificate is installed only after it verifies against the trust bundle for both
//!   clientAuth and serverAuth, names exactly our SPIFFE ID and matches our key;
//! - established connections keep the certificate they were made with; the next handshake
//!   gets the new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::client::ResolvesClientCert;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::schedule::RenewalPolicy;
use super::source::{CertificateSource, SourceError};
use super::store::CertStore;
use crate::spiffe::SpiffeId;
use crate::tls::inbound::fingerprint_sha256;
use crate::tls::trust::{TrustBundleError, TrustStore};
use crate::tls::verify::{PeerRole, not_after, not_before, verify_peer};

/// Name of the certificate-expiry gauge (days until notAfter).
pub const CERT_EXPIRY_METRIC: &str = "jalin_cert_expiry_days";
/// Name of the renewal-failure counter.
pub const RENEWAL_FAILURES_METRIC: &str = "jalin_identity_renewal_failures_total";

/// Configuration of the identity manager.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The SPIFFE ID this proxy requests (from its service account).
    pub spiffe_id: SpiffeId,
    /// When to renew.
    pub renewal: RenewalPolicy,
    /// First retry delay after a failed issuance; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often the expiry gauge is refreshed while waiting to renew.
    pub metric_refresh: Duration,
}

impl IdentityConfig {
    /// 1 s: a CA restart is usually over in seconds.
    pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
    /// 30 s: keeps a fleet from hammering a recovering CA, well inside a 24 h lifetime.
    pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
    /// 60 s: the gauge is in days; a minute is ample resolution for alerts.
    pub const DEFAULT_METRIC_REFRESH: Duration = Duration::from_secs(60);

    /// Defaults for `spiffe_id`.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        Self {
            spiffe_id,
            renewal: RenewalPolicy::DEFAULT,
            retry_min: Self::DEFAULT_RETRY_MIN,
            retry_max: Self::DEFAULT_RETRY_MAX,
            metric_refresh: Self::DEFAULT_METRIC_REFRESH,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), IdentityError> {
        self.renewal.validate().map_err(IdentityError::Config)?;
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(IdentityError::Config(format!(
                "retry delays must satisfy 0 < retry_min ({:?}) <= retry_max ({:?})",
                self.retry_min, self.retry_max
            )));
        }
        if self.metric_refresh.is_zero() {
            return Err(IdentityError::Config(
                "metric_refresh must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Why an issuance round failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The configuration is invalid.
    #[error("identity configuration: {0}")]
    Config(String),
    /// Key or CSR generation failed.
    #[error("could not generate the workload key or CSR: {0}")]
    KeyGen(String),
    /// The CA did not sign.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The CA returned something we must not install.
    #[error("CA returned an unusable certificate: {0}")]
    BadIssuedCertificate(String),
    /// The CA's root bundle is unusable.
    #[error("CA returned an unusable root bundle: {0}")]
    BadRoots(#[from] TrustBundleError),
}

/// What is known about the installed workload certificate (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// 1 for the first certificate, +1 per rotation.
    pub generation: u64,
    /// The certificate's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

/// The workload identity manager. Cheap to clone; clones share the certificate.
#[derive(Clone)]
pub struct WorkloadIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    config: IdentityConfig,
    source: Arc<dyn CertificateSource>,
    trust: TrustStore,
    store: Arc<CertStore>,
    generation: AtomicU64,
    tx: watch::Sender<Option<Arc<CertInfo>>>,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &self.inner.config.spiffe_id.to_string())
            .field("current", &*self.inner.tx.borrow())
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    /// A manager for `config`, issuing through `source`, verifying against `trust`.
    pub fn new(
        config: IdentityConfig,
        source: Arc<dyn CertificateSource>,
        trust: TrustStore,
    ) -> Result<Self, IdentityError> {
        config.validate()?;
        let (tx, _) = watch::channel(None);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                source,
                trust,
                store: Arc::new(CertStore::new()),
                generation: AtomicU64::new(0),
                tx,
            }),
        })
    }

    /// The resolver to give inbound server configs.
    pub fn server_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.inner.store.clone()
    }

    /// The resolver to give outbound client configs.
    pub fn client_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        self.inner.store.clone()
    }

    /// The trust store the manager verifies against (update it to rotate roots).
    pub fn trust(&self) -> TrustStore {
        self.inner.trust.clone()
    }

    /// The installed certificate, if any.
    pub fn current(&self) -> Option<Arc<CertInfo>> {
        self.inner.tx.borrow().clone()
    }

    /// Notifications: the value changes on every installation (first issuance and rotations).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CertInfo>>> {
        self.inner.tx.subscribe()
    }

    /// Resolves once the first certificate is installed (readiness waits on this).
    pub async fn ready(&self) -> Arc<CertInfo> {
        let mut rx = self.subscribe();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            // The sender lives in `self.inner`, which `self` keeps alive: `changed` cannot fail
            // while we wait, but never spin if it somehow did.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// One issuance round: new key, CSR, sign, check, install. Returns the installed info.
    pub async fn rotate_now(&self) -> Result<Arc<CertInfo>, IdentityError> {
        let inner = &self.inner;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdentityError::KeyGen(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = inner
            .config
            .spiffe_id
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| IdentityError::KeyGen(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&key)
            .map_err(|e| IdentityError::KeyGen(e.to_string()))?;
        let issued = inner.source.sign(csr.der().clone()).await?;

        let bundle = if issued.roots.is_empty() {
            None
        } else {
            Some(inner.trust.load().with_roots(issued.roots.clone())?)
        };
        let info = self.check_issued(&issued.chain, bundle.as_ref())?;
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified = CertifiedKey::from_der(
            issued.chain.clone(),
            pkcs8,
            &rustls::crypto::aws_lc_rs::default_provider(),
        )
        .map_err(|e| IdentityError::BadIssuedCertificate(format!("does not match our key: {e}")))?;

        if let Some(bundle) = bundle {
            inner.trust.update(bundle);
        }
        inner.store.install(Arc::new(certified));
        let info = Arc::new(CertInfo {
            generation: inner.generation.fetch_add(1, Ordering::Relaxed) + 1,
            ..info
        });
        record_expiry(&info, SystemTime::now());
        tracing::info!(
            spiffe_id = %info.spiffe_id,
            serial = %info.serial_hex,
            generation = info.generation,
            not_after = ?info.not_after,
            "workload certificate installed"
        );
        inner.tx.send_replace(Some(info.clone()));
        Ok(info)
    }

    /// Checks an issued chain before it is installed; `bundle` overrides the store's bundle.
    fn check_issued(
        &self,
        chain: &[CertificateDer<'static>],
        bundle: Option<&crate::tls::trust::TrustBundle>,
    ) -> Result<CertInfo, IdentityError> {
        let bad = IdentityError::BadIssuedCertificate;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| bad("empty chain".to_owned()))?;
        let current = self.inner.trust.load();
        let bundle = bundle.unwrap_or(&current);
        let algorithms =
            rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        let expected = std::slice::from_ref(&self.inner.config.spiffe_id);
        let now = UnixTime::now();
        for role in [PeerRole::Client, PeerRole::Server] {
            verify_peer(
                bundle,
                &algorithms,
                leaf,
                intermediates,
                now,
                role,
                expected,
            )
            .map_err(|r| bad(format!("{role:?} use refused: {r}")))?;
        }
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| bad(e.to_string()))?;
        Ok(CertInfo {
            generation: 0,
            spiffe_id: self.inner.config.spiffe_id.clone(),
            serial_hex: hex::encode(cert.raw_serial()),
            fingerprint_sha256: fingerprint_sha256(leaf),
            not_before: not_before(&cert),
            not_after: not_after(&cert),
        })
    }

    /// Runs forever: issue, wait until the renewal time (refreshing the expiry gauge), renew;
    /// on failure retry with exponential backoff, keeping the old certificate in force.
    pub async fn run(self) {
        let cfg = &self.inner.config;
        let mut backoff = cfg.retry_min;
        loop {
            let wait = match self.rotate_now().await {
                Ok(info) => {
                    backoff = cfg.retry_min;
                    let sample = rand::random_range(-1.0..=1.0);
                    // The lifetime counts from receipt: a CA backdates notBefore for clock
                    // skew (a minute), which would otherwise make a certificate of seconds
                    // look half-spent on arrival.
                    let now = SystemTime::now();
                    cfg.renewal
                        .delay(info.not_before.max(now), info.not_after, now, sample)
                }
                Err(err) => {
                    metrics::counter!(RENEWAL_FAILURES_METRIC, "cert" => "workload").increment(1);
                    tracing::warn!(
                        spiffe_id = %cfg.spiffe_id,
                        error = %err,
                        retry_in = ?backoff,
                        "workload certificate issuance failed; the current certificate stays in force"
                    );
                    let wait = backoff;
                    backoff = (backoff * 2).min(cfg.retry_max);
                    wait
                }
            };
            self.wait_refreshing_gauge(wait).await;
        }
    }

    /// Spawns [`WorkloadIdentity::run`] on the current tokio runtime.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    async fn wait_refreshing_gauge(&self, total: Duration) {
        let deadline = tokio::time::Instant::now() + total;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep((deadline - now).min(self.inner.config.metric_refresh)).await;
            if let Some(info) = self.current() {
                record_expiry(&info, SystemTime::now());
            }
        }
    }
}

fn record_expiry(info: &CertInfo, now: SystemTime) {
    let days = match info.not_after.duration_since(now) {
        Ok(left) => left.as_secs_f64() / 86_400.0,
        Err(past) => -past.duration().as_secs_f64() / 86_400.0,
    };
    metrics::gauge!(CERT_EXPIRY_METRIC, "cert" => "workload").set(days);
}
