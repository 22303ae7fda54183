//! Value checks shared by validation and conversion: durations, ports, IPs/CIDRs, path
//! templates and authorization condition keys, with Istio's documented rules.

use std::net::IpAddr;

/// Parse a duration as Istio writes them (`10s`, `500ms`, `1.5s`, `1h30m`, `7200s`) into
/// milliseconds, rounding sub-millisecond remainders up. `None` when it does not parse.
pub fn duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += n * factor;
    }
    if !total_ns.is_finite() || total_ns > 1e18 {
        return None;
    }
    Some((total_ns / 1e6).ceil() as u64)
}

/// What a duration field expects, for messages.
pub const DURATION_HINT: &str = "a duration such as `500ms`, `10s`, `1m` or `1h30m`";

/// An IP address or CIDR block.
pub fn is_ip_or_cidr(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || s.parse::<ipnet::IpNet>().is_ok()
}

/// A port string in `[0, 65535]`, as AuthorizationPolicy `ports` and `destination.port` take.
pub fn is_port_string(s: &str) -> bool {
    s.parse::<u32>().is_ok_and(|p| p <= 65535)
}

/// A service port in `[1, 65535]`.
pub fn is_service_port(p: u64) -> bool {
    (1..=65535).contains(&p)
}

/// Check an AuthorizationPolicy path: `{*}` matches one segment and `{**}` the rest; each
/// operator is a whole segment, `{**}` comes last, and operators are not mixed with `*` globs.
pub fn check_path_template(path: &str) -> Result<(), String> {
    if !path.contains(['{', '}']) {
        return Ok(());
    }
    if path.contains('*') && path.replace("{**}", "").replace("{*}", "").contains('*') {
        return Err(format!(
            "`{path}` mixes `*` with `{{*}}`/`{{**}}` templates; use either a prefix/suffix `*` or \
             path templates"
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if !seg.contains(['{', '}']) {
            continue;
        }
        match *seg {
            "{*}" => {}
            "{**}" if i == segments.len() - 1 => {}
            "{**}" => {
                return Err(format!(
                    "`{path}`: `{{**}}` must be the last segment of the path; expected e.g. `/api/{{*}}/items/{{**}}`"
                ));
            }
            _ => {
                return Err(format!(
                    "`{path}`: `{seg}` is not a path template; a segment is exactly `{{*}}` (one \
                     segment) or `{{**}}` (the rest of the path)"
                ));
            }
        }
    }
    if !path.starts_with('/') {
        return Err(format!("`{path}`: a path template must start with `/`"));
    }
    Ok(())
}

/// jalin's condition key: the hex SHA-256 of the verified peer certificate.
pub const CERT_FINGERPRINT_KEY: &str = "source.certificate_fingerprint";

/// Condition keys from Istio's "Authorization Policy Conditions" page (`[...]` forms are
/// prefixes), for messages.
pub const CONDITION_KEYS_HINT: &str = "request.headers[<name>], source.ip, remote.ip, \
     source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
     request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, \
     connection.sni, or jalin's source.certificate_fingerprint";

/// The kind of a `when` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKey {
    /// Header or JWT attributes: HTTP only.
    Http,
    /// IP-valued keys (values must be IPs/CIDRs).
    Ip,
    /// `destination.port`.
    Port,
    /// Other keys valid for HTTP and TCP.
    Any,
    /// jalin's certificate fingerprint.
    Fingerprint,
    /// `experimental.envoy.filters.*`: Envoy filter metadata, which jalin does not have.
    EnvoyMetadata,
}

/// Classify a condition key, or explain why it is not one.
pub fn condition_key(key: &str) -> Result<ConditionKey, String> {
    if let Some(rest) = key.strip_prefix("request.headers") {
        return bracketed(rest, key, "a header name").map(|_| ConditionKey::Http);
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        return bracketed(rest, key, "a claim name").map(|_| ConditionKey::Http);
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Ok(ConditionKey::Ip),
        "destination.port" => Ok(ConditionKey::Port),
        "source.namespace" | "source.principal" | "connection.sni" => Ok(ConditionKey::Any),
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            Ok(ConditionKey::Http)
        }
        CERT_FINGERPRINT_KEY => Ok(ConditionKey::Fingerprint),
        k if k.starts_with("experimental.envoy.filters.") => Ok(ConditionKey::EnvoyMetadata),
        _ => Err(format!(
            "unknown condition key `{key}`; expected one of {CONDITION_KEYS_HINT}"
        )),
    }
}

/// True for a `when` key jalin cannot evaluate: a key outside Istio's list (not a malformed
/// `request.headers[...]`/`request.auth.claims[...]`, which is a spelling error) or Envoy filter
/// metadata. `jalin validate` rejects these; `jalin import` keeps the policy and marks the
/// condition ([`jalin_xds::model::authz::Condition::unknown_key`]) so it fails closed.
pub fn unevaluable_key(key: &str) -> bool {
    match condition_key(key) {
        Ok(k) => k == ConditionKey::EnvoyMetadata,
        Err(_) => !key.starts_with("request.headers") && !key.starts_with("request.auth.claims"),
    }
}

fn bracketed(rest: &str, key: &str, what: &str) -> Result<(), String> {
    let ok = rest.starts_with('[')
        && rest.ends_with(']')
        && rest.len() > 2
        && rest[1..rest.len() - 1]
            .split("][")
            .all(|p| !p.is_empty() && !p.contains(['[', ']']));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` needs {what} in brackets, e.g. `request.headers[x-token]`"
        ))
    }
}

/// A certificate fingerprint value: `*` or 64 hex digits (colons allowed between bytes).
pub fn is_fingerprint(v: &str) -> bool {
    if v == "*" {
        return true;
    }
    let hex: String = v.chars().filter(|c| *c != ':').collect();
    hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Envoy `retryOn` policies (plus numeric status codes, which Istio also accepts).
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10s"), Some(10_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("1.5s"), Some(1_500));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("7200s"), Some(7_200_000));
        assert_eq!(duration_ms("10"), None);
        assert_eq!(duration_ms("ten seconds"), None);
        assert_eq!(duration_ms("5d"), None);
    }

    #[test]
    fn path_templates() {
        assert!(check_path_template("/api/{*}/items/{**}").is_ok());
        assert!(check_path_template("/api/*").is_ok());
        assert!(
            check_path_template("/api/{**}/items")
                .unwrap_err()
                .contains("last segment")
        );
        assert!(
            check_path_template("/api/{*}/x*")
                .unwrap_err()
                .contains("mixes")
        );
        assert!(
            check_path_template("/api/{id}")
                .unwrap_err()
                .contains("not a path template")
        );
        assert!(
            check_path_template("/api/a{*}")
                .unwrap_err()
                .contains("not a path template")
        );
    }

    #[test]
    fn condition_keys() {
        assert_eq!(
            condition_key("request.headers[x-a]"),
            Ok(ConditionKey::Http)
        );
        assert_eq!(
            condition_key("request.auth.claims[groups][0]"),
            Ok(ConditionKey::Http)
        );
        assert!(condition_key("request.headers").is_err());
        assert!(
            condition_key("custom.case_active")
                .unwrap_err()
                .contains("unknown condition key")
        );
        assert_eq!(
            condition_key(CERT_FINGERPRINT_KEY),
            Ok(ConditionKey::Fingerprint)
        );
        assert!(unevaluable_key("custom.case_active"));
        assert!(unevaluable_key("experimental.envoy.filters.a.b[c]"));
        assert!(!unevaluable_key("request.headers"), "a malformed known key");
        assert!(!unevaluable_key("request.auth.claims[]"));
        assert!(!unevaluable_key("source.ip"));
    }
}
