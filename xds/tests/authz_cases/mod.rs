//! The authorization table's cases and their builders.
#![allow(dead_code)] // builders are shared by the case files

mod identity;
mod request;
mod structure;

use jalin_xds::authz::{EngineConfig, TrustDomains};
use jalin_xds::model::authz::{AuthorizationPolicy, Condition, Operation, Source};

use crate::support::*;

/// The default peer of [`req`].
pub const BAR_SLEEP: &str = "cluster.local/ns/bar/sa/sleep";

pub struct Case {
    pub name: &'static str,
    pub policies: Vec<AuthorizationPolicy>,
    pub req: Req,
    pub allow: bool,
    /// `""`: not checked; `"-"`: no deciding policy; `"ns/name#rule"`.
    pub by: &'static str,
    pub config: EngineConfig,
}

pub fn c(
    name: &'static str,
    policies: Vec<AuthorizationPolicy>,
    req: Req,
    allow: bool,
    by: &'static str,
) -> Case {
    Case {
        name,
        policies,
        req,
        allow,
        by,
        config: EngineConfig::default(),
    }
}

impl Case {
    fn cfg(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }
}

pub fn allow_get_on(paths: &[&str]) -> Vec<AuthorizationPolicy> {
    vec![allow(
        "paths",
        vec![r(vec![], vec![o(|o| o.paths = v(paths))], vec![])],
    )]
}

pub fn deny_paths(paths: &[&str]) -> Vec<AuthorizationPolicy> {
    vec![deny(
        "block",
        vec![r(vec![], vec![o(|o| o.paths = v(paths))], vec![])],
    )]
}

pub fn allow_from(f: impl FnOnce(&mut Source)) -> Vec<AuthorizationPolicy> {
    vec![allow("from", vec![r(vec![s(f)], vec![], vec![])])]
}

pub fn allow_to(f: impl FnOnce(&mut Operation)) -> Vec<AuthorizationPolicy> {
    vec![allow("to", vec![r(vec![], vec![o(f)], vec![])])]
}

pub fn allow_when(conds: Vec<Condition>) -> Vec<AuthorizationPolicy> {
    vec![allow("when", vec![r(vec![], vec![], conds)])]
}

pub fn deny_when(conds: Vec<Condition>) -> Vec<AuthorizationPolicy> {
    vec![deny("when", vec![r(vec![], vec![], conds)])]
}

pub fn td(local: &str, aliases: &[&str]) -> EngineConfig {
    EngineConfig {
        trust_domains: TrustDomains {
            local: local.into(),
            aliases: v(aliases),
        },
        ..Default::default()
    }
}

/// Every case of the table.
pub fn all() -> Vec<Case> {
    let mut v = structure::structure();
    v.extend(identity::identity());
    v.extend(request::request());
    v
}
