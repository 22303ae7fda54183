//! Compilation of AuthorizationPolicy rules into attribute checks, once per configuration update.
//!
//! Every Istio field becomes one [`Check`]: an attribute, a set of compiled values (ORed), and
//! whether it is a `notX` form. A source or operation is the AND of its checks, a rule is
//! `any(from) && any(to) && all(when)`. Principals are expanded over the trust domain and its
//! aliases here, so matching compares strings only.

use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;

use super::PolicyError;
use super::matcher::{HostMatch, PathMatch, StrMatch, parse_cidr};
use super::request::normalize_fingerprint;
use crate::model::authz::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};

/// The local trust domain and its aliases (`meshConfig.trustDomain`, `trustDomainAliases`).
///
/// As Istio does, a principal in a policy whose trust domain is the local one, one of the
/// aliases, or `cluster.local` (Istio's pointer to "the local trust domain") matches peers of
/// the local trust domain and of every alias. Other trust domains are matched literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomains {
    pub local: String,
    pub aliases: Vec<String>,
}

impl Default for TrustDomains {
    fn default() -> Self {
        TrustDomains {
            local: CLUSTER_LOCAL.into(),
            aliases: Vec::new(),
        }
    }
}

/// Istio's default trust domain, and the name policies use for "the local trust domain".
pub const CLUSTER_LOCAL: &str = "cluster.local";

impl TrustDomains {
    fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.local.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    fn is_ours(&self, td: &str) -> bool {
        td == CLUSTER_LOCAL || self.all().any(|t| t == td)
    }

    /// A principal value expanded over the trust-domain bundle.
    fn expand(&self, value: &str, out: &mut Vec<StrMatch>) {
        if let Some((td, rest)) = value.split_once('/')
            && !td.contains('*')
            && self.is_ours(td)
        {
            for t in self.all() {
                let m = StrMatch::parse(&format!("{t}/{rest}"));
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            return;
        }
        out.push(StrMatch::parse(value));
    }
}

/// A request attribute a check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    Principal,
    Namespace,
    ServiceAccount,
    RequestPrincipal,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Host,
    Method,
    Path,
    Header(HeaderName),
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Box<[String]>),
    Sni,
    CertFingerprint,
}

impl Attr {
    /// Attributes that only exist for HTTP requests (Istio drops them for TCP traffic).
    pub(crate) fn http_only(&self) -> bool {
        matches!(
            self,
            Attr::RequestPrincipal
                | Attr::Host
                | Attr::Method
                | Attr::Path
                | Attr::Header(_)
                | Attr::AuthAudiences
                | Attr::AuthPresenter
                | Attr::AuthClaim(_)
        )
    }
}

/// Compiled values of one field, ORed.
#[derive(Debug, Clone)]
pub(crate) enum Values {
    Str(Box<[StrMatch]>),
    Host(Box<[HostMatch]>),
    Path(Box<[PathMatch]>),
    Ip(Box<[IpNet]>),
    Port(Box<[u16]>),
    /// `ns/sa` pairs, and the trust domains they may come from.
    ServiceAccount(Box<[(Box<str>, Box<str>)]>, Arc<[String]>),
}

/// One field of a source, operation or condition.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) attr: Attr,
    pub(crate) values: Values,
    pub(crate) negate: bool,
}

/// One rule: `any(from) && any(to) && all(when)`; an empty list is "any".
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledRule {
    pub(crate) from: Box<[Box<[Check]>]>,
    pub(crate) to: Box<[Box<[Check]>]>,
    pub(crate) when: Box<[Check]>,
}

/// Builds checks for one policy, recording errors with their field paths.
pub(crate) struct RuleCompiler<'a> {
    pub(crate) policy: &'a AuthorizationPolicy,
    pub(crate) trust: &'a TrustDomains,
    pub(crate) trust_list: Arc<[String]>,
    pub(crate) errors: &'a mut Vec<PolicyError>,
}

impl RuleCompiler<'_> {
    fn error(&mut self, field: String, message: String) {
        self.errors
            .push(PolicyError::new(self.policy, field, message));
    }

    /// Parses each of `vals`, recording an error at `field[k]` for each one `parse` refuses (the
    /// message it returns) and keeping the others, in order.
    fn parse_each<T>(
        &mut self,
        field: &str,
        vals: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(vals.len());
        for (k, v) in vals.iter().enumerate() {
            match parse(v) {
                Ok(t) => out.push(t),
                Err(message) => self.error(format!("{field}[{k}]"), message),
            }
        }
        out
    }

    pub(crate) fn rule(&mut self, i: usize, rule: &Rule) -> CompiledRule {
        let from = rule
            .from
            .iter()
            .enumerate()
            .map(|(j, s)| self.source(&format!("spec.rules[{i}].from[{j}].source"), s))
            .collect();
        let to = rule
            .to
            .iter()
            .enumerate()
            .map(|(j, o)| self.operation(&format!("spec.rules[{i}].to[{j}].operation"), o))
            .collect();
        let mut when = Vec::new();
        for (j, c) in rule.when.iter().enumerate() {
            self.condition(&format!("spec.rules[{i}].when[{j}]"), c, &mut when);
        }
        CompiledRule {
            from,
            to,
            when: when.into(),
        }
    }

    fn strs(&mut self, attr: Attr, vals: &[String], negate: bool, out: &mut Vec<Check>) {
        if vals.is_empty() {
            return;
        }
        let values = Values::Str(vals.iter().map(|v| StrMatch::parse(v)).collect());
        out.push(Check {
            attr,
            values,
            negate,
        });
    }

    fn principals(&mut self, attr: Attr, vals: &[String], negate: bool, out: &mut Vec<Check>) {
        if vals.is_empty() {
            return;
        }
        let mut ms = Vec::new();
        for v in vals {
            self.trust.expand(v, &mut ms);
        }
        out.push(Check {
            attr,
            values: Values::Str(ms.into()),
            negate,
        });
    }

    fn ips(
        &mut self,
        field: &str,
        attr: Attr,
        vals: &[String],
        negate: bool,
        out: &mut Vec<Check>,
    ) {
        if vals.is_empty() {
            return;
        }
        let nets = self.parse_each(field, vals, |v| {
            parse_cidr(v).ok_or_else(|| {
                format!("`{v}` is not an IP address or CIDR block (expected e.g. 10.0.0.1 or 10.0.0.0/16)")
            })
        });
        out.push(Check {
            attr,
            values: Values::Ip(nets.into()),
            negate,
        });
    }

    fn ports(
        &mut self,
        field: &str,
        attr: Attr,
        vals: &[String],
        negate: bool,
        out: &mut Vec<Check>,
    ) {
        if vals.is_empty() {
            return;
        }
        let ports = self.parse_each(field, vals, |v| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("`{v}` is not a port number (1-65535)")),
        });
        out.push(Check {
            attr,
            values: Values::Port(ports.into()),
            negate,
        });
    }

    fn service_accounts(
        &mut self,
        field: &str,
        vals: &[String],
        negate: bool,
        out: &mut Vec<Check>,
    ) {
        if vals.is_empty() {
            return;
        }
        let sas: Vec<(Box<str>, Box<str>)> =
            self.parse_each(field, vals, |v| match v.split_once('/') {
                Some((ns, sa))
                    if !ns.is_empty()
                        && !sa.is_empty()
                        && !sa.contains('/')
                        && !v.contains('*') =>
                {
                    Ok((ns.into(), sa.into()))
                }
                _ => Err(format!(
                    "`{v}` is not a service account: expected `<namespace>/<name>` (no wildcards)"
                )),
            });
        let values = Values::ServiceAccount(sas.into(), self.trust_list.clone());
        out.push(Check {
            attr: Attr::ServiceAccount,
            values,
            negate,
        });
    }

    fn source(&mut self, field: &str, s: &Source) -> Box<[Check]> {
        let mut c = Vec::new();
        let sa_set = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
        let pn_set = !s.principals.is_empty()
            || !s.not_principals.is_empty()
            || !s.namespaces.is_empty()
            || !s.not_namespaces.is_empty();
        if sa_set && pn_set {
            self.error(
                field.into(),
                "serviceAccounts cannot be combined with principals or namespaces; use one form"
                    .into(),
            );
        }
        self.principals(Attr::Principal, &s.principals, false, &mut c);
        self.principals(Attr::Principal, &s.not_principals, true, &mut c);
        self.strs(Attr::RequestPrincipal, &s.request_principals, false, &mut c);
        self.strs(
            Attr::RequestPrincipal,
            &s.not_request_principals,
            true,
            &mut c,
        );
        self.strs(Attr::Namespace, &s.namespaces, false, &mut c);
        self.strs(Attr::Namespace, &s.not_namespaces, true, &mut c);
        self.service_accounts(
            &format!("{field}.serviceAccounts"),
            &s.service_accounts,
            false,
            &mut c,
        );
        self.service_accounts(
            &format!("{field}.notServiceAccounts"),
            &s.not_service_accounts,
            true,
            &mut c,
        );
        self.ips(
            &format!("{field}.ipBlocks"),
            Attr::SourceIp,
            &s.ip_blocks,
            false,
            &mut c,
        );
        self.ips(
            &format!("{field}.notIpBlocks"),
            Attr::SourceIp,
            &s.not_ip_blocks,
            true,
            &mut c,
        );
        self.ips(
            &format!("{field}.remoteIpBlocks"),
            Attr::RemoteIp,
            &s.remote_ip_blocks,
            false,
            &mut c,
        );
        self.ips(
            &format!("{field}.notRemoteIpBlocks"),
            Attr::RemoteIp,
            &s.not_remote_ip_blocks,
            true,
            &mut c,
        );
        c.into()
    }

    fn hosts(&mut self, vals: &[String], negate: bool, out: &mut Vec<Check>) {
        if !vals.is_empty() {
            let values = Values::Host(vals.iter().map(|v| HostMatch::parse(v)).collect());
            out.push(Check {
                attr: Attr::Host,
                values,
                negate,
            });
        }
    }

    fn paths(&mut self, field: &str, vals: &[String], negate: bool, out: &mut Vec<Check>) {
        if vals.is_empty() {
            return;
        }
        let ps = self.parse_each(field, vals, |v| {
            PathMatch::parse(v).map_err(|e| format!("`{v}`: {e}"))
        });
        out.push(Check {
            attr: Attr::Path,
            values: Values::Path(ps.into()),
            negate,
        });
    }

    fn operation(&mut self, field: &str, o: &Operation) -> Box<[Check]> {
        let mut c = Vec::new();
        self.hosts(&o.hosts, false, &mut c);
        self.hosts(&o.not_hosts, true, &mut c);
        self.ports(
            &format!("{field}.ports"),
            Attr::DestinationPort,
            &o.ports,
            false,
            &mut c,
        );
        self.ports(
            &format!("{field}.notPorts"),
            Attr::DestinationPort,
            &o.not_ports,
            true,
            &mut c,
        );
        self.strs(Attr::Method, &o.methods, false, &mut c);
        self.strs(Attr::Method, &o.not_methods, true, &mut c);
        self.paths(&format!("{field}.paths"), &o.paths, false, &mut c);
        self.paths(&format!("{field}.notPaths"), &o.not_paths, true, &mut c);
        c.into()
    }

    fn condition(&mut self, field: &str, cond: &Condition, out: &mut Vec<Check>) {
        if cond.unknown_key {
            // The importer could not evaluate this key (`Condition::unknown_key`): fail closed.
            // It holds in DENY and CUSTOM policies and never in ALLOW and AUDIT ones. An empty
            // port set matches no request; negated, it matches every request (HTTP and TCP).
            let holds = matches!(self.policy.action, Action::Deny | Action::Custom);
            out.push(Check {
                attr: Attr::DestinationPort,
                values: Values::Port(Box::new([])),
                negate: holds,
            });
            return;
        }
        if cond.values.is_empty() && cond.not_values.is_empty() {
            self.error(
                field.into(),
                format!("condition `{}` needs `values` or `notValues`", cond.key),
            );
            return;
        }
        let Some(attr) = self.when_key(field, &cond.key) else {
            return;
        };
        for (vals, negate) in [(&cond.values, false), (&cond.not_values, true)] {
            if vals.is_empty() {
                continue;
            }
            match &attr {
                Attr::SourceIp | Attr::RemoteIp | Attr::DestinationIp => {
                    self.ips(&format!("{field}.values"), attr.clone(), vals, negate, out);
                }
                Attr::DestinationPort => {
                    self.ports(&format!("{field}.values"), attr.clone(), vals, negate, out)
                }
                Attr::Principal => self.principals(Attr::Principal, vals, negate, out),
                Attr::CertFingerprint => {
                    let normalized: Vec<String> =
                        vals.iter().map(|v| normalize_fingerprint(v)).collect();
                    self.strs(Attr::CertFingerprint, &normalized, negate, out);
                }
                a => self.strs(a.clone(), vals, negate, out),
            }
        }
    }

    /// Maps a `when` key to an attribute; unknown keys are errors, as in Istio.
    fn when_key(&mut self, field: &str, key: &str) -> Option<Attr> {
        let attr = match key {
            "source.ip" => Attr::SourceIp,
            "remote.ip" => Attr::RemoteIp,
            "source.namespace" => Attr::Namespace,
            "source.principal" => Attr::Principal,
            "request.auth.principal" => Attr::RequestPrincipal,
            "request.auth.audiences" => Attr::AuthAudiences,
            "request.auth.presenter" => Attr::AuthPresenter,
            "destination.ip" => Attr::DestinationIp,
            "destination.port" => Attr::DestinationPort,
            "connection.sni" => Attr::Sni,
            "source.certificate_fingerprint" => Attr::CertFingerprint,
            k => {
                if let Some(name) = k
                    .strip_prefix("request.headers[")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(h) => Attr::Header(h),
                        Err(_) => {
                            self.error(
                                format!("{field}.key"),
                                format!("`{name}` is not a valid HTTP header name"),
                            );
                            return None;
                        }
                    }
                } else if let Some(path) = k.strip_prefix("request.auth.claims") {
                    match parse_claim_path(path) {
                        Some(p) => Attr::AuthClaim(p),
                        None => {
                            self.error(
                                format!("{field}.key"),
                                format!("`{k}`: expected request.auth.claims[name] or request.auth.claims[a][b]"),
                            );
                            return None;
                        }
                    }
                } else {
                    self.error(
                        format!("{field}.key"),
                        format!(
                            "unknown condition key `{k}`; supported: request.headers[NAME], source.ip, remote.ip, \
                             source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
                             request.auth.presenter, request.auth.claims[NAME], destination.ip, destination.port, \
                             connection.sni, source.certificate_fingerprint"
                        ),
                    );
                    return None;
                }
            }
        };
        Some(attr)
    }
}

/// `[a][b]` -> `["a", "b"]`.
fn parse_claim_path(mut s: &str) -> Option<Box<[String]>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let rest = s.strip_prefix('[')?;
        let end = rest.find(']')?;
        let name = &rest[..end];
        if name.is_empty() {
            return None;
        }
        out.push(name.to_owned());
        s = &rest[end + 1..];
    }
    (!out.is_empty()).then(|| out.into())
}
