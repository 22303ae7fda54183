#!/usr/bin/env bash
# The latency the two-proxy mTLS path adds (issue 3's benchmark):
#
#   generator --plaintext--> client-side proxy --mTLS (TLS 1.3, both sides verified)-->
#             server-side proxy --plaintext--> jalin-bench upstream
#
# compared with the upstream direct, in the same run (ABBA phases). Certificates are made with
# openssl in the work dir: a root, an intermediate and two SPIFFE leaves (URI SAN
# spiffe://cluster.local/ns/bench/sa/{client,server}, EKU clientAuth+serverAuth, ECDSA P-256).
#
#   bench/scripts/mtls-overhead.sh --proxy haproxy          # HAProxy from Debian, nbthread 1 each
#   bench/scripts/mtls-overhead.sh --proxy jalin            # two jalin-proxy --workers 1
#   bench/scripts/mtls-overhead.sh --proxy haproxy,jalin    # one after the other, then a table
#
# Defaults: 1,000 req/s, 16 connections, 1 KiB bodies (request and response), HTTP/1.1, 30 s per
# target in 6 phases. Every process it starts is stopped on exit, SIGINT and SIGTERM included.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/mesh.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --proxy LIST            haproxy, jalin, or both comma-separated (default: haproxy)
  --jalin-cmd CMD         command for each jalin-proxy; {config} is replaced
                          (default: \${JALIN_PROXY:-target/release/jalin-proxy} --config {config} --workers 1)
  --client-template FILE  client-side jalin config (default bench/scripts/jalin-mtls-client.yaml.tmpl)
  --server-template FILE  server-side jalin config (default bench/scripts/jalin-mtls-server.yaml.tmpl)
  --client-listen ADDR    client-side proxy, plaintext in (default \${PROXY_ADDR:-127.0.0.1:18081})
  --server-listen ADDR    server-side proxy, mTLS in (default \${MTLS_ADDR:-127.0.0.1:18443})
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16)
  --body SIZE             request and response body size (default 1KiB)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --out DIR               keep the JSON reports (NAME.json) and the PKI here
environment: JALIN_BENCH, JALIN_PROXY, PIN=0 (no pinning), RT=1 (generator and upstream under
             SCHED_FIFO; needs root), KEEP_WORK=1 (keep configs, certificates and logs)
USAGE
}

proxies=haproxy jalin_cmd="" client_tmpl="$BENCH_SCRIPTS/jalin-mtls-client.yaml.tmpl"
server_tmpl="$BENCH_SCRIPTS/jalin-mtls-server.yaml.tmpl"
client_listen="${PROXY_ADDR:-127.0.0.1:18081}" server_listen="${MTLS_ADDR:-127.0.0.1:18443}"
rate=1000 connections=16 body=1KiB duration=30s warmup=5s phases=6 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxies="$2"; shift 2 ;;
    --jalin-cmd) jalin_cmd="$2"; shift 2 ;;
    --client-template) client_tmpl="$2"; shift 2 ;;
    --server-template) server_tmpl="$2"; shift 2 ;;
    --client-listen) client_listen="$2"; shift 2 ;;
    --server-listen) server_listen="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
[ -n "$jalin_cmd" ] || jalin_cmd="${JALIN_PROXY:-$REPO/target/release/jalin-proxy} --config {config} --workers 1"
reports="${out:-$WORK}"
mkdir -p "$reports"
reports="$(cd "$reports" && pwd)"

TD=cluster.local NS=bench
CLIENT_ID="spiffe://$TD/ns/$NS/sa/client" SERVER_ID="spiffe://$TD/ns/$NS/sa/server"
PKI="$reports/pki"
gen_mesh_pki "$PKI" "$TD" "$NS" client server
echo "PKI in $PKI: root -> intermediate -> $CLIENT_ID, $SERVER_ID (P-256, clientAuth+serverAuth)"

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
start_upstream_n "$bench" "$body"
upstream="${UPSTREAM_ADDRS[0]}"
check_path "http://$upstream/" 1.1
host_line "before"

# HAProxy, one thread per side, TLS 1.3 only. HAProxy verifies the peer's chain to the root but,
# unlike jalin, cannot check the peer's SPIFFE ID (2.6 has no URI-SAN check): the comparison
# gives HAProxy the cheaper verification.
haproxy_mtls_config() {
  local side="$1" listen="$2" to="$3" file="$WORK/haproxy-mtls-$1.cfg" bind server
  if [ "$side" = client ]; then
    bind="bind $listen"
    server="server peer $to ssl crt $PKI/client.pem ca-file $PKI/root.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1"
  else
    bind="bind $listen ssl crt $PKI/server.pem ca-file $PKI/root.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1"
    server="server app $to"
  fi
  cat >"$file" <<CFG
global
    nbthread 1
    maxconn 4096
    tune.bufsize 16384

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend $side
    $bind
    default_backend next

backend next
    $server
CFG
  haproxy -c -q -f "$file" || die "HAProxy rejected $file"
  echo "$file"
}

# The server-side port must refuse plaintext and TLS without a client certificate.
check_mtls_enforced() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$server_listen/" || true)"
  case "$code" in 2*) die "the server-side proxy answered plaintext with $code: mTLS is not enforced" ;; esac
  code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://$server_listen/" || true)"
  case "$code" in 2*) die "the server-side proxy answered TLS without a client certificate: mTLS is not enforced" ;; esac
  echo "server-side $server_listen refuses plaintext and certificate-less TLS"
}

PIDS_RSS=()
start_pair() {
  local name="$1" cfg
  case "$name" in
    haproxy)
      command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
      cfg="$(haproxy_mtls_config server "$server_listen" "$upstream")"
      launch_proxy haproxy-server "$server_listen" haproxy -db -f "$cfg"
      PIDS_RSS=("$PROXY_PID")
      cfg="$(haproxy_mtls_config client "$client_listen" "$server_listen")"
      launch_proxy haproxy-client "$client_listen" haproxy -db -f "$cfg"
      PIDS_RSS+=("$PROXY_PID")
      ;;
    jalin)
      require_cmd "$jalin_cmd"
      local common=(roots="$PKI/root.pem" trust_domain="$TD" namespace="$NS")
      fill_braces "$server_tmpl" "$WORK/jalin-mtls-server.yaml" "${common[@]}" \
        cert="$PKI/server-chain.pem" key="$PKI/server-key.pem" spiffe_id="$SERVER_ID" \
        peer_spiffe_id="$CLIENT_ID" service_account=server listen="$server_listen" upstream="$upstream"
      fill_braces "$client_tmpl" "$WORK/jalin-mtls-client.yaml" "${common[@]}" \
        cert="$PKI/client-chain.pem" key="$PKI/client-key.pem" spiffe_id="$CLIENT_ID" \
        peer_spiffe_id="$SERVER_ID" service_account=client listen="$client_listen" upstream="$server_listen"
      # shellcheck disable=SC2086 # the command is a template given as one string
      launch_proxy jalin-server "$server_listen" ${jalin_cmd//\{config\}/$WORK/jalin-mtls-server.yaml}
      PIDS_RSS=("$PROXY_PID")
      # shellcheck disable=SC2086
      launch_proxy jalin-client "$client_listen" ${jalin_cmd//\{config\}/$WORK/jalin-mtls-client.yaml}
      PIDS_RSS+=("$PROXY_PID")
      ;;
    *) die "unknown proxy $name: haproxy or jalin" ;;
  esac
}

table=() added=() rss_lines=()
IFS=',' read -r -a proxy_list <<<"$proxies"
for name in "${proxy_list[@]}"; do
  start_pair "$name"
  check_mtls_enforced
  check_path "http://$client_listen/" 1.1
  idle="$(rss_kib "${PIDS_RSS[0]}")+$(rss_kib "${PIDS_RSS[1]}")"
  args=(overhead --direct "http://$upstream/" --via "http://$client_listen/" --rate "$rate"
        --connections "$connections" --body-size "$body" --http 1.1 --duration "$duration"
        --warmup "$warmup" --phases "$phases" --json "$reports/$name.json")
  echo "+ jalin-bench ${args[*]}"
  [ ${#RT_PREFIX[@]} -gt 0 ] && echo "generator and upstream run under SCHED_FIFO (RT=1)"
  run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
  rss_lines+=("$name RSS (server-side+client-side KiB): idle $idle, after load $(rss_kib "${PIDS_RSS[0]}")+$(rss_kib "${PIDS_RSS[1]}")")
  table+=("$name=$reports/$name.json") added+=("$name=$reports/$name.json")
  for pid in "${PIDS_RSS[@]}"; do stop_pid "$pid"; done
done

echo
echo "two-proxy mTLS path vs. direct: open loop $rate req/s, $connections connections, $body request and response, HTTP/1.1, TLS 1.3 between the proxies, $duration per target in $phases ABBA phases:"
"$bench" compare "${table[@]}"
added_table "${added[@]}"
printf '%s\n' "${rss_lines[@]}"
host_line "after"
