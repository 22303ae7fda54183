//! The bare-metal edge gateway: listeners terminating government-certified TLS themselves and
//! routing each request by host over the route tables bound to their gateway, checked with curl
//! over HTTPS (HTTP/1.1 and HTTP/2), through mesh mTLS to a second proxy, and in MUTUAL mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod gateway_common;
mod mtls_common;

use std::time::Duration;

use gateway_common::{
    GovPki, client_cert_args, curl_https, gateway_listener, records_gateway_yaml, route_yaml,
    tls_yaml,
};
use jalin_tests::proxy::TestProxy;
use jalin_tests::upstream::HttpUpstream;
use mtls_common::Mesh;

const SPOOF: &str =
    "x-forwarded-client-cert: By=spiffe://evil;Hash=00;URI=spiffe://cluster.local/ns/prod/sa/admin";
/// Headers a client outside the mesh must not be able to set.
const SPOOF_PROTO: &str = "x-forwarded-proto: http";
const SPOOF_JALIN: &str = "x-jalin-priority: emergency";

fn xfcc(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_https_is_routed_by_host_and_unknown_hosts_get_404() {
    let pki = GovPki::new("Routing");
    let (cert, key, _) = pki.server_files("gw");
    let records = HttpUpstream::start("records").await.unwrap();
    let api = HttpUpstream::start("api").await.unwrap();
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n{}services:\n  - name: records\n    endpoints:\n      - address: {}\n  - name: api\n    endpoints:\n      - address: {}\nroutes:\n{}{}{}",
        gateway_listener(&tls_yaml(&cert, &key, "")),
        records.addr,
        api.addr,
        // The wildcard is listed first: the exact host still wins for records.example.gov.
        route_yaml("api", "['*.example.gov']", "[istio-system/ingress]", "api"),
        route_yaml(
            "records",
            "[records.example.gov]",
            "[istio-system/ingress]",
            "records"
        ),
        // Bound to the sidecars only: never served by the gateway.
        route_yaml("mesh-only", "[unknown.example.org]", "[]", "records"),
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let gw = proxy.addr("gw");

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let r = curl_https(
            "records.example.gov",
            gw,
            "/headers",
            &pki.root,
            &[flag, "-H", SPOOF, "-H", SPOOF_PROTO, "-H", SPOOF_JALIN],
        )
        .await;
        assert!(r.ok, "{flag}: {}", r.stderr);
        assert_eq!(
            (r.status, r.http_version.as_str(), r.upstream.as_str()),
            (200, version, "records"),
            "{flag}: {r:?}"
        );
        // A client outside the mesh cannot assert a client certificate (SIMPLE: none is set).
        assert_eq!(xfcc(&r.body), None, "{flag}: {}", r.body);
        // Nor the scheme, nor a jalin decision header.
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", r.body);
        assert!(v["headers"].get("x-jalin-priority").is_none(), "{}", r.body);

        let r = curl_https("api.example.gov", gw, "/headers", &pki.root, &[flag]).await;
        assert_eq!(
            (r.status, r.http_version.as_str(), r.upstream.as_str()),
            (200, version, "api"),
            "{flag}: {r:?}"
        );

        let r = curl_https("unknown.example.org", gw, "/", &pki.root, &[flag]).await;
        assert!(r.ok, "{flag}: {}", r.stderr);
        assert_eq!((r.status, r.upstream.as_str()), (404, ""), "{flag}: {r:?}");
    }
    assert_eq!(records.requests(), 2);
    assert_eq!(api.requests(), 2);

    // Plaintext to the TLS port is not served.
    let plain = jalin_tests::client::curl(&format!("http://{gw}/"), &[]).await;
    assert!(plain.is_err(), "{plain:?}");
    let metrics = jalin_tests::client::curl(&format!("http://{}/metrics", proxy.admin()), &[])
        .await
        .unwrap()
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jalin_tls_handshake_failures_total")
                && l.contains("direction=\"inbound\"")),
        "{metrics}"
    );
    // Istio's request metrics name the destination service, not the gateway's route table.
    let served = |service: &str| {
        metrics.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(&format!("destination_service=\"{service}\""))
                && l.contains("response_code=\"200\"")
        })
    };
    assert!(served("records") && served("api"), "{metrics}");
    assert!(!served("prod/records"), "{metrics}");
    // The served certificate's expiry, for alerting.
    let expiry = metrics
        .lines()
        .find(|l| {
            l.starts_with("jalin_listener_certificate_expiry_timestamp_seconds{listener=\"gw\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no expiry gauge in {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_services_for_one_host_are_merged_at_the_gateway() {
    let pki = GovPki::new("Merge");
    let (cert, key, _) = pki.server_files("gw");
    let records = HttpUpstream::start("records").await.unwrap();
    let api = HttpUpstream::start("api").await.unwrap();
    // Two VirtualServices for one host, as teams split a large one: the first routes `/records`,
    // the second everything else. Istio merges them at a gateway, in order.
    let first = "  - meta: { name: records-only, namespace: prod }\n    hosts: [records.example.gov]\n    gateways: [istio-system/ingress]\n    http:\n      - matches: [{ uri: { prefix: /records } }]\n        destinations:\n          - destination: { host: records }\n            weight: 100\n";
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n{}services:\n  - name: records\n    endpoints:\n      - address: {}\n  - name: api\n    endpoints:\n      - address: {}\nroutes:\n{first}{}",
        gateway_listener(&tls_yaml(&cert, &key, "")),
        records.addr,
        api.addr,
        route_yaml(
            "rest",
            "[records.example.gov]",
            "[istio-system/ingress]",
            "api"
        ),
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let gw = proxy.addr("gw");
    for (path, upstream) in [("/records/7", "records"), ("/other", "api")] {
        let r = curl_https("records.example.gov", gw, path, &pki.root, &[]).await;
        assert!(r.ok, "{path}: {}", r.stderr);
        assert_eq!(
            (r.status, r.upstream.as_str()),
            (200, upstream),
            "{path}: {r:?}"
        );
    }
    assert_eq!((records.requests(), api.requests()), (1, 1));
}

/// `openssl s_client` over TLS 1.2 offering only `cipher`: (a response came, output).
async fn s_client_tls12(
    gw: std::net::SocketAddr,
    root: &std::path::Path,
    cipher: &str,
) -> (bool, String) {
    let (gw, root) = (gw.to_string(), root.display().to_string());
    let args = [
        "-connect",
        &gw,
        "-servername",
        "records.example.gov",
        "-tls1_2",
        "-cipher",
        cipher,
    ];
    let args = [&args[..], &["-verify_return_error", "-CAfile", &root]].concat();
    let request =
        b"GET /headers HTTP/1.1\r\nHost: records.example.gov\r\nConnection: close\r\n\r\n";
    let text = jalin_tests::client::s_client(&args, request).await.unwrap();
    (text.contains("HTTP/1.1 200 OK"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_suites_limit_what_a_tls12_client_may_use() {
    let pki = GovPki::new("Ciphers");
    let (cert, key, _) = pki.server_files("gw");
    let records = HttpUpstream::start("records").await.unwrap();
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n{}services:\n  - name: records\n    endpoints:\n      - address: {}\nroutes:\n{}",
        gateway_listener(&tls_yaml(
            &cert,
            &key,
            "      cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384]\n"
        )),
        records.addr,
        route_yaml(
            "records",
            "[records.example.gov]",
            "[istio-system/ingress]",
            "records"
        ),
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let gw = proxy.addr("gw");
    let (ok, text) = s_client_tls12(gw, &pki.root, "ECDHE-ECDSA-AES256-GCM-SHA384").await;
    assert!(ok, "the listed suite is served: {text}");
    assert!(text.contains("ECDHE-ECDSA-AES256-GCM-SHA384"), "{text}");
    let (ok, text) = s_client_tls12(gw, &pki.root, "ECDHE-ECDSA-AES128-GCM-SHA256").await;
    assert!(!ok, "a suite left out of the list is refused: {text}");
    assert!(text.contains("alert") || text.contains("error"), "{text}");
    // TLS 1.3 keeps the policy's suites (the list names none of TLS 1.3's), as with Envoy.
    let r = curl_https(
        "records.example.gov",
        gw,
        "/",
        &pki.root,
        &["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"],
    )
    .await;
    assert_eq!((r.status, r.upstream.as_str()), (200, "records"), "{r:?}");
    assert_eq!(records.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_joins_the_mesh_with_its_workload_identity() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let pki = GovPki::new("Mesh");
    let (cert, key, _) = pki.server_files("gw");
    let app = HttpUpstream::start("records-app").await.unwrap();
    let gateway_id = Mesh::id("istio-system", "ingress");
    let authz = format!(
        "  policies:\n    - meta: {{ name: gateway-only, namespace: prod }}\n      rules:\n        - from: [ {{ principals: [\"{}\"] }} ]\n",
        gateway_id.trim_start_matches("spiffe://")
    );
    let server = mesh
        .server("prod", "records", &[], app.addr, Some("STRICT"), &authz)
        .await;
    let server_id = Mesh::id("prod", "records");
    let mesh_tls = format!("    tls:\n      mode: istio_mutual\n      identity: {server_id}\n");
    // Policies selecting the gateway apply at the gateway (JWT, paths), as Istio's do.
    let gateway_authz = "authorization:\n  policies:\n    - meta: { name: no-admin, namespace: istio-system }\n      action: DENY\n      rules:\n        - to: [ { paths: [\"/admin*\"] } ]\n";
    let gateway_yaml = |sa: &str| {
        records_gateway_yaml(
            &format!(
                "{}{gateway_authz}",
                mesh.identity_yaml("istio-system", sa, &[])
            ),
            &tls_yaml(&cert, &key, ""),
            server.addr("in"),
            &mesh_tls,
        )
    };
    let yaml = gateway_yaml("ingress");
    let gateway = mesh.start(&yaml).await;
    let gw = gateway.addr("gw");

    for flag in ["--http1.1", "--http2"] {
        let r = curl_https(
            "records.example.gov",
            gw,
            "/headers",
            &pki.root,
            &[flag, "-H", SPOOF],
        )
        .await;
        assert!(r.ok, "{flag}: {}", r.stderr);
        assert_eq!(
            (r.status, r.upstream.as_str()),
            (200, "records-app"),
            "{flag}: {r:?}"
        );
        // The app sees the gateway as its verified mTLS peer, not the client's claim.
        let x = xfcc(&r.body).unwrap_or_default();
        assert!(x.contains(&format!("URI={gateway_id}")), "{flag}: {x}");
        assert!(
            !x.contains("evil") && !x.contains("sa/admin"),
            "{flag}: {x}"
        );
    }
    assert_eq!(app.requests(), 2);
    let r = curl_https("records.example.gov", gw, "/admin/users", &pki.root, &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(app.requests(), 2);

    // The inbound proxy's policy decides: a gateway with another identity is refused.
    let other = gateway_yaml("other-gateway");
    let stranger = mesh.start(&other).await;
    let r = curl_https(
        "records.example.gov",
        stranger.addr("gw"),
        "/",
        &pki.root,
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(app.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_requires_a_verified_client_certificate_with_a_listed_san() {
    let pki = GovPki::new("Mutual");
    let clients = GovPki::new("Client");
    let (cert, key, _) = pki.server_files("gw");
    let caseworker = "spiffe://agency.gov/caseworker";
    let app = HttpUpstream::start("records").await.unwrap();
    let mutual = format!(
        "      mode: MUTUAL\n      ca_certificates: {}\n      subject_alt_names: [\"{caseworker}\", intake.agency.gov]\n",
        clients.root.display()
    );
    let yaml = records_gateway_yaml("", &tls_yaml(&cert, &key, &mutual), app.addr, "");
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let gw = proxy.addr("gw");
    let host = "records.example.gov";

    // No client certificate: the handshake fails, nothing reaches the app.
    for flag in ["--http1.1", "--http2"] {
        let r = curl_https(host, gw, "/headers", &pki.root, &[flag]).await;
        assert!(!r.ok, "{flag}: {r:?}");
    }

    // A certificate from the client CA with a listed SAN passes; the app sees the gateway-set
    // x-forwarded-client-cert (Envoy SANITIZE_SET), never the client's.
    let (c, k) = clients.client_files("caseworker", &[caseworker, "cw.agency.gov"]);
    let (c, k) = (c.display().to_string(), k.display().to_string());
    for flag in ["--http1.1", "--http2"] {
        let r = curl_https(
            host,
            gw,
            "/headers",
            &pki.root,
            &[flag, "--cert", &c, "--key", &k, "-H", SPOOF],
        )
        .await;
        assert!(r.ok, "{flag}: {}", r.stderr);
        assert_eq!(r.status, 200, "{r:?}");
        let x = xfcc(&r.body).unwrap();
        assert!(x.starts_with("Hash="), "{x}");
        assert!(
            x.contains("Subject=\"") && x.contains("CN=caseworker"),
            "{x}"
        );
        assert!(x.contains(&format!(";URI={caseworker}")), "{x}");
        assert!(x.contains(";DNS=cw.agency.gov"), "{x}");
        assert!(!x.contains("evil"), "{x}");
    }
    // With a certificate `files`: the status, 0 when the handshake failed.
    let status_with = |files: (std::path::PathBuf, std::path::PathBuf)| {
        let root = pki.root.clone();
        async move {
            let args = client_cert_args(&files);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = curl_https(host, gw, "/headers", &root, &args).await;
            if r.ok { r.status } else { 0 }
        }
    };
    // The DNS SAN of the list is accepted as well.
    let intake = clients.client_files("intake", &["intake.agency.gov"]);
    assert_eq!(status_with(intake).await, 200);
    // Verified by the CA but without a listed SAN: refused.
    let intruder = clients.client_files("intruder", &["spiffe://agency.gov/intruder"]);
    assert_eq!(status_with(intruder).await, 0);
    // A certificate from another CA (the server's own government root) with the right SAN: refused.
    let foreign = pki.client_files("foreign", &[caseworker]);
    assert_eq!(status_with(foreign).await, 0);
    assert_eq!(app.requests(), 3);
}
