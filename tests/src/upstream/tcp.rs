//! A raw TCP echo server: every byte read is written back.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::AbortOnDrop;

#[derive(Debug)]
pub struct TcpEchoUpstream {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl TcpEchoUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(Self {
            addr,
            _task: AbortOnDrop(task),
        })
    }
}
