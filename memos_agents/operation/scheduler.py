"""MemScheduler: chooses which memories enter the context, within a token budget.

In this release the scheduler places plaintext memories in the prompt (MemOS §5.4, "plaintext
injection"); KV-cache (activation) and LoRA (parametric) injection arrive with those memory types.
"""

from __future__ import annotations

from collections.abc import Sequence

from memos_agents.models.tokens import TokenCounter
from memos_agents.schema import MemoryItem, ScoredMemory


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
        """Fill each result's ``tokens`` with the token count of its rendered line (in place)."""
        counts = self.counter.count_many([self.render(r.item) for r in results])
        for result, n in zip(results, counts, strict=True):
            result.tokens = n
        return list(results)

    def select(self, results: Sequence[ScoredMemory], token_budget: int | None) -> list[ScoredMemory]:
        """Keep results in rank order while they fit in ``token_budget`` tokens.

        A result that does not fit is skipped and later, smaller ones may still be taken (greedy
        knapsack in rank order). ``None`` keeps everything.

        Returns:
            The chosen results, with ``tokens`` filled.

        """
        counted = self.count(results)
        if token_budget is None:
            return counted
        chosen, used = [], 0
        for r in counted:
            if used + r.tokens <= token_budget:
                chosen.append(r)
                used += r.tokens
        return chosen

    def render_context(self, results: Sequence[ScoredMemory]) -> str:
        """Render chosen results as the memory block of a prompt, one line each, in rank order."""
        return "\n".join(self.render(r.item) for r in results)
