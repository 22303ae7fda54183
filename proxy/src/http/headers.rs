//! Header rules applied to every proxied message: hop-by-hop removal (RFC 9110 §7.6.1),
//! `x-request-id`, `x-forwarded-{for,proto,host}`, and removal of identity headers a client could
//! forge.
//!
//! The common case (no `Connection` header, nothing to strip) does no allocation beyond the
//! request id a request lacks.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The prefix of jalin's own headers; only jalin sets them, so they are dropped when they arrive
/// from outside the mesh.
pub const JALIN_PREFIX: &str = "x-jalin-";

/// Hop-by-hop headers every proxy removes (RFC 9110 §7.6.1, plus `proxy-connection` and
/// `keep-alive`, which RFC 9110 names as commonly sent).
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
    ]
}

/// The declared `content-length`, when present and well-formed.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// True when the message asks to switch protocols: `Connection: upgrade` and an `Upgrade` header.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, including every header the `Connection` header names. With
/// `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is re-added so the upgrade
/// reaches the next hop. `te: trailers` survives (gRPC needs it; RFC 9113 §8.2.2 allows it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade = if keep_upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    for name in fixed_hop_by_hop() {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes headers that assert an identity or a jalin decision: a client outside the mesh must
/// not be able to claim a client certificate or set a jalin header.
pub fn strip_untrusted(headers: &mut HeaderMap) {
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    let has_jalin = headers.keys().any(|k| k.as_str().starts_with(JALIN_PREFIX));
    if has_jalin {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with(JALIN_PREFIX))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Ensures an `x-request-id`: a client's valid one is kept (it ties logs across hops); otherwise
/// a random UUIDv4 is set.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    let valid = headers.get(&X_REQUEST_ID).is_some_and(|v| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
    });
    if !valid {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
}

fn new_request_id() -> HeaderValue {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out[o] = HEX[usize::from(b >> 4)];
        out[o + 1] = HEX[usize::from(b & 0x0f)];
        o += 2;
    }
    #[allow(clippy::expect_used)] // Invariant: hex digits and dashes are valid header bytes.
    HeaderValue::from_bytes(&out).expect("uuid is a valid header value")
}

/// Appends the peer to `x-forwarded-for` and sets `x-forwarded-proto` and `x-forwarded-host`
/// when the client did not.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let mut ip = [0u8; 64];
    let ip = format_ip(peer, &mut ip);
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v)
        }
        None => HeaderValue::from_bytes(ip),
    };
    if let Ok(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if let Some(host) = host {
        headers.entry(X_FORWARDED_HOST.clone()).or_insert(host);
    }
}

fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_and_upgrade_survive_when_wanted() {
        let mut h = map(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn untrusted_identity_headers_are_dropped() {
        let mut h = map(&[
            ("x-forwarded-client-cert", "By=spiffe://evil"),
            ("x-jalin-priority", "emergency"),
            ("x-jalin-peer", "x"),
            ("x-ok", "1"),
        ]);
        strip_untrusted(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn request_id_is_generated_or_kept() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"], id.as_str());
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        set_forwarded(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            "http",
            Some("svc.local".parse().unwrap()),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "svc.local");
    }
}
