"""Fusion bodies (specification section 3): orchestrate, compose."""

from __future__ import annotations

from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from web.schemas.fields import storable_keys


class OrchestrateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    workflow = fields.String(required=True, validate=validate.Length(min=1, max=64))
    input = fields.Dict(keys=fields.String(), required=True)
    models = fields.Dict(keys=fields.String(), load_default=dict)
    config = fields.Dict(keys=fields.String(), load_default=dict)
    async_ = fields.Boolean(data_key="async", load_default=False)
    priority = fields.String(load_default="normal", validate=validate.OneOf(("high", "normal", "low")))
    callback_url = fields.String(validate=validate.Length(min=1, max=2000))

    @validates("config")
    def _config(self, value: dict[str, Any], **_kwargs: Any) -> None:
        if "top_k" in value and not (isinstance(value["top_k"], int) and 1 <= value["top_k"] <= 50):
            raise ValidationError("top_k must be an integer from 1 to 50.")
        if "temperature" in value and not (
            isinstance(value["temperature"], int | float) and 0 <= value["temperature"] <= 2
        ):
            raise ValidationError("temperature must be a number from 0 to 2.")
        if "max_tokens" in value and not (isinstance(value["max_tokens"], int) and 1 <= value["max_tokens"] <= 4096):
            raise ValidationError("max_tokens must be an integer from 1 to 4096.")

    @validates("models")
    def _models(self, value: dict[str, Any], **_kwargs: Any) -> None:
        for key, model in value.items():
            ok = (
                isinstance(model, str)
                and model
                or (isinstance(model, list) and model and all(isinstance(m, str) and m for m in model))
            )
            if not ok:
                raise ValidationError(f"models.{key} must be a model id (or, for answerers, a list of them).")


class StepSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    step_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    type = fields.String(required=True)
    operation = fields.String()
    model_id = fields.String(validate=validate.Length(min=1, max=200))
    input = fields.Raw()
    collection = fields.Raw()
    query_embedding = fields.Raw()
    query = fields.Raw()
    top_k = fields.Raw(load_default=5)


class ComposeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    steps = fields.List(fields.Nested(StepSchema), required=True, validate=validate.Length(min=1, max=32))
    input_schema = fields.Dict(keys=fields.String())

    @validates("steps")
    def _storable(self, value: list[dict[str, Any]], **_kwargs: Any) -> None:
        for step in value:
            storable_keys(step)

    @validates("input_schema")
    def _schema(self, value: dict[str, Any], **_kwargs: Any) -> None:
        storable_keys(value)
        try:
            validator_for(value).check_schema(value)
        except SchemaError as exc:
            raise ValidationError(f"Not a valid JSON schema: {exc.message}") from None


class WorkflowSummarySchema(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()
    required_models = fields.List(fields.String())
    optional_models = fields.List(fields.String())
    input_schema = fields.Dict()
    predefined = fields.Boolean()
    steps = fields.List(fields.Dict())


class WorkflowListSchema(Schema):
    workflows = fields.List(fields.Nested(WorkflowSummarySchema))
    request_id = fields.String()


class RunSchema(Schema):
    workflow_id = fields.String(metadata={"description": "The run's id (wf-...)"})
    workflow = fields.String()
    status = fields.String()
    result = fields.Dict(allow_none=True)
    execution_trace = fields.List(fields.Dict())
    total_latency_ms = fields.Float(allow_none=True)
    created_at = fields.String()
    completed_at = fields.String(allow_none=True)
    error = fields.String()
    request_id = fields.String()


class WorkflowDeletedSchema(Schema):
    workflow_id = fields.String()
    deleted = fields.Boolean()
    request_id = fields.String()
