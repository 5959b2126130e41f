"""Language models with mlx-lm: the chat template, the warm-up, and the batch every chat and completion runs in."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from mlx_lm import load as load_lm
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from config.errors import ApiError
from config.model_types import COUNT_TOKENS, WARMUP
from models.batch import BatchSession, Ticket
from models.handlers.base import Cancelled, Emit, ServingLimits
from models.prompt_cache import PromptCache
from models.prompt_disk import FINGERPRINTS, DiskPromptCache, weights_fingerprint
from models.tool_calls import template_messages


class LanguageModelHandler:
    """Chat and completions run in the handler's batch (``models.batch``); the warm-up runs alone."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        context_length: int,
        limits: ServingLimits,
        disk: DiskPromptCache | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.batch = BatchSession(
            model,
            tokenizer,
            self.prompt_for,
            context_length,
            max_sequences=limits.max_sequences,
            kv_budget_bytes=limits.kv_budget_bytes,
            prompt_cache=PromptCache(limits.prompt_cache_entries, limits.prompt_cache_bytes, disk),
            prefill_step_size=limits.prefill_step_size,
        )

    def warmup(self) -> None:
        """One short greedy chat through the batch, as a request would go."""
        ticket = Ticket(
            "chat",
            {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0},
            emit=lambda _event: None,
            checkpoint=lambda: False,
            cancelled=lambda: False,
            future=Future(),
            request_id="warmup",
        )
        self.batch.submit(ticket)
        while self.batch.busy:
            self.batch.step()
        ticket.future.result()

    def close(self) -> None:
        """Lets the prompt cache's disk writes in flight finish (a process exiting under one aborts)."""
        self.batch.prompt_cache.flush()

    def prompt_for(self, operation: str, payload: dict[str, Any]) -> list[int]:
        """The prompt tokens of a chat (through the chat template) or a completion (the text as it is)."""
        if operation == "completion":
            return self.tokenizer.encode(payload["prompt"])
        offered = payload.get("tools") if (payload.get("tool_choice") or "auto") != "none" else None
        tool_format = self.batch.tool_format
        messages = template_messages(payload["messages"], offered, tool_format)
        extra = {"tools": offered} if offered and tool_format.rendered_by_template else {}
        extra.update(self.template_kwargs(payload))
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def template_kwargs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``chat_template_kwargs`` and ``reasoning_effort`` for the chat template; a 400 naming one the template
        never reads (it would change nothing)."""
        wanted = {f"chat_template_kwargs.{k}": (k, v) for k, v in (payload.get("chat_template_kwargs") or {}).items()}
        if payload.get("reasoning_effort") is not None:
            wanted["reasoning_effort"] = ("reasoning_effort", payload["reasoning_effort"])
        template = self.chat_template
        for param, (name, _value) in wanted.items():
            if name not in template:
                raise ApiError(
                    400,
                    f"This model's chat template does not use {name!r}, so it cannot be applied",
                    code="unsupported_parameter",
                    param=param,
                )
        return dict(wanted.values())

    @property
    def chat_template(self) -> str:
        template = getattr(getattr(self.tokenizer, "_tokenizer", self.tokenizer), "chat_template", "") or ""
        return template if isinstance(template, str) else " ".join(map(str, dict(template).values()))

    def prefill(self, text: str, max_length: int | None = None) -> dict[str, Any]:
        """Runs ``text`` (at most ``max_length`` tokens) through the model without generating an answer."""
        prompt = self.tokenizer.encode(text or "Hello")[: max_length or self.context_length]
        for _ in stream_generate(self.model, self.tokenizer, prompt, max_tokens=1, sampler=make_sampler(0.0)):
            pass
        return {"prompt_tokens": len(prompt)}

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == COUNT_TOKENS:
            return {"input_tokens": len(self.prompt_for("chat", payload))}
        if operation != WARMUP:
            raise ValueError(f"{operation!r} runs in the batch, not alone")
        return self.prefill(payload.get("prompt", ""), payload.get("max_length"))


def load(path: Path, context_length: int | None = None, limits: ServingLimits | None = None) -> LanguageModelHandler:
    model, tokenizer = load_lm(str(path))
    config = json.loads((path / "config.json").read_text())
    native = int(config.get("max_position_embeddings", 0)) or 4096
    limits = limits or ServingLimits()
    disk = None
    if limits.prompt_cache_disk_folder is not None and limits.prompt_cache_disk_bytes > 0:
        folder = limits.prompt_cache_disk_folder
        disk = DiskPromptCache(
            folder.parent,
            f"{folder.name}/{weights_fingerprint(path, folder.parent / FINGERPRINTS)}",
            limits.prompt_cache_disk_min_tokens,
            limits.prompt_cache_disk_bytes,
        )
    return LanguageModelHandler(model, tokenizer, min(context_length or native, native), limits, disk)
