//! The demo's traffic: each scenario plays one client application calling a service through its
//! sidecar's outbound listener at a steady pace, and records what came back (status class, the
//! answering instance, and the latency of successful calls in an HDR histogram).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use super::apps::INSTANCE_HEADER;
use super::example::{CHILD_PROFILE, COMPLIANCE_REPORTING, EMERGENCY_RESPONSE};

/// Time between two requests of one scenario (10 requests per second each).
pub const PACE: Duration = Duration::from_millis(100);
/// A request that takes longer than this counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read (the demo apps answer ~100 bytes).
const MAX_BODY: usize = 64 << 10;
/// Highest latency the histograms track: 60 s in microseconds, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// The class of a scenario's requests, for the latency comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Standard,
    Emergency,
}

/// What the seed policies say about a scenario's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

/// One kind of call, repeated.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    /// The client workload (its sidecar) that sends it.
    pub client: &'static str,
    pub host: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub class: Class,
    /// The policy that should decide it, and how.
    pub expect: Expect,
    pub policy: &'static str,
}

/// The scenarios, each naming the seed policy rule it exercises.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "care-coordination",
        client: "child-profile-client",
        host: CHILD_PROFILE,
        method: "GET",
        path: "/api/v1/child/1042",
        headers: &[("x-child-access-reason", "care-coordination")],
        class: Class::Standard,
        expect: Expect::Allow,
        policy: "child-services/child-profile-access-policy rule 0",
    },
    Scenario {
        name: "child-emergency",
        client: "child-profile-client",
        host: CHILD_PROFILE,
        method: "GET",
        path: "/api/v1/child/1042",
        headers: &[("x-child-access-reason", "emergency")],
        class: Class::Emergency,
        expect: Expect::Allow,
        policy: "child-services/child-profile-access-policy rule 0",
    },
    Scenario {
        name: "responder-emergency",
        client: "emergency-responder",
        host: CHILD_PROFILE,
        method: "GET",
        path: "/api/v1/child/emergency/1042",
        headers: &[
            ("x-child-access-reason", "emergency"),
            ("x-emergency-authorization", "verified"),
        ],
        class: Class::Emergency,
        expect: Expect::Allow,
        policy: "child-services/child-profile-access-policy rule 1",
    },
    Scenario {
        name: "child-safety-alert",
        client: "child-protection-officer",
        host: EMERGENCY_RESPONSE,
        method: "POST",
        path: "/api/v1/emergency/child-safety/alert",
        headers: &[
            ("x-child-protection-authorization", "verified"),
            ("x-emergency-severity", "critical"),
        ],
        class: Class::Emergency,
        expect: Expect::Allow,
        policy: "emergency/emergency-access-policy rule 1",
    },
    Scenario {
        name: "compliance-report",
        client: "compliance-reporter",
        host: COMPLIANCE_REPORTING,
        method: "POST",
        path: "/api/v1/compliance/report",
        headers: &[
            ("x-compliance-report-type", "child-welfare"),
            ("x-report-type", "compliance"),
        ],
        class: Class::Standard,
        expect: Expect::Allow,
        policy: "government/government-service-access-policy rule 1",
    },
    Scenario {
        name: "compliance-query",
        client: "government-official",
        host: COMPLIANCE_REPORTING,
        method: "GET",
        path: "/api/v1/compliance/summary",
        headers: &[
            ("x-government-authorization", "verified"),
            ("x-report-type", "compliance"),
        ],
        class: Class::Standard,
        expect: Expect::Allow,
        policy: "government/government-service-access-policy rule 0",
    },
    Scenario {
        name: "unauthorised-profile",
        client: "unauthorised-client",
        host: CHILD_PROFILE,
        method: "GET",
        path: "/api/v1/child/1042",
        headers: &[("x-child-access-reason", "care-coordination")],
        class: Class::Standard,
        expect: Expect::Deny,
        policy: "child-services/child-profile-access-policy (no rule matches)",
    },
    Scenario {
        name: "unauthorised-alert",
        client: "unauthorised-client",
        host: EMERGENCY_RESPONSE,
        method: "POST",
        path: "/api/v1/emergency/child-safety/alert",
        headers: &[
            ("x-child-protection-authorization", "verified"),
            ("x-emergency-severity", "critical"),
        ],
        class: Class::Emergency,
        expect: Expect::Deny,
        policy: "emergency/emergency-access-policy (no rule matches)",
    },
];

/// What one scenario saw so far.
#[derive(Debug)]
pub struct Stats {
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 403 answers.
    pub denied: u64,
    /// 5xx answers.
    pub failed: u64,
    /// Any other status.
    pub other: u64,
    /// No answer: connection error or timeout.
    pub errors: u64,
    /// Answers by the instance named in `x-demo-instance`.
    pub by_instance: BTreeMap<String, u64>,
    /// Latency of 2xx answers, microseconds.
    pub latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        #[allow(clippy::expect_used)]
        // Invariant: 1 <= MAX_LATENCY_US and 3 significant digits are valid bounds.
        let latency =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Self {
            sent: 0,
            ok: 0,
            denied: 0,
            failed: 0,
            other: 0,
            errors: 0,
            by_instance: BTreeMap::new(),
            latency,
        }
    }
}

/// A scenario with its shared counters.
#[derive(Debug, Clone)]
pub struct Running {
    pub scenario: Scenario,
    pub stats: Arc<Mutex<Stats>>,
}

/// Starts every scenario against the outbound listener `outbound(client, host)` gives; the
/// tasks stop when the returned set is dropped.
pub fn start(outbound: impl Fn(&str, &str) -> Option<SocketAddr>) -> (Vec<Running>, JoinSet<()>) {
    let mut tasks = JoinSet::new();
    let mut running = Vec::new();
    for scenario in SCENARIOS {
        let stats = Arc::new(Mutex::new(Stats::new()));
        running.push(Running {
            scenario: *scenario,
            stats: stats.clone(),
        });
        let Some(addr) = outbound(scenario.client, scenario.host) else {
            continue;
        };
        tasks.spawn(drive(*scenario, addr, stats));
    }
    (running, tasks)
}

async fn drive(scenario: Scenario, addr: SocketAddr, stats: Arc<Mutex<Stats>>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = send(&client, &scenario, addr).await;
        let Ok(mut s) = stats.lock() else { return };
        s.sent += 1;
        match outcome {
            Ok((status, instance, elapsed)) => {
                if let Some(i) = instance {
                    *s.by_instance.entry(i).or_insert(0) += 1;
                }
                match status {
                    200..=299 => {
                        s.ok += 1;
                        let us = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_LATENCY_US);
                        let _ = s.latency.record(us.clamp(1, MAX_LATENCY_US));
                    }
                    403 => s.denied += 1,
                    500..=599 => s.failed += 1,
                    _ => s.other += 1,
                }
            }
            Err(()) => s.errors += 1,
        }
    }
}

type Answer = (u16, Option<String>, Duration);

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    scenario: &Scenario,
    addr: SocketAddr,
) -> Result<Answer, ()> {
    let mut req = http::Request::builder()
        .method(scenario.method)
        .uri(format!("http://{addr}{}", scenario.path))
        .header(http::header::HOST, scenario.host);
    for (k, v) in scenario.headers {
        req = req.header(*k, *v);
    }
    let body = if scenario.method == "POST" {
        Full::new(Bytes::from_static(b"{\"demo\":true}"))
    } else {
        Full::new(Bytes::new())
    };
    let req = req.body(body).map_err(|_| ())?;
    let start = Instant::now();
    let call = async {
        let resp = client.request(req).await.map_err(|_| ())?;
        let status = resp.status().as_u16();
        let instance = resp
            .headers()
            .get(INSTANCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| ())?;
        Ok::<_, ()>((status, instance))
    };
    let (status, instance) = tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| ())??;
    Ok((status, instance, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::example::CLIENTS;

    #[test]
    fn every_scenario_uses_a_client_that_calls_its_host() {
        for s in SCENARIOS {
            let c = CLIENTS.iter().find(|c| c.name == s.client).unwrap();
            assert!(c.calls.contains(&s.host), "{}", s.name);
        }
    }

    #[test]
    fn scenarios_cover_allow_deny_and_both_classes() {
        assert!(SCENARIOS.iter().any(|s| s.expect == Expect::Deny));
        assert!(
            SCENARIOS
                .iter()
                .any(|s| s.class == Class::Emergency && s.expect == Expect::Allow)
        );
        assert!(
            SCENARIOS
                .iter()
                .any(|s| s.class == Class::Standard && s.expect == Expect::Allow)
        );
    }
}
