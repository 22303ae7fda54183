# Helpers for the mesh scenarios (sourced after common.sh, not run): a host line, several
# built-in upstreams, a mesh PKI made with openssl, `{placeholder}` config templates, a proxy
# started from an argument list, and the `added` rows of saved overhead reports.
# shellcheck shell=bash

# One line on the machine: CPUs, model, load average, pinning. Print it before and after a run.
host_line() {
  local sched="normal scheduling"
  [ "${RT:-0}" = "1" ] && sched="generator and upstreams SCHED_FIFO 10"
  [ "${PROXY_RT:-0}" = "1" ] && sched="$sched, proxies SCHED_FIFO 5"
  echo "host: nproc $(nproc), CPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg) ($1); proxies on CPU $PROXY_CPUS, upstreams and generator on CPU $LOAD_CPUS; $sched"
}

# Starts one more built-in upstream on a free port (generator CPUs, RT prefix if any); appends its
# address to UPSTREAM_ADDRS.
UPSTREAM_ADDRS=()
start_upstream_n() {
  local bench="$1" size="$2" n="${#UPSTREAM_ADDRS[@]}" pid addr
  "${UPSTREAM_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" upstream --listen 127.0.0.1:0 --response-size "$size" --threads 1 \
    >"$WORK/upstream-$n.out" 2>"$WORK/upstream-$n.log" &
  pid="$!"
  STARTED_PIDS+=("$pid")
  for _ in $(seq 1 200); do
    grep -q '^listening on ' "$WORK/upstream-$n.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "jalin-bench upstream exited: $(cat "$WORK/upstream-$n.log")"
    sleep 0.05
  done
  addr="$(sed -n 's/^listening on //p' "$WORK/upstream-$n.out")"
  [ -n "$addr" ] || die "jalin-bench upstream did not report its address"
  UPSTREAM_ADDRS+=("$addr")
}

# Fills `{name}` placeholders: fill_braces TEMPLATE OUT name=value...; fails if a placeholder of
# the form {lower_case} is left (a template asking for something the script does not provide).
fill_braces() {
  local template="$1" out="$2" kv key value esc args=()
  shift 2
  [ -f "$template" ] || die "config template $template not found"
  for kv in "$@"; do
    key="${kv%%=*}"; value="${kv#*=}"
    esc="$(printf '%s' "$value" | sed -e 's/[|&\\]/\\&/g')"
    args+=(-e "s|{$key}|$esc|g")
  done
  sed "${args[@]}" "$template" >"$out"
  if grep -v '^[[:space:]]*#' "$out" | grep -qE '\{[a-z_0-9]+\}'; then
    die "$template: placeholder(s) $(grep -v '^[[:space:]]*#' "$out" | grep -oE '\{[a-z_0-9]+\}' | sort -u | tr '\n' ' ')left unfilled"
  fi
}

# PROXY_RT=1 runs the proxies under SCHED_FIFO too, one priority below the generator (chrt -f 5),
# so on a shared host other tenants' builds cannot preempt them either; every contender gets the
# same treatment. Needs root or CAP_SYS_NICE. Say so next to the numbers.
PROXY_RT_PREFIX=()
if [ "${PROXY_RT:-0}" = "1" ]; then
  chrt -f 5 true 2>/dev/null || die "PROXY_RT=1 needs permission for chrt -f (root or CAP_SYS_NICE)"
  PROXY_RT_PREFIX=(chrt -f 5)
fi

# Starts a proxy from an argument list, pinned to the proxy CPU; waits for LISTEN; sets PROXY_PID.
# launch_proxy LABEL LISTEN CMD ARGS...
launch_proxy() {
  local label="$1" listen="$2"
  shift 2
  require_free "$listen"
  echo "proxy $label: ${PROXY_RT_PREFIX[*]} $*  (CPU $PROXY_CPUS)" >&2
  "${PROXY_RT_PREFIX[@]}" "${PIN_PROXY[@]}" "$@" >"$WORK/proxy-$label.log" 2>&1 &
  PROXY_PID="$!"
  STARTED_PIDS+=("$PROXY_PID")
  wait_port "$listen" "$PROXY_PID"
}

# A mesh PKI in DIR, made with openssl: a root, an intermediate (pathlen 0) and one SPIFFE leaf per
# NAME (URI SAN spiffe://TRUST_DOMAIN/ns/NS/sa/NAME, EKU serverAuth+clientAuth, ECDSA P-256).
# Files: root.pem, intermediate.pem, NAME-cert.pem (leaf), NAME-chain.pem (leaf + intermediate),
# NAME-key.pem (PKCS#8), NAME.pem (chain + key in one file, for HAProxy's `crt`).
# gen_mesh_pki DIR TRUST_DOMAIN NS NAME...
gen_mesh_pki() {
  local dir="$1" td="$2" ns="$3" name
  shift 3
  command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
  mkdir -p "$dir"
  (
    set -e
    cd "$dir"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    cat >ext.cnf <<EXT
[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT
    ec root-key.pem
    openssl req -x509 -new -key root-key.pem -sha256 -days 2 -subj "/O=jalin bench/CN=jalin bench root (not for production)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" -out root.pem
    ec intermediate-key.pem
    openssl req -new -key intermediate-key.pem -subj "/O=jalin bench/CN=jalin bench intermediate" -out intermediate.csr
    openssl x509 -req -in intermediate.csr -CA root.pem -CAkey root-key.pem -set_serial "0x$(openssl rand -hex 16)" \
      -days 2 -sha256 -extfile ext.cnf -extensions intermediate -out intermediate.pem 2>/dev/null
    for name in "$@"; do
      cat >"$name.cnf" <<EXT
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = URI:spiffe://$td/ns/$ns/sa/$name
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT
      ec "$name-key.pem"
      openssl req -new -key "$name-key.pem" -subj "/O=$td" -out "$name.csr"
      openssl x509 -req -in "$name.csr" -CA intermediate.pem -CAkey intermediate-key.pem \
        -set_serial "0x$(openssl rand -hex 16)" -days 1 -sha256 -extfile "$name.cnf" -extensions leaf \
        -out "$name-cert.pem" 2>/dev/null
      openssl verify -CAfile root.pem -untrusted intermediate.pem -purpose sslclient "$name-cert.pem" >/dev/null
      openssl verify -CAfile root.pem -untrusted intermediate.pem -purpose sslserver "$name-cert.pem" >/dev/null
      cat "$name-cert.pem" intermediate.pem >"$name-chain.pem"
      cat "$name-chain.pem" "$name-key.pem" >"$name.pem"
    done
  ) || die "making the test PKI in $dir failed"
}

# Prints the `added` (via - direct) latency of saved overhead reports, in ms, one row per
# NAME=FILE (the same numbers as the `added` row of each run's report).
added_table() {
  command -v jq >/dev/null || { echo "(install jq for the added-latency table)"; return 0; }
  printf '%-16s %9s %9s %9s %9s %9s %9s\n' "added ms" mean p50 p90 p99 p99.9 max
  local nf
  for nf in "$@"; do
    jq -r --arg n "${nf%%=*}" '[$n, .added_us.mean, .added_us.p50, .added_us.p90, .added_us.p99,
        .added_us.p999, .added_us.max] | @tsv' "${nf#*=}" |
      awk -F'\t' '{ printf "%-16s", $1; for (i = 2; i <= 7; i++) printf " %+9.3f", $i / 1000; print "" }'
  done
}

# Fails early when the first word of a command template is not an executable (for example a
# jalin-proxy that was not built yet).
require_cmd() {
  local first="${1%% *}"
  command -v "$first" >/dev/null 2>&1 ||
    die "$first is not an executable: build it (cargo build --release -p jalin-proxy) or set JALIN_PROXY / --jalin-cmd"
}
