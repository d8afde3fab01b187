#!/usr/bin/env bash
# Upload and restore paths beside their yardsticks, in one run, for
# docs/performance.md ("Two-hop uploads", "Restores beside a local copy").
#
#   scripts/bench-paths.sh [RUNS]      (default 3 runs of each measurement)
#
# 1. The naive chain (../shared/bench/naive_replicate.py, blake3 at every
#    hop), then `dupla backup` of a fresh 1 GiB file with each of the three
#    servers named as the entry (`--server`), RUNS times each; the source is
#    in the page cache, as the naive chain's is. Prints each run and the
#    ratio of each server's median to the naive median.
# 2. `dupla restore` of 1 GiB into the client root versus a local copy of
#    the same file on the same disk (scripts/local_copy.py: cold read,
#    blake3, write, fsync), alternating, the page cache dropped before each
#    (needs root; said when not permitted). Times are wall clock of the
#    whole command, as a user sees it.
# 3. Beside each, the disk ceiling (scripts/disk_ceiling.py): one file read
#    cold while as many bytes are written and fsynced, nothing else. That is
#    the disk work of a restore, so no restore can be faster than it.
# Manager and servers on 127.0.0.1:29050-29053 (below the kernel's ephemeral
# port range, so other programs' outgoing connections cannot hold them),
# in a temporary directory.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib-cluster.sh
. "$top/scripts/lib-cluster.sh"
runs="${1:-3}"
shared="${DUPLA_BENCH_REFERENCE:-$top/../shared/bench}"
work="$(mktemp -d "${DUPLA_BENCH_DIR:-/tmp}/dupla-paths.XXXXXX")"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
size_mib=1024
bytes=$((size_mib * 1048576))
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; else echo "(cannot drop the page cache: not root; restores and copies read warm)"; fi
drop_caches() {
  sync
  if [ "$can_drop" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
mbps() { python3 -c "import sys; print(f'{$bytes / (float(sys.argv[2]) - float(sys.argv[1])) / 1e6:.1f}')" "$1" "$2"; }
median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'median {statistics.median(v):.1f} MB/s (min {min(v):.1f}, max {max(v):.1f}, n={len(v)})')" "$@"; }
med() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

python3 -c 'import blake3' 2>/dev/null || pip install --quiet blake3
(cd "$top" && cargo build --release --workspace --bins --quiet)
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(date -u +%FT%TZ)"

echo "== naive chain: sender -> primary -> replica, fsync on both, blake3 at every hop"
naive_out="$(python3 "$shared/naive_replicate.py" bench --size-mib "$size_mib" --runs "$runs" --hash blake3 \
  --dir "$work/naive" --port 54060 2>&1 | grep -E "naive run|SUMMARY")"
echo "$naive_out"
naive_median="$(echo "$naive_out" | sed -n 's/.*SUMMARY.*median \([0-9.]*\) MB\/s.*/\1/p')"
rm -rf "$work/naive"

echo "== dupla: manager + 3 servers"
# Removed benchmark files are collected within ~30 s, so the disk does not
# fill up over the runs (an upload lasts a few seconds, far within the
# grace period).
start_cluster "$bin" "$work" 29050 --gc-grace-secs 20 --gc-interval-secs 10
root="$work/root"
bench_login

echo "== dupla backup of a fresh ${size_mib} MiB file, each server named as the entry (--server)"
declare -A by_server
for i in $(seq "$runs"); do
  for n in 1 2 3; do
    server="127.0.0.1:2905$n"
    name="up-$i-$n.bin"
    head -c "$bytes" /dev/urandom >"$root/$name"
    cat "$root/$name" >/dev/null # the source in the page cache, as the naive chain's
    sync
    t0="$(now)"
    line="$("${client[@]}" --server "$server" --json backup "$name" | sed -n 1p)"
    t1="$(now)"
    rate="$(mbps "$t0" "$t1")"
    by_server[$n]="${by_server[$n]:-} $rate"
    echo "backup run $i via $server: $rate MB/s  $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("primary=%s replica=%s copies=%s" % (r["primary"], r["replica"], r["copies"]))')"
    "${client[@]}" rm "$name" >/dev/null
    rm -f "$root/$name"
  done
done
for n in 1 2 3; do
  # shellcheck disable=SC2086
  m="$(med ${by_server[$n]})"
  echo "SUMMARY backup via 127.0.0.1:2905$n: $(median ${by_server[$n]}); vs naive $naive_median MB/s: $(python3 -c "print(f'{$m / $naive_median:.2f}x')") (goal >= 1.1x)"
done

echo "== restore of ${size_mib} MiB into the client root vs a local copy (cold read + blake3 + write + fsync)"
head -c "$bytes" /dev/urandom >"$root/big.bin"
"${client[@]}" --json backup big.bin >/dev/null
cp "$root/big.bin" "$work/copy-src.bin"
rm -f "$root/big.bin"
restores=""
copies=""
ceilings=""
for i in $(seq "$runs"); do
  rm -f "$root/big.bin" "$work/copy-dst.bin"
  drop_caches
  # diskstat.py times the command itself (its own start-up is outside the
  # window) and says how busy the disk was meanwhile.
  disk="$(python3 "$top/scripts/diskstat.py" --dir "$work" --label "restore run $i" -- "${client[@]}" restore big.bin 2>&1 >/dev/null)" || { echo "$disk" >&2; exit 1; }
  echo "$disk"
  r="$(mbps 0 "$(echo "$disk" | sed -n 's/.* over \([0-9.]*\) s$/\1/p')")"
  restores="$restores $r"
  drop_caches
  c="$(python3 "$top/scripts/diskstat.py" --dir "$work" --label "local copy $i" -- python3 "$top/scripts/local_copy.py" "$work/copy-src.bin" "$work/copy-dst.bin" | sed -n 's/.*= \([0-9.]*\) MB\/s.*/\1/p')"
  copies="$copies $c"
  rm -f "$work/copy-dst.bin"
  drop_caches
  d="$(python3 "$top/scripts/diskstat.py" --dir "$work" --label "disk ceiling $i" -- python3 "$top/scripts/disk_ceiling.py" "$work/copy-src.bin" "$work/copy-dst.bin" | sed -n 's/.*= \([0-9.]*\) MB\/s.*/\1/p')"
  ceilings="$ceilings $d"
  echo "restore run $i: $r MB/s; local copy: $c MB/s; ratio $(python3 -c "print(f'{$r / $c:.2f}x')"); disk ceiling: $d MB/s ($(python3 -c "print(f'{$d / $c:.2f}x')") the local copy)"
done
# shellcheck disable=SC2086
echo "SUMMARY restore: $(median $restores)"
# shellcheck disable=SC2086
echo "SUMMARY local copy: $(median $copies)"
# shellcheck disable=SC2086
echo "SUMMARY restore / local copy (medians): $(python3 -c "print(f'{$(med $restores) / $(med $copies):.2f}x')") (goal >= 1.5x)"
# shellcheck disable=SC2086
echo "SUMMARY disk ceiling (read one file while writing another, nothing else): $(median $ceilings); / local copy: $(python3 -c "print(f'{$(med $ceilings) / $(med $copies):.2f}x')"); restore / ceiling: $(python3 -c "print(f'{$(med $restores) / $(med $ceilings):.2f}x')")"
