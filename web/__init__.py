"""The Flask app: OpenAI and platform APIs in front of Celery. Never imports mlx (a test checks)."""

from __future__ import annotations

import time

from flask import Flask

from config import mongo
from config.logs import configure_logging
from config.redis_client import connect_redis
from config.settings import Settings
from models.lifecycle import ModelLifecycle
from models.liveness import Liveness
from models.nodes import NodeBeats
from models.stats import ModelStats
from tasks.celery_app import create_celery
from tasks.dispatch import Dispatcher
from tasks.job_queue import JobQueue
from web import (
    adapters,
    admin,
    audio,
    batches,
    capabilities,
    chat,
    completions,
    console,
    diagnostics,
    docs_page,
    embeddings,
    files,
    fusion,
    health,
    images,
    jobs,
    messages,
    metrics,
    models,
    rag,
    rerank,
    responses,
    tokenize,
    vector_stores,
    webhooks,
)
from web.api import Api
from web.audit import register_audit
from web.auth import register_api_keys
from web.errors import register_error_handlers
from web.metrics import register_request_counter
from web.quotas import register_quotas
from web.rate_limits import register_rate_limits
from web.request_id import register_request_id
from web.versioning import register_versioning

MAX_BODY_BYTES = 16 * 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(
        API_TITLE="mlx-fusion",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    mongo.connect(settings)
    client = connect_redis(settings)
    celery = create_celery(settings)
    liveness = Liveness(client, settings.worker_heartbeat_ttl_seconds)
    dispatcher = Dispatcher(settings, celery, client, liveness)
    stats = ModelStats(client)
    nodes = NodeBeats(client, settings.worker_heartbeat_ttl_seconds)
    lifecycle = ModelLifecycle(settings, liveness, stats, dispatcher.queue_depth, nodes)
    dispatcher.on_demand = lifecycle.load_on_demand
    job_queue = JobQueue(settings, celery, client, stats)
    job_queue.on_demand = lifecycle.start_on_demand
    app.extensions.update(
        settings=settings,
        redis=client,
        celery=celery,
        liveness=liveness,
        nodes=nodes,
        dispatcher=dispatcher,
        stats=stats,
        lifecycle=lifecycle,
        jobs=job_queue,
        started_at=time.time(),
    )
    register_request_id(app)
    register_api_keys(app)
    register_quotas(app)
    register_audit(app)
    register_versioning(app, settings)
    api = Api(app)
    for blueprint in (
        chat.blp,
        completions.blp,
        messages.blp,
        responses.blp,
        embeddings.blp,
        tokenize.blp,
        rerank.blp,
        audio.blp,
        images.blp,
        models.blp,
        adapters.blp,
        health.blp,
        capabilities.blp,
        fusion.blp,
        jobs.blp,
        webhooks.blp,
        rag.blp,
        diagnostics.blp,
        metrics.blp,
        admin.blp,
        files.blp,
        batches.blp,
        vector_stores.blp,
        images.files,
    ):
        api.register_blueprint(blueprint)
    register_rate_limits(
        app,
        settings,
        {
            "models": models.blp,
            "adapters": adapters.blp,
            "fusion": fusion.blp,
            "capabilities": capabilities.blp,
            "rag": rag.blp,
            "jobs": jobs.blp,
            "webhooks": webhooks.blp,
        },
    )
    app.register_blueprint(docs_page.blp)
    app.register_blueprint(console.blp)
    register_request_counter(app)
    register_error_handlers(app)
    return app
