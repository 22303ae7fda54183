//! `jalin gateway bootstrap` and the importer's Gateway findings: an Istio Gateway's servers
//! rendered as a jalin-proxy file the proxy's own loader accepts (SIMPLE, MUTUAL, plain HTTP),
//! what cannot be honoured refused with file, line and field path, and a VirtualService naming a
//! Gateway that does not exist reported by import and lint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jalin_control::cli::gateway::{BootstrapArgs, bootstrap};
use jalin_control::istio::{Severity, convert, load_paths};
use jalin_xds::model::listener::{ServerTlsMode, TlsProtocolVersion};

fn jalin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(args)
        .output()
        .expect("run jalin")
}

fn seed_32() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/seed-policies/policies-32-virtualservice-emergency-priority-routing.yaml",
    )
}

fn gateway_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateway/emergency-gateway.yaml")
}

/// Real certificate files in `dir` (the proxy's loader reads and checks them): `cert.pem` and
/// `key.pem` for the gateway, `partners-ca.pem` for MUTUAL.
fn write_certs(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(
        dir.join("partners-ca.pem"),
        ca.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["emergency.gov.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// `text` with its certificate directories pointed at `dir`, where [`write_certs`] wrote files.
fn with_certs(text: &str, dir: &Path) -> String {
    let d = format!("{}/", dir.display());
    text.replace("/etc/gw/", &d)
        .replace("/etc/jalin/gateway/", &d)
}

/// The Gateway fixture copied into `dir` (same file name, same lines) with real certificates.
fn gateway_fixture_in(dir: &Path) -> PathBuf {
    write_certs(dir);
    let text = std::fs::read_to_string(gateway_fixture()).unwrap();
    let path = dir.join("emergency-gateway.yaml");
    std::fs::write(&path, with_certs(&text, dir)).unwrap();
    path
}

fn args(gateway: &str, paths: Vec<PathBuf>) -> BootstrapArgs {
    BootstrapArgs {
        gateway: gateway.into(),
        paths,
        control_plane: "control.mesh.gov.example:15010".into(),
        control_plane_id: None,
        http3: false,
        trust_domain: "gov.example".into(),
        namespace: None,
        service_account: None,
        cert: "/etc/jalin/certs/cert.pem".into(),
        key: "/etc/jalin/certs/key.pem".into(),
        trust_bundle: "/etc/jalin/certs/bundle.pem".into(),
        admin: "127.0.0.1:15000".parse().unwrap(),
    }
}

const SERVERS: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: edge
spec:
  selector:
    istio: ingress
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [\"*.gov.example\"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [api.gov.example]
    tls:
      mode: SIMPLE
      serverCertificate: /etc/gw/cert.pem
      privateKey: /etc/gw/key.pem
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
  - port: {number: 9443, name: partners, protocol: HTTPS}
    hosts: [partners.gov.example]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/gw/cert.pem
      privateKey: /etc/gw/key.pem
      caCertificates: /etc/gw/partners-ca.pem
      subjectAltNames: [spiffe://partner.example/ns/a/sa/b]
      minProtocolVersion: TLSV1_3
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
  namespace: edge
spec:
  hosts: [api.gov.example, partners.gov.example]
  gateways: [ingress]
  http:
  - route:
    - destination: {host: api.backend.svc.cluster.local}
";

#[test]
fn simple_mutual_and_plain_servers_render_a_file_the_proxy_loads() {
    let tmp = tempfile::tempdir().unwrap();
    write_certs(tmp.path());
    std::fs::write(tmp.path().join("gw.yaml"), with_certs(SERVERS, tmp.path())).unwrap();
    let loaded = load_paths(&[tmp.path().to_path_buf()]);
    let mut a = args("edge/ingress", vec![tmp.path().to_path_buf()]);
    a.http3 = true;
    let out = bootstrap(&a, &loaded).unwrap();
    assert!(
        out.notes.is_empty(),
        "nothing is dropped here: {:?}",
        out.notes
    );
    assert_eq!(
        out.served,
        [
            "gateway edge/ingress: serves VirtualService edge/api for api.gov.example, partners.gov.example"
        ]
    );
    let (config, _) = jalin_proxy::config::parse("gateway.yaml", &out.yaml)
        .unwrap_or_else(|e| panic!("the proxy refuses the rendered file: {e}\n{}", out.yaml));
    let l = &config.listeners;
    assert_eq!(l.len(), 3);
    for listener in l {
        assert_eq!(listener.gateway.as_deref(), Some("edge/ingress"));
        assert_eq!(
            listener.direction,
            jalin_xds::model::listener::Direction::Outbound
        );
        assert!(listener.service.is_none());
    }
    assert_eq!(l[0].address, "0.0.0.0:8080".parse().unwrap());
    assert!(l[0].tls.is_none() && !l[0].http3);
    let simple = l[1].tls.as_ref().unwrap();
    assert_eq!(l[1].address.port(), 8443);
    assert_eq!(simple.mode, ServerTlsMode::Simple);
    let file = |name: &str| tmp.path().join(name).display().to_string();
    assert_eq!(simple.certificate_chain, file("cert.pem"));
    assert_eq!(simple.private_key, file("key.pem"));
    assert_eq!(simple.ca_certificates, None);
    assert_eq!(simple.min_protocol_version, TlsProtocolVersion::Tls12);
    // A narrower cipher list is carried to the listener, which offers only it on TLS 1.2.
    assert_eq!(simple.cipher_suites, ["ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(l[1].http3);
    let mutual = l[2].tls.as_ref().unwrap();
    assert_eq!(mutual.mode, ServerTlsMode::Mutual);
    assert_eq!(mutual.ca_certificates, Some(file("partners-ca.pem")));
    assert_eq!(
        mutual.subject_alt_names,
        ["spiffe://partner.example/ns/a/sa/b"]
    );
    assert_eq!(mutual.min_protocol_version, TlsProtocolVersion::Tls13);
    assert!(mutual.cipher_suites.is_empty());
    // The node announces the selector's labels: that is how the control plane finds it.
    let cp = config.control_plane.as_ref().unwrap();
    assert_eq!(
        cp.node.labels.get("istio").map(String::as_str),
        Some("ingress")
    );
    assert_eq!(cp.node.namespace, "edge");
    assert_eq!(
        cp.identity.as_deref(),
        Some("spiffe://gov.example/ns/jalin-system/sa/jalin-ca")
    );
}

#[test]
fn the_seed_gateway_renders_and_its_redirect_is_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = vec![seed_32(), gateway_fixture_in(tmp.path())];
    let loaded = load_paths(&paths);
    let out = bootstrap(&args("emergency/emergency-gateway", paths), &loaded).unwrap();
    jalin_proxy::config::parse("gateway.yaml", &out.yaml).unwrap();
    let redirect: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
    assert_eq!(redirect.len(), 1, "{redirect:?}");
    assert!(redirect[0].ends_with("emergency-gateway.yaml:19: Gateway/emergency/emergency-gateway: spec.servers[0].tls.httpsRedirect: served by the control plane: the route tables it sends to emergency/emergency-gateway answer port 80 with a 301 to https"), "{}", redirect[0]);
    assert_eq!(
        out.served,
        [
            "gateway emergency/emergency-gateway: serves VirtualService emergency/emergency-priority-routing for emergency.gov.example"
        ]
    );
}

#[test]
fn https_redirect_on_an_https_server_is_announced_as_without_effect() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: ingress\n  namespace: edge\nspec:\n  selector:\n    istio: ingress\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [api.gov.example]\n    tls:\n      mode: SIMPLE\n      httpsRedirect: true\n      serverCertificate: /etc/gw/cert.pem\n      privateKey: /etc/gw/key.pem\n";
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("gw.yaml");
    std::fs::write(&file, text).unwrap();
    let loaded = load_paths(std::slice::from_ref(&file));
    let out = bootstrap(&args("edge/ingress", vec![file]), &loaded).unwrap();
    let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
    let redirect: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("httpsRedirect"))
        .collect();
    assert_eq!(redirect.len(), 1, "{notes:?}");
    // The line is the field's own.
    assert!(redirect[0].ends_with("gw.yaml:14: Gateway/edge/ingress: spec.servers[0].tls.httpsRedirect: has no effect on an HTTPS server: its connections are already TLS, and a redirect to https would loop back to this port; set it on the plaintext (protocol HTTP) server instead"), "{}", redirect[0]);
}

fn refused(server_tls: &str, protocol: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: ingress\n  namespace: edge\nspec:\n  selector:\n    istio: ingress\n  servers:\n  - port: {{number: 443, name: https, protocol: {protocol}}}\n    hosts: [api.gov.example]\n    tls:\n{server_tls}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("gw.yaml");
    std::fs::write(&file, text).unwrap();
    let loaded = load_paths(std::slice::from_ref(&file));
    assert!(!loaded.has_errors(), "{:?}", loaded.findings);
    let errors = bootstrap(&args("edge/ingress", vec![file.clone()]), &loaded).unwrap_err();
    let prefix = format!("{}:", file.display());
    errors
        .iter()
        .map(|f| {
            assert_eq!(f.severity, Severity::Error);
            f.to_string().strip_prefix(&prefix).unwrap().to_owned()
        })
        .collect()
}

#[test]
fn what_cannot_be_honoured_is_refused_with_file_line_and_field() {
    assert_eq!(
        refused(
            "      mode: SIMPLE\n      credentialName: ingress-cert\n",
            "HTTPS"
        ),
        [
            "14: Gateway/edge/ingress: spec.servers[0].tls.credentialName: `ingress-cert` names a Kubernetes Secret, which a jalin gateway does not read; on bare metal give the PEM file paths in `serverCertificate` and `privateKey` (and `caCertificates` for MUTUAL), or mount the Secret as files and name those paths",
            "12: Gateway/edge/ingress: spec.servers[0].tls.serverCertificate: is missing: give the PEM certificate chain file of this gateway (leaf first)",
            "12: Gateway/edge/ingress: spec.servers[0].tls.privateKey: is missing: give the PEM private key file of the gateway's certificate"
        ]
    );
    let passthrough = refused("      mode: PASSTHROUGH\n", "HTTPS");
    assert_eq!(
        passthrough,
        [
            "13: Gateway/edge/ingress: spec.servers[0].tls.mode: `PASSTHROUGH` forwards TLS unterminated by SNI; a jalin gateway terminates TLS itself and routes HTTP, so write `mode: SIMPLE` (or MUTUAL) with this gateway's certificate"
        ]
    );
    // Istio's default mode is PASSTHROUGH, and saying so is part of the message.
    let unset = refused(
        "      serverCertificate: /c.pem\n      privateKey: /k.pem\n",
        "HTTPS",
    );
    assert!(
        unset[0].contains("`PASSTHROUGH` (the default when `mode` is not set)"),
        "{unset:?}"
    );
    for mode in ["AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] {
        let e = refused(&format!("      mode: {mode}\n"), "HTTPS");
        assert!(
            e[0].starts_with(&format!(
                "13: Gateway/edge/ingress: spec.servers[0].tls.mode: `{mode}`"
            )),
            "{e:?}"
        );
    }
    let mutual = refused(
        "      mode: MUTUAL\n      serverCertificate: /c.pem\n      privateKey: /k.pem\n",
        "HTTPS",
    );
    assert_eq!(
        mutual,
        [
            "12: Gateway/edge/ingress: spec.servers[0].tls.caCertificates: is missing: MUTUAL verifies client certificates against these PEM roots; give the file, or use mode SIMPLE"
        ]
    );
    let ciphers = refused(
        "      mode: SIMPLE\n      serverCertificate: /c.pem\n      privateKey: /k.pem\n      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-CHACHA20-POLY1305]\n",
        "HTTPS",
    );
    assert_eq!(
        ciphers,
        [
            "16: Gateway/edge/ingress: spec.servers[0].tls.cipherSuites: ECDHE-RSA-CHACHA20-POLY1305 outside the government TLS policy, which offers TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256; remove them"
        ]
    );
    let tcp = refused("      mode: SIMPLE\n", "TCP");
    assert!(
        tcp[0].starts_with("10: Gateway/edge/ingress: spec.servers[0].port.protocol: `TCP`:"),
        "{tcp:?}"
    );
}

#[test]
fn the_command_prints_the_file_or_the_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = gateway_fixture_in(tmp.path());
    let seed = seed_32();
    let ok = jalin(&[
        "gateway",
        "bootstrap",
        "--gateway",
        "emergency/emergency-gateway",
        "-f",
        seed.to_str().unwrap(),
        "-f",
        gw.to_str().unwrap(),
        "--http3",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let yaml = String::from_utf8(ok.stdout).unwrap();
    let (config, _) = jalin_proxy::config::parse("out.yaml", &yaml).unwrap();
    assert_eq!(config.listeners.len(), 2);
    assert!(config.listeners[1].http3 && config.listeners[1].tls.is_some());
    // The seed alone: its Gateway is not defined anywhere.
    let missing = jalin(&[
        "gateway",
        "bootstrap",
        "--gateway",
        "emergency/emergency-gateway",
        "-f",
        seed.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    let err = String::from_utf8(missing.stderr).unwrap();
    assert!(err.contains("--gateway:0: no Gateway `emergency/emergency-gateway` in the 1 file(s) read; expected `namespace/name` of one of: none (add the Gateway's YAML to -f)"), "{err}");
}

#[test]
fn a_virtualservice_naming_a_missing_gateway_is_a_warning_in_import_and_lint() {
    let loaded = load_paths(&[seed_32()]);
    let mut findings = Vec::new();
    convert::convert(&loaded.resources, &mut findings);
    let warnings: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].ends_with("policies-32-virtualservice-emergency-priority-routing.yaml:11: VirtualService/emergency/emergency-priority-routing: spec.gateways[0]: Gateway `emergency/emergency-gateway` not found (Istio IST0101), so no gateway serves these routes for it; define a Gateway with metadata.namespace `emergency` and metadata.name `emergency-gateway`, or name an existing one (none are defined); a name without `namespace/` means the VirtualService's namespace"), "{}", warnings[0]);

    // With the Gateway: no warning, and the import report says what the gateway serves.
    let out = tempfile::tempdir().unwrap();
    let o = jalin(&[
        "import",
        seed_32().to_str().unwrap(),
        gateway_fixture().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let report = std::fs::read_to_string(out.path().join("import-report.txt")).unwrap();
    assert!(report.contains("emergency-gateway.yaml:3) selects proxies labelled istio=emergency-gateway: serves VirtualService emergency/emergency-priority-routing for emergency.gov.example"), "{report}");
    assert!(!report.contains("not found"), "{report}");

    let lint = jalin(&["lint", seed_32().to_str().unwrap()]);
    assert_eq!(lint.status.code(), Some(1));
    let text = String::from_utf8(lint.stdout).unwrap();
    assert!(text.contains("lint: "), "{text}");
    assert!(text.contains(":11: VirtualService/emergency/emergency-priority-routing: spec.gateways[0]: Gateway `emergency/emergency-gateway` not found"), "{text}");
    let lint = jalin(&[
        "lint",
        seed_32().to_str().unwrap(),
        gateway_fixture().to_str().unwrap(),
    ]);
    assert_eq!(lint.status.code(), Some(0), "{lint:?}");
}

#[test]
fn hosts_no_server_serves_are_warnings_on_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("gw.yaml"),
        SERVERS.replace(
            "[api.gov.example, partners.gov.example]",
            "[api.gov.example, intranet.corp.example]",
        ),
    )
    .unwrap();
    let loaded = load_paths(&[tmp.path().to_path_buf()]);
    let mut findings = Vec::new();
    convert::convert(&loaded.resources, &mut findings);
    let w: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("gw.yaml:35: VirtualService/edge/api: spec.hosts[1]: host `intranet.corp.example` matches no server host of Gateway `edge/ingress` (*.gov.example, api.gov.example, partners.gov.example), so it is dropped there"), "{}", w[0]);
    assert_eq!(
        findings[0].code.as_deref(),
        Some("lint/host-not-on-gateway")
    );
    // The bootstrap says so too, and what the gateway serves instead.
    let out = bootstrap(
        &args("edge/ingress", vec![tmp.path().to_path_buf()]),
        &loaded,
    )
    .unwrap();
    let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes, w);
    assert_eq!(
        out.served,
        ["gateway edge/ingress: serves VirtualService edge/api for api.gov.example"]
    );
}

#[test]
fn a_gateway_without_selector_is_a_warning_and_is_not_rendered() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("gw.yaml");
    std::fs::write(
        &file,
        SERVERS.replace("  selector:\n    istio: ingress\n", ""),
    )
    .unwrap();
    let loaded = load_paths(std::slice::from_ref(&file));
    let lint = jalin_control::lint::lint(&loaded, &[]);
    assert_eq!(lint.len(), 1, "{lint:?}");
    assert_eq!(
        lint[0].code.as_deref(),
        Some("lint/gateway-selects-nothing")
    );
    assert_eq!((lint[0].line, lint[0].path.as_str()), (6, "spec.selector"));
    let errors = bootstrap(&args("edge/ingress", vec![file]), &loaded).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .starts_with("a Gateway without `selector` selects no jalin proxy")
    );
}
