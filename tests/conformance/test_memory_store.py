"""The conformance suite on the in-memory reference store, and its parity with the SQLite store."""

import itertools
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from memos_agents.cube import CubeHeader, StorageProfile
from memos_agents.plaintext.stores.base import BaseMemoryStore, FollowLink, WriteBatch
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.schema import Edge, LifecycleState, MemoryItem, NodeKind, RelationType, SearchFilters
from memos_agents.testing.conformance import DIM, T0, StoreConformanceTests


class TestInMemoryStore(StoreConformanceTests):
    def tamper_audit(self, store: InMemoryStore, chain: str, how: str) -> None:  # type: ignore[override]
        entries = store._audit[chain]
        if how == "edit":
            entries[1] = entries[1].model_copy(update={"actor": "someone-else"})
        elif how == "delete":
            del entries[1]
        elif how == "insert":
            entries.insert(2, entries[1].model_copy(update={"actor": "forger", "seq": 3, "prev_hash": entries[1].hash}))
        elif how == "reorder":
            entries[1], entries[2] = entries[2], entries[1]
        elif how == "truncate":
            entries.pop()
        else:
            raise ValueError(how)

    @pytest.fixture
    def store(self) -> Iterator[InMemoryStore]:
        s = InMemoryStore()
        s.setup()
        yield s
        s.close()


WORDS = (
    "tea coffee lake sunrise painting painted paints hiking friends kites kite guitar concert Lisbon "
    "apartment garden roses marathon running runs cooking pasta museum Zoë café support group adoption"
).split()


def _corpus(rng: random.Random) -> list[MemoryItem]:
    """Return items of random words (repeats and duplicates included), vectors, users, tags and states."""
    vectors = [rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0]) for _ in range(DIM * 6)]
    out: list[MemoryItem] = []
    for n in range(60):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        if n % 11 == 5:
            text = out[-1].text  # identical documents: BM25 ties
        start = rng.randrange(6) * DIM
        embedding = [*vectors[start : start + DIM]] if n % 7 else None  # some without, some shared: cosine ties
        if embedding is not None and not any(embedding):
            embedding[n % DIM] = 1.0
        out.append(
            MemoryItem(
                text=text,
                key=rng.choice([None, "kites", "tea time"]),
                tags=rng.sample(["trip", "work", "family", "music"], rng.randint(0, 2)),
                user_id=rng.choice(["u1", "u2", None]),
                event_time=T0 - timedelta(days=rng.randint(0, 60)),
                status=LifecycleState.ARCHIVED if n % 9 == 4 else LifecycleState.ACTIVATED,
                node_kind=NodeKind.TOPIC if n % 13 == 6 else NodeKind.MEMORY,
                embedding=embedding,
            )
        )
    return out


def _fill(store: BaseMemoryStore, items: list[MemoryItem]) -> str:
    """Write the same history to ``store``: adds, edges (one replaced), an update and a delete."""
    store.create_cube(CubeHeader(cube_id="parity", owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
    store.create_cube(CubeHeader(cube_id="noise", owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
    store.add("noise", [MemoryItem(text="tea tea tea lake", embedding=[1.0] * DIM)])  # must not change statistics
    store.add("parity", items[:30])
    chain = [Edge(source_id=a.id, target_id=b.id, type=RelationType.FOLLOWS) for a, b in itertools.pairwise(items[:30])]
    store.add_edges("parity", chain)
    store.add("parity", items[30:])
    topic = items[6]
    for member in items[40:44]:
        store.apply(
            "parity",
            WriteBatch(
                edges=[Edge(source_id=topic.id, target_id=member.id, type=RelationType.PARENT)],
                follows=[FollowLink(item_id=member.id, topic_id=topic.id)],
            ),
        )
    store.add_edges("parity", [Edge(source_id=items[3].id, target_id=items[4].id, type=RelationType.FOLLOWS, weight=2)])
    (first,) = store.get("parity", [items[0].id])
    store.update("parity", [first.model_copy(update={"text": "tea tea lake and more tea by the lake"})])
    store.delete("parity", [items[12].id, items[20].id])
    return "parity"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[InMemoryStore, SQLiteMemoryStore, list[MemoryItem]]]:
    items = _corpus(random.Random(20240508))
    memory, sqlite = InMemoryStore(), SQLiteMemoryStore(tmp_path / "parity.db")
    memory.setup()
    sqlite.setup()
    _fill(memory, items)
    _fill(sqlite, items)
    yield memory, sqlite, items
    memory.close()
    sqlite.close()


def _same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [h for h, _ in a] == [h for h, _ in b]
    assert np.allclose([s for _, s in a], [s for _, s in b], rtol=0, atol=1e-6)


FILTERS = [
    None,
    SearchFilters(user_id="u1"),
    SearchFilters(tags_any=["trip", "music"], statuses=[LifecycleState.ACTIVATED, LifecycleState.ARCHIVED]),
    SearchFilters(time_from=T0 - timedelta(days=30), node_kinds=[NodeKind.MEMORY, NodeKind.TOPIC]),
]


@pytest.mark.parametrize("flt", FILTERS, ids=["default", "user", "tags+archived", "time+topics"])
def test_ranks_bm25_and_vectors_like_the_sqlite_store(
    stores: tuple[InMemoryStore, SQLiteMemoryStore, list[MemoryItem]], flt: SearchFilters | None
) -> None:
    memory, sqlite, items = stores
    # "lakes ... lake" stems to "lake" twice: a repeated query term weighs more
    queries = [
        "tea",
        "lakes by the lake, painting paints",
        "When did Melanie paint a sunrise at the lake?",
        "Zoe's café in Lisbon",
        "kites",
    ]
    compared = 0
    for query in queries:
        for k in (3, 100):
            hits = memory.text_search("parity", query, k, flt)
            _same_ranking(hits, sqlite.text_search("parity", query, k, flt))
            compared += len(hits)
    rng = np.random.default_rng(7)
    probes = [rng.normal(size=DIM).tolist() for _ in range(4)]
    probes += [next(i.embedding for i in items if i.embedding is not None)]  # ties with its duplicates
    for probe in probes:
        for k in (5, 100):
            hits = memory.vector_search("parity", probe, k, flt)
            _same_ranking(hits, sqlite.vector_search("parity", probe, k, flt))
            compared += len(hits)
    assert compared > 100  # the corpus exercises the rankings


def test_items_edges_and_expansion_like_the_sqlite_store(
    stores: tuple[InMemoryStore, SQLiteMemoryStore, list[MemoryItem]],
) -> None:
    memory, sqlite, items = stores

    def rows(store: BaseMemoryStore) -> list[dict[str, object]]:
        return [i.model_dump(exclude={"updated_at"}) for i in store.list_items("parity")]  # updated_at: write time

    assert rows(memory) == rows(sqlite)
    for flt in FILTERS[1:]:
        assert memory.count("parity", flt) == sqlite.count("parity", flt)
    edges = [e.model_dump(exclude={"created_at"}) for e in memory.get_edges("parity")]  # created: write time
    assert edges == [e.model_dump(exclude={"created_at"}) for e in sqlite.get_edges("parity")]
    assert edges[-1]["weight"] == 2  # a replaced edge moved to the end
    seeds = [items[5].id, items[41].id, items[2].id]
    for depth in (1, 3):
        for flt in (None, SearchFilters()):
            got = memory.expand("parity", seeds, list(RelationType), depth=depth, filters=flt)
            assert got == sqlite.expand("parity", seeds, list(RelationType), depth=depth, filters=flt)
