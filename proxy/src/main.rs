//! The `jalin-proxy` binary.
fn main() {}
