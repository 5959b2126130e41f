"""Continuous batching of one language model's requests, driven step by step by the engine thread.

Requests join mlx-lm's ``BatchGenerator`` whenever there is room and leave it as soon as they finish, are
cancelled or hit a stop sequence. Each keeps its own sampler (with its own random key), logits processors,
stop sequences, ``max_tokens``, logprobs and ``n`` output sequences; each starts from the longest cached prefix
of its prompt and leaves its prompt and answer in the prompt cache when it ends.

Admission follows priority (0 interactive, 1-9 jobs, 10 batch lines; arrival order within one). When the batch is
full and a more urgent request waits, a row of priority ``PREEMPTIBLE_FROM`` or more (background work) gives way:
to other background work once it has run ``preempt_after_tokens`` tokens, to an urgent request once it has its
first token. While any urgent request runs or waits, background work keeps at most
``background_rows_beside_interactive`` rows (on a CPU every row lengthens every step), and for
``URGENT_LINGER_SECONDS`` after; its requests still in their prefill go back in line at once. A row that gives way
leaves the batch with the K/V of its prompt and answer so far, waits in line, and later goes on from there with its
own sampler and processors, as if it had never left. Requests go into the generator only as fast as it prefills
them (mlx-lm prefills in arrival order), so an urgent prompt never waits behind a whole wave of others, and
background prompts a few at a time; a step decodes or prefills, never both (``models.generator_steps``), so an
urgent request never waits for the two together.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from config.errors import ApiError
from config.logs import request_id_var
from models.adapters import BASE_SLOT, Adapter, AdapterBatchGenerator, AdapterSet
from models.constrained import JSON_OPTIONS, GrammarError, Grammars, ThinkGate, grammar_for
from models.generator_steps import StepTurns
from models.handlers.base import PROGRESS, Emit, RequestCancelled
from models.kv_quantized import bytes_per_value, kv_bits_of
from models.prompt_cache import MODEL_KEY, PromptCache
from models.prompt_disk import DiskHit
from models.reasoning import ThinkSplitter, markers_of
from models.sampling import SamplingOptions, options_from, processors_for, samplers_for, token_logprobs
from models.speculative import DraftingBatchGenerator
from models.stops import StopScanner
from models.tool_calls import LLAMA3, ToolCallScanner, ToolUse, format_for, tool_use

log = logging.getLogger(__name__)

BATCHED_OPERATIONS = frozenset({"chat", "completion"})
PREEMPTIBLE_FROM = 9
"""Rows of this priority or less urgent (``low`` jobs, batch lines) give way to more urgent requests."""
PREEMPT_AFTER_TOKENS = 8
"""Tokens a row generates after joining (or rejoining) the batch before it may give way to other background work:
no thrashing between lines."""
PREEMPT_FOR_URGENT_AFTER_TOKENS = 1
"""Tokens a row generates after joining before it gives way to an urgent request: its first, so that the K/V of its
prompt goes with it. Urgent requests never give way, and lines come back only ``URGENT_LINGER_SECONDS`` after the
last one, so this cannot thrash; waiting 8 tokens of a 32-row batch instead cost the interactive request that came
just after a wave of lines about a second of TTFT (``python -m bench batch``)."""
PREFILL_BATCH = 8
"""Prompts the generator prefills together; at most this many wait for it, the rest wait here in priority order."""
BACKGROUND_PREFILL_BATCH = 4
"""Background prompts (batch lines, ``low`` jobs) the generator prefills together: a request that comes while they
are prefilled waits for that step (8 lines' prompts took about 0.6 s on the 2-core machine, 4 half that)."""
BACKGROUND_ROWS_BESIDE_INTERACTIVE = 0
"""Rows that background work (priority ``PREEMPTIBLE_FROM`` or more) keeps in the batch while a more urgent request
runs or waits: on a CPU every row lengthens every step, so even a few rows of lines slow interactive tokens (beside
a 2,000-line batch, 8 interactive clients' TTFT p95 was 1.45x alone with none kept, 1.9-2.1x with 4; the batch
went on at 58 and 65 tok/s between their requests: ``python -m bench batch``)."""
SETTLE_AFTER_STEPS = 4
"""Steps after which the K/V of rows that gave way is copied into arrays of its own even if a running request still
waits for its first token (``BatchSession._settle_paused``)."""
URGENT_LINGER_SECONDS = 2.0
"""How long background work keeps to its few rows after the last urgent request left: a client that sends its next
request at once finds the batch as its last one left it, not full of lines that have just come back."""


@dataclass
class Ticket:
    """One request handed to the batch by the engine."""

    operation: str
    payload: dict[str, Any]
    emit: Emit
    checkpoint: Callable[[], bool]
    """Between two tokens: True once cancelled (tests may hold the request here)."""
    cancelled: Callable[[], bool]
    future: Future
    request_id: str
    logits_processors: list[Any] = field(default_factory=list)
    """Extra processors for every sequence of the request (constrained decoding puts its mask here)."""
    priority: int = 0
    """Its place in line: 0 interactive, 1-9 jobs by their priority, 10 batch lines; lower goes first."""


@dataclass
class Sequence:
    """One output sequence (``choices[index]``) of a request."""

    index: int
    uid: int
    detokenizer: Any
    scanner: StopScanner
    tokens: list[int] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    tools: ToolCallScanner | None = None
    """Finds tool calls in the answer, when the request offers tools."""
    thinking: ThinkSplitter | None = None
    """Separates reasoning from the answer, for a model that thinks."""
    sampler: Any = None
    processors: list[Any] = field(default_factory=list)
    """The row's sampler and logits processors, kept so that a row that gave way goes on with the same ones."""
    paused: list[Any] | None = None
    """While the request waits after giving way: the K/V of its prompt and of ``tokens``."""

    @property
    def content(self) -> str:
        if self.tools is not None:
            return self.tools.content
        if self.thinking is not None:
            return self.thinking.answer
        return self.scanner.text


@dataclass
class Request:
    ticket: Ticket
    options: SamplingOptions
    prompt: list[int]
    cached_tokens: int
    sequences: list[Sequence]
    grammar: str | None = None
    """What constrained decoding enforces on every sequence (a forced tool call, ``response_format``), if anything."""
    tools: ToolUse | None = None
    thinks_first: bool = False
    """The prompt ends inside an opened think block."""
    started: float = field(default_factory=time.perf_counter)
    order: int = 0
    """Arrival order, kept when the request gives way: it goes back in line at its old place."""
    joined_at_tokens: int = 0
    """Tokens of its longest sequence when it last joined the batch."""
    preemptions: int = 0
    """How many times it gave way."""
    from_disk: DiskHit | None = None
    """The disk tier's cache of its prompt's longest prefix, read while it was prepared, if longer than memory's."""
    cache_tier: str | None = None
    """Where its cached prefix came from (``memory``, ``disk``), for the metrics."""
    adapter: Adapter | None = None
    """The LoRA adapter its rows run with (``models.adapters``), held until it ends; None for the base model."""

    @property
    def cache_key(self) -> str:
        return self.adapter.cache_key if self.adapter is not None else MODEL_KEY

    @property
    def priority(self) -> int:
        return self.ticket.priority

    @property
    def generating(self) -> bool:
        return any(s.tokens for s in self.sequences)

    @property
    def live(self) -> list[Sequence]:
        return [s for s in self.sequences if s.finish_reason is None]

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.sequences)


class BatchSession:
    """The batch of one worker. Only the engine thread calls it (MLX state belongs to the thread that made it)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt_for: Callable[[str, dict[str, Any]], list[int]],
        context_length: int,
        max_sequences: int,
        kv_budget_bytes: int,
        prompt_cache: PromptCache,
        prefill_step_size: int = 512,
        preempt_after_tokens: int = PREEMPT_AFTER_TOKENS,
        background_rows_beside_interactive: int = BACKGROUND_ROWS_BESIDE_INTERACTIVE,
        draft_tokens: int = 0,
        adapters: AdapterSet | None = None,
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.tokenizer = tokenizer
        self.prompt_for = prompt_for
        self.context_length = context_length
        self.max_sequences = max(1, max_sequences)
        self.kv_budget_bytes = kv_budget_bytes
        self.prompt_cache = prompt_cache
        self.prefill_step_size = prefill_step_size
        self.preempt_after_tokens = max(1, preempt_after_tokens)
        self.preempt_for_urgent_after_tokens = PREEMPT_FOR_URGENT_AFTER_TOKENS
        self.background_rows_beside_interactive = max(0, background_rows_beside_interactive)
        self.urgent_linger_seconds = URGENT_LINGER_SECONDS
        self._urgent_until = 0.0
        """Until when background work keeps to its few rows (``URGENT_LINGER_SECONDS`` after the last urgent one)."""
        self.draft_tokens = draft_tokens
        """The most tokens a row drafts per step (``models.speculative``); 0: no drafting."""
        self.vocabulary_size = int(getattr(model, "vocab_size", 0) or len(tokenizer.vocab))
        self.kv_bytes_per_token = kv_bytes_per_token(model)
        self.stop_tokens = StopSequences([[token] for token in tokenizer.eos_token_ids])
        self.grammars = Grammars(tokenizer, self.vocabulary_size)
        self.tool_format = format_for(tokenizer)
        self.think = markers_of(tokenizer)
        self.generator: BatchGenerator | None = None
        self._turns = StepTurns()
        self.pending: list[Request] = []
        """Requests waiting to join, most urgent first (those that gave way among them)."""
        self.running: list[Request] = []
        self.requests: dict[int, Request] = {}
        """Running requests by the uid of each of their sequences still generating."""
        self.sequences: dict[int, Sequence] = {}
        self.completed = 0
        self.preemptions = 0
        """Rows that gave way to a more urgent request."""
        self._unsettled: list[Any] = []
        """The K/V of rows that gave way, still views of the batch's buffers (which they keep alive): copied into
        arrays of their own once every running request has its first token (``_settle_paused``)."""
        self._unsettled_steps = 0
        self._unkept: list[tuple[list[int], list[Any], str]] = []
        """What the generator prefilled of background requests sent back in line, kept in the prompt cache as the
        K/V above is settled (keeping copies it, and an urgent prompt waits for that)."""
        self._orders = itertools.count()
        self._preparing = threading.Lock()
        """Preparations take turns with each other (a tokenizer is not made for many threads at once), never
        with the engine's steps."""

    # --- what the engine asks -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.running or self.pending)

    @property
    def has_room(self) -> bool:
        return len(self.sequences) + sum(r.options.n for r in self.pending) < self.max_sequences

    def could_make_room_for(self, priority: int) -> bool:
        """Whether a request of ``priority`` would find a row: a free one that no waiting request at least as urgent
        claims (background work that gave way waits behind it), or a row that gives way to it beyond the rows the
        urgent requests already waiting will take (a row still too young counts: it will be old enough)."""
        ahead = sum(r.options.n for r in self.pending if r.priority <= priority)
        if len(self.sequences) + ahead < self.max_sequences:
            return True
        rows = sum(len(r.live) for r in self.running if _may_give_way(r, priority))
        claimed = sum(r.options.n for r in self.pending if r.priority < PREEMPTIBLE_FROM)
        return rows > claimed

    def prepare(self, ticket: Ticket) -> Request | None:
        """Checks and prepares a request (chat template, tokens, compiled constraints); None, with the ticket's
        future holding the 400, for one the model cannot take. It touches no MLX state, so the engine has callers
        run it on their own threads: a big schema compiling never pauses the batch's streams."""
        try:
            with self._preparing:
                request = self._prepare(ticket)
            if request.adapter is None:
                request.from_disk = self.prompt_cache.load_from_disk(request.prompt)  # off the engine thread
            return request
        except ApiError as exc:
            ticket.future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a chat template refusing the messages: this request's error
            message = f"The model cannot take this request: {type(exc).__name__}: {exc}"
            ticket.future.set_exception(ApiError(400, message, code="invalid_request"))
        return None

    def submit(self, ticket: Ticket, request: Request | None = None) -> None:
        """The request joins the batch at the next step with room and memory for it; prepared here unless
        ``request`` is the prepared one."""
        request = request or self.prepare(ticket)
        if request is not None:
            request.order = next(self._orders)
            self._wait_in_line(request)

    def _wait_in_line(self, request: Request) -> None:
        """Puts the request among the pending ones by priority, then arrival (a request that gave way keeps its
        place)."""
        place = (request.priority, request.order)
        at = next((i for i, other in enumerate(self.pending) if (other.priority, other.order) > place), None)
        self.pending.insert(len(self.pending) if at is None else at, request)

    def step(self) -> None:
        """Admits what fits, drops cancelled requests, and generates one token for every running sequence."""
        self._step()
        self._settle_paused()

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        if not self.sequences:
            self._complete_finished()
            return
        prompt_responses, responses = self._turns.next(self._generator())
        for request in {
            id(self.requests[r.uid]): self.requests[r.uid] for r in prompt_responses if r.uid in self.requests
        }.values():
            request.ticket.emit(PROGRESS)
        for response in responses:
            sequence = self.sequences.get(response.uid)
            if sequence is not None:
                if not sequence.tokens and sequence.index == 0:
                    request = self.requests[response.uid]
                    log.debug(
                        "a priority-%d request's first token, %.0f ms after it was prepared, beside %d rows",
                        request.priority,
                        1000 * (time.perf_counter() - request.started),
                        len(self.sequences),
                    )
                    self._keep_prefill(request, response.uid)
                self._advance(self.requests[response.uid], sequence, response)
        self._complete_finished()

    def _keep_prefill(self, request: Request, uid: int) -> None:
        """Queues a long prompt's K/V for the disk tier as its prefill ends, when it computed part of it: a worker
        killed while the answer is written then still finds the prompt on disk (the finished request's prompt and
        answer are kept as well, and that file replaces this one)."""
        disk = self.prompt_cache.disk
        if (
            disk is None
            or request.cache_key != MODEL_KEY
            or len(request.prompt) < disk.min_tokens
            or request.cached_tokens >= len(request.prompt) - 1
        ):
            return
        found = self._generator().extract_cache([uid])
        if uid in found:
            cache, tokens = found[uid]
            self.prompt_cache.keep(list(tokens), cache, request.cache_key, memory=False)

    def _settle_paused(self) -> None:
        """Copies the K/V of the rows that gave way into arrays of their own once every running request has its
        first token (or ``SETTLE_AFTER_STEPS`` steps later): the request they gave way to gets it that much sooner
        (mlx-lm emits a new row's first token at its third step; the copy took about 45 ms of 32 rows' giving way
        on the 2-core machine). Until then the views hold what the batch held before they left."""
        if not self._unsettled and not self._unkept:
            return
        self._unsettled_steps += 1
        if self._unsettled_steps < SETTLE_AFTER_STEPS and not all(r.generating for r in self.running):
            return
        unsettled, self._unsettled, self._unsettled_steps = self._unsettled, [], 0
        unkept, self._unkept = self._unkept, []
        mx.eval(unsettled)
        for tokens, cache, key in unkept:
            self.prompt_cache.keep(tokens, cache, key, disk=False)

    def _complete_finished(self) -> None:
        for request in [r for r in self.running if r.finished]:
            self._complete(request)

    def fail_all(self, error: BaseException) -> None:
        """Ends every request with ``error`` and starts over with an empty batch (e.g. after running out of memory)."""
        for request in [*self.running, *self.pending]:
            if not request.ticket.future.done():
                request.ticket.future.set_exception(error)
        self.pending.clear()
        self.running.clear()
        self.requests.clear()
        self.sequences.clear()
        self._unsettled, self._unsettled_steps, self._unkept = [], 0, []
        generator, self.generator = self.generator, None
        if generator is not None:
            try:
                generator.close()
            except Exception:  # noqa: BLE001 - the device may still be in the state that failed the step
                log.warning("closing the failed batch generator failed too", exc_info=True)

    # --- preparing and admitting ----------------------------------------------------------------------------

    def _generator(self) -> BatchGenerator:
        if self.generator is None:
            self.generator = batch_generator(
                self.model,
                self.adapters,
                self.draft_tokens,
                completion_batch_size=self.max_sequences,
                prefill_batch_size=min(PREFILL_BATCH, self.max_sequences),
                prefill_step_size=self.prefill_step_size,
                stop_tokens=[[token] for token in self.tokenizer.eos_token_ids],
            )
        return self.generator

    def _prepare(self, ticket: Ticket) -> Request:
        options = options_from(ticket.payload, self.vocabulary_size)
        prompt = self.prompt_for(ticket.operation, ticket.payload)
        if not prompt:
            raise ApiError(400, "The prompt is empty", code="invalid_value", param="prompt")
        param = "prompt" if ticket.operation == "completion" else "messages"
        if len(prompt) + options.max_tokens > self.context_length:
            raise ApiError(
                400,
                f"This model's context length is {self.context_length} tokens; the {param} take {len(prompt)} "
                f"and max_tokens asks for {options.max_tokens}. Shorten the {param} or lower max_tokens.",
                code="context_length_exceeded",
                param=param,
            )
        kv_bytes = (len(prompt) + options.max_tokens) * options.n * self.kv_bytes_per_token
        if kv_bytes > self.kv_budget_bytes:
            raise ApiError(
                503,
                f"The request needs about {kv_bytes / 1e9:.2f} GB of KV cache ({options.n} x "
                f"{len(prompt) + options.max_tokens} tokens); this worker may use {self.kv_budget_bytes / 1e9:.2f} GB",
                code="insufficient_vram",
            )
        tools, grammar = self._constraints(ticket.payload)
        thinks_first = self.think is not None and self.tokenizer.decode(prompt[-16:]).rstrip().endswith(
            self.think.start
        )
        request = Request(ticket, options, prompt, 0, [], grammar=grammar, tools=tools, thinks_first=thinks_first)
        adapter_id = ticket.payload.get("adapter")
        if adapter_id is not None:
            if self.adapters is None:
                raise ApiError(400, "This model takes no LoRA adapters", code="invalid_value", param="model")
            adapter = request.adapter = self.adapters.hold(adapter_id)
            ticket.future.add_done_callback(lambda _future: self.adapters.release(adapter))
        return request

    def _rows(self, request: Request, count: int) -> dict[str, Any]:
        """The generator's per-row adapter slots of ``count`` rows of ``request``, where adapters are served."""
        if self.adapters is None:
            return {}
        return {"adapters": [request.adapter.slot if request.adapter is not None else BASE_SLOT] * count}

    def _constraints(self, payload: dict[str, Any]) -> tuple[ToolUse | None, str | None]:
        """The request's tool use and the grammar its answer must follow: a forced tool call's, else its
        ``response_format``'s; a 400 naming the field for one that cannot be enforced."""
        try:
            tools = tool_use(payload, self.tool_format, JSON_OPTIONS)
        except ValueError as exc:
            raise ApiError(
                400, f"tool_choice cannot be enforced: {exc}", code="invalid_value", param="tool_choice"
            ) from None
        forced = tools.grammar if tools is not None else None
        try:
            grammar = forced or grammar_for(payload)
            if grammar is not None:
                self.grammars.check(grammar)
        except GrammarError as exc:
            param = "tools" if forced else "response_format"
            raise ApiError(
                400, f"The JSON schema cannot be enforced: {exc}", code="invalid_value", param=param
            ) from None
        return tools, grammar

    def _kv_of(self, requests: list[Request]) -> int:
        """The batch's KV cache holding ``requests``: one left-padded tensor, so every row is as long as the
        longest (rounded up to mlx-lm's 256-token steps)."""
        if not requests:
            return 0
        rows = sum(r.options.n for r in requests)
        longest = max(len(r.prompt) + r.options.max_tokens for r in requests)
        return rows * (-(-longest // 256) * 256) * self.kv_bytes_per_token

    def _kv_with(self, candidate: Request) -> int:
        return self._kv_of([*self.running, candidate])

    def paused_bytes(self, besides: Request | None = None) -> int:
        """What the K/V kept by rows that gave way holds (``besides``'s own left out): it counts in the budget."""
        return sum(
            _cache_bytes(sequence.paused)
            for request in self.pending
            if request is not besides
            for sequence in request.sequences
            if sequence.paused is not None
        )

    def _fits(self, request: Request) -> bool:
        if not self.sequences:
            return True  # a request that fits alone always gets in once the batch drains
        rows = len(request.live) if request.generating else request.options.n
        memory = self._kv_with(request) + self.paused_bytes(besides=request)
        return len(self.sequences) + rows <= self.max_sequences and memory <= self.kv_budget_bytes

    def _prefill_backlog(self) -> int:
        """Rows inserted into the generator and not yet taken into its prefill (mlx-lm keeps them in order)."""
        return len(getattr(self.generator, "_unprocessed_sequences", ())) if self.generator is not None else 0

    def _urgent_present(self) -> bool:
        """Whether a request more urgent than background work runs or waits, or did within the linger."""
        now = time.monotonic()
        if any(r.priority < PREEMPTIBLE_FROM for r in (*self.running, *self.pending)):
            self._urgent_until = now + self.urgent_linger_seconds
            return True
        return now < self._urgent_until

    def _background_rows(self) -> int:
        return sum(len(r.live) for r in self.running if r.priority >= PREEMPTIBLE_FROM)

    def _make_way_for_urgent(self) -> None:
        """Background rows beyond ``background_rows_beside_interactive`` give way while an urgent request is present:
        first those without a token yet, then those with one (``preempt_for_urgent_after_tokens``), all at once."""
        if self._background_rows() <= self.background_rows_beside_interactive or not self._urgent_present():
            return
        self._take_back_unstarted()
        excess = self._background_rows() - self.background_rows_beside_interactive
        victims = []
        for victim in sorted(self._candidates(PREEMPTIBLE_FROM - 1), key=_arrival, reverse=True):
            if excess <= 0:
                break
            victims.append(victim)
            excess -= len(victim.live)
        if victims:
            self._give_way(victims)

    def _admit(self) -> None:
        self._make_way_for_urgent()
        while self.pending:
            request = self.pending[0]
            wave = PREFILL_BATCH if request.priority < PREEMPTIBLE_FROM else BACKGROUND_PREFILL_BATCH
            if self._prefill_backlog() >= min(wave, self.max_sequences):
                return  # a wave of new rows joins one prefill batch at a time: nothing urgent queues behind a wave
            if request.priority >= PREEMPTIBLE_FROM and self._urgent_present():
                rows = len(request.live) if request.generating else request.options.n
                if self._background_rows() + rows > self.background_rows_beside_interactive and self.sequences:
                    return  # what waits after it is background work too (the line is in priority order)
            if not self._fits(request):
                victim = max(self._candidates(request.priority), key=_arrival, default=None)
                if victim is None:
                    return  # waits for room or memory
                self._give_way([victim], request)
                continue
            self.pending.pop(0)
            if request.ticket.cancelled() and not request.generating:  # one mid-answer ends at its next step
                request.ticket.future.set_exception(_cancelled())
                continue
            try:
                self._insert(request)
            except BaseException as exc:
                if not request.ticket.future.done():
                    request.ticket.future.set_exception(exc)
                raise

    def _take_back_unstarted(self) -> None:
        """Background requests without a token yet go back in line, keeping their place, so that an urgent prompt
        does not wait behind their prefill; what the generator prefilled of them stays in the prompt cache."""
        unstarted = [r for r in self.running if r.priority >= PREEMPTIBLE_FROM and not r.generating]
        if not unstarted:
            return
        uids = [s.uid for r in unstarted for s in r.sequences]
        caches = self._generator().remove(uids, return_prompt_caches=True)  # one filter of the batch for them all
        for request in unstarted:
            cache, tokens = caches.get(request.sequences[0].uid, (None, None)) if request.sequences else (None, None)
            if cache is not None and tokens:
                self._unkept.append((list(tokens), cache, request.cache_key))
            for sequence in request.sequences:
                self._forget(sequence)
            request.sequences.clear()
            self.running.remove(request)
            self._wait_in_line(request)

    def _candidates(self, priority: int) -> list[Request]:
        """The running requests that may give way to one of ``priority`` now: of a priority that gives way to it,
        with their first token, and old enough (``preempt_after_tokens`` among background work,
        ``preempt_for_urgent_after_tokens`` for an urgent request)."""
        age = self.preempt_after_tokens if priority >= PREEMPTIBLE_FROM else self.preempt_for_urgent_after_tokens
        return [
            r
            for r in self.running
            if _may_give_way(r, priority)
            and r.generating
            and max(len(s.tokens) for s in r.sequences) - r.joined_at_tokens >= age
        ]

    def _give_way(self, requests: list[Request], to: Request | None = None) -> None:
        """Takes running requests out of the batch with the K/V of each of their sequences, and puts them back in
        line. A sequence's K/V is kept while it fits the budget beside the batch, the request they give way ``to``
        and the K/V kept already; otherwise it goes on later from the prompt cache or its whole text.

        They leave in one removal: each removal filters every layer's K/V of the whole batch, and the rows taken
        out are views of it, so one at a time would copy the whole batch's K/V once per request (32 lines giving
        way together cost about a second here). Every row of the generator has one token sampled ahead (the
        pipeline): it is dropped here and sampled again when the row goes on, so a keyed sampler steps back one
        key for it."""
        live = [(r, s) for r in requests for s in r.sequences if s.uid in self.sequences]
        caches = self._generator().remove([s.uid for _, s in live], return_prompt_caches=True)
        for request in requests:
            self.running.remove(request)
        room = self.kv_budget_bytes - self._kv_of([*self.running, *([to] if to else [])]) - self.paused_bytes()
        for request, sequence in live:
            cache, tokens = caches.get(sequence.uid, (None, None))
            if cache is not None and can_trim_prompt_cache(cache) and list(tokens) == request.prompt + sequence.tokens:
                if _cache_bytes(cache) <= room:  # else it goes on from the prompt cache or its whole text
                    sequence.paused = cache
                    room -= _cache_bytes(cache)
            if hasattr(sequence.sampler, "step_back"):
                sequence.sampler.step_back()
            self._forget(sequence)
        self._unsettled.extend(layer.state for _, s in live if s.paused is not None for layer in s.paused)
        for request in requests:
            request.preemptions += 1
            self.preemptions += 1
            log.debug(
                "a priority-%d request gave way after %d tokens",
                request.priority,
                max(len(s.tokens) for s in request.sequences),
            )
            self._wait_in_line(request)

    def _resume(self, request: Request) -> None:
        """Puts a request that gave way back into the batch: each sequence goes on from its kept K/V (or, without
        it, from the prompt cache or its whole text), with its own sampler and processors and what is left of
        ``max_tokens``."""
        live = request.live
        prompts, caches, known = [], [], []
        for sequence in live:
            tokens = request.prompt + sequence.tokens
            cache, sequence.paused = sequence.paused, None
            if cache is not None:
                trim_prompt_cache(cache, 1)  # the last token is fed again: at least one token is always computed
                prompts.append(tokens[-1:])
                caches.append(cache)
                known.append(tokens[:-1])
            else:
                hit = self.prompt_cache.fetch(tokens, key=request.cache_key)
                prompts.append(hit.remaining)
                caches.append(hit.cache)
                known.append(tokens[: hit.cached_tokens])
        uids = self._generator().insert(
            prompts,
            max_tokens=[request.options.max_tokens - len(s.tokens) for s in live],
            caches=caches,
            all_tokens=known,
            samplers=[s.sampler for s in live],
            logits_processors=[s.processors for s in live],
            stop_sequences=[self.stop_tokens] * len(live),
            **self._rows(request, len(live)),
        )
        self.running.append(request)
        request.joined_at_tokens = max(len(s.tokens) for s in request.sequences)
        for sequence, uid in zip(live, uids, strict=True):
            sequence.uid = uid
            self.sequences[uid] = sequence
            self.requests[uid] = request

    def _insert(self, request: Request) -> None:
        if request.generating:
            self._resume(request)
            return
        options, prompt, ticket = request.options, request.prompt, request.ticket
        hit = self.prompt_cache.fetch(prompt, request.from_disk, request.cache_key)
        request.from_disk = None
        request.cached_tokens, request.cache_tier = hit.cached_tokens, hit.tier
        caches = [hit.cache if index == 0 else copy.deepcopy(hit.cache) for index in range(options.n)]
        samplers = samplers_for(options)
        processors = [
            [
                *processors_for(options, len(prompt)),
                *ticket.logits_processors,
                *([self._mask(request)] if request.grammar else []),
            ]
            for _ in range(options.n)
        ]
        uids = self._generator().insert(
            [hit.remaining] * options.n,
            max_tokens=[options.max_tokens] * options.n,
            caches=caches if hit.cache is not None else None,
            all_tokens=[prompt[: hit.cached_tokens] for _ in range(options.n)],
            samplers=samplers,
            logits_processors=processors,
            stop_sequences=[self.stop_tokens] * options.n,
            **self._rows(request, options.n),
        )
        self.running.append(request)
        request.joined_at_tokens = 0
        log.debug(
            "a priority-%d request joins %.0f ms after it was prepared, beside %d rows (%d of %d prompt tokens cached)",
            request.priority,
            1000 * (time.perf_counter() - request.started),
            len(self.sequences),
            hit.cached_tokens,
            len(prompt),
        )
        for index, uid in enumerate(uids):
            sequence = Sequence(
                index,
                uid,
                self._detokenizer(ticket.operation),
                StopScanner(list(options.stop)),
                logprobs=[] if options.logprobs else None,
                sampler=samplers[index],
                processors=processors[index],
                thinking=ThinkSplitter(self.think, request.thinks_first) if self.think is not None else None,
                tools=(
                    ToolCallScanner(
                        request.tools.format, request.tools.parallel, llama_json=request.tools.format is LLAMA3
                    )
                    if request.tools is not None
                    else None
                ),
            )
            request.sequences.append(sequence)
            self.sequences[uid] = sequence
            self.requests[uid] = request

    def _mask(self, request: Request) -> Any:
        """The grammar's processor for one sequence; for a thinking model it applies after the reasoning."""
        gate = None
        if self.think is not None and self.think.end_tokens:
            start = self.think.start_tokens[0] if len(self.think.start_tokens) == 1 else None
            gate = ThinkGate(self.think.end_tokens, start, request.thinks_first, tuple(self.tokenizer.eos_token_ids))
        return self.grammars.processor(request.grammar, len(request.prompt), gate)

    def _detokenizer(self, operation: str) -> Any:
        """mlx-lm's streaming detokenizer drops the space the first token starts with, as a chat answer wants;
        a completion continues its prompt, so there that space is part of the text."""
        detokenizer = self.tokenizer.detokenizer
        if operation == "completion":
            if hasattr(detokenizer, "trim_space"):
                detokenizer.trim_space = False
            if hasattr(detokenizer, "_maybe_trim_space"):
                detokenizer._maybe_trim_space = lambda text: text
        return detokenizer

    # --- generating -----------------------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for request in list(self.running):
            check = request.ticket.checkpoint if request.generating else request.ticket.cancelled
            if check():
                for sequence in request.sequences:
                    if sequence.finish_reason is None:
                        sequence.finish_reason = "cancelled"
                self._remove(request)
                self._complete(request)
        for request in list(self.pending):
            if request.ticket.cancelled():
                self.pending.remove(request)
                if request.generating:  # it gave way mid-answer: it ends as a running one would
                    for sequence in request.live:
                        sequence.finish_reason, sequence.paused = "cancelled", None
                    self._complete(request)
                else:
                    request.ticket.future.set_exception(_cancelled())

    def _advance(self, request: Request, sequence: Sequence, response: Any) -> None:
        finish = response.finish_reason
        stopped_on_token = finish == "stop"  # an end-of-sequence token: not part of the answer
        entry = None
        if not stopped_on_token:
            sequence.tokens.append(response.token)
            sequence.detokenizer.add_token(response.token)
            if sequence.logprobs is not None:
                entry = token_logprobs(response.logprobs, response.token, request.options.top_logprobs, self._decode)
                sequence.logprobs.append(entry)
        if finish is not None:
            sequence.detokenizer.finalize()
        fresh = sequence.scanner.feed(sequence.detokenizer.last_segment)
        ending = finish is not None or sequence.scanner.stopped
        if ending:
            fresh += sequence.scanner.flush()  # what was held back as a possible stop sequence, and never became one
        calls: list[dict[str, Any]] = []
        reasoning = ""
        if sequence.thinking is not None:
            reasoning, fresh = sequence.thinking.feed(fresh)
            if ending:
                more_reasoning, rest = sequence.thinking.finish()
                reasoning, fresh = reasoning + more_reasoning, fresh + rest
        if sequence.tools is not None:
            fresh, calls = sequence.tools.feed(fresh)
            if ending:
                rest, more = sequence.tools.finish()
                fresh, calls = fresh + rest, calls + more
        if request.ticket.payload.get("stream") and (fresh or entry or calls or reasoning):
            delta: dict[str, Any] = {"type": "delta", "index": sequence.index, "content": fresh}
            if reasoning:
                delta["reasoning"] = reasoning
            if entry is not None:
                delta["logprobs"] = [entry]
            if calls:
                delta["tool_calls"] = calls
            request.ticket.emit(delta)
        if sequence.scanner.stopped and finish is None:
            sequence.finish_reason = "stop"
            self._remove_sequence(sequence, keep_cache=True)
            return
        if finish is not None:
            sequence.finish_reason = "stop" if (stopped_on_token or sequence.scanner.stopped) else finish
            self._forget(sequence)
            if sequence.index == 0 and response.prompt_cache is not None:
                self.prompt_cache.keep(response.all_tokens, response.prompt_cache, request.cache_key)

    def _decode(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _remove_sequence(self, sequence: Sequence, keep_cache: bool) -> None:
        caches = self._generator().remove([sequence.uid], return_prompt_caches=keep_cache and sequence.index == 0)
        if sequence.uid in caches:
            cache, tokens = caches[sequence.uid]
            self.prompt_cache.keep(tokens, cache, self.requests[sequence.uid].cache_key)
        self._forget(sequence)

    def _remove(self, request: Request) -> None:
        live = [s for s in request.sequences if s.uid in self.sequences]
        if live:
            self._generator().remove([s.uid for s in live])
        for sequence in live:
            self._forget(sequence)

    def _forget(self, sequence: Sequence) -> None:
        self.sequences.pop(sequence.uid, None)
        self.requests.pop(sequence.uid, None)

    def _complete(self, request: Request) -> None:
        for sequence in request.sequences:
            self._forget(sequence)
        if request in self.running:
            self.running.remove(request)
        if request.ticket.future.done():
            return
        self.completed += 1
        completion_tokens = sum(len(s.tokens) for s in request.sequences)
        first = request.sequences[0]
        choices = [_choice(s) for s in request.sequences]
        result = {
            "content": first.content,
            "finish_reason": first.finish_reason,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(request.prompt),
                "completion_tokens": completion_tokens,
                "total_tokens": len(request.prompt) + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": request.cached_tokens},
            },
            "cache_tier": request.cache_tier,
        }
        token = request_id_var.set(request.ticket.request_id)
        try:
            log.info(
                "%s finished in %.0f ms (%s)",
                request.ticket.operation,
                (time.perf_counter() - request.started) * 1000,
                first.finish_reason,
            )
        finally:
            request_id_var.reset(token)
        request.ticket.future.set_result(result)


def _choice(sequence: Sequence) -> dict[str, Any]:
    choice = {
        "index": sequence.index,
        "content": sequence.content,
        "finish_reason": sequence.finish_reason,
        "logprobs": {"content": sequence.logprobs} if sequence.logprobs is not None else None,
    }
    if sequence.thinking is not None and sequence.thinking.reasoning:
        choice["reasoning_content"] = sequence.thinking.reasoning
    if sequence.scanner.matched is not None:
        choice["stop_sequence"] = sequence.scanner.matched
    if sequence.tools is not None and sequence.tools.calls:
        choice["tool_calls"] = sequence.tools.calls
        choice["content"] = sequence.content.strip() or None
        if sequence.finish_reason == "stop":
            choice["finish_reason"] = "tool_calls"
    return choice


class _AdapterDraftingBatchGenerator(AdapterBatchGenerator, DraftingBatchGenerator):
    """Rows that each name their adapter, and draft."""


def batch_generator(model: Any, adapters: AdapterSet | None, draft_tokens: int, **options: Any) -> BatchGenerator:
    """mlx-lm's generator for the batch: its rows name their adapter where adapters are served (``models.adapters``)
    and draft where ``draft_tokens`` is above 0 (``models.speculative``)."""
    if adapters is not None and draft_tokens > 0:
        return _AdapterDraftingBatchGenerator(model, adapters.routing, draft_tokens=draft_tokens, **options)
    if adapters is not None:
        return AdapterBatchGenerator(model, adapters.routing, **options)
    if draft_tokens > 0:
        return DraftingBatchGenerator(model, draft_tokens=draft_tokens, **options)
    return BatchGenerator(model, **options)


def kv_bytes_per_token(model: Any) -> int:
    """KV-cache bytes one token takes in every layer (keys and values), from the model's own shapes and the bits of
    its cache (``models.kv_quantized``)."""
    args = model.args
    attention_heads = int(getattr(args, "num_attention_heads", 1))
    heads = int(getattr(args, "num_key_value_heads", 0) or attention_heads)
    head_dim = int(getattr(args, "head_dim", 0) or args.hidden_size // attention_heads)
    floats = [p.dtype.size for _, p in tree_flatten(model.parameters()) if mx.issubdtype(p.dtype, mx.floating)]
    per_value = bytes_per_value(kv_bits_of(model), max(floats, default=2))
    return math.ceil(2 * len(model.layers) * heads * head_dim * per_value)


def _cache_bytes(cache: list[Any]) -> int:
    return sum(part.nbytes for _, part in tree_flatten([layer.state for layer in cache]) if isinstance(part, mx.array))


def _arrival(request: Request) -> tuple[int, int]:
    """The order in which requests give way: the least urgent first, the latest to arrive among equals."""
    return (request.priority, request.order)


def _may_give_way(request: Request, priority: int) -> bool:
    """Whether a running request may leave the batch for one of ``priority``: it is less urgent, of a priority that
    gives way, and its rows can go on later unchanged (a grammar's matcher, or processors added by the caller, hold
    state of their own)."""
    return (
        request.priority >= PREEMPTIBLE_FROM
        and request.priority > priority
        and request.grammar is None
        and not request.ticket.logits_processors
    )


def _cancelled() -> Exception:
    return RequestCancelled("cancelled before it started")
