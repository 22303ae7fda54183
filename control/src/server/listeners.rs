//! The gRPC listeners: xDS (mTLS, clients verified against the trust bundle) and the CA issuance
//! service (TLS, client certificate optional), each with the control plane's own certificate from
//! the mesh CA.
//!
//! Rotation: the serving certificate lives [`SERVER_CERT_TTL`]. At half its life the listener
//! stops, a new certificate is issued and the same address is bound again; open xDS streams end
//! with `UNAVAILABLE`, and proxies reconnect (with backoff and jitter) while they keep serving on
//! their last configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jalin_ca::auth::Authenticator;
use jalin_ca::issue::WorkloadCa;
use jalin_ca::server::{ServerTls, server_identity};
use jalin_xds::transport::XdsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Lifetime of the control plane's own serving certificate.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Delay between attempts to bind the address again after a rotation.
const REBIND_RETRY: Duration = Duration::from_millis(200);
/// Attempts to bind the address again before the listener gives up.
const REBIND_ATTEMPTS: u32 = 50;

/// Where the serving certificate comes from.
#[derive(Clone)]
pub struct Issuer {
    /// The mesh CA.
    pub ca: Arc<WorkloadCa>,
    /// DNS names on the certificate.
    pub dns_names: Vec<String>,
}

impl Issuer {
    fn issue(&self) -> Option<ServerTls> {
        match server_identity(
            &self.ca,
            &self.dns_names,
            SERVER_CERT_TTL,
            SystemTime::now(),
        ) {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::error!("cannot issue the control plane's serving certificate: {e}");
                None
            }
        }
    }

    fn xds_tls(&self, tls: &ServerTls) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.cert_chain_pem, &tls.key_pem))
            .client_ca_root(Certificate::from_pem(self.ca.roots_pem()))
            .timeout(jalin_ca::server::TLS_HANDSHAKE_TIMEOUT)
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs `serve` on `listener` until `stop`, restarting it on the same address with a fresh
/// certificate at half the certificate's life. `serve` gets the listener, the certificate (None
/// when plaintext) and a future that completes when this round should end.
async fn rotating<F, Fut>(
    what: &'static str,
    mut listener: TcpListener,
    issuer: Option<Issuer>,
    mut stop: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(
        TcpListener,
        Option<ServerTls>,
        std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    loop {
        let tls = match &issuer {
            Some(i) => match i.issue() {
                Some(t) => Some(t),
                None => return,
            },
            None => None,
        };
        let rotate = issuer.is_some();
        let mut round_stop = stop.clone();
        let end = Box::pin(async move {
            if rotate {
                tokio::select! {
                    () = stopped(&mut round_stop) => {}
                    () = tokio::time::sleep(SERVER_CERT_TTL / 2) => {}
                }
            } else {
                stopped(&mut round_stop).await;
            }
        });
        if let Err(e) = serve(listener, tls, end).await {
            tracing::error!("{what} server stopped: {e}");
            return;
        }
        if *stop.borrow() {
            return;
        }
        tracing::info!(%addr, "{what}: rotating the serving certificate");
        listener = match rebind(addr, &mut stop).await {
            Some(l) => l,
            None => {
                tracing::error!(%addr, "{what}: cannot bind the address again after rotation; the listener is down");
                return;
            }
        };
    }
}

async fn rebind(addr: SocketAddr, stop: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    for _ in 0..REBIND_ATTEMPTS {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::select! {
            () = stopped(stop) => return None,
            () = tokio::time::sleep(REBIND_RETRY) => {}
        }
    }
    None
}

/// Serves xDS on `listener` (mTLS with `issuer`, plaintext without) until `stop`.
pub async fn serve_xds(
    xds: XdsServer,
    listener: TcpListener,
    issuer: Option<Issuer>,
    stop: watch::Receiver<bool>,
) {
    let tls_issuer = issuer.clone();
    rotating("xDS", listener, issuer, stop, move |listener, tls, end| {
        let xds = xds.clone();
        let config = tls
            .as_ref()
            .zip(tls_issuer.as_ref())
            .map(|(t, i)| i.xds_tls(t));
        async move {
            xds.serve(listener, config, end)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

/// Serves the CA issuance service on `listener` until `stop`.
pub async fn serve_ca(
    issuer: Issuer,
    auth: Arc<dyn Authenticator>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let ca = issuer.ca.clone();
    rotating(
        "CA",
        listener,
        Some(issuer),
        stop,
        move |listener, tls, end| {
            let ca = ca.clone();
            let auth = auth.clone();
            async move {
                let Some(tls) = tls else {
                    return Err("no serving certificate".to_owned());
                };
                jalin_ca::server::serve(ca, auth, tls, listener, end)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
}
