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
use std::pin::Pin;
use std::task::{Context, Poll};

use jalin_ca::server::pb::certificate_service_server::CertificateServiceServer;
use jalin_ca::server::{CaService, ServerTls, server_identity};
use jalin_xds::transport::XdsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Lifetime of the control plane's own serving certificate.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long open connections may take to finish after a listener stops (rotation or shutdown).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
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
        let (end_tx, mut end_rx) = watch::channel(false);
        let end = Box::pin(async move {
            let _ = end_rx.wait_for(|e| *e).await;
        });
        let round = serve(listener, tls, end);
        tokio::pin!(round);
        let mut round_stop = stop.clone();
        let timer = async move {
            if rotate {
                tokio::select! {
                    () = stopped(&mut round_stop) => {}
                    () = tokio::time::sleep(SERVER_CERT_TTL / 2) => {}
                }
            } else {
                stopped(&mut round_stop).await;
            }
        };
        let result = tokio::select! {
            r = &mut round => r,
            () = timer => {
                end_tx.send_replace(true);
                // Graceful, but bounded: long-lived streams are cut after the grace period.
                tokio::select! {
                    r = &mut round => r,
                    () = tokio::time::sleep(SHUTDOWN_GRACE) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
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

/// Serves the CA issuance service and ADS on one listener (the deployment's port 15012, which the
/// mesh config gives proxies for both) until `stop`. TLS client certificates are optional on this
/// port, because a proxy bootstraps its first certificate here with a token; ADS on it answers only
/// clients that presented a certificate (verified against the trust bundle).
pub async fn serve_ca(
    issuer: Issuer,
    auth: Arc<dyn Authenticator>,
    xds: XdsServer,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let ca = issuer.ca.clone();
    let expiry_ca = ca.clone();
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(jalin_ca::server::EXPIRY_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            expiry_ca.refresh_expiry_metrics(SystemTime::now());
        }
    });
    rotating(
        "CA",
        listener,
        Some(issuer),
        stop,
        move |listener, tls, end| {
            let ca = ca.clone();
            let auth = auth.clone();
            let ads = RequirePeerCert(xds.service());
            async move {
                let Some(tls) = tls else {
                    return Err("no serving certificate".to_owned());
                };
                let tls = ServerTlsConfig::new()
                    .identity(Identity::from_pem(&tls.cert_chain_pem, &tls.key_pem))
                    .client_ca_root(Certificate::from_pem(ca.roots_pem()))
                    .client_auth_optional(true)
                    .timeout(jalin_ca::server::TLS_HANDSHAKE_TIMEOUT);
                let service = CertificateServiceServer::new(CaService::new(ca, auth))
                    .max_decoding_message_size(jalin_ca::server::MAX_REQUEST_BYTES);
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .map_err(|e| e.to_string())?
                    .http2_keepalive_interval(Some(
                        jalin_xds::transport::server::KEEPALIVE_INTERVAL,
                    ))
                    .http2_keepalive_timeout(Some(jalin_xds::transport::server::KEEPALIVE_TIMEOUT))
                    .add_service(service)
                    .add_service(ads)
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), end)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    expiry.abort();
}

/// Wraps ADS so that it answers only TLS clients that presented a verified certificate.
#[derive(Clone)]
struct RequirePeerCert<S>(S);

impl<S: NamedService> NamedService for RequirePeerCert<S> {
    const NAME: &'static str = S::NAME;
}

type PeerInfo = TlsConnectInfo<TcpConnectInfo>;

impl<S, B> tower::Service<http::Request<B>> for RequirePeerCert<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verified = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(PeerInfo::peer_certs)
            .is_some_and(|c| !c.is_empty());
        if !verified {
            let status = tonic::Status::unauthenticated(
                "xDS needs a workload certificate: present the certificate the CA issued to this proxy",
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.0.call(req))
    }
}
