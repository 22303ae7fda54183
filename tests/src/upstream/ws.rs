//! A WebSocket echo server: every text or binary message comes back unchanged.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;

use crate::AbortOnDrop;

#[derive(Debug)]
pub struct WsEchoUpstream {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl WsEchoUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                break;
                            }
                        } else if msg.is_close() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            _task: AbortOnDrop(task),
        })
    }
}
