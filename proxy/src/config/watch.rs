//! Reload triggers for a configuration file: SIGHUP and changes to the file or to the files it
//! names that are re-read on reload (listeners' certificate files), through inotify (`notify`),
//! debounced so an editor's save sequence, or a certificate and its key replaced one after the
//! other, causes one reload.
//!
//! Parent directories are watched, not the files, because editors, `kubectl` ConfigMap updates
//! and certificate tools replace files by renaming, which ends a watch on the file itself.
//! The watched set is the one at start; SIGHUP reloads whatever the file names now.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::RELOAD_DEBOUNCE;

/// Capacity of the raw event channel; events beyond it are dropped, which loses nothing since
/// one pending event already means "reload".
const EVENT_QUEUE: usize = 16;

/// Starts watching `path` and the files `also` (certificate files the configuration names);
/// every item received is one (debounced) reason to reload.
pub fn spawn(
    path: &Path,
    also: &[PathBuf],
    stop: CancellationToken,
) -> notify::Result<mpsc::Receiver<()>> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(EVENT_QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<()>(1);
    // Directory -> names of the watched files in it.
    let mut watched: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
    for p in std::iter::once(path).chain(also.iter().map(PathBuf::as_path)) {
        let (Some(dir), Some(name)) = (parent_dir(p), p.file_name()) else {
            continue;
        };
        watched.entry(dir).or_default().insert(name.to_owned());
    }
    let names: HashSet<OsString> = watched.values().flatten().cloned().collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
        if ours {
            let _ = raw_tx.try_send(());
        }
    })?;
    let config_dir = parent_dir(path);
    for dir in watched.keys() {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {}
            // The configuration file's own directory must be watchable; a certificate
            // directory that is not still reloads on SIGHUP.
            Err(e) if config_dir.as_ref() != Some(dir) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory; reload with SIGHUP after replacing its files");
            }
            Err(e) => return Err(e),
        }
    }
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

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
        Some(_) => Some(PathBuf::from(".")),
        None => None,
    }
}
