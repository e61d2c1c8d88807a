"""``memos demo``: the main job, end to end on one real LoCoMo conversation.

Ingests a conversation into a MemCube under the MemOS home (embedded SQLite store, local MiniLM
embeddings, fast mode) with a progress bar, then answers a handful of its questions with a local
SmolLM2-135M-Instruct, printing the retrieved memories (text, source dia_ids, event time, score)
and the answer, and ends with a summary: evidence recall of those questions and latencies.

Answers are one sentence: at most ``answer_tokens`` tokens (default 48), cut at the first line
break. A 135M model on CPU shows the pipeline, not answer quality; the demo says so and prints how
to point it at an OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memos_agents.bench.locomo import BENCH_USER, ingest_conversation
from memos_agents.bench.locomo_data import QA, STANDARD_CATEGORIES, evidence_recall, load_locomo
from memos_agents.errors import InvalidInputError
from memos_agents.models.llm import HFLocalLLM, OpenAICompatibleLLM
from memos_agents.os import MemOS
from memos_agents.schema import ScoredMemory

CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}

#: How to run the demo against a real model (the ``--llm-*`` options of ``memos demo``).
ENDPOINT_HINT = (
    "For real answers, point the demo at any OpenAI-compatible endpoint (llama.cpp server, vLLM, a hosted API):\n"
    "  memos demo --llm-base-url http://127.0.0.1:8080/v1 --llm-model NAME [--llm-api-key KEY]\n"
    'or in Python: MemOSConfig(llm={"provider": "openai", "model": NAME, "base_url": URL}).'
)


def model_note(mos: MemOS) -> str:
    """Say where the demo's answers come from, and for the local model how to get better ones."""
    llm = mos.llm
    if llm is None:
        return "No answer model is configured (llm.provider none)."
    if isinstance(llm, OpenAICompatibleLLM):
        return f"The answers come from {llm.model_name} at {llm.base_url or 'the OpenAI API'}."
    if isinstance(llm, HFLocalLLM) and llm.model_path is None:
        return (
            "The answers below come from SmolLM2-135M-Instruct, a 135M-parameter model run locally on CPU: "
            "expect fluent but often wrong answers. The retrieved memories above each answer are "
            "what a real model would get.\n" + ENDPOINT_HINT
        )
    return f"The answers come from the local model {llm.model_name}.\n{ENDPOINT_HINT}"


def pick_questions(qa: list[QA], n: int) -> list[QA]:
    """Pick ``n`` questions with evidence, cycling through categories 1-4 in file order."""
    pools = {c: [q for q in qa if q.category == c and q.evidence] for c in STANDARD_CATEGORIES}
    picked: list[QA] = []
    while len(picked) < n and any(pools.values()):
        for c in (4, 2, 1, 3):
            if pools[c] and len(picked) < n:
                picked.append(pools[c].pop(0))
    return picked


def run_demo(
    mos: MemOS,
    data: str | Path,
    *,
    conversation: str = "conv-26",
    questions: int = 5,
    top_k: int = 10,
    token_budget: int = 1000,
    max_sessions: int | None = None,
    answer_tokens: int = 48,
    console: Console | None = None,
) -> dict[str, float]:
    """Run the demo on an already set-up MemOS; returns the summary figures.

    Args:
        mos: The MemOS (needs an LLM for answers).
        data: LoCoMo JSON file.
        conversation: Sample id to ingest (default ``conv-26``).
        questions: How many questions to answer (default 5).
        top_k: Results retrieved per question (default 10).
        token_budget: Token budget of each question's memory context (default 1000).
        max_sessions: Ingest only the first N sessions (smoke tests); questions are then drawn
            from those whose evidence lies in them.
        answer_tokens: Most tokens per answer (default 48: a one-sentence answer takes 10-35);
            answers also end at their first line break (``MemOS.chat`` stops at ``answer.STOP``).
        console: Where to print (default: a new rich console).

    Raises:
        InvalidInputError: Unknown conversation id or unreadable data.

    """
    console = console or Console()
    convs = {c.sample_id: c for c in load_locomo(data)}
    if conversation not in convs:
        raise InvalidInputError(f"no conversation {conversation!r} in {data}; have {sorted(convs)}")
    conv = convs[conversation]
    if max_sessions is not None:
        conv.sessions = conv.sessions[:max_sessions]
        known = {t.id for s in conv.sessions for t in s.turns}
        conv.qa = [q for q in conv.qa if q.evidence and set(q.evidence) <= known]
    cube_id = f"locomo-{conversation}"
    console.print(
        Panel.fit(
            f"Ingesting LoCoMo [bold]{conversation}[/] ({conv.speakers[0]} & {conv.speakers[1]}): "
            f"{len(conv.sessions)} sessions, {conv.turn_count} turns\n"
            f"home {mos.config.home}, store {type(mos.store).__name__}, embedder {mos.embedder.model_name}, fast mode",
            title="memos demo",
        )
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("loading embedder", total=conv.turn_count)
        mos.embedder.embed(["warm-up"])
        progress.update(task, description="ingesting turns")
        ingest_s = ingest_conversation(mos, conv, cube_id, lambda n: progress.advance(task, n))
    console.print(
        f"Stored {mos.stats(cube_id, BENCH_USER).nodes} nodes in cube [bold]{cube_id}[/] in {ingest_s:.1f} s."
    )
    console.print(f"Loading the answer model ({mos.llm.model_name if mos.llm else 'none'}) ...")
    t0 = time.perf_counter()
    if mos.llm is not None and hasattr(mos.llm, "load"):
        mos.llm.load()
    console.print(f"Model ready in {time.perf_counter() - t0:.1f} s.")
    console.print(Panel.fit(model_note(mos), title="answer model", border_style="yellow"))
    recalls, search_ms, gen_ms = [], [], []
    for n, q in enumerate(pick_questions(conv.qa, questions), 1):
        result = mos.chat(
            q.question, BENCH_USER, [cube_id], top_k=top_k, token_budget=token_budget, max_tokens=answer_tokens
        )
        recall = evidence_recall(q.evidence, [m.item.sources.message_ids for m in result.memories])
        recalls.append(recall)
        search_ms.append(result.search_ms)
        gen_ms.append(result.generate_ms)
        console.print(_memories_panel(n, q, result.memories, recall, result.search_ms))
        console.print(f"[bold]Answer[/] ({result.generate_ms / 1000:.1f} s): {escape(result.answer)}")
        console.print(f"[dim]Reference answer: {escape(str(q.answer))}[/]\n")
    summary = {
        "questions": float(len(recalls)),
        "evidence_recall": statistics.fmean(recalls) if recalls else 0.0,
        "ingest_s": ingest_s,
        "turns": float(conv.turn_count),
        "search_ms_p50": statistics.median(search_ms) if search_ms else 0.0,
        "generate_s_mean": statistics.fmean(gen_ms) / 1000 if gen_ms else 0.0,
    }
    console.print(
        Panel.fit(
            f"questions {len(recalls)} · evidence recall {summary['evidence_recall']:.2f}\n"
            f"ingestion {conv.turn_count} turns in {ingest_s:.1f} s "
            f"({conv.turn_count / max(ingest_s, 1e-9):.0f} turns/s)\n"
            f"search p50 {summary['search_ms_p50']:.0f} ms · "
            f"answer generation mean {summary['generate_s_mean']:.1f} s\n"
            f"answers by {mos.llm.model_name if mos.llm else 'none'}"
            + (" (135M parameters, local CPU: see the note above for a real model)" if _is_smollm2(mos) else ""),
            title="summary",
        )
    )
    return summary


def _is_smollm2(mos: MemOS) -> bool:
    return isinstance(mos.llm, HFLocalLLM) and mos.llm.model_path is None


def _memories_panel(n: int, q: QA, memories: list[ScoredMemory], recall: float, search_ms: float) -> Panel:
    """Show the retrieved memories of question ``n`` as a table, evidence sources in green."""
    table = Table(show_lines=False, expand=True)
    for col, width in (("#", 3), ("score", 7), ("sources", 12), ("event time", 12)):
        table.add_column(col, width=width)
    table.add_column("memory", ratio=1)
    for rank, m in enumerate(memories, 1):
        sources = ", ".join(m.item.sources.message_ids)
        hit = set(m.item.sources.message_ids) & set(q.evidence)
        when = f"{m.item.event_time:%Y-%m-%d}" if m.item.event_time else "-"
        sources = escape(sources)
        table.add_row(
            str(rank), f"{m.score:.4f}", f"[green]{sources}[/]" if hit else sources, when, escape(m.item.text)
        )
    return Panel(
        table,
        title=escape(f"Q{n} [{CATEGORY_NAMES[q.category]}] {q.question}"),
        subtitle=f"evidence {', '.join(q.evidence)} · recall {recall:.2f} · search {search_ms:.0f} ms",
    )
