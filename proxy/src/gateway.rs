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
//! VirtualServices bound to one gateway that name the same host are merged, as Istio merges them
//! at gateways (and only there): that host gets one table with the routes of each, in
//! configuration order ([`merge_by_host`]), so a request that matches no route of the first
//! VirtualService is tried against the next one instead of getting 404.
//!
//! Invariant: the decisions ([`select`], [`merge_by_host`]) are pure, so they are tested without
//! sockets; the data path only calls [`crate::snapshot::Snapshot::gateway_service`].

use std::collections::{HashMap, HashSet};
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
use crate::route::{self, CompiledRouteTable, HostMatch, host_match};
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

/// The tables a gateway serves, given the tables bound to it in configuration order: a host
/// (letter case ignored) that several tables name becomes one merged table whose routes are
/// theirs in that order; every other host stays with its own table. Without a shared host the
/// tables come back as they are.
pub fn merge_by_host(tables: &[Arc<CompiledRouteTable>]) -> Vec<Arc<CompiledRouteTable>> {
    let mut naming: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        for h in t.hosts() {
            let users = naming.entry(h).or_default();
            if users.last() != Some(&i) {
                users.push(i);
            }
        }
    }
    if naming.values().all(|users| users.len() == 1) {
        return tables.to_vec();
    }
    let mut out = Vec::with_capacity(tables.len());
    let mut merged: HashSet<&str> = HashSet::new();
    for (i, t) in tables.iter().enumerate() {
        let mut own = Vec::new();
        for h in t.hosts() {
            let users = naming.get(h).map(Vec::as_slice).unwrap_or_default();
            if users.len() <= 1 {
                own.push(h.to_owned());
            } else if users.first() == Some(&i) && merged.insert(h) {
                let parts: Vec<&CompiledRouteTable> = users
                    .iter()
                    .filter_map(|&u| tables.get(u).map(|t| &**t))
                    .collect();
                out.push(Arc::new(CompiledRouteTable::merged(
                    vec![h.to_owned()],
                    &parts,
                )));
            }
        }
        if own.len() == t.hosts().count() {
            out.push(t.clone());
        } else if !own.is_empty() {
            out.push(Arc::new(CompiledRouteTable::merged(own, &[&**t])));
        }
    }
    out
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

    fn table(name: &str, hosts: &[&str], prefix: &str) -> Arc<CompiledRouteTable> {
        use jalin_xds::model::meta::ResourceMeta;
        use jalin_xds::model::route::{
            Destination, HttpRoute, RouteDestination, RouteMatch, RouteTable, StringMatch,
        };
        let table = RouteTable {
            meta: ResourceMeta {
                name: name.into(),
                namespace: "a".into(),
                source: None,
            },
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            gateways: vec!["edge/ingress".into()],
            http: vec![HttpRoute {
                matches: vec![RouteMatch {
                    uri: Some(StringMatch::Prefix(prefix.into())),
                    ..Default::default()
                }],
                destinations: vec![RouteDestination {
                    destination: Destination {
                        host: format!("{name}.a.svc.cluster.local"),
                        subset: None,
                        port: None,
                    },
                    weight: 100,
                }],
                ..Default::default()
            }],
        };
        Arc::new(CompiledRouteTable::compile(&table).unwrap())
    }

    /// The destination host of the route `tables` picks for `authority` and `path`.
    fn routed(tables: &[Arc<CompiledRouteTable>], authority: &str, path: &str) -> Option<String> {
        let i = select(tables.iter().map(|t| t.hosts()), authority)?;
        let headers = http::HeaderMap::new();
        let view = route::RequestView::new("GET", path, authority, &headers, 443);
        let hit = tables[i].match_route(&view)?;
        hit.destinations().next().map(|(d, _)| d.host.clone())
    }

    #[test]
    fn virtual_services_naming_one_host_at_a_gateway_are_merged_in_order() {
        let tables = [
            table("api-a", &["api.gov.example", "a-only.gov.example"], "/a"),
            table("api-b", &["API.gov.example"], "/b"),
            table("other", &["other.gov.example"], "/"),
        ];
        let merged = merge_by_host(&tables);
        let names: Vec<(&str, Vec<&str>)> = merged
            .iter()
            .map(|t| (t.name.as_str(), t.hosts().collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("a/api-a+a/api-b", vec!["api.gov.example"]),
                ("a/api-a", vec!["a-only.gov.example"]),
                ("a/other", vec!["other.gov.example"]),
            ]
        );
        // The shared host: the first VirtualService's routes, then the second's.
        let a = Some("api-a.a.svc.cluster.local".to_owned());
        let b = Some("api-b.a.svc.cluster.local".to_owned());
        assert_eq!(routed(&merged, "api.gov.example", "/a/1"), a);
        assert_eq!(routed(&merged, "api.gov.example", "/b/1"), b);
        assert_eq!(routed(&merged, "api.gov.example", "/c"), None);
        // Unmerged: the second VirtualService was unreachable for its own host.
        assert_eq!(routed(&tables, "api.gov.example", "/b/1"), None);
        // A host only one table names keeps only that table's routes.
        assert_eq!(routed(&merged, "a-only.gov.example", "/b/1"), None);
        assert_eq!(routed(&merged, "a-only.gov.example", "/a"), a);
    }

    #[test]
    fn tables_without_a_shared_host_are_returned_as_they_are() {
        let tables = [
            table("x", &["x.gov", "*.x.gov"], "/"),
            table("y", &["y.gov"], "/"),
        ];
        let merged = merge_by_host(&tables);
        assert_eq!(merged.len(), 2);
        assert!(Arc::ptr_eq(&merged[0], &tables[0]) && Arc::ptr_eq(&merged[1], &tables[1]));
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
