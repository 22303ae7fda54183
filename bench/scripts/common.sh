# Shared helpers for the benchmark scripts (sourced, not run): process tracking with cleanup on
# exit, CPU pinning, port waits, the built-in upstream and the proxy under test.
# shellcheck shell=bash

BENCH_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_SCRIPTS/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/jalin-bench.XXXXXX")"
STARTED_PIDS=()

# Stops processes this script started: SIGTERM, up to 5 s to exit (a proxy may drain), then SIGKILL.
terminate() {
  local pid i
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

cleanup() {
  terminate "${STARTED_PIDS[@]}"
  unshield
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "work files kept in $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "error: $*" >&2; exit 1; }

# Stops one process this script started (by pid) and forgets it.
stop_pid() {
  local pid="$1" kept=() p
  terminate "$pid"
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
}

# CPU pinning (PIN=0 turns it off): the proxy gets the last CPU to itself; the upstream and the
# generator share the others, so the proxy's single worker never competes with them.
NCPU="$(nproc)"
if [ "${PIN:-1}" = "1" ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
  PROXY_CPUS="$((NCPU - 1))"
  LOAD_CPUS="0"
  [ "$NCPU" -gt 2 ] && LOAD_CPUS="0-$((NCPU - 2))"
  PIN_PROXY=(taskset -c "$PROXY_CPUS")
  PIN_LOAD=(taskset -c "$LOAD_CPUS")
else
  PROXY_CPUS="any"; LOAD_CPUS="any"; PIN_PROXY=(); PIN_LOAD=()
fi

# SHIELD=1 (needs pinning and root): before anything is started, moves every other task and
# interrupt that can be moved off the proxies' CPU, like `cset shield`, and restores their
# affinity on exit. On a kernel without full preemption (PREEMPT_NONE, common on VM images) a
# task in a long system call on the proxies' CPU cannot be preempted even by a SCHED_FIFO proxy,
# and a proxy woken behind it waits for the call to end: on this VM the harness's own I/O thread
# held the CPU for up to 2 ms that way. Per-CPU kernel threads and the local timer stay; so does
# the hypervisor's steal time, which the scripts report.
SHIELD_SAVED=() SHIELD_IRQS=()
shield_proxy_cpu() {
  [ "${SHIELD:-0}" = "1" ] || return 0
  [ "${#PIN_PROXY[@]}" -gt 0 ] || die "SHIELD=1 needs CPU pinning (PIN=1 and at least 2 CPUs)"
  local task tid mask irq moved=0 irqs=0
  for task in /proc/[0-9]*/task/[0-9]*; do
    tid="${task##*/}"
    mask="$(taskset -p "$tid" 2>/dev/null | awk '{print $NF}')" || continue
    [ -n "$mask" ] || continue
    if taskset -p -c "$LOAD_CPUS" "$tid" >/dev/null 2>&1; then
      SHIELD_SAVED+=("$tid:$mask"); moved=$((moved + 1))
    fi
  done
  for irq in /proc/irq/[0-9]*; do
    mask="$(cat "$irq/smp_affinity_list" 2>/dev/null)" || continue
    if echo "$LOAD_CPUS" >"$irq/smp_affinity_list" 2>/dev/null; then
      SHIELD_IRQS+=("${irq##*/}:$mask"); irqs=$((irqs + 1))
    fi
  done
  echo "shield: moved $moved tasks and $irqs interrupts off CPU $PROXY_CPUS (restored on exit)"
}
unshield() {
  local e
  for e in "${SHIELD_SAVED[@]}"; do taskset -p "${e#*:}" "${e%%:*}" >/dev/null 2>&1 || true; done
  for e in "${SHIELD_IRQS[@]}"; do echo "${e#*:}" >"/proc/irq/${e%%:*}/smp_affinity_list" 2>/dev/null || true; done
  SHIELD_SAVED=() SHIELD_IRQS=()
}

# LOAD_POLL=1 (needs pinning): keeps the harness's CPU (generator and upstream) out of halt for
# the run with one idle-class spinner per load CPU (`chrt -i 0`: any other task preempts it at
# once), as `idle=poll` or a KVM guest's cpuidle-haltpoll driver does. On a VM without haltpoll
# a halted vCPU is woken by the hypervisor, which can take hundreds of microseconds when the host
# is busy. In the co-located topology the proxied path wakes the harness's CPU from halt twice
# per request (the upstream from the inbound proxy, the generator from the outbound proxy),
# while the direct path keeps it running (generator and upstream wake each other on one CPU):
# the harness, not the proxies, would add that wake-up to the measured difference. The proxies'
# own CPU halts as usual, so their wake-ups stay in the result. Started after the shield; stopped
# on exit.
poll_load_cpus() {
  [ "${LOAD_POLL:-0}" = "1" ] || return 0
  [ "${#PIN_LOAD[@]}" -gt 0 ] || die "LOAD_POLL=1 needs CPU pinning (PIN=1 and at least 2 CPUs)"
  local cpu
  for cpu in $(seq "${LOAD_CPUS%%-*}" "${LOAD_CPUS##*-}"); do
    taskset -c "$cpu" chrt -i 0 bash -c 'while :; do :; done' &
    STARTED_PIDS+=("$!")
  done
  echo "load CPU $LOAD_CPUS kept out of halt (idle-class spinner, LOAD_POLL=1)"
}

# PROXY_RT=1: the proxies under test run under SCHED_FIFO 5 (below the generator and upstream),
# so other tenants' jobs on their CPU cannot preempt them. Sets PROXY_RT_PREFIX, and `sched`:
# how this run is scheduled, for the host line (`what`: the proxies' name in it).
proxy_scheduling() {
  local what="$1"
  PROXY_RT_PREFIX=() sched="normal scheduling"
  [ "${RT:-0}" = "1" ] && sched="generator and upstream SCHED_FIFO 10"
  if [ "${PROXY_RT:-0}" = "1" ]; then
    chrt -f 5 true 2>/dev/null || die "PROXY_RT=1 needs permission for chrt -f (root or CAP_SYS_NICE)"
    PROXY_RT_PREFIX=(chrt -f 5)
    sched="$sched, $what SCHED_FIFO 5"
  fi
  [ "${SHIELD:-0}" = "1" ] && sched="$sched, $what CPU shielded"
  [ "${LOAD_POLL:-0}" = "1" ] && sched="$sched, load CPU polling"
  return 0
}
# Steal time per CPU (ms, from /proc/stat; USER_HZ is 100 on Linux): time the hypervisor ran
# something else while this VM's CPU wanted to run, which no scheduling here can prevent.
steal_ms() { awk '/^cpu[0-9]/ { printf "%s=%d ", $1, $9 * 10 }' /proc/stat; }
steal_delta() {
  local before="$1" after="$2" b a out=""
  for a in $after; do
    for b in $before; do
      [ "${a%%=*}" = "${b%%=*}" ] && out="$out ${a%%=*} +$(( ${a#*=} - ${b#*=} ))"
    done
  done
  echo "${out# }"
}

# RT=1 runs the measuring side (generator and upstream) under SCHED_FIFO (chrt -f 10), so other
# tenants of the machine cannot delay its sends; the proxy keeps normal scheduling. Needs root or
# CAP_SYS_NICE. Used by overhead.sh only (a closed loop under SCHED_FIFO would starve the CPU).
RT_PREFIX=()
if [ "${RT:-0}" = "1" ]; then
  chrt -f 10 true 2>/dev/null || die "RT=1 needs permission for chrt -f (root or CAP_SYS_NICE)"
  RT_PREFIX=(chrt -f 10)
fi
UPSTREAM_PREFIX=()

# The jalin-bench binary: $JALIN_BENCH, or a release build of this checkout.
bench_binary() {
  if [ -n "${JALIN_BENCH:-}" ]; then
    [ -x "$JALIN_BENCH" ] || die "JALIN_BENCH=$JALIN_BENCH is not an executable"
  else
    echo "building jalin-bench (release)..." >&2
    (cd "$REPO" && cargo build --release -q -p jalin-bench) || die "cargo build --release -p jalin-bench failed"
    JALIN_BENCH="$REPO/target/release/jalin-bench"
  fi
  echo "$JALIN_BENCH"
}

# Waits (bounded) until something accepts TCP on host:port, while process $2 stays alive.
wait_port() {
  local addr="$1" pid="$2" host port i
  host="${addr%:*}"; port="${addr##*:}"
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "the process for $addr exited before listening (see $WORK/*.log)"
    sleep 0.05
  done
  die "nothing listens on $addr after 10 s (see $WORK/*.log)"
}

# Fails if something already listens on host:port.
require_free() {
  local host="${1%:*}" port="${1##*:}"
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    die "$1 is already in use: pick another address (e.g. PROXY_ADDR=127.0.0.1:19081)"
  fi
}

# Starts the built-in upstream on a free port; sets UPSTREAM_ADDR.
start_upstream() {
  local bench="$1" size="$2" threads="${3:-1}"
  "${UPSTREAM_PREFIX[@]}" "${PIN_LOAD[@]}" "$bench" upstream --listen 127.0.0.1:0 --response-size "$size" --threads "$threads" \
    >"$WORK/upstream.out" 2>"$WORK/upstream.log" &
  STARTED_PIDS+=("$!")
  local pid="$!" i
  for i in $(seq 1 200); do
    if grep -q '^listening on ' "$WORK/upstream.out" 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || die "jalin-bench upstream exited: $(cat "$WORK/upstream.log")"
    sleep 0.05
  done
  UPSTREAM_ADDR="$(sed -n 's/^listening on //p' "$WORK/upstream.out")"
  [ -n "$UPSTREAM_ADDR" ] || die "jalin-bench upstream did not report its address"
}

# Writes the HAProxy configuration (one thread) for listen -> upstream; prints its path.
haproxy_config() {
  local listen="$1" upstream="$2" http="$3" proto=""
  [ "$http" = "2" ] && proto=" proto h2"
  local file="$WORK/haproxy-$RANDOM.cfg"
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

frontend bench
    bind $listen$proto
    default_backend upstream

backend upstream
    server up $upstream$proto
CFG
  echo "$file"
}

# Fills a config template: {{LISTEN}}, {{UPSTREAM}}, {{UPSTREAM_HOST}}, {{UPSTREAM_PORT}},
# {{LISTEN_PORT}}, {{HTTP}}; prints the path of the result.
fill_template() {
  local template="$1" listen="$2" upstream="$3" http="$4" out
  [ -f "$template" ] || die "config template $template not found"
  out="$WORK/$(basename "$template" .tmpl)"
  sed -e "s|{{LISTEN}}|$listen|g" -e "s|{{UPSTREAM}}|$upstream|g" \
      -e "s|{{LISTEN_PORT}}|${listen##*:}|g" -e "s|{{UPSTREAM_HOST}}|${upstream%:*}|g" \
      -e "s|{{UPSTREAM_PORT}}|${upstream##*:}|g" -e "s|{{HTTP}}|$http|g" "$template" >"$out"
  echo "$out"
}

# Starts a proxy; sets PROXY_PID. Arguments: name (haproxy | jalin | label), command template
# (may be empty for haproxy; {config} {listen} {upstream} are replaced), config template (may be
# empty), listen address, upstream address, HTTP version.
start_proxy() {
  local name="$1" cmd="$2" template="$3" listen="$4" upstream="$5" http="$6" config=""
  require_free "$listen"
  if [ "$name" = "haproxy" ] && [ -z "$template" ]; then
    # The built-in HAProxy config; a --proxy-cmd may wrap the command (perf, chrt, another build).
    command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
    config="$(haproxy_config "$listen" "$upstream" "$http")"
    haproxy -c -q -f "$config" || die "HAProxy rejected $config"
    [ -n "$cmd" ] || cmd="haproxy -db -f {config}"
  elif [ -n "$template" ]; then
    config="$(fill_template "$template" "$listen" "$upstream" "$http")"
  fi
  [ -n "$cmd" ] || die "no command for proxy $name: pass --proxy-cmd"
  cmd="${cmd//\{config\}/$config}"
  cmd="${cmd//\{listen\}/$listen}"
  cmd="${cmd//\{upstream\}/$upstream}"
  echo "proxy $name: $cmd  (CPU $PROXY_CPUS)" >&2
  # shellcheck disable=SC2086 # the command is a template the user gives as one string
  "${PIN_PROXY[@]}" $cmd >"$WORK/proxy-$name.log" 2>&1 &
  PROXY_PID="$!"
  STARTED_PIDS+=("$PROXY_PID")
  wait_port "$listen" "$PROXY_PID"
}

# Runs a command in the background and waits for it, so a SIGINT/SIGTERM to the script is handled
# at once (bash runs traps only between foreground commands) and the command is stopped with it.
run_tracked() {
  "$@" &
  local pid="$!" status=0
  STARTED_PIDS+=("$pid")
  wait "$pid" || status=$?
  local kept=() p
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
  return "$status"
}

# Resident set size of a process in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# One request through host:port must succeed before load starts.
check_path() {
  local url="$1" http="$2" flag=(--http1.1)
  [ "$http" = "2" ] && flag=(--http2-prior-knowledge)
  curl -sf -o /dev/null "${flag[@]}" --max-time 5 "$url" || die "a request to $url failed: is the proxy forwarding to the upstream? (see $WORK/*.log; KEEP_WORK=1 keeps them)"
}
