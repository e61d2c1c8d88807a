"""``memos bench audit``: what the audit log costs and how fast its chains verify.

On a fresh store with one cube, as an ordinary caller (the cube's owner):

1. **Overhead per batch**: ``per_batch`` one-op batches (``CountOp`` on a small cube) with the
   audit log off and then on, in the same run on the same store kind; the difference per batch is
   what one audited read costs (its entry is written in a short transaction of its own).
2. **Append rate**: entries per second with one entry per batch (the rate above), and with
   ``ops_per_batch`` ops per batch (their entries written together).
3. **Verify**: the chain is grown to each of ``sizes`` entries (in batches of ``ops_per_batch``)
   and ``verify_audit`` is timed at each; the result is reported per 100,000 entries. A query
   by actor (``list_audit(actor=..., limit=100)``) is timed at the largest size.

Results: ``results.json``, ``results.md`` and ``audit.png`` (verify seconds against chain length)
under ``--out``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memos_agents.bench import percentile, save_chart, write_json
from memos_agents.cube import CubeHeader, StorageProfile
from memos_agents.plaintext.stores.base import BaseMemoryStore, CallContext, CountOp
from memos_agents.schema import MemoryItem

CUBE = "audit-bench"
OWNER = "bench-owner"


def _timed_batches(store: BaseMemoryStore, n: int, ops_per_batch: int, ctx: CallContext) -> list[float]:
    """Run ``n`` batches of ``ops_per_batch`` CountOps; return each batch's milliseconds."""
    ops = [CountOp(CUBE) for _ in range(ops_per_batch)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        store.batch(ops, ctx=ctx)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run_audit_bench(
    store_factory: Callable[[bool], BaseMemoryStore],
    *,
    per_batch: int = 2000,
    ops_per_batch: int = 100,
    sizes: Sequence[int] = (10_000, 50_000, 100_000),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark on stores made by ``store_factory(audit)``; return the results dict.

    Args:
        store_factory: Returns a set-up, empty store with the audit log on (True) or off (False).
        per_batch: One-op batches timed with the log off and on (default 2,000).
        ops_per_batch: Ops per batch for the bulk append rate and for growing the chain (100).
        sizes: Chain lengths at which verification is timed (ascending).
        progress: Called as ``progress(phase, done, total)``.

    """
    ctx = CallContext.of(OWNER)
    header = CubeHeader(cube_id=CUBE, owner_id=OWNER, storage=StorageProfile(embedding_dim=4))
    items = [MemoryItem(text=f"bench memory {n}", embedding=[1.0, 0.0, 0.0, float(n)]) for n in range(20)]
    latency: dict[str, list[float]] = {}
    for audit in (False, True):
        store = store_factory(audit)
        try:
            store.create_cube(header)
            store.add(CUBE, items)
            _timed_batches(store, 50, 1, ctx)  # warm-up
            latency["on" if audit else "off"] = _timed_batches(store, per_batch, 1, ctx)
            if progress:
                progress("per-batch", 1 if not audit else 2, 2)
            if not audit:
                continue
            t0 = time.perf_counter()
            bulk_batches = max(1, per_batch // ops_per_batch)
            _timed_batches(store, bulk_batches, ops_per_batch, ctx)
            bulk_s = time.perf_counter() - t0
            verify: list[dict[str, Any]] = []
            for size in sorted(sizes):
                have = store.verify_audit(CUBE).checked  # each verify appends its own entry
                while have < size:
                    n = min(ops_per_batch, size - have)
                    store.batch([CountOp(CUBE) for _ in range(n)], ctx=ctx)
                    have += n
                    if progress:
                        progress("grow", have, max(sizes))
                t0 = time.perf_counter()
                result = store.verify_audit(CUBE, ctx=ctx)
                seconds = time.perf_counter() - t0
                if not result.ok:
                    raise AssertionError(f"the benchmark's own chain does not verify: {result.problems[:3]}")
                verify.append({"entries": result.checked, "seconds": round(seconds, 3)})
            t0 = time.perf_counter()
            store.list_audit(CUBE, actor=OWNER, after_seq=max(sizes) // 2, limit=100, ctx=ctx)
            query_ms = (time.perf_counter() - t0) * 1000
        finally:
            store.close()
    reads = getattr(store, "audit_reads", "sync")  # the embedded store queues read entries by default
    off, on = latency["off"], latency["on"]
    per_100k = [v["seconds"] * 100_000 / v["entries"] for v in verify]
    return {
        "store": type(store).__name__,
        "per_batch_ms": {
            "off": {"p50": round(percentile(off, 0.5), 4), "mean": round(statistics.fmean(off), 4)},
            "on": {"p50": round(percentile(on, 0.5), 4), "mean": round(statistics.fmean(on), 4)},
            "overhead_p50": round(percentile(on, 0.5) - percentile(off, 0.5), 4),
        },
        "entries_per_s": {
            "one_per_batch": round(1000 / statistics.fmean(on), 1),
            f"{ops_per_batch}_per_batch": round(bulk_batches * ops_per_batch / bulk_s, 1),
        },
        "verify": verify,
        "verify_seconds_per_100k": round(statistics.fmean(per_100k), 3),
        "query_by_actor_ms": round(query_ms, 2),
        "setup": {"per_batch": per_batch, "ops_per_batch": ops_per_batch, "sizes": list(sizes), "audit_reads": reads},
    }


def write_results(results: dict[str, dict[str, Any]], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``audit.png`` (when matplotlib is installed); return the paths."""
    out_dir, paths = write_json(results, out)
    lines = [
        "# Audit log (memos bench audit)",
        "",
        "| store | one-op batch p50, log off / on (ms) | overhead p50 (ms) | entries/s, 1 per batch | "
        "entries/s, bulk | verify s per 100k | query by actor (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rate = r["entries_per_s"]
        bulk = next(v for k, v in rate.items() if k != "one_per_batch")
        lines.append(
            f"| {name} | {r['per_batch_ms']['off']['p50']} / {r['per_batch_ms']['on']['p50']} | "
            f"{r['per_batch_ms']['overhead_p50']} | {rate['one_per_batch']} | {bulk} | "
            f"{r['verify_seconds_per_100k']} | {r['query_by_actor_ms']} |"
        )
    lines += ["", "Verification time by chain length:", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{v['entries']:,} entries {v['seconds']} s" for v in r["verify"]))
    paths[1].write_text("\n".join(lines) + "\n")

    def draw(ax: Any) -> None:
        for name, r in results.items():
            ax.plot([v["entries"] for v in r["verify"]], [v["seconds"] for v in r["verify"]], marker="o", label=name)
        ax.set_xlabel("entries in the chain")
        ax.set_ylabel("audit verify (s)")
        ax.set_title("memos bench audit: verifying one chain")
        ax.legend()

    if save_chart(out_dir / "audit.png", draw):
        paths.append(out_dir / "audit.png")
    return paths
