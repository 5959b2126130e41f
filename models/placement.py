"""Where models run: which node takes each replica, and which idle models a node unloads to make room.

Pure decisions over the live nodes and what they hold; ``models.lifecycle`` (the API) and the supervisors (placing
again the replicas of a node that vanished) act on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from config.errors import ApiError
from models.nodes import Node


def gb(size: int | float) -> float:
    """Bytes as gigabytes, to three places: how sizes and budgets are shown."""
    return round(size / 1e9, 3)


@dataclass(frozen=True)
class Holding:
    """A model holding memory on a node, as the budget sees it."""

    model_id: str
    size: int
    idle: bool
    last_used: float


def insufficient(message: str) -> ApiError:
    return ApiError(503, message, code="insufficient_vram")


def evictions(held: list[Holding], need: int, budget: float) -> list[str]:
    """The idle models to unload, least recently used first, so that ``need`` more bytes fit ``budget``.

    Raises the 503 ``insufficient_vram`` when even unloading every idle model would not make room.
    """
    used = sum(h.size for h in held)
    if used + need <= budget:
        return []
    idle = sorted((h for h in held if h.idle), key=lambda h: h.last_used)
    freeable = sum(h.size for h in idle)
    if need > budget or used - freeable + need > budget:
        raise insufficient(
            f"Not enough memory: the model needs {gb(need)} GB, the budget is {gb(budget)} GB "
            f"and {gb(used)} GB are held ({gb(freeable)} GB by idle models)"
        )
    chosen = []
    for holding in idle:
        if used + need <= budget:
            break
        chosen.append(holding.model_id)
        used -= holding.size
    return chosen


@dataclass
class Placement:
    nodes: list[str]
    """The node of each new replica (a node may take several)."""
    evict: dict[str, list[str]]
    """The idle models whose replicas on a node leave it first, by node (their replicas on other nodes stay)."""


def place(
    need: int,
    replicas: int,
    nodes: Iterable[Node],
    held: dict[str, list[Holding]],
    already_on: Iterable[str] = (),
    evict: bool = True,
) -> Placement:
    """Nodes for ``replicas`` replicas of ``need`` bytes each among ``nodes`` (those that may serve the model).

    Each replica goes to a node without a replica of the model if there is one (``already_on``: nodes that
    have one), then to the node with the most room; a node where it fits as things are comes before one that
    would unload the replicas of idle models it holds (least recently used first, only with ``evict``). 503
    ``insufficient_vram`` when the replicas cannot all fit.
    """
    candidates = list(nodes)
    holdings = {node.name: list(held.get(node.name, [])) for node in candidates}
    used = {name: sum(h.size for h in holding) for name, holding in holdings.items()}
    taken = list(already_on)
    chosen: list[str] = []
    evicted: dict[str, list[str]] = {}
    for _ in range(replicas):
        order = sorted(
            candidates, key=lambda n: (n.name in taken, -(n.budget_bytes - used[n.name]), used[n.name], n.name)
        )
        pick = next((n for n in order if used[n.name] + need <= n.budget_bytes), None)
        for node in order if pick is None and evict else ():
            try:
                names = evictions(holdings[node.name], need, node.budget_bytes)
            except ApiError:
                continue
            evicted.setdefault(node.name, []).extend(names)
            used[node.name] -= sum(h.size for h in holdings[node.name] if h.model_id in names)
            holdings[node.name] = [h for h in holdings[node.name] if h.model_id not in names]
            pick = node
            break
        if pick is None:
            rooms = ", ".join(
                f"{n.name}: {gb(n.budget_bytes - used[n.name])} of {gb(n.budget_bytes)} GB free" for n in candidates
            )
            what = f"replica {len(chosen) + 1} of {replicas}" if replicas > 1 else "the model"
            raise insufficient(f"Not enough memory: {what} needs {gb(need)} GB and no node has room ({rooms})")
        chosen.append(pick.name)
        taken.append(pick.name)
        used[pick.name] += need
        holdings[pick.name].append(Holding("", need, idle=False, last_used=0.0))
    return Placement(chosen, evicted)
