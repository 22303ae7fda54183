//! The proxy as an xDS client, end to end: an in-process `XdsServer` on 127.0.0.1:0 plays the
//! control plane, real upstreams serve, real requests go through the proxy. A push changes
//! routing (and the push -> applied time is printed); an invalid update is NACKed with its error
//! on the server side while traffic is unaffected; traffic continues while the control plane is
//! down and the proxy resyncs after it returns; a restarted proxy receives the full state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jalin_proxy::xds::XdsState;
use jalin_proxy::{ConfigSource, Proxy, ProxyHandle};
use jalin_tests::client;
use jalin_tests::upstream::HttpUpstream;
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{
    EncodedResource, Kind, Snapshot, StreamEvent, XdsServer, encode, encode_with_deps,
};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Bounds a hang only; every wait is on a channel.
const WAIT: Duration = Duration::from_secs(20);
const SERVICE: &str = "outbound|80||echo.prod.svc.cluster.local";
const CONTROL_ID: &str = "spiffe://cluster.local/ns/jalin-system/sa/jalin-control";

/// A control plane serving until stopped.
struct ControlPlane {
    server: XdsServer,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ControlPlane {
    async fn start(server: XdsServer, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, None, async {
                let _ = stopped.await;
            })
            .await
            .expect("control plane serves");
        });
        ControlPlane {
            server,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn local(server: XdsServer) -> Self {
        Self::start(server, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    /// Stops serving; returns once every stream has ended and the listener is closed.
    async fn kill(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("control plane stops")
            .unwrap();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn bootstrap(cp: SocketAddr, node: &str) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:0\ncontrol_plane:\n  address: {cp}\n  identity: {CONTROL_ID}\n  \
         insecure_plaintext: true\n  backoff_base_ms: 20\n  backoff_max_ms: 200\n  node:\n    id: {node}\n    \
         namespace: prod\n    service_account: web\n    labels: {{ app: web }}\n"
    )
}

fn listener(name: &str, address: &str, service: &str) -> Listener {
    Listener {
        name: name.into(),
        address: address.parse().unwrap(),
        direction: Direction::Outbound,
        service: Some(service.into()),
        protocol: ListenerProtocol::Detect,
        mtls: None,
        gateway: None,
        tls: None,
        http3: false,
    }
}

/// The resources of one outbound listener to the service at `upstreams`.
fn resources(upstreams: &[SocketAddr]) -> Vec<EncodedResource> {
    let cluster = Cluster {
        name: SERVICE.into(),
        addresses: Vec::new(),
        protocol: Default::default(),
        endpoints: Vec::new(),
        policy: Default::default(),
        tls: None,
        subsets: Vec::new(),
    };
    let endpoints: Vec<Endpoint> = upstreams.iter().map(|a| Endpoint::new(*a)).collect();
    vec![
        encode_with_deps(
            Kind::Listener,
            "out",
            &listener("out", "127.0.0.1:0", SERVICE),
            &[(Kind::Cluster, SERVICE)],
        )
        .unwrap(),
        encode_with_deps(
            Kind::Cluster,
            SERVICE,
            &cluster,
            &[(Kind::Endpoints, SERVICE)],
        )
        .unwrap(),
        encode(Kind::Endpoints, SERVICE, &endpoints).unwrap(),
    ]
}

fn xds(proxy: &ProxyHandle) -> std::sync::Arc<XdsState> {
    proxy.xds().expect("proxy in xDS mode")
}

/// Waits until `cond` holds on the proxy's xDS state (woken by its change feed).
async fn wait_xds(proxy: &ProxyHandle, what: &str, cond: impl Fn(&XdsState) -> bool) {
    let state = xds(proxy);
    let mut changes = state.changes();
    tokio::time::timeout(WAIT, async {
        while !cond(&state) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}: {}", state.dump()));
}

/// The whole served set (listener, cluster, endpoints) is in force.
fn full(x: &XdsState) -> bool {
    x.is_ready() && x.in_force().is_some_and(|d| d.resources() == 3)
}

/// The version of `kind`/`name` the proxy runs.
fn running_version(proxy: &ProxyHandle, kind: &str, name: &str) -> Option<String> {
    xds(proxy)
        .in_force()
        .and_then(|d| d.versions.get(kind)?.get(name).cloned())
}

fn served_version(server: &XdsServer, kind: Kind, name: &str) -> String {
    server
        .snapshot()
        .get(kind.type_url(), name)
        .unwrap()
        .version
        .to_string()
}

/// Waits for the next server event that `pick` accepts.
async fn wait_event<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    what: &str,
    pick: impl Fn(&ServerEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.unwrap();
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn get_upstream(addr: SocketAddr) -> String {
    let c = client::http1_client();
    let (status, upstream, body) = client::get(&c, addr, "/headers").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    upstream
}

async fn admin_get(proxy: &ProxyHandle, path: &str) -> (u16, String) {
    let c = client::http1_client();
    let (status, _, body) = client::get(&c, proxy.admin_addr(), path).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn start_proxy(cp: SocketAddr, node: &str) -> ProxyHandle {
    Proxy::start(ConfigSource::Inline(bootstrap(cp, node)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_changes_routing_and_the_proxy_is_ready_only_after_its_first_config() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    let mut events = cp.server.events();
    let proxy = start_proxy(cp.addr, "web-1").await;

    // Connected, nothing served yet: not ready.
    wait_event(&mut events, "the proxy's stream", |e| {
        matches!(e, ServerEvent::Connected { node_id } if node_id == "web-1").then_some(())
    })
    .await;
    assert_eq!(admin_get(&proxy, "/ready").await.0, 503);

    let t0 = Instant::now();
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    wait_xds(&proxy, "first config", full).await;
    let first = t0.elapsed();
    assert_eq!(admin_get(&proxy, "/ready").await.0, 200);
    let out = proxy
        .listener_addr("out")
        .expect("listener from xDS is bound");
    assert_eq!(get_upstream(out).await, "a");

    // Move the service to b: only the Endpoints resource changes.
    let t1 = Instant::now();
    cp.server.push(Snapshot::new(resources(&[b.addr])));
    let want = served_version(&cp.server, Kind::Endpoints, SERVICE);
    wait_xds(&proxy, "endpoints moved to b", |_| {
        running_version(&proxy, "Endpoints", SERVICE).as_deref() == Some(&*want)
    })
    .await;
    let push = t1.elapsed();
    println!(
        "xDS push -> applied: first config {:.2} ms, endpoint change {:.2} ms",
        first.as_secs_f64() * 1e3,
        push.as_secs_f64() * 1e3
    );
    assert_eq!(
        proxy.listener_addr("out"),
        Some(out),
        "the listener kept its socket"
    );
    assert_eq!(get_upstream(out).await, "b");
    assert_eq!(b.requests(), 1);

    // The server hears the ACK of the endpoints version the proxy runs.
    wait_event(&mut events, "ACK of the endpoints", |e| match e {
        ServerEvent::Stream {
            node_id,
            event: StreamEvent::Ack { type_url, .. },
        } if node_id == "web-1" && &**type_url == Kind::Endpoints.type_url() => Some(()),
        _ => None,
    })
    .await;

    // /config_dump shows the connection and the versions in force per kind and name.
    wait_xds(&proxy, "the stream in the status", |x| {
        x.status().is_some_and(|s| s.connected)
    })
    .await;
    let (status, dump) = admin_get(&proxy, "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let x = &dump["xds"];
    assert_eq!(x["connection"]["connected"], true, "{x}");
    assert_eq!(x["control_plane"]["identity"], CONTROL_ID);
    assert_eq!(x["versions"]["Endpoints"][SERVICE], want.as_str(), "{x}");
    assert_eq!(
        x["versions"]["Listener"]["out"],
        served_version(&cp.server, Kind::Listener, "out").as_str()
    );
    assert!(x["last_nack"].is_null(), "{x}");
    assert_eq!(dump["config"]["listeners"][0]["name"], "out");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_is_nacked_with_its_error_and_traffic_is_unaffected() {
    let a = HttpUpstream::start("a").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    let mut events = cp.server.events();
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let proxy = start_proxy(cp.addr, "web-2").await;
    wait_xds(&proxy, "first config", full).await;
    let out = proxy.listener_addr("out").unwrap();
    assert_eq!(get_upstream(out).await, "a");
    let good_digest = xds(&proxy).in_force().unwrap().digest.clone();
    let good_version = proxy.config_version();

    // 1. A listener naming a service that does not exist: refused by validation.
    let mut bad = resources(&[a.addr]);
    bad.push(
        encode(
            Kind::Listener,
            "typo",
            &listener("typo", "127.0.0.1:0", "nope"),
        )
        .unwrap(),
    );
    cp.server.push(Snapshot::new(bad));
    let error = wait_event(&mut events, "the NACK", |e| match e {
        ServerEvent::Stream {
            node_id,
            event: StreamEvent::Nack { error, .. },
        } if node_id == "web-2" => Some(error.clone()),
        _ => None,
    })
    .await;
    println!("NACK seen by the control plane: {error}");
    assert!(
        error.contains(r#"(xDS Listener "typo").service"#),
        "{error}"
    );
    assert!(error.contains("unknown service `nope`"), "{error}");
    let status = cp.server.status("web-2").unwrap();
    let listener_status = &status.types[Kind::Listener.type_url()];
    assert_eq!(listener_status.last_nack.as_ref().unwrap().1, error);

    // The old configuration is in force and serves.
    assert_eq!(get_upstream(out).await, "a");
    assert_eq!(xds(&proxy).in_force().unwrap().digest, good_digest);
    assert_eq!(proxy.config_version(), good_version);
    wait_xds(&proxy, "NACK recorded", |x| x.last_nack().is_some()).await;
    let dump: serde_json::Value =
        serde_json::from_str(&admin_get(&proxy, "/config_dump").await.1).unwrap();
    let nack = &dump["xds"]["last_nack"];
    assert_eq!(nack["error"], error.as_str(), "{dump}");
    assert!(nack["at_unix_ms"].as_u64().unwrap() > 0);
    let metrics = admin_get(&proxy, "/metrics").await.1;
    assert!(metrics.contains("jalin_xds_nacks_total"), "{metrics}");

    // 2. A listener on an address already taken: refused when binding, before any swap.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut bad = resources(&[a.addr]);
    bad.push(
        encode(
            Kind::Listener,
            "clash",
            &listener("clash", &taken_addr, SERVICE),
        )
        .unwrap(),
    );
    cp.server.push(Snapshot::new(bad));
    let error = wait_event(&mut events, "the bind NACK", |e| match e {
        ServerEvent::Stream {
            node_id,
            event: StreamEvent::Nack { error, .. },
        } if node_id == "web-2" => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(
        error.contains(&format!("cannot bind {taken_addr}")),
        "{error}"
    );
    assert_eq!(get_upstream(out).await, "a");
    assert_eq!(proxy.config_version(), good_version);
    assert!(proxy.listener_addr("clash").is_none());

    // 3. A fixed update is applied.
    let mut fixed = resources(&[a.addr]);
    fixed.push(
        encode(
            Kind::Listener,
            "second",
            &listener("second", "127.0.0.1:0", SERVICE),
        )
        .unwrap(),
    );
    cp.server.push(Snapshot::new(fixed));
    wait_xds(&proxy, "the fixed update", |x| {
        x.in_force()
            .is_some_and(|d| d.listeners.iter().any(|l| l.name == "second"))
    })
    .await;
    let second = proxy.listener_addr("second").unwrap();
    assert_eq!(get_upstream(second).await, "a");
    drop(taken);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_without_the_control_plane_and_the_proxy_resyncs_after_restart() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    let cp_addr = cp.addr;
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let proxy = start_proxy(cp_addr, "web-3").await;
    wait_xds(&proxy, "first config", full).await;
    let out = proxy.listener_addr("out").unwrap();
    let before = xds(&proxy).in_force().unwrap();

    cp.kill().await;
    wait_xds(&proxy, "the lost stream noticed", |x| {
        x.status().is_some_and(|s| !s.connected)
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get_upstream(out).await, "a", "serving on the last config");
    }
    assert!(
        xds(&proxy).is_ready(),
        "still ready on the last good config"
    );
    let dump: serde_json::Value =
        serde_json::from_str(&admin_get(&proxy, "/config_dump").await.1).unwrap();
    assert_eq!(dump["xds"]["connection"]["connected"], false);
    assert!(dump["xds"]["connection"]["last_disconnect"].is_string());
    assert_eq!(dump["xds"]["digest"], before.digest.as_str());

    // A new control-plane process on the same address, with a change.
    let server = XdsServer::default();
    server.push(Snapshot::new(resources(&[b.addr])));
    let mut events = server.events();
    let cp = ControlPlane::start(server, TcpListener::bind(cp_addr).await.unwrap()).await;
    let want = served_version(&cp.server, Kind::Endpoints, SERVICE);
    wait_xds(&proxy, "resync", |_| {
        running_version(&proxy, "Endpoints", SERVICE).as_deref() == Some(&*want)
    })
    .await;
    assert_eq!(get_upstream(out).await, "b");
    // The status feed is published by the client thread after the apply.
    wait_xds(&proxy, "the new stream in the status", |x| {
        x.status().is_some_and(|s| s.connected && s.streams >= 2)
    })
    .await;
    // The proxy announced what it runs, so only the changed resource was sent again (every
    // other type's first subscription is answered empty: the client's initial fetch).
    let resent = wait_event(&mut events, "the resync push", |e| match e {
        ServerEvent::Pushed {
            node_id,
            type_url,
            resources,
            removed,
            ..
        } if node_id == "web-3" && resources + removed > 0 => {
            Some((type_url.to_string(), *resources))
        }
        _ => None,
    })
    .await;
    assert_eq!(resent, (Kind::Endpoints.type_url().to_owned(), 1));

    // And a later change applies as usual.
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let want = served_version(&cp.server, Kind::Endpoints, SERVICE);
    wait_xds(&proxy, "a change after the restart", |_| {
        running_version(&proxy, "Endpoints", SERVICE).as_deref() == Some(&*want)
    })
    .await;
    assert_eq!(get_upstream(out).await, "a");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_receives_the_full_state() {
    let a = HttpUpstream::start("a").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let mut events = cp.server.events();

    let first = start_proxy(cp.addr, "web-4").await;
    wait_xds(&first, "first proxy's config", full).await;
    let expected = xds(&first).in_force().unwrap();
    first.shutdown(Duration::from_secs(5)).await;
    wait_event(&mut events, "the first proxy's stream to end", |e| {
        matches!(e, ServerEvent::Disconnected { node_id } if node_id == "web-4").then_some(())
    })
    .await;

    let second = start_proxy(cp.addr, "web-4").await;
    wait_xds(&second, "restarted proxy's config", full).await;
    let got = xds(&second).in_force().unwrap();
    assert_eq!(got.versions, expected.versions);
    assert_eq!(got.resources(), 3);
    assert_eq!(
        get_upstream(second.listener_addr("out").unwrap()).await,
        "a"
    );
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_under_load_lose_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let proxy = start_proxy(cp.addr, "web-5").await;
    wait_xds(&proxy, "first config", full).await;
    let out = proxy.listener_addr("out").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let (progress_tx, progress) = tokio::sync::watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, failures, progress_tx) = (stop.clone(), failures.clone(), progress_tx.clone());
        clients.push(tokio::spawn(async move {
            let c = if i % 2 == 0 {
                client::http1_client()
            } else {
                client::h2_client()
            };
            while !stop.load(Ordering::Relaxed) {
                match client::get(&c, out, "/headers").await {
                    Ok((200, _, _)) => progress_tx.send_modify(|n| *n += 1),
                    other => {
                        eprintln!("request failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let mut times = Vec::new();
    for round in 0..20 {
        let target = if round % 2 == 0 { b.addr } else { a.addr };
        // Let some requests run on the current config before each push.
        let mut seen = progress.clone();
        let at = *seen.borrow_and_update();
        tokio::time::timeout(WAIT, seen.wait_for(|n| *n >= at + 10))
            .await
            .unwrap()
            .unwrap();
        let t = Instant::now();
        cp.server.push(Snapshot::new(resources(&[target])));
        let want = served_version(&cp.server, Kind::Endpoints, SERVICE);
        wait_xds(&proxy, "the push", |_| {
            running_version(&proxy, "Endpoints", SERVICE).as_deref() == Some(&*want)
        })
        .await;
        times.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    times.sort();
    println!(
        "20 pushes under load: push -> applied p50 {:.2} ms, max {:.2} ms; {} requests, {} failed",
        times[10].as_secs_f64() * 1e3,
        times[19].as_secs_f64() * 1e3,
        *progress.borrow(),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request lost to a push"
    );
    assert!(a.requests() > 0 && b.requests() > 0);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_reload_keeps_the_dynamic_part_and_the_control_plane_cannot_change() {
    let a = HttpUpstream::start("a").await.unwrap();
    let local = HttpUpstream::start("local").await.unwrap();
    let cp = ControlPlane::local(XdsServer::default()).await;
    cp.server.push(Snapshot::new(resources(&[a.addr])));
    let boot = bootstrap(cp.addr, "web-6");
    let proxy = jalin_tests::proxy::TestProxy::start(&boot).await.unwrap();
    wait_xds(&proxy.handle, "first config", full).await;

    // A static listener and service added to the bootstrap file: merged with the xDS part.
    let with_static = format!(
        "{boot}listeners:\n  - name: local\n    address: 127.0.0.1:0\n    direction: inbound\n    \
         service: local-app\nservices:\n  - name: local-app\n    endpoints:\n      - address: {}\n",
        local.addr
    );
    let event = proxy.rewrite(&with_static).await.unwrap();
    assert!(event.result.is_ok(), "{event:?}");
    assert_eq!(get_upstream(proxy.addr("local")).await, "local");
    assert_eq!(
        get_upstream(proxy.addr("out")).await,
        "a",
        "xDS listener kept"
    );

    // Another control plane (or node) in the file is refused; everything keeps serving.
    let moved = with_static.replace("id: web-6", "id: web-7");
    let event = proxy.rewrite(&moved).await.unwrap();
    let err = event.result.unwrap_err();
    assert_eq!(err.path, "control_plane", "{err}");
    assert_eq!(get_upstream(proxy.addr("out")).await, "a");
    assert_eq!(get_upstream(proxy.addr("local")).await, "local");
    proxy.handle.shutdown(Duration::from_secs(5)).await;
}
