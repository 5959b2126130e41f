"""What the Redis broker holds for a queue: the messages waiting (per priority) and those taken but not acknowledged.

Kombu keeps a queue with priorities as one Redis list per priority step
(``queue``, ``queue:1`` ... ``queue:9``) and the messages a worker has taken in
the ``unacked`` hash until it acknowledges them. How many wait is kombu's own
count (``message_count`` of a passive declare, summed over those lists). Which
jobs wait is an index kept beside them (``WAITING_JOBS_KEY``), never read from
the message bodies: a queue of transcription jobs holds megabytes each.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import ChannelError

PRIORITY_STEPS = range(10)
SEPARATOR = ":"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
WAITING_JOBS_KEY = "mlxf:waiting-jobs"
"""Job id -> queue, for every job message sent and not yet taken by a worker. Written after the message (a crash
between leaves a message the index lacks: the reconciler sends it again, and a job runs once however many
messages it has) and in the same Redis, so a Redis that loses its lists loses this too."""


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``, highest priority first."""
    return [queue if step == 0 else f"{queue}{SEPARATOR}{step}" for step in PRIORITY_STEPS]


def waiting_count(app: Celery, queue: str) -> int:
    """Messages waiting in ``queue``, every priority counted, as kombu sees them; 0 when the broker has none.

    Kombu's Redis transport sums the lengths of the queue's priority lists
    (``broker_transport_options``' ``priority_steps`` and ``sep``); a queue with
    no list left (never used, or emptied) is ``NOT_FOUND`` to a passive declare.
    """
    with app.pool.acquire(block=True) as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:
            return 0


def _task_id(raw: bytes | str) -> str | None:
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # an ``unacked`` entry: [message, exchange, routing_key]
        message = message[0] if message else {}
    return ((message or {}).get("headers") or {}).get("id")


def sent(client: redis.Redis, job_id: str, queue: str) -> None:
    client.hset(WAITING_JOBS_KEY, job_id, queue)


def taken(client: redis.Redis, job_id: str) -> None:
    """A worker has the job's message (whatever it then does with it)."""
    client.hdel(WAITING_JOBS_KEY, job_id)


def waiting_jobs(client: redis.Redis) -> dict[str, str]:
    """Job id -> queue of the job messages sent and not yet taken (ids only: no message body is read)."""
    return {_text(job_id): _text(queue) for job_id, queue in client.hgetall(WAITING_JOBS_KEY).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages in ``queue``'s lists, every priority (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(pipe.execute())


def unacked(client: redis.Redis) -> dict[str, tuple[str, float]]:
    """Task id -> (delivery tag, time it was handed to a worker) of every message taken but not acknowledged."""
    entries = client.hgetall(UNACKED_KEY)
    if not entries:
        return {}
    tags = list(entries)
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.zscore(UNACKED_INDEX_KEY, tag)
    delivered = pipe.execute()
    held: dict[str, tuple[str, float]] = {}
    for tag, at in zip(tags, delivered, strict=True):
        task_id = _task_id(entries[tag])
        if task_id:
            held[task_id] = (tag.decode() if isinstance(tag, bytes) else tag, float(at or 0.0))
    return held


def drop_unacked(client: redis.Redis, tag: str) -> None:
    """Forgets a message taken by a worker that died: it is sent again instead of restored an hour later."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(UNACKED_KEY, tag)
    pipe.zrem(UNACKED_INDEX_KEY, tag)
    pipe.execute()
