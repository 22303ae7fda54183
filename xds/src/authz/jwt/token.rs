//! Verification of one compact JWS token against one issuer's rule: signature, issuer,
//! audiences, `exp`/`nbf` with the caller's clock, and extraction of `request.auth.*` attributes.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::{Jwk, JwsAlg};

/// Largest token jalin decodes; larger ones are rejected before any parsing (Envoy's default
/// header limit is 60 KiB for all headers together; real tokens are a few KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew tolerated on `exp` and `nbf` (Envoy's `clock_skew_seconds` default).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Why a token was rejected. The text is what the client sees in the 401 body (no secrets, no
/// token contents), worded as Envoy's jwt_authn filter words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    Malformed,
    #[error("Jwt is too large")]
    TooLarge,
    #[error("Jwt header is an invalid JSON")]
    BadHeader,
    #[error("Jwt payload is an invalid JSON")]
    BadPayload,
    #[error("Jwt algorithm is not supported")]
    UnsupportedAlg,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwks remote fetch is failed")]
    JwksUnavailable,
    #[error("Jwt verification fails")]
    BadSignature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
}

impl JwtError {
    /// The response for a request whose token was rejected: 401 with this error's text and a
    /// `WWW-Authenticate` challenge (RFC 6750), as Envoy's jwt_authn filter answers.
    pub fn unauthorized_response(&self) -> http::Response<String> {
        let mut resp = http::Response::new(self.to_string());
        *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
        let h = resp.headers_mut();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        resp
    }
}

/// The identity and claims of a validated token: Istio's `request.auth.*` attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestAuth {
    /// `iss/sub` (`request.auth.principal`, `requestPrincipals`).
    principal: String,
    /// `aud`, as a list (`request.auth.audiences`).
    audiences: Vec<String>,
    /// `azp` (`request.auth.presenter`).
    presenter: Option<String>,
    /// All claims (`request.auth.claims[...]`).
    claims: Map<String, Value>,
}

impl RequestAuth {
    /// Builds the attributes from claims that were validated elsewhere (`jalin authz explain`
    /// with `--claim`, tests). The proxy never calls this: it gets a `RequestAuth` only from
    /// [`super::WorkloadAuthn::authenticate`].
    pub fn from_trusted_claims(claims: Map<String, Value>) -> Self {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let audiences = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        RequestAuth {
            principal: format!("{iss}/{sub}"),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
            claims,
        }
    }

    /// `iss/sub`.
    pub fn principal(&self) -> &str {
        &self.principal
    }
    /// The token's audiences.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
    /// The authorized presenter (`azp`).
    pub fn presenter(&self) -> Option<&str> {
        self.presenter.as_deref()
    }
    /// All claims of the payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
    /// A claim by path: `["groups"]` or, nested, `["realm_access", "roles"]`.
    pub fn claim<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.claims.get(first.as_ref())?;
        for key in rest {
            v = v.as_object()?.get(key.as_ref())?;
        }
        Some(v)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The parts of a token once its structure is checked, before the signature is.
pub(crate) struct Parsed<'t> {
    signed: &'t str,
    alg: Option<JwsAlg>,
    kid: Option<String>,
    signature: Vec<u8>,
    pub(crate) claims: Map<String, Value>,
}

impl Parsed<'_> {
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Splits and decodes a token. Does not trust anything in it yet.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::BadHeader)?;
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::BadPayload)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    Ok(Parsed {
        signed: &token[..h.len() + 1 + p.len()],
        alg: JwsAlg::from_name(&header.alg),
        kid: header.kid,
        signature,
        claims,
    })
}

/// The parts of a `JwtRule` that validation needs.
pub(crate) struct Verifier<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audiences: &'a [String],
    /// `None`: the JWKS could not be loaded; every token for this issuer fails (fail closed).
    pub(crate) keys: Option<&'a [Jwk]>,
}

/// Verifies a parsed token whose issuer is `v.issuer`, at time `now`.
pub(crate) fn verify(
    t: &Parsed<'_>,
    v: &Verifier<'_>,
    now: SystemTime,
) -> Result<RequestAuth, JwtError> {
    let alg = t.alg.ok_or(JwtError::UnsupportedAlg)?;
    let keys = v.keys.ok_or(JwtError::JwksUnavailable)?;
    let mut candidates = keys
        .iter()
        .filter(|k| match (&t.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .filter_map(|k| k.key_for(alg))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::NoMatchingKey);
    }
    if !candidates.any(|k| k.verify_sig(t.signed.as_bytes(), &t.signature).is_ok()) {
        return Err(JwtError::BadSignature);
    }
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let skew = CLOCK_SKEW.as_secs();
    if let Some(exp) = t.claims.get("exp") {
        let exp = exp.as_u64().ok_or(JwtError::BadPayload)?;
        if now_s > exp.saturating_add(skew) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = t.claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(JwtError::BadPayload)?;
        if now_s.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    let audiences: Vec<String> = match t.claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(_) => return Err(JwtError::BadPayload),
    };
    if !v.audiences.is_empty() && !audiences.iter().any(|a| v.audiences.contains(a)) {
        return Err(JwtError::AudienceNotAllowed);
    }
    let sub = t
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(RequestAuth {
        principal: format!("{}/{}", v.issuer, sub),
        audiences,
        presenter: t
            .claims
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_owned),
        claims: t.claims.clone(),
    })
}
