//! jalin-control: the control plane library behind the `jalin` CLI: Istio import, validation,
//! linting and compliance checks, and the Kubernetes configuration source.

pub mod check;
pub mod cli;
pub mod demo;
pub mod istio;
pub mod k8s;
pub mod lint;
pub mod server;
