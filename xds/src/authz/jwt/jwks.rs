//! JWKS documents (RFC 7517) parsed into verification keys, once per configuration update.
//!
//! Supported: RSA keys for RS256/RS384/RS512/PS256/PS384/PS512 and EC keys on P-256/P-384 for
//! ES256/ES384. Keys for other algorithms (`oct`, `OKP`, encryption keys) are skipped, so one
//! JWKS shared with other consumers still loads; a document with no usable key is an error.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Signature algorithms jalin verifies (JOSE `alg` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl JwsAlg {
    pub(crate) fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => JwsAlg::RS256,
            "RS384" => JwsAlg::RS384,
            "RS512" => JwsAlg::RS512,
            "PS256" => JwsAlg::PS256,
            "PS384" => JwsAlg::PS384,
            "PS512" => JwsAlg::PS512,
            "ES256" => JwsAlg::ES256,
            "ES384" => JwsAlg::ES384,
            _ => return None,
        })
    }

    const RSA: [JwsAlg; 6] = [
        JwsAlg::RS256,
        JwsAlg::RS384,
        JwsAlg::RS512,
        JwsAlg::PS256,
        JwsAlg::PS384,
        JwsAlg::PS512,
    ];

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            JwsAlg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            JwsAlg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            JwsAlg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            JwsAlg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            JwsAlg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            JwsAlg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            JwsAlg::ES256 | JwsAlg::ES384 => return None,
        })
    }
}

/// A verification key: one parsed public key per algorithm it may be used with.
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    pub(crate) keys: Vec<(JwsAlg, ParsedPublicKey)>,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<JwsAlg> = self.keys.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("algs", &algs)
            .finish()
    }
}

impl Jwk {
    pub(crate) fn key_for(&self, alg: JwsAlg) -> Option<&ParsedPublicKey> {
        self.keys.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }
}

/// Why a JWKS document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not valid JSON of the form {{\"keys\": [...]}}: {0}")]
    Json(String),
    #[error("key {index} (kid {kid:?}): {what}")]
    BadKey {
        index: usize,
        kid: Option<String>,
        what: String,
    },
    #[error("JWKS has no RSA or EC (P-256/P-384) signing key jalin can use")]
    NoUsableKey,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWKS document (the JSON text of `jwks`, or what the proxy fetched from `jwksUri`).
pub(crate) fn parse_jwks(text: &str) -> Result<Vec<Jwk>, JwksError> {
    let raw: RawJwks = serde_json::from_str(text).map_err(|e| JwksError::Json(e.to_string()))?;
    let mut out = Vec::new();
    for (index, k) in raw.keys.into_iter().enumerate() {
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let bad = |what: &str| JwksError::BadKey {
            index,
            kid: k.kid.clone(),
            what: what.into(),
        };
        let wanted: Option<JwsAlg> = match k.alg.as_deref() {
            None => None,
            Some(a) => match JwsAlg::from_name(a) {
                Some(a) => Some(a),
                None => continue, // an algorithm jalin does not verify (HS256, EdDSA, ...)
            },
        };
        let keys = match k.kty.as_str() {
            "RSA" => {
                let n = b64(k.n.as_deref()).ok_or_else(|| bad("RSA key needs base64url `n`"))?;
                let e = b64(k.e.as_deref()).ok_or_else(|| bad("RSA key needs base64url `e`"))?;
                let comps = RsaPublicKeyComponents {
                    n: strip_zeros(&n),
                    e: strip_zeros(&e),
                };
                let mut keys = Vec::new();
                for alg in JwsAlg::RSA
                    .into_iter()
                    .filter(|a| wanted.is_none_or(|w| w == *a))
                {
                    let Some(params) = alg.rsa_params() else {
                        continue;
                    };
                    let parsed = comps
                        .to_parsed_public_key(params)
                        .map_err(|e| bad(&format!("RSA key rejected: {e}")))?;
                    keys.push((alg, parsed));
                }
                keys
            }
            "EC" => {
                let (alg, algo, len): (
                    JwsAlg,
                    &'static signature::EcdsaVerificationAlgorithm,
                    usize,
                ) = match k.crv.as_deref() {
                    Some("P-256") => (JwsAlg::ES256, &signature::ECDSA_P256_SHA256_FIXED, 32),
                    Some("P-384") => (JwsAlg::ES384, &signature::ECDSA_P384_SHA384_FIXED, 48),
                    _ => continue,
                };
                if wanted.is_some_and(|w| w != alg) {
                    return Err(bad("`alg` does not match the key's curve"));
                }
                let x = b64(k.x.as_deref()).ok_or_else(|| bad("EC key needs base64url `x`"))?;
                let y = b64(k.y.as_deref()).ok_or_else(|| bad("EC key needs base64url `y`"))?;
                if x.len() != len || y.len() != len {
                    return Err(bad("EC coordinates have the wrong length for the curve"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4u8);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let parsed = ParsedPublicKey::new(algo, &point)
                    .map_err(|e| bad(&format!("EC key rejected: {e}")))?;
                vec![(alg, parsed)]
            }
            _ => continue,
        };
        if !keys.is_empty() {
            out.push(Jwk {
                kid: k.kid.clone(),
                keys,
            });
        }
    }
    if out.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(out)
}

fn b64(s: Option<&str>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s?.trim_end_matches('=')).ok()
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|&c| c != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}
