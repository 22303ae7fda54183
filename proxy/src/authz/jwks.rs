//! JWKS documents for RequestAuthentication `jwksUri`s: read from the files the configuration
//! maps them to, otherwise fetched over HTTP once per configuration load, bounded in time and
//! size. A document that cannot be had is left out, so its issuer's tokens are rejected.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jalin_xds::authz::jwt::jwks_uris;

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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            path: format!("authorization.jwks_files.{uri}"),
            message: format!("cannot read {}: {e}", path.display()),
            hint: "give the JWKS document (JSON) served at that URI".into(),
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
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
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

async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    if parsed.scheme_str() != Some("http") {
        return Err("only http:// URIs are fetched; map https:// ones in `jwks_files`".into());
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
