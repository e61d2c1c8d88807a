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


def write_json(data: object, out: str | Path, stem: str = "results") -> tuple[Path, list[Path]]:
    """Create ``out`` and write ``data`` as ``<stem>.json`` (indented); return ``(out_dir, [json path, md path])``.

    The Markdown path is where the caller writes its table next.
    """
    import json

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(data, indent=2))
    return out_dir, paths


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
