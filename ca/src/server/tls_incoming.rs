//! The CA server's TLS listener: accepts TCP, completes the TLS handshake off the accept loop
//! (bounded in time and in number), and hands finished streams to tonic. The server certificate
//! comes from a resolver on every handshake, so a renewed certificate needs no restart.

use std::sync::Arc;

use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::{ServeError, TLS_HANDSHAKE_TIMEOUT};
use crate::issue::WorkloadCa;
use crate::tls::TlsPolicy;

/// Handshakes in progress at once; past this, accepted sockets wait for a slot, so a flood of
/// slow clients cannot grow memory without bound.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Pause after a failed accept (file descriptors exhausted), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// Finished handshakes queued for tonic.
const READY_QUEUE: usize = 64;

/// The CA's rustls server config: `policy`'s versions and algorithms, ALPN `h2`, client
/// certificates optional (renewal) and, when given, verified against every configured root.
pub(super) fn server_config(
    ca: &WorkloadCa,
    certs: Arc<dyn ResolvesServerCert>,
    policy: &TlsPolicy,
) -> Result<Arc<ServerConfig>, ServeError> {
    let provider = policy.shared_provider();
    let mut roots = RootCertStore::empty();
    for root in ca.roots() {
        roots
            .add(root.clone())
            .map_err(|e| ServeError::Tls(format!("root bundle: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(policy.versions())
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts on `listener` and yields finished TLS streams. Abort the returned task to stop.
pub(super) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> (
    ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "CA listener accept failed; retrying in 50 ms");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "CA TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::info!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "CA TLS handshake timed out");
                    }
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}
