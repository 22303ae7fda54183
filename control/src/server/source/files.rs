//! The watched directory: every `.yaml`/`.yml` file under it, re-imported whole after a change
//! once the directory has been quiet for [`DEBOUNCE_QUIET`] (or at most [`DEBOUNCE_MAX`] after
//! the first change, so a directory that never stops changing is still picked up).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Update;
use crate::istio::{Mode, load_paths_with};

/// Quiet period after the last change before the directory is re-imported: editors and
/// `kubectl`-style tools write a file in several steps (truncate, write, rename).
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(200);
/// Longest wait after the first change of a burst.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// File-system notifications buffered; when full, one pending notification already guarantees
/// a re-import, so dropping more loses nothing.
const NOTIFY_QUEUE: usize = 64;

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path is not a readable directory.
    #[error(
        "config directory {path}: {reason}; pass --config-dir with a directory of Istio YAML files"
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The watcher could not start.
    #[error(
        "cannot watch {path} for changes: {source}; check inotify limits (fs.inotify.max_user_watches)"
    )]
    Watch {
        /// The path.
        path: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
}

/// A running directory watch. Dropping it stops watching.
#[derive(Debug)]
pub struct FileSource {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Imports `dir` once (sent before this returns), then watches it and sends a whole re-import
/// after each debounced burst of changes.
pub async fn watch(dir: &Path, tx: mpsc::Sender<Update>) -> Result<FileSource, FilesError> {
    let meta = std::fs::metadata(dir).map_err(|e| FilesError::NotADirectory {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(FilesError::NotADirectory {
            path: dir.to_owned(),
            reason: "not a directory".into(),
        });
    }
    let (ntx, mut nrx) = mpsc::channel::<()>(NOTIFY_QUEUE);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = ntx.try_send(());
            }
            Err(e) => tracing::warn!("config directory watch: {e}"),
        })
        .map_err(|source| FilesError::Watch {
            path: dir.to_owned(),
            source,
        })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| FilesError::Watch {
            path: dir.to_owned(),
            source,
        })?;
    // The first import happens after the watch is in place, so no change can fall in between.
    let dir = dir.to_owned();
    let _ = tx.send(import(&dir).await).await;
    let task = tokio::spawn(async move {
        while nrx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
            loop {
                let quiet = tokio::time::sleep(DEBOUNCE_QUIET);
                tokio::select! {
                    more = nrx.recv() => if more.is_none() { return },
                    () = quiet => break,
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            if tx.send(import(&dir).await).await.is_err() {
                return;
            }
        }
    });
    Ok(FileSource {
        _watcher: watcher,
        task,
    })
}

async fn import(dir: &Path) -> Update {
    let path = dir.to_owned();
    let origin = dir.display().to_string();
    let loaded = match tokio::task::spawn_blocking(move || load_paths_with(&[path], Mode::Import))
        .await
    {
        Ok(loaded) => loaded,
        Err(e) => {
            // The import did not finish: report it as an error so the update is rejected, never
            // as an empty (and so valid) directory.
            let mut loaded = crate::istio::Loaded::default();
            loaded.findings.push(crate::istio::Finding {
                severity: crate::istio::Severity::Error,
                file: origin.clone(),
                line: 0,
                resource: None,
                path: String::new(),
                message: format!("the import did not finish ({e}); the directory is read again on its next change"),
                code: None,
            });
            loaded
        }
    };
    Update::Files { origin, loaded }
}
