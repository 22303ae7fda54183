//! What the proxy tells the engine about a request: the peer's identity (parsed once per
//! connection), addresses, the HTTP request line and headers, and the validated JWT.

use std::net::IpAddr;

use aws_lc_rs::digest;
use http::HeaderMap;

use super::jwt::RequestAuth;

/// The verified identity of the peer of a connection. Build it once per connection, after the
/// TLS handshake, and share it (by reference) with every request on that connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// `<trust-domain>/ns/<ns>/sa/<sa>` (the SPIFFE ID without `spiffe://`), if the peer
    /// presented a workload certificate.
    principal: Option<Box<str>>,
    /// Byte ranges of the trust domain, namespace and service account inside `principal`.
    td_end: usize,
    ns: (usize, usize),
    sa: (usize, usize),
    /// Lower-case hex SHA-256 of the peer's leaf certificate (DER), if it presented one.
    fingerprint: Option<Box<str>>,
}

impl PeerIdentity {
    /// A plaintext peer: no certificate, no identity.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// A peer that presented a verified certificate. `spiffe_id` is the URI SAN
    /// (`spiffe://td/ns/x/sa/y`; the `spiffe://` prefix is optional), `cert_der` the leaf
    /// certificate, hashed for `source.certificate_fingerprint`.
    pub fn from_certificate(spiffe_id: Option<&str>, cert_der: &[u8]) -> Self {
        let fp = hex::encode(digest::digest(&digest::SHA256, cert_der));
        Self::with_fingerprint(spiffe_id, Some(&fp))
    }

    /// As [`Self::from_certificate`] with a precomputed fingerprint (hex SHA-256, any case,
    /// colons allowed).
    pub fn with_fingerprint(spiffe_id: Option<&str>, fingerprint: Option<&str>) -> Self {
        let mut id = PeerIdentity {
            fingerprint: fingerprint.map(normalize_fingerprint).map(Into::into),
            ..Self::default()
        };
        if let Some(raw) = spiffe_id {
            let p = raw.strip_prefix("spiffe://").unwrap_or(raw);
            if !p.is_empty() {
                id.td_end = p.find('/').unwrap_or(p.len());
                // `<td>/ns/<ns>/sa/<sa>`: find the ranges, if the ID has that shape.
                let parts: Vec<&str> = p.split('/').collect();
                if parts.len() == 5 && parts[1] == "ns" && parts[3] == "sa" {
                    let ns_start = id.td_end + 4;
                    let ns_end = ns_start + parts[2].len();
                    let sa_start = ns_end + 4;
                    id.ns = (ns_start, ns_end);
                    id.sa = (sa_start, p.len());
                }
                id.principal = Some(p.into());
            }
        }
        id
    }

    /// `td/ns/x/sa/y`, if the peer has a workload identity.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The trust domain of the principal.
    pub fn trust_domain(&self) -> Option<&str> {
        self.principal.as_deref().map(|p| &p[..self.td_end])
    }

    /// The peer's namespace, from a `td/ns/<ns>/sa/<sa>` principal.
    pub fn namespace(&self) -> Option<&str> {
        let p = self.principal.as_deref()?;
        (self.ns.1 > self.ns.0).then(|| &p[self.ns.0..self.ns.1])
    }

    /// The peer's service account name.
    pub fn service_account(&self) -> Option<&str> {
        let p = self.principal.as_deref()?;
        (self.sa.1 > self.sa.0).then(|| &p[self.sa.0..self.sa.1])
    }

    /// Lower-case hex SHA-256 of the peer certificate.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }
}

/// Lower-case hex without separators, so `AB:CD` and `abcd` compare equal.
pub(crate) fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Everything the engine may look at. All borrowed; building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttrs<'a> {
    /// The peer of the connection (plaintext peers: [`PeerIdentity::plaintext`]).
    pub peer: &'a PeerIdentity,
    /// Address of the directly connected peer (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// Original client address (`remote.ip`, `remoteIpBlocks`); see [`remote_ip`].
    pub remote_ip: IpAddr,
    /// Local address the request arrived on (`destination.ip`).
    pub destination_ip: IpAddr,
    /// Local port the request arrived on (`ports`, `destination.port`).
    pub destination_port: u16,
    /// TLS SNI, if any (`connection.sni`).
    pub sni: Option<&'a str>,
    /// HTTP method, as received (Istio rejects methods that are not upper case).
    pub method: &'a str,
    /// `:authority` / `Host`.
    pub host: &'a str,
    /// Request path as received (with query); normalised by the engine before matching.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The validated JWT, if the request carried one ([`super::jwt::WorkloadAuthn`]).
    pub auth: Option<&'a RequestAuth>,
}

/// The original client address, as Envoy computes it with `xff_num_trusted_hops` = Istio's
/// `numTrustedProxies`: with `n == 0` the connection peer; otherwise the `n`-th address from
/// the right of `X-Forwarded-For` (all header lines, in order); the peer when XFF has fewer
/// than `n` addresses or that entry is not an IP address.
pub fn remote_ip(headers: &HeaderMap, num_trusted_proxies: u32, peer_ip: IpAddr) -> IpAddr {
    if num_trusted_proxies == 0 {
        return peer_ip;
    }
    let n = num_trusted_proxies as usize;
    // Walk the entries right to left without collecting them.
    let mut seen = 0usize;
    let lines = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok());
    for line in lines {
        for entry in line.rsplit(',') {
            seen += 1;
            if seen == n {
                return parse_xff_entry(entry.trim()).unwrap_or(peer_ip);
            }
        }
    }
    peer_ip
}

fn parse_xff_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    // `1.2.3.4:5678` or `[v6]:port`.
    let (host, _) = super::matcher::split_port(s);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_identity_parts() {
        let p =
            PeerIdentity::with_fingerprint(Some("spiffe://cluster.local/ns/a/sa/b"), Some("AB:cd"));
        assert_eq!(p.principal(), Some("cluster.local/ns/a/sa/b"));
        assert_eq!(p.trust_domain(), Some("cluster.local"));
        assert_eq!(p.namespace(), Some("a"));
        assert_eq!(p.service_account(), Some("b"));
        assert_eq!(p.fingerprint(), Some("abcd"));
        let odd = PeerIdentity::with_fingerprint(Some("spiffe://td/other"), None);
        assert_eq!(odd.namespace(), None);
        assert_eq!(odd.trust_domain(), Some("td"));
    }

    #[test]
    fn xff() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        h.append("x-forwarded-for", "3.3.3.3".parse().unwrap());
        let peer: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(remote_ip(&h, 0, peer), peer);
        assert_eq!(remote_ip(&h, 1, peer).to_string(), "3.3.3.3");
        assert_eq!(remote_ip(&h, 3, peer).to_string(), "1.1.1.1");
        assert_eq!(remote_ip(&h, 4, peer), peer);
    }
}
