//! Reports: the JSON shapes of each scenario (stable field names, microseconds) and their text
//! rendering, plus the side-by-side comparison of several saved reports.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::client::HttpVersion;
use crate::record::{Added, Percentiles, TargetStats};

/// The tool and version that wrote a report.
pub fn tool() -> String {
    format!("jalin-bench {}", env!("CARGO_PKG_VERSION"))
}

/// How the load was generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSettings {
    /// HTTP version.
    pub http: HttpVersion,
    /// Request method.
    pub method: String,
    /// Request body size.
    pub request_body_bytes: usize,
    /// Connections per target.
    pub connections: usize,
    /// Concurrent streams per connection (1 for HTTP/1.1).
    pub h2_streams: usize,
    /// Per-request bound in seconds.
    pub timeout_s: f64,
    /// Whether requests were paced with the µs-precise timer.
    pub precise_timer: bool,
}

/// One target's URL and measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// The URL.
    pub url: String,
    /// Counts and percentiles.
    pub stats: TargetStats,
}

/// `jalin-bench run`: open-loop load against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLoopReport {
    /// `"open-loop"`.
    pub scenario: String,
    /// Tool and version.
    pub tool: String,
    /// Load settings.
    pub settings: LoadSettings,
    /// Intended arrival rate.
    pub rate_rps: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// The target.
    pub target: TargetReport,
}

/// One phase of an overhead run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Round number (each round runs both targets).
    pub round: u32,
    /// `"direct"` or `"via"`.
    pub target: String,
    /// Requests in the phase.
    pub requests: u64,
    /// Errors plus non-2xx responses in the phase.
    pub errors: u64,
    /// Median latency in the phase (µs).
    pub p50_us: f64,
    /// 99th percentile latency in the phase (µs).
    pub p99_us: f64,
}

/// `jalin-bench overhead`: direct vs. through a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadReport {
    /// `"overhead"`.
    pub scenario: String,
    /// Tool and version.
    pub tool: String,
    /// Load settings (the same for both targets).
    pub settings: LoadSettings,
    /// Intended arrival rate during each phase.
    pub rate_rps: f64,
    /// Warm-up seconds per target.
    pub warmup_s: f64,
    /// Measured seconds per target.
    pub duration_s: f64,
    /// Phases per target.
    pub phases: u32,
    /// Straight to the upstream.
    pub direct: TargetReport,
    /// What the `via` target is called in the text and the phases (`"via"` by default).
    #[serde(default = "default_via_name")]
    pub via_name: String,
    /// Through the proxy.
    pub via: TargetReport,
    /// Latency the proxy adds at each percentile (via − direct, µs, from intended start).
    pub added_us: Added,
    /// Service time the proxy adds at each percentile (via − direct, µs, from actual send).
    pub added_service_us: Added,
    /// Other chains to the same upstream measured in the same rounds (e.g. another proxy).
    #[serde(default)]
    pub others: Vec<ChainReport>,
    /// Each phase in run order, to show drift.
    pub phase_results: Vec<PhaseSummary>,
}

fn default_via_name() -> String {
    "via".to_owned()
}

/// One more chain of an overhead run, with what it adds over the direct path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The chain's name (`--compare NAME=URL`).
    pub name: String,
    /// Its URL and results.
    pub target: TargetReport,
    /// Latency it adds at each percentile (chain − direct, µs, from intended start).
    pub added_us: Added,
    /// Service time it adds at each percentile (chain − direct, µs, from actual send).
    pub added_service_us: Added,
}

/// `jalin-bench throughput`: closed-loop maximum rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputReport {
    /// `"throughput"`.
    pub scenario: String,
    /// Tool and version.
    pub tool: String,
    /// Load settings.
    pub settings: LoadSettings,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// The target.
    pub target: TargetReport,
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1_000.0)
}

fn settings_line(s: &LoadSettings) -> String {
    let streams = if s.http == HttpVersion::Http2 {
        format!(", {} streams/conn", s.h2_streams)
    } else {
        String::new()
    };
    format!(
        "{} {}, {} B request body, {} connections{}, {} timer",
        s.http,
        s.method,
        s.request_body_bytes,
        s.connections,
        streams,
        if s.precise_timer {
            "µs (timerfd)"
        } else {
            "1 ms (tokio)"
        }
    )
}

const HEADER: &str = "                requests        ok   non-2xx    errors    unsent      req/s   p50 ms   p90 ms   p99 ms p99.9 ms   max ms";

fn row(out: &mut String, name: &str, s: &TargetStats, p: &Percentiles) {
    let _ = writeln!(
        out,
        "{name:<12}{:>12}{:>10}{:>10}{:>10}{:>10}{:>11.1}{:>9}{:>9}{:>9}{:>9}{:>9}",
        s.requests,
        s.ok,
        s.non_2xx,
        s.errors,
        s.unsent,
        s.achieved_rps,
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.max)
    );
}

fn errors(out: &mut String, name: &str, s: &TargetStats) {
    for (kind, n) in &s.error_kinds {
        let _ = writeln!(out, "  {name} error ×{n}: {kind}");
    }
    for (status, n) in &s.statuses {
        if !status.starts_with('2') {
            let _ = writeln!(out, "  {name} status {status} ×{n}");
        }
    }
}

fn added_row(out: &mut String, name: &str, a: &Added) {
    let signed = |us: f64| format!("{:+.3}", us / 1_000.0);
    let _ = writeln!(
        out,
        "{name:<12}{:>63}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "",
        signed(a.p50),
        signed(a.p90),
        signed(a.p99),
        signed(a.p999),
        signed(a.max)
    );
}

impl OpenLoopReport {
    /// Human-readable summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "open loop: {} req/s to {} for {} s (warm-up {} s)\n{}\nlatency from intended start (corrected for coordinated omission):\n{HEADER}\n",
            self.rate_rps,
            self.target.url,
            self.duration_s,
            self.warmup_s,
            settings_line(&self.settings)
        );
        let s = &self.target.stats;
        row(&mut out, "latency", s, &s.latency_us);
        row(&mut out, "service", s, &s.service_time_us);
        row(&mut out, "send delay", s, &s.send_delay_us);
        errors(&mut out, "target", s);
        out
    }
}

impl OverheadReport {
    /// The measured chains in order: `via` first, then the others, each with its added latency.
    fn chains(&self) -> Vec<(&str, &TargetReport, &Added, &Added)> {
        let mut chains = vec![(
            self.via_name.as_str(),
            &self.via,
            &self.added_us,
            &self.added_service_us,
        )];
        chains.extend(
            self.others
                .iter()
                .map(|c| (c.name.as_str(), &c.target, &c.added_us, &c.added_service_us)),
        );
        chains
    }

    /// Human-readable summary: every target and the latency each chain adds.
    pub fn text(&self) -> String {
        let chains = self.chains();
        let order = if chains.len() == 1 {
            "ABBA"
        } else {
            "ABC…CBA"
        };
        let mut out = format!(
            "overhead: {} req/s, {} s per target in {} alternating phases ({order}), warm-up {} s\n{}\n  direct: {}\n",
            self.rate_rps,
            self.duration_s,
            self.phases,
            self.warmup_s,
            settings_line(&self.settings),
            self.direct.url,
        );
        for (name, target, _, _) in &chains {
            let _ = writeln!(
                out,
                "  {name}:{:pad$} {}",
                "",
                target.url,
                pad = 6usize.saturating_sub(name.len())
            );
        }
        let added_label = |name: &str| {
            if chains.len() == 1 {
                "added".to_owned()
            } else {
                format!("+{name}")
            }
        };
        let d = &self.direct.stats;
        let _ = writeln!(
            out,
            "latency from intended start (corrected for coordinated omission):\n{HEADER}"
        );
        row(&mut out, "direct", d, &d.latency_us);
        for (name, target, _, _) in &chains {
            row(&mut out, name, &target.stats, &target.stats.latency_us);
        }
        for (name, _, added, _) in &chains {
            added_row(&mut out, &added_label(name), added);
        }
        let _ = writeln!(out, "service time from actual send:");
        row(&mut out, "direct", d, &d.service_time_us);
        for (name, target, _, _) in &chains {
            row(&mut out, name, &target.stats, &target.stats.service_time_us);
        }
        for (name, _, _, added) in &chains {
            added_row(&mut out, &added_label(name), added);
        }
        let _ = writeln!(
            out,
            "send delay (intended start to actual send; large values mean the generator ran late or requests queued):"
        );
        row(&mut out, "direct", d, &d.send_delay_us);
        for (name, target, _, _) in &chains {
            row(&mut out, name, &target.stats, &target.stats.send_delay_us);
        }
        errors(&mut out, "direct", d);
        for (name, target, _, _) in &chains {
            errors(&mut out, name, &target.stats);
        }
        out
    }
}

impl ThroughputReport {
    /// Human-readable summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "throughput (closed loop): {} for {} s (warm-up {} s)\n{}\nlatency from actual send (a closed loop has no intended start):\n{HEADER}\n",
            self.target.url,
            self.duration_s,
            self.warmup_s,
            settings_line(&self.settings)
        );
        let s = &self.target.stats;
        row(&mut out, "latency", s, &s.latency_us);
        errors(&mut out, "target", s);
        out
    }
}

/// A saved report of any scenario, for `compare`.
#[derive(Debug, Clone)]
pub enum AnyReport {
    /// `run`.
    OpenLoop(Box<OpenLoopReport>),
    /// `overhead`.
    Overhead(Box<OverheadReport>),
    /// `throughput`.
    Throughput(Box<ThroughputReport>),
}

impl AnyReport {
    /// Parses a saved JSON report, dispatching on its `scenario` field.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let scenario = value
            .get("scenario")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let parsed = match scenario.as_str() {
            "open-loop" => serde_json::from_value(value).map(|r| Self::OpenLoop(Box::new(r))),
            "overhead" => serde_json::from_value(value).map(|r| Self::Overhead(Box::new(r))),
            "throughput" => serde_json::from_value(value).map(|r| Self::Throughput(Box::new(r))),
            other => {
                return Err(format!(
                    "scenario {other:?}: expected \"open-loop\", \"overhead\" or \"throughput\""
                ));
            }
        };
        parsed.map_err(|e| format!("{scenario} report: {e}"))
    }
}

/// A side-by-side table of named reports: one row per target (an overhead report gives two).
pub fn compare(named: &[(String, AnyReport)]) -> String {
    let mut out = format!("{HEADER}\n").replacen("            ", "name        ", 1);
    for (name, report) in named {
        match report {
            AnyReport::OpenLoop(r) => {
                row(&mut out, name, &r.target.stats, &r.target.stats.latency_us)
            }
            AnyReport::Throughput(r) => {
                row(&mut out, name, &r.target.stats, &r.target.stats.latency_us);
            }
            AnyReport::Overhead(r) => {
                row(
                    &mut out,
                    &format!("{name}/direct"),
                    &r.direct.stats,
                    &r.direct.stats.latency_us,
                );
                for (chain, target, _, _) in r.chains() {
                    row(
                        &mut out,
                        &format!("{name}/{chain}"),
                        &target.stats,
                        &target.stats.latency_us,
                    );
                }
            }
        }
    }
    out
}
