//! Validation as Istio does it: one function per kind, findings with field paths and lines.

pub mod networking;
pub mod security;

use super::diag::Sink;
use super::parse::{Resource, Spec};

/// Validate one parsed resource; findings go to `sink`.
pub fn resource(res: &Resource, sink: &mut Sink<'_>) {
    match &res.spec {
        Spec::AuthorizationPolicy(s) => security::authorization_policy(s, &res.metadata, sink),
        Spec::PeerAuthentication(s) => security::peer_authentication(s, sink),
        Spec::RequestAuthentication(s) => security::request_authentication(s, sink),
        Spec::VirtualService(s) => networking::virtual_service(s, sink),
        Spec::DestinationRule(s) => networking::destination_rule(s, sink),
        Spec::ServiceEntry(s) => networking::service_entry(s, sink),
        Spec::Sidecar(s) => networking::sidecar(s, sink),
        Spec::Gateway(s) => networking::gateway(s, sink),
        Spec::WorkloadEntry(s) => networking::workload_entry(s, sink),
        Spec::Telemetry(s) => networking::telemetry(s, sink),
    }
}
