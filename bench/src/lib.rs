//! jalin-bench: open-loop load generation, latency histograms and overhead scenarios.
//!
//! The request path of a run: [`schedule`] says when each request is due and on which connection,
//! [`pacer`] waits for that instant, [`driver`] runs one connection's loop over a [`client`]
//! connection, [`record`] folds outcomes into HDR histograms, [`scenario`] composes phases (open
//! loop, overhead, throughput) and [`report`] prints text and JSON. [`upstream`] is the built-in
//! fast server.

pub mod cli;
pub mod client;
pub mod driver;
pub mod pacer;
pub mod quic;
pub mod record;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod tls;
pub mod upstream;
pub mod xds_scale;
