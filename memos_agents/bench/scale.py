"""``memos bench scale``: how the embedded store behaves as one cube grows from 1k to 1M memories.

One cube, owned by ``bench``, is grown in steps to each size in turn (never rebuilt): memories
``0 .. size - 1`` of :class:`~memos_agents.bench.scale_data.ScaleCorpus` (LoCoMo clauses
recombined), each with ``user_id`` = its speaker (12 speakers). A size counts these bulk memories;
the facade writes of each step (below) add a few hundred more, and ``active_memories`` gives the
cube's count of active memories when the step was measured. At each size, in this order:

1. **Bulk ingestion**: the memories from the previous size to this one, in store write batches of
   1,000 (``store.batch([WriteOp(cube, WriteBatch(add=items))])`` as the owner), each batch embedded
   with ``mos.embedder.embed``. ``items_per_s`` counts embedding, building the items
   and the store write; ``items_per_s_excl_embed`` the same without the embedder's time;
   ``store_items_per_s`` the store write alone. Generating the corpus text is not timed.
   **Facade ingestion**: one ``mos.add`` of 200 messages of a new session (speakers, message ids
   and hourly timestamps from the corpus; fast mode: 3-turn windows and a topic node), timed whole.
   A facade call has one subject: its items get ``user_id`` = the speaker of its first message.
2. **One add**: ``mos.add([message])`` of one new message of that session, ``--adds`` times
   (``subject_id`` = the message's speaker); p50/p95 ms, also with the embedder's time subtracted.
3. **Search**: ``mos.search(question, "bench", [cube], top_k=10)`` over ``--queries`` LoCoMo
   questions (the same ones at every size) after 10 warm-up questions; p50/p95 ms, and the same
   per query minus the time spent in the embedder during that query.
4. **First search after a foreign commit**: a child process (a fresh interpreter running
   :func:`foreign_add`) opens the same home, adds one message and exits; then the next search of
   this process is timed. Repeated 5 times; the median and its ratio to the search p50 of step 3.
   The question searched after a commit is searched once more just before it (warm, excluded
   from step 3): ``ratio_to_same_query`` compares the medians of the same questions, since the
   questions' own cost varies more than the commit's (one of the first five costs 3× the p50 at 1M).
5. **First search after open**: the MemOS is closed and a new one opened on the same home with the
   same (warm) embedder and token counter objects; ``open_ms`` is building it and ``setup()``
   (``setup_ms`` the latter alone), then the first search is timed (also without the embedder).
   The bench goes on with this instance.
6. **Resources**: ``VmRSS`` and ``VmHWM`` (peak) of this process from ``/proc/self/status`` right
   after the searches of step 3, in MiB. The bench itself holds every bulk vector (see 7), so
   ``rss_excl_bench_vectors_mib`` subtracts that matrix. ``disk_mib``: every file under the home
   (database, WAL, shared memory) at the end of the step.
7. **ANN recall@10 vs exact**: for 100 questions, ``store.vector_search(cube, q, 10, filters)``
   against an exact top-10 computed here in numpy, with ``filters`` the defaults
   (``SearchFilters()``: active memories) and a subject filter
   (``SearchFilters(user_id=speaker)``, speakers in turn). The exact side is computed over the
   bulk vectors kept by the bench (float32, normalised, the same vectors that were written) plus
   the facade's memories (steps 1, 2 and 4) read back from the store by id
   (``GetOp(..., with_embeddings=True)``), less any memory the store holds as no longer active
   (a merge may archive one; read with a ``ListOp`` of inactive memories). Reading the whole
   cube back with a ``ListOp`` would cost gigabytes at 1M memories, so it is not done;
   ``exact_set`` and ``store_active`` (a ``CountOp``) show that the two sets agree. An ANN hit is
   correct when its exact cosine is at least the exact 10th score minus 1e-4 (ties count, as in
   ann-benchmarks); recall = correct hits / min(10, eligible memories), averaged over questions.
   ``*_mean_exact_10th`` is the mean exact 10th score: where it is low (hashing embeddings of
   short questions) many memories tie with it and recall is lenient.

Only the public store and facade API is used (:class:`~memos_agents.os.MemOS`, ops of
:mod:`memos_agents.plaintext.stores.base`, :class:`WriteBatch`), so this file can be copied into a
checkout of an older commit to compare the two.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import memos_agents
from memos_agents.bench import percentile, write_json
from memos_agents.bench.locomo import EmbedTimer
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.errors import InvalidInputError
from memos_agents.os import MemOS
from memos_agents.plaintext.stores.base import CallContext, CountOp, GetOp, ListOp, WriteBatch, WriteOp
from memos_agents.schema import LifecycleState, MemoryItem, Message, NodeKind, SearchFilters

#: The cube's owner and the caller of every facade operation.
BENCH_USER = "bench"
#: The one cube the bench grows.
CUBE_ID = "scale"
#: Cube sizes of a full run.
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: The default embedder: feature hashing, 384-d (MiniLM's dimension, no model to run).
DEFAULT_EMBEDDER: dict[str, Any] = {"provider": "hashing", "dim": 384}
#: Memories per bulk store write.
BATCH_SIZE = 1_000
#: Warm-up searches before the timed ones.
WARMUP_QUERIES = 10
#: The recall cut-off and its tie tolerance on cosine scores.
RECALL_K = 10
TIE_EPS = 1e-4
#: Corpus seeds: bulk memories, and messages given to the facade (never the same texts).
_BULK_SEED = 0
_MESSAGE_SEED = 1
_BULK_PREFIX = "scale-"
_MIB = 1024 * 1024


def _bulk_id(n: int) -> str:
    return f"{_BULK_PREFIX}{n:09d}"


def _bulk_index(item_id: str) -> int | None:
    if item_id.startswith(_BULK_PREFIX) and item_id[len(_BULK_PREFIX) :].isdigit():
        return int(item_id[len(_BULK_PREFIX) :])
    return None


def _latency(ms: Sequence[float], excl: Sequence[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": len(ms),
        "p50": round(percentile(ms, 0.5), 3),
        "p95": round(percentile(ms, 0.95), 3),
        "mean": round(statistics.fmean(ms), 3) if ms else 0.0,
    }
    if excl is not None:
        out["p50_excl_embed"] = round(percentile(excl, 0.5), 3)
        out["p95_excl_embed"] = round(percentile(excl, 0.95), 3)
    return out


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


@contextmanager
def _timed(timer: EmbedTimer) -> Iterator[list[float]]:
    """Yield a list that receives ``[wall seconds, embedder seconds]`` of the block when it ends."""
    out: list[float] = []
    e0, t0 = timer.seconds, time.perf_counter()
    try:
        yield out
    finally:
        out += [time.perf_counter() - t0, timer.seconds - e0]


#: Store options never written into the results.
_SECRET_OPTIONS = frozenset({"password", "api_key"})


def parse_store_options(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into a store config dict; a value is read as JSON when it parses.

    ``ann_threshold=5000`` gives the integer 5000, ``use_fulltext_index=false`` False and
    ``sqlite_synchronous=FULL`` the string ``"FULL"``. Keys are not checked here: the store config
    accepts or refuses them.

    Raises:
        InvalidInputError: An entry without ``=`` or with an empty key.

    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"store option must be KEY=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def _mos(home: Path, embedder: Any, store: Mapping[str, Any], token_counter: Any = None) -> MemOS:
    parts: dict[str, Any] = {"token_counter": token_counter} if token_counter is not None else {}
    return MemOS.from_path(home, embedder=embedder, llm={"provider": "none"}, store=dict(store), **parts).setup()


def foreign_add(home: str, embedder: dict[str, Any], store: dict[str, Any], message: dict[str, Any]) -> list[str]:
    """Open ``home`` as another process would, add one message to the bench cube, close; return the stored ids.

    Runs in a child interpreter (see :func:`_foreign_commit`); the message's speaker is its subject.

    Args:
        home: The MemOS home the bench uses.
        embedder: The embedder config (as ``MemOSConfig.embedder``).
        store: The store config (as ``MemOSConfig.store``).
        message: One message, as ``Message.model_dump(mode="json")``.

    """
    mos = _mos(Path(home), embedder, store)
    try:
        return mos.add([message], BENCH_USER, CUBE_ID, subject_id=message["name"]).ids
    finally:
        mos.close()


_CHILD = (
    "import json, sys\n"
    "from memos_agents.bench.scale import foreign_add\n"
    "print(json.dumps(foreign_add(**json.loads(sys.argv[1]))))\n"
)


def _foreign_commit(home: Path, embedder: Mapping[str, Any], store: Mapping[str, Any], message: Message) -> list[str]:
    """Run :func:`foreign_add` in a fresh interpreter importing this same package; return its ids.

    Raises:
        RuntimeError: The child failed (its stderr is in the message).

    """
    root = str(Path(memos_agents.__file__).resolve().parents[1])  # the checkout under test, not an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    args = {
        "home": str(home),
        "embedder": dict(embedder),
        "store": dict(store),
        "message": message.model_dump(mode="json"),
    }
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, env=env, cwd=root, timeout=600
    )
    if run.returncode != 0:
        raise RuntimeError(f"the foreign writer failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
    ids: list[str] = json.loads(run.stdout.strip().splitlines()[-1])
    return ids


def _proc_status_mib(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    return None


def _disk_mib(home: Path) -> tuple[float, dict[str, float]]:
    files: dict[str, float] = {}
    for root, _, names in os.walk(home):
        for name in names:
            path = Path(root) / name
            try:
                files[str(path.relative_to(home))] = path.stat().st_size / _MIB
            except FileNotFoundError:  # a -shm or -journal file that went away meanwhile
                continue
    return round(sum(files.values()), 2), {k: round(v, 2) for k, v in sorted(files.items())}


def _git(*args: str) -> str | None:
    try:
        run = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=Path(memos_agents.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def _capabilities(mos: MemOS) -> Any:
    caps = getattr(mos.store, "capabilities", None)
    return caps.model_dump() if caps is not None and hasattr(caps, "model_dump") else None


class _ScaleRun:
    """State of one run: the growing cube, the bench's copy of its vectors, the facade's memory ids."""

    def __init__(
        self,
        corpus: ScaleCorpus,
        home: Path,
        embedder: Mapping[str, Any],
        store: Mapping[str, Any],
        capacity: int,
        progress: Callable[[str, int, int], None] | None,
    ) -> None:
        self.corpus = corpus
        self.home = home
        self.embedder_config = dict(embedder)
        self.store_config = dict(store)
        self.progress = progress
        self.ctx = CallContext.of(BENCH_USER)
        self.mos = _mos(home, self.embedder_config, self.store_config)
        self.timer = EmbedTimer(self.mos.embedder).__enter__()
        dim = self.mos.embedder.dim
        self.vectors = np.empty((capacity, dim), dtype=np.float32)  # pages are touched as rows are written
        self.speaker = np.empty(capacity, dtype=np.int16)
        self.speakers = {s: n for n, s in enumerate(corpus.speakers)}
        self.bulk = 0  # bulk memories written so far
        self.facade_ids: list[str] = []  # memory ids the facade stored (steps 1, 2 and 4)
        self.next_message = 0  # index of the next corpus message given to the facade
        self.session = ""

    def close(self) -> None:
        self.timer.__exit__()
        self.mos.close()

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def messages(self, count: int) -> list[Message]:
        """Return the next ``count`` corpus messages, in the current session."""
        out = []
        for text, speaker, when in self.corpus.memories(self.next_message, count, seed=_MESSAGE_SEED):
            out.append(
                Message(
                    role="user",
                    name=speaker,
                    content=text.split(": ", 1)[1],
                    id=f"m{self.next_message}",
                    timestamp=when,
                    session_id=self.session,
                )
            )
            self.next_message += 1
        return out

    # -- steps ------------------------------------------------------------------------------------
    def bulk_fill(self, size: int) -> dict[str, Any]:
        start, total_s, embed_s, store_s = self.bulk, 0.0, 0.0, 0.0
        phase = f"{size:,}: bulk ingest"
        for first in range(start, size, BATCH_SIZE):
            rows = list(self.corpus.memories(first, min(BATCH_SIZE, size - first), seed=_BULK_SEED))
            with _timed(self.timer) as whole:
                vecs = np.asarray(self.mos.embedder.embed([text for text, _, _ in rows]), dtype=np.float32)
                items = [
                    MemoryItem(
                        id=_bulk_id(first + n),
                        text=text,
                        user_id=speaker,
                        event_time=when,
                        node_kind=NodeKind.MEMORY,
                        status=LifecycleState.ACTIVATED,
                        embedding=vec.tolist(),
                    )
                    for n, ((text, speaker, when), vec) in enumerate(zip(rows, vecs, strict=True))
                ]
                t0 = time.perf_counter()
                self.mos.store.batch([WriteOp(CUBE_ID, WriteBatch(add=items))], ctx=self.ctx)
                store_s += time.perf_counter() - t0
            total_s += whole[0]
            embed_s += whole[1]
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            self.vectors[first : first + len(rows)] = vecs / np.where(norms == 0, 1.0, norms)
            self.speaker[first : first + len(rows)] = [self.speakers[s] for _, s, _ in rows]
            self.bulk = first + len(rows)
            self.tick(phase, self.bulk - start, size - start)
        n = size - start
        return {
            "items": n,
            "seconds": round(total_s, 3),
            "items_per_s": _rate(n, total_s),
            "embed_seconds": round(embed_s, 3),
            "items_per_s_excl_embed": _rate(n, total_s - embed_s),
            "store_write_seconds": round(store_s, 3),
            "store_items_per_s": _rate(n, store_s),
        }

    def facade_ingest(self, size: int, count: int) -> dict[str, Any]:
        self.session = f"scale-{size}"
        msgs = self.messages(count)
        with _timed(self.timer) as spent:
            result = self.mos.add(msgs, BENCH_USER, CUBE_ID, subject_id=msgs[0].speaker)
        self.facade_ids += result.ids
        return {
            "messages": count,
            "items": len(result.ids),
            "merged": result.merged,
            "seconds": round(spent[0], 3),
            "embed_seconds": round(spent[1], 3),
            "messages_per_s": _rate(count, spent[0]),
            "items_per_s": _rate(len(result.ids), spent[0]),
            "items_per_s_excl_embed": _rate(len(result.ids), spent[0] - spent[1]),
        }

    def one_adds(self, size: int, count: int) -> dict[str, Any]:
        ms, excl = [], []
        for n in range(count):
            (msg,) = self.messages(1)
            with _timed(self.timer) as spent:
                result = self.mos.add([msg], BENCH_USER, CUBE_ID, subject_id=msg.speaker)
            self.facade_ids += result.ids
            ms.append(spent[0] * 1000)
            excl.append((spent[0] - spent[1]) * 1000)
            self.tick(f"{size:,}: one add", n + 1, count)
        return _latency(ms, excl)

    def search(self, question: str) -> tuple[float, float]:
        """One timed facade search; returns (ms, ms outside the embedder)."""
        with _timed(self.timer) as spent:
            self.mos.search(question, BENCH_USER, [CUBE_ID], top_k=RECALL_K)
        return spent[0] * 1000, (spent[0] - spent[1]) * 1000

    def searches(self, size: int, questions: Sequence[str]) -> dict[str, Any]:
        for q in self.corpus.questions[:WARMUP_QUERIES]:
            self.search(q)
        ms, excl = [], []
        for n, q in enumerate(questions):
            total, outside = self.search(q)
            ms.append(total)
            excl.append(outside)
            self.tick(f"{size:,}: search", n + 1, len(questions))
        return _latency(ms, excl)

    def foreign(self, size: int, repeats: int, questions: Sequence[str], p50: float) -> dict[str, Any]:
        ms, excl, warm = [], [], []
        for n in range(repeats):
            (msg,) = self.messages(1)
            warm.append(self.search(questions[n % len(questions)])[0])
            self.facade_ids += _foreign_commit(self.home, self.embedder_config, self.store_config, msg)
            total, outside = self.search(questions[n % len(questions)])
            ms.append(total)
            excl.append(outside)
            self.tick(f"{size:,}: foreign commit", n + 1, repeats)
        median = statistics.median(ms)
        return {
            "first_search_ms": [round(x, 3) for x in ms],
            "median_ms": round(median, 3),
            "median_excl_embed_ms": round(statistics.median(excl), 3),
            "ratio_to_search_p50": round(median / p50, 2) if p50 else None,
            "same_query_warm_ms": [round(x, 3) for x in warm],
            "ratio_to_same_query": round(median / statistics.median(warm), 2) if warm else None,
        }

    def reopen(self, question: str, p50: float) -> dict[str, Any]:
        embedder, counter = self.mos.embedder, self.mos.scheduler.counter  # warm: no model or tokenizer load
        self.mos.close()
        t0 = time.perf_counter()
        mos = MemOS.from_path(
            self.home, embedder=embedder, token_counter=counter, llm={"provider": "none"}, store=dict(self.store_config)
        )
        t1 = time.perf_counter()
        mos.setup()
        t2 = time.perf_counter()
        self.mos = mos
        total, outside = self.search(question)
        return {
            "open_ms": round((t2 - t0) * 1000, 3),
            "setup_ms": round((t2 - t1) * 1000, 3),
            "first_search_ms": round(total, 3),
            "first_search_excl_embed_ms": round(outside, 3),
            "ratio_to_search_p50": round(total / p50, 2) if p50 else None,
        }

    def recall(self, size: int, questions: Sequence[str]) -> dict[str, Any]:
        """ANN recall@10 of ``store.vector_search`` against exact cosine (see the module docstring)."""
        every_other: list[LifecycleState] = [s for s in LifecycleState if s != LifecycleState.ACTIVATED]
        got, inactive, store_active = self.mos.store.batch(
            [
                GetOp(CUBE_ID, list(dict.fromkeys(self.facade_ids)), with_embeddings=True),
                ListOp(CUBE_ID, SearchFilters(statuses=every_other, node_kinds=[NodeKind.MEMORY])),
                CountOp(CUBE_ID, SearchFilters()),
            ]
        )
        active = np.ones(self.bulk, dtype=bool)
        for item in inactive:
            idx = _bulk_index(item.id)
            if idx is not None and idx < self.bulk:
                active[idx] = False
        facade = [
            i
            for i in got
            if i.status == LifecycleState.ACTIVATED and i.node_kind == NodeKind.MEMORY and i.embedding is not None
        ]
        f_vecs = np.asarray([i.embedding for i in facade], dtype=np.float32).reshape(len(facade), self.vectors.shape[1])
        f_vecs /= np.where((f_norm := np.linalg.norm(f_vecs, axis=1, keepdims=True)) == 0, 1.0, f_norm)
        f_row = {i.id: r for r, i in enumerate(facade)}
        # speaker of each facade memory (-1: a subject outside the corpus' speakers)
        f_spk = np.asarray([self.speakers.get(i.user_id or "", -1) for i in facade], dtype=np.int16)
        q_vecs = np.asarray(self.mos.embedder.embed(list(questions)), dtype=np.float32)
        q_vecs /= np.where((q_norm := np.linalg.norm(q_vecs, axis=1, keepdims=True)) == 0, 1.0, q_norm)
        q_spk = np.arange(len(questions), dtype=np.int16) % len(self.corpus.speakers)
        out: dict[str, Any] = {
            "queries": len(questions),
            "exact_set": int(active.sum()) + len(facade),
            "store_active": int(store_active),
        }
        for name, by_user in (("default", False), ("user_filter", True)):
            tenth, eligible = self._exact_tenth(q_vecs, q_spk if by_user else None, active, f_vecs, f_spk)
            scores, unknown = [], 0
            for n, q in enumerate(q_vecs):
                filters = SearchFilters(user_id=self.corpus.speakers[q_spk[n]]) if by_user else SearchFilters()
                hits = self.mos.store.vector_search(CUBE_ID, q, RECALL_K, filters)
                correct = 0
                for hit_id, _ in hits:
                    idx = _bulk_index(hit_id)
                    if idx is not None and idx < self.bulk and active[idx]:
                        exact = float(self.vectors[idx] @ q)
                    elif hit_id in f_row:
                        exact = float(f_vecs[f_row[hit_id]] @ q)
                    else:  # not an active memory the bench knows of: counted wrong
                        unknown += 1
                        continue
                    if exact >= float(tenth[n]) - TIE_EPS:
                        correct += 1
                scores.append(correct / max(1, min(RECALL_K, int(eligible[n]))))
            self.tick(f"{size:,}: recall", 1 if not by_user else 2, 2)
            out[name] = round(statistics.fmean(scores), 4)
            out[f"{name}_unknown_hits"] = unknown
            # a low 10th score means many ties (hashing embeddings share few words with a question)
            out[f"{name}_mean_exact_10th"] = round(float(np.mean(tenth[np.isfinite(tenth)])), 4) if len(tenth) else None
        return out

    def _exact_tenth(
        self,
        q_vecs: np.ndarray,
        q_spk: np.ndarray | None,
        active: np.ndarray,
        f_vecs: np.ndarray,
        f_spk: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return each query's exact 10th-best cosine (-inf if fewer) and how many memories it could match."""
        k = RECALL_K
        best = np.full((k, len(q_vecs)), -np.inf, dtype=np.float32)
        eligible = np.zeros(len(q_vecs), dtype=np.int64)
        chunk = 65_536
        parts = [
            (
                self.vectors[s : min(s + chunk, self.bulk)],
                self.speaker[s : min(s + chunk, self.bulk)],
                active[s : s + chunk],
            )
            for s in range(0, self.bulk, chunk)
        ]
        parts.append((f_vecs, f_spk, np.ones(len(f_vecs), dtype=bool)))
        for vecs, spk, ok in parts:
            if not len(vecs):
                continue
            mask = np.repeat(ok[:, None], len(q_vecs), axis=1)
            if q_spk is not None:
                mask &= spk[:, None] == q_spk[None, :]
            scores = np.where(mask, vecs @ q_vecs.T, -np.inf).astype(np.float32)
            eligible += mask.sum(axis=0)
            both = np.concatenate([best, scores], axis=0)  # k + len(vecs) rows: the k best of them are kept
            best = -np.partition(-both, k - 1, axis=0)[:k]
        return best.min(axis=0), eligible


def run_scale_bench(
    data: str | Path,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    embedder: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
    queries: int = 200,
    adds: int = 50,
    home: str | Path | None = None,
    facade_messages: int = 200,
    foreign_repeats: int = 5,
    recall_queries: int = 100,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Grow one cube to each size in turn and measure it there (see the module docstring).

    Args:
        data: LoCoMo JSON file (clauses, speakers and questions of the synthetic corpus).
        sizes: Bulk memories of the cube at each measurement, strictly ascending.
        embedder: Embedder config (default :data:`DEFAULT_EMBEDDER`, hashing 384-d).
        store: Store config, as ``MemOSConfig.store`` (default: the embedded store's defaults).
        queries: Timed searches per size (after :data:`WARMUP_QUERIES` warm-up ones).
        adds: Timed one-message adds per size.
        home: MemOS home, kept afterwards (default: a temporary one, removed). A bench cube left
            in it by an earlier run is deleted first.
        facade_messages: Messages of the one timed facade add per size.
        foreign_repeats: Foreign commits, each followed by a timed search, per size.
        recall_queries: Questions of the recall measurement.
        progress: Called as ``progress(phase, done, total)``.

    Returns:
        ``{"setup": {...}, "sizes": [one dict per size]}``.

    Raises:
        InvalidInputError: Sizes not strictly ascending positive integers, or bad counts.

    """
    sizes = list(sizes)
    if not sizes or any(s < 1 for s in sizes) or any(b <= a for a, b in itertools.pairwise(sizes)):
        raise InvalidInputError(f"sizes must be strictly ascending positive integers, got {sizes}")
    if min(queries, adds, facade_messages, foreign_repeats, recall_queries) < 1:
        raise InvalidInputError("queries, adds, facade_messages, foreign_repeats and recall_queries must be >= 1")
    emb = dict(embedder or DEFAULT_EMBEDDER)
    store_cfg = dict(store or {})
    corpus = ScaleCorpus.from_locomo(data)
    qs = corpus.questions
    timed = [qs[(WARMUP_QUERIES + n) % len(qs)] for n in range(queries)]
    recall_qs = [qs[(WARMUP_QUERIES + n) % len(qs)] for n in range(recall_queries)]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memos-scale-") as tmp:
        root = Path(home) if home else Path(tmp)
        run = _ScaleRun(corpus, root, emb, store_cfg, max(sizes), progress)
        try:
            if any(h.cube_id == CUBE_ID for h in run.mos.list_cubes(BENCH_USER)):
                run.mos.delete_cube(CUBE_ID, BENCH_USER)
            run.mos.create_cube(CUBE_ID, BENCH_USER, source="memos bench scale", description="scale benchmark")
            run.mos.embedder.embed(["warm-up"])  # load a model outside every timed region
            setup = {
                "data": str(data),
                "sizes": sizes,
                "embedder": {
                    "config": emb,
                    "model": run.mos.embedder.model_name,
                    "dim": run.mos.embedder.dim,
                    "runtime": getattr(run.mos.embedder, "runtime", None),
                },
                "store": {
                    "class": type(run.mos.store).__name__,
                    "options": {k: "***" if k in _SECRET_OPTIONS else v for k, v in store_cfg.items()},
                    "capabilities": _capabilities(run.mos),
                },
                "queries": queries,
                "warmup_queries": WARMUP_QUERIES,
                "adds": adds,
                "facade_messages": facade_messages,
                "batch_size": BATCH_SIZE,
                "foreign_repeats": foreign_repeats,
                "recall_queries": recall_queries,
                "recall_k": RECALL_K,
                "cores": os.cpu_count(),
                "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "sqlite": sqlite3.sqlite_version,
                "platform": platform.platform(),
                "package": str(Path(memos_agents.__file__).resolve().parent),
                "commit": _git("rev-parse", "HEAD"),
                "dirty": None,
                "home": str(home) if home else None,
                "started": started,
            }
            status = _git("status", "--porcelain", "--untracked-files=no")
            setup["dirty"] = None if status is None else bool(status)
            for size in sizes:
                row: dict[str, Any] = {"size": size}
                row["bulk"] = run.bulk_fill(size)
                row["facade"] = run.facade_ingest(size, facade_messages)
                row["one_add_ms"] = run.one_adds(size, adds)
                row["search_ms"] = run.searches(size, timed)
                row["rss"] = {
                    "rss_mib": _proc_status_mib("VmRSS"),
                    "peak_rss_mib": _proc_status_mib("VmHWM"),
                    "bench_vectors_mib": round(run.bulk * run.vectors.shape[1] * 4 / _MIB, 1),
                }
                rss = row["rss"]["rss_mib"]
                row["rss"]["rss_excl_bench_vectors_mib"] = (
                    None if rss is None else round(rss - row["rss"]["bench_vectors_mib"], 1)
                )
                p50 = row["search_ms"]["p50"]
                row["foreign_commit"] = run.foreign(size, foreign_repeats, timed, p50)
                row["reopen"] = run.reopen(timed[0], p50)
                row["recall_at_10"] = run.recall(size, recall_qs)
                row["active_memories"] = row["recall_at_10"]["store_active"]
                row["disk_mib"], row["disk_files_mib"] = _disk_mib(root)
                row["store_capabilities"] = _capabilities(run.mos)
                rows.append(row)
        finally:
            run.close()
    return {"setup": setup, "sizes": rows}


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):  # three significant digits or more, no trailing noise
            return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(cell(v) for v in r) + " |" for r in rows],
        "",
    ]


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the log-log chart ``scale.png`` under ``out``; returns the paths.

    The chart is left out when matplotlib is not installed.
    """
    out_dir, paths = write_json(results, out)
    s, rows = results["setup"], results["sizes"]
    commit = (s["commit"] or "unknown")[:12] + (" (dirty)" if s.get("dirty") else "")
    lines = [
        "# Scale of one cube (memos bench scale)",
        "",
        f"Embedder {s['embedder']['model']} ({s['embedder']['dim']}-d); store {s['store']['class']} "
        f"options {json.dumps(s['store']['options'])}; {s['cores_usable']} of {s['cores']} cores; "
        f"Python {s['python']}, numpy {s['numpy']}, SQLite {s['sqlite']}; commit {commit}; {s['started']}.",
        f"{s['queries']} timed searches after {s['warmup_queries']} warm-up, {s['adds']} one-message adds, "
        f"{s['foreign_repeats']} foreign commits, {s['recall_queries']} recall queries per size. "
        "Size = bulk memories; active = active memories in the cube when measured.",
        "",
        "## Ingestion (items/s)",
        "",
        *_md_table(
            [
                "size",
                "active",
                "bulk",
                "bulk excl. embedder",
                "store write alone",
                f"facade add of {s['facade_messages']} msgs (msgs/s)",
                "facade (items/s)",
                "facade excl. embedder (items/s)",
            ],
            [
                [
                    r["size"],
                    r["active_memories"],
                    r["bulk"]["items_per_s"],
                    r["bulk"]["items_per_s_excl_embed"],
                    r["bulk"]["store_items_per_s"],
                    r["facade"]["messages_per_s"],
                    r["facade"]["items_per_s"],
                    r["facade"]["items_per_s_excl_embed"],
                ]
                for r in rows
            ],
        ),
        "## One add (ms)",
        "",
        *_md_table(
            ["size", "p50", "p95", "p50 excl. embedder", "p95 excl. embedder"],
            [
                [
                    r["size"],
                    r["one_add_ms"]["p50"],
                    r["one_add_ms"]["p95"],
                    r["one_add_ms"]["p50_excl_embed"],
                    r["one_add_ms"]["p95_excl_embed"],
                ]
                for r in rows
            ],
        ),
        "## Search, top 10 (ms)",
        "",
        *_md_table(
            ["size", "p50", "p95", "mean", "p50 excl. embedder", "p95 excl. embedder"],
            [
                [
                    r["size"],
                    r["search_ms"]["p50"],
                    r["search_ms"]["p95"],
                    r["search_ms"]["mean"],
                    r["search_ms"]["p50_excl_embed"],
                    r["search_ms"]["p95_excl_embed"],
                ]
                for r in rows
            ],
        ),
        "## First search after a commit by another process (ms)",
        "",
        *_md_table(
            [
                "size",
                "median",
                "median excl. embedder",
                "ratio to search p50",
                "ratio to the same questions warm",
                "each",
                "same questions warm",
            ],
            [
                [
                    r["size"],
                    r["foreign_commit"]["median_ms"],
                    r["foreign_commit"]["median_excl_embed_ms"],
                    r["foreign_commit"]["ratio_to_search_p50"],
                    r["foreign_commit"].get("ratio_to_same_query"),
                    ", ".join(f"{x:.1f}" for x in r["foreign_commit"]["first_search_ms"]),
                    ", ".join(f"{x:.1f}" for x in r["foreign_commit"].get("same_query_warm_ms", [])),
                ]
                for r in rows
            ],
        ),
        "## Open and first search (ms)",
        "",
        *_md_table(
            ["size", "open", "store setup", "first search", "first search excl. embedder", "ratio to search p50"],
            [
                [
                    r["size"],
                    r["reopen"]["open_ms"],
                    r["reopen"]["setup_ms"],
                    r["reopen"]["first_search_ms"],
                    r["reopen"]["first_search_excl_embed_ms"],
                    r["reopen"]["ratio_to_search_p50"],
                ]
                for r in rows
            ],
        ),
        "## Memory and disk (MiB)",
        "",
        *_md_table(
            ["size", "RSS", "peak RSS", "bench's own vectors", "RSS less bench vectors", "disk (home)"],
            [
                [
                    r["size"],
                    r["rss"]["rss_mib"],
                    r["rss"]["peak_rss_mib"],
                    r["rss"]["bench_vectors_mib"],
                    r["rss"]["rss_excl_bench_vectors_mib"],
                    r["disk_mib"],
                ]
                for r in rows
            ],
        ),
        "## Dense search recall@10 against exact cosine",
        "",
        *_md_table(
            [
                "size",
                "default filters",
                "user_id filter",
                "mean exact 10th cosine, default",
                "mean exact 10th cosine, user_id",
                "exact set",
                "store active",
                "unknown hits",
                "vector search",
            ],
            [
                [
                    r["size"],
                    r["recall_at_10"]["default"],
                    r["recall_at_10"]["user_filter"],
                    r["recall_at_10"]["default_mean_exact_10th"],
                    r["recall_at_10"]["user_filter_mean_exact_10th"],
                    r["recall_at_10"]["exact_set"],
                    r["recall_at_10"]["store_active"],
                    r["recall_at_10"]["default_unknown_hits"] + r["recall_at_10"]["user_filter_unknown_hits"],
                    (r.get("store_capabilities") or {}).get("vector_search"),
                ]
                for r in rows
            ],
        ),
    ]
    paths[1].write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return paths
    x = [r["size"] for r in rows]
    series = [
        ("search p50", [r["search_ms"]["p50"] for r in rows], "o-"),
        ("search p95", [r["search_ms"]["p95"] for r in rows], "o--"),
        ("one add p50", [r["one_add_ms"]["p50"] for r in rows], "s-"),
        ("first search after a foreign commit (median)", [r["foreign_commit"]["median_ms"] for r in rows], "^-"),
    ]
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values, style in series:
        ax.plot(x, values, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel("memories in the cube")
    ax.set_ylabel("ms")
    ax.set_title(f"memos bench scale: {s['embedder']['model']}, {s['store']['class']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out_dir / "scale.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*paths, png]
