//! Matching of compiled checks against one request. No allocation except when a header is
//! repeated (Istio joins the values with `,`) or a claim is a number or boolean.

use serde_json::Value;

use super::compile::{Attr, Check, CompiledRule, Values};
use super::matcher::{StrMatch, ip_in};
use super::request::RequestAttrs;

/// A request with its path already normalised.
pub(crate) struct Ctx<'a> {
    pub(crate) req: &'a RequestAttrs<'a>,
    pub(crate) path: &'a str,
    pub(crate) tcp: bool,
}

impl CompiledRule {
    /// True when the rule matches. `deny` selects Istio's TCP treatment of HTTP-only fields:
    /// dropped (so the rule matches more) in DENY policies, never matching in the others.
    #[inline]
    pub(crate) fn matches(&self, cx: &Ctx<'_>, deny: bool) -> bool {
        let all = |checks: &[Check]| checks.iter().all(|c| c.matches(cx, deny));
        (self.from.is_empty() || self.from.iter().any(|s| all(s)))
            && (self.to.is_empty() || self.to.iter().any(|o| all(o)))
            && all(&self.when)
    }
}

fn any_str(ms: &[StrMatch], s: Option<&str>) -> bool {
    s.is_some_and(|s| ms.iter().any(|m| m.matches(s)))
}

impl Check {
    #[inline]
    fn matches(&self, cx: &Ctx<'_>, deny: bool) -> bool {
        if cx.tcp && self.attr.http_only() {
            return deny;
        }
        self.positive(cx) != self.negate
    }

    /// True when some value of the attribute matches some value of the check. An absent
    /// attribute (plaintext peer, missing header, no JWT) matches nothing, so its `notX` form
    /// matches.
    fn positive(&self, cx: &Ctx<'_>) -> bool {
        let r = cx.req;
        match (&self.attr, &self.values) {
            (Attr::Principal, Values::Str(ms)) => any_str(ms, r.peer.principal()),
            (Attr::Namespace, Values::Str(ms)) => any_str(ms, r.peer.namespace()),
            (Attr::ServiceAccount, Values::ServiceAccount(sas, tds)) => {
                let (Some(td), Some(ns), Some(sa)) = (
                    r.peer.trust_domain(),
                    r.peer.namespace(),
                    r.peer.service_account(),
                ) else {
                    return false;
                };
                tds.iter().any(|t| t == td) && sas.iter().any(|(n, s)| **n == *ns && **s == *sa)
            }
            (Attr::RequestPrincipal, Values::Str(ms)) => any_str(ms, r.auth.map(|a| a.principal())),
            (Attr::SourceIp, Values::Ip(nets)) => ip_in(nets, r.source_ip),
            (Attr::RemoteIp, Values::Ip(nets)) => ip_in(nets, r.remote_ip),
            (Attr::DestinationIp, Values::Ip(nets)) => ip_in(nets, r.destination_ip),
            (Attr::DestinationPort, Values::Port(ps)) => ps.contains(&r.destination_port),
            (Attr::Host, Values::Host(hs)) => hs.iter().any(|h| h.matches(r.host)),
            (Attr::Method, Values::Str(ms)) => any_str(ms, Some(r.method)),
            (Attr::Path, Values::Path(ps)) => ps.iter().any(|p| p.matches(cx.path)),
            (Attr::Header(name), Values::Str(ms)) => {
                let mut it = r.headers.get_all(name).iter();
                match (it.next(), it.next()) {
                    (None, _) => false,
                    (Some(v), None) => any_str(ms, v.to_str().ok()),
                    (Some(_), Some(_)) => {
                        let joined: Vec<&str> = r
                            .headers
                            .get_all(name)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .collect();
                        any_str(ms, Some(&joined.join(",")))
                    }
                }
            }
            (Attr::AuthAudiences, Values::Str(ms)) => r
                .auth
                .is_some_and(|a| a.audiences().iter().any(|aud| any_str(ms, Some(aud)))),
            (Attr::AuthPresenter, Values::Str(ms)) => {
                any_str(ms, r.auth.and_then(|a| a.presenter()))
            }
            (Attr::AuthClaim(path), Values::Str(ms)) => r
                .auth
                .and_then(|a| a.claim(path))
                .is_some_and(|v| claim_matches(ms, v)),
            (Attr::Sni, Values::Str(ms)) => any_str(ms, r.sni),
            (Attr::CertFingerprint, Values::Str(ms)) => any_str(ms, r.peer.fingerprint()),
            // The compiler only pairs attributes with their value kind.
            _ => false,
        }
    }
}

/// A string claim, or any string element of a list claim; numbers and booleans compare by
/// their JSON text.
fn claim_matches(ms: &[StrMatch], v: &Value) -> bool {
    match v {
        Value::String(s) => any_str(ms, Some(s)),
        Value::Array(a) => a.iter().any(|e| match e {
            Value::String(s) => any_str(ms, Some(s)),
            _ => false,
        }),
        Value::Bool(_) | Value::Number(_) => any_str(ms, Some(&v.to_string())),
        _ => false,
    }
}
