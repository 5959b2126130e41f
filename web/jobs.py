"""MCP jobs (specification sections 5.1-5.4): submit, look up, list and cancel."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask.views import MethodView

from tasks import job_store, job_watch
from tasks.job_queue import JobQueue
from web.api import Blueprint
from web.identity import current_caller
from web.job_events_stream import QUIET_SECONDS, event_stream
from web.schemas.job_events import JobWaitQuerySchema
from web.schemas.jobs import (
    JobAcceptedSchema,
    JobCancelledSchema,
    JobListQuerySchema,
    JobListSchema,
    JobRequestSchema,
    JobSchema,
)

blp = Blueprint("jobs", __name__, url_prefix="/api/mcp", description="MCP jobs: durable, asynchronous model calls")


def job_queue() -> JobQueue:
    return current_app.extensions["jobs"]


def for_caller(view: dict[str, Any]) -> dict[str, Any]:
    """A job view whose ``request_id`` is this request's; the submitting request's stays as ``submitted_request_id``."""
    return {**view, "submitted_request_id": view.get("request_id"), "request_id": g.request_id}


@blp.route("/jobs")
class Jobs(MethodView):
    @blp.arguments(JobRequestSchema)
    @blp.response(202, JobAcceptedSchema)
    @blp.alt_response(400, description="Invalid operation or input")
    @blp.alt_response(404, description="Model not found")
    @blp.alt_response(429, description="The model's queue is full")
    @blp.alt_response(503, description="The model failed or is being unloaded, or the broker is unreachable")
    def post(self, body: dict[str, Any]):
        return job_queue().submit(job_store.JobRequest(**body, request_id=g.request_id, owner=current_caller().owner))

    @blp.arguments(JobListQuerySchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, query: dict[str, Any]):
        jobs, total = job_store.search(
            query.get("status"),
            query.get("model_id"),
            query["limit"],
            query["offset"],
            query["sort_by"],
            query["order"],
            current_caller().sees,
        )
        return {
            "jobs": [job.public(with_result=False) for job in jobs],
            "total": total,
            "limit": query["limit"],
            "offset": query["offset"],
            "request_id": g.request_id,
        }


@blp.route("/jobs/<job_id>")
class JobDetail(MethodView):
    @blp.arguments(JobWaitQuerySchema, location="query")
    @blp.response(200, JobSchema)
    @blp.alt_response(404, description="Job not found")
    def get(self, query: dict[str, Any], job_id: str):
        sees = current_caller().sees
        if query.get("wait"):
            job_queue().find(job_id, sees)
            job_watch.wait_for_change(current_app.extensions["redis"], job_id, sees, query["wait"], QUIET_SECONDS)
        return for_caller(job_queue().status(job_id, sees))

    @blp.response(200, JobCancelledSchema)
    @blp.alt_response(404, description="Job not found")
    @blp.alt_response(409, description="Job already completed, failed or cancelled")
    def delete(self, job_id: str):
        return {**job_queue().cancel(job_id, current_caller().sees), "request_id": g.request_id}


@blp.route("/jobs/<job_id>/events")
class JobEvents(MethodView):
    @blp.alt_response(
        200,
        description="Server-sent events (text/event-stream): every event of the job (``id:`` its event id), then"
        " ``event: job.final`` with the finished job; send ``Last-Event-ID`` to resume after an event",
    )
    @blp.alt_response(204, description="Last-Event-ID was the final event: nothing more to send")
    @blp.alt_response(404, description="Job not found")
    def get(self, job_id: str):
        sees = current_caller().sees
        job_queue().find(job_id, sees)
        return event_stream(current_app.extensions["redis"], job_id, sees, request.headers.get("Last-Event-ID"))
