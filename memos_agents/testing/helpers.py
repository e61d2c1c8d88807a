"""Helpers shared by the sections of the store conformance suite.

Used by :mod:`~memos_agents.testing.conformance` and :mod:`~memos_agents.testing.adversarial`:
plain values and builders with no pytest dependency: the embedding dimension every suite cube
uses, a reference time, unit vectors and memory items pointing at chosen axes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from memos_agents.schema import MemoryItem

__all__ = ["DIM", "T0", "item", "vec"]

#: Embedding dimension of every cube the suite creates.
DIM = 8
#: A fixed, timezone-aware reference time.
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def vec(*hot: int) -> list[float]:
    """Return a unit vector of dimension :data:`DIM` with ones at the given positions."""
    v = np.zeros(DIM, dtype=np.float32)
    for h in hot:
        v[h] = 1.0
    return [float(x) for x in v / np.linalg.norm(v)]


def item(text: str, *hot: int, **kw: object) -> MemoryItem:
    """Return a memory item with an embedding pointing at ``hot`` (default: axis 0)."""
    return MemoryItem(text=text, embedding=vec(*(hot or (0,))), **kw)  # type: ignore[arg-type]
