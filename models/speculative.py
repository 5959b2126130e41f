"""Speculative decoding inside the batch: each row drafts tokens from its own prompt and answer (prompt lookup),
the drafts of every row are checked in one forward pass of the whole batch, and each row keeps what the model
agrees with, its KV cache rolled back by what it rejects.

A greedy row keeps the longest draft prefix that matches the model's argmax, so its answer is the one it gets
without drafting. A sampled row keeps draft token ``d`` with probability ``p(d)`` and otherwise samples from ``p``
with ``d`` removed (speculative sampling's rule for a draft that is one token for sure), so its answers keep their
distribution; drawn in the Gumbel-max form with the row's own key per token, they are the very tokens it samples
without drafting. Rows with logits processors (penalties, ``logit_bias``, constrained decoding) never draft.

Drafting is adaptive: each row keeps an estimate of how often its draft tokens are right (from the drafts it had
checked, and from the drafts it only proposed, compared with the tokens that came), and a step checks drafts only
when the tokens it expects to gain are worth the longer forward pass, timed on this machine as the batch runs. A
row writing free text, whose drafts keep failing, stops drafting; every other row goes on in the same batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch
from mlx_lm.models.cache import BatchKVCache
from mlx_lm.sample_utils import greedy_sampler

NGRAM_SIZES = (4, 3, 2)
"""The n-grams a row looks up in its own text, longest first: the tokens that followed their latest occurrence
are the draft."""
PRIOR_ACCEPTANCE = 0.3
"""A new row's estimate of how often a draft token is right, before it has seen any."""
ACCEPTANCE_MEMORY = 0.9
"""Weight of the old estimate at each draft token seen: about the last ten tokens count."""
EXPLORE_MARGIN = 0.15
"""While the batch has not yet timed steps of different widths, a step checks drafts if its expected rate is within
this fraction of not drafting's, to time one."""


class PromptLookup:
    """Drafts for one row: the tokens that followed the latest earlier occurrence of its text's last n-gram."""

    def __init__(self) -> None:
        self.text: list[int] = []
        self.follows: dict[tuple[int, ...], int] = {}
        """Each n-gram seen with a token after it: where that token is (its latest occurrence)."""

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            end = len(self.text)
            for n in NGRAM_SIZES:
                if end >= n:
                    self.follows[tuple(self.text[end - n : end])] = end
            self.text.append(token)

    def draft(self, limit: int) -> list[int]:
        for n in NGRAM_SIZES:
            start = self.follows.get(tuple(self.text[-n:])) if len(self.text) >= n else None
            if start is not None:
                return self.text[start : start + limit]
        return []


@dataclass
class RowDrafts:
    """One row's drafting: its lookup, how often its draft tokens turn out right, and a draft it proposed but did
    not check (compared with the tokens that come instead, so the estimate stays true while it does not draft)."""

    lookup: PromptLookup = field(default_factory=PromptLookup)
    acceptance: float = PRIOR_ACCEPTANCE
    unchecked: list[int] = field(default_factory=list)
    skip: int = 0
    """Tokens still to come before the unchecked draft's first (the token sampled ahead when it was proposed)."""

    def learn(self, kept: int, offered: int) -> None:
        """``kept`` leading tokens of a draft of ``offered`` were right: each counts as a success, the first wrong
        one (if any) as a failure; what follows a wrong one says nothing."""
        for _ in range(kept):
            self._record(1.0)
        if kept < offered:
            self._record(0.0)

    def _record(self, outcome: float) -> None:
        self.acceptance = ACCEPTANCE_MEMORY * self.acceptance + (1 - ACCEPTANCE_MEMORY) * outcome

    def propose(self, draft: list[int]) -> None:
        """A draft this step does not check: it is scored against the tokens after the one sampled ahead."""
        if draft and not self.unchecked:
            self.unchecked, self.skip = list(draft), 1

    def observe(self, token: int) -> None:
        if not self.unchecked:
            return
        if self.skip:
            self.skip -= 1
            return
        if token == self.unchecked[0]:
            self._record(1.0)
            self.unchecked.pop(0)
        else:
            self._record(0.0)
            self.unchecked = []

    def expected_tokens(self, drafted: int) -> float:
        """Draft tokens expected to be kept of ``drafted`` (each is kept only if all before it were)."""
        return sum(self.acceptance**j for j in range(1, drafted + 1))


class StepCost:
    """Seconds a forward pass of ``n`` token positions takes on this machine, fitted as ``fixed + slope * n`` to
    the batch's own recent steps (least squares that forget old steps). Until its steps differ enough in width,
    the fixed part is taken to cost as much as ``PRIOR_FIXED_POSITIONS`` positions (about what a small model does on
    a CPU); the fit is held within ``FIXED_POSITIONS`` of that, so a noisy machine cannot make drafts look free."""

    MEMORY = 0.97
    PRIOR_FIXED_POSITIONS = 8.0
    FIXED_POSITIONS = (1.0, 64.0)

    def __init__(self) -> None:
        self.sums = [0.0] * 5  # weight, n, n*n, t, n*t

    def record(self, n: int, seconds: float) -> None:
        self.sums = [self.MEMORY * total for total in self.sums]
        for index, value in enumerate((1.0, n, n * n, seconds, n * seconds)):
            self.sums[index] += value

    @property
    def fitted(self) -> bool:
        """Whether recent steps differ enough in width to fit the line (else the prior's shape is used)."""
        w, sn, snn = self.sums[:3]
        return w > 0 and snn / w - (sn / w) ** 2 >= 1.0

    def __call__(self, n: int) -> float:
        w, sn, snn, st, snt = self.sums
        if w == 0:
            return self.PRIOR_FIXED_POSITIONS + n
        mean_n, mean_t = sn / w, st / w
        variance = snn / w - mean_n**2
        low, high = self.FIXED_POSITIONS
        if self.fitted:
            slope = (snt / w - mean_n * mean_t) / variance
            fixed = mean_t - slope * mean_n
            ratio = min(max(fixed / slope, low), high) if slope > 0 else high
        else:
            ratio = self.PRIOR_FIXED_POSITIONS
        slope = mean_t / (ratio + mean_n)
        return slope * (ratio + n)


def accept_greedy(draft: list[int], choices: list[int]) -> int:
    """Draft tokens kept by a greedy row: the longest prefix equal to the model's argmax at each position."""
    kept = 0
    while kept < len(draft) and draft[kept] == choices[kept]:
        kept += 1
    return kept


def accept_sampled(draft: list[int], logits: mx.array, noise: mx.array) -> tuple[int, int]:
    """Speculative sampling for a row whose draft is one token for sure, in its Gumbel-max form: the token at each
    position is the argmax of the sampling logits plus that position's Gumbel noise, and the draft is kept while it
    agrees. Draft token ``d`` is thus kept with probability ``p(d)``, and at the first one refused the token comes
    from ``p`` without ``d``, renormalised: the rule of speculative sampling, drawing the very tokens the row draws
    without drafting (the noise of each token comes from the row's own key for it).

    ``logits`` and ``noise`` cover the ``len(draft) + 1`` positions; returns the number kept and the next token."""
    choices = mx.argmax(logits + noise, axis=-1).tolist()
    kept = accept_greedy(draft, choices)
    return kept, choices[kept]


@dataclass
class DraftStats:
    """What drafting did in a batch, for the metrics and the benchmark."""

    steps: int = 0
    """Forward passes that checked drafts."""
    drafted: int = 0
    accepted: int = 0


class DraftingGenerationBatch(GenerationBatch):
    """mlx-lm's generation batch, with a step that checks the rows' drafts when that is worth it."""

    def _setup_drafting(self, draft_tokens: int) -> None:
        self.draft_tokens = draft_tokens
        """The most draft tokens one row offers in one step."""
        self.rows: dict[int, RowDrafts] = {}
        self.cost = StepCost()
        self.stats = DraftStats()

    def next(self) -> list[GenerationBatch.Response]:
        if not self.uids:
            return []
        started = time.perf_counter()
        rows = len(self.uids)
        upcoming, drafts = self._drafts()
        width = self._width(drafts)
        if width == 1:
            responses = super().next()
            for response in responses:
                row = self.rows.get(response.uid)
                if row is not None:
                    row.observe(response.token)
        else:
            responses = self._checked_step(upcoming, {i: d[: width - 1] for i, d in drafts.items() if d}, width)
        self.cost.record(rows * width, time.perf_counter() - started)
        return responses

    # --- choosing the drafts ------------------------------------------------------------------------------

    def _drafts(self) -> tuple[list[int], dict[int, list[int]]]:
        """The tokens sampled ahead, and each drafting row's draft (a sync on those tokens, skipped when no row
        may draft)."""
        eligible = [i for i in range(len(self.uids)) if self._may_draft(i)]
        if not eligible or not all(type(layer) is BatchKVCache for layer in kv_layers(self.prompt_cache)):
            return [], {}
        live = set(self.uids)
        for uid in [uid for uid in self.rows if uid not in live]:
            del self.rows[uid]
        upcoming = self._next_tokens.tolist()
        drafts: dict[int, list[int]] = {}
        for i in eligible:
            row = self.rows.setdefault(self.uids[i], RowDrafts())
            text = self.tokens[i] + [upcoming[i]]
            row.lookup.extend(text[len(row.lookup.text) :])
            room = min(self.draft_tokens, self.max_tokens[i] - self._num_tokens[i] - 1)
            draft = row.lookup.draft(room) if room > 0 else []
            if draft:
                drafts[i] = draft
        return upcoming, drafts

    def _may_draft(self, i: int) -> bool:
        sampler = self.samplers[i] if self.samplers else None
        return not self.logits_processors[i] and (
            sampler is None or sampler is greedy_sampler or hasattr(sampler, "noise_ahead")
        )

    def _width(self, drafts: dict[int, list[int]]) -> int:
        """Positions per row in this step's forward pass (1: no drafts checked), for the most tokens per second."""
        rows = len(self.uids)
        longest = max((len(d) for d in drafts.values()), default=0)
        plain_rate = rows / self.cost(rows)
        best, best_rate = 1, 0.0
        for width in range(2, longest + 2):
            gain = sum(self.rows[self.uids[i]].expected_tokens(min(len(d), width - 1)) for i, d in drafts.items())
            rate = (rows + gain) / self.cost(rows * width)
            if rate > best_rate:
                best, best_rate = width, rate
        # A wider step is measured now and then while the line is unknown, if it may cost little: else the fit
        # would never leave its prior.
        if best_rate < plain_rate * (1 - EXPLORE_MARGIN if not self.cost.fitted else 1):
            best = 1
        if best == 1:
            for i, draft in drafts.items():
                self.rows[self.uids[i]].propose(draft)
        return best

    # --- the checked step ---------------------------------------------------------------------------------

    def _checked_step(
        self, upcoming: list[int], drafts: dict[int, list[int]], width: int
    ) -> list[GenerationBatch.Response]:
        """One forward pass of ``width`` positions per row: the token sampled ahead, then the row's draft (padded).
        Every row emits the token sampled ahead and the draft tokens it keeps, and samples the next one."""
        rows = range(len(self.uids))
        inputs = [[upcoming[i], *drafts.get(i, [])] for i in rows]
        logits = self.model(mx.array([row + [0] * (width - len(row)) for row in inputs]), cache=self.prompt_cache)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        choices = mx.argmax(logprobs, axis=-1).tolist()
        emitted: list[list[int]] = []
        emitted_logprobs: list[list[mx.array]] = []
        following: list[int] = []
        following_logprobs: list[mx.array] = []
        for i in rows:
            draft = drafts.get(i, [])
            kept, token, row_logprobs = self._settle(i, draft, logits[i], logprobs[i], choices[i], upcoming[i])
            emitted.append([upcoming[i], *draft[:kept]])
            emitted_logprobs.append([self._next_logprobs[i], *[row_logprobs[j] for j in range(kept)]])
            following.append(token)
            following_logprobs.append(row_logprobs[kept])
            if self.uids[i] in self.rows:
                row = self.rows[self.uids[i]]
                row.unchecked = []
                if draft:
                    row.learn(kept, len(draft))
            self.stats.drafted += len(draft)
            self.stats.accepted += kept
        self.stats.steps += 1
        return self._emit(emitted, emitted_logprobs, following, following_logprobs, width)

    def _settle(
        self, i: int, draft: list[int], logits: mx.array, logprobs: mx.array, choices: list[int], upcoming: int
    ) -> tuple[int, int, mx.array]:
        """Row ``i``'s draft tokens kept, its next token and its log-probabilities at each position."""
        sampler = (self.samplers[i] if self.samplers else None) or self.fallback_sampler
        if not draft:
            processors = self.logits_processors[i] or ()
            if processors:  # as mlx-lm's own step applies them, to this row's one real position
                first = logits[:1]
                context = self._token_context[i].update_and_fetch(mx.array([upcoming]))
                for processor in processors:
                    first = processor(context, first)
                logprobs = first - mx.logsumexp(first, axis=-1, keepdims=True)
            elif sampler is greedy_sampler:
                return 0, choices[0], logprobs
            return 0, int(sampler(logprobs[:1]).item()), logprobs
        if sampler is greedy_sampler:
            kept = accept_greedy(draft, choices)
            return kept, choices[kept], logprobs
        positions = len(draft) + 1
        noise = sampler.noise_ahead(positions, logprobs.shape[-1])
        kept, token = accept_sampled(draft, sampler.logits_of(logprobs[:positions]), noise)
        sampler.take(kept + 1)
        return kept, token, logprobs

    def _emit(
        self,
        emitted: list[list[int]],
        emitted_logprobs: list[list[mx.array]],
        following: list[int],
        following_logprobs: list[mx.array],
        width: int,
    ) -> list[GenerationBatch.Response]:
        """Ends each row's emitted tokens at its first stop or its ``max_tokens``, rolls every row's KV cache back
        to what it emitted, and answers one response per emitted token, as mlx-lm's own step does for one."""
        responses: list[GenerationBatch.Response] = []
        keep: list[int] = []
        finishing: list[tuple[int, int, str]] = []
        for i, tokens in enumerate(emitted):
            finish_reason = None
            for count, token in enumerate(tokens, start=1):
                self._num_tokens[i] += 1
                if self._num_tokens[i] >= self.max_tokens[i]:
                    finish_reason = "length"
                if self._matchers[i].advance(token):
                    finish_reason = "stop"
                if finish_reason is not None:
                    del tokens[count:]
                    finishing.append((i, len(responses) + count - 1, finish_reason))
                    break
            else:
                keep.append(i)
            self.tokens[i].extend(tokens)
            responses.extend(
                self.Response(self.uids[i], token, emitted_logprobs[i][j], None, None, None)
                for j, token in enumerate(tokens)
            )
        roll_back(self.prompt_cache, [width - len(tokens) for tokens in emitted])
        for i, at, finish_reason in finishing:
            last = responses[at]
            last.finish_reason, last.all_tokens = finish_reason, self.tokens[i]
            last.prompt_cache = self.extract_cache(i)
        self._current_tokens = mx.array([tokens[0] for tokens in emitted], dtype=mx.uint32)
        self._current_logprobs = [logprobs[0] for logprobs in emitted_logprobs]
        self._next_tokens = mx.array(following, dtype=mx.uint32)
        self._next_logprobs = following_logprobs
        mx.async_eval(self._next_logprobs)
        if len(keep) < len(self.uids):
            self.filter(keep)
        return responses


def kv_layers(cache: list[Any]) -> list[Any]:
    """The entries of a cache list that hold K/V: all but those that say they hold none (``holds_kv = False``,
    as the rows' adapter tag does, ``models.adapters.AdapterTag``)."""
    return [layer for layer in cache if getattr(layer, "holds_kv", True)]


def roll_back(cache: list[Any], rejected: list[int]) -> None:
    """Takes each row's last ``rejected[i]`` positions out of a left-padded batch cache: the part every row rejects
    is trimmed, the rest of each row is moved to end where the others end (mlx-lm's own right-padding step, its
    rejected positions becoming left padding), and padding every row has is cut off the front; entries that hold
    no K/V are left as they are."""
    cache = kv_layers(cache)
    common = min(rejected)
    extra = [r - common for r in rejected]
    for layer in cache:
        layer.trim(common)
        if any(extra):
            layer.prepare(right_padding=extra)
            layer.finalize()
    if any(extra):
        shift = min(cache[0].left_padding.tolist())
        if shift > 0:
            for layer in cache:
                layer.keys = layer.keys[..., shift:, :]
                layer.values = layer.values[..., shift:, :]
                layer._idx -= shift
                layer.left_padding = layer.left_padding - shift


class DraftingBatchGenerator(BatchGenerator):
    """mlx-lm's ``BatchGenerator`` whose generation batch drafts (every prefilled row joins that one batch)."""

    def __init__(self, model: Any, *, draft_tokens: int, **options: Any) -> None:
        super().__init__(model, **options)
        batch = DraftingGenerationBatch.empty(self.model, self.sampler)
        batch._setup_drafting(draft_tokens)
        self._generation_batch = batch

    @property
    def draft_stats(self) -> DraftStats:
        return self._generation_batch.stats
