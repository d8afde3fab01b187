#!/usr/bin/env bash
# Where a backup's CPU goes, per process (docs/performance.md, "Session 8").
#
#   scripts/bench-cpu.sh [RUNS]     (default 3 backups of a fresh 1 GiB file)
#
# Starts a TLS cluster of release binaries (manager on 127.0.0.1:29450,
# servers on 29451-29453: below the kernel's ephemeral port range, so a
# busy machine's outgoing connections cannot take them), then backs up a
# new random 1 GiB file RUNS times (source in the page cache) and prints
# each run's throughput and the CPU seconds of the client, the manager
# and each server (user + system, from /proc/PID/stat).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib-cluster.sh
. "$top/scripts/lib-cluster.sh"
runs="${1:-3}"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
work="$(mktemp -d "${DUPLA_BENCH_DIR:-/tmp}/dupla-cpu.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
start_cluster "$bin" "$work" 29450
bench_login
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
names=(manager server-1 server-2 server-3)
for i in $(seq "$runs"); do
  head -c $((1024 << 20)) /dev/urandom >"$work/root/f$i.bin"
  cat "$work/root/f$i.bin" >/dev/null
  sync
  before=()
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/time" "${client[@]}" backup "f$i.bin" >/dev/null
  t1=$(date +%s.%N)
  line="run $i: $(python3 -c "print(f'{1073.741824 / ($t1 - $t0):.1f} MB/s')"); CPU s: client $(awk '{printf "%.2f", $1 + $2}' "$work/time")"
  for j in "${!pids[@]}"; do
    line="$line ${names[$j]} $(python3 -c "print(f'{($(ticks "${pids[$j]}") - ${before[$j]}) / $hz:.2f}')")"
  done
  echo "$line"
  rm -f "$work/root/f$i.bin"
done
