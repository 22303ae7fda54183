//! JWKS documents for RequestAuthentication `jwksUri`s: read from the files the configuration
//! maps them to, otherwise fetched over HTTPS (or HTTP) on every configuration load and again
//! every `authorization.jwks_refresh_ms` (5 minutes, Envoy's `cache_duration` default), so an
//! identity provider's key rotation reaches the proxy without a reload. Fetches are bounded in
//! time and size. HTTPS verifies the server against the system's trust store plus the CA files in
//! `authorization.jwks_trust`. At load, a document that cannot be had is left out, so its
//! issuer's tokens are rejected; on a refresh, a failed fetch keeps the last good document.

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
/// How often fetched JWKS documents are fetched again when the file says nothing (Envoy's
/// `remote_jwks.cache_duration` default).
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Bounds of `authorization.jwks_refresh_ms`.
pub const JWKS_REFRESH_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;
/// After a refresh in which a fetch failed, the next one comes this soon (or at the refresh
/// interval, if that is shorter), so a brief outage of the identity provider is bridged quickly.
pub const JWKS_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Refresh rounds, labelled `outcome`: `updated` (a document changed and is in force),
/// `unchanged`, `failed` (at least one fetch failed; the last good document stays).
pub const JWKS_REFRESHES: &str = "jalin_jwks_refreshes_total";

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
    fetch_into(&client(&a.jwks_trust, file)?, missing, &mut out).await;
    Ok(out)
}

/// Fetches each of `uris` into `documents`. A failed fetch leaves the document there, if any
/// (the last good one), or absent, so its issuer's tokens are rejected. Returns how many failed.
async fn fetch_into(
    client: &JwksClient,
    uris: Vec<String>,
    documents: &mut BTreeMap<String, String>,
) -> usize {
    let mut failed = 0;
    for uri in uris {
        match fetch_bounded(client, &uri).await {
            Ok(doc) => {
                documents.insert(uri, doc);
            }
            Err(e) => {
                failed += 1;
                let kept_last_good = documents.contains_key(&uri);
                tracing::warn!(%uri, error = %e, kept_last_good, "JWKS fetch failed");
            }
        }
    }
    failed
}

/// What a refresh round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// The documents to use: fetched ones, and the previous one for each URI whose fetch failed.
    pub documents: BTreeMap<String, String>,
    /// True when a document differs from `previous`.
    pub changed: bool,
    /// How many fetches failed.
    pub failed: usize,
}

impl Refreshed {
    /// The outcome label of [`JWKS_REFRESHES`].
    pub fn outcome(&self) -> &'static str {
        match (self.changed, self.failed) {
            (true, _) => "updated",
            (false, 0) => "unchanged",
            (false, _) => "failed",
        }
    }
}

/// Fetches every `jwksUri` not mapped to a file again. A failed fetch keeps the document in
/// `previous` (the last good one), or stays absent if there was none. `None` when no URI is
/// fetched (all come from files, or there is no RequestAuthentication).
pub async fn refresh(
    a: &AuthorizationSection,
    file: &str,
    previous: &BTreeMap<String, String>,
) -> Option<Result<Refreshed, ConfigError>> {
    let remote: Vec<String> = jwks_uris(&a.request_authentications)
        .into_iter()
        .filter(|u| !a.jwks_files.contains_key(u))
        .collect();
    if remote.is_empty() {
        return None;
    }
    let client = match client(&a.jwks_trust, file) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let mut documents = previous.clone();
    let failed = fetch_into(&client, remote, &mut documents).await;
    let changed = documents != *previous;
    Some(Ok(Refreshed {
        documents,
        changed,
        failed,
    }))
}

/// The refresh interval of `a`.
pub fn refresh_interval(a: &AuthorizationSection) -> Duration {
    a.jwks_refresh_ms
        .map_or(DEFAULT_JWKS_REFRESH, Duration::from_millis)
}

/// [`fetch`] under [`JWKS_FETCH_TIMEOUT`].
async fn fetch_bounded(client: &JwksClient, uri: &str) -> Result<String, String> {
    tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch(client, uri))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {JWKS_FETCH_TIMEOUT:?}")))
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
