//! Gateway mode (Istio ingress gateway): a listener with `gateway: namespace/name` routes each
//! request by its authority over the route tables bound to that gateway (`spec.gateways`), and
//! a listener with its own `tls` states the verified client certificate to the upstream as
//! Envoy's `SANITIZE_SET` does.
//!
//! Host selection follows Istio/Envoy virtual-host matching: among the bound tables, the one
//! with the most specific host that matches wins (an exact host, then the `*.suffix` wildcard
//! with the longest suffix, then `*`); between equally specific matches the first table in
//! configuration order wins. The port of the authority is ignored, as is letter case.
//!
//! Invariant: the decision ([`select`]) is pure, so it is tested without sockets; the data path
//! only calls [`crate::snapshot::Snapshot::gateway_service`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use jalin_ca::tls::{
    ALPN_H2, Direction as TlsDirection, Refusal, RefusalReason, record_handshake_error,
    record_refusal,
};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use crate::detect::{Protocol, Rewind};
use crate::inbound::{Accepted, ServerIo};
use crate::route::{self, HostMatch, host_match};
use crate::tls::server::{SanKind, san_entries, subject_of};

/// Longest a client may take to complete the TLS handshake with a listener's own certificate
/// (Envoy's `transport_socket_connect_timeout`; a slow-handshake flood holds no slot longer).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Terminates the listener's own TLS on `stream` within [`TLS_HANDSHAKE_TIMEOUT`]. The
/// negotiated ALPN decides the protocol (`h2`: HTTP/2; `http/1.1` or none: HTTP/1.1). `None`:
/// the handshake failed or timed out, already logged (no key material) and counted in
/// `jalin_tls_handshake_failures_total{direction="inbound"}`.
pub async fn accept_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
) -> Option<(Accepted, Option<ClientCert>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let io = Rewind::new(Bytes::new(), stream);
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            record_handshake_error(TlsDirection::Inbound, &e, Some(&peer.to_string()));
            return None;
        }
        Err(_) => {
            let refusal = Refusal::new(
                RefusalReason::Io,
                format!(
                    "TLS handshake not completed within {}s",
                    TLS_HANDSHAKE_TIMEOUT.as_secs()
                ),
            );
            record_refusal(TlsDirection::Inbound, &refusal, Some(&peer.to_string()));
            return None;
        }
    };
    let (_, session) = tls.get_ref();
    let protocol = if session.alpn_protocol() == Some(ALPN_H2) {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let cert = session.peer_certificates().and_then(ClientCert::from_chain);
    let accepted = Accepted {
        io: ServerIo::Tls(Box::new(tls)),
        alpn: Some(protocol),
        peer: None,
    };
    Some((accepted, cert))
}

/// The host of an authority, lower case, for messages: without port and trailing dot
/// (`[::1]:443` -> `::1`). Matching does not need it ([`crate::route::host_match`] ignores case).
pub fn host_of(authority: &str) -> String {
    route::host_of(authority).to_ascii_lowercase()
}

/// The index of the table (each given by its hosts, in configuration order) that serves
/// `authority`, or `None` when no table does (the request gets 404, flag `NR`).
pub fn select<'a, H, I>(tables: I, authority: &str) -> Option<usize>
where
    I: IntoIterator<Item = H>,
    H: IntoIterator<Item = &'a str>,
{
    let host = route::host_of(authority);
    let mut best: Option<(HostMatch, usize)> = None;
    for (i, hosts) in tables.into_iter().enumerate() {
        let m = hosts.into_iter().filter_map(|p| host_match(p, host)).max();
        if let Some(m) = m
            && best.is_none_or(|(b, _)| m > b)
        {
            best = Some((m, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The verified client certificate of a `MUTUAL` gateway connection, with the
/// `x-forwarded-client-cert` value made once per connection.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// `Hash=..;Subject="..";URI=..;DNS=..`, Envoy's `SANITIZE_SET` with subject, URI and DNS.
    pub xfcc: Option<HeaderValue>,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub fingerprint_sha256: String,
}

impl ClientCert {
    /// Reads the leaf (the first of `chain`, as rustls returns the peer's certificates).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        let fingerprint_sha256 = jalin_ca::tls::fingerprint_sha256(leaf);
        let xfcc = HeaderValue::from_str(&xfcc_value(
            &fingerprint_sha256,
            subject_of(leaf).as_deref(),
            &san_entries(leaf),
        ))
        .ok();
        Some(Self {
            xfcc,
            fingerprint_sha256,
        })
    }
}

/// The `x-forwarded-client-cert` element Envoy writes with `SANITIZE_SET` and
/// `set_current_client_cert_details { subject, uri, dns }`: `Hash` always, `Subject` quoted,
/// then one `URI=` and one `DNS=` pair per SAN of those kinds. Values containing `,`, `;`, `=`
/// or `"` are quoted with inner quotes escaped, as Envoy's XFCC grammar requires.
pub fn xfcc_value(hash: &str, subject: Option<&str>, sans: &[(SanKind, String)]) -> String {
    let mut out = format!("Hash={hash}");
    if let Some(s) = subject {
        out.push_str(&format!(";Subject=\"{}\"", s.replace('"', "\\\"")));
    }
    for (kind, value) in sans {
        let key = match kind {
            SanKind::Uri => "URI",
            SanKind::Dns => "DNS",
            SanKind::Email | SanKind::Ip => continue,
        };
        out.push(';');
        out.push_str(key);
        out.push('=');
        if value.contains([',', ';', '=', '"']) {
            out.push_str(&format!("\"{}\"", value.replace('"', "\\\"")));
        } else {
            out.push_str(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(tables: &[&[&str]], authority: &str) -> Option<usize> {
        select(tables.iter().map(|t| t.iter().copied()), authority)
    }

    #[test]
    fn authorities_lose_port_case_and_trailing_dot() {
        assert_eq!(host_of("Api.Example.GOV:8443"), "api.example.gov");
        assert_eq!(host_of("api.example.gov."), "api.example.gov");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn exact_beats_longest_wildcard_beats_shorter_wildcard_beats_any() {
        let tables: &[&[&str]] = &[&["*"], &["*.gov"], &["*.example.gov"], &["api.example.gov"]];
        assert_eq!(pick(tables, "api.example.gov:443"), Some(3));
        assert_eq!(pick(tables, "www.example.gov"), Some(2));
        assert_eq!(pick(tables, "a.b.example.gov"), Some(2), "any depth");
        assert_eq!(pick(tables, "other.gov"), Some(1));
        assert_eq!(pick(tables, "example.com"), Some(0));
        // A wildcard never matches its bare suffix.
        assert_eq!(pick(&[&["*.example.gov"]], "example.gov"), None);
    }

    #[test]
    fn equally_specific_matches_go_to_the_first_table_and_unknown_hosts_to_none() {
        let tables: &[&[&str]] = &[&["a.gov", "b.gov"], &["b.gov"], &["*.c.gov"]];
        assert_eq!(pick(tables, "b.gov"), Some(0));
        assert_eq!(pick(tables, "B.GOV"), Some(0));
        assert_eq!(pick(tables, "x.c.gov"), Some(2));
        assert_eq!(pick(tables, "d.gov"), None);
        assert_eq!(pick(&[], "a.gov"), None);
    }

    #[test]
    fn xfcc_is_envoys_sanitize_set_form() {
        let sans = vec![
            (SanKind::Uri, "spiffe://agency.gov/client".to_owned()),
            (SanKind::Dns, "client.agency.gov".to_owned()),
            (SanKind::Dns, "alt.agency.gov".to_owned()),
            (SanKind::Email, "ops@agency.gov".to_owned()),
        ];
        assert_eq!(
            xfcc_value("ab12", Some("CN=client,O=Agency"), &sans),
            "Hash=ab12;Subject=\"CN=client,O=Agency\";URI=spiffe://agency.gov/client;\
             DNS=client.agency.gov;DNS=alt.agency.gov"
        );
        assert_eq!(xfcc_value("ab12", None, &[]), "Hash=ab12");
    }
}
