//! `jalin-bench xds-scale`: N simulated proxies hold real delta ADS streams to one real jalin
//! control plane; the run measures the time from a config change to the last proxy's ACK, the
//! control plane's memory and its CPU per push.
//!
//! Layout: [`workload`] (the mesh's resources and the edits), [`control`] (the control plane in a
//! child process), [`proxy`] (one simulated proxy), [`procstat`] (`/proc` readings) and
//! [`report`] (the result, as a table and JSON). This module connects them.

pub mod control;
pub mod procstat;
pub mod proxy;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jalin_xds::transport::{ResourceError, Snapshot};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Endpoint;

use control::ControlPlane;
use proxy::{ClientKind, Event, Expect, Shared};
use report::{ChangeResult, Report};
use workload::Workload;

/// Attempts to connect before a proxy's connection counts as failed.
const CONNECT_ATTEMPTS: u32 = 8;
/// First retry delay after a failed connect (doubles per attempt).
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// File descriptors kept free for everything but the proxies' connections.
const SPARE_FDS: usize = 64;

/// Arguments of `jalin-bench xds-scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Simulated proxies, each with its own delta ADS stream.
    #[arg(long, default_value_t = 1000)]
    pub proxies: usize,
    /// Resources in the control plane's snapshot, spread over endpoints, clusters, routes,
    /// listeners and authorization policies.
    #[arg(long, default_value_t = 500)]
    pub resources: usize,
    /// Config changes to push (each edits one authorization policy) once every proxy is synced.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Proxies sharing one HTTP/2 connection (1: one TCP connection per proxy, as sidecars do;
    /// more multiplexes streams when the file-descriptor limit is tight).
    #[arg(long, default_value_t = 1)]
    pub proxies_per_connection: usize,
    /// How each simulated proxy handles responses: `lean` (envelope check and ACK) or `full` (the
    /// proxy's client state machine, holding the whole configuration per proxy).
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    pub client: ClientKind,
    /// Connections opened concurrently while the proxies start.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Longest wait for the initial sync, and for each change to reach every proxy.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run as the control-plane child (internal: the run re-executes itself with this flag).
    #[arg(long, hide = true)]
    pub serve: bool,
    /// Executable to run the control-plane child from (default: this one).
    #[arg(long, hide = true)]
    pub server_exe: Option<PathBuf>,
}

/// Why a scale run failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// An I/O step failed.
    #[error("xds-scale: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The workload did not encode.
    #[error("xds-scale: {0}")]
    Resource(#[from] ResourceError),
    /// The arguments do not allow a run.
    #[error("xds-scale: {0}")]
    Usage(String),
    /// A proxy, the control plane or the run itself did not behave.
    #[error("xds-scale: {0}")]
    Protocol(String),
}

impl ScaleError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        ScaleError::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// Runs the subcommand: the control-plane child with `--serve`, otherwise a whole run that
/// prints the table and writes the JSON report.
pub fn main(args: &Args) -> Result<(), ScaleError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ScaleError::io("start the Tokio runtime", e))?;
    if args.serve {
        return rt.block_on(control::serve(args.resources));
    }
    let report = rt.block_on(run(args))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| ScaleError::Protocol(format!("serialise the report: {e}")))?;
        std::fs::write(path, json)
            .map_err(|e| ScaleError::io(&format!("write {}", path.display()), e))?;
    }
    Ok(())
}

/// One scale run: starts the control plane, connects the proxies, waits until all are synced,
/// pushes the changes one at a time and measures each until every proxy ACKed it.
pub async fn run(args: &Args) -> Result<Report, ScaleError> {
    validate(args)?;
    let loadavg_start = procstat::loadavg();
    let workload = Workload::new(args.resources);
    let initial = Snapshot::new(workload.initial()?);
    let synced_versions: BTreeMap<String, String> = initial
        .type_urls()
        .filter_map(|url| {
            let set = initial.type_set(url)?;
            Some((url.to_string(), set.version.to_string()))
        })
        .collect();
    let snapshot_bytes: usize = initial
        .type_urls()
        .filter_map(|url| initial.type_set(url))
        .flat_map(|set| set.resources.values())
        .map(|e| e.value.len())
        .sum();

    let exe = match &args.server_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| ScaleError::io("find this executable to start the control plane", e))?,
    };
    let mut cp = ControlPlane::spawn(&exe, args.resources).await?;
    let timeout = Duration::from_secs(args.timeout_secs);

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (expect_tx, expect_rx) = watch::channel(None::<Arc<Expect>>);
    let shared = Arc::new(Shared {
        synced_versions,
        events: events_tx,
        reconnects: Default::default(),
    });

    // Start the proxies and wait until every one ACKed the initial snapshot.
    let cpu_start = cp.cpu()?;
    let started = Instant::now();
    let mut connections = connect(args, &cp, &shared, &expect_rx).await?;
    let mut synced = 0usize;
    while synced < args.proxies {
        match next_event(&mut events, started + timeout, || {
            format!("{synced} of {} proxies synced", args.proxies)
        })
        .await?
        {
            Event::Synced { .. } => synced += 1,
            Event::Acked { .. } => {}
            other => return Err(failure(other)),
        }
    }
    let sync_time = started.elapsed();
    let sync_cpu = cp.cpu()?.saturating_sub(cpu_start);
    let memory_after_sync = cp.memory()?;

    // Push the changes one at a time.
    let mut results = Vec::with_capacity(args.changes);
    let mut all_acks = report::histogram();
    for k in 0..args.changes {
        let change =
            u32::try_from(k).map_err(|_| ScaleError::Usage("at most 2^32 changes".to_owned()))?;
        let resource = workload.change(u64::from(change))?.resource;
        expect_tx.send_replace(Some(Arc::new(Expect {
            change,
            type_url: resource.type_url.clone(),
            name: resource.name.clone(),
            version: resource.version.clone(),
        })));
        let cpu_before = cp.cpu()?;
        let t0 = Instant::now();
        let version = cp.push(u64::from(change)).await?;
        let push_time = t0.elapsed();
        if version != resource.version {
            return Err(ScaleError::Protocol(format!(
                "change {change}: the control plane pushed version {version} of {}, the run \
                 expected {}; the child runs a different workload",
                resource.name, resource.version
            )));
        }
        let mut seen = vec![false; args.proxies];
        let mut latencies = Vec::with_capacity(args.proxies);
        while latencies.len() < args.proxies {
            let event = next_event(&mut events, t0 + timeout, || {
                format!(
                    "change {change} reached {} of {} proxies",
                    latencies.len(),
                    args.proxies
                )
            })
            .await?;
            match event {
                Event::Acked {
                    proxy,
                    change: c,
                    at,
                } if c == change => {
                    let slot = seen.get_mut(proxy as usize).ok_or_else(|| {
                        ScaleError::Protocol(format!("unknown proxy {proxy} reported"))
                    })?;
                    if !*slot {
                        *slot = true;
                        latencies.push(at.saturating_duration_since(t0));
                    }
                }
                Event::Acked { .. } | Event::Synced { .. } => {}
                other => return Err(failure(other)),
            }
        }
        let server_cpu = cp.cpu()?.saturating_sub(cpu_before);
        for l in &latencies {
            report::record(&mut all_acks, *l);
        }
        results.push(ChangeResult::new(
            change,
            format!("AuthorizationPolicy {}", resource.name),
            resource.version,
            latencies,
            push_time,
            server_cpu,
        ));
    }
    let memory_end = cp.memory()?;
    let pid = cp.pid();
    connections.abort_all();
    cp.stop().await;
    Ok(Report::new(report::Inputs {
        args,
        connections: args.proxies.div_ceil(args.proxies_per_connection),
        snapshot_resources: initial.len(),
        snapshot_bytes,
        loadavg_start,
        loadavg_end: procstat::loadavg(),
        server_pid: pid,
        sync_time,
        sync_cpu,
        memory_after_sync,
        memory_end,
        bench_memory: procstat::memory(std::process::id()).unwrap_or_default(),
        changes: results,
        all_acks,
        reconnects: shared.reconnects.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

fn validate(args: &Args) -> Result<(), ScaleError> {
    if args.proxies == 0 || args.proxies > u32::MAX as usize {
        return Err(ScaleError::Usage("--proxies must be at least 1".to_owned()));
    }
    if args.resources < workload::KINDS.len() {
        return Err(ScaleError::Usage(format!(
            "--resources must be at least {} (one service with every kind)",
            workload::KINDS.len()
        )));
    }
    if args.proxies_per_connection == 0 || args.connect_concurrency == 0 {
        return Err(ScaleError::Usage(
            "--proxies-per-connection and --connect-concurrency must be at least 1".to_owned(),
        ));
    }
    let needed = args.proxies.div_ceil(args.proxies_per_connection) + SPARE_FDS;
    if let Some(limit) = open_files_limit()
        && needed > limit
    {
        return Err(ScaleError::Usage(format!(
            "{} proxies need about {needed} file descriptors in this process, but the limit is \
             {limit}; raise `ulimit -n` or pass --proxies-per-connection {}",
            args.proxies,
            args.proxies
                .div_ceil(limit.saturating_sub(SPARE_FDS).max(1))
        )));
    }
    Ok(())
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Opens the connections and starts every proxy; returns the tasks that own them.
async fn connect(
    args: &Args,
    cp: &ControlPlane,
    shared: &Arc<Shared>,
    expect: &watch::Receiver<Option<Arc<Expect>>>,
) -> Result<JoinSet<()>, ScaleError> {
    let endpoint = Endpoint::from_shared(format!("http://{}", cp.addr))
        .map_err(|e| ScaleError::Protocol(format!("control-plane address {}: {e}", cp.addr)))?
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    let mut first = 0usize;
    while first < args.proxies {
        let last = (first + args.proxies_per_connection).min(args.proxies);
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ScaleError::Protocol("connect limiter closed".to_owned()))?;
        let endpoint = endpoint.clone();
        let shared = shared.clone();
        let expect = expect.clone();
        let kind = args.client;
        tasks.spawn(async move {
            let mut attempt = 0u32;
            let channel = loop {
                match endpoint.connect().await {
                    Ok(c) => break c,
                    Err(e) if attempt < CONNECT_ATTEMPTS => {
                        attempt += 1;
                        shared
                            .reconnects
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(first, attempt, error = %e, "connect failed; retrying");
                        tokio::time::sleep(CONNECT_BACKOFF * 2u32.pow(attempt.min(6))).await;
                    }
                    Err(e) => {
                        let _ = shared.events.send(Event::Failed {
                            proxy: first as u32,
                            reason: format!("connect ({attempt} retries): {e}"),
                        });
                        return;
                    }
                }
            };
            drop(permit);
            let mut proxies = JoinSet::new();
            for p in first..last {
                proxies.spawn(proxy::run(
                    p as u32,
                    kind,
                    channel.clone(),
                    shared.clone(),
                    expect.clone(),
                ));
            }
            proxies.join_all().await;
        });
        first = last;
    }
    Ok(tasks)
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
    progress: impl FnOnce() -> String,
) -> Result<Event, ScaleError> {
    match tokio::time::timeout_at(deadline.into(), events.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(ScaleError::Protocol("every proxy stopped".to_owned())),
        Err(_) => Err(ScaleError::Protocol(format!(
            "timed out: {}; raise --timeout-secs or lower --proxies",
            progress()
        ))),
    }
}

fn failure(event: Event) -> ScaleError {
    match event {
        Event::Nacked { proxy, error } => {
            ScaleError::Protocol(format!("proxy {proxy} NACKed an update: {error}"))
        }
        Event::Failed { proxy, reason } => {
            ScaleError::Protocol(format!("proxy {proxy} lost its stream: {reason}"))
        }
        other => ScaleError::Protocol(format!("unexpected event {other:?}")),
    }
}
