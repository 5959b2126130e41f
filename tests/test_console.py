"""The web console at ``/console`` in a real browser: Debian's headless Chromium driven by Playwright. One browser
for the module; each page loads without console errors, a model is loaded and unloaded from the Models page, a job
submitted from the Jobs page completes without a reload, a running job is cancelled there, a batch shows its output
lines, the Playground streams an answer and shows a tool call, a document uploaded on the RAG page is ingested as a
job and answers a query with its source, a workflow run from its form shows its trace as its steps run, and with
``API_KEYS`` set the console asks for a key and uses it. With ``CONSOLE_SCREENSHOTS=docs/console`` set, each page's
screenshot is written there for the README and docs/console.md (a plain run leaves the tree as it was)."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR, ask
from tests.holds import held_key, hold_key, holdable
from tests.stack import ROOT, wait_until
from tests.used_keys import remember

playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the test extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
"""Where each page's screenshot goes, relative to the repository; unset: no screenshots."""
TIMEOUT_MS = 90_000
CONSOLE_KEY = remember("sk-test-console-5e1d7a")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="make setup installs Debian's chromium; none is here")


class Console:
    """The console's page in the browser and every error its scripts or its console reported."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.set_default_timeout(TIMEOUT_MS)

    def open(self, view: str) -> None:
        """Shows ``view`` by its fragment: the first time a full load, then as the console itself navigates (a view
        already shown is shown afresh, so it lists what the test has just made; no reload, which would start the
        Metrics page's history again)."""
        if self.page.url == f"{self.base_url}/console/#{view}":
            self.page.evaluate("() => { location.hash = '' }")
        if self.page.url.startswith(f"{self.base_url}/console/"):
            self.page.evaluate("view => { location.hash = view }", view)
        else:
            self.page.goto(f"{self.base_url}/console/#{view}")

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            folder = ROOT / SCREENSHOTS
            folder.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=folder / f"{name}.png")

    def assert_no_errors(self) -> None:
        errors, self.errors[:] = list(self.errors), []
        assert not errors, errors


@pytest.fixture(scope="module")
def console(base_url: str, control_worker) -> Iterator[Console]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu"],
            # The suite preloads OpenBLAS for its in-process models (Makefile); Chromium aborts with it preloaded.
            env={name: value for name, value in os.environ.items() if name != "LD_PRELOAD"},
        )
        page = browser.new_page(viewport={"width": 1200, "height": 720})
        yield Console(page, base_url)
        browser.close()


def test_the_console_is_served_from_local_assets(base_url):
    page = requests.get(f"{base_url}/console/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    sources = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert sources and all(source.startswith(("/console/assets/", "data:")) for source in sources), sources
    for source in sources:
        if source.startswith("/console/"):
            assert requests.get(f"{base_url}{source}", timeout=10).status_code == 200, source


def test_models_page_lists_the_models_with_their_probe_and_queue(console):
    console.open("models")
    row = console.page.locator("tr", has_text=CHAT_MODEL).first
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "lm" and cells[2] == "loaded", cells
    assert re.search(r"(answering|busy|starting|unresponsive), \d+ s ago", cells[6]), cells
    assert re.search(r"\d+ active, \d+ waiting", cells[7]), cells
    console.screenshot("models")
    console.assert_no_errors()


def test_a_job_submitted_from_the_jobs_page_completes_without_a_reload(console):
    console.open("jobs")
    console.page.evaluate("window.sameDocument = true")
    form = console.page.locator("#job-form")
    form.locator("select").select_option(CHAT_MODEL)
    form.locator("[name=prompt]").fill("Hi")
    form.locator("[name=max_tokens]").fill("4")
    form.locator("button").click()
    status = console.page.locator("#job-status")
    status.filter(has_text="completed").wait_for()
    events = console.page.locator("#job-events li").all_inner_texts()
    assert any("job.queued" in event for event in events) and any("job.completed" in event for event in events), events
    job_id = console.page.locator("#job-detail h3").inner_text().split()[1]
    result = console.page.locator("#job-result").inner_text()
    assert requests.get(f"{console.base_url}/api/mcp/jobs/{job_id}", timeout=10).json()["status"] == "completed"
    assert '"choices"' in result, result
    assert console.page.evaluate("window.sameDocument") is True
    console.page.locator("tr", has_text=job_id).wait_for()
    console.screenshot("jobs")
    console.assert_no_errors()


def test_a_model_is_loaded_and_unloaded_from_the_models_page(console):
    model_id = f"test/console-{uuid.uuid4().hex[:6]}"
    console.open("models")
    page = console.page
    form = page.locator("#load-form")
    form.locator("[name=model_path]").fill(str(CHAT_MODEL_DIR))
    form.locator("[name=model_id]").fill(model_id)
    form.locator("button").click()
    page.locator("#load-status", has_text=f"{model_id}: loaded in").wait_for()
    row = page.locator("tr", has_text=model_id)
    row.locator("td", has_text="loaded").wait_for()
    assert requests.get(f"{console.base_url}/v1/models/{model_id}", timeout=10).json()["status"] == "loaded"

    page.once("dialog", lambda dialog: dialog.accept())  # "Unload ...? Requests running on it are stopped."
    row.locator("[data-action=unload]").click()
    row.wait_for(state="detached")
    assert requests.get(f"{console.base_url}/v1/models/{model_id}", timeout=10).status_code == 404
    console.assert_no_errors()


def test_a_running_job_is_cancelled_from_the_jobs_page(console, hold):
    held = hold("console-cancel")
    submitted = requests.post(
        f"{console.base_url}/api/mcp/jobs",
        json={"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": ask("Count"), "max_tokens": 30}},
        headers={"X-Request-ID": held.request_id},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    held.wait_held()
    console.open("jobs")
    page = console.page
    page.locator("tr", has_text=job_id).click()
    page.locator("#job-detail h3", has_text=job_id).wait_for()
    page.locator("#job-detail button", has_text="Cancel").click()
    page.locator("#job-status", has_text="cancelled").wait_for()
    assert requests.get(f"{console.base_url}/api/mcp/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"
    console.assert_no_errors()


def test_a_batch_shows_its_counts_and_output_lines(console, tmp_path: Path):
    lines = [
        {
            "custom_id": f"console-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": CHAT_MODEL, "messages": ask(f"Say {n}"), "max_tokens": 2},
        }
        for n in range(2)
    ]
    uploaded = requests.post(
        f"{console.base_url}/v1/files",
        data={"purpose": "batch"},
        files={"file": ("console.jsonl", "\n".join(json.dumps(line) for line in lines).encode())},
        timeout=30,
    )
    assert uploaded.status_code == 200, uploaded.text
    created = requests.post(
        f"{console.base_url}/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    console.open("jobs")
    page = console.page
    row = page.locator("tr", has_text=batch_id)
    row.locator("td", has_text="completed").wait_for()  # the list refreshes every 5 s
    row.click()
    page.locator("#batch-status", has_text="completed").wait_for()
    output = page.locator("pre.batch-output").inner_text()
    assert all(f'"custom_id": "console-{n}"' in output or f'"custom_id":"console-{n}"' in output for n in range(2))
    assert "2 of 2 lines done, 0 failed" in page.locator("#batch-detail").inner_text()
    console.assert_no_errors()


def test_the_playground_streams_an_answer_with_its_usage(console):
    console.open("playground")
    page = console.page
    page.locator("#chat-model option", has_text=CHAT_MODEL).first.wait_for(state="attached")
    page.select_option("#chat-model", CHAT_MODEL)
    page.fill("#chat-form [name=max_tokens]", "8")
    page.fill("#chat-form [name=prompt]", "Name a colour.")
    # Count the answer's updates: a streamed answer grows piece by piece, a whole one arrives once.
    page.evaluate(
        """() => { window.answerUpdates = 0;
        new MutationObserver((records) => { window.answerUpdates += records.filter(
          (r) => r.target.classList && r.target.classList.contains('answer')).length; })
        .observe(document.getElementById('chat-log'), {childList: true, subtree: true}); }"""
    )
    page.click("#chat-send")
    page.locator("#chat-stats", has_text="tokens/s").wait_for()
    stats = page.locator("#chat-stats").inner_text()
    tokens = int(re.search(r"answer (\d+) tokens", stats).group(1))
    assert 1 <= tokens <= 8 and "first token after" in stats, stats
    assert page.evaluate("window.answerUpdates") >= 2, "the answer arrived in pieces"
    assert page.locator("#chat-log .answer").inner_text().strip()
    console.screenshot("playground")
    console.assert_no_errors()


PICK_COLOUR = {
    "type": "function",
    "function": {
        "name": "pick_colour",
        "parameters": {
            "type": "object",
            "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
            "required": ["colour"],
        },
    },
}


def test_the_playground_shows_a_tool_call_as_such(console):
    console.open("playground")
    page = console.page
    page.get_by_role("button", name="Clear").click()
    page.locator("#chat-form summary").click()
    page.fill("#chat-form [name=tools]", json.dumps([PICK_COLOUR]))
    page.fill("#chat-form [name=tool_choice]", "pick_colour")
    page.fill("#chat-form [name=max_tokens]", "60")
    page.fill("#chat-form [name=temperature]", "0")
    page.fill("#chat-form [name=prompt]", "Pick a colour.")
    page.click("#chat-send")
    failed = page.locator("#error-bar", has_text=re.compile("."))
    page.locator("#chat-stats", has_text="finish:").or_(failed).first.wait_for()
    stats = page.locator("#chat-stats").inner_text()
    assert stats.endswith("finish: tool_calls"), (stats, page.locator("main").inner_text())
    call = page.locator("#chat-log .tool-call").inner_text()
    name, arguments = re.fullmatch(r"tool call (\w+)\((.*)\)", call, re.S).groups()
    assert name == "pick_colour" and json.loads(arguments)["colour"] in ("red", "blue"), call
    console.assert_no_errors()


def test_a_document_uploaded_on_the_rag_page_answers_a_query_with_its_source(console, tmp_path: Path):
    collection = f"console-{uuid.uuid4().hex[:8]}"
    document = tmp_path / "lighthouse.txt"
    document.write_text("The Korsvik lighthouse was painted green by its keeper Ada Holm in 1911.\n")
    console.open("rag")
    page = console.page
    upload = page.locator("#upload-form")
    upload.locator("[name=collection]").fill(collection)
    upload.locator("[name=files]").set_input_files(str(document))
    upload.locator("button").click()
    page.locator("#upload-status[data-done]").wait_for()
    assert page.locator("#upload-status").get_attribute("data-done") == "completed", page.locator(
        "#upload-status"
    ).inner_text()
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 1
    page.locator("tr", has_text="lighthouse.txt").wait_for()
    query = page.locator("#query-form")
    assert query.locator("[name=collection]").input_value() == collection
    query.locator("[name=query]").fill("Who painted the lighthouse?")
    query.locator("[name=max_tokens]").fill("8")
    query.locator("button").click()
    page.locator("#rag-answer[data-done]").wait_for()
    assert "lighthouse.txt" in page.locator("#rag-sources").inner_text()
    assert page.locator("#rag-answer").inner_text().strip()
    console.screenshot("rag")
    console.assert_no_errors()
    requests.delete(f"{console.base_url}/api/rag/collections/{collection}", timeout=30)


def test_a_workflow_run_from_its_form_shows_its_trace(console):
    console.open("workflows")
    page = console.page
    page.locator("tr", has_text="sequential_summarization").click()
    form = page.locator("#workflow-form")
    form.locator("[name=document]").fill("Tides rise twice a day because of the moon.")
    form.locator("[name=max_summary_length]").fill("16")
    form.locator("[name=__max_tokens]").fill("8")
    form.locator("button").click()
    page.locator("#workflow-status[data-done]").wait_for()
    assert page.locator("#workflow-status").get_attribute("data-done") == "completed", page.locator(
        "#workflow-status"
    ).inner_text()
    steps = [row.locator("td").all_inner_texts() for row in page.locator("#workflow-trace tbody tr").all()]
    assert ["summarize", "completed"] in [[step[0], step[3]] for step in steps], steps
    page.locator("#workflow-trace").scroll_into_view_if_needed()
    console.screenshot("workflows")
    console.assert_no_errors()


def test_a_workflow_trace_fills_in_while_it_runs(console, redis_client):
    """A composed workflow of two steps, its second held by the suite's hold: the trace shows the first step done
    while the run goes on (held in its second step), then both once it ends."""
    name = f"trace_{uuid.uuid4().hex[:6]}"
    steps = [
        {"step_id": "prepare", "type": "transform", "input": "Say {{ input.word }}."},
        {
            "step_id": "answer",
            "type": "model_call",
            "model_id": CHAT_MODEL,
            "operation": "chat",
            "input": {"messages": [{"role": "user", "content": "{{ steps.prepare.output }}"}]},
        },
    ]
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    created = requests.post(
        f"{console.base_url}/api/fusion/compose",
        json={"name": name, "steps": steps, "input_schema": schema},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    request_id = holdable("console-trace")
    held = f"{request_id}.answer"
    redis_client.set(hold_key(held), "1", ex=600)
    page = console.page
    page.route(
        "**/api/fusion/orchestrate",
        lambda route: route.continue_(headers={**route.request.headers, "x-request-id": request_id}),
    )
    try:
        console.open("workflows")
        page.locator("tr", has_text=name).click()
        form = page.locator("#workflow-form")
        form.locator("[name=word]").fill("hello")
        form.locator("[name=__max_tokens]").fill("4")
        form.locator("button").click()
        # A Playwright wait: its synchronous API runs the route above only inside its own calls.
        page.locator("#workflow-trace tbody tr", has_text="prepare").wait_for()
        wait_until(lambda: redis_client.exists(held_key(held)), 120, "the answer step to be held")
        assert page.locator("#workflow-status[data-done]").count() == 0  # the trace came while the run went on
    finally:
        redis_client.delete(hold_key(held))
        page.unroute("**/api/fusion/orchestrate")
    page.locator("#workflow-status[data-done]").wait_for()
    assert page.locator("#workflow-status").get_attribute("data-done") == "completed"
    steps_shown = [row.locator("td").all_inner_texts()[:4:3] for row in page.locator("#workflow-trace tbody tr").all()]
    assert steps_shown == [["prepare", "completed"], ["answer", "completed"]]
    requests.delete(f"{console.base_url}/api/fusion/workflows/{name}", timeout=30)
    console.assert_no_errors()


@pytest.mark.parametrize("view, shown", [("webhooks", "Webhooks"), ("metrics", "tokens generated per second")])
def test_the_other_pages_load_without_errors(console, view, shown):
    console.open(view)
    console.page.get_by_text(shown).first.wait_for()
    if view == "metrics":
        # The console sampled /metrics when it was opened (the Models test); the chat and jobs since generated tokens.
        tokens = console.page.locator("#charts .chart", has_text="tokens generated per second")
        assert " L" in tokens.locator("path").get_attribute("d"), "a line of at least two samples"
        assert float(tokens.locator(".chart-max").inner_text().strip(" ()").split()[1]) > 0
    console.screenshot(view)
    console.assert_no_errors()


def test_with_api_keys_the_console_asks_for_a_key_and_sends_it(console, stack):
    _service, locked = stack.start_web("web-console-keys", {"API_KEYS": CONSOLE_KEY})
    page = console.page.context.browser.new_page()
    try:
        page.goto(f"{locked}/console/#models")
        page.locator("#key-dialog[open]").wait_for()
        page.fill("#key-input", CONSOLE_KEY)
        page.get_by_role("button", name="Use it").click()
        page.locator("tr", has_text=CHAT_MODEL).first.wait_for()
        assert page.evaluate("sessionStorage.getItem('mlxf-console-key')") == CONSOLE_KEY
        assert page.locator("#error-bar").inner_text() == ""
    finally:
        page.close()
