//! Compiled value matchers: Istio's exact / prefix (`x*`) / suffix (`*x`) / presence (`*`) strings,
//! hosts (case-insensitive, port-aware), path templates (`{*}`, `{**}`), CIDR blocks and ports.
//!
//! Invariant: everything here is built once per configuration update; matching allocates nothing.

use std::net::IpAddr;

use ipnet::IpNet;

/// One Istio string value, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrMatch {
    /// `*`: any value, as long as the attribute is present (identities are absent, never empty,
    /// for plaintext peers, so `*` there means "any authenticated peer").
    Any,
    /// `value`.
    Exact(Box<str>),
    /// `value*`.
    Prefix(Box<str>),
    /// `*value`.
    Suffix(Box<str>),
}

impl StrMatch {
    /// Parses Istio's wildcard notation: a single leading or trailing `*`, or `*` alone.
    pub(crate) fn parse(value: &str) -> Self {
        if value == "*" {
            StrMatch::Any
        } else if let Some(rest) = value.strip_suffix('*') {
            StrMatch::Prefix(rest.into())
        } else if let Some(rest) = value.strip_prefix('*') {
            StrMatch::Suffix(rest.into())
        } else {
            StrMatch::Exact(value.into())
        }
    }

    /// Case-sensitive match.
    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Any => true,
            StrMatch::Exact(v) => s == &**v,
            StrMatch::Prefix(v) => s.starts_with(&**v),
            StrMatch::Suffix(v) => s.ends_with(&**v),
        }
    }

    /// ASCII case-insensitive match; the pattern is stored lower-cased by [`Self::lowercase`].
    #[inline]
    pub(crate) fn matches_ignore_case(&self, s: &str) -> bool {
        let (s, v) = (
            s.as_bytes(),
            match self {
                StrMatch::Any => return true,
                StrMatch::Exact(v) | StrMatch::Prefix(v) | StrMatch::Suffix(v) => v.as_bytes(),
            },
        );
        match self {
            StrMatch::Exact(_) => s.eq_ignore_ascii_case(v),
            StrMatch::Prefix(_) => s.len() >= v.len() && s[..v.len()].eq_ignore_ascii_case(v),
            StrMatch::Suffix(_) => {
                s.len() >= v.len() && s[s.len() - v.len()..].eq_ignore_ascii_case(v)
            }
            StrMatch::Any => true,
        }
    }

    /// The pattern with its literal part lower-cased (for case-insensitive attributes).
    pub(crate) fn lowercase(self) -> Self {
        match self {
            StrMatch::Any => StrMatch::Any,
            StrMatch::Exact(v) => StrMatch::Exact(v.to_ascii_lowercase().into()),
            StrMatch::Prefix(v) => StrMatch::Prefix(v.to_ascii_lowercase().into()),
            StrMatch::Suffix(v) => StrMatch::Suffix(v.to_ascii_lowercase().into()),
        }
    }
}

/// A `hosts` value. Istio matches hosts case-insensitively, and a value without a port matches
/// the request authority with or without a port (`example.com` matches `Example.com:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostMatch {
    pattern: StrMatch,
    /// True when the pattern names a port, so the authority is compared whole.
    with_port: bool,
}

impl HostMatch {
    pub(crate) fn parse(value: &str) -> Self {
        HostMatch {
            with_port: split_port(value).1.is_some(),
            pattern: StrMatch::parse(value).lowercase(),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, authority: &str) -> bool {
        if self.with_port {
            self.pattern.matches_ignore_case(authority)
        } else {
            self.pattern.matches_ignore_case(split_port(authority).0)
        }
    }
}

/// Splits `host:port` (and `[v6]:port`) into host and port. A bare IPv6 address has no port.
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6] or [v6]:port
        return match rest.find(']') {
            Some(end) => {
                let port = rest[end + 1..].strip_prefix(':');
                (&authority[..end + 2], port.filter(|p| is_port(p)))
            }
            None => (authority, None),
        };
    }
    match authority.rfind(':') {
        Some(i) if authority[..i].find(':').is_none() && is_port(&authority[i + 1..]) => {
            (&authority[..i], Some(&authority[i + 1..]))
        }
        _ => (authority, None),
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(Box<str>),
    /// `{*}`: exactly one non-empty segment.
    One,
    /// `{**}`: one or more segments; always last.
    Rest,
}

/// A `paths` value: Istio's string forms, or an Envoy-style URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Str(StrMatch),
    Template(Box<[Segment]>),
}

/// Why a path template is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{**}}` must be the last segment of a path template")]
    DoubleStarNotLast,
    #[error(
        "`{{*}}` and `{{**}}` must each be a whole path segment (write `/a/{{*}}/b`, not `/a/x{{*}}`)"
    )]
    PartialSegment,
    #[error("a path template must start with `/`")]
    NotAbsolute,
}

impl PathMatch {
    pub(crate) fn parse(value: &str) -> Result<Self, TemplateError> {
        if !value.contains('{') {
            return Ok(PathMatch::Str(StrMatch::parse(value)));
        }
        let Some(body) = value.strip_prefix('/') else {
            return Err(TemplateError::NotAbsolute);
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Rest,
                "{**}" => return Err(TemplateError::DoubleStarNotLast),
                p if p.contains("{*") || p.contains("*}") => {
                    return Err(TemplateError::PartialSegment);
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(seg);
        }
        Ok(PathMatch::Template(segments.into()))
    }

    #[inline]
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segs) => match_template(segs, path),
        }
    }
}

fn match_template(segs: &[Segment], path: &str) -> bool {
    let Some(mut rest) = path.strip_prefix('/') else {
        return false;
    };
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let Segment::Rest = seg {
            // One or more non-empty segments.
            return !rest.is_empty() && rest.split('/').all(|s| !s.is_empty());
        }
        let (head, tail) = match rest.find('/') {
            Some(j) => (&rest[..j], Some(&rest[j + 1..])),
            None => (rest, None),
        };
        let ok = match seg {
            Segment::Literal(l) => head == &**l,
            Segment::One => !head.is_empty(),
            Segment::Rest => false,
        };
        if !ok {
            return false;
        }
        match (tail, last) {
            (None, true) => return true,
            (None, false) => return false,
            (Some(_), true) => return false,
            (Some(t), false) => rest = t,
        }
    }
    false
}

/// Parses an IP address or CIDR block as Istio writes them (`10.0.0.1`, `10.0.0.0/16`, `::1`).
pub(crate) fn parse_cidr(value: &str) -> Option<IpNet> {
    if value.contains('/') {
        value.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        value.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// True when `ip` (with IPv4-mapped IPv6 addresses seen as IPv4) lies in one of `nets`.
#[inline]
pub(crate) fn ip_in(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(StrMatch::parse("*").matches("x"));
        assert!(
            StrMatch::parse("*").matches(""),
            "presence: an empty header value is present"
        );
        assert!(StrMatch::parse("/api/*").matches("/api/x"));
        assert!(StrMatch::parse("*.txt").matches("/a.txt"));
        assert!(!StrMatch::parse("/api").matches("/api/"));
        assert!(
            StrMatch::parse("ABC*")
                .lowercase()
                .matches_ignore_case("abcd")
        );
    }

    #[test]
    fn ports_split() {
        assert_eq!(split_port("a.com:80"), ("a.com", Some("80")));
        assert_eq!(split_port("a.com"), ("a.com", None));
        assert_eq!(split_port("[::1]:443"), ("[::1]", Some("443")));
        assert_eq!(split_port("::1"), ("::1", None));
    }

    #[test]
    fn templates() {
        let t = PathMatch::parse("/a/{*}/c").unwrap();
        assert!(t.matches("/a/b/c"));
        assert!(!t.matches("/a//c"));
        assert!(!t.matches("/a/b/x/c"));
        let t = PathMatch::parse("/a/{**}").unwrap();
        assert!(t.matches("/a/b"));
        assert!(t.matches("/a/b/c"));
        assert!(!t.matches("/a/"));
        assert!(!t.matches("/a"));
        assert_eq!(
            PathMatch::parse("/{**}/a"),
            Err(TemplateError::DoubleStarNotLast)
        );
        assert_eq!(
            PathMatch::parse("/a{*}"),
            Err(TemplateError::PartialSegment)
        );
    }

    #[test]
    fn cidrs() {
        let n = vec![parse_cidr("10.1.0.0/16").unwrap()];
        assert!(ip_in(&n, "10.1.2.3".parse().unwrap()));
        assert!(ip_in(&n, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!ip_in(&n, "10.2.0.1".parse().unwrap()));
    }
}
