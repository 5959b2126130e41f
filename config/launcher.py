"""``mlx-fusion-server``: start the stack with one model, taking mlx-openai-server's flags.

    mlx-fusion-server --model-path ./my-model --model-type lm --context-length 8192 --port 8000

The flags become the provider-contract environment variables; the stack runs
under honcho from the project's Procfile. Redis and the Mongo-wire server are
started too unless ``REDIS_URL`` / ``MONGODB_URL`` point at running ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from config.model_types import TYPE_NAMES
from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlx-fusion-server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", help="a catalog model id or a local MLX model folder")
    parser.add_argument("--model-type", default="lm", choices=TYPE_NAMES)
    parser.add_argument("--context-length", type=int)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (another needs API keys)")
    parser.add_argument("--max-concurrency", type=int, default=1)
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run after loading")
    parser.add_argument("--flower", action="store_true", help="also start the Flower dashboard on :5555")
    return parser.parse_args(argv)


def stack_environment(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, str]:
    """The environment of the stack's processes for these flags."""
    env = dict(environ)
    env.update(
        SERVER_PORT=str(args.port),
        SERVER_HOST=args.host,
        MAX_CONCURRENCY=str(args.max_concurrency),
        MLX_WARMUP="false" if args.no_warmup else "true",
    )
    if args.context_length:
        env["CONTEXT_LENGTH"] = str(args.context_length)
    if args.model_path:
        env.update(MODEL_PATH=args.model_path, MODEL_TYPE=args.model_type, AUTOSTART_CATALOG="false")
        path = Path(args.model_path).expanduser()
        model_id = path.resolve().name if path.exists() else args.model_path
        if args.model_type == "lm":
            env["DEFAULT_CHAT_MODEL"] = model_id
        elif args.model_type == "embeddings":
            env["DEFAULT_EMBEDDING_MODEL"] = model_id
        if path.exists():
            env["MODEL_PATH"] = str(path.resolve())
    return env


def processes(environ: dict[str, str], flower: bool) -> list[str]:
    names = []
    if "REDIS_URL" not in environ:
        names.append("redis")
    if "MONGODB_URL" not in environ:
        names.append("mongo")
    names += ["web", "control", "work", "models"]
    if flower:
        names.append("flower")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = stack_environment(args, dict(os.environ))
    Settings.from_env(env)  # fail here, with the variable's name, on a bad value
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
    if honcho is None:
        print("honcho is not installed: run `make setup` first", file=sys.stderr)
        return 2
    names = processes(os.environ, args.flower)
    print(f"[mlx-fusion-server] starting {', '.join(names)}; API on http://{args.host}:{args.port}", flush=True)
    os.chdir(ROOT)
    os.execve(honcho, [honcho, "-f", str(ROOT / "Procfile"), "-d", str(ROOT), "start", *names], env)


if __name__ == "__main__":
    sys.exit(main())
