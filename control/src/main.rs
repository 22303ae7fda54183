//! The `jalin` binary.
fn main() {}
