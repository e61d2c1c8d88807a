"""Benchmarks (``memos bench ...``): results are written as files, never asserted in unit tests."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values`` by linear interpolation (numpy's default); 0.0 when empty."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def save_chart(path: Path, draw: Callable[[Any], None], *, size: tuple[float, float] = (6.0, 4.0)) -> bool:
    """Draw one chart with ``draw(axes)`` and save it as a PNG at ``path`` (120 dpi).

    Returns:
        False when matplotlib is not installed (nothing written), else True.

    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return True
