//! RFC 7512 PKCS#11 URIs naming the intermediate's key in an HSM, e.g.
//! `pkcs11:token=jalin;object=mesh-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`.
//!
//! Supported path attributes: `token`, `object`, `id`, `serial`, `slot-id`, `type` (must be
//! `private` when given). Query attributes: `module-path`, `pin-value`, `pin-source`
//! (`file:<path>` per RFC 7512, or `env:<VAR>`). Without a PIN in the URI the PIN is read from
//! the environment variable [`DEFAULT_PIN_ENV`]. The PIN is never printed.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

/// Environment variable read for the user PIN when the URI names none.
pub const DEFAULT_PIN_ENV: &str = "JALIN_CA_PKCS11_PIN";

/// Where the token's user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-value=` in the URI.
    Value(String),
    /// `pin-source=file:/path`: the file's first line.
    File(PathBuf),
    /// `pin-source=env:VAR`, or [`DEFAULT_PIN_ENV`] when the URI names no PIN.
    Env(String),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

/// A parsed PKCS#11 URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
    pub module_path: PathBuf,
    pub pin: PinSource,
}

/// Why a PKCS#11 URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs11UriError {
    #[error("PKCS#11 URI must start with 'pkcs11:'")]
    Scheme,
    #[error("PKCS#11 URI attribute {0:?} is not name=value")]
    Malformed(String),
    #[error("PKCS#11 URI attribute {name}: {reason}")]
    BadValue { name: String, reason: String },
    #[error(
        "PKCS#11 URI attribute {0:?} is not supported (supported: token, object, id, serial, slot-id, type, module-path, pin-value, pin-source)"
    )]
    Unsupported(String),
    #[error("PKCS#11 URI names no module: add ?module-path=/path/to/module.so")]
    NoModule,
    #[error("PKCS#11 URI names no key: add object=<label> or id=<hex bytes>")]
    NoKey,
    #[error("PKCS#11 PIN could not be read from {source_desc}: {reason}")]
    Pin { source_desc: String, reason: String },
}

fn decode(v: &str) -> Vec<u8> {
    percent_decode_str(v).collect()
}

fn decode_str(name: &str, v: &str) -> Result<String, Pkcs11UriError> {
    String::from_utf8(decode(v)).map_err(|_| Pkcs11UriError::BadValue {
        name: name.to_owned(),
        reason: "not UTF-8 after percent-decoding".into(),
    })
}

impl FromStr for Pkcs11Uri {
    type Err = Pkcs11UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("pkcs11:").ok_or(Pkcs11UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: None,
            object: None,
            id: None,
            serial: None,
            slot_id: None,
            module_path: PathBuf::new(),
            pin: PinSource::Env(DEFAULT_PIN_ENV.to_owned()),
        };
        let mut module = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Pkcs11UriError::Malformed(attr.to_owned()))?;
            match name {
                "token" => uri.token = Some(decode_str(name, value)?),
                "object" => uri.object = Some(decode_str(name, value)?),
                "id" => uri.id = Some(decode(value)),
                "serial" => uri.serial = Some(decode_str(name, value)?),
                "slot-id" => {
                    uri.slot_id = Some(decode_str(name, value)?.parse().map_err(|_| {
                        Pkcs11UriError::BadValue {
                            name: name.to_owned(),
                            reason: "expected a decimal slot number".into(),
                        }
                    })?)
                }
                "type" => {
                    if value != "private" {
                        return Err(Pkcs11UriError::BadValue {
                            name: name.to_owned(),
                            reason: format!(
                                "{value:?}: the CA needs the private key, use type=private"
                            ),
                        });
                    }
                }
                // Informational attributes that narrow the token; accepted and ignored.
                "manufacturer"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                other => return Err(Pkcs11UriError::Unsupported(other.to_owned())),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Pkcs11UriError::Malformed(attr.to_owned()))?;
            match name {
                "module-path" => module = Some(PathBuf::from(decode_str(name, value)?)),
                "pin-value" => uri.pin = PinSource::Value(decode_str(name, value)?),
                "pin-source" => {
                    let v = decode_str(name, value)?;
                    uri.pin = if let Some(p) = v.strip_prefix("file:") {
                        PinSource::File(PathBuf::from(p.trim_start_matches("//")))
                    } else if let Some(var) = v.strip_prefix("env:") {
                        PinSource::Env(var.to_owned())
                    } else {
                        PinSource::File(PathBuf::from(v))
                    };
                }
                other => return Err(Pkcs11UriError::Unsupported(other.to_owned())),
            }
        }
        uri.module_path = module.ok_or(Pkcs11UriError::NoModule)?;
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Pkcs11UriError::NoKey);
        }
        Ok(uri)
    }
}

impl Pkcs11Uri {
    /// Resolves the user PIN from its source.
    pub fn read_pin(&self) -> Result<String, Pkcs11UriError> {
        match &self.pin {
            PinSource::Value(v) => Ok(v.clone()),
            PinSource::File(p) => std::fs::read_to_string(p)
                .map(|s| s.lines().next().unwrap_or_default().to_owned())
                .map_err(|e| Pkcs11UriError::Pin {
                    source_desc: format!("file {}", p.display()),
                    reason: e.to_string(),
                }),
            PinSource::Env(var) => std::env::var(var).map_err(|e| Pkcs11UriError::Pin {
                source_desc: format!("environment variable {var}"),
                reason: format!("{e}; set it or add pin-source=file:/path to the URI"),
            }),
        }
    }

    /// The key's description for logs and errors (no PIN).
    pub fn describe(&self) -> String {
        let mut s = String::from("pkcs11:");
        if let Some(t) = &self.token {
            s.push_str(&format!("token={t};"));
        }
        if let Some(o) = &self.object {
            s.push_str(&format!("object={o};"));
        }
        if let Some(id) = &self.id {
            s.push_str(&format!("id={};", hex::encode(id)));
        }
        s.push_str(&format!("?module-path={}", self.module_path.display()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_example() {
        let u: Pkcs11Uri = "pkcs11:token=jalin;object=mesh%20ca;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
            .parse()
            .unwrap();
        assert_eq!(u.token.as_deref(), Some("jalin"));
        assert_eq!(u.object.as_deref(), Some("mesh ca"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.read_pin().unwrap(), "1234");
        assert!(!format!("{u:?}").contains("1234"));
        assert!(!u.describe().contains("1234"));
    }

    #[test]
    fn pin_from_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "9876\n").unwrap();
        let u: Pkcs11Uri = format!(
            "pkcs11:object=k?module-path=/m.so&pin-source=file:{}",
            pin.display()
        )
        .parse()
        .unwrap();
        assert_eq!(u.read_pin().unwrap(), "9876");
        let u: Pkcs11Uri = "pkcs11:object=k?module-path=/m.so".parse().unwrap();
        assert_eq!(u.pin, PinSource::Env(DEFAULT_PIN_ENV.into()));
    }

    #[test]
    fn refuses_incomplete() {
        assert_eq!(
            "pkcs11:object=k".parse::<Pkcs11Uri>(),
            Err(Pkcs11UriError::NoModule)
        );
        assert_eq!(
            "pkcs11:token=t?module-path=/m.so".parse::<Pkcs11Uri>(),
            Err(Pkcs11UriError::NoKey)
        );
        assert_eq!("file:/x".parse::<Pkcs11Uri>(), Err(Pkcs11UriError::Scheme));
        assert!(matches!(
            "pkcs11:object=k;type=cert?module-path=/m.so".parse::<Pkcs11Uri>(),
            Err(Pkcs11UriError::BadValue { .. })
        ));
    }
}
