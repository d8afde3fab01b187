#!/usr/bin/env bash
# Social fan-out through a real Mosquitto with 1, 2 and 4 application
# servers (docs/performance.md, "Social fan-out through Mosquitto").
#
#   scripts/bench-fanout.sh [SECONDS]        # 10 s of sending per run
#
# For each server count: a fresh manager and N storage servers, all with
# `broker = "mqtt://127.0.0.1:PORT"` (one Mosquitto for the whole script),
# `max_sessions` high enough that the 200 users fit (logins spread them
# evenly: least sessions first), then `dupla bench social` in group mode
# (one group of all 200 users: 200 deliveries per message, the chat room's
# fan-out) and direct mode (a ring of friends: 1 delivery per message), at
# each rate of GROUP_RATES / DIRECT_RATES, watching the CPU of the
# manager, the broker, each server and the load client during the sending
# window. The 1-server cluster also runs `dupla bench chat` (a chat room,
# which now runs on the servers and the broker) on the same machine. Last, an elastic run: a manager
# with the `local` launcher, max_sessions = 10 and one server; ten users
# fill it through `dupla shell`, and the eleventh login is timed until its
# message stream is open on the server launched for it.
#
# Environment: BIN (default target/release), CLIENTS (200), SERVERS
# ("1 2 4"), GROUP_RATES ("200 1000"), DIRECT_RATES ("2000 5000").
# Plain text (--insecure), as the chat figure it is compared with.
# Prints a table, and keeps every run's JSON in $OUT (printed at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
SECONDS_PER_RUN=${1:-10}
CLIENTS=${CLIENTS:-200}
SERVERS=${SERVERS:-"1 2 4"}
GROUP_RATES=${GROUP_RATES:-"200 1000"}
DIRECT_RATES=${DIRECT_RATES:-"2000 5000"}
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
cleanup() {
  stop_cluster
  # Servers the elastic run's manager launched outlive it: stop them too.
  for pid in "${LAUNCHED[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK/c"* "$WORK/elastic"
}
trap cleanup EXIT

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

# run_bench SERVERS KIND ARGS...: one run, its JSON tagged and kept.
run_bench() {
  local servers=$1 kind=$2; shift 2
  echo "== $servers server(s): $kind $*" >&2
  local json
  if json=$("${client[@]}" --json bench "$kind" "$@" 2>>"$WORK/bench.stderr"); then
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["kind"]=sys.argv[2]; r["server_count"]=int(sys.argv[3]); print(json.dumps(r))' \
      "$json" "$kind" "$servers" >>"$OUT"
  else
    echo "   failed: $(tail -1 "$WORK/bench.stderr")" >&2
  fi
}

for n in $SERVERS; do
  start_cluster "$WORK/c$n" "$n" --max-sessions "$CLIENTS"
  # shellcheck disable=SC2046
  if [ "$n" = 1 ]; then
    # The same accounts as the social runs: registrations are rate-limited.
    run_bench 1 chat --prefix fan --clients "$CLIENTS" --rate 200 --seconds "$SECONDS_PER_RUN" $(watch_flags)
  fi
  for rate in $GROUP_RATES; do
    # shellcheck disable=SC2046
    run_bench "$n" social --mode group --clients "$CLIENTS" --rate "$rate" --seconds "$SECONDS_PER_RUN" $(watch_flags)
  done
  for rate in $DIRECT_RATES; do
    # shellcheck disable=SC2046
    run_bench "$n" social --mode direct --clients "$CLIENTS" --rate "$rate" --seconds "$SECONDS_PER_RUN" $(watch_flags)
  done
  stop_cluster
done

# Elastic: from "all full" to the new server serving its first user.
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
