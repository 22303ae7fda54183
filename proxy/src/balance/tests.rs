//! Load-balancing tests: distributions over many picks with a seeded RNG, P2C preferences,
//! consistent-hash stickiness and minimal disruption.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::HeaderMap;
use jalin_xds::model::traffic::{HashKey, LoadBalancer};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::route::RequestView;

fn ep(i: u16) -> EndpointId {
    EndpointId::from(([10, 0, 1, 1], 9000 + i))
}

fn balancer(algo: LoadBalancer, weights: &[u32], now: Instant) -> Balancer {
    let mut b = Balancer::new(algo);
    b.set_endpoints(
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (ep(u16::try_from(i).unwrap()), *w)),
        now,
    );
    b
}

fn counts(
    b: &mut Balancer,
    n: usize,
    rng: &mut StdRng,
    now: Instant,
    available: impl Fn(EndpointId) -> bool + Copy,
) -> HashMap<EndpointId, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        *c.entry(b.pick(&PickContext::at(now), rng, available).unwrap())
            .or_default() += 1;
    }
    c
}

fn share(c: &HashMap<EndpointId, usize>, id: EndpointId, n: usize) -> f64 {
    c.get(&id).copied().unwrap_or(0) as f64 / n as f64
}

#[test]
fn random_is_weighted() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let mut b = balancer(LoadBalancer::Random, &[1, 1, 2], t0);
    let n = 20_000;
    let c = counts(&mut b, n, &mut rng, t0, |_| true);
    for (id, want) in [(ep(0), 0.25), (ep(1), 0.25), (ep(2), 0.5)] {
        assert!(
            (share(&c, id, n) - want).abs() < 0.02,
            "{id}: {}",
            share(&c, id, n)
        );
    }
    let c = counts(&mut b, n, &mut rng, t0, |id| id != ep(2));
    assert_eq!(
        c.get(&ep(2)),
        None,
        "unavailable endpoints are never picked"
    );
    assert!((share(&c, ep(0), n) - 0.5).abs() < 0.02);
}

#[test]
fn round_robin_is_exact_and_weighted() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(2);
    let mut b = balancer(LoadBalancer::RoundRobin, &[1, 1, 1], t0);
    let seq: Vec<_> = (0..6)
        .map(|_| b.pick(&PickContext::at(t0), &mut rng, |_| true).unwrap())
        .collect();
    assert_eq!(seq, vec![ep(0), ep(1), ep(2), ep(0), ep(1), ep(2)]);
    let mut w = balancer(LoadBalancer::RoundRobin, &[3, 1], t0);
    let c = counts(&mut w, 400, &mut rng, t0, |_| true);
    assert_eq!((c[&ep(0)], c[&ep(1)]), (300, 100), "3:1 exactly");
    let seq: Vec<_> = (0..4)
        .map(|_| w.pick(&PickContext::at(t0), &mut rng, |_| true).unwrap())
        .collect();
    assert_eq!(
        seq.iter().filter(|e| **e == ep(1)).count(),
        1,
        "smooth: the light endpoint is interleaved"
    );
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let mut b = balancer(LoadBalancer::LeastRequest, &[1, 1, 1], t0);
    for _ in 0..10 {
        b.on_start(ep(0));
    }
    let n = 10_000;
    let c = counts(&mut b, n, &mut rng, t0, |_| true);
    assert_eq!(
        c.get(&ep(0)),
        None,
        "P2C never prefers the busy endpoint over an idle one"
    );
    assert!((share(&c, ep(1), n) - 0.5).abs() < 0.03);
    for _ in 0..10 {
        b.on_end(ep(0), None, t0);
    }
    let c = counts(&mut b, n, &mut rng, t0, |_| true);
    for i in 0..3 {
        assert!(
            (share(&c, ep(i), n) - 1.0 / 3.0).abs() < 0.03,
            "idle cluster spreads evenly"
        );
    }
    // Weighted: cost is (in-flight + 1) / weight, so the heavier endpoint wins ties.
    let mut w = balancer(LoadBalancer::LeastRequest, &[1, 4], t0);
    let c = counts(&mut w, 1_000, &mut rng, t0, |_| true);
    assert_eq!(c[&ep(1)], 1_000);
}

#[test]
fn p2c_peak_ewma_prefers_fast_endpoints_and_penalises_pending() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(4);
    let mut b = balancer(LoadBalancer::P2cPeakEwma, &[1, 1, 1], t0);
    b.on_start(ep(0));
    b.on_end(ep(0), Some(Duration::from_millis(300)), t0);
    for i in 1..3 {
        b.on_start(ep(i));
        b.on_end(ep(i), Some(Duration::from_millis(5)), t0);
    }
    let n = 10_000;
    let c = counts(&mut b, n, &mut rng, t0, |_| true);
    assert_eq!(
        c.get(&ep(0)),
        None,
        "the slow endpoint loses every comparison"
    );
    assert!((share(&c, ep(1), n) - 0.5).abs() < 0.03);

    // Pending requests multiply the cost: 30 in flight on ep(1) makes it costlier than ep(2).
    for _ in 0..30 {
        b.on_start(ep(1));
    }
    let c = counts(&mut b, 2_000, &mut rng, t0, |id| id != ep(0));
    assert_eq!(c.get(&ep(1)), None);

    // New endpoints start at the default RTT: better than the slow one, worse than the fast one.
    let mut fresh = balancer(LoadBalancer::P2cPeakEwma, &[1, 1], t0);
    fresh.on_start(ep(0));
    fresh.on_end(ep(0), Some(Duration::from_millis(100)), t0);
    let c = counts(&mut fresh, 500, &mut rng, t0, |_| true);
    assert_eq!(c[&ep(1)], 500);

    // The fast endpoint keeps serving; the slow one, unobserved, decays and is tried again.
    let later = t0 + Duration::from_secs(60);
    fresh.on_start(ep(1));
    fresh.on_end(ep(1), Some(Duration::from_millis(30)), later);
    let c = counts(&mut fresh, 500, &mut rng, later, |_| true);
    assert!(c.contains_key(&ep(0)), "{c:?}");
}

#[test]
fn passthrough_uses_the_original_destination() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(5);
    let mut b = Balancer::new(LoadBalancer::Passthrough);
    let dst: std::net::SocketAddr = "192.0.2.7:8443".parse().unwrap();
    let ctx = PickContext {
        now: t0,
        hash: None,
        original_dst: Some(dst),
    };
    assert_eq!(b.pick(&ctx, &mut rng, |_| true), Some(dst));
    assert_eq!(b.pick(&PickContext::at(t0), &mut rng, |_| true), None);
}

fn ring_balancer(n: u16, now: Instant) -> Balancer {
    let mut b = Balancer::new(LoadBalancer::ConsistentHash(HashKey::Header(
        "x-case-id".into(),
    )));
    b.set_endpoints((0..n).map(|i| (ep(i), 1)), now);
    b
}

fn sticky_pick(
    b: &mut Balancer,
    key: u64,
    rng: &mut StdRng,
    now: Instant,
    available: impl Fn(EndpointId) -> bool,
) -> EndpointId {
    let ctx = PickContext {
        now,
        hash: Some(hash_bytes(&key.to_be_bytes())),
        original_dst: None,
    };
    b.pick(&ctx, rng, available).unwrap()
}

#[test]
fn consistent_hash_is_sticky_and_even() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(6);
    let mut b = ring_balancer(4, t0);
    let keys = 20_000u64;
    let first: Vec<_> = (0..keys)
        .map(|k| sticky_pick(&mut b, k, &mut rng, t0, |_| true))
        .collect();
    let again: Vec<_> = (0..keys)
        .map(|k| sticky_pick(&mut b, k, &mut rng, t0, |_| true))
        .collect();
    assert_eq!(first, again, "same key, same endpoint");
    let mut c: HashMap<EndpointId, usize> = HashMap::new();
    for e in &first {
        *c.entry(*e).or_default() += 1;
    }
    for i in 0..4 {
        let s = share(&c, ep(i), first.len());
        assert!((s - 0.25).abs() < 0.05, "{}: {s}", ep(i));
    }
    // A rebuilt balancer (another proxy replica) maps keys identically.
    let mut other = ring_balancer(4, t0);
    assert!(
        (0..keys).all(|k| sticky_pick(&mut other, k, &mut rng, t0, |_| true)
            == first[usize::try_from(k).unwrap()])
    );
}

#[test]
fn consistent_hash_minimal_disruption() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut b = ring_balancer(5, t0);
    let keys = 10_000u64;
    let before: Vec<_> = (0..keys)
        .map(|k| sticky_pick(&mut b, k, &mut rng, t0, |_| true))
        .collect();

    // Removal: only the removed endpoint's keys move.
    b.set_endpoints((0..5).filter(|i| *i != 2).map(|i| (ep(i), 1)), t0);
    let after: Vec<_> = (0..keys)
        .map(|k| sticky_pick(&mut b, k, &mut rng, t0, |_| true))
        .collect();
    for (x, y) in before.iter().zip(&after) {
        if *x != ep(2) {
            assert_eq!(x, y, "a key not on the removed endpoint moved");
        } else {
            assert_ne!(*y, ep(2));
        }
    }
    // Re-adding restores the original assignment.
    b.set_endpoints((0..5).map(|i| (ep(i), 1)), t0);
    assert!(
        (0..keys).all(|k| sticky_pick(&mut b, k, &mut rng, t0, |_| true)
            == before[usize::try_from(k).unwrap()])
    );

    // Ejection (unavailable) also moves only that endpoint's keys.
    let ejected: Vec<_> = (0..keys)
        .map(|k| sticky_pick(&mut b, k, &mut rng, t0, |id| id != ep(4)))
        .collect();
    for (x, y) in before.iter().zip(&ejected) {
        if *x != ep(4) {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn consistent_hash_keys_from_requests() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(8);
    let mut h = HeaderMap::new();
    h.insert("x-case-id", "case-42".parse().unwrap());
    h.insert(
        http::header::COOKIE,
        "a=1; jalin-affinity=abc".parse().unwrap(),
    );
    let req = RequestView::new("GET", "/p?tenant=t9", "svc", &h, 80);
    let key = |k: HashKey| request_hash(&k, &req, Some(IpAddr::from([10, 1, 2, 3])), 0xfeed);
    assert_eq!(
        key(HashKey::Header("x-case-id".into())).hash,
        Some(hash_bytes(b"case-42"))
    );
    assert_eq!(
        key(HashKey::QueryParameter("tenant".into())).hash,
        Some(hash_bytes(b"t9"))
    );
    assert_eq!(
        key(HashKey::SourceIp).hash,
        Some(hash_bytes(&[10, 1, 2, 3]))
    );
    let cookie = HashKey::Cookie {
        name: "jalin-affinity".into(),
        path: None,
        ttl_ms: Some(60_000),
    };
    assert_eq!(key(cookie).hash, Some(hash_bytes(b"abc")));
    assert_eq!(
        key(HashKey::Header("x-missing".into())),
        RequestHash::default()
    );

    // A missing cookie with a TTL: a new one is minted, and the request hashes as if it had it.
    let empty = HeaderMap::new();
    let bare = RequestView::new("GET", "/", "svc", &empty, 80);
    let minted = request_hash(
        &HashKey::Cookie {
            name: "c".into(),
            path: Some("/".into()),
            ttl_ms: Some(3_600_000),
        },
        &bare,
        None,
        0xabc,
    );
    let value = minted.set_cookie.clone().unwrap();
    assert_eq!(minted.hash, Some(hash_bytes(value.as_bytes())));
    assert_eq!(
        affinity_cookie("c", &value, Some("/"), Some(3_600_000)),
        format!("c={value}; HttpOnly; Path=/; Max-Age=3600")
    );

    // A missing key falls back to a random pick.
    let mut b = ring_balancer(3, t0);
    let c = counts(&mut b, 3_000, &mut rng, t0, |_| true);
    assert_eq!(c.len(), 3);
    let _ = rng.random::<u64>();
}

#[test]
fn retries_skip_tried_hosts_until_none_is_left() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let mut b = balancer(LoadBalancer::RoundRobin, &[1, 1, 1], t0);
    let mut tried = TriedHosts::default();
    for _ in 0..3 {
        let e = b
            .pick_for_retry(&PickContext::at(t0), &mut rng, |_| true, &tried)
            .unwrap();
        assert!(!tried.contains(e));
        tried.insert(e);
    }
    assert!(
        b.pick_for_retry(&PickContext::at(t0), &mut rng, |_| true, &tried)
            .is_some(),
        "falls back to a tried host"
    );
    assert!(
        b.pick_for_retry(&PickContext::at(t0), &mut rng, |_| false, &tried)
            .is_none()
    );
}
