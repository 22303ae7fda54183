//! Consistent hashing: a ring of virtual nodes (Envoy's ring hash) and the request keys hashed
//! onto it (header, cookie, source IP, query parameter).
//!
//! Invariant: an endpoint's points depend only on its own address and weight, so adding or
//! removing an endpoint moves only the keys that land on its points; skipping an unavailable
//! endpoint walks to the next point, so ejecting one moves only its keys too.

use std::hash::Hasher;
use std::net::IpAddr;

use jalin_xds::model::traffic::HashKey;

use super::EndpointId;
use crate::route::RequestView;

/// Virtual nodes per unit of weight (ketama uses 160; more gives an evener spread).
pub const VNODES_PER_WEIGHT: u32 = 256;
/// Weights above this are flattened for the ring, bounding its size to
/// `endpoints × VNODES_PER_WEIGHT × MAX_RING_WEIGHT` points.
pub const MAX_RING_WEIGHT: u32 = 8;

/// A stable 64-bit hash (FNV-1a with a SplitMix64 finish for avalanche), identical in every
/// proxy so affinity holds across replicas.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    let mut z = h.finish().wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring: points sorted by hash.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, EndpointId)>,
}

impl Ring {
    /// Builds the ring for weighted endpoints.
    pub fn build(endpoints: impl IntoIterator<Item = (EndpointId, u32)>) -> Self {
        let mut points = Vec::new();
        for (id, weight) in endpoints {
            let n = VNODES_PER_WEIGHT * weight.clamp(1, MAX_RING_WEIGHT);
            let base = id.to_string();
            for i in 0..n {
                points.push((hash_bytes(format!("{base}_{i}").as_bytes()), id));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the ring has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The first available endpoint at or after `hash` on the ring.
    pub fn lookup(&self, hash: u64, available: impl Fn(EndpointId) -> bool) -> Option<EndpointId> {
        let start = self.points.partition_point(|(h, _)| *h < hash);
        let n = self.points.len();
        (0..n)
            .map(|k| self.points[(start + k) % n].1)
            .find(|id| available(*id))
    }
}

/// The hash of a request under a consistent-hash policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHash {
    /// `None`: the key is absent; the balancer picks at random.
    pub hash: Option<u64>,
    /// A new affinity cookie value the response must set (`Set-Cookie`), when the policy is a
    /// cookie with a TTL and the request carried none.
    pub set_cookie: Option<String>,
}

/// Hashes the request attribute `key` names. `random` seeds a new affinity cookie.
pub fn request_hash(
    key: &HashKey,
    req: &RequestView<'_>,
    source_ip: Option<IpAddr>,
    random: u64,
) -> RequestHash {
    let hash = |b: &[u8]| RequestHash {
        hash: Some(hash_bytes(b)),
        set_cookie: None,
    };
    match key {
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| hash(v.as_bytes()))
            .unwrap_or_default(),
        HashKey::QueryParameter(name) => req
            .query_param(name)
            .map(|v| hash(v.as_bytes()))
            .unwrap_or_default(),
        HashKey::SourceIp => source_ip
            .map(|ip| match ip {
                IpAddr::V4(v4) => hash(&v4.octets()),
                IpAddr::V6(v6) => hash(&v6.octets()),
            })
            .unwrap_or_default(),
        HashKey::Cookie { name, ttl_ms, .. } => match cookie(req, name) {
            Some(v) => hash(v.as_bytes()),
            None if ttl_ms.is_some() => {
                let value = format!("{random:016x}");
                RequestHash {
                    hash: Some(hash_bytes(value.as_bytes())),
                    set_cookie: Some(value),
                }
            }
            None => RequestHash::default(),
        },
    }
}

/// The `Set-Cookie` header value for a new affinity cookie.
pub fn affinity_cookie(name: &str, value: &str, path: Option<&str>, ttl_ms: Option<u64>) -> String {
    let mut s = format!("{name}={value}; HttpOnly");
    if let Some(p) = path {
        s.push_str("; Path=");
        s.push_str(p);
    }
    if let Some(ttl) = ttl_ms.filter(|t| *t > 0) {
        s.push_str(&format!("; Max-Age={}", ttl.div_ceil(1000)));
    }
    s
}

fn cookie<'a>(req: &RequestView<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| {
            line.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v)
            })
        })
}
