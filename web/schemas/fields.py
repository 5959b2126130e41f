"""Fields for OpenAI's union-typed values (string or list)."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields


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


class MessageContent(fields.Field):
    """A message's content: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or an array of content parts.")
        for index, part in enumerate(value):
            if not isinstance(part, dict) or "type" not in part:
                raise ValidationError({index: ["Each content part must be an object with a 'type'."]})
            if part["type"] != "text":
                raise ValidationError(
                    {index: [f"Content parts of type {part['type']!r} are not supported by this model."]}
                )
            if not isinstance(part.get("text"), str):
                raise ValidationError({index: ["A text part needs a string 'text'."]})
        return value


def storable_keys(value: Any, path: str = "") -> None:
    """Refuses keys MongoDB cannot store (starting with ``$`` or holding ``.``), at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key:
                raise ValidationError(f"Keys may not start with '$' or contain '.': {path}{key!r}")
            storable_keys(inner, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            storable_keys(item, path)
