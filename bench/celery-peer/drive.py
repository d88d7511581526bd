"""Submits N no-op tasks to the Celery peer and measures throughput and latency.

Usage: python drive.py N

Publishes N `peer.noop` tasks from this process (one connection, as fast as it can), then polls the
result table in PostgreSQL until N results are stored (no per-task result polling, which would add
load), and reads each result's `date_done`. End-to-end time is the first publish to the last
`date_done`, the same definition as legion-bench's (first submit to the last `finished_at`).

Prints a table and one JSON line ({"bench": "celery", ...}). Exit code 0 when every task succeeded.
"""

import json
import math
import os
import sys
import time
from datetime import datetime, timezone

import psycopg2

from peer_tasks import BACKEND, app, noop

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values):
    values = sorted(values)
    if not values:
        return None
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1],
        "mean_ms": sum(values) / len(values),
    }


def pg_dsn():
    # db+postgresql+psycopg2://user@host/db -> postgresql://user@host/db
    return "postgresql://" + BACKEND.split("://", 1)[1]


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        print("usage: drive.py N (N >= 1)", file=sys.stderr)
        return 64
    n = int(sys.argv[1])
    timeout_s = float(os.environ.get("CELERY_PEER_TIMEOUT_S", "900"))
    db = psycopg2.connect(pg_dsn())
    db.autocommit = True
    cur = db.cursor()

    sent = {}
    with app.producer_or_acquire() as producer:
        t0 = datetime.now(timezone.utc)
        started = time.monotonic()
        for _ in range(n):
            at = datetime.now(timezone.utc)
            result = noop.apply_async(producer=producer)
            sent[result.id] = at
        submit_s = time.monotonic() - started

    deadline = time.monotonic() + timeout_s
    last_log = time.monotonic()
    while True:
        cur.execute("SELECT count(*) FROM celery_taskmeta WHERE status = ANY(%s)", (list(TERMINAL),))
        done = cur.fetchone()[0]
        if done >= n or time.monotonic() > deadline:
            break
        if time.monotonic() - last_log > 2:
            print(f"celery-peer: {done}/{n} done", file=sys.stderr)
            last_log = time.monotonic()
        time.sleep(0.1)

    cur.execute("SELECT task_id, status, date_done FROM celery_taskmeta WHERE task_id = ANY(%s)", (list(sent),))
    rows = cur.fetchall()
    statuses = {}
    to_finish = []
    last_done = None
    for task_id, status, date_done in rows:
        statuses[status] = statuses.get(status, 0) + 1
        if date_done is not None:
            done_at = date_done.replace(tzinfo=timezone.utc)  # stored as naive UTC
            to_finish.append((done_at - sent[task_id]).total_seconds() * 1000)
            last_done = done_at if last_done is None or done_at > last_done else last_done
    missing = n - len(rows)
    if missing:
        statuses["missing"] = missing
    e2e_s = (last_done - t0).total_seconds() if last_done else None
    report = {
        "bench": "celery",
        "label": "celery-peer",
        "tasks": n,
        "submit_seconds": submit_s,
        "submit_per_s": n / submit_s if submit_s > 0 else 0,
        "e2e_seconds": e2e_s,
        "e2e_per_s": (len(to_finish) / e2e_s) if e2e_s else None,
        "submit_to_finish_ms": summary(to_finish),
        "statuses": statuses,
        "ok": statuses.get("SUCCESS", 0) == n,
    }
    fin = report["submit_to_finish_ms"] or {}
    print(f"celery-peer: {n} x peer.noop")
    print(f"  submit       {report['submit_per_s']:10.0f} tasks/s {submit_s:8.2f} s")
    if e2e_s:
        print(f"  end to end   {report['e2e_per_s']:10.0f} tasks/s {e2e_s:8.2f} s")
    if fin:
        print(f"  submit -> finish ms: p50 {fin['p50_ms']:.1f} p99 {fin['p99_ms']:.1f} max {fin['max_ms']:.1f}")
    print("  statuses: " + " ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
