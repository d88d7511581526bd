"""Celery peer of Legion's benchmark: the same work (a no-op task) with the same guarantees.

Durable queue and persistent messages on the same RabbitMQ, late acks (a message is acked only after
the task ran, so a killed worker's task is redelivered: at-least-once, like Legion), prefetch 1 per
worker process, and every result stored in PostgreSQL through Celery's SQLAlchemy result backend.

Settings come from the environment (defaults in brackets):
  CELERY_PEER_BROKER   broker URL [amqp://guest:guest@127.0.0.1:5672/legion-bench]
  CELERY_PEER_BACKEND  result backend [db+postgresql+psycopg2://postgres@127.0.0.1/legion_celery]
  CELERY_PEER_QUEUE    queue name [legion-celery-peer]
  CELERY_PEER_READY    file touched when the worker is ready to consume (optional)
"""

import os
import pathlib

from celery import Celery
from celery.signals import worker_ready

BROKER = os.environ.get("CELERY_PEER_BROKER", "amqp://guest:guest@127.0.0.1:5672/legion-bench")
BACKEND = os.environ.get("CELERY_PEER_BACKEND", "db+postgresql+psycopg2://postgres@127.0.0.1/legion_celery")
QUEUE = os.environ.get("CELERY_PEER_QUEUE", "legion-celery-peer")

app = Celery("legion_celery_peer", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_delivery_mode="persistent",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=False,
    broker_connection_retry_on_startup=True,
    # Keep results for the whole run; the run drops its database afterwards.
    result_expires=None,
    database_create_tables_at_setup=True,
)


@app.task(name="peer.noop", acks_late=True)
def noop():
    """Does nothing, like Legion's core.util.noop; its result (None) is stored all the same."""
    return None


@worker_ready.connect
def _mark_ready(**_kwargs):
    ready = os.environ.get("CELERY_PEER_READY")
    if ready:
        pathlib.Path(ready).touch()
