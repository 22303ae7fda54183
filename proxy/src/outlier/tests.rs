//! Outlier detector tests with a fake clock (a base `Instant` plus offsets).

use std::time::{Duration, Instant};

use jalin_xds::model::traffic::{OutlierDetection, SuccessRate};

use super::*;

fn host(i: u16) -> EndpointId {
    EndpointId::from(([10, 0, 0, 1], 8000 + i))
}

fn detector(hosts: u16, cfg: OutlierDetection, t0: Instant) -> OutlierDetector {
    let mut d = OutlierDetector::new("child-profile-service", cfg, t0);
    d.set_hosts((0..hosts).map(host));
    d
}

fn pct(max_ejection_percent: u32) -> OutlierDetection {
    OutlierDetection {
        max_ejection_percent,
        ..OutlierDetection::default()
    }
}

fn fail(d: &mut OutlierDetector, h: EndpointId, n: u32, now: Instant) -> Vec<OutlierEvent> {
    (0..n)
        .filter_map(|_| d.record(h, HostResult::Http(500), now))
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn ejects_after_exactly_the_configured_errors_and_readmits() {
    let t0 = Instant::now();
    let mut d = detector(3, pct(34), t0);
    assert_eq!(d.ejection_cap(), 1, "3 hosts at 34 % → 1");
    assert!(fail(&mut d, host(0), 4, t0).is_empty());
    assert!(!d.is_ejected(host(0)));
    let ev = fail(&mut d, host(0), 1, t0);
    assert_eq!(
        ev,
        vec![OutlierEvent::Ejected {
            host: host(0),
            reason: EjectReason::Consecutive5xx,
            ejection_count: 1,
            duration: secs(30)
        }]
    );
    assert!(d.is_ejected(host(0)) && !d.is_available(host(0)));
    assert!(d.sweep(t0 + secs(10)).is_empty());
    assert!(d.sweep(t0 + secs(20)).is_empty());
    assert_eq!(
        d.sweep(t0 + secs(30)),
        vec![OutlierEvent::Readmitted { host: host(0) }]
    );
    assert!(d.is_available(host(0)));
}

#[test]
fn success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let mut d = detector(3, pct(100), t0);
    fail(&mut d, host(1), 4, t0);
    assert!(d.record(host(1), HostResult::Http(200), t0).is_none());
    assert!(fail(&mut d, host(1), 4, t0).is_empty(), "count restarted");
    assert_eq!(fail(&mut d, host(1), 1, t0).len(), 1);
}

#[test]
fn ejection_time_grows_with_count_and_is_capped() {
    let t0 = Instant::now();
    let mut d = detector(2, pct(50), t0);
    let mut now = t0;
    let mut seen = Vec::new();
    for _ in 0..12 {
        let ev = fail(&mut d, host(0), 5, now);
        let Some(OutlierEvent::Ejected {
            duration,
            ejection_count,
            ..
        }) = ev.first().cloned()
        else {
            panic!("{ev:?}")
        };
        seen.push((ejection_count, duration.as_secs()));
        now += duration;
        // Re-admitted right at the end of the ejection, then fails again before the next sweep.
        assert_eq!(
            d.sweep(now),
            vec![OutlierEvent::Readmitted { host: host(0) }]
        );
    }
    let expected: Vec<(u32, u64)> = (1..=12)
        .map(|n| (n, (30 * u64::from(n)).min(300)))
        .collect();
    assert_eq!(seen, expected, "30 s × count, capped at 300 s");
}

#[test]
fn multiplier_decays_while_healthy() {
    let t0 = Instant::now();
    let mut d = detector(2, pct(50), t0);
    fail(&mut d, host(0), 5, t0);
    d.sweep(t0 + secs(30));
    fail(&mut d, host(0), 5, t0 + secs(30));
    assert_eq!(d.ejection_count(host(0)), 2);
    d.sweep(t0 + secs(90));
    assert_eq!(
        d.ejection_count(host(0)),
        2,
        "the readmitting sweep does not decay"
    );
    d.sweep(t0 + secs(100));
    assert_eq!(d.ejection_count(host(0)), 1);
    d.sweep(t0 + secs(110));
    d.sweep(t0 + secs(120));
    assert_eq!(d.ejection_count(host(0)), 0);
    let ev = fail(&mut d, host(0), 5, t0 + secs(120));
    assert!(matches!(ev[0], OutlierEvent::Ejected { duration, .. } if duration == secs(30)));
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let t0 = Instant::now();
    let mut d = detector(10, OutlierDetection::default(), t0);
    assert_eq!(d.ejection_cap(), 1, "10 hosts at the default 10 %");
    assert!(matches!(
        fail(&mut d, host(0), 5, t0)[0],
        OutlierEvent::Ejected { .. }
    ));
    let ev = fail(&mut d, host(1), 5, t0);
    assert_eq!(
        ev,
        vec![OutlierEvent::EjectionSkipped {
            host: host(1),
            reason: EjectReason::Consecutive5xx,
            ejected: 1,
            cap: 1
        }]
    );
    // Every host failing never ejects more than the cap.
    for i in 2..10 {
        fail(&mut d, host(i), 50, t0);
    }
    assert_eq!(d.ejected_count(), 1);
}

#[test]
fn single_host_is_never_ejected_below_the_cap() {
    let t0 = Instant::now();
    let mut d = detector(1, OutlierDetection::default(), t0);
    assert_eq!(d.ejection_cap(), 0, "1 host at 10 % → 0");
    let ev = fail(&mut d, host(0), 100, t0);
    assert!(
        ev.iter()
            .all(|e| matches!(e, OutlierEvent::EjectionSkipped { cap: 0, .. }))
    );
    assert_eq!(ev.len(), 20);
    assert!(!d.is_ejected(host(0)));
    let mut small = detector(9, OutlierDetection::default(), t0);
    assert_eq!(small.ejection_cap(), 0, "9 hosts at 10 % → 0");
    fail(&mut small, host(3), 5, t0);
    assert!(!small.is_ejected(host(3)));
    let mut all = detector(1, pct(100), t0);
    fail(&mut all, host(0), 5, t0);
    assert!(
        all.is_ejected(host(0)),
        "100 % allows ejecting the only host"
    );
}

#[test]
fn panic_threshold_ignores_ejections() {
    let t0 = Instant::now();
    let cfg = OutlierDetection {
        max_ejection_percent: 100,
        min_health_percent: 50,
        ..OutlierDetection::default()
    };
    let mut d = detector(4, cfg, t0);
    fail(&mut d, host(0), 5, t0);
    fail(&mut d, host(1), 5, t0);
    assert!(!d.in_panic(), "2 of 4 healthy = 50 %, not below");
    assert!(!d.is_available(host(0)));
    fail(&mut d, host(2), 5, t0);
    assert!(d.in_panic(), "1 of 4 healthy = 25 % < 50 %");
    assert!(
        d.is_ejected(host(0)) && d.is_available(host(0)),
        "ejection kept but ignored"
    );
    let off = detector(4, pct(100), t0);
    assert!(!off.in_panic(), "off by default");
}

#[test]
fn gateway_errors_vs_5xx() {
    let t0 = Instant::now();
    let cfg = OutlierDetection {
        consecutive_5xx_errors: None,
        consecutive_gateway_errors: Some(3),
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    };
    let mut d = detector(2, cfg, t0);
    for _ in 0..10 {
        assert!(
            d.record(host(0), HostResult::Http(500), t0).is_none(),
            "500 is not a gateway error"
        );
    }
    d.record(host(0), HostResult::Http(502), t0);
    d.record(host(0), HostResult::Http(503), t0);
    d.record(host(0), HostResult::Http(500), t0);
    d.record(host(0), HostResult::Http(504), t0);
    d.record(host(0), HostResult::Http(502), t0);
    assert!(!d.is_ejected(host(0)), "a 500 broke the gateway run");
    let ev = d.record(host(0), HostResult::Http(503), t0);
    assert!(matches!(
        ev,
        Some(OutlierEvent::Ejected {
            reason: EjectReason::ConsecutiveGatewayErrors,
            ..
        })
    ));
}

#[test]
fn local_origin_without_split_counts_as_5xx() {
    let t0 = Instant::now();
    let mut d = detector(2, pct(100), t0);
    for _ in 0..4 {
        assert!(
            d.record(host(0), HostResult::Local(LocalOrigin::ConnectFailed), t0)
                .is_none()
        );
        d.record(host(0), HostResult::Local(LocalOrigin::Success), t0);
    }
    let ev = d.record(host(0), HostResult::Local(LocalOrigin::Timeout), t0);
    assert!(
        matches!(
            ev,
            Some(OutlierEvent::Ejected {
                reason: EjectReason::Consecutive5xx,
                ..
            })
        ),
        "{ev:?}"
    );
}

#[test]
fn split_local_origin_errors() {
    let t0 = Instant::now();
    let cfg = OutlierDetection {
        split_external_local_origin_errors: true,
        consecutive_local_origin_failures: Some(2),
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    };
    let mut d = detector(2, cfg, t0);
    // Local failures do not touch the 5xx counter...
    for _ in 0..4 {
        d.record(host(0), HostResult::Http(500), t0);
    }
    assert!(
        d.record(host(0), HostResult::Local(LocalOrigin::Reset), t0)
            .is_none()
    );
    assert!(
        d.record(host(0), HostResult::Local(LocalOrigin::Success), t0)
            .is_none(),
        "local success resets"
    );
    assert!(
        d.record(host(0), HostResult::Local(LocalOrigin::ConnectFailed), t0)
            .is_none()
    );
    let ev = d.record(host(0), HostResult::Local(LocalOrigin::Timeout), t0);
    assert!(matches!(
        ev,
        Some(OutlierEvent::Ejected {
            reason: EjectReason::ConsecutiveLocalOriginFailures,
            ..
        })
    ));
    // ...and external 5xx still eject on their own count.
    fail(&mut d, host(1), 5, t0);
    assert!(d.is_ejected(host(1)));
}

#[test]
fn success_rate_ejection() {
    let t0 = Instant::now();
    let cfg = OutlierDetection {
        consecutive_5xx_errors: None,
        max_ejection_percent: 100,
        success_rate: Some(SuccessRate {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }),
        ..OutlierDetection::default()
    };
    let mut d = detector(6, cfg, t0);
    for i in 0..6 {
        for n in 0..200 {
            // Host 5 fails every other request; the rest fail 1 in 100.
            let bad = if i == 5 { n % 2 == 0 } else { n % 100 == 0 };
            d.record(host(i), HostResult::Http(if bad { 503 } else { 200 }), t0);
        }
    }
    let ev = d.sweep(t0 + secs(10));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        matches!(ev[0], OutlierEvent::Ejected { host: h, reason: EjectReason::SuccessRate, .. } if h == host(5))
    );
    // Too little volume: nothing happens.
    d.record(host(0), HostResult::Http(503), t0 + secs(11));
    assert!(d.sweep(t0 + secs(20)).is_empty());
}

#[test]
fn membership_changes_keep_or_drop_state() {
    let t0 = Instant::now();
    let mut d = detector(3, pct(100), t0);
    fail(&mut d, host(0), 5, t0);
    d.set_hosts([host(0), host(1), host(7)]);
    assert!(d.is_ejected(host(0)), "kept");
    assert!(!d.is_ejected(host(7)));
    d.set_hosts([host(1), host(7)]);
    assert_eq!(d.ejected_count(), 0, "removed with its ejection");
    assert!(
        d.record(host(0), HostResult::Http(500), t0).is_none(),
        "unknown host ignored"
    );
    assert_eq!(d.next_sweep(), t0 + secs(10));
}

/// policies-18 (child-profile-service-destination) as the importer maps its deprecated
/// `circuitBreaker` block: `consecutiveErrors: 3` counts gateway errors (Istio's mapping),
/// interval 30 s, baseEjectionTime 30 s, maxEjectionPercent 50, minHealthPercent 50.
#[test]
fn seed_policy_18_circuit_breaker() {
    let t0 = Instant::now();
    let cfg = OutlierDetection {
        consecutive_5xx_errors: None,
        consecutive_gateway_errors: Some(3),
        interval_ms: 30_000,
        base_ejection_time_ms: 30_000,
        max_ejection_percent: 50,
        min_health_percent: 50,
        ..OutlierDetection::default()
    };
    let mut d = detector(2, cfg, t0);
    assert_eq!(d.ejection_cap(), 1);
    assert!(d.record(host(0), HostResult::Http(503), t0).is_none());
    assert!(d.record(host(0), HostResult::Http(503), t0).is_none());
    let ev = d.record(host(0), HostResult::Http(503), t0);
    assert!(matches!(
        ev,
        Some(OutlierEvent::Ejected {
            reason: EjectReason::ConsecutiveGatewayErrors,
            ..
        })
    ));
    assert!(!d.in_panic(), "1 of 2 healthy is 50 %, not below");
    assert!(!d.is_available(host(0)));
    for _ in 0..3 {
        d.record(host(1), HostResult::Http(502), t0);
    }
    assert!(
        !d.is_ejected(host(1)),
        "cap of 1 holds: the last host stays"
    );
    assert_eq!(d.next_sweep(), t0 + secs(30));
    assert_eq!(
        d.sweep(t0 + secs(30)),
        vec![OutlierEvent::Readmitted { host: host(0) }]
    );
}
