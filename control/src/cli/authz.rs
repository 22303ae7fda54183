//! `jalin authz explain`: load Istio policies as `jalin import` does, build the request described
//! on the command line, evaluate it with the proxy's authorization engine, and print the decision
//! with the deciding policy and rule (file and line of each) and every policy that applied.
//!
//! Exit codes: 0 allowed, 1 denied (or waiting on a CUSTOM external authorizer), 2 when the
//! command could not run (bad arguments, invalid policies).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};
use jalin_xds::authz::{
    Decision, Engine, EngineConfig, PeerIdentity, PolicyMatch, PolicyTrace, Reason, RequestAttrs,
    Verdict,
};
use jalin_xds::model::authz::Action;
use serde::Serialize;

use super::Format;
use super::policy::render;
use crate::istio::{Kind, Mode, Resource, Severity, convert, load_paths_with};

/// `jalin authz ...`.
#[derive(Debug, Subcommand)]
pub enum AuthzCommand {
    /// Evaluate one request against the policies and say which policy and rule decide it.
    Explain(ExplainArgs),
}

/// The request to explain. Unset attributes are absent (no peer certificate, no header).
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Istio YAML: files or directories (read as `jalin import` reads them).
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// The workload the request is sent to: `namespace/workload`.
    #[arg(long)]
    pub to: String,
    /// The workload's labels, `k=v,k=v`; default `app=<workload>`.
    #[arg(long)]
    pub labels: Option<String>,
    /// The peer's identity, `<trust-domain>/ns/<ns>/sa/<sa>` (or `spiffe://...`); without it the
    /// peer is plaintext (no certificate).
    #[arg(long)]
    pub principal: Option<String>,
    /// The peer certificate's SHA-256 (hex); default: a verified certificate whose fingerprint
    /// is not given (matches `source.certificate_fingerprint: "*"` only). Needs `--principal`.
    #[arg(long, requires = "principal")]
    pub fingerprint: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request path (with query, if any); normalised as the proxy does before matching.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// `:authority`; default the workload name.
    #[arg(long)]
    pub host: Option<String>,
    /// A request header `name=value`; repeat for more (a repeated name adds a value).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Destination port the request arrived on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address of the peer (`source.ip`, `ipBlocks`; also `remote.ip`).
    #[arg(long, default_value = "127.0.0.1")]
    pub source_ip: IpAddr,
    /// Istio's root namespace (its policies apply mesh-wide).
    #[arg(long, default_value = jalin_xds::authz::DEFAULT_ROOT_NAMESPACE)]
    pub root_namespace: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Where a policy (and each of its rules) was written.
#[derive(Debug, Clone, Serialize)]
struct Origin {
    file: String,
    line: usize,
    rule_lines: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct Deciding {
    policy: String,
    action: Action,
    rule: usize,
    file: Option<String>,
    line: Option<usize>,
    rule_line: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Applied {
    policy: String,
    action: Action,
    dry_run: bool,
    matched_rule: Option<usize>,
    file: Option<String>,
    line: Option<usize>,
    rule_line: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Explanation {
    decision: &'static str,
    reason: &'static str,
    explanation: String,
    deciding: Option<Deciding>,
    custom_provider: Option<String>,
    audit: Option<Deciding>,
    policies: Vec<Applied>,
}

/// Run `jalin authz ...`.
pub fn run(cmd: AuthzCommand) -> ExitCode {
    match cmd {
        AuthzCommand::Explain(a) => match explain(&a) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("jalin authz explain: {msg}");
                ExitCode::from(2)
            }
        },
    }
}

fn parse_pairs(text: &str, what: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{what} `{kv}` is not `key=value`"))
        })
        .collect()
}

fn headers(list: &[String]) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for item in list {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("--header `{item}` is not `name=value`"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("--header `{item}`: `{k}` is not a valid HTTP header name"))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| format!("--header `{item}`: the value is not a valid header value"))?;
        h.append(name, value);
    }
    Ok(h)
}

fn origins(resources: &[Resource]) -> BTreeMap<String, Origin> {
    resources
        .iter()
        .filter(|r| r.kind == Kind::AuthorizationPolicy)
        .map(|r| {
            let rules = match &r.spec {
                crate::istio::Spec::AuthorizationPolicy(s) => s.rules.as_ref().map_or(0, Vec::len),
                _ => 0,
            };
            let origin = Origin {
                file: r.file.clone(),
                line: r.line,
                rule_lines: (0..rules)
                    .map(|i| r.locator.line(&format!("spec.rules[{i}]")))
                    .collect(),
            };
            (format!("{}/{}", r.namespace, r.name), origin)
        })
        .collect()
}

fn deciding(m: &PolicyMatch, origins: &BTreeMap<String, Origin>) -> Deciding {
    let o = origins.get(&*m.policy);
    Deciding {
        policy: m.policy.to_string(),
        action: m.action,
        rule: m.rule,
        file: o.map(|o| o.file.clone()),
        line: o.map(|o| o.line),
        rule_line: o.and_then(|o| o.rule_lines.get(m.rule).copied()),
    }
}

fn applied(t: &PolicyTrace, origins: &BTreeMap<String, Origin>) -> Applied {
    let o = origins.get(&*t.policy);
    Applied {
        policy: t.policy.to_string(),
        action: t.action,
        dry_run: t.dry_run,
        matched_rule: t.matched_rule,
        file: o.map(|o| o.file.clone()),
        line: o.map(|o| o.line),
        rule_line: o.and_then(|o| t.matched_rule.and_then(|i| o.rule_lines.get(i).copied())),
    }
}

fn action_str(a: Action) -> &'static str {
    match a {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    }
}

fn reason(d: &Decision) -> (&'static str, &'static str) {
    match d.reason {
        Reason::NoPolicy => (
            "no-policy",
            "no ALLOW or DENY policy applies to the workload, so the request is allowed",
        ),
        Reason::AllowMatched => (
            "allow-matched",
            "an ALLOW policy matched and no DENY policy did",
        ),
        Reason::DenyMatched => (
            "deny-matched",
            "a DENY policy matched; DENY is evaluated before ALLOW, so ALLOW policies cannot override it",
        ),
        Reason::NoAllowMatched => (
            "no-allow-matched",
            "ALLOW policies apply to the workload and none of their rules matched",
        ),
        Reason::CustomDenied => (
            "custom-denied",
            "the CUSTOM external authorizer denied the request",
        ),
        Reason::CustomProviderConflict => (
            "custom-provider-conflict",
            "several CUSTOM providers apply to the workload; only one is supported, so every request is denied",
        ),
        Reason::InvalidPath => (
            "invalid-path",
            "the path cannot be normalised (e.g. `%00`, or not in origin form); answered 400 before any policy",
        ),
    }
}

fn where_(d: &Deciding) -> String {
    match (&d.file, d.line, d.rule_line) {
        (Some(f), Some(l), Some(rl)) => format!("{f}:{l} (rules[{}] at {f}:{rl})", d.rule),
        (Some(f), Some(l), None) => format!("{f}:{l} (rules[{}])", d.rule),
        _ => format!("rules[{}]", d.rule),
    }
}

fn explain(a: &ExplainArgs) -> Result<ExitCode, String> {
    let (ns, workload) =
        a.to.split_once('/')
            .filter(|(n, w)| !n.is_empty() && !w.is_empty() && !w.contains('/'))
            .ok_or_else(|| format!("--to `{}` is not `namespace/workload`", a.to))?;
    let labels = match &a.labels {
        Some(l) => parse_pairs(l, "--labels entry")?,
        None => BTreeMap::from([("app".to_string(), workload.to_string())]),
    };
    let headers = headers(&a.headers)?;

    let mut loaded = load_paths_with(&a.config, Mode::Import);
    let native = convert::convert(&loaded.resources, &mut loaded.findings);
    let errors: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(render)
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "the configuration is invalid; fix these first (see `jalin validate`):\n{}",
            errors.join("\n")
        ));
    }
    let config = EngineConfig {
        root_namespace: a.root_namespace.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::compile(&native.authorization_policies, &config)
        .map_err(|e| format!("the policies do not compile: {e}"))?;
    let authz = engine.for_workload(ns, &labels);

    // A verified certificate without a given fingerprint: any stand-in value matches `*` and
    // no real fingerprint (64 hex digits), which is what "fingerprint not given" means.
    let peer = match &a.principal {
        None => PeerIdentity::plaintext(),
        Some(p) => PeerIdentity::with_fingerprint(
            Some(p),
            Some(a.fingerprint.as_deref().unwrap_or("unspecified")),
        ),
    };
    let host = a.host.clone().unwrap_or_else(|| workload.to_string());
    let req = RequestAttrs {
        peer: &peer,
        source_ip: a.source_ip,
        remote_ip: a.source_ip,
        destination_ip: IpAddr::from([127, 0, 0, 1]),
        destination_port: a.port,
        sni: None,
        method: &a.method,
        host: &host,
        path: &a.path,
        headers: &headers,
        auth: None,
    };
    let decision = authz.evaluate(&req);
    let origins = origins(&loaded.resources);
    let (reason_code, text) = reason(&decision);
    let out = Explanation {
        decision: match (decision.verdict, decision.custom_check()) {
            (Verdict::Deny, _) => "DENY",
            (Verdict::Allow, None) => "ALLOW",
            (Verdict::Allow, Some(_)) => "PENDING-CUSTOM",
        },
        reason: reason_code,
        explanation: text.to_string(),
        deciding: decision.policy.as_ref().map(|m| deciding(m, &origins)),
        custom_provider: decision.custom_check().map(|c| c.provider.to_string()),
        audit: decision.audit.as_ref().map(|m| deciding(m, &origins)),
        policies: authz
            .explain(&req)
            .iter()
            .map(|t| applied(t, &origins))
            .collect(),
    };
    match a.format {
        Format::Json => {
            let s = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
            println!("{s}");
        }
        Format::Text => print_text(&out, a, ns, workload, &labels),
    }
    Ok(if decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(
    out: &Explanation,
    a: &ExplainArgs,
    ns: &str,
    workload: &str,
    labels: &BTreeMap<String, String>,
) {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "request: {} {} to {ns}/{workload} [{}] port {} from {}",
        a.method,
        a.path,
        labels.join(","),
        a.port,
        a.principal
            .as_deref()
            .unwrap_or("a plaintext peer (no certificate)")
    );
    println!("decision: {}: {}", out.decision, out.explanation);
    match &out.deciding {
        Some(d) => println!(
            "deciding policy: {} {} {}",
            action_str(d.action),
            d.policy,
            where_(d)
        ),
        None => println!("deciding policy: none"),
    }
    if let Some(p) = &out.custom_provider {
        println!("external check: CUSTOM provider `{p}` must allow the request too");
    }
    if let Some(d) = &out.audit {
        println!("audited by: {} {}", d.policy, where_(d));
    }
    if out.policies.is_empty() {
        println!("policies applying to the workload: none");
    } else {
        println!("policies applying to the workload (evaluation order):");
        for p in &out.policies {
            let at = match (&p.file, p.line) {
                (Some(f), Some(l)) => format!("{f}:{l}"),
                _ => String::new(),
            };
            let m = match (p.matched_rule, p.rule_line) {
                (Some(i), Some(l)) => format!("rules[{i}] matched (line {l})"),
                (Some(i), None) => format!("rules[{i}] matched"),
                (None, _) => "no rule matched".into(),
            };
            let dry = if p.dry_run { " (dry-run)" } else { "" };
            println!("  {:6} {}{dry}  {at}  {m}", action_str(p.action), p.policy);
        }
    }
}
