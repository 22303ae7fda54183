//! Request path normalisation before policy matching, as Istio configures Envoy.
//!
//! Istio offers four modes (`meshConfig.pathNormalization`): `NONE`, `BASE`, `MERGE_SLASHES` and
//! `DECODE_AND_MERGE_SLASHES`. jalin defaults to [`PathNormalization::MergeSlashes`]: BASE
//! (RFC 3986 dot-segment removal, backslash to slash, decoding of percent-encoded unreserved
//! characters) plus merging of repeated slashes, which closes CVE-2021-31920 (`/a//b` slipping
//! past a rule on `/a/b`) without changing what `%2F` means to the application. `%2F` and `%5C`
//! are kept encoded (their hex digits upper-cased) unless `DecodeAndMergeSlashes` is chosen.
//!
//! The order is Istio's: decode `%2F`/`%5C` (only in that mode), then RFC 3986 normalisation,
//! then merging slashes. The query string and fragment are not part of the matched path. A `%00`
//! anywhere makes the request invalid (Istio answers 400). The same normalised path should be
//! forwarded to the application, so policy and application see the same resource.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// How request paths are normalised before authorization (Istio's `pathNormalization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// No normalisation beyond dropping the query (vulnerable to CVE-2021-31920).
    None,
    /// RFC 3986 normalisation, backslashes to slashes, unreserved escapes decoded.
    Base,
    /// `Base`, then repeated slashes merged. jalin's default.
    #[default]
    MergeSlashes,
    /// `%2F`/`%5C` decoded first, then `MergeSlashes`.
    DecodeAndMergeSlashes,
}

/// Why a request path cannot be normalised; the proxy answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path contains an encoded NUL (%00)")]
    EncodedNul,
    #[error("request path is not in origin form (must start with `/`)")]
    NotOriginForm,
}

/// Normalises `raw` (which may include a query) for matching. Borrows when nothing changes.
pub fn normalize_path(raw: &str, mode: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    let path = match raw.find(['?', '#']) {
        Some(i) => &raw[..i],
        None => raw,
    };
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let merge = mode != PathNormalization::Base;
    if is_canonical(path, merge) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded: Cow<'_, str> = if path.bytes().any(|c| c == b'%' || c == b'\\') {
        Cow::Owned(decode(
            path,
            mode == PathNormalization::DecodeAndMergeSlashes,
        )?)
    } else {
        Cow::Borrowed(path)
    };
    Ok(Cow::Owned(remove_dot_segments(&decoded, merge)))
}

/// Fast check: nothing to decode, no backslash, no dot segment, and (when merging) no `//`.
fn is_canonical(path: &str, merge: bool) -> bool {
    let b = path.as_bytes();
    if b.iter().any(|&c| c == b'%' || c == b'\\') {
        return false;
    }
    if merge && path.contains("//") {
        return false;
    }
    !path.split('/').any(|s| s == "." || s == "..")
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes percent-escapes of unreserved characters (and of `/` and `\` when asked), upper-cases
/// the hex of the escapes it keeps, and turns backslashes into slashes.
fn decode(path: &str, slashes: bool) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            let v = h * 16 + l;
            if v == 0 {
                return Err(PathError::EncodedNul);
            }
            let unreserved = v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~');
            if unreserved {
                out.push(v);
            } else if slashes && (v == b'/' || v == b'\\') {
                out.push(b'/');
            } else {
                out.push(b'%');
                out.push(b[i + 1].to_ascii_uppercase());
                out.push(b[i + 2].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        out.push(if c == b'\\' { b'/' } else { c });
        i += 1;
    }
    // Only ASCII bytes were substituted for ASCII bytes, so UTF-8 validity is preserved.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// RFC 3986 section 5.2.4 on an absolute path, then (when asked) repeated slashes merged, as
/// Envoy orders them (`/a//..` is `/a/`, not `/`). One output buffer, no segment list.
fn remove_dot_segments(path: &str, merge: bool) -> String {
    // `out` holds "/seg/seg..."; popping a segment truncates at its leading slash.
    let mut out = String::with_capacity(path.len());
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                if let Some(i) = out.rfind('/') {
                    out.truncate(i);
                }
            }
            s => {
                out.push('/');
                out.push_str(s);
                continue;
            }
        }
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    if merge && out.contains("//") {
        let mut bytes = out.into_bytes();
        bytes.dedup_by(|a, b| *a == b'/' && *b == b'/');
        // Only ASCII slashes were removed, so the bytes are still UTF-8.
        out = String::from_utf8(bytes).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p, PathNormalization::MergeSlashes)
            .unwrap()
            .into_owned()
    }

    #[test]
    fn merge_slashes_mode() {
        assert_eq!(n("/a/../b"), "/b");
        assert_eq!(n("/a/./b/"), "/a/b/");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/a\\b"), "/a/b");
        assert_eq!(n("/%61%62%63"), "/abc");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a/%2e%2e/b"), "/b");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(
            n("/a//.."),
            "/a/",
            "dot segments are resolved before slashes are merged"
        );
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/a?x=/../"), "/a");
        assert_eq!(n("/a%zz"), "/a%zz");
        assert_eq!(n("/a%2"), "/a%2");
        assert!(matches!(
            normalize_path("/a", PathNormalization::MergeSlashes),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            normalize_path("/a%00", PathNormalization::Base),
            Err(PathError::EncodedNul)
        );
        assert_eq!(
            normalize_path("a", PathNormalization::Base),
            Err(PathError::NotOriginForm)
        );
    }

    #[test]
    fn other_modes() {
        assert_eq!(
            normalize_path("/a//b", PathNormalization::Base).unwrap(),
            "/a//b"
        );
        assert_eq!(
            normalize_path("/a%2Fb%5cc", PathNormalization::DecodeAndMergeSlashes).unwrap(),
            "/a/b/c"
        );
        assert_eq!(
            normalize_path("/a/../b?q", PathNormalization::None).unwrap(),
            "/a/../b"
        );
    }

    /// Normalising twice gives the same path, for every path of up to six characters over an
    /// alphabet of the interesting bytes: what policy saw is what the application gets.
    #[test]
    fn idempotent_exhaustive() {
        const ALPHABET: &[u8] = b"/.a%2fe\\";
        for mode in [
            PathNormalization::Base,
            PathNormalization::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes,
        ] {
            for len in 0..=5u32 {
                for mut n in 0..ALPHABET.len().pow(len) {
                    let mut p = String::from("/");
                    for _ in 0..len {
                        p.push(ALPHABET[n % ALPHABET.len()] as char);
                        n /= ALPHABET.len();
                    }
                    let Ok(once) = normalize_path(&p, mode) else {
                        continue;
                    };
                    let twice = normalize_path(&once, mode).unwrap();
                    assert_eq!(once, twice, "{mode:?} {p:?}");
                }
            }
        }
    }
}
