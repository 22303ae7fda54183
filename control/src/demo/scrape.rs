//! Reading the proxies: a bounded HTTP GET of an admin endpoint, and the Prometheus text format
//! of `/metrics` parsed into samples (name, labels, value) the summary sums over.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::DemoError;

/// Largest admin response read: a proxy's `/metrics` is tens of KiB.
pub const MAX_ADMIN_BODY: usize = 8 << 20;
/// An admin request that takes longer than this is counted as unanswered.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// GET `http://addr{path}`: the status and the body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), DemoError> {
    tokio::time::timeout(ADMIN_TIMEOUT, get(addr, path))
        .await
        .map_err(|_| DemoError::Admin(format!("http://{addr}{path}: no answer within 2s")))?
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), DemoError> {
    let err = |e: &dyn std::fmt::Display| DemoError::Admin(format!("http://{addr}{path}: {e}"));
    let stream = TcpStream::connect(addr).await.map_err(|e| err(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| err(&e))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| err(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| err(&e))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| err(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One sample of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The label's value, or "" when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Parses Prometheus text exposition; comment and malformed lines are skipped.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        parse_labels(body)?
    } else {
        (BTreeMap::new(), rest)
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
        s = &s[end?..];
    }
}

/// Sum of the samples named `name` whose labels satisfy `keep`.
pub fn sum(samples: &[Sample], name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && keep(s))
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_skips_comments() {
        let text = "# TYPE istio_requests_total counter\n\
            istio_requests_total{reporter=\"destination\",response_code=\"200\",x=\"a\\\"b,c\"} 12\n\
            jalin_config_reloads_total 3\n\
            broken{a=1} 2\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("response_code"), "200");
        assert_eq!(s[0].label("x"), "a\"b,c");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].name, "jalin_config_reloads_total");
        assert_eq!(
            sum(&s, "istio_requests_total", |s| s.label("reporter")
                == "destination"),
            12.0
        );
        assert_eq!(
            sum(&s, "istio_requests_total", |s| s.label("reporter")
                == "source"),
            0.0
        );
    }
}
