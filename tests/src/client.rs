//! Real clients: curl and `openssl s_client` (as child processes killed on drop) and a pooled
//! hyper client.

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// curl's output for one request.
#[derive(Debug)]
pub struct CurlOutput {
    pub status: u16,
    /// `1.1` or `2`.
    pub http_version: String,
    pub body: String,
}

/// Runs `curl -sS` against `url` with extra `args`; fails when curl fails.
pub async fn curl(url: &str, args: &[&str]) -> anyhow::Result<CurlOutput> {
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--max-time")
        .arg("30")
        .arg("-w")
        .arg("\n%{http_code} %{http_version}")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (body, tail) = text
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("no curl trailer"))?;
    let (code, version) = tail
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("bad trailer {tail}"))?;
    Ok(CurlOutput {
        status: code.parse()?,
        http_version: version.to_owned(),
        body: body.to_owned(),
    })
}

/// Runs `openssl s_client -ign_eof` with `args`, writes `request` once connected (a refused
/// client may exit first: a closed pipe is expected then) and returns stdout and stderr
/// together, within 30 s.
pub async fn s_client(args: &[&str], request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    if let Err(e) = stdin.write_all(request).await {
        anyhow::ensure!(e.kind() == std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await??;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A pooled HTTP/1.1 client (keep-alive), like an application's.
pub fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A pooled h2c (prior knowledge) client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GETs `http://addr{path}` and returns the status, the `x-upstream` header and the body.
pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, String, Bytes)> {
    let rsp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = rsp.status().as_u16();
    let upstream = rsp
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, upstream, body))
}
