//! The sidecar-injection webhook served by `jalin control --kubernetes`: HTTPS on
//! `--webhook-listen` (Istio's 15017) with a serving certificate the control plane's own CA
//! issues for the control plane's DNS names (so the MutatingWebhookConfiguration's `caBundle` is
//! the mesh root) and renews itself at half life, answering from the Kubernetes source's store.

use std::net::SocketAddr;
use std::sync::Arc;

use jalin_ca::issue::WorkloadCa;
use jalin_ca::server::self_tls::ca_server_identity;
use jalin_ca::tls::TlsPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::listeners::SERVER_CERT_TTL;
use crate::k8s::StoreReader;
use crate::k8s::inject::InjectSettings;
use crate::k8s::webhook_server::{self, WebhookState};

/// Istio's webhook port (istiod serves injection on 15017).
pub const DEFAULT_WEBHOOK_PORT: u16 = 15017;
/// Time the first serving certificate may take (an HSM-held CA key signs slower than a file).
pub const FIRST_CERT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// How pods are injected (the mesh config's `injection:` section).
    pub injection: InjectSettings,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The serving identity could not be set up.
    #[error("the injection webhook's serving certificate for {names:?}: {reason}")]
    Identity {
        /// The DNS names asked for.
        names: Vec<String>,
        /// Why.
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error("the injection webhook's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A webhook listener ready to serve: its certificate is issued before `start` returns, so the
/// API server never meets a listener without one.
pub struct Webhook {
    /// Renews the certificate the resolver in `tls` serves (the task holds the identity).
    renewal: tokio::task::JoinHandle<()>,
    tls: Arc<rustls::ServerConfig>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl Webhook {
    /// Issues the first serving certificate for `dns_names` and starts its renewal, which lasts
    /// as long as the webhook.
    pub async fn new(ca: Arc<WorkloadCa>, dns_names: Vec<String>) -> Result<Webhook, WebhookError> {
        let identity = ca_server_identity(ca, dns_names.clone(), SERVER_CERT_TTL).map_err(|e| {
            WebhookError::Identity {
                names: dns_names.clone(),
                reason: e.to_string(),
            }
        })?;
        let renewal = identity.spawn();
        if tokio::time::timeout(FIRST_CERT_TIMEOUT, identity.ready())
            .await
            .is_err()
        {
            renewal.abort();
            return Err(WebhookError::Identity {
                names: dns_names,
                reason: format!(
                    "not issued within {}s; see the CA audit log for the refusal",
                    FIRST_CERT_TIMEOUT.as_secs()
                ),
            });
        }
        let policy = TlsPolicy::DEFAULT;
        let mut tls = rustls::ServerConfig::builder_with_provider(policy.shared_provider())
            .with_protocol_versions(policy.versions())?
            .with_no_client_auth()
            .with_cert_resolver(identity.server_resolver());
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Webhook {
            renewal,
            tls: Arc::new(tls),
        })
    }

    /// Serves `POST /inject` on `listener` until `stop`.
    pub async fn serve(
        self,
        listener: TcpListener,
        store: StoreReader,
        injection: InjectSettings,
        mut stop: watch::Receiver<bool>,
    ) {
        let state = WebhookState {
            store,
            settings: Arc::new(injection),
        };
        // `self`, and with it the renewal, lives as long as this task.
        tokio::select! {
            () = webhook_server::serve(listener, self.tls.clone(), state) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        // Dropping `self` stops the renewal.
    }
}
