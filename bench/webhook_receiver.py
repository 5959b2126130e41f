"""A local webhook receiver: records when each job's event arrived, in a thread of the bench process."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def find_job_id(body: Any) -> str | None:
    """The ``job_id`` anywhere in a webhook body (``{"job": {"job_id"}}`` per the spec, or nested otherwise)."""
    if isinstance(body, dict):
        if isinstance(body.get("job_id"), str):
            return body["job_id"]
        for value in body.values():
            found = find_job_id(value)
            if found:
                return found
    return None


class WebhookReceiver:
    """Listens on 127.0.0.1 at a free port; ``arrivals`` maps job id to (wall-clock time, event, body)."""

    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.arrivals: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self.unmatched = 0
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                self.send_response(200)
                self.end_headers()
                receiver._record(received, self.headers.get("X-Webhook-Event", body.get("event", "")), body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The URL to register as the webhook."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def _record(self, received: float, event: str, body: dict[str, Any]) -> None:
        job_id = find_job_id(body)
        with self._arrived:
            if job_id is None:
                self.unmatched += 1
            elif job_id not in self.arrivals:
                self.arrivals[job_id] = (received, event, body)
            self._arrived.notify_all()

    def wait_for(self, job_ids: set[str], timeout: float) -> set[str]:
        """Waits until every job in ``job_ids`` has had its webhook, or ``timeout``; returns those still missing."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while (missing := job_ids - self.arrivals.keys()) and time.monotonic() < deadline:
                self._arrived.wait(min(1.0, deadline - time.monotonic()))
        return missing

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
