"""The supervisor's tick, decided without side effects from the registry and its workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import config
from config.settings import Settings
from models import torch_absent
from models.registry import ModelRecord
from models.supervisor import Action, Child, Supervisor, at_rest, plan, worker_environment
from models.torch_absent import WITHOUT_TORCH

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def record(
    model_id: str,
    status: str = "loaded",
    desired: str = "loaded",
    force: bool = False,
    age: float = 1.0,
    nodes: tuple[str, ...] = ("here",),
):
    return ModelRecord(
        nodes=list(nodes),
        model_id=model_id,
        model_type="lm",
        path="/models/x",
        created=0,
        status=status,
        desired=desired,
        force_unload=force,
        updated_at=NOW - timedelta(seconds=age),
    )


def tick(records, children=None, failing=None, deadline=600.0):
    return plan(records, children or {}, failing or {}, NOW, deadline, "here")


def test_a_wanted_model_without_a_worker_gets_one():
    assert tick([record("a", "loading")]) == [Action("start", "a")]
    assert tick([record("a", "loaded")]) == [Action("start", "a")]
    assert tick([record("a", "loaded")], {("a", 0): False}) == []


def test_failed_models_are_not_started():
    assert tick([record("a", "failed")]) == []


def test_unloaded_models_are_stopped_then_forgotten():
    assert tick([record("a", "unloading", "unloaded", force=True)], {("a", 0): False}) == [
        Action("stop", "a", force=True)
    ]
    assert tick([record("a", "unloading", "unloaded")]) == [Action("forget", "a")]


def test_a_worker_whose_model_is_no_longer_registered_is_stopped():
    assert tick([], {("ghost", 0): False}) == [Action("stop", "ghost")]


def test_a_failing_worker_is_restarted_once_its_model_is_loaded():
    actions = tick([record("a")], {("a", 0): False}, failing={("a", 0): "its engine stopped making progress"})
    assert actions == [Action("restart", "a", reason="its engine stopped making progress")]
    assert tick([record("a", "loading")], {("a", 0): False}, failing={("a", 0): "unresponsive"}) == []


def test_a_model_stuck_loading_past_the_deadline_fails():
    actions = tick([record("a", "loading", age=601)], {("a", 0): False})
    assert [(a.kind, a.model_id) for a in actions] == [("fail", "a")]
    assert "did not finish loading within 600s" in actions[0].reason
    assert tick([record("a", "loading", age=599)], {("a", 0): False}) == []


def test_a_node_runs_the_replicas_placed_on_it_and_no_more():
    started = tick([record("a", nodes=("here", "there", "here"))])
    assert started == [Action("start", "a", 0, of=2), Action("start", "a", 1, of=2)]
    assert tick([record("a", nodes=("there",))]) == []
    moved_away = tick([record("a", nodes=("there",))], {("a", 0): False, ("a", 1): False})
    assert moved_away == [Action("stop", "a", 0), Action("stop", "a", 1)]
    assert tick([record("a", nodes=("here",))], {("a", 0): False, ("a", 1): False}) == [Action("stop", "a", 1)]


def test_only_a_node_that_hosts_a_model_fails_it_for_loading_too_long():
    assert tick([record("a", "loading", age=601, nodes=("there",))]) == []


def test_every_replica_of_an_unloaded_model_is_stopped():
    children = {("a", 0): False, ("a", 1): False}
    assert tick([record("a", "unloading", "unloaded")], children) == [Action("stop", "a", 0), Action("stop", "a", 1)]


def test_replicas_on_one_node_split_its_cores_between_their_blas_threads(monkeypatch):
    """The core count is set to 8 (a stand-in: this machine has 2) to see the split on a bigger machine."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert "OPENBLAS_NUM_THREADS" not in worker_environment(1)
    assert worker_environment(2)["OPENBLAS_NUM_THREADS"] == "4"
    assert worker_environment(16)["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert worker_environment(2)["OPENBLAS_NUM_THREADS"] == "3", "the operator's setting wins"


def test_workers_start_with_openblas_preloaded_so_they_need_not_re_execute(monkeypatch, tmp_path):
    """The library is a stand-in file and the platform is set to Linux, so the test reads the same on a Mac."""
    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"")
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("MLXF_BLAS_CHECKED", "LD_PRELOAD", "OPENBLAS_THREAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    env = worker_environment(1, str(library))
    assert env["LD_PRELOAD"] == str(library) and env["MLXF_BLAS_CHECKED"] == "1"
    assert env["OPENBLAS_THREAD_TIMEOUT"] == "20", "its threads sleep soon after their last work"
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert worker_environment(1, str(library))["OPENBLAS_THREAD_TIMEOUT"] == "28", "the operator's setting wins"


def test_the_supervisor_ticks_slower_only_while_nothing_is_in_motion():
    settled = [record("a", "loaded"), record("b", "failed")]
    worker = Child("a", 0, process=None)
    assert at_rest(settled, [worker], [])
    assert not at_rest(settled, [worker], [Action("start", "c")]), "it just did something"
    assert not at_rest([record("a", "loading")], [worker], []), "a worker is loading"
    assert not at_rest([record("a", "loaded", desired="unloaded")], [worker], []), "an unload was asked for"
    stopping = Child("a", 0, process=None, stop_sent_at=1.0)
    assert not at_rest(settled, [stopping], [])
    unresponsive = Child("a", 0, process=None, unresponsive_since=1.0)
    assert not at_rest(settled, [unresponsive], [])
    supervisor = Supervisor(Settings(worker_heartbeat_ttl_seconds=6))
    assert supervisor.tick_seconds(1.0) == 1.0
    supervisor.resting = True
    assert supervisor.tick_seconds(1.0) == 2.0
    short_ttl = Supervisor(Settings(worker_heartbeat_ttl_seconds=4), resting=True)
    assert short_ttl.tick_seconds(1.0) == 4 / 3, "three beats of its node within the TTL"


def test_workers_of_the_types_that_need_no_torch_are_told_to_hide_it(monkeypatch):
    monkeypatch.setenv(WITHOUT_TORCH, "1")  # a supervisor's own environment never passes it on unasked
    assert worker_environment(1, model_type="lm")[WITHOUT_TORCH] == "1"
    assert worker_environment(1, model_type="embeddings")[WITHOUT_TORCH] == "1"
    assert worker_environment(1, model_type="whisper")[WITHOUT_TORCH] == "0"
    assert worker_environment(1, model_type="multimodal")[WITHOUT_TORCH] == "0"
    assert worker_environment(1)[WITHOUT_TORCH] == "0"


def test_a_worker_started_by_hand_hides_torch_as_its_catalog_entry_says(monkeypatch):
    catalog = Path(config.__file__).with_name("models.json")
    shipped = Settings(models_file=catalog, model_path="", autostart_catalog=True)
    monkeypatch.delenv(WITHOUT_TORCH, raising=False)
    assert torch_absent.wanted(shipped, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert torch_absent.wanted(shipped, "sentence-transformers/all-MiniLM-L6-v2")
    assert not torch_absent.wanted(shipped, "openai/whisper-tiny.en")
    assert not torch_absent.wanted(shipped, "someone/not-in-the-catalog")
    monkeypatch.setenv(WITHOUT_TORCH, "0")  # the supervisor's word wins over the catalog's
    assert not torch_absent.wanted(shipped, "HuggingFaceTB/SmolLM2-135M-Instruct")
