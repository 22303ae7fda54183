//! The file watcher follows the configuration: after a reload points a gateway listener at
//! certificate files in another directory, replacing those files rotates the certificate without
//! SIGHUP. Its own test binary: no test here sends SIGHUP, which would reload every proxy in the
//! process and hide a watcher that missed the change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod gateway_common;

use std::time::Duration;

use gateway_common::{GovPki, records_gateway_yaml, replace, served_leaf, tls_yaml};
use jalin_tests::proxy::TestProxy;
use jalin_tests::upstream::HttpUpstream;

/// Waits for the next successful reload (failed ones, e.g. a certificate seen before its key,
/// are skipped). The timeout guards against a hang only.
async fn reloaded(events: &mut tokio::sync::watch::Receiver<Option<jalin_proxy::ReloadEvent>>) {
    loop {
        tokio::time::timeout(Duration::from_secs(60), events.changed())
            .await
            .expect("no reload after the files changed")
            .unwrap();
        if events
            .borrow_and_update()
            .as_ref()
            .is_some_and(|e| e.result.is_ok())
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_a_reload_names_are_watched_from_then_on() {
    let pki = GovPki::new("Rewatch");
    let (cert, key, first) = pki.server_files("gw");
    let app = HttpUpstream::start("records").await.unwrap();
    let proxy = TestProxy::start(&records_gateway_yaml(
        "",
        &tls_yaml(&cert, &key, ""),
        app.addr,
        "",
    ))
    .await
    .unwrap();
    let (gw, host) = (proxy.addr("gw"), "records.example.gov");
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), first);

    // The configuration moves the listener to files in a directory nobody watched so far.
    let moved = tempfile::tempdir().unwrap();
    let (moved_cert, moved_key) = (moved.path().join("tls.crt"), moved.path().join("tls.key"));
    let (second_cert, second_key, second) = pki.server_files("gw-second");
    std::fs::copy(&second_cert, &moved_cert).unwrap();
    std::fs::copy(&second_key, &moved_key).unwrap();
    let mut events = proxy.handle.reload_events();
    events.borrow_and_update();
    let yaml = records_gateway_yaml("", &tls_yaml(&moved_cert, &moved_key, ""), app.addr, "");
    let staged = proxy.path.with_extension("new");
    std::fs::write(&staged, yaml).unwrap();
    std::fs::rename(&staged, &proxy.path).unwrap();
    reloaded(&mut events).await;
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), second);

    // Rotating the new files is seen without SIGHUP.
    let (third_cert, third_key, third) = pki.server_files("gw-third");
    replace(&third_cert, &moved_cert);
    replace(&third_key, &moved_key);
    loop {
        reloaded(&mut events).await;
        if served_leaf(gw, host, &pki.root).await.unwrap() == third {
            break;
        }
    }
}
