// The mlx-fusion console: plain JavaScript over the platform's own HTTP API (no library, nothing fetched from
// another host). Views are chosen by the URL's fragment; each returns a cleanup function run when it is left.

const KEY = "mlxf-console-key";
const view = document.getElementById("view");
let leaveView = () => {};

// ---- helpers -------------------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = (value, digits = 1) => (value === null || value === undefined ? "—" : typeof value === "number" ? +value.toFixed(digits) : value);

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function askForKey() {
  const dialog = document.getElementById("key-dialog");
  if (dialog.open) return;
  document.getElementById("key-input").value = "";
  dialog.showModal();
}

document.getElementById("key-dialog").addEventListener("close", () => {
  const value = document.getElementById("key-input").value.trim();
  if (value) sessionStorage.setItem(KEY, value);
  route();
});
document.getElementById("key-button").addEventListener("click", askForKey);

class ApiError extends Error {}

/** A call of the platform's API; the OpenAI error envelope's message becomes the thrown error's. */
async function api(path, { method = "GET", body, form } = {}) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  if (form) init.body = form;
  const response = await fetch(path, init);
  if (response.status === 401) {
    askForKey();
    throw new ApiError("this platform needs an API key");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) throw new ApiError(data?.error?.message || `${response.status} ${text.slice(0, 200)}`);
  return data;
}

/** Reads a server-sent-events response (a POST's stream or a job's events) and calls onEvent(name, data). */
async function readEvents(path, init, onEvent, signal) {
  const response = await fetch(path, { ...init, headers: headers(init.headers || {}), signal });
  if (response.status === 401) { askForKey(); throw new ApiError("this platform needs an API key"); }
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try { message = JSON.parse(text).error.message; } catch {}
    throw new ApiError(message);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (!data.length) continue;
      const raw = data.join("\n");
      if (raw === "[DONE]") return;
      onEvent(name, JSON.parse(raw));
    }
  }
}

function errorLine() { return h("p", { class: "bad", id: "error-bar" }); }
function showError(line, error) { line.textContent = error.message || String(error); }

function table(columns, rows, onClick) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c[0])))),
    h("tbody", {}, rows.map((row) => h("tr", onClick ? { class: "clickable", onclick: () => onClick(row) } : {},
      columns.map((c) => h("td", {}, c[1](row)))))));
}

/** Calls refresh now and every `ms` while the view is shown; returns the stopper. */
function every(ms, refresh) {
  refresh();
  const timer = setInterval(refresh, ms);
  return () => clearInterval(timer);
}

async function modelIds(types) {
  const models = await api("/v1/models");
  return models.data.filter((m) => !types || types.includes(m.type)).map((m) => m.id);
}

function select(name, options, chosen) {
  return h("select", { name }, options.map((o) => h("option", { value: o, selected: o === chosen }, o)));
}

/** Follows a job's events as they happen; onEvent gets each, onFinal the finished job. Returns the aborter. */
function followJob(jobId, onEvent, onFinal, onError) {
  const controller = new AbortController();
  readEvents(`/api/mcp/jobs/${encodeURIComponent(jobId)}/events`, {}, (name, data) => {
    if (name === "job.final") onFinal(data.job ?? data);
    else onEvent(name, data);
  }, controller.signal).catch((error) => { if (error.name !== "AbortError") onError(error); });
  return () => controller.abort();
}

// ---- Models ---------------------------------------------------------------------------------------------------

function modelsView() {
  const error = errorLine();
  const body = h("div", {});
  const loadForm = h("form", { class: "row", id: "load-form" },
    h("input", { name: "model_path", placeholder: "model path or hub id", size: 40, required: true }),
    select("model_type", ["lm", "embeddings", "rerank", "whisper", "multimodal", "image-generation", "image-edit"], "lm"),
    h("input", { name: "model_id", placeholder: "model id (optional)" }),
    h("button", {}, "Load"), h("span", { class: "muted", id: "load-status" }));
  loadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(loadForm));
    if (!data.model_id) delete data.model_id;
    const status = loadForm.querySelector("#load-status");
    const started = performance.now();
    const tick = () => { status.textContent = `loading… ${fmt((performance.now() - started) / 1000, 0)} s (downloading first if it is not on disk)`; };
    tick();
    const ticking = setInterval(() => { tick(); refresh(); }, 1000);
    try {
      const loaded = await api("/v1/models/load", { method: "POST", body: data });
      status.textContent = `${loaded.model_id}: ${loaded.status} in ${fmt(loaded.load_time_ms, 0)} ms`;
    } catch (e) { status.textContent = ""; showError(error, e); }
    clearInterval(ticking);
    refresh();
  });

  async function act(label, call) {
    try { await call(); refresh(); } catch (e) { showError(error, e); }
  }

  async function refresh() {
    try {
      const [models, health, queues] = await Promise.all([
        api("/v1/models"), api("/health").catch(() => null), api("/v1/queue/stats")]);
      const probes = Object.fromEntries((health?.models?.models || []).map((m) => [m.id, m.probe]));
      const stats = queues.queues || {};
      body.replaceChildren(table([
        ["model", (m) => m.id], ["type", (m) => m.type],
        ["status", (m) => h("span", { class: m.status === "loaded" ? "good" : m.status === "failed" ? "bad" : "" }, m.status)],
        ["nodes", (m) => (m.nodes || []).join(", ") || "—"],
        ["replicas", (m) => `${m.workers ?? 0}/${m.replicas ?? 1}`],
        ["memory GB", (m) => fmt(m.vram_usage_gb, 2)],
        ["probe", (m) => { const p = probes[m.id]; return p ? `${p.verdict}, ${fmt(p.age_seconds, 0)} s ago` : "—"; }],
        ["queue", (m) => { const q = stats[m.id]; return q ? `${q.active_requests} active, ${q.queued_in_workers + q.pending_in_broker} waiting` : "—"; }],
        ["", (m) => h("span", {},
          h("button", { class: "plain", type: "button", "data-action": "warmup", onclick: () => act("warm up",
            () => api(`/v1/models/${encodeURIComponent(m.id)}/warmup`, { method: "POST", body: { prompt: "Hello" } })) }, "Warm up"), " ",
          h("button", { class: "plain", type: "button", "data-action": "unload", onclick: () => confirm(`Unload ${m.id}? Requests running on it are stopped.`) && act("unload",
            () => api(`/v1/models/${encodeURIComponent(m.id)}/unload?force=true`, { method: "DELETE" })) }, "Unload"))],
      ], models.data));
      error.textContent = "";
    } catch (e) { showError(error, e); }
  }

  view.replaceChildren(h("h2", {}, "Models"), error,
    h("section", { class: "card" }, h("h3", {}, "Load a model"), loadForm),
    h("section", { class: "card" }, body));
  return every(5000, refresh);
}

// ---- Playground -----------------------------------------------------------------------------------------------

function playgroundView() {
  const error = errorLine();
  const messages = [];
  const log = h("div", { id: "chat-log" });
  const stats = h("p", { class: "muted", id: "chat-stats" });
  const modelSelect = h("select", { name: "model", id: "chat-model" });
  const form = h("form", { id: "chat-form" },
    h("div", { class: "row" }, h("label", {}, "model"), modelSelect,
      h("label", {}, "temperature"), h("input", { name: "temperature", type: "number", step: "0.1", min: 0, max: 2, value: "0.7", size: 4 }),
      h("label", {}, "top_p"), h("input", { name: "top_p", type: "number", step: "0.05", min: 0, max: 1, value: "1", size: 4 }),
      h("label", {}, "max_tokens"), h("input", { name: "max_tokens", type: "number", min: 1, value: "128", size: 5 }),
      h("label", {}, "seed"), h("input", { name: "seed", type: "number", size: 6 }),
      h("label", {}, "image"), h("input", { name: "image", type: "file", accept: "image/*" })),
    h("details", {}, h("summary", { class: "muted" }, "tools"),
      h("textarea", { name: "tools", rows: 4, placeholder: '[{"type": "function", "function": {"name": "...", "parameters": {...}}}]' }),
      h("div", { class: "row" }, h("label", {}, "tool_choice"),
        h("input", { name: "tool_choice", placeholder: "auto, none, required or a function's name" }))),
    h("textarea", { name: "system", rows: 1, placeholder: "system prompt (optional)" }),
    h("textarea", { name: "prompt", rows: 3, placeholder: "Say something", required: true }),
    h("div", { class: "row" }, h("button", { id: "chat-send" }, "Send"),
      h("button", { class: "plain", type: "button", onclick: () => { messages.length = 0; log.replaceChildren(); stats.textContent = ""; } }, "Clear")));
  modelIds(["lm", "multimodal"]).then((ids) => modelSelect.replaceChildren(...ids.map((id) => h("option", { value: id }, id))))
    .catch((e) => showError(error, e));

  const readImage = (file) => new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(file);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const image = data.get("image");
    let content = data.get("prompt");
    if (image && image.size) content = [{ type: "text", text: content }, { type: "image_url", image_url: { url: await readImage(image) } }];
    messages.push({ role: "user", content });
    log.append(h("div", { class: "message" }, h("b", {}, "you: "), data.get("prompt")));
    const answer = h("span", { class: "answer" });
    const tools = h("div", {});
    log.append(h("div", { class: "message" }, h("b", {}, "assistant: "), answer, tools));
    const body = { model: data.get("model"), stream: true, stream_options: { include_usage: true },
      messages: [...(data.get("system") ? [{ role: "system", content: data.get("system") }] : []), ...messages],
      max_tokens: +data.get("max_tokens"), temperature: +data.get("temperature"), top_p: +data.get("top_p") };
    if (data.get("seed")) body.seed = +data.get("seed");
    if (data.get("tools").trim()) {
      try { body.tools = JSON.parse(data.get("tools")); } catch (e) { messages.pop(); showError(error, new ApiError(`tools: ${e.message}`)); return; }
    }
    const choice = data.get("tool_choice").trim();
    if (choice) body.tool_choice = ["auto", "none", "required"].includes(choice) ? choice : { type: "function", function: { name: choice } };
    const send = form.querySelector("#chat-send");
    send.disabled = true;
    error.textContent = "";
    const started = performance.now();
    let first = null, usage = null, finish = null;
    const toolCalls = [];
    try {
      await readEvents("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) },
        (_name, chunk) => {
          if (chunk.error) throw new ApiError(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices?.[0];
          if (!choice) return;
          if (choice.finish_reason) finish = choice.finish_reason;
          const delta = choice.delta || {};
          if (delta.content) { first ??= performance.now(); answer.textContent += delta.content; }
          for (const call of delta.tool_calls || []) {
            first ??= performance.now();
            const slot = (toolCalls[call.index ?? 0] ??= { name: "", arguments: "" });
            if (call.function?.name) slot.name += call.function.name;
            if (call.function?.arguments) slot.arguments += call.function.arguments;
            tools.replaceChildren(...toolCalls.map((c) => h("pre", { class: "tool-call" }, `tool call ${c.name}(${c.arguments})`)));
          }
        });
      messages.push({ role: "assistant", content: answer.textContent });
      const total = performance.now() - started;
      const tokens = usage?.completion_tokens;
      stats.textContent = `prompt ${usage?.prompt_tokens ?? "?"} tokens, answer ${tokens ?? "?"} tokens; ` +
        `first token after ${fmt(first ? first - started : null, 0)} ms, all in ${fmt(total, 0)} ms` +
        (tokens && first ? `, ${fmt(tokens / ((performance.now() - first) / 1000))} tokens/s` : "") + `; finish: ${finish}`;
    } catch (e) { messages.pop(); showError(error, e); }
    send.disabled = false;
  });
  view.replaceChildren(h("h2", {}, "Playground"), error, h("section", { class: "card" }, form), h("section", { class: "card" }, log, stats));
  return () => {};
}

// ---- Jobs and batches -----------------------------------------------------------------------------------------

function jobDetail(container, jobId, error, onDone) {
  const events = h("ul", { id: "job-events" });
  const status = h("span", { id: "job-status" }, "…");
  const result = h("div", {});
  const cancel = h("button", { class: "plain", type: "button", onclick: async () => {
    try { await api(`/api/mcp/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }); } catch (e) { showError(error, e); }
  } }, "Cancel");
  const traceNow = h("div", { id: "job-trace" });
  container.replaceChildren(h("h3", {}, `Job ${jobId} `, status, " ", cancel), events, traceNow, result);
  const stopTrace = traceSoFar(jobId, traceNow);
  const stopEvents = followJob(jobId, (name, data) => {
    status.textContent = name.replace("job.", "");
    events.append(h("li", {}, `${data.timestamp || ""} ${name}${data.progress !== undefined ? ` ${Math.round(data.progress * 100)}%` : ""}`));
  }, (job) => {
    stopTrace();
    traceNow.replaceChildren();
    status.textContent = job.status;
    cancel.disabled = true;
    onDone();
    const trace = job.result?.execution_trace;
    result.replaceChildren(
      job.error ? h("p", { class: "bad" }, `${job.error_code || "error"}: ${job.error}`) : "",
      trace ? traceTable(trace) : "",
      h("pre", { id: "job-result" }, JSON.stringify(job.result ?? job, null, 2)));
  }, (e) => showError(error, e));
  return () => { stopTrace(); stopEvents(); };
}

const BATCH_LINES_SHOWN = 20;

/** The first lines of a file of the Files API (a batch's output or errors), as text. */
async function fileHead(fileId) {
  const content = await api(`/v1/files/${encodeURIComponent(fileId)}/content`);
  const text = typeof content === "string" ? content : JSON.stringify(content);
  const lines = text.split("\n").filter((line) => line);
  return lines.slice(0, BATCH_LINES_SHOWN).join("\n") + (lines.length > BATCH_LINES_SHOWN ? `\n… ${lines.length - BATCH_LINES_SHOWN} more lines` : "");
}

/** A batch's status, counts and times, a Cancel while it runs, and the first lines of its output and error files. */
async function batchDetail(container, batchId, error, onChange) {
  try {
    const batch = await api(`/v1/batches/${encodeURIComponent(batchId)}`);
    const counts = batch.request_counts || {};
    const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString() : "—");
    const running = ["validating", "in_progress", "finalizing"].includes(batch.status);
    const cancel = h("button", { class: "plain", type: "button", disabled: !running, onclick: async () => {
      try { await api(`/v1/batches/${encodeURIComponent(batchId)}/cancel`, { method: "POST" }); } catch (e) { showError(error, e); }
      batchDetail(container, batchId, error, onChange);
      onChange();
    } }, "Cancel");
    const files = [];
    for (const [label, fileId] of [["output", batch.output_file_id], ["errors", batch.error_file_id]]) {
      if (fileId) files.push(h("h4", {}, `${label} (${fileId})`), h("pre", { class: `batch-${label}` }, await fileHead(fileId)));
    }
    container.replaceChildren(
      h("h3", {}, `Batch ${batch.id} `, h("span", { id: "batch-status" }, batch.status), " ", cancel),
      h("p", { class: "muted" }, `${batch.endpoint}; ${counts.completed ?? 0} of ${counts.total ?? 0} lines done, ` +
        `${counts.failed ?? 0} failed; created ${when(batch.created_at)}, in progress ${when(batch.in_progress_at)}, ` +
        `ended ${when(batch.completed_at || batch.failed_at || batch.cancelled_at || batch.expired_at)}`),
      ...files);
  } catch (e) { showError(error, e); }
}

function jobsView() {
  const error = errorLine();
  const list = h("div", {});
  const detail = h("section", { class: "card", id: "job-detail" }, h("p", { class: "muted" }, "Pick a job to follow its events."));
  const filter = h("form", { class: "row" },
    h("label", {}, "status"), select("status", ["", "queued", "processing", "completed", "failed", "cancelled"], ""),
    h("label", {}, "model"), h("input", { name: "model_id", placeholder: "any" }), h("button", {}, "Filter"));
  const submit = h("form", { class: "row", id: "job-form" },
    h("select", { name: "model_id", id: "job-model" }), h("input", { name: "prompt", placeholder: "prompt", size: 40, required: true }),
    h("input", { name: "max_tokens", type: "number", value: "16", size: 4 }), h("button", {}, "Submit a chat job"));
  const batches = h("div", {});
  const batchCard = h("div", { id: "batch-detail" });
  let stopFollowing = () => {};
  modelIds(["lm"]).then((ids) => submit.querySelector("select").replaceChildren(...ids.map((id) => h("option", { value: id }, id))));

  const open = (jobId) => { stopFollowing(); stopFollowing = jobDetail(detail, jobId, error, refresh); };

  async function refresh() {
    const query = new URLSearchParams([...new FormData(filter)].filter(([, v]) => v));
    query.set("limit", "50");
    try {
      const jobs = await api(`/api/mcp/jobs?${query}`);
      list.replaceChildren(h("p", { class: "muted" }, `${jobs.total ?? jobs.jobs.length} jobs`), table([
        ["job", (j) => j.job_id], ["operation", (j) => j.operation], ["model", (j) => j.model_id],
        ["status", (j) => h("span", { class: `job-${j.status}` }, j.status)],
        ["progress", (j) => (j.progress !== undefined ? `${Math.round(j.progress * 100)}%` : "")],
        ["created", (j) => j.created_at], ["latency ms", (j) => fmt(j.latency_ms, 0)],
      ], jobs.jobs, (j) => open(j.job_id)));
      const batchList = await api("/v1/batches?limit=20");
      batches.replaceChildren(table([
        ["batch", (b) => b.id], ["endpoint", (b) => b.endpoint], ["status", (b) => b.status],
        ["requests", (b) => `${b.request_counts?.completed ?? 0}/${b.request_counts?.total ?? 0} (${b.request_counts?.failed ?? 0} failed)`],
        ["created", (b) => new Date(b.created_at * 1000).toISOString()],
      ], batchList.data, (b) => batchDetail(batchCard, b.id, error, refresh)));
    } catch (e) { showError(error, e); }
  }
  filter.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  submit.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(submit));
    try {
      const job = await api("/api/mcp/jobs", { method: "POST", body: { model_id: data.model_id, operation: "chat",
        input: { messages: [{ role: "user", content: data.prompt }], max_tokens: +data.max_tokens } } });
      open(job.job_id);
      refresh();
    } catch (e) { showError(error, e); }
  });
  view.replaceChildren(h("h2", {}, "Jobs and batches"), error, h("section", { class: "card" }, submit, filter, list), detail,
    h("section", { class: "card" }, h("h3", {}, "Batches"), batches, batchCard));
  const stop = every(5000, refresh);
  return () => { stop(); stopFollowing(); };
}

// ---- RAG ------------------------------------------------------------------------------------------------------

function ragView() {
  const error = errorLine();
  const collections = h("div", {});
  const documents = h("div", {});
  const upload = h("form", { class: "row", id: "upload-form" },
    h("input", { name: "collection", placeholder: "collection", required: true }),
    h("input", { name: "files", type: "file", multiple: true, required: true, accept: ".pdf,.txt,.md,.html,.htm" }),
    h("button", {}, "Upload"), h("progress", { max: 1, value: 0, id: "upload-progress" }), h("span", { class: "muted", id: "upload-status" }));
  const ask = h("form", { id: "query-form" },
    h("div", { class: "row" }, h("input", { name: "collection", placeholder: "collection", required: true }),
      h("input", { name: "query", placeholder: "question", size: 50, required: true }),
      h("label", {}, "top_k"), h("input", { name: "top_k", type: "number", min: 1, max: 50, value: "5", size: 3 }),
      h("label", {}, "similarity ≥"), h("input", { name: "similarity_threshold", type: "number", step: "0.05", min: 0, max: 1, value: "0.3", size: 4 }),
      h("label", {}, "max_tokens"), h("input", { name: "max_tokens", type: "number", value: "64", size: 4 }), h("button", {}, "Ask")));
  const answer = h("div", { class: "answer", id: "rag-answer" });
  const sources = h("ol", { id: "rag-sources" });
  const figures = h("p", { class: "muted" });
  let stopFollowing = () => {};

  async function showCollection(name) {
    try {
      const collection = await api(`/api/rag/collections/${encodeURIComponent(name)}`);
      ask.querySelector("[name=collection]").value = name;
      upload.querySelector("[name=collection]").value = name;
      documents.replaceChildren(h("h3", {}, `${name}: documents`), table([
        ["document", (d) => d.filename || d.file || d.document_id], ["id", (d) => d.document_id],
        ["chunks", (d) => d.chunk_count ?? "—"], ["ingested", (d) => d.ingested_at ?? "—"],
      ], collection.documents || []));
    } catch (e) { showError(error, e); }
  }

  async function refresh() {
    try {
      const list = await api("/api/rag/collections");
      collections.replaceChildren(table([
        ["collection", (c) => c.name], ["documents", (c) => c.document_count], ["chunks", (c) => c.chunk_count],
        ["created", (c) => c.created_at],
      ], list.collections || list.data || [], (c) => showCollection(c.name)));
    } catch (e) { showError(error, e); }
  }

  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(upload);
    form.set("async", "true");
    const status = upload.querySelector("#upload-status");
    const bar = upload.querySelector("progress");
    try {
      const job = await api("/api/rag/ingest", { method: "POST", form });
      status.textContent = `ingest job ${job.job_id}: queued`;
      stopFollowing();
      const track = setInterval(async () => {
        const now = await api(`/api/mcp/jobs/${job.job_id}`).catch(() => null);
        if (now?.progress !== undefined) bar.value = now.progress;
      }, 1000);
      const stopEvents = followJob(job.job_id, (name) => { status.textContent = `ingest job ${job.job_id}: ${name.replace("job.", "")}`; },
        (done) => {
          clearInterval(track);
          bar.value = done.status === "completed" ? 1 : bar.value;
          status.textContent = done.status === "completed"
            ? `ingested: ${done.result?.chunks_created ?? "?"} chunks` : `${done.status}: ${done.error || ""}`;
          status.dataset.done = done.status;
          refresh();
          showCollection(form.get("collection"));
        }, (e) => { clearInterval(track); showError(error, e); });
      stopFollowing = () => { clearInterval(track); stopEvents(); };
    } catch (e) { showError(error, e); }
  });

  ask.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(ask));
    answer.textContent = "";
    sources.replaceChildren();
    figures.textContent = "";
    error.textContent = "";
    try {
      await readEvents("/api/rag/query", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({
        query: data.query, collection: data.collection, stream: true, top_k: +data.top_k,
        similarity_threshold: +data.similarity_threshold, generation_config: { max_tokens: +data.max_tokens } }) },
      (_name, chunk) => {
        if (chunk.error) throw new ApiError(chunk.error.message);
        if (chunk.object === "rag.sources") {
          sources.replaceChildren(...(chunk.sources || []).map((s) => h("li", {},
            h("b", {}, `${s.file ?? s.metadata?.file ?? s.document_id}${(s.page ?? s.metadata?.page) != null ? `, page ${s.page ?? s.metadata?.page}` : ""}`),
            ` (similarity ${fmt(s.similarity ?? s.score, 2)}) `, h("span", { class: "muted" }, (s.text || "").slice(0, 200)))));
        } else if (chunk.object === "rag.delta") answer.textContent += chunk.delta;
        else if (chunk.object === "rag.done") {
          answer.dataset.done = "true";
          figures.textContent = `retrieval ${fmt(chunk.retrieval_latency_ms, 0)} ms, generation ${fmt(chunk.generation_latency_ms, 0)} ms, ` +
            `${chunk.usage?.completion_tokens ?? "?"} tokens`;
        }
      });
    } catch (e) { showError(error, e); }
  });

  view.replaceChildren(h("h2", {}, "RAG"), error,
    h("section", { class: "card" }, h("h3", {}, "Collections"), collections, documents),
    h("section", { class: "card" }, h("h3", {}, "Upload (an ingest job)"), upload),
    h("section", { class: "card" }, h("h3", {}, "Ask"), ask, h("h3", {}, "Answer"), answer, figures, h("h3", {}, "Sources"), sources));
  const stop = every(10000, refresh);
  return () => { stop(); stopFollowing(); };
}

// ---- Workflows ------------------------------------------------------------------------------------------------

function traceTable(trace) {
  return table([
    ["step", (t) => t.step], ["type", (t) => t.type], ["model", (t) => t.model ?? "—"],
    ["status", (t) => h("span", { class: t.status === "completed" ? "good" : t.status === "failed" ? "bad" : "" }, t.status)],
    ["ms", (t) => fmt(t.duration_ms, 0)], ["output size", (t) => t.output_size ?? "—"], ["error", (t) => t.error ?? ""],
  ], trace);
}

/** While a workflow's job runs, shows the trace of its steps so far (its progress detail) in ``container``, once
 * a second; returns what stops it. */
function traceSoFar(jobId, container) {
  return every(1000, async () => {
    try {
      const job = await api(`/api/mcp/jobs/${encodeURIComponent(jobId)}`);
      const trace = job.progress_detail?.execution_trace;
      if (job.status === "processing" && trace) container.replaceChildren(traceTable(trace));
    } catch { /* the next tick tries again; the final state replaces this view */ }
  });
}

function workflowsView() {
  const error = errorLine();
  const list = h("div", {});
  const runner = h("section", { class: "card", id: "workflow-runner" }, h("p", { class: "muted" }, "Pick a workflow to run it."));
  let stopFollowing = () => {};

  function field(name, spec, required) {
    const hint = `${name}${required ? " *" : ""}${spec.description ? ` — ${spec.description}` : ""}`;
    const attrs = { name, required, "data-type": spec.type || "string" };
    const input = spec.type === "string" && !spec.enum
      ? h("textarea", { ...attrs, rows: name === "document" ? 4 : 1 })
      : spec.enum ? select(name, spec.enum, spec.default)
        : h("input", { ...attrs, type: ["integer", "number"].includes(spec.type) ? "number" : "text", value: spec.default ?? "" });
    return h("div", {}, h("label", {}, hint), input);
  }

  function open(workflow) {
    const schema = workflow.input_schema || {};
    const required = schema.required || [];
    const form = h("form", { id: "workflow-form" },
      Object.entries(schema.properties || {}).map(([name, spec]) => field(name, spec, required.includes(name))),
      h("label", {}, "max_tokens for every model call "), h("input", { name: "__max_tokens", type: "number", value: "32", size: 4 }),
      h("div", { class: "row" }, h("button", {}, "Run")));
    const status = h("p", { class: "muted", id: "workflow-status" });
    const trace = h("div", { id: "workflow-trace" });
    const output = h("pre", {});
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = {};
      for (const element of form.elements) {
        if (!element.name || element.name.startsWith("__") || element.value === "") continue;
        const type = element.dataset.type;
        input[element.name] = type === "integer" || type === "number" ? +element.value
          : type === "object" || type === "array" ? JSON.parse(element.value) : element.value;
      }
      trace.replaceChildren();
      output.textContent = "";
      try {
        const job = await api("/api/fusion/orchestrate", { method: "POST", body: {
          workflow: workflow.id, input, async: true, config: { max_tokens: +form.elements.__max_tokens.value } } });
        status.textContent = `run as job ${job.job_id}: queued`;
        stopFollowing();
        const stopTrace = traceSoFar(job.job_id, trace);
        const stopEvents = followJob(job.job_id, (name) => {
          status.textContent = `run as job ${job.job_id}: ${name.replace("job.", "")}`;
        }, (done) => {
          stopTrace();
          status.textContent = `run as job ${job.job_id}: ${done.status}${done.error ? ` — ${done.error}` : ""}`;
          status.dataset.done = done.status;
          trace.replaceChildren(traceTable(done.result?.execution_trace || []));
          output.textContent = JSON.stringify(done.result?.result ?? done.result, null, 2);
        }, (e) => showError(error, e));
        stopFollowing = () => { stopTrace(); stopEvents(); };
      } catch (e) { showError(error, e); }
    });
    runner.replaceChildren(h("h3", {}, workflow.name), h("p", { class: "muted" }, workflow.description || ""), form, status,
      h("h3", {}, "Trace"), trace, output);
  }

  api("/api/fusion/workflows").then((data) => list.replaceChildren(table([
    ["workflow", (w) => w.id], ["predefined", (w) => (w.predefined ? "yes" : "composed")], ["description", (w) => w.description],
    ["input", (w) => Object.keys(w.input_schema?.properties || {}).join(", ")],
  ], data.workflows, open))).catch((e) => showError(error, e));
  view.replaceChildren(h("h2", {}, "Workflows"), error, h("section", { class: "card" }, list), runner);
  return () => stopFollowing();
}

// ---- Webhooks -------------------------------------------------------------------------------------------------

function webhooksView() {
  const error = errorLine();
  const list = h("div", {});
  const deliveries = h("section", { class: "card" }, h("p", { class: "muted" }, "Pick a subscription to see its deliveries."));

  async function open(webhook) {
    try {
      const data = await api(`/api/mcp/webhooks/${encodeURIComponent(webhook.webhook_id)}/deliveries?limit=50`);
      deliveries.replaceChildren(h("h3", {}, `Deliveries to ${webhook.url}`), table([
        ["event", (d) => d.event], ["job", (d) => d.job_id ?? "—"], ["status", (d) => d.status],
        ["next retry", (d) => d.next_attempt_at ?? "—"],
        ["attempts", (d) => h("ul", {}, (d.attempts || []).map((a) => h("li", {},
          `#${a.number} ${a.at}: ${a.status_code ?? (a.error || "").slice(0, 90)} in ${fmt(a.duration_ms, 0)} ms` +
          (a.retry_in_seconds ? `, next retry in ${fmt(a.retry_in_seconds)} s` : ""))))],
      ], data.deliveries || data.data || []));
    } catch (e) { showError(error, e); }
  }

  async function refresh() {
    try {
      const data = await api("/api/mcp/webhooks");
      list.replaceChildren(table([
        ["url", (w) => w.url], ["events", (w) => w.events.join(", ")], ["status", (w) => w.status],
        ["delivered", (w) => w.success_count], ["failed", (w) => w.failure_count], ["last", (w) => w.last_triggered_at ?? "—"],
      ], data.webhooks, open));
    } catch (e) { showError(error, e); }
  }
  view.replaceChildren(h("h2", {}, "Webhooks"), error, h("section", { class: "card" }, list), deliveries);
  return every(10000, refresh);
}

// ---- Metrics --------------------------------------------------------------------------------------------------

const WINDOW_MS = 15 * 60 * 1000;
const samples = [];  // {at, values: Map(name -> summed value)}, kept while the console is open

function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) values.set(match[1], (values.get(match[1]) || 0) + value);
  }
  return values;
}

const CHARTS = [
  ["tokens generated per second", (a, b) => rate(a, b, "mlx_tokens_generated_total")],
  ["time to first token, ms (mean over the interval)", (a, b) => ratio(a, b, "mlx_time_to_first_token_seconds", 1000)],
  ["request latency, ms (mean over the interval)", (a, b) => ratio(a, b, "mlx_request_latency_seconds", 1000)],
  ["queue depth (all models)", (_a, b) => b.values.get("mlx_queue_depth") ?? 0],
  ["batch size (all models)", (_a, b) => b.values.get("mlx_batch_size") ?? 0],
];

function rate(a, b, name) {
  const seconds = (b.at - a.at) / 1000;
  return seconds > 0 ? Math.max(0, ((b.values.get(name) ?? 0) - (a.values.get(name) ?? 0)) / seconds) : 0;
}

function ratio(a, b, name, scale) {
  const sum = (b.values.get(`${name}_sum`) ?? 0) - (a.values.get(`${name}_sum`) ?? 0);
  const count = (b.values.get(`${name}_count`) ?? 0) - (a.values.get(`${name}_count`) ?? 0);
  return count > 0 ? (sum / count) * scale : 0;
}

function chart(title, points) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 300 120");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1e-9, ...points.map((p) => p[2]));
  const now = Date.now();
  const x = (at) => Math.max(0, 300 * (1 - (now - at) / WINDOW_MS)).toFixed(1);
  // Each interval between two samples is a step at its value.
  const path = points.map(([from, to, value], i) => {
    const y = (115 - 105 * (value / max)).toFixed(1);
    return `${i ? "L" : "M"}${x(from)},${y} L${x(to)},${y}`;
  }).join(" ");
  const line = document.createElementNS(svgNs, "path");
  line.setAttribute("d", path || "M0,115");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2f6fde");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  const last = points.length ? points[points.length - 1][2] : null;
  return h("div", { class: "chart" }, h("div", {}, `${title}: `, h("b", {}, fmt(last)), h("span", { class: "muted chart-max" }, ` (max ${fmt(max === 1e-9 ? 0 : max)})`)), svg);
}

function metricsView() {
  const error = errorLine();
  const charts = h("div", { class: "charts", id: "charts" });
  async function refresh() {
    try {
      const response = await fetch("/metrics", { headers: headers() });
      if (response.status === 401) { askForKey(); return; }
      samples.push({ at: Date.now(), values: parseMetrics(await response.text()) });
      while (samples.length && samples[0].at < Date.now() - WINDOW_MS) samples.shift();
      charts.replaceChildren(...CHARTS.map(([title, compute]) =>
        chart(title, samples.slice(1).map((sample, i) => [samples[i].at, sample.at, compute(samples[i], sample)]))));
    } catch (e) { showError(error, e); }
  }
  view.replaceChildren(h("h2", {}, "Metrics"), error,
    h("p", { class: "muted" }, "From /metrics every 5 s, the last 15 minutes since this console was opened."), charts);
  return every(5000, refresh);
}

// ---- routing --------------------------------------------------------------------------------------------------

const VIEWS = { models: modelsView, playground: playgroundView, jobs: jobsView, rag: ragView,
  workflows: workflowsView, webhooks: webhooksView, metrics: metricsView };

function route() {
  leaveView();
  const name = location.hash.slice(1) in VIEWS ? location.hash.slice(1) : "models";
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("active", link.hash === `#${name}`);
  leaveView = VIEWS[name]() || (() => {});
}

// Sample the metrics from the start and while other views are shown, so the charts have history when opened.
function sampleInBackground() {
  if (location.hash === "#metrics") return;
  fetch("/metrics", { headers: headers() }).then((r) => (r.ok ? r.text() : null))
    .then((text) => text && samples.push({ at: Date.now(), values: parseMetrics(text) })).catch(() => {});
}
sampleInBackground();
setInterval(sampleInBackground, 15000);
window.addEventListener("hashchange", route);
route();
