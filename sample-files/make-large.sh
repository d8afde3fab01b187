#!/usr/bin/env bash
# Make large sample files on demand (never committed): sample-files/large/.
# Usage: sample-files/make-large.sh [SIZE_MIB ...]   (default: 1 10 100 1024)
# Random content, so neither compression nor dedup flatters a benchmark.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/large"
mkdir -p "$dir"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 10 100 1024)
for mib in "${sizes[@]}"; do
  out="$dir/${mib}MiB.bin"
  if [ -f "$out" ] && [ "$(stat -c %s "$out")" -eq $((mib * 1048576)) ]; then
    echo "exists: $out"
    continue
  fi
  head -c "$((mib * 1048576))" /dev/urandom > "$out.tmp"
  mv "$out.tmp" "$out"
  echo "made:   $out"
done
