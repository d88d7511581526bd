#!/usr/bin/env bash
# Legion end to end on one machine: builds the binaries, creates development certificates and a fresh
# database, starts the control plane, an executor and the gateway against the local PostgreSQL and
# RabbitMQ, serves a small local HTTP site, submits an `http.request.get` against it (over REST) and a
# `core.util.echo` (over gRPC with the CLI), prints both results, fires a schedule every second three
# times and lists its fire history, and stops everything it started.
#
# Every call is authenticated: the script makes a random admin API key, gives it to the control plane as
# `auth.bootstrap_admin_key` (in .legion-demo/control-plane.json, mode 600) and sends it with each REST
# call (`X-API-Key`) and CLI call (`--api-key`); it prints the key at the end. The key stays valid in
# the legion_demo database until the next run of this script recreates it.
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), RabbitMQ on 127.0.0.1:5672
# (guest/guest), curl, python3. Uses ports 50051 (gRPC), 9464/9465 (admin), 4567 (REST), 8099 (demo site).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work="$root/.legion-demo"
db=legion_demo
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for() { # URL what
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "demo: $2 did not become ready ($1); logs are in $work/*.log" >&2
  exit 1
}

echo "==> building"
cargo build --quiet -p legion-control-plane -p legion-executor -p legion-gateway -p legion-cli --bins
bin="$root/target/debug"

rm -rf "$work" && mkdir -p "$work/site"
# 48 hex characters (192 random bits); the control plane wants at least 32 characters.
api_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ "${#api_key}" -eq 48 ] || { echo "demo: cannot read /dev/urandom for the admin API key" >&2; exit 1; }
echo "==> certificates in $work/certs"
"$bin/legion" certs init "$work/certs" >/dev/null

echo "==> fresh database $db"
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"

cat >"$work/common.json" <<JSON
{
  "data": {"url": "postgres://postgres@127.0.0.1:5432/$db"},
  "transport": {"url": "amqp://guest:guest@127.0.0.1:5672/%2f"},
  "control_plane": {"listen": "127.0.0.1:50051", "admin_listen": "127.0.0.1:9464", "url": "https://localhost:50051"},
  "executor": {"name": "executor", "admin_listen": "127.0.0.1:9465", "concurrency": 8, "spool_dir": "$work/spool"},
  "api": {"listen": "127.0.0.1:4567"},
  "tls": {"ca": "$work/certs/ca.pem"}
}
JSON
for p in executor gateway; do
  printf '{"tls": {"cert": "%s", "key": "%s"}}\n' "$work/certs/$p.pem" "$work/certs/$p-key.pem" >"$work/$p.json"
done
# Only the control plane gets the key, in a file only its owner can read.
(umask 077 && printf '{"tls": {"cert": "%s", "key": "%s"}, "auth": {"bootstrap_admin_key": "%s"}}\n' \
  "$work/certs/control-plane.pem" "$work/certs/control-plane-key.pem" "$api_key" >"$work/control-plane.json")

echo "==> starting legion-control-plane (migrates the database), legion-executor, legion-gateway"
"$bin/legion-control-plane" --settings "$work/common.json" --settings "$work/control-plane.json" 2>"$work/control-plane.log" &
pids+=($!)
wait_for http://127.0.0.1:9464/readyz "control plane"
"$bin/legion-executor" --settings "$work/common.json" --settings "$work/executor.json" 2>"$work/executor.log" &
pids+=($!)
wait_for http://127.0.0.1:9465/readyz "executor"
"$bin/legion-gateway" --settings "$work/common.json" --settings "$work/gateway.json" 2>"$work/gateway.log" &
pids+=($!)
wait_for http://127.0.0.1:4567/readyz "gateway"

echo '{"service": "demo", "healthy": true}' >"$work/site/status.json"
python3 -m http.server 8099 --bind 127.0.0.1 --directory "$work/site" >/dev/null 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:8099/status.json "demo site"

echo "==> REST: POST /api/v1/tasks http.request.get http://127.0.0.1:8099/status.json"
id=$(curl -fsS -X POST http://127.0.0.1:4567/api/v1/tasks -H 'content-type: application/json' -H "x-api-key: $api_key" \
  -d '{"function": "http.request.get", "args": {"url": "http://127.0.0.1:8099/status.json"}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1 100); do
  task=$(curl -fsS -H "x-api-key: $api_key" "http://127.0.0.1:4567/api/v1/tasks/$id")
  status=$(printf '%s' "$task" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  case "$status" in succeeded|failed|timed_out|cancelled|dead_lettered) break ;; esac
  sleep 0.1
done
printf '%s' "$task" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(json.dumps({k: t[k] for k in ("id","function","status","result","error")}, indent=2))'

echo "==> gRPC (legion CLI): core.util.echo"
"$bin/legion" --settings "$work/common.json" --api-key "$api_key" \
  task submit core.util.echo --args '{"message": "hello from legion"}' --wait

echo "==> schedule (legion CLI): core.util.echo every second, its slot in the args (jq), three fires"
"$bin/legion" --settings "$work/common.json" --api-key "$api_key" schedule add demo-heartbeat \
  --function core.util.echo --every 1s --transformation '{"engine": "jq", "expr": "{slot: .schedule.slot}"}' >/dev/null
for _ in $(seq 1 100); do
  fires=$(curl -fsS -H "x-api-key: $api_key" "http://127.0.0.1:4567/api/v1/schedules/demo-heartbeat/fires")
  done_fires=$(printf '%s' "$fires" | python3 -c 'import json,sys; print(sum(f["status"] == "succeeded" for f in json.load(sys.stdin)["fires"]))')
  [ "$done_fires" -ge 3 ] && break
  sleep 0.1
done
"$bin/legion" --settings "$work/common.json" --api-key "$api_key" schedule fires demo-heartbeat --limit 3
"$bin/legion" --settings "$work/common.json" --api-key "$api_key" schedule delete demo-heartbeat

echo "==> done; stopping"
cat <<EOF
==> admin API key of this demo (policy admin): $api_key
It stays valid in the $db database until the next run of this script. To go on, start the processes
again as this script does (settings in $work/), then for example:
  key=<the key above>
  $bin/legion --settings $work/common.json --api-key "\$key" task list
  curl -H "x-api-key: \$key" http://127.0.0.1:4567/api/v1/tasks
EOF
