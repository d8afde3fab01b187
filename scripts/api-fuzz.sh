#!/usr/bin/env bash
# Fuzz the HTTP API from its own OpenAPI documents (issue 11, "API bad
# input"): start a throwaway cluster (a manager and two storage servers,
# debug binaries, free ports, a temp directory, so a dev cluster from
# nodes/ keeps running), log in an admin, and run schemathesis against the
# manager's /api/openapi.json and a storage server's. It fails on any 5xx,
# a status code, header, content type or body the document does not
# describe, invalid input accepted, or a node that exits.
#
#   scripts/api-fuzz.sh             build (debug) if needed, then fuzz
#   FUZZ_EXAMPLES=N                 cases per operation and phase (default 40)
#   FUZZ_SEED=N                     reproduce a run (the seed is printed)
#   FUZZ_PHASES=...                 schemathesis phases (default: all four)
#   FUZZ_CHECKS=...                 schemathesis checks (default below)
#   FUZZ_KEEP=1                     keep the work directory (logs, reports)
#   SKIP_BUILD=1                    use target/debug as it is (CI builds first)
#
# Needs schemathesis 4 (`pip install 'schemathesis==4.32.5'`), curl, python3.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$top/target}/debug"
examples="${FUZZ_EXAMPLES:-40}"
seed="${FUZZ_SEED:-$RANDOM$RANDOM}"

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "api-fuzz: schemathesis is not installed (pip install 'schemathesis==4.32.5')" >&2
  exit 2
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$top" && cargo build --quiet --workspace --bins)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/dupla-api-fuzz.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${FUZZ_KEEP:-}" ]; then echo "api-fuzz: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Seven free loopback ports: manager gRPC + HTTP, two servers' gRPC + HTTP,
# the manager's embedded MQTT broker.
read -r m_grpc m_http s1_grpc s1_http s2_grpc s2_http broker < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
secret="fuzz-secret-$RANDOM$RANDOM"
password="fuzzing password $RANDOM"

# Admin accounts exist before the manager starts (the only way to make
# them), so the fuzzer reaches the admin routes too: one for the run, one
# for the destructive routes at the end.
mkdir -p "$work/manager"
for admin in fuzzadmin fuzzlast; do
  (cd "$work/manager" && printf '%s\n' "$password" | "$bin/dupla-manager" admin create "$admin" \
    --data data --secret "$secret" >/dev/null 2>>"$work/manager.log")
done
(cd "$work/manager" && exec "$bin/dupla-manager" --listen "127.0.0.1:$m_grpc" --http "127.0.0.1:$m_http" \
  --data data --secret "$secret" --broker-listen "127.0.0.1:$broker" >>"$work/manager.log" 2>&1) &
pids+=($!)
for n in 1 2; do
  grpc_var="s${n}_grpc" http_var="s${n}_http"
  mkdir -p "$work/server-$n"
  (cd "$work/server-$n" && exec "$bin/dupla-server" --listen "127.0.0.1:${!grpc_var}" \
    --http "127.0.0.1:${!http_var}" --manager "127.0.0.1:$m_grpc" --data data \
    --capacity 1GiB --secret "$secret" >"$work/server-$n.log" 2>&1) &
  pids+=($!)
done

manager="http://127.0.0.1:$m_http"
server="http://127.0.0.1:$s1_http"
up=0
for _ in $(seq 300); do
  up="$(curl -sf "$manager/api/cluster" 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(s["state"]=="up" for s in json.load(sys.stdin)["servers"]))' 2>/dev/null || echo 0)"
  [ "$up" = 2 ] && curl -sf "$server/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
if [ "$up" != 2 ]; then
  echo "api-fuzz: the cluster did not come up; logs:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
fi

login() { # login -> bearer token
  curl -sf "$manager/api/login" -H 'content-type: application/json' \
    -d "{\"login\":\"$1\",\"password\":\"$password\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
# Both tokens now: fuzzing /api/login with wrong passwords earns this
# address the login back-off, so a later login could be refused (429).
token="$(login fuzzadmin)"
last_token="$(login fuzzlast)"

# One small file, so downloads and details have something real to find.
target="$(curl -sf "$manager/api/uploads" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"fuzz.txt","size":5}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')"
id="$(curl -sf "$target/api/uploads" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"name":"fuzz.txt","size":5}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf -X PUT "$target/api/uploads/$id?offset=0" -H "authorization: Bearer $token" \
  --data-binary 'fuzz!' >/dev/null

checks="${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection}"
phases="${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}"
fuzz() { # name url token [schemathesis options...]
  local name="$1" url="$2" bearer="$3"
  shift 3
  echo "== schemathesis: $name ($url, seed $seed, $examples examples per operation)"
  # One worker: with two, hypothesis parses lambdas' source in two threads
  # at once and CPython 3.11 fails with "AST constructor recursion depth
  # mismatch" (an error in the fuzzer, not a finding).
  # From the work directory: schemathesis keeps its cache where it runs.
  (cd "$work" && schemathesis run "$url/api/openapi.json" \
    --checks "$checks" \
    --header "Authorization: Bearer $bearer" \
    --max-examples "$examples" --seed "$seed" \
    --phases "$phases" \
    --workers 1 --request-timeout 30 --no-color \
    --suppress-health-check all \
    --report junit --report-dir "$work/report-$name" \
    "$@")
}

status=0
# Three routes run last, with a token of their own (logout after the
# rest). Logout revokes the token, and deleting a user could delete the
# fuzzing admin itself (the fuzzer reuses logins from answers): either
# would end the run for every later case. A chat poll of a live session (the fuzzer reuses ids from
# POST /api/chat) waits 20 s for an event by design, which would spend the
# whole time budget waiting; with this token no session is open, so polls
# answer at once (tests/http_api.rs covers live polls).
fuzz manager "$manager" "$token" \
  --exclude-path /api/logout \
  --exclude-operation-id delete_user \
  --exclude-operation-id events || status=1
fuzz server "$server" "$token" || status=1
fuzz last "$manager" "$last_token" \
  --include-operation-id delete_user --include-operation-id events || status=1
fuzz logout "$manager" "$last_token" --include-path /api/logout || status=1

# A crashed node is a finding even if every answer looked right.
for pid in "${pids[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "api-fuzz: a node exited during the run; logs:" >&2
    tail -n 40 "$work"/*.log >&2
    status=1
  fi
done
if [ "$status" = 0 ]; then echo "api-fuzz: passed"; else echo "api-fuzz: FAILED (FUZZ_SEED=$seed reproduces)"; fi
exit "$status"
