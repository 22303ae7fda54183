//! Test support for the authorization tests: terse builders for policies and requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic
#![allow(dead_code)] // each test target uses a subset

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderMap;
use jalin_xds::authz::jwt::RequestAuth;
use jalin_xds::authz::{Decision, Engine, EngineConfig, PeerIdentity, RequestAttrs, WorkloadAuthz};
use jalin_xds::model::ResourceMeta;
use jalin_xds::model::WorkloadSelector;
use jalin_xds::model::authz::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};

pub fn v(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

pub fn labels(xs: &[(&str, &str)]) -> BTreeMap<String, String> {
    xs.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn s(f: impl FnOnce(&mut Source)) -> Source {
    let mut x = Source::default();
    f(&mut x);
    x
}

pub fn o(f: impl FnOnce(&mut Operation)) -> Operation {
    let mut x = Operation::default();
    f(&mut x);
    x
}

pub fn when(key: &str, values: &[&str]) -> Condition {
    Condition {
        key: key.into(),
        values: v(values),
        not_values: vec![],
        ..Default::default()
    }
}

pub fn when_not(key: &str, not_values: &[&str]) -> Condition {
    Condition {
        key: key.into(),
        values: vec![],
        not_values: v(not_values),
        ..Default::default()
    }
}

pub fn r(from: Vec<Source>, to: Vec<Operation>, when: Vec<Condition>) -> Rule {
    Rule { from, to, when }
}

/// A rule with nothing in it: matches everything.
pub fn any() -> Rule {
    Rule::default()
}

pub fn pol(ns: &str, name: &str, action: Action, rules: Vec<Rule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        meta: ResourceMeta {
            name: name.into(),
            namespace: ns.into(),
            source: None,
        },
        action,
        rules,
        ..Default::default()
    }
}

pub fn allow(name: &str, rules: Vec<Rule>) -> AuthorizationPolicy {
    pol("foo", name, Action::Allow, rules)
}

pub fn deny(name: &str, rules: Vec<Rule>) -> AuthorizationPolicy {
    pol("foo", name, Action::Deny, rules)
}

pub fn with_selector(mut p: AuthorizationPolicy, l: &[(&str, &str)]) -> AuthorizationPolicy {
    p.selector = Some(WorkloadSelector {
        match_labels: labels(l),
    });
    p
}

pub fn dry_run(mut p: AuthorizationPolicy) -> AuthorizationPolicy {
    p.dry_run = true;
    p
}

pub fn custom(name: &str, provider: &str, rules: Vec<Rule>) -> AuthorizationPolicy {
    let mut p = pol("foo", name, Action::Custom, rules);
    p.provider = Some(provider.into());
    p
}

pub const FP: &str = "3f0c2a1b5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";

/// A request, owned, with defaults: mTLS peer `cluster.local/ns/bar/sa/sleep`, `GET /` to
/// `httpbin.foo:8000` on port 8000, from 10.0.0.5.
#[derive(Clone)]
pub struct Req {
    pub peer: PeerIdentity,
    pub source_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub port: u16,
    pub sni: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: HeaderMap,
    pub auth: Option<RequestAuth>,
}

pub fn req() -> Req {
    Req {
        peer: PeerIdentity::with_fingerprint(
            Some("spiffe://cluster.local/ns/bar/sa/sleep"),
            Some(FP),
        ),
        source_ip: "10.0.0.5".parse().unwrap(),
        remote_ip: "10.0.0.5".parse().unwrap(),
        destination_ip: "10.0.1.9".parse().unwrap(),
        port: 8000,
        sni: None,
        method: "GET".into(),
        host: "httpbin.foo:8000".into(),
        path: "/".into(),
        headers: HeaderMap::new(),
        auth: None,
    }
}

impl Req {
    pub fn principal(mut self, p: &str) -> Self {
        self.peer = PeerIdentity::with_fingerprint(Some(p), Some(FP));
        self
    }
    pub fn plaintext(mut self) -> Self {
        self.peer = PeerIdentity::plaintext();
        self
    }
    pub fn peer(mut self, p: PeerIdentity) -> Self {
        self.peer = p;
        self
    }
    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }
    pub fn path(mut self, p: &str) -> Self {
        self.path = p.into();
        self
    }
    pub fn host(mut self, h: &str) -> Self {
        self.host = h.into();
        self
    }
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    pub fn header(mut self, k: &str, val: &str) -> Self {
        self.headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            val.parse().unwrap(),
        );
        self
    }
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.parse().unwrap();
        self.remote_ip = self.source_ip;
        self
    }
    pub fn remote_ip(mut self, ip: &str) -> Self {
        self.remote_ip = ip.parse().unwrap();
        self
    }
    pub fn destination_ip(mut self, ip: &str) -> Self {
        self.destination_ip = ip.parse().unwrap();
        self
    }
    pub fn sni(mut self, s: &str) -> Self {
        self.sni = Some(s.into());
        self
    }
    pub fn claims(mut self, json: serde_json::Value) -> Self {
        let serde_json::Value::Object(m) = json else {
            panic!("claims must be an object")
        };
        self.auth = Some(RequestAuth::from_trusted_claims(m));
        self
    }
    pub fn attrs(&self) -> RequestAttrs<'_> {
        RequestAttrs {
            peer: &self.peer,
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            method: &self.method,
            host: &self.host,
            path: &self.path,
            headers: &self.headers,
            auth: self.auth.as_ref(),
        }
    }
}

/// The workload every table case targets: namespace `foo`, labels `app=httpbin`.
pub fn workload(policies: &[AuthorizationPolicy], config: &EngineConfig) -> WorkloadAuthz {
    workload_at(policies, config, "foo", &[("app", "httpbin")])
}

pub fn workload_at(
    policies: &[AuthorizationPolicy],
    config: &EngineConfig,
    ns: &str,
    l: &[(&str, &str)],
) -> WorkloadAuthz {
    Engine::compile(policies, config)
        .unwrap_or_else(|e| panic!("{e}"))
        .for_workload(ns, &labels(l))
}

pub fn eval(policies: &[AuthorizationPolicy], r: &Req) -> Decision {
    workload(policies, &EngineConfig::default()).evaluate(&r.attrs())
}
