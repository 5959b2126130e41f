"""The route -> scope table (``web.scopes``) against the app: every route of the app has a scope or is public on
purpose, and the security section of ``docs/operations.md`` shows the table as the code has it; how ``read`` and
``admin`` widen a key's scopes. The app is built in a child process whose sockets cannot connect."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from web.identity import Caller
from web.scopes import BLUEPRINT_SCOPES, PUBLIC_ENDPOINTS, ROUTE_SCOPES, allowed, scope_for

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "patch"}
RULES_SCRIPT = """
import json, socket, sys

def refuse(self, address, *args, **kwargs):
    raise OSError(f"the route scopes test allows no connection (to {address})")

socket.socket.connect = refuse
from config.settings import Settings
from web import create_app

settings = Settings.from_env({}, redis_url="redis://127.0.0.1:9/0", mongodb_url="mongodb://127.0.0.1:9/scopes")
app = create_app(settings)
api = app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
rules = [
    [rule.endpoint, sorted(rule.methods - {"HEAD", "OPTIONS"}), rule.rule] for rule in app.url_map.iter_rules()
]
sys.stdout.write(json.dumps({"rules": rules, "paths": api.spec.to_dict()["paths"]}))
"""


@cache
def app_routes() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RULES_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"building web.create_app without services failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_route_of_the_app_has_a_scope_or_is_public_on_purpose():
    missing = []
    for endpoint, methods, rule in app_routes()["rules"]:
        if (
            endpoint in PUBLIC_ENDPOINTS
            or endpoint.split(".", 1)[0] in BLUEPRINT_SCOPES
            and endpoint not in ROUTE_SCOPES
        ):
            continue
        for method in methods:
            if method not in ROUTE_SCOPES.get(endpoint, {}):
                missing.append(f"{method} {rule} ({endpoint})")
    assert not missing, f"routes without a scope in web/scopes.py ROUTE_SCOPES: {', '.join(missing)}"


def test_every_operation_of_the_openapi_document_needs_a_scope_unless_public():
    by_path = {openapi_path(rule): endpoint for endpoint, _methods, rule in app_routes()["rules"]}
    paths = app_routes()["paths"]
    operations = [(method.upper(), path) for path, item in paths.items() for method in item if method in METHODS]
    assert len(operations) > 30
    for method, path in operations:
        endpoint = by_path[path]
        if endpoint in PUBLIC_ENDPOINTS:
            continue
        assert scope_for(endpoint, method) in ROUTE_SCOPES[endpoint].values(), f"{method} {path}"


def test_the_table_names_only_endpoints_the_app_has():
    endpoints = {endpoint for endpoint, _methods, _rule in app_routes()["rules"]}
    assert not set(ROUTE_SCOPES) - endpoints, "web/scopes.py names endpoints the app lacks"


def test_the_security_section_shows_the_table():
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Security\n", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        cells = line.strip().strip("|").split("|") if line.startswith("|") else []
        if len(cells) >= 2 and (scope := re.fullmatch(r"\s*`([a-z]+)`\s*", cells[1])):
            documented |= {(route, scope.group(1)) for route in re.findall(r"`((?:GET|POST|DELETE) /[^`]*)`", cells[0])}
    paths = {endpoint: openapi_path(rule) for endpoint, _methods, rule in app_routes()["rules"]}
    wanted = {
        (f"{method} {paths[endpoint]}", scope)
        for endpoint, methods in ROUTE_SCOPES.items()
        for method, scope in methods.items()
    }
    assert documented == wanted, (
        f"docs/operations.md, '## Security', lacks {sorted(wanted - documented)} "
        f"and names {sorted(documented - wanted)}: it shows web/scopes.py ROUTE_SCOPES, a row per route"
    )


def test_admin_may_everything_read_may_get_every_group_but_admin():
    admin = Caller("key_a", "ops", frozenset({"admin"}))
    reader = Caller("key_r", "dash", frozenset({"read"}))
    user = Caller("key_u", "alice", frozenset({"inference", "jobs"}))
    for method, endpoint in [("POST", "models.ModelLoad"), ("GET", "admin.Audit"), ("POST", "rag.Ingest")]:
        assert allowed(admin, scope_for(endpoint, method), method)
    assert allowed(reader, scope_for("jobs.Jobs", "GET"), "GET")
    assert allowed(reader, scope_for("models.ModelList", "HEAD"), "HEAD")
    assert not allowed(reader, scope_for("jobs.Jobs", "POST"), "POST")
    assert not allowed(reader, scope_for("admin.Keys", "GET"), "GET")
    assert not allowed(reader, scope_for("diagnostics.Diagnostics", "GET"), "GET")
    assert allowed(user, scope_for("chat.ChatCompletions", "POST"), "POST")
    assert not allowed(user, scope_for("rag.Query", "POST"), "POST")
    assert not allowed(user, scope_for("models.ModelUnload", "DELETE"), "DELETE")


def test_a_route_missing_from_the_table_needs_admin():
    assert scope_for("newthing.View", "POST") == "admin"
    assert scope_for("batches.Batches", "POST") == "batches"
    assert scope_for("jobs.Jobs", "PATCH") == "admin"
    assert scope_for(None, "GET") is None and scope_for("health.Health", "GET") is None
