//! Upstream servers the suites put behind the proxy. Each binds `127.0.0.1:0`, serves in a task
//! that stops when the value is dropped, and exposes its address.

pub mod control;
pub mod grpc;
pub mod http;
pub mod tcp;
pub mod ws;

pub use control::{ControlledUpstream, Mode};
pub use grpc::GrpcUpstream;
pub use http::{HttpUpstream, StreamingUpstream};
pub use tcp::TcpEchoUpstream;
pub use ws::WsEchoUpstream;
