#!/usr/bin/env bash
# The latency the two-proxy mTLS path adds (issue 3): application -> client proxy (outbound,
# originates mTLS, verifies the server's SPIFFE ID) -> server proxy (inbound, STRICT, terminates
# mTLS, authorizes) -> upstream, measured against the upstream direct in the same run (ABBA).
#
#   bench/scripts/mtls-jalin.sh                       # 1,000 req/s, 16 connections, 1 KiB, HTTP/1.1
#   bench/scripts/mtls-jalin.sh --http 2 --duration 60s
#
# Certificates come from `jalin ca init-dev` (a development root and intermediate, NOT FOR
# PRODUCTION) and `jalin ca issue` (one workload certificate per proxy, as on bare metal), so the
# proxies read them from files (`identity.certificate.files`). Every process it starts is stopped
# on exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --client ADDR      client proxy's outbound listener (default 127.0.0.1:18081)
  --server ADDR      server proxy's inbound listener (default 127.0.0.1:18082)
  --rate N           requests per second (default 1000)
  --connections N    connections per target (default 16)
  --body SIZE        request and response body size (default 1KiB)
  --http 1.1|2       HTTP version between the generator and the client proxy (default 1.1)
  --tls-policy P     default | government (default: default)
  --duration D       measured time per target (default 30s)
  --warmup D         warm-up per target (default 5s)
  --phases N         alternating phases per target (default 6)
  --json FILE        also write the JSON report here
environment: JALIN_BENCH, JALIN_PROXY (default target/release/jalin-proxy), JALIN (default
             target/release/jalin), PIN=0, RT=1, KEEP_WORK=1 (see overhead.sh)
USAGE
}

client_addr=127.0.0.1:18081 server_addr=127.0.0.1:18082 rate=1000 connections=16 body=1KiB
http=1.1 policy=default duration=30s warmup=5s phases=6 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --client) client_addr="$2"; shift 2 ;;
    --server) server_addr="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    --tls-policy) policy="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

if [ -z "${JALIN_PROXY:-}" ] || [ -z "${JALIN:-}" ]; then
  echo "building jalin-proxy and jalin (release)..." >&2
  (cd "$REPO" && cargo build --release -q -p jalin-proxy -p jalin-control) || die "release build failed"
fi
proxy_bin="${JALIN_PROXY:-$REPO/target/release/jalin-proxy}"
jalin="${JALIN:-$REPO/target/release/jalin}"
bench="$(bench_binary)"
[ -x "$bench" ] || exit 1

# 1. A development CA and one certificate per proxy: `jalin ca init-dev` and `jalin ca issue`
#    when this jalin has the `ca` subcommand, else the same chain made with the openssl CLI
#    (P-256 root pathLen 1, intermediate pathLen 0, leaves with only a SPIFFE URI SAN,
#    clientAuth + serverAuth).
ca="$WORK/ca"
mkdir -p "$ca"
if "$jalin" ca --help >/dev/null 2>&1; then
  "$jalin" ca init-dev --out-dir "$ca" --trust-domain cluster.local >/dev/null
  issue() {
    "$jalin" ca issue --chain "$ca/intermediate.pem" --roots "$ca/root.pem" \
      --key "$ca/intermediate-key.pem" --trust-domain cluster.local \
      --namespace bench --service-account "$1" --ttl 24h \
      --out-cert "$WORK/$1.pem" --out-key "$WORK/$1-key.pem" >/dev/null
  }
else
  echo "this jalin has no 'ca' subcommand; making the development chain with openssl" >&2
  ossl_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  ossl_key "$ca/root-key.pem"
  openssl req -x509 -new -key "$ca/root-key.pem" -days 30 -subj "/O=jalin bench (NOT FOR PRODUCTION)/CN=bench root" \
    -addext "basicConstraints=critical,CA:true,pathlen:1" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$ca/root.pem" 2>/dev/null
  ossl_key "$ca/intermediate-key.pem"
  openssl req -new -key "$ca/intermediate-key.pem" -subj "/O=jalin bench (NOT FOR PRODUCTION)/CN=bench intermediate" \
    -out "$ca/intermediate.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$ca/intermediate.ext"
  openssl x509 -req -in "$ca/intermediate.csr" -CA "$ca/root.pem" -CAkey "$ca/root-key.pem" -CAcreateserial \
    -days 30 -extfile "$ca/intermediate.ext" -out "$ca/intermediate.pem" 2>/dev/null
  issue() {
    ossl_key "$WORK/$1-key.pem"
    openssl req -new -key "$WORK/$1-key.pem" -subj "/" -out "$WORK/$1.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:spiffe://cluster.local/ns/bench/sa/%s\nauthorityKeyIdentifier=keyid\n' "$1" >"$WORK/$1.ext"
    openssl x509 -req -in "$WORK/$1.csr" -CA "$ca/intermediate.pem" -CAkey "$ca/intermediate-key.pem" \
      -CAcreateserial -days 1 -extfile "$WORK/$1.ext" -out "$WORK/$1-leaf.pem" 2>/dev/null
    cat "$WORK/$1-leaf.pem" "$ca/intermediate.pem" >"$WORK/$1.pem"
  }
fi
issue bench-server
issue bench-client

# 2. The upstream, then the server proxy (inbound, STRICT) and the client proxy (outbound, mTLS).
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
start_upstream "$bench" "$body"
identity() {
  cat <<YAML
identity:
  trust_domain: cluster.local
  namespace: bench
  service_account: $1
  trust_bundles: [$ca/root.pem]
  tls_policy: $policy
  certificate:
    files: { cert: $WORK/$1.pem, key: $WORK/$1-key.pem }
YAML
}
cat >"$WORK/server.yaml.tmpl" <<YAML
admin:
  address: 127.0.0.1:0
$(identity bench-server)
listeners:
  - name: inbound
    address: $server_addr
    direction: inbound
    service: app
    mtls: STRICT
services:
  - name: app
    endpoints:
      - address: $UPSTREAM_ADDR
authorization:
  policies:
    - meta: { name: bench-clients, namespace: bench }
      rules:
        - from: [ { principals: ["cluster.local/ns/bench/sa/bench-client"] } ]
YAML
cat >"$WORK/client.yaml.tmpl" <<YAML
admin:
  address: 127.0.0.1:0
$(identity bench-client)
listeners:
  - name: outbound
    address: $client_addr
    direction: outbound
    service: server
services:
  - name: server
    protocol: http2
    endpoints:
      - address: $server_addr
    tls:
      mode: istio_mutual
      identity: spiffe://cluster.local/ns/bench/sa/bench-server
YAML
start_proxy jalin-server "$proxy_bin --config {config} --workers 1" "$WORK/server.yaml.tmpl" "$server_addr" "$UPSTREAM_ADDR" "$http"
server_pid="$PROXY_PID"
start_proxy jalin-client "$proxy_bin --config {config} --workers 1" "$WORK/client.yaml.tmpl" "$client_addr" "$server_addr" "$http"
check_path "http://$UPSTREAM_ADDR/" "$http"
check_path "http://$client_addr/" "$http"

# 3. Direct vs. through both proxies.
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); proxies on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS"
args=(overhead --direct "http://$UPSTREAM_ADDR/" --via "http://$client_addr/" --rate "$rate"
      --connections "$connections" --body-size "$body" --http "$http" --duration "$duration"
      --warmup "$warmup" --phases "$phases")
[ -n "$json" ] && args+=(--json "$json")
echo "+ jalin-bench ${args[*]}"
run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
echo "RSS after load: client proxy $(rss_kib "$PROXY_PID") KiB, server proxy $(rss_kib "$server_pid") KiB"
