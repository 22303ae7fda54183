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
use tokio_stream::wrappers::ReceiverStream;

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
            prost::encoding::encode_key(6, WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
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
                .map(|n| {
                    prost::encoding::key_len(6)
                        + prost::encoding::encoded_len_varint(n.len() as u64)
                        + n.len()
                })
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// Stream of SotW responses handed to tonic.
pub type SotwStream = ReceiverStream<Result<WireSotwResponse, tonic::Status>>;
/// Stream of delta responses handed to tonic.
pub type DeltaStream = ReceiverStream<Result<WireDeltaResponse, tonic::Status>>;

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

struct SotwMethod(Arc<Inner>);

impl tonic::server::StreamingService<DiscoveryRequest> for SotwMethod {
    type Response = WireSotwResponse;
    type ResponseStream = SotwStream;
    type Future = BoxFuture<Result<tonic::Response<SotwStream>, tonic::Status>>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            Ok(tonic::Response::new(super::server::start_sotw(
                inner, request,
            )))
        })
    }
}

struct DeltaMethod(Arc<Inner>);

impl tonic::server::StreamingService<DeltaDiscoveryRequest> for DeltaMethod {
    type Response = WireDeltaResponse;
    type ResponseStream = DeltaStream;
    type Future = BoxFuture<Result<tonic::Response<DeltaStream>, tonic::Status>>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            Ok(tonic::Response::new(super::server::start_delta(
                inner, request,
            )))
        })
    }
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
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let codec = ExactCodec::<WireSotwResponse, DiscoveryRequest>::default();
                let mut grpc =
                    tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
                Ok(grpc.streaming(SotwMethod(inner), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let codec = ExactCodec::<WireDeltaResponse, DeltaDiscoveryRequest>::default();
                let mut grpc =
                    tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
                Ok(grpc.streaming(DeltaMethod(inner), req).await)
            }),
            _ => Box::pin(async move {
                Ok(tonic::Status::unimplemented("unknown ADS method")
                    .into_http::<tonic::body::Body>())
            }),
        }
    }
}

/// The prost codec, except that a response reserves its exact encoded length before it is
/// written. tonic keeps one encode buffer per stream for the stream's life, sized by the largest
/// response it ever held; growing it by doubling while a large first response is copied in left
/// up to twice that response's size resident per stream (measured with `jalin-bench xds-scale`
/// and heaptrack: most of the control plane's memory at 1,000 proxies), and copied it on each
/// doubling.
struct ExactCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for ExactCodec<T, U> {
    fn default() -> Self {
        ExactCodec(std::marker::PhantomData)
    }
}

/// The encoder half of [`ExactCodec`].
struct ExactEncoder<T>(std::marker::PhantomData<T>);

impl<T: prost::Message> tonic::codec::Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: T,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| tonic::Status::internal(format!("encode an xDS response: {e}")))
    }
}

impl<T, U> tonic::codec::Codec for ExactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ExactEncoder<T>;
    type Decoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ExactEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::default().decoder()
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
}
