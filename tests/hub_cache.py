"""A Hugging Face cache laid out by hand: no hub is reachable here, so tests put a prepared model folder into a
cache exactly as huggingface_hub stores a download, and the platform finds it through huggingface_hub's own lookup."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def lay_out_in_hf_cache(cache: Path, repo: str, folder: Path) -> Path:
    """``folder``'s files as huggingface_hub caches a snapshot of ``repo``: blobs named by content, a snapshot of
    links to them, and ``refs/main`` naming the snapshot. Returns the snapshot folder."""
    owner, name = repo.split("/")
    root = cache / f"models--{owner}--{name}"
    revision = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        blob = root / "blobs" / hashlib.sha256(f"{file.name}:{file.stat().st_size}".encode()).hexdigest()
        if not blob.exists():
            blob.symlink_to(file.resolve())
        link = snapshot / file.name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot
