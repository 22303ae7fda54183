//! Certificate rotation at the gateway: SIGHUP (or replacing the files, which the watcher sees)
//! re-reads the listener's certificate files, new connections get the new certificate, and a broken file is rejected with its field path while
//! the last good certificate keeps serving. Its own test binary, because SIGHUP reaches every
//! proxy in the process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod gateway_common;

use std::time::Duration;

use gateway_common::{GovPki, curl_https, records_gateway_yaml, replace, served_leaf, tls_yaml};
use jalin_proxy::ReloadEvent;
use jalin_tests::proxy::TestProxy;
use jalin_tests::upstream::HttpUpstream;

/// Sends SIGHUP to this process and returns the first reload outcome `want` accepts. (The file
/// watcher also reloads after files are replaced; waiting for the expected outcome skips a
/// reload of its that read the files before the last change.)
async fn sighup(proxy: &TestProxy, want: impl Fn(&ReloadEvent) -> bool) -> ReloadEvent {
    let mut events = proxy.handle.reload_events();
    events.borrow_and_update();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        // Guards against a hang only.
        tokio::time::timeout(Duration::from_secs(60), events.changed())
            .await
            .expect("no reload after SIGHUP")
            .unwrap();
        let event = events.borrow_and_update().clone().unwrap();
        if want(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_and_a_broken_key_keeps_the_last_good_one() {
    let pki = GovPki::new("Rotation");
    let (cert, key, first) = pki.server_files("gw");
    let app = HttpUpstream::start("records").await.unwrap();
    let yaml = records_gateway_yaml("", &tls_yaml(&cert, &key, ""), app.addr, "");
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let gw = proxy.addr("gw");
    let host = "records.example.gov";
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), first);

    // A new certificate and key are installed; the configuration file itself is unchanged.
    let (next_cert, next_key, second) = pki.server_files("gw-next");
    assert_ne!(first, second);
    replace(&next_cert, &cert);
    replace(&next_key, &key);
    sighup(&proxy, |e| e.result.is_ok()).await;
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), second);
    let r = curl_https(host, gw, "/", &pki.root, &[]).await;
    assert_eq!((r.status, r.upstream.as_str()), (200, "records"), "{r:?}");

    // A broken key file is rejected with the field and file named; the last good certificate
    // stays in force for new connections.
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let broken = pki.dir.path().join("broken.key");
    std::fs::write(&broken, secret).unwrap();
    replace(&broken, &key);
    let err = sighup(&proxy, |e| e.result.is_err())
        .await
        .result
        .unwrap_err();
    assert_eq!(err.path, "listeners[0].tls.private_key", "{err}");
    assert!(err.message.contains(&key.display().to_string()), "{err}");
    assert!(
        !err.to_string().contains("c2VjcmV0"),
        "key material in {err}"
    );
    assert!(!err.hint.is_empty(), "{err}");
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), second);
    let r = curl_https(host, gw, "/", &pki.root, &["--http2"]).await;
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");

    // A key of another certificate is refused the same way.
    let (_, other_key, _) = pki.server_files("other");
    replace(&other_key, &key);
    let mismatch = |e: &ReloadEvent| {
        e.result
            .as_ref()
            .is_err_and(|err| err.message.contains("does not belong"))
    };
    let err = sighup(&proxy, mismatch).await.result.unwrap_err();
    assert_eq!(err.path, "listeners[0].tls.private_key", "{err}");
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), second);

    // Without SIGHUP: replacing the files is enough (the file watcher reloads). A reload that
    // sees the new certificate before its key is rejected; the next one applies the pair.
    let mut events = proxy.handle.reload_events();
    events.borrow_and_update();
    let (third_cert, third_key, third) = pki.server_files("gw-third");
    replace(&third_cert, &cert);
    replace(&third_key, &key);
    loop {
        tokio::time::timeout(Duration::from_secs(60), events.changed())
            .await
            .expect("no reload after the certificate files changed")
            .unwrap();
        let ok = events
            .borrow_and_update()
            .as_ref()
            .is_some_and(|e| e.result.is_ok());
        if ok {
            break;
        }
    }
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), third);
}
