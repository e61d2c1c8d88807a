"""Memory decay: ACT-R base-level activation from a memory's age, use count and last use.

ACT-R's base-level learning equation (Anderson & Lebiere, "The Atomic Components of Thought",
1998, ch. 4) gives a memory used ``n`` times, ``t_j`` seconds ago each, the activation

    B = ln( Σ_j t_j^-d ),  d = 0.5 (the decay rate ACT-R uses by default).

A store keeps only the count, the creation time and the last use, not every use, so this module
uses Petrov's hybrid approximation ("Computationally efficient approximation of the base-level
learning equation in ACT-R", ICCM 2006) with the most recent use exact (k = 1) and the others
spread evenly over the memory's life:

    B ≈ ln( t_1^-d + (n - 1) · (t_n^(1-d) - t_1^(1-d)) / ((1 - d) · (t_n - t_1)) )

where ``t_1`` is the time since the last use, ``t_n`` the time since the memory was stored
(storing counts as its first use), and ``n = 1 + access_count``. It reacts to all three signals:
older and unused memories sink, frequent use and recent use lift them.

Retrieval turns activation into ACT-R's recall probability ``P = 1 / (1 + exp(-(B - τ) / s))``
(threshold ``τ``, noise ``s``) and may weight a result's score by it
(:class:`~memos_agents.config.RetrievalConfig` ``decay_weight``); MemLifecycle archives memories
whose activation fell below a policy threshold. Times are in seconds, floored at one second.
"""

from __future__ import annotations

import math
from datetime import datetime

from memos_agents.schema import MemoryItem

__all__ = ["DEFAULT_DECAY", "activation", "idle_seconds_below", "item_activation", "recall_probability"]

#: ACT-R's default decay rate ``d``.
DEFAULT_DECAY = 0.5
#: Shortest time (seconds) the equation sees: a use "now" counts as one second ago.
MIN_SECONDS = 1.0


def activation(uses: int, age_s: float, since_last_s: float, decay: float = DEFAULT_DECAY) -> float:
    """Return the base-level activation ``B`` of a memory (Petrov 2006, k = 1; see the module docstring).

    Args:
        uses: Uses including the one that stored it (``1 + access_count``; at least 1).
        age_s: Seconds since it was stored (``t_n``).
        since_last_s: Seconds since its last use (``t_1``; its storing when never used).
        decay: ACT-R's ``d``, in (0, 1) (default 0.5).

    Returns:
        ``B`` (unbounded; about ``-d·ln(t)`` for a memory stored ``t`` seconds ago and never used).

    Raises:
        ValueError: ``uses < 1`` or ``decay`` outside (0, 1).

    """
    if uses < 1:
        raise ValueError("uses must be at least 1")
    if not 0.0 < decay < 1.0:
        raise ValueError("decay must be between 0 and 1")
    t1 = max(MIN_SECONDS, since_last_s)
    tn = max(t1, age_s)
    total = t1**-decay
    if uses > 1:
        if tn - t1 > 1e-9:
            total += (uses - 1) * (tn ** (1 - decay) - t1 ** (1 - decay)) / ((1 - decay) * (tn - t1))
        else:  # every use at the same instant: the limit of the mean is t1^-d
            total += (uses - 1) * t1**-decay
    return math.log(total)


def item_activation(item: MemoryItem, now: datetime, decay: float = DEFAULT_DECAY) -> float:
    """Return :func:`activation` of a stored memory at ``now`` (from ``created_at``, ``access_count``, last use)."""
    last = item.last_accessed_at or item.created_at
    return activation(
        1 + item.access_count,
        (now - item.created_at).total_seconds(),
        (now - last).total_seconds(),
        decay,
    )


def recall_probability(b: float, threshold: float, noise: float) -> float:
    """Return ACT-R's recall probability ``1 / (1 + exp(-(b - threshold) / noise))`` (0..1).

    Raises:
        ValueError: ``noise`` not positive.

    """
    if noise <= 0:
        raise ValueError("noise must be positive")
    z = (b - threshold) / noise
    if z < -700:  # exp would overflow
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def idle_seconds_below(threshold: float, decay: float = DEFAULT_DECAY) -> float:
    """Return how long (seconds) a memory must go unused before its activation can fall below ``threshold``.

    The last use alone contributes ``t_1^-d``, so ``B ≥ -d·ln(t_1)``: below ``threshold`` needs
    ``t_1 > exp(-threshold / d)``. MemLifecycle reads only memories idle that long (an index scan).
    """
    return math.exp(min(700.0, -threshold / decay))
