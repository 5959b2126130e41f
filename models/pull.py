"""``python -m models.pull <repo id>...``: fetches Hugging Face models into the cache ahead of time, as ``ollama
pull`` does, so that ``POST /v1/models/load {"model_path": "<repo id>"}`` finds them (offline too).

A repo already cached is reported with its folder; otherwise its size is asked of the Hub, then it is downloaded
with a progress bar (an interrupted download goes on where it stopped). Exit status 1 when any repo failed.
"""

from __future__ import annotations

import argparse
import sys

from config.errors import ApiError
from models import hub


def pull(repo: str) -> bool:
    if not hub.is_repo_id(repo):
        print(f"{repo}: not a Hugging Face repo id (owner/name)", file=sys.stderr)
        return False
    folder = hub.cached(repo)
    if folder is not None:
        print(f"{repo}: in the cache at {folder}")
        return True
    try:
        size = hub.weights_on_hub(repo)
        print(f"{repo}: downloading {size / 1e9:.2f} GB of weights")
        folder = hub.download(repo)
    except ApiError as exc:
        print(f"{repo}: {exc.message}", file=sys.stderr)
        return False
    print(f"{repo}: in the cache at {folder}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch Hugging Face models into the local cache ahead of time.")
    parser.add_argument("repos", nargs="+", metavar="REPO_ID", help="e.g. mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    args = parser.parse_args(argv)
    results = [pull(repo) for repo in args.repos]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
