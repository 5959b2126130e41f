"""Fusion (specification section 3): list, compose and delete workflows; run one as a Celery canvas, waiting for
it or as an MCP job (``async``). The steps run on the control worker and the models' queues (``tasks.fusion``).
"""

from __future__ import annotations

import uuid
from typing import Any

import mongoengine as me
from flask import current_app, g, jsonify
from flask.views import MethodView
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from config.clock import iso
from config.errors import ApiError
from config.model_types import RERANK
from models import registry
from tasks.fusion import canvas, workflow_store
from tasks.fusion.definitions import PREDEFINED, DefinitionError, Workflow, check, for_run, from_request
from tasks.job_store import JobRequest
from web.api import Blueprint, dispatcher
from web.identity import current_caller
from web.schemas.fusion import (
    ComposeSchema,
    OrchestrateSchema,
    RunSchema,
    WorkflowDeletedSchema,
    WorkflowListSchema,
    WorkflowSummarySchema,
)

blp = Blueprint("fusion", __name__, url_prefix="/api/fusion", description="Fusion: multi-model workflows")

OPERATION_OF_STEP = {"model_call": None, "summarize": "chat"}


def find(workflow_id: str) -> Workflow:
    return workflow_store.find(workflow_id)


def described(workflow: Workflow, with_steps: bool = False) -> dict[str, Any]:
    summary = workflow.summary()
    if with_steps:
        summary["steps"] = [step.to_dict() for step in workflow.steps]
    return summary


def check_input(workflow: Workflow, given: dict[str, Any]) -> None:
    """400 naming the first field of ``input`` that the workflow's JSON schema refuses."""
    schema = workflow.input_schema or {"type": "object"}
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    error = next(iter(sorted(validator.iter_errors(given), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        raise ApiError(
            400,
            f"input{'.' + path if path else ''}: {error.message}",
            code="invalid_input",
            param=f"input.{path}" if path else "input",
        )


def for_this_run(workflow: Workflow, models: dict[str, Any]) -> Workflow:
    return for_run(workflow, models, current_app.extensions["liveness"].models_of_type("lm"))


def check_models(workflow: Workflow, models: dict[str, Any]) -> str:
    """404/503/400 for a model a step needs that is unknown, not served or of the wrong type; returns the first
    model the workflow calls (the job's model)."""
    first = None
    if models.get("rerank"):
        dispatcher().require_model(str(models["rerank"]), RERANK, param="models.rerank")
    for step in workflow.steps:
        if step.type not in OPERATION_OF_STEP:
            continue
        operation = step.operation or OPERATION_OF_STEP[step.type] or "chat"
        chosen = step.chosen_model(models)
        param = f"models.{step.role or step.step_id}"
        if chosen:
            dispatcher().require_model(chosen, operation, param=param)
        else:
            chosen = dispatcher().pick_model(operation, param, step.model_type)
        first = first or chosen
    return first or dispatcher().pick_model("chat", "models")


@blp.route("/workflows")
class Workflows(MethodView):
    @blp.response(200, WorkflowListSchema)
    def get(self):
        listed = [described(w) for w in PREDEFINED.values()] + [described(w) for w in workflow_store.all_composed()]
        return {"workflows": listed, "request_id": g.request_id}


@blp.route("/workflows/<workflow_id>")
class OneWorkflow(MethodView):
    @blp.response(200, WorkflowSummarySchema)
    def get(self, workflow_id: str):
        return described(find(workflow_id), with_steps=True)

    @blp.alt_response(200, schema=WorkflowDeletedSchema, description="The composed workflow is deleted")
    def delete(self, workflow_id: str):
        workflow = find(workflow_id)
        if workflow.predefined:
            raise ApiError(400, f"'{workflow_id}' is predefined and cannot be deleted", code="invalid_value")
        workflow_store.delete_composed(workflow_id)
        return {"workflow_id": workflow_id, "deleted": True, "request_id": g.request_id}


@blp.route("/compose")
class Compose(MethodView):
    @blp.arguments(ComposeSchema)
    @blp.alt_response(201, description="The workflow is stored")
    @blp.alt_response(409, description="A workflow of that name exists")
    def post(self, body: dict[str, Any]):
        if body["name"] in PREDEFINED:
            raise ApiError(409, f"'{body['name']}' is a predefined workflow", code="workflow_exists", param="name")
        workflow = from_request(body)
        try:
            check(workflow, known_model=lambda model_id: registry.get_record(model_id) is not None)
        except DefinitionError as exc:
            raise ApiError(400, f"{exc.field}: {exc}", code="invalid_workflow", param=exc.field) from None
        try:
            created = workflow_store.save_composed(workflow)
        except me.NotUniqueError:
            raise ApiError(
                409, f"A workflow named '{body['name']}' exists", code="workflow_exists", param="name"
            ) from None
        response = jsonify(
            {
                "workflow_id": workflow.workflow_id,
                "name": workflow.name,
                "status": "created",
                "created_at": iso(created),
                "request_id": g.request_id,
            }
        )
        response.status_code = 201
        return response


@blp.route("/orchestrate")
class Orchestrate(MethodView):
    @blp.arguments(OrchestrateSchema)
    @blp.response(200, RunSchema)
    @blp.alt_response(202, description="async=true: the workflow runs as an MCP job (poll /api/mcp/jobs/{job_id})")
    @blp.alt_response(400, description="Input the workflow's schema refuses, named")
    @blp.alt_response(404, description="Unknown workflow")
    @blp.alt_response(503, description="A model the workflow needs is not loaded (model_unavailable, named)")
    def post(self, body: dict[str, Any]):
        workflow = for_this_run(find(body["workflow"]), body["models"])
        check_input(workflow, body["input"])
        first_model = check_models(workflow, body["models"])
        given = {"input": body["input"], "models": body["models"], "config": body["config"]}
        # the collections its steps may search, and the key its model calls' tokens count for
        given.update(sees=current_caller().sees, owner=current_caller().owner)
        if body["async_"]:
            request = JobRequest(
                model_id=first_model,
                operation="fusion",
                input={"workflow": body["workflow"], **given},
                priority=body["priority"],
                callback_url=body.get("callback_url"),
                metadata={"workflow": body["workflow"]},
                request_id=g.request_id,
                owner=current_caller().owner,
            )
            response = jsonify(current_app.extensions["jobs"].submit(request))
            response.status_code = 202
            return response
        settings = current_app.extensions["settings"]
        run = canvas.execute(
            current_app.extensions["celery"],
            workflow,
            given,
            f"wf-{uuid.uuid4().hex[:16]}",
            g.request_id,
            settings.fusion_timeout_seconds,
        )
        return {**workflow_store.view(run), "request_id": g.request_id}
