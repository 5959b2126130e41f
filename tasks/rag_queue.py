"""The RAG tasks' names and queue, and the calls the web makes to them (without importing their libraries)."""

from __future__ import annotations

from typing import Any

from tasks.dispatch import Dispatcher

QUEUE = "rag"
INGEST = "mlxf.rag.ingest"
RETRIEVE = "mlxf.rag.retrieve"
ANSWER = "mlxf.rag.answer"
DELETE_DOCUMENT = "mlxf.rag.delete_document"
DROP_COLLECTION = "mlxf.rag.drop_collection"
SWEEP = "mlxf.rag.sweep"


def run(dispatcher: Dispatcher, task: str, args: list[Any], request_id: str, timeout: float | None = None) -> Any:
    """Sends a RAG task and waits for its result; raises the ``ApiError`` it answered with."""
    call = dispatcher.start_control(task, args, QUEUE, request_id, timeout)
    return dispatcher.result(call)
