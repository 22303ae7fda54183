//! Every bound the data path enforces, as named constants with the reason for each value.
//!
//! Nothing here is configurable per request: a limit that is not bounded is a way to exhaust the
//! proxy. Values follow the proxies people already trust (Envoy, Linkerd, ztunnel) unless noted.

use std::time::Duration;

/// How long protocol detection waits for a client's first bytes before treating the connection
/// as opaque TCP (Linkerd's 10 s; Istio waits without limit). A client that opens connections
/// ahead of use (pools, load generators) must not have them turned into opaque TCP, which would
/// bypass HTTP routing and meet only the TCP-level authorization; so the wait is long, and
/// server-first protocols (MySQL, SMTP), which send nothing until the server speaks, belong on a
/// `tcp` listener (in Istio terms: declare the port's protocol) rather than a `detect` one.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes protocol detection reads at most: an HTTP/1 request line longer than this is not one a
/// real client sends, and the buffer is replayed to the next stage so it must stay small.
pub const DETECT_MAX_BYTES: usize = 8 * 1024;

/// Largest HTTP/1 request head (request line plus headers) accepted: Envoy's and Node's 60-64 KiB
/// default. hyper answers 431 beyond it.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most HTTP/1 headers in one message; Envoy's `max_headers_count` default is 100, and so is
/// hyper's, which parses up to this many on the stack (so it is not set explicitly).
pub const MAX_HEADERS: usize = 100;

/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, matching the HTTP/1 bound.
pub const MAX_H2_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Time a client has to send a complete request head, from its first byte (slowloris bound), and
/// a new connection has to send its first head. Envoy's `request_headers_timeout` is off by
/// default; Go's servers commonly use 10 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 keep-alive connection waiting for its next request is closed after this long
/// (Envoy's HTTP connection manager `idle_timeout` default, which Istio keeps). It is longer than
/// the upstream pools' idle timeout, so a jalin client closes a pooled connection before the jalin
/// server behind it would, and never sends on a connection being closed.
pub const DOWNSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Concurrent streams one downstream HTTP/2 connection may open. Envoy allows 2^31 - 1 and was
/// bitten by it; 100 is the value RFC 9113 recommends as a minimum and Go and hyper's clients
/// expect to be able to open.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// CVE-2023-44487 (HTTP/2 rapid reset): streams a client may open and reset before the proxy has
/// accepted them. Past this the connection is closed with `ENHANCE_YOUR_CALM`. hyper's default is
/// 20; the client that resets more than this many unprocessed streams is not a real client.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// CVE-2023-44487 (and its 2024 "MadeYouReset" variant): streams the proxy itself resets because
/// the peer misbehaved, per connection, before the connection is closed. hyper's default is 1024.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Idle downstream HTTP/2 connections are checked with PING at this interval so dead peers are
/// found and their resources freed.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// A PING not answered within this time closes the connection.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Upstream connections idle in a pool longer than this are closed (Envoy's `idle_timeout`
/// default is 1 h, which keeps far more sockets open than a sidecar needs; Linkerd uses 10 s...
/// 60 s keeps warm connections across ordinary traffic gaps).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle HTTP/1.1 keep-alive connections kept per endpoint; HTTP/2 needs only one.
pub const POOL_MAX_IDLE_PER_ENDPOINT: usize = 64;

/// An opaque TCP connection with no bytes in either direction for this long is closed
/// (Envoy's TCP proxy `idle_timeout` default is 1 h).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Downstream connections open at once, across all listeners. Past it the proxy stops accepting
/// (the kernel's backlog queues, then refuses) instead of running out of file descriptors or
/// memory; a sidecar that needs more than this is better served by more replicas.
pub const MAX_DOWNSTREAM_CONNECTIONS: usize = 65_536;

/// How long SIGTERM waits for in-flight requests and connections to finish before the process
/// exits anyway, unless `--drain-duration` (or the injector, from the mesh's
/// `injection.drainDuration` or the pod's `proxy.istio.io/config`) says otherwise; Kubernetes'
/// default termination grace period is 30 s, so stay under it.
pub const DRAIN_DEADLINE: Duration = jalin_xds::model::drain::DEFAULT_DRAIN;

/// Quiet period after a file-change event before the configuration is reloaded, so an editor's
/// write-rename-chmod sequence triggers one reload, not three.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// Largest configuration file read; a bigger file is an operator mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Premature-reset heuristic (Envoy's `premature_reset_total_stream_count`, default 500): once a
/// downstream connection has ended this many streams, it is closed when more than half were reset
/// by the client before their response started; earlier, as soon as the resets alone reach half
/// of it. Catches rapid-reset attackers that pace themselves under h2's own flood limits.
pub const PREMATURE_RESET_TOTAL_STREAM_COUNT: u64 = 500;

/// A stream the client resets after living longer than this is an ordinary cancellation, not a
/// premature reset (Envoy's `premature_reset_min_stream_lifetime_seconds`, default 1 s).
pub const PREMATURE_RESET_MIN_STREAM_LIFETIME: Duration = Duration::from_secs(1);

/// A connection closed for premature resets gets GOAWAY, then this long for its in-flight streams
/// before it is dropped: an attacker's streams are not worth waiting for.
pub const PREMATURE_RESET_CLOSE_GRACE: Duration = Duration::from_secs(1);
