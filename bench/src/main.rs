//! The `jalin-bench` binary: parses the command line, builds the generator's runtime and runs a
//! scenario (`run`, `overhead`, `throughput`, `xds-scale`), the built-in `upstream`, or `compare`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use jalin_bench::cli::{parse_duration, parse_named_url, parse_size};
use jalin_bench::client::{DEFAULT_H2_STREAMS, HttpVersion, RequestSpec};
use jalin_bench::report::{AnyReport, compare};
use jalin_bench::scenario::{self, LoadConfig, OpenLoopConfig, OverheadConfig, ThroughputConfig};
use jalin_bench::schedule::Rate;
use jalin_bench::tls::{ClientTls, server_config};
use jalin_bench::upstream::{Upstream, UpstreamConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load testing for jalin: open-loop load with honest percentiles, proxy overhead, throughput.
#[derive(Debug, Parser)]
#[command(name = "jalin-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop load at a constant rate against one URL.
    Run(RunArgs),
    /// Direct vs. through a proxy in the same run; reports the latency the proxy adds.
    Overhead(OverheadArgs),
    /// Closed-loop maximum rate with C connections.
    Throughput(ThroughputArgs),
    /// The built-in fast upstream (HTTP/1.1 and h2c on one port, or TLS with ALPN).
    Upstream(UpstreamArgs),
    /// Side-by-side table of saved JSON reports: NAME=FILE ...
    Compare {
        /// Reports as NAME=FILE.
        #[arg(required = true)]
        reports: Vec<String>,
    },
    /// N simulated proxies on real delta ADS streams to one control plane: time from a config
    /// change to the last ACK, control-plane memory and CPU per push.
    XdsScale(jalin_bench::xds_scale::Args),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// HTTP version: 1.1, 2 (h2c prior knowledge in cleartext, ALPN h2 over TLS), or 3 (HTTP/3
    /// over QUIC, https targets only; --h2-streams bounds its streams per connection).
    #[arg(long, default_value = "1.1")]
    http: HttpVersion,
    /// Connections per target.
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = DEFAULT_H2_STREAMS)]
    h2_streams: usize,
    /// Request method (default GET, or POST when --body-size is set).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// Extra request header, "name: value" (repeatable). A host header overrides the URL's.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body size: 1024, 1KiB, ...
    #[arg(long, default_value = "0", value_parser = parse_size)]
    body_size: usize,
    /// CA certificates (PEM) that sign the server's certificate (default: the system bundle).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Do not verify the server's certificate (handshake signatures are still checked).
    #[arg(long)]
    insecure: bool,
    /// Per-request bound: a request not complete by then counts as an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bound on TCP connect plus TLS handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Pace with tokio's 1 ms timer instead of the µs-precise timerfd.
    #[arg(long)]
    coarse_timer: bool,
    /// Generator worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl LoadArgs {
    fn config(&self) -> Result<LoadConfig> {
        Ok(LoadConfig {
            version: self.http,
            spec: RequestSpec::parse(self.method.as_deref(), &self.headers, self.body_size)?,
            tls: ClientTls {
                cacert: self.cacert.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                insecure: self.insecure,
            },
            connections: self.connections,
            h2_streams: self.h2_streams,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            precise: !self.coarse_timer,
        })
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Target URL (http:// or https://).
    url: String,
    /// Requests per second (open loop: sent on schedule whatever the response times).
    #[arg(long)]
    rate: f64,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded lead-in at the same rate.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct OverheadArgs {
    /// The upstream reached directly.
    #[arg(
        long,
        required_unless_present = "upstream",
        conflicts_with = "upstream"
    )]
    direct: Option<String>,
    /// Run the built-in upstream on this address and use it as the direct target.
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// The same upstream through the proxy.
    #[arg(long)]
    via: String,
    /// What to call the --via chain in the report (e.g. jalin when comparing proxies).
    #[arg(long, default_value = "via")]
    via_name: String,
    /// Another chain to the same upstream, as NAME=URL (repeatable), measured in the same rounds
    /// as --via so both see the same host conditions: e.g. --compare envoy=http://127.0.0.1:18083/.
    /// Any target URL may start with h1+, h2+ or h3+ to use that HTTP version instead of --http
    /// (e.g. --compare h3=h3+https://127.0.0.1:8443/).
    #[arg(long = "compare", value_parser = parse_named_url)]
    compare: Vec<(String, String)>,
    /// Requests per second during each phase.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured time per target.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded lead-in per target.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Phases per target (alternating direct/via in ABBA order; with --compare, ABC then CBA).
    #[arg(long, default_value_t = 6)]
    phases: u32,
    /// With --upstream: response body size.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    response_size: usize,
    /// With --upstream: its worker threads.
    #[arg(long, default_value_t = 1)]
    upstream_threads: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct ThroughputArgs {
    /// Target URL.
    url: String,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded lead-in.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct UpstreamArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Response body size.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    response_size: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Serve TLS with this certificate chain (PEM).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, requires = "cert")]
    client_ca: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Upstream(args) => upstream(&args),
        Command::Compare { reports } => {
            let mut named = Vec::new();
            for spec in &reports {
                let (name, file) = spec
                    .split_once('=')
                    .with_context(|| format!("{spec:?}: expected NAME=FILE"))?;
                let text =
                    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
                let report = AnyReport::from_json(&text)
                    .map_err(|e| anyhow::anyhow!("{file}: not a jalin-bench JSON report: {e}"))?;
                named.push((name.to_owned(), report));
            }
            print!("{}", compare(&named));
            Ok(())
        }
        // xds-scale builds its own runtimes (and re-executes itself as the control plane).
        Command::XdsScale(args) => Ok(jalin_bench::xds_scale::main(&args)?),
        Command::Run(args) => runtime(args.load.threads)?.block_on(run(&args)),
        Command::Overhead(args) => runtime(args.load.threads)?.block_on(overhead(&args)),
        Command::Throughput(args) => runtime(args.load.threads)?.block_on(throughput(&args)),
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()
        .context("building the generator's runtime")
}

fn write_json<T: serde::Serialize>(path: Option<&Path>, report: &T) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run(args: &RunArgs) -> Result<()> {
    let load = args.load.config()?;
    let config = OpenLoopConfig {
        url: args.url.clone(),
        rate: Rate::per_second(args.rate)?,
        warmup: args.warmup,
        duration: args.duration,
    };
    let report = scenario::open_loop(&config, &load).await?;
    print!("{}", report.text());
    write_json(args.load.json.as_deref(), &report)
}

async fn overhead(args: &OverheadArgs) -> Result<()> {
    let load = args.load.config()?;
    let (_upstream, direct) = match (&args.direct, args.upstream) {
        (Some(url), _) => (None, url.clone()),
        (None, Some(addr)) => {
            let upstream = Upstream::start(UpstreamConfig {
                listen: addr,
                response_size: args.response_size,
                threads: args.upstream_threads,
                tls: None,
            })?;
            let url = format!("http://{}/", upstream.addr());
            (Some(upstream), url)
        }
        (None, None) => bail!("give --direct URL, or --upstream ADDR to run the built-in upstream"),
    };
    let config = OverheadConfig {
        direct,
        via: args.via.clone(),
        via_name: args.via_name.clone(),
        others: args.compare.clone(),
        rate: Rate::per_second(args.rate)?,
        warmup: args.warmup,
        duration: args.duration,
        phases: args.phases,
    };
    let report = scenario::overhead(&config, &load).await?;
    print!("{}", report.text());
    write_json(args.load.json.as_deref(), &report)
}

async fn throughput(args: &ThroughputArgs) -> Result<()> {
    let load = args.load.config()?;
    let config = ThroughputConfig {
        url: args.url.clone(),
        warmup: args.warmup,
        duration: args.duration,
    };
    let report = scenario::throughput(&config, &load).await?;
    print!("{}", report.text());
    write_json(args.load.json.as_deref(), &report)
}

fn upstream(args: &UpstreamArgs) -> Result<()> {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(server_config(
            cert,
            key,
            args.client_ca.as_deref(),
            &[b"h2", b"http/1.1"],
        )?),
        _ => None,
    };
    let server = Upstream::start(UpstreamConfig {
        listen: args.listen,
        response_size: args.response_size,
        threads: args.threads,
        tls,
    })?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", server.addr())?;
    stdout.flush()?;
    // Wait for SIGINT or SIGTERM on a small runtime of our own, then stop the server.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    signals.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    drop(server);
    Ok(())
}
