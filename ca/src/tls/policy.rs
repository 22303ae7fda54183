//! TLS policies: which protocol versions, cipher suites and key-exchange groups a listener or
//! client offers. Both are built on the aws-lc-rs provider (FIPS-validated with feature `fips`).
//!
//! - `default`: TLS 1.3 only, the provider's default suites and groups (X25519MLKEM768 first).
//! - `government`: NIST-approved algorithms only. TLS 1.3 `TLS_AES_256_GCM_SHA384` and
//!   `TLS_AES_128_GCM_SHA256`; key exchange on NIST curves only — `SECP256R1MLKEM768` (the
//!   P-256 + ML-KEM-768 hybrid: a NIST curve and the FIPS 203 KEM), then P-256, then P-384.
//!   X25519 and its hybrid are excluded (X25519 key agreement is not an approved scheme under
//!   NIST SP 800-56A Rev. 3), and ChaCha20-Poly1305 is excluded (not a NIST-approved AEAD).
//!   When TLS 1.2 is enabled, only ECDHE with AES-GCM: `ECDHE-ECDSA-AES256-GCM-SHA384` and
//!   `ECDHE-ECDSA-AES128-GCM-SHA256` for ECDSA certificates (mesh keys are ECDSA), and
//!   `ECDHE-RSA-AES256-GCM-SHA384` and `ECDHE-RSA-AES128-GCM-SHA256` for the RSA certificates
//!   agency PKIs often issue to gateways (the suites NIST SP 800-52 Rev. 2 lists for each
//!   certificate type).
//! - Signature verification keeps the provider's algorithms (ECDSA, RSA-PSS/PKCS#1, Ed25519)
//!   so an agency root signed with RSA still verifies; in the `fips` build they run in the
//!   validated module.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::{SupportedProtocolVersion, version};

/// A named TLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsPolicyName {
    /// TLS 1.3, the provider's default algorithms.
    #[default]
    Default,
    /// NIST-approved algorithms only: AES-GCM, P-256/P-384 (and the P-256 ML-KEM hybrid).
    Government,
}

/// A TLS policy: a name and whether TLS 1.2 is allowed as well (off by default; for peers such
/// as agency appliances that cannot speak TLS 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsPolicy {
    /// Which algorithm set.
    pub name: TlsPolicyName,
    /// Also allow TLS 1.2 (with the policy's TLS 1.2 suites).
    pub allow_tls12: bool,
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&version::TLS13];
static TLS13_AND_12: &[&SupportedProtocolVersion] = &[&version::TLS13, &version::TLS12];

impl TlsPolicy {
    /// The `default` policy: TLS 1.3 only.
    pub const DEFAULT: Self = Self {
        name: TlsPolicyName::Default,
        allow_tls12: false,
    };

    /// The `government` policy, TLS 1.3 only.
    pub const GOVERNMENT: Self = Self {
        name: TlsPolicyName::Government,
        allow_tls12: false,
    };

    /// The same policy with TLS 1.2 allowed or not.
    pub fn with_tls12(self, allow_tls12: bool) -> Self {
        Self {
            allow_tls12,
            ..self
        }
    }

    /// The protocol versions this policy offers.
    pub fn versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        if self.allow_tls12 {
            TLS13_AND_12
        } else {
            TLS13_ONLY
        }
    }

    /// The crypto provider (suites, groups, signature algorithms) this policy allows.
    pub fn provider(&self) -> CryptoProvider {
        let base = aws_lc_rs::default_provider();
        match self.name {
            TlsPolicyName::Default => base,
            TlsPolicyName::Government => CryptoProvider {
                // Every name of the list maps to a suite (`suite_by_name`; the tests check
                // each), so nothing is dropped here.
                cipher_suites: GOVERNMENT_CIPHER_SUITES
                    .iter()
                    .filter_map(|n| suite_by_name(n))
                    .collect(),
                kx_groups: vec![
                    kx_group::SECP256R1MLKEM768,
                    kx_group::SECP256R1,
                    kx_group::SECP384R1,
                ]
                .into_iter()
                // A FIPS build keeps only the groups the FIPS module validates.
                .filter(|g| !cfg!(feature = "fips") || g.fips())
                .collect(),
                ..base
            },
        }
    }

    /// The provider, shared.
    pub fn shared_provider(&self) -> Arc<CryptoProvider> {
        Arc::new(self.provider())
    }

    /// Whether every algorithm of this policy runs in the FIPS-validated aws-lc module.
    pub fn fips_active(&self) -> bool {
        self.provider().fips()
    }
}

/// The government policy's cipher suites by the names Istio and Envoy write in `cipherSuites`
/// (OpenSSL names for TLS 1.2, IANA names for TLS 1.3), in the policy's order of preference.
pub const GOVERNMENT_CIPHER_SUITES: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
];

/// A `cipherSuites` entry that names no suite of the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a cipher suite of the government TLS policy")]
pub struct UnknownCipherSuite(pub String);

fn suite_by_name(name: &str) -> Option<rustls::SupportedCipherSuite> {
    Some(match name {
        "TLS_AES_256_GCM_SHA384" => cipher_suite::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_128_GCM_SHA256" => cipher_suite::TLS13_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384" => cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES128-GCM-SHA256" => cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        _ => return None,
    })
}

/// `provider` offering only the suites `names` lists, per protocol version: a version none of
/// whose suites is named keeps all of them. That is Envoy's behaviour for the usual Istio list,
/// which names TLS 1.2 suites only and leaves TLS 1.3 as it is; a list that also names TLS 1.3
/// suites narrows those too (an agency that allows only AES-256 gets only AES-256). Empty
/// `names`: `provider` unchanged. Every name must be one of [`GOVERNMENT_CIPHER_SUITES`].
pub fn with_cipher_suites(
    mut provider: CryptoProvider,
    names: &[String],
) -> Result<CryptoProvider, UnknownCipherSuite> {
    let named = names
        .iter()
        .map(|n| suite_by_name(n).ok_or_else(|| UnknownCipherSuite(n.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if named.is_empty() {
        return Ok(provider);
    }
    let version_named = |v: &SupportedProtocolVersion| named.iter().any(|s| s.version() == v);
    provider
        .cipher_suites
        .retain(|s| !version_named(s.version()) || named.iter().any(|n| n.suite() == s.suite()));
    Ok(provider)
}

/// Whether jalin's TLS runs on the FIPS-validated aws-lc module (the `fips` build) under the
/// government policy, the one FIPS deployments run; reported by `/config_dump`.
pub fn fips_active() -> bool {
    TlsPolicy::GOVERNMENT.fips_active()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CipherSuite, NamedGroup};

    #[test]
    fn government_is_aes_gcm_on_nist_curves() {
        let p = TlsPolicy::GOVERNMENT.provider();
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            vec![
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert!(!groups.contains(&NamedGroup::X25519));
        assert!(!groups.contains(&NamedGroup::X25519MLKEM768));
        assert!(groups.contains(&NamedGroup::secp256r1));
        assert!(groups.contains(&NamedGroup::secp384r1));
        assert_eq!(TlsPolicy::GOVERNMENT.versions().len(), 1);
        assert_eq!(TlsPolicy::GOVERNMENT.with_tls12(true).versions().len(), 2);
    }

    #[test]
    fn cipher_suites_narrow_each_version_they_name() {
        let suites = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            with_cipher_suites(TlsPolicy::GOVERNMENT.provider(), &names).map(|p| {
                p.cipher_suites
                    .iter()
                    .map(|s| s.suite())
                    .collect::<Vec<_>>()
            })
        };
        // The usual Istio list names TLS 1.2 suites: TLS 1.3 keeps both of its own.
        assert_eq!(
            suites(&["ECDHE-ECDSA-AES256-GCM-SHA384"]).unwrap(),
            vec![
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        // Naming a TLS 1.3 suite narrows TLS 1.3 as well.
        assert_eq!(
            suites(&["TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"]).unwrap(),
            vec![
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        assert_eq!(suites(&[]).unwrap().len(), 6);
        assert_eq!(
            suites(&["ECDHE-RSA-CHACHA20-POLY1305"]),
            Err(UnknownCipherSuite("ECDHE-RSA-CHACHA20-POLY1305".into()))
        );
        for name in GOVERNMENT_CIPHER_SUITES {
            assert!(suite_by_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn parses_from_config() {
        let p: TlsPolicy =
            serde_json::from_str(r#"{"name":"government","allow_tls12":true}"#).unwrap();
        assert_eq!(p, TlsPolicy::GOVERNMENT.with_tls12(true));
        let p: TlsPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, TlsPolicy::DEFAULT);
        assert!(serde_json::from_str::<TlsPolicy>(r#"{"name":"fips140"}"#).is_err());
    }

    #[test]
    fn default_is_tls13_only() {
        assert_eq!(
            TlsPolicy::default().versions(),
            &[&version::TLS13] as &[&SupportedProtocolVersion]
        );
        // Without the `fips` feature the module is not the validated one.
        if !cfg!(feature = "fips") {
            assert!(!fips_active());
        }
    }
}
