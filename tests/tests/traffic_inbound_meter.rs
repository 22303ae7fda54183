//! The inbound sidecar's `istio_requests_total{reporter="destination"}` against what its app
//! really answered: a failing app behind an inbound jalin proxy, called through a client-side
//! jalin proxy that retries 503 and ejects the host. Every response the app answered must be
//! counted exactly once by the inbound proxy, with the app's status code; a client that goes
//! away mid-response keeps the app's code and sets `response_flags="DC"`, an app that cuts its
//! body keeps its code and sets `UC`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jalin_tests::AbortOnDrop;
use jalin_tests::client;
use jalin_tests::proxy::{ListenerSpec, OutboundConfig, ServiceSpec, TestProxy, config_yaml};
use jalin_tests::upstream::{ControlledUpstream, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// The inbound sidecar of service `svc`: listener `in` (detection: HTTP/1.1 or h2c) in front
/// of the app at `app`, spoken to in HTTP/1.1; no route table (Istio's default inbound route).
async fn inbound_sidecar(svc: &str, app: SocketAddr) -> TestProxy {
    let service = ServiceSpec {
        protocol: "http1",
        ..ServiceSpec::new(svc, &[app])
    };
    TestProxy::start(&config_yaml(
        &[ListenerSpec::inbound("in", svc)],
        &[service],
    ))
    .await
    .unwrap()
}

/// The inbound proxy's `istio_requests_total{reporter="destination"}` series for `svc`, by
/// `(response_code, response_flags)`.
async fn destination_requests(proxy: &TestProxy, svc: &str) -> BTreeMap<(String, String), u64> {
    let body = client::curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    let service = format!("destination_service=\"{svc}\"");
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("istio_requests_total{") else {
            continue;
        };
        if !rest.contains("reporter=\"destination\"") || !rest.contains(&service) {
            continue;
        }
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            labels[start..].split('"').next().unwrap().to_owned()
        };
        let key = (label("response_code"), label("response_flags"));
        *out.entry(key).or_insert(0) += value.trim().parse::<u64>().unwrap();
    }
    out
}

/// Reads the inbound proxy's series until they add up to at least `n` requests (the meter
/// records as the response ends, which may follow the client's last byte by a moment); bounded
/// by [`HANG_GUARD`], after which the last reading is returned for the test to judge.
async fn destination_requests_reaching(
    proxy: &TestProxy,
    svc: &str,
    n: u64,
) -> BTreeMap<(String, String), u64> {
    let mut last = BTreeMap::new();
    let _ = tokio::time::timeout(HANG_GUARD, async {
        loop {
            last = destination_requests(proxy, svc).await;
            if last.values().sum::<u64>() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    if last.values().sum::<u64>() < n {
        last = destination_requests(proxy, svc).await;
    }
    last
}

/// `n` requests through a client-side proxy (cluster `client_svc`, `policy`, `retries` on its
/// one route) to the inbound sidecar of `svc`, whose app answers 503 to everything. Returns the
/// 503s the app answered and the inbound proxy's series for `svc`.
async fn failing_app_through_two_sidecars(
    svc: &str,
    client_svc: &str,
    policy: &str,
    retries: &str,
    n: usize,
) -> (u64, BTreeMap<(String, String), u64>) {
    let app = ControlledUpstream::start("failing").await.unwrap();
    app.set(Mode::Status(503));
    let inbound = inbound_sidecar(svc, app.addr).await;
    let outbound = TestProxy::start(
        &OutboundConfig::new(client_svc, &[inbound.addr("in")])
            .policy(policy)
            .http_routes(&format!(
                r#"
                - destinations:
                    - destination: {{ host: {client_svc} }}
                      weight: 100
                  retries: {retries}
                "#
            ))
            .yaml(),
    )
    .await
    .unwrap();
    let http = client::http1_client();
    for _ in 0..n {
        let (status, _, _) =
            tokio::time::timeout(HANG_GUARD, client::get(&http, outbound.addr("out"), "/"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(status, 503);
    }
    let answered = app.requests();
    let series = destination_requests_reaching(&inbound, svc, answered).await;
    (answered, series)
}

fn only_503(answered: u64) -> BTreeMap<(String, String), u64> {
    BTreeMap::from([(("503".to_owned(), "-".to_owned()), answered)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_503_the_app_answered_is_counted_once_when_the_client_side_retries() {
    let (answered, series) = failing_app_through_two_sidecars(
        "meter-retry-app",
        "meter-retry-client",
        "{}",
        "{ attempts: 2, retry_on: \"5xx\" }",
        10,
    )
    .await;
    // Three tries per request reach the inbound sidecar; it forwards each to the app once.
    assert_eq!(answered, 30, "the app answered every try exactly once");
    assert_eq!(series, only_503(answered), "inbound destination series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_503_the_app_answered_is_counted_once_when_the_client_side_ejects() {
    // Ejected after 3 consecutive 5xx (for longer than the test); Istio's default retries.
    let (answered, series) = failing_app_through_two_sidecars(
        "meter-eject-app",
        "meter-eject-client",
        r#"
        outlier_detection:
          consecutive_5xx_errors: 3
          interval_ms: 600000
          base_ejection_time_ms: 600000
          max_ejection_percent: 100
        "#,
        "{ attempts: 2, retry_on: \"retriable-status-codes\", retriable_status_codes: [503] }",
        5,
    )
    .await;
    assert_eq!(
        answered, 3,
        "the client side ejected the host after 3 errors"
    );
    assert_eq!(series, only_503(answered), "inbound destination series");
}

/// An HTTP/1.1 app that answers every request with a 503 head and the start of its body, then
/// never finishes the body: it holds the connection until the proxy drops it or the test
/// [`cut`](Self::cut)s it. Counts the heads it sent and signals each.
struct StalledApp {
    addr: SocketAddr,
    answered: Arc<AtomicU64>,
    sent: Arc<Notify>,
    cut: Arc<Notify>,
    _task: AbortOnDrop,
}

impl StalledApp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Notify::new());
        let cut = Arc::new(Notify::new());
        let (a, s, c) = (answered.clone(), sent.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (a, s, c) = (a.clone(), s.clone(), c.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let rsp =
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\npartial";
                    if stream.write_all(rsp).await.is_ok() {
                        a.fetch_add(1, Ordering::SeqCst);
                        s.notify_one();
                    }
                    // Hold the connection (the body never completes) until the proxy drops it
                    // or the test cuts it (closing it mid-body).
                    tokio::select! {
                        () = async {
                            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                        } => {}
                        () = c.notified() => {}
                    }
                });
            }
        });
        Self {
            addr,
            answered,
            sent,
            cut,
            _task: AbortOnDrop(task),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_response_keeps_the_apps_code_with_flag_dc() {
    let app = StalledApp::start().await;
    let svc = "meter-dc-app";
    let inbound = inbound_sidecar(svc, app.addr).await;
    // h2c to the inbound sidecar: dropping the response cancels the stream (RST_STREAM).
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let sent = app.sent.notified();
    let rsp = tokio::time::timeout(
        HANG_GUARD,
        h2.get(format!("http://{}/", inbound.addr("in")).parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rsp.status(), 503);
    tokio::time::timeout(HANG_GUARD, sent).await.unwrap();
    drop(rsp);
    let series = destination_requests_reaching(&inbound, svc, 1).await;
    assert_eq!(app.answered.load(Ordering::SeqCst), 1);
    assert_eq!(
        series,
        BTreeMap::from([(("503".to_owned(), "DC".to_owned()), 1)]),
        "the app's code, flagged downstream-terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_cuts_its_body_keeps_its_code_with_flag_uc() {
    let app = StalledApp::start().await;
    let svc = "meter-uc-app";
    let inbound = inbound_sidecar(svc, app.addr).await;
    let url = format!("http://{}/", inbound.addr("in"));
    let sent = app.sent.notified();
    let rsp = tokio::time::timeout(HANG_GUARD, client::http1_client().get(url.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), 503);
    tokio::time::timeout(HANG_GUARD, sent).await.unwrap();
    // The app closes its connection mid-body: the client sees the body fail.
    app.cut.notify_one();
    let body = tokio::time::timeout(HANG_GUARD, rsp.into_body().collect())
        .await
        .unwrap();
    assert!(body.is_err(), "the cut body reaches the client as an error");
    let series = destination_requests_reaching(&inbound, svc, 1).await;
    assert_eq!(app.answered.load(Ordering::SeqCst), 1);
    assert_eq!(
        series,
        BTreeMap::from([(("503".to_owned(), "UC".to_owned()), 1)]),
        "the app's code, flagged upstream-terminated"
    );
}
