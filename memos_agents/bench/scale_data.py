"""Synthetic but realistic memories for ``memos bench scale``: LoCoMo turns recombined.

Each memory is ``"<speaker>: <clause of one turn> <clause of another turn>"`` from the LoCoMo
conversations, with the speakers and clauses drawn by a seeded generator, so any number of
memories can be made with LoCoMo's vocabulary, lengths and term frequencies (unlike random
words), deterministically. The LoCoMo questions serve as queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from memos_agents.bench.locomo_data import load_locomo

_CLAUSE = re.compile(r"(?<=[.!?,;])\s+")


@dataclass(frozen=True)
class ScaleCorpus:
    """Clauses, speakers and questions drawn from a LoCoMo file."""

    clauses: list[str]
    speakers: list[str]
    questions: list[str]

    @classmethod
    def from_locomo(cls, path: str | Path) -> ScaleCorpus:
        """Split every LoCoMo turn into clauses (at sentence and comma boundaries, 3+ words each).

        Raises:
            InvalidInputError: The file is missing or not LoCoMo-shaped.

        """
        convs = load_locomo(path)
        clauses: list[str] = []
        for conv in convs:
            for session in conv.sessions:
                for turn in session.turns:
                    clauses += [c.strip() for c in _CLAUSE.split(turn.content) if len(c.split()) >= 3]
        speakers = sorted({s for conv in convs for s in conv.speakers})
        questions = [q.question for conv in convs for q in conv.qa]
        return cls(clauses=list(dict.fromkeys(clauses)), speakers=speakers, questions=questions)

    def memories(self, start: int, count: int, seed: int = 0) -> Iterator[tuple[str, str, datetime]]:
        """Yield ``(text, speaker, event_time)`` of memories ``start .. start + count - 1``.

        The ``n``-th memory depends only on ``(seed, n)``, so a cube grown in steps holds the same
        memories as one built at once. Event times advance by an hour per memory from 2023-01-01.
        """
        base = datetime(2023, 1, 1, tzinfo=UTC)
        for n in range(start, start + count):
            rng = np.random.default_rng((seed, n))
            a, b = rng.integers(0, len(self.clauses), size=2)
            speaker = self.speakers[int(rng.integers(0, len(self.speakers)))]
            yield f"{speaker}: {self.clauses[a]} {self.clauses[b]}", speaker, base + timedelta(hours=n)
