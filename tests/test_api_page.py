"""The API page at ``/docs`` renders in headless Chromium (Debian's), from the assets the server ships: every
operation of the OpenAPI document is listed, and the page loads nothing from another host."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import requests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(url: str) -> str:
    """The page's DOM after its scripts ran (Chromium's own virtual time gives them up to 15 s)."""
    completed = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        # The suite preloads OpenBLAS for its in-process models (Makefile); Chromium aborts with it preloaded.
        env={name: value for name, value in os.environ.items() if name != "LD_PRELOAD"},
    )
    return completed.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="make setup installs Debian's chromium; none is on this machine")
def test_the_api_page_renders_every_route_from_local_assets(base_url):
    page = requests.get(f"{base_url}/docs/", timeout=10)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/docs/") for source in sources), sources
    dom = rendered(f"{base_url}/docs/")
    assert "swagger-ui" in dom and "opblock" in dom, "Swagger UI drew the operations"
    paths = requests.get(f"{base_url}/openapi.json", timeout=10).json()["paths"]
    for path in ("/v1/chat/completions", "/v1/audio/transcriptions", "/api/fusion/orchestrate", "/api/rag/query"):
        assert path in paths and path in dom, path
