"""The fusion Celery tasks, run by the control worker: one step of a run, the merge after a group of steps, and
for a run that is an MCP job the task that finishes it (and the error callback that fails it)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import cache
from typing import Any

from celery import shared_task

from config.clock import as_utc
from tasks import job_store
from tasks.fusion import canvas, workflow_store
from tasks.fusion.canvas import FAILED_TASK, FINISH_TASK, MERGE_TASK, STEP_TASK, merge_states
from tasks.fusion.definitions import Step
from tasks.fusion.steps import StepRunner
from tasks.progress import write_progress

log = logging.getLogger(__name__)


class RunStopped(Exception):
    """The run's job was cancelled, or its deadline passed: the steps left do not run."""


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
    if run.job_id:
        _check_still_wanted(run)
    step = next(Step(**json.loads(json.dumps(raw))) for raw in run.steps if raw["step_id"] == step_id)
    output = runner().run(step, state)
    if run.job_id:
        _report_progress(run_id, run.job_id, len(run.steps))
    return {**state, "steps": {**state["steps"], step_id: {"output": output}}}


def _report_progress(run_id: str, job_id: str, total: int) -> None:
    """The job's progress after a step: the steps done and the run's trace so far, so a watcher sees it fill in."""
    run = workflow_store.get_run(run_id)
    if run is None:
        return
    trace = [dict(entry) for entry in run.trace]
    done = len({entry["step"] for entry in trace} & {step["step_id"] for step in run.steps})
    detail = {"steps_done": done, "steps": total, "execution_trace": trace}
    write_progress(runner().dispatcher.redis, job_id, done / total, detail)


def _check_still_wanted(run: workflow_store.FusionRun) -> None:
    job = job_store.get(run.job_id)
    if job is None or job.status != "processing" or job.claim != run.job_claim:
        raise RunStopped("the workflow was cancelled")
    if run.deadline is not None and datetime.now(UTC) > as_utc(run.deadline):
        raise RunStopped("the workflow did not finish within its time")


@shared_task(name=FINISH_TASK)
def finish(state: dict[str, Any], run_id: str) -> None:
    """The last task of a run as a job: records its result and completes the job."""
    if canvas.finish(run_id, state):
        _settle_job(run_id)


@shared_task(name=FAILED_TASK)
def failed(request: Any, exc: BaseException, traceback: Any, run_id: str) -> None:
    """The error callback of a run as a job: a step failed or the run stopped; records it and fails the job."""
    if canvas.finish(run_id, exc):
        _settle_job(run_id)


def _settle_job(run_id: str) -> None:
    """Completes or fails the run's job with the run's view (a cancelled job stays cancelled)."""
    run = workflow_store.get_run(run_id)
    if run is None or not run.job_id:
        return
    if run.status == "completed":
        settled = job_store.complete(run.job_id, run.job_claim, workflow_store.view(run))
    else:
        message = f"workflow {run.run_id}: {run.error}"
        settled = job_store.fail(run.job_id, run.job_claim, message, "workflow_failed")
    if not settled:
        log.info("job %s of run %s was no longer this run's (cancelled or taken back)", run.job_id, run_id)


@shared_task(name=MERGE_TASK)
def merge(states: list[dict[str, Any]]) -> dict[str, Any]:
    return merge_states(states)
