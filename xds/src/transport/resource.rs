//! jalin's own xDS resource types: the protobuf envelope, type URLs, and the JSON body codec.
//!
//! Every jalin resource travels as `type.googleapis.com/jalin.v1.<Kind>` and carries the same
//! envelope: name, content version, kind, the serde-JSON body of the native model type, and the
//! resources it references (so the client can warm up before applying). The native model is still
//! moving; keeping the body as JSON behind a stable envelope lets it change without a wire break.

use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ResourceKey;

/// Messages generated from `proto/jalin/v1/resources.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/jalin.v1.rs"));
}

pub use pb::Kind;

/// The prefix every protobuf type URL carries.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Why a jalin resource could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The body did not serialise to JSON.
    #[error("resource {kind:?} {name:?}: the body did not serialise to JSON: {source}")]
    Serialize {
        /// Kind of the resource.
        kind: Kind,
        /// Name of the resource.
        name: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The type URL is not one of jalin's.
    #[error(
        "type URL {0:?} is not a jalin resource type; expected type.googleapis.com/jalin.v1.<Kind> \
         (Listener, Route, Cluster, Endpoints, AuthorizationPolicy, PeerAuthentication, RequestAuthentication, Telemetry, TrustBundle)"
    )]
    UnknownTypeUrl(String),
    /// The protobuf envelope did not decode.
    #[error("resource of type {type_url}: the protobuf envelope did not decode: {source}")]
    Envelope {
        /// Type URL of the `Any`.
        type_url: String,
        /// The prost error.
        source: prost::DecodeError,
    },
    /// The envelope's kind disagrees with its type URL.
    #[error(
        "resource {name:?}: type URL {type_url} but the envelope says kind {kind:?}; the producer is inconsistent"
    )]
    KindMismatch {
        /// Type URL of the `Any`.
        type_url: String,
        /// Kind in the envelope.
        kind: i32,
        /// Name of the resource.
        name: String,
    },
    /// The JSON body did not match the native model type.
    #[error(
        "resource {kind:?} {name:?}: body JSON does not match the expected model type: {source}"
    )]
    Body {
        /// Kind of the resource.
        kind: Kind,
        /// Name of the resource.
        name: String,
        /// The serde error (it carries line and column in the JSON).
        source: serde_json::Error,
    },
}

impl Kind {
    /// Every kind, in the order a proxy applies them (dependencies first).
    pub const ALL: [Kind; 9] = [
        Kind::TrustBundle,
        Kind::Endpoints,
        Kind::Cluster,
        Kind::Route,
        Kind::Listener,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::Telemetry,
    ];

    /// The protobuf type URL of this kind (`type.googleapis.com/jalin.v1.<Kind>`).
    pub const fn type_url(self) -> &'static str {
        match self {
            Kind::Unspecified => "type.googleapis.com/jalin.v1.Envelope",
            Kind::Listener => "type.googleapis.com/jalin.v1.Listener",
            Kind::Route => "type.googleapis.com/jalin.v1.Route",
            Kind::Cluster => "type.googleapis.com/jalin.v1.Cluster",
            Kind::Endpoints => "type.googleapis.com/jalin.v1.Endpoints",
            Kind::AuthorizationPolicy => "type.googleapis.com/jalin.v1.AuthorizationPolicy",
            Kind::PeerAuthentication => "type.googleapis.com/jalin.v1.PeerAuthentication",
            Kind::RequestAuthentication => "type.googleapis.com/jalin.v1.RequestAuthentication",
            Kind::Telemetry => "type.googleapis.com/jalin.v1.Telemetry",
            Kind::TrustBundle => "type.googleapis.com/jalin.v1.TrustBundle",
        }
    }

    /// The kind whose type URL is `type_url`, if it is a jalin one.
    pub fn from_type_url(type_url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == type_url)
    }
}

/// A resource ready to be put in a [`super::Snapshot`]: its protobuf bytes and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedResource {
    /// Type URL of the message in `value`.
    pub type_url: String,
    /// Resource name, unique per type URL.
    pub name: String,
    /// Content version: a hash of the message bytes.
    pub version: String,
    /// The encoded protobuf message (the `Any.value`).
    pub value: Bytes,
}

impl EncodedResource {
    /// Wraps any already-encoded protobuf message (for example an Envoy type); the version is a
    /// content hash of `value`.
    pub fn from_message_bytes(
        type_url: impl Into<String>,
        name: impl Into<String>,
        value: Bytes,
    ) -> Self {
        let version = content_version(&[&value]);
        EncodedResource {
            type_url: type_url.into(),
            name: name.into(),
            version,
            value,
        }
    }

    /// Encodes a prost message as a resource.
    pub fn from_message<M: prost::Name>(name: impl Into<String>, msg: &M) -> Self {
        Self::from_message_bytes(M::type_url(), name, Bytes::from(msg.encode_to_vec()))
    }

    /// The resource's key (type URL and name).
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.type_url.clone(), self.name.clone())
    }

    /// As an Envoy `google.protobuf.Any`.
    pub fn to_any(&self) -> envoy_types::pb::google::protobuf::Any {
        envoy_types::pb::google::protobuf::Any {
            type_url: self.type_url.clone(),
            value: self.value.to_vec(),
        }
    }
}

/// A content version: the first 8 bytes of the SHA-256 of the parts, in hex.
pub fn content_version(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    hex::encode(&digest.as_ref()[..8])
}

/// Encodes a native model value as a jalin resource of `kind` named `name`.
pub fn encode<T: Serialize>(
    kind: Kind,
    name: &str,
    body: &T,
) -> Result<EncodedResource, ResourceError> {
    encode_with_deps(kind, name, body, &[])
}

/// Encodes a native model value as a jalin resource that references `depends_on`: a client applies
/// it only once every referenced resource has arrived.
pub fn encode_with_deps<T: Serialize>(
    kind: Kind,
    name: &str,
    body: &T,
    depends_on: &[(Kind, &str)],
) -> Result<EncodedResource, ResourceError> {
    let json = serde_json::to_vec(body).map_err(|source| ResourceError::Serialize {
        kind,
        name: name.to_owned(),
        source,
    })?;
    let depends_on: Vec<pb::ResourceRef> = depends_on
        .iter()
        .map(|(k, n)| pb::ResourceRef {
            kind: *k as i32,
            name: (*n).to_owned(),
        })
        .collect();
    let mut dep_bytes = Vec::new();
    for d in &depends_on {
        dep_bytes.extend_from_slice(&d.encode_length_delimited_to_vec());
    }
    let version = content_version(&[
        kind.type_url().as_bytes(),
        name.as_bytes(),
        &json,
        &dep_bytes,
    ]);
    let envelope = pb::Envelope {
        name: name.to_owned(),
        version: version.clone(),
        kind: kind as i32,
        json: Bytes::from(json),
        depends_on,
    };
    Ok(EncodedResource {
        type_url: kind.type_url().to_owned(),
        name: name.to_owned(),
        version,
        value: Bytes::from(envelope.encode_to_vec()),
    })
}

/// Reads the envelope of a jalin resource (without decoding its body).
pub fn decode_envelope(type_url: &str, value: &[u8]) -> Result<pb::Envelope, ResourceError> {
    let kind = Kind::from_type_url(type_url)
        .ok_or_else(|| ResourceError::UnknownTypeUrl(type_url.to_owned()))?;
    let envelope = pb::Envelope::decode(value).map_err(|source| ResourceError::Envelope {
        type_url: type_url.to_owned(),
        source,
    })?;
    if envelope.kind != kind as i32 {
        return Err(ResourceError::KindMismatch {
            type_url: type_url.to_owned(),
            kind: envelope.kind,
            name: envelope.name,
        });
    }
    Ok(envelope)
}

/// A decoded jalin resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// Kind of the resource.
    pub kind: Kind,
    /// Name of the resource.
    pub name: String,
    /// Content version.
    pub version: String,
    /// Resources this one references.
    pub depends_on: Vec<ResourceKey>,
    /// The native model value.
    pub body: T,
}

/// Decodes a jalin resource (`type_url` and `Any.value`) into the native model type `T`.
pub fn decode<T: DeserializeOwned>(
    type_url: &str,
    value: &[u8],
) -> Result<Decoded<T>, ResourceError> {
    let envelope = decode_envelope(type_url, value)?;
    let kind = Kind::try_from(envelope.kind).unwrap_or(Kind::Unspecified);
    let body = serde_json::from_slice(&envelope.json).map_err(|source| ResourceError::Body {
        kind,
        name: envelope.name.clone(),
        source,
    })?;
    Ok(Decoded {
        kind,
        depends_on: references(&envelope),
        name: envelope.name,
        version: envelope.version,
        body,
    })
}

/// The resources an envelope references, as keys.
pub fn references(envelope: &pb::Envelope) -> Vec<ResourceKey> {
    envelope
        .depends_on
        .iter()
        .filter_map(|r| {
            let kind = Kind::try_from(r.kind).ok()?;
            (kind != Kind::Unspecified).then(|| ResourceKey::new(kind.type_url(), r.name.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Body {
        port: u16,
        host: String,
    }

    #[test]
    fn encode_decode_round_trip() {
        let body = Body {
            port: 8080,
            host: "a.example".into(),
        };
        let res =
            encode_with_deps(Kind::Listener, "inbound", &body, &[(Kind::Route, "r1")]).unwrap();
        assert_eq!(res.type_url, "type.googleapis.com/jalin.v1.Listener");
        let back: Decoded<Body> = decode(&res.type_url, &res.value).unwrap();
        assert_eq!(back.body, body);
        assert_eq!(back.name, "inbound");
        assert_eq!(back.version, res.version);
        assert_eq!(
            back.depends_on,
            vec![ResourceKey::new(Kind::Route.type_url(), "r1")]
        );
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = encode(
            Kind::Cluster,
            "c",
            &Body {
                port: 1,
                host: "h".into(),
            },
        )
        .unwrap();
        let b = encode(
            Kind::Cluster,
            "c",
            &Body {
                port: 1,
                host: "h".into(),
            },
        )
        .unwrap();
        let c = encode(
            Kind::Cluster,
            "c",
            &Body {
                port: 2,
                host: "h".into(),
            },
        )
        .unwrap();
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }

    #[test]
    fn kind_and_type_url_must_agree() {
        let res = encode(
            Kind::Cluster,
            "c",
            &Body {
                port: 1,
                host: "h".into(),
            },
        )
        .unwrap();
        let err = decode::<Body>(Kind::Route.type_url(), &res.value).unwrap_err();
        assert!(matches!(err, ResourceError::KindMismatch { .. }), "{err}");
        let err = decode::<Body>("type.googleapis.com/other.v1.Thing", &res.value).unwrap_err();
        assert!(matches!(err, ResourceError::UnknownTypeUrl(_)), "{err}");
    }

    #[test]
    fn body_mismatch_names_the_resource() {
        let res = encode(Kind::Cluster, "payments", &"just a string").unwrap();
        let err = decode::<Body>(&res.type_url, &res.value).unwrap_err();
        assert!(err.to_string().contains("payments"), "{err}");
    }

    #[test]
    fn every_kind_round_trips_its_type_url() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type_url(kind.type_url()), Some(kind));
        }
    }
}
