"""LoRA adapter bodies: add one to a language model, list them, delete one."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from tasks.adapters import ADAPTER_ID


class AddAdapterRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    adapter_id = fields.String(
        required=True,
        validate=validate.Regexp(ADAPTER_ID, error="adapter_id: letters, digits, '.', '_' and '-' (at most 64)"),
        metadata={"description": "requests name it as model '<model id>:<adapter id>'"},
    )
    adapter_path = fields.String(
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={
            "description": "a folder under the model roots in mlx-lm's adapter format (adapters.safetensors and "
            "adapter_config.json, as mlx_lm.lora writes it), or a Hugging Face repo id of one"
        },
    )


class AdapterSchema(Schema):
    id = fields.String(metadata={"description": "the model id requests give: '<model id>:<adapter id>'"})
    object = fields.String()
    adapter_id = fields.String()
    parent = fields.String(metadata={"description": "the base model"})
    source = fields.String(metadata={"description": "the folder, or hf://<repo id>"})
    rank = fields.Integer(allow_none=True)
    layers = fields.Integer(allow_none=True, metadata={"description": "linear layers the adapter changes"})
    memory_bytes = fields.Integer(metadata={"description": "what each worker of the model holds for it"})
    created = fields.Integer()
    request_id = fields.String()


class AdapterListSchema(Schema):
    object = fields.String()
    data = fields.List(fields.Nested(AdapterSchema))
    request_id = fields.String()


class DeletedAdapterSchema(Schema):
    id = fields.String()
    object = fields.String()
    deleted = fields.Boolean()
    request_id = fields.String()
