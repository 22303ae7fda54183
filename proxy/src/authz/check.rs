//! Per request and per opaque connection: authenticate the JWT (RequestAuthentication),
//! evaluate the workload's policies, ask the CUSTOM provider if a CUSTOM policy matched, then
//! log, count and answer. Denied requests get `403 RBAC: access denied` (as Envoy); policy names
//! go to the log line and the metric only.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use http::{Request, StatusCode, header};
use jalin_xds::authz::{Decision, PeerIdentity, RequestAttrs, remote_ip};
use jalin_xds::model::authz::Action;

use super::Security;
use crate::http::body::RequestBody;
use crate::listener::ConnCtx;

/// Counter of authorization decisions by `policy` (`ns/name` or `-`), `action` and `result`.
pub const AUTHZ_DECISIONS: &str = "jalin_authz_decisions_total";

static PLAINTEXT: LazyLock<PeerIdentity> = LazyLock::new(PeerIdentity::plaintext);

/// What to answer instead of forwarding.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub body: String,
    /// Extra response headers (`www-authenticate` on 401).
    pub headers: http::HeaderMap,
}

fn action_label(a: Action) -> &'static str {
    match a {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    }
}

/// Authenticates and authorizes an inbound request. On `Ok` the request may go on (token
/// headers stripped and claim headers set as the RequestAuthentication says).
pub async fn check(
    req: &mut Request<RequestBody>,
    conn: &ConnCtx,
    sec: &Security,
) -> Result<(), Refused> {
    let mut auth = None;
    for h in &sec.claim_headers {
        req.headers_mut().remove(h);
    }
    if !sec.authn.is_empty() {
        match sec
            .authn
            .authenticate(req.headers(), req.uri().query(), SystemTime::now())
        {
            Ok(outcome) => {
                for h in &outcome.strip_headers {
                    req.headers_mut().remove(h);
                }
                for (name, value) in &outcome.claim_headers {
                    if let Ok(v) = http::HeaderValue::from_str(value) {
                        req.headers_mut().insert(name, v);
                    }
                }
                auth = outcome.auth;
            }
            Err(e) => {
                tracing::info!(
                    request_id = request_id(req),
                    peer = %conn.peer,
                    error = %e,
                    "request refused: invalid JWT"
                );
                metrics::counter!(AUTHZ_DECISIONS, "policy" => "-", "action" => "JWT", "result" => "deny").increment(1);
                let rsp = e.unauthorized_response();
                let (parts, body) = rsp.into_parts();
                return Err(Refused {
                    status: parts.status,
                    body,
                    headers: parts.headers,
                });
            }
        }
    }
    if sec.authz.is_empty() {
        return Ok(());
    }
    // The application gets the path the policies saw, so both agree on the resource.
    match sec.authz.normalize(req.uri().path()) {
        Ok(std::borrow::Cow::Owned(path)) => set_path(req, &path),
        Ok(std::borrow::Cow::Borrowed(_)) => {}
        // The engine answers 400 for a path it cannot normalise.
        Err(_) => {}
    }
    let peer = conn.peer_info.as_ref().map_or(&*PLAINTEXT, |p| &p.authz);
    let dst = conn.orig_dst.unwrap_or(conn.local);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let attrs = RequestAttrs {
        peer,
        source_ip: conn.peer.ip(),
        remote_ip: remote_ip(req.headers(), sec.num_trusted_proxies, conn.peer.ip()),
        destination_ip: dst.ip(),
        destination_port: dst.port(),
        sni: conn.peer_info.as_ref().and_then(|p| p.sni.as_deref()),
        method: req.method().as_str(),
        host,
        path: req.uri().path(),
        headers: req.headers(),
        auth: auth.as_ref(),
    };
    let mut decision = sec.authz.evaluate(&attrs);
    if let Some(check) = decision.custom_check() {
        let result = match sec.providers.get(&check.provider) {
            Some(client) => {
                client
                    .check(req.method(), req.uri().path(), req.headers())
                    .await
            }
            None => {
                tracing::warn!(provider = %check.provider, "CUSTOM provider is not configured; denying");
                jalin_xds::authz::CustomResult::Failed
            }
        };
        decision = decision.complete_custom(result);
    }
    let id = request_id(req);
    report(&decision, &sec.authz, id, conn.peer.ip(), peer.principal());
    if decision.is_allowed() {
        Ok(())
    } else {
        let rsp = decision.deny_response();
        let (parts, body) = rsp.into_parts();
        Err(Refused {
            status: parts.status,
            body: body.to_owned(),
            headers: parts.headers,
        })
    }
}

/// Authorizes an opaque TCP connection (`evaluate_tcp`); false: close it.
pub fn check_tcp(conn: &ConnCtx, sec: &Security) -> bool {
    if sec.authz.is_empty() {
        return true;
    }
    let peer = conn.peer_info.as_ref().map_or(&*PLAINTEXT, |p| &p.authz);
    let dst = conn.orig_dst.unwrap_or(conn.local);
    let headers = http::HeaderMap::new();
    let attrs = RequestAttrs {
        peer,
        source_ip: conn.peer.ip(),
        remote_ip: conn.peer.ip(),
        destination_ip: dst.ip(),
        destination_port: dst.port(),
        sni: conn.peer_info.as_ref().and_then(|p| p.sni.as_deref()),
        method: "",
        host: "",
        path: "",
        headers: &headers,
        auth: None,
    };
    // CUSTOM needs an HTTP request to send; for a TCP connection it fails closed.
    let decision = sec.authz.evaluate_tcp(&attrs);
    let decision = if decision.custom_check().is_some() {
        decision.complete_custom(jalin_xds::authz::CustomResult::Failed)
    } else {
        decision
    };
    report(&decision, &sec.authz, "-", conn.peer.ip(), peer.principal());
    decision.is_allowed()
}

fn set_path(req: &mut Request<RequestBody>, path: &str) {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

fn request_id(req: &Request<RequestBody>) -> &str {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// Logs and counts one decision (including the AUDIT and dry-run results).
fn report(
    d: &Decision,
    authz: &jalin_xds::authz::WorkloadAuthz,
    request_id: &str,
    source: IpAddr,
    principal: Option<&str>,
) {
    let (policy, action, rule) = match &d.policy {
        Some(m) => (m.policy.clone(), action_label(m.action), m.rule as i64),
        None => (Arc::from("-"), "NONE", -1),
    };
    let result = d.result_label();
    metrics::counter!(
        AUTHZ_DECISIONS,
        "policy" => policy.to_string(),
        "action" => action,
        "result" => result
    )
    .increment(1);
    let principal = principal.unwrap_or("-");
    if !d.is_allowed() {
        // No policy decided (ALLOW policies apply and none matched): name those considered.
        let considered = if d.policy.is_none() {
            authz
                .policy_names()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        tracing::info!(
            %request_id,
            policy = %policy,
            rule,
            action,
            reason = ?d.reason,
            considered,
            %source,
            principal,
            "RBAC: access denied"
        );
    }
    if let Some(m) = &d.audit {
        tracing::info!(
            %request_id,
            policy = %m.policy,
            rule = m.rule,
            action = "AUDIT",
            result,
            %source,
            principal,
            "authorization audit"
        );
    }
    if let Some(verdict) = d.shadow.verdict() {
        let shadow = d
            .shadow
            .deny
            .as_ref()
            .or(d.shadow.allow.as_ref().and_then(Option::as_ref));
        tracing::info!(
            %request_id,
            policy = shadow.map_or("-", |m| &*m.policy),
            rule = shadow.map_or(-1, |m| m.rule as i64),
            shadow_result = ?verdict,
            result,
            principal,
            "authorization dry-run (shadow)"
        );
        metrics::counter!(
            AUTHZ_DECISIONS,
            "policy" => shadow.map_or_else(|| "-".to_owned(), |m| m.policy.to_string()),
            "action" => "DRY_RUN",
            "result" => if verdict == jalin_xds::authz::Verdict::Allow { "allow" } else { "deny" }
        )
        .increment(1);
    }
}
