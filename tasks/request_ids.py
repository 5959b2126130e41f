"""Celery signals that give each task the request id of the HTTP request that sent it (for the logs)."""

from __future__ import annotations

import logging

from celery.signals import task_postrun, task_prerun

from config.logs import request_id_var

log = logging.getLogger(__name__)


@task_prerun.connect
def _adopt_request_id(task=None, **_kwargs) -> None:
    headers = getattr(task.request, "headers", None) or {}
    request_id = getattr(task.request, "request_id", None) or headers.get("request_id") or "-"
    request_id_var.set(request_id)
    log.info("task %s %s received", task.name, task.request.id)


@task_postrun.connect
def _forget_request_id(**_kwargs) -> None:
    request_id_var.set("-")
