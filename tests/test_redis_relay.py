"""A model worker's per-token Redis traffic (``tasks.redis_relay``) against a real redis-server paused with
SIGSTOP: the engine side never waits, nothing is lost, doubled or reordered, and cancel checks answer from the
last poll while Redis is paused."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tasks.redis_relay import RedisRelay
from tasks.replies import ReplyChannel
from tests.stack import Stack, wait_until


@pytest.fixture()
def paused_redis(tmp_path: Path) -> Iterator[tuple[redis.Redis, int]]:
    stack = Stack(tmp_path, {})
    service = stack.start_redis()
    client = redis.Redis.from_url(stack.env["REDIS_URL"], socket_timeout=1, socket_connect_timeout=1)
    wait_until(client.ping, 20, "redis-server")
    try:
        yield client, service.process.pid
    finally:
        os.kill(service.process.pid, signal.SIGCONT)
        stack.stop_all()


def test_events_written_while_redis_is_paused_arrive_once_in_order(paused_redis):
    client, pid = paused_redis
    relay = RedisRelay(client).start()
    channel = ReplyChannel(client, "relay-test", relay=relay)
    published = threading.Event()

    def engine_side() -> None:
        for number in range(2000):
            channel.publish({"type": "delta", "n": number})
        published.set()

    os.kill(pid, signal.SIGSTOP)
    try:
        threading.Thread(target=engine_side, daemon=True).start()
        # Redis stays stopped until this test continues it: every publish must return without it.
        assert published.wait(30), "publishing waited on a paused Redis"
        assert not relay.write(lambda pipe: pipe.ping(), wait_seconds=1.5), "Redis answered while stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    channel.publish({"type": "done"}, wait_seconds=30)
    relay.stop()
    everything = [json.loads(fields[b"event"]) for _id, fields in client.xrange(channel.stream_key)]
    assert [event.get("n") for event in everything[:-1]] == list(range(2000))
    assert everything[-1] == {"type": "done"}
    assert relay.failures >= 1, "the writer met the paused Redis (its socket timeout) and tried again"


def test_cancel_flags_are_answered_without_redis_and_seen_once_set(paused_redis):
    client, pid = paused_redis
    relay = RedisRelay(client, poll_seconds=0.02).start()
    with ReplyChannel(client, "cancel-test", relay=relay) as channel:
        assert not channel.cancelled()
        os.kill(pid, signal.SIGSTOP)
        try:
            assert not channel.cancelled()  # answered from the last poll, without Redis
        finally:
            os.kill(pid, signal.SIGCONT)
        ReplyChannel(client, "cancel-test").cancel()
        wait_until(channel.cancelled, 20, "the relay to see the cancel flag")
    relay.stop()
