//! jalin-tests: shared harness for the end-to-end suites: real upstream servers (HTTP echo,
//! gRPC, WebSocket echo, TCP echo) and an in-process proxy, all on loopback sockets bound to
//! port 0, plus helpers to drive real clients (curl).

pub mod client;
pub mod process;
pub mod proxy;
pub mod upstream;

/// Aborts a spawned task when dropped, so a test's servers stop with the test.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
