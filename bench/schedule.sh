#!/usr/bin/env bash
# Legion's schedule benchmark in one command (see bench/README.md, "Schedules due at once"):
#
#   1. builds the release binaries (control plane, executor, legion-bench, legion CLI);
#   2. makes a random admin API key (auth.bootstrap_admin_key), dev certificates, a fresh database
#      `legion_bench_schedule` and a fresh vhost `legion-bench-schedule`;
#   3. starts a control plane (gRPC 127.0.0.1:54151, admin 54164) and one executor (admin 54165), and
#      runs `legion-bench schedule` with the arguments given to this script;
#   4. stops everything it started (also on failure or Ctrl-C).
#
# Usage: bench/schedule.sh [legion-bench schedule flags, e.g. --schedules 10000 --lead-s 60]
# Environment (defaults in brackets):
#   BENCH_EXECUTOR_CONCURRENCY [256]   task slots of the executor
#   BENCH_WORK_DIR [/tmp/legion-bench-schedule]  certificates, settings, logs and results.jsonl
#   BENCH_PROFILE [release]            cargo profile; `dev` only to smoke-test this script
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
exec_concurrency=${BENCH_EXECUTOR_CONCURRENCY:-256}
profile=${BENCH_PROFILE:-release}
work=${BENCH_WORK_DIR:-/tmp/legion-bench-schedule}
db=legion_bench_schedule
vhost=legion-bench-schedule
cp_port=54151
cp_admin=54164
ex_admin=54165
ex_name=bench-exec-1
api_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

case "$work" in /tmp/?* | /var/tmp/?* | "$HOME"/?*) ;; *) echo "bench/schedule.sh: BENCH_WORK_DIR must be under /tmp, /var/tmp or \$HOME (it is deleted and recreated)" >&2; exit 64 ;; esac

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench/schedule.sh: $*" >&2; exit 1; }

pids=()
stop_all() {
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

log "building the binaries (profile $profile)"
cd "$root"
cargo build --profile "$profile" -p legion-control-plane -p legion-executor -p legion-bench -p legion-cli
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
case "$profile" in dev) bin="$target/debug" ;; *) bin="$target/$profile" ;; esac

log "preparing $work (certificates, database $db, vhost $vhost)"
rm -rf "$work"
mkdir -p "$work/logs"
"$bin/legion" certs init "$work/certs" --executor-name "$ex_name" >/dev/null
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -qX -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null

common='{data: {url: $db}, transport: {url: $amqp}, control_plane: {url: $url, listen: $listen, admin_listen: $admin},
         tls: {ca: $ca}, logging: {level: "info"}}'
settings() { # extra jq filter, extra args...
  local filter=$1
  shift
  jq -n --arg db "postgres://postgres@127.0.0.1:5432/$db" --arg amqp "amqp://guest:guest@127.0.0.1:5672/$vhost" \
    --arg url "https://localhost:$cp_port" --arg listen "127.0.0.1:$cp_port" --arg admin "127.0.0.1:$cp_admin" \
    --arg ca "$work/certs/ca.pem" "$@" "$common | $filter"
}
settings '.tls.cert = $cert | .tls.key = $key | .auth.bootstrap_admin_key = $k' \
  --arg cert "$work/certs/control-plane.pem" --arg key "$work/certs/control-plane-key.pem" --arg k "$api_key" \
  >"$work/control-plane.json"
settings '.tls.cert = $cert | .tls.key = $key | .executor = {name: $name, admin_listen: $exadmin, concurrency: $conc}' \
  --arg cert "$work/certs/executor.pem" --arg key "$work/certs/executor-key.pem" --arg name "$ex_name" \
  --arg exadmin "127.0.0.1:$ex_admin" --argjson conc "$exec_concurrency" >"$work/$ex_name.json"

start() { # name, binary, settings file, admin port
  (cd "$work" && exec "$bin/$2" --settings "$3" >"$work/logs/$1.log" 2>&1) &
  pids+=("$!")
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$4/readyz" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 40 "$work/logs/$1.log" >&2; die "$1 exited during startup"; }
    sleep 0.1
  done
  tail -n 40 "$work/logs/$1.log" >&2
  die "$1 not ready after 60 s"
}
log "starting the control plane and the executor"
start control-plane legion-control-plane "$work/control-plane.json" "$cp_admin"
start "$ex_name" legion-executor "$work/$ex_name.json" "$ex_admin"

log "legion-bench schedule $*"
"$bin/legion-bench" schedule --control-plane "https://localhost:$cp_port" --ca "$work/certs/ca.pem" \
  --api-key "$api_key" --database-url "postgres://postgres@127.0.0.1:5432/$db" --executors 1 \
  --json-out "$work/results.jsonl" "$@"
