//! Balance stage: choosing an endpoint of a cluster for one request, over the endpoints the
//! caller says are available (not ejected, not already tried). Algorithms: P2C over peak-EWMA
//! latency (default, as Linkerd), least-request (P2C on in-flight requests, as Envoy),
//! weighted round-robin, weighted random, passthrough (the original destination) and
//! consistent hashing (session affinity).
//!
//! Sans-I/O: `now` and the random source come from the caller; the caller reports each
//! request's start and end so in-flight counts and latency estimates stay current.
//! Picking is O(endpoints) with no allocation.

mod ewma;
mod ring;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jalin_xds::model::traffic::{HashKey, LoadBalancer};
use rand::Rng;

pub use ewma::{DEFAULT_DECAY, DEFAULT_RTT, PeakEwma};
pub use ring::{
    MAX_RING_WEIGHT, RequestHash, Ring, VNODES_PER_WEIGHT, affinity_cookie, hash_bytes,
    request_hash,
};

use crate::retry::TriedHosts;

/// An endpoint of a cluster: its address (unique within the cluster).
pub type EndpointId = SocketAddr;

/// Per-request inputs to a pick.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    pub now: Instant,
    /// Consistent-hash value of the request (see [`request_hash`]); `None` picks at random.
    pub hash: Option<u64>,
    /// The original destination (passthrough).
    pub original_dst: Option<SocketAddr>,
}

impl PickContext {
    /// A context with only a time.
    pub fn at(now: Instant) -> Self {
        Self {
            now,
            hash: None,
            original_dst: None,
        }
    }
}

#[derive(Debug, Clone)]
struct EndpointState {
    id: EndpointId,
    weight: u32,
    in_flight: u32,
    ewma: PeakEwma,
    /// Smooth weighted round-robin credit.
    rr_current: i64,
}

/// The balancer of one cluster.
#[derive(Debug)]
pub struct Balancer {
    algorithm: LoadBalancer,
    endpoints: Vec<EndpointState>,
    ring: Ring,
    default_rtt: Duration,
    decay: Duration,
}

impl Balancer {
    /// A balancer with no endpoints.
    pub fn new(algorithm: LoadBalancer) -> Self {
        Self {
            algorithm,
            endpoints: Vec::new(),
            ring: Ring::default(),
            default_rtt: DEFAULT_RTT,
            decay: DEFAULT_DECAY,
        }
    }

    /// The consistent-hash key, when the algorithm is consistent hashing.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.algorithm {
            LoadBalancer::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }

    /// Replaces the endpoints (address, weight ≥ 1). Endpoints that stay keep their in-flight
    /// count and latency estimate; new ones start at the default RTT estimate.
    pub fn set_endpoints(
        &mut self,
        endpoints: impl IntoIterator<Item = (EndpointId, u32)>,
        now: Instant,
    ) {
        let mut next: Vec<EndpointState> = endpoints
            .into_iter()
            .map(|(id, weight)| match self.find(id) {
                Some(i) => EndpointState {
                    weight: weight.max(1),
                    ..self.endpoints[i].clone()
                },
                None => EndpointState {
                    id,
                    weight: weight.max(1),
                    in_flight: 0,
                    ewma: PeakEwma::new(self.default_rtt, self.decay, now),
                    rr_current: 0,
                },
            })
            .collect();
        next.sort_by_key(|e| e.id);
        next.dedup_by_key(|e| e.id);
        if matches!(self.algorithm, LoadBalancer::ConsistentHash(_)) {
            self.ring = Ring::build(next.iter().map(|e| (e.id, e.weight)));
        }
        self.endpoints = next;
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when there is no endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Index of `id`; endpoints are kept sorted by address.
    fn find(&self, id: EndpointId) -> Option<usize> {
        self.endpoints.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// Requests in flight to `id`.
    pub fn in_flight(&self, id: EndpointId) -> u32 {
        self.find(id).map_or(0, |i| self.endpoints[i].in_flight)
    }

    /// A request to `id` started.
    pub fn on_start(&mut self, id: EndpointId) {
        if let Some(i) = self.find(id) {
            self.endpoints[i].in_flight += 1;
        }
    }

    /// A request to `id` ended at `now`; `rtt` is its latency when it got a response (failures
    /// without one leave the estimate alone; the outlier detector handles them).
    pub fn on_end(&mut self, id: EndpointId, rtt: Option<Duration>, now: Instant) {
        if let Some(i) = self.find(id) {
            let e = &mut self.endpoints[i];
            e.in_flight = e.in_flight.saturating_sub(1);
            if let Some(rtt) = rtt {
                e.ewma.observe(rtt, now);
            }
        }
    }

    /// Chooses an endpoint among those `available` accepts. `None` when none is available
    /// (passthrough: when there is no original destination).
    pub fn pick<R: Rng + ?Sized>(
        &mut self,
        ctx: &PickContext,
        rng: &mut R,
        available: impl Fn(EndpointId) -> bool,
    ) -> Option<EndpointId> {
        match &self.algorithm {
            LoadBalancer::Passthrough => ctx.original_dst,
            LoadBalancer::Random => self.weighted_random(rng, &available),
            LoadBalancer::RoundRobin => self.round_robin(&available),
            LoadBalancer::LeastRequest => self.p2c(rng, &available, |e| {
                (f64::from(e.in_flight) + 1.0) / f64::from(e.weight)
            }),
            LoadBalancer::P2cPeakEwma => {
                let now = ctx.now;
                self.p2c(rng, &available, |e| {
                    e.ewma.cost(e.in_flight, now) / f64::from(e.weight)
                })
            }
            LoadBalancer::ConsistentHash(_) => match ctx.hash {
                Some(h) => self.ring.lookup(h, &available),
                None => self.weighted_random(rng, &available),
            },
        }
    }

    /// Like [`Self::pick`], preferring endpoints not in `tried` (Envoy's previous-hosts retry
    /// predicate); falls back to a tried one rather than failing when every available endpoint
    /// was tried. Consistent hashing keeps its affinity and ignores `tried`, as Istio does.
    pub fn pick_for_retry<R: Rng + ?Sized>(
        &mut self,
        ctx: &PickContext,
        rng: &mut R,
        available: impl Fn(EndpointId) -> bool,
        tried: &TriedHosts,
    ) -> Option<EndpointId> {
        if matches!(
            self.algorithm,
            LoadBalancer::ConsistentHash(_) | LoadBalancer::Passthrough
        ) {
            return self.pick(ctx, rng, available);
        }
        self.pick(ctx, rng, |id| available(id) && !tried.contains(id))
            .or_else(|| self.pick(ctx, rng, available))
    }

    fn eligible_count(&self, available: &impl Fn(EndpointId) -> bool) -> usize {
        self.endpoints.iter().filter(|e| available(e.id)).count()
    }

    fn nth_eligible(&self, available: &impl Fn(EndpointId) -> bool, n: usize) -> Option<usize> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| available(e.id))
            .nth(n)
            .map(|(i, _)| i)
    }

    fn weighted_random<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        available: &impl Fn(EndpointId) -> bool,
    ) -> Option<EndpointId> {
        let total: u64 = self
            .endpoints
            .iter()
            .filter(|e| available(e.id))
            .map(|e| u64::from(e.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = rng.random_range(0..total);
        for e in self.endpoints.iter().filter(|e| available(e.id)) {
            let w = u64::from(e.weight);
            if point < w {
                return Some(e.id);
            }
            point -= w;
        }
        None
    }

    /// Smooth weighted round-robin (nginx): each pick adds every eligible endpoint's weight to
    /// its credit, takes the highest credit and charges it the total.
    fn round_robin(&mut self, available: &impl Fn(EndpointId) -> bool) -> Option<EndpointId> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, e) in self.endpoints.iter_mut().enumerate() {
            if !available(e.id) {
                continue;
            }
            e.rr_current += i64::from(e.weight);
            total += i64::from(e.weight);
            if best.is_none_or(|(_, credit)| e.rr_current > credit) {
                best = Some((i, e.rr_current));
            }
        }
        let (b, _) = best?;
        self.endpoints[b].rr_current -= total;
        Some(self.endpoints[b].id)
    }

    /// Power of two choices: two distinct random eligible endpoints, the lower cost wins.
    fn p2c<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        available: &impl Fn(EndpointId) -> bool,
        cost: impl Fn(&EndpointState) -> f64,
    ) -> Option<EndpointId> {
        let n = self.eligible_count(available);
        match n {
            0 => None,
            1 => self
                .nth_eligible(available, 0)
                .map(|i| self.endpoints[i].id),
            _ => {
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ia, ib) = (
                    self.nth_eligible(available, a)?,
                    self.nth_eligible(available, b)?,
                );
                let (ea, eb) = (&self.endpoints[ia], &self.endpoints[ib]);
                Some(if cost(eb) < cost(ea) { eb.id } else { ea.id })
            }
        }
    }
}
