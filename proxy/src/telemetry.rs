//! Telemetry: the Prometheus recorder with Istio's metric names and labels, per-request and
//! per-connection metering, and the runtime-adjustable log filter.
//!
//! Metric names and labels follow Istio's standard metrics so existing dashboards work:
//! `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_tcp_connections_{opened,closed}_total`, `istio_tcp_{sent,received}_bytes_total`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Instant;

use jalin_xds::model::listener::Direction;
use metrics::{Label, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

pub const REQUESTS_TOTAL: &str = "istio_requests_total";
pub const REQUEST_BYTES: &str = "istio_request_bytes";
pub const RESPONSE_BYTES: &str = "istio_response_bytes";
pub const REQUEST_DURATION: &str = "istio_request_duration_milliseconds";
pub const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
pub const TCP_CLOSED: &str = "istio_tcp_connections_closed_total";
pub const TCP_SENT: &str = "istio_tcp_sent_bytes_total";
pub const TCP_RECEIVED: &str = "istio_tcp_received_bytes_total";
/// jalin's own: configuration reloads by outcome (`accepted` / `rejected`).
pub const CONFIG_RELOADS: &str = "jalin_config_reloads_total";

/// Istio's default buckets for `istio_request_duration_milliseconds`.
/// Envoy's default histogram buckets, which Istio's request duration and size histograms use.
const ENVOY_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Several proxies in one process
/// (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = [REQUEST_DURATION, REQUEST_BYTES, RESPONSE_BYTES]
                .into_iter()
                .try_fold(PrometheusBuilder::new(), |b, name| {
                    b.set_buckets_for_metric(Matcher::Full(name.into()), ENVOY_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be global (an embedding program's); then this handle
            // renders nothing, which is the embedding program's choice.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Istio's `reporter` label: the sidecar on the server side reports `destination`.
pub fn reporter(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "destination",
        Direction::Outbound => "source",
    }
}

/// Status codes as `&'static str` so a label costs no allocation per request.
static CODES: LazyLock<Box<[String]>> =
    LazyLock::new(|| (0..1000).map(|c| c.to_string()).collect());

fn code_str(code: u16) -> &'static str {
    CODES
        .get(usize::from(code))
        .map(String::as_str)
        .unwrap_or("0")
}

/// Envoy-style response flags carried in the `response_flags` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// `-`: none.
    None,
    /// `NR`: no route (unknown service or original destination).
    NoRoute,
    /// `UH`: no healthy upstream (the service has no endpoints).
    NoHealthyUpstream,
    /// `UF`: upstream connection failure.
    UpstreamConnectFailure,
    /// `UC`: upstream connection terminated.
    UpstreamTerminated,
    /// `DC`: downstream connection terminated before the response completed.
    DownstreamTerminated,
    /// `UO`: upstream overflow (circuit breaking).
    UpstreamOverflow,
    /// `UT`: upstream request timeout (route timeout or perTryTimeout).
    UpstreamRequestTimeout,
    /// `FI`: the request was aborted by fault injection.
    FaultInjected,
    /// `DR`: answered by a route's direct response or redirect.
    DirectResponse,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None => "-",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamTerminated => "UC",
            ResponseFlag::DownstreamTerminated => "DC",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::DirectResponse => "DR",
        }
    }
}

/// Most distinct label sets cached per service; beyond it handles are looked up in the
/// registry each time (slower, still correct), so a flood of odd status codes cannot grow memory.
const MAX_CACHED_LABEL_SETS: usize = 256;

/// The label values that vary per request; everything else is fixed per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MeterKey {
    direction: Direction,
    grpc: bool,
    code: u16,
    grpc_status: Option<u8>,
    flag: ResponseFlag,
}

#[derive(Debug)]
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    request_bytes: metrics::Histogram,
    response_bytes: metrics::Histogram,
}

/// A service's request metrics, with the registry's handles cached per label set so recording a
/// request is two atomic updates and a lock-free map read, not a registry lookup.
#[derive(Debug)]
pub struct ServiceMetrics {
    name: SharedString,
    cache: arc_swap::ArcSwap<HashMap<MeterKey, Arc<Handles>>>,
}

impl ServiceMetrics {
    pub fn new(name: SharedString) -> Self {
        Self {
            name,
            cache: arc_swap::ArcSwap::from_pointee(HashMap::new()),
        }
    }

    fn handles(&self, key: MeterKey) -> Arc<Handles> {
        if let Some(h) = self.cache.load().get(&key) {
            return h.clone();
        }
        let grpc_status = match key.grpc_status {
            Some(s) => code_str(u16::from(s)),
            None => "",
        };
        let labels = [
            Label::from_static_parts("reporter", reporter(key.direction)),
            Label::new("destination_service", self.name.clone()),
            Label::new("destination_service_name", self.name.clone()),
            Label::from_static_parts("request_protocol", if key.grpc { "grpc" } else { "http" }),
            Label::from_static_parts("response_code", code_str(key.code)),
            Label::from_static_parts("grpc_response_status", grpc_status),
            Label::from_static_parts("response_flags", key.flag.as_str()),
            Label::from_static_parts("connection_security_policy", "none"),
        ];
        let handles = Arc::new(Handles {
            requests: metrics::counter!(REQUESTS_TOTAL, labels.iter()),
            duration: metrics::histogram!(REQUEST_DURATION, labels.iter()),
            request_bytes: metrics::histogram!(REQUEST_BYTES, labels.iter()),
            response_bytes: metrics::histogram!(RESPONSE_BYTES, labels.iter()),
        });
        if self.cache.load().len() < MAX_CACHED_LABEL_SETS {
            self.cache.rcu(|map| {
                let mut map = HashMap::clone(map);
                map.insert(key, handles.clone());
                map
            });
        }
        handles
    }
}

/// One request's metrics, recorded exactly once: when the response body's last frame is handed
/// on (before it reaches the client, so a client that has the whole response finds it counted),
/// or when the meter is dropped before that (the body was cut or abandoned). The duration
/// covers the whole exchange, as Istio's does.
///
/// A response whose end is never handed on keeps the code it was sent with (the upstream's, for
/// a proxied response, as Istio reports it) and is flagged `DC` (the downstream went away)
/// unless a more precise flag was set (`UC`: the upstream body failed; `UT`: the route timeout
/// cut it). A request dropped before any response was chosen is `0` with `DC`.
#[derive(Debug)]
pub struct RequestMeter {
    start: Instant,
    direction: Direction,
    service: Arc<ServiceMetrics>,
    grpc: bool,
    code: u16,
    grpc_status: Option<u8>,
    flag: ResponseFlag,
    recorded: bool,
    /// The request body's size, once the body is prepared for the upstream.
    request_size: RequestSize,
    /// Response body bytes handed on to the client.
    response_bytes: u64,
    /// The access-log record, when a Telemetry logs this request's mode.
    access: Option<Box<crate::accesslog::Pending>>,
}

/// How a request body's size is known: the buffered body's length, or the count a streamed body
/// keeps as it is forwarded ([`crate::http::body::Counted`]). A body never read (the request was
/// answered before it was forwarded) is `Known(0)`.
#[derive(Debug, Clone)]
pub enum RequestSize {
    Known(u64),
    Counted(Arc<std::sync::atomic::AtomicU64>),
}

impl RequestSize {
    /// The bytes so far.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Known(n) => *n,
            Self::Counted(c) => c.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl RequestMeter {
    pub fn new(
        start: Instant,
        direction: Direction,
        service: Arc<ServiceMetrics>,
        grpc: bool,
    ) -> Self {
        Self {
            start,
            direction,
            service,
            grpc,
            code: 0,
            grpc_status: None,
            flag: ResponseFlag::None,
            recorded: false,
            request_size: RequestSize::Known(0),
            response_bytes: 0,
            access: None,
        }
    }

    /// Logs this request when it is recorded (see [`crate::accesslog`]).
    pub fn set_access_log(&mut self, pending: Box<crate::accesslog::Pending>) {
        self.access = Some(pending);
    }

    /// The access-log record being filled, if this request is logged.
    pub fn access_log(&mut self) -> Option<&mut crate::accesslog::Pending> {
        self.access.as_deref_mut()
    }

    /// The service the route sent the request to (Istio's `destination_service` is the
    /// upstream cluster's service, not the host the request named): its labels from here on.
    pub fn destination(&mut self, service: &Arc<ServiceMetrics>) {
        self.service = service.clone();
    }

    /// The response head: status, and gRPC status if the response is trailers-only.
    pub fn response(&mut self, code: u16, grpc_status: Option<u8>, flag: ResponseFlag) {
        self.code = code;
        self.grpc_status = grpc_status;
        self.flag = flag;
    }

    /// Sets the response flag alone (the status was already sent), e.g. a route timeout that
    /// cut the response body.
    pub fn set_flag(&mut self, flag: ResponseFlag) {
        self.flag = flag;
    }

    /// The trailers' `grpc-status`.
    pub fn trailers(&mut self, grpc_status: Option<u8>) {
        if grpc_status.is_some() {
            self.grpc_status = grpc_status;
        }
    }

    /// The request body as prepared for the upstream: its size is reported when the request is
    /// recorded (`istio_request_bytes`, `BYTES_RECEIVED`).
    pub fn request_body(&mut self, size: RequestSize) {
        self.request_size = size;
    }

    /// `n` response body bytes were handed on to the client.
    #[inline]
    pub fn sent(&mut self, n: usize) {
        self.response_bytes += n as u64;
    }

    /// The response body's last frame was handed on: records the request now.
    pub fn complete(&mut self) {
        self.record(true);
    }

    /// Records the request unless it already was; `complete`: its response was handed on whole
    /// (else, without a more precise flag, it is `DC`).
    fn record(&mut self, complete: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let flag = if complete || self.flag != ResponseFlag::None {
            self.flag
        } else {
            ResponseFlag::DownstreamTerminated
        };
        let key = MeterKey {
            direction: self.direction,
            grpc: self.grpc,
            code: self.code,
            grpc_status: self.grpc_status,
            flag,
        };
        let handles = self.service.handles(key);
        let elapsed = self.start.elapsed();
        let received = self.request_size.bytes();
        handles.requests.increment(1);
        handles.duration.record(elapsed.as_secs_f64() * 1000.0);
        handles.request_bytes.record(received as f64);
        handles.response_bytes.record(self.response_bytes as f64);
        if let Some(mut log) = self.access.take() {
            log.bytes(received, self.response_bytes);
            log.finish(self.code, self.grpc_status, flag.as_str(), elapsed);
        }
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.record(false);
    }
}

/// Parses a `grpc-status` header value (0-16 are defined; anything numeric under 256 is kept).
pub fn parse_grpc_status(v: Option<&http::HeaderValue>) -> Option<u8> {
    v.and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.parse().ok())
}

/// Records an opaque TCP connection's open and, on drop, its close and byte counts.
#[derive(Debug)]
pub struct TcpMeter {
    labels: Arc<[Label; 2]>,
    pub sent: u64,
    pub received: u64,
}

impl TcpMeter {
    pub fn open(direction: Direction, service: SharedString) -> Self {
        let labels = Arc::new([
            Label::from_static_parts("reporter", reporter(direction)),
            Label::new("destination_service", service),
        ]);
        metrics::counter!(TCP_OPENED, labels.iter()).increment(1);
        Self {
            labels,
            sent: 0,
            received: 0,
        }
    }
}

impl Drop for TcpMeter {
    fn drop(&mut self) {
        metrics::counter!(TCP_CLOSED, self.labels.iter()).increment(1);
        metrics::counter!(TCP_SENT, self.labels.iter()).increment(self.sent);
        metrics::counter!(TCP_RECEIVED, self.labels.iter()).increment(self.received);
    }
}

/// Changes the log filter at run time (the admin server's `/logging`).
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    current: Arc<arc_swap::ArcSwap<String>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &self.current.load())
            .finish()
    }
}

impl LogControl {
    /// Replaces the filter, for example `debug` or `info,jalin_proxy=trace`.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives)
            .map_err(|e| format!("invalid log filter `{directives}`: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot apply log filter: {e}"))?;
        self.current.store(Arc::new(directives.to_owned()));
        Ok(())
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current.load().as_ref().clone()
    }
}

static LOGGING: OnceLock<Option<LogControl>> = OnceLock::new();

/// Installs the process-wide log subscriber (JSON or text to stderr) with a reloadable filter,
/// starting from `RUST_LOG` or `info`. Later calls return the first call's control. `None` when
/// another subscriber was installed first.
pub fn init_logging(json: bool) -> Option<LogControl> {
    LOGGING
        .get_or_init(|| {
            let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
            let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
            let (layer, handle) = reload::Layer::new(filter);
            let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
            let registry = tracing_subscriber::registry().with(layer);
            let installed = if json {
                registry.with(fmt.json()).try_init().is_ok()
            } else {
                registry.with(fmt).try_init().is_ok()
            };
            installed.then(|| LogControl {
                handle,
                current: Arc::new(arc_swap::ArcSwap::from_pointee(initial)),
            })
        })
        .clone()
}

/// The log control, if [`init_logging`] installed the subscriber.
pub fn log_control() -> Option<LogControl> {
    LOGGING.get().cloned().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `istio_requests_total` for `service` with `code` and `flag`, from the process recorder.
    fn requests(service: &str, code: &str, flag: &str) -> u64 {
        let want = [
            format!("destination_service=\"{service}\""),
            format!("response_code=\"{code}\""),
            format!("response_flags=\"{flag}\""),
        ];
        metrics_handle()
            .render()
            .lines()
            .filter(|l| l.starts_with(REQUESTS_TOTAL) && want.iter().all(|w| l.contains(w)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    fn meter(service: &Arc<ServiceMetrics>) -> RequestMeter {
        // The recorder must be global before a request is recorded.
        metrics_handle();
        RequestMeter::new(Instant::now(), Direction::Inbound, service.clone(), false)
    }

    #[test]
    fn a_completed_response_is_recorded_at_completion_and_only_once() {
        let svc = Arc::new(ServiceMetrics::new("meter-complete".into()));
        let mut m = meter(&svc);
        m.response(503, None, ResponseFlag::None);
        m.complete();
        assert_eq!(
            requests("meter-complete", "503", "-"),
            1,
            "recorded at once"
        );
        m.complete();
        drop(m);
        assert_eq!(requests("meter-complete", "503", "-"), 1, "and never again");
    }

    #[test]
    fn a_response_cut_short_keeps_its_code_with_the_flag_of_who_cut_it() {
        let svc = Arc::new(ServiceMetrics::new("meter-cut".into()));
        let mut gone = meter(&svc);
        gone.response(503, None, ResponseFlag::None);
        drop(gone);
        assert_eq!(
            requests("meter-cut", "503", "DC"),
            1,
            "downstream went away"
        );
        let mut failed = meter(&svc);
        failed.response(503, None, ResponseFlag::None);
        failed.set_flag(ResponseFlag::UpstreamTerminated);
        drop(failed);
        assert_eq!(
            requests("meter-cut", "503", "UC"),
            1,
            "upstream body failed"
        );
        drop(meter(&svc));
        assert_eq!(
            requests("meter-cut", "0", "DC"),
            1,
            "no response was chosen"
        );
        assert_eq!(requests("meter-cut", "503", "-"), 0);
    }
}
