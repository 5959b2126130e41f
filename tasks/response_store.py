"""Stored Responses (``POST /v1/responses`` with ``store``): the conversation so far, so that a later request
continues it with ``previous_response_id``, and the response object for ``GET /v1/responses/{id}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mongoengine as me


class StoredResponse(me.Document):
    meta = {"collection": "responses", "indexes": ["created_at"]}

    response_id = me.StringField(primary_key=True)
    model = me.StringField(required=True)
    conversation = me.ListField(me.DictField())
    """Chat messages of every turn up to and including this response's output."""
    response = me.DictField()
    created_at = me.DateTimeField(required=True)


def save(response_id: str, model: str, conversation: list[dict[str, Any]], response: dict[str, Any]) -> None:
    StoredResponse(
        response_id=response_id,
        model=model,
        conversation=conversation,
        response=response,
        created_at=datetime.now(UTC),
    ).save(force_insert=True)


def get(response_id: str) -> StoredResponse | None:
    return StoredResponse.objects(response_id=response_id).first()


def delete(response_id: str) -> bool:
    return bool(StoredResponse.objects(response_id=response_id).delete())
