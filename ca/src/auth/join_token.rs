//! One-time bare-metal join tokens. A token is bound to one identity, expires, and is consumed on
//! first use. Only its SHA-256 is stored; lookups compare in constant time. The store is a JSON
//! file (0600) shared by `jalin ca token create` and the CA, re-read on every redemption.
//!
//! Invariant: a token is redeemable at most once: consumption is recorded (and persisted) before
//! the caller is told it authenticated.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_lc_rs::{constant_time, digest};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthMethod, AuthenticatedCaller, Authenticator, Credentials};
use crate::chain::unix_secs;
use crate::spiffe::SpiffeId;

/// Prefix of every join token, so they are recognisable in secret scanners.
pub const TOKEN_PREFIX: &str = "jlt_";
/// Longest token accepted from a caller.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Consumed or expired entries are pruned this long after expiry.
const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown join token")]
    Unknown,
    #[error(
        "join token was already used at {used_at}; create a new one with `jalin ca token create`"
    )]
    Reused { used_at: String },
    #[error("join token expired at {expired_at}; create a new one with `jalin ca token create`")]
    Expired { expired_at: String },
    #[error("join token is bound to {bound}, not {requested}")]
    WrongIdentity { bound: String, requested: String },
    #[error("join token store {path}: {reason}")]
    Store { path: String, reason: String },
}

impl TokenError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown => "join_token_unknown",
            Self::Reused { .. } => "join_token_reused",
            Self::Expired { .. } => "join_token_expired",
            Self::WrongIdentity { .. } => "join_token_wrong_identity",
            Self::Store { .. } => "join_token_store",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    sha256: String,
    spiffe_id: String,
    created_unix: i64,
    expires_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consumed_unix: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    tokens: Vec<StoredToken>,
}

/// The token store: in memory, or backed by a JSON file.
#[derive(Debug)]
pub struct JoinTokenStore {
    path: Option<PathBuf>,
    mem: Mutex<StoreFile>,
}

fn hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn fmt_unix(secs: i64) -> String {
    crate::issue::rfc3339(
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
    )
}

impl JoinTokenStore {
    /// A store that lives only in this process.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            mem: Mutex::new(StoreFile::default()),
        }
    }

    /// A store persisted at `path` (created on first write).
    pub fn at_path(path: &Path) -> Self {
        Self {
            path: Some(path.to_owned()),
            mem: Mutex::new(StoreFile::default()),
        }
    }

    fn store_err(&self, reason: impl std::fmt::Display) -> TokenError {
        TokenError::Store {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<memory>".into()),
            reason: reason.to_string(),
        }
    }

    /// Takes the cross-process lock (`<store>.lock`, flock) so that `jalin ca token create`
    /// and the CA never interleave a read-modify-write: a stale writer could otherwise revive a
    /// consumed token. Released when the returned file is dropped.
    fn lock_file(&self) -> Result<Option<std::fs::File>, TokenError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let f = opts.open(&lock_path).map_err(|e| self.store_err(e))?;
        f.lock().map_err(|e| self.store_err(e))?;
        Ok(Some(f))
    }

    /// Starts a read-modify-write of the store: holds the in-process lock, then the file lock
    /// (other processes), and reads the file afresh. Both are released when the pair drops.
    fn begin(&self) -> Result<(MutexGuard<'_, StoreFile>, Option<std::fs::File>), TokenError> {
        let mut mem = self
            .mem
            .lock()
            .map_err(|_| self.store_err("lock poisoned"))?;
        let flock = self.lock_file()?;
        self.load(&mut mem)?;
        Ok((mem, flock))
    }

    fn load(&self, mem: &mut StoreFile) -> Result<(), TokenError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                *mem = serde_json::from_slice(&bytes).map_err(|e| self.store_err(e))?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *mem = StoreFile::default();
                Ok(())
            }
            Err(e) => Err(self.store_err(e)),
        }
    }

    fn save(&self, mem: &StoreFile) -> Result<(), TokenError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(mem).map_err(|e| self.store_err(e))?;
        let tmp = path.with_extension("tmp");
        crate::cli::files::write_private(&tmp, &bytes).map_err(|e| self.store_err(e))?;
        std::fs::rename(&tmp, path).map_err(|e| self.store_err(e))
    }

    /// Creates a token for `id`, valid for `ttl`. The token is returned once and never stored.
    pub fn create(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, TokenError> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| self.store_err("no randomness"))?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        let (mut mem, _flock) = self.begin()?;
        let now_s = unix_secs(now);
        let prune = i64::try_from(PRUNE_AFTER.as_secs()).unwrap_or(i64::MAX);
        mem.tokens
            .retain(|t| t.expires_unix.saturating_add(prune) > now_s);
        mem.tokens.push(StoredToken {
            sha256: hex::encode(hash(&token)),
            spiffe_id: id.to_string(),
            created_unix: now_s,
            expires_unix: now_s.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            consumed_unix: None,
        });
        self.save(&mem)?;
        Ok(token)
    }

    /// Redeems `token` for `requested` (or for its bound identity when `None`), consuming it.
    pub fn redeem(
        &self,
        token: &str,
        requested: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<SpiffeId, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || !token.starts_with(TOKEN_PREFIX) {
            return Err(TokenError::Unknown);
        }
        let presented = hash(token);
        let (mut mem, _flock) = self.begin()?;
        // Compare against every entry in constant time; do not stop at the first match.
        let mut found = None;
        for (i, t) in mem.tokens.iter().enumerate() {
            let stored = hex::decode(&t.sha256).unwrap_or_default();
            if constant_time::verify_slices_are_equal(&stored, &presented).is_ok() {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            return Err(TokenError::Unknown);
        };
        let now_s = unix_secs(now);
        let entry = &mem.tokens[i];
        if let Some(used) = entry.consumed_unix {
            return Err(TokenError::Reused {
                used_at: fmt_unix(used),
            });
        }
        if now_s >= entry.expires_unix {
            return Err(TokenError::Expired {
                expired_at: fmt_unix(entry.expires_unix),
            });
        }
        let bound = SpiffeId::parse_workload(&entry.spiffe_id)
            .map_err(|e| self.store_err(format!("stored identity: {e}")))?;
        if let Some(r) = requested
            && *r != bound
        {
            return Err(TokenError::WrongIdentity {
                bound: bound.to_string(),
                requested: r.to_string(),
            });
        }
        mem.tokens[i].consumed_unix = Some(now_s);
        self.save(&mem)?;
        Ok(bound)
    }
}

/// Authenticates by join token (metadata `jalin-join-token`).
#[derive(Debug)]
pub struct JoinTokenAuthenticator {
    store: std::sync::Arc<JoinTokenStore>,
}

impl JoinTokenAuthenticator {
    pub fn new(store: std::sync::Arc<JoinTokenStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Authenticator for JoinTokenAuthenticator {
    async fn authenticate(
        &self,
        creds: &Credentials,
        requested: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<Option<AuthenticatedCaller>, AuthError> {
        let Some(token) = creds.join_token.clone() else {
            return Ok(None);
        };
        // The store reads and writes a file under a lock: keep that off the async workers.
        let store = std::sync::Arc::clone(&self.store);
        let requested = requested.cloned();
        let id = tokio::task::spawn_blocking(move || store.redeem(&token, requested.as_ref(), now))
            .await
            .map_err(|e| TokenError::Store {
                path: "<task>".into(),
                reason: e.to_string(),
            })??;
        Ok(Some(AuthenticatedCaller {
            id,
            method: AuthMethod::JoinToken,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        format!("spiffe://cluster.local/ns/bm/sa/{s}")
            .parse()
            .unwrap()
    }

    #[test]
    fn one_time_bound_expiring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = JoinTokenStore::at_path(&path);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let tok = store
            .create(&id("host1"), Duration::from_secs(600), t0)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&tok), "token stored in clear");

        // Wrong identity does not consume it.
        let err = store.redeem(&tok, Some(&id("host2")), t0).unwrap_err();
        assert_eq!(err.code(), "join_token_wrong_identity");
        // A second store instance on the same file sees the same state.
        let other = JoinTokenStore::at_path(&path);
        assert_eq!(other.redeem(&tok, None, t0).unwrap(), id("host1"));
        assert_eq!(
            store.redeem(&tok, None, t0).unwrap_err().code(),
            "join_token_reused"
        );

        let tok2 = store
            .create(&id("host3"), Duration::from_secs(10), t0)
            .unwrap();
        let late = t0 + Duration::from_secs(10);
        assert_eq!(
            store.redeem(&tok2, None, late).unwrap_err().code(),
            "join_token_expired"
        );
        assert_eq!(
            store.redeem("jlt_00", None, t0).unwrap_err().code(),
            "join_token_unknown"
        );
    }
}
