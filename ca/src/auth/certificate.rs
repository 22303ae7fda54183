//! Renewal: a workload presents its still-valid certificate as the TLS client certificate and may
//! only renew its own identity. The TLS layer has verified the chain to the root bundle; this
//! re-checks validity at `now`, that the leaf is a workload leaf (not a CA, clientAuth), and reads
//! its single SPIFFE ID.

use std::time::SystemTime;

use async_trait::async_trait;
use x509_parser::time::ASN1Time;

use super::{AuthError, AuthMethod, AuthenticatedCaller, Authenticator, Credentials, ensure_same};
use crate::chain::{parse_cert, unix_secs};
use crate::spiffe::{SpiffeId, spiffe_id_from_cert};

/// Authenticates by TLS client certificate.
#[derive(Debug, Clone, Default)]
pub struct CertificateAuthenticator;

#[async_trait]
impl Authenticator for CertificateAuthenticator {
    async fn authenticate(
        &self,
        creds: &Credentials,
        requested: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<Option<AuthenticatedCaller>, AuthError> {
        let Some(leaf) = creds.peer_certs.as_ref().and_then(|c| c.first()) else {
            return Ok(None);
        };
        let bad = |m: &str| AuthError::Certificate(m.to_owned());
        let cert = parse_cert(leaf).map_err(|e| AuthError::Certificate(e.to_string()))?;
        let now = ASN1Time::from_timestamp(unix_secs(now)).map_err(|e| bad(&e.to_string()))?;
        if !cert.validity().is_valid_at(now) {
            return Err(bad("outside its validity period"));
        }
        if cert.is_ca() {
            return Err(bad("is a CA certificate, not a workload certificate"));
        }
        let eku = cert
            .extended_key_usage()
            .map_err(|e| bad(&e.to_string()))?
            .ok_or_else(|| bad("has no extendedKeyUsage"))?;
        if !eku.value.client_auth {
            return Err(bad("lacks EKU clientAuth"));
        }
        let id = spiffe_id_from_cert(&cert).map_err(|e| bad(&e.to_string()))?;
        if id.workload_parts().is_none() {
            return Err(bad(&format!(
                "names {id}, not a workload identity spiffe://<td>/ns/<ns>/sa/<sa>"
            )));
        }
        ensure_same(&id, requested)?;
        Ok(Some(AuthenticatedCaller {
            id,
            method: AuthMethod::WorkloadCertificate,
        }))
    }
}
