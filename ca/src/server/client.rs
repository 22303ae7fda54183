//! The client side of issuance, used by the proxy and by bare-metal bootstrap: send a CSR, get
//! back the certificate chain and the trust bundle.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{JOIN_TOKEN_METADATA, pb};

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

/// What the CA returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChain {
    /// Workload certificate then intermediates, PEM.
    pub chain_pem: String,
    /// The roots to trust, PEM.
    pub trust_bundle_pem: String,
    /// The SPIFFE ID in the certificate.
    pub spiffe_id: String,
    /// notAfter, Unix seconds.
    pub not_after_unix: i64,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA endpoint {address}: {source}")]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("credential cannot be sent as gRPC metadata (it must be visible ASCII)")]
    BadCredential,
    #[error("CA refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
}

/// Sends `csr` (DER or PEM) to the CA and returns the issued chain. `ttl_secs` 0 asks for the
/// CA's default lifetime.
pub async fn request_certificate(
    endpoint: &CaEndpoint,
    auth: &ClientAuth,
    csr: &[u8],
    ttl_secs: u64,
) -> Result<IssuedChain, ClientError> {
    let connect_err = |source| ClientError::Connect {
        address: endpoint.address.clone(),
        source,
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&endpoint.trust_bundle_pem))
        .domain_name(endpoint.server_name.clone());
    if let ClientAuth::WorkloadCertificate { chain_pem, key_pem } = auth {
        tls = tls.identity(Identity::from_pem(chain_pem, key_pem));
    }
    let channel = Endpoint::from_shared(endpoint.address.clone())
        .map_err(connect_err)?
        .tls_config(tls)
        .map_err(connect_err)?
        .connect_timeout(endpoint.timeout)
        .timeout(endpoint.timeout)
        .connect()
        .await
        .map_err(connect_err)?;
    let mut client = pb::certificate_service_client::CertificateServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::SignCertificateRequest {
        csr: csr.to_vec(),
        ttl_seconds: ttl_secs,
    });
    match auth {
        ClientAuth::JoinToken(t) => {
            let v = MetadataValue::try_from(t.as_str()).map_err(|_| ClientError::BadCredential)?;
            request.metadata_mut().insert(JOIN_TOKEN_METADATA, v);
        }
        ClientAuth::KubernetesToken(t) => {
            let v = MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| ClientError::BadCredential)?;
            request.metadata_mut().insert("authorization", v);
        }
        ClientAuth::WorkloadCertificate { .. } => {}
    }
    let resp = client
        .sign_certificate(request)
        .await
        .map_err(|s| ClientError::Refused {
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    Ok(IssuedChain {
        chain_pem: resp.cert_chain_pem,
        trust_bundle_pem: resp.trust_bundle_pem,
        spiffe_id: resp.spiffe_id,
        not_after_unix: resp.not_after_unix,
    })
}
