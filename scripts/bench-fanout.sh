#!/usr/bin/env bash
# Social fan-out through a real Mosquitto with 1, 2 and 4 application
# servers (docs/performance.md, "Social fan-out through Mosquitto").
#
#   scripts/bench-fanout.sh [SECONDS]        # 10 s of sending per run
#   SERVER_CORES=0.25 P99_BOUND_MS=50 scripts/bench-fanout.sh 5
#                                            # capacity under a p99 bound,
#                                            # each server on 0.25 core
#
# For each server count: a fresh manager and N storage servers, all with
# `broker = "mqtt://127.0.0.1:PORT"` (one Mosquitto for the whole script),
# `max_sessions` high enough that the 200 users fit (logins spread them
# evenly: least sessions first), then three kinds of run, watching the CPU
# of the manager, the broker, each server and the load client during the
# sending window:
# - chat: `dupla bench chat`, one chat room of all 200 users, each on its
#   assigned server (rooms run on the servers; a line goes server -> broker
#   -> every server with members): 200 deliveries per message;
# - group: `dupla bench social --mode group`, one group of all 200 users
#   (the sender's server asks the manager where the members are, publishes
#   once): 200 deliveries per message;
# - direct: `dupla bench social --mode direct`, a ring of friends (one
#   routing question to the manager, one publish, 1 delivery per message).
#
# Two modes:
# - fixed rates (default): each kind at each rate of CHAT_RATES /
#   GROUP_RATES / DIRECT_RATES, then an elastic run: a manager with the
#   `local` launcher, max_sessions = 10 and one server; ten users fill it
#   through `dupla shell`, and the eleventh login is timed until its message
#   stream is open on the server launched for it;
# - P99_BOUND_MS=B: for each server count and kind, the offered rate is
#   doubled from a start (the best of the previous server count, else
#   CHAT_START / GROUP_START / DIRECT_START) until a run fails, then bisected
#   until the failing rate is within SEARCH_STEP_PCT % of the passing one.
#   A run passes when its p99 is under B ms with nothing lost, refused,
#   throttled or disconnected, and every message was sent on schedule
#   (within 5 %: the social senders wait for replies, so an overloaded
#   cluster slows them down rather than losing messages). The summary gives, per kind and server count,
#   the highest passing deliveries/s, its p99, the manager's CPU there, what
#   was busiest at the first failing rate, and the 2-vs-1 and 4-vs-1
#   ratios. No elastic run.
#
# SERVER_CORES=C emulates "one small machine per server": each dupla-server
# runs from its start in its own CPU cgroup limited to C cores (cgroup v1
# cpu.cfs_quota_us, or v2 cpu.max; a CGROUP_PERIOD_US period, 10 ms by
# default, so that a throttled server waits at most a few ms rather than
# most of a 100 ms period), and a weight 10 times the default (cpu.shares
# 10240, or cpu.weight 1000) so that a server gets its quota when other
# work on the machine wants the cores too. Needs root and a writable cpu controller, else
# the script stops. The manager, Mosquitto and the load client are NOT
# confined: they share whatever the machine has left (the elastic run's
# servers are not confined either).
#
# Environment: BIN (default target/release), CLIENTS (200), SERVERS
# ("1 2 4"), CHAT_RATES ("200"), GROUP_RATES ("200 1000"), DIRECT_RATES
# ("2000 5000"), SERVER_CORES (unset: no limit), CGROUP_PERIOD_US (10000),
# CGROUP_WEIGHT_V1 (10240) / CGROUP_WEIGHT_V2 (1000),
# P99_BOUND_MS (unset: fixed rates), KINDS ("chat group direct"),
# CHAT_START (100 messages/s), GROUP_START (25), DIRECT_START (250),
# SEARCH_STEP_PCT (10), MAX_CHAT_RATE (CLIENTS x 20 - 1: the chat's flood
# control), MAX_RATE (100000).
# Plain text (--insecure), as the chat figure it is compared with.
# Prints a table, and keeps every run's JSON in $OUT (printed at the end).
# The machine may be shared: run it under `flock /tmp/bench.lock`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
SECONDS_PER_RUN=${1:-10}
CLIENTS=${CLIENTS:-200}
SERVERS=${SERVERS:-"1 2 4"}
GROUP_RATES=${GROUP_RATES:-"200 1000"}
DIRECT_RATES=${DIRECT_RATES:-"2000 5000"}
CHAT_RATES=${CHAT_RATES:-"200"}
SERVER_CORES=${SERVER_CORES:-}
CGROUP_PERIOD_US=${CGROUP_PERIOD_US:-10000}
# The servers' weight against everything else on the machine (default 10x).
CGROUP_WEIGHT_V1=${CGROUP_WEIGHT_V1:-10240}
CGROUP_WEIGHT_V2=${CGROUP_WEIGHT_V2:-1000}
P99_BOUND_MS=${P99_BOUND_MS:-}
KINDS=${KINDS:-"chat group direct"}
CHAT_START=${CHAT_START:-100}
GROUP_START=${GROUP_START:-25}
DIRECT_START=${DIRECT_START:-250}
SEARCH_STEP_PCT=${SEARCH_STEP_PCT:-10}
# The chat's flood control: 20 lines/s per user, so CLIENTS x 20 in all.
MAX_CHAT_RATE=${MAX_CHAT_RATE:-$((CLIENTS * 20 - 1))}
MAX_RATE=${MAX_RATE:-100000}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
[ -x "$MOSQUITTO" ] || { echo "mosquitto is not installed (apt-get install mosquitto)"; exit 2; }
for b in dupla dupla-manager dupla-server; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: cargo build --release --workspace --bins"; exit 2; }
done

WORK=$(mktemp -d /tmp/bench-fanout.XXXXXX)
OUT=${OUT:-$WORK/results.jsonl}
CLUSTER=()   # pids of the current cluster
LAUNCHED=()  # pids of servers a manager launched
BROKER_PID=
stop_cluster() {
  for pid in "${CLUSTER[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER=()
}

# CPU cgroups, one per server (SERVER_CORES): CG_BASE holds them.
CG_VERSION='' CG_BASE='' CG_QUOTA_US=''
cgroup_setup() {
  [ -n "$SERVER_CORES" ] || return 0
  CG_QUOTA_US=$(python3 -c 'import sys; print(round(float(sys.argv[1]) * int(sys.argv[2])))' "$SERVER_CORES" "$CGROUP_PERIOD_US")
  if [ "$CG_QUOTA_US" -lt 1000 ]; then
    echo "SERVER_CORES=$SERVER_CORES is $CG_QUOTA_US us per ${CGROUP_PERIOD_US} us period; the kernel wants at least 1000 us (raise CGROUP_PERIOD_US)" >&2
    exit 2
  fi
  local v1=/sys/fs/cgroup/cpu v2=/sys/fs/cgroup
  if [ -f "$v1/cpu.cfs_quota_us" ] && mkdir "$v1/dupla-fanout-$$" 2>/dev/null; then
    CG_VERSION=1 CG_BASE=$v1/dupla-fanout-$$
    # A machine of its own: the servers get their quota before other work
    # on this machine (a compiler, say) gets the cores.
    echo "$CGROUP_WEIGHT_V1" >"$CG_BASE/cpu.shares"
  elif [ -f "$v2/cgroup.controllers" ] && grep -qw cpu "$v2/cgroup.controllers" &&
    echo +cpu >"$v2/cgroup.subtree_control" 2>/dev/null && mkdir "$v2/dupla-fanout-$$" 2>/dev/null &&
    echo +cpu >"$v2/dupla-fanout-$$/cgroup.subtree_control"; then
    CG_VERSION=2 CG_BASE=$v2/dupla-fanout-$$
    echo "$CGROUP_WEIGHT_V2" >"$CG_BASE/cpu.weight"
  else
    echo "SERVER_CORES needs a writable CPU cgroup (v1 $v1/cpu.cfs_quota_us or v2 $v2/cpu.max): run as root, or unset SERVER_CORES" >&2
    rmdir "$v2/dupla-fanout-$$" 2>/dev/null || true
    exit 2
  fi
  echo "each dupla-server limited to $SERVER_CORES core(s): cgroup v$CG_VERSION, $CG_QUOTA_US us every $CGROUP_PERIOD_US us, weight x10; manager, broker and bench client unconfined" >&2
}
# cgroup_new NAME: a fresh cgroup with the quota; prints its directory.
cgroup_new() {
  local dir=$CG_BASE/$1
  mkdir "$dir"
  if [ "$CG_VERSION" = 1 ]; then
    echo "$CGROUP_PERIOD_US" >"$dir/cpu.cfs_period_us"
    echo "$CG_QUOTA_US" >"$dir/cpu.cfs_quota_us"
  else
    echo "$CG_QUOTA_US $CGROUP_PERIOD_US" >"$dir/cpu.max"
  fi
  echo "$dir"
}
# Remove the cgroups once their processes have exited.
cgroup_cleanup() {
  [ -n "$CG_BASE" ] && [ -d "$CG_BASE" ] || return 0
  local dir
  for dir in "$CG_BASE"/*/; do
    [ -d "$dir" ] || continue
    for _ in $(seq 1 50); do [ -s "$dir/cgroup.procs" ] || break; sleep 0.1; done
    rmdir "$dir" 2>/dev/null || echo "could not remove $dir (still has processes?)" >&2
  done
  rmdir "$CG_BASE" 2>/dev/null || echo "could not remove $CG_BASE" >&2
}
cleanup() {
  stop_cluster
  # Servers the elastic run's manager launched outlive it: stop them too.
  for pid in "${LAUNCHED[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
  wait 2>/dev/null || true
  cgroup_cleanup
  [ -n "${KEEP:-}" ] || rm -rf "$WORK/c"* "$WORK/elastic"
}
trap cleanup EXIT
cgroup_setup

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}
# wait_up CLIENT... N: until the manager counts N servers up.
wait_up() {
  local n=${*: -1}
  for _ in $(seq 1 150); do
    [ "$("${@:1:$#-1}" --json status 2>/dev/null | python3 -c 'import json,sys; print(sum(s["state"]=="up" for s in json.load(sys.stdin)["servers"]))' 2>/dev/null)" = "$n" ] && return 0
    sleep 0.2
  done
  echo "the servers did not come up; logs in $WORK" >&2; return 1
}

MQTT=$(free_port)
# set_tcp_nodelay: Mosquitto leaves Nagle's algorithm on by default, which
# holds small messages to the servers for tens of ms (docs/social.md).
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay %s\n' \
  "$MQTT" "${BROKER_NODELAY:-true}" >"$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!
wait_port "$MQTT"
BROKER=mqtt://127.0.0.1:$MQTT
SECRET="fanout-bench-$RANDOM$RANDOM"
echo "mosquitto on $BROKER (pid $BROKER_PID); work in $WORK; $CLIENTS users, ${SECONDS_PER_RUN}s a run" >&2

# start_cluster DIR N [MANAGER_FLAG...]: manager and N servers; sets
# MANAGER_PID, MANAGER_PORT, SERVER_PIDS, client.
start_cluster() {
  local dir=$1 n=$2; shift 2
  local port; port=$(free_port)
  MANAGER_PORT=$port
  mkdir -p "$dir/root"
  "$BIN/dupla-manager" --insecure --listen "127.0.0.1:$port" --data "$dir/manager" --secret "$SECRET" \
    --broker "$BROKER" "$@" >"$dir/manager.log" 2>&1 &
  MANAGER_PID=$!; CLUSTER+=("$MANAGER_PID")
  wait_port "$port"
  SERVER_PIDS=()
  for i in $(seq 1 "$n"); do
    # Confined from its first instruction: the shell joins the cgroup, then
    # becomes the server (same pid).
    local cg=
    [ -z "$CG_BASE" ] || cg=$(cgroup_new "$(basename "$dir")-server-$i")
    bash -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs" || exit 1; shift; exec "$@"' confine "$cg" \
      "$BIN/dupla-server" --insecure --listen "127.0.0.1:$(free_port)" --manager "127.0.0.1:$port" \
      --data "$dir/server-$i" --capacity 10GiB --secret "$SECRET" --broker "$BROKER" \
      >"$dir/server-$i.log" 2>&1 &
    SERVER_PIDS+=($!); CLUSTER+=($!)
  done
  client=("$BIN/dupla" --insecure --manager "127.0.0.1:$port" --root "$dir/root")
  wait_up "${client[@]}" "$n"
}

watch_flags() {
  local flags=(--watch "manager=$MANAGER_PID" --watch "broker=$BROKER_PID") i=1
  for pid in "${SERVER_PIDS[@]}"; do flags+=(--watch "server-$i=$pid"); i=$((i + 1)); done
  echo "${flags[@]}"
}

# run_bench SERVERS KIND ARGS...: one run, its JSON tagged and kept (also
# in LAST, empty when the run failed).
LAST=
run_bench() {
  local servers=$1 kind=$2; shift 2
  echo "== $servers server(s): $kind $*" >&2
  local json
  LAST=
  if json=$("${client[@]}" --json bench "$kind" "$@" 2>>"$WORK/bench.stderr"); then
    LAST=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["kind"]=sys.argv[2]; r["server_count"]=int(sys.argv[3]); r["server_cores"]=sys.argv[4] or None; r["bound_ms"]=float(sys.argv[5]) if sys.argv[5] else None; print(json.dumps(r))' \
      "$json" "$kind" "$servers" "$SERVER_CORES" "$P99_BOUND_MS")
    echo "$LAST" >>"$OUT"
  else
    echo "   failed: $(tail -1 "$WORK/bench.stderr")" >&2
  fi
}

# run_kind N KIND RATE: `chat`, `group` or `direct` at RATE messages/s.
run_kind() {
  local n=$1 kind=$2 rate=$3
  # shellcheck disable=SC2046
  case $kind in
    # The same accounts as the social runs: registrations are rate-limited.
    chat) run_bench "$n" chat --prefix fan --clients "$CLIENTS" --rate "$rate" --seconds "$SECONDS_PER_RUN" $(watch_flags) ;;
    group | direct) run_bench "$n" social --mode "$kind" --clients "$CLIENTS" --rate "$rate" --seconds "$SECONDS_PER_RUN" $(watch_flags) ;;
  esac
}

# passes: whether the last run met the bound, with a one-line verdict on stderr.
passes() {
  [ -n "$LAST" ] || { echo "   -> fail (the run did not complete)" >&2; return 1; }
  python3 - "$LAST" "$P99_BOUND_MS" <<'EOF'
import json, sys
r, bound = json.loads(sys.argv[1]), float(sys.argv[2])
bad = []
if r["p99_ms"] > bound: bad.append(f"p99 {r['p99_ms']:.1f} ms > {bound:g}")
if r["lost"]: bad.append(f"{r['lost']} lost")
if r.get("throttled") or r.get("refused"): bad.append(f"{r.get('throttled') or r.get('refused')} refused")
if r["disconnected"]: bad.append(f"{r['disconnected']} disconnected")
# The social senders wait for each reply: an overloaded cluster slows them
# down instead of losing messages, so the offered rate must have been kept.
if r["sent"] < r["rate"] * r["seconds"] or r["send_seconds"] > r["seconds"] * 1.05:
    bad.append(f"sending fell behind ({r['sent']} of {r['rate'] * r['seconds']} in {r['send_seconds']:.2f} s)")
if not r["received"]: bad.append("nothing received")
cores = {c["name"]: c["cores"] for c in r.get("cpu", [])}
servers = sum(v for k, v in cores.items() if k.startswith("server-"))
print(f"   -> {'fail: ' + ', '.join(bad) if bad else 'pass'}: {r['deliveries_per_s']:.0f} deliveries/s, "
      f"p99 {r['p99_ms']:.2f} ms; cores: servers {servers:.2f}, manager {cores.get('manager', 0):.2f}, "
      f"broker {cores.get('broker', 0):.2f}, bench {cores.get('bench', 0):.2f}, machine {cores.get('machine', 0):.2f}",
      file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

# search N KIND START MAX: the highest rate (messages/s) that passes; the
# runs are tagged in $OUT, the best and the first failure in $SEARCH.
declare -A BEST
search() {
  local n=$1 kind=$2 rate=$3 max=$4 lo=0 hi=0 lo_json='' hi_json=''
  [ "$rate" -le "$max" ] || rate=$max
  # Up, doubling, until a failure (or the cap).
  while :; do
    run_kind "$n" "$kind" "$rate"
    if passes; then
      lo=$rate lo_json=$LAST
      [ "$rate" -lt "$max" ] || break
      rate=$((rate * 2)); [ "$rate" -le "$max" ] || rate=$max
    else
      hi=$rate hi_json=$LAST
      [ "$lo" = 0 ] || break
      # Even the start fails: halve until a pass.
      [ "$rate" -gt 1 ] || break
      rate=$((rate / 2))
    fi
  done
  # Then bisect until the failing rate is within SEARCH_STEP_PCT % of the passing one.
  while [ "$lo" -gt 0 ] && [ "$hi" -gt 0 ] && [ $((hi * 100)) -gt $((lo * (100 + SEARCH_STEP_PCT))) ]; do
    rate=$(((lo + hi) / 2))
    run_kind "$n" "$kind" "$rate"
    if passes; then lo=$rate lo_json=$LAST; else hi=$rate hi_json=$LAST; fi
  done
  BEST[$kind]=$lo
  python3 -c 'import json,sys; print(json.dumps({"kind": sys.argv[1], "server_count": int(sys.argv[2]), "best": json.loads(sys.argv[3]) if sys.argv[3] else None, "first_fail": json.loads(sys.argv[4]) if sys.argv[4] else None}))' \
    "$kind" "$n" "$lo_json" "$hi_json" >>"$SEARCH"
}

SEARCH=$WORK/search.jsonl
declare -A STARTS=([chat]=$CHAT_START [group]=$GROUP_START [direct]=$DIRECT_START)
declare -A CAPS=([chat]=$MAX_CHAT_RATE [group]=$MAX_RATE [direct]=$MAX_RATE)
SEARCH_BEGAN=$(date +%s)
for n in $SERVERS; do
  start_cluster "$WORK/c$n" "$n" --max-sessions "$CLIENTS"
  if [ -n "$P99_BOUND_MS" ]; then
    for kind in $KINDS; do
      # More servers should take at least what fewer took: start there.
      search "$n" "$kind" "${BEST[$kind]:-${STARTS[$kind]}}" "${CAPS[$kind]}"
      [ "${BEST[$kind]}" -gt 0 ] || BEST[$kind]=${STARTS[$kind]}
    done
  else
    for rate in $CHAT_RATES; do run_kind "$n" chat "$rate"; done
    for rate in $GROUP_RATES; do run_kind "$n" group "$rate"; done
    for rate in $DIRECT_RATES; do run_kind "$n" direct "$rate"; done
  fi
  stop_cluster
done

if [ -n "$P99_BOUND_MS" ]; then
  python3 - "$SEARCH" "$P99_BOUND_MS" "${SERVER_CORES:-unlimited}" "$(($(date +%s) - SEARCH_BEGAN))" "$SEARCH_STEP_PCT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bound, quota, took, step = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def cores(r, name):
    c = [x["cores"] for x in (r or {}).get("cpu", []) if x["name"] == name or (name == "servers" and x["name"].startswith("server-"))]
    return sum(c) if c else float("nan")
def busiest(r, n):
    if not r: return "-"
    out = []
    each = [x["cores"] for x in r.get("cpu", []) if x["name"].startswith("server-")]
    if quota != "unlimited" and each and max(each) >= 0.85 * float(quota): out.append("server quota")
    for name in ("manager", "broker", "bench"):
        if cores(r, name) >= 0.85: out.append(name)
    if cores(r, "machine") >= 1.9: out.append("machine")
    return "+".join(out) or "none near a limit"
print(f"\nCapacity under p99 <= {bound} ms, nothing lost; each server {quota} core(s); "
      f"manager, broker and bench client unconfined; search to within {step} %, {took} s in all")
print(f"{'kind':<7} {'servers':>7} {'msg/s':>6} {'deliveries/s':>12} {'p99 ms':>7} {'manager':>7} {'broker':>6} "
      f"{'servers':>7} {'bench':>6} {'machine':>7} {'vs 1':>5}  first failing rate: msg/s, p99 ms, busiest")
base = {}
for r in rows:
    b, f, n, kind = r["best"], r["first_fail"], r["server_count"], r["kind"]
    d = b["deliveries_per_s"] if b else 0.0
    if n == 1: base[kind] = d
    ratio = f"{d / base[kind]:.2f}" if base.get(kind) else "-"
    fail = f"{f['rate']}, {f['p99_ms']:.1f}{', ' + str(f['lost']) + ' lost' if f['lost'] else ''}, {busiest(f, n)}" if f else "none (the cap passed)"
    if b:
        print(f"{kind:<7} {n:>7} {b['rate']:>6} {d:>12.0f} {b['p99_ms']:>7.2f} {cores(b,'manager'):>7.2f} {cores(b,'broker'):>6.2f} "
              f"{cores(b,'servers'):>7.2f} {cores(b,'bench'):>6.2f} {cores(b,'machine'):>7.2f} {ratio:>5}  {fail}")
    else:
        print(f"{kind:<7} {n:>7} {'-':>6} {'none passed':>12}{'':>50}  {fail}")
print("CPU columns at the best rate: cores busy during the sending window; servers = all of them together;")
print("busiest = at >= 85 % of a limit (the busiest server vs its quota; 1 core for manager, broker, bench; 2 for the machine).")
print("Goal (issue 9): 2 servers >= 1.6x of 1 at the same p99 bound.")
EOF
fi

# Elastic: from "all full" to the new server serving its first user.
if [ -z "$P99_BOUND_MS" ]; then
E=$WORK/elastic
mkdir -p "$E/template"
printf 'capacity = "10GiB"\nbroker = "%s"\n' "$BROKER" >"$E/template/node.toml"
start_cluster "$E" 1 --max-sessions 10 --launcher local --launch-template "$E/template"
{
  for i in $(seq 0 10); do echo "register el$i elasticpass$i"; done
  for i in $(seq 0 10); do echo "login el$i elasticpass$i"; done
} >"$E/testcase"
# Each output line stamped when printed: the eleventh login's reply comes
# once its stream is open on the launched server.
"${client[@]}" shell 127.0.0.1 "$MANAGER_PORT" <"$E/testcase" 2>"$E/shell.stderr" |
  while IFS= read -r line; do echo "$(date +%s.%N) $line"; done >"$E/output"
ELASTIC=$(python3 - "$E/output" "$E/manager.log" <<'EOF'
import re, sys
stamps = [float(l.split(' ', 1)[0]) for l in open(sys.argv[1])]
replies = [l.split(' ', 1)[1].strip() for l in open(sys.argv[1])]
if len(stamps) != 22 or any(r != "Success!" for r in replies):
    print("elastic run failed: " + "; ".join(replies)); sys.exit()
logins = [(stamps[i] - stamps[i - 1]) * 1000 for i in range(12, 22)]  # logins 1..10
launch = re.findall(r"launch_ms\D+(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[2]).read()))
print(f"eleventh login (launch + first heartbeat + stream open on the new server): {logins[-1]:.0f} ms; "
      f"an ordinary login: {sorted(logins[:-1])[len(logins[:-1]) // 2]:.0f} ms (median); "
      f"manager's launch_ms: {', '.join(launch) or 'not logged'}")
EOF
)
for pid in $(pgrep -P "$MANAGER_PID" || true); do LAUNCHED+=("$pid"); done
stop_cluster
else
  ELASTIC="(no elastic run with P99_BOUND_MS)"
fi

python3 - "$OUT" "$ELASTIC" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def cpu(r, name):
    c = [x["cores"] for x in r.get("cpu", []) if x["name"] == name or (name == "servers" and x["name"].startswith("server-"))]
    return f"{sum(c):.2f}" if c else "-"
print(f"{'servers':>7} {'run':<22} {'msg/s':>6} {'deliveries/s':>12} {'lost':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'manager':>7} {'broker':>6} {'servers':>7} {'bench':>6} {'machine':>7}")
for r in rows:
    kind = "chat (room)" if r["kind"] == "chat" else f"{r['mode']} ({r['clients']} users)"
    lost = r["lost"]
    print(f"{r['server_count']:>7} {kind:<22} {r['rate']:>6} {r['deliveries_per_s']:>12.0f} {lost:>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>7.1f} "
          f"{cpu(r,'manager'):>7} {cpu(r,'broker'):>6} {cpu(r,'servers'):>7} {cpu(r,'bench'):>6} {cpu(r,'machine'):>7}")
print("CPU columns: cores busy during the sending window (1.00 = one core); servers = all of them together;")
print("machine = every process on the machine (the rest of it is other work sharing the cores).")
print(sys.argv[2])
EOF
echo "results: $OUT" >&2
