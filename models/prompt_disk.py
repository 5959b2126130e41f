"""The prompt cache's disk tier: KV caches of long prompts in a folder that outlives the worker and is shared by the
replicas of a model on one node.

One file per cached token sequence, saved with mlx-lm's ``save_prompt_cache`` (safetensors) under
``<folder>/<model>/<weights fingerprint>/<sha256 of the tokens>.safetensors``, its token ids in the file's metadata.
The folder itself is the index: every process reads the headers of the files it has not seen yet, so what one
replica writes the others find. Files are written under a temporary name and renamed (a reader never sees half a
file), by a writer thread with a bounded queue (the engine thread never waits on the disk; a write that finds the
queue full is dropped). The whole folder stays under its byte limit by deleting the least recently used files
(a hit touches its file). A file that cannot be read is removed, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import can_trim_prompt_cache, load_prompt_cache, save_prompt_cache, trim_prompt_cache

from models.kv_quantized import batchable, portable

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
TEMPORARY_PREFIX = ".tmp-"
STALE_TEMPORARY_SECONDS = 3600.0
"""A temporary file this old was left by a writer that died mid-write: eviction removes it."""
WRITE_QUEUE = 2
"""Caches waiting to be written; each holds its K/V in memory until then, so the queue stays short."""
FINGERPRINTS = ".fingerprints"
"""The folder (in the disk tier's) remembering each model folder's weights digest."""
TOKENS_KEY = "tokens"
"""The metadata field (in mlx-lm's metadata dict) holding the cached token ids."""


def weights_fingerprint(folder: Path, memo: Path | None = None) -> str:
    """Identifies a model's weights by their content: a digest of its ``config.json`` and ``*.safetensors`` (the
    tokenizer does not change what a token's K/V is). Hashing reads every weight once (0.4 s for 540 MB here), so
    the digest is remembered in ``memo`` under the files' names, sizes and modification times: a restarted worker
    or another replica reads it back, and weights written again unchanged (a re-prepared model) hash to the same."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and (p.suffix == SUFFIX or p.name == "config.json"))
    listing = hashlib.sha256()
    for path in files:
        stat = path.stat()
        listing.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    remembered = memo / f"{listing.hexdigest()[:32]}.txt" if memo is not None else None
    if remembered is not None and remembered.is_file():
        return remembered.read_text().strip()
    content = hashlib.sha256()
    for path in files:
        content.update(f"{path.name}\0{path.stat().st_size}\n".encode())
        with open(path, "rb") as file:
            while chunk := file.read(8 << 20):
                content.update(chunk)
    digest = content.hexdigest()[:16]
    if remembered is not None:
        remembered.parent.mkdir(parents=True, exist_ok=True)
        temporary = remembered.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:8]}")
        temporary.write_text(digest)
        os.replace(temporary, remembered)
    return digest


def tokens_digest(tokens: list[int] | np.ndarray) -> str:
    return hashlib.sha256(np.asarray(tokens, dtype="<i4").tobytes()).hexdigest()[:40]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def read_tokens(path: Path) -> np.ndarray:
    """The token ids in a cache file's safetensors header (the K/V after it is not read); ValueError if the header
    is not one of ours."""
    with open(path, "rb") as file:
        raw = file.read(8)
        if len(raw) != 8:
            raise ValueError("no safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > 64 * 2**20:
            raise ValueError("implausible safetensors header")
        header = json.loads(file.read(length))
    text = (header.get("__metadata__") or {}).get(f"0.{TOKENS_KEY}")
    if text is None:
        raise ValueError("no token ids in the metadata")
    return np.frombuffer(bytes.fromhex(text), dtype="<i4").astype(np.int64)


@dataclass
class DiskHit:
    """A cache loaded from the disk tier, already trimmed to ``cached_tokens`` tokens of the prompt."""

    cache: list[Any]
    cached_tokens: int


@dataclass
class _Entry:
    tokens: np.ndarray
    size: int


class DiskPromptCache:
    """The disk tier of one model: finds, loads and (through its writer thread) saves prompt caches.

    ``lookup`` and ``load`` may run on any thread (they make their own MLX stream); ``put`` only queues."""

    def __init__(self, root: Path, model_folder: str, min_tokens: int, max_bytes: int) -> None:
        self.root = Path(root)
        self.folder = self.root / model_folder
        self.min_tokens = max(2, min_tokens)
        self.max_bytes = max_bytes
        self.enabled = max_bytes > 0
        self.hits = 0
        self.writes = 0
        self.dropped = 0
        """Writes dropped because the queue was full (the engine never waits for the disk)."""
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._streams = threading.local()
        self._queue: queue.Queue[tuple[list[int], list[Any]]] = queue.Queue(maxsize=WRITE_QUEUE)
        self._writer: threading.Thread | None = None

    # --- reading (any thread) -------------------------------------------------------------------------------

    def lookup(self, tokens: list[int]) -> tuple[str, int] | None:
        """The file whose tokens share the longest usable prefix with ``tokens`` and how many of its tokens a request
        for ``tokens`` takes (always leaving the last one to compute; a longer file is trimmed when loaded, and
        skipped then if its cache cannot be trimmed); None below ``min_tokens``."""
        if not self.enabled or len(tokens) <= self.min_tokens:
            return None
        wanted = np.asarray(tokens, dtype=np.int64)
        best: tuple[str, int] | None = None
        for name, entry in self._refresh().items():
            usable = min(common_prefix(entry.tokens, wanted), len(tokens) - 1)
            if usable >= self.min_tokens and (best is None or usable > best[1]):
                best = (name, usable)
        return best

    def load(self, tokens: list[int], at_least: int = 0) -> DiskHit | None:
        """The cache of the longest prefix of ``tokens`` on disk, if it covers more than ``at_least`` tokens; a file
        that cannot be read (truncated, corrupt, not a cache of this length) is removed and skipped."""
        found = self.lookup(tokens)
        if found is None or found[1] <= at_least:
            return None
        name, usable = found
        path = self.folder / name
        try:
            with mx.stream(self._stream()):
                cache, metadata = load_prompt_cache(str(path), return_metadata=True)
                cache = batchable(cache)
                stored = len(self._entries[name].tokens) if name in self._entries else -1
                if any(layer.offset != stored for layer in cache if hasattr(layer, "offset")):
                    raise ValueError("the cache's length is not its tokens' count")
                if usable < stored:
                    if not can_trim_prompt_cache(cache):
                        return None
                    trim_prompt_cache(cache, stored - usable)
                mx.eval([layer.state for layer in cache])
        except FileNotFoundError:
            self._forget(name)  # evicted, or replaced, since the lookup
            return None
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises, it is skipped and removed
            log.warning("removing prompt cache file %s that cannot be read: %s: %s", path, type(exc).__name__, exc)
            self._remove(path)
            return None
        _touch(path)
        self.hits += 1
        return DiskHit(cache, usable)

    def _refresh(self) -> dict[str, _Entry]:
        """The folder's files, reading the header of each one not seen before (other replicas write here too)."""
        try:
            names = {e.name: e.stat().st_size for e in os.scandir(self.folder) if _is_cache_name(e.name)}
        except FileNotFoundError:
            names = {}
        with self._lock:
            for name in list(self._entries):
                if names.get(name) != self._entries[name].size:
                    del self._entries[name]
            for name, size in names.items():
                if name in self._entries:
                    continue
                try:
                    self._entries[name] = _Entry(read_tokens(self.folder / name), size)
                except FileNotFoundError:
                    continue
                except Exception as exc:  # noqa: BLE001 - a damaged header: the file is removed
                    log.warning("removing prompt cache file %s with a bad header: %s", name, exc)
                    self._remove(self.folder / name)
            return dict(self._entries)

    def _stream(self) -> Any:
        """This thread's own MLX stream (MLX binds streams to the thread that made them)."""
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = self._streams.stream = mx.new_stream(mx.cpu)
        return stream

    # --- writing (the writer thread) ------------------------------------------------------------------------

    def put(self, tokens: list[int], cache: list[Any]) -> bool:
        """Queues an evaluated cache of ``tokens`` for writing; False when it is too short, or dropped because the
        writer is behind. Never blocks."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return False
        self._start_writer()
        try:
            self._queue.put_nowait((list(tokens), cache))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until every queued write is on disk (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="prompt-cache-writer", daemon=True)
                self._writer.start()

    def _write_forever(self) -> None:
        while True:
            tokens, cache = self._queue.get()
            try:
                self.write(tokens, cache)
            except Exception:  # noqa: BLE001 - a full disk or a removed folder costs this write, not the worker
                log.warning("could not write a prompt cache of %d tokens", len(tokens), exc_info=True)
            finally:
                self._queue.task_done()

    def write(self, tokens: list[int], cache: list[Any]) -> Path | None:
        """Saves ``cache`` (of ``tokens``) unless a file already holds these tokens or more after them; then removes
        the files it makes redundant (its prefixes) and the least recently used files over the byte limit."""
        wanted = np.asarray(tokens, dtype=np.int64)
        trimmable = can_trim_prompt_cache(cache)
        for name, entry in self._refresh().items():
            if trimmable and len(entry.tokens) >= len(wanted) and common_prefix(entry.tokens, wanted) == len(wanted):
                _touch(self.folder / name)
                return None  # a longer (or the same) cache already covers these tokens
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{tokens_digest(wanted)}{SUFFIX}"
        temporary = self.folder / f"{TEMPORARY_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        try:
            with mx.stream(self._stream()):
                save_prompt_cache(str(temporary), portable(cache), {TOKENS_KEY: wanted.astype("<i4").tobytes().hex()})
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        self.writes += 1
        if trimmable:
            for name, entry in self._refresh().items():
                if len(entry.tokens) < len(wanted) and common_prefix(entry.tokens, wanted) == len(entry.tokens):
                    self._remove(self.folder / name)
        evict(self.root, self.max_bytes)
        return path

    # --- housekeeping ---------------------------------------------------------------------------------------

    def _forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._forget(path.name)


def evict(root: Path, max_bytes: int, now: float | None = None) -> list[Path]:
    """Deletes the least recently used cache files under ``root`` (every model's) until they take at most
    ``max_bytes``, and temporary files a dead writer left; returns what it deleted."""
    now = time.time() if now is None else now
    files: list[tuple[float, int, Path]] = []
    removed: list[Path] = []
    for path in Path(root).glob(f"*/*/*{SUFFIX}"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.name.startswith(TEMPORARY_PREFIX):
            if now - stat.st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink(missing_ok=True)
                removed.append(path)
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    for _mtime, size, path in sorted(files, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        removed.append(path)
        total -= size
    return removed


def _is_cache_name(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(TEMPORARY_PREFIX)


def _touch(path: Path) -> None:
    """Marks a file as just used (eviction goes by modification time: access times are often not kept)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        pass
