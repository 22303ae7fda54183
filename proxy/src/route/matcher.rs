//! Compiled match conditions: string matchers (regexes compiled once, anchored) and match blocks
//! (`HTTPMatchRequest`), evaluated against a borrowed [`RequestView`].

use std::collections::BTreeMap;

use http::HeaderMap;
use jalin_xds::model::route::{RouteMatch, StringMatch};
use regex::{Regex, RegexBuilder};

/// Upper bound on a compiled regex program, so an imported policy cannot make the proxy build
/// an enormous automaton (Envoy's `max_program_size` plays the same role).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What the matcher needs to know about a request; borrowed, built once per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Raw query string without the `?`, if any.
    pub query: Option<&'a str>,
    /// `:authority` or `Host`, as sent.
    pub authority: &'a str,
    pub headers: &'a HeaderMap,
    /// Destination port the request arrived on.
    pub port: u16,
    /// Labels of the calling workload (from its identity / the control plane).
    pub source_labels: Option<&'a BTreeMap<String, String>>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<&'a str>,
}

impl<'a> RequestView<'a> {
    /// A view of a request with no source workload information.
    pub fn new(
        method: &'a str,
        path_and_query: &'a str,
        authority: &'a str,
        headers: &'a HeaderMap,
        port: u16,
    ) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        Self {
            method,
            path,
            query,
            authority,
            headers,
            port,
            source_labels: None,
            source_namespace: None,
        }
    }

    /// The value of query parameter `name` (first occurrence), raw (not percent-decoded).
    /// `Some("")` when present without a value.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// A compiled [`StringMatch`].
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored `^(?:...)$`.
    Regex(Regex),
    Present,
}

impl Matcher {
    /// Compiles a model matcher; `ignore_case` lower-cases exact and prefix (as Istio's
    /// `ignoreUriCase`, which leaves regexes alone).
    pub fn compile(m: &StringMatch, ignore_case: bool) -> Result<Self, regex::Error> {
        Ok(match m {
            StringMatch::Exact(s) if ignore_case => Self::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) if ignore_case => Self::Prefix(s.to_ascii_lowercase()),
            StringMatch::Exact(s) => Self::Exact(s.clone()),
            StringMatch::Prefix(s) => Self::Prefix(s.clone()),
            StringMatch::Regex(re) => Self::Regex(
                RegexBuilder::new(&format!("^(?:{re})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()?,
            ),
            StringMatch::Present => Self::Present,
        })
    }

    /// True when `value` satisfies the matcher (`Present` always holds for a present value).
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Self::Exact(s) if ignore_case => value.eq_ignore_ascii_case(s),
            Self::Prefix(s) if ignore_case => {
                value.len() >= s.len()
                    && value.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(re) => re.is_match(value),
            Self::Present => true,
        }
    }

    /// Length of the matched prefix, for prefix rewrites.
    pub fn prefix_len(&self) -> Option<usize> {
        match self {
            Self::Prefix(s) => Some(s.len()),
            _ => None,
        }
    }
}

/// A compiled match block: every condition must hold.
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    pub name: Option<String>,
    pub uri: Option<Matcher>,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub headers: Vec<(http::HeaderName, Matcher)>,
    pub without_headers: Vec<(http::HeaderName, Matcher)>,
    pub query_params: Vec<(String, Matcher)>,
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub ignore_uri_case: bool,
}

/// Why a match block could not be compiled; `path` is relative to the block.
#[derive(Debug, Clone)]
pub struct MatchCompileError {
    pub path: String,
    pub message: String,
}

impl CompiledMatch {
    /// Compiles one block.
    pub fn compile(m: &RouteMatch) -> Result<Self, MatchCompileError> {
        let re_err = |path: &str| {
            let path = path.to_owned();
            move |e: regex::Error| MatchCompileError {
                path: path.clone(),
                message: format!("invalid RE2 regex: {e}"),
            }
        };
        let opt = |m: &Option<StringMatch>, path: &str, ic: bool| {
            m.as_ref()
                .map(|m| Matcher::compile(m, ic))
                .transpose()
                .map_err(re_err(path))
        };
        let headers = |map: &BTreeMap<String, StringMatch>, kind: &str| {
            map.iter()
                .map(|(name, cond)| {
                    let path = format!("{kind}.{name}");
                    let hn = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| MatchCompileError {
                            path: path.clone(),
                            message:
                                "not a valid HTTP header name; use lower-case token characters"
                                    .into(),
                        })?;
                    Ok((hn, Matcher::compile(cond, false).map_err(re_err(&path))?))
                })
                .collect::<Result<Vec<_>, MatchCompileError>>()
        };
        let query_params = m
            .query_params
            .iter()
            .map(|(k, cond)| {
                Ok((
                    k.clone(),
                    Matcher::compile(cond, false).map_err(re_err(&format!("queryParams.{k}")))?,
                ))
            })
            .collect::<Result<Vec<_>, MatchCompileError>>()?;
        Ok(Self {
            name: m.name.clone(),
            uri: opt(&m.uri, "uri", m.ignore_uri_case)?,
            method: opt(&m.method, "method", false)?,
            authority: opt(&m.authority, "authority", false)?,
            headers: headers(&m.headers, "headers")?,
            without_headers: headers(&m.without_headers, "withoutHeaders")?,
            query_params,
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
            ignore_uri_case: m.ignore_uri_case,
        })
    }

    /// True when the request satisfies every condition of this block.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if self.port.is_some_and(|p| p != req.port) {
            return false;
        }
        if self
            .uri
            .as_ref()
            .is_some_and(|m| !m.matches(req.path, self.ignore_uri_case))
        {
            return false;
        }
        if self
            .method
            .as_ref()
            .is_some_and(|m| !m.matches(req.method, false))
        {
            return false;
        }
        if self
            .authority
            .as_ref()
            .is_some_and(|m| !m.matches(req.authority, false))
        {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|(name, m)| header_matches(req.headers, name, m))
        {
            return false;
        }
        if self
            .without_headers
            .iter()
            .any(|(name, m)| header_matches(req.headers, name, m))
        {
            return false;
        }
        if !self
            .query_params
            .iter()
            .all(|(name, m)| req.query_param(name).is_some_and(|v| m.matches(v, false)))
        {
            return false;
        }
        if self
            .source_namespace
            .as_deref()
            .is_some_and(|ns| req.source_namespace != Some(ns))
        {
            return false;
        }
        if !self.source_labels.is_empty() {
            let Some(labels) = req.source_labels else {
                return false;
            };
            if !self
                .source_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                return false;
            }
        }
        true
    }
}

/// Envoy's rule for repeated headers: the values are joined with `,` and matched as one.
fn header_matches(headers: &HeaderMap, name: &http::HeaderName, m: &Matcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Some(second) = values.next() else {
        return first.to_str().is_ok_and(|v| m.matches(v, false));
    };
    let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    std::str::from_utf8(&joined).is_ok_and(|v| m.matches(v, false))
}
