"""Language models with mlx-lm: the chat template, the warm-up, and the batch every chat and completion runs in."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm import load as load_lm
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from config.errors import ApiError
from config.model_types import (
    COUNT_TOKENS,
    DETOKENIZE,
    LIGHT,
    LOAD_ADAPTER,
    RERANK,
    TOKENIZE,
    UNLOAD_ADAPTER,
    WARMUP,
)
from models import hub
from models.adapters import AdapterSet
from models.batch import BatchSession, Ticket
from models.handlers.base import Cancelled, Emit, ServingLimits, length_batches
from models.kv_quantized import quantize_kv
from models.prompt_cache import PromptCache
from models.prompt_disk import FINGERPRINTS, DiskPromptCache, weights_fingerprint
from models.tool_calls import template_messages

RELEVANCE_QUESTION = (
    "Question: {query}\n\nPassage: {passage}\n\nDoes this passage answer the question? Answer yes or no."
)
"""The pointwise rerank prompt: a passage's relevance is the model's probability of answering "yes" to it."""
RERANK_BATCH = 4
"""Pairs scored in one forward pass (every position's logits are computed: a wide batch costs memory)."""


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
        self.adapters = AdapterSet(model)
        self.batch = BatchSession(
            model,
            tokenizer,
            self.prompt_for,
            context_length,
            max_sequences=limits.max_sequences,
            kv_budget_bytes=limits.kv_budget_bytes,
            prompt_cache=PromptCache(limits.prompt_cache_entries, limits.prompt_cache_bytes, disk),
            prefill_step_size=limits.prefill_step_size,
            background_rows_beside_interactive=limits.background_rows_beside_interactive,
            draft_tokens=limits.draft_tokens,
            adapters=self.adapters,
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
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=payload.get("add_generation_prompt", True), tokenize=False, **extra
        )
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

    def forward_one_token(self) -> dict[str, Any]:
        """One forward pass of one token, no cache kept: the model's cheapest real call (the health probe). Every
        weight is read once, so it costs what the weights take to read (about 55 ms of CPU for SmolLM2-135M in
        float32 here; a prefill and a token, as a warm-up does, twice that). Raises when the logits are not finite."""
        token = self.tokenizer.bos_token_id or self.tokenizer.eos_token_id or 0
        logits = self.model(mx.array([[token]]))
        if not mx.isfinite(logits).all().item():
            raise RuntimeError("the model gave non-finite logits")
        return {"prompt_tokens": 1}

    def tokenize(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The tokens of a conversation as a chat request reads it (through the chat template), or of a prompt as
        a completion reads it (with the tokenizer's special tokens unless ``add_special_tokens`` is false)."""
        if "messages" in payload:
            tokens = self.prompt_for("chat", payload)
        else:
            tokens = self.tokenizer.encode(
                payload["prompt"], add_special_tokens=payload.get("add_special_tokens", True)
            )
        answer: dict[str, Any] = {"tokens": tokens, "count": len(tokens), "max_model_len": self.context_length}
        if payload.get("return_token_strs"):
            answer["token_strs"] = self.tokenizer.convert_ids_to_tokens(tokens)
        return answer

    def detokenize(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The text of token ids; an id outside the vocabulary is a 400 naming it."""
        tokens = payload["tokens"]
        vocabulary = len(self.tokenizer._tokenizer)
        outside = next((i for i, token in enumerate(tokens) if not 0 <= token < vocabulary), None)
        if outside is not None:
            raise ApiError(
                400,
                f"tokens[{outside}] is {tokens[outside]}, outside this model's vocabulary of {vocabulary} tokens",
                code="invalid_value",
                param="tokens",
            )
        return {"prompt": self.tokenizer.decode(tokens)}

    def answer_ids(self, *words: str) -> list[int]:
        """The single-token spellings of ``words`` that can open the assistant's answer."""
        spellings = {form for word in words for form in (word, word.capitalize(), " " + word, " " + word.capitalize())}
        ids = {tuple(self.tokenizer.encode(form, add_special_tokens=False)) for form in spellings}
        return sorted(only for only, *rest in ids if not rest)

    def relevance(
        self, pairs: list[tuple[str, str]], emit: Emit | None = None, cancelled: Cancelled | None = None
    ) -> tuple[list[float], int]:
        """For each (query, passage), P(yes) / (P(yes) + P(no)) of the model's first answer token to
        ``RELEVANCE_QUESTION``, and the prompt tokens read. Rows are right-padded: the model is causal, so a
        row's last real position never sees the padding."""
        yes, no = self.answer_ids("yes"), self.answer_ids("no")
        prompts = [
            self.prompt_for(
                "chat", {"messages": [{"role": "user", "content": RELEVANCE_QUESTION.format(query=q, passage=p)}]}
            )[-self.context_length :]
            for q, p in pairs
        ]
        scores = [0.0] * len(prompts)
        for indices in length_batches([len(p) for p in prompts], RERANK_BATCH, "rerank", emit, cancelled):
            width = max(len(prompts[i]) for i in indices)
            ids = np.zeros((len(indices), width), dtype=np.int32)
            for row, i in enumerate(indices):
                ids[row, : len(prompts[i])] = prompts[i]
            logits = self.model(mx.array(ids))
            last = mx.array([len(prompts[i]) - 1 for i in indices])
            final = mx.take_along_axis(logits, last[:, None, None], axis=1)[:, 0, :].astype(mx.float32)
            probabilities = mx.softmax(final, axis=-1)
            p_yes = probabilities[:, yes].sum(axis=-1)
            p_no = probabilities[:, no].sum(axis=-1)
            for i, value in zip(indices, (p_yes / mx.maximum(p_yes + p_no, 1e-12)).tolist(), strict=True):
                scores[i] = value
        return scores, sum(len(prompt) for prompt in prompts)

    def load_adapter(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Loads the LoRA adapter ``adapter_id`` from ``source`` (a folder, or ``hf://<repo id>`` fetched through
        the Hub cache); what it holds (``models.adapters.Adapter.describe``)."""
        source = payload["source"]
        if source.startswith(hub.HUB_PREFIX):
            folder = hub.download(source.removeprefix(hub.HUB_PREFIX))
        else:
            folder = Path(source)
        self.adapters.free_released()
        return self.adapters.load(payload["adapter_id"], folder, source).describe()

    def unload_adapter(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Drops an adapter: new requests no longer find it; its memory goes once the requests holding it end."""
        adapter = self.adapters.delete(payload["adapter_id"])
        self.adapters.free_released()
        return {"adapter_id": payload["adapter_id"], "unloaded": adapter is not None}

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == LOAD_ADAPTER:
            return self.load_adapter(payload)
        if operation == UNLOAD_ADAPTER:
            return self.unload_adapter(payload)
        if operation == RERANK:
            scores, tokens = self.relevance([(q, p) for q, p in payload["pairs"]], emit, cancelled)
            return {"scores": scores, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        if operation == COUNT_TOKENS:
            return {"input_tokens": len(self.prompt_for("chat", payload))}
        if operation == TOKENIZE:
            return self.tokenize(payload)
        if operation == DETOKENIZE:
            return self.detokenize(payload)
        if operation != WARMUP:
            raise ValueError(f"{operation!r} runs in the batch, not alone")
        if payload.get(LIGHT):
            return self.forward_one_token()
        return self.prefill(payload.get("prompt", ""), payload.get("max_length"))


def load(path: Path, context_length: int | None = None, limits: ServingLimits | None = None) -> LanguageModelHandler:
    model, tokenizer = load_lm(str(path))
    config = json.loads((path / "config.json").read_text())
    native = int(config.get("max_position_embeddings", 0)) or 4096
    limits = limits or ServingLimits()
    if limits.kv_bits is not None:
        quantize_kv(model, limits.kv_bits)
    disk = None
    if limits.prompt_cache_disk_folder is not None and limits.prompt_cache_disk_bytes > 0:
        folder = limits.prompt_cache_disk_folder
        kind = f"-kv{limits.kv_bits}" if limits.kv_bits else ""  # a quantised cache is not a full-precision one
        disk = DiskPromptCache(
            folder.parent,
            f"{folder.name}/{weights_fingerprint(path, folder.parent / FINGERPRINTS)}{kind}",
            limits.prompt_cache_disk_min_tokens,
            limits.prompt_cache_disk_bytes,
        )
    return LanguageModelHandler(model, tokenizer, min(context_length or native, native), limits, disk)
