//! The iptables rules the injected init container installs in a pod's network namespace: inbound
//! TCP to the proxy's inbound port, outbound TCP to its outbound port, the proxy's own traffic
//! (uid 1337) excluded so it does not loop. Rendered in `iptables-restore` format; no I/O.

use std::fmt::Write as _;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What to redirect, and what to leave alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectConfig {
    /// The uid (and gid) the proxy runs as; its traffic is never redirected.
    pub proxy_uid: i64,
    /// Where inbound TCP is redirected (the proxy's inbound listener).
    pub inbound_port: u16,
    /// Where outbound TCP is redirected (the proxy's outbound listener).
    pub outbound_port: u16,
    /// Inbound ports that reach the pod directly (health, metrics, and any excluded by the pod).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports that bypass the proxy.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination ranges that bypass the proxy.
    pub exclude_outbound_ranges: Vec<IpNet>,
}

/// The `iptables-restore` input for IPv4 (`ipv6 == false`) or IPv6 (`ip6tables-restore`).
pub fn redirect_rules(config: &RedirectConfig, ipv6: bool) -> String {
    let loopback = if ipv6 { "::1/128" } else { "127.0.0.1/32" };
    let mut r = String::new();
    let mut line = |s: &str| {
        r.push_str(s);
        r.push('\n');
    };
    line("*nat");
    for chain in [
        "JALIN_INBOUND",
        "JALIN_IN_REDIRECT",
        "JALIN_OUTPUT",
        "JALIN_REDIRECT",
    ] {
        line(&format!(":{chain} - [0:0]"));
    }
    // Inbound: everything to the proxy's inbound port but the excluded ports.
    line("-A PREROUTING -p tcp -j JALIN_INBOUND");
    let mut inbound = config.exclude_inbound_ports.clone();
    inbound.sort_unstable();
    inbound.dedup();
    for port in inbound {
        line(&format!("-A JALIN_INBOUND -p tcp --dport {port} -j RETURN"));
    }
    line("-A JALIN_INBOUND -p tcp -j JALIN_IN_REDIRECT");
    line(&format!(
        "-A JALIN_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        config.inbound_port
    ));
    // Outbound.
    line("-A OUTPUT -p tcp -j JALIN_OUTPUT");
    let uid = config.proxy_uid;
    // The app calling its own pod IP: through the inbound side, so policy applies.
    line(&format!(
        "-A JALIN_OUTPUT -o lo ! -d {loopback} -m owner --uid-owner {uid} -j JALIN_IN_REDIRECT"
    ));
    line(&format!(
        "-A JALIN_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"
    ));
    // The proxy's own connections go out as they are.
    line(&format!(
        "-A JALIN_OUTPUT -m owner --uid-owner {uid} -j RETURN"
    ));
    line(&format!(
        "-A JALIN_OUTPUT -m owner --gid-owner {uid} -j RETURN"
    ));
    line(&format!("-A JALIN_OUTPUT -d {loopback} -j RETURN"));
    let mut outbound = config.exclude_outbound_ports.clone();
    outbound.sort_unstable();
    outbound.dedup();
    for port in outbound {
        line(&format!("-A JALIN_OUTPUT -p tcp --dport {port} -j RETURN"));
    }
    for range in &config.exclude_outbound_ranges {
        if matches!(range, IpNet::V6(_)) == ipv6 {
            line(&format!("-A JALIN_OUTPUT -d {range} -j RETURN"));
        }
    }
    line("-A JALIN_OUTPUT -j JALIN_REDIRECT");
    line(&format!(
        "-A JALIN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        config.outbound_port
    ));
    line("COMMIT");
    r
}

/// A POSIX shell script that installs both rule sets (IPv6 only where the kernel has it).
pub fn redirect_script(config: &RedirectConfig) -> String {
    let mut s = String::from("set -eu\niptables-restore <<'JALIN_EOF'\n");
    s.push_str(&redirect_rules(config, false));
    s.push_str("JALIN_EOF\nif [ -e /proc/net/if_inet6 ]; then\nip6tables-restore <<'JALIN_EOF'\n");
    s.push_str(&redirect_rules(config, true));
    let _ = write!(s, "JALIN_EOF\nfi\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedirectConfig {
        RedirectConfig {
            proxy_uid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![15090, 15021, 15021],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_ranges: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn ipv4_rules_redirect_both_ways_and_exclude_the_proxy() {
        let rules = redirect_rules(&config(), false);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        for want in [
            "-A JALIN_INBOUND -p tcp --dport 15021 -j RETURN",
            "-A JALIN_INBOUND -p tcp --dport 15090 -j RETURN",
            "-A JALIN_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A JALIN_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A JALIN_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "-A JALIN_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A JALIN_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A JALIN_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        ] {
            assert!(lines.contains(&want), "missing `{want}` in\n{rules}");
        }
        assert_eq!(
            rules.matches("--dport 15021").count(),
            1,
            "ports deduplicated"
        );
        assert!(!rules.contains("fd00::/8"), "no IPv6 range in IPv4 rules");
        // The proxy's exclusion comes before the catch-all redirect.
        let uid = lines
            .iter()
            .position(|l| l.contains("--uid-owner 1337 -j RETURN"));
        let redirect = lines
            .iter()
            .position(|l| *l == "-A JALIN_OUTPUT -j JALIN_REDIRECT");
        assert!(uid < redirect);
    }

    #[test]
    fn ipv6_rules_use_ipv6_loopback_and_ranges() {
        let rules = redirect_rules(&config(), true);
        assert!(rules.contains("-A JALIN_OUTPUT -d ::1/128 -j RETURN"));
        assert!(rules.contains("-A JALIN_OUTPUT -d fd00::/8 -j RETURN"));
        assert!(!rules.contains("169.254.169.254"));
        let script = redirect_script(&config());
        assert!(script.starts_with("set -eu\niptables-restore <<'JALIN_EOF'\n*nat\n"));
        assert!(script.contains("ip6tables-restore"));
    }
}
