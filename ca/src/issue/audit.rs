//! The issuance audit trail: one JSON line per issuance and per refusal, written to a configured
//! file or writer. Lines carry identities, serials and reasons; never keys, CSRs or tokens.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// One audit record.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339 time of the decision.
    pub ts: String,
    /// `certificate_issued` or `certificate_refused`.
    pub event: &'static str,
    /// How the caller authenticated (`workload_certificate`, `join_token`, `kubernetes_token`,
    /// `cli`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    /// The identity the caller proved, when it proved one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The identity asked for (the CSR's URI SAN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The identity written into the issued certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Remote address of the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Serial of the issued certificate, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// notAfter of the issued certificate, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Lifetime granted or asked for, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Machine-readable refusal reason (the metric label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    /// Human-readable refusal reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// RFC 3339 rendering of a time (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

type Sink = Box<dyn Write + Send>;

/// Where audit lines go. Cloning shares the sink.
#[derive(Clone)]
pub struct AuditLog {
    sink: Arc<Mutex<Sink>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// Shared in-memory audit buffer, for tests and embedding.
#[derive(Clone, Default, Debug)]
pub struct AuditBuffer(Arc<Mutex<Vec<u8>>>);

impl AuditBuffer {
    /// The lines written so far, parsed as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The raw text written so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for AuditBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("audit buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditLog {
    /// Appends to `path` (created 0600 if missing).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        Ok(Self::to_writer(opts.open(path)?))
    }

    /// Writes to any writer.
    pub fn to_writer(w: impl Write + Send + 'static) -> Self {
        Self {
            sink: Arc::new(Mutex::new(Box::new(w))),
        }
    }

    /// Writes to memory; returns the log and a handle to read it back.
    pub fn in_memory() -> (Self, AuditBuffer) {
        let buf = AuditBuffer::default();
        (Self::to_writer(buf.clone()), buf)
    }

    /// Writes one line. A failing sink is reported on the log, never to the caller: issuance
    /// does not depend on the audit disk, but the failure is loud.
    pub fn write(&self, event: &AuditEvent) {
        let line = match serde_json::to_string(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise audit event");
                return;
            }
        };
        let result = self
            .sink
            .lock()
            .map_err(|_| std::io::Error::other("audit sink poisoned"))
            .and_then(|mut s| {
                s.write_all(line.as_bytes())?;
                s.write_all(b"\n")?;
                s.flush()
            });
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the CA audit log");
            metrics::counter!("jalin_ca_audit_write_failures_total").increment(1);
        }
    }
}
