//! JWKS documents for RequestAuthentication `jwksUri`s: read from the files the configuration
//! maps them to, otherwise fetched over HTTPS (or HTTP) once per configuration load, bounded in
//! time and size. HTTPS verifies the server against the system's trust store plus the CA files in
//! `authorization.jwks_trust`. A document that cannot be had is left out, so its issuer's tokens
//! are rejected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jalin_xds::authz::jwt::jwks_uris;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::AuthorizationSection;
use crate::config::ConfigError;

/// Longest a JWKS fetch may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// The JWKS document of every `jwksUri` that could be loaded.
pub async fn load(
    a: &AuthorizationSection,
    file: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (uri, path) in &a.jwks_files {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::field(
                file,
                format!("authorization.jwks_files.{uri}"),
                format!("cannot read {}: {e}", path.display()),
                "give the JWKS document (JSON) served at that URI",
            )
        })?;
        if text.len() > MAX_JWKS_BYTES {
            tracing::warn!(%uri, "JWKS file larger than 1 MiB ignored");
            continue;
        }
        out.insert(uri.clone(), text);
    }
    let missing: Vec<String> = jwks_uris(&a.request_authentications)
        .into_iter()
        .filter(|u| !out.contains_key(u))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    let client = client(&a.jwks_trust, file)?;
    for uri in missing {
        match tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch(&client, &uri)).await {
            Ok(Ok(doc)) => {
                out.insert(uri, doc);
            }
            Ok(Err(e)) => {
                tracing::warn!(%uri, error = %e, "JWKS fetch failed; tokens of its issuer are rejected");
            }
            Err(_) => {
                tracing::warn!(%uri, "JWKS fetch timed out; tokens of its issuer are rejected");
            }
        }
    }
    Ok(out)
}

type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The client for `jwksUri`s: HTTPS verified against the system's roots and `trust`, or HTTP.
fn client(trust: &[PathBuf], file: &str) -> Result<JwksClient, ConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "system trust store: a certificate could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system trust store loaded for JWKS fetches");
    for (i, path) in trust.iter().enumerate() {
        let bad = |message: String| {
            ConfigError::field(
                file,
                format!("authorization.jwks_trust[{i}]"),
                message,
                "give a PEM file of CA certificates that sign the JWKS servers",
            )
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("{} holds no certificate", path.display())));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ConfigError::field(
                file,
                "authorization.jwks_trust",
                format!("TLS for JWKS fetches: {e}"),
                "report this: the default TLS versions should always be available",
            )
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn fetch(client: &JwksClient, uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("https" | "http")) {
        return Err("a jwksUri is https:// or http://".into());
    }
    let rsp = client
        .get(parsed)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !rsp.status().is_success() {
        return Err(format!("status {}", rsp.status()));
    }
    let body = Limited::new(rsp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".into())
}
