"""Probe: the chat model's batch in this process, 16 greedy rows on the base model alone against 16 spread over the
base model and the adapters, alternating rounds: what the per-row LoRA costs, without HTTP, Celery or Redis."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.defaults import CHAT_MODEL_DIR, story_messages


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec``: ``adapters`` (id -> folder), ``rows``, ``tokens``, ``rounds``. The end of the answer is banned
    (``logit_bias``): every row generates ``tokens``."""
    from models.batch import Ticket
    from models.handlers import load_handler
    from models.handlers.base import ServingLimits

    rows, tokens = spec["rows"], spec["tokens"]
    handler = load_handler("lm", Path(CHAT_MODEL_DIR), 2048, ServingLimits(max_sequences=rows, prompt_cache_entries=0))
    for adapter_id, folder in spec["adapters"].items():
        handler.load_adapter({"adapter_id": adapter_id, "source": folder})
    names = [None, *spec["adapters"]]
    bias = {str(token): -100 for token in handler.tokenizer.eos_token_ids}

    def batch(spread: bool, tag: str) -> dict[str, float]:
        tickets = []
        for row in range(rows):
            payload = {"messages": story_messages(f"{tag}-{row}"), "max_tokens": tokens, "temperature": 0}
            payload["logit_bias"] = bias
            adapter = names[row % len(names)] if spread else None
            if adapter is not None:
                payload["adapter"] = adapter
            tickets.append(Ticket("chat", payload, lambda _e: None, lambda: False, lambda: False, Future(), tag))
        started = time.perf_counter()
        for ticket in tickets:
            handler.batch.submit(ticket)
        while handler.batch.busy:
            handler.batch.step()
        seconds = time.perf_counter() - started
        generated = sum(t.future.result()["usage"]["completion_tokens"] for t in tickets)
        return {"tokens": generated, "seconds": seconds, "tps": generated / seconds}

    batch(True, "warm-up")
    rounds = [{"base": batch(False, f"b{n}"), "mixed": batch(True, f"m{n}")} for n in range(spec["rounds"])]
    return {"rounds": rounds}
