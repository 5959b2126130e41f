"""The documentation against the code: settings, OpenAPI routes and Markdown references; no services.

- Every field of ``config.settings.Settings`` has a row, under its environment variable, in the configuration
  reference of ``docs/operations.md``, and that table names no variable ``Settings`` does not read.
- Every operation of the OpenAPI document (``METHOD /path``, paths as OpenAPI writes them:
  ``/v1/models/{model_id}``) is named in ``docs/api.md``, and its route table names no route the app lacks. The
  document comes from ``web.create_app`` built in a child process whose sockets cannot connect: building the app
  needs no Redis and no MongoDB.
- No Markdown file, and no Python module outside ``tests/``, names a ``.md`` file that does not exist; relative
  links in Markdown files lead to files that exist, and their ``#anchors`` to headings of those files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
API = ROOT / "docs" / "api.md"
CONFIG_HEADING = "## Configuration reference"
ROUTES_HEADING = "## Routes"
SERVED_OUTSIDE_THE_DOCUMENT = {"GET /openapi.json", "GET /docs/", "GET /console/"}
"""Routes the app serves that the OpenAPI document does not list: the document itself, the API page, the console."""
LINKS_FROM_THE_ROOT = {Path("bench/results/RESULTS.md")}
"""Generated snippets written to be pasted at the repository's root: their links are relative to it."""
PRUNED = {"node_modules", "__pycache__", "build", "dist"}
"""Folders never searched for files, besides hidden ones (``.venv``, ``.data``, ``.git``)."""

SPEC_SCRIPT = """
import json, socket, sys

def refuse(self, address, *args, **kwargs):
    raise OSError(f"the docs drift test allows no connection (to {address})")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
from config.settings import Settings
from web import create_app

settings = Settings.from_env({}, redis_url="redis://127.0.0.1:9/0", mongodb_url="mongodb://127.0.0.1:9/docs_drift")
app = create_app(settings)
api = app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
sys.stdout.write(json.dumps(api.spec.to_dict()["paths"]))
"""
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def section(path: Path, heading: str) -> str:
    """The text under ``heading`` (a ``## `` line) up to the next ``## `` heading."""
    text = path.read_text()
    assert heading + "\n" in text, f"{path.relative_to(ROOT)} has no '{heading}' heading: add it back"
    body = text.split(heading + "\n", 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``: rows of cells, header and separator rows left out."""
    found: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            found.append(current)
            continue  # the header row
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        current.append(cells)
    return found


def env_names() -> dict[str, str]:
    """Each settings field and the environment variable pydantic-settings reads it from (case-insensitively)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        assert alias is None or isinstance(alias, str), (
            f"Settings.{field_name} has an alias this test cannot read ({alias!r}): teach env_names() about it"
        )
        names[field_name] = (prefix + (alias or field_name)).upper()
    return names


def test_every_setting_has_a_row_in_the_configuration_reference():
    settings_table, *_ = tables(section(OPERATIONS, CONFIG_HEADING))
    documented = {name for row in settings_table for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0])}
    missing = [f"{env} (Settings.{field})" for field, env in env_names().items() if env not in documented]
    assert not missing, (
        f"settings without a row in docs/operations.md, '{CONFIG_HEADING}' (its first table): {', '.join(missing)}; "
        "add a row '| `NAME` | default | meaning |' for each"
    )
    stale = sorted(documented - set(env_names().values()))
    assert not stale, (
        f"docs/operations.md, '{CONFIG_HEADING}', first table, documents {', '.join(stale)}, which config/settings.py "
        "does not read: remove the row, or move it to the table of variables read elsewhere"
    )


@cache
def openapi_operations() -> set[str]:
    """``METHOD /path`` of every operation of the app's OpenAPI document."""
    done = subprocess.run(
        [sys.executable, "-c", SPEC_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"building web.create_app without services failed:\n{done.stderr[-3000:]}"
    paths = json.loads(done.stdout)
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in METHODS}


def named_operations(text: str) -> set[str]:
    """``METHOD /path`` written in backticks (a query string after the path is allowed)."""
    pattern = r"`((?:GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS) /[^`?\s]*)(?:\?[^`]*)?`"
    return set(re.findall(pattern, text))


def test_every_route_of_the_openapi_document_is_named_in_the_api_page():
    operations = openapi_operations()
    assert len(operations) > 30, f"the OpenAPI document lists only {sorted(operations)}"
    missing = sorted(operations - named_operations(API.read_text()))
    assert not missing, (
        f"routes of the OpenAPI document not named in docs/api.md: {', '.join(missing)}; add each, as "
        f"`METHOD /path` in backticks (OpenAPI's path form), to a row of its '{ROUTES_HEADING}' table"
    )


def test_the_route_table_names_only_routes_the_app_serves():
    named = named_operations(section(API, ROUTES_HEADING))
    unknown = sorted(named - openapi_operations() - SERVED_OUTSIDE_THE_DOCUMENT)
    assert not unknown, (
        f"docs/api.md, '{ROUTES_HEADING}', names routes the OpenAPI document does not have: {', '.join(unknown)}; "
        "fix the path (OpenAPI's form, e.g. /v1/models/{model_id}) or remove the route"
    )


def files(suffix: str, skip: tuple[str, ...] = ()) -> list[Path]:
    """The repository's files ending in ``suffix``; hidden folders (``.venv``, ``.data``, ``.git``), build folders
    and the top-level folders in ``skip`` are not searched."""
    found = []
    for folder, subfolders, names in os.walk(ROOT):
        top = Path(folder) == ROOT
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".")
            and name not in PRUNED
            and not name.endswith(".egg-info")
            and not (top and name in skip)
        ]
        found.extend(Path(folder) / name for name in names if name.endswith(suffix))
    return sorted(found)


MD_NAME = re.compile(r"[\w./-]*[\w-]\.md(?!\w)")
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_names_missing(path: Path, basenames: set[str]) -> list[str]:
    """The ``.md`` files that ``path`` names in its text and that exist neither as named nor anywhere by name."""
    missing = []
    for name in MD_NAME.findall(URL.sub(" ", path.read_text(errors="replace"))):
        name = name.lstrip("/")
        if "/" not in name:
            found = name in basenames
        else:
            found = (path.parent / name).is_file() or (ROOT / name).is_file()
        if not found:
            missing.append(name)
    return missing


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (those in code blocks left out; repeats numbered as GitHub does)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            anchor, n = slug(heading.group(1)), 1
            while anchor in found:
                anchor, n = f"{slug(heading.group(1))}-{n}", n + 1
            found.add(anchor)
    return found


def broken_links(path: Path) -> list[str]:
    """Relative links of a Markdown file whose file, or whose ``#anchor`` in a Markdown file, does not exist."""
    broken = []
    for target in LINK.findall(path.read_text()):
        if URL.match(target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        base = ROOT if path.relative_to(ROOT) in LINKS_FROM_THE_ROOT else path.parent
        destination = (base / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target} (no file {destination})")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading with the anchor #{anchor} in {destination.relative_to(ROOT)})")
    return broken


def test_no_file_names_a_markdown_file_that_does_not_exist():
    markdown = files(".md")
    assert ROOT / "README.md" in markdown and OPERATIONS in markdown, f"Markdown files found: {markdown}"
    basenames = {path.name for path in markdown}
    problems = []
    for path in [*markdown, *files(".py", skip=("tests",))]:
        for name in markdown_names_missing(path, basenames):
            problems.append(f"{path.relative_to(ROOT)} names {name}")
    assert not problems, (
        "files name Markdown files that are not in the repository: "
        + "; ".join(problems)
        + ". Point each at the document that holds the text (docs/architecture.md, docs/api.md, docs/operations.md, "
        "docs/benchmarks.md, docs/testing.md, docs/limits.md) or remove the reference"
    )


def test_markdown_links_lead_somewhere():
    problems = [f"{path.relative_to(ROOT)}: {link}" for path in files(".md") for link in broken_links(path)]
    assert not problems, (
        "broken relative links: " + "; ".join(problems) + ". Fix the path (relative to the linking file) or the anchor "
        "(the heading's text in lower case, punctuation dropped, spaces as hyphens)"
    )


def test_every_test_file_is_in_the_testing_catalogue():
    catalogue = (ROOT / "docs" / "testing.md").read_text()
    test_files = sorted([*(ROOT / "tests").glob("test_*.py"), *(ROOT / "tests" / "unit").glob("test_*.py")])
    missing = [path.relative_to(ROOT).as_posix() for path in test_files]
    missing = [name for name in missing if f"`{name}`" not in catalogue]
    assert not missing, (
        f"test files missing from the catalogue in docs/testing.md: {', '.join(missing)}. Add a row "
        "| `tests/...` | what it shows | (its docstring's first paragraph)"
    )
