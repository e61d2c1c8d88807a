"""The embedded store at scale: HNSW with filters, MaxScore BM25, change-sequence catch-up, snapshots, kill -9."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from memos_agents.cube import AclEntry, CubeHeader, Role, StorageProfile
from memos_agents.plaintext.stores.base import CallContext
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.plaintext.stores.vector_index import CubeVectorIndex
from memos_agents.schema import LifecycleState, MemoryItem, SearchFilters, Visibility

pytestmark = pytest.mark.unit

DIM = 32
T0 = datetime(2024, 1, 1, tzinfo=UTC)
USERS = [f"u{i}" for i in range(20)]
# a Zipf-like vocabulary: a few very common terms (long posting lists) and a long tail
VOCAB = [f"w{i}" for i in range(400)]
WEIGHTS = [1.0 / (i + 1) for i in range(400)]


def _items(rng: random.Random, n: int, start: int = 0) -> list[MemoryItem]:
    out = []
    for i in range(start, start + n):
        words = rng.choices(VOCAB, WEIGHTS, k=rng.randint(3, 15))
        vec = np.random.default_rng(i).normal(size=DIM)
        out.append(
            MemoryItem(
                text=" ".join(words),
                user_id=USERS[i % len(USERS)],
                tags=["rare"] if i % 97 == 0 else [],
                event_time=T0 + timedelta(hours=i),
                embedding=vec.tolist(),
            )
        )
    return out


def _store(path: Path | str, **kwargs: object) -> SQLiteMemoryStore:
    store = SQLiteMemoryStore(path, **kwargs)  # type: ignore[arg-type]
    store.setup()
    return store


def _cube(store: SQLiteMemoryStore | InMemoryStore, cube_id: str = "c") -> str:
    store.create_cube(CubeHeader(cube_id=cube_id, owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
    return cube_id


def _fill(store: SQLiteMemoryStore | InMemoryStore, items: list[MemoryItem], step: int = 500) -> None:
    for i in range(0, len(items), step):
        store.add("c", items[i : i + step])


def _tie_aware_recall(got: list[str], exact: list[tuple[str, float]], scores: dict[str, float], k: int) -> float:
    """ann-benchmarks' recall: a hit counts when its exact score reaches the k-th exact score (ties)."""
    if not exact:
        return 1.0
    kth = exact[min(k, len(exact)) - 1][1]
    return sum(1 for h in got[:k] if scores[h] >= kth - 1e-5) / min(k, len(exact))


def test_hnsw_with_filters_finds_what_exact_search_finds(tmp_path: Path) -> None:
    """Above the threshold the graph answers; filters are applied during the walk, so a selective one still gives k."""
    items = _items(random.Random(1), 3000)
    ann = _store(tmp_path / "ann.db", ann_threshold=500)
    exact = _store(tmp_path / "exact.db", ann_threshold=10**9)
    for s in (ann, exact):
        _cube(s)
        _fill(s, items)
    assert ann._indexes == {}  # built on first search
    rng = np.random.default_rng(3)
    filters = [
        SearchFilters(),
        SearchFilters(user_id="u3"),  # 5 %
        SearchFilters(tags_any=["rare"]),  # 31 items: answered exactly
        SearchFilters(time_from=T0 + timedelta(hours=2500)),
    ]
    recalls = []
    for flt in filters:
        for _ in range(20):
            q = rng.normal(size=DIM).tolist()
            want = exact.vector_search("c", q, 10, flt)
            got = ann.vector_search("c", q, 10, flt)
            assert len(got) == len(want)  # never fewer than k because of the filter
            scores = dict(exact.vector_search("c", q, 3000, flt))
            assert all(h in scores for h, _ in got)  # every hit passes the filter
            recalls.append(_tie_aware_recall([h for h, _ in got], want, scores, 10))
    assert ann._indexes["c"].mode == "hnsw" and exact._indexes["c"].mode == "exact"
    assert float(np.mean(recalls)) >= 0.98


def test_writes_updates_and_deletes_reach_the_index_incrementally(tmp_path: Path) -> None:
    store = _store(tmp_path / "m.db", ann_threshold=300)
    _cube(store)
    items = _items(random.Random(2), 600)
    _fill(store, items)
    q = items[5].embedding
    assert q is not None
    assert store.vector_search("c", q, 1)[0][0] == items[5].id
    index = store._indexes["c"]
    assert index.mode == "hnsw"
    moved = items[7].model_copy(update={"embedding": [-x for x in q], "version": 1})
    store.update("c", [moved])
    store.delete("c", [items[5].id])
    assert store._indexes["c"] is index  # caught up, not rebuilt
    hits = store.vector_search("c", q, 600)
    assert items[5].id not in [h for h, _ in hits]
    assert hits[-1][0] == items[7].id  # now the farthest
    archived = items[9].model_copy(update={"status": LifecycleState.ARCHIVED, "version": 1})
    store.update("c", [archived])
    assert items[9].id not in [h for h, _ in store.vector_search("c", q, 600)]
    assert len(store.vector_search("c", q, 600, SearchFilters(statuses=[LifecycleState.ARCHIVED]))) == 1


def _bm25_history(store: SQLiteMemoryStore | InMemoryStore, items: list[MemoryItem]) -> None:
    _cube(store)
    _fill(store, items[:1500])
    store.update("c", [i.model_copy(update={"text": "w0 w0 w1 w399 w398", "version": 1}) for i in items[:40]])
    store.delete("c", [i.id for i in items[40:140]])
    _fill(store, items[1500:])


@pytest.mark.parametrize("indexed", [False, True])
def test_maxscore_bm25_ranks_exactly_as_the_exhaustive_reference(tmp_path: Path, indexed: bool) -> None:
    """Pruned BM25 on incrementally kept statistics gives the in-memory store's exhaustive ranking and scores.

    ``indexed``: the dense index is loaded, so filters are read from its masks rather than SQL.
    """
    items = _items(random.Random(4), 2500)
    sqlite = _store(tmp_path / "b.db", ann_threshold=1000)
    memory = InMemoryStore()
    memory.setup()
    _bm25_history(sqlite, items)
    _bm25_history(memory, items)
    if indexed:
        sqlite.vector_search("c", [1.0] * DIM, 1)
        sqlite.update("c", [items[2000].model_copy(update={"user_id": "u2", "version": 1})])  # caught up
        memory.update("c", [items[2000].model_copy(update={"user_id": "u2", "version": 1})])
        assert "c" in sqlite._indexes
    rng = random.Random(5)
    for _ in range(60):
        query = " ".join(rng.choices(VOCAB, WEIGHTS, k=rng.randint(1, 6)) + rng.sample(VOCAB[200:], 1))
        for k in (1, 5, 20):
            for flt in (None, SearchFilters(user_id="u2")):
                want = memory.text_search("c", query, k, flt)
                got = sqlite.text_search("c", query, k, flt)
                assert [h for h, _ in got] == [h for h, _ in want], query
                assert np.allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-9)
    n_docs, sum_len = sqlite.conn.execute("SELECT n_docs, sum_doc_len FROM cubes WHERE cube_id = 'c'").fetchone()
    assert (n_docs, sum_len) == sqlite.conn.execute(
        "SELECT count(*), sum(doc_len) FROM items WHERE cube_id = 'c'"
    ).fetchone()
    stats = dict(sqlite.conn.execute("SELECT term, df FROM term_stats WHERE cube_id = 'c'").fetchall())
    assert stats == dict(
        sqlite.conn.execute("SELECT term, count(*) FROM item_terms WHERE cube_id = 'c' GROUP BY term").fetchall()
    )


def _foreign_add(path: str, start: int, n: int) -> None:
    store = _store(path, ann_threshold=300)
    store.add("c", _items(random.Random(start), n, start))
    store.close()


def test_a_foreign_commit_is_caught_up_by_reading_only_what_changed(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    store = _store(path, ann_threshold=300)
    _cube(store)
    _fill(store, _items(random.Random(6), 1000))
    probe = _items(random.Random(9), 1, 5000)[0].embedding
    assert probe is not None
    store.vector_search("c", probe, 5)
    index = store._indexes["c"]
    before = index.watermark
    proc = mp.get_context("spawn").Process(target=_foreign_add, args=(path, 5000, 3))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    hits = store.vector_search("c", probe, 1)
    fresh = store.get("c", [hits[0][0]], with_embeddings=True)[0]
    assert fresh.embedding is not None and np.allclose(fresh.embedding, probe, atol=1e-6)
    assert store._indexes["c"] is index and index.watermark > before and len(index) == 1003


def test_snapshot_is_reused_caught_up_and_refused_when_it_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = _store(path, ann_threshold=300, snapshot_every=10**9)
    _cube(store)
    items = _items(random.Random(7), 800)
    _fill(store, items[:700])
    q = items[3].embedding
    assert q is not None
    want = store.vector_search("c", q, 10)
    store.close()  # writes the snapshot
    assert len(list((tmp_path / "s.db.ann").glob("*.json"))) == 1

    store = _store(path, ann_threshold=300, snapshot_every=10**9)
    store.add("c", items[700:])  # after the snapshot: replayed from the change sequence on load
    got = store.vector_search("c", q, 10)
    assert got[:3] == want[:3]
    assert len(store._indexes["c"]) == 800
    store.close()

    manifest = next((tmp_path / "s.db.ann").glob("*.json"))
    graph = next((tmp_path / "s.db.ann").glob("*.hnsw"))
    graph.write_bytes(graph.read_bytes()[:100])  # damaged: refused, rebuilt from SQLite
    store = _store(path, ann_threshold=300)
    assert store.vector_search("c", q, 10)[:3] == want[:3] and len(store._indexes["c"]) == 800
    store.close()
    assert manifest.exists()


def _writer_until_killed(path: str, ready: object) -> None:
    store = _store(path, ann_threshold=200, snapshot_every=150)
    n = 0
    while True:
        store.add("c", _items(random.Random(n), 50, 10_000 + n))
        n += 50
        store.vector_search("c", [1.0] * DIM, 3)  # keeps the index loaded, so snapshots are written
        if n == 400:
            ready.set()  # type: ignore[attr-defined]


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.9])
def test_kill_9_never_leaves_index_and_sqlite_disagreeing(tmp_path: Path, delay: float) -> None:
    """A writer killed at any moment (mid-commit, mid-snapshot): the next open's index holds exactly SQLite's items."""
    path = str(tmp_path / "k.db")
    store = _store(path)
    _cube(store)
    store.close()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer_until_killed, args=(path, ready))
    proc.start()
    assert ready.wait(120)
    time.sleep(delay)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    store = _store(path, ann_threshold=200)
    q = np.random.default_rng(1).normal(size=DIM).tolist()
    hits = store.vector_search("c", q, 10)
    index = store._indexes["c"]
    stored = {
        int(r[0]) for r in store.conn.execute("SELECT rowid FROM items WHERE cube_id = 'c' AND embedding IS NOT NULL")
    }
    assert set(index.pos) == stored
    exact = _store(tmp_path / "k.db", ann_threshold=10**9)
    assert len(hits) == 10 and {h for h, _ in hits} <= {h for h, _ in exact.vector_search("c", q, 40)}
    store.close()
    exact.close()


def test_index_snapshot_refuses_another_store(tmp_path: Path) -> None:
    index = CubeVectorIndex(DIM, "g1", ann_threshold=10)
    from memos_agents.plaintext.stores.vector_index import IndexRow

    index.apply(
        [
            IndexRow(i, "activated", "long_term", "memory", None, None, (), np.ones(DIM, dtype=np.float32) * i)
            for i in range(1, 40)
        ],
        watermark=5,
    )
    assert index.mode == "hnsw"
    index.save(tmp_path, "k", "store-a")
    assert CubeVectorIndex.load(tmp_path, "k", store_id="store-b", generation="g1", dim=DIM, max_watermark=9) is None
    assert CubeVectorIndex.load(tmp_path, "k", store_id="store-a", generation="g2", dim=DIM, max_watermark=9) is None
    assert CubeVectorIndex.load(tmp_path, "k", store_id="store-a", generation="g1", dim=DIM, max_watermark=4) is None
    again = CubeVectorIndex.load(tmp_path, "k", store_id="store-a", generation="g1", dim=DIM, max_watermark=9)
    assert again is not None and len(again) == 39 and again.watermark == 5


def _index_pair(n: int, **kwargs: object) -> tuple[CubeVectorIndex, CubeVectorIndex, np.ndarray]:
    """An HNSW index (threshold 100; filters passing over 50 items walk the graph) and an exact one.

    Both hold the same ``n`` items; returns both and the vectors.
    """
    from memos_agents.plaintext.stores.vector_index import IndexRow

    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    rows = [
        IndexRow(
            i + 1,
            "activated" if i % 50 else "archived",
            "long_term",
            "memory",
            USERS[i % len(USERS)],
            i,
            (),
            vectors[i],
        )
        for i in range(n)
    ]
    ann = CubeVectorIndex(DIM, "g", ann_threshold=100, exact_below=50, **kwargs)  # type: ignore[arg-type]
    exact = CubeVectorIndex(DIM, "g", ann_threshold=10**9)
    for index in (ann, exact):
        index.apply(rows, watermark=1)
    assert ann.mode == "hnsw" and exact.mode == "exact"
    return ann, exact, vectors


def test_post_filtered_search_returns_k_hits_that_match_exact_search() -> None:
    """A filter passing most items: the graph is walked unfiltered, over-fetching, and the hits post-filtered."""
    from memos_agents.plaintext.stores.filters import compile_filters

    ann, exact, _ = _index_pair(3000)
    rng = np.random.default_rng(12)
    cases = [(SearchFilters(), 10), (SearchFilters(), 100), (SearchFilters(user_id="u3"), 5)]
    recalls = []
    for flt, k in cases:
        preds = compile_filters(flt)
        m, count, packed = ann.mask(preds)
        assert packed is not None and count < len(ann)  # a real filter (archived items fail it)
        for _ in range(20):
            q = rng.normal(size=DIM)
            qn = (np.asarray(q, dtype=np.float32) / float(np.linalg.norm(q))).astype(np.float32)  # as search() does
            post = ann._post_filtered(qn, k, m, count)
            assert post is not None  # this path answered, not the filtered walk
            got = ann.search(q, k, preds)
            assert got == post
            want = exact.search(q, k, preds)
            assert len(got) == k
            assert {r for r, _ in got} <= {int(r) for r in exact.rowids[: exact._n][exact.mask(preds)[0]]}
            scores = {f"{r}": s for r, s in exact.search(q, 3000, preds)}
            recalls.append(_tie_aware_recall([f"{r}" for r, _ in got], [(f"{r}", s) for r, s in want], scores, k))
    assert float(np.mean(recalls)) >= 0.98


def test_post_filtered_search_falls_back_to_the_filtered_walk() -> None:
    """Too selective for the over-fetch, or too few hits survive it: the filter is applied during the walk."""
    from memos_agents.plaintext.stores.filters import compile_filters

    ann, exact, vectors = _index_pair(3000, max_fetch=300)
    preds = compile_filters(SearchFilters(user_id="u3"))  # 5 %: 100 × 2 / 0.05 > max_fetch
    m, count, _ = ann.mask(preds)
    q = vectors[0]
    assert ann._post_filtered(q, 100, m, count) is None
    got = ann.search(q, 100, preds)
    assert len(got) == 100 and {r for r, _ in got} <= {int(r) for r in ann.rowids[: ann._n][m]}
    # a filter the query's neighbourhood fails: the items nearest to -q pass, so the unfiltered fetch
    # around q holds fewer than k of them
    far = set(np.argsort(vectors @ q)[:60].tolist())
    ann.max_fetch = 10**6
    ann.overfetch = 1.0
    mask = np.zeros(ann._n, dtype=bool)
    mask[list(far)] = True
    assert ann._post_filtered(q, 10, mask, len(far) * 40) is None
    preds = compile_filters(SearchFilters(user_id="u7"))
    assert len(ann.search(q, 10, preds)) == 10 == len(exact.search(q, 10, preds))


def test_cached_filter_masks_follow_changes_incrementally() -> None:
    """Cached masks catch up at the changed positions only, and equal a fresh evaluation after any change."""
    from memos_agents.plaintext.stores.filters import compile_filters
    from memos_agents.plaintext.stores.vector_index import IndexRow

    def row(rowid: int, status: str = "activated", user: str | None = "u1", tags: tuple[str, ...] = ()) -> IndexRow:
        vec = np.random.default_rng(rowid).normal(size=DIM).astype(np.float32)
        return IndexRow(rowid, status, "long_term", "memory", user, rowid * 10, tags, vec)

    index = CubeVectorIndex(DIM, "g", ann_threshold=150)
    index.apply([row(i, user=USERS[i % 4], tags=("t",) if i % 9 == 0 else ()) for i in range(1, 120)])
    filters = [
        SearchFilters(),
        SearchFilters(user_id="u2"),
        SearchFilters(user_id="newcomer"),  # unknown when first cached
        SearchFilters(tags_any=["t", "x"]),
        SearchFilters(statuses=[LifecycleState.ARCHIVED]),
        SearchFilters(time_from=T0),
    ]
    preds = [compile_filters(f) for f in filters]
    for p in preds:
        index.mask(p)
    changes: list[tuple[list[IndexRow], list[int]]] = [
        ([row(5, status="archived"), row(200, user="newcomer", tags=("x",))], [7, 8]),
        ([row(i, user="newcomer") for i in range(300, 340)], [9]),  # crosses the threshold: a graph now
        ([row(8, user="u2", tags=("t",)), row(301, status="archived")], [200, 10]),
        ([IndexRow(11, "activated", "long_term", "memory", "u2", None, (), None)], []),  # no embedding: removed
    ]
    for upserts, removed in changes:
        index.apply(upserts, removed)
        for p in preds:
            m, count, _ = index.mask(p)
            fresh = index._evaluate(p, None)
            assert np.array_equal(m, fresh) and count == int(fresh.sum())
    assert index.mode == "hnsw"
    for n in range(1100):  # more changes than the log keeps: the masks left behind are recomputed
        index.apply([row(20 + n % 50, status="archived" if n % 3 else "activated", user=USERS[n % 5])])
    for p in preds:
        m, count, _ = index.mask(p)
        fresh = index._evaluate(p, None)
        assert np.array_equal(m, fresh) and count == int(fresh.sum())


def test_hnsw_and_its_snapshot_keep_per_item_visibility(tmp_path: Path) -> None:
    """Private items of other authors never come out of the graph walk, nor after a snapshot reload."""
    items = [
        i.model_copy(update={"visibility": Visibility.PRIVATE, "author_id": f"w{n % 3}"}) if n % 4 == 0 else i
        for n, i in enumerate(_items(random.Random(11), 1200))
    ]
    path = tmp_path / "v.db"
    store = _store(path, ann_threshold=300, snapshot_every=10**9)
    _cube(store)
    store.update_cube(
        store.get_cube("c").model_copy(
            update={"acl": [AclEntry(principal=f"w{k}", role=Role.READER) for k in range(3)]}
        )
    )
    _fill(store, items)
    private = {i.id: i.author_id for i in items if i.visibility is Visibility.PRIVATE}
    rng = np.random.default_rng(5)
    queries = [rng.normal(size=DIM).tolist() for _ in range(10)] + [items[0].embedding]
    for reopen in (False, True):
        if reopen:
            store.close()  # writes the snapshot (format 2: visibility and author columns)
            store = _store(path, ann_threshold=300, snapshot_every=10**9)
        for user in ("w0", "w1", "w2"):
            ctx = CallContext.of(user)
            for q in queries:
                assert q is not None
                hits = [h for h, _ in store.vector_search("c", q, 50, ctx=ctx)]
                assert len(hits) == 50 and all(private.get(h, user) == user for h in hits)
                own = [h for h, _ in store.vector_search("c", q, 5, SearchFilters(user_id="u0"), ctx=ctx)]
                assert all(private.get(h, user) == user for h in own)
        assert store._indexes["c"].mode == "hnsw"
        (first, _), *_ = store.vector_search("c", items[0].embedding or [], 1)  # the owner's view: all
        assert first == items[0].id
        assert items[0].id not in [
            h for h, _ in store.vector_search("c", items[0].embedding or [], 5, ctx=CallContext.of("w1"))
        ]
    store.close()
