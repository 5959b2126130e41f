"""``GET /metrics``: Prometheus text for the whole deployment (``tasks.metrics``), and the HTTP request counter
every web process keeps. Open unless ``METRICS_REQUIRES_KEY`` is set (with ``API_KEYS``)."""

from __future__ import annotations

from flask import Flask, Response, current_app, request
from flask.views import MethodView
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tasks.metrics import PlatformCollector, count_request
from web.api import Blueprint
from web.quotas import KeyUsageCollector

blp = Blueprint("metrics", __name__, description="Prometheus metrics of the whole deployment")
NOT_COUNTED = ("/metrics", "/health")


def _model_of_request() -> str:
    """The model a request named (body ``model``/``model_id``, form ``model``, or the path), else ``-``."""
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        named = body.get("model") or body.get("model_id")
        if isinstance(named, str):
            return named
    if request.form.get("model"):
        return request.form["model"]
    return str((request.view_args or {}).get("model_id") or "-")


def register_request_counter(app: Flask) -> None:
    @app.after_request
    def _count(response: Response) -> Response:
        if request.path not in NOT_COUNTED:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            try:
                count_request(current_app.extensions["redis"], _model_of_request(), endpoint, response.status_code)
            except Exception:  # noqa: BLE001 - a metric is never worth failing the answer
                current_app.logger.warning("could not count the request", exc_info=True)
        return response


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        responses={
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    )
    def get(self) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            PlatformCollector(
                current_app.extensions["redis"],
                current_app.extensions["liveness"],
                current_app.extensions["dispatcher"].queue_depth,
            )
        )
        registry.register(KeyUsageCollector(current_app.extensions["redis"]))
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
