//! The agency-ops story with the real binary, as jalin-proxy.service runs it:
//! `jalin-proxy --config gateway.yaml`, curl over HTTPS to it, `systemctl reload` (SIGHUP to
//! the process) after the certificate files were replaced, and SIGTERM for a clean stop.
//! Synchronised on the proxy's JSON log lines, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod gateway_common;

use gateway_common::{GovPki, curl_https, records_gateway_yaml, served_leaf, tls_yaml};
use jalin_tests::process::{ProxyProcess, message};
use jalin_tests::upstream::HttpUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jalin_proxy_config_gateway_yaml_serves_https_and_rotates_on_sighup() {
    let binary = jalin_tests::proxy::binary();
    let pki = GovPki::new("Binary");
    let (cert, key, first) = pki.server_files("gw");
    let app = HttpUpstream::start("records").await.unwrap();
    let config = pki.dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        records_gateway_yaml("", &tls_yaml(&cert, &key, ""), app.addr, ""),
    )
    .unwrap();
    let mut proxy = ProxyProcess::start(&binary, &config, &[]).unwrap();
    let gw = proxy.listening("gw").await;
    let host = "records.example.gov";
    let r = curl_https(host, gw, "/", &pki.root, &["--http2"]).await;
    assert_eq!(
        (r.status, r.http_version.as_str(), r.upstream.as_str()),
        (200, "2", "records"),
        "{r:?}"
    );
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), first);

    // Rotation: new files in place (written aside, renamed over), then `systemctl reload`.
    let (next_cert, next_key, second) = pki.server_files("gw-next");
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    proxy.signal("-HUP");
    // The watcher may reload first (and see the certificate before its key): wait until the
    // new certificate serves, each reload announced by a log line.
    loop {
        proxy.next(|l| message(l) == "configuration reloaded").await;
        if served_leaf(gw, host, &pki.root).await.unwrap() == second {
            break;
        }
    }
    let r = curl_https(host, gw, "/", &pki.root, &["--http1.1"]).await;
    assert_eq!((r.status, r.upstream.as_str()), (200, "records"), "{r:?}");

    proxy.signal("-TERM");
    let (status, _) = proxy.exit().await;
    assert!(status.success(), "{status:?}");
}
