"""A workflow run as a Celery canvas: a chain of waves, each wave one step or a group of steps whose results are
merged (a chord), so that steps that do not depend on each other run at once.

Steps are ``mlxf.fusion.step`` tasks on the ``fusion`` queue (vector searches on
``rag``); the model calls they make run on the models' own queues. Every task
passes the run's state on: ``input``, ``config``, ``models`` and each finished
step's ``output``. This module only names tasks (the web process imports it);
``tasks.fusion.tasks`` defines them on the control worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, chain, group
from celery.canvas import Signature
from celery.exceptions import TimeoutError as CeleryTimeout

from tasks.fusion import workflow_store
from tasks.fusion.definitions import Step, Workflow

STEP_TASK = "mlxf.fusion.step"
MERGE_TASK = "mlxf.fusion.merge"
FINISH_TASK = "mlxf.fusion.finish"
FAILED_TASK = "mlxf.fusion.failed"
FUSION_QUEUE = "fusion"
RAG_QUEUE = "rag"
POLL_SECONDS = 0.5


def initial_state(run_id: str, given: dict[str, Any], request_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "request_id": request_id,
        "input": given["input"],
        "config": given.get("config") or {},
        "models": given.get("models") or {},
        "sees": given.get("sees"),
        "owner": given.get("owner"),
        "steps": {},
    }


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state from the states a group of steps returned: every step's output, in the order of the group."""
    merged = dict(states[0])
    merged["steps"] = {name: out for state in states for name, out in state["steps"].items()}
    return merged


def _step(celery: Celery, run_id: str, step: Step) -> Signature:
    queue = RAG_QUEUE if step.type == "vector_search" else FUSION_QUEUE
    return celery.signature(STEP_TASK, args=[run_id, step.step_id], queue=queue)


def build(celery: Celery, workflow: Workflow, run_id: str, state: dict[str, Any], finishing: bool = False) -> Signature:
    """The canvas of a run: a first task hands ``state`` on (a chain that begins with a group loses the group's
    own arguments), then each wave gets the state the wave before returned. ``finishing``: a last task records
    the end, and an error callback a failure, so that nobody waits on the canvas (a run as a job)."""
    parts: list[Signature] = [celery.signature(MERGE_TASK, args=[[state]], queue=FUSION_QUEUE)]
    for wave in workflow.levels():
        if len(wave) == 1:
            parts.append(_step(celery, run_id, wave[0]))
        else:
            parts.append(group(_step(celery, run_id, step) for step in wave))
            parts.append(celery.signature(MERGE_TASK, queue=FUSION_QUEUE))
    if not finishing:
        return chain(*parts)
    parts.append(celery.signature(FINISH_TASK, args=[run_id], queue=FUSION_QUEUE))
    return chain(*parts).on_error(celery.signature(FAILED_TASK, args=[run_id], queue=FUSION_QUEUE))


def start(
    celery: Celery,
    workflow: Workflow,
    given: dict[str, Any],
    run_id: str,
    request_id: str,
    job: tuple[str, str],
    timeout: float,
) -> None:
    """Starts a run as the MCP job ``job`` (id, claim) and returns at once: no worker thread waits on it. Its
    last task records the result and completes the job; a failed step, the deadline or a cancellation fails
    the run (and the job, unless it was cancelled)."""
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    workflow_store.start_run(run_id, workflow, given, request_id, job=job, deadline=deadline)
    build(celery, workflow, run_id, initial_state(run_id, given, request_id), finishing=True).apply_async()


def result_of(workflow_result: dict[str, str] | None, steps: list[dict[str, Any]], state: dict[str, Any]) -> dict:
    outputs = {name: value["output"] for name, value in state["steps"].items()}
    if workflow_result:
        return {key: outputs.get(step_id) for key, step_id in workflow_result.items()}
    return {"output": outputs.get(steps[-1]["step_id"]), "steps": outputs}


def execute(
    celery: Celery,
    workflow: Workflow,
    given: dict[str, Any],
    run_id: str,
    request_id: str,
    timeout: float,
    on_progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> workflow_store.FusionRun:
    """Runs the workflow and waits for it, reporting steps done (``on_progress(done, total)``) and stopping when
    ``cancelled``; records its status, result or error and returns the run."""
    workflow_store.start_run(run_id, workflow, given, request_id)
    outcome = build(celery, workflow, run_id, initial_state(run_id, given, request_id)).apply_async()
    deadline = time.monotonic() + timeout
    total, done = len(workflow.steps), 0
    final: Any = None
    while final is None:
        try:
            final = outcome.get(timeout=POLL_SECONDS, propagate=False, disable_sync_subtasks=False, interval=0.05)
        except CeleryTimeout:
            if time.monotonic() > deadline:
                final = TimeoutError(f"the workflow did not finish within {timeout:g}s")
            elif cancelled is not None and cancelled():
                outcome.revoke()
                final = RuntimeError("the workflow was cancelled")
            else:
                trace = workflow_store.get_run(run_id).trace
                if any(entry.get("status") == "failed" for entry in trace):
                    final = RuntimeError("a step failed")  # the waves after it never run: nothing more will come
                elif on_progress is not None and len(trace) != done:
                    done = len(trace)
                    on_progress(done, total)
    finish(run_id, final)
    run = workflow_store.get_run(run_id)
    assert run is not None
    return run


def finish(run_id: str, final: Any) -> bool:
    """Records the end of a run: its result (``final`` is the last state), or the error (``final`` is an
    exception) and a ``not_run`` entry for each step that never ran. False when the run had ended already."""
    run = workflow_store.get_run(run_id)
    if run is None or run.status != "running":
        return False
    steps = [dict(step) for step in run.steps]
    if isinstance(final, dict) and "steps" in final:
        return workflow_store.finish_run(run_id, "completed", result_of(dict(run.result_map), steps, final), None)
    traced = {entry["step"] for entry in run.trace}
    failed = next((e for e in run.trace if e.get("status") == "failed"), None)
    error = f"step {failed['step']} failed: {failed['error']}" if failed else f"{type(final).__name__}: {final}"
    if not workflow_store.finish_run(run_id, "failed", None, error):
        return False
    for step in steps:
        if step["step_id"] not in traced:
            reason = "a step it depends on failed" if failed else "the workflow ended first"
            workflow_store.add_trace(
                run_id, {"step": step["step_id"], "type": step["type"], "status": "not_run", "reason": reason}
            )
    return True
