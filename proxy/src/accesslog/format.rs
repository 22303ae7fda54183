//! Envoy access-log formats: a text format string or a JSON dictionary of them, compiled once
//! into segments, rendered per finished request from a [`Record`]. Pure: no I/O.
//!
//! Invariants: the values of credential headers (`authorization`, `proxy-authorization`,
//! `cookie`, `set-cookie`, `x-jalin-*`) are never captured: an operator naming one compiles to
//! `[REDACTED]`. Operators jalin cannot know (`%{FILTER_STATE(wasm.x)}%`, `%DYNAMIC_METADATA(..)%`)
//! compile to `-` and are returned as warnings, once per compile.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::http::headers::JALIN_PREFIX;

/// What a redacted value is written as.
pub const REDACTED: &str = "[REDACTED]";

/// Istio's default text format (`meshConfig.accessLogFormat` unset), as Istio documents it.
pub const DEFAULT_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Headers whose values are never written: credentials, and jalin's own headers (those
/// [`crate::http::headers::strip_untrusted`] drops from outside the mesh).
pub fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || n.starts_with(JALIN_PREFIX)
}

/// Operators of Istio's default format that jalin has no value for (Envoy internals); they
/// render `-` without a warning, as Envoy renders them for a request that has none.
const QUIET_UNKNOWN: &[&str] = &[
    "RESPONSE_CODE_DETAILS",
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_LOCAL_ADDRESS",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
];

/// A header the record must capture: lowercase name (or a pseudo-header `:method` ...).
pub type HeaderKey = String;

/// One command operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    StartTime,
    /// `REQ(X?Y):N`: indexes into the record's captured request headers; `max` truncates.
    Req {
        main: usize,
        alt: Option<usize>,
        max: Option<usize>,
    },
    Resp {
        main: usize,
        alt: Option<usize>,
        max: Option<usize>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    Duration,
    UpstreamCluster,
    UpstreamHost,
    DownstreamRemote,
    DownstreamRemoteNoPort,
    DownstreamLocal,
    DownstreamPeerUriSan,
    BytesReceived,
    BytesSent,
    GrpcStatus,
    /// A credential header: written as [`REDACTED`].
    Redacted,
    /// An operator jalin has no value for: `-`.
    Unknown,
}

impl Op {
    fn numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode | Op::Duration | Op::BytesReceived | Op::BytesSent
        )
    }
}

/// A literal or an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Lit(String),
    Op(Op),
}

/// A compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A text line; a newline is added when the format has none at its end.
    Text(Vec<Segment>),
    /// A JSON object written on one line; each value a template (nested objects allowed).
    Json(Vec<(String, JsonValue)>),
}

/// A value of a JSON format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonValue {
    Template(Vec<Segment>),
    Object(Vec<(String, JsonValue)>),
    /// A constant (number, bool, null) written as given.
    Const(String),
}

/// A format that does not parse: where (path or column) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    pub message: String,
}

/// The headers a compiled format reads: request and response names, lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub request: Vec<HeaderKey>,
    pub response: Vec<HeaderKey>,
}

impl Needs {
    fn index(list: &mut Vec<HeaderKey>, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        match list.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                list.push(name);
                list.len() - 1
            }
        }
    }
}

/// Compiles `text`: JSON when it is a JSON object (the seeds write their JSON format as a
/// string), else a text format. Returns the format and the unknown operators it names.
pub fn compile(text: &str, needs: &mut Needs) -> Result<(Format, Vec<String>), FormatError> {
    let mut unknown = Vec::new();
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| FormatError {
            message: format!(
                "starts with `{{` but is not a JSON object ({e}); expected a JSON object whose \
                 values are format strings, or a text format that does not start with `{{`"
            ),
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(FormatError {
                message: "expected a JSON object".into(),
            });
        };
        let fields = json_object(&map, "", needs, &mut unknown)?;
        return Ok((Format::Json(fields), unknown));
    }
    let mut segs = template(text, needs, &mut unknown).map_err(|m| FormatError { message: m })?;
    if !matches!(segs.last(), Some(Segment::Lit(l)) if l.ends_with('\n')) {
        segs.push(Segment::Lit("\n".into()));
    }
    Ok((Format::Text(segs), unknown))
}

/// Compiles Istio's `logFormat.labels`: a flat JSON dictionary of format strings.
pub fn compile_labels(
    labels: &serde_json::Map<String, serde_json::Value>,
    needs: &mut Needs,
) -> Result<(Format, Vec<String>), FormatError> {
    let mut unknown = Vec::new();
    let fields = json_object(labels, "", needs, &mut unknown)?;
    Ok((Format::Json(fields), unknown))
}

fn json_object(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    needs: &mut Needs,
    unknown: &mut Vec<String>,
) -> Result<Vec<(String, JsonValue)>, FormatError> {
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let value = match v {
            serde_json::Value::String(s) => {
                JsonValue::Template(template(s, needs, unknown).map_err(|m| FormatError {
                    message: format!("key `{here}`: {m}"),
                })?)
            }
            serde_json::Value::Object(o) => {
                JsonValue::Object(json_object(o, &here, needs, unknown)?)
            }
            serde_json::Value::Array(_) => {
                return Err(FormatError {
                    message: format!(
                        "key `{here}`: a list is not a format value; expected a string or an object"
                    ),
                });
            }
            other => JsonValue::Const(other.to_string()),
        };
        out.push((k.clone(), value));
    }
    Ok(out)
}

/// Parses a format string into literals and operators.
fn template(s: &str, needs: &mut Needs, unknown: &mut Vec<String>) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            lit.push('%');
            rest = r;
            continue;
        }
        // An argument may hold `%` itself (`%START_TIME(%Y-%m-%d)%`): then it ends at `)%`.
        let end = match after.find('%') {
            Some(e) if after[..e].contains('(') && !after[..e].contains(')') => {
                after.find(")%").map(|p| p + 1)
            }
            e => e,
        };
        let Some(end) = end else {
            let col = s.len() - rest.len() + i + 1;
            return Err(format!(
                "`%` at character {col} starts no command operator; expected `%OPERATOR%`, or `%%` for a literal `%`"
            ));
        };
        let token = &after[..end];
        if !valid_token(token) {
            let col = s.len() - rest.len() + i + 1;
            return Err(format!(
                "`%{token}%` at character {col} is not a command operator; expected `%OPERATOR%` \
                 or `%OPERATOR(ARG)%`, or `%%` for a literal `%`"
            ));
        }
        if !lit.is_empty() {
            out.push(Segment::Lit(std::mem::take(&mut lit)));
        }
        let op = operator(token, needs);
        if op == Op::StartTime && token != "START_TIME" {
            let note =
                format!("%{token}% (its time format is not applied; RFC 3339 UTC is written)");
            if !unknown.contains(&note) {
                unknown.push(note);
            }
        }
        let spelled = format!("%{token}%");
        if op == Op::Unknown && !QUIET_UNKNOWN.contains(&token) && !unknown.contains(&spelled) {
            unknown.push(spelled);
        }
        out.push(Segment::Op(op));
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Segment::Lit(lit));
    }
    Ok(out)
}

/// `NAME`, `NAME(ARGS)`, `NAME(ARGS):N`, or `{...}` (Istio's wasm-style spelling).
fn valid_token(t: &str) -> bool {
    if t.starts_with('{') && t.ends_with('}') && t.len() > 2 {
        return !t.contains(['\n', '"']);
    }
    let name_end = t.find('(').unwrap_or(t.len());
    let name = &t[..name_end];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && (name_end == t.len() || t[name_end..].contains(')'))
        && !t.contains(['\n', '"', ' '])
}

fn operator(token: &str, needs: &mut Needs) -> Op {
    let (name, args, max) = split_token(token);
    match (name, args) {
        ("START_TIME", _) => Op::StartTime,
        ("REQ" | "REQUEST_HEADER", Some(a)) => header_op(a, max, &mut needs.request, false),
        ("RESP" | "RESPONSE_HEADER", Some(a)) => header_op(a, max, &mut needs.response, true),
        ("PROTOCOL", None) => Op::Protocol,
        ("RESPONSE_CODE", None) => Op::ResponseCode,
        ("RESPONSE_FLAGS", None) => Op::ResponseFlags,
        ("DURATION", None) => Op::Duration,
        ("UPSTREAM_CLUSTER", None) => Op::UpstreamCluster,
        ("UPSTREAM_HOST", None) => Op::UpstreamHost,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Op::DownstreamRemote,
        ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", None) => Op::DownstreamRemoteNoPort,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Op::DownstreamLocal,
        ("DOWNSTREAM_PEER_URI_SAN", None) => Op::DownstreamPeerUriSan,
        ("BYTES_RECEIVED", None) => Op::BytesReceived,
        ("BYTES_SENT", None) => Op::BytesSent,
        ("GRPC_STATUS_NUMBER", None) => Op::GrpcStatus,
        _ => Op::Unknown,
    }
}

/// `NAME(ARGS):N` -> (NAME, ARGS, N).
fn split_token(t: &str) -> (&str, Option<&str>, Option<usize>) {
    let Some(open) = t.find('(') else {
        return (t, None, None);
    };
    let Some(close) = t.rfind(')') else {
        return (t, None, None);
    };
    let max = t[close + 1..]
        .strip_prefix(':')
        .and_then(|n| n.parse().ok());
    (&t[..open], Some(&t[open + 1..close]), max)
}

fn header_op(args: &str, max: Option<usize>, list: &mut Vec<HeaderKey>, resp: bool) -> Op {
    let (main, alt) = match args.split_once('?') {
        Some((m, a)) => (m, Some(a)),
        None => (args, None),
    };
    if main.is_empty() || is_sensitive(main) || alt.is_some_and(is_sensitive) {
        return if main.is_empty() {
            Op::Unknown
        } else {
            Op::Redacted
        };
    }
    let main = Needs::index(list, main);
    let alt = alt.filter(|a| !a.is_empty()).map(|a| Needs::index(list, a));
    if resp {
        Op::Resp { main, alt, max }
    } else {
        Op::Req { main, alt, max }
    }
}

/// One finished request, as the access log sees it. Header values are only those the format
/// named (indexes of [`Needs`]).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub start: Option<SystemTime>,
    pub request_headers: Vec<Option<String>>,
    pub response_headers: Vec<Option<String>>,
    pub protocol: &'static str,
    pub code: u16,
    pub grpc_status: Option<u8>,
    pub flags: &'static str,
    pub duration: Duration,
    pub upstream_cluster: Option<std::sync::Arc<str>>,
    pub upstream_host: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub peer_uri_san: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// The value of `op` for `r`; `None` when the request has none (written `-`).
fn value(op: &Op, r: &Record, out: &mut String) -> bool {
    let start = out.len();
    match op {
        Op::StartTime => match r.start {
            Some(t) => out.push_str(&start_time(t)),
            None => return false,
        },
        Op::Req { main, alt, max } | Op::Resp { main, alt, max } => {
            let headers = if matches!(op, Op::Req { .. }) {
                &r.request_headers
            } else {
                &r.response_headers
            };
            let get = |i: &usize| headers.get(*i).and_then(Option::as_deref);
            let Some(v) = get(main).or_else(|| alt.as_ref().and_then(get)) else {
                return false;
            };
            match max {
                Some(n) => out.extend(v.chars().take(*n)),
                None => out.push_str(v),
            }
        }
        Op::Protocol => out.push_str(r.protocol),
        Op::ResponseCode => {
            let _ = write!(out, "{}", r.code);
        }
        Op::ResponseFlags => out.push_str(r.flags),
        Op::Duration => {
            let _ = write!(out, "{}", r.duration.as_millis());
        }
        Op::UpstreamCluster => match &r.upstream_cluster {
            Some(c) => out.push_str(c),
            None => return false,
        },
        Op::UpstreamHost => match r.upstream_host {
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => return false,
        },
        Op::DownstreamRemote | Op::DownstreamRemoteNoPort | Op::DownstreamLocal => {
            let addr = if *op == Op::DownstreamLocal {
                r.downstream_local
            } else {
                r.downstream_remote
            };
            match (addr, op) {
                (Some(a), Op::DownstreamRemoteNoPort) => {
                    let _ = write!(out, "{}", a.ip());
                }
                (Some(a), _) => {
                    let _ = write!(out, "{a}");
                }
                (None, _) => return false,
            }
        }
        Op::DownstreamPeerUriSan => match &r.peer_uri_san {
            Some(s) => out.push_str(s),
            None => return false,
        },
        Op::BytesReceived => {
            let _ = write!(out, "{}", r.bytes_received);
        }
        Op::BytesSent => {
            let _ = write!(out, "{}", r.bytes_sent);
        }
        Op::GrpcStatus => match r.grpc_status {
            Some(s) => {
                let _ = write!(out, "{s}");
            }
            None => return false,
        },
        Op::Redacted => out.push_str(REDACTED),
        Op::Unknown => return false,
    }
    out.len() > start
}

/// Envoy's default `START_TIME`: RFC 3339 UTC with milliseconds.
fn start_time(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt).unwrap_or_else(|_| "-".to_owned())
}

impl Format {
    /// Renders `r` as one line, newline-terminated.
    pub fn render(&self, r: &Record) -> String {
        let mut out = String::with_capacity(256);
        match self {
            Format::Text(segs) => {
                for s in segs {
                    match s {
                        Segment::Lit(l) => out.push_str(l),
                        Segment::Op(op) => {
                            if !value(op, r, &mut out) {
                                out.push('-');
                            }
                        }
                    }
                }
            }
            Format::Json(fields) => {
                json_fields(fields, r, &mut out);
                out.push('\n');
            }
        }
        out
    }
}

fn json_fields(fields: &[(String, JsonValue)], r: &Record, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(k, out);
        out.push(':');
        match v {
            JsonValue::Const(c) => out.push_str(c),
            JsonValue::Object(o) => json_fields(o, r, out),
            // A single numeric operator keeps its type, as Envoy's typed JSON does.
            JsonValue::Template(segs) => match segs.as_slice() {
                [Segment::Op(op)] if op.numeric() => {
                    if !value(op, r, out) {
                        out.push_str("null");
                    }
                }
                _ => {
                    let mut s = String::new();
                    for seg in segs {
                        match seg {
                            Segment::Lit(l) => s.push_str(l),
                            Segment::Op(op) => {
                                if !value(op, r, &mut s) {
                                    s.push('-');
                                }
                            }
                        }
                    }
                    json_string(&s, out);
                }
            },
        }
    }
    out.push('}');
}

fn json_string(s: &str, out: &mut String) {
    // serde_json's escaping of a string cannot fail.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"-\""),
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
