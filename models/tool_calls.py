"""Tool calls in a model's output: which format a model writes them in, finding them in the streamed text, and
the grammar that forces a valid call.

Formats: what the chat template declares (mlx-lm's detected parser and markers), Mistral's ``[TOOL_CALLS]``
list, Llama 3's bare JSON (``<|python_tag|>`` or an answer that is a ``{"name": ...}`` object), and the
Hermes/Qwen ``<tool_call>{json}</tool_call>`` blocks, which are also the fallback for a template that knows no
tools: the platform then describes the tools in the system prompt and renders past calls in that format.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.stops import held_back

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
MISTRAL_START = "[TOOL_CALLS]"
LLAMA_START = "<|python_tag|>"

Parser = Callable[[str], list[dict[str, Any]]]
"""Text between a start and an end marker -> the calls it holds (``name``, ``arguments`` as a dict)."""


class ToolCallError(ValueError):
    """Text in a tool-call block that is not a call."""


def _calls_from_json(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"not JSON: {exc.msg}") from None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ToolCallError("a call must be an object with a name")
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ToolCallError(f"arguments are not JSON: {exc.msg}") from None
        if not isinstance(arguments, dict):
            raise ToolCallError("arguments must be an object")
        calls.append({"name": item["name"], "arguments": arguments})
    return calls


@dataclass(frozen=True)
class ToolFormat:
    name: str
    start: str
    end: str | None
    """None: the call runs to the end of the answer."""
    parse: Parser = _calls_from_json
    json_body: bool = True
    """The block is JSON (``{"name", "arguments"}``), so a grammar can force it."""
    rendered_by_template: bool = False
    """The chat template renders ``tools`` and past ``tool_calls`` itself."""


HERMES = ToolFormat("hermes", HERMES_START, HERMES_END)
MISTRAL = ToolFormat("mistral", MISTRAL_START, None, rendered_by_template=True)
LLAMA3 = ToolFormat("llama3", LLAMA_START, None, rendered_by_template=True)


def format_for(tokenizer: Any) -> ToolFormat:
    """The format the model's chat template declares (mlx-lm's detection first), else Hermes."""
    template = str(getattr(getattr(tokenizer, "_tokenizer", tokenizer), "chat_template", "") or "")
    if getattr(tokenizer, "has_tool_calling", False) and tokenizer.tool_call_start:
        parser = tokenizer.tool_parser
        if tokenizer.tool_call_start == HERMES_START and "tool_call.name" in template:
            return ToolFormat("hermes", HERMES_START, HERMES_END, rendered_by_template=True)

        def parse(text: str) -> list[dict[str, Any]]:
            try:
                found = parser(text, None)
            except Exception as exc:  # noqa: BLE001 - a template parser's own error: not a call
                raise ToolCallError(str(exc)) from None
            return [_normalised(call) for call in (found if isinstance(found, list) else [found])]

        return ToolFormat("template", tokenizer.tool_call_start, tokenizer.tool_call_end or None, parse, False, True)
    if MISTRAL_START in template:
        return MISTRAL
    if LLAMA_START in template or "Environment: ipython" in template:
        return LLAMA3
    return HERMES


def _normalised(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or "name" not in call:
        raise ToolCallError("the template's parser found no call")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    return {"name": call["name"], "arguments": arguments}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    """A call as OpenAI returns it: ``arguments`` as a JSON string."""
    return {
        "index": index,
        "id": new_call_id(),
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
    }


@dataclass
class ToolCallScanner:
    """Splits streamed answer text into content and tool calls: text before a call's start marker is content
    (held back while it could still be the start of a marker); a block is parsed when its end marker (or the
    answer's end) arrives. With ``llama_json``, an answer that begins with ``{"name"`` is a call too."""

    format: ToolFormat
    parallel: bool = True
    llama_json: bool = False
    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    _pending: str = ""
    _block: str | None = None
    _started: bool = False
    _space: str = ""

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """New content and new calls (OpenAI-shaped) found in ``text``."""
        self._pending += text
        out, found = "", []
        while self._pending:
            if self._block is None:
                if not self._started and self.llama_json and self._pending.lstrip().startswith("{"):
                    self._block, self._pending = self._pending, ""
                    break
                start = self._pending.find(self.format.start)
                if start < 0:
                    keep = held_back(self._pending, [self.format.start])
                    if not self._started and self.llama_json and not self._pending.strip():
                        keep = len(self._pending)
                    out += self._content(self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep :]
                    break
                out += self._content(self._pending[:start])
                self._started = True
                self._block, self._pending = "", self._pending[start + len(self.format.start) :]
                continue
            self._block += self._pending
            self._pending = ""
            end = self._block.find(self.format.end) if self.format.end is not None else -1
            if end < 0:
                break
            self._block, self._pending = self._block[:end], self._block[end + len(self.format.end or "") :]
            text_back, calls = self._close(closed=True)
            out += self._content(text_back)
            found += calls
        return out, found

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """What is left when the answer ends: an open block is parsed; one cut off before its end marker is
        dropped, and an end-less format's block that is not a call comes back as content."""
        out, found = "", []
        if self._block is not None:
            out, found = self._close(closed=False)
        out += self._pending
        self._pending = ""
        out = self._content(out)
        self._space = ""  # whitespace after the last call is not an answer
        return out, found

    def _content(self, out: str) -> str:
        """Content to send: whitespace after a call waits until text follows it (a newline between two calls
        is not content)."""
        if self.calls and not out.strip():
            self._space += out
            return ""
        out, self._space = self._space + out, ""
        self._started = self._started or bool(out.strip())
        self.content += out
        return out

    def _close(self, closed: bool) -> tuple[str, list[dict[str, Any]]]:
        """The block's calls; or, for a block that is not a call, its text back as content."""
        block, self._block = self._block or "", None
        try:
            parsed = self.format.parse(block)
        except ToolCallError:
            if not closed and self.format.end is not None:
                return "", []  # cut off by max_tokens mid-call: no call, and no markup in the content
            starts_bare = self.llama_json and not block.startswith(self.format.start) and block.lstrip()[:1] == "{"
            marker = "" if starts_bare else self.format.start
            return marker + block + (self.format.end or "" if closed else ""), []
        found = []
        for call in parsed:
            if self.calls and not self.parallel:
                break
            found.append(openai_call(call, len(self.calls)))
            self.calls.append(found[-1])
        return "", found


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of ``tools``: its name and arguments valid for that tool."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_call_grammar(
    format: ToolFormat, tools: list[dict[str, Any]], parallel: bool, json_options: dict[str, Any]
) -> str | None:
    """A Lark grammar (llguidance's, with ``%json``) that admits only calls to ``tools`` in ``format``: one, or
    one or more with ``parallel``. None for a format whose calls are not JSON."""
    if not format.json_body:
        return None
    one = {**call_schema(tools), "x-guidance": json_options}
    if format.end is None:  # one JSON value after the start marker: a list of calls, or one call
        body = {
            "type": "array",
            "items": call_schema(tools),
            "minItems": 1,
            **({} if parallel else {"maxItems": 1}),
            "x-guidance": json_options,
        }
        value = body if format.name == "mistral" else one
        return f"start: {json.dumps(format.start)} %json {json.dumps(value)}\n"
    return (
        f"start: call{'+' if parallel else ''}\n"
        f'call: {json.dumps(format.start)} "\\n"? %json {json.dumps(one)} "\\n"? {json.dumps(format.end)} "\\n"?\n'
    )


def system_prompt(tools: list[dict[str, Any]]) -> str:
    """The Hermes-style description of ``tools`` for a template that renders no tools of its own."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "You may call one or more functions to help with the user's request. The functions are described in"
        f" JSON schema within <tools></tools> tags:\n<tools>\n{listed}\n</tools>\n"
        "To call a function, answer with a JSON object with the function's name and arguments within"
        ' <tool_call></tool_call> tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
        "\n</tool_call>"
    )


def hermes_call_text(call: dict[str, Any]) -> str:
    """A past call (OpenAI-shaped) as the Hermes block the fallback prompt taught the model."""
    function = call.get("function", {})
    arguments = function.get("arguments") or "{}"
    try:
        arguments_value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        arguments_value = arguments
    body = json.dumps({"name": function.get("name"), "arguments": arguments_value}, ensure_ascii=False)
    return f"{HERMES_START}\n{body}\n{HERMES_END}"


@dataclass(frozen=True)
class ToolUse:
    """What a request asks of tools: where calls are looked for, and the grammar that forces one, if any."""

    format: ToolFormat
    parallel: bool
    grammar: str | None


def tool_use(payload: dict[str, Any], format: ToolFormat, json_options: dict[str, Any]) -> ToolUse | None:
    """None when the request offers no tools or forbids calling them (``tool_choice: "none"``).

    ``ValueError`` when ``tool_choice`` forces a call that this format cannot be made to produce.
    """
    tools = payload.get("tools") or []
    choice = payload.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return None
    parallel = payload.get("parallel_tool_calls") is not False
    if choice == "auto":
        return ToolUse(format, parallel, None)
    chosen = (
        tools if choice == "required" else [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
    )
    grammar = forced_call_grammar(format, chosen, parallel, json_options)
    if grammar is None:
        raise ValueError(f"this model writes tool calls in a format ({format.name}) a call cannot be forced in")
    return ToolUse(format, parallel, grammar)


def template_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, format: ToolFormat) -> list:
    """The messages as the chat template takes them, tools and past calls included.

    A template that renders tools gets them as they are (arguments as objects, as templates expect); for one
    that does not, the tools are described in the system message and past calls and results are written in
    the Hermes format that description teaches.
    """
    if format.rendered_by_template:
        return [_template_message(message) for message in messages]
    rendered = []
    for message in messages:
        role, text = message["role"], message_text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            text = "\n".join([text, *(hermes_call_text(call) for call in message["tool_calls"])]).strip()
        elif role == "tool":
            role, text = "user", f"<tool_response>\n{text}\n</tool_response>"
        rendered.append({"role": role, "content": text})
    if tools:
        description = system_prompt(tools)
        if rendered and rendered[0]["role"] in ("system", "developer"):
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{description}".strip()}
        else:
            rendered.insert(0, {"role": "system", "content": description})
    return rendered


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {"role": message["role"], "content": message_text(message.get("content"))}
    if message.get("tool_calls"):
        rendered["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": _arguments_object(call["function"].get("arguments")),
                },
            }
            for call in message["tool_calls"]
        ]
    for key in ("tool_call_id", "name"):
        if message.get(key):
            rendered[key] = message[key]
    return rendered


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments or {}


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)
