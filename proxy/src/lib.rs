//! jalin-proxy: the data plane, a sidecar and gateway proxy.
