//! End to end over real processes, real sockets and real mTLS: `jalin control` watching a
//! directory of Istio YAML, a server-side `jalin-proxy` (STRICT mTLS inbound in front of an
//! HTTP upstream) and a client-side `jalin-proxy` (an outbound listener naming the server's
//! cluster, mesh mTLS origination, the VirtualService's route). Editing the AuthorizationPolicy
//! file flips the answer 200 -> 403 -> 200 (the time from the write to the first changed
//! answer is printed); an invalid edit is rejected with its reason and traffic is unaffected;
//! with the control plane killed traffic continues, and an edit made meanwhile applies after the
//! restart; a restarted proxy gets the full state and enforces the policy as soon as it serves.
//! An Istio Gateway and a VirtualService bound to it, from the same directory, become a gateway
//! proxy (`jalin gateway bootstrap`) that curl reaches over HTTPS with the agency's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod xds_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use xds_support::*;

const ECHO: &str = "echo.prod.svc.cluster.local";
const CLUSTER: &str = "outbound|80||echo.prod.svc.cluster.local";
const POLICY: &str = "prod/allow-web";
/// The control plane's identity (its certificate from the mesh CA).
const CONTROL_ID: &str = "spiffe://cluster.local/ns/jalin-system/sa/jalin-ca";
const CONTROL_NAME: &str = "jalin.istio-system.svc.cluster.local";
const CLIENT_PRINCIPAL: &str = "cluster.local/ns/web/sa/web";

/// Writes a file atomically (temporary name, rename), as editors and config tools do.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The echo workload's policy: ALLOW from `principal` only.
fn policy(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-web\n  namespace: prod\nspec:\n  selector:\n    matchLabels:\n      app: echo\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{principal}\"]\n"
    )
}

/// The echo service: one workload (the server proxy's inbound port) with its service account.
fn service_entry(inbound: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: echo\n  namespace: prod\nspec:\n  hosts: [\"{ECHO}\"]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  endpoints:\n  - address: {ip}\n    ports:\n      http: {port}\n    serviceAccount: echo\n    labels:\n      app: echo\n",
        ip = inbound.ip(),
        port = inbound.port()
    )
}

/// A VirtualService for `echo` (short name, no port): the proxy resolves it to the cluster.
const VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: prod\nspec:\n  hosts: [echo]\n  http:\n  - name: to-echo\n    route:\n    - destination:\n        host: echo\n    headers:\n      response:\n        set:\n          x-routed-by: prod-echo\n";

struct Control {
    process: Process,
    xds: SocketAddr,
    health: SocketAddr,
}

async fn start_control(dir: &Path, ca: &Path, xds: SocketAddr) -> Control {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jalin"));
    cmd.arg("control")
        .arg("--config-dir")
        .arg(dir)
        .arg("--ca-dir")
        .arg(ca)
        .arg("--xds-listen")
        .arg(xds.to_string())
        .args([
            "--ca-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ]);
    let process = Process::spawn("control", cmd);
    let started = process.line("control plane started").await;
    process.line("configuration pushed").await;
    let xds = field(&started, "xds_addr").unwrap().parse().unwrap();
    let health = field(&started, "health_addr").unwrap().parse().unwrap();
    Control {
        process,
        xds,
        health,
    }
}

struct Workload<'a> {
    name: &'a str,
    ns: &'a str,
    sa: &'a str,
    app: &'a str,
}

/// The echo workload's first proxy.
const ECHO_1: Workload<'static> = Workload {
    name: "echo-1",
    ns: "prod",
    sa: "echo",
    app: "echo",
};

/// The echo proxy's listeners: STRICT mTLS inbound on `port` in front of `upstream`.
fn echo_listeners(port: u16, upstream: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: inbound\n    address: 127.0.0.1:{port}\n    direction: inbound\n    service: local\n    protocol: http1\n    mtls: STRICT\nservices:\n  - name: local\n    endpoints:\n      - address: {upstream}\n"
    )
}

struct Proxy {
    process: Process,
    admin: SocketAddr,
    /// Listener name -> bound address.
    listener: SocketAddr,
}

fn bootstrap(
    w: &Workload<'_>,
    ca: &Path,
    certs: &(PathBuf, PathBuf),
    xds: SocketAddr,
    listeners_and_services: &str,
) -> String {
    let (cert, key) = (certs.0.display(), certs.1.display());
    let root = ca.join("root.pem");
    let root = root.display();
    format!(
        "admin:\n  address: 127.0.0.1:0\nidentity:\n  trust_domain: cluster.local\n  namespace: {ns}\n  service_account: {sa}\n  labels: {{ app: {app} }}\n  trust_bundles: [{root}]\n  certificate:\n    files: {{ cert: {cert}, key: {key} }}\ncontrol_plane:\n  address: {xds}\n  identity: {CONTROL_ID}\n  backoff_base_ms: 20\n  backoff_max_ms: 200\n  tls:\n    ca: {root}\n    certificate: {cert}\n    key: {key}\n    server_name: {CONTROL_NAME}\n  node:\n    id: {name}\n    namespace: {ns}\n    service_account: {sa}\n    labels: {{ app: {app} }}\n{listeners_and_services}",
        ns = w.ns,
        sa = w.sa,
        app = w.app,
        name = w.name,
    )
}

async fn start_proxy(bin: &Path, dir: &Path, name: &str, yaml: &str, listener: &str) -> Proxy {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&file);
    let process = Process::spawn(name, cmd);
    let started = process.line("jalin-proxy started").await;
    let admin: SocketAddr = field(&started, "admin").unwrap().parse().unwrap();
    let bound = process.line(&format!("listener={listener}")).await;
    let listener = field(&bound, "address").unwrap().parse().unwrap();
    until(&format!("{name} ready"), || async move {
        get(admin, "localhost", "/ready")
            .await
            .filter(|a| a.status == 200)
    })
    .await;
    Proxy {
        process,
        admin,
        listener,
    }
}

/// The xDS versions in force at a proxy (`/config_dump`).
async fn versions(admin: SocketAddr) -> serde_json::Value {
    json(admin, "/config_dump").await.unwrap()["xds"]["versions"].clone()
}

async fn policy_version(admin: SocketAddr) -> Option<String> {
    versions(admin).await["AuthorizationPolicy"][POLICY]
        .as_str()
        .map(str::to_owned)
}

/// Requests through the client proxy until the answer's status is `want`; returns it.
async fn until_status(client: SocketAddr, want: u16, what: &str) -> Answer {
    until(what, || async move {
        get(client, ECHO, "/").await.filter(|a| a.status == want)
    })
    .await
}

/// A development mesh CA under `root/ca` (`jalin ca init-dev`).
fn init_ca(root: &Path) -> PathBuf {
    let ca = root.join("ca");
    jalin(&[
        "ca",
        "init-dev",
        "--out-dir",
        &ca.display().to_string(),
        "--trust-domain",
        "cluster.local",
    ]);
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_reach_running_proxies_and_survive_restarts() {
    let bin = proxy_binary();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ca = init_ca(root);
    let dir = root.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "policy.yaml", &policy(CLIENT_PRINCIPAL));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let control = start_control(&dir, &ca, any).await;

    // The server side: STRICT mTLS in front of the upstream, policies from the control plane.
    let upstream = Upstream::start().await;
    let echo_certs = issue(&ca, root, "prod", "echo");
    let server_listeners = |port: u16| echo_listeners(port, upstream.addr);
    let server_yaml = bootstrap(&ECHO_1, &ca, &echo_certs, control.xds, &server_listeners(0));
    let server = start_proxy(&bin, root, "echo-1", &server_yaml, "inbound").await;
    assert!(policy_version(server.admin).await.is_some());

    // The service, pointing at the server proxy's inbound port, and its route, in one write (a
    // route to a service the proxy was not sent is refused whole by the proxy).
    let service = service_entry(server.listener);
    write(
        &dir,
        "service.yaml",
        &format!("{service}---\n{VIRTUAL_SERVICE}"),
    );

    // The client side: an outbound listener naming the control plane's cluster.
    let web = Workload {
        name: "web-1",
        ns: "web",
        sa: "web",
        app: "web",
    };
    let web_certs = issue(&ca, root, "web", "web");
    let client_listeners = format!(
        "listeners:\n  - name: out\n    address: 127.0.0.1:0\n    direction: outbound\n    service: \"{CLUSTER}\"\n    protocol: http1\n"
    );
    let client_yaml = bootstrap(&web, &ca, &web_certs, control.xds, &client_listeners);
    let client = start_proxy(&bin, root, "web-1", &client_yaml, "out").await;
    let out = client.listener;

    // Allowed: through the route (its response header), over mTLS, to the upstream.
    let ok = until_status(out, 200, "the first 200 through both proxies").await;
    assert_eq!(ok.body, "ok\n");
    assert!(ok.head.contains("x-routed-by: prod-echo"), "{}", ok.head);

    // 1. An edit denies the client: 403 at the server proxy; the time is printed, not asserted.
    let written = Instant::now();
    write(&dir, "policy.yaml", &policy("cluster.local/ns/other/sa/x"));
    let denied = until_status(out, 403, "403 after the policy edit").await;
    println!(
        "policy edit (deny): file written -> first changed answer in {:?}",
        written.elapsed()
    );
    assert!(denied.body.contains("RBAC: access denied"), "{denied:?}");
    let written = Instant::now();
    write(&dir, "policy.yaml", &policy(CLIENT_PRINCIPAL));
    until_status(out, 200, "200 after the edit back").await;
    println!(
        "policy edit (allow): file written -> first changed answer in {:?}",
        written.elapsed()
    );
    let good = policy_version(server.admin).await.unwrap();

    // 2. An invalid edit is rejected by the control plane, with its reason; traffic as before.
    let broken = policy(CLIENT_PRINCIPAL).replace("action: ALLOW", "action: PERMIT_ALL");
    write(&dir, "policy.yaml", &broken);
    let debug = until("the rejection at /debug/config", || async {
        json(control.health, "/debug/config")
            .await
            .filter(|d| d["rejected_total"].as_u64() >= Some(1))
    })
    .await;
    let reasons = debug["rejected"][0]["reasons"].to_string();
    assert!(reasons.contains("policy.yaml"), "{reasons}");
    assert!(reasons.contains("spec.action"), "{reasons}");
    for _ in 0..5 {
        assert_eq!(get(out, ECHO, "/").await.unwrap().status, 200);
    }
    assert_eq!(policy_version(server.admin).await.unwrap(), good);
    write(&dir, "policy.yaml", &policy(CLIENT_PRINCIPAL));

    // 3. The control plane is killed: traffic continues on the last configuration.
    let xds = control.xds;
    let health = control.health;
    control.process.kill();
    for p in [&server, &client] {
        until("the proxy notices the control plane is gone", || async {
            json(p.admin, "/config_dump")
                .await
                .filter(|d| d["xds"]["connection"]["connected"] == false)
        })
        .await;
    }
    assert!(get(health, "localhost", "/ready").await.is_none());
    for _ in 0..5 {
        assert_eq!(get(out, ECHO, "/").await.unwrap().status, 200);
    }
    // An edit while it is down takes effect once it is back (same address): the proxies
    // reconnect and resync.
    write(&dir, "policy.yaml", &policy("cluster.local/ns/other/sa/x"));
    assert_eq!(get(out, ECHO, "/").await.unwrap().status, 200);
    let restarted = Instant::now();
    let control = start_control(&dir, &ca, xds).await;
    until_status(out, 403, "403 after the control plane restart").await;
    println!(
        "control plane restart -> edited policy enforced in {:?}",
        restarted.elapsed()
    );

    // 4. A restarted proxy receives the full state and enforces the policy as soon as it
    // serves: its listener is bound only with the configuration in force.
    let before = versions(server.admin).await;
    let port = server.listener.port();
    server.process.kill();
    let server_yaml = bootstrap(
        &ECHO_1,
        &ca,
        &echo_certs,
        control.xds,
        &server_listeners(port),
    );
    let server = start_proxy(&bin, root, "echo-2", &server_yaml, "inbound").await;
    assert_eq!(versions(server.admin).await, before);
    // Until it serves, the client answers 5xx; never 200: the policy is in force from the start.
    let first = until("an answer from the restarted server proxy", || async {
        get(out, ECHO, "/").await.filter(|a| a.status < 500)
    })
    .await;
    assert_eq!(first.status, 403, "{first:?}");
    assert!(first.body.contains("RBAC: access denied"), "{first:?}");

    drop(client);
    drop(server);
    drop(control);
}

/// The agency's TLS certificate for `api.gov.example`, from a root that is not the mesh's.
/// Returns (root, chain, key) paths.
fn agency_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer equals its subject would look self-signed to curl.
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "Agency Root CA");
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["api.gov.example".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "api.gov.example");
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("agency-root.pem"),
        dir.join("agency-cert.pem"),
        dir.join("agency-key.pem"),
    );
    std::fs::write(&paths.0, root_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `curl https://<host>:<port>/` resolved to `addr`, trusting `root`, with `Host: <header>`:
/// (status, headers and body).
async fn curl_https(addr: SocketAddr, host: &str, header: &str, root: &Path) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-i", "-w", "\n%{http_code}"])
        .args(["-H", &format!("host: {header}")])
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), answer.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_gateway_serves_https_into_the_mesh() {
    let bin = proxy_binary();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ca = init_ca(root);
    let (agency_root, agency_cert, agency_key) = agency_certificate(root);
    let dir = root.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    // An Istio Gateway terminating the agency's certificate, and the echo workload's policy
    // allowing only the gateway's mesh identity.
    write(
        &dir,
        "gateway.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: ingress\n  namespace: edge\nspec:\n  selector:\n    istio: ingress\n  servers:\n  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [api.gov.example]\n    tls:\n      mode: SIMPLE\n      serverCertificate: {}\n      privateKey: {}\n",
            agency_cert.display(),
            agency_key.display()
        ),
    );
    write(
        &dir,
        "policy.yaml",
        &policy("cluster.local/ns/edge/sa/ingress"),
    );
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let control = start_control(&dir, &ca, any).await;

    // The echo workload: STRICT mTLS in front of the upstream.
    let upstream = Upstream::start().await;
    let echo_certs = issue(&ca, root, "prod", "echo");
    let server_yaml = bootstrap(
        &ECHO_1,
        &ca,
        &echo_certs,
        control.xds,
        &echo_listeners(0, upstream.addr),
    );
    let server = start_proxy(&bin, root, "echo-1", &server_yaml, "inbound").await;
    // The service, and a VirtualService bound to the Gateway only.
    write(
        &dir,
        "service.yaml",
        &format!(
            "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: edge\nspec:\n  hosts: [api.gov.example]\n  gateways: [ingress]\n  http:\n  - route:\n    - destination:\n        host: {ECHO}\n    headers:\n      response:\n        set:\n          x-routed-by: edge-api\n",
            service_entry(server.listener)
        ),
    );

    // The gateway's proxy, rendered from the same Istio YAML by `jalin gateway bootstrap`.
    let (cert, key) = issue(&ca, root, "edge", "ingress");
    let s = |p: &Path| p.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(["gateway", "bootstrap", "--gateway", "edge/ingress", "-f"])
        .arg(&dir)
        .args(["--control-plane", &control.xds.to_string()])
        .args(["--cert", &s(&cert), "--key", &s(&key)])
        .args(["--trust-bundle", &s(&ca.join("root.pem"))])
        .args(["--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // On this machine the listener takes a free port instead of the Gateway's 8443.
    let yaml = String::from_utf8(out.stdout)
        .unwrap()
        .replace("0.0.0.0:8443", "127.0.0.1:0");
    let gateway = start_proxy(&bin, root, "gateway", &yaml, "https-8443").await;

    // curl, as a client outside the mesh: HTTPS with the agency's certificate, routed by the
    // Gateway's VirtualService, over mesh mTLS to the echo workload, whose policy allows it.
    let (status, answer) = until("200 through the gateway", || async {
        let (status, answer) = curl_https(
            gateway.listener,
            "api.gov.example",
            "api.gov.example",
            &agency_root,
        )
        .await;
        (status == 200).then_some((status, answer))
    })
    .await;
    assert_eq!(status, 200);
    assert!(answer.contains("x-routed-by: edge-api"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // A host no VirtualService binds to the gateway: 404.
    let (status, answer) = curl_https(
        gateway.listener,
        "api.gov.example",
        "other.gov.example",
        &agency_root,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    // The echo workload's policy decides on the gateway's mesh identity.
    write(&dir, "policy.yaml", &policy("cluster.local/ns/other/sa/x"));
    until(
        "403 once the policy no longer names the gateway",
        || async {
            let (status, _) = curl_https(
                gateway.listener,
                "api.gov.example",
                "api.gov.example",
                &agency_root,
            )
            .await;
            (status == 403).then_some(())
        },
    )
    .await;

    drop(gateway);
    drop(server);
    drop(control);
}
