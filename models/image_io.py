"""Images to and from the base64 strings that travel in task payloads and results (Pillow)."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from config.errors import ApiError


def decode_image(data: str, what: str, param: str) -> Image.Image:
    """The image in ``data`` (base64); a 400 naming ``param`` when Pillow cannot read it."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, binascii.Error) as exc:
        raise ApiError(
            400, f"{what} is not an image Pillow can read: {exc}", code="invalid_image", param=param
        ) from None
    return image


def encode_png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
