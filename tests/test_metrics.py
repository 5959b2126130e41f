"""``GET /metrics``: Prometheus text for the whole deployment, read by Prometheus's own parser; each figure moves
by what the test's own requests did."""

from __future__ import annotations

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, ask, worker_pid


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    answer = requests.get(f"{base_url}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_latency_tokens_and_first_token_are_counted(base_url, client):
    before = scrape(base_url)
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask("Say hi"),
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage][0]
    after = scrape(base_url)
    chat = {"model": CHAT_MODEL, "endpoint": "/v1/chat/completions", "status": "200"}
    assert value(after, "mlx_requests_total", **chat) == value(before, "mlx_requests_total", **chat) + 1
    for name in ("mlx_request_latency_seconds_count", "mlx_time_to_first_token_seconds_count"):
        assert value(after, name, model=CHAT_MODEL) == value(before, name, model=CHAT_MODEL) + 1, name
    generated = value(after, "mlx_tokens_generated_total", model=CHAT_MODEL)
    assert generated == value(before, "mlx_tokens_generated_total", model=CHAT_MODEL) + usage.completion_tokens
    assert value(after, "mlx_request_latency_seconds_bucket", model=CHAT_MODEL, le="+Inf") == value(
        after, "mlx_request_latency_seconds_count", model=CHAT_MODEL
    )


def test_models_queues_jobs_and_deliveries_are_reported(base_url):
    samples = scrape(base_url)
    for model in (CHAT_MODEL, EMBEDDING_MODEL):
        assert value(samples, "mlx_vram_usage_gb", model=model) > 0
        assert value(samples, "mlx_model_load_time_seconds", model=model) > 0
        assert value(samples, "mlx_workers", model=model) >= 1
        assert ("mlx_queue_depth", (("model", model),)) in samples
        assert ("mlx_batch_preemptions_total", (("model", model),)) in samples
    assert ("mlx_jobs", (("status", "completed"),)) in samples
    assert ("mlx_webhook_deliveries", (("status", "delivered"),)) in samples


def test_a_cached_prefix_counts_as_a_prompt_cache_hit(base_url, client):
    system = "You are a careful assistant. " + " ".join(f"Rule {n}: answer briefly and politely." for n in range(40))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=1, temperature=0)
    before = scrape(base_url)
    again = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=1, temperature=0)
    after = scrape(base_url)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    assert (
        value(after, "mlx_prompt_cache_hits_total", model=CHAT_MODEL)
        == value(before, "mlx_prompt_cache_hits_total", model=CHAT_MODEL) + 1
    )
    memory = {"model": CHAT_MODEL, "tier": "memory"}
    assert (
        value(after, "mlx_prompt_cache_tier_hits_total", **memory)
        == value(before, "mlx_prompt_cache_tier_hits_total", **memory) + 1
    )
    assert (
        value(after, "mlx_prompt_cached_tokens_total", model=CHAT_MODEL)
        - value(before, "mlx_prompt_cached_tokens_total", model=CHAT_MODEL)
        == cached
    )


def test_each_workers_resident_memory_is_in_stats_and_metrics(base_url, redis_client):
    pid = worker_pid(redis_client, EMBEDDING_MODEL)
    stats = requests.get(f"{base_url}/v1/models/{EMBEDDING_MODEL}/stats", timeout=10).json()
    worker = next(w for w in stats["workers"] if w["pid"] == pid)
    resident = psutil.Process(pid).memory_info().rss
    assert 0.5 * resident < worker["resident_memory_bytes"] < 2 * resident, (worker, resident)
    samples = scrape(base_url)
    labels = {"model": EMBEDDING_MODEL, "node": worker["node"], "pid": str(pid)}
    assert 0.5 * resident < value(samples, "mlx_worker_resident_memory_bytes", **labels) < 2 * resident
