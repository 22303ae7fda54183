//! HTTP/3 connections for the generator (`--http 3`): one QUIC endpoint and connection per
//! [`crate::client::HttpClient`], driven by `h3` as a user's client would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http_body_util::Full;
use rustls::ClientConfig;
use tokio::task::JoinHandle;

use crate::record::Outcome;

/// The request side of a live HTTP/3 connection.
pub type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// The QUIC client configuration for `tls` (its ALPN must be `h3`).
pub fn client_config(tls: Arc<ClientConfig>) -> Result<quinn::ClientConfig, String> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("the TLS settings cannot do QUIC: {e}"))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// A live HTTP/3 connection: its endpoint (one UDP socket), request side and driver task.
pub struct Connection {
    pub send: SendRequest,
    pub task: JoinHandle<()>,
    pub endpoint: quinn::Endpoint,
}

/// Connects to `to` (resolved now) as `server_name` within `timeout`.
pub async fn connect(
    config: &quinn::ClientConfig,
    to: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let addr = tokio::net::lookup_host(to)
        .await
        .map_err(|e| format!("connect: {e}"))?
        .next()
        .ok_or_else(|| format!("connect: {to} has no address"))?;
    let local = if addr.is_ipv4() {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let mut endpoint = quinn::Endpoint::client(local).map_err(|e| format!("connect: {e}"))?;
    endpoint.set_default_client_config(config.clone());
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| format!("quic: {e}"))?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| "quic: handshake timeout".to_owned())?
        .map_err(|e| format!("quic: {e}"))?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| format!("h3: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok(Connection {
        send,
        task,
        endpoint,
    })
}

/// Sends `request` (head, then its body, if any) and reads the whole response.
pub async fn send(mut sender: SendRequest, request: Request<Full<Bytes>>) -> Outcome {
    let (parts, body) = request.into_parts();
    let body = match http_body_util::BodyExt::collect(body).await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let mut stream = match sender.send_request(Request::from_parts(parts, ())).await {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("h3: {e}")),
    };
    if !body.is_empty()
        && let Err(e) = stream.send_data(body).await
    {
        return Outcome::Error(format!("h3 body: {e}"));
    }
    if let Err(e) = stream.finish().await {
        return Outcome::Error(format!("h3 body: {e}"));
    }
    let status = match stream.recv_response().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => return Outcome::Error(format!("h3: {e}")),
    };
    let mut body_bytes: u64 = 0;
    loop {
        match stream.recv_data().await {
            Ok(Some(chunk)) => body_bytes += chunk.remaining() as u64,
            Ok(None) => break,
            Err(e) => return Outcome::Error(format!("body: {e}")),
        }
    }
    Outcome::Response { status, body_bytes }
}
