#!/usr/bin/env bash
# Run the whole test suite and write docs/test-report.md: every test by
# area (test binary) with its result and duration, and the totals
# (issue 11, item 6). With cargo-nextest (`cargo install cargo-nextest`)
# each test is timed and isolated in its own process; without it the
# plain `cargo test --workspace` output is parsed (times per area only).
#
#   scripts/test-report.sh                  run, write docs/test-report.md
#   scripts/test-report.sh -E 'binary(http_api)'   nextest filters pass through
#
# The end-to-end tests run the binaries in target/debug, so they are built
# first. The exit code is the test run's: a report is written either way.
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
out="docs/test-report.md"
target="${CARGO_TARGET_DIR:-$top/target}"

cargo build --workspace --bins || exit 1
start=$(date +%s)
if cargo nextest --version >/dev/null 2>&1; then
  junit="$target/nextest/ci/junit.xml"
  rm -f "$junit"
  cargo nextest run --workspace --profile ci --no-fail-fast "$@"
  status=$?
  cargo nextest list --workspace --message-format json "$@" >"$target/nextest/ci/list.json" 2>/dev/null
  wall=$(($(date +%s) - start))
  [ -f "$junit" ] || { echo "test-report: nextest wrote no $junit" >&2; exit 1; }
  python3 scripts/test_report.py --junit "$junit" --list "$target/nextest/ci/list.json" \
    --wall "$wall" --out "$out" || exit 1
else
  echo "test-report: cargo-nextest not found; parsing cargo test output (no per-test times)" >&2
  log="$target/test-report-libtest.log"
  mkdir -p "$target"
  cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  wall=$(($(date +%s) - start))
  python3 scripts/test_report.py --libtest "$log" --wall "$wall" \
    --command "cargo test --workspace" --out "$out" || exit 1
fi
exit "$status"
