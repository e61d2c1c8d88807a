"""``memos bench lifecycle``: what a MemLifecycle maintenance pass costs, per 10,000 memories.

For each size ``N`` a fresh cube is filled (directly through the store, as trusted code, so the
fill is not timed) with ``N`` memories stored over the last 90 days, of which:

* 10 % have an ``expires_at`` that has passed (the expiry step moves them to ``expired``),
* 5 % are ``expired`` since more than the retention (the purge step deletes them),
* 5 % are working memories older than a day (consolidation makes them long-term),
* 40 % were used recently (recorded through ``RecordAccessOp``), the rest never: those unused for
  longer than the decay threshold allows are archived (ACT-R activation below -7.5: about 38 days).

Then, as the cube's owner, one pass with every step on (``max_items`` large enough for all) is
timed, and a second pass right after it, which finds nothing to do: its time is what an
incremental pass costs when nothing changed (each step reads only what is due, through indexes).
Figures: seconds per pass, memories moved, and seconds per 10,000 memories in the cube.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from memos_agents.bench import save_chart, write_json
from memos_agents.operation.lifecycle import LifecyclePolicy
from memos_agents.os import MemOS
from memos_agents.schema import LifecycleState, MemoryItem, MemoryType, utcnow

BENCH_OWNER = "lifecycle-bench"
#: The decay threshold of the timed policy.
THRESHOLD = -7.5


def _fill(mos: MemOS, cube_id: str, n: int, now: datetime) -> dict[str, int]:
    """Store ``n`` memories in ``cube_id`` as described in the module docstring; return how many of each kind."""
    kinds = {"due": 0, "purge": 0, "working": 0, "used": 0, "idle": 0}
    chunk: list[MemoryItem] = []
    used: dict[str, int] = {}
    for i in range(n):
        created = now - timedelta(days=90 * (i + 1) / n)
        fields: dict[str, Any] = {"text": f"memory number {i} about topic {i % 97}", "created_at": created}
        slot = i % 20
        if slot < 2:
            fields["expires_at"] = now - timedelta(hours=1)
            kinds["due"] += 1
        elif slot == 2:
            fields.update(status=LifecycleState.EXPIRED, expires_at=now - timedelta(days=31))
            kinds["purge"] += 1
        elif slot == 3:
            fields["memory_type"] = MemoryType.WORKING
            kinds["working"] += 1
        elif slot < 12:
            kinds["used"] += 1
        else:
            kinds["idle"] += 1
        item = MemoryItem(**fields)
        if 4 <= slot < 12:
            used[item.id] = 1 + i % 5
        chunk.append(item)
        if len(chunk) == 1000 or i == n - 1:
            mos.store.add(cube_id, chunk)
            chunk = []
    ids = list(used)
    for start in range(0, len(ids), 5000):
        part = {i: used[i] for i in ids[start : start + 5000]}
        mos.store.record_access(cube_id, part, now - timedelta(days=1))
    return kinds


def run_lifecycle_bench(mos_factory: Callable[[Path], MemOS], home: Path, sizes: Sequence[int]) -> dict[str, Any]:
    """Time a full and an idle maintenance pass at each size; return the results dict.

    Args:
        mos_factory: Builds the MemOS under test from a home directory.
        home: A scratch directory.
        sizes: Memories per cube, one fresh cube each.

    """
    now = utcnow()
    policy = LifecyclePolicy(
        purge_expired_after_days=30,
        promote_working_after_hours=24,
        archive_below_activation=THRESHOLD,
        max_items=100_000,
    )
    runs = []
    with mos_factory(home) as mos:
        mos.clock = lambda: now
        for n in sizes:
            cube_id = f"lifecycle-{n}"
            mos.create_cube(cube_id, BENCH_OWNER)
            t0 = time.perf_counter()
            kinds = _fill(mos, cube_id, n, now)
            fill_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            (first,) = mos.run_lifecycle(BENCH_OWNER, [cube_id], policy=policy)
            first_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            (second,) = mos.run_lifecycle(BENCH_OWNER, [cube_id], policy=policy)
            second_s = time.perf_counter() - t0
            moved = {
                "expired": len(first.expired),
                "purged": len(first.purged),
                "promoted": len(first.promoted),
                "archived": len(first.archived),
            }
            runs.append(
                {
                    "items": n,
                    "kinds": kinds,
                    "fill_seconds": round(fill_s, 3),
                    "pass_seconds": round(first_s, 3),
                    "pass_seconds_per_10k_items": round(first_s * 10_000 / n, 3),
                    "moved": moved,
                    "moved_per_s": round(sum(moved.values()) / first_s, 1) if first_s else None,
                    "idle_pass_seconds": round(second_s, 4),
                    "idle_pass_moved": len(second.expired + second.purged + second.promoted + second.archived),
                }
            )
            mos.delete_cube(cube_id, BENCH_OWNER)
        store = type(mos.store).__name__
    return {
        "runs": runs,
        "setup": {"store": store, "policy": policy.model_dump(), "threshold": THRESHOLD, "sizes": list(sizes)},
    }


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``lifecycle.png`` (when matplotlib is installed); return the paths."""
    out_dir, paths = write_json(results, out)
    lines = [
        "# MemLifecycle maintenance pass (memos bench lifecycle)",
        "",
        f"Store {results['setup']['store']}; policy: expiry, purge after 30 days, working memories promoted "
        f"after 24 h, archive below ACT-R activation {results['setup']['threshold']}.",
        "",
        "| memories | pass (s) | per 10k memories (s) | expired | purged | promoted | archived | moved/s | "
        "idle pass (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        m = r["moved"]
        lines.append(
            f"| {r['items']:,} | {r['pass_seconds']} | {r['pass_seconds_per_10k_items']} | {m['expired']:,} | "
            f"{m['purged']:,} | {m['promoted']:,} | {m['archived']:,} | {r['moved_per_s']} | "
            f"{r['idle_pass_seconds']} |"
        )
    paths[1].write_text("\n".join(lines) + "\n")

    def draw(ax: Any) -> None:
        xs = [r["items"] for r in results["runs"]]
        ax.plot(xs, [r["pass_seconds"] for r in results["runs"]], marker="o", label="pass with work to do")
        ax.plot(xs, [r["idle_pass_seconds"] for r in results["runs"]], marker="o", label="pass with nothing to do")
        ax.set_xlabel("memories in the cube")
        ax.set_ylabel("seconds")
        ax.set_title("memos bench lifecycle: one maintenance pass")
        ax.legend()

    if save_chart(out_dir / "lifecycle.png", draw):
        paths.append(out_dir / "lifecycle.png")
    return paths
