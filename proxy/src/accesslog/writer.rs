//! Access-log sinks: each a bounded queue drained by a dedicated thread that writes lines to
//! stdout or to a file. The request path only tries to enqueue: when the queue is full the line
//! is dropped and counted in `jalin_access_log_dropped_total`; it never waits.
//!
//! Sinks are shared process-wide by destination, so a reload keeps the same thread and file.
//!
//! Rotation: [`reopen`] (SIGUSR1, as Envoy does) makes every file sink open its path again before
//! it writes its next lines, so `logrotate` can move the file and signal the proxy; lines written
//! before that still go to the moved file, none is lost.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Lines dropped because a sink's queue was full or its writer is gone.
pub const DROPPED_TOTAL: &str = "jalin_access_log_dropped_total";

/// Lines a sink holds before it drops: at ~300 bytes a line, about 2.5 MiB per sink, several
/// seconds of a busy sidecar's requests while stdout is slow.
pub const QUEUE_CAPACITY: usize = 8192;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// Istio's `envoyFileAccessLog.path`: `/dev/stdout` (or empty) is stdout.
    pub fn from_path(path: &str) -> Self {
        match path {
            "" | "/dev/stdout" => Destination::Stdout,
            p => Destination::File(PathBuf::from(p)),
        }
    }
}

/// A queue to one destination's writer thread.
#[derive(Debug)]
pub struct Sink {
    pub(super) tx: SyncSender<String>,
    pub(super) label: String,
}

impl Sink {
    /// Enqueues `line`; never blocks. Drops and counts it when the queue is full.
    pub fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!(DROPPED_TOTAL, "sink" => self.label.clone()).increment(1);
            }
        }
    }
}

static SINKS: Mutex<Option<HashMap<Destination, Arc<Sink>>>> = Mutex::new(None);

/// Bumped by [`reopen`]; a file sink that sees a newer value opens its path again.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every file sink to open its path again before its next write (after `logrotate` moved
/// the file). Envoy does this on SIGUSR1.
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The sink for `dest`, started on first use (when a configuration is applied, never per
/// request). A file that cannot be opened is reported and its lines go to stdout instead.
pub fn sink(dest: &Destination) -> Arc<Sink> {
    let mut guard = match SINKS.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(dest) {
        return s.clone();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE_CAPACITY);
    let (label, out): (String, Box<dyn Write + Send>) = match dest {
        Destination::Stdout => ("stdout".into(), Box::new(std::io::stdout())),
        Destination::File(p) => match open(p) {
            Ok(f) => (p.display().to_string(), Box::new(f)),
            Err(e) => {
                tracing::error!(path = %p.display(), error = %e, "cannot open the access-log file; its lines go to stdout (check the directory exists and is writable)");
                (p.display().to_string(), Box::new(std::io::stdout()))
            }
        },
    };
    let name = format!("jalin-access-log-{label}");
    let path = match dest {
        Destination::File(p) => Some(p.clone()),
        Destination::Stdout => None,
    };
    let spawned = std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || write_loop(&rx, out, path.as_deref()));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the access-log writer; its lines are dropped and counted");
    }
    let s = Arc::new(Sink { tx, label });
    map.insert(dest.clone(), s.clone());
    s
}

/// Writes lines as they come, flushing whenever the queue is momentarily empty. A file sink
/// (`path`) opens its path again first when [`reopen`] was called since it last did; if that
/// fails it keeps writing where it did and says so.
fn write_loop(rx: &Receiver<String>, out: Box<dyn Write + Send>, path: Option<&Path>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut generation = REOPEN.load(Ordering::Relaxed);
    while let Ok(line) = rx.recv() {
        let now = REOPEN.load(Ordering::Relaxed);
        if let Some(p) = path
            && now != generation
        {
            generation = now;
            match open(p) {
                Ok(f) => {
                    let _ = out.flush();
                    out = std::io::BufWriter::with_capacity(64 * 1024, Box::new(f));
                }
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "cannot reopen the access-log file; lines keep going to the file open before");
                }
            }
        }
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        while let Ok(more) = rx.try_recv() {
            ok &= out.write_all(more.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            metrics::counter!(DROPPED_TOTAL, "sink" => "write_error").increment(1);
        }
    }
}
