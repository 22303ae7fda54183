//! The HTTP server side: serves a detected HTTP/1.1 or HTTP/2 connection with bounded limits and
//! hands each request to [`forward::forward`].

pub mod attempt;
pub mod body;
pub mod forward;
pub mod headers;
pub mod keepalive;
pub mod premature;
pub mod respond;
pub mod routing;
pub mod server;
pub mod upgrade;
