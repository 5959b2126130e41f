"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` on an image model's queue (mflux), and the
expiring downloads of images answered as URLs (``GET /files/images/<token>.png``: outside ``/v1``, the token is
the permission, so a browser can open it)."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, current_app, g, request, url_for
from flask.views import MethodView

from config.errors import ApiError
from tasks import image_files
from web.api import Blueprint, dispatcher
from web.schemas.images import ImageEditFormSchema, ImageGenerationSchema, ImagesResponseSchema
from web.uploads import upload_base64

blp = Blueprint("images", __name__, url_prefix="/v1/images", description="OpenAI images: generation and edits")
files = Blueprint("image_files", __name__, description="Generated images, by the URL an answer gave")

IMAGE_FIELDS = ("image", "image[]")
MAX_EDIT_IMAGES = 16
FORM_SLACK_BYTES = 64 * 1024
PAYLOAD_FIELDS = ("prompt", "n", "width", "height", "seed", "steps")


def _settings() -> Any:
    return current_app.extensions["settings"]


@blp.before_request
def _room_for_uploads() -> None:
    if request.endpoint == "images.ImageEdits":
        request.max_content_length = (MAX_EDIT_IMAGES + 1) * _settings().image_max_bytes + FORM_SLACK_BYTES


def _answer(result: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    data = []
    for image in result["images"]:
        if form["response_format"] == "url":
            token = image_files.keep(
                current_app.extensions["redis"], image["b64_json"], _settings().image_url_ttl_seconds
            )
            data.append({"url": url_for("image_files.ImageFile", token=token, _external=True), "seed": image["seed"]})
        else:
            data.append({"b64_json": image["b64_json"], "seed": image["seed"]})
    return {
        "created": int(time.time()),
        "data": data,
        "size": result["size"],
        "output_format": "png",
        "request_id": g.request_id,
    }


def _run(form: dict[str, Any], extra: dict[str, Any], model_type: str) -> dict[str, Any]:
    model = form["model"]
    dispatcher().require_model(model, "image_gen")
    served = dispatcher().model_type(model)
    if served != model_type:
        raise ApiError(
            400,
            f"Model '{model}' is an {served} model; this endpoint needs an {model_type} model",
            code="unsupported_operation",
            param="model",
        )
    payload = {name: form[name] for name in PAYLOAD_FIELDS if form.get(name) is not None} | extra
    result = dispatcher().result(dispatcher().start(model, "image_gen", payload, g.request_id))
    return _answer(result, form)


@blp.route("/generations")
class ImageGenerations(MethodView):
    @blp.arguments(ImageGenerationSchema)
    @blp.response(200, ImagesResponseSchema)
    @blp.alt_response(400, description="A parameter the model cannot apply, named")
    def post(self, form: dict[str, Any]):
        return _run(form, {}, "image-generation")


@blp.route("/edits")
class ImageEdits(MethodView):
    @blp.arguments(ImageEditFormSchema, location="form")
    @blp.response(200, ImagesResponseSchema)
    @blp.alt_response(400, description="A missing or unreadable image or mask, or a parameter, named")
    @blp.alt_response(413, description="An image over the size limit")
    def post(self, form: dict[str, Any]):
        uploads = [storage for name in IMAGE_FIELDS for storage in request.files.getlist(name)]
        if not uploads:
            raise ApiError(400, "Send the image to edit as the 'image' form field", code="missing_image", param="image")
        if len(uploads) > MAX_EDIT_IMAGES:
            raise ApiError(400, f"At most {MAX_EDIT_IMAGES} images per edit", code="too_many_images", param="image")
        limit = _settings().image_max_bytes
        extra: dict[str, Any] = {"images": [upload_base64(one, limit, "image", "An image") for one in uploads]}
        if "mask" in request.files:
            extra["mask"] = upload_base64(request.files["mask"], limit, "mask", "The mask")
        return _run(form, extra, "image-edit")


@files.route("/files/images/<token>.png")
class ImageFile(MethodView):
    @files.doc(responses={"200": {"description": "The PNG", "content": {"image/png": {"schema": {"type": "string"}}}}})
    @files.alt_response(404, description="No such image, or it has expired")
    def get(self, token: str) -> Response:
        data = image_files.read(current_app.extensions["redis"], token)
        if data is None:
            raise ApiError(404, "No such image, or it has expired", code="image_not_found")
        return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=300"})
