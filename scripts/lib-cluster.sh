# Shared by the benchmark scripts (source it; bash): start a manager and
# three storage servers from the release binaries in a work directory, wait
# until all three are up, and log in a benchmark user.
#
#   start_cluster BIN WORK PORT [SERVER_FLAG...]
#     manager on 127.0.0.1:PORT, servers on PORT+1..PORT+3, data and logs
#     under WORK; pids are appended to the caller's `pids` array (kill them
#     on exit); sets `client` to the dupla command line (root WORK/root).
#     TLS on, as users run it; DUPLA_BENCH_INSECURE=1 measures plain text.
#     BENCH_HTTP_PORT=P turns the HTTP API on: manager on 127.0.0.1:P,
#     server N on P+N (unset: HTTP off, as before).
#   bench_login
#     registers and logs in the user `bench` through `client`.

start_cluster() {
  local bin="$1" work="$2" port="$3"
  shift 3
  local secret="bench-secret-$RANDOM$RANDOM" plain=() http=()
  [ -n "${DUPLA_BENCH_INSECURE:-}" ] && plain=(--insecure)
  [ -n "${BENCH_HTTP_PORT:-}" ] && http=(--http "127.0.0.1:$BENCH_HTTP_PORT")
  "$bin/dupla-manager" "${plain[@]}" "${http[@]}" --listen "127.0.0.1:$port" --data "$work/manager" --secret "$secret" \
    >"$work/manager.log" 2>&1 &
  pids+=($!)
  for n in 1 2 3; do
    [ -n "${BENCH_HTTP_PORT:-}" ] && http=(--http "127.0.0.1:$((BENCH_HTTP_PORT + n))")
    "$bin/dupla-server" "${plain[@]}" "${http[@]}" --listen "127.0.0.1:$((port + n))" --manager "127.0.0.1:$port" \
      --data "$work/server-$n" --capacity 100GiB --secret "$secret" "$@" >"$work/server-$n.log" 2>&1 &
    pids+=($!)
  done
  mkdir -p "$work/root"
  client=("$bin/dupla" "${plain[@]}" --manager "127.0.0.1:$port" --root "$work/root")
  for _ in $(seq 100); do
    [ "$("${client[@]}" --json status 2>/dev/null | python3 -c 'import json,sys; print(sum(s["state"]=="up" for s in json.load(sys.stdin)["servers"]))' 2>/dev/null)" = 3 ] && return 0
    sleep 0.2
  done
  echo "the cluster did not come up; logs in $work" >&2
  return 1
}

bench_login() {
  local password="benchmark password"
  echo "$password" | "${client[@]}" register --login bench --first-names Bench --last-names User \
    --age 30 --gender other --password-stdin >/dev/null
  echo "$password" | "${client[@]}" login bench --password-stdin >/dev/null
}
