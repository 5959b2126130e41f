"""Section: time to first token of a long prompt (~1,500 tokens) computed cold, then again with its prefix cached."""

from __future__ import annotations

import statistics
import traceback
import uuid

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.report import SectionResult, Table
from bench.targets import TARGETS, Skip

NAME = "prefix"
TITLE = "Prompt cache: a long shared prefix"
SERVERS = ("platform", "mlx-lm")
CLAUSE = "Section {n}: the archive keeps every record in the order it arrived and answers questions about it."


def document(nonce: str, sentences: int) -> str:
    """A long system prompt, unique per run (its first words), so that no earlier request has cached it."""
    return f"Archive {nonce}. " + " ".join(CLAUSE.format(n=n) for n in range(1, sentences + 1))


def run(context: BenchContext) -> SectionResult:
    options = context.options
    result = SectionResult(NAME, TITLE)
    sentences = 8 if options.quick else 75
    runs = 1 if options.quick else 3
    table = Table(
        f"a system prompt of {sentences} sentences, then a question; greedy, 8 tokens; median of {runs} run(s)",
        ["server", "prompt tokens", "TTFT cold s", "TTFT cached s", "speed-up", "cached tokens reported"],
    )
    counter = TokenCounter()
    for server in SERVERS:
        label, start = TARGETS[server]
        try:
            with start(context) as target:
                client = make_client(target.base_url)
                cold, warm, prompt_tokens, cached = [], [], 0, []
                for index in range(runs):
                    system = {"role": "system", "content": document(uuid.uuid4().hex[:8], sentences)}
                    with progress.ticking(f"{label}: run {index + 1} of {runs}"):
                        first = stream_chat(
                            client,
                            target.model,
                            [system, {"role": "user", "content": "Who keeps records?"}],
                            8,
                            counter,
                        )
                        second = stream_chat(
                            client, target.model, [system, {"role": "user", "content": "What comes first?"}], 8, counter
                        )
                    if not (first.ok and second.ok):
                        raise RuntimeError(first.error or second.error)
                    cold.append(first.ttft_s)
                    warm.append(second.ttft_s)
                    prompt_tokens = counter.count(system["content"])
                    cached.append(second.cached_tokens)
        except Skip as exc:
            result.notes.append(f"{label}: skipped ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - one server failing must not lose the other's figures
            traceback.print_exc()
            result.notes.append(f"{label}: failed ({type(exc).__name__}: {exc})")
            continue
        cold_s, warm_s = statistics.median(cold), statistics.median(warm)
        reported = "–" if any(c is None for c in cached) else str(int(statistics.median(cached)))
        table.rows.append([label, prompt_tokens, cold_s, warm_s, f"{cold_s / warm_s:.1f}x", reported])
        progress.say(f"{label}: TTFT cold {cold_s:.2f}s, cached {warm_s:.2f}s")
    result.tables.append(table)
    result.notes.append("prompt tokens: the system prompt's own tokens (the chat template adds a few)")
    return result
