#!/usr/bin/env bash
# Dupla's benchmarks beside the machine's limits and the naive chain, in one
# run, so the ratios in docs/performance.md compare like with like.
#
#   scripts/bench.sh [RUNS]        (default 3 runs of each 1 GiB measurement)
#
# Starts its own manager and three servers (release build) in a temporary
# directory on ports 5105x, drops the page cache before each run when root
# (so every run starts from the same memory state), and prints everything.
# Needs: python3; iperf3 and the blake3 module are installed if missing.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib-cluster.sh
. "$top/scripts/lib-cluster.sh"
runs="${1:-3}"
shared="${DUPLA_BENCH_REFERENCE:-$top/../shared/bench}"
work="$(mktemp -d /tmp/dupla-bench.XXXXXX)"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

command -v iperf3 >/dev/null || { apt-get install -y -qq iperf3 >/dev/null 2>&1 || echo "(no iperf3: loopback not measured)"; }
python3 -c 'import blake3' 2>/dev/null || pip install --quiet blake3 || true

(cd "$top" && cargo build --release --workspace --bins --quiet)

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
if [ -d "$shared" ]; then
  echo "== limits (loopback TCP, disk write+fsync, reads)"
  drop_caches
  python3 "$shared/limits.py" --runs "$runs" --size-mib 1024 --dir "$work/limits" 2>&1 | grep -E "SUMMARY|cpu" || true
  rm -rf "$work/limits"
  echo "== naive chain: sender -> primary -> replica, fsync on both, blake3 at every hop"
  drop_caches
  python3 "$shared/naive_replicate.py" bench --size-mib 1024 --runs "$runs" --hash blake3 --dir "$work/naive" 2>&1 | grep -E "naive run|SUMMARY" || true
  rm -rf "$work/naive"
else
  echo "(reference scripts not found at $shared: set DUPLA_BENCH_REFERENCE)"
fi

echo "== dupla: manager + 3 servers"
start_cluster "$bin" "$work" 51050
# Backups belong to accounts: a benchmark user.
bench_login

for i in $(seq "$runs"); do
  drop_caches
  echo "-- dupla bench --size 1GiB (run $i)"
  "${client[@]}" bench --size 1GiB
done
drop_caches
echo "-- dupla bench --size 1MiB --count 1000 --concurrency 16"
"${client[@]}" bench --size 1MiB --count 1000 --concurrency 16
