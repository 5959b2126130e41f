"""Section: the OpenAI Batch API against streaming clients, and interactive users beside a running batch.

On a stack of its own (Redis, the Mongo-wire server, the web, a control worker and one chat worker batching 32):
the same ``--lines`` greedy chat requests of 64 tokens sent by 32 concurrent streaming clients, then as one batch
(wall time and generated tok/s side by side); then 8 interactive streaming clients alone, and again while a batch
of ``--batch-lines`` lines runs on the same model (time to first token p50/p95), twice: with the batch's lines
keeping every row they hold while interactive requests run (``BACKGROUND_ROWS_BESIDE_INTERACTIVE`` = the batch
size: a line gives way only when the batch is full), and with the default (4 rows); with a chart of the batch's
lines completed over time and each interactive request's TTFT on the same time axis.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import openai
import redis
from PIL import Image, ImageDraw, ImageFont

from bench import progress
from bench.chart import nice_ceiling
from bench.client import RequestTiming, TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, LOGS_DIR, ROOT
from bench.environment import cpu_model
from bench.options import Options
from bench.report import SectionResult, Table
from bench.stack import STACK_ENV
from bench.stats import percentile
from config.settings import Settings
from models.liveness import Liveness
from tests.stack import PYTHON, Service, Stack, wait_until

NAME = "batch"
TITLE = "The Batch API, and interactive users beside a batch"
CHART = ROOT / "docs" / "batch-timeline.png"
"""Where the chart is copied for the docs (it is drawn into the results folder, beside the others)."""
TOPICS = ("a lighthouse", "a red fox", "the moon", "a lost key", "an old train", "a river", "a baker", "a storm")
POLL_SECONDS = 0.5


def messages(index: int) -> list[dict[str, str]]:
    """A unique prompt per request (no prompt cache helps), about the same length for all."""
    return [{"role": "user", "content": f"Request {index}. Write a long story about {TOPICS[index % len(TOPICS)]}."}]


@dataclass
class BatchRun:
    """What one batch did: its wall time from creation to completion, tokens, and lines completed over time."""

    lines: int
    wall_s: float = 0.0
    tokens: int = 0
    failed: int = 0
    started: float = 0.0
    progress: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since ``started``, lines completed) as polled."""


def _jsonl(count: int, max_tokens: int, offset: int) -> bytes:
    lines = []
    for index in range(offset, offset + count):
        body = {"model": CHAT_MODEL, "messages": messages(index), "max_tokens": max_tokens, "temperature": 0}
        lines.append({"custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return "\n".join(json.dumps(line) for line in lines).encode()


def start_batch(client: openai.OpenAI, count: int, max_tokens: int, offset: int) -> tuple[str, BatchRun]:
    uploaded = client.files.create(file=("lines.jsonl", _jsonl(count, max_tokens, offset)), purpose="batch")
    run = BatchRun(count, started=time.perf_counter())
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    return batch.id, run


def follow_batch(client: openai.OpenAI, batch_id: str, run: BatchRun, what: str) -> BatchRun:
    """Polls the batch until it ends, noting lines completed over time; then counts its output's tokens."""
    last_said = 0.0
    while True:
        batch = client.batches.retrieve(batch_id)
        done = batch.request_counts.completed + batch.request_counts.failed if batch.request_counts else 0
        now = time.perf_counter() - run.started
        run.progress.append((now, done))
        if now - last_said >= 10:
            progress.say(f"{what}: {done}/{run.lines} lines ({batch.status}) after {now:.0f}s")
            last_said = now
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            break
        time.sleep(POLL_SECONDS)
    run.wall_s = time.perf_counter() - run.started
    if batch.output_file_id:
        for line in client.files.content(batch.output_file_id).text.splitlines():
            body = (json.loads(line).get("response") or {}).get("body") or {}
            run.tokens += (body.get("usage") or {}).get("completion_tokens", 0)
    run.failed = batch.request_counts.failed if batch.request_counts else 0
    return run


def streaming_clients(base_url: str, clients: int, total: int, max_tokens: int, offset: int) -> list[RequestTiming]:
    """``total`` requests from ``clients`` concurrent streaming clients, each taking the next request when done."""
    client, counter = make_client(base_url), TokenCounter()
    indices = iter(range(offset, offset + total))
    lock = threading.Lock()
    timings: list[RequestTiming] = []

    def one_client() -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            timing = stream_chat(client, CHAT_MODEL, messages(index), max_tokens, counter)
            with lock:
                timings.append(timing)

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(one_client)
    return timings


def _ttft_row(label: str, timings: list[RequestTiming]) -> list[object]:
    ttfts = [t.ttft_s for t in timings if t.ok and t.ttft_s is not None]
    return [label, len(timings), sum(not t.ok for t in timings), percentile(ttfts, 50), percentile(ttfts, 95)]


@dataclass
class Beside:
    """The interactive clients while a batch runs, the worker keeping ``background_rows`` rows of lines beside
    them."""

    label: str
    background_rows: int
    batch: BatchRun
    timings: list[RequestTiming]


def start_chat_worker(stack: Stack, client: redis.Redis, background_rows: int | None) -> Service:
    """The chat worker; ``background_rows``: its ``BACKGROUND_ROWS_BESIDE_INTERACTIVE`` (None: the default)."""
    extra = {"BACKGROUND_ROWS_BESIDE_INTERACTIVE": str(background_rows)} if background_rows is not None else {}
    name = f"batch-chat-worker-{background_rows if background_rows is not None else 'default'}"
    argv = [PYTHON, "-m", "tasks.model_worker", "--model-id", CHAT_MODEL]
    worker = stack.start(name, argv, extra)
    wait_until(lambda: Liveness(client, 10).workers(CHAT_MODEL), 300, "the chat worker", worker.process)
    return worker


def beside_a_batch(base_url: str, label: str, background_rows: int, options: Options, offset: int) -> Beside:
    """A batch of ``batch_ttft_lines`` lines, and the interactive clients once its first line is done; the batch
    is cancelled once they are done (its running lines finish), so its tok/s is the batch's beside them."""
    client = make_client(base_url)
    clients, per_client = options.interactive_clients, options.interactive_requests
    progress.say(f"a batch of {options.batch_ttft_lines} lines and {clients} interactive clients beside it ({label})")
    batch_id, run = start_batch(client, options.batch_ttft_lines, options.batch_tokens, offset)
    follower = threading.Thread(target=follow_batch, args=(client, batch_id, run, f"batch ({label})"))
    follower.start()
    wait_until(lambda: run.progress and run.progress[-1][1] >= 1, 900, "the batch's first line")
    timings = streaming_clients(base_url, clients, clients * per_client, options.batch_tokens, offset + 10**6)
    if run.progress[-1][1] < run.lines:
        client.batches.cancel(batch_id)  # what the batch does once the clients are gone is not measured here
    follower.join()
    return Beside(label, background_rows, run, timings)


def run(context: BenchContext) -> SectionResult:
    options = context.options
    lines, batch_lines, max_tokens = options.batch_lines, options.batch_ttft_lines, options.batch_tokens
    interactive, per_client = options.interactive_clients, options.interactive_requests
    batch_size = int(STACK_ENV["MAX_CONCURRENCY"])
    default_rows = Settings().background_rows_beside_interactive
    result = SectionResult(NAME, TITLE)
    workdir = LOGS_DIR / f"{NAME}-{int(time.time())}"
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir, dict(STACK_ENV))
    besides: list[Beside] = []
    try:
        progress.say(f"a stack of its own (logs: {workdir})")
        stack.start_redis()
        stack.start_mongo()
        client_redis = redis.Redis.from_url(stack.env["REDIS_URL"])
        worker = start_chat_worker(stack, client_redis, None)
        _web, base_url = stack.start_web("batch-web")
        stack.start_control("batch-control")
        client = make_client(base_url)
        streaming_clients(base_url, 8, 8, 8, 10**7)  # warms the batch shapes

        progress.say(f"{lines} requests from {options.batch_clients} streaming clients")
        started = time.perf_counter()
        streamed = streaming_clients(base_url, options.batch_clients, lines, max_tokens, 0)
        streamed_wall = time.perf_counter() - started
        streamed_tokens = sum(t.tokens for t in streamed if t.ok)

        progress.say(f"the same {lines} requests as one batch")
        batch_id, alone = start_batch(client, lines, max_tokens, 0)
        follow_batch(client, batch_id, alone, "batch alone")

        progress.say(f"{interactive} interactive streaming clients alone, {per_client} requests each")
        quiet = streaming_clients(base_url, interactive, interactive * per_client, max_tokens, 2 * 10**6)

        for rows, offset in ((batch_size, 3 * 10**6), (default_rows, 5 * 10**6)):
            worker.stop()
            wait_until(lambda: not Liveness(client_redis, 10).workers(CHAT_MODEL), 60, "the worker to leave")
            worker = start_chat_worker(stack, client_redis, rows)
            streaming_clients(base_url, 8, 8, 8, 10**7 + offset)  # warms the new worker's batch shapes
            label = f"keeping {rows} rows of lines beside interactive requests"
            besides.append(beside_a_batch(base_url, label, rows, options, offset))
    finally:
        stack.stop_all()

    def tps(tokens: int, wall: float) -> float:
        return tokens / wall if wall else 0.0

    streamed_tps, alone_tps = tps(streamed_tokens, streamed_wall), tps(alone.tokens, alone.wall_s)
    result.tables.append(
        Table(
            f"{lines} greedy chat requests of {max_tokens} tokens, one chat worker batching 32",
            ["sent as", "wall s", "generated tokens", "aggregate tok/s", "failed"],
            [
                [f"{options.batch_clients} streaming clients", streamed_wall, streamed_tokens, streamed_tps]
                + [sum(not t.ok for t in streamed)],
                ["one batch (Batch API)", alone.wall_s, alone.tokens, alone_tps, alone.failed],
            ],
        )
    )
    quiet_row = _ttft_row("alone", quiet)
    rows = [quiet_row]
    for beside in besides:
        row = _ttft_row(f"beside a {batch_lines}-line batch {beside.label}", beside.timings)
        ratio = row[4] / quiet_row[4] if row[4] and quiet_row[4] else None
        rows.append(row + [ratio, beside.batch.wall_s, tps(beside.batch.tokens, beside.batch.wall_s)])
        result.notes.append(
            f"{beside.label}: TTFT p95 beside the batch {ratio:.2f}x alone (goal ≤ 1.5x)" if ratio else ""
        )
    quiet_row += [1.0, None, None]
    result.tables.append(
        Table(
            f"{interactive} interactive streaming clients, {per_client} requests each of {max_tokens} tokens",
            ["interactive clients", "requests", "failed", "TTFT p50 s", "TTFT p95 s", "p95 / alone"]
            + ["batch wall s", "batch tok/s"],
            rows,
        )
    )
    share = alone_tps / streamed_tps if streamed_tps else None
    result.notes.append(f"the batch alone: {share:.0%} of the streaming clients' tok/s (goal ≥ 90 %)" if share else "")
    chart = draw_timeline(besides, quiet_row[4], max_tokens, context.out_dir / CHART.name)
    shutil.copyfile(chart, CHART)
    result.charts.append(str(chart))
    result.raw = {
        "streamed": {"wall_s": streamed_wall, "tokens": streamed_tokens},
        "batch_alone": {"wall_s": alone.wall_s, "tokens": alone.tokens, "progress": alone.progress},
        "ttft_alone_s": [t.ttft_s for t in quiet],
        "beside": [
            {
                "label": b.label,
                "background_rows": b.background_rows,
                "batch_wall_s": b.batch.wall_s,
                "batch_tokens": b.batch.tokens,
                "progress": b.batch.progress,
                "ttft": [(t.started - b.batch.started, t.ttft_s) for t in b.timings],
            }
            for b in besides
        ],
        "batch_share": share,
    }
    return result


SERIES = (("#1f77b4", "#d62728", "blue line, red dots"), ("#2ca02c", "#ff7f0e", "green line, orange dots"))
"""Per run beside a batch: the colour of its batch's progress, and of its interactive TTFTs."""


def draw_timeline(besides: list[Beside], alone_p95: float | None, tokens: int, path: Path) -> Path:
    """Per run: the batch's lines completed over time (left axis) and each interactive request's TTFT at the moment
    it was sent (right axis, dots); the TTFT p95 of the clients alone as a dashed line."""
    width, height, left, right, top, bottom = 900, 500, 70, 70, 70, 80
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, title_font = ImageFont.load_default(13), ImageFont.load_default(15)
    points_of = [[(t.started - b.batch.started, t.ttft_s) for t in b.timings if t.ok and t.ttft_s] for b in besides]
    x_max = nice_ceiling(max([*(b.batch.wall_s for b in besides), *(t for p in points_of for t, _ in p)], default=1))
    lines_max = nice_ceiling(max([done for b in besides for _, done in b.batch.progress], default=1))
    ttft_max = nice_ceiling(max([*(v for p in points_of for _, v in p), alone_p95 or 0.0], default=1.0))
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(seconds: float) -> float:
        return left + plot_w * seconds / x_max

    def y_of(value: float, top_value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="#888888")
    for i in range(6):
        x = left + plot_w * i / 5
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill="#888888")
        draw.text((x, top + plot_h + 8), f"{x_max * i / 5:g}", fill="black", font=font, anchor="ma")
        y = top + plot_h * (1 - i / 5)
        draw.line([left, y, left + plot_w, y], fill="#eeeeee")
        draw.text((left - 6, y), f"{lines_max * i / 5:g}", fill="black", font=font, anchor="rm")
        draw.text((left + plot_w + 6, y), f"{ttft_max * i / 5:.2g}", fill="black", font=font, anchor="lm")
    axis = "seconds since the batch was created"
    draw.text((left + plot_w / 2, top + plot_h + 34), axis, fill="black", font=font, anchor="mm")
    draw.text((4, top - 10), "lines completed (lines)", fill="black", font=font, anchor="ls")
    draw.text((width - 4, top - 10), "TTFT s (dots)", fill="black", font=font, anchor="rs")
    size = besides[0].batch.lines if besides else 0
    title = f"Batches of {size} lines ({tokens} tokens a line), interactive clients beside"
    draw.text((width / 2, 10), title, fill="black", font=title_font, anchor="mt")
    for index, (beside, points) in enumerate(zip(besides, points_of, strict=True)):
        progress_colour, ttft_colour, colours = SERIES[index % len(SERIES)]
        draw.text(
            (width / 2, 32 + 16 * index),
            f"{beside.background_rows} rows of lines beside interactive ones: batch progress, TTFTs ({colours})",
            fill=progress_colour,
            font=font,
            anchor="mt",
        )
        line = [(x_of(t), y_of(done, lines_max)) for t, done in beside.batch.progress]
        if len(line) > 1:
            draw.line(line, fill=progress_colour, width=2)
        for t, value in points:
            x, y = x_of(t), y_of(value, ttft_max)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=ttft_colour)
    if alone_p95:
        y = y_of(alone_p95, ttft_max)
        for x in range(left, left + plot_w, 12):
            draw.line([x, y, min(x + 6, left + plot_w), y], fill="#555555")
        draw.text((left + plot_w - 4, y - 4), "TTFT p95 of the clients alone", fill="#555555", font=font, anchor="rb")
    footer = f"{time.strftime('%Y-%m-%d')}; {CHAT_MODEL}; {cpu_model()}"
    draw.text((4, height - 4), footer, fill="#555555", font=font, anchor="lb")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
