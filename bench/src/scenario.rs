//! Scenarios built from load phases: a single open-loop run, the `overhead` comparison (direct vs.
//! through a proxy, interleaved so drift hits both alike) and the closed-loop `throughput` run.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{ClientError, Connector, HttpClient, HttpVersion, RequestSpec, Target};
use crate::driver::{self, ClosedLoopPlan, OpenLoopPlan};
use crate::pacer::Pacer;
use crate::record::{Percentiles, Recorder};
use crate::report::{
    ChainReport, LoadSettings, OpenLoopReport, OverheadReport, PhaseSummary, TargetReport,
    ThroughputReport,
};
use crate::schedule::{Rate, Schedule, ScheduleError};
use crate::tls::ClientTls;

/// Default per-request bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on TCP connect plus TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A scenario that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A target, header or TLS file is unusable, or the first connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The rate or connection count is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A connection task died (a bug; the message says where).
    #[error("a load task failed: {0}")]
    Task(String),
    /// The precise timer could not be created.
    #[error(
        "cannot create a timerfd for precise pacing: {0}; pass --coarse-timer to use tokio's 1 ms timer"
    )]
    Timer(std::io::Error),
}

/// A target URL's own HTTP version, when it starts with `h1+`, `h2+` or `h3+`
/// (`h3+https://gw:8443/`): the URL without it, and that version; else `default`. Lets one
/// `overhead` run measure a gateway over HTTP/1.1, HTTP/2 and HTTP/3 in the same rounds.
pub fn target_version(url: &str, default: HttpVersion) -> (HttpVersion, &str) {
    for (prefix, version) in [
        ("h1+", HttpVersion::Http1),
        ("h2+", HttpVersion::Http2),
        ("h3+", HttpVersion::Http3),
    ] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return (version, rest);
        }
    }
    (default, url)
}

/// How load is generated, whatever the scenario.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// HTTP version on every connection.
    pub version: HttpVersion,
    /// What each request carries.
    pub spec: RequestSpec,
    /// TLS settings for https targets.
    pub tls: ClientTls,
    /// Connections per target.
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_streams: usize,
    /// Per-request bound.
    pub timeout: Duration,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Pace with a timerfd (µs precision) instead of tokio's 1 ms timer.
    pub precise: bool,
}

impl LoadConfig {
    fn settings(&self) -> LoadSettings {
        LoadSettings {
            http: self.version,
            method: self.spec.method.to_string(),
            request_body_bytes: self.spec.body.len(),
            connections: self.connections,
            h2_streams: self.version.in_flight(self.h2_streams),
            timeout_s: self.timeout.as_secs_f64(),
            precise_timer: self.precise,
        }
    }
}

/// The measured result of one phase against one target.
#[derive(Debug)]
pub struct PhaseResult {
    /// Everything recorded (warm-up excluded).
    pub recorder: Recorder,
    /// Wall time from the end of warm-up to the last response.
    pub elapsed: Duration,
}

/// `connections` open connections to one target.
#[derive(Debug)]
pub struct Pool {
    url: String,
    clients: Vec<HttpClient>,
}

impl Pool {
    /// Opens every connection to `url` (fails on the first that cannot connect).
    pub async fn connect(url: &str, load: &LoadConfig) -> Result<Self, ScenarioError> {
        if load.connections == 0 {
            return Err(ScheduleError::Connections.into());
        }
        let connector: Arc<Connector> = Connector::new(
            Target::parse(url)?,
            load.version,
            &load.tls,
            load.spec.clone(),
            load.h2_streams,
            load.connect_timeout,
        )?;
        let mut clients = Vec::with_capacity(load.connections);
        for _ in 0..load.connections {
            let mut client = HttpClient::new(connector.clone());
            client.connect().await?;
            clients.push(client);
        }
        Ok(Self {
            url: url.to_owned(),
            clients,
        })
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `warmup` then `duration` of open-loop load at `rate` over all connections.
    pub async fn open_loop(
        &mut self,
        rate: Rate,
        warmup: Duration,
        duration: Duration,
        load: &LoadConfig,
    ) -> Result<PhaseResult, ScenarioError> {
        let clients = std::mem::take(&mut self.clients);
        let schedule = Arc::new(Schedule::new(rate, warmup, duration, clients.len())?);
        let start = Instant::now();
        let measure_from = start + warmup;
        let hard_stop = measure_from + duration + load.timeout;
        let mut tasks = Vec::with_capacity(clients.len());
        for (connection, mut client) in clients.into_iter().enumerate() {
            let mut pacer = if load.precise {
                Pacer::precise().map_err(ScenarioError::Timer)?
            } else {
                Pacer::coarse()
            };
            let plan = OpenLoopPlan {
                schedule: schedule.clone(),
                connection,
                start,
                hard_stop,
                timeout: load.timeout,
            };
            tasks.push(tokio::spawn(async move {
                let recorder = driver::open_loop(&mut client, &mut pacer, &plan).await;
                (client, recorder)
            }));
        }
        let recorder = self.collect(tasks).await?;
        Ok(PhaseResult {
            recorder,
            elapsed: Instant::now().saturating_duration_since(measure_from),
        })
    }

    /// Runs `warmup` then `duration` of closed-loop load over all connections.
    pub async fn closed_loop(
        &mut self,
        warmup: Duration,
        duration: Duration,
        load: &LoadConfig,
    ) -> Result<PhaseResult, ScenarioError> {
        let clients = std::mem::take(&mut self.clients);
        let measure_from = Instant::now() + warmup;
        let plan = ClosedLoopPlan {
            measure_from,
            stop: measure_from + duration,
            timeout: load.timeout,
        };
        let mut tasks = Vec::with_capacity(clients.len());
        for mut client in clients {
            tasks.push(tokio::spawn(async move {
                let recorder = driver::closed_loop(&mut client, plan).await;
                (client, recorder)
            }));
        }
        let recorder = self.collect(tasks).await?;
        Ok(PhaseResult {
            recorder,
            // Throughput is counted over the sending window; responses still arriving after it
            // are included in the counts (their requests were sent inside it).
            elapsed: duration,
        })
    }

    async fn collect(
        &mut self,
        tasks: Vec<tokio::task::JoinHandle<(HttpClient, Recorder)>>,
    ) -> Result<Recorder, ScenarioError> {
        let mut total = Recorder::new();
        for task in tasks {
            let (client, recorder) = task.await.map_err(|e| ScenarioError::Task(e.to_string()))?;
            total.merge(&recorder);
            self.clients.push(client);
        }
        Ok(total)
    }
}

/// One open-loop run against one target.
#[derive(Debug, Clone)]
pub struct OpenLoopConfig {
    /// The target URL.
    pub url: String,
    /// Arrival rate.
    pub rate: Rate,
    /// Unrecorded lead-in at the same rate.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// Runs one open-loop phase against one target.
pub async fn open_loop(
    config: &OpenLoopConfig,
    load: &LoadConfig,
) -> Result<OpenLoopReport, ScenarioError> {
    let mut pool = Pool::connect(&config.url, load).await?;
    let result = pool
        .open_loop(config.rate, config.warmup, config.duration, load)
        .await?;
    Ok(OpenLoopReport {
        scenario: "open-loop".to_owned(),
        tool: crate::report::tool(),
        settings: load.settings(),
        rate_rps: config.rate.as_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        target: TargetReport {
            url: config.url.clone(),
            stats: result.recorder.stats(result.elapsed),
        },
    })
}

/// The overhead comparison: the same open-loop load direct to the upstream and through a proxy.
#[derive(Debug, Clone)]
pub struct OverheadConfig {
    /// The upstream, reached directly.
    pub direct: String,
    /// The same upstream through the proxy.
    pub via: String,
    /// What `via` is called in the report (`"via"` unless there are other chains to name apart).
    pub via_name: String,
    /// Other chains to the same upstream (e.g. another proxy), as (name, URL), measured in the
    /// same rounds so the comparison sees the same host conditions.
    pub others: Vec<(String, String)>,
    /// Arrival rate (each target gets the full rate during its phases).
    pub rate: Rate,
    /// Unrecorded lead-in per target, before the first phase.
    pub warmup: Duration,
    /// Measured time per target, split over `phases` phases.
    pub duration: Duration,
    /// Phases per target; the order alternates direct/via, via/direct, … (ABBA; with other
    /// chains, ABC then CBA) so linear drift hits every target alike.
    pub phases: u32,
}

/// Which target runs first in round `round`: ABBA ordering.
pub fn direct_first(round: u32) -> bool {
    round.is_multiple_of(2)
}

/// The order of `targets` targets in round `round`: forward in even rounds, reversed in odd ones.
pub fn round_order(round: u32, targets: usize) -> Vec<usize> {
    if direct_first(round) {
        (0..targets).collect()
    } else {
        (0..targets).rev().collect()
    }
}

/// Runs the overhead comparison and reports both targets and the latency the proxy adds at each
/// percentile.
pub async fn overhead(
    config: &OverheadConfig,
    load: &LoadConfig,
) -> Result<OverheadReport, ScenarioError> {
    if config.phases == 0 {
        return Err(ScenarioError::Invalid(
            "phases must be ≥ 1 (e.g. --phases 6)".to_owned(),
        ));
    }
    let phase = config.duration / config.phases;
    if phase.is_zero() {
        return Err(ScenarioError::Invalid(format!(
            "duration {:?} split over {} phases leaves nothing to measure: raise --duration",
            config.duration, config.phases
        )));
    }
    let mut targets = vec![
        ("direct".to_owned(), config.direct.clone()),
        (config.via_name.clone(), config.via.clone()),
    ];
    targets.extend(config.others.iter().cloned());
    for (i, (name, _)) in targets.iter().enumerate() {
        if targets[..i].iter().any(|(other, _)| other == name) {
            return Err(ScenarioError::Invalid(format!(
                "two targets are named {name:?}: give each chain its own name"
            )));
        }
    }
    let mut pools = Vec::with_capacity(targets.len());
    for (_, url) in &targets {
        let (version, url) = target_version(url, load.version);
        let load = LoadConfig {
            version,
            ..load.clone()
        };
        pools.push(Pool::connect(url, &load).await?);
    }
    if !config.warmup.is_zero() {
        for pool in &mut pools {
            pool.open_loop(config.rate, config.warmup, Duration::ZERO, load)
                .await?;
        }
    }
    let mut totals: Vec<Recorder> = targets.iter().map(|_| Recorder::new()).collect();
    let mut elapsed = vec![Duration::ZERO; targets.len()];
    let mut summaries = Vec::with_capacity(targets.len() * config.phases as usize);
    for round in 0..config.phases {
        for which in round_order(round, targets.len()) {
            let result = pools[which]
                .open_loop(config.rate, Duration::ZERO, phase, load)
                .await?;
            let latency = Percentiles::of(result.recorder.latency());
            summaries.push(PhaseSummary {
                round,
                target: targets[which].0.clone(),
                requests: result.recorder.accounted(),
                errors: result.recorder.errors() + result.recorder.non_2xx(),
                p50_us: latency.p50,
                p99_us: latency.p99,
            });
            totals[which].merge(&result.recorder);
            elapsed[which] += result.elapsed;
        }
    }
    let direct = totals[0].stats(elapsed[0]);
    let mut chains = targets.iter().zip(totals.iter().zip(&elapsed)).skip(1).map(
        |((name, url), (total, elapsed))| {
            let stats = total.stats(*elapsed);
            ChainReport {
                name: name.clone(),
                added_us: stats.latency_us.minus(&direct.latency_us),
                added_service_us: stats.service_time_us.minus(&direct.service_time_us),
                target: TargetReport {
                    url: url.clone(),
                    stats,
                },
            }
        },
    );
    let Some(via) = chains.next() else {
        return Err(ScenarioError::Task(
            "the via target has no result".to_owned(),
        ));
    };
    let others = chains.collect();
    Ok(OverheadReport {
        scenario: "overhead".to_owned(),
        tool: crate::report::tool(),
        settings: load.settings(),
        rate_rps: config.rate.as_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        phases: config.phases,
        added_us: via.added_us,
        added_service_us: via.added_service_us,
        direct: TargetReport {
            url: config.direct.clone(),
            stats: direct,
        },
        via_name: via.name,
        via: via.target,
        others,
        phase_results: summaries,
    })
}

/// A closed-loop throughput run against one target.
#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    /// The target URL.
    pub url: String,
    /// Unrecorded lead-in.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// Sends as fast as responses come back on every connection and reports the rate achieved.
pub async fn throughput(
    config: &ThroughputConfig,
    load: &LoadConfig,
) -> Result<ThroughputReport, ScenarioError> {
    let mut pool = Pool::connect(&config.url, load).await?;
    let result = pool
        .closed_loop(config.warmup, config.duration, load)
        .await?;
    Ok(ThroughputReport {
        scenario: "throughput".to_owned(),
        tool: crate::report::tool(),
        settings: load.settings(),
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        target: TargetReport {
            url: config.url.clone(),
            stats: result.recorder.stats(result.elapsed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{HttpVersion, direct_first, target_version};

    #[test]
    fn a_target_may_name_its_own_http_version() {
        let v = HttpVersion::Http1;
        assert_eq!(
            target_version("h3+https://gw:8443/", v),
            (HttpVersion::Http3, "https://gw:8443/")
        );
        assert_eq!(
            target_version("h2+https://gw/", v),
            (HttpVersion::Http2, "https://gw/")
        );
        assert_eq!(target_version("h1+http://a/", HttpVersion::Http2).0, v);
        assert_eq!(target_version("http://a/", v), (v, "http://a/"));
    }

    #[test]
    fn rounds_alternate_abba() {
        let order: Vec<bool> = (0..4).map(direct_first).collect();
        assert_eq!(order, [true, false, true, false]);
    }
}
