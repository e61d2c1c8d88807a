"""LoCoMo through the framework adapters: recall and search latency of MemOSStore, MemOSRetriever and MemOS.

Run it as ``python -m langgraph_memos.bench --data LOCOMO.json --out DIR`` (see :func:`main`).

Protocol (one process, one MemOS home in a temporary directory, one embedder):

* **Ingestion.** Every turn of a conversation is one document of the namespace
  ``("locomo", sample_id)`` with key = its dia_id and value
  ``{"text": "<Speaker>: <text>", "dia_id": ..., "session": ...}``, put through
  ``MemOSStore(mos, user_id="bench")`` with one ``batch`` of ``PutOp`` per session (one
  transaction per session). Each put indexes the ``text`` field only (``PutOp(index=["text"])``),
  so the MemOS namespace cube indexes exactly the text LangGraph's store embeds. The same ops go
  into LangGraph's ``InMemoryStore`` with an index on the same embedder object
  (``{"dims": mos.embedder.dim, "embed": <mos.embedder.embed>, "fields": ["text"]}``: dense
  only). Sessions alternate between the two stores, and both are timed, with the embedder's own
  share measured inside each.
* **Search.** Each question of categories 1-4 with evidence asks the conversation's namespace
  cube through four paths, each for ``max(k)`` results:

  - ``core``: ``mos.search(question, user_id, cube_ids=[cube], top_k=max_k, token_budget=1_000_000)``;
  - ``retriever``: ``MemOSRetriever(mos=mos, user_id=..., cube_ids=[cube], k=max_k,
    token_budget=1_000_000).invoke(question)`` (langchain-memos);
  - ``memos_store``: ``MemOSStore.search(("locomo", sample_id), query=question, limit=max_k)``;
  - ``inmemory_store``: LangGraph's ``InMemoryStore.search`` likewise (cosine over its own vectors).

  The four calls of a question run back to back, their order rotated by one each question so
  that drift (other load on the machine, caches) falls on all of them alike; each call is timed
  with ``perf_counter`` after a warm-up question that is not counted. With ``repeats`` > 1 the
  question loop runs again and every timing is kept (recall is taken from the first pass, and
  later passes are checked to return the same results).
* **Recall@k.** From the dia_ids of the top-k results (core: ``item.document["dia_id"]``;
  retriever: the ``Document``'s ``metadata["key"]``; stores: ``value["dia_id"]``) with
  :func:`~memos_agents.bench.locomo_data.evidence_recall`. The three MemOS paths run the same
  hybrid retrieval over the same cube, so their recall must be identical: every question where
  it differs is counted and shown (``identical_recall``), and so is every question where their
  top-k lists differ at all (``identical_rankings``).
* **Overhead.** ``p50(adapter) / p50(core)`` per adapter (and p95), and the median of the
  per-question differences ``t(adapter) - t(core)`` of the same question (paired, so less
  sensitive to load than a ratio of two medians).

Outputs under ``out``: ``results.json``, ``README.md`` (tables, the command, the machine) and
``chart.png`` (search p50/p95 per system, recall@k per system).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_memos import MemOSRetriever
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore

from langgraph_memos.store import MemOSStore
from memos_agents import MemOS
from memos_agents.bench import percentile, write_json
from memos_agents.bench.locomo import EmbedTimer
from memos_agents.bench.locomo_data import STANDARD_CATEGORIES, Conversation, evidence_recall, load_locomo
from memos_agents.errors import InvalidInputError
from memos_agents.plaintext.documents import namespace_cube_id

__all__ = ["SYSTEMS", "main", "run_integrations_bench", "write_outputs"]

#: The benchmark's principal (owner of the namespace cubes).
BENCH_USER = "bench"
#: Cube id prefix of the namespace cubes (MemOSStore's default).
CUBE_PREFIX = "lg"
#: Token budget of the core and retriever searches: large enough never to cut the top k.
TOKEN_BUDGET = 1_000_000
#: The systems compared, in the order of the first question (later questions rotate it).
SYSTEMS = ("core", "retriever", "memos_store", "inmemory_store")
#: The three paths over MemOS hybrid retrieval, whose results must agree.
MEMOS_PATHS = ("core", "retriever", "memos_store")
#: Names in tables and the chart.
LABELS = {
    "core": "MemOS.search (core)",
    "retriever": "MemOSRetriever.invoke",
    "memos_store": "MemOSStore.search",
    "inmemory_store": "InMemoryStore.search (dense)",
}
#: Most differing questions shown in the results (all are counted).
MAX_EXAMPLES = 20


def embedder_config(name: str) -> dict[str, Any]:
    """Return the ``embedder`` config of a ``--embedder`` value.

    Args:
        name: ``minilm`` (the default MemOS embedder: bundled all-MiniLM-L6-v2, backend ``auto``),
            ``minilm:BACKEND`` (``auto``, ``torch``, ``onnx`` or ``openvino``) or ``hashing``
            (256-d feature hashing: no model, for quick runs and tests).

    Raises:
        InvalidInputError: Another value.

    """
    provider, _, backend = name.strip().partition(":")
    if provider == "hashing" and not backend:
        return {"provider": "hashing", "dim": 256}
    if provider == "minilm" and backend in ("", "auto", "torch", "onnx", "openvino"):
        return {"provider": "sentence-transformers", "backend": backend or "auto"}
    raise InvalidInputError(f"unknown embedder {name!r}; use minilm, minilm:BACKEND or hashing")


def session_ops(conv: Conversation) -> list[list[PutOp]]:
    """Return one list of ``PutOp`` per session of ``conv`` (the values both stores receive)."""
    namespace = ("locomo", conv.sample_id)
    out = []
    for session in conv.sessions:
        ops = []
        for turn in session.turns:
            assert turn.id is not None  # LoCoMo turns always carry their dia_id
            value = {"text": f"{turn.name}: {turn.content}", "dia_id": turn.id, "session": session.session_id}
            ops.append(PutOp(namespace, turn.id, value, index=["text"]))
        if ops:
            out.append(ops)
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
        "mean": round(statistics.fmean(values), 3) if values else 0.0,
        "n": len(values),
    }


def _machine(mos: MemOS) -> dict[str, Any]:
    embedder = mos.embedder.model_name
    if runtime := getattr(mos.embedder, "runtime", None):
        embedder += f" on {runtime}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        ).stdout.strip()
        if dirty:  # the run's code is not exactly the commit's
            commit += " with uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = None
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("langgraph", "langchain-core", "memos-agents", "langgraph-memos", "langchain-memos"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "embedder": embedder,
        "embedding_dim": mos.embedder.dim,
        "store": type(mos.store).__name__,
        "commit": commit,
        "versions": versions,
    }


def run_integrations_bench(
    data: Path,
    out: Path,
    *,
    conversations: int | None = None,
    k: tuple[int, ...] = (5, 10, 20),
    repeats: int = 1,
    embedder: str = "minilm",
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring), write its files under ``out`` and return the results.

    Args:
        data: A LoCoMo JSON file.
        out: Output directory (``results.json``, ``README.md``, ``chart.png``).
        conversations: Only the first N conversations (None: all).
        k: Cut-offs for recall@k; every search asks for ``max(k)`` results.
        repeats: Passes over the questions (timings of all passes are kept; recall from the first).
        embedder: ``minilm`` (default), ``minilm:BACKEND`` or ``hashing`` (see :func:`embedder_config`).
        command: The command line recorded in the README (None: the equivalent CLI call).
        progress: Called with a line of progress now and then (None: silent).

    Returns:
        The results written to ``results.json``.

    Raises:
        InvalidInputError: Bad ``k``, ``repeats`` or ``embedder``, or data that is not LoCoMo.

    """
    started = time.perf_counter()
    ks = sorted(set(k))
    if not ks or min(ks) < 1:
        raise InvalidInputError(f"k must be positive integers, not {k!r}")
    if repeats < 1:
        raise InvalidInputError(f"repeats must be at least 1, not {repeats}")
    emb = embedder_config(embedder)
    max_k = max(ks)
    convs = load_locomo(data)[: conversations or None]
    say = progress or (lambda _line: None)
    questions = [(c, q) for c in convs for q in c.qa if q.category in STANDARD_CATEGORIES and q.evidence]
    if not questions:
        raise InvalidInputError(f"{data}: no questions of categories 1-4 with evidence")

    with tempfile.TemporaryDirectory(prefix="memos-lg-bench-") as tmp:
        mos = MemOS.from_path(Path(tmp), embedder=emb, llm={"provider": "none"})
        with mos:
            mos.setup()
            mos.embedder.embed(["warm-up"])  # load the model outside every timed region
            machine = _machine(mos)
            store = MemOSStore(mos, user_id=BENCH_USER, cube_prefix=CUBE_PREFIX)

            def embed(texts: Sequence[str]) -> list[list[float]]:
                return mos.embedder.embed(list(texts)).tolist()  # looked up per call: EmbedTimer sees it

            lg_store = InMemoryStore(index={"dims": mos.embedder.dim, "embed": embed, "fields": ["text"]})

            # -- ingestion: the same ops into both stores, sessions alternating -----------------------
            ingest = {name: {"seconds": 0.0, "embed_seconds": 0.0} for name in ("memos_store", "inmemory_store")}
            turns = 0
            timer = EmbedTimer(mos.embedder)
            with timer:
                n = 0
                for conv in convs:
                    for ops in session_ops(conv):
                        turns += len(ops)
                        order = (store, lg_store) if n % 2 == 0 else (lg_store, store)
                        n += 1
                        for target in order:
                            name = "memos_store" if target is store else "inmemory_store"
                            inside = timer.seconds
                            t0 = time.perf_counter()
                            target.batch(ops)
                            ingest[name]["seconds"] += time.perf_counter() - t0
                            ingest[name]["embed_seconds"] += timer.seconds - inside
                    say(f"ingested {conv.sample_id} ({conv.turn_count} turns)")
            for block in ingest.values():
                block["non_embedding_seconds"] = block["seconds"] - block["embed_seconds"]
                block["turns_per_s"] = round(turns / block["seconds"], 1) if block["seconds"] else None
                for key in ("seconds", "embed_seconds", "non_embedding_seconds"):
                    block[key] = round(block[key], 3)

            # -- search --------------------------------------------------------------------------------
            retrievers: dict[str, MemOSRetriever] = {}

            def ask(system: str, conv: Conversation, question: str) -> list[str]:
                namespace = ("locomo", conv.sample_id)
                if system == "core":
                    cube = namespace_cube_id(namespace, CUBE_PREFIX)
                    hits = mos.search(question, BENCH_USER, [cube], top_k=max_k, token_budget=TOKEN_BUDGET)
                    return [str((h.item.document or {}).get("dia_id")) for h in hits]
                if system == "retriever":
                    docs = retrievers[conv.sample_id].invoke(question)
                    return [str(d.metadata["key"]) for d in docs]
                target = store if system == "memos_store" else lg_store
                items = target.search(namespace, query=question, limit=max_k)
                return [str(i.value["dia_id"]) for i in items]

            for conv in convs:
                cube = namespace_cube_id(("locomo", conv.sample_id), CUBE_PREFIX)
                retrievers[conv.sample_id] = MemOSRetriever(
                    mos=mos, user_id=BENCH_USER, cube_ids=[cube], k=max_k, token_budget=TOKEN_BUDGET
                )
            warm_conv, warm_q = questions[0]
            for system in SYSTEMS:  # warm-up, not counted
                ask(system, warm_conv, warm_q.question)

            latencies: dict[str, list[float]] = {s: [] for s in SYSTEMS}
            paired: dict[str, list[float]] = {s: [] for s in SYSTEMS if s != "core"}
            rows: list[dict[str, Any]] = []
            unstable = 0
            for rep in range(repeats):
                for n, (conv, q) in enumerate(questions):
                    shift = (n + rep) % len(SYSTEMS)
                    order = SYSTEMS[shift:] + SYSTEMS[:shift]
                    got: dict[str, list[str]] = {}
                    took: dict[str, float] = {}
                    for system in order:
                        t0 = time.perf_counter()
                        got[system] = ask(system, conv, q.question)
                        took[system] = (time.perf_counter() - t0) * 1000
                    for system in SYSTEMS:
                        latencies[system].append(took[system])
                        if system != "core":
                            paired[system].append(took[system] - took["core"])
                    if rep == 0:
                        rows.append(
                            {
                                "sample_id": conv.sample_id,
                                "question": q.question,
                                "category": q.category,
                                "evidence": q.evidence,
                                "ids": got,
                                "recall": {
                                    s: {kk: evidence_recall(q.evidence, [[d] for d in got[s][:kk]]) for kk in ks}
                                    for s in SYSTEMS
                                },
                            }
                        )
                    elif any(got[s] != rows[n]["ids"][s] for s in SYSTEMS):
                        unstable += 1
                    if (n + 1) % 100 == 0:
                        say(f"pass {rep + 1}/{repeats}: {n + 1}/{len(questions)} questions")
            machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
            for conv in convs:  # leave nothing behind
                store.delete_namespace(("locomo", conv.sample_id))

    # -- summary ---------------------------------------------------------------------------------------
    def recall_block(subset: list[dict[str, Any]], system: str) -> dict[str, Any]:
        return {
            "questions": len(subset),
            "recall_at": {str(kk): round(statistics.fmean(r["recall"][system][kk] for r in subset), 4) for kk in ks},
        }

    cats = [c for c in STANDARD_CATEGORIES if any(r["category"] == c for r in rows)]
    systems: dict[str, Any] = {}
    for s in SYSTEMS:
        block = recall_block(rows, s)
        block["by_category"] = {str(c): recall_block([r for r in rows if r["category"] == c], s) for c in cats}
        block["search_ms"] = _stats(latencies[s])
        block["label"] = LABELS[s]
        systems[s] = block
    core = systems["core"]["search_ms"]
    overhead = {
        s: {
            "p50_ratio": round(systems[s]["search_ms"]["p50"] / core["p50"], 4) if core["p50"] else None,
            "p95_ratio": round(systems[s]["search_ms"]["p95"] / core["p95"], 4) if core["p95"] else None,
            "median_paired_difference_ms": round(statistics.median(paired[s]), 3),
            "mean_paired_difference_ms": round(statistics.fmean(paired[s]), 3),
        }
        for s in SYSTEMS
        if s != "core"
    }
    recall_diff = [r for r in rows if any(r["recall"][s] != r["recall"]["core"] for s in MEMOS_PATHS)]
    rank_diff = [r for r in rows if any(r["ids"][s] != r["ids"]["core"] for s in MEMOS_PATHS)]
    results: dict[str, Any] = {
        "systems": systems,
        "overhead_vs_core": overhead,
        "identical_recall": not recall_diff,
        "questions_with_different_recall": len(recall_diff),
        "identical_rankings": not rank_diff,
        "questions_with_different_rankings": len(rank_diff),
        "different_examples": [
            {key: r[key] for key in ("sample_id", "question", "category", "evidence")}
            | {"ids": {s: r["ids"][s] for s in MEMOS_PATHS}}
            for r in rank_diff[:MAX_EXAMPLES]
        ],
        "results_stable_across_repeats": unstable == 0,
        "questions_changed_in_later_repeats": unstable,
        "ingest": {"turns": turns, **ingest},
        "setup": {
            "data": str(data),
            "conversations": [c.sample_id for c in convs],
            "questions": len(rows),
            "k": ks,
            "top_k_asked": max_k,
            "repeats": repeats,
            "token_budget": TOKEN_BUDGET,
            "namespace": ["locomo", "<sample_id>"],
            "indexed_field": "text",
            "embedder_option": embedder,
            "machine": machine,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "command": command or _default_command(data, out, conversations, ks, repeats, embedder),
        },
    }
    write_outputs(results, out)
    return results


def _default_command(
    data: Path, out: Path, conversations: int | None, ks: Sequence[int], repeats: int, embedder: str
) -> str:
    parts = ["python", "-m", "langgraph_memos.bench", "--data", str(data), "--out", str(out)]
    if conversations:
        parts += ["--conversations", str(conversations)]
    if list(ks) != [5, 10, 20]:
        parts += ["--k", ",".join(map(str, ks))]
    if repeats != 1:
        parts += ["--repeats", str(repeats)]
    if embedder != "minilm":
        parts += ["--embedder", embedder]
    return shlex.join(parts)


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``results.json``, ``README.md`` and ``chart.png`` (when matplotlib is installed) under ``out``.

    Returns:
        The paths written.

    """
    out_dir, (json_path, _) = write_json(results, out)
    setup, systems, overhead = results["setup"], results["systems"], results["overhead_vs_core"]
    ks = [str(kk) for kk in setup["k"]]
    m = setup["machine"]
    lines = [
        "# LoCoMo through the framework adapters: MemOSStore, MemOSRetriever, MemOS.search, InMemoryStore",
        "",
        "```",
        setup["command"],
        "```",
        "",
        f"Data: `{setup['data']}` ({', '.join(setup['conversations'])}); {setup['questions']} questions "
        f"(categories 1-4 with evidence); every search asks for the top {setup['top_k_asked']}; "
        f"{setup['repeats']} pass(es). Wall time of the whole run: {setup['wall_seconds']} s.",
        "",
        f"Machine: {m['cpu_count']} CPU cores ({m['machine']}, {m['platform']}), Python {m['python']}; "
        f"embedder {m['embedder']} ({m['embedding_dim']}-d), shared by all four systems; MemOS store "
        f"{m['store']}; commit {m['commit']}; langgraph {m['versions'].get('langgraph')}, "
        f"langchain-core {m['versions'].get('langchain-core')}. Load average (1, 5, 15 min) at the start "
        f"{m['load_average_at_start']}, at the end {m['load_average_at_end']} (the cores are shared: compare "
        "timings within this run only).",
        "",
        "## Recall and search latency",
        "",
        "| system | " + " | ".join(f"recall@{kk}" for kk in ks) + " | search p50 (ms) | p95 (ms) | mean (ms) |",
        "|---" * (1 + len(ks) + 3) + "|",
    ]
    for block in systems.values():
        lat = block["search_ms"]
        lines.append(
            f"| {block['label']} | "
            + " | ".join(f"{block['recall_at'][kk]:.4f}" for kk in ks)
            + f" | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['mean']:.2f} |"
        )
    lines += [
        "",
        "Adapter overhead over the core `MemOS.search` (same questions, same cube, same run):",
        "",
        "| adapter | p50 ratio | p95 ratio | median paired difference (ms) |",
        "|---|---|---|---|",
    ]
    for s, o in overhead.items():
        lines.append(
            f"| {systems[s]['label']} | {o['p50_ratio']} | {o['p95_ratio']} | {o['median_paired_difference_ms']:+.3f} |"
        )
    same = results["identical_recall"]
    lines += [
        "",
        f"Recall of the three MemOS paths identical on every question: **{'yes' if same else 'no'}** "
        f"({results['questions_with_different_recall']} questions differ); identical top-{setup['top_k_asked']} "
        f"lists: {'yes' if results['identical_rankings'] else 'no'} "
        f"({results['questions_with_different_rankings']} questions differ).",
        "",
        "## Recall by category",
        "",
        "| system | category | questions | " + " | ".join(f"recall@{kk}" for kk in ks) + " |",
        "|---" * (3 + len(ks)) + "|",
    ]
    for block in systems.values():
        for c, cb in block["by_category"].items():
            lines.append(
                f"| {block['label']} | {c} | {cb['questions']} | "
                + " | ".join(f"{cb['recall_at'][kk]:.4f}" for kk in ks)
                + " |"
            )
    ing = results["ingest"]
    lines += [
        "",
        "Categories: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop.",
        "",
        "## Ingestion",
        "",
        f"{ing['turns']} turns, one `batch` of `PutOp` per session into each store (sessions alternating "
        "between the stores).",
        "",
        "| store | seconds | turns/s | embedder (s) | outside the embedder (s) |",
        "|---|---|---|---|---|",
    ]
    for s in ("memos_store", "inmemory_store"):
        b = ing[s]
        lines.append(
            f"| {LABELS[s].split('.')[0]} | {b['seconds']} | {b['turns_per_s']} | {b['embed_seconds']} | "
            f"{b['non_embedding_seconds']} |"
        )
    lines += [
        "",
        "## Protocol",
        "",
        "- One MemOS home (temporary), the default MemOS configuration but no LLM; the embedder object is "
        "shared: InMemoryStore's index calls `mos.embedder.embed`.",
        '- Each turn is one document of namespace `("locomo", sample_id)`, key = dia_id, value '
        '`{"text": "<Speaker>: <text>", "dia_id": ..., "session": ...}`; the puts index the `text` field '
        '(`PutOp(index=["text"])`), so MemOS and LangGraph index the same text.',
        "- core: `mos.search(q, user_id, cube_ids=[namespace cube], top_k, token_budget=1_000_000)`; "
        "retriever: `MemOSRetriever(..., k, token_budget=1_000_000).invoke(q)`; MemOSStore and InMemoryStore: "
        "`store.search(namespace, query=q, limit)`. The first three run MemOS hybrid retrieval (dense + BM25 + "
        "graph, fused); InMemoryStore ranks by cosine only.",
        "- Per question the four calls run back to back, their order rotated by one each question; one "
        "warm-up question first. Each call's wall time (perf_counter) includes embedding the query.",
        "- Recall@k: |evidence ∩ dia_ids of the top k| / |evidence| (`evidence_recall`). Each document is one "
        "turn, so these figures are not comparable with `memos bench locomo`, which ingests through "
        "`MemOS.add` (the reader's items span several turns and carry their session's date).",
    ]
    if not results["results_stable_across_repeats"]:
        lines.append(
            f"- {results['questions_changed_in_later_repeats']} questions returned other results in a later pass."
        )
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    paths = [json_path, readme]
    if _chart(results, out_dir / "chart.png"):
        paths.append(out_dir / "chart.png")
    return paths


def _chart(results: dict[str, Any], path: Path) -> bool:
    """Draw search p50/p95 per system (left) and recall@k per system (right); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = results["systems"]
    names = list(systems)
    labels = [systems[s]["label"].replace(" (", "\n(").replace(".", ".\n", 1) for s in names]
    ks = [str(kk) for kk in results["setup"]["k"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    try:
        xs = range(len(names))
        width = 0.38
        for n, q in enumerate(("p50", "p95")):
            values = [systems[s]["search_ms"][q] for s in names]
            bars = left.bar([x + (n - 0.5) * width for x in xs], values, width, label=q)
            left.bar_label(bars, fmt="%.1f", fontsize=7)
        left.set_xticks(list(xs))
        left.set_xticklabels(labels, fontsize=8)
        left.set_ylabel("search latency (ms)")
        left.set_title(f"Search latency per call (top {results['setup']['top_k_asked']})", fontsize=10)
        left.legend(fontsize=8)
        width = 0.8 / len(ks)
        for n, kk in enumerate(ks):
            values = [systems[s]["recall_at"][kk] for s in names]
            bars = right.bar([x + (n - (len(ks) - 1) / 2) * width for x in xs], values, width, label=f"recall@{kk}")
            right.bar_label(bars, fmt="%.3f", fontsize=6)
        right.set_xticks(list(xs))
        right.set_xticklabels(labels, fontsize=8)
        right.set_ylim(0, 1.12)
        right.set_ylabel("evidence recall")
        right.set_title("LoCoMo evidence recall (categories 1-4)", fontsize=10)
        right.legend(fontsize=8, loc="upper center", ncol=len(ks))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m langgraph_memos.bench --data FILE --out DIR [options]``.

    Returns:
        The exit status (0).

    """
    parser = argparse.ArgumentParser(
        prog="python -m langgraph_memos.bench",
        description="LoCoMo recall and search latency through MemOSStore, MemOSRetriever, MemOS.search "
        "and LangGraph's InMemoryStore, in one run.",
    )
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo JSON file.")
    parser.add_argument("--out", type=Path, required=True, help="Output directory.")
    parser.add_argument("--conversations", type=int, default=None, help="Only the first N conversations.")
    parser.add_argument("--k", default="5,10,20", help="Cut-offs for recall@k, comma-separated (default 5,10,20).")
    parser.add_argument("--repeats", type=int, default=1, help="Passes over the questions (default 1).")
    parser.add_argument("--embedder", default="minilm", help="minilm (default), minilm:BACKEND or hashing.")
    args = parser.parse_args(argv)
    try:
        ks = tuple(int(v) for v in args.k.split(",") if v.strip())
    except ValueError:
        parser.error(f"--k must be comma-separated integers, not {args.k!r}")
    shown = shlex.join(["python", "-m", "langgraph_memos.bench", *(sys.argv[1:] if argv is None else argv)])
    results = run_integrations_bench(
        args.data,
        args.out,
        conversations=args.conversations,
        k=ks,
        repeats=args.repeats,
        embedder=args.embedder,
        command=shown,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print((args.out / "README.md").read_text())
    print(f"wall time {results['setup']['wall_seconds']} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
