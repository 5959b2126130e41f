"""``/v1/images/generations`` (JSON) and ``/v1/images/edits`` (form): OpenAI's fields and answer."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from web.schemas.fields import MODEL_ID, USER

SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
MIN_SIDE, MAX_SIDE, MULTIPLE = 64, 2048, 16
DEFAULT_SIZE = "1024x1024"


def parse_size(value: str) -> tuple[int, int]:
    """``WxH`` (or ``auto``: 1024x1024) within 64..2048 pixels, each side a multiple of 16 (the latent grid)."""
    match = SIZE.match(DEFAULT_SIZE if value == "auto" else value)
    if not match:
        raise ValidationError("Must be WIDTHxHEIGHT (such as 1024x1024) or auto.")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE or side % MULTIPLE:
            raise ValidationError(f"Each side must be a multiple of {MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}.")
    return width, height


class ImageOptionsSchema(Schema):
    """What generation and edits share. ``seed`` and ``steps`` are this platform's extensions."""

    class Meta:
        unknown = EXCLUDE

    AUTO_IS_INPUT_SIZE = False
    model = fields.String(required=True, validate=MODEL_ID)
    prompt = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    n = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10))
    size = fields.String(load_default=DEFAULT_SIZE)
    response_format = fields.String(load_default="b64_json", validate=validate.OneOf(("b64_json", "url")))
    seed = fields.Integer(validate=validate.Range(min=0, max=2**31 - 1))
    steps = fields.Integer(validate=validate.Range(min=1, max=50))
    quality = fields.String(validate=validate.OneOf(("auto", "standard")))
    style = fields.String()
    background = fields.String(validate=validate.OneOf(("auto", "opaque")))
    output_format = fields.String(validate=validate.OneOf(("png",)))
    user = fields.String(validate=USER)

    @post_load
    def _size(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if data["size"] == "auto" and self.AUTO_IS_INPUT_SIZE:
            data["width"] = data["height"] = None
            return data
        try:
            data["width"], data["height"] = parse_size(data["size"])
        except ValidationError as exc:
            raise ValidationError(exc.messages, "size") from None
        if "style" in data:
            raise ValidationError("Not supported: styles are a DALL-E 3 option.", "style")
        return data


class ImageGenerationSchema(ImageOptionsSchema):
    pass


class ImageEditFormSchema(ImageOptionsSchema):
    """The form fields of an edit; the images come as ``image`` (or ``image[]``) parts, the mask as ``mask``.
    ``size`` ``auto`` (the default) is the first image's size."""

    AUTO_IS_INPUT_SIZE = True
    size = fields.String(load_default="auto")


class ImageDataSchema(Schema):
    b64_json = fields.String()
    url = fields.String()
    revised_prompt = fields.String(allow_none=True)
    seed = fields.Integer()


class ImagesResponseSchema(Schema):
    created = fields.Integer()
    data = fields.List(fields.Nested(ImageDataSchema))
    size = fields.String()
    output_format = fields.String()
    request_id = fields.String()
