//! The client side of issuance, used by the proxy and by bare-metal bootstrap: send a CSR, get
//! back the certificate chain and the trust bundle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::{JOIN_TOKEN_METADATA, pb};
use crate::chain::{PemFileError, certs_from_pem};
use crate::identity::IssuedChain;
use crate::tls::TlsPolicy;

/// Default bound on connecting to the CA and on one request.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CA is and how to verify it.
#[derive(Debug, Clone)]
pub struct CaEndpoint {
    /// `https://host:port`.
    pub address: String,
    /// The DNS name in the CA's certificate (e.g. `jalin-ca.jalin-system.svc.cluster.local`).
    pub server_name: String,
    /// Roots that verify the CA (PEM).
    pub trust_bundle_pem: String,
    /// Connect and request timeout.
    pub timeout: Duration,
}

/// How the client proves its identity.
#[derive(Clone)]
pub enum ClientAuth {
    /// Renewal with the current certificate (chain PEM) and its key (PEM).
    WorkloadCertificate { chain_pem: String, key_pem: String },
    /// A one-time join token.
    JoinToken(String),
    /// A Kubernetes service-account token.
    KubernetesToken(String),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WorkloadCertificate { .. } => "ClientAuth::WorkloadCertificate",
            Self::JoinToken(_) => "ClientAuth::JoinToken(<redacted>)",
            Self::KubernetesToken(_) => "ClientAuth::KubernetesToken(<redacted>)",
        })
    }
}

/// What the CA returned, as it travels (PEM). [`SignResponse::into_issued_chain`] gives the
/// DER form the identity manager installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignResponse {
    /// Workload certificate then intermediates, PEM.
    pub chain_pem: String,
    /// The roots to trust, PEM.
    pub trust_bundle_pem: String,
    /// The SPIFFE ID in the certificate.
    pub spiffe_id: String,
    /// notAfter, Unix seconds.
    pub not_after_unix: i64,
}

impl SignResponse {
    /// The chain and the trust bundle as DER (an empty bundle keeps the one in force).
    pub fn into_issued_chain(self) -> Result<IssuedChain, PemFileError> {
        let chain = certs_from_pem(self.chain_pem.as_bytes(), Path::new("CA response chain"))?;
        let roots = if self.trust_bundle_pem.trim().is_empty() {
            Vec::new()
        } else {
            certs_from_pem(
                self.trust_bundle_pem.as_bytes(),
                Path::new("CA response trust bundle"),
            )?
        };
        Ok(IssuedChain { chain, roots })
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA endpoint {address}: {source}")]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
    #[error(
        "CA address {0:?} is not https://<host>:<port>; give the CA's address with scheme and port"
    )]
    Address(String),
    #[error("TLS client setup for the CA: {0}")]
    Tls(String),
    #[error("credential cannot be sent as gRPC metadata (it must be visible ASCII)")]
    BadCredential,
    #[error("CA refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
}

/// A TLS connection recipe for the CA: the address, the name to send as SNI and a rustls client
/// config (its verifier decides how the CA is authenticated; its resolver, if any, presents a
/// workload certificate for renewal).
#[derive(Clone)]
pub struct CaConnection {
    /// `https://host:port`.
    pub address: String,
    /// SNI and, for WebPKI verification, the name checked in the CA's certificate.
    pub server_name: ServerName<'static>,
    /// The rustls config; ALPN is forced to `h2`.
    pub tls: Arc<ClientConfig>,
    /// Connect and request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for CaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaConnection")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Splits `https://host:port` into host and port.
fn host_port(address: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Address(address.to_owned());
    let uri: tonic::codegen::http::Uri = address.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// The host part of `https://host:port` as a TLS server name.
pub fn server_name_of(address: &str) -> Result<ServerName<'static>, ClientError> {
    let (host, _) = host_port(address)?;
    ServerName::try_from(host).map_err(|_| ClientError::Address(address.to_owned()))
}

impl CaConnection {
    /// The recipe `request_certificate` uses: WebPKI verification of `endpoint.server_name`
    /// against `endpoint.trust_bundle_pem`, and the PEM client certificate for renewal.
    pub fn from_endpoint(endpoint: &CaEndpoint, auth: &ClientAuth) -> Result<Self, ClientError> {
        let tls_err = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        let bundle = certs_from_pem(
            endpoint.trust_bundle_pem.as_bytes(),
            Path::new("CA trust bundle"),
        )
        .map_err(|e| tls_err(&e))?;
        for root in bundle {
            roots.add(root).map_err(|e| tls_err(&e))?;
        }
        let builder = ClientConfig::builder_with_provider(TlsPolicy::DEFAULT.shared_provider())
            .with_protocol_versions(TlsPolicy::DEFAULT.versions())
            .map_err(|e| tls_err(&e))?
            .with_root_certificates(roots);
        let tls = match auth {
            ClientAuth::WorkloadCertificate { chain_pem, key_pem } => {
                let chain = certs_from_pem(chain_pem.as_bytes(), Path::new("client certificate"))
                    .map_err(|e| tls_err(&e))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| tls_err(&format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err(&e))?
            }
            ClientAuth::JoinToken(_) | ClientAuth::KubernetesToken(_) => {
                builder.with_no_client_auth()
            }
        };
        let server_name = ServerName::try_from(endpoint.server_name.clone())
            .map_err(|e| tls_err(&format!("server name {:?}: {e}", endpoint.server_name)))?;
        Ok(Self {
            address: endpoint.address.clone(),
            server_name,
            tls: Arc::new(tls),
            timeout: endpoint.timeout,
        })
    }

    /// Opens a gRPC channel over TLS (one per request: renewals are rare).
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let (host, port) = host_port(&self.address)?;
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let server_name = self.server_name.clone();
        let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let host = host.clone();
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // TLS is done by the connector above, so tonic sees plain http.
        let plain = format!("http://{}", self.address.trim_start_matches("https://"));
        let connect_err = |source| ClientError::Connect {
            address: self.address.clone(),
            source,
        };
        Endpoint::from_shared(plain)
            .map_err(connect_err)?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_with_connector(connect)
            .await
            .map_err(connect_err)
    }
}

/// Sends `csr` (DER or PEM) to the CA and returns the issued chain. `ttl_secs` 0 asks for the
/// CA's default lifetime.
pub async fn request_certificate(
    endpoint: &CaEndpoint,
    auth: &ClientAuth,
    csr: &[u8],
    ttl_secs: u64,
) -> Result<SignResponse, ClientError> {
    let connection = CaConnection::from_endpoint(endpoint, auth)?;
    request_certificate_over(&connection, Some(auth), csr, ttl_secs).await
}

/// Sends `csr` over `connection`, with the join or Kubernetes token of `auth` as metadata
/// (a workload certificate travels in the TLS handshake, through `connection.tls`).
pub async fn request_certificate_over(
    connection: &CaConnection,
    auth: Option<&ClientAuth>,
    csr: &[u8],
    ttl_secs: u64,
) -> Result<SignResponse, ClientError> {
    let channel = connection.connect().await?;
    let mut client = pb::certificate_service_client::CertificateServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::SignCertificateRequest {
        csr: csr.to_vec(),
        ttl_seconds: ttl_secs,
    });
    match auth {
        Some(ClientAuth::JoinToken(t)) => {
            let v = MetadataValue::try_from(t.as_str()).map_err(|_| ClientError::BadCredential)?;
            request.metadata_mut().insert(JOIN_TOKEN_METADATA, v);
        }
        Some(ClientAuth::KubernetesToken(t)) => {
            let v = MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| ClientError::BadCredential)?;
            request.metadata_mut().insert("authorization", v);
        }
        Some(ClientAuth::WorkloadCertificate { .. }) | None => {}
    }
    let resp = client
        .sign_certificate(request)
        .await
        .map_err(|s| ClientError::Refused {
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    Ok(SignResponse {
        chain_pem: resp.cert_chain_pem,
        trust_bundle_pem: resp.trust_bundle_pem,
        spiffe_id: resp.spiffe_id,
        not_after_unix: resp.not_after_unix,
    })
}
