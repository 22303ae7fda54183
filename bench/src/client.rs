//! HTTP connections the generator manages itself: one client connection per [`HttpClient`]
//! (HTTP/1.1 keep-alive or HTTP/2 with hyper, cleartext or TLS; HTTP/3 over QUIC with
//! [`crate::quic`]), reconnected on demand after a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::driver::{Client, PendingResponse};
use crate::record::Outcome;
use crate::tls::{ClientTls, TlsError, client_config};

/// Longest error text kept per failure (errors are counted by text).
const MAX_ERROR_TEXT: usize = 160;
/// Concurrent streams per HTTP/2 connection unless told otherwise (hyper's server default is 200).
pub const DEFAULT_H2_STREAMS: usize = 100;

/// The HTTP version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2: prior knowledge (h2c) in cleartext, ALPN `h2` over TLS.
    #[serde(rename = "2")]
    Http2,
    /// HTTP/3 over QUIC (ALPN `h3`); needs an `https` target.
    #[serde(rename = "3")]
    Http3,
}

impl std::str::FromStr for HttpVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.1" | "1" | "http1" | "http/1.1" => Ok(Self::Http1),
            "2" | "h2" | "h2c" | "http2" => Ok(Self::Http2),
            "3" | "h3" | "http3" => Ok(Self::Http3),
            other => Err(format!(
                "unknown HTTP version {other:?}: expected 1.1, 2 or 3"
            )),
        }
    }
}

impl HttpVersion {
    /// Requests one connection carries at once: one on HTTP/1.1, `streams` on the multiplexed
    /// versions (HTTP/2 and HTTP/3).
    pub fn in_flight(self, streams: usize) -> usize {
        match self {
            Self::Http1 => 1,
            Self::Http2 | Self::Http3 => streams,
        }
    }
}

impl std::fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
            Self::Http3 => "HTTP/3",
        })
    }
}

/// A target the generator cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL did not parse or lacks a part.
    #[error("URL {url:?}: {what} (expected e.g. http://127.0.0.1:8080/ or https://host:8443/path)")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        what: String,
    },
    /// A `--header` is not `name: value`.
    #[error("header {0:?}: expected \"name: value\" with a valid name and value")]
    Header(String),
    /// `--method` is not a valid method.
    #[error("method {0:?} is not a valid HTTP method")]
    Method(String),
    /// TLS settings could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The first connection failed.
    #[error("cannot connect to {url}: {detail}; is the server running and listening there?")]
    Connect {
        /// The target.
        url: String,
        /// What failed.
        detail: String,
    },
}

/// What to send, and where.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Method (default GET, or POST with a body).
    pub method: Method,
    /// Extra headers (a `host` header here overrides the URL's authority).
    pub headers: HeaderMap,
    /// Request body (empty for none).
    pub body: Bytes,
}

impl RequestSpec {
    /// A spec from CLI-style parts: `headers` as `"name: value"`, a body of `body_size` bytes.
    pub fn parse(
        method: Option<&str>,
        headers: &[String],
        body_size: usize,
    ) -> Result<Self, ClientError> {
        let method = match method {
            Some(m) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| ClientError::Method(m.to_owned()))?
            }
            None if body_size > 0 => Method::POST,
            None => Method::GET,
        };
        let mut map = HeaderMap::new();
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| ClientError::Header(h.clone()))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| ClientError::Header(h.clone()))?;
            let value =
                HeaderValue::from_str(value.trim()).map_err(|_| ClientError::Header(h.clone()))?;
            map.append(name, value);
        }
        Ok(Self {
            method,
            headers: map,
            body: Bytes::from(vec![b'x'; body_size]),
        })
    }
}

/// A parsed target URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given (for reports).
    pub url: String,
    tls: bool,
    authority: Authority,
    path: PathAndQuery,
    connect_to: String,
    server_name: ServerName<'static>,
}

impl Target {
    /// Parses `http://host:port/path` or `https://…`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |what: &str| ClientError::Url {
            url: url.to_owned(),
            what: what.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is not a valid TLS server name"))?;
        let connect_to = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{host}:{port}"),
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Self {
            url: url.to_owned(),
            tls,
            authority,
            path,
            connect_to,
            server_name,
        })
    }

    /// Whether the target speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// Everything needed to open connections to one target; shared by its [`HttpClient`]s.
pub struct Connector {
    target: Target,
    version: HttpVersion,
    tls: Option<TlsConnector>,
    /// The QUIC client configuration, for HTTP/3.
    quic: Option<quinn::ClientConfig>,
    spec: RequestSpec,
    h2_streams: usize,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("version", &self.version)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `target`; TLS settings are used only for `https` targets.
    pub fn new(
        target: Target,
        version: HttpVersion,
        tls: &ClientTls,
        spec: RequestSpec,
        h2_streams: usize,
        connect_timeout: Duration,
    ) -> Result<Arc<Self>, ClientError> {
        let mut quic = None;
        let tls = match (target.tls, version) {
            (false, HttpVersion::Http3) => {
                return Err(ClientError::Url {
                    url: target.url,
                    what: "HTTP/3 needs an https URL (QUIC is always encrypted)".to_owned(),
                });
            }
            (true, HttpVersion::Http3) => {
                let config = crate::quic::client_config(client_config(tls, &[b"h3"])?).map_err(
                    |detail| ClientError::Connect {
                        url: target.url.clone(),
                        detail,
                    },
                )?;
                quic = Some(config);
                None
            }
            (true, _) => {
                let alpn: &[&[u8]] = match version {
                    HttpVersion::Http2 => &[b"h2"],
                    _ => &[b"http/1.1"],
                };
                Some(TlsConnector::from(client_config(tls, alpn)?))
            }
            (false, _) => None,
        };
        Ok(Arc::new(Self {
            target,
            version,
            tls,
            quic,
            spec,
            h2_streams: h2_streams.max(1),
            connect_timeout,
        }))
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.spec.body.clone()));
        *req.method_mut() = self.spec.method.clone();
        *req.headers_mut() = self.spec.headers.clone();
        match self.version {
            HttpVersion::Http1 => {
                *req.uri_mut() = Uri::from(self.target.path.clone());
                if !req.headers().contains_key(HOST)
                    && let Ok(host) = HeaderValue::from_str(self.target.authority.as_str())
                {
                    req.headers_mut().insert(HOST, host);
                }
            }
            HttpVersion::Http2 | HttpVersion::Http3 => {
                let scheme = if self.target.tls {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                };
                if let Ok(uri) = Uri::builder()
                    .scheme(scheme)
                    .authority(self.target.authority.clone())
                    .path_and_query(self.target.path.clone())
                    .build()
                {
                    *req.uri_mut() = uri;
                }
            }
        }
        req
    }

    async fn connect(&self) -> Result<Live, String> {
        if let Some(quic) = &self.quic {
            let name = self.target.server_name.to_str();
            let c =
                crate::quic::connect(quic, &self.target.connect_to, &name, self.connect_timeout)
                    .await?;
            return Ok(Live {
                sender: Sender::H3 {
                    send: c.send,
                    _endpoint: c.endpoint,
                },
                task: c.task,
            });
        }
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.target.connect_to),
        )
        .await
        .map_err(|_| "connect: timeout".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("connect: {e}"))?;
        match &self.tls {
            None => self.handshake(tcp).await,
            Some(tls) => {
                let stream = tokio::time::timeout(
                    self.connect_timeout,
                    tls.connect(self.target.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| "tls: handshake timeout".to_owned())?
                .map_err(|e| format!("tls: {e}"))?;
                let want: &[u8] = match self.version {
                    HttpVersion::Http2 => b"h2",
                    _ => b"http/1.1",
                };
                match stream.get_ref().1.alpn_protocol() {
                    Some(got) if got == want => {}
                    // A server without ALPN is taken to speak HTTP/1.1.
                    None if self.version == HttpVersion::Http1 => {}
                    got => {
                        return Err(format!(
                            "tls: the server did not agree to {} via ALPN (got {:?})",
                            self.version,
                            got.map(String::from_utf8_lossy)
                        ));
                    }
                }
                self.handshake(stream).await
            }
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<Live, String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        match self.version {
            // `connect` sends HTTP/3 over QUIC before any TCP handshake.
            HttpVersion::Http3 => Err("HTTP/3 does not run over TCP".to_owned()),
            HttpVersion::Http1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("http1: {e}"))?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Live {
                    sender: Sender::H1(sender),
                    task,
                })
            }
            HttpVersion::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| format!("http2: {e}"))?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Live {
                    sender: Sender::H2(sender),
                    task,
                })
            }
        }
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
    /// The request side and the endpoint (its UDP socket) of an HTTP/3 connection.
    H3 {
        send: crate::quic::SendRequest,
        _endpoint: quinn::Endpoint,
    },
}

/// A live connection and the task that drives it (aborted when the connection is dropped).
struct Live {
    sender: Sender,
    task: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection to a target.
pub struct HttpClient {
    connector: Arc<Connector>,
    live: Option<Live>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("url", &self.connector.target.url)
            .field("connected", &self.live.is_some())
            .finish()
    }
}

fn error_text(prefix: &str, e: &dyn std::error::Error) -> String {
    let mut text = format!("{prefix}{e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn failed(text: String) -> PendingResponse {
    Box::pin(std::future::ready(Outcome::Error(text)))
}

impl HttpClient {
    /// A client that connects on first use.
    pub fn new(connector: Arc<Connector>) -> Self {
        Self {
            connector,
            live: None,
        }
    }

    /// Opens the connection now (so connection setup is not part of the first request's latency).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        let live = self
            .connector
            .connect()
            .await
            .map_err(|detail| ClientError::Connect {
                url: self.connector.target.url.clone(),
                detail,
            })?;
        self.live = Some(live);
        Ok(())
    }

    async fn ready(&mut self) -> Result<&mut Sender, String> {
        let usable = match &self.live {
            Some(Live {
                sender: Sender::H1(s),
                ..
            }) => !s.is_closed(),
            Some(Live {
                sender: Sender::H2(s),
                ..
            }) => !s.is_closed(),
            Some(Live {
                sender: Sender::H3 { .. },
                task,
            }) => !task.is_finished(),
            None => false,
        };
        if !usable {
            self.live = None;
            self.live = Some(self.connector.connect().await?);
        }
        let ready = match self.live.as_mut() {
            Some(live) => match &mut live.sender {
                Sender::H1(s) => s.ready().await.map_err(|e| error_text("connection: ", &e)),
                Sender::H2(s) => s.ready().await.map_err(|e| error_text("connection: ", &e)),
                Sender::H3 { .. } => Ok(()),
            },
            None => Err("connect: no connection".to_owned()),
        };
        if let Err(text) = ready {
            self.live = None;
            return Err(text);
        }
        self.live
            .as_mut()
            .map(|live| &mut live.sender)
            .ok_or_else(|| "connect: no connection".to_owned())
    }
}

async fn drain(response: hyper::Response<hyper::body::Incoming>) -> Outcome {
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => return Outcome::Error(error_text("body: ", &e)),
        }
    }
    Outcome::Response { status, body_bytes }
}

impl Client for HttpClient {
    async fn dispatch(&mut self) -> PendingResponse {
        let request = self.connector.request();
        let sender = match self.ready().await {
            Ok(sender) => sender,
            Err(text) => return failed(text),
        };
        match sender {
            Sender::H1(s) => {
                let response = s.send_request(request);
                Box::pin(async move {
                    match response.await {
                        Ok(r) => drain(r).await,
                        Err(e) => Outcome::Error(error_text("http: ", &e)),
                    }
                })
            }
            Sender::H2(s) => {
                let response = s.send_request(request);
                Box::pin(async move {
                    match response.await {
                        Ok(r) => drain(r).await,
                        Err(e) => Outcome::Error(error_text("http: ", &e)),
                    }
                })
            }
            Sender::H3 { send, .. } => Box::pin(crate::quic::send(send.clone(), request)),
        }
    }

    fn max_in_flight(&self) -> usize {
        self.connector.version.in_flight(self.connector.h2_streams)
    }

    fn failed(&mut self) {
        if self.connector.version == HttpVersion::Http1 {
            self.live = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str, version: HttpVersion, headers: &[&str]) -> Arc<Connector> {
        let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        Connector::new(
            Target::parse(url).unwrap(),
            version,
            &ClientTls::default(),
            RequestSpec::parse(None, &headers, 3).unwrap(),
            10,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn http3_needs_https_and_parses_as_3() {
        assert_eq!("3".parse::<HttpVersion>(), Ok(HttpVersion::Http3));
        assert_eq!("h3".parse::<HttpVersion>(), Ok(HttpVersion::Http3));
        let err = Connector::new(
            Target::parse("http://127.0.0.1:8080/").unwrap(),
            HttpVersion::Http3,
            &ClientTls::default(),
            RequestSpec::parse(None, &[], 0).unwrap(),
            10,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("HTTP/3 needs an https URL"),
            "{err}"
        );
    }

    #[test]
    fn http1_requests_use_origin_form_and_a_host_header() {
        let c = connector(
            "http://127.0.0.1:8080/a/b?q=1",
            HttpVersion::Http1,
            &["x-a: 1"],
        );
        let req = c.request();
        assert_eq!(req.uri().to_string(), "/a/b?q=1");
        assert_eq!(req.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(req.method(), Method::POST);
    }

    #[test]
    fn a_host_header_overrides_the_authority() {
        let c = connector(
            "http://127.0.0.1:8080/",
            HttpVersion::Http1,
            &["Host: svc.local"],
        );
        let req = c.request();
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
        assert_eq!(req.headers()[HOST], "svc.local");
    }

    #[test]
    fn http2_requests_carry_scheme_and_authority_in_the_uri() {
        let c = connector("http://localhost:9000/p", HttpVersion::Http2, &[]);
        let req = c.request();
        assert_eq!(req.uri().to_string(), "http://localhost:9000/p");
        assert!(req.headers().get(HOST).is_none());
    }

    #[test]
    fn targets_parse_with_default_ports_and_ipv6() {
        let t = Target::parse("https://example.org/x").unwrap();
        assert!(t.is_tls());
        assert_eq!(t.connect_to, "example.org:443");
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.connect_to, "[::1]:8080");
        assert_eq!(t.path.as_str(), "/");
        for bad in ["ftp://x/", "127.0.0.1:80", "http:///nohost", "not a url"] {
            let err = Target::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn bad_headers_and_methods_are_rejected() {
        assert!(matches!(
            RequestSpec::parse(None, &["no-colon".to_owned()], 0),
            Err(ClientError::Header(_))
        ));
        assert!(matches!(
            RequestSpec::parse(Some("GE T"), &[], 0),
            Err(ClientError::Method(_))
        ));
        let spec = RequestSpec::parse(Some("PUT"), &[], 0).unwrap();
        assert_eq!(spec.method, Method::PUT);
        assert!(spec.body.is_empty());
        assert_eq!(
            RequestSpec::parse(None, &[], 0).unwrap().method,
            Method::GET
        );
    }
}
