#!/usr/bin/env bash
# Run the local Dupla cluster from nodes/: a manager and three storage
# servers, each a separate process in its own directory, like separate
# machines. Logs go to nodes/<node>/node.log, pids to nodes/<node>/node.pid.
#
#   scripts/cluster.sh            build, start everything, open the client menu,
#                                 stop everything when the menu is closed
#   scripts/cluster.sh up         build and start in the background
#   scripts/cluster.sh down       stop every node
#   scripts/cluster.sh kill N     kill -9 server-N (a crash)
#   scripts/cluster.sh start N    start server-N again
#   scripts/cluster.sh status     which nodes run
#   scripts/cluster.sh logs       follow every log, prefixed by node
#
# PROFILE=debug uses debug builds (default: release). Every link speaks TLS:
# the manager makes the cluster CA (nodes/manager/data/ca.pem) on its first
# start, servers enrol for certificates (nodes/server-N/data/tls/), and the
# client pins the CA (nodes/client/.dupla/ca.pem). DUPLA_INSECURE=1 runs the
# nodes and the client in plain text instead (their logs say so).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
profile="${PROFILE:-release}"
bin="${CARGO_TARGET_DIR:-$top/target}/$profile"
servers=(server-1 server-2 server-3)

build() {
  local flag=()
  [ "$profile" = release ] && flag=(--release)
  (cd "$top" && cargo build "${flag[@]}" --workspace --bins)
}

port_of() { # node -> port from its node.toml
  sed -n 's/^listen *= *"[^:]*:\([0-9]*\)".*/\1/p' "$top/nodes/$1/node.toml"
}

running() { # node -> 0 if its pid is alive
  local pidfile="$top/nodes/$1/node.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_enrolled() { # server: until it holds a certificate (30 s; not with DUPLA_INSECURE)
  case "${DUPLA_INSECURE:-}" in 1|true|yes|on) return 0 ;; esac
  for _ in $(seq 300); do
    [ -f "$top/nodes/$1/data/tls/node.addr" ] && return 0
    sleep 0.1
  done
  echo "$1 has no certificate after 30 s; see nodes/$1/node.log" >&2
  return 1
}

wait_port() { # port: until it accepts connections (10 s)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s; see the node's node.log" >&2
  return 1
}

start_node() { # node binary
  local node="$1" program="$2" dir="$top/nodes/$1"
  if running "$node"; then echo "$node already running"; return; fi
  # exec: the recorded pid is the node's own, so `kill` reaches the node;
  # no inherited stdout, so callers of `up` are not held open by the node.
  (cd "$dir" && exec nohup "$bin/$program" >>"$dir/node.log" 2>&1 </dev/null) &
  echo $! >"$dir/node.pid"
  wait_port "$(port_of "$node")"
  echo "started $node (pid $(cat "$dir/node.pid"), port $(port_of "$node"))"
}

stop_node() { # node [signal]
  local pidfile="$top/nodes/$1/node.pid"
  if running "$1"; then
    kill "-${2:-TERM}" "$(cat "$pidfile")" 2>/dev/null || true
    echo "stopped $1"
  fi
  rm -f "$pidfile"
}

up() {
  build
  start_node manager dupla-manager
  for s in "${servers[@]}"; do start_node "$s" dupla-server; done
  for s in "${servers[@]}"; do wait_enrolled "$s"; done
  mkdir -p "$top/nodes/client/samples"
  find "$top/sample-files" -maxdepth 1 -type f ! -name '*.sh' -exec cp -f {} "$top/nodes/client/samples/" \;
  echo "web console: http://127.0.0.1:8080/ (API reference at /api/docs; docs/web.md)"
}

down() {
  for s in "${servers[@]}"; do stop_node "$s"; done
  stop_node manager
}

case "${1:-demo}" in
  demo)
    up
    echo "client root: nodes/client (sample files in samples/). Ctrl-D or 0 quits."
    trap down EXIT
    (cd "$top/nodes/client" && "$bin/dupla")
    ;;
  up) up ;;
  down) down ;;
  kill) stop_node "server-$2" KILL ;;
  start) start_node "server-$2" dupla-server ;;
  status)
    for n in manager "${servers[@]}"; do
      if running "$n"; then echo "$n: running (pid $(cat "$top/nodes/$n/node.pid"))"; else echo "$n: stopped"; fi
    done
    ;;
  logs)
    for n in manager "${servers[@]}"; do
      tail -n 20 -F "$top/nodes/$n/node.log" 2>/dev/null | sed -u "s/^/[$n] /" &
    done
    wait
    ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
