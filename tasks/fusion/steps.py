"""What each step type does, run by the fusion Celery tasks (``tasks.fusion.canvas``).

Model calls go to the model's own queue through the ``Dispatcher`` (as the API
sends them), so the model's warm worker runs them; a call whose worker died
(``worker_lost``) is sent again once the model has a live worker, within the
run's deadline. Vector searches run on the ``rag`` queue against the vector
store. Every step appends its entry to the run's trace: step, type, model,
status, ``duration_ms``, and the size of its output (or its error).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from config.errors import ApiError
from config.model_types import RERANK
from rag.answer import numbered_sources
from rag.chunking import chunk_document
from rag.extract import extract
from tasks.dispatch import Dispatcher
from tasks.fusion import workflow_store
from tasks.fusion.definitions import Step
from tasks.fusion.templates import ENVIRONMENT, TemplateProblem, render
from tasks.key_usage import add_tokens, usage_tokens
from tasks.rag_service import RagService

log = logging.getLogger(__name__)

RETRY_LOST_SECONDS = 90.0
"""How long a model call whose worker died waits for the model to be served again."""
SUMMARY_PROMPT = "Summarize the following text in at most {words} words. Keep the key facts.\n\n{text}"


ENVIRONMENT.add_filter("numbered_sources", numbered_sources)


class StepFailed(Exception):
    """A step failed; its trace entry says why. Raised so that the steps depending on it do not run."""


def output_size(output: Any) -> int:
    """Characters of the output as JSON: what the trace reports as a step's output size."""
    return len(json.dumps(output, default=str))


class StepRunner:
    def __init__(self, dispatcher: Dispatcher, rag: RagService) -> None:
        self.dispatcher = dispatcher
        self.rag = rag

    def model_for(self, step: Step, models: dict[str, Any], operation: str) -> str:
        chosen = step.chosen_model(models)
        if chosen:
            return chosen
        return self.dispatcher.pick_model(operation, f"models.{step.role or step.step_id}", step.model_type)

    def counted(self, result: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """``result``, its tokens counted for the key that runs the workflow (its ``tokens_per_day`` and usage)."""
        add_tokens(self.dispatcher.redis, state.get("owner"), usage_tokens(result.get("usage")))
        return result

    def call(
        self, model: str, operation: str, payload: dict[str, Any], request_id: str, state: dict[str, Any]
    ) -> dict[str, Any]:
        """One model call on the model's queue; sent again (once the model is served) if its worker died."""
        deadline = time.monotonic() + RETRY_LOST_SECONDS
        while True:
            try:
                result = self.dispatcher.result(self.dispatcher.start(model, operation, payload, request_id))
                return self.counted(result, state)
            except ApiError as exc:
                if exc.code not in ("worker_lost", "model_unavailable") or time.monotonic() > deadline:
                    raise
                log.warning("%s on %s: %s; sending it again once the model is served", operation, model, exc.code)
                while not self.dispatcher.liveness.workers(model) and time.monotonic() < deadline:
                    time.sleep(0.5)

    def model_call(self, step: Step, state: dict[str, Any], request_id: str) -> tuple[Any, str]:
        operation = step.operation or "chat"
        model = self.model_for(step, state["models"], operation)
        given = render(step.input, state, f"{step.step_id}.input")
        if operation == "chat":
            payload = {"messages": [{"role": "user", "content": str(given)}]} if not isinstance(given, dict) else given
            payload = {**_sampling(state["config"]), **payload}
            if any(isinstance(m.get("content"), list) for m in payload.get("messages", [])):
                from tasks.image_inputs import with_images

                payload["messages"] = with_images(payload["messages"], self.dispatcher.settings)
            result = self.call(model, "chat", payload, request_id, state)
            return result["choices"][0]["content"], model
        if operation == "embed":
            texts = [given] if isinstance(given, str) else given
            vectors = self.call(model, "embed", {"input": texts}, request_id, state)["embeddings"]
            return (vectors[0] if isinstance(given, str) else vectors), model
        if operation == "transcribe":
            payload = given if isinstance(given, dict) else {"file": given}
            return self.call(model, "transcribe", payload, request_id, state)["text"], model
        payload = given if isinstance(given, dict) else {"prompt": str(given)}
        payload = {"n": 1, "width": 512, "height": 512, **payload}
        images = self.call(model, "image_gen", payload, request_id, state)["images"]
        return [image["b64_json"] for image in images], model

    def vector_search(self, step: Step, state: dict[str, Any]) -> Any:
        collection = render(step.collection, state, f"{step.step_id}.collection")
        top_k = int(render(step.top_k, state, f"{step.step_id}.top_k"))
        query = render(step.query, state, f"{step.step_id}.query") if step.query is not None else ""
        if step.query_embedding is not None:
            vector = render(step.query_embedding, state, f"{step.step_id}.query_embedding")
        else:
            asked = {"collection": collection, "query": query, "top_k": top_k, "sees": state.get("sees")}
            return self.rag.retrieve(asked, state["request_id"])["sources"]
        if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
            raise TemplateProblem(f"{step.step_id}.query_embedding: must render to a vector (a list of numbers)")
        self.rag.readable_collection(str(collection), state.get("sees"))
        return self.rag.search(str(collection), str(query), vector, {"top_k": max(1, min(top_k, 50))})

    def summarize(self, step: Step, state: dict[str, Any], request_id: str) -> tuple[Any, str]:
        """Passes over the document: parts of the model's tokens summarized at once, until the summary fits."""
        model = self.model_for(step, state["models"], "chat")
        folder, context_length = _model_folder(model)
        limit = int(state["input"].get("max_summary_length") or 256)
        part_tokens = max(256, min(2048, (context_length or 8192) // 4))
        text = str(render(step.input, state, f"{step.step_id}.input"))
        passes = 0
        while True:
            parts = [c.text for c in chunk_document(extract("document.txt", text.encode()), folder, part_tokens, 0)]
            if passes and (len(parts) <= 1 and _tokens(folder, text) <= limit):
                return text, model
            passes += 1
            started = time.perf_counter()
            calls = [
                self.dispatcher.start(
                    model,
                    "chat",
                    {
                        **_sampling(state["config"]),
                        "max_tokens": min(limit, 512),
                        "messages": [
                            {"role": "user", "content": SUMMARY_PROMPT.format(words=max(8, limit * 3 // 4), text=p)}
                        ],
                    },
                    f"{request_id}.pass{passes}.part{n}",
                )
                for n, p in enumerate(parts, start=1)
            ]
            answers = [self.counted(self.dispatcher.result(call), state) for call in calls]
            summaries = [answer["choices"][0]["content"].strip() for answer in answers]
            text = "\n\n".join(summaries)
            workflow_store.add_trace(
                state["run_id"],
                {
                    "step": f"{step.step_id}.pass{passes}",
                    "type": "summarize_pass",
                    "model": model,
                    "status": "completed",
                    "parts": len(parts),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "output_size": len(text),
                },
            )
            if passes >= 8:
                return text, model

    def run(self, step: Step, state: dict[str, Any]) -> Any:
        """Runs ``step`` and records its trace entry; raises ``StepFailed`` when it fails."""
        started = time.perf_counter()
        entry: dict[str, Any] = {"step": step.step_id, "type": step.type, "model": None}
        request_id = f"{state['request_id']}.{step.step_id}"
        try:
            if step.type == "model_call":
                output, entry["model"] = self.model_call(step, state, request_id)
            elif step.type == "vector_search":
                output = self.vector_search(step, state)
            elif step.type == "transform":
                output = render(step.input, state, f"{step.step_id}.input")
            elif step.type == "summarize":
                output, entry["model"] = self.summarize(step, state, request_id)
            elif step.chosen_model(state["models"]):
                output, entry["model"] = self.rerank(step, state, request_id)
            else:
                return self._skip_rerank(step, state, entry)
        except Exception as exc:  # noqa: BLE001 - every failure is the step's, recorded in the trace
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            if not isinstance(exc, ApiError | TemplateProblem):
                log.exception("step %s of run %s failed", step.step_id, state["run_id"])
                message = f"{type(exc).__name__}: {exc}"
            entry.update(status="failed", error=message, duration_ms=_ms(started))
            workflow_store.add_trace(state["run_id"], entry)
            raise StepFailed(f"step {step.step_id} failed: {message}") from None
        entry.update(status="completed", duration_ms=_ms(started), output_size=output_size(output))
        workflow_store.add_trace(state["run_id"], entry)
        return output

    def rerank(self, step: Step, state: dict[str, Any], request_id: str) -> tuple[Any, str]:
        """The sources of the step's input, reordered by the reranker's relevance to the step's query (each with
        its ``rerank_score``), the first ``top_k`` of them."""
        model = str(step.chosen_model(state["models"]))
        sources = render(step.input, state, f"{step.step_id}.input") or []
        query = str(render(step.query, state, f"{step.step_id}.query"))
        top_k = int(render(step.top_k, state, f"{step.step_id}.top_k"))
        if not sources:
            return [], model
        pairs = [[query, str(item["text"])] for item in sources]
        scores = self.call(model, RERANK, {"pairs": pairs}, request_id, state)["scores"]
        order = sorted(range(len(sources)), key=lambda i: -scores[i])[: max(1, top_k)]
        return [{**sources[i], "rerank_score": round(scores[i], 6)} for i in order], model

    @staticmethod
    def _skip_rerank(step: Step, state: dict[str, Any], entry: dict[str, Any]) -> Any:
        """Without a reranker named (none measured here improves the order), the retrieved order is kept."""
        entry.update(
            status="skipped",
            reason="no rerank model named: models.rerank (a rerank model or a chat model) reranks; the retrieved "
            "order is kept",
            duration_ms=0.0,
        )
        output = render(step.input, state, f"{step.step_id}.input")
        entry["output_size"] = output_size(output)
        workflow_store.add_trace(state["run_id"], entry)
        return output


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _sampling(config: dict[str, Any]) -> dict[str, Any]:
    return {name: config[name] for name in ("temperature", "top_p", "max_tokens", "seed") if name in config}


def _model_folder(model: str) -> tuple[str, int | None]:
    """A folder with the model's tokenizer (it splits the document) and its context length, from the registry."""
    from models import hub, registry

    record = registry.get_record(model)
    if record is None:
        raise ApiError(503, f"Model '{model}' is not loaded", code="model_unavailable", param="models.generation")
    return str(hub.tokenizer_folder(record.path)), record.context_length


def _tokens(folder: str, text: str) -> int:
    from rag.chunking import token_counter

    return token_counter(folder)(text)
