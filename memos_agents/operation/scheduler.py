"""MemScheduler: chooses which memories enter the context, within a token budget.

In this release the scheduler places plaintext memories in the prompt (MemOS §5.4, "plaintext
injection"); KV-cache (activation) and LoRA (parametric) injection arrive with those memory types.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    def render_context(self, results: Sequence[ScoredMemory]) -> str:
        """Render chosen results as the memory block of a prompt, one line each, in rank order."""
        return "\n".join(self.render(r.item) for r in results)
