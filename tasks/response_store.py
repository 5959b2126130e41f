"""Stored Responses (``POST /v1/responses`` with ``store``): the conversation so far, so that a later request
continues it with ``previous_response_id``, and the response object for ``GET /v1/responses/{id}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mongoengine as me

from config.ownership import owned_by


class StoredResponse(me.Document):
    meta = {"collection": "responses", "indexes": ["created_at", "owner"]}

    response_id = me.StringField(primary_key=True)
    model = me.StringField(required=True)
    conversation = me.ListField(me.DictField())
    """Chat messages of every turn up to and including this response's output."""
    response = me.DictField()
    created_at = me.DateTimeField(required=True)
    owner = me.StringField()
    """The API key that made the response (see ``config.ownership``)."""


def save(
    response_id: str,
    model: str,
    conversation: list[dict[str, Any]],
    response: dict[str, Any],
    owner: str | None = None,
) -> bool:
    """Stores a response once: False when one with this id is stored already (a batch's output file read twice
    at once stores each line's response once)."""
    try:
        StoredResponse(
            response_id=response_id,
            model=model,
            conversation=conversation,
            response=response,
            created_at=datetime.now(UTC),
            owner=owner,
        ).save(force_insert=True)
    except me.NotUniqueError:
        return False
    return True


def get(response_id: str, sees: str | None = None) -> StoredResponse | None:
    """The stored response, if it exists and ``sees`` may see it."""
    return StoredResponse.objects(response_id=response_id, **owned_by(sees)).first()


def delete(response_id: str, sees: str | None = None) -> bool:
    return bool(StoredResponse.objects(response_id=response_id, **owned_by(sees)).delete())
