//! The live workload certificate, read by every handshake: one `ArcSwapOption` behind both
//! rustls resolvers, so a rotation applies to the next handshake and never touches
//! established connections.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The current certificate and key; empty until the first issuance.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertStore {
    /// An empty store (handshakes fail until [`CertStore::install`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a new certificate; the next handshake presents it.
    pub fn install(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// The certificate in force, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current
            .load_full()
            .filter(|ck| ck.key.choose_scheme(sigschemes).is_some())
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}
