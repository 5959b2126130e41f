"""The media libraries called directly, as a user would without the platform: mlx-whisper's ``transcribe``,
mlx-vlm's ``generate`` and mflux's FLUX.2 Klein pipeline, on the same model folders the platform serves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import progress


def _whisper(spec: dict[str, Any]) -> list[float]:
    import mlx_whisper

    from models.audio import decode_audio

    samples = decode_audio(Path(spec["audio"]).read_bytes())
    options = {"path_or_hf_repo": spec["whisper"], "fp16": False}
    mlx_whisper.transcribe(samples[:16_000], **options)
    seconds = []
    for run in range(spec["runs"]):
        started = time.perf_counter()
        mlx_whisper.transcribe(samples, **options)
        seconds.append(time.perf_counter() - started)
        progress.say(f"in-process transcription run {run + 1}: {seconds[-1]:.2f}s")
    return seconds


def _vision(spec: dict[str, Any]) -> list[float]:
    from mlx_vlm import generate, load
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = load(spec["vision"])
    prompt = apply_chat_template(processor, model.config, spec["question"], num_images=1)
    generate(model, processor, prompt, image=[spec["image"]], max_tokens=1, temperature=0.0)
    rates = []
    for _run in range(spec["runs"]):
        result = generate(model, processor, prompt, image=[spec["image"]], max_tokens=1, temperature=0.0)
        rates.append(float(result.prompt_tps))
    return rates


def _images(spec: dict[str, Any]) -> list[float]:
    import mlx.core as mx

    from models.tiny_flux import load_tiny_flux2

    mx.disable_compile()
    pipeline = load_tiny_flux2(Path(spec["flux"]), edit=False)
    size = spec["size"]
    pipeline.generate_image(seed=0, prompt="warm-up", num_inference_steps=1, width=64, height=64)
    seconds = []
    for run in range(spec["runs"]):
        started = time.perf_counter()
        pipeline.generate_image(
            seed=run, prompt=spec["prompt"], num_inference_steps=spec["steps"], width=size, height=size
        )
        seconds.append(time.perf_counter() - started)
    return seconds


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per transcription, vision prompt tokens/s, seconds per image, each over ``runs`` runs."""
    return {"transcribe_s": _whisper(spec), "vision_prompt_tps": _vision(spec), "image_s": _images(spec)}
