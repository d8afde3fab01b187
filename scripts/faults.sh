#!/usr/bin/env bash
# Real-process fault drills, timed, for docs/reliability.md.
#
#   scripts/faults.sh [FILES]     (default 200 small files + one 256 MiB file)
#
# Starts a manager and three servers (release build, default timings:
# suspect after 3 s, down after 30 s) in a temporary directory on ports
# 5205x, backs up FILES files, then:
#   1. kill -9 one server for good: time to suspect, to down, to every file
#      having two live copies again; bytes the repair copied; then every file
#      is restored and compared with the original (data lost must be 0);
#   2. flip a byte in a stored chunk, run `dupla scrub`: time until the file
#      has two good copies again; the file restores byte-identical.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-200}"
work="$(mktemp -d /tmp/dupla-faults.XXXXXX)"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
manager=127.0.0.1:52050
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "failed at line $LINENO" >&2' ERR

(cd "$top" && cargo build --release --workspace --bins --quiet)
"$bin/dupla-manager" --listen "$manager" --data "$work/manager" --secret drill >"$work/manager.log" 2>&1 &
pids+=($!)
declare -A server_pid
for n in 1 2 3; do
  "$bin/dupla-server" --listen "127.0.0.1:5205$n" --manager "$manager" --data "$work/server-$n" \
    --secret drill --scrub-interval-secs 0 >"$work/server-$n.log" 2>&1 &
  pids+=($!)
  server_pid["127.0.0.1:5205$n"]=$!
done
root="$work/client"
mkdir -p "$root/files"
dupla() { "$bin/dupla" --manager "$manager" --root "$root" "$@"; }
status_field() { # python expression over the status JSON `s`; empty while the manager is not answering
  dupla --json status 2>/dev/null | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)" 2>/dev/null || true
}
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
wait_for() { # python expression over status `s`, timeout seconds
  local deadline=$(( $(date +%s) + $2 ))
  until [ "$(status_field "$1")" = True ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $1" >&2; exit 1; }
    sleep 0.1
  done
}
wait_for 'sum(x["state"] == "up" for x in s["servers"]) == 3' 30
# Backups belong to accounts: register and log in a drill user.
echo "drill password" | dupla register --login drill --first-names Drill --last-names User \
  --age 30 --gender other --password-stdin >/dev/null
echo "drill password" | dupla login drill --password-stdin >/dev/null

echo "== writing $files files of 1-64 KiB and one of 256 MiB"
python3 - "$root/files" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
r = random.Random(7)
for i in range(n):
    with open(f"{root}/f{i:04d}.bin", "wb") as f:
        f.write(os.urandom(r.randint(1, 64) * 1024))
PY
head -c $((256 << 20)) /dev/urandom >"$root/files/big.bin"
(cd "$root" && dupla --json backup files/*) >"$work/receipts.json"
echo "backed up $(wc -l <"$work/receipts.json") files; $(status_field 's["under_replicated"]') under-replicated"

echo "== drill 1: kill -9 one server for good"
victim=127.0.0.1:52052
held=$(dupla --json ls | python3 -c "import json,sys; print(sum('$victim' in json.loads(l)['holders'] for l in sys.stdin))")
echo "victim $victim holds a copy of $held files"
t0=$(now)
kill -9 "${server_pid[$victim]}"
wait_for "[x['state'] for x in s['servers'] if x['addr'] == '$victim'] == ['suspect']" 60
echo "suspect after $(since "$t0") s"
wait_for "[x['state'] for x in s['servers'] if x['addr'] == '$victim'] == ['down']" 90
echo "down after $(since "$t0") s"
wait_for 's["under_replicated"] == 0' 600
echo "every file has two live copies again after $(since "$t0") s"
echo "repair copied: $(status_field 'str(s["repaired_files"]) + " files, " + str(s["repaired_bytes"]) + " bytes"')"
lost=0
while read -r name; do
  if ! (cd "$root" && dupla restore "$name" -o "$work/restored" >/dev/null 2>&1) \
     || ! cmp -s "$work/restored" "$root/$name"; then
    lost=$((lost + 1)); echo "LOST: $name"
  fi
done < <(python3 -c "import json,sys; [print(json.loads(l)['name']) for l in open('$work/receipts.json')]")
echo "restored and compared every file: $lost lost"

echo "== drill 2: flip a byte in a stored chunk, then dupla scrub"
chunk=$(find "$work"/server-1/chunks "$work"/server-3/chunks -type f -print -quit)
python3 -c "
p='$chunk'; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=1; open(p,'wb').write(b)"
before=$(status_field 's["repaired_files"]')
t0=$(now)
dupla scrub || echo "(scrub exited with $?)"
wait_for "s['under_replicated'] == 0 and s['repaired_files'] > $before" 120
echo "corrupt chunk quarantined and its file re-replicated $(since "$t0") s after the scrub started"
