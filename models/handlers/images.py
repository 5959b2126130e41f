"""Image generation and editing with mflux (FLUX.2 Klein): ``/v1/images/generations`` and ``/v1/images/edits``.

Generation runs mflux's text-to-image pipeline once per image (seeds ``seed``,
``seed + 1``, ...). Editing gives the uploaded images to mflux's edit pipeline as
references; with a mask, the answer keeps the first image where the mask is
opaque and takes the generated pixels where it is transparent (OpenAI's meaning).
Each denoising step reports progress and checks for cancellation through an
mflux in-loop callback.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from config.errors import ApiError
from models.handlers.base import PROGRESS, Cancelled, Emit, RequestCancelled
from models.image_io import decode_image, encode_png

DEFAULT_STEPS = 4
_step = threading.local()


class _StepReport:
    """mflux in-loop callback: each finished denoising step is progress and a cancellation checkpoint."""

    def call_in_loop(self, t: int, seed: int, prompt: str, latents: Any, config: Any, time_steps: Any) -> None:
        report = getattr(_step, "report", None)
        if report is not None:
            report(t + 1, config.num_inference_steps)


def output_size(image: Image.Image) -> tuple[int, int]:
    """An input image's size as the model can make it: at most 2048 on a side, multiples of 16, at least 64."""
    width, height = image.size
    scale = min(1.0, 2048 / max(width, height))
    return tuple(max(64, int(side * scale) // 16 * 16) for side in (width, height))  # type: ignore[return-value]


def masked(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """``generated`` where ``mask`` is transparent, ``original`` where it is opaque (all at the output's size)."""
    if "A" not in mask.getbands():
        raise ApiError(400, "The mask must have an alpha channel (transparent where to edit)", param="mask")
    size = generated.size
    keep = mask.getchannel("A").resize(size)
    return Image.composite(original.convert("RGB").resize(size), generated.convert("RGB"), keep)


class ImageHandler:
    def __init__(self, pipeline: Any, edit: bool) -> None:
        self.pipeline = pipeline
        self.edit = edit
        self.context_length = 512
        pipeline.callbacks.register(_StepReport())

    def warmup(self) -> None:
        payload: dict[str, Any] = {"prompt": "warm-up", "n": 1, "width": 64, "height": 64, "steps": 1, "seed": 0}
        if self.edit:
            payload["images"] = [encode_png(Image.new("RGB", (64, 64), "white"))]
        self.generate(payload, lambda _event: None, lambda: False)

    def _one(self, payload: dict[str, Any], seed: int, references: list[str]) -> Image.Image:
        options = {
            "seed": seed,
            "prompt": payload["prompt"],
            "num_inference_steps": payload.get("steps") or DEFAULT_STEPS,
            "width": payload["width"],
            "height": payload["height"],
        }
        if self.edit:
            return self.pipeline.generate_image(**options, image_paths=references).image
        return self.pipeline.generate_image(**options).image

    def generate(self, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        count = int(payload.get("n") or 1)
        first_seed = payload.get("seed")
        first_seed = random.randrange(2**31) if first_seed is None else int(first_seed)
        uploads = [decode_image(data, "An image", "image") for data in payload.get("images") or []]
        mask = decode_image(payload["mask"], "The mask", "mask") if payload.get("mask") else None
        if self.edit and not uploads:
            raise ApiError(400, "An edit needs at least one image", code="missing_image", param="image")
        if not payload.get("width"):
            payload = {**payload, **dict(zip(("width", "height"), output_size(uploads[0]), strict=True))}
        images = []
        with tempfile.TemporaryDirectory(prefix="mlxf-edit-") as folder:
            references = []
            for i, upload in enumerate(uploads):
                path = Path(folder) / f"reference-{i}.png"
                upload.convert("RGB").save(path)
                references.append(str(path))
            for index in range(count):

                def report(step: int, steps: int, index: int = index) -> None:
                    emit(PROGRESS)
                    emit({"type": "progress_fraction", "fraction": (index + step / steps) / count, "detail": {}})
                    if cancelled():
                        raise RequestCancelled("image generation cancelled between steps")

                _step.report = report
                try:
                    image = self._one(payload, first_seed + index, references)
                finally:
                    _step.report = None
                if mask is not None:
                    image = masked(uploads[0], image, mask)
                images.append({"b64_json": encode_png(image), "seed": first_seed + index})
        return {"images": images, "size": f"{payload['width']}x{payload['height']}", "usage": {"total_tokens": 0}}

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup":
            self.warmup()
            return {"prompt_tokens": 0}
        return self.generate(payload, emit, cancelled)


def _pipeline(path: Path, edit: bool) -> Any:
    from models.tiny_flux import is_tiny_flux2, load_tiny_flux2

    if is_tiny_flux2(path):
        if sys.platform.startswith("linux"):
            import mlx.core as mx

            mx.disable_compile()  # MLX's CPU kernel compilation costs more than the tiny model's whole run
        return load_tiny_flux2(path, edit)
    if edit:
        from mflux.models.flux2.variants.edit.flux2_klein_edit import Flux2KleinEdit

        return Flux2KleinEdit(model_path=str(path))
    from mflux.models.flux2.variants.txt2img.flux2_klein import Flux2Klein

    return Flux2Klein(model_path=str(path))


def load_generation(path: Path, context_length: int | None = None, limits: object = None) -> ImageHandler:
    return ImageHandler(_pipeline(path, edit=False), edit=False)


def load_edit(path: Path, context_length: int | None = None, limits: object = None) -> ImageHandler:
    return ImageHandler(_pipeline(path, edit=True), edit=True)
