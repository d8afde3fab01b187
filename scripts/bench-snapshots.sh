#!/usr/bin/env bash
# Snapshot backups, Dupla beside restic, on the same tree in the same run.
#
#   scripts/bench-snapshots.sh [mixed]        1,000 files of 1-64 KiB in nested
#                                             directories + 4 x 128 MiB: first
#                                             backup, unchanged rerun, rerun after
#                                             edits; then the 1,000 small files
#                                             alone into a fresh account (files/s)
#   scripts/bench-snapshots.sh many [N...]    N empty or tiny (0-100 B) files
#                                             (default 100000): backup, ls,
#                                             restore, counts; a fresh cluster
#                                             per N
#
# Starts its own manager and three servers (release build, from a temporary
# copy of nodes/, ports DUPLA_BENCH_PORT..+3, default 53050..53053, refused if
# taken) and a local restic repository (one copy, no network) in the same
# temporary directory, removed on exit. Drops the page cache before every
# measured command when root. Every command is bounded by STEP_TIMEOUT
# seconds (default 1200). Prints every raw number, then Markdown tables.
#
# Environment: CARGO_TARGET_DIR (where the release binaries are), NO_BUILD=1
# (use the binaries as they are), SEED (default 42), STEP_TIMEOUT,
# DUPLA_BENCH_PORT, KEEP=1 (keep the temporary directory, for post-mortems).
# Needs python3 and restic (installed with apt-get when missing and root).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$top/target}/release"
mode="${1:-mixed}"
seed="${SEED:-42}"
step_timeout="${STEP_TIMEOUT:-1200}"
port="${DUPLA_BENCH_PORT:-53050}"
manager_addr="127.0.0.1:$port"
password="benchmark password"
export RESTIC_PASSWORD="benchmark password"
# Flags beat these, but an inherited DUPLA_SERVER or DUPLA_ROOT would still
# change what is measured.
unset DUPLA_SERVER DUPLA_ROOT DUPLA_CONFIG DUPLA_MANAGER RESTIC_REPOSITORY RESTIC_CACHE_DIR || true

case "$mode" in
  mixed) ;;
  many) shift; counts=("$@"); [ "${#counts[@]}" -gt 0 ] || counts=(100000) ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac

work="$(mktemp -d /tmp/dupla-bench-snap.XXXXXX)"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] && [ -d "$work/nodes" ]; then
    for log in "$work"/nodes/*/node.log; do
      [ -f "$log" ] && { echo "--- tail of $log" >&2; tail -n 5 "$log" >&2; }
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "bench-snapshots: $*"; exit 1; }

# ---------------------------------------------------------------- tools
command -v python3 >/dev/null || die "python3 is needed"
if ! command -v restic >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    say "installing restic (apt-get)"
    (apt-get update -qq && apt-get install -y -qq restic) >"$work/apt.log" 2>&1 \
      || die "apt-get install restic failed (see above); install it by hand"
  else
    die "restic is missing: run 'sudo apt-get update && sudo apt-get install -y restic', then rerun"
  fi
fi
if [ "${NO_BUILD:-0}" != 1 ]; then
  (cd "$top" && cargo build --release -p dupla-client -p dupla-manager -p dupla-server --quiet)
fi
# The source the binaries were built from (as of this start; NO_BUILD=1 cannot vouch for it).
dupla_rev="$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$top" diff --quiet HEAD -- client manager server src proto 2>/dev/null || dupla_rev+="+uncommitted"
[ "${NO_BUILD:-0}" = 1 ] && dupla_rev+=" (NO_BUILD: binaries as found)"
for b in dupla dupla-manager dupla-server; do
  [ -x "$bin/$b" ] || die "$bin/$b missing: build it (cargo build --release) or set CARGO_TARGET_DIR"
done

# Wall time, exit status, CPU and peak RSS of one command (the child's own,
# from getrusage), its stdout and stderr kept in $work/m/LABEL.*; a command
# over STEP_TIMEOUT is killed and reported with rc 124.
mkdir -p "$work/m"
cat >"$work/measure.py" <<'EOF'
import json, resource, subprocess, sys, time
base, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.monotonic()
with open(base + ".out", "wb") as out, open(base + ".err", "wb") as err:
    try:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
wall = time.monotonic() - start
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"wall": wall, "rc": rc, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss},
          open(base + ".time", "w"))
EOF

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# measure LABEL CMD...: drop caches, run, print "LABEL: wall s, rc" and fail
# the script if the command failed.
measure() {
  local label="$1"; shift
  drop_caches
  local before after
  before="$(cluster_cpu)"
  python3 "$work/measure.py" "$work/m/$label" "$step_timeout" "$@"
  after="$(cluster_cpu)"
  python3 - "$work/m/$label.time" "$before" "$after" <<'EOF'
import json, sys
path, before, after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t = json.load(open(path))
t["cluster_cpu"] = round(after - before, 2)
json.dump(t, open(path, "w"))
EOF
  local rc
  rc="$(jget "$work/m/$label.time" rc)"
  say "  $label: $(jget "$work/m/$label.time" wall) s wall, rc $rc"
  if [ "$rc" != 0 ]; then
    say "  $label failed (rc $rc). stderr:"; tail -n 20 "$work/m/$label.err" >&2
    [ "$rc" = 124 ] && say "  (killed after STEP_TIMEOUT=$step_timeout s)"
    return 1
  fi
}

jget() { # FILE KEY: a key of a JSON object file
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(round(v,2) if isinstance(v,float) else v)' "$1" "$2"
}

# The last JSON line of LABEL's stdout whose keys include KEY, as a file.
last_json() { # LABEL KEY OUT
  python3 - "$work/m/$1.out" "$2" "$3" <<'EOF'
import json, sys
found = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    if sys.argv[2] in obj:
        found = obj
if found is None:
    sys.exit(f"no JSON line with {sys.argv[2]!r} in {sys.argv[1]}")
json.dump(found, open(sys.argv[3], "w"))
EOF
}

# ---------------------------------------------------------------- cluster
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 100); do port_taken "$1" && return 0; sleep 0.1; done
  die "nothing listens on port $1 after 10 s; see $work/nodes/*/node.log"
}

manager_pid=""
server_pids=()

# A fresh manager and three servers from a copy of nodes/ (each in its own
# directory, as scripts/cluster.sh runs them, pid in node.pid); the client
# root is the copy's client/ directory.
start_cluster() {
  local p n
  for p in "$port" $((port + 1)) $((port + 2)) $((port + 3)); do
    port_taken "$p" && die "port $p is taken: stop what uses it or set DUPLA_BENCH_PORT"
  done
  rm -rf "$work/nodes"
  cp -r "$top/nodes" "$work/nodes"
  rm -rf "$work"/nodes/*/data "$work"/nodes/*/node.pid "$work"/nodes/*/node.log "$work/nodes/client/.dupla"
  (cd "$work/nodes/manager" && exec "$bin/dupla-manager" --listen "$manager_addr" --data data \
    >>node.log 2>&1 </dev/null) &
  manager_pid=$!
  pids+=("$manager_pid")
  echo "$manager_pid" >"$work/nodes/manager/node.pid"
  wait_port "$port"
  server_pids=()
  for n in 1 2 3; do
    (cd "$work/nodes/server-$n" && exec "$bin/dupla-server" --listen "127.0.0.1:$((port + n))" \
      --manager "$manager_addr" --data data --capacity 100GiB >>node.log 2>&1 </dev/null) &
    server_pids+=($!)
    pids+=($!)
    echo "$!" >"$work/nodes/server-$n/node.pid"
    wait_port $((port + n))
  done
  root="$work/nodes/client"
  client=("$bin/dupla" --manager "$manager_addr" --root "$root")
  local up=0
  for _ in $(seq 100); do
    up="$(cd "$root" && "${client[@]}" --json status 2>/dev/null \
      | python3 -c 'import json,sys; print(sum(s["state"]=="up" for s in json.load(sys.stdin)["servers"]))' 2>/dev/null || echo 0)"
    [ "$up" = 3 ] && break
    sleep 0.2
  done
  [ "$up" = 3 ] || die "only $up of 3 servers up after 20 s"
}

stop_cluster() {
  for pid in "$manager_pid" "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$manager_pid" "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  local keep=()
  for pid in "${pids[@]}"; do
    [ "$pid" = "$manager_pid" ] || [[ " ${server_pids[*]} " == *" $pid "* ]] || keep+=("$pid")
  done
  pids=("${keep[@]}")
}

dupla() { (cd "$root" && "${client[@]}" "$@"); }

account() { # LOGIN: register and log in (the session lands in ROOT/.dupla)
  echo "$password" | dupla register --login "$1" --first-names Bench --last-names User \
    --age 30 --gender other --password-stdin >/dev/null
  echo "$password" | dupla login "$1" --password-stdin >/dev/null
}

vm() { # PID FIELD (VmHWM, VmRSS): KiB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

cluster_cpu() { # CPU seconds used so far by the manager and the servers
  local total=0 pid
  for pid in $manager_pid "${server_pids[@]}"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat")))
  done
  python3 -c "import os,sys; print($total / os.sysconf('SC_CLK_TCK'))"
}

# ---------------------------------------------------------------- trees
gen_mixed() { # DIR: small/ (1,000 files, 1-64 KiB, nested) and big/ (4 x 128 MiB)
  python3 - "$1" "$seed" <<'EOF'
import os, random, sys
top, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
for i in range(1000):
    d = os.path.join(top, "small", f"a{rng.randrange(10)}", f"b{rng.randrange(5)}", f"c{rng.randrange(4)}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}.bin"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 64 * 1024)))
os.makedirs(os.path.join(top, "big"), exist_ok=True)
for i in range(4):
    with open(os.path.join(top, "big", f"big-{i}.bin"), "wb") as f:
        for _ in range(128):
            f.write(rng.randbytes(1 << 20))
EOF
}

edit_mixed() { # DIR: append 1 MiB to big-0, insert a byte before big-1, rewrite 10 small files
  python3 - "$1" "$seed" <<'EOF'
import os, random, sys
top, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed + 1)
with open(os.path.join(top, "big", "big-0.bin"), "ab") as f:
    f.write(rng.randbytes(1 << 20))
path = os.path.join(top, "big", "big-1.bin")
with open(path, "rb") as f:
    data = f.read()
with open(path, "r+b") as f:          # in place: same inode, new size and mtime
    f.write(b"\x01" + data)
small = sorted(os.path.join(d, n) for d, _, names in os.walk(os.path.join(top, "small")) for n in names)
for path in rng.sample(small, 10):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(rng.randbytes(size))
EOF
}

gen_many() { # DIR N: N files of 0-100 B, 100 per directory, 100 directories per parent
  python3 - "$1" "$2" "$seed" <<'EOF'
import os, random, sys
top, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for i in range(n):
    d = os.path.join(top, f"p{i // 10000:02d}", f"d{(i // 100) % 100:02d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = 0 if rng.random() < 0.2 else rng.randint(1, 100)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(rng.randbytes(size))
EOF
}

count_files() { find "$1" -type f ! -name '.*.dupla-part' | wc -l; }

tree_digest() { # DIR: a digest of every file's relative path and content
  python3 - "$1" <<'EOF'
import hashlib, os, sys
top = sys.argv[1]
h = hashlib.sha256()
for d, dirs, names in os.walk(top):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(d, n)
        h.update(os.path.relpath(p, top).encode() + b"\0")
        h.update(open(p, "rb").read())
print(h.hexdigest())
EOF
}

mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 2**20:.2f}')" "$1"; }

machine() {
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r), $(restic version | cut -d' ' -f1-2), dupla $dupla_rev, $(date -u '+%Y-%m-%d %H:%M UTC')"
}

# ---------------------------------------------------------------- mixed
run_mixed() {
  say "== machine: $(machine)"
  start_cluster
  account bench
  local tree="$root/tree" repo="$work/restic-repo"
  say "== generating the tree (seed $seed) in $tree"
  gen_mixed "$tree"
  say "   $(count_files "$tree") files, $(du -sb "$tree" | cut -f1) bytes"
  export RESTIC_CACHE_DIR="$work/restic-cache"
  restic init --repo "$repo" >/dev/null
  local rss_start
  rss_start="$(vm "$manager_pid" VmHWM)"

  local runs=(first unchanged edited)
  for run in "${runs[@]}"; do
    if [ "$run" = edited ]; then
      say "== edits: +1 MiB at the end of big-0, 1 byte inserted before big-1, 10 small files rewritten"
      edit_mixed "$tree"
    fi
    say "== run: $run"
    measure "dupla-$run" "$bin/dupla" --manager "$manager_addr" --root "$root" --json backup tree
    last_json "dupla-$run" files_unchanged "$work/m/dupla-$run.sum"
    measure "restic-$run" restic --repo "$repo" backup --json "$tree"
    last_json "restic-$run" data_added "$work/m/restic-$run.sum"
    du -sb "$repo" | cut -f1 >"$work/m/restic-$run.repo"
    du -scb "$work"/nodes/server-*/data | tail -n1 | cut -f1 >"$work/m/dupla-$run.stored"
  done
  local rss_runs
  rss_runs="$(vm "$manager_pid" VmHWM)"

  say "== the 1,000 small files alone: first backup into a fresh account, and a fresh restic repository"
  account smallfiles
  measure dupla-small "$bin/dupla" --manager "$manager_addr" --root "$root" --json backup tree/small
  last_json dupla-small files_unchanged "$work/m/dupla-small.sum"
  restic init --repo "$work/restic-small" >/dev/null
  measure restic-small restic --repo "$work/restic-small" backup --json "$tree/small"
  last_json restic-small data_added "$work/m/restic-small.sum"
  local rss_end servers_hwm=""
  rss_end="$(vm "$manager_pid" VmHWM)"
  for pid in "${server_pids[@]}"; do servers_hwm+="$(( $(vm "$pid" VmHWM) / 1024 )) "; done

  report_mixed "$rss_start" "$rss_runs" "$rss_end" "$servers_hwm"
}

report_mixed() {
  python3 - "$work/m" "$1" "$2" "$3" "$4" "$(machine)" <<'EOF'
import json, os, sys
m, rss_start, rss_runs, rss_end, servers_hwm, machine = sys.argv[1:7]
def load(name):
    p = os.path.join(m, name)
    return json.load(open(p)) if os.path.exists(p) else {}
def mib(b): return f"{b / 2**20:.2f} MiB"
print("\n== raw numbers")
problems = []
expect = {"first": (1004, 0, 0), "unchanged": (0, 0, 1004), "edited": (0, 12, 992)}
for run in ["first", "unchanged", "edited", "small"]:
    t, s = load(f"dupla-{run}.time"), load(f"dupla-{run}.sum")
    print(f"dupla  {run:9} wall {t['wall']:.2f} s (its own: {s['seconds']:.2f} s), client cpu {t['cpu']:.2f} s, "
          f"cluster cpu {t['cluster_cpu']:.2f} s, client peak RSS {t['maxrss_kib'] // 1024} MiB; "
          f"new {s['files_new']} changed {s['files_changed']} unchanged {s['files_unchanged']} failed {s['files_failed']}, "
          f"bytes_total {s['bytes_total']}, sent_bytes {s['sent_bytes']} ({mib(s['sent_bytes'])}), reused_bytes {s['reused_bytes']}, "
          f"snapshot {s['snapshot']} parent {s['parent'] or '-'}")
    if run in expect and (s["files_new"], s["files_changed"], s["files_unchanged"]) != expect[run]:
        problems.append(f"dupla {run}: new/changed/unchanged = {s['files_new']}/{s['files_changed']}/{s['files_unchanged']}, expected {expect[run]}")
    if s["files_failed"]:
        problems.append(f"dupla {run}: {s['files_failed']} files failed")
    t, s = load(f"restic-{run}.time"), load(f"restic-{run}.sum")
    packed = s.get("data_added_packed")
    print(f"restic {run:9} wall {t['wall']:.2f} s (its own: {s['total_duration']:.2f} s), cpu {t['cpu']:.2f} s, "
          f"peak RSS {t['maxrss_kib'] // 1024} MiB; new {s['files_new']} changed {s['files_changed']} "
          f"unmodified {s['files_unmodified']}, data_added {s['data_added']} ({mib(s['data_added'])}), "
          f"data_added_packed {packed if packed is not None else 'n/a (not in this restic)'}, "
          f"blobs {s['data_blobs']} data + {s['tree_blobs']} tree")
for run in ["first", "unchanged", "edited"]:
    print(f"stored after {run}: dupla servers {open(os.path.join(m, f'dupla-{run}.stored')).read().strip()} B (two copies), "
          f"restic repository {open(os.path.join(m, f'restic-{run}.repo')).read().strip()} B")
print(f"manager VmHWM: {int(rss_start) // 1024} MiB after start and login, {int(rss_runs) // 1024} MiB after the three runs, "
      f"{int(rss_end) // 1024} MiB after the small-file run; servers VmHWM (MiB): {servers_hwm.strip()}")

d = {r: (load(f"dupla-{r}.time"), load(f"dupla-{r}.sum")) for r in ["first", "unchanged", "edited", "small"]}
r = {k: (load(f"restic-{k}.time"), load(f"restic-{k}.sum")) for k in ["first", "unchanged", "edited", "small"]}
if d["unchanged"][1]["sent_bytes"] != 0:
    problems.append(f"dupla unchanged run sent {d['unchanged'][1]['sent_bytes']} bytes (expected 0)")
if d["edited"][1]["sent_bytes"] > 8 << 20:
    problems.append(f"dupla edited run sent {mib(d['edited'][1]['sent_bytes'])} (goal: at most 8 MiB)")
small_fps = 1000 / d["small"][0]["wall"]

print(f"\n== Markdown ({machine})\n")
print("| run | Dupla wall | Dupla sent (`sent_bytes`) | restic wall | restic added (`data_added`) |")
print("|---|---|---|---|---|")
names = {"first": "1. first backup (1,004 files, 540 MB)", "unchanged": "2. unchanged rerun",
         "edited": "3. after edits (+1 MiB append, 1-byte insert, 10 small rewritten)",
         "small": "1,000 small files alone, first backup"}
for k in ["first", "unchanged", "edited", "small"]:
    dt, ds = d[k]; rt, rs = r[k]
    extra = f" ({1000 / dt['wall']:.0f} files/s)" if k == "small" else ""
    rextra = f" ({1000 / rt['wall']:.0f} files/s)" if k == "small" else ""
    print(f"| {names[k]} | {dt['wall']:.2f} s{extra} | {mib(ds['sent_bytes'])} | {rt['wall']:.2f} s{rextra} | {mib(rs['data_added'])} |")
print(f"\nManager peak RSS (VmHWM): {int(rss_start) // 1024} MiB at start, {int(rss_runs) // 1024} MiB after the three runs, "
      f"{int(rss_end) // 1024} MiB at the end.")
print("\n== goals")
print(f"unchanged run sends no file data: {'yes' if d['unchanged'][1]['sent_bytes'] == 0 else 'NO'}; "
      f"takes no longer than restic's: {'yes' if d['unchanged'][0]['wall'] <= r['unchanged'][0]['wall'] else 'NO'} "
      f"({d['unchanged'][0]['wall']:.2f} s vs {r['unchanged'][0]['wall']:.2f} s)")
print(f"edited run sends at most 8 MiB: {'yes' if d['edited'][1]['sent_bytes'] <= 8 << 20 else 'NO'} ({mib(d['edited'][1]['sent_bytes'])})")
print(f"first run of the 1,000 small files at least 300 files/s: {'yes' if small_fps >= 300 else 'NO'} ({small_fps:.0f} files/s)")
for p in problems:
    print("UNEXPECTED:", p)
EOF
}

# ---------------------------------------------------------------- many
run_many() {
  say "== machine: $(machine)"
  local n rows=()
  for n in "${counts[@]}"; do
    say "== $n tiny files: fresh cluster"
    start_cluster
    account "many$n"
    local rss0 tree="many-$n"
    rss0="$(vm "$manager_pid" VmHWM)"
    gen_many "$root/$tree" "$n"
    say "   $(count_files "$root/$tree") files, $(du -sb "$root/$tree" | cut -f1) bytes"
    local ok=1
    measure "many$n-backup" "$bin/dupla" --manager "$manager_addr" --root "$root" --json backup "$tree" || ok=0
    local rss1 listed=NA listed_json=NA restored=NA same=NA
    rss1="$(vm "$manager_pid" VmHWM)"
    if [ "$ok" = 1 ]; then
      last_json "many$n-backup" files_unchanged "$work/m/many$n-backup.sum"
      local id
      id="$(jget "$work/m/many$n-backup.sum" snapshot)"
      if measure "many$n-ls" "$bin/dupla" --manager "$manager_addr" --root "$root" ls; then
        listed=$(( $(wc -l <"$work/m/many$n-ls.out") - 1 ))  # less the header
      fi
      if measure "many$n-lsjson" "$bin/dupla" --manager "$manager_addr" --root "$root" --json ls; then
        listed_json="$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)))' "$work/m/many$n-lsjson.out")"
      fi
      if measure "many$n-restore" "$bin/dupla" --manager "$manager_addr" --root "$root" --json \
          restore --snapshot "$id" --target "restored-$n"; then
        restored="$(count_files "$root/restored-$n")"
        local src dst
        src="$(tree_digest "$root/$tree")"
        dst="$(tree_digest "$root/restored-$n/$tree" 2>/dev/null || echo missing)"
        [ "$src" = "$dst" ] && same=yes || same=no
      fi
    fi
    local rss2
    rss2="$(vm "$manager_pid" VmHWM)"
    # restic on the same tree, for scale.
    export RESTIC_CACHE_DIR="$work/restic-cache"
    restic init --repo "$work/restic-many$n" >/dev/null
    measure "many$n-restic" restic --repo "$work/restic-many$n" backup --json "$root/$tree" || true
    measure "many$n-restic-restore" restic --repo "$work/restic-many$n" restore latest --target "$work/restic-restored-$n" || true
    local rrestored
    rrestored="$(count_files "$work/restic-restored-$n" 2>/dev/null || echo NA)"
    rows+=("$(python3 - "$work/m" "$n" "$listed" "$listed_json" "$restored" "$same" "$rss0" "$rss1" "$rss2" "$rrestored" <<'EOF'
import json, os, sys
m, n, listed, listed_json, restored, same, rss0, rss1, rss2, rrestored = sys.argv[1:11]
def t(label):
    p = os.path.join(m, f"many{n}-{label}.time")
    if not os.path.exists(p):
        return "-"
    j = json.load(open(p))
    return f"{j['wall']:.1f} s" if j["rc"] == 0 else f"failed (rc {j['rc']}, {j['wall']:.0f} s)"
s = {}
p = os.path.join(m, f"many{n}-backup.sum")
if os.path.exists(p):
    s = json.load(open(p))
bt = json.load(open(os.path.join(m, f"many{n}-backup.time")))
fps = f"{int(n) / bt['wall']:.0f}" if bt["rc"] == 0 else "-"
print(json.dumps({"n": int(n), "backup": t("backup"), "files_per_s": fps, "files_new": s.get("files_new"),
    "files_failed": s.get("files_failed"), "sent_bytes": s.get("sent_bytes"), "ls": t("ls"), "ls_lines": listed,
    "lsjson": t("lsjson"), "lsjson_entries": listed_json, "restore": t("restore"), "restored_files": restored,
    "identical": same, "rss_kib": [int(rss0), int(rss1), int(rss2)], "restic_backup": t("restic"),
    "restic_restore": t("restic-restore"), "restic_restored_files": rrestored}))
EOF
)")
    say "   ${rows[-1]}"
    stop_cluster
    rm -rf "$root/$tree" "$root/restored-$n" "$work/restic-restored-$n" "$work/restic-many$n"
  done
  printf '%s\n' "${rows[@]}" >"$work/m/many.jsonl"
  python3 - "$work/m/many.jsonl" "$(machine)" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n== raw numbers")
for r in rows:
    print(json.dumps(r))
print(f"\n== Markdown ({sys.argv[2]})\n")
print("| files | Dupla backup | files/s | `dupla ls` | `ls` lines / `--json` entries | restore | restored files, identical | manager VmHWM start → after backup → after ls+restore | restic backup / restore |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    a, b, c = (x // 1024 for x in r["rss_kib"])
    print(f"| {r['n']:,} | {r['backup']} | {r['files_per_s']} | {r['ls']} | {r['ls_lines']} / {r['lsjson_entries']} | {r['restore']} | "
          f"{r['restored_files']}, {r['identical']} | {a} → {b} → {c} MiB | {r['restic_backup']} / {r['restic_restore']} |")
for r in rows:
    for k in ["ls_lines", "lsjson_entries", "restored_files"]:
        if str(r[k]) != str(r["n"]):
            print(f"UNEXPECTED: {r['n']} files: {k} = {r[k]}")
    if r["identical"] != "yes":
        print(f"UNEXPECTED: {r['n']} files: restored tree identical = {r['identical']}")
EOF
}

if [ "$mode" = mixed ]; then run_mixed; else run_many; fi
