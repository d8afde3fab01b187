#!/usr/bin/env bash
# The HTTP API under load, beside the `dupla` client, in one run, for
# docs/performance.md ("HTTP API load test").
#
#   scripts/bench-http.sh [RUNS] [SECONDS]   (default 3 runs of (a), 120 s of (b))
#
# Starts a manager and three servers (release build, TLS on between nodes as
# users run it) on 127.0.0.1:55050-55053, HTTP on 127.0.0.1:8480-8483, in a
# temporary directory, then measures:
#  (a) a fresh 100 MiB file: `dupla backup` versus an HTTP upload with curl
#      (place at the manager, stage at the server, one PUT), and `dupla
#      restore` versus an HTTP download with curl (then fsync, as the
#      restore does) from the file's primary (the client also reads from a
#      holder), RUNS times each, alternating; the page cache is dropped
#      before each download when root. Prints the medians and the ratios
#      (goal: HTTP at least 0.8x the client).
#  (b) 20 locust users (scripts/load/locustfile.py) uploading and
#      downloading 1-100 MiB files for SECONDS: requests, errors, latency
#      percentiles, MB/s (goal: no errors).
#  (c) each server's VmRSS and VmHWM (/proc/PID/status) every second from
#      start to end: the RSS at the start, quartiles and end of (b), and the peak
#      (goal: flat while (b) runs).
# Needs python3, curl; locust and blake3 are pip-installed if missing.
# MB/s is 10^6 bytes per second.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib-cluster.sh
. "$top/scripts/lib-cluster.sh"
runs="${1:-3}"
seconds="${2:-120}"
users=20
work="$(mktemp -d "${DUPLA_BENCH_DIR:-/tmp}/dupla-http.XXXXXX")"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
size_mib=100
bytes=$((size_mib * 1048576))
export BENCH_HTTP_PORT=8480
manager_http="http://127.0.0.1:$BENCH_HTTP_PORT"
pids=()

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Gone before their directories are removed (they write until they exit).
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # A failed run keeps its logs (the nodes', locust's) for a look.
  if [ "$status" = 0 ]; then rm -rf "$work"; else echo "failed: logs kept in $work" >&2; fi
}
trap cleanup EXIT

can_drop=0
[ -w /proc/sys/vm/drop_caches ] && can_drop=1
drop_caches() {
  sync
  if [ "$can_drop" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
mbps() { python3 -c "import sys; print(f'{$bytes / (float(sys.argv[2]) - float(sys.argv[1])) / 1e6:.1f}')" "$1" "$2"; }
med() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.1f}')" "$@"; }
range() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(f'{min(v):.0f}-{max(v):.0f}')" "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

python3 -c 'import locust, blake3' 2>/dev/null || pip install --quiet locust blake3
(cd "$top" && nice -n 10 cargo build --release -p dupla-manager -p dupla-server -p dupla-client --quiet)
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$can_drop" = 1 ] || echo "(cannot drop the page cache: not root; downloads and restores read warm)"

echo "== cluster: manager + 3 servers, HTTP on 127.0.0.1:$BENCH_HTTP_PORT-$((BENCH_HTTP_PORT + 3))"
# Removed files are collected within ~30 s, so a long load run does not
# fill the disk.
start_cluster "$bin" "$work" 55050 --gc-grace-secs 20 --gc-interval-secs 10
root="$work/root"
bench_login
for _ in $(seq 50); do curl -sf "$manager_http/healthz" >/dev/null && break; sleep 0.2; done

# (c) Memory of each server every second, in the background: "unix_s server VmRSS_kB VmHWM_kB".
servers=("${pids[@]:1:3}")
(
  while :; do
    t="$(date +%s)"
    for n in 1 2 3; do
      awk -v t="$t" -v n="$n" '/^VmRSS|^VmHWM/ {v[$1] = $2} END {print t, n, v["VmRSS:"], v["VmHWM:"]}' \
        "/proc/${servers[$((n - 1))]}/status" 2>/dev/null || true
    done
    sleep 1
  done
) >"$work/rss.txt" &
pids+=($!)

# The HTTP user: the same account as the client's (the token is never printed).
token="$(curl -sf "$manager_http/api/login" -H 'content-type: application/json' \
  -d '{"login":"bench","password":"benchmark password"}' | json '["token"]')"
auth=(-H "authorization: Bearer $token")

# The value of "key" in a small JSON answer, without starting a process
# (which would count in the timings).
field() { [[ "$1" =~ \"$2\":\"?([^\",]*) ]] && echo "${BASH_REMATCH[1]}"; }

# Place at the manager, stage at the server it names, PUT the bytes in one
# request; the PUT's answer goes to $work/put.json. Exits non-zero unless
# committed.
http_upload() {
  local file="$1" name="$2" size url id
  size="$(stat -c%s "$file")"
  url="$(field "$(curl -sf "${auth[@]}" -H 'content-type: application/json' "$manager_http/api/uploads" \
    -d "{\"name\":\"$name\",\"size\":$size}")" url)"
  id="$(field "$(curl -sf "${auth[@]}" -H 'content-type: application/json' "$url/api/uploads" \
    -d "{\"name\":\"$name\",\"size\":$size}")" id)"
  curl -sf "${auth[@]}" -H 'content-type: application/octet-stream' -T "$file" \
    "$url/api/uploads/$id?offset=0" >"$work/put.json"
  [ "$(field "$(<"$work/put.json")" done)" = true ]
}

# The HTTP URL of the file's primary (from the last PUT's answer): HTTP
# downloads read from a holder, as `dupla restore` does.
primary_url() {
  curl -sf "$manager_http/api/cluster" | python3 -c "import json,sys
primary = json.load(open(sys.argv[1]))['file']['holders'][0]
print(next(s['http'] for s in json.load(sys.stdin)['servers'] if s['addr'] == primary))" "$work/put.json"
}

echo "== (a) ${size_mib} MiB: dupla backup / restore vs HTTP upload / download (curl), $runs runs"
up_cli="" up_http="" down_cli="" down_http=""
for i in $(seq "$runs"); do
  head -c "$bytes" /dev/urandom >"$root/cli-$i.bin"
  head -c "$bytes" /dev/urandom >"$root/http-$i.bin"
  sync
  # Alternate which goes first, so neither always meets a quieter machine.
  for way in $( ((i % 2)) && echo "cli http" || echo "http cli"); do
    t0="$(now)"
    if [ "$way" = cli ]; then
      "${client[@]}" --json backup "cli-$i.bin" >/dev/null
    else
      http_upload "$root/http-$i.bin" "http-$i.bin"
    fi
    t1="$(now)"
    r="$(mbps "$t0" "$t1")"
    if [ "$way" = cli ]; then up_cli="$up_cli $r"; else up_http="$up_http $r"; fi
    echo "upload run $i, $way: $r MB/s"
  done
  url="$(primary_url)"
  for way in $( ((i % 2)) && echo "cli http" || echo "http cli"); do
    rm -f "$root/restored.bin"
    drop_caches
    t0="$(now)"
    if [ "$way" = cli ]; then
      "${client[@]}" restore "cli-$i.bin" -o "$root/restored.bin" >/dev/null
    else
      curl -sf "${auth[@]}" -o "$root/restored.bin" "$url/api/files/content?name=http-$i.bin"
      sync "$root/restored.bin" # durable, as a restore is
    fi
    t1="$(now)"
    cmp -s "$root/restored.bin" "$root/$way-$i.bin" || { echo "run $i: $way download differs from the upload" >&2; exit 1; }
    r="$(mbps "$t0" "$t1")"
    if [ "$way" = cli ]; then down_cli="$down_cli $r"; else down_http="$down_http $r"; fi
    echo "download run $i, $way: $r MB/s"
  done
  rm -f "$root/cli-$i.bin" "$root/http-$i.bin" "$root/restored.bin"
done
# shellcheck disable=SC2086
{
  ratio_up="$(python3 -c "print(f'{$(med $up_http) / $(med $up_cli):.2f}')")"
  ratio_down="$(python3 -c "print(f'{$(med $down_http) / $(med $down_cli):.2f}')")"
  summary_a="| upload | $(med $up_cli) ($(range $up_cli)) | $(med $up_http) ($(range $up_http)) | ${ratio_up}x |
| download | $(med $down_cli) ($(range $down_cli)) | $(med $down_http) ($(range $down_http)) | ${ratio_down}x |"
}

echo "== (b) $users locust users, 1-100 MiB files, ${seconds} s"
load_start="$(date +%s)"
rc=0
# Spawn 2 users a second: logins are argon2-hashed and throttled per address.
(cd "$work" && DUPLA_LOAD_PASSWORD="load test password" nice -n 5 locust -f "$top/scripts/load/locustfile.py" \
  --host "$manager_http" --headless --users "$users" --spawn-rate 2 --run-time "${seconds}s" \
  --stop-timeout 300 --json-file "$work/locust" >"$work/locust.log" 2>&1) || rc=$?
load_end="$(date +%s)"
grep -v ' INFO/' "$work/locust.log" || true
[ "$rc" = 0 ] || echo "(locust exited with $rc: failures above)"

# Locust's final stats (its CSV lags by a flush): percentiles from its
# histogram of response times, MB/s from the bytes each request moved.
summary_b="$(python3 - "$work/locust.json" "$((load_end - load_start))" <<'EOF'
import json, sys
entries, elapsed = json.load(open(sys.argv[1])), float(sys.argv[2])
def pct(times, p):
    ordered, seen = sorted((int(k), v) for k, v in times.items()), 0
    for ms, n in ordered:
        seen += n
        if seen >= p * sum(times.values()):
            return ms
print("| request | count | errors | p50 ms | p95 ms | p99 ms | max ms | MB/s |")
print("|---|---|---|---|---|---|---|---|")
for e in sorted(entries, key=lambda e: e["name"]):
    moved = e["total_content_length"]
    rate = f"{moved / elapsed / 1e6:.1f}" if moved > 1e6 else ""
    t = e["response_times"]
    print(f"| {e['name']} | {e['num_requests']} | {e['num_failures']} | {pct(t, .5)} | {pct(t, .95)} "
          f"| {pct(t, .99)} | {e['max_response_time']:.0f} | {rate} |")
EOF
)"

summary_c="$(python3 - "$work/rss.txt" "$load_start" "$load_end" <<'EOF'
import sys
start, end = int(sys.argv[2]), int(sys.argv[3])
by = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 4:
        t, n, rss, hwm = map(int, parts)
        by.setdefault(n, []).append((t, rss, hwm))
mib = lambda kb: f"{kb / 1024:.0f}"
print("| server | RSS at start of (b) | 25% | 50% | 75% | end | max RSS during (b) | peak (VmHWM, whole run) |")
print("|---|---|---|---|---|---|---|---|")
for n, s in sorted(by.items()):
    during = [x for x in s if start <= x[0] <= end] or s
    at = lambda q: mib(min(during, key=lambda x: abs(x[0] - (start + q * (end - start))))[1]) + " MiB"
    print(f"| {n} | {' | '.join(at(q) for q in (0, .25, .5, .75, 1))} "
          f"| {mib(max(x[1] for x in during))} MiB | {mib(max(x[2] for x in s))} MiB |")
EOF
)"

cat <<EOF

== SUMMARY (for docs/performance.md)
$(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)

(a) ${size_mib} MiB, median MB/s (min-max) of $runs runs; goal: HTTP >= 0.8x the client
| | dupla client | HTTP (curl) | HTTP / client |
|---|---|---|---|
$summary_a

(b) $users users for ${seconds} s (wall clock $((load_end - load_start)) s, ramp-up and the last transfers included); goal: 0 errors
$summary_b

(c) memory of each server (sampled every second); goal: flat during (b)
$summary_c
EOF
