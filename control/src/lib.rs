//! jalin-control: the control plane library behind the `jalin` CLI.
pub mod k8s;
