//! Access logging from Istio `Telemetry` resources: selection for this workload ([`select`]),
//! Envoy format strings ([`format`]), and non-blocking writers ([`writer`]). Compiled once per
//! configuration (file or xDS, the same stage) into an [`AccessLog`] the snapshot carries; the
//! request path asks it for the mode's [`ModeLog`] and, only when there is one, captures what
//! the format names into a [`Pending`] record that the request's meter finishes once.
//!
//! Zero cost when nothing applies: [`AccessLog::for_direction`] is a field read returning
//! `None`, and no header is copied, no clock read, nothing allocated.

pub mod format;
pub mod select;
pub mod writer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use jalin_xds::model::listener::Direction;
use serde::{Deserialize, Serialize};

use crate::http::forward;
use format::{Format, Needs, Record};
use select::{Selected, Workload};
use writer::{Destination, Sink};

/// The `access_log` section: providers (Istio's MeshConfig `extensionProviders` shape) and the
/// workload's namespace and labels when neither `identity` nor `control_plane.node` gives them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// The workload's namespace for Telemetry selection (default: the identity's or the
    /// control plane node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload's labels for `selector.matchLabels` (default: the identity's or node's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Access-log providers by name. A name a Telemetry uses that is not listed here (and
    /// Istio's built-in `envoy`) writes to stdout in its format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
}

/// `extensionProviders[i]`: only `envoyFileAccessLog` is an access-log provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provider {
    pub name: String,
    pub envoy_file_access_log: FileAccessLog,
}

/// `envoyFileAccessLog`: `path` (`/dev/stdout` is stdout) and `logFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileAccessLog {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `logFormat`: `text` or `labels` (a JSON dictionary of format strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Why the telemetry configuration cannot be used: which document or provider, the field
/// path in it, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    /// `telemetry[i]` when a document is at fault (its index in the list).
    pub document: Option<usize>,
    /// Full field path, e.g. `telemetry[0].spec.accessLogging[1].overrides[1].format`.
    pub path: String,
    pub message: String,
    pub hint: String,
}

/// One mode's compiled access logging: what to capture and where each format goes.
#[derive(Debug)]
pub struct ModeLog {
    needs: Needs,
    targets: Vec<(Format, Arc<Sink>)>,
}

/// A mode's plan before sinks are started (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePlan {
    pub resource: String,
    pub needs: Needs,
    pub targets: Vec<(Format, Destination)>,
}

/// The compiled configuration, before sinks are started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub client: Option<ModePlan>,
    pub server: Option<ModePlan>,
    /// Listed once when the configuration is applied.
    pub warnings: Vec<String>,
}

/// Access logging in force, carried by the snapshot.
#[derive(Debug, Default)]
pub struct AccessLog {
    client: Option<Arc<ModeLog>>,
    server: Option<Arc<ModeLog>>,
}

impl AccessLog {
    /// Starts the plan's sinks (a writer thread per destination, shared process-wide).
    pub fn start(plan: Plan) -> Self {
        let activate = |m: Option<ModePlan>| {
            m.map(|m| {
                Arc::new(ModeLog {
                    needs: m.needs,
                    targets: m
                        .targets
                        .into_iter()
                        .map(|(f, d)| (f, writer::sink(&d)))
                        .collect(),
                })
            })
        };
        Self {
            client: activate(plan.client),
            server: activate(plan.server),
        }
    }

    /// The log for requests of `direction` (outbound: `CLIENT`; inbound: `SERVER`).
    #[inline]
    pub fn for_direction(&self, direction: Direction) -> Option<&Arc<ModeLog>> {
        match direction {
            Direction::Outbound => self.client.as_ref(),
            Direction::Inbound => self.server.as_ref(),
        }
    }
}

/// A control plane's Telemetry resource `ns/name` as a document with `metadata`: the body may
/// be a whole document or its `spec` alone.
pub fn document_from_resource(key: &str, body: &serde_json::Value) -> serde_json::Value {
    if body.get("metadata").is_some() {
        return body.clone();
    }
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    let spec = body.get("spec").cloned().unwrap_or_else(|| body.clone());
    serde_json::json!({
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The key (`ns/name`) of a Telemetry document, empty when it has none.
pub fn document_key(doc: &serde_json::Value) -> String {
    let s = |p: &str| doc.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
    format!("{}/{}", s("/metadata/namespace"), s("/metadata/name"))
}

/// Compiles a validated configuration's access logging (what the snapshot runs). Warnings are
/// logged here, once per applied configuration.
pub fn build(config: &crate::config::ProxyConfig) -> AccessLog {
    match compile(
        &config.telemetry,
        &config.access_log,
        &config.telemetry_workload(),
    ) {
        Ok(plan) => {
            for w in &plan.warnings {
                tracing::warn!(warning = %w, "access logging");
            }
            AccessLog::start(plan)
        }
        Err(e) => {
            // Validated on load: not reached for a configuration that was accepted.
            tracing::error!(error = %e, "access logging not compiled; no access log");
            AccessLog::default()
        }
    }
}

/// Compiles the Telemetry documents `docs` (a configuration's `telemetry` list, each with its
/// `metadata`) for `workload` with the providers of `section`. Pure.
pub fn compile(
    docs: &[serde_json::Value],
    section: &AccessLogSection,
    workload: &Workload,
) -> Result<Plan, CompileError> {
    let mut parsed = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let t = select::parse(doc).map_err(|e| CompileError {
            document: Some(i),
            path: join(&format!("telemetry[{i}]"), &e.path),
            message: e.message,
            hint: "fix the Telemetry; the previous configuration stays in force".into(),
        })?;
        parsed.push(t);
    }
    for (p, provider) in section.providers.iter().enumerate() {
        if section.providers[..p]
            .iter()
            .any(|q| q.name == provider.name)
        {
            return Err(CompileError {
                document: None,
                path: format!("access_log.providers[{p}].name"),
                message: format!("provider `{}` is defined twice", provider.name),
                hint: "give each provider a unique name".into(),
            });
        }
        if let Some(lf) = &provider.envoy_file_access_log.log_format
            && lf.text.is_some()
            && lf.labels.is_some()
        {
            return Err(CompileError {
                document: None,
                path: format!("access_log.providers[{p}].envoyFileAccessLog.logFormat"),
                message: "has both `text` and `labels`; expected one".into(),
                hint: "keep `labels` for JSON lines or `text` for a text line".into(),
            });
        }
    }
    let selection = select::select(&parsed, workload);
    let mut warnings = selection.warnings;
    let doc_of = |key: &str| parsed.iter().position(|t| t.key() == key);
    let mut mode = |s: Option<Selected>| -> Result<Option<ModePlan>, CompileError> {
        let Some(s) = s else { return Ok(None) };
        let mut needs = Needs::default();
        let mut targets = Vec::new();
        for name in &s.providers {
            let provider = section.providers.iter().position(|p| &p.name == name);
            let (text, path, dest) = match (&s.format, provider) {
                (Some(f), p) => (
                    Fmt::Text(f),
                    doc_of(&s.resource).map_or_else(
                        || format!("Telemetry {} {}.format", s.resource, s.format_path),
                        |i| format!("telemetry[{i}].{}.format", s.format_path),
                    ),
                    p.map_or(Destination::Stdout, |p| {
                        Destination::from_path(&section.providers[p].envoy_file_access_log.path)
                    }),
                ),
                (None, Some(p)) => {
                    let fal = &section.providers[p].envoy_file_access_log;
                    let path = format!("access_log.providers[{p}].envoyFileAccessLog.logFormat");
                    let fmt = match &fal.log_format {
                        Some(LogFormat {
                            labels: Some(l), ..
                        }) => Fmt::Labels(l),
                        Some(LogFormat { text: Some(t), .. }) => Fmt::Text(t),
                        _ => Fmt::Text(format::DEFAULT_TEXT_FORMAT),
                    };
                    (fmt, path, Destination::from_path(&fal.path))
                }
                (None, None) => (
                    Fmt::Text(format::DEFAULT_TEXT_FORMAT),
                    format!("Telemetry {}", s.resource),
                    Destination::Stdout,
                ),
            };
            if provider.is_none() && name != "envoy" {
                warnings.push(format!(
                    "Telemetry {}: provider `{name}` is not defined under access_log.providers; \
                     its lines go to stdout (Istio's `envoy` provider)",
                    s.resource
                ));
            }
            let compiled = match text {
                Fmt::Text(t) => format::compile(t, &mut needs),
                Fmt::Labels(l) => format::compile_labels(l, &mut needs),
            };
            let (fmt, unknown) = compiled.map_err(|e| CompileError {
                document: doc_of(&s.resource),
                path,
                message: format!(
                    "Telemetry {}: the access-log format: {}",
                    s.resource, e.message
                ),
                hint: "write Envoy command operators as %NAME% or %NAME(ARG)%, `%%` for `%`".into(),
            })?;
            for op in unknown {
                warnings.push(format!(
                    "Telemetry {}: access-log operator {op} has no value in jalin; written as `-`",
                    s.resource
                ));
            }
            targets.push((fmt, dest));
        }
        Ok(Some(ModePlan {
            resource: s.resource,
            needs,
            targets,
        }))
    };
    let client = mode(selection.client)?;
    let server = mode(selection.server)?;
    warnings.dedup();
    Ok(Plan {
        client,
        server,
        warnings,
    })
}

/// A format as written, before it is compiled.
enum Fmt<'a> {
    Text(&'a str),
    Labels(&'a serde_json::Map<String, serde_json::Value>),
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

/// The values of one request, captured as it goes; written when its meter records it.
#[derive(Debug)]
pub struct Pending {
    log: Arc<ModeLog>,
    record: Record,
}

/// Where a request came from, for the `DOWNSTREAM_*` operators.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The verified mTLS peer's SPIFFE ID (moved into the record).
    pub peer_uri_san: Option<String>,
}

impl Pending {
    /// Captures the request's start and the request values `log`'s formats name.
    pub fn begin<B>(log: &Arc<ModeLog>, req: &http::Request<B>, down: Downstream) -> Box<Self> {
        let headers = req.headers();
        let request_headers = log
            .needs
            .request
            .iter()
            .map(|n| match n.as_str() {
                ":method" => Some(req.method().as_str().to_owned()),
                ":path" => Some(forward::path_and_query(req).to_owned()),
                ":authority" => forward::authority(req).map(str::to_owned),
                ":scheme" => Some(req.uri().scheme_str().unwrap_or("http").to_owned()),
                name => header_value(headers, name),
            })
            .collect();
        let protocol = match req.version() {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        Box::new(Self {
            log: log.clone(),
            record: Record {
                start: Some(SystemTime::now()),
                request_headers,
                protocol,
                downstream_remote: Some(down.remote),
                downstream_local: Some(down.local),
                peer_uri_san: down.peer_uri_san,
                ..Record::default()
            },
        })
    }

    /// The cluster chosen and, when known, the upstream host.
    pub fn upstream(&mut self, cluster: &Arc<str>, host: Option<SocketAddr>) {
        self.record.upstream_cluster = Some(cluster.clone());
        self.record.upstream_host = host;
    }

    /// The upstream response's headers (those the formats name).
    pub fn response(&mut self, headers: &HeaderMap) {
        self.record.response_headers = self
            .log
            .needs
            .response
            .iter()
            .map(|n| header_value(headers, n))
            .collect();
    }

    /// The body bytes received from the client and sent to it (Envoy's `BYTES_RECEIVED`,
    /// `BYTES_SENT`), counted as the bodies were forwarded.
    pub fn bytes(&mut self, received: u64, sent: u64) {
        self.record.bytes_received = received;
        self.record.bytes_sent = sent;
    }

    /// The request is over: renders one line per target and enqueues it.
    pub fn finish(
        mut self: Box<Self>,
        code: u16,
        grpc_status: Option<u8>,
        flags: &'static str,
        duration: Duration,
    ) {
        self.record.code = code;
        self.record.grpc_status = grpc_status;
        self.record.flags = flags;
        self.record.duration = duration;
        for (fmt, sink) in &self.log.targets {
            sink.send(fmt.render(&self.record));
        }
    }
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
