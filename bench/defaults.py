"""Paths, model ids and prompts shared by every benchmark section."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from models.blas import find_openblas

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data"
BENCH_DIR = DATA_DIR / "bench"
"""Everything the benchmarks make (weight variants, logs, the llama.cpp venv); never the served models."""
WEIGHTS_DIR = BENCH_DIR / "weights"
LOGS_DIR = BENCH_DIR / "logs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RERANK_MODEL = "mlx-fusion/ms-marco-MiniLM-L6-random"
WHISPER_MODEL = "openai/whisper-tiny.en"
VISION_MODEL = "mlx-fusion/smolvlm-tiny-random"
IMAGE_MODEL = "mlx-fusion/flux2-klein-tiny-random"
DEFAULT_MODELS = (
    CHAT_MODEL,
    EMBEDDING_MODEL,
    RERANK_MODEL,
    WHISPER_MODEL,
    VISION_MODEL,
    IMAGE_MODEL,
    "mlx-fusion/flux2-klein-edit-tiny-random",
)
"""The catalog's autostart models: the supervisor starts each, so each is prepared and waited for."""
CHAT_MODEL_DIR = DATA_DIR / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"
EMBEDDING_MODEL_DIR = DATA_DIR / "models" / "sentence-transformers--all-MiniLM-L6-v2"
RERANK_MODEL_DIR = DATA_DIR / "models" / "mlx-fusion--ms-marco-MiniLM-L6-random"
WHISPER_MODEL_DIR = DATA_DIR / "models" / "openai--whisper-tiny.en"
VISION_MODEL_DIR = DATA_DIR / "models" / "mlx-fusion--smolvlm-tiny-random"
IMAGE_MODEL_DIR = DATA_DIR / "models" / "mlx-fusion--flux2-klein-tiny-random"


FACT_QUESTION = "What is the capital of France?"
FACT_ANSWER = "Paris"
STORY_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
    "Describe the island, the weather, the keeper's daily routine and what the message says."
)


def story_messages(tag: str = "") -> list[dict[str, str]]:
    """The generation prompt; ``tag`` makes it unique so no server can answer it from a prompt cache."""
    prefix = f"Request {tag}. " if tag else ""
    return [{"role": "user", "content": prefix + STORY_PROMPT}]


def fact_messages() -> list[dict[str, str]]:
    """The factual question whose greedy answer should name Paris."""
    return [{"role": "user", "content": FACT_QUESTION}]


def openblas_library() -> str | None:
    """OpenBLAS to preload (``OPENBLAS_LIBRARY`` or the usual Debian paths), None when not installed or not Linux."""
    if not sys.platform.startswith("linux"):
        return None
    return find_openblas(os.environ.get("OPENBLAS_LIBRARY", ""))
