//! TLS and mutual TLS against the built-in upstream with real certificates: both HTTP versions,
//! strict verification by default, `--insecure` only when asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use jalin_bench::client::HttpVersion;
use jalin_bench::scenario::{self, LoadConfig, OpenLoopConfig, ScenarioError};
use jalin_bench::schedule::Rate;
use jalin_bench::tls::{ClientTls, server_config};
use jalin_bench::upstream::{Upstream, UpstreamConfig};
use support::{Pki, load};

fn tls_upstream(pki: &Pki, require_client_cert: bool) -> Upstream {
    let client_ca = pki.path("ca.pem");
    let config = server_config(
        &pki.path("server.pem"),
        &pki.path("server-key.pem"),
        require_client_cert.then_some(client_ca.as_path()),
        &[b"h2", b"http/1.1"],
    )
    .unwrap();
    Upstream::start(UpstreamConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        response_size: 256,
        threads: 1,
        tls: Some(config),
    })
    .unwrap()
}

fn run_config(upstream: &Upstream) -> OpenLoopConfig {
    OpenLoopConfig {
        url: format!("https://localhost:{}/tls", upstream.addr().port()),
        rate: Rate::per_second(200.0).unwrap(),
        warmup: Duration::ZERO,
        duration: Duration::from_millis(200),
    }
}

fn with_tls(version: HttpVersion, tls: ClientTls) -> LoadConfig {
    let mut load = load(version, 2, 64);
    load.tls = tls;
    load
}

fn mtls(pki: &Pki) -> ClientTls {
    ClientTls {
        cacert: Some(pki.path("ca.pem")),
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client-key.pem")),
        insecure: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_over_both_http_versions() {
    let pki = Pki::new();
    let upstream = tls_upstream(&pki, true);
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let report = scenario::open_loop(&run_config(&upstream), &with_tls(version, mtls(&pki)))
            .await
            .unwrap();
        let stats = &report.target.stats;
        assert_eq!(stats.ok, 40, "{version}: {stats:?}");
        assert_eq!(stats.errors, 0, "{version}");
        assert_eq!(stats.body_bytes, 40 * 256, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate_refuses_a_client_without_one() {
    let pki = Pki::new();
    let upstream = tls_upstream(&pki, true);
    let mut tls = mtls(&pki);
    tls.cert = None;
    tls.key = None;
    match scenario::open_loop(&run_config(&upstream), &with_tls(HttpVersion::Http1, tls)).await {
        // TLS 1.3 may finish the client's side of the handshake before the server's refusal
        // arrives, so the failure shows either at connect or on every request.
        Err(e) => assert!(e.to_string().contains("cannot connect"), "{e}"),
        Ok(report) => {
            assert_eq!(report.target.stats.ok, 0);
            assert_eq!(report.target.stats.errors, 40);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_verified_unless_insecure_is_asked_for() {
    let pki = Pki::new();
    let upstream = tls_upstream(&pki, false);
    let wrong_ca = ClientTls {
        cacert: Some(pki.path("other-ca.pem")),
        ..ClientTls::default()
    };
    let err = scenario::open_loop(
        &run_config(&upstream),
        &with_tls(HttpVersion::Http2, wrong_ca),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ScenarioError::Client(_)), "{err}");
    assert!(err.to_string().contains("tls:"), "{err}");

    let insecure = ClientTls {
        insecure: true,
        ..ClientTls::default()
    };
    let report = scenario::open_loop(
        &run_config(&upstream),
        &with_tls(HttpVersion::Http2, insecure),
    )
    .await
    .unwrap();
    assert_eq!(report.target.stats.ok, 40);
}

#[test]
fn unreadable_tls_files_name_the_file() {
    let tls = ClientTls {
        cacert: Some("/nonexistent/ca.pem".into()),
        ..ClientTls::default()
    };
    let err = jalin_bench::tls::client_config(&tls, &[b"h2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
