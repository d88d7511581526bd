#!/usr/bin/env bash
# Celery peer of Legion's benchmark: N no-op tasks run by a Celery worker with CONC prefork processes,
# on the same RabbitMQ (vhost legion-bench) with results in the same PostgreSQL (database
# legion_celery, recreated on each run). Prints a table and one JSON line ({"bench":"celery",...}).
#
# Usage: bench/celery-peer/run.sh [N=10000] [CONC=4]
# Environment: CELERY_VENV (virtualenv, created if missing; default /tmp/celery-venv),
#              CELERY_PEER_BROKER / CELERY_PEER_BACKEND to use another broker or database (then this
#              script creates neither the vhost nor the database).
set -euo pipefail

N=${1:-10000}
CONC=${2:-4}
case "$N$CONC" in *[!0-9]*) echo "usage: $0 [N] [CONC] (positive integers)" >&2; exit 64 ;; esac
[ "$N" -ge 1 ] && [ "$CONC" -ge 1 ] || { echo "usage: $0 [N] [CONC] (positive integers)" >&2; exit 64; }

here=$(cd "$(dirname "$0")" && pwd)
venv=${CELERY_VENV:-/tmp/celery-venv}
vhost=legion-bench
queue=${CELERY_PEER_QUEUE:-legion-celery-peer}

log() { echo "celery-peer: $*" >&2; }

if ! "$venv/bin/python" -c 'import celery, sqlalchemy, psycopg2, psycopg' 2>/dev/null; then
  log "installing celery into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "celery>=5.7,<5.8" sqlalchemy "psycopg[binary]" psycopg2-binary
fi
log "$("$venv/bin/celery" --version | head -n 1 | sed 's/^/celery /')"

if [ -z "${CELERY_PEER_BROKER:-}" ]; then
  rabbitmqctl -q add_vhost "$vhost" >/dev/null 2>&1 || true
  rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
  rabbitmqctl -q purge_queue -p "$vhost" "$queue" >/dev/null 2>&1 || true
fi
if [ -z "${CELERY_PEER_BACKEND:-}" ]; then
  PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -qX -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS legion_celery WITH (FORCE)" -c "CREATE DATABASE legion_celery" >/dev/null
fi

work=$(mktemp -d /tmp/legion-celery-peer.XXXXXX)
worker=
# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() {
  if [ -n "$worker" ] && kill -0 "$worker" 2>/dev/null; then
    kill -TERM "$worker" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$worker" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$here"
export CELERY_PEER_QUEUE="$queue"
export PYTHONDONTWRITEBYTECODE=1 # keep the source tree clean
CELERY_PEER_READY="$work/ready" "$venv/bin/celery" -A peer_tasks worker --pool prefork --concurrency "$CONC" \
  --prefetch-multiplier 1 --without-gossip --without-mingle --loglevel WARNING \
  --hostname "legion-celery-peer-$$@%h" >"$work/worker.log" 2>&1 &
worker=$!
for _ in $(seq 1 600); do
  [ -e "$work/ready" ] && break
  kill -0 "$worker" 2>/dev/null || { log "worker exited:"; cat "$work/worker.log" >&2; exit 1; }
  sleep 0.1
done
[ -e "$work/ready" ] || { log "worker not ready after 60 s:"; tail -n 30 "$work/worker.log" >&2; exit 1; }
log "worker ready ($CONC prefork processes); submitting $N tasks"

status=0
"$venv/bin/python" drive.py "$N" || status=$?
if [ "$status" -ne 0 ]; then
  log "drive.py exited $status; worker log tail:"
  tail -n 30 "$work/worker.log" >&2
fi
exit "$status"
