"""``memos bench locomo``: evidence recall, context size, search latency and ingestion cost on LoCoMo.

Protocol (see ``shared/data/README.md``): one cube per conversation, fast-mode ingestion of every
turn (one ``add`` per session), then each question of categories 1-4 with non-empty evidence is
searched. For a question with evidence set E and results R, recall = |E ∩ ⋃ src(R_i)| / |E|, where
src are the dia_ids an item came from.

* ``recall_at[k]``: over the top-k results.
* ``recall_within_tokens[B]``: over what ``search(token_budget=B)`` returns: results in rank order,
  each counted as its rendered prompt text (date + text, tiktoken cl100k_base) plus one separator
  token, taken while they fit in B tokens; one that does not fit is skipped and smaller later ones
  may still be taken.
* ``mean_context_tokens_at[k]``: mean rendered tokens of the top-k.
* ``search_ms``: wall time of one ``MemOS.search`` (top_k = largest k) per question, after warm-up.
* ``ingest``: wall time of all ``add`` calls, and ``embed_only_seconds``, the embedder alone on the
  same texts in the same batches, measured in the same run, for the ratio. Because two timings of
  the same embedding work vary by a few percent, ``non_embedding_seconds`` also gives the time of
  ``add`` spent outside the embedder (reading, tree building, storing), measured directly.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from memos_agents.bench import percentile, write_json
from memos_agents.bench.locomo_data import STANDARD_CATEGORIES, Conversation, evidence_recall, load_locomo
from memos_agents.os import MemOS
from memos_agents.schema import utcnow

BENCH_USER = "bench"


class EmbedTimer:
    """Times every call of an embedder's ``embed`` while active (as ``bench/locomo.py`` does).

    The instance attribute ``embed`` is replaced, so every holder of the embedder object (the
    reader of any MemOS built with it, the bench's own calls) is timed. ``seconds`` only grows:
    callers take differences.

    Args:
        embedder: The embedder object to time.

    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.seconds = 0.0

    def __enter__(self) -> EmbedTimer:
        inner = type(self.embedder).embed

        def timed(texts: Sequence[str]) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(self.embedder, texts)
            finally:
                self.seconds += time.perf_counter() - t0

        self.embedder.embed = timed
        return self

    def __exit__(self, *exc: object) -> None:
        del self.embedder.embed


def ingest_conversation(
    mos: MemOS,
    conv: Conversation,
    cube_id: str,
    on_session: Callable[[int], None] | None = None,
    *,
    redaction: str | None = None,
    simulated_time: bool = False,
) -> float:
    """Create ``cube_id`` (replacing an old one; ``redaction``: its policy mode) and add every session.

    With ``simulated_time`` each session is stored at its own date (``mos.clock`` set to it), as
    an agent that lived through the conversation would have stored it: memories age (decay) from then.

    Returns the seconds spent in ``add``.
    """
    if any(h.cube_id == cube_id for h in mos.list_cubes(BENCH_USER)):
        mos.delete_cube(cube_id, BENCH_USER)
    mos.create_cube(
        cube_id,
        BENCH_USER,
        source=f"locomo:{conv.sample_id}",
        description=" & ".join(conv.speakers),
        redaction=redaction,
    )
    spent = 0.0
    for session in conv.sessions:
        if simulated_time and session.time is not None:  # stored when the session took place
            mos.clock = _fixed(session.time)
        t0 = time.perf_counter()
        mos.add(session.turns, BENCH_USER, cube_id)
        spent += time.perf_counter() - t0
        if on_session is not None:
            on_session(len(session.turns))
    return spent


def run_locomo_bench(
    data: str | Path,
    *,
    ks: Sequence[int] = (5, 10, 20),
    budgets: Sequence[int] = (1000,),
    mos_factory: Callable[[Path], MemOS],
    home: str | Path | None = None,
    conversations: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    redaction: str | None = None,
    simulated_time: bool = False,
) -> dict[str, Any]:
    """Run the benchmark and return the results dict (see the module docstring).

    Args:
        data: LoCoMo JSON file.
        ks: Cut-offs for recall@k (default 5, 10, 20).
        budgets: Token budgets for recall within tokens (default 1000).
        mos_factory: Builds the MemOS under test from a home directory (store and embedder choice).
        home: Home directory (default: a temporary one, removed afterwards).
        conversations: Only the first N conversations (default: all).
        progress: Called as ``progress(phase, done, total)``.
        redaction: The PII redaction mode of the benchmark's cubes (None: the default, off).
        simulated_time: Store each session at its date and ask each conversation's questions a
            day after its last session (``mos.clock``), so that memories have LoCoMo's real ages
            (months) when decay weighs them. Uses found by the questions are recorded as they
            would be in use (with decay on, ``MemOS.flush_access`` after each question, outside
            the timed search, so that the next ranking sees them).

    """
    convs = load_locomo(data)[: conversations or None]
    ks = sorted(set(ks))
    with tempfile.TemporaryDirectory(prefix="memos-bench-") as tmp:
        mos = mos_factory(Path(home) if home else Path(tmp))
        with mos:
            mos.embedder.embed(["warm-up"])  # load the model outside every timed region
            total_turns = sum(c.turn_count for c in convs)
            done = 0
            ingest_s = 0.0
            inside = EmbedTimer(mos.embedder)
            for conv in convs:

                def tick(n: int) -> None:
                    nonlocal done
                    done += n
                    if progress:
                        progress("ingest", done, total_turns)

                with inside:
                    ingest_s += ingest_conversation(
                        mos, conv, conv.sample_id, tick, redaction=redaction, simulated_time=simulated_time
                    )
            # MemVault after ingestion: merges update items, and every update keeps the version it ends
            stored = [i for conv in convs for i in mos.store.list_items(conv.sample_id)]
            vault = {"items": len(stored), "kept_versions": sum(i.version - 1 for i in stored)}
            if hasattr(mos.store, "conn"):  # the embedded store: the table's own figures
                n, size = mos.store.conn.execute(
                    "SELECT count(*), coalesce(sum(length(item)), 0) FROM item_versions"
                ).fetchone()
                vault.update(version_rows=int(n), version_bytes=int(size))
            embed_s = 0.0
            for conv in convs:
                for session in conv.sessions:
                    texts = mos.reader.embedding_texts(session.turns)
                    t0 = time.perf_counter()
                    mos.embedder.embed(texts)
                    embed_s += time.perf_counter() - t0
            questions = [(c, q) for c in convs for q in c.qa if q.category in STANDARD_CATEGORIES and q.evidence]
            for conv, q in questions[:10]:  # warm-up
                mos.search(q.question, BENCH_USER, [conv.sample_id], top_k=max(ks))
            rows = []
            latencies = []
            asked_at = {c.sample_id: _day_after(c) for c in convs} if simulated_time else {}
            for n, (conv, q) in enumerate(questions):
                if conv.sample_id in asked_at:
                    mos.clock = _fixed(asked_at[conv.sample_id])
                t0 = time.perf_counter()
                hits = mos.search(q.question, BENCH_USER, [conv.sample_id], top_k=max(ks))
                latencies.append((time.perf_counter() - t0) * 1000)
                row: dict[str, Any] = {"category": q.category}
                for k in ks:
                    row[f"r@{k}"] = evidence_recall(q.evidence, [h.item.sources.message_ids for h in hits[:k]])
                    row[f"tok@{k}"] = sum(h.tokens for h in hits[:k])
                for b in budgets:
                    within = mos.search(q.question, BENCH_USER, [conv.sample_id], top_k=200, token_budget=b)
                    row[f"b@{b}"] = evidence_recall(q.evidence, [h.item.sources.message_ids for h in within])
                rows.append(row)
                if mos.config.retrieval.decay_weight > 0:  # this question's uses weigh in the next one's ranking
                    mos.flush_access()
                if progress:
                    progress("search", n + 1, len(questions))
            for conv in convs:  # leave nothing behind (a shared Neo4j database outlives the run)
                mos.delete_cube(conv.sample_id, BENCH_USER)

    def summarize(subset: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "questions": len(subset),
            "recall_at": {str(k): round(statistics.fmean(r[f"r@{k}"] for r in subset), 4) for k in ks},
            "recall_within_tokens": {str(b): round(statistics.fmean(r[f"b@{b}"] for r in subset), 4) for b in budgets},
            "mean_context_tokens_at": {str(k): round(statistics.fmean(r[f"tok@{k}"] for r in subset), 1) for k in ks},
        }

    results: dict[str, Any] = summarize(rows)
    results["by_category"] = {
        str(c): summarize([r for r in rows if r["category"] == c])
        for c in STANDARD_CATEGORIES
        if any(r["category"] == c for r in rows)
    }
    results["search_ms"] = {
        "p50": round(percentile(latencies, 0.5), 2),
        "p95": round(percentile(latencies, 0.95), 2),
        "mean": round(statistics.fmean(latencies), 2),
    }
    results["ingest"] = {
        "turns": total_turns,
        "seconds": round(ingest_s, 3),
        "turns_per_s": round(total_turns / ingest_s, 1) if ingest_s else None,
        "embed_only_seconds": round(embed_s, 3),
        "ratio_to_embed_only": round(ingest_s / embed_s, 3) if embed_s else None,
        "embed_within_ingest_seconds": round(inside.seconds, 3),
        "non_embedding_seconds": round(ingest_s - inside.seconds, 3),
    }
    results["vault"] = vault
    results["setup"] = {
        "data": str(data),
        "conversations": [c.sample_id for c in convs],
        "embedder": mos.embedder.model_name
        + (f" on {runtime}" if (runtime := getattr(mos.embedder, "runtime", None)) else ""),
        "store": type(mos.store).__name__,
        "store_search": {
            "vector": mos.store.capabilities.vector_search,
            "text": mos.store.capabilities.text_search,
        },
        "mode": "fast",
        "tokenizer": mos.config.tokenizer_encoding,
        "audit_log": bool(getattr(mos.store, "audit", False)),
        "redaction": redaction or "off",
        "access_tracking": mos.access is not None,
        "decay_weight": mos.config.retrieval.decay_weight,
        "simulated_time": simulated_time,
    }
    return results


def _fixed(when: datetime) -> Callable[[], datetime]:
    """Return a clock standing still at ``when`` (simulated time)."""
    return lambda: when


def _day_after(conv: Conversation) -> datetime:
    """Return one day after a conversation's last dated session (now, if none is dated)."""
    dates = [s.time for s in conv.sessions if s.time is not None]
    return max(dates) + timedelta(days=1) if dates else utcnow()


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``recall.png`` under ``out``; returns the paths."""
    out_dir, paths = write_json(results, out)
    ks = list(results["recall_at"])
    budgets = list(results["recall_within_tokens"])
    lines = [
        "# LoCoMo evidence recall (memos bench locomo)",
        "",
        f"Data: `{results['setup']['data']}` ({', '.join(results['setup']['conversations'])}); "
        f"embedder {results['setup']['embedder']}; store {results['setup']['store']}; mode fast.",
        "",
        "| category | questions | "
        + " | ".join(f"recall@{k}" for k in ks)
        + " | "
        + " | ".join(f"recall ≤{b} tok" for b in budgets)
        + " | "
        + " | ".join(f"tokens@{k}" for k in ks)
        + " |",
        "|---" * (2 + 2 * len(ks) + len(budgets)) + "|",
    ]
    for name, block in [("all", results), *[(c, b) for c, b in results["by_category"].items()]]:
        lines.append(
            f"| {name} | {block['questions']} | "
            + " | ".join(f"{block['recall_at'][k]:.3f}" for k in ks)
            + " | "
            + " | ".join(f"{block['recall_within_tokens'][b]:.3f}" for b in budgets)
            + " | "
            + " | ".join(f"{block['mean_context_tokens_at'][k]:.0f}" for k in ks)
            + " |"
        )
    s, i = results["search_ms"], results["ingest"]
    lines += [
        "",
        f"Search latency: p50 {s['p50']} ms, p95 {s['p95']} ms (mean {s['mean']} ms).",
        f"Ingestion: {i['turns']} turns in {i['seconds']} s ({i['turns_per_s']} turns/s); embedder alone "
        f"{i['embed_only_seconds']} s; ratio {i['ratio_to_embed_only']}; time outside the embedder "
        f"{i['non_embedding_seconds']} s.",
    ]
    if "vault" in results:
        v = results["vault"]
        lines.append(
            f"MemVault after ingestion: {v['items']} items, {v['kept_versions']} kept versions"
            + (f" ({v['version_rows']} rows, {v['version_bytes']:,} bytes)" if "version_rows" in v else "")
            + "."
        )
    paths[1].write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    cats = ["all", *results["by_category"]]
    blocks = [results, *results["by_category"].values()]
    series = [(f"recall@{k}", [b["recall_at"][k] for b in blocks]) for k in ks]
    series += [(f"recall ≤{b} tokens", [blk["recall_within_tokens"][b] for blk in blocks]) for b in budgets]
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.8 / len(series)
    for n, (label, values) in enumerate(series):
        ax.bar([x + n * width for x in range(len(cats))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(cats))])
    ax.set_xticklabels(["all" if c == "all" else f"cat {c}" for c in cats])
    ax.set_ylim(0, 1)
    ax.set_ylabel("evidence recall")
    ax.set_title(
        "LoCoMo evidence recall (categories: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop)", fontsize=9
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.tight_layout()
    png = out_dir / "recall.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*paths, png]


def compare_stores(results: dict[str, dict[str, Any]], baseline: str = "sqlite") -> dict[str, Any]:
    """Compare runs of the same benchmark on several stores against ``baseline`` (same run, same data).

    Args:
        results: Results of :func:`run_locomo_bench` by store name.
        baseline: The store the others are compared with (default the embedded ``sqlite``).

    Returns:
        Per other store: recall differences (other - baseline) at every k and budget, and the
        ratios ``baseline : other`` of ingestion seconds and search p50/p95 (a ratio below 1 means
        the other store is slower).

    """
    base = results[baseline]
    out: dict[str, Any] = {"baseline": baseline, "stores": {}}
    for name, other in results.items():
        if name == baseline:
            continue
        out["stores"][name] = {
            "recall_at_delta": {k: round(other["recall_at"][k] - v, 4) for k, v in base["recall_at"].items()},
            "recall_within_tokens_delta": {
                b: round(other["recall_within_tokens"][b] - v, 4) for b, v in base["recall_within_tokens"].items()
            },
            "ingest_seconds": {baseline: base["ingest"]["seconds"], name: other["ingest"]["seconds"]},
            "ingest_ratio": round(base["ingest"]["seconds"] / other["ingest"]["seconds"], 4),
            "non_embedding_seconds": {
                baseline: base["ingest"]["non_embedding_seconds"],
                name: other["ingest"]["non_embedding_seconds"],
            },
            "search_ms": {baseline: base["search_ms"], name: other["search_ms"]},
            "search_p50_ratio": round(base["search_ms"]["p50"] / other["search_ms"]["p50"], 4),
            "search_p95_ratio": round(base["search_ms"]["p95"] / other["search_ms"]["p95"], 4),
        }
    return out


def write_comparison(comparison: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``comparison.json`` and ``comparison.md`` under ``out``; returns the paths."""
    _, paths = write_json(comparison, out, "comparison")
    base = comparison["baseline"]
    lines = ["# Store comparison (memos bench locomo, same data, same run)", ""]
    for name, c in comparison["stores"].items():
        lines += [
            f"## {base} : {name}",
            "",
            "| figure | " + base + " | " + name + " | ratio " + base + " : " + name + " |",
            "|---|---|---|---|",
            f"| ingestion (s) | {c['ingest_seconds'][base]} | {c['ingest_seconds'][name]} | {c['ingest_ratio']} |",
            f"| time outside the embedder (s) | {c['non_embedding_seconds'][base]} | "
            f"{c['non_embedding_seconds'][name]} | |",
            f"| search p50 (ms) | {c['search_ms'][base]['p50']} | {c['search_ms'][name]['p50']} | "
            f"{c['search_p50_ratio']} |",
            f"| search p95 (ms) | {c['search_ms'][base]['p95']} | {c['search_ms'][name]['p95']} | "
            f"{c['search_p95_ratio']} |",
            "",
            "Recall difference ("
            + name
            + " - "
            + base
            + "): "
            + ", ".join(f"@{k} {d:+.4f}" for k, d in c["recall_at_delta"].items())
            + "; "
            + ", ".join(f"≤{b} tokens {d:+.4f}" for b, d in c["recall_within_tokens_delta"].items())
            + ".",
            "",
        ]
    paths[1].write_text("\n".join(lines))
    return paths
