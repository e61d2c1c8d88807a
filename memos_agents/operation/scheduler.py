"""MemScheduler: chooses which memories enter the context, and how, within a token budget.

After MemScheduler in "MemOS: A Memory OS for AI System" (MemTensor 2025, §5.4): per request, a
memory enters the model as prompt text (plaintext injection), through an injected KV cache
(activation memory: :mod:`memos_agents.activation`), or through an active LoRA adapter
(parametric memory: :mod:`memos_agents.parametric`). :meth:`MemScheduler.plan` makes that choice
for ``MemOS.chat`` and returns it as a :class:`SchedulePlan`:

* **KV cache.** Of the fresh activation cubes of the cubes searched, the one whose memories cover
  most of the search results (ties: more tokens; at least one) is injected, if it fits
  ``kv_budget`` tokens.
  Its memories go into the system message in their fixed order (the cache covers exactly that
  text) and leave the text block; the other results stay prompt text within ``token_budget``.
  Several caches are never composed per request: composing means prefilling the later groups,
  which is the cost the cache exists to avoid (the activation worker composes at build time).
* **Stable prefix.** With an OpenAI-compatible endpoint (no local model to take a cache) the
  same memories go first, in the same order, so that the server's own prefix cache (vLLM's
  automatic prefix caching, llama.cpp's prompt cache) can reuse their prefill; the plan says so.
* **LoRA adapter.** A fresh adapter trained on the searched cube is activated when no KV cache
  is injected: a cache computed without the adapter holds other keys and values than the adapted
  model would (the adapter changes the attention projections), so the two never meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from memos_agents.models.tokens import TokenCounter
from memos_agents.schema import MemoryItem, MemoryOrigin, ScoredMemory


class MemScheduler:
    """Renders memories for a prompt and fits them into a token budget.

    Args:
        counter: Token counter (default: tiktoken ``cl100k_base`` from bundled files).

    """

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self.counter = counter or TokenCounter()

    @staticmethod
    def render(item: MemoryItem) -> str:
        """Render one memory as a prompt line: ``"[8 May 2023] Caroline: ..."``."""
        when = f"[{item.event_time:%-d %B %Y}] " if item.event_time is not None else ""
        return when + item.text

    def count(self, results: Sequence[ScoredMemory]) -> list[ScoredMemory]:
        """Fill each result's ``tokens``: its rendered text plus the newline that separates it (in place)."""
        counts = self.counter.count_many([self.render(r.item) for r in results])
        for result, n in zip(results, counts, strict=True):
            result.tokens = n + 1
        return list(results)

    @staticmethod
    def deduplicate(results: Sequence[ScoredMemory]) -> list[ScoredMemory]:
        """Drop turns already shown by a better-ranked result, and nothing else.

        A turn is identified by its cube, its session, its message id and its text: message ids are
        often reused (two sessions both numbering their messages "1", "2", ...), so an id alone
        never hides a result. Walking results in rank order, a window item (``origin=turns`` with
        one text line per source message: ``turns`` equal to the number of message ids and of
        lines) loses the lines already shown (``trimmed=True``; the stored item is
        unchanged) and is dropped only when every line was shown. Any other item (an extracted fact,
        a merged item) is dropped only when each of its text lines was already shown verbatim in
        the same cube.
        """
        shown_turns: set[tuple[str, str, str, str]] = set()  # (cube, session, message id, line)
        shown_lines: set[tuple[str, str]] = set()  # (cube, line)
        out: list[ScoredMemory] = []
        for r in results:
            item = r.item
            ids = item.sources.message_ids
            lines = item.text.split("\n")
            if item.origin == MemoryOrigin.TURNS and ids and item.turns == len(ids) == len(lines):
                session = item.sources.session_ids[0] if len(item.sources.session_ids) == 1 else ""
                keys = [(item.cube_id, session, mid, line) for mid, line in zip(ids, lines, strict=True)]
                keep = [n for n, k in enumerate(keys) if k not in shown_turns]
                if not keep:
                    continue
                if len(keep) < len(ids):
                    trimmed = item.model_copy(
                        update={
                            "text": "\n".join(lines[n] for n in keep),
                            "turns": len(keep),
                            "sources": item.sources.model_copy(update={"message_ids": [ids[n] for n in keep]}),
                        }
                    )
                    r = r.model_copy(update={"item": trimmed, "trimmed": True})
                shown_turns.update(keys)
            elif all((item.cube_id, line) in shown_lines for line in lines):
                continue
            shown_lines.update((item.cube_id, line) for line in lines)
            out.append(r)
        return out

    def fit(
        self, results: Sequence[ScoredMemory], *, top_k: int | None = None, token_budget: int | None = None
    ) -> list[ScoredMemory]:
        """Cut already deduplicated results to ``top_k`` and fit them in ``token_budget`` tokens.

        Results are taken in rank order while they fit in ``token_budget`` tokens; one that does
        not fit is skipped and later, smaller ones may still be taken. ``None`` means no limit.

        Returns:
            The chosen results, with ``tokens`` filled.

        """
        counted = self.count(list(results)[:top_k])
        if token_budget is None:
            return counted
        kept, used = [], 0
        for r in counted:
            if used + r.tokens <= token_budget:
                kept.append(r)
                used += r.tokens
        return kept

    def plan(
        self,
        results: Sequence[ScoredMemory],
        candidates: Sequence[Any] = (),
        adapter_cube_id: str | None = None,
        *,
        kv_budget: int | None = None,
    ) -> SchedulePlan:
        """Decide how each memory enters the model: see :func:`make_plan`."""
        return make_plan(results, candidates, adapter_cube_id, kv_budget=kv_budget)

    def render_context(self, results: Sequence[ScoredMemory]) -> str:
        """Render chosen results as the memory block of a prompt, one line each, in rank order."""
        return "\n".join(self.render(r.item) for r in results)


class SchedulePlan(BaseModel):
    """How one request's memories enter the model (:meth:`MemScheduler.plan`).

    Attributes:
        text: Memories that enter as prompt text, in rank order (fitted to the token budget).
        kv_cube_id: The activation cube whose KV cache is injected (None: none).
        kv_memory_ids: The memories that enter through it (or, with ``stable_prefix``, as the stable prefix).
        kv_tokens: Tokens the injected cache covers (0: none).
        stable_prefix: The stable memories go first in the prompt as text, for a server's prefix cache.
        adapter_cube_id: The parametric cube whose LoRA adapter is active (None: the base model).
        notes: Why: what was chosen or passed over, in words.

    """

    text: list[ScoredMemory] = Field(default_factory=list)
    kv_cube_id: str | None = None
    kv_memory_ids: list[str] = Field(default_factory=list)
    kv_tokens: int = 0
    stable_prefix: bool = False
    adapter_cube_id: str | None = None
    notes: list[str] = Field(default_factory=list)


def _plan_kv(
    results: Sequence[ScoredMemory], candidates: Sequence[Any], kv_budget: int | None
) -> tuple[Any | None, list[str]]:
    """Pick the candidate covering most results (ties: more tokens) that fits ``kv_budget``."""
    notes = []
    wanted = {r.item.id for r in results}
    best, best_key = None, (-1, -1)
    for c in candidates:
        tokens = c.tokens
        if kv_budget is not None and tokens > kv_budget:
            notes.append(f"{c.cube_id}: {tokens} tokens exceed the KV budget of {kv_budget}")
            continue
        key = (len(wanted & {i.id for i in c.items}), tokens)
        if key[0] == 0:
            notes.append(f"{c.cube_id}: none of its memories is among the results; not used")
            continue
        if key > best_key:
            best, best_key = c, key
    return best, notes


def make_plan(
    results: Sequence[ScoredMemory],
    candidates: Sequence[Any] = (),
    adapter_cube_id: str | None = None,
    *,
    kv_budget: int | None = None,
) -> SchedulePlan:
    """Decide, for one request, which memories go as text, through a KV cache, and whether an adapter is on.

    Args:
        results: The search results fitted to the text token budget, in rank order.
        candidates: Fresh activation cubes (``memos_agents.activation.memory.UsableKV``: ``cube_id``,
            ``tokens``, ``prefix_only``, ``items``); one that covers none of ``results`` is not used.
        adapter_cube_id: A fresh parametric cube of the searched cubes (None: none).
        kv_budget: The most tokens an injected cache may cover (None: no limit).

    Returns:
        The :class:`SchedulePlan` (see the module docstring for the rules).

    """
    chosen, notes = _plan_kv(results, candidates, kv_budget)
    out = SchedulePlan(text=list(results), notes=notes)
    if chosen is not None:
        covered = {i.id for i in chosen.items}
        out.text = [r for r in results if r.item.id not in covered]
        out.kv_memory_ids = [i.id for i in chosen.items]
        if not chosen.prefix_only:
            out.kv_cube_id = chosen.cube_id
            out.kv_tokens = chosen.tokens
            out.notes.append(
                f"{len(covered)} memories through the KV cache of {chosen.cube_id} ({out.kv_tokens} tokens); "
                f"{len(out.text)} as prompt text"
            )
        else:
            out.stable_prefix = True
            out.notes.append(
                f"{len(covered)} stable memories of {chosen.cube_id} first in the prompt, in a fixed order, "
                "so that the server's prefix cache can reuse their prefill"
            )
        if adapter_cube_id is not None:
            out.notes.append(f"adapter {adapter_cube_id} not activated: a KV cache is injected")
    elif adapter_cube_id is not None:
        out.adapter_cube_id = adapter_cube_id
        out.notes.append(f"LoRA adapter of {adapter_cube_id} active; {len(out.text)} memories as prompt text")
    return out
