//! An Istio Gateway's `servers` as the native listeners of the proxy that runs it
//! (`jalin gateway bootstrap`): one listener per port, in gateway mode for the Gateway
//! (`gateway: ns/name`), terminating the server's TLS itself.
//!
//! Mapping: `port.number` → `0.0.0.0:<port>` (or `bind`); protocol HTTP, HTTP2 and GRPC → a plain
//! HTTP listener (HTTP/1.1 and HTTP/2 prior knowledge are detected); HTTPS → `tls` with mode
//! SIMPLE or MUTUAL from `serverCertificate`, `privateKey`, `caCertificates`, `subjectAltNames`
//! and `minProtocolVersion`. `httpsRedirect` is served by the control plane: the route tables sent
//! to this gateway start with a 301-to-https route for that server's port
//! ([`super::gateway`]). Servers that share a port share the listener when their TLS is the
//! same. Everything jalin cannot honour is an error naming the field and what to write instead:
//! a gateway that silently served plaintext, or without a client-certificate check, is worse
//! than one that does not start.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use jalin_xds::model::listener::{
    Direction, Listener, ListenerProtocol, ServerTls, ServerTlsMode, TlsProtocolVersion,
};

use super::diag::{Finding, Severity};
use super::parse::{Resource, Spec};
use super::service::{Server, ServerTlsSettings};

use jalin_ca::tls::GOVERNMENT_CIPHER_SUITES;

/// The listeners of one Gateway, and remarks about what the control plane does for them.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayListeners {
    pub listeners: Vec<Listener>,
    /// Things the operator should know (httpsRedirect served by route, or without effect).
    pub notes: Vec<Finding>,
}

struct Out<'a> {
    r: &'a Resource,
    errors: Vec<Finding>,
    notes: Vec<Finding>,
}

impl Out<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors
            .push(self.r.finding(Severity::Error, path, message));
    }
    fn note(&mut self, path: &str, message: impl Into<String>) {
        self.notes
            .push(self.r.finding(Severity::Warning, path, message));
    }
}

/// The native listeners for the Gateway `r`, with `http3` on its TLS listeners; every field
/// that cannot be honoured is an error finding.
pub fn listeners(r: &Resource, http3: bool) -> Result<GatewayListeners, Vec<Finding>> {
    let Spec::Gateway(spec) = &r.spec else {
        return Err(vec![r.finding(
            Severity::Error,
            "",
            format!("{} is not a Gateway", r.id()),
        )]);
    };
    let mut out = Out {
        r,
        errors: Vec::new(),
        notes: Vec::new(),
    };
    if spec.selector.is_empty() {
        out.error("spec.selector", "a Gateway without `selector` selects no jalin proxy, so the control plane would send this gateway no routes; set the labels of the gateway workload (for example `istio: ingressgateway`): the bootstrap announces them");
    }
    let key = format!("{}/{}", r.namespace, r.name);
    // Port → (listener, path of the server that made it).
    let mut by_port: BTreeMap<u16, (Listener, String)> = BTreeMap::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        let Some(listener) = server(&mut out, &p, s, &key, http3) else {
            continue;
        };
        let port = listener.address.port();
        match by_port.get(&port) {
            None => {
                by_port.insert(port, (listener, p));
            }
            Some((first, _)) if same_listener(first, &listener) => {}
            Some((_, first_path)) => {
                let first_path = first_path.clone();
                out.error(&format!("{p}.port.number"), format!("port {port} is also served by {first_path} with different TLS settings or protocol; a jalin listener terminates one certificate per port (no SNI certificate selection), so give each certificate its own port or one certificate whose SANs cover both servers' hosts"));
            }
        }
    }
    if http3 && !by_port.values().any(|(l, _)| l.tls.is_some()) {
        out.error("spec.servers", "--http3 needs an HTTPS server (HTTP/3 is QUIC, always TLS); add a server with `protocol: HTTPS` and `tls.mode: SIMPLE` or MUTUAL, or drop --http3");
    }
    if out.errors.is_empty() {
        Ok(GatewayListeners {
            listeners: by_port.into_values().map(|(l, _)| l).collect(),
            notes: out.notes,
        })
    } else {
        Err(out.errors)
    }
}

fn same_listener(a: &Listener, b: &Listener) -> bool {
    a.address == b.address && a.tls == b.tls && a.protocol == b.protocol
}

fn server(out: &mut Out<'_>, p: &str, s: &Server, gateway: &str, http3: bool) -> Option<Listener> {
    let port = s.port.as_ref()?;
    let number = u16::try_from(port.number).ok()?;
    let protocol = port.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
    let ip = match s.bind.as_deref() {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(b) => match b.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                out.error(&format!("{p}.bind"), format!("`{b}` is not an IP address; a jalin gateway listens on an IP (a Unix socket is not supported); write an address of this host or remove `bind` to listen on 0.0.0.0"));
                return None;
            }
        },
    };
    if let Some(d) = &s.default_endpoint {
        out.error(&format!("{p}.defaultEndpoint"), format!("`{d}`: a gateway server routes by its VirtualServices, not to a default endpoint (Istio applies `defaultEndpoint` to Sidecar ingress only); remove it"));
    }
    let mut listener = Listener {
        name: s
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{number}", protocol.to_ascii_lowercase())),
        address: SocketAddr::new(ip, number),
        direction: Direction::Outbound,
        service: None,
        protocol: ListenerProtocol::Detect,
        mtls: None,
        gateway: Some(gateway.to_owned()),
        tls: None,
        http3: false,
    };
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" => {
            if let Some(t) = &s.tls {
                if t.https_redirect == Some(true) {
                    out.note(&format!("{p}.tls.httpsRedirect"), format!("served by the control plane: the route tables it sends to {gateway} answer port {number} with a 301 to https"));
                }
                if t.mode.is_some() || t.server_certificate.is_some() || t.credential_name.is_some()
                {
                    out.error(&format!("{p}.tls"), format!("a `{protocol}` server is plaintext, so only `httpsRedirect` applies; for TLS set `port.protocol: HTTPS`"));
                }
            }
        }
        "HTTPS" => {
            let Some(t) = &s.tls else {
                out.error(&format!("{p}.tls"), "an HTTPS server needs `tls` (mode SIMPLE or MUTUAL, serverCertificate, privateKey)");
                return None;
            };
            if t.https_redirect == Some(true) {
                out.note(&format!("{p}.tls.httpsRedirect"), "has no effect on an HTTPS server: its connections are already TLS, and a redirect to https would loop back to this port; set it on the plaintext (protocol HTTP) server instead");
            }
            listener.tls = Some(server_tls(out, &format!("{p}.tls"), t)?);
            listener.http3 = http3;
        }
        other => {
            out.error(&format!("{p}.port.protocol"), format!("`{other}`: a jalin gateway routes HTTP requests by their authority over VirtualService `http` routes; TCP, TLS (SNI passthrough), GRPC-WEB and MONGO servers have no native gateway listener. Serve them with protocol HTTPS (TLS terminated here) or HTTP, or expose that service directly"));
            return None;
        }
    }
    Some(listener)
}

fn server_tls(out: &mut Out<'_>, p: &str, t: &ServerTlsSettings) -> Option<ServerTls> {
    let start = out.errors.len();
    if let Some(name) = t.credential_name.as_ref().or(t.credential_names.first()) {
        let field = if t.credential_name.is_some() {
            "credentialName"
        } else {
            "credentialNames"
        };
        out.error(&format!("{p}.{field}"), format!("`{name}` names a Kubernetes Secret, which a jalin gateway does not read; on bare metal give the PEM file paths in `serverCertificate` and `privateKey` (and `caCertificates` for MUTUAL), or mount the Secret as files and name those paths"));
    }
    // Istio's enum default (0) is PASSTHROUGH.
    let mode = match t.mode.as_deref().unwrap_or("PASSTHROUGH") {
        "SIMPLE" => ServerTlsMode::Simple,
        "MUTUAL" => ServerTlsMode::Mutual,
        m @ ("PASSTHROUGH" | "AUTO_PASSTHROUGH") => {
            let unset = if t.mode.is_none() {
                " (the default when `mode` is not set)"
            } else {
                ""
            };
            out.error(&format!("{p}.mode"), format!("`{m}`{unset} forwards TLS unterminated by SNI; a jalin gateway terminates TLS itself and routes HTTP, so write `mode: SIMPLE` (or MUTUAL) with this gateway's certificate"));
            return None;
        }
        m @ ("ISTIO_MUTUAL" | "OPTIONAL_MUTUAL") => {
            out.error(&format!("{p}.mode"), format!("`{m}` is not served at a jalin gateway: ISTIO_MUTUAL presents the mesh's workload certificate to clients outside the mesh, and OPTIONAL_MUTUAL accepts clients without a certificate while claiming mutual TLS; use MUTUAL with `caCertificates` (the clients' roots), or SIMPLE"));
            return None;
        }
        other => {
            out.error(
                &format!("{p}.mode"),
                format!("`{other}` is not a TLS mode; expected SIMPLE or MUTUAL"),
            );
            return None;
        }
    };
    let cert = t.server_certificate.clone();
    let key = t.private_key.clone();
    if cert.is_none() {
        out.error(
            &format!("{p}.serverCertificate"),
            "is missing: give the PEM certificate chain file of this gateway (leaf first)",
        );
    }
    if key.is_none() {
        out.error(
            &format!("{p}.privateKey"),
            "is missing: give the PEM private key file of the gateway's certificate",
        );
    }
    if mode == ServerTlsMode::Mutual && t.ca_certificates.is_none() {
        out.error(&format!("{p}.caCertificates"), "is missing: MUTUAL verifies client certificates against these PEM roots; give the file, or use mode SIMPLE");
    }
    if mode == ServerTlsMode::Simple && !t.subject_alt_names.is_empty() {
        out.error(&format!("{p}.subjectAltNames"), "checks client certificates, which SIMPLE does not ask for; use mode MUTUAL with `caCertificates`, or remove it");
    }
    if mode == ServerTlsMode::Simple && t.ca_certificates.is_some() {
        out.error(&format!("{p}.caCertificates"), "verifies client certificates, which SIMPLE does not ask for; use mode MUTUAL, or remove it");
    }
    for (field, set) in [
        ("caCrl", t.ca_crl.is_some()),
        (
            "verifyCertificateSpki",
            !t.verify_certificate_spki.is_empty(),
        ),
        (
            "verifyCertificateHash",
            !t.verify_certificate_hash.is_empty(),
        ),
    ] {
        if set {
            out.error(&format!("{p}.{field}"), "a jalin gateway listener has no such client-certificate check, and dropping it would admit clients this policy refuses; pin clients by `subjectAltNames` with mode MUTUAL instead");
        }
    }
    let min = match t.min_protocol_version.as_deref() {
        None | Some("TLS_AUTO" | "TLSV1_2") => TlsProtocolVersion::Tls12,
        Some("TLSV1_3") => TlsProtocolVersion::Tls13,
        Some(v) => {
            out.error(&format!("{p}.minProtocolVersion"), format!("`{v}`: the government TLS policy accepts TLS 1.2 and 1.3 only; write TLSV1_2 or TLSV1_3"));
            TlsProtocolVersion::Tls12
        }
    };
    match t.max_protocol_version.as_deref() {
        None | Some("TLS_AUTO" | "TLSV1_3") => {}
        Some(v) => out.error(&format!("{p}.maxProtocolVersion"), format!("`{v}`: a jalin gateway always offers TLS 1.3; remove `maxProtocolVersion` (or write TLSV1_3)")),
    }
    let outside: Vec<&str> = t
        .cipher_suites
        .iter()
        .map(String::as_str)
        .filter(|c| !GOVERNMENT_CIPHER_SUITES.contains(c))
        .collect();
    if !outside.is_empty() {
        out.error(
            &format!("{p}.cipherSuites"),
            format!(
                "{} outside the government TLS policy, which offers {}; remove them",
                outside.join(", "),
                GOVERNMENT_CIPHER_SUITES.join(", ")
            ),
        );
    }
    if out.errors.len() > start {
        return None;
    }
    Some(ServerTls {
        mode,
        certificate_chain: cert?,
        private_key: key?,
        ca_certificates: t
            .ca_certificates
            .clone()
            .filter(|_| mode == ServerTlsMode::Mutual),
        subject_alt_names: t.subject_alt_names.clone(),
        min_protocol_version: min,
        // Narrows the policy per protocol version, as Envoy applies Istio's list to TLS 1.2.
        cipher_suites: t.cipher_suites.clone(),
    })
}
