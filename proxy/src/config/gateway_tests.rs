//! Tests of gateway and listener-TLS validation: each error names file, line, field and fix.

use rcgen::{CertificateParams, KeyPair};

use crate::config::{ConfigError, parse};

struct Files {
    _dir: tempfile::TempDir,
    cert: String,
    key: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["gw.example.gov".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let c = dir.path().join("gw.pem");
    let k = dir.path().join("gw.key");
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    Files {
        cert: c.display().to_string(),
        key: k.display().to_string(),
        _dir: dir,
    }
}

/// A file with one listener whose extra lines are `listener` (indented under it).
fn yaml(listener: &str) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: gw\n    address: 127.0.0.1:0\n{listener}services:\n  - name: app\n    endpoints:\n      - address: 127.0.0.1:9\n"
    )
}

fn tls(f: &Files, extra: &str) -> String {
    format!(
        "    tls:\n      certificate_chain: {}\n      private_key: {}\n{extra}",
        f.cert, f.key
    )
}

fn error(text: &str) -> ConfigError {
    parse("gw.yaml", text).unwrap_err()
}

#[test]
fn a_gateway_listener_with_simple_tls_and_http3_is_valid() {
    let f = files();
    let text = yaml(&format!(
        "    direction: outbound\n    gateway: istio-system/ingress\n    http3: true\n{}",
        tls(&f, "      min_protocol_version: TLSV1_3\n")
    ));
    let (config, _) = parse("gw.yaml", &text).unwrap();
    assert_eq!(
        config.listeners[0].gateway.as_deref(),
        Some("istio-system/ingress")
    );
}

#[test]
fn gateway_and_service_are_exclusive() {
    let e = error(&yaml(
        "    direction: outbound\n    service: app\n    gateway: istio-system/ingress\n",
    ));
    assert_eq!(e.path, "listeners[0].gateway");
    assert_eq!(e.line, 4);
    assert!(e.hint.contains("remove"), "{e}");
}

#[test]
fn a_gateway_is_namespace_slash_name_and_outbound() {
    let e = error(&yaml("    direction: outbound\n    gateway: ingress\n"));
    assert_eq!(e.path, "listeners[0].gateway");
    assert!(e.message.contains("namespace/name"), "{e}");
    let e = error(&yaml("    direction: inbound\n    gateway: ns/ingress\n"));
    assert_eq!(e.path, "listeners[0].direction");
}

#[test]
fn http3_needs_tls() {
    let e = error(&yaml(
        "    direction: outbound\n    service: app\n    http3: true\n",
    ));
    assert_eq!(e.path, "listeners[0].http3");
    assert!(e.to_string().starts_with("gw.yaml:4:"), "{e}");
}

#[test]
fn tls_is_refused_on_inbound_listeners_and_with_opaque_tcp() {
    let f = files();
    let e = error(&yaml(&format!(
        "    direction: inbound\n    service: app\n{}",
        tls(&f, "")
    )));
    assert_eq!(e.path, "listeners[0].tls");
    assert!(e.message.contains("mesh"), "{e}");
    let e = error(&yaml(&format!(
        "    direction: outbound\n    service: app\n    protocol: tcp\n{}",
        tls(&f, "")
    )));
    assert_eq!(e.path, "listeners[0].protocol");
}

#[test]
fn mutual_needs_ca_certificates_and_simple_takes_no_sans() {
    let f = files();
    let e = error(&yaml(&format!(
        "    direction: outbound\n    service: app\n{}",
        tls(&f, "      mode: MUTUAL\n")
    )));
    assert_eq!(e.path, "listeners[0].tls.ca_certificates");
    assert!(e.hint.contains("ca_certificates"), "{e}");
    let e = error(&yaml(&format!(
        "    direction: outbound\n    service: app\n{}",
        tls(&f, "      subject_alt_names: [client.agency.gov]\n")
    )));
    assert_eq!(e.path, "listeners[0].tls.subject_alt_names");
}

#[test]
fn missing_and_broken_files_name_the_field_and_the_file() {
    let f = files();
    let missing = yaml(&format!(
        "    direction: outbound\n    service: app\n    tls:\n      certificate_chain: {}\n      private_key: /nonexistent/gw.key\n",
        f.cert
    ));
    let e = error(&missing);
    assert_eq!(e.path, "listeners[0].tls.private_key");
    assert!(e.message.contains("/nonexistent/gw.key"), "{e}");
    assert_eq!(e.line, 4);

    std::fs::write(&f.key, "not a key\n").unwrap();
    let e = error(&yaml(&format!(
        "    direction: outbound\n    service: app\n{}",
        tls(&f, "")
    )));
    assert_eq!(e.path, "listeners[0].tls.private_key");
    assert!(e.message.contains("no PRIVATE KEY"), "{e}");
    assert!(e.hint.contains("PEM"), "{e}");
}

#[test]
fn the_systemd_example_gateway_config_is_valid() {
    let f = files();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/gateway.yaml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("/etc/jalin/gateway/tls.crt", &f.cert)
        .replace("/etc/jalin/gateway/tls.key", &f.key);
    let (config, _) = parse("gateway.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let l = &config.listeners[0];
    assert_eq!(l.gateway.as_deref(), Some("istio-system/ingress"));
    assert!(l.http3 && l.tls.is_some());
    assert!(
        config
            .routes
            .iter()
            .all(|r| r.binds_gateway("istio-system/ingress"))
    );
}
