//! The Kubernetes source: Istio objects go to the store one by one (each parsed by the same
//! importer as files); Services, EndpointSlices and Pods are turned into the service registry,
//! derived again once per batch of events.

use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Update;
use crate::k8s::{
    KubeObject, KubeSource, KubeSourceConfig, KubeSourceHandle, RegistrySettings, SourceError,
    SourceEvent,
};

/// Events handled before the registry is derived again (bounds the latency of a long burst).
const MAX_BATCH: usize = 256;

/// A running Kubernetes source. Dropping it stops every watch.
#[derive(Debug)]
pub struct KubeConfigSource {
    handle: std::sync::Arc<KubeSourceHandle>,
    task: JoinHandle<()>,
}

impl KubeConfigSource {
    /// Read access to the live store (the injection webhook reads namespace labels from it).
    pub fn reader(&self) -> crate::k8s::StoreReader {
        self.handle.reader()
    }
}

impl Drop for KubeConfigSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching through `client` and forwards changes to `tx`.
pub async fn start(
    client: Client,
    settings: RegistrySettings,
    tx: mpsc::Sender<Update>,
) -> Result<KubeConfigSource, SourceError> {
    let (handle, mut rx) = KubeSource::new(client, KubeSourceConfig::default())
        .start()
        .await?;
    for kind in handle.skipped() {
        tracing::warn!(
            kind = kind.kind_name(),
            "Istio CRD not installed; its resources are not read"
        );
    }
    let handle = std::sync::Arc::new(handle);
    let reader = handle.clone();
    let task = tokio::spawn(async move {
        let mut ready = false;
        while let Some(first) = rx.recv().await {
            let mut registry_dirty = false;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            let mut updates = Vec::new();
            let mut became_ready = false;
            for ev in batch {
                match ev {
                    SourceEvent::Upsert(obj) => match &*obj {
                        KubeObject::Istio(i) => {
                            updates.push(Update::KubeUpsert(obj.key(), Box::new(i.clone())));
                        }
                        KubeObject::Namespace(_) => {}
                        _ => registry_dirty = true,
                    },
                    SourceEvent::Delete { key, last } => match &*last {
                        KubeObject::Istio(_) => updates.push(Update::KubeDelete(key)),
                        KubeObject::Namespace(_) => {}
                        _ => registry_dirty = true,
                    },
                    SourceEvent::Ready => became_ready = true,
                    SourceEvent::Relisted { kind } => {
                        tracing::info!(
                            kind = kind.kind_name(),
                            "Kubernetes watch restarted and relisted"
                        );
                    }
                    SourceEvent::WatchError { kind, message } => {
                        tracing::warn!(
                            kind = kind.kind_name(),
                            "Kubernetes watch failed, retrying: {message}"
                        );
                    }
                }
            }
            if registry_dirty || became_ready {
                let registry = reader.registry(&settings);
                updates.push(Update::Registry(Box::new(registry)));
            }
            if became_ready && !ready {
                ready = true;
                updates.push(Update::KubeReady);
            }
            for u in updates {
                if tx.send(u).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(KubeConfigSource { handle, task })
}
