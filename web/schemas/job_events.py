"""Waiting on a job: ``GET /api/mcp/jobs/{id}?wait=N`` and the events of ``GET /api/mcp/jobs/{id}/events``."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

MAX_WAIT_SECONDS = 60
"""The longest a read of a job waits for it to change (a longer wait is a 400 naming ``wait``)."""


class JobWaitQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    wait = fields.Float(
        validate=validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={
            "description": "Seconds to wait for the job's next event (a move to another status) before answering;"
            f" at most {MAX_WAIT_SECONDS}. A finished job answers at once."
        },
    )
