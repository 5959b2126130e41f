"""The platform's HTTP API as one small client: base URL, bearer key, the OpenAI error envelope as an exception,
server-sent events and the wait for a job to finish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("completed", "failed", "cancelled")
"""The statuses after which a job does not change."""
JOB_WAIT_SECONDS = 1
"""How long one look at a running job may wait for its next change (``?wait=``): its progress is read that often."""


class PlatformError(Exception):
    """A non-2xx answer of the API, from its error envelope: ``status``, ``message``, ``param`` (the field it names,
    if any) and ``code``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def __str__(self) -> str:
        named = f" (param: {self.param})" if self.param else ""
        return f"{self.status} {self.code or 'error'}: {self.message}{named}"

    @classmethod
    def from_envelope(cls, status: int, body: Any) -> PlatformError:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status, str(body)[:500])
        return cls(status, str(error.get("message", "")), error.get("param"), error.get("code") or error.get("type"))


class Platform:
    """Calls the API at ``base_url`` with ``api_key`` as a bearer token (none: the API is open). ``http``: an
    ``httpx.Client`` to share (the MCP server keeps one for every caller's calls)."""

    def __init__(
        self, base_url: str = DEFAULT_URL, api_key: str | None = None, http: httpx.Client | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(timeout=httpx.Timeout(300, connect=10))

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer of ``method path``; a non-2xx answer raises ``PlatformError``."""
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else {}

    def raw(self, path: str) -> bytes:
        """The body of ``GET path`` as it is (a file's content)."""
        return self._send("GET", path).content

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, self.base_url + path, headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        if response.is_error:
            raise PlatformError.from_envelope(response.status_code, _json_or_text(response))
        return response

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """``POST path`` with ``body`` as JSON, or with ``data`` and ``files`` as a multipart form."""
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("DELETE", path, params=params)

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The ``data:`` chunks of a streamed answer (``stream: true``) until ``[DONE]``; an error chunk raises."""
        request = self.http.build_request("POST", self.base_url + path, headers=self.headers, json=body)
        try:
            response = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        try:
            if response.is_error:
                response.read()
                raise PlatformError.from_envelope(response.status_code, _json_or_text(response))
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # comments (keep-alive) and blank separators
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise PlatformError.from_envelope(500, chunk)
                yield chunk
        finally:
            response.close()

    def job_states(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job as it is now, then each time its status or progress has changed, until it has finished (the
        last one yielded)."""
        job = self.get(f"/api/mcp/jobs/{job_id}")
        yield job
        seen = (job.get("status"), job.get("progress"))
        while job.get("status") not in FINISHED:
            job = self.get(f"/api/mcp/jobs/{job_id}", wait=JOB_WAIT_SECONDS)
            if (job.get("status"), job.get("progress")) != seen:
                seen = (job.get("status"), job.get("progress"))
                yield job


def _unreachable(base_url: str, exc: httpx.HTTPError) -> PlatformError:
    return PlatformError(503, f"the API at {base_url} cannot be reached: {exc}", code="unreachable")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
