//! jalin-bench: open-loop load generation, latency histograms and overhead scenarios.

pub mod xds_scale;
