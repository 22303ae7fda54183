//! The mTLS connection to the control plane: rustls with the mesh's outbound verifier, so the
//! control plane is authenticated by its SPIFFE ID (chain to the configured roots, then the ID in
//! its URI SAN), never by host name; the proxy presents its own certificate.
//!
//! Certificate hook: the client certificate comes from the bootstrap's PEM files today. When the
//! identity manager is wired in, pass its hot-swapping `ResolvesClientCert` instead of
//! [`SingleCertAndKey`], so a rotated workload certificate is used on the next reconnect.

use std::sync::Arc;

use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{TlsPolicy, TrustBundle, TrustStore, client_config};
use jalin_xds::transport::client::ChannelFactory;
use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::Endpoint;

/// PEM material already read from the bootstrap's files.
pub struct TlsMaterial {
    /// Roots that sign the control plane's certificate.
    pub ca_pem: Vec<u8>,
    /// This proxy's certificate chain.
    pub cert_pem: Vec<u8>,
    /// This proxy's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { key: <redacted>, .. }")
    }
}

/// A channel factory that dials `hostport` over TCP and runs mTLS, accepting only a server whose
/// SPIFFE ID is `control_plane_id`; `sni` is sent as the TLS server name.
pub fn mtls_factory(
    hostport: &str,
    sni: &str,
    control_plane_id: &str,
    material: &TlsMaterial,
) -> Result<ChannelFactory, String> {
    let id = SpiffeId::parse_workload(control_plane_id)
        .map_err(|e| format!("identity `{control_plane_id}`: {e}"))?;
    let bundle = TrustBundle::from_pem(&material.ca_pem, vec![id.trust_domain().clone()])
        .map_err(|e| format!("tls.ca: {e}"))?;
    if bundle.roots().is_empty() {
        return Err("tls.ca: no certificate in the file; expected PEM CA certificates".into());
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.certificate: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls.certificate: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .map_err(|e| format!("tls.key: not a PEM private key: {e}"))?;
    let policy = TlsPolicy::DEFAULT;
    let certified = CertifiedKey::from_der(chain, key, &policy.provider())
        .map_err(|e| format!("tls.certificate and tls.key do not form a usable pair: {e}"))?;
    let certs: Arc<dyn ResolvesClientCert> = Arc::new(SingleCertAndKey::from(certified));
    let config = client_config(&policy, TrustStore::new(bundle), certs, vec![id])
        .map_err(|e| format!("tls: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let sni = ServerName::try_from(sni.to_owned())
        .map_err(|e| format!("tls.server_name `{sni}`: {e}"))?;
    let hostport: Arc<str> = Arc::from(hostport);
    Ok(Arc::new(move |endpoint: Endpoint| {
        let connector = connector.clone();
        let sni = sni.clone();
        let hostport = hostport.clone();
        Box::pin(async move {
            let dial = tower::service_fn(move |_uri: http::Uri| {
                let connector = connector.clone();
                let sni = sni.clone();
                let hostport = hostport.clone();
                async move {
                    let tcp = TcpStream::connect(&*hostport).await?;
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(sni, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            });
            endpoint.connect_with_connector(dial).await
        })
    }))
}
