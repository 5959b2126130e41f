"""More machines, on one machine: nodes are supervisors with their own names, data folders, memory budgets and
``NODE_MODELS``, sharing the session's Redis and Mongo-wire server (as other machines would).

The session's own supervisor is ``node-a`` and serves everything but ``nodes/*``; these tests start more nodes
that serve only ``nodes/*`` models. What cannot be shown here: a second physical machine (the nodes share this
one's CPU and memory; nothing in a node's traffic is local to its machine but its worker processes and files).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import redis
import requests

from config.settings import Settings
from models.lifecycle import weights_bytes
from models.liveness import Liveness
from models.nodes import NodeBeats
from tasks.celery_app import create_celery, model_queue
from tests.conftest import CHAT_MODEL_DIR, ON_DEMAND_NODES_MODEL, ask, job_status, load_model, submit_job, unload_model
from tests.conftest import wait_for_job as wait_for_job_status
from tests.hub_cache import lay_out_in_hf_cache
from tests.stack import ROOT, Service, Stack, wait_until

EMBEDDING_MODEL_DIR = ROOT / ".data" / "models" / "sentence-transformers--all-MiniLM-L6-v2"
NODES_REPO = "test-org/SmolLM2-135M-Instruct-nodes"


def start_node(stack: Stack, name: str, budget_gb: float = 0.0, **extra_env: str) -> Service:
    data = Path(stack.workdir) / name
    env = {
        "NODE_NAME": name,
        "NODE_MODELS": "nodes/*",
        "MODEL_MEMORY_BUDGET_GB": f"{budget_gb:.3f}",
        "DATA_DIR": str(data),
        **extra_env,
    }
    return stack.start(name, [sys.executable, "-m", "models.supervisor"], env)


def running_nodes(base_url: str) -> dict[str, dict]:
    return {node["name"]: node for node in requests.get(f"{base_url}/health", timeout=10).json()["nodes"]}


def model(base_url: str, model_id: str) -> dict:
    return requests.get(f"{base_url}/v1/models/{model_id}", timeout=10).json()


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


@pytest.fixture(scope="module")
def mini_gb() -> float:
    """What one MiniLM worker holds, as the budget counts it: its weights until loaded, then what the worker
    measured at load (the same 90.9 MB here)."""
    return weights_bytes(EMBEDDING_MODEL_DIR) / 1e9


@pytest.fixture(scope="module")
def budgeted_nodes(stack: Stack, base_url: str, mini_gb: float):
    """node-b has room for two MiniLM workers, node-c for one."""
    nodes = [start_node(stack, "node-b", 2.2 * mini_gb), start_node(stack, "node-c", 1.5 * mini_gb)]
    wait_until(lambda: {"node-b", "node-c"} <= set(running_nodes(base_url)), 30, "nodes b and c")
    yield
    for node in nodes:
        node.stop()


def load_mini(base_url: str, model_id: str, **extra) -> requests.Response:
    return load_model(base_url, str(EMBEDDING_MODEL_DIR), model_id, "embeddings", **extra)


def test_placement_follows_room_and_each_node_evicts_its_own_least_recently_used(base_url, budgeted_nodes):
    ids = [f"nodes/mini-{n}" for n in range(1, 5)]
    try:
        first = load_mini(base_url, ids[0])
        assert first.status_code == 200, first.text
        assert first.json()["nodes"] == ["node-b"], "the node with the most room"
        with ThreadPoolExecutor(2) as pool:  # whichever registers first, node-c has more room left for the second
            second = pool.submit(load_mini, base_url, ids[1])
            third = pool.submit(load_mini, base_url, ids[2], node="node-b")
            second, third = second.result(), third.result()
        assert second.json()["nodes"] == ["node-c"], "node-b has less room left than node-c"
        assert third.json()["nodes"] == ["node-b"], "named, and it fits beside the first"
        assert {m: model(base_url, m)["nodes"] for m in ids[:3]} == {
            ids[0]: ["node-b"],
            ids[1]: ["node-c"],
            ids[2]: ["node-b"],
        }
        used = requests.post(f"{base_url}/v1/embeddings", json={"model": ids[0], "input": "hi"}, timeout=60)
        assert used.status_code == 200  # so ids[2] is node-b's least recently used

        fourth = load_mini(base_url, ids[3], node="node-b")
        assert fourth.status_code == 200, fourth.text
        evicted = requests.get(f"{base_url}/v1/models/{ids[2]}", timeout=10)
        assert evicted.status_code == 404, f"{ids[2]} evicted: {evicted.text}"
        assert model(base_url, ids[0])["nodes"] == ["node-b"] and model(base_url, ids[1])["nodes"] == ["node-c"]
        nodes = running_nodes(base_url)
        assert sorted(nodes["node-b"]["models"]) == [ids[0], ids[3]] and nodes["node-c"]["models"] == [ids[1]]

        too_many = load_mini(base_url, "nodes/mini-x", replicas=5)
        assert too_many.status_code == 503 and error_of(too_many)["code"] == "insufficient_vram"
        assert "node-b:" in error_of(too_many)["message"] and "node-c:" in error_of(too_many)["message"]
        assert all(model(base_url, m)["status"] == "loaded" for m in (ids[0], ids[1], ids[3])), "nothing evicted"
        unknown = load_mini(base_url, "nodes/mini-x", node="node-z")
        assert unknown.status_code == 400 and error_of(unknown)["param"] == "node"
        excluded = load_mini(base_url, "nodes/mini-x", node="node-a")
        assert excluded.status_code == 400 and "NODE_MODELS" in error_of(excluded)["message"]
        nowhere = load_mini(base_url, "elsewhere/mini", node="node-b")
        assert nowhere.status_code == 400 and error_of(nowhere)["param"] == "node"
    finally:
        with ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(lambda model_id: unload_model(base_url, model_id, force=True), ids))


def test_a_request_for_an_on_demand_model_that_fits_no_node_is_503(base_url, jobs_url, budgeted_nodes):
    """Only the nodes/* nodes may serve it, and the chat model is bigger than node-b's or node-c's budget."""
    body = {"model": ON_DEMAND_NODES_MODEL, "messages": ask("Hi"), "max_tokens": 2}
    answer = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 503 and error_of(answer)["code"] == "insufficient_vram", answer.text
    assert "node-b:" in error_of(answer)["message"] and "node-c:" in error_of(answer)["message"]
    job = submit_job(jobs_url, ON_DEMAND_NODES_MODEL, "chat", {"messages": ask("Hi"), "max_tokens": 2})
    assert job.status_code == 503 and error_of(job)["code"] == "insufficient_vram", job.text
    assert model(base_url, ON_DEMAND_NODES_MODEL)["status"] == "available", "still listed, nothing loaded"


def test_placements_take_turns_so_loads_at_once_never_overfill_a_node(base_url, redis_client, budgeted_nodes):
    """Three loads at once, held at the placement lock: without turns each would count node-b's room for two as
    free and all three would go there; one after the other they go b, c (more room left), b."""
    ids = [f"nodes/at-once-{n}" for n in range(3)]
    lock = NodeBeats(redis_client, 4).placing()
    assert lock.acquire(blocking_timeout=10)  # a supervisor may hold it for a moment
    try:
        with ThreadPoolExecutor(len(ids)) as pool:
            loads = [pool.submit(load_mini, base_url, model_id) for model_id in ids]
            held_until = time.monotonic() + 2
            while time.monotonic() < held_until:
                listed = [requests.get(f"{base_url}/v1/models/{m}", timeout=10).status_code for m in ids]
                assert listed == [404, 404, 404], "no load registers while the lock is held"
                time.sleep(0.2)
            lock.release()
            answers = [load.result() for load in loads]
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert sorted(a.json()["nodes"][0] for a in answers) == ["node-b", "node-b", "node-c"]
        nodes = running_nodes(base_url)
        assert len(nodes["node-b"]["models"]) == 2 and len(nodes["node-c"]["models"]) == 1
    finally:
        if lock.owned():
            lock.release()
        with ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(lambda model_id: unload_model(base_url, model_id, force=True), ids))


def test_room_made_on_one_node_takes_only_that_nodes_replica_of_an_idle_model(base_url, budgeted_nodes):
    """A 2-replica model spread on node-b and node-c; a model named on node-c needs the room of its replica
    there. Only that replica goes: the model serves on from node-b, and its second replica is placed again where
    there is room (node-b, which has room for two)."""
    spread, newcomer = "nodes/spread", "nodes/newcomer"
    try:
        loaded = load_mini(base_url, spread, replicas=2)
        assert loaded.status_code == 200 and sorted(loaded.json()["nodes"]) == ["node-b", "node-c"], loaded.text
        wait_until(lambda: model(base_url, spread)["nodes"] == ["node-b", "node-c"], 60, "both replicas serving")

        made_room = load_mini(base_url, newcomer, node="node-c")
        assert made_room.status_code == 200 and made_room.json()["nodes"] == ["node-c"], made_room.text
        assert model(base_url, spread)["status"] == "loaded", "not unloaded: it keeps its replica on node-b"
        assert "node-c" not in model(base_url, spread)["nodes"], "its replica on node-c stopped before the load"
        used = requests.post(f"{base_url}/v1/embeddings", json={"model": spread, "input": "hi"}, timeout=60)
        assert used.status_code == 200, used.text
        wait_until(lambda: model(base_url, spread)["nodes"] == ["node-b", "node-b"], 180, "the second replica on node-b")
        nodes = running_nodes(base_url)
        assert sorted(nodes["node-b"]["models"]) == [spread, spread] and nodes["node-c"]["models"] == [newcomer]
    finally:
        for model_id in (spread, newcomer):
            unload_model(base_url, model_id, force=True)


def node_hub_cache(stack: Stack, name: str) -> Path:
    return Path(stack.workdir) / name / "hf-cache"


@pytest.fixture(scope="module")
def open_nodes(stack: Stack, base_url: str):
    """node-d and node-e, without a memory budget, each with a Hugging Face cache of its own that holds
    ``NODES_REPO`` (as if each machine had downloaded it; the web's cache holds it too)."""
    lay_out_in_hf_cache(Path(os.environ["HF_HUB_CACHE"]), NODES_REPO, CHAT_MODEL_DIR)
    caches = {name: node_hub_cache(stack, name) for name in ("node-d", "node-e")}
    for cache in caches.values():
        lay_out_in_hf_cache(cache, NODES_REPO, CHAT_MODEL_DIR)
    nodes = {name: start_node(stack, name, HF_HUB_CACHE=str(cache)) for name, cache in caches.items()}
    wait_until(lambda: set(nodes) <= set(running_nodes(base_url)), 30, "nodes d and e")
    yield nodes
    for node in nodes.values():
        node.stop()


def node_celery():
    """A Celery client of the session's broker (to ask the workers what they consume)."""
    return create_celery(Settings.from_env())


def workers_of(client: redis.Redis, model_id: str) -> list[dict]:
    return Liveness(client, 4).workers(model_id)


def test_replicas_on_two_nodes_consume_one_queue(base_url, redis_client, open_nodes):
    model_id = "nodes/replicated"
    loaded = load_model(base_url, str(CHAT_MODEL_DIR), model_id, replicas=2, max_concurrency=1, context_length=1024)
    try:
        assert loaded.status_code == 200, loaded.text
        assert sorted(loaded.json()["nodes"]) == ["node-d", "node-e"]
        wait_until(lambda: len(workers_of(redis_client, model_id)) == 2, 120, "both replicas")
        listed = model(base_url, model_id)
        assert listed["replicas"] == 2 and listed["nodes"] == ["node-d", "node-e"] and listed["workers"] == 2
        info = requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()
        assert sorted(info["placed_on"]) == ["node-d", "node-e"] and info["replicas"] == 2

        inspect = node_celery().control.inspect

        def consuming_nodes() -> list[str]:
            consumers = inspect(timeout=2).active_queues() or {}
            return sorted(
                hostname.rsplit("@", 1)[1]
                for hostname, queues in consumers.items()
                if any(queue["name"] == model_queue(model_id) for queue in queues)
            )

        wait_until(lambda: consuming_nodes() == ["node-d", "node-e"], 30, f"a consumer of {model_id} on each node")

        def chat(text: str) -> requests.Response:
            body = {"model": model_id, "messages": ask(text), "max_tokens": 3, "temperature": 0}
            return requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(chat, ["One.", "Two.", "Three.", "Four."]))
        assert [answer.status_code for answer in answers] == [200] * 4
    finally:
        unload_model(base_url, model_id, force=True)


def folders(base_url: str, model_id: str) -> dict[str, str]:
    info = requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()
    return {entry["node"]: entry["folder"] for entry in info["folders"]}


def node_snapshot(stack: Stack, node: str) -> str:
    (snapshot,) = (node_hub_cache(stack, node) / f"models--{NODES_REPO.replace('/', '--')}" / "snapshots").iterdir()
    return str(snapshot)


def test_a_node_that_vanishes_is_noticed_its_streams_end_and_its_jobs_finish_on_another(
    base_url, client: openai.OpenAI, redis_client, open_nodes, jobs_url, hold, stack: Stack
):
    """The model comes from the Hub (by repo id): the node it moves to serves it from its own copy."""
    model_id = "nodes/movable"
    loaded = load_model(base_url, NODES_REPO, model_id, max_concurrency=2, context_length=1024)
    assert loaded.status_code == 200, loaded.text
    (doomed,) = loaded.json()["nodes"]
    (survivor,) = set(open_nodes) - {doomed}
    assert folders(base_url, model_id) == {doomed: node_snapshot(stack, doomed)}
    held = hold("node-stream")  # holds the worker's engine: the job below waits in it, claimed
    try:
        stream = client.chat.completions.create(
            model=model_id,
            messages=ask("Count from 1 to 100."),
            max_tokens=6,
            stream=True,
            temperature=0,  # greedy: the first token is text, so the stream has begun before the hold
            extra_headers={"X-Request-ID": held.request_id},
        )
        chunks = iter(stream)
        next(chunks)
        held.wait_held()
        job = submit_job(
            jobs_url, model_id, "chat", {"messages": ask("Count to 3."), "max_tokens": 4, "temperature": 0}
        )
        job_id = job.json()["job_id"]
        wait_until(lambda: job_status(jobs_url, job_id)["status"] == "processing", 30, "the job to be claimed")

        open_nodes[doomed].stop(signal.SIGKILL)  # the machine is gone: its supervisor and workers at once
        shutil.rmtree(node_hub_cache(stack, doomed))  # and its files
        with pytest.raises(openai.APIError) as caught:
            for _ in chunks:
                pass
        assert caught.value.code == "worker_lost"
        wait_until(lambda: doomed not in running_nodes(base_url), 15, f"{doomed} to leave /health")
        done = wait_for_job_status(jobs_url, job_id, timeout=180)
        assert done["status"] == "completed" and done["attempts"] == 2, done
        assert model(base_url, model_id)["nodes"] == [survivor], "its replica was placed on the other node"
        assert folders(base_url, model_id)[survivor] == node_snapshot(stack, survivor)
    finally:
        unload_model(base_url, model_id, force=True)
