#!/usr/bin/env bash
# Single-worker throughput, side by side: HAProxy from Debian (nbthread 1) vs. jalin-proxy
# (--workers 1), same built-in upstream, same closed-loop `throughput` scenario, one after the
# other; prints a table. The proxy runs alone on the last CPU (PIN=0 turns pinning off).
#
#   bench/scripts/vs-haproxy.sh
#   bench/scripts/vs-haproxy.sh --jalin-cmd 'target/release/jalin-proxy --config {config} --workers 1' \
#                               --config-template bench/scripts/jalin-proxy.yaml.tmpl
#   bench/scripts/vs-haproxy.sh --contender haproxy    # self-check: HAProxy in both slots
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --contender NAME        jalin (default) or haproxy (runs HAProxy twice: checks the script itself)
  --jalin-cmd CMD         command that starts jalin-proxy; {config} {listen} {upstream} are replaced
                          (default: \${JALIN_PROXY:-target/release/jalin-proxy} --config {config} --workers 1)
  --config-template FILE  jalin-proxy config template (default bench/scripts/jalin-proxy.yaml.tmpl)
  --listen ADDR           where each proxy listens (default \${PROXY_ADDR:-127.0.0.1:18081})
  --connections N         connections (default 32)
  --body SIZE             request body size (default 0; the response is 1KiB unless --response)
  --response SIZE         upstream response size (default 1KiB)
  --http 1.1|2            HTTP version (default 1.1)
  --duration D            measured time per proxy (default 15s)
  --warmup D              warm-up per proxy (default 3s)
  --direct                also measure the upstream without a proxy
  --out DIR               keep the JSON reports here
environment: JALIN_BENCH, JALIN_PROXY, PIN=0, KEEP_WORK=1
USAGE
}

contender=jalin jalin_cmd="" template="" listen="${PROXY_ADDR:-127.0.0.1:18081}"
connections=32 body=0 response=1KiB http=1.1 duration=15s warmup=3s direct=0 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --contender) contender="$2"; shift 2 ;;
    --jalin-cmd) jalin_cmd="$2"; shift 2 ;;
    --config-template) template="$2"; shift 2 ;;
    --listen) listen="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --response) response="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --direct) direct=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
[ -n "$jalin_cmd" ] || jalin_cmd="${JALIN_PROXY:-$REPO/target/release/jalin-proxy} --config {config} --workers 1"
[ -n "$template" ] || template="$BENCH_SCRIPTS/jalin-proxy.yaml.tmpl"
reports="${out:-$WORK}"
mkdir -p "$reports"

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
start_upstream "$bench" "$response"
echo "host: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg); proxy on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS"

load=(--connections "$connections" --body-size "$body" --http "$http" --duration "$duration" --warmup "$warmup")
table=()
rss_lines=()

measure() {
  local name="$1" url="$2"
  echo "+ jalin-bench throughput $url ${load[*]}" >&2
  run_tracked "${PIN_LOAD[@]}" "$bench" throughput "$url" "${load[@]}" --json "$reports/$name.json" >/dev/null
  table+=("$name=$reports/$name.json")
}

if [ "$direct" = 1 ]; then
  check_path "http://$UPSTREAM_ADDR/" "$http"
  measure direct "http://$UPSTREAM_ADDR/"
fi

run_proxy() {
  local label="$1" kind="$2" cmd="$3" tmpl="$4" idle
  start_proxy "$kind" "$cmd" "$tmpl" "$listen" "$UPSTREAM_ADDR" "$http"
  check_path "http://$listen/" "$http"
  idle="$(rss_kib "$PROXY_PID")"
  measure "$label" "http://$listen/"
  rss_lines+=("$label RSS: idle $idle KiB, after load $(rss_kib "$PROXY_PID") KiB")
  stop_pid "$PROXY_PID"
}

run_proxy haproxy haproxy "" ""
case "$contender" in
  haproxy) run_proxy haproxy-again haproxy "" "" ;;
  jalin) run_proxy jalin-proxy jalin "$jalin_cmd" "$template" ;;
  *) die "unknown contender $contender: jalin or haproxy" ;;
esac

echo
echo "single-worker throughput, closed loop, $connections connections, HTTP/$http, ${body} B request / $response response, $duration each:"
"$bench" compare "${table[@]}"
printf '%s\n' "${rss_lines[@]}"
