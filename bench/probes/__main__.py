"""Runs one probe and writes its result as JSON to the given path."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

PROBES = (
    "adapters",
    "info",
    "kv",
    "prepare",
    "generate",
    "chat",
    "lifecycle",
    "embed",
    "media",
    "rag_quality",
    "rag_scale",
    "speculative",
)


def main(argv: list[str]) -> int:
    """``KIND SPEC_JSON OUT_PATH``: runs ``bench.probes.KIND.run(spec)`` and writes what it returns."""
    kind, spec, out = argv
    if kind not in PROBES:
        print(f"unknown probe {kind!r}; known: {', '.join(PROBES)}", file=sys.stderr)
        return 2
    result = importlib.import_module(f"bench.probes.{kind}").run(json.loads(spec))
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
