"""Section 1: the chat model in-process with plain mlx-lm, per weights format, with and without OpenBLAS."""

from __future__ import annotations

from typing import Any

from bench import progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, WEIGHTS_DIR, openblas_library
from bench.inprocess import ProbeError, run_probe
from bench.report import SectionResult, Table
from config.settings import Settings
from models.catalog import load_catalog
from models.prepare import source_file

NAME = "weights"
TITLE = "Weights format and BLAS (in-process mlx-lm, greedy)"
FORMAT_NAMES = {"q4": "4-bit (as in the GGUF)", "q8": "8-bit", "float16": "float16", "float32": "float32"}


def prepare_variants(formats: list[str]) -> dict[str, str]:
    """Each format converted from the shipped GGUF by ``models.gguf`` into the bench cache; folder per format."""
    spec = load_catalog(Settings.from_env())[CHAT_MODEL]
    gguf = source_file(spec)
    progress.say(f"preparing {', '.join(formats)} from {gguf.name} into {WEIGHTS_DIR} (once)")
    prepared = run_probe("prepare", {"gguf": str(gguf), "out_dir": str(WEIGHTS_DIR), "formats": formats}, openblas=True)
    return prepared["folders"]


def run(context: BenchContext) -> SectionResult:
    """Measures every format with and without OpenBLAS, each in its own process."""
    options = context.options
    result = SectionResult(NAME, TITLE)
    folders = prepare_variants(options.weights_formats)
    blas_choices = [False, True] if openblas_library() else [False]
    if len(blas_choices) == 1:
        result.notes.append("OpenBLAS is not installed here: only MLX's bundled BLAS was measured.")
    table = Table(
        f"{CHAT_MODEL}, prompt of the story request, {options.weights_tokens} generated tokens, "
        f"median of {options.weights_runs} runs",
        [
            "weights",
            "OpenBLAS",
            "prompt tok/s",
            "generated tok/s",
            "peak memory MB",
            "load s",
            'answers "Paris"?',
        ],
    )
    measured: list[dict[str, Any]] = []
    for weights_format in options.weights_formats:
        for openblas in blas_choices:
            label = f"{weights_format}{' + OpenBLAS' if openblas else ''}"
            spec = {
                "path": folders[weights_format],
                "label": label,
                "max_tokens": options.weights_tokens,
                "runs": options.weights_runs,
                "fact_tokens": options.fact_tokens,
            }
            progress.say(f"measuring {label}")
            try:
                figures = run_probe("generate", spec, openblas=openblas)
            except ProbeError as exc:
                figures = {"error": str(exc)}
            measured.append({"format": weights_format, "openblas": openblas, **figures})
            table.rows.append(
                [
                    FORMAT_NAMES.get(weights_format, weights_format),
                    openblas,
                    figures.get("prompt_tps"),
                    figures.get("generation_tps"),
                    figures.get("peak_memory_mb"),
                    figures.get("load_seconds"),
                    figures.get("correct", figures.get("error")),
                ]
            )
    result.tables.append(table)
    correct = [m for m in measured if m.get("correct")]
    if correct:
        best = max(correct, key=lambda m: m["generation_tps"])
        result.notes.append(
            f"fastest correct set-up: {FORMAT_NAMES.get(best['format'], best['format'])}"
            f"{' with OpenBLAS' if best['openblas'] else ''} ({best['generation_tps']:.1f} generated tok/s)"
        )
    if measured:
        result.notes.append(f"prompt: {measured[0].get('prompt_tokens', '?')} tokens (chat template applied)")
    result.raw = {"variants": measured, "folders": folders}
    return result
