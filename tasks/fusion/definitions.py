"""Workflow definitions: steps, their order and dependencies, the predefined workflows, and the checks a composed
workflow passes at creation (step types, operations, references to earlier steps only, templates that parse).

A step reads the workflow's ``input``, ``config`` and the ``output`` of earlier
steps through templates; the steps it reads are its dependencies, and steps
whose dependencies are met run together (``levels``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from config.errors import ApiError
from rag.answer import INSTRUCTIONS
from tasks.fusion.templates import TemplateProblem, referenced_steps

STEP_TYPES = ("model_call", "vector_search", "transform")
INTERNAL_STEP_TYPES = ("rerank", "summarize")
"""Step types of the predefined workflows only."""
MODEL_OPERATIONS = ("chat", "embed", "transcribe", "image_gen")
STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_STEPS = 32


class DefinitionError(ValueError):
    """A workflow definition that cannot run; ``field`` names where (``steps[2].input``)."""

    def __init__(self, message: str, field_name: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Step:
    step_id: str
    type: str
    operation: str | None = None
    model_id: str | None = None
    """A fixed model; overridden by ``models[step_id]``."""
    role: str | None = None
    """The key of ``models`` that chooses this step's model (predefined workflows: ``generation``, ...)."""
    model_type: str | None = None
    """The type of model auto-selected when none is chosen (a vision step needs a ``multimodal`` one)."""
    input: Any = None
    collection: Any = None
    query_embedding: Any = None
    query: Any = None
    top_k: Any = 5

    def chosen_model(self, models: dict[str, Any]) -> str | None:
        """The model a run chose for this step: ``models[step_id]``, ``models[role]``, else its own ``model_id``."""
        chosen = models.get(self.step_id) or (models.get(self.role) if self.role else None) or self.model_id
        return chosen if isinstance(chosen, str) and chosen else None

    def templated(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in (
                ("input", self.input),
                ("collection", self.collection),
                ("query_embedding", self.query_embedding),
                ("query", self.query),
                ("top_k", self.top_k),
            )
            if value is not None
        }

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Workflow:
    workflow_id: str
    name: str
    description: str
    steps: tuple[Step, ...]
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    required_models: tuple[str, ...] = ()
    optional_models: tuple[str, ...] = ()
    result: dict[str, str] | None = None
    """Result key -> the step whose output it is; None: ``output`` (the last step's) and every step's output."""
    predefined: bool = True

    def levels(self) -> list[list[Step]]:
        """The steps in waves: each wave's steps depend only on earlier waves, and run in parallel."""
        depth: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            needs = dependencies(step, index)
            depth[step.step_id] = 1 + max((depth[n] for n in needs), default=-1)
        waves: list[list[Step]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for step in self.steps:
            waves[depth[step.step_id]].append(step)
        return waves

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.workflow_id,
            "name": self.name,
            "description": self.description,
            "required_models": list(self.required_models),
            "optional_models": list(self.optional_models),
            "input_schema": self.input_schema,
            "predefined": self.predefined,
        }


def dependencies(step: Step, index: int) -> set[str]:
    try:
        return referenced_steps(step.templated(), f"steps[{index}]")
    except TemplateProblem as exc:
        raise DefinitionError(str(exc), f"steps[{index}]") from None


def check(workflow: Workflow, known_model: Any = None) -> None:
    """Raises ``DefinitionError`` naming the field of the first problem; ``known_model(id)`` says whether a model
    exists (not checked when None)."""
    if not workflow.steps:
        raise DefinitionError("A workflow needs at least one step", "steps")
    if len(workflow.steps) > MAX_STEPS:
        raise DefinitionError(f"At most {MAX_STEPS} steps", "steps")
    seen: set[str] = set()
    for index, step in enumerate(workflow.steps):
        where = f"steps[{index}]"
        if not STEP_ID.match(step.step_id):
            raise DefinitionError("step_id must be a name of letters, digits and _ (at most 64)", f"{where}.step_id")
        if step.step_id in seen:
            raise DefinitionError(f"step_id {step.step_id!r} is used twice", f"{where}.step_id")
        allowed = STEP_TYPES + (INTERNAL_STEP_TYPES if workflow.predefined else ())
        if step.type not in allowed:
            raise DefinitionError(f"type must be one of {', '.join(STEP_TYPES)}", f"{where}.type")
        if step.type == "model_call":
            if step.operation not in MODEL_OPERATIONS:
                raise DefinitionError(f"operation must be one of {', '.join(MODEL_OPERATIONS)}", f"{where}.operation")
            if not workflow.predefined and not step.model_id:
                raise DefinitionError("a model_call step needs model_id", f"{where}.model_id")
            if step.model_id and known_model is not None and not known_model(step.model_id):
                raise DefinitionError(f"model {step.model_id!r} does not exist", f"{where}.model_id")
            if step.input is None:
                raise DefinitionError("a model_call step needs input", f"{where}.input")
        if step.type == "vector_search" and (
            step.collection is None or (step.query_embedding is None and step.query is None)
        ):
            raise DefinitionError("a vector_search step needs collection and query_embedding (or query)", where)
        if step.type == "transform" and step.input is None:
            raise DefinitionError("a transform step needs input (its template)", f"{where}.input")
        for needed in dependencies(step, index):
            if needed not in seen:
                later = any(s.step_id == needed for s in workflow.steps)
                reason = "a later step (workflows run forward; no cycles)" if later else "no step of this workflow"
                raise DefinitionError(f"it reads steps.{needed}, which is {reason}", f"{where}")
        seen.add(step.step_id)


def from_request(body: dict[str, Any]) -> Workflow:
    """A composed workflow from ``POST /api/fusion/compose``'s validated body."""
    steps = tuple(
        Step(
            step_id=raw["step_id"],
            type=raw["type"],
            operation=raw.get("operation"),
            model_id=raw.get("model_id"),
            input=raw.get("input"),
            collection=raw.get("collection"),
            query_embedding=raw.get("query_embedding"),
            query=raw.get("query"),
            top_k=raw.get("top_k", 5),
        )
        for raw in body["steps"]
    )
    return Workflow(
        workflow_id=body["name"],
        name=body["name"],
        description=body.get("description") or "",
        steps=steps,
        input_schema=body.get("input_schema") or {"type": "object"},
        predefined=False,
    )


RAG_SYSTEM = INSTRUCTIONS + "\n\nSources:\n\n{{ steps.rerank.output | numbered_sources }}"

RAG_WITH_RERANK = Workflow(
    workflow_id="rag_with_rerank",
    name="RAG with Reranking",
    description="Retrieve documents, rerank by relevance (when models.rerank names a rerank model or a chat model: "
    "the first config.rerank_candidates, default 30, then config.top_k are kept), and generate an answer",
    required_models=("embeddings", "lm"),
    optional_models=("rerank",),
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 8000},
            "collection": {"type": "string", "minLength": 1, "maxLength": 128},
        },
        "required": ["query", "collection"],
        "additionalProperties": False,
    },
    steps=(
        Step(
            "embed_query",
            "model_call",
            operation="embed",
            role="retrieval",
            model_type="embeddings",
            input="{{ input.query }}",
        ),
        Step(
            "retrieve_docs",
            "vector_search",
            collection="{{ input.collection }}",
            query_embedding="{{ steps.embed_query.output }}",
            top_k="{{ (config.rerank_candidates | default(30)) if models.rerank is defined and models.rerank"
            " else (config.top_k | default(5)) }}",
        ),
        Step(
            "rerank",
            "rerank",
            role="rerank",
            input="{{ steps.retrieve_docs.output }}",
            query="{{ input.query }}",
            top_k="{{ config.top_k | default(5) }}",
        ),
        Step(
            "generate_answer",
            "model_call",
            operation="chat",
            role="generation",
            model_type="lm",
            input={
                "messages": [
                    {"role": "system", "content": RAG_SYSTEM},
                    {"role": "user", "content": "{{ input.query }}"},
                ]
            },
        ),
    ),
    result={"answer": "generate_answer", "sources": "rerank"},
)

MULTIMODAL_ANALYSIS = Workflow(
    workflow_id="multimodal_analysis",
    name="Multimodal Analysis",
    description="Analyze image + text input with a vision model",
    required_models=("multimodal",),
    input_schema={
        "type": "object",
        "properties": {
            "image_url": {"type": "string", "minLength": 1},
            "prompt": {"type": "string", "minLength": 1, "maxLength": 8000},
        },
        "required": ["image_url", "prompt"],
        "additionalProperties": False,
    },
    steps=(
        Step(
            "analyze",
            "model_call",
            operation="chat",
            role="vision",
            model_type="multimodal",
            input={
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "{{ input.image_url }}"}},
                            {"type": "text", "text": "{{ input.prompt }}"},
                        ],
                    }
                ]
            },
        ),
    ),
    result={"analysis": "analyze"},
)

SEQUENTIAL_SUMMARIZATION = Workflow(
    workflow_id="sequential_summarization",
    name="Sequential Summarization",
    description="Summarize a long document in passes: split by the model's tokens, summarize each part "
    "(in parallel), then the summaries, until the summary fits max_summary_length tokens",
    required_models=("lm",),
    input_schema={
        "type": "object",
        "properties": {
            "document": {"type": "string", "minLength": 1, "maxLength": 2_000_000},
            "max_summary_length": {"type": "integer", "minimum": 16, "maximum": 4096},
        },
        "required": ["document"],
        "additionalProperties": False,
    },
    steps=(
        Step(
            "summarize", "summarize", operation="chat", role="generation", model_type="lm", input="{{ input.document }}"
        ),
    ),
    result={"summary": "summarize"},
)

PARALLEL_FUSION_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 8000}},
    "required": ["question"],
    "additionalProperties": False,
}
FUSE_PROMPT = (
    "Several assistants answered the question below. Write one answer that keeps what they agree on and what is "
    "right, in your own words.\n\nQuestion: {{ input.question }}\n\n"
)


def parallel_fusion(answerers: list[str], fuser: str) -> Workflow:
    """The same question to each of ``answerers`` at once, then ``fuser`` fuses their answers into one."""
    answers = [
        Step(
            f"answer_{n}",
            "model_call",
            operation="chat",
            model_id=model,
            input={"messages": [{"role": "user", "content": "{{ input.question }}"}]},
        )
        for n, model in enumerate(answerers, start=1)
    ]
    listing = "".join(f"Answer {n}: {{{{ steps.answer_{n}.output }}}}\n\n" for n in range(1, len(answerers) + 1))
    fuse = Step(
        "fuse",
        "model_call",
        operation="chat",
        model_id=fuser,
        input={"messages": [{"role": "user", "content": FUSE_PROMPT + listing}]},
    )
    return Workflow(
        workflow_id="parallel_fusion",
        name="Parallel Fusion",
        description=PARALLEL_FUSION.description,
        steps=(*answers, fuse),
        input_schema=PARALLEL_FUSION_SCHEMA,
        required_models=("lm",),
        result={"answer": "fuse", **{f"answer_{n}": f"answer_{n}" for n in range(1, len(answerers) + 1)}},
    )


PARALLEL_FUSION = Workflow(
    workflow_id="parallel_fusion",
    name="Parallel Fusion",
    description="The same question to several chat models at once (models.answerers, default: every loaded chat "
    "model), then one model (models.fuser) fuses their answers into one; each answer is in the trace",
    required_models=("lm",),
    input_schema=PARALLEL_FUSION_SCHEMA,
    steps=(Step("fuse", "model_call", operation="chat", role="fuser", input="{{ input.question }}"),),
)
"""Listed with this placeholder step; the steps are made per run from the models chosen (``parallel_fusion``)."""


def for_run(workflow: Workflow, models: dict[str, Any], chat_models: list[str]) -> Workflow:
    """The workflow as it runs: ``parallel_fusion`` made for ``models.answerers`` (default: every chat model with a
    worker, ``chat_models``) and ``models.fuser`` (default: the first answerer); any other as it is."""
    if workflow.workflow_id != "parallel_fusion" or not workflow.predefined:
        return workflow
    answerers = models.get("answerers") or chat_models
    if isinstance(answerers, str):
        answerers = [answerers]
    if len(answerers) < 2:
        raise ApiError(
            503,
            "parallel_fusion needs at least two chat models (models.answerers); load another",
            code="model_unavailable",
            param="models.answerers",
        )
    return parallel_fusion(list(answerers), models.get("fuser") or answerers[0])


PREDEFINED = {
    w.workflow_id: w for w in (RAG_WITH_RERANK, MULTIMODAL_ANALYSIS, SEQUENTIAL_SUMMARIZATION, PARALLEL_FUSION)
}
