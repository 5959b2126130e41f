"""Webhook subscriptions and their deliveries: registration, fan-out of job events, and one delivery attempt.

A delivery is one event for one target (a subscribed webhook, or the job's
``callback_url``); its id is derived from the event and the target, so fanning
an event out twice creates nothing new, and it is the ``webhook-id`` every
attempt carries. Each attempt is claimed by a compare-and-set on the attempt
count, so a duplicated task never sends twice, and is recorded on the delivery.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import mongoengine as me
import requests
from celery.utils.time import get_exponential_backoff_interval

from config.ownership import owned_by, visible
from config.settings import Settings
from tasks import job_store
from tasks.job_states import EVENTS
from tasks.job_store import iso, now
from tasks.signing import new_secret, signature_headers, valid_secret
from tasks.urls import Unresolvable, UnsafeUrl, check_url, guarded_session

log = logging.getLogger(__name__)

CALLBACK = "callback"
"""The ``webhook_id`` of deliveries to a job's own ``callback_url``."""
DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")
MAX_RETRY_AFTER_SECONDS = 3600.0


class Webhook(me.Document):
    meta = {"collection": "webhooks", "indexes": ["status", "created_at", "owner"]}

    webhook_id = me.StringField(primary_key=True)
    url = me.StringField(required=True)
    events = me.ListField(me.StringField(choices=EVENTS))
    secret = me.StringField(required=True)
    user_metadata = me.DictField(db_field="metadata")
    status = me.StringField(choices=("active", "disabled"), default="active")
    disabled_reason = me.StringField()
    created_at = me.DateTimeField(required=True)
    last_triggered_at = me.DateTimeField()
    success_count = me.IntField(default=0)
    failure_count = me.IntField(default=0)
    owner = me.StringField()
    """The API key that subscribed (see ``config.ownership``)."""
    jobs_of = me.StringField()
    """Whose jobs' events the subscription receives: its owner's, or every owner's (None: an admin's)."""

    def public(self) -> dict[str, Any]:
        view = {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "events": list(self.events),
            "status": self.status,
            "created_at": iso(self.created_at),
            "last_triggered_at": iso(self.last_triggered_at),
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "metadata": dict(self.user_metadata or {}),
        }
        if self.disabled_reason:
            view["disabled_reason"] = self.disabled_reason
        return view


class Delivery(me.Document):
    meta = {
        "collection": "webhook_deliveries",
        "indexes": [("webhook_id", "created_at"), ("status", "next_attempt_at"), "job_id"],
    }

    delivery_id = me.StringField(primary_key=True)
    webhook_id = me.StringField(required=True)
    job_id = me.StringField()
    event = me.StringField(required=True)
    event_id = me.StringField(required=True)
    url = me.StringField(required=True)
    secret = me.StringField()
    body = me.StringField(required=True)
    request_id = me.StringField()
    status = me.StringField(choices=DELIVERY_STATUSES, default="pending")
    attempt_count = me.IntField(default=0)
    attempts = me.ListField(me.DictField())
    created_at = me.DateTimeField(required=True)
    next_attempt_at = me.DateTimeField()
    delivered_at = me.DateTimeField()

    def public(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "webhook_id": self.webhook_id,
            "job_id": self.job_id,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "attempt_count": self.attempt_count,
            "attempts": [dict(attempt) for attempt in self.attempts],
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "pending" else None,
            "delivered_at": iso(self.delivered_at),
            "request_id": self.request_id,
        }


# --- subscriptions --------------------------------------------------------------------------------------


def register(
    url: str,
    events: list[str],
    secret: str | None,
    metadata: dict[str, Any] | None,
    allowed_networks: list[str],
    owner: str | None = None,
    sees: str | None = None,
) -> dict[str, Any]:
    """Subscribes ``url`` to ``events`` of the jobs ``sees`` may see, for ``owner``; raises ``UnsafeUrl`` for a
    URL that may not be called.

    Without a ``secret`` one is generated and returned, once, in the answer.
    """
    check_url(url, allowed_networks)
    if secret and not valid_secret(secret):
        raise ValueError("a secret starting with whsec_ must be base64 after the prefix")
    webhook = Webhook(
        webhook_id=f"wh-{uuid.uuid4().hex}",
        url=url,
        events=list(dict.fromkeys(events)),
        secret=secret or new_secret(),
        user_metadata=metadata or {},
        created_at=now(),
        owner=owner,
        jobs_of=sees,
    )
    webhook.save(force_insert=True)
    view = webhook.public()
    if not secret:
        view["secret"] = webhook.secret
    return view


def get_webhook(webhook_id: str, sees: str | None = None) -> Webhook | None:
    return Webhook.objects(webhook_id=webhook_id, **owned_by(sees)).first()


def list_webhooks(sees: str | None = None) -> list[Webhook]:
    return list(Webhook.objects(**owned_by(sees)).order_by("created_at"))


def delete_webhook(webhook_id: str, sees: str | None = None) -> bool:
    """Removes the subscription (if ``sees`` may see it); its pending deliveries are cancelled."""
    if not Webhook.objects(webhook_id=webhook_id, **owned_by(sees)).delete():
        return False
    Delivery.objects(webhook_id=webhook_id, status="pending").update(set__status="cancelled")
    return True


def list_deliveries(webhook_id: str, limit: int, offset: int) -> tuple[list[Delivery], int]:
    query = Delivery.objects(webhook_id=webhook_id)
    return list(query.order_by("-created_at").skip(offset).limit(limit)), query.count()


# --- fan-out --------------------------------------------------------------------------------------------


def _delivery_id(event_id: str, target: str) -> str:
    return "msg_" + hashlib.sha256(f"{event_id}|{target}".encode()).hexdigest()[:32]


def event_payload(job: job_store.Job, entry: dict[str, Any], max_bytes: int) -> str:
    """The body of every delivery of one stored event: the specification's payload, at most ``max_bytes``.

    A completed job's result goes in when it fits; otherwise it is left out and the payload says so (the
    receiver reads it from ``GET /api/mcp/jobs/{id}``), so a huge result never makes a delivery unstorable.
    """
    view = dict(entry["job"])
    payload = {"event": entry["event"], "timestamp": iso(entry["at"]), "job": view}
    if entry["event"] in ("job.completed", "batch.completed", "batch.expired"):
        view["result"] = dict(job.result or {})
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    if len(body.encode()) > max_bytes and "result" in view:
        view.pop("result")
        view["result_omitted"] = f"the result is larger than {max_bytes} bytes; read it from the job"
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    if len(body.encode()) > max_bytes:  # still too big: the caller's metadata or a long error message
        view["metadata"] = {}
        view["error"] = str(view.get("error") or "")[:1000] or None
        view["truncated"] = True
        trimmed = {**payload, "job": {k: v for k, v in view.items() if v is not None}}
        body = json.dumps(trimmed, separators=(",", ":"), sort_keys=True)
    return body


def fan_out(job_id: str, event_id: str, settings: Settings) -> list[str]:
    """Creates a pending delivery of a stored job event per subscribed webhook and for the job's callback URL
    (signed with the job's ``callback_secret``, else ``CALLBACK_SECRET``), then marks the event fanned out.
    Returns the ids of the deliveries created now (none when the event was already fanned out, or is unknown).
    """
    job = job_store.get(job_id)
    entry = job_store.outbox_entry(job, event_id) if job is not None else None
    if job is None or entry is None:
        log.warning("event %s of job %s is not stored; nothing to fan out", event_id, job_id)
        return []
    event = entry["event"]
    subscribed = Webhook.objects(status="active", events=event)
    targets = [(w.webhook_id, w.url, w.secret) for w in subscribed if visible(job.owner, w.jobs_of)]
    if job.callback_url:
        targets.append((CALLBACK, job.callback_url, job.callback_secret or settings.callback_secret))
    body = event_payload(job, entry, settings.delivery_body_max_bytes) if targets else ""
    created = []
    moment = now()
    for webhook_id, url, secret in targets:
        delivery = Delivery(
            delivery_id=_delivery_id(event_id, webhook_id if webhook_id != CALLBACK else f"callback|{url}"),
            webhook_id=webhook_id,
            job_id=job_id,
            event=event,
            event_id=event_id,
            url=url,
            secret=secret,
            body=body,
            request_id=job.request_id,
            created_at=moment,
            next_attempt_at=moment,
        )
        try:
            delivery.save(force_insert=True)
        except me.NotUniqueError:
            continue
        created.append(delivery.delivery_id)
    job_store.mark_fanned_out(job_id, event_id)
    return created


def overdue(before: datetime) -> list[Delivery]:
    """Pending deliveries whose next attempt should have happened before ``before`` (their task was lost)."""
    return list(Delivery.objects(status="pending", next_attempt_at__lt=before))


def postpone(delivery: Delivery, seconds: float) -> bool:
    """Moves an overdue delivery's next attempt ``seconds`` ahead (compare-and-set on the attempt it is at), so
    that re-sending its lost task happens once, not at every reconciler run; False when it moved meanwhile."""
    return bool(
        Delivery.objects(
            delivery_id=delivery.delivery_id,
            status="pending",
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.next_attempt_at,
        ).update_one(set__next_attempt_at=now() + timedelta(seconds=seconds))
    )


def give_up(delivery_id: str, attempts: int) -> bool:
    """Marks a pending delivery that has had all its attempts as failed."""
    return bool(
        Delivery.objects(delivery_id=delivery_id, status="pending", attempt_count=attempts).update_one(
            set__status="failed"
        )
    )


# --- one attempt ----------------------------------------------------------------------------------------


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not header:
        return None
    header = header.strip()
    if header.isascii() and header.isdigit():
        return float(header)
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now()).total_seconds())


def backoff_seconds(number: int, settings: Settings) -> float:
    """Celery's exponential backoff with full jitter (in milliseconds, so that fractional settings work):
    the ceiling doubles per attempt up to the maximum, and many failing deliveries spread out."""
    return (
        get_exponential_backoff_interval(
            factor=int(settings.webhook_retry_base_seconds * 1000),
            retries=number - 1,
            maximum=int(settings.webhook_retry_max_seconds * 1000),
            full_jitter=True,
        )
        / 1000
    )


def _send(delivery: Delivery, settings: Settings) -> tuple[dict[str, Any], requests.Response | None, bool]:
    """POSTs the delivery once: the attempt record, the response, and whether trying again could help."""
    started = time.perf_counter()
    record: dict[str, Any] = {"number": delivery.attempt_count, "at": iso(now())}
    try:
        check_url(delivery.url, settings.webhook_networks)
    except Unresolvable as exc:
        record.update(error=str(exc), duration_ms=0)
        return record, None, True
    except UnsafeUrl as exc:
        record.update(error=f"refused: {exc}", duration_ms=0)
        return record, None, False
    timestamp = int(time.time())
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mlx-fusion-webhooks/1",
        "X-Webhook-Event": delivery.event,
        "X-Webhook-ID": delivery.webhook_id,
        "webhook-id": delivery.delivery_id,
        "webhook-timestamp": str(timestamp),
        **signature_headers(delivery.secret or "", delivery.delivery_id, timestamp, body),
    }
    if delivery.request_id:
        headers["X-Request-ID"] = delivery.request_id
    try:
        # The body is never read (stream, then close): a receiver cannot make the worker hold a large answer.
        with _session(settings).post(
            delivery.url,
            data=body,
            headers=headers,
            timeout=settings.webhook_timeout_seconds,
            allow_redirects=False,
            stream=True,
        ) as response:
            pass
    except UnsafeUrl as exc:
        record.update(error=f"refused on connect: {exc}", duration_ms=_ms(started))
        return record, None, False
    except requests.RequestException as exc:
        record.update(error=f"{type(exc).__name__}: {exc}"[:500], duration_ms=_ms(started))
        return record, None, True
    record.update(status_code=response.status_code, duration_ms=_ms(started))
    return record, response, True


_sessions: dict[tuple[str, ...], requests.Session] = {}


def _session(settings: Settings) -> requests.Session:
    key = tuple(settings.webhook_networks)
    if key not in _sessions:
        _sessions[key] = guarded_session(list(key))
    return _sessions[key]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def next_step(
    code: int | None, retryable: bool, number: int, retry_after: str | None, settings: Settings
) -> tuple[str, float | None]:
    """What follows attempt ``number``: ``delivered``, ``gone`` (410: the webhook is disabled), ``retry`` after
    the returned delay (``Retry-After`` when the receiver gave one, capped; else the backoff), or ``failed``."""
    if code is not None and 200 <= code < 300:
        return "delivered", None
    if code == 410:
        return "gone", None
    if not retryable or number >= settings.webhook_max_attempts:
        return "failed", None
    asked = retry_after_seconds(retry_after)
    return "retry", min(asked, MAX_RETRY_AFTER_SECONDS) if asked is not None else backoff_seconds(number, settings)


def attempt(delivery_id: str, number: int, settings: Settings) -> float | None:
    """Makes attempt ``number`` of a delivery; returns the delay before the next attempt, or None when done.

    2xx delivers; 410 Gone disables the webhook; anything else (redirects
    included, which are not followed) is retried with backoff, honouring
    ``Retry-After``, until ``WEBHOOK_MAX_ATTEMPTS``.
    """
    delivery = Delivery.objects(delivery_id=delivery_id).first()
    if delivery is None or delivery.status != "pending" or delivery.attempt_count != number - 1:
        return None
    webhook = None
    if delivery.webhook_id != CALLBACK:
        webhook = get_webhook(delivery.webhook_id)
        if webhook is None or webhook.status != "active":
            Delivery.objects(delivery_id=delivery_id, status="pending").update_one(set__status="cancelled")
            return None
    # While the attempt is in flight it is not overdue: the reconciler must not send the next one beside it.
    in_flight_until = now() + timedelta(seconds=2 * settings.webhook_timeout_seconds)
    if not Delivery.objects(delivery_id=delivery_id, status="pending", attempt_count=number - 1).update_one(
        set__attempt_count=number, set__next_attempt_at=in_flight_until
    ):
        return None  # another copy of this task took the attempt
    delivery.attempt_count = number
    try:
        record, response, retryable = _send(delivery, settings)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never left unaccounted
        log.exception("delivery %s attempt %d broke", delivery_id, number)
        record, response, retryable = (
            {"number": number, "at": iso(now()), "error": f"{type(exc).__name__}: {exc}"[:500]},
            None,
            True,
        )
    code = response.status_code if response is not None else None
    retry_after = response.headers.get("Retry-After") if response is not None else None
    verdict, delay = next_step(code, retryable, number, retry_after, settings)
    if verdict == "delivered":
        outcome = {"set__status": "delivered", "set__delivered_at": now()}
        counters = {"inc__success_count": 1}
    elif verdict == "gone":
        outcome = {"set__status": "failed"}
        counters = {
            "inc__failure_count": 1,
            "set__status": "disabled",
            "set__disabled_reason": "the receiver answered 410 Gone",
        }
    elif verdict == "retry":
        record["retry_in_seconds"] = round(delay, 3)
        outcome = {"set__next_attempt_at": now() + timedelta(seconds=delay)}
        counters = {"inc__failure_count": 1}
    else:
        outcome = {"set__status": "failed"}
        counters = {"inc__failure_count": 1}
    if not Delivery.objects(delivery_id=delivery_id, status="pending", attempt_count=number).update_one(
        push__attempts=record, **outcome
    ):
        log.warning("delivery %s moved on during attempt %d; its outcome is not recorded", delivery_id, number)
        return None
    if webhook is not None:
        Webhook.objects(webhook_id=webhook.webhook_id).update_one(set__last_triggered_at=now(), **counters)
    log.info(
        "delivery %s (%s to %s) attempt %d: %s",
        delivery_id,
        delivery.event,
        delivery.webhook_id,
        number,
        code if code is not None else record.get("error"),
    )
    return delay
