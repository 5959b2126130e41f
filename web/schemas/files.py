"""``/v1/files`` bodies and answers, in OpenAI's shapes."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from tasks.file_store import PURPOSES
from web.schemas.fields import OpenAIPageSchema, OpenSchema

MAX_LIST = 10_000


class FileUploadFormSchema(Schema):
    """The form fields beside the multipart ``file``."""

    class Meta:
        unknown = EXCLUDE

    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))


class FileListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=MAX_LIST, validate=validate.Range(min=1, max=MAX_LIST))
    order = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))
    purpose = fields.String(load_default=None, validate=validate.Length(max=64))


class FileObjectSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    bytes = fields.Integer()
    created_at = fields.Integer()
    filename = fields.String()
    purpose = fields.String()
    status = fields.String()


class FileListSchema(OpenAIPageSchema):
    data = fields.List(fields.Nested(FileObjectSchema))


class FileDeletedSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    deleted = fields.Boolean()
