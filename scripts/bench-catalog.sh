#!/usr/bin/env bash
# The manager's catalog at scale (issue 10, item 14).
#
#   scripts/bench-catalog.sh [FILES]     default 1000000
#
# Runs testkit's `catalog-bench`: an in-process cluster (manager and three
# servers in a temporary directory), FILES file versions committed through
# `Catalog::commit` (the code path of `Manager/Commit`, 16 threads, group
# commit), the manager restarted on that database on threads of its own (as
# its own process would run), then timed over gRPC from a thread of its own:
# `ClusterStatus` (50 calls), `Place` and `Lookup` (1,000 each) while 16
# uploads of 256 KiB run, the catalog's size on disk and the process's peak
# memory; last, repair planning for a lost server (server 0) over the same
# database. Prints `key: value` lines.
#
# Environment: PROFILE=release (default) or dev (the workspace builds
# dependencies with opt-level 2 in dev too), NO_BUILD=1 to use the binary
# as it is, CARGO_TARGET_DIR.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-1000000}"
profile="${PROFILE:-release}"
dir="release"
[ "$profile" = dev ] && dir="debug"
bin="${CARGO_TARGET_DIR:-$top/target}/$dir/catalog-bench"
if [ -z "${NO_BUILD:-}" ]; then
  (cd "$top" && cargo build --profile "$profile" -p dupla-testkit --bin catalog-bench)
fi
echo "# catalog-bench $files files ($profile build), $(date -u +%FT%TZ), $(nproc) cores"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_LOG="${RUST_LOG:-warn}" /usr/bin/time -v "$bin" "$files" 2> >(grep -E "Maximum resident|Elapsed|loaded" >&2)
