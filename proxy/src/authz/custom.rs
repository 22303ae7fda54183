//! CUSTOM action: the external authorizer over HTTP (Envoy `ext_authz` HTTP service). The
//! request's method, path and headers (no body) go to the provider; a 2xx answer allows.
//! Every failure (timeout, connection error, other status) denies: fail closed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jalin_xds::authz::CustomResult;

/// One provider's client.
#[derive(Debug, Clone)]
pub struct CustomClient {
    base: http::Uri,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl CustomClient {
    /// A client for `url` (`http://host:port[/prefix]`), each check bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let base: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
        if base.scheme_str() != Some("http") || base.authority().is_none() {
            return Err(format!("`{url}` is not an http:// URL"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Ok(Self {
            base,
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Asks the provider about a request.
    pub async fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> CustomResult {
        let prefix = self.base.path().trim_end_matches('/');
        let uri = format!(
            "http://{}{prefix}{path}",
            self.base
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default()
        );
        let mut req = Request::builder().method(method.clone()).uri(uri);
        for (k, v) in headers {
            if k != http::header::CONTENT_LENGTH
                && k != http::header::TRANSFER_ENCODING
                && k != http::header::HOST
            {
                req = req.header(k, v);
            }
        }
        let Ok(req) = req.body(Empty::new()) else {
            return CustomResult::Failed;
        };
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(rsp)) if rsp.status().is_success() => CustomResult::Allowed,
            Ok(Ok(rsp)) => {
                tracing::debug!(status = %rsp.status(), "external authorizer denied");
                CustomResult::Denied
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "external authorizer unreachable; denying");
                CustomResult::Failed
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "external authorizer timed out; denying"
                );
                CustomResult::Failed
            }
        }
    }
}
