#!/usr/bin/env bash
# Legion's benchmark, all in one command, with its reference points measured in the same run:
#
#   1. builds the release binaries (control plane, executor, legion-bench, legion CLI);
#   2. makes a random admin API key (the control plane's auth.bootstrap_admin_key; legion-bench sends it
#      with --api-key), dev certificates (`legion certs init`, plus a second node certificate signed by
#      the same CA with `legion certs node`), a fresh database `legion_bench` and a fresh vhost
#      `legion-bench`;
#   3. starts a control plane (gRPC 127.0.0.1:54051, admin 54064) and ONE executor (admin 54065), runs
#      legion-bench; starts a SECOND executor (admin 54066), runs legion-bench again;
#   4. stops Legion, then measures the broker ceiling (/work/shared/bench/broker-limit, built in a copy
#      under /tmp) and the Celery peer (bench/celery-peer/run.sh);
#   5. prints every figure and the ratios, and stops everything it started (also on failure or Ctrl-C).
#
# Usage: bench/run.sh
# Environment (defaults in brackets):
#   BENCH_TASKS [10000]              tasks per Legion round
#   BENCH_CONCURRENCY [256]          SubmitTask calls in flight
#   BENCH_CONNECTIONS [1]            HTTP/2 connections of legion-bench
#   BENCH_WARMUP [500]               unmeasured warm-up tasks before each Legion round
#   BENCH_EXECUTOR_CONCURRENCY [256] task slots per executor (executor.concurrency; default 16)
#   BENCH_CELERY_TASKS [10000]       tasks of the Celery round (4 prefork processes)
#   BENCH_BROKER_LIMIT_DIR [/work/shared/bench/broker-limit]
#   BENCH_WORK_DIR [/tmp/legion-bench]  certificates, settings, logs and results.jsonl
#   CELERY_VENV [/tmp/celery-venv]   Celery's virtualenv (created when missing)
#   BENCH_REFERENCES [1]             0 skips the broker ceiling and the Celery peer
#   BENCH_PROFILE [release]          cargo profile; `dev` only to smoke-test this script (figures are
#                                    meaningless in a debug build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tasks=${BENCH_TASKS:-10000}
concurrency=${BENCH_CONCURRENCY:-256}
connections=${BENCH_CONNECTIONS:-1}
warmup=${BENCH_WARMUP:-500}
exec_concurrency=${BENCH_EXECUTOR_CONCURRENCY:-256}
celery_tasks=${BENCH_CELERY_TASKS:-10000}
profile=${BENCH_PROFILE:-release}
references=${BENCH_REFERENCES:-1}
broker_limit_src=${BENCH_BROKER_LIMIT_DIR:-/work/shared/bench/broker-limit}
work=${BENCH_WORK_DIR:-/tmp/legion-bench}
db=legion_bench
vhost=legion-bench
cp_port=54051
cp_admin=54064
ex_admin=(54065 54066)
ex_name=(bench-exec-1 bench-exec-2)
# The control plane's bootstrap admin key (auth.bootstrap_admin_key, at least 32 characters), made fresh
# for each run (the database is recreated too) and passed to legion-bench with --api-key.
api_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

case "$work" in /tmp/?* | /var/tmp/?* | "$HOME"/?*) ;; *) echo "bench/run.sh: BENCH_WORK_DIR must be under /tmp, /var/tmp or \$HOME (it is deleted and recreated)" >&2; exit 64 ;; esac

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }

# Waits up to 60 s until RabbitMQ and PostgreSQL accept connections (on a shared machine another
# session's tests may restart RabbitMQ for a moment).
wait_services() {
  for _ in $(seq 1 120); do
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
    sleep 0.5
  done
  die "RabbitMQ (127.0.0.1:5672) or PostgreSQL (127.0.0.1:5432) does not answer"
}

pids=()
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "bench/run.sh: pid $pid did not stop in 15 s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
  local i
  # Executors first (they drain), then the control plane.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- 1. build ----------------------------------------------------------------------------------------
log "building the binaries (profile $profile)"
cd "$root"
cargo build --profile "$profile" -p legion-control-plane -p legion-executor -p legion-bench -p legion-cli
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
case "$profile" in dev) bin="$target/debug" ;; *) bin="$target/$profile" ;; esac
for b in legion-control-plane legion-executor legion-bench legion; do
  [ -x "$bin/$b" ] || die "missing $bin/$b after the build"
done

# --- 2. certificates, database, vhost, settings ------------------------------------------------------
log "preparing $work (certificates, database $db, vhost $vhost)"
wait_services
rm -rf "$work"
mkdir -p "$work/logs"
"$bin/legion" certs init "$work/certs" --executor-name "${ex_name[0]}" >/dev/null
"$bin/legion" certs node "$work/certs" --name "${ex_name[1]}" >/dev/null
cp "$work/certs/executor.pem" "$work/certs/node-${ex_name[0]}.pem"
cp "$work/certs/executor-key.pem" "$work/certs/node-${ex_name[0]}-key.pem"

PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -qX -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null

common_settings() {
  jq -n --arg db "postgres://postgres@127.0.0.1:5432/$db" \
    --arg amqp "amqp://guest:guest@127.0.0.1:5672/$vhost" \
    --arg url "https://localhost:$cp_port" --arg listen "127.0.0.1:$cp_port" --arg admin "127.0.0.1:$cp_admin" \
    --arg ca "$work/certs/ca.pem" \
    '{data: {url: $db}, transport: {url: $amqp},
      control_plane: {url: $url, listen: $listen, admin_listen: $admin},
      tls: {ca: $ca}, logging: {level: "info"}}'
}
common_settings | jq --arg cert "$work/certs/control-plane.pem" --arg key "$work/certs/control-plane-key.pem" \
  --arg api_key "$api_key" '.tls.cert = $cert | .tls.key = $key | .auth.bootstrap_admin_key = $api_key' \
  >"$work/control-plane.json"
for i in 0 1; do
  common_settings | jq --arg cert "$work/certs/node-${ex_name[$i]}.pem" --arg key "$work/certs/node-${ex_name[$i]}-key.pem" \
    --arg name "${ex_name[$i]}" --arg admin "127.0.0.1:${ex_admin[$i]}" --argjson conc "$exec_concurrency" \
    '.tls.cert = $cert | .tls.key = $key
     | .executor = {name: $name, admin_listen: $admin, concurrency: $conc}' \
    >"$work/${ex_name[$i]}.json"
done

# Processes run in $work so that no ./settings directory of the caller is picked up.
start() { # name, binary, settings file
  (cd "$work" && exec "$bin/$2" --settings "$3" >"$work/logs/$1.log" 2>&1) &
  pids+=("$!")
  cpu_args+=(--cpu "$1=$!")
  echo "started $1 (pid $!, log $work/logs/$1.log)" >&2
}
wait_ready() { # name, admin port, pid
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { tail -n 40 "$work/logs/$1.log" >&2; die "$1 exited during startup"; }
    sleep 0.1
  done
  tail -n 40 "$work/logs/$1.log" >&2
  die "$1 not ready after 60 s"
}

results="$work/results.jsonl"
# CPU time per process during each round (PostgreSQL and RabbitMQ: every process of the cluster).
cpu_args=(--cpu postgres=comm:postgres --cpu rabbitmq=comm:beam.smp)
bench() { # label, executors
  "$bin/legion-bench" --control-plane "https://localhost:$cp_port" --ca "$work/certs/ca.pem" \
    --api-key "$api_key" --database-url "postgres://postgres@127.0.0.1:5432/$db" \
    --executors "$2" --tasks "$tasks" --concurrency "$concurrency" --connections "$connections" \
    --warmup "$warmup" --label "$1" --json-out "$results" "${cpu_args[@]}"
}

# --- 3. Legion: one executor, then two -----------------------------------------------------------------
log "starting the control plane"
start control-plane legion-control-plane "$work/control-plane.json"
wait_ready control-plane "$cp_admin" "${pids[-1]}"
log "starting executor ${ex_name[0]}"
start "${ex_name[0]}" legion-executor "$work/${ex_name[0]}.json"
wait_ready "${ex_name[0]}" "${ex_admin[0]}" "${pids[-1]}"
log "legion, 1 executor: $tasks x core.util.noop"
bench legion-1-executor 1 || die "the 1-executor round failed (see above and $work/logs)"

log "starting executor ${ex_name[1]}"
start "${ex_name[1]}" legion-executor "$work/${ex_name[1]}.json"
wait_ready "${ex_name[1]}" "${ex_admin[1]}" "${pids[-1]}"
log "legion, 2 executors: $tasks x core.util.noop"
bench legion-2-executors 2 || die "the 2-executor round failed (see above and $work/logs)"

log "stopping legion before the reference points"
stop_all

# --- 4. reference points ---------------------------------------------------------------------------------
broker_line='{"bench":"broker-limit","round_per_s":null}'
celery_line='{"bench":"celery","label":"celery-peer","e2e_per_s":null,"ok":true}'
if [ "$references" != 0 ]; then
  log "broker ceiling (broker-limit, its own workspace built in a copy under /tmp)"
  bl=/tmp/legion-bench-broker-limit
  mkdir -p "$bl"
  cp -r "$broker_limit_src/." "$bl/"
  chmod -R u+w "$bl"
  (cd "$bl" && cargo build --release -q)
  broker_out=
  for attempt in 1 2 3; do
    wait_services
    broker_out=$("$bl/target/release/broker-limit" "amqp://guest:guest@127.0.0.1:5672/%2f" 50000 300 512 64) && break
    echo "bench/run.sh: broker-limit attempt $attempt failed" >&2
    sleep 5
  done
  echo "$broker_out"
  broker_round=$(sed -n 's/.*round=\([0-9.]*\) msgs\/s.*/\1/p' <<<"$broker_out")
  broker_publish=$(sed -n 's/.*publish_confirmed=\([0-9.]*\)\/s.*/\1/p' <<<"$broker_out")
  [ -n "$broker_round" ] || die "cannot read broker-limit's output: $broker_out"
  broker_line=$(jq -cn --argjson r "$broker_round" --argjson p "${broker_publish:-null}" \
    '{bench: "broker-limit", messages: 50000, size: 300, window: 512, prefetch: 64, publish_confirmed_per_s: $p, round_per_s: $r}')
  echo "$broker_line" >>"$results"

  log "celery peer: $celery_tasks x noop, 4 prefork processes"
  wait_services
  celery_out=$("$root/bench/celery-peer/run.sh" "$celery_tasks" 4) || die "the celery round failed"
  echo "$celery_out"
  celery_line=$(grep '^{' <<<"$celery_out" | tail -n 1)
  echo "$celery_line" >>"$results"
fi

# --- 5. summary ------------------------------------------------------------------------------------------
l1=$(grep '"label":"legion-1-executor"' "$results" | tail -n 1)
l2=$(grep '"label":"legion-2-executors"' "$results" | tail -n 1)
row() { # JSON line, display name
  jq -r --arg name "$2" 'def n(d): if type == "number" then (. * pow(10; d) | round / pow(10; d) | tostring) else "-" end;
    [$name, (.e2e_per_s | n(0)), (.submit_per_s | n(0)), (.submit_to_finish_ms.p50_ms | n(1)),
     (.submit_to_finish_ms.p99_ms | n(1)), (.pg_commits_per_task | n(2))] | @tsv' <<<"$1"
}
ratio() { # a, b: a/b, or - when either is missing
  jq -rn --argjson a "$1" --argjson b "$2" \
    'if ($a | type) == "number" and ($b | type) == "number" and $b > 0 then ($a / $b * 100 | round / 100) else "-" end'
}
e1=$(jq '.e2e_per_s' <<<"$l1")
e2=$(jq '.e2e_per_s' <<<"$l2")
ec=$(jq '.e2e_per_s' <<<"$celery_line")
eb=$(jq '.round_per_s' <<<"$broker_line")

log "summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, everything on one host)"
{
  printf 'run\te2e tasks/s\tsubmit/s\tp50 finish ms\tp99 finish ms\tcommits/task\n'
  row "$l1" "legion, 1 executor"
  row "$l2" "legion, 2 executors"
  row "$celery_line" "celery 5.7, postgres results, 4 procs"
  jq -r '["broker ceiling (confirm + ack, msgs/s)", (.round_per_s // "-" | tostring), (.publish_confirmed_per_s // "-" | tostring), "-", "-", "-"] | @tsv' <<<"$broker_line"
} | column -t -s $'\t'
echo
echo "ratios (end to end):"
echo "  legion 1 executor / celery           $(ratio "$e1" "$ec")"
echo "  legion 2 executors / celery          $(ratio "$e2" "$ec")"
echo "  legion 2 executors / 1 executor      $(ratio "$e2" "$e1")"
echo "  legion 1 executor / broker ceiling   $(ratio "$e1" "$eb")"
echo "  legion 2 executors / broker ceiling  $(ratio "$e2" "$eb")"
echo
echo "JSON lines: $results; logs: $work/logs"
for line in "$l1" "$l2" "$celery_line"; do
  [ "$(jq -r '.ok' <<<"$line")" = "true" ] || die "a round did not succeed in full: $line"
done
