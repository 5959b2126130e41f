"""Nodes: the machines (or supervisors) that serve models, each with a name, a memory budget and the models it may
serve, all sharing one Redis and one MongoDB.

Each supervisor beats its node into Redis (a key that expires after the TTL);
readers take a node whose key has expired as gone.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, fields

import redis

_NODES_KEY = "mlxf:nodes"
_PLACEMENT_LOCK = "mlxf:placement-lock"
PLACEMENT_LOCK_SECONDS = 30
"""How long the placement lock outlives a holder that died holding it (a live holder renews it)."""


def _node_key(name: str) -> str:
    return f"mlxf:node:{name}"


def allows(patterns: str, model_id: str, model_type: str) -> bool:
    """Whether the ``NODE_MODELS`` patterns let a node serve ``model_id`` (a ``model_type`` model): one pattern
    matches (an fnmatch pattern of ids, or ``type:<type>``) and no ``!`` exclusion does."""
    entries = [entry.strip() for entry in patterns.split(",") if entry.strip()]

    def matches(pattern: str) -> bool:
        return pattern == f"type:{model_type}" or fnmatch.fnmatchcase(model_id, pattern)

    if any(matches(entry[1:]) for entry in entries if entry.startswith("!")):
        return False
    return any(matches(entry) for entry in entries if not entry.startswith("!"))


def backend() -> str:
    """What runs the models here: ``metal`` on a Mac, ``cuda`` where MLX's CUDA build is installed, else ``cpu``."""
    if platform.system() == "Darwin":
        return "metal"
    installed = {(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()}
    return "cuda" if any(name.startswith("mlx-cuda") for name in installed) else "cpu"


@dataclass(frozen=True)
class Node:
    name: str
    budget_gb: float
    """0: no budget."""
    models: str = "*"
    """``NODE_MODELS``: the patterns of the models it may serve (see ``allows``)."""
    host: str = ""
    pid: int = 0
    backend: str = "cpu"
    started_at: float = 0.0

    @property
    def budget_bytes(self) -> float:
        return self.budget_gb * 1e9 if self.budget_gb > 0 else math.inf

    def allows(self, model_id: str, model_type: str) -> bool:
        return allows(self.models, model_id, model_type)


class NodeBeats:
    """The live nodes, as their supervisors report them."""

    def __init__(self, client: redis.Redis, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds

    def beat(self, node: Node) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(_NODES_KEY, {node.name: time.time()})
        pipe.set(_node_key(node.name), json.dumps(asdict(node)), px=int(self.ttl_seconds * 1000))
        pipe.execute()

    def leave(self, name: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(_NODES_KEY, name)
        pipe.delete(_node_key(name))
        pipe.execute()

    def placing(self) -> redis.lock.Lock:
        """The deployment's placement lock: held while a placement is decided and registered (and any eviction it
        needs is done), so that two placements never count the same free room."""
        return self.client.lock(_PLACEMENT_LOCK, timeout=PLACEMENT_LOCK_SECONDS, thread_local=False)

    def beat_and_live(self, node: Node) -> dict[str, Node]:
        """``beat`` then ``live`` in two round trips to Redis (a supervisor's every tick)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(_NODES_KEY, {node.name: time.time()})
        pipe.set(_node_key(node.name), json.dumps(asdict(node)), px=int(self.ttl_seconds * 1000))
        return self._live(pipe)

    def live(self) -> dict[str, Node]:
        """The nodes that beat within the TTL, by name."""
        return self._live(self.client.pipeline(transaction=False))

    def _live(self, pipe: redis.client.Pipeline) -> dict[str, Node]:
        """The live nodes, read with the commands already on ``pipe`` (and a second round trip for their reports)."""
        pipe.zremrangebyscore(_NODES_KEY, "-inf", time.time() - 24 * 3600)
        pipe.zrangebyscore(_NODES_KEY, time.time() - self.ttl_seconds, "+inf")
        names = [name.decode() for name in pipe.execute()[-1]]
        if not names:
            return {}
        reports = self.client.mget([_node_key(name) for name in names])
        known = {f.name for f in fields(Node)}  # a node of a newer version may report more
        nodes = [
            Node(**{key: value for key, value in json.loads(report).items() if key in known})
            for report in reports
            if report is not None
        ]
        return {node.name: node for node in sorted(nodes, key=lambda n: n.name)}
