"""Section: a model worker far from Redis. 32 greedy streams through a stack of its own, once with the chat worker
connected to Redis directly and once through a proxy that delays every byte 1 ms each way (a node on another
machine): the engine's per-token Redis traffic goes through the worker's relay, so the step should not slow.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, LOGS_DIR
from bench.report import SectionResult, Table
from bench.stack import STACK_ENV
from models.liveness import Liveness
from tests.stack import Stack, free_port, wait_until

NAME = "redis_latency"
TITLE = "32 streams with the model worker 1 ms from Redis"
DELAY_SECONDS = 0.001
STREAMS = 32


class DelayProxy:
    """A TCP proxy on loopback that delivers every chunk ``delay`` seconds after it arrived, in order, each way."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay, self.port = target_port, delay, free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="delay-proxy", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(reader, upstream_writer), self._pump(upstream_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        while chunk := await reader.read(65536):
            queue.put_nowait((time.monotonic() + self.delay, chunk))
        queue.put_nowait((0.0, b""))
        await delivering

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


def _ping_ms(url: str) -> float:
    """Median round trip of a PING to ``url``: what the proxy adds."""
    client = redis.Redis.from_url(url)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def _aggregate(base_url: str, max_tokens: int, counter: TokenCounter) -> tuple[float, int, int]:
    """Tokens per second of ``STREAMS`` streams at once, their tokens and how many failed."""
    client = make_client(base_url)

    def one(number: int):
        messages = [{"role": "user", "content": f"Write a long story about lighthouse keeper number {number}."}]
        return stream_chat(client, CHAT_MODEL, messages, max_tokens, counter)

    started = time.perf_counter()
    with ThreadPoolExecutor(STREAMS) as pool:
        timings = list(pool.map(one, range(STREAMS)))
    wall = time.perf_counter() - started
    tokens = sum(t.tokens or 0 for t in timings if t.ok)
    return tokens / wall, tokens, sum(not t.ok for t in timings)


def run(context: BenchContext) -> SectionResult:
    result = SectionResult(NAME, TITLE)
    max_tokens = context.options.concurrency_tokens
    workdir = LOGS_DIR / f"{NAME}-{int(time.time())}"
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir, dict(STACK_ENV))
    counter = TokenCounter()
    rows = []
    try:
        stack.start_redis()
        stack.start_mongo()
        client = redis.Redis.from_url(stack.env["REDIS_URL"])
        _web, base_url = stack.start_web("latency-web")
        redis_port = int(stack.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        proxy = DelayProxy(redis_port, DELAY_SECONDS)
        for label, url in (
            ("direct", stack.env["REDIS_URL"]),
            (f"+{DELAY_SECONDS * 1000:g} ms each way", f"redis://127.0.0.1:{proxy.port}/0"),
        ):
            progress.say(f"a chat worker batching {STREAMS}, Redis {label}")
            ping_ms = _ping_ms(url)
            worker = stack.start_worker(CHAT_MODEL, f"latency-worker-{len(rows)}", {"REDIS_URL": url})
            wait_until(lambda: Liveness(client, 10).workers(CHAT_MODEL), 300, "the chat worker", worker.process)
            _aggregate(base_url, 4, counter)  # warms the batch shapes
            tok_s, tokens, failed = _aggregate(base_url, max_tokens, counter)
            rows.append([label, round(ping_ms, 2), round(tok_s, 1), tokens, failed])
            worker.stop()
            wait_until(lambda: not Liveness(client, 10).workers(CHAT_MODEL), 60, "the worker to leave")
        proxy.close()
    finally:
        stack.stop_all()
    ratio = rows[1][2] / rows[0][2] if len(rows) == 2 and rows[0][2] else None
    result.tables.append(
        Table(
            f"{STREAMS} greedy streams of {max_tokens} tokens at once, one chat worker (MAX_CONCURRENCY=32)",
            ["worker to Redis", "PING round trip ms", "aggregate tok/s", "tokens", "failed"],
            rows,
        )
    )
    result.notes.append(f"with the delay: {ratio:.0%} of the direct throughput" if ratio else "no ratio")
    result.raw = {"rows": rows, "ratio": ratio, "delay_seconds": DELAY_SECONDS}
    return result
