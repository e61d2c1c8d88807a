"""Embedder backends on LoCoMo texts: query latency, batch throughput and fidelity to torch.

Run as ``python -m memos_agents.bench.embedder --out DIR`` (``--help`` for the options). For each
backend/precision variant (torch first) and each thread setting (1 thread, then the backend's
default), one :class:`~memos_agents.models.embedders.SentenceTransformerEmbedder` is built with that
``num_threads`` and measured:

* ``load_s``: its first ``embed`` (model load; with a fresh cache, the ONNX export too);
* ``query_ms``: ``embed_query`` of each question (categories 1-4, the first ``queries``), one at a
  time after 10 warm-up queries: p50, p95 and mean, in milliseconds;
* ``batch_texts_per_s``: one ``embed`` call on the first ``turns`` turn lines (the texts fast-mode
  ingestion embeds), batched by the embedder (``batch_size``), after a warm-up batch;
* ``session_texts_per_s``: the same turns, one ``embed`` call per session, as ``MemOS.add`` does;
* ``cosine_vs_torch``: cosine between each turn's and each question's vector and torch's (min,
  1st percentile, mean);
* ``vs_torch``: speed-ups over torch at the same thread setting in the same run (torch time
  divided by this variant's time).

Exports go to ``--cache-dir`` (default: a temporary directory, so the first load of each
variant includes its export).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from memos_agents.bench import percentile
from memos_agents.bench.locomo_data import STANDARD_CATEGORIES, load_locomo
from memos_agents.errors import InvalidInputError
from memos_agents.models.embedders import BACKENDS, PRECISIONS, Backend, Precision, SentenceTransformerEmbedder

#: Variants measured by default: (backend, precision); torch first (the reference).
VARIANTS: tuple[tuple[str, str], ...] = (
    ("torch", "auto"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "auto"),
)


def load_texts(data: str | Path, queries: int = 300, turns: int = 2000) -> tuple[list[str], list[list[str]]]:
    """Return the first ``queries`` questions (categories 1-4) and the first ``turns`` turn lines by session.

    Args:
        data: LoCoMo JSON file.
        queries: Number of questions (default 300).
        turns: Number of turns (default 2000), whole sessions except the last one taken.

    Returns:
        ``(questions, sessions)``; each session is the list of its turns' rendered lines.

    """
    convs = load_locomo(data)
    questions = [q.question for c in convs for q in c.qa if q.category in STANDARD_CATEGORIES][:queries]
    sessions: list[list[str]] = []
    left = turns
    for conv in convs:
        for session in conv.sessions:
            if left <= 0:
                break
            lines = [m.line() for m in session.turns][:left]
            sessions.append(lines)
            left -= len(lines)
    return questions, sessions


def _cosine_stats(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosines = (vectors * reference).sum(axis=1)
    return {
        "min": round(float(cosines.min()), 6),
        "p1": round(float(np.percentile(cosines, 1)), 6),
        "mean": round(float(cosines.mean()), 6),
    }


def measure_variant(
    backend: str,
    precision: str,
    num_threads: int | None,
    questions: Sequence[str],
    sessions: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Measure one variant at one thread setting.

    Args:
        backend: ``torch``, ``onnx``, ``openvino`` or ``auto``.
        precision: ``auto``, ``fp32`` or ``int8``.
        num_threads: Intra-op threads (None: the backend's default).
        questions: Query texts, embedded one at a time.
        sessions: Turn lines by session.
        batch_size: Texts per forward pass (default 64).
        cache_dir: Where exports are kept (None: the embedder's default).

    Returns:
        ``(row, turn_vectors, query_vectors)``: the measurements (see the module docstring, without
        the comparisons to torch) and the vectors, of shapes ``(turns, dim)`` and ``(queries, dim)``.

    Raises:
        ConfigError: An invalid backend/precision pair.
        ModelError / MissingDependencyError: The backend cannot run.

    """
    embedder = SentenceTransformerEmbedder(
        backend=cast(Backend, backend),
        precision=cast(Precision, precision),
        batch_size=batch_size,
        cache_dir=cache_dir,
        num_threads=num_threads,
    )
    texts = [t for s in sessions for t in s]
    t0 = time.perf_counter()
    embedder.embed(["warm-up"])
    load_s = time.perf_counter() - t0
    embedder.embed(texts[:batch_size])
    for q in questions[:10]:
        embedder.embed_query(q)
    latencies = []
    query_vectors = []
    for q in questions:
        t0 = time.perf_counter()
        query_vectors.append(embedder.embed_query(q))
        latencies.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    turn_vectors = embedder.embed(texts)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for session in sessions:
        embedder.embed(list(session))
    session_s = time.perf_counter() - t0
    row = {
        "backend": backend,
        "precision": precision,
        "threads": num_threads or "default",
        "runtime": embedder.runtime,
        "load_s": round(load_s, 2),
        "query_ms": {
            "p50": round(percentile(latencies, 0.5), 2),
            "p95": round(percentile(latencies, 0.95), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "batch_texts_per_s": round(len(texts) / batch_s, 1),
        "session_texts_per_s": round(len(texts) / session_s, 1),
    }
    return row, turn_vectors, np.stack(query_vectors)


def run_embedder_bench(
    data: str | Path,
    *,
    variants: Sequence[tuple[str, str]] = VARIANTS,
    threads: Sequence[int | None] = (1, None),
    queries: int = 300,
    turns: int = 2000,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every variant at every thread setting; returns the results dict (see the module docstring).

    Args:
        data: LoCoMo JSON file.
        variants: (backend, precision) pairs; the first must be ``("torch", ...)`` (the reference).
        threads: Thread settings, each an int or None for the backend's default (default 1, then None).
        queries: Questions for the latency (default 300).
        turns: Turns for the throughput (default 2000).
        batch_size: Texts per forward pass (default 64).
        cache_dir: Where exports are kept (None: a temporary directory, removed afterwards).
        progress: Called with a line after each measurement.

    Raises:
        InvalidInputError: The first variant is not torch.

    """
    if not variants or variants[0][0] != "torch":
        raise InvalidInputError("the first variant must be the torch backend (the reference)")
    questions, sessions = load_texts(data, queries, turns)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memos-embedder-bench-") as tmp:
        cache = Path(cache_dir) if cache_dir else Path(tmp)
        ref_turns = ref_queries = None
        for n_threads in threads:
            torch_row: dict[str, Any] | None = None
            for backend, precision in variants:
                row, turn_vectors, query_vectors = measure_variant(
                    backend, precision, n_threads, questions, sessions, batch_size=batch_size, cache_dir=cache
                )
                if ref_turns is None or ref_queries is None:
                    ref_turns, ref_queries = turn_vectors, query_vectors
                row["cosine_vs_torch"] = {
                    "turns": _cosine_stats(turn_vectors, ref_turns),
                    "queries": _cosine_stats(query_vectors, ref_queries),
                }
                if torch_row is None:
                    torch_row = row
                row["vs_torch"] = {
                    "query_p50": round(torch_row["query_ms"]["p50"] / row["query_ms"]["p50"], 2),
                    "query_p95": round(torch_row["query_ms"]["p95"] / row["query_ms"]["p95"], 2),
                    "batch": round(row["batch_texts_per_s"] / torch_row["batch_texts_per_s"], 2),
                    "session": round(row["session_texts_per_s"] / torch_row["session_texts_per_s"], 2),
                }
                rows.append(row)
                if progress:
                    progress(_row_line(row))
    import torch

    return {
        "setup": {
            "data": str(data),
            "queries": len(questions),
            "turns": sum(len(s) for s in sessions),
            "sessions": len(sessions),
            "batch_size": batch_size,
            "cpus": os.cpu_count(),
            "torch_default_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "versions": _versions(),
        },
        "rows": rows,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "sentence-transformers", "onnxruntime", "onnx", "onnxscript", "openvino"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _row_line(row: dict[str, Any]) -> str:
    q, v = row["query_ms"], row["vs_torch"]
    return (
        f"{row['backend']}/{row['precision']} threads={row['threads']}: query p50 {q['p50']} ms p95 {q['p95']} ms; "
        f"batch {row['batch_texts_per_s']}/s; sessions {row['session_texts_per_s']}/s; "
        f"vs torch x{v['query_p50']} query, x{v['batch']} batch; "
        f"min cosine {row['cosine_vs_torch']['turns']['min']}"
    )


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json`` and ``results.md`` under ``out``; returns the paths."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    s = results["setup"]
    lines = [
        "# Embedder backends on LoCoMo texts (python -m memos_agents.bench.embedder)",
        "",
        f"Data: `{s['data']}`; {s['queries']} questions one at a time, {s['turns']} turns "
        f"({s['sessions']} sessions), batch size {s['batch_size']}; {s['cpus']} CPUs, torch default threads "
        f"{s['torch_default_threads']}. Versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()) + ".",
        "",
        "| backend | precision | threads | runtime | load s | query p50 ms | query p95 ms | batch texts/s "
        "| per-session texts/s | query p50 vs torch | batch vs torch | min cos turns | mean cos turns "
        "| min cos queries |",
        "|---" * 14 + "|",
    ]
    for r in results["rows"]:
        c, v = r["cosine_vs_torch"], r["vs_torch"]
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['threads']} | {r['runtime']} | {r['load_s']} "
            f"| {r['query_ms']['p50']} | {r['query_ms']['p95']} | {r['batch_texts_per_s']} "
            f"| {r['session_texts_per_s']} | {v['query_p50']}x | {v['batch']}x | {c['turns']['min']:.5f} "
            f"| {c['turns']['mean']:.6f} | {c['queries']['min']:.5f} |"
        )
    paths[1].write_text("\n".join(lines) + "\n")
    return paths


def _variants(value: str) -> list[tuple[str, str]]:
    out = []
    for item in value.split(","):
        backend, _, precision = item.strip().partition(":")
        if backend not in BACKENDS or (precision or "auto") not in PRECISIONS:
            raise InvalidInputError(f"bad variant {item!r}; expected BACKEND[:PRECISION], e.g. onnx:int8")
        out.append((backend, precision or "auto"))
    return out


def _threads(value: str) -> list[int | None]:
    out: list[int | None] = []
    for item in value.split(","):
        item = item.strip()
        if item == "default":
            out.append(None)
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise InvalidInputError(f"bad thread setting {item!r}; expected a positive integer or 'default'")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m memos_agents.bench.embedder --out DIR [options]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m memos_agents.bench.embedder", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory (results.json, results.md)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo_dev7.json"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--variants",
        default=",".join(f"{b}:{p}" for b, p in VARIANTS),
        help="comma-separated BACKEND:PRECISION, torch first (default: %(default)s)",
    )
    parser.add_argument("--threads", default="1,default", help="comma-separated thread settings (default: 1,default)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="export cache (default: a temporary directory)")
    args = parser.parse_args(argv)
    try:
        results = run_embedder_bench(
            args.data,
            variants=_variants(args.variants),
            threads=_threads(args.threads),
            queries=args.queries,
            turns=args.turns,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            progress=print,
        )
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in write_results(results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
