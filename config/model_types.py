"""The one table of model types: what each type can do, what it is capable of, how it is tagged, who serves it.

Every other place (launcher, load API, handlers, dispatcher, job queue,
capabilities, registry tags) reads this table. Adding a model type means one
row here plus one handler module under ``models/handlers``.
"""

from __future__ import annotations

from dataclasses import dataclass

WARMUP = "warmup"
"""The operation every served type answers: run the model once (``POST /v1/models/{id}/warmup``)."""
COUNT_TOKENS = "count_tokens"
"""A language model's token count of a conversation (``POST /v1/messages/count_tokens``)."""
TOKENIZE = "tokenize"
"""A language model's tokens of a prompt or a conversation (``POST /tokenize``)."""
DETOKENIZE = "detokenize"
"""A language model's text of token ids (``POST /detokenize``)."""
RERANK = "rerank"
"""Relevance scores of (query, passage) pairs (``POST /v1/rerank``, ``/v1/score``, RAG's ``rerank``): a cross-encoder's,
or a language model's probability of answering "yes" to whether the passage answers the question."""
LOAD_ADAPTER = "load_adapter"
"""A language model's worker loads a LoRA adapter (``POST /v1/models/{id}/adapters``; also before the first request
that names an adapter the worker has not loaded)."""
UNLOAD_ADAPTER = "unload_adapter"
"""A language model's worker drops a LoRA adapter (``DELETE /v1/models/{id}/adapters/{adapter_id}``)."""
INTERACTIVE_ONLY = (WARMUP, COUNT_TOKENS, TOKENIZE, DETOKENIZE, RERANK, LOAD_ADAPTER, UNLOAD_ADAPTER)
KV_BITS = (4, 8)
"""The bits a language model's KV cache may be quantised to at its load (``kv_bits``, ``models.kv_quantized``)."""
LIGHT = "light"
"""A warm-up payload key the API never passes on: the model's cheapest real call instead of a full warm-up."""
LIGHT_PROBE = (WARMUP, {LIGHT: True})
"""The health probe of a model whose warm-up costs more than its cheapest real call: a language model's one forward
pass of one token (about 55 ms of CPU here; a chat through the batch took 0.3 s), a vision model's text-only token,
Whisper's first decoder step (not a 30 s encoder window)."""


@dataclass(frozen=True)
class ModelType:
    name: str
    operations: tuple[str, ...]
    """Model calls a worker of this type runs; the same names are the MCP job operations (``warmup`` aside)."""
    capabilities: tuple[str, ...]
    """What ``GET /api/fusion/capabilities`` lists for a model of this type."""
    tags: tuple[str, ...]
    """Registry tags every model of this type carries (besides ``local`` and ``quantized``)."""
    handler: str | None = None
    """The module under ``models.handlers`` that loads and runs it (``module`` calls its ``load``,
    ``module:function`` another loader of it); None while the platform cannot serve it."""
    probe: tuple[str, dict] = (WARMUP, {})
    """The tiny real call a worker makes of its model when it has answered nothing for its probe interval
    (``/health``)."""
    probe_every: float = 1.0
    """The probe interval in ``HEALTH_PROBE_INTERVAL_SECONDS``: more for a type whose cheapest call still costs
    (``tasks.probes.probe_interval`` keeps it under the verdict's ``HEALTH_PROBE_MAX_AGE_SECONDS``)."""
    hides_torch: bool = False
    """Its workers start with PyTorch marked absent (``models.torch_absent``): none of the libraries it loads with
    (mlx-lm, mlx-embeddings, transformers' tokenizers) computes with torch. The others keep it: scipy, which Whisper's
    workers call on audio, looks torch up in ``sys.modules`` and fails on the mark; some of mlx-vlm's model families
    and mflux's PyTorch-format weights import it."""

    @property
    def served(self) -> bool:
        return self.handler is not None

    @property
    def job_operations(self) -> tuple[str, ...]:
        return tuple(op for op in self.operations if op not in INTERACTIVE_ONLY)


MODEL_TYPES: dict[str, ModelType] = {
    row.name: row
    for row in (
        ModelType(
            "lm",
            ("chat", "completion", COUNT_TOKENS, TOKENIZE, DETOKENIZE, RERANK, LOAD_ADAPTER, UNLOAD_ADAPTER, WARMUP),
            ("chat",),
            ("chat",),
            handler="lm",
            probe=LIGHT_PROBE,
            hides_torch=True,
        ),
        ModelType("multimodal", ("chat", WARMUP), ("chat", "vision"), ("chat", "vision"), handler="vlm", probe_every=2),
        ModelType(
            "embeddings", ("embed", WARMUP), ("embeddings",), ("embeddings",), handler="embeddings", hides_torch=True
        ),
        ModelType("rerank", (RERANK, WARMUP), ("rerank",), ("rerank",), handler="rerank", hides_torch=True),
        ModelType(
            "whisper",
            ("transcribe", WARMUP),
            ("transcription",),
            ("audio",),
            handler="whisper",
            probe=LIGHT_PROBE,
            probe_every=2,
        ),
        ModelType(
            "image-generation",
            ("image_gen", WARMUP),
            ("image_generation",),
            ("image",),
            handler="images:load_generation",
            probe_every=2,
        ),
        ModelType(
            "image-edit",
            ("image_gen", WARMUP),
            ("image_generation",),
            ("image",),
            handler="images:load_edit",
            probe_every=2,
        ),
    )
}
TYPE_NAMES: tuple[str, ...] = tuple(MODEL_TYPES)
SERVED_TYPES: tuple[str, ...] = tuple(name for name, row in MODEL_TYPES.items() if row.served)
CAPABILITIES: tuple[str, ...] = (
    "chat",
    "vision",
    "embeddings",
    "image_generation",
    "tool_calling",
    "long_context",
    "transcription",
    "rerank",
)
"""Every capability the API names; ``long_context`` and ``tool_calling`` depend on the model, not only its type."""


def model_type(name: str) -> ModelType | None:
    return MODEL_TYPES.get(name)


def operations_of(name: str) -> tuple[str, ...]:
    row = MODEL_TYPES.get(name)
    return row.operations if row else ()
