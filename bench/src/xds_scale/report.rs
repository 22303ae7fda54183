//! The result of a scale run: per-change timings, the per-proxy ACK latency distribution, the
//! control plane's CPU and memory, rendered as a text table and serialised as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Args;
use super::procstat::Memory;

/// Latencies are recorded in microseconds, up to an hour, with three significant digits.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    // Invariant: the bounds are constants that satisfy hdrhistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records one latency (saturating at the histogram's top).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// One config change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    /// Change number.
    pub change: u32,
    /// The resource that changed.
    pub resource: String,
    /// Its new version.
    pub version: String,
    /// Proxies that ACKed it (every proxy, or the run fails).
    pub acked: usize,
    /// From the push to the last proxy's ACK.
    pub last_ack_ms: f64,
    /// Median per-proxy ACK latency.
    pub p50_ack_ms: f64,
    /// 99th percentile per-proxy ACK latency.
    pub p99_ack_ms: f64,
    /// Time for the control plane to build and publish the new snapshot (the `push` round trip).
    pub push_ms: f64,
    /// Control-plane CPU (user + system) from the push to the last ACK, 10 ms resolution.
    pub server_cpu_ms: f64,
}

impl ChangeResult {
    /// Summarises one change from every proxy's ACK latency.
    pub fn new(
        change: u32,
        resource: String,
        version: String,
        mut latencies: Vec<Duration>,
        push: Duration,
        server_cpu: Duration,
    ) -> Self {
        latencies.sort_unstable();
        ChangeResult {
            change,
            resource,
            version,
            acked: latencies.len(),
            last_ack_ms: latencies.last().copied().map(ms).unwrap_or(0.0),
            p50_ack_ms: ms(percentile(&latencies, 0.50)),
            p99_ack_ms: ms(percentile(&latencies, 0.99)),
            push_ms: ms(push),
            server_cpu_ms: ms(server_cpu),
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of a set of values, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank: with fewer than 100 samples it is the max).
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let mean = if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        };
        Spread {
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(0.0),
            mean: (mean * 1e3).round() / 1e3,
        }
    }
}

/// The per-proxy ACK latency distribution over every change, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// ACKs recorded (proxies x changes).
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The run's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Simulated proxies.
    pub proxies: usize,
    /// HTTP/2 connections they used.
    pub connections: usize,
    /// Resources in the snapshot.
    pub resources: usize,
    /// Sum of the resources' encoded sizes.
    pub snapshot_bytes: usize,
    /// Changes pushed.
    pub changes: usize,
    /// Stream openings the proxies retried (connections reset while ten thousand connect).
    pub reconnects: u64,
    /// How the simulated proxies handled responses.
    pub client: super::proxy::ClientKind,
}

/// The machine during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// CPUs available.
    pub cpus: usize,
    /// `/proc/loadavg` (1, 5, 15 min) before the run.
    pub loadavg_start: [f64; 3],
    /// `/proc/loadavg` after the run.
    pub loadavg_end: [f64; 3],
}

/// The control plane's costs.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneCost {
    /// Process id of the control-plane child.
    pub pid: u32,
    /// From the first connection to every proxy having ACKed the initial snapshot.
    pub initial_sync_ms: f64,
    /// Control-plane CPU during the initial sync.
    pub initial_sync_cpu_ms: f64,
    /// CPU per push (user + system, push to last ACK).
    pub cpu_per_push_ms: Spread,
    /// Memory once every proxy is synced.
    pub memory_after_sync: Memory,
    /// Memory after the last change (VmHWM is the peak over the whole run).
    pub memory_end: Memory,
}

/// A scale run's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Parameters.
    pub params: Params,
    /// Machine.
    pub host: Host,
    /// Push to the last proxy's ACK, over changes (ms).
    pub change_to_last_ack_ms: Spread,
    /// Per-proxy ACK latency over every change (ms).
    pub proxy_ack_ms: Distribution,
    /// Control-plane CPU and memory.
    pub control_plane: ControlPlaneCost,
    /// Memory of the process running the simulated proxies.
    pub proxies_process_memory: Memory,
    /// Every change.
    pub changes: Vec<ChangeResult>,
}

/// What [`Report::new`] summarises.
pub(crate) struct Inputs<'a> {
    pub(crate) args: &'a Args,
    pub(crate) connections: usize,
    pub(crate) snapshot_resources: usize,
    pub(crate) snapshot_bytes: usize,
    pub(crate) loadavg_start: [f64; 3],
    pub(crate) loadavg_end: [f64; 3],
    pub(crate) server_pid: u32,
    pub(crate) sync_time: Duration,
    pub(crate) sync_cpu: Duration,
    pub(crate) memory_after_sync: Memory,
    pub(crate) memory_end: Memory,
    pub(crate) bench_memory: Memory,
    pub(crate) changes: Vec<ChangeResult>,
    pub(crate) all_acks: Histogram<u64>,
    pub(crate) reconnects: u64,
}

impl Report {
    /// Summarises a run.
    pub(crate) fn new(i: Inputs<'_>) -> Self {
        let h = &i.all_acks;
        Report {
            params: Params {
                proxies: i.args.proxies,
                connections: i.connections,
                resources: i.snapshot_resources,
                snapshot_bytes: i.snapshot_bytes,
                changes: i.changes.len(),
                reconnects: i.reconnects,
                client: i.args.client,
            },
            host: Host {
                cpus: std::thread::available_parallelism().map_or(1, usize::from),
                loadavg_start: i.loadavg_start,
                loadavg_end: i.loadavg_end,
            },
            change_to_last_ack_ms: Spread::of(i.changes.iter().map(|c| c.last_ack_ms)),
            proxy_ack_ms: Distribution {
                count: h.len(),
                p50: us_to_ms(h.value_at_quantile(0.50)),
                p90: us_to_ms(h.value_at_quantile(0.90)),
                p99: us_to_ms(h.value_at_quantile(0.99)),
                p999: us_to_ms(h.value_at_quantile(0.999)),
                max: us_to_ms(h.max()),
            },
            control_plane: ControlPlaneCost {
                pid: i.server_pid,
                initial_sync_ms: ms(i.sync_time),
                initial_sync_cpu_ms: ms(i.sync_cpu),
                cpu_per_push_ms: Spread::of(i.changes.iter().map(|c| c.server_cpu_ms)),
                memory_after_sync: i.memory_after_sync,
                memory_end: i.memory_end,
            },
            proxies_process_memory: i.bench_memory,
            changes: i.changes,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let p = &self.params;
        let l = &self.host;
        let cp = &self.control_plane;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            t,
            "xds-scale: {} {:?} proxies on {} connections, {} resources ({:.0} KiB), {} changes",
            p.proxies,
            p.client,
            p.connections,
            p.resources,
            p.snapshot_bytes as f64 / 1024.0,
            p.changes
        );
        let _ = writeln!(
            t,
            "host: {} CPUs, load average {:.2} {:.2} {:.2} at start, {:.2} {:.2} {:.2} at end",
            l.cpus,
            l.loadavg_start[0],
            l.loadavg_start[1],
            l.loadavg_start[2],
            l.loadavg_end[0],
            l.loadavg_end[1],
            l.loadavg_end[2]
        );
        let _ = writeln!(
            t,
            "initial sync: every proxy ACKed the snapshot after {:.0} ms ({} stream openings retried); control-plane CPU {:.0} ms",
            cp.initial_sync_ms, p.reconnects, cp.initial_sync_cpu_ms
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<34} {:>10} {:>10} {:>10} {:>10}",
            "metric", "p50", "p99", "max", "mean"
        );
        let c = &self.change_to_last_ack_ms;
        let _ = writeln!(
            t,
            "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            "change -> last ACK (ms)", c.p50, c.p99, c.max, c.mean
        );
        let a = &self.proxy_ack_ms;
        let _ = writeln!(
            t,
            "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10}",
            "per-proxy ACK latency (ms)", a.p50, a.p99, a.max, "-"
        );
        let u = &cp.cpu_per_push_ms;
        let _ = writeln!(
            t,
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>10.1}",
            "control-plane CPU per push (ms)", u.p50, u.p99, u.max, u.mean
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "control-plane memory: RSS {:.1} MiB after sync, {:.1} MiB at end, peak (VmHWM) {:.1} MiB",
            mib(cp.memory_after_sync.rss_kib),
            mib(cp.memory_end.rss_kib),
            mib(cp.memory_end.hwm_kib)
        );
        let _ = writeln!(
            t,
            "simulated-proxies process: RSS {:.1} MiB, peak {:.1} MiB",
            mib(self.proxies_process_memory.rss_kib),
            mib(self.proxies_process_memory.hwm_kib)
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:>6} {:<44} {:>8} {:>12} {:>10} {:>10} {:>8} {:>8}",
            "change", "resource", "acked", "last ACK ms", "p50 ms", "p99 ms", "push ms", "CPU ms"
        );
        for ch in &self.changes {
            let _ = writeln!(
                t,
                "{:>6} {:<44} {:>8} {:>12.1} {:>10.1} {:>10.1} {:>8.2} {:>8.0}",
                ch.change,
                ch.resource,
                ch.acked,
                ch.last_ack_ms,
                ch.p50_ack_ms,
                ch.p99_ack_ms,
                ch.push_ms,
                ch.server_cpu_ms
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile::<u32>(&[], 0.5), 0);
        assert_eq!(percentile(&[7u32], 0.99), 7);
    }
}
