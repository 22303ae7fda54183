//! The `jalin-bench` binary.
fn main() {}
