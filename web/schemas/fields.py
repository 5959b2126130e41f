"""Fields for OpenAI's union-typed values (string or list)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate


class StringOrStringList(fields.Field):
    """A string or a list of strings, deserialised to a list of strings."""

    def __init__(self, *, max_items: int | None = None, allow_empty_strings: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_items = max_items
        self.allow_empty_strings = allow_empty_strings

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValidationError("Must be a string or an array of strings.")
        if not items:
            raise ValidationError("Must not be empty.")
        if self.max_items is not None and len(items) > self.max_items:
            raise ValidationError(f"At most {self.max_items} items are allowed.")
        if not self.allow_empty_strings and any(not item for item in items):
            raise ValidationError("Must not contain empty strings.")
        return items


class EmbeddingInput(StringOrStringList):
    """OpenAI's embedding ``input``: a string, a list of strings, a list of token ids, or a list of such lists.
    Token ids are loaded as ``{"tokens": [[...], ...]}``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
            if not all(
                item and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in item) for item in value
            ):
                raise ValidationError("Token-id inputs must be non-empty lists of non-negative integers.")
            if self.max_items is not None and len(value) > self.max_items:
                raise ValidationError(f"At most {self.max_items} items are allowed.")
            return {"tokens": value}
        return super()._deserialize(value, attr, data, **kwargs)


class MessageContent(fields.Field):
    """A message's content: a string, null, or a list of parts: ``{"type": "text", "text": ...}``, or
    ``{"type": "image_url", "image_url": {"url": ...}}`` for vision models (checked against the model later)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or an array of content parts.")
        for index, part in enumerate(value):
            if not isinstance(part, dict) or "type" not in part:
                raise ValidationError({index: ["Each content part must be an object with a 'type'."]})
            if part["type"] == "image_url":
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else image_url
                if not isinstance(url, str) or not url:
                    raise ValidationError({index: ["An image_url part needs image_url.url."]})
                continue
            if part["type"] != "text":
                raise ValidationError({index: [f"Content parts of type {part['type']!r} are not supported."]})
            if not isinstance(part.get("text"), str):
                raise ValidationError({index: ["A text part needs a string 'text'."]})
        return value


def storable_keys(value: Any, path: str = "") -> None:
    """Refuses keys MongoDB cannot store (starting with ``$``, holding ``.`` or a NUL byte), at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                raise ValidationError(f"Keys may not start with '$' or contain '.' or a NUL byte: {path}{key!r}")
            storable_keys(inner, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            storable_keys(item, path)


class OpenSchema(Schema):
    """A body documented by its main fields, with room for more (no ``additionalProperties: false``)."""

    class Meta:
        unknown = EXCLUDE


class OpenAIPageSchema(OpenSchema):
    """A page of an OpenAI list (``object: list``); a subclass gives its ``data``."""

    object = fields.String()
    first_id = fields.String(allow_none=True)
    last_id = fields.String(allow_none=True)
    has_more = fields.Boolean()


MODEL_ID = validate.Length(min=1, max=200)
"""A request's ``model``: a catalog id, a Hugging Face id or a folder's name is never longer."""
USER = validate.Length(max=256)
MAX_MESSAGES = 4096
CONVERSATION = validate.Length(min=1, max=MAX_MESSAGES)
"""A request's ``messages``: at least one, at most ``MAX_MESSAGES`` (more would not fit any context served here)."""
