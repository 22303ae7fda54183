//! jalin-control: the control plane library behind the `jalin` CLI: Istio import, validation,
//! linting and compliance checks.

pub mod check;
pub mod cli;
pub mod istio;
pub mod lint;
