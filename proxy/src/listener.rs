//! Listeners: binds the configured addresses, accepts connections, finds each connection's
//! destination (explicit service or original destination), detects its protocol and hands it to
//! the HTTP server or the TCP forwarder. On reload the set is reconciled: new listeners are
//! bound before the new configuration takes effect, removed ones stop accepting while their
//! connections finish.
//!
//! Invariant: a listener kept across a reload keeps its socket, so no connection attempt is
//! refused during a reload; a listener whose settings changed picks them up for new connections.

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
use crate::http::respond::ProxyError;
use crate::snapshot::{Service, Snapshot};
use crate::{http, inbound, outbound, tcp};

/// Pause after a failed `accept` (for example `EMFILE`), so a full file table does not spin a
/// core while connections drain.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection needs to know about the listener that accepted it.
#[derive(Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub direction: Direction,
    /// Explicit mode's service; `None` in transparent mode.
    pub service: Option<String>,
    pub protocol: ListenerProtocol,
}

impl ListenerInfo {
    fn from_config(l: &Listener) -> Self {
        Self {
            name: Arc::from(l.name.as_str()),
            direction: l.direction,
            service: l.service.clone(),
            protocol: l.protocol,
        }
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
            passthrough: OnceLock::new(),
        }
    }

    /// The service this connection's requests go to, in the current snapshot.
    pub fn destination(&self, snapshot: &Snapshot) -> Result<Arc<Service>, ProxyError> {
        if let Some(name) = &self.info.service {
            return snapshot
                .service(name)
                .cloned()
                .ok_or_else(|| ProxyError::NoService(name.clone()));
        }
        let dst = match self.orig_dst {
            // A connection made to the listener itself has no original destination: forwarding
            // it to its own destination would loop.
            Some(dst) if dst != self.local => dst,
            _ => return Err(ProxyError::NoOriginalDst(self.local)),
        };
        if let Some(svc) = snapshot.service_for_address(&dst) {
            return Ok(svc.clone());
        }
        let name = match self.info.direction {
            Direction::Inbound => inbound::PASSTHROUGH,
            Direction::Outbound => outbound::PASSTHROUGH,
        };
        Ok(self
            .passthrough
            .get_or_init(|| Arc::new(Service::passthrough(name, dst)))
            .clone())
    }
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
}

/// Sockets bound for a new configuration, not yet accepting.
#[derive(Debug)]
pub struct Prepared {
    wanted: Vec<Listener>,
    fresh: HashMap<String, TcpListener>,
    /// New name -> old name, for listeners that keep a running socket.
    kept: HashMap<String, String>,
}

impl ListenerSet {
    /// Binds what `wanted` adds. Nothing changes if any bind fails.
    pub async fn prepare(&self, wanted: &[Listener], file: &str) -> Result<Prepared, ConfigError> {
        let mut fresh = HashMap::new();
        let mut kept = HashMap::new();
        for (i, l) in wanted.iter().enumerate() {
            let reuse = self.running.iter().find(|(name, r)| {
                r.config.address == l.address && (name.as_str() == l.name || l.address.port() != 0)
            });
            if let Some((old, _)) = reuse
                && !kept.values().any(|v: &String| v == old)
            {
                kept.insert(l.name.clone(), old.clone());
                continue;
            }
            let socket = bind(l.address).await.map_err(|e| ConfigError {
                file: file.to_owned(),
                line: 0,
                column: 0,
                path: format!("listeners[{i}].address"),
                message: format!("cannot bind {}: {e}", l.address),
                hint: "is another process using the port, or does binding it need privileges?"
                    .into(),
            })?;
            fresh.insert(l.name.clone(), socket);
        }
        Ok(Prepared {
            wanted: wanted.to_vec(),
            fresh,
            kept,
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
            let info = ListenerInfo::from_config(&l);
            if let Some(old) = prepared
                .kept
                .get(&l.name)
                .and_then(|o| self.running.remove(o))
            {
                old.info.store(Arc::new(info));
                next.insert(l.name.clone(), Running { config: l, ..old });
            } else if let Some(socket) = prepared.fresh.remove(&l.name) {
                let Ok(local) = socket.local_addr() else {
                    continue;
                };
                let info = Arc::new(ArcSwap::from_pointee(info));
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
                    },
                );
            }
        }
        for (name, old) in self.running.drain() {
            tracing::info!(listener = %name, address = %old.local, "listener removed");
            old.stop.cancel();
        }
        self.running = next;
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.local))
            .collect()
    }
}

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
        shared
            .tasks
            .spawn(handle(stream, peer, info, shared.clone()));
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, info: Arc<ListenerInfo>, shared: Arc<Shared>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let orig_dst = if info.service.is_none() {
        Some(original_dst(&stream).unwrap_or(local))
    } else {
        None
    };
    let (protocol, io) = match info.protocol {
        ListenerProtocol::Detect => match detect::detect(stream).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "connection closed during protocol detection");
                return;
            }
        },
        ListenerProtocol::Http1 => (Protocol::Http1, Rewind::new(Bytes::new(), stream)),
        ListenerProtocol::Http2 => (Protocol::Http2, Rewind::new(Bytes::new(), stream)),
        ListenerProtocol::Tcp => (Protocol::Opaque, Rewind::new(Bytes::new(), stream)),
    };
    tracing::trace!(listener = %info.name, %peer, protocol = protocol.as_str(), "accepted");
    let conn = Arc::new(ConnCtx::new(info, shared, peer, local, orig_dst));
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
