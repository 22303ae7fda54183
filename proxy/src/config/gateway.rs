//! Validation of a listener's gateway mode and own server TLS: `gateway` and `service` are
//! exclusive, `http3` needs `tls`, `tls` is refused on inbound listeners (they use the mesh's
//! mTLS), `MUTUAL` needs `ca_certificates`, and the certificate files exist, parse and match.

use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol, ServerTlsMode};
use serde_saphyr::Location;

use super::ConfigError;
use crate::tls::server::{ServerTlsError, server_config};

/// Checks listener `i` (at `loc` of `file`). Reads its certificate files.
pub(super) fn check_listener(
    file: &str,
    i: usize,
    loc: Location,
    l: &Listener,
) -> Result<(), ConfigError> {
    let at = |field: &str, message: String, hint: &str| ConfigError {
        file: file.to_owned(),
        line: loc.line(),
        column: loc.column(),
        path: format!("listeners[{i}].{field}"),
        message,
        hint: hint.to_owned(),
    };
    if let Some(gw) = &l.gateway {
        if l.service.is_some() {
            return Err(at(
                "gateway",
                "`gateway` and `service` are both set; a listener routes either to one service or by host over a gateway's route tables".into(),
                "remove `service` for a gateway, or `gateway` for a single-service listener",
            ));
        }
        let well_formed = gw
            .split_once('/')
            .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'));
        if !well_formed {
            return Err(at(
                "gateway",
                format!("`{gw}` is not `namespace/name`"),
                "name the Istio Gateway as its VirtualServices list it in spec.gateways, e.g. istio-system/ingress",
            ));
        }
        if l.direction == Direction::Inbound {
            return Err(at(
                "direction",
                "a gateway listener is `inbound`; expected `outbound` (it sends requests into the mesh)".into(),
                "set `direction: outbound`",
            ));
        }
    }
    if l.http3 && l.tls.is_none() {
        return Err(at(
            "http3",
            "`http3: true` needs the listener's own `tls` (QUIC is always encrypted)".into(),
            "add a `tls` section with certificate_chain and private_key, or remove `http3`",
        ));
    }
    let Some(tls) = &l.tls else {
        return Ok(());
    };
    if l.direction == Direction::Inbound {
        return Err(at(
            "tls",
            "`tls` on an inbound listener; inbound listeners terminate the mesh's mTLS with the workload certificate".into(),
            "remove `tls` (set `mtls` for peer authentication), or make it an `outbound` gateway listener",
        ));
    }
    if l.protocol == ListenerProtocol::Tcp {
        return Err(at(
            "protocol",
            "`protocol: tcp` with `tls`; a listener terminating its own TLS serves HTTP/1.1 and HTTP/2 (chosen by ALPN)".into(),
            "remove `protocol` or set it to `detect`",
        ));
    }
    if tls.mode == ServerTlsMode::Simple && !tls.subject_alt_names.is_empty() {
        return Err(at(
            "tls.subject_alt_names",
            "subject_alt_names are checked on client certificates, which mode SIMPLE does not request".into(),
            "set `mode: MUTUAL` with ca_certificates, or remove subject_alt_names",
        ));
    }
    server_config(tls, crate::listener::LISTENER_ALPN).map_err(|e| {
        let mut err = server_tls_error(file, i, &e);
        err.line = loc.line();
        err.column = loc.column();
        err
    })?;
    Ok(())
}

/// The configuration error for listener `i`'s server TLS failure `e`: field path
/// `listeners[i].tls.<field>`, what is wrong, what to do.
pub fn server_tls_error(file: &str, i: usize, e: &ServerTlsError) -> ConfigError {
    ConfigError::field(
        file,
        format!("listeners[{i}].tls.{}", e.field()),
        e.to_string(),
        e.hint(),
    )
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
