//! The CA server's TLS listener: accepts TCP, completes TLS handshakes concurrently (bounded in
//! time and in number), and hands finished streams to tonic. The server certificate
//! comes from a resolver on every handshake, so a renewed certificate needs no restart.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::TcpListenerStream;

use super::{ServeError, TLS_HANDSHAKE_TIMEOUT};
use crate::issue::WorkloadCa;
use crate::tls::TlsPolicy;

/// Handshakes in progress at once; past this, connections wait in the kernel backlog, so a
/// flood of slow clients cannot grow memory without bound.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Pause after a failed accept (file descriptors exhausted), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

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

/// Accepts on `listener` and yields finished TLS streams. Everything lives in the returned
/// stream (no spawned task): when tonic drops it, the listening socket closes at once.
pub(super) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    TcpListenerStream::new(listener)
        .map(move |accepted| {
            let acceptor = acceptor.clone();
            async move {
                let tcp = match accepted {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning on the error.
                        tracing::warn!(error = %e, "CA listener accept failed; retrying in 50 ms");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        return None;
                    }
                };
                let peer = tcp.peer_addr().ok();
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => Some(Ok(stream)),
                    Ok(Err(e)) => {
                        tracing::info!(peer = ?peer, error = %e, "CA TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::info!(peer = ?peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "CA TLS handshake timed out");
                        None
                    }
                }
            }
        })
        // At most this many handshakes at once; past it, connections wait in the backlog.
        .buffer_unordered(MAX_PENDING_HANDSHAKES)
        .filter_map(std::future::ready)
}
