//! SIGHUP reloads the configuration file. In its own test binary (its own process), because the
//! signal reaches every proxy in the process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use jalin_tests::client;
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, TestProxy, config_yaml};
use jalin_tests::upstream::HttpUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let yaml = |ep: &HttpUpstream| {
        config_yaml(
            &[ListenerSpec::outbound("out", "echo")],
            &[ServiceSpec::new("echo", &[ep.addr])],
        )
    };
    let proxy = TestProxy::start(&yaml(&a)).await.unwrap();
    let mut events = proxy.handle.reload_events();
    // Let the file watcher apply the change first, then SIGHUP must find nothing new (same hash)
    // and report the same version: a reload of an unchanged file is harmless.
    let event = proxy.rewrite(&yaml(&b)).await.unwrap();
    assert_eq!(event.result, Ok(2));
    events.borrow_and_update();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), events.changed())
        .await
        .unwrap()
        .unwrap();
    let event = events.borrow().clone().unwrap();
    assert_eq!(event.result, Ok(2));
    let (status, upstream, _) = client::get(&client::http1_client(), proxy.addr("out"), "/")
        .await
        .unwrap();
    assert_eq!((status, upstream.as_str()), (200, "b"));
}
