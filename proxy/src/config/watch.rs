//! Reload triggers for a configuration file: SIGHUP and changes to the file or to the files it
//! names that are re-read on reload (listeners' certificate files), through inotify (`notify`),
//! debounced so an editor's save sequence, or a certificate and its key replaced one after the
//! other, causes one reload.
//!
//! Parent directories are watched, not the files, because editors, `kubectl` ConfigMap updates
//! and certificate tools replace files by renaming, which ends a watch on the file itself.
//! After every reload the caller gives the files the configuration now names
//! ([`Rewatch::set`]): a reload that points a listener at certificate files elsewhere has those
//! watched from then on.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::RELOAD_DEBOUNCE;

/// Capacity of the raw event channel; events beyond it are dropped, which loses nothing since
/// one pending event already means "reload".
const EVENT_QUEUE: usize = 16;

/// The watched set: the configuration file and the certificate files it names.
pub struct Rewatch {
    config: PathBuf,
    /// File names whose events mean "reload", read by the watcher's callback.
    names: Arc<ArcSwap<HashSet<OsString>>>,
    /// The watcher and the directories it watches.
    state: Mutex<(RecommendedWatcher, HashSet<PathBuf>)>,
}

impl std::fmt::Debug for Rewatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewatch")
            .field("config", &self.config)
            .finish()
    }
}

impl Rewatch {
    /// Watches the configuration file and `also` from now on, and no longer any directory only
    /// the previous set needed. A certificate directory that cannot be watched is logged (SIGHUP
    /// still reloads); the configuration file's own must be watchable.
    pub fn set(&self, also: &[PathBuf]) -> notify::Result<()> {
        let mut wanted: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for p in std::iter::once(self.config.as_path()).chain(also.iter().map(PathBuf::as_path)) {
            let (Some(dir), Some(name)) = (parent_dir(p), p.file_name()) else {
                continue;
            };
            wanted.entry(dir).or_default().insert(name.to_owned());
        }
        self.names
            .store(Arc::new(wanted.values().flatten().cloned().collect()));
        let config_dir = parent_dir(&self.config);
        // Invariant: the lock is only taken here, never across an await or a callback.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (watcher, dirs) = &mut *state;
        for dir in dirs.iter().filter(|d| !wanted.contains_key(*d)) {
            let _ = watcher.unwatch(dir);
        }
        dirs.retain(|d| wanted.contains_key(d));
        let new: Vec<&PathBuf> = wanted.keys().filter(|d| !dirs.contains(*d)).collect();
        for dir in new {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    dirs.insert(dir.clone());
                }
                Err(e) if config_dir.as_ref() != Some(dir) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory; reload with SIGHUP after replacing its files");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Starts watching `path` and the files `also` (certificate files the configuration names);
/// every item received is one (debounced) reason to reload. The [`Rewatch`] changes the set.
pub fn spawn(
    path: &Path,
    also: &[PathBuf],
    stop: CancellationToken,
) -> notify::Result<(mpsc::Receiver<()>, Arc<Rewatch>)> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(EVENT_QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<()>(1);
    let names: Arc<ArcSwap<HashSet<OsString>>> = Arc::default();
    let ours_names = names.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let names = ours_names.load();
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
        if ours {
            let _ = raw_tx.try_send(());
        }
    })?;
    let rewatch = Arc::new(Rewatch {
        config: path.to_path_buf(),
        names,
        state: Mutex::new((watcher, HashSet::new())),
    });
    rewatch.set(also)?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| notify::Error::generic(&format!("cannot listen for SIGHUP: {e}")))?;
    let keep = rewatch.clone();
    tokio::spawn(async move {
        let _watcher = keep; // kept alive as long as the task runs
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
    Ok((out_rx, rewatch))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
        Some(_) => Some(PathBuf::from(".")),
        None => None,
    }
}
