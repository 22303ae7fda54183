//! A CA key inside a PKCS#11 token (an HSM, or SoftHSM2 in tests). The private key never leaves
//! the token: the message is hashed here (SHA-256 for P-256, SHA-384 for P-384), the token signs
//! the hash with `CKM_ECDSA`, and its raw `r || s` is converted to DER for X.509.
//!
//! Invariant: one PKCS#11 session, guarded by a mutex (a cryptoki `Session` is `Send`, not
//! `Sync`); signatures are serialised through it. When the HSM drops the session (restart,
//! failover), the signer logs in again once and retries.

use std::sync::Mutex;

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

use super::{SignerError, raw_ecdsa_to_der};
use crate::chain::Pkcs11Uri;

/// An ECDSA key in a PKCS#11 token.
pub struct Pkcs11Signer {
    session: Mutex<(Session, ObjectHandle)>,
    public: rcgen::SubjectPublicKeyInfo,
    digest: &'static digest::Algorithm,
    desc: String,
    uri: Pkcs11Uri,
    /// Kept (zeroised on drop) to log in again when the HSM drops the session.
    pin: AuthPin,
    // Kept last so the session closes before the library is finalised.
    ctx: Pkcs11,
}

impl Pkcs11Signer {
    /// Opens the token named by `uri`, logs in and finds the private key. `spki_der` is the
    /// intermediate certificate's SubjectPublicKeyInfo: the public half of the key.
    pub fn open(uri: &Pkcs11Uri, spki_der: &[u8]) -> Result<Self, SignerError> {
        let desc = uri.describe();
        let fail = |what: &'static str| {
            let desc = desc.clone();
            move |e: CkError| SignerError::Pkcs11 {
                key: desc.clone(),
                what,
                reason: e.to_string(),
            }
        };
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
            SignerError::Algorithm {
                key: desc.clone(),
                reason: e.to_string(),
            }
        })?;
        let digest = if public.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            &digest::SHA256
        } else if public.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
            &digest::SHA384
        } else {
            return Err(SignerError::Algorithm {
                key: desc,
                reason: "the intermediate's key is not ECDSA P-256 or P-384".into(),
            });
        };
        let pin = AuthPin::from(uri.read_pin()?);

        let ctx = Pkcs11::new(&uri.module_path).map_err(|e| SignerError::Pkcs11 {
            key: desc.clone(),
            what: "loading the module",
            reason: format!(
                "{}; check module-path names an installed PKCS#11 library",
                ck(&e)
            ),
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(fail("initialising the module")(e)),
        }
        let (session, key) = connect(&ctx, uri, &pin, &desc)?;
        Ok(Self {
            session: Mutex::new((session, key)),
            public,
            digest,
            desc,
            uri: uri.clone(),
            pin,
            ctx,
        })
    }

    /// The key's description (no PIN).
    pub fn describe(&self) -> &str {
        &self.desc
    }
}

/// Short rendering of a cryptoki error (its Display text is a paragraph of the standard).
fn ck(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// Errors after which a fresh session (and login) may succeed.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

/// Finds the token, opens a session, logs in and finds the private key.
fn connect(
    ctx: &Pkcs11,
    uri: &Pkcs11Uri,
    pin: &AuthPin,
    desc: &str,
) -> Result<(Session, ObjectHandle), SignerError> {
    let fail = |what: &'static str| {
        move |e: CkError| SignerError::Pkcs11 {
            key: desc.to_owned(),
            what,
            reason: ck(&e),
        }
    };
    let slot = find_slot(ctx, uri).map_err(|reason| SignerError::Pkcs11 {
        key: desc.to_owned(),
        what: "finding the token",
        reason,
    })?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(fail("opening a session"))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => {
            return Err(SignerError::Pkcs11 {
                key: desc.to_owned(),
                what: "logging in",
                reason: format!("{}; check the user PIN", ck(&e)),
            });
        }
    }
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let keys = session
        .find_objects(&template)
        .map_err(fail("searching for the private key"))?;
    let key = match keys.as_slice() {
        [k] => *k,
        [] => {
            return Err(SignerError::Pkcs11 {
                key: desc.to_owned(),
                what: "searching for the private key",
                reason: "no private key with this label/id in the token (pkcs11-tool --list-objects --login shows what is there)".into(),
            });
        }
        _ => {
            return Err(SignerError::Pkcs11 {
                key: desc.to_owned(),
                what: "searching for the private key",
                reason: format!(
                    "{} private keys match; add id=... to the URI to pick one",
                    keys.len()
                ),
            });
        }
    };
    let attrs = session
        .get_attributes(key, &[AttributeType::KeyType])
        .map_err(fail("reading the key type"))?;
    if !attrs
        .iter()
        .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::EC))
    {
        return Err(SignerError::Algorithm {
            key: desc.to_owned(),
            reason: "the token key is not an EC key".into(),
        });
    }
    Ok((session, key))
}

fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, String> {
    let slots = ctx.get_slots_with_token().map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = ctx.get_token_info(slot).map_err(|e| e.to_string())?;
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        if uri.token.as_ref().is_some_and(|t| *t != label)
            || uri.serial.as_ref().is_some_and(|s| *s != serial)
        {
            seen.push(label);
            continue;
        }
        return Ok(slot);
    }
    Err(format!(
        "no token matches (tokens present: {:?}); check token=/serial=/slot-id= in the URI",
        seen
    ))
}

impl PublicKeyData for Pkcs11Signer {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl SigningKey for Pkcs11Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let hash = digest::digest(self.digest, msg);
        let mut guard = self
            .session
            .lock()
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        let raw = match guard.0.sign(&Mechanism::Ecdsa, guard.1, hash.as_ref()) {
            Ok(raw) => raw,
            Err(e) if session_lost(&e) => {
                tracing::warn!(key = %self.desc, error = %ck(&e), "PKCS#11 session lost; logging in again");
                *guard = connect(&self.ctx, &self.uri, &self.pin, &self.desc).map_err(|e| {
                    tracing::error!(key = %self.desc, error = %e, "PKCS#11 reconnect failed");
                    rcgen::Error::RemoteKeyError
                })?;
                guard
                    .0
                    .sign(&Mechanism::Ecdsa, guard.1, hash.as_ref())
                    .map_err(|e| {
                        tracing::error!(key = %self.desc, error = %ck(&e), "PKCS#11 signing failed");
                        rcgen::Error::RemoteKeyError
                    })?
            }
            Err(e) => {
                tracing::error!(key = %self.desc, error = %ck(&e), "PKCS#11 signing failed");
                return Err(rcgen::Error::RemoteKeyError);
            }
        };
        drop(guard);
        raw_ecdsa_to_der(&raw).ok_or(rcgen::Error::RemoteKeyError)
    }
}
