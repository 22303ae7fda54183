#!/usr/bin/env bash
# The latency the edge gateway adds, per client protocol: one jalin-proxy gateway listener
# terminating TLS (TLS 1.3, the government policy) with HTTP/3 on the same port, routing by host
# (an Istio Gateway-bound route table) to `jalin-bench upstream` over HTTP/1.1. One
# `jalin-bench overhead` run measures, in the same ABC…CBA rounds: the upstream directly
# (plaintext HTTP/1.1), and through the gateway over HTTPS with HTTP/1.1, HTTP/2 and HTTP/3.
# The "added" rows therefore include TLS (or QUIC) termination, which the direct path does not
# do. Certificates: a throwaway P-256 root and a server certificate for 127.0.0.1, made with
# openssl.
#
#   bench/scripts/gateway-overhead.sh
#   RT=1 PROXY_RT=1 SHIELD=1 LOAD_POLL=1 bench/scripts/gateway-overhead.sh --json out.json
#
# Defaults: 1,000 req/s, 16 connections, 1 KiB bodies. Every process it starts is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16; HTTP/2 and HTTP/3 carry one
                          request at a time per connection at this rate)
  --body SIZE             request and response body size (default 1KiB)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --json FILE             also write the JSON report here
environment: JALIN_BENCH, JALIN_PROXY (binaries; default target/release/...), GW_ADDR (default
             127.0.0.1:18443), PIN=0, RT=1, PROXY_RT=1, SHIELD=1, LOAD_POLL=1 (see common.sh), KEEP_WORK=1
USAGE
}

rate=1000 connections=16 body=1KiB duration=30s warmup=5s phases=6 json=""
while [ $# -gt 0 ]; do
  case "$1" in
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
gw_addr="${GW_ADDR:-127.0.0.1:18443}"
proxy_scheduling gateway
command -v openssl >/dev/null || die "openssl is needed for the certificates (apt-get install openssl)"
require_free "$gw_addr"

# A throwaway root and the gateway's certificate (IP SAN 127.0.0.1), P-256.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench root" \
  -keyout "$WORK/root-key.pem" -out "$WORK/root.pem" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=gateway" \
  -keyout "$WORK/gw-key.pem" -out "$WORK/gw.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' >"$WORK/gw.ext"
openssl x509 -req -in "$WORK/gw.csr" -CA "$WORK/root.pem" -CAkey "$WORK/root-key.pem" -CAcreateserial \
  -days 2 -extfile "$WORK/gw.ext" -out "$WORK/gw.pem" 2>/dev/null

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
shield_proxy_cpu
poll_load_cpus
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
start_upstream "$bench" "$body"

cat >"$WORK/gateway.yaml" <<YAML
admin: { address: 127.0.0.1:0 }
listeners:
  - name: gw
    address: $gw_addr
    direction: outbound
    gateway: bench/ingress
    http3: true
    tls:
      mode: SIMPLE
      certificate_chain: $WORK/gw.pem
      private_key: $WORK/gw-key.pem
services:
  - name: app
    protocol: http1
    endpoints: [{ address: $UPSTREAM_ADDR }]
routes:
  - meta: { name: app, namespace: bench }
    hosts: ["*"]
    gateways: [bench/ingress]
    http:
      - destinations: [{ destination: { host: app }, weight: 100 }]
YAML
bin="${JALIN_PROXY:-$REPO/target/release/jalin-proxy}"
[ -x "$bin" ] || die "$bin not found: cargo build --release -p jalin-proxy"
"${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$bin" --config "$WORK/gateway.yaml" --workers 1 >"$WORK/gateway.log" 2>&1 &
STARTED_PIDS+=("$!"); gw_pid="$!"
wait_port "$gw_addr" "$gw_pid"

echo "host: $NCPU CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average $(cut -d' ' -f1-3 /proc/loadavg); gateway on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS; $sched"
url="https://$gw_addr/"
args=(overhead --direct "http://$UPSTREAM_ADDR/" --via "h1+$url" --via-name "https-h1"
      --compare "https-h2=h2+$url" --compare "h3=h3+$url" --cacert "$WORK/root.pem"
      --rate "$rate" --connections "$connections" --body-size "$body" --http 1.1
      --duration "$duration" --warmup "$warmup" --phases "$phases")
[ -n "$json" ] && args+=(--json "$json")
echo "+ jalin-bench ${args[*]}"
steal_before="$(steal_ms)"
run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
echo "CPU time stolen by the hypervisor during the run (ms, per CPU): $(steal_delta "$steal_before" "$(steal_ms)")"
echo "RSS gateway: $(rss_kib "$gw_pid") KiB"
