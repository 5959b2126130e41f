"""Composed workflows and workflow runs in MongoDB. A run keeps its definition (so a composed workflow deleted
meanwhile still finishes), its trace (each step appends its own entry) and its result."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import mongoengine as me

from config.clock import iso
from config.errors import ApiError
from tasks.fusion.definitions import PREDEFINED, Step, Workflow


class ComposedWorkflow(me.Document):
    meta = {"collection": "fusion_workflows"}

    workflow_id = me.StringField(primary_key=True)
    description = me.StringField()
    steps = me.ListField(me.DictField())
    input_schema = me.DictField()
    created_at = me.DateTimeField(required=True)


class FusionRun(me.Document):
    meta = {"collection": "fusion_runs", "indexes": ["created_at"]}

    run_id = me.StringField(primary_key=True)
    workflow_id = me.StringField(required=True)
    steps = me.ListField(me.DictField())
    result_map = me.DictField()
    input = me.DictField()
    config = me.DictField()
    models = me.DictField()
    status = me.StringField(required=True)
    trace = me.ListField(me.DictField())
    result = me.DictField()
    error = me.StringField()
    request_id = me.StringField()
    job_id = me.StringField()
    """The MCP job the run is (``async``), finished by the run's last task; None for a run a caller waits on."""
    job_claim = me.StringField()
    deadline = me.DateTimeField()
    created_at = me.DateTimeField(required=True)
    completed_at = me.DateTimeField()


def workflow_of(document: ComposedWorkflow) -> Workflow:
    """The stored steps as plain values (mongoengine hands back its own dict and list types)."""
    return Workflow(
        workflow_id=document.workflow_id,
        name=document.workflow_id,
        description=document.description or "",
        steps=tuple(Step(**json.loads(json.dumps(raw))) for raw in document.steps),
        input_schema=dict(document.input_schema or {"type": "object"}),
        predefined=False,
    )


def save_composed(workflow: Workflow) -> datetime:
    """Stores ``workflow``; raises ``me.NotUniqueError`` when its name is taken."""
    created = datetime.now(UTC)
    ComposedWorkflow(
        workflow_id=workflow.workflow_id,
        description=workflow.description,
        steps=[step.to_dict() for step in workflow.steps],
        input_schema=workflow.input_schema,
        created_at=created,
    ).save(force_insert=True)
    return created


def composed(workflow_id: str) -> Workflow | None:
    document = ComposedWorkflow.objects(workflow_id=workflow_id).first()
    return workflow_of(document) if document else None


def find(workflow_id: str) -> Workflow:
    """A predefined or composed workflow; 404 ``invalid_workflow`` otherwise (the specification's code)."""
    workflow = PREDEFINED.get(workflow_id) or composed(workflow_id)
    if workflow is None:
        raise ApiError(404, f"Workflow '{workflow_id}' not found", code="invalid_workflow", param="workflow")
    return workflow


def all_composed() -> list[Workflow]:
    return [workflow_of(document) for document in ComposedWorkflow.objects.order_by("workflow_id")]


def delete_composed(workflow_id: str) -> bool:
    return bool(ComposedWorkflow.objects(workflow_id=workflow_id).delete())


def start_run(
    run_id: str,
    workflow: Workflow,
    given: dict[str, Any],
    request_id: str,
    job: tuple[str, str] | None = None,
    deadline: datetime | None = None,
) -> FusionRun:
    """Records a new run; ``job`` is the (job id, claim) it finishes, for a run as an MCP job."""
    run = FusionRun(
        run_id=run_id,
        workflow_id=workflow.workflow_id,
        steps=[step.to_dict() for step in workflow.steps],
        result_map=workflow.result or {},
        input=given["input"],
        config=given.get("config") or {},
        models=given.get("models") or {},
        status="running",
        request_id=request_id,
        job_id=job[0] if job else None,
        job_claim=job[1] if job else None,
        deadline=deadline,
        created_at=datetime.now(UTC),
    )
    run.save(force_insert=True)
    return run


def get_run(run_id: str) -> FusionRun | None:
    return FusionRun.objects(run_id=run_id).first()


def add_trace(run_id: str, entry: dict[str, Any]) -> None:
    FusionRun.objects(run_id=run_id).update_one(push__trace=entry)


def finish_run(run_id: str, status: str, result: dict[str, Any] | None, error: str | None) -> bool:
    """Records the end of a running run; False when it had ended already (an error callback may come twice)."""
    return bool(
        FusionRun.objects(run_id=run_id, status="running").update_one(
            set__status=status, set__result=result or {}, set__error=error, set__completed_at=datetime.now(UTC)
        )
    )


def view(run: FusionRun) -> dict[str, Any]:
    """The answer of ``POST /api/fusion/orchestrate`` for a run."""
    created, completed = run.created_at, run.completed_at
    answer = {
        "workflow_id": run.run_id,
        "workflow": run.workflow_id,
        "status": run.status,
        "result": dict(run.result or {}) if run.status == "completed" else None,
        "execution_trace": [dict(entry) for entry in run.trace],
        "total_latency_ms": round((completed - created).total_seconds() * 1000, 1) if completed else None,
        "created_at": iso(created),
        "completed_at": iso(completed) if completed else None,
    }
    if run.error:
        answer["error"] = run.error
    return answer
