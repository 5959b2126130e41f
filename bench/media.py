"""Media: transcription, vision prompts and image generation through the API, beside the same libraries called
directly (mlx-whisper, mlx-vlm, mflux) on the same model folders, in the same run."""

from __future__ import annotations

import base64
import io
import subprocess
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from bench import progress
from bench.client import make_client
from bench.context import BenchContext
from bench.defaults import (
    IMAGE_MODEL,
    IMAGE_MODEL_DIR,
    VISION_MODEL,
    VISION_MODEL_DIR,
    WHISPER_MODEL,
    WHISPER_MODEL_DIR,
)
from bench.inprocess import run_probe
from bench.report import SectionResult, Table
from bench.stats import median, ratio

NAME = "media"
TITLE = "Media: speech, vision, images"
SPEECH = " ".join(
    f"Sentence number {n} of this recording is read slowly so that the whole text lasts longer than one window."
    for n in range(1, 6)
)
QUESTION = "What is in this picture?"
IMAGE_SIZE, IMAGE_STEPS = 256, 4


def _speech(folder: Path) -> Path:
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(path), SPEECH], check=True, timeout=60)
    return path


def _picture(folder: Path) -> Path:
    image = Image.new("RGB", (256, 192), "white")
    ImageDraw.Draw(image).ellipse((48, 32, 208, 160), fill="red")
    path = folder / "picture.png"
    image.save(path)
    return path


def _api(base_url: str, audio: Path, picture: Path, runs: int) -> dict[str, list[float]]:
    client = make_client(base_url)
    audio_bytes = audio.read_bytes()
    url = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}],
        }
    ]
    client.audio.transcriptions.create(model=WHISPER_MODEL, file=("warm.wav", audio_bytes))
    client.chat.completions.create(model=VISION_MODEL, messages=messages, max_tokens=1, temperature=0)
    result: dict[str, list[float]] = {"transcribe_s": [], "vision_prompt_tps": [], "image_s": []}
    for run in range(runs):
        started = time.perf_counter()
        client.audio.transcriptions.create(model=WHISPER_MODEL, file=("speech.wav", audio_bytes))
        result["transcribe_s"].append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = client.chat.completions.create(model=VISION_MODEL, messages=messages, max_tokens=1, temperature=0)
        result["vision_prompt_tps"].append(answer.usage.prompt_tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        image = client.images.generate(
            model=IMAGE_MODEL,
            prompt="a lighthouse at dusk",
            size=f"{IMAGE_SIZE}x{IMAGE_SIZE}",
            extra_body={"steps": IMAGE_STEPS, "seed": run},
        )
        Image.open(io.BytesIO(base64.b64decode(image.data[0].b64_json))).load()
        result["image_s"].append(time.perf_counter() - started)
        progress.say(f"API media run {run + 1}/{runs}")
    return result


def run(context: BenchContext) -> SectionResult:
    runs = context.options.media_runs
    platform = context.platform()
    with tempfile.TemporaryDirectory(prefix="mlxf-bench-media-") as scratch:
        folder = Path(scratch)
        audio, picture = _speech(folder), _picture(folder)
        from models.audio import decode_audio

        audio_seconds = len(decode_audio(audio.read_bytes())) / 16_000
        spec = {
            "audio": str(audio),
            "whisper": str(WHISPER_MODEL_DIR),
            "vision": str(VISION_MODEL_DIR),
            "image": str(picture),
            "question": QUESTION,
            "flux": str(IMAGE_MODEL_DIR),
            "prompt": "a lighthouse at dusk",
            "size": IMAGE_SIZE,
            "steps": IMAGE_STEPS,
            "runs": runs,
        }
        local = run_probe("media", spec, openblas=True)
        api = _api(platform.base_url, audio, picture, runs)
    rows = [
        (
            f"transcription, {WHISPER_MODEL} ({audio_seconds:.1f} s of speech)",
            "seconds of audio per second",
            audio_seconds / median(local["transcribe_s"]),
            audio_seconds / median(api["transcribe_s"]),
        ),
        (
            f"vision prompt, {VISION_MODEL} (one 256x192 image + question, 1 token out)",
            "prompt tokens per second",
            median(local["vision_prompt_tps"]),
            median(api["vision_prompt_tps"]),
        ),
        (
            f"image generation, {IMAGE_MODEL} ({IMAGE_SIZE}x{IMAGE_SIZE}, {IMAGE_STEPS} steps)",
            "images per minute",
            60 / median(local["image_s"]),
            60 / median(api["image_s"]),
        ),
    ]
    result = SectionResult(NAME, TITLE)
    table = Table(f"median of {runs} run(s)", ["what", "unit", "library in-process", "API", "API / in-process"])
    for what, unit, alone, served in rows:
        share = ratio(served, alone)
        table.rows.append([what, unit, alone, served, f"{share:.1%}" if share is not None else None])
    result.tables.append(table)
    result.notes.append(
        "in-process: mlx_whisper.transcribe, mlx_vlm.generate and mflux's FLUX.2 Klein pipeline called directly "
        "(OpenBLAS preloaded, as in the workers); API: the openai client against the running stack. The vision and "
        "image models are tiny with random weights (no such weights are installable here): their figures measure "
        "the pipelines' overhead, not what real models of those families cost."
    )
    result.raw = {"audio_seconds": audio_seconds, "in_process": local, "api": api}
    return result
