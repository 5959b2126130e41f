"""Models by Hugging Face repo id (``mlx-community/qwen2.5-7b-instruct-4bit``): found in the local Hugging Face
cache, or downloaded into it by the node that will serve them.

huggingface_hub keeps the cache (``HF_HUB_CACHE``; an interrupted download goes on from where it stopped) and
reads ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_TOKEN``. What cannot happen fails fast, naming the cause: the Hub
unreachable (503 ``hub_unreachable``), no such repository, or not in the cache while offline (404
``model_not_found``), a gated repository (403 ``gated_repo``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from tqdm.auto import tqdm

from config.errors import ApiError

HUB_PREFIX = "hf://"
"""How the registry records the path of a model still to be fetched from the Hub: ``hf://<repo id>``."""
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".npz", ".bin")
TOKENIZER_FILES = ["*.json", "*.model", "*.tiktoken", "*.txt"]
Progress = Callable[[int, int], None]
"""Called with (bytes downloaded, bytes in all) as a download goes."""


def is_repo_id(text: str) -> bool:
    return bool(REPO_ID.match(text))


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cached(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id`` (its main revision), if the cache holds a model folder for it."""
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError):
        return None
    if not (folder / "config.json").is_file():
        return None
    # Only the tokenizer's files of a repo may be here (``tokenizer_folder``): then the model is not cached yet.
    return folder if any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir()) else None


def tokenizer_folder(source: str) -> Path:
    """A folder holding the tokenizer of the model recorded as ``source`` (a folder, or ``hf://<repo id>``), on
    this node: the cached snapshot, else the repo's tokenizer and configuration files alone, fetched from the Hub
    (another node may serve the model; its files are on that node)."""
    if not source.startswith(HUB_PREFIX):
        return Path(source)
    repo_id = source.removeprefix(HUB_PREFIX)
    folder = cached(repo_id)
    if folder is not None:
        return folder
    try:
        return Path(snapshot_download(repo_id, allow_patterns=TOKENIZER_FILES))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError):
        raise not_cached_offline(repo_id) from None


def not_cached_offline(repo_id: str) -> ApiError:
    return ApiError(
        404,
        f"'{repo_id}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
        "fetch it ahead of time (python -m models.pull) or let this node reach the Hub",
        code="model_not_found",
        param="model_path",
    )


def weights_on_hub(repo_id: str, api: HfApi | None = None) -> int:
    """Bytes of the repository's weight files, asked of the Hub (fails fast, naming why it cannot)."""
    if offline():
        raise not_cached_offline(repo_id)
    api = api or HfApi()
    try:
        info = api.model_info(repo_id, files_metadata=True, timeout=10)
    except GatedRepoError:
        raise ApiError(
            403,
            f"'{repo_id}' is gated: accept its terms on the Hub and set HF_TOKEN on the nodes",
            code="gated_repo",
            param="model_path",
        ) from None
    except RepositoryNotFoundError:
        raise ApiError(
            404, f"No repository '{repo_id}' on the Hub ({api.endpoint})", code="model_not_found", param="model_path"
        ) from None
    except OfflineModeIsEnabled:
        raise not_cached_offline(repo_id) from None
    except Exception as exc:  # noqa: BLE001 - the network's errors: DNS, refused, timeouts, proxies
        raise ApiError(
            503,
            f"Cannot reach the Hugging Face Hub at {api.endpoint}: {type(exc).__name__}: {exc}",
            code="hub_unreachable",
            param="model_path",
        ) from None
    files = info.siblings or []
    weights = sum(f.size or 0 for f in files if f.rfilename.endswith(WEIGHT_SUFFIXES))
    return weights or sum(f.size or 0 for f in files)


def download(repo_id: str, progress: Progress | None = None) -> Path:
    """Downloads (or completes) ``repo_id`` into the cache and returns its snapshot folder."""
    tqdm_class = _reporting_tqdm(progress) if progress else None
    try:
        return Path(snapshot_download(repo_id, tqdm_class=tqdm_class))
    except OfflineModeIsEnabled:
        raise not_cached_offline(repo_id) from None


def _reporting_tqdm(progress: Progress) -> type[tqdm]:
    """A tqdm class whose byte bars (one per file) add up into ``progress(done, total)``."""
    bars: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("disable", False)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B":
                with lock:
                    bars[id(self)] = (int(self.n), int(self.total or 0))
                    done, total = sum(b[0] for b in bars.values()), sum(b[1] for b in bars.values())
                progress(done, total)
            return shown

    return Reporting
