#!/usr/bin/env bash
# The latency a proxy adds: starts `jalin-bench upstream`, the proxy under test, and runs the
# `overhead` scenario (direct vs. through the proxy, interleaved ABBA) at a constant rate.
#
#   bench/scripts/overhead.sh --proxy haproxy
#   bench/scripts/overhead.sh --proxy jalin --config-template bench/scripts/jalin-proxy.yaml.tmpl
#   bench/scripts/overhead.sh --proxy-cmd 'my-proxy --listen {listen} --to {upstream}'
#
# Defaults follow issue 2's acceptance run: 1,000 req/s, 16 connections, 1 KiB bodies (request and
# response), HTTP/1.1. Every process it starts is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --proxy NAME            haproxy (built-in config, nbthread 1) or jalin (default: haproxy)
  --proxy-cmd CMD         command that starts the proxy; {config} {listen} {upstream} are replaced
                          (jalin default: \${JALIN_PROXY:-target/release/jalin-proxy} --config {config} --workers 1)
  --config-template FILE  proxy config with {{LISTEN}} {{UPSTREAM}} {{UPSTREAM_HOST}} {{UPSTREAM_PORT}} {{HTTP}}
                          (jalin default: bench/scripts/jalin-proxy.yaml.tmpl)
  --listen ADDR           where the proxy listens (default \${PROXY_ADDR:-127.0.0.1:18081})
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16)
  --body SIZE             request and response body size (default 1KiB)
  --http 1.1|2            HTTP version (default 1.1)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --json FILE             also write the JSON report here
environment: JALIN_BENCH (binary; default builds target/release/jalin-bench), PIN=0 (no CPU pinning),
             RT=1 (generator and upstream under SCHED_FIFO; needs root), KEEP_WORK=1 (keep configs and logs)
USAGE
}

proxy=haproxy proxy_cmd="" template="" listen="${PROXY_ADDR:-127.0.0.1:18081}"
rate=1000 connections=16 body=1KiB http=1.1 duration=30s warmup=5s phases=6 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxy="$2"; shift 2 ;;
    --proxy-cmd) proxy_cmd="$2"; shift 2 ;;
    --config-template) template="$2"; shift 2 ;;
    --listen) listen="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
if [ "$proxy" = "jalin" ]; then
  [ -n "$proxy_cmd" ] || proxy_cmd="${JALIN_PROXY:-$REPO/target/release/jalin-proxy} --config {config} --workers 1"
  [ -n "$template" ] || template="$BENCH_SCRIPTS/jalin-proxy.yaml.tmpl"
fi

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
start_upstream "$bench" "$body"
start_proxy "$proxy" "$proxy_cmd" "$template" "$listen" "$UPSTREAM_ADDR" "$http"
check_path "http://$UPSTREAM_ADDR/" "$http"
check_path "http://$listen/" "$http"
idle_rss="$(rss_kib "$PROXY_PID")"

echo "host: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg); proxy on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS"
args=(overhead --direct "http://$UPSTREAM_ADDR/" --via "http://$listen/" --rate "$rate"
      --connections "$connections" --body-size "$body" --http "$http" --duration "$duration"
      --warmup "$warmup" --phases "$phases")
[ -n "$json" ] && args+=(--json "$json")
echo "+ jalin-bench ${args[*]}"
[ ${#RT_PREFIX[@]} -gt 0 ] && echo "generator and upstream run under SCHED_FIFO (RT=1)"
run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
echo "proxy $proxy RSS: idle ${idle_rss} KiB, after load $(rss_kib "$PROXY_PID") KiB"
