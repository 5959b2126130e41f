"""The platform's batch engine in this process with its KV cache at full precision, 8 bits and 4 bits: bytes per
token, greedy agreement with full precision, tok/s on one stream and several with a long prompt."""

from __future__ import annotations

import json
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from bench import progress
from bench.defaults import ROOT

QUESTIONS = ROOT / "bench" / "data" / "rag_questions.jsonl"
LONG_TEXT = (
    "The shell reads its input from a file, from a string supplied as an argument, or from the user's terminal. "
    "It breaks the input into words and operators, parses them into simple and compound commands, performs the "
    "expansions, redirections and function calls, waits for the command to complete and collects its exit status. "
)


def _questions(count: int) -> list[str]:
    lines = QUESTIONS.read_text().splitlines()[:count]
    return [f"Answer in one sentence: {json.loads(line)['question']}" for line in lines]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "bits": [null, 8, 4], "prompts", "max_tokens", "streams", "long_tokens", "rate_tokens",
    "context_tokens", "budget_gb"}``: per bits, the cache's bytes per token (as the budget counts them and as
    allocated after a real prompt), the greedy answers to ``prompts`` questions (compared with full precision's),
    and tok/s with a prompt of about ``long_tokens`` tokens, per number of streams."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from models.batch import _cache_bytes
    from models.handlers import load_handler
    from models.handlers.base import ServingLimits
    from models.prompt_disk import common_prefix

    questions = _questions(spec["prompts"])
    most = max(spec["streams"])
    counter = iter(range(10**6))
    rows: list[dict[str, Any]] = []
    answers: dict[Any, list[list[int]]] = {}
    for bits in spec["bits"]:
        limits = ServingLimits(max_sequences=most, prompt_cache_entries=0, draft_tokens=0, kv_bits=bits)
        handler = load_handler("lm", Path(spec["path"]), 8192, limits)
        batch, tokenizer = handler.batch, handler.tokenizer

        prompt = tokenizer.encode((LONG_TEXT * 200)[: spec["long_tokens"] * 5])[: spec["long_tokens"]]
        cache = make_prompt_cache(handler.model)
        handler.model(mx.array([prompt]), cache=cache)
        mx.eval([layer.state for layer in cache])
        measured = _cache_bytes(cache) / (-(-len(prompt) // 256) * 256)  # allocated 256 tokens at a time

        generate(batch, [[{"role": "user", "content": "Hello"}]], 4)  # warm-up
        tokens: list[list[int]] = []
        for start in range(0, len(questions), most):
            asked = [[{"role": "user", "content": q}] for q in questions[start : start + most]]
            done, _, _ = generate(batch, asked, spec["max_tokens"])
            tokens += [tokenizer.encode(r["content"], add_special_tokens=False) for r in done]
        answers[bits] = tokens
        reference = answers[spec["bits"][0]]
        same = sum(a == b for a, b in zip(tokens, reference, strict=True))
        kept = [
            common_prefix(np.asarray(a), np.asarray(b)) / max(len(b), 1) for a, b in zip(tokens, reference, strict=True)
        ]

        long_text = tokenizer.decode(prompt)
        speeds, firsts = {}, {}
        for streams in spec["streams"]:
            messages = [[{"role": "user", "content": f"({next(counter)}) {long_text}\nSummarise."}]] * streams
            done, prefill, decode = generate(batch, messages, spec["rate_tokens"])
            speeds[streams] = (sum(r["usage"]["completion_tokens"] for r in done) - streams) / decode
            firsts[streams] = prefill
        per_token = batch.kv_bytes_per_token
        row = {
            "bits": bits,
            "bytes_per_token": per_token,
            "measured_bytes_per_token": measured,
            "identical_answers": same,
            "answers": len(tokens),
            "matching_prefix_share": sum(kept) / len(kept),
            "decode_tps": speeds,
            "all_first_tokens_s": firsts,
            "rows_in_budget": int(spec["budget_gb"] * 1e9 // (per_token * spec["context_tokens"])),
        }
        rows.append(row)
        progress.say(
            f"kv_bits {bits or 'none'}: {per_token} B/token, {same}/{len(tokens)} answers as full precision, "
            + ", ".join(f"{s} stream(s) {v:.1f} tok/s" for s, v in speeds.items())
        )
    return {"rows": rows, "long_prompt_tokens": len(prompt)}


def generate(
    batch: Any, messages: list[list[dict[str, str]]], max_tokens: int
) -> tuple[list[dict[str, Any]], float, float]:
    """Greedy answers of ``batch`` (a ``BatchSession``) to ``messages``, the seconds until every stream had its
    first token, and the seconds after that."""
    from models.batch import Ticket

    firsts: list[float] = []

    def first_token(event: dict[str, Any], seen: list[bool]) -> None:
        if event.get("type") == "delta" and not seen:
            seen.append(True)
            firsts.append(time.perf_counter())

    tickets = []
    for m in messages:
        seen: list[bool] = []
        tickets.append(
            Ticket(
                "chat",
                {"messages": m, "max_tokens": max_tokens, "temperature": 0, "stream": True},
                lambda event, seen=seen: first_token(event, seen),
                lambda: False,
                lambda: False,
                Future(),
                "bench",
            )
        )
    started = time.perf_counter()
    for ticket in tickets:
        batch.submit(ticket)
    while batch.busy:
        batch.step()
    ended = time.perf_counter()
    all_started = max(firsts, default=ended)
    return [t.future.result() for t in tickets], all_started - started, ended - all_started
