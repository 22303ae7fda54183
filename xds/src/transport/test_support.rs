//! What the SotW and delta server state machines' unit tests share: type URLs, snapshots of
//! small resources and the `error_detail` of a NACK.

use std::sync::Arc;

use envoy_types::pb::google::rpc::Status;

use super::resource::{Kind, encode};
use super::snapshot::Snapshot;

pub(crate) const CLUSTER: &str = "type.googleapis.com/jalin.v1.Cluster";
pub(crate) const ROUTE: &str = "type.googleapis.com/jalin.v1.Route";

/// A view of clusters `(name, version)`.
pub(crate) fn snap(items: &[(&str, u32)]) -> Arc<Snapshot> {
    Arc::new(Snapshot::new(
        items
            .iter()
            .map(|(n, v)| encode(Kind::Cluster, n, v).unwrap()),
    ))
}

/// The `error_detail` of a NACK saying `message` (gRPC INVALID_ARGUMENT).
pub(crate) fn refusal(message: &str) -> Status {
    Status {
        code: 3,
        message: message.into(),
        details: vec![],
    }
}
