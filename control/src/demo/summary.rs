//! The demo's summary: what the proxies' `/metrics`, the demo apps and the demo's own clients
//! report, rendered as a live screen (ANSI redraw), one line per second, or the final block,
//! and the check that each kind of traffic was seen.
//!
//! Every number comes from a running component: request counts and response codes from the
//! sidecars (`istio_requests_total`), denials with the deciding policy from the sidecars'
//! authorization metric, ejections from `jalin_outlier_events_total`, and latency from the
//! demo clients' HDR histograms. Nothing is inferred from what the policies say should happen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use super::apps::Apps;
use super::mesh::Capabilities;
use super::scrape::{Sample, sum};
use super::traffic::{Class, Expect, Running};

/// Istio's request counter, labelled by `reporter` and `response_code`.
pub const REQUESTS: &str = "istio_requests_total";
/// jalin's outlier counter (`cluster`, `event`, `reason`).
pub const OUTLIER: &str = "jalin_outlier_events_total";
/// Prefix of jalin's authorization decision metrics (`policy` and a `deny` result label).
pub const AUTHZ_PREFIX: &str = "jalin_authz";

/// Request counts by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Codes {
    pub total: u64,
    pub ok: u64,
    pub denied: u64,
    pub failed: u64,
}

/// A counter's value as a count (counters are whole numbers; a float sum of none is -0.0).
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

impl Codes {
    fn from(samples: &[Sample], reporter: &str) -> Self {
        let of = |p: &dyn Fn(&str) -> bool| {
            count(sum(samples, REQUESTS, |s| {
                s.label("reporter") == reporter && p(s.label("response_code"))
            }))
        };
        Self {
            total: of(&|_| true),
            ok: of(&|c| c.starts_with('2')),
            denied: of(&|c| c == "403"),
            failed: of(&|c| c.starts_with('5')),
        }
    }
}

/// One proxy's reading.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub name: String,
    /// False when the last scrape failed.
    pub up: bool,
    pub inbound: Codes,
    pub outbound: Codes,
    /// Denials by deciding policy.
    pub denials: BTreeMap<String, u64>,
    /// Ejections by cluster.
    pub ejections: BTreeMap<String, u64>,
}

impl Reading {
    /// Reads the samples of one proxy's `/metrics`.
    pub fn from_samples(name: &str, samples: &[Sample]) -> Self {
        let mut denials = BTreeMap::new();
        let mut ejections = BTreeMap::new();
        for s in samples {
            if s.name.starts_with(AUTHZ_PREFIX)
                && ["result", "decision", "action", "verdict"]
                    .iter()
                    .any(|k| s.label(k).eq_ignore_ascii_case("deny"))
            {
                let policy = match s.label("policy") {
                    "" => "(no policy label)".to_owned(),
                    p => p.to_owned(),
                };
                *denials.entry(policy).or_insert(0) += count(s.value);
            }
            if s.name == OUTLIER && s.label("event") == "ejected" {
                *ejections.entry(s.label("cluster").to_owned()).or_insert(0) += count(s.value);
            }
        }
        Self {
            name: name.to_owned(),
            up: true,
            inbound: Codes::from(samples, "destination"),
            outbound: Codes::from(samples, "source"),
            denials,
            ejections,
        }
    }
}

/// The kinds of traffic the demo must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Allowed,
    Denied,
    Emergency,
    FailingUpstream,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Allowed,
        Kind::Denied,
        Kind::Emergency,
        Kind::FailingUpstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Allowed => "allowed",
            Kind::Denied => "denied",
            Kind::Emergency => "emergency",
            Kind::FailingUpstream => "failing-upstream",
        }
    }
}

/// Whether a kind was seen.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Seen(String),
    NotSeen(String),
    /// The stage that produces it is not configured in this build.
    NotInBuild(&'static str),
}

/// Everything one summary shows.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub elapsed_s: u64,
    pub duration_s: Option<u64>,
    pub readings: &'a [Reading],
    pub scenarios: &'a [Running],
    pub apps: &'a Apps,
    pub caps: Capabilities,
    /// The sidecars of the instances that fail on purpose.
    pub failing_proxies: &'a [&'a str],
    pub header: &'a str,
    /// Denials by deciding policy, from the sidecars' logs.
    pub denial_log: &'a BTreeMap<String, u64>,
}

struct Totals {
    allowed_ok: u64,
    denied_seen_by_clients: u64,
    emergency_ok: u64,
    client_5xx: u64,
}

impl Snapshot<'_> {
    fn totals(&self) -> Totals {
        let mut t = Totals {
            allowed_ok: 0,
            denied_seen_by_clients: 0,
            emergency_ok: 0,
            client_5xx: 0,
        };
        for r in self.scenarios {
            let Ok(s) = r.stats.lock() else { continue };
            t.denied_seen_by_clients += s.denied;
            t.client_5xx += s.failed;
            if r.scenario.expect == Expect::Allow {
                match r.scenario.class {
                    Class::Standard => t.allowed_ok += s.ok,
                    Class::Emergency => t.emergency_ok += s.ok,
                }
            }
        }
        t
    }

    fn latency(&self, class: Class) -> Option<(f64, f64, u64)> {
        let mut merged: Option<Histogram<u64>> = None;
        for r in self.scenarios {
            if r.scenario.class != class || r.scenario.expect != Expect::Allow {
                continue;
            }
            let Ok(s) = r.stats.lock() else { continue };
            match &mut merged {
                Some(m) => {
                    let _ = m.add(&s.latency);
                }
                None => merged = Some(s.latency.clone()),
            }
        }
        let h = merged?;
        if h.is_empty() {
            return None;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some((ms(0.5), ms(0.99), h.len()))
    }

    fn denials(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.readings {
            for (p, n) in &r.denials {
                *out.entry(p.clone()).or_insert(0) += n;
            }
        }
        out
    }

    fn ejections(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.readings {
            for (c, n) in &r.ejections {
                *out.entry(c.clone()).or_insert(0) += n;
            }
        }
        out
    }

    fn inbound_total(&self, pick: impl Fn(&Codes) -> u64) -> u64 {
        self.readings.iter().map(|r| pick(&r.inbound)).sum()
    }

    /// Who answered the emergency calls, by the answering instance's subset (its `priority`
    /// label), from the `x-demo-instance` header of each answer.
    fn emergency_by_subset(&self) -> String {
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for r in self.scenarios {
            if r.scenario.class != Class::Emergency || r.scenario.expect != Expect::Allow {
                continue;
            }
            let Ok(s) = r.stats.lock() else { continue };
            for (instance, n) in &s.by_instance {
                let subset = self
                    .apps
                    .get(instance)
                    .and_then(|a| a.instance.priority)
                    .unwrap_or("none");
                *by.entry(subset).or_insert(0) += n;
            }
        }
        by.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether each kind of traffic was seen, from the components' own numbers.
    pub fn verdicts(&self) -> Vec<(Kind, Verdict)> {
        let t = self.totals();
        let denials: u64 = self.denials().values().sum();
        let ejections: u64 = self.ejections().values().sum();
        let served_ok = self.inbound_total(|c| c.ok);
        let failing_5xx: u64 = self
            .readings
            .iter()
            .filter(|r| self.failing_proxies.contains(&r.name.as_str()))
            .map(|r| r.inbound.failed)
            .sum();
        // What the failing apps themselves answered: their sidecars must count each once.
        let apps_5xx: u64 = self
            .failing_proxies
            .iter()
            .filter_map(|name| self.apps.get(name))
            .map(|a| a.counters.failed.load(Ordering::Relaxed))
            .sum();
        Kind::ALL
            .iter()
            .map(|&k| {
                let v = match k {
                    Kind::Allowed if t.allowed_ok > 0 && served_ok > 0 => Verdict::Seen(format!(
                        "{} standard calls answered 2xx; sidecars served {served_ok} inbound 2xx",
                        t.allowed_ok
                    )),
                    Kind::Allowed => Verdict::NotSeen(
                        "no standard call was answered 2xx through the sidecars".into(),
                    ),
                    Kind::Denied => match self.caps.authz {
                        Some(reason) => Verdict::NotInBuild(reason),
                        None if denials > 0 && t.denied_seen_by_clients > 0 => {
                            Verdict::Seen(format!(
                                "{denials} denials counted by the sidecars, {} 403s seen by clients",
                                t.denied_seen_by_clients
                            ))
                        }
                        None => Verdict::NotSeen(
                            "no sidecar counted an authorization denial".into(),
                        ),
                    },
                    Kind::Emergency if t.emergency_ok > 0 => Verdict::Seen(format!(
                        "{} emergency calls answered 2xx; answered by subset: {}",
                        t.emergency_ok,
                        self.emergency_by_subset()
                    )),
                    Kind::Emergency => {
                        Verdict::NotSeen("no emergency call was answered 2xx".into())
                    }
                    Kind::FailingUpstream => {
                        if failing_5xx == 0 {
                            Verdict::NotSeen(format!(
                                "the sidecars of {} counted no 5xx",
                                self.failing_proxies.join(", ")
                            ))
                        } else if self.caps.outlier.is_none() && ejections == 0 {
                            Verdict::NotSeen(format!(
                                "{failing_5xx} upstream 5xx but no ejection was counted"
                            ))
                        } else {
                            let ej = match self.caps.outlier {
                                None => format!(", {ejections} ejections"),
                                Some(_) => String::new(),
                            };
                            Verdict::Seen(format!(
                                "{failing_5xx} 5xx from the failing upstreams' sidecars ({apps_5xx} answered by their apps), {} 5xx seen by clients{ej}",
                                t.client_5xx
                            ))
                        }
                    }
                };
                (k, v)
            })
            .collect()
    }

    /// The full summary block (live screen and final summary).
    pub fn render(&self) -> String {
        let mut o = String::new();
        let clock = match self.duration_s {
            Some(d) => format!("{}s / {d}s", self.elapsed_s),
            None => format!("{}s (Ctrl-C to stop)", self.elapsed_s),
        };
        let _ = writeln!(o, "{} — {clock}", self.header);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<28} {:>8} {:>8} {:>8} {:>8}",
            "SIDECAR", "REQUESTS", "2xx", "403", "5xx"
        );
        for r in self.readings {
            let (dir, c) = if r.inbound.total > 0 || r.outbound.total == 0 {
                ("in ", r.inbound)
            } else {
                ("out", r.outbound)
            };
            let down = if r.up { "" } else { "  (metrics unreachable)" };
            let _ = writeln!(
                o,
                "{:<24} {dir} {:>8} {:>8} {:>8} {:>8}{down}",
                r.name, c.total, c.ok, c.denied, c.failed
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "AUTHORIZATION DENIALS (deciding policy, from the sidecars)"
        );
        match self.caps.authz {
            Some(reason) => {
                let _ = writeln!(o, "  not enforced: {reason}");
            }
            None => {
                let total: u64 = self.denials().values().sum();
                let _ = writeln!(
                    o,
                    "  {:<72} {total:>8}",
                    "all denials (jalin_authz_decisions_total{result=\"deny\"})"
                );
                for (p, n) in self.denial_log {
                    let _ = writeln!(o, "  {p:<72} {n:>8}");
                }
            }
        }
        let _ = writeln!(o, "OUTLIER EJECTIONS (from the sidecars)");
        let e = self.ejections();
        match (self.caps.outlier, e.is_empty()) {
            (Some(reason), true) => {
                let _ = writeln!(o, "  not running: {reason}");
            }
            (None, true) => {
                let _ = writeln!(o, "  none yet");
            }
            _ => {}
        }
        for (c, n) in e {
            let _ = writeln!(o, "  {c:<72} {n:>8}");
        }
        let _ = writeln!(
            o,
            "CALLS (demo clients)                                             2xx      403      5xx   policy rule"
        );
        for r in self.scenarios {
            let Ok(s) = r.stats.lock() else { continue };
            let expect = match r.scenario.expect {
                Expect::Allow => "allow",
                Expect::Deny => "deny",
            };
            let _ = writeln!(
                o,
                "  {:<22} {:<28} {expect:<5} {:>8} {:>8} {:>8}   {}",
                r.scenario.name,
                format!("{} ->", r.scenario.client),
                s.ok,
                s.denied,
                s.failed + s.errors,
                r.scenario.policy
            );
        }
        let _ = writeln!(o, "DEMO APPS (answers served)");
        for a in &self.apps.apps {
            let _ = writeln!(
                o,
                "  {:<26} {:>8} ok {:>8} failed{}",
                a.instance.name,
                a.counters.ok.load(Ordering::Relaxed),
                a.counters.failed.load(Ordering::Relaxed),
                a.instance
                    .priority
                    .map(|p| format!("   subset {p}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            o,
            "LATENCY (demo clients, 2xx answers)        p50       p99   samples"
        );
        for (label, class) in [
            ("emergency", Class::Emergency),
            ("standard", Class::Standard),
        ] {
            match self.latency(class) {
                Some((p50, p99, n)) => {
                    let _ = writeln!(o, "  {label:<38} {p50:>7.2}ms {p99:>7.2}ms {n:>9}");
                }
                None => {
                    let _ = writeln!(o, "  {label:<38}       -         -          0");
                }
            }
        }
        o
    }

    /// One line for `--no-tui`.
    pub fn line(&self) -> String {
        let t = self.totals();
        let denials: u64 = self.denials().values().sum();
        let ejections: u64 = self.ejections().values().sum();
        let lat = |c| {
            self.latency(c)
                .map(|(a, b, _)| format!("{a:.2}/{b:.2}ms"))
                .unwrap_or_else(|| "-".into())
        };
        let denied = match self.caps.authz {
            Some(_) => "not-enforced".to_owned(),
            None => format!("{denials}"),
        };
        format!(
            "[{:>3}s] sidecar-requests={} allowed={} denied={denied} emergency={} upstream-5xx={} ejections={ejections} p50/p99 emergency={} standard={}",
            self.elapsed_s,
            self.inbound_total(|c| c.total),
            t.allowed_ok,
            t.emergency_ok,
            self.inbound_total(|c| c.failed),
            lat(Class::Emergency),
            lat(Class::Standard),
        )
    }
}

/// The verdict lines of the final summary, and whether the run passes: every kind whose stage
/// is in the build was seen.
pub fn verdict_report(verdicts: &[(Kind, Verdict)]) -> (String, bool) {
    let mut o = String::new();
    let mut pass = true;
    let _ = writeln!(o, "TRAFFIC KINDS");
    for (k, v) in verdicts {
        let line = match v {
            Verdict::Seen(d) => format!("  seen        {:<18} {d}", k.as_str()),
            Verdict::NotSeen(d) => {
                pass = false;
                format!("  NOT SEEN    {:<18} {d}", k.as_str())
            }
            Verdict::NotInBuild(d) => format!("  not in build {:<17} {d}", k.as_str()),
        };
        let _ = writeln!(o, "{line}");
    }
    (o, pass)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scrape::parse_metrics;

    #[test]
    fn reading_counts_codes_denials_and_ejections() {
        let text = "istio_requests_total{reporter=\"destination\",response_code=\"200\"} 7\n\
            istio_requests_total{reporter=\"destination\",response_code=\"403\"} 2\n\
            istio_requests_total{reporter=\"destination\",response_code=\"503\"} 1\n\
            istio_requests_total{reporter=\"source\",response_code=\"200\"} 4\n\
            jalin_authz_decisions_total{policy=\"child-services/p\",result=\"deny\"} 2\n\
            jalin_authz_decisions_total{policy=\"child-services/p\",result=\"allow\"} 7\n\
            jalin_outlier_events_total{cluster=\"c\",event=\"ejected\",reason=\"5xx\"} 1\n\
            jalin_outlier_events_total{cluster=\"c\",event=\"readmitted\",reason=\"\"} 1\n";
        let r = Reading::from_samples("x", &parse_metrics(text));
        assert_eq!(
            r.inbound,
            Codes {
                total: 10,
                ok: 7,
                denied: 2,
                failed: 1
            }
        );
        assert_eq!(r.outbound.ok, 4);
        assert_eq!(r.denials["child-services/p"], 2);
        assert_eq!(r.ejections["c"], 1);
    }

    #[test]
    fn a_kind_not_seen_fails_the_run_and_one_not_in_build_does_not() {
        let (text, pass) = verdict_report(&[
            (Kind::Allowed, Verdict::Seen("x".into())),
            (Kind::Denied, Verdict::NotInBuild("no authz")),
        ]);
        assert!(pass);
        assert!(text.contains("not in build"));
        let (text, pass) = verdict_report(&[(Kind::Emergency, Verdict::NotSeen("none".into()))]);
        assert!(!pass);
        assert!(text.contains("NOT SEEN    emergency"));
    }
}
