"""The fusion Celery tasks, run by the control worker: one step of a run, and the merge after a group of steps."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from celery import shared_task

from tasks.fusion import workflow_store
from tasks.fusion.canvas import MERGE_TASK, STEP_TASK, merge_states
from tasks.fusion.definitions import Step
from tasks.fusion.steps import StepRunner


@cache
def runner() -> StepRunner:
    from tasks.rag_tasks import service

    rag = service()
    return StepRunner(rag.dispatcher, rag)


@shared_task(name=STEP_TASK, acks_late=False)
def run_step(state: dict[str, Any] | list[dict[str, Any]], run_id: str, step_id: str) -> dict[str, Any]:
    """Runs one step on the state so far; its output joins the state passed to the next wave."""
    state = merge_states(state) if isinstance(state, list) else state
    run = workflow_store.get_run(run_id)
    if run is None:
        raise LookupError(f"no fusion run {run_id}")
    step = next(Step(**json.loads(json.dumps(raw))) for raw in run.steps if raw["step_id"] == step_id)
    output = runner().run(step, state)
    return {**state, "steps": {**state["steps"], step_id: {"output": output}}}


@shared_task(name=MERGE_TASK)
def merge(states: list[dict[str, Any]]) -> dict[str, Any]:
    return merge_states(states)
