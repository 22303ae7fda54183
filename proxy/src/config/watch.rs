//! Reload triggers for a configuration file: SIGHUP and changes to the file (inotify through
//! `notify`), debounced so an editor's save sequence causes one reload.
//!
//! The parent directory is watched, not the file, because editors and `kubectl` ConfigMap
//! updates replace the file by renaming, which ends a watch on the file itself.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::RELOAD_DEBOUNCE;

/// Capacity of the raw event channel; events beyond it are dropped, which loses nothing since
/// one pending event already means "reload".
const EVENT_QUEUE: usize = 16;

/// Starts watching `path`; every item received is one (debounced) reason to reload.
pub fn spawn(path: &Path, stop: CancellationToken) -> notify::Result<mpsc::Receiver<()>> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(EVENT_QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<()>(1);
    let file_name = path.file_name().map(|n| n.to_owned());
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name() == file_name.as_deref());
        if ours {
            let _ = raw_tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| notify::Error::generic(&format!("cannot listen for SIGHUP: {e}")))?;
    tokio::spawn(async move {
        let _watcher = watcher; // kept alive as long as the task runs
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = raw_rx.recv() => {
                    // Debounce: wait for a quiet period.
                    while let Ok(Some(())) = tokio::time::timeout(RELOAD_DEBOUNCE, raw_rx.recv()).await {}
                }
                Some(()) = hup.recv() => tracing::info!("SIGHUP: reloading configuration"),
            }
            if out_tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(out_rx)
}
