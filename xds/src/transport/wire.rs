//! The ADS gRPC service on the wire: responses assembled from pre-encoded resources, and the tonic
//! service that routes the two ADS methods to [`super::server`].
//!
//! The response types here are wire-identical to Envoy's `DiscoveryResponse` and
//! `DeltaDiscoveryResponse` (same field numbers); they differ only in holding each resource as the
//! bytes [`super::Entry`] encoded once, so encoding a response is a copy, not a protobuf encode.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::encoding::{DecodeContext, WireType, skip_field};
use tokio::sync::mpsc;

use super::frames::{
    Outgoing, RequestDecoder, ResponseBody, Variant, delimited_len, put_delimited,
};
use super::server::Inner;
use super::server_delta::DeltaPush;
use super::server_sotw::SotwPush;

/// Full gRPC service name of ADS.
pub const ADS_SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// An encode-only `DiscoveryResponse` built from shared pre-encoded resources.
#[derive(Debug, Clone, Default)]
pub struct WireSotwResponse(pub Option<SotwPush>);

/// An encode-only `DeltaDiscoveryResponse` built from shared pre-encoded resources.
#[derive(Debug, Clone, Default)]
pub struct WireDeltaResponse(pub Option<DeltaPush>);

fn put_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag)
            + prost::encoding::encoded_len_varint(value.len() as u64)
            + value.len()
    }
}

// DiscoveryResponse: version_info = 1, resources = 2, type_url = 4, nonce = 5.
impl prost::Message for WireSotwResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let Some(p) = &self.0 else { return };
        put_str(1, &p.version, buf);
        for e in &p.resources {
            buf.put_slice(e.sotw_field());
        }
        put_str(4, &p.type_url, buf);
        put_str(5, &p.nonce, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Encode-only: the server never decodes its own responses.
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let Some(p) = &self.0 else { return 0 };
        str_len(1, &p.version)
            + p.resources
                .iter()
                .map(|e| e.sotw_field().len())
                .sum::<usize>()
            + str_len(4, &p.type_url)
            + str_len(5, &p.nonce)
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

// DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4, nonce = 5,
// removed_resources = 6.
impl prost::Message for WireDeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let Some(p) = &self.0 else { return };
        put_str(1, &p.system_version, buf);
        for e in &p.resources {
            buf.put_slice(e.delta_field());
        }
        put_str(4, &p.type_url, buf);
        put_str(5, &p.nonce, buf);
        for name in &p.removed {
            // Repeated strings are written even when empty.
            put_delimited(6, name.as_bytes(), buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let Some(p) = &self.0 else { return 0 };
        str_len(1, &p.system_version)
            + p.resources
                .iter()
                .map(|e| e.delta_field().len())
                .sum::<usize>()
            + str_len(4, &p.type_url)
            + str_len(5, &p.nonce)
            + p.removed
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

impl From<WireSotwResponse> for Outgoing {
    fn from(w: WireSotwResponse) -> Self {
        let Some(p) = w.0 else {
            return Outgoing::new(Variant::Sotw, Vec::new(), 0, |_| {});
        };
        let len = str_len(1, &p.version) + str_len(4, &p.type_url) + str_len(5, &p.nonce);
        Outgoing::new(Variant::Sotw, p.resources, len, |buf| {
            put_str(1, &p.version, buf);
            put_str(4, &p.type_url, buf);
            put_str(5, &p.nonce, buf);
        })
    }
}

impl From<WireDeltaResponse> for Outgoing {
    fn from(w: WireDeltaResponse) -> Self {
        let Some(p) = w.0 else {
            return Outgoing::new(Variant::Delta, Vec::new(), 0, |_| {});
        };
        let len = str_len(1, &p.system_version)
            + str_len(4, &p.type_url)
            + str_len(5, &p.nonce)
            + p.removed
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>();
        Outgoing::new(Variant::Delta, p.resources, len, |buf| {
            put_str(1, &p.system_version, buf);
            put_str(4, &p.type_url, buf);
            put_str(5, &p.nonce, buf);
            for name in &p.removed {
                // Repeated strings are written even when empty.
                put_delimited(6, name.as_bytes(), buf);
            }
        })
    }
}

/// The tonic service for ADS, backed by an [`super::XdsServer`].
#[derive(Clone)]
pub struct AdsService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService").finish_non_exhaustive()
    }
}

impl AdsService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        AdsService { inner }
    }
}

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = ADS_SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Starts one ADS stream: requests decoded by tonic from a small buffer, responses framed by
/// [`ResponseBody`] with no per-stream encode buffer.
fn respond<B, Req, P>(
    req: http::Request<B>,
    max_request_bytes: usize,
    start: impl FnOnce(tonic::Streaming<Req>) -> mpsc::Receiver<Result<P, tonic::Status>>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    P: Into<Outgoing> + Unpin + Send + 'static,
{
    if let Some(enc) = req.headers().get("grpc-encoding")
        && enc.as_bytes() != b"identity"
    {
        return tonic::Status::unimplemented(format!(
            "xDS requests compressed with {enc:?} are not accepted; send them uncompressed"
        ))
        .into_http();
    }
    let requests = tonic::Streaming::new_request(
        RequestDecoder::<Req>::default(),
        req.into_body(),
        None,
        Some(max_request_bytes),
    );
    let body = ResponseBody::new(start(requests));
    let mut resp = http::Response::new(tonic::body::Body::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

impl<B> tower::Service<http::Request<B>> for AdsService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let max = inner.max_request_bytes;
        let peer = super::server::Peer::from_extensions(req.extensions());
        let resp = match req.uri().path() {
            SOTW_PATH => respond(req, max, |r: tonic::Streaming<DiscoveryRequest>| {
                super::server::start_sotw(inner, peer, r)
            }),
            DELTA_PATH => respond(req, max, |r: tonic::Streaming<DeltaDiscoveryRequest>| {
                super::server::start_delta(inner, peer, r)
            }),
            _ => tonic::Status::unimplemented("unknown ADS method").into_http(),
        };
        Box::pin(std::future::ready(Ok(resp)))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;

    use super::*;
    use crate::transport::resource::{Kind, encode};
    use crate::transport::snapshot::Entry;

    fn entries() -> Vec<Arc<Entry>> {
        ["a", "b"]
            .iter()
            .map(|n| Arc::new(Entry::new(encode(Kind::Route, n, &n.len()).unwrap())))
            .collect()
    }

    #[test]
    fn sotw_wire_decodes_as_envoy_discovery_response() {
        let msg = WireSotwResponse(Some(SotwPush {
            type_url: Kind::Route.type_url().into(),
            version: "v1".into(),
            nonce: "7".into(),
            resources: entries(),
        }));
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes.len(), msg.encoded_len());
        let back = DiscoveryResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.version_info, "v1");
        assert_eq!(back.nonce, "7");
        assert_eq!(back.type_url, Kind::Route.type_url());
        assert_eq!(back.resources.len(), 2);
    }

    #[test]
    fn delta_wire_decodes_as_envoy_delta_response() {
        let msg = WireDeltaResponse(Some(DeltaPush {
            type_url: Kind::Route.type_url().into(),
            system_version: "v2".into(),
            nonce: "8".into(),
            resources: entries(),
            removed: vec!["gone".into(), "".into()],
        }));
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes.len(), msg.encoded_len());
        let back = DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.system_version_info, "v2");
        assert_eq!(back.resources[1].name, "b");
        assert_eq!(
            back.removed_resources,
            vec!["gone".to_string(), String::new()]
        );
    }

    fn framed(o: impl Into<Outgoing>) -> Vec<u8> {
        let mut o = o.into();
        let mut all = Vec::new();
        while let Some(chunk) = o.next_chunk() {
            all.extend_from_slice(&chunk);
        }
        assert_eq!(all[0], 0, "uncompressed");
        let len = u32::from_be_bytes(all[1..5].try_into().unwrap()) as usize;
        assert_eq!(all.len(), 5 + len, "the header states the message length");
        all.split_off(5)
    }

    #[test]
    fn framed_responses_decode_as_envoy_messages() {
        let sotw = framed(WireSotwResponse(Some(SotwPush {
            type_url: Kind::Route.type_url().into(),
            version: "v1".into(),
            nonce: "7".into(),
            resources: entries(),
        })));
        let back = DiscoveryResponse::decode(sotw.as_slice()).unwrap();
        assert_eq!(
            (back.version_info.as_str(), back.nonce.as_str()),
            ("v1", "7")
        );
        assert_eq!(back.type_url, Kind::Route.type_url());
        assert_eq!(back.resources.len(), 2);

        let delta = framed(WireDeltaResponse(Some(DeltaPush {
            type_url: Kind::Route.type_url().into(),
            system_version: "v2".into(),
            nonce: "8".into(),
            resources: entries(),
            removed: vec!["gone".into()],
        })));
        let back = DeltaDiscoveryResponse::decode(delta.as_slice()).unwrap();
        assert_eq!(back.system_version_info, "v2");
        assert_eq!(back.nonce, "8");
        let names: Vec<_> = back.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(back.removed_resources, vec!["gone".to_string()]);
    }
}
