//! Listeners: binds the configured addresses, accepts connections, finds each connection's
//! destination (explicit service, original destination, or per request at a gateway), terminates
//! the listener's own TLS when it has one (ALPN picks HTTP/2 or HTTP/1.1), detects the protocol
//! otherwise, and hands the connection to the HTTP server or the TCP forwarder. On reload the set is reconciled: new listeners are
//! bound before the new configuration takes effect, removed ones stop accepting while their
//! connections finish.
//!
//! Invariant: a listener kept across a reload keeps its socket, so no connection attempt is
//! refused during a reload; a listener whose settings changed picks them up for new connections.
//! A listener's server TLS config is built (its files read) in [`ListenerSet::prepare`], so a
//! bad certificate rejects the reload and the last good one keeps serving; the config in force
//! is [`ListenerInfo::tls`] (and [`ListenerInfo::h3_tls`] for HTTP/3).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::config::ConfigError;
use crate::detect::{self, Protocol, Rewind};
use crate::h3::ALPN_H3;
use crate::http::respond::ProxyError;
use crate::snapshot::{Service, Snapshot};
use crate::{gateway, http, inbound, outbound, tcp};

/// Pause after a failed `accept` (for example `EMFILE`), so a full file table does not spin a
/// core while connections drain.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection needs to know about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub direction: Direction,
    /// Explicit mode's service; `None` in transparent mode.
    pub service: Option<String>,
    pub protocol: ListenerProtocol,
    /// The listener's own peer-authentication mode, overriding the policies.
    pub mtls: Option<jalin_xds::model::peer_auth::MtlsMode>,
    /// Gateway mode's gateway (`namespace/name`): each request is routed by its authority over
    /// the route tables bound to it.
    pub gateway: Option<String>,
    /// The listener's own server TLS in force (ALPN `h2`, `http/1.1`), built from its files at
    /// the last accepted (re)load.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The same certificate with ALPN `h3`, for the HTTP/3 (QUIC) endpoint of a listener with
    /// `http3: true`, built from the same files at the same (re)load.
    pub h3_tls: Option<Arc<rustls::ServerConfig>>,
    /// `Alt-Svc` for the TCP listener's responses while its HTTP/3 endpoint runs.
    pub alt_svc: Option<::http::HeaderValue>,
}

impl ListenerInfo {
    fn from_config(l: &Listener, tls: Option<ListenerTls>) -> Self {
        let (tls, h3_tls) = tls.map_or((None, None), |t| (Some(t.tcp), t.h3));
        Self {
            name: Arc::from(l.name.as_str()),
            direction: l.direction,
            service: l.service.clone(),
            protocol: l.protocol,
            mtls: l.mtls,
            gateway: l.gateway.clone(),
            tls,
            h3_tls,
            alt_svc: None,
        }
    }

    /// True when the listener faces clients outside the mesh (a gateway, or its own TLS): no
    /// identity or jalin header they send is trusted.
    pub fn is_edge(&self) -> bool {
        self.gateway.is_some() || self.tls.is_some()
    }
}

/// One accepted connection.
#[derive(Debug)]
pub struct ConnCtx {
    pub info: Arc<ListenerInfo>,
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The original destination in transparent mode.
    pub orig_dst: Option<SocketAddr>,
    /// The verified mTLS peer of an inbound connection; `None` for plaintext.
    pub peer_info: Option<Arc<inbound::PeerInfo>>,
    /// The verified client certificate of a `MUTUAL` listener-TLS connection.
    pub client_cert: Option<Arc<gateway::ClientCert>>,
    /// The passthrough service for an original destination no service claims, made once per
    /// connection.
    passthrough: OnceLock<Arc<Service>>,
}

impl ConnCtx {
    /// A connection accepted by `info`'s listener.
    pub fn new(
        info: Arc<ListenerInfo>,
        shared: Arc<Shared>,
        peer: SocketAddr,
        local: SocketAddr,
        orig_dst: Option<SocketAddr>,
    ) -> Self {
        Self {
            info,
            shared,
            peer,
            local,
            orig_dst,
            peer_info: None,
            client_cert: None,
            passthrough: OnceLock::new(),
        }
    }

    /// The same connection with its verified mTLS peer.
    pub fn with_peer(mut self, peer: Option<Arc<inbound::PeerInfo>>) -> Self {
        self.peer_info = peer;
        self
    }

    /// The same connection with the verified client certificate of its listener's own TLS.
    pub fn with_client_cert(mut self, cert: Option<Arc<gateway::ClientCert>>) -> Self {
        self.client_cert = cert;
        self
    }

    /// Step 1 of a request: the service it goes to. At a gateway, the route-only service of the
    /// table bound to the gateway that serves `authority` (none: [`ProxyError::NoRoute`], 404
    /// `NR`); elsewhere the connection's destination.
    pub fn request_destination(
        &self,
        snapshot: &Snapshot,
        authority: Option<&str>,
    ) -> Result<Arc<Service>, ProxyError> {
        let Some(gw) = &self.info.gateway else {
            return self.destination(snapshot);
        };
        let authority = authority.unwrap_or_default();
        snapshot
            .gateway_service(gw, authority)
            .cloned()
            .ok_or_else(|| {
                ProxyError::NoRoute(format!(
                    "host `{}`: no route table bound to gateway {gw} serves it",
                    gateway::host_of(authority)
                ))
            })
    }

    /// The scheme clients used: `https` on a listener terminating its own TLS, else `http`
    /// (`x-forwarded-proto`, redirects).
    pub fn scheme(&self) -> &'static str {
        if self.info.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The service this connection's requests go to, in the current snapshot.
    pub fn destination(&self, snapshot: &Snapshot) -> Result<Arc<Service>, ProxyError> {
        match resolve(&self.info, self.local, self.orig_dst, snapshot)? {
            Resolved::Service(svc) => Ok(svc),
            Resolved::Passthrough { name, dst } => Ok(self
                .passthrough
                .get_or_init(|| Arc::new(Service::passthrough(name, dst)))
                .clone()),
        }
    }
}

/// Where a connection goes, decided from the listener and the original destination.
#[derive(Debug)]
pub enum Resolved {
    /// A configured service.
    Service(Arc<Service>),
    /// No service claims the original destination: forward to it as is.
    Passthrough { name: &'static str, dst: SocketAddr },
}

/// Decides a connection's destination. Pure: no I/O, so it is tested without sockets.
pub fn resolve(
    info: &ListenerInfo,
    local: SocketAddr,
    orig_dst: Option<SocketAddr>,
    snapshot: &Snapshot,
) -> Result<Resolved, ProxyError> {
    if let Some(gw) = &info.gateway {
        // Routed per request by authority; a connection alone has no destination.
        return Err(ProxyError::NoRoute(format!(
            "a connection that is not HTTP: gateway {gw} routes HTTP requests only"
        )));
    }
    if let Some(name) = &info.service {
        return snapshot
            .service(name)
            .cloned()
            .map(Resolved::Service)
            .ok_or_else(|| ProxyError::NoService(name.clone()));
    }
    let dst = match orig_dst {
        // A connection made to the listener itself has no original destination: forwarding it
        // to its own destination would loop.
        Some(dst) if dst != local => dst,
        _ => return Err(ProxyError::NoOriginalDst(local)),
    };
    if let Some(svc) = snapshot.service_for_address(&dst) {
        return Ok(Resolved::Service(svc.clone()));
    }
    let name = match info.direction {
        Direction::Inbound => inbound::PASSTHROUGH,
        Direction::Outbound => outbound::PASSTHROUGH,
    };
    Ok(Resolved::Passthrough { name, dst })
}

/// The running listeners, by name.
#[derive(Debug, Default)]
pub struct ListenerSet {
    running: HashMap<String, Running>,
}

#[derive(Debug)]
struct Running {
    config: Listener,
    local: SocketAddr,
    info: Arc<ArcSwap<ListenerInfo>>,
    stop: CancellationToken,
    /// The HTTP/3 endpoint on the same port (`http3: true`).
    h3: Option<crate::h3::Server>,
}

/// Sockets bound for a new configuration, not yet accepting.
#[derive(Debug)]
pub struct Prepared {
    wanted: Vec<Listener>,
    fresh: HashMap<String, TcpListener>,
    /// Server TLS configs built from the listeners' files, by listener name.
    tls: HashMap<String, ListenerTls>,
    /// New name -> old name, for listeners that keep a running socket.
    kept: HashMap<String, String>,
    /// UDP sockets for HTTP/3 endpoints that do not run yet, by listener name.
    udp: HashMap<String, std::net::UdpSocket>,
}

impl ListenerSet {
    /// Binds what `wanted` adds. Nothing changes if any bind fails.
    pub async fn prepare(&self, wanted: &[Listener], file: &str) -> Result<Prepared, ConfigError> {
        let mut fresh = HashMap::new();
        let mut kept = HashMap::new();
        let mut tls = HashMap::new();
        let mut udp = HashMap::new();
        for (i, l) in wanted.iter().enumerate() {
            if let Some(t) = &l.tls {
                let (tcp, leaf) = crate::tls::server::server_config_with_leaf(t, LISTENER_ALPN)
                    .map_err(|e| crate::config::server_tls_error(file, i, &e))?;
                // The same certificate (files read once) with ALPN `h3`.
                let h3 = l.http3.then(|| {
                    let mut h3 = rustls::ServerConfig::clone(&tcp);
                    h3.alpn_protocols = vec![ALPN_H3.to_vec()];
                    Arc::new(h3)
                });
                tls.insert(l.name.clone(), ListenerTls { tcp, h3, leaf });
            }
            let reuse = self.running.iter().find(|(name, r)| {
                r.config.address == l.address && (name.as_str() == l.name || l.address.port() != 0)
            });
            // HTTP/3 shares the TCP listener's port; its UDP socket is bound here too, so a
            // port that cannot be had refuses the configuration.
            let bind_udp = |addr: SocketAddr| {
                crate::h3::bind_udp(addr).map_err(|e| {
                    ConfigError::field(
                        file,
                        format!("listeners[{i}].http3"),
                        e.to_string(),
                        "free the UDP port, or set http3: false",
                    )
                })
            };
            if let Some((old, running)) = reuse
                && !kept.values().any(|v: &String| v == old)
            {
                if l.http3 && running.h3.is_none() {
                    udp.insert(l.name.clone(), bind_udp(running.local)?);
                }
                kept.insert(l.name.clone(), old.clone());
                continue;
            }
            let socket = bind(l.address).await.map_err(|e| {
                ConfigError::field(
                    file,
                    format!("listeners[{i}].address"),
                    format!("cannot bind {}: {e}", l.address),
                    "is another process using the port, or does binding it need privileges?",
                )
            })?;
            if l.http3
                && let Ok(local) = socket.local_addr()
            {
                udp.insert(l.name.clone(), bind_udp(local)?);
            }
            fresh.insert(l.name.clone(), socket);
        }
        Ok(Prepared {
            wanted: wanted.to_vec(),
            fresh,
            kept,
            tls,
            udp,
        })
    }

    /// Starts the prepared listeners, updates the kept ones and stops the rest. Returns the
    /// bound address of every listener.
    pub fn commit(
        &mut self,
        mut prepared: Prepared,
        shared: &Arc<Shared>,
    ) -> HashMap<String, SocketAddr> {
        let mut next = HashMap::new();
        for l in prepared.wanted {
            let tls = prepared.tls.remove(&l.name);
            if let Some(t) = &tls {
                t.announce(&l.name);
            }
            let mut info = ListenerInfo::from_config(&l, tls);
            if let Some(mut old) = prepared
                .kept
                .get(&l.name)
                .and_then(|o| self.running.remove(o))
            {
                old.h3 = crate::h3::reconcile(
                    old.h3.take(),
                    info.h3_tls.as_deref(),
                    prepared.udp.remove(&l.name),
                    old.local,
                    &old.info,
                    shared,
                );
                info.alt_svc = old.h3.as_ref().map(crate::h3::Server::alt_svc);
                old.info.store(Arc::new(info));
                next.insert(l.name.clone(), Running { config: l, ..old });
            } else if let Some(socket) = prepared.fresh.remove(&l.name) {
                let Ok(local) = socket.local_addr() else {
                    continue;
                };
                let h3_tls = info.h3_tls.clone();
                let info = Arc::new(ArcSwap::from_pointee(info));
                let udp = prepared.udp.remove(&l.name);
                let h3 = crate::h3::reconcile(None, h3_tls.as_deref(), udp, local, &info, shared);
                if let Some(h3) = &h3 {
                    let mut with_alt_svc = ListenerInfo::clone(&info.load());
                    with_alt_svc.alt_svc = Some(h3.alt_svc());
                    info.store(Arc::new(with_alt_svc));
                }
                let stop = CancellationToken::new();
                tracing::info!(listener = %l.name, address = %local, "listening");
                tokio::spawn(accept_loop(
                    socket,
                    info.clone(),
                    shared.clone(),
                    stop.clone(),
                ));
                next.insert(
                    l.name.clone(),
                    Running {
                        config: l,
                        local,
                        info,
                        stop,
                        h3,
                    },
                );
            }
        }
        for (name, old) in self.running.drain() {
            tracing::info!(listener = %name, address = %old.local, "listener removed");
            old.stop.cancel();
            if let Some(h3) = &old.h3 {
                h3.stop();
            }
        }
        self.running = next;
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.local))
            .collect()
    }
}

/// A listener's own server TLS configs, built together from its files.
#[derive(Debug)]
struct ListenerTls {
    tcp: Arc<rustls::ServerConfig>,
    h3: Option<Arc<rustls::ServerConfig>>,
    /// The leaf served, for the expiry gauge and the log line.
    leaf: rustls_pki_types::CertificateDer<'static>,
}

/// Gauge of the notAfter (Unix seconds) of the certificate each listener with its own TLS
/// serves, set on every accepted (re)load: alert when it comes near.
pub const CERTIFICATE_EXPIRY_METRIC: &str = "jalin_listener_certificate_expiry_timestamp_seconds";

impl ListenerTls {
    /// Logs the certificate now in force for `listener` and sets its expiry gauge.
    fn announce(&self, listener: &str) {
        let der = self.leaf.as_ref();
        let not_after = crate::tls::server::not_after_unix(der);
        tracing::info!(
            listener,
            subject = crate::tls::server::subject_of(der).as_deref().unwrap_or("-"),
            sha256 = %jalin_ca::tls::fingerprint_sha256(der),
            not_after_unix = not_after.unwrap_or_default(),
            "listener certificate in force"
        );
        if let Some(t) = not_after {
            metrics::gauge!(CERTIFICATE_EXPIRY_METRIC, "listener" => listener.to_owned())
                .set(t as f64);
        }
    }
}

/// ALPN of a listener's own TLS over TCP, in preference order.
pub const LISTENER_ALPN: &[&[u8]] = &[jalin_ca::tls::ALPN_H2, jalin_ca::tls::ALPN_HTTP11];

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    // tokio sets SO_REUSEADDR, so a restarted proxy rebinds while old connections sit in
    // TIME_WAIT.
    TcpListener::bind(addr).await
}

async fn accept_loop(
    socket: TcpListener,
    info: Arc<ArcSwap<ListenerInfo>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        // Wait for room before accepting, so a connection flood queues in the kernel backlog.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            () = shared.drain.cancelled() => break,
            p = shared.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            () = shared.drain.cancelled() => break,
            r = socket.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; check the process's open-file limit");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let info = info.load_full();
        let conn = handle(stream, peer, info, shared.clone());
        shared.tasks.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, info: Arc<ListenerInfo>, shared: Arc<Shared>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let orig_dst = if info.service.is_none() && info.gateway.is_none() {
        Some(original_dst(&stream).unwrap_or(local))
    } else {
        None
    };
    // The listener's own TLS, else peer authentication (inbound with an identity): the port's
    // mTLS mode decides.
    let mut client_cert = None;
    let accepted = match (&info.tls, &shared.identity, info.direction) {
        (Some(config), _, _) => {
            let Some((a, cert)) = gateway::accept_tls(stream, config.clone(), peer).await else {
                return;
            };
            client_cert = cert.map(Arc::new);
            a
        }
        (None, Some(identity), Direction::Inbound) => {
            let port = orig_dst.unwrap_or(local).port();
            let mode = info
                .mtls
                .unwrap_or_else(|| shared.security.load().mtls_mode(port));
            match inbound::accept(stream, inbound::port_mode(mode), identity, peer).await {
                Some(a) => a,
                None => return,
            }
        }
        _ => inbound::Accepted {
            io: inbound::ServerIo::Plain(Rewind::new(Bytes::new(), stream)),
            alpn: None,
            peer: None,
        },
    };
    let stream = accepted.io;
    let (protocol, io) = match (accepted.alpn, info.protocol) {
        (Some(p), ListenerProtocol::Detect | ListenerProtocol::Http1 | ListenerProtocol::Http2) => {
            (p, Rewind::new(Bytes::new(), stream))
        }
        (_, ListenerProtocol::Detect) => match detect::detect(stream).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "connection closed during protocol detection");
                return;
            }
        },
        (_, ListenerProtocol::Http1) => (Protocol::Http1, Rewind::new(Bytes::new(), stream)),
        (_, ListenerProtocol::Http2) => (Protocol::Http2, Rewind::new(Bytes::new(), stream)),
        (_, ListenerProtocol::Tcp) => (Protocol::Opaque, Rewind::new(Bytes::new(), stream)),
    };
    tracing::trace!(listener = %info.name, %peer, protocol = protocol.as_str(), "accepted");
    let conn = Arc::new(
        ConnCtx::new(info, shared, peer, local, orig_dst)
            .with_peer(accepted.peer)
            .with_client_cert(client_cert),
    );
    match protocol {
        Protocol::Opaque => tcp::forward(io, conn).await,
        Protocol::Http1 | Protocol::Http2 => http::server::serve(io, protocol, conn).await,
    }
}

/// The destination the client dialled before an iptables `REDIRECT` sent it here
/// (`SO_ORIGINAL_DST`), or `None` when the connection was not redirected.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => {
            let sa = getsockopt(stream, sockopt::OriginalDst).ok()?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sa.sin_port),
            )))
        }
        SocketAddr::V6(_) => {
            let sa = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
            let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sa.sin6_port),
                0,
                0,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let yaml = "\
services:
  - name: reviews
    addresses: [10.96.0.10:9080]
    endpoints:
      - address: 10.1.0.5:9080
";
        let (config, origin) = crate::config::parse("t.yaml", yaml).unwrap();
        Snapshot::build(1, config, origin, None)
    }

    fn info(service: Option<&str>, direction: Direction) -> ListenerInfo {
        ListenerInfo {
            name: Arc::from("l"),
            direction,
            service: service.map(str::to_owned),
            protocol: ListenerProtocol::Detect,
            mtls: None,
            gateway: None,
            tls: None,
            h3_tls: None,
            alt_svc: None,
        }
    }

    #[tokio::test]
    async fn transparent_destinations() {
        let snap = snapshot();
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let out = info(None, Direction::Outbound);
        // A virtual address maps to its service.
        let vip = "10.96.0.10:9080".parse().unwrap();
        match resolve(&out, local, Some(vip), &snap).unwrap() {
            Resolved::Service(s) => assert_eq!(&*s.name, "reviews"),
            other => panic!("{other:?}"),
        }
        // Anything else passes through to where the client was going.
        let other = "93.184.216.34:443".parse().unwrap();
        match resolve(&out, local, Some(other), &snap).unwrap() {
            Resolved::Passthrough { name, dst } => {
                assert_eq!(name, "PassthroughCluster");
                assert_eq!(dst, other);
            }
            r => panic!("{r:?}"),
        }
        match resolve(&info(None, Direction::Inbound), local, Some(other), &snap).unwrap() {
            Resolved::Passthrough { name, .. } => assert_eq!(name, "InboundPassthroughCluster"),
            r => panic!("{r:?}"),
        }
        // Not redirected: the destination is the listener itself, which would loop.
        let err = resolve(&out, local, Some(local), &snap).unwrap_err();
        assert!(err.to_string().contains("iptables"), "{err}");
    }

    #[tokio::test]
    async fn gateway_requests_go_to_the_bound_table_serving_their_host() {
        let yaml = "\
services:
  - name: reviews
    endpoints:
      - address: 10.1.0.5:9080
routes:
  - meta: { name: exact, namespace: prod }
    hosts: [reviews.example.gov]
    gateways: [istio-system/ingress]
    http:
      - destinations:
          - destination: { host: reviews }
            weight: 100
  - meta: { name: wild, namespace: prod }
    hosts: ['*.example.gov']
    gateways: [istio-system/ingress, mesh]
    http:
      - destinations:
          - destination: { host: reviews }
            weight: 100
  - meta: { name: sidecars, namespace: prod }
    hosts: [internal.example.gov, reviews]
    http:
      - destinations:
          - destination: { host: reviews }
            weight: 100
";
        let (config, origin) = crate::config::parse("t.yaml", yaml).unwrap();
        let snap = Snapshot::build(1, config, origin, None);
        let mut gw = info(None, Direction::Outbound);
        gw.gateway = Some("istio-system/ingress".into());
        let name = |authority: &str| {
            snap.gateway_service("istio-system/ingress", authority)
                .map(|s| s.name.to_string())
        };
        assert_eq!(
            name("reviews.example.gov:443").as_deref(),
            Some("prod/exact")
        );
        assert_eq!(name("internal.example.gov").as_deref(), Some("prod/wild"));
        assert_eq!(name("reviews"), None, "a mesh-only table");
        assert!(
            snap.gateway_service("istio-system/other", "reviews.example.gov")
                .is_none()
        );
        // The sidecars keep their own table for the service.
        assert_eq!(
            snap.service("reviews")
                .unwrap()
                .routes
                .as_ref()
                .unwrap()
                .name,
            "prod/sidecars"
        );

        // A gateway connection has no destination of its own (opaque bytes are not routed).
        let local = "127.0.0.1:443".parse().unwrap();
        assert!(matches!(
            resolve(&gw, local, None, &snap),
            Err(ProxyError::NoRoute(_))
        ));
    }

    #[tokio::test]
    async fn prepare_builds_the_listener_tls_for_tcp_and_http3_or_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.example.gov".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let yaml = format!(
            "listeners:\n  - name: gw\n    address: 127.0.0.1:0\n    direction: outbound\n    gateway: ns/gw\n    http3: true\n    tls:\n      certificate_chain: {}\n      private_key: {}\nservices: []\n",
            c.display(),
            k.display()
        );
        let (config, _) = crate::config::parse("t.yaml", &yaml).unwrap();
        let set = ListenerSet::default();
        let prepared = set.prepare(&config.listeners, "t.yaml").await.unwrap();
        let tls = &prepared.tls["gw"];
        assert_eq!(
            tls.tcp.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(
            tls.h3.as_ref().unwrap().alpn_protocols,
            vec![b"h3".to_vec()]
        );

        // The HTTP/3 socket is bound with the TCP one, on the TCP listener's port.
        let tcp = prepared.fresh["gw"].local_addr().unwrap();
        assert_eq!(prepared.udp["gw"].local_addr().unwrap(), tcp);
        drop(prepared);

        // A UDP port another process holds refuses the configuration, naming `http3`.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let on_taken = yaml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let (config_taken, _) = crate::config::parse("t.yaml", &on_taken).unwrap();
        let err = set
            .prepare(&config_taken.listeners, "t.yaml")
            .await
            .unwrap_err();
        assert_eq!(err.path, "listeners[0].http3", "{err}");
        assert!(err.message.contains("cannot bind UDP"), "{err}");

        std::fs::write(&k, "garbage").unwrap();
        let err = set.prepare(&config.listeners, "t.yaml").await.unwrap_err();
        assert_eq!(err.path, "listeners[0].tls.private_key");
    }

    #[tokio::test]
    async fn explicit_destinations() {
        let snap = snapshot();
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let l = info(Some("reviews"), Direction::Outbound);
        assert!(matches!(
            resolve(&l, local, None, &snap),
            Ok(Resolved::Service(_))
        ));
        let l = info(Some("gone"), Direction::Outbound);
        assert!(matches!(
            resolve(&l, local, None, &snap),
            Err(ProxyError::NoService(_))
        ));
    }
}
