"""The platform's Prometheus metrics, gathered when scraped from what every process already publishes.

Model workers record each request in Redis (``models.stats``: counts, tokens,
latency and time-to-first-token histograms, prompt-cache hits) and beat their
state (memory, batch size); web processes count HTTP requests in Redis
(``count_request``); the broker holds the queues; MongoDB holds models, jobs and
webhook deliveries. So one scrape of any web process sees every process of the
deployment, on every machine, with no per-process endpoint to find.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from models import registry
from models.liveness import Liveness
from models.stats import CACHE_TIERS, LATENCY_BUCKETS, ModelStats
from tasks import job_store, webhooks
from tasks.job_states import STATUSES

REQUESTS_KEY = "mlxf:http-requests"


def count_request(client: redis.Redis, model: str, endpoint: str, status: int) -> None:
    client.hincrby(REQUESTS_KEY, json.dumps([model, endpoint, str(status)]), 1)


def _histogram(name: str, help_text: str, per_model: dict[str, dict[str, float]], field: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=["model"])
    for model, counters in per_model.items():
        count = counters.get(f"{field}_count", 0.0)
        if not count:
            continue
        buckets = [(str(bound), counters.get(f"{field}_le_{bound}", 0.0)) for bound in LATENCY_BUCKETS]
        family.add_metric([model], buckets + [("+Inf", count)], counters.get(f"{field}_sum", 0.0))
    return family


def _per_model(name: str, help_text: str, values: dict[str, float], kind: type = GaugeMetricFamily) -> Any:
    family = kind(name, help_text, labels=["model"])
    for model, value in sorted(values.items()):
        family.add_metric([model], value)
    return family


class PlatformCollector(Collector):
    def __init__(self, client: redis.Redis, liveness: Liveness, queue_depth: Callable[[str], int]) -> None:
        self.client = client
        self.liveness = liveness
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Any]:
        live = self.liveness.models()
        records = {record.model_id: record for record in registry.list_records()}
        models = sorted(set(records) | set(live))
        stats = ModelStats(self.client)
        counters = {model: stats.counters(model) for model in models}

        requests = CounterMetricFamily(
            "mlx_requests",
            "HTTP requests answered, by model, endpoint and status",
            labels=["model", "endpoint", "status"],
        )
        for raw, value in sorted(self.client.hgetall(REQUESTS_KEY).items()):
            requests.add_metric(json.loads(raw), float(value))
        yield requests
        yield _histogram("mlx_request_latency_seconds", "Model request latency in seconds", counters, "latency")
        yield _histogram("mlx_time_to_first_token_seconds", "Time to the first generated token", counters, "ttft")
        memory = {m: max((w.get("memory_bytes", 0) for w in live.get(m, [])), default=0) / 1e9 for m in models}
        yield _per_model("mlx_vram_usage_gb", "Memory the model's worker holds, in GB", memory)
        resident = GaugeMetricFamily(
            "mlx_worker_resident_memory_bytes",
            "Resident memory (RSS) of each model worker process at its last heartbeat",
            labels=["model", "node", "pid"],
        )
        for model in models:
            for worker in live.get(model, []):
                if worker.get("rss_bytes") is not None:
                    labels = [model, worker.get("node", ""), str(worker.get("pid", ""))]
                    resident.add_metric(labels, worker["rss_bytes"])
        yield resident
        yield _per_model(
            "mlx_queue_depth", "Requests waiting in the model's broker queue", {m: self.queue_depth(m) for m in models}
        )
        load = {m: (r.load_time_ms or 0) / 1000 for m, r in records.items() if r.load_time_ms}
        yield _per_model("mlx_model_load_time_seconds", "Model load time in seconds", load)
        batch = {m: sum(w.get("batch_size", 0) for w in live.get(m, [])) for m in models}
        yield _per_model("mlx_batch_size", "Sequences in the model's batches now", batch)
        yield _per_model("mlx_workers", "Live worker processes of the model", {m: len(live.get(m, [])) for m in models})
        preemptions = {m: sum(w.get("preemptions", 0) for w in live.get(m, [])) for m in models}
        yield _per_model(
            "mlx_batch_preemptions",
            "Batch rows that gave way to a more urgent request, over the live workers (restarts from 0 with a worker)",
            preemptions,
            CounterMetricFamily,
        )
        for name, field, help_text in (
            ("mlx_speculative_draft_tokens", "draft_tokens", "Draft tokens checked by speculative decoding"),
            ("mlx_speculative_accepted_tokens", "draft_tokens_accepted", "Draft tokens speculative decoding kept"),
        ):
            drafts = {m: sum(w.get(field, 0) for w in live.get(m, [])) for m in models}
            yield _per_model(
                name, f"{help_text}, over the live workers (restarts from 0 with a worker)", drafts, CounterMetricFamily
            )
        for name, field, help_text in (
            ("mlx_tokens_processed", "total_tokens_processed", "Prompt and generated tokens"),
            ("mlx_tokens_generated", "completion_tokens", "Generated tokens"),
            ("mlx_prompt_cache_hits", "prompt_cache_hits", "Requests that started from a cached prompt prefix"),
            ("mlx_prompt_cached_tokens", "cached_tokens", "Prompt tokens taken from the prompt cache"),
            ("mlx_model_errors", "error_count", "Model requests that ended in an error"),
        ):
            values = {m: c.get(field, 0.0) for m, c in counters.items()}
            yield _per_model(name, help_text, values, CounterMetricFamily)
        for name, field, help_text in (
            ("mlx_prompt_cache_tier_hits", "prompt_cache_hits", "Prompt-cache hits by the tier that held the prefix"),
            ("mlx_prompt_cache_tier_tokens", "cached_tokens", "Prompt tokens taken from each prompt-cache tier"),
        ):
            family = CounterMetricFamily(name, help_text, labels=["model", "tier"])
            for model, counted in sorted(counters.items()):
                for tier in CACHE_TIERS:
                    family.add_metric([model, tier], counted.get(f"{field}_{tier}", 0.0))
            yield family
        jobs = GaugeMetricFamily("mlx_jobs", "MCP jobs by status", labels=["status"])
        counted = Counter(job_store.Job.objects.scalar("status"))
        for status in STATUSES:
            jobs.add_metric([status], counted.get(status, 0))
        yield jobs
        deliveries = GaugeMetricFamily("mlx_webhook_deliveries", "Webhook deliveries by outcome", labels=["status"])
        counted = Counter(webhooks.Delivery.objects.scalar("status"))
        for status in webhooks.DELIVERY_STATUSES:
            deliveries.add_metric([status], counted.get(status, 0))
        yield deliveries
