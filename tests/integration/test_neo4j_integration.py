"""Neo4j store behaviour beyond the conformance suite, against real Bolt/Cypher servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import neo4j
import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE
from memos_agents.cube import CubeHeader, StorageProfile, read_archive
from memos_agents.errors import ConfigError, InvalidInputError, StoreError
from memos_agents.plaintext.stores.base import CountOp, ListOp, RecordEventOp, WriteBatch
from memos_agents.plaintext.stores.neo4j import SCHEMA_VERSION, Body, Neo4jMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.schema import Edge, MemoryItem, NodeKind, RelationType, SearchFilters, Sources
from memos_agents.testing.bolt_server import BoltTarget, new_tenant
from memos_agents.testing.conformance import DIM, T0, item, vec

pytestmark = pytest.mark.integration

EVIL = [
    "x'}) MATCH (n) DETACH DELETE n //",
    '"}]->() CREATE (:Pwned) RETURN 1 //',
    "$tenant`) SET n.x = 1 WITH n MATCH (m) DELETE m",
    "'; CALL db.clearQueryCaches(); //",
]


def open_store(target: BoltTarget, tenant: str | None = None) -> Neo4jMemoryStore:
    store = Neo4jMemoryStore.from_uri(
        target.uri, auth=target.auth, database=target.database, tenant=tenant or new_tenant()
    )
    store.setup()
    return store


@pytest.fixture
def cube(neo4j_store: Neo4jMemoryStore) -> str:
    neo4j_store.create_cube(CubeHeader(cube_id="c1", owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
    return "c1"


def raw(target: BoltTarget, query: str, **params: Any) -> list[dict[str, Any]]:
    with (
        neo4j.GraphDatabase.driver(target.uri, auth=target.auth) as driver,
        driver.session(database=target.database) as session,
    ):
        return session.run(query, params).data()  # type: ignore[arg-type]


def test_cypher_in_user_fields_is_stored_as_plain_data(
    neo4j_store: Neo4jMemoryStore, cube: str, bolt_target: BoltTarget
) -> None:
    sentinel = new_tenant()
    raw(bolt_target, "CREATE (:Memory {tenant: $t, cube_id: 'sentinel', id: 'keep-me'})", t=sentinel)
    evil = MemoryItem(
        text=EVIL[0],
        key=EVIL[1],
        tags=EVIL,
        sources=Sources(message_ids=["D1:1"], session_ids=[EVIL[2]], speakers=[EVIL[3]]),
        user_id="mallory",  # a well-formed id (MemoryItem refuses others); Cypher goes in every free-text field
        metadata={"note": EVIL[2], "n": 1},
        embedding=vec(1),
    )
    neo4j_store.add(cube, [evil])
    (got,) = neo4j_store.get(cube, [evil.id], with_embeddings=True)
    written = {"updated_at"}  # set by the store when it wrote the item
    assert got.model_dump(exclude=written) == evil.model_copy(update={"cube_id": cube}).model_dump(exclude=written)
    assert [h for h, _ in neo4j_store.text_search(cube, EVIL[0] + " detach delete", 5)] == [evil.id]
    flt = SearchFilters(user_id="mallory", tags_any=[EVIL[2]])
    assert [h for h, _ in neo4j_store.vector_search(cube, vec(1), 5, flt)] == [evil.id]
    assert neo4j_store.count(cube, flt) == 1
    header = CubeHeader(cube_id="c2", owner_id="alice", description=EVIL[0], source=EVIL[3])
    neo4j_store.create_cube(header)
    assert neo4j_store.get_cube("c2").description == EVIL[0]
    assert raw(bolt_target, "MATCH (n:Memory {tenant: $t}) RETURN n.id AS id", t=sentinel) == [{"id": "keep-me"}]
    assert raw(bolt_target, "MATCH (n:Pwned) RETURN count(n) AS n") == [{"n": 0}]
    raw(bolt_target, "MATCH (n:Memory {tenant: $t}) DELETE n", t=sentinel)


def test_names_interpolated_into_cypher_come_from_whitelists(neo4j_store: Neo4jMemoryStore, cube: str) -> None:
    a = item("a")
    neo4j_store.add(cube, [a])
    with pytest.raises(InvalidInputError):
        neo4j_store.get_edges(cube, [a.id], ["FOLLOWS]-() DETACH DELETE n //"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        neo4j_store.expand(cube, [a.id], ["RELATE_TO|FOO"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        neo4j_store.expand(cube, [a.id], [RelationType.FOLLOWS], depth="1..99]-(x) //")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        neo4j_store.expand(cube, [a.id], [RelationType.FOLLOWS], depth=50)
    assert neo4j_store.count(cube) == 1


class FailingAfterNodes(Neo4jMemoryStore):
    """Fails on the server after the batch's nodes were created, inside the same transaction."""

    def _write_edges(self, cube_id: str, edges: Any, rels: Any, first_seq: int) -> Body[None]:
        yield ("RETURN 1 / 0 AS boom", {})


class RaisingAfterNodes(Neo4jMemoryStore):
    """Fails in Python after the batch's nodes and updates were sent, inside the same transaction."""

    def _write_edges(self, cube_id: str, edges: Any, rels: Any, first_seq: int) -> Body[None]:
        yield from super()._write_edges(cube_id, edges, rels, first_seq)
        raise RuntimeError("client died mid-batch")


@pytest.mark.parametrize("kind", [FailingAfterNodes, RaisingAfterNodes])
def test_failure_mid_batch_leaves_nothing_behind(bolt_target: BoltTarget, kind: type[Neo4jMemoryStore]) -> None:
    tenant = new_tenant()
    good = open_store(bolt_target, tenant)
    good.create_cube(CubeHeader(cube_id="c", owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
    first = item("first")
    good.add("c", [first])
    store = kind.from_uri(bolt_target.uri, auth=bolt_target.auth, database=bolt_target.database, tenant=tenant)
    store.setup()
    a, b = item("a"), item("b")
    batch = WriteBatch(
        add=[a, b],
        update=[first.model_copy(update={"text": "changed"})],
        edges=[Edge(source_id=a.id, target_id=b.id, type=RelationType.FOLLOWS)],
    )
    with pytest.raises((StoreError, RuntimeError)):
        store.apply("c", batch)
    assert good.count("c") == 1
    assert good.get("c", [first.id])[0].text == "first" and good.get("c", [first.id])[0].version == 1
    assert good.get_edges("c") == []
    # the cube's counters were rolled back too: the next write continues the insertion order
    c = item("c")
    good.add("c", [c])
    assert [i.id for i in good.list_items("c")] == [first.id, c.id]
    store.close()
    good.close()


def test_migrations_are_recorded_and_newer_schemas_refused(bolt_target: BoltTarget) -> None:
    rows = raw(bolt_target, "MATCH (m:MemosMigration) RETURN m.version AS v, m.applied_at AS t")
    assert [r["v"] for r in rows] == list(range(1, SCHEMA_VERSION + 1)) and all(r["t"] for r in rows)
    raw(bolt_target, "CREATE (:MemosMigration {version: 999})")
    try:
        with pytest.raises(StoreError, match="newer"):
            open_store(bolt_target)
    finally:
        raw(bolt_target, "MATCH (m:MemosMigration {version: 999}) DELETE m")
    open_store(bolt_target).close()


def test_capabilities_are_detected(neo4j_store: Neo4jMemoryStore, bolt_target: BoltTarget) -> None:
    caps = neo4j_store.capabilities
    assert caps.native_async and not caps.chunked_import
    if bolt_target.name == "arcadedb":  # no vector or full-text index, raw cosine
        assert (caps.vector_search, caps.text_search, neo4j_store._cosine_normalized) == ("exact", "bm25", False)
    else:  # Neo4j 5.x: both indexes, cosine scaled to [0, 1]
        assert (caps.vector_search, caps.text_search, neo4j_store._cosine_normalized) == ("index", "index", True)


def test_tenants_share_a_database_without_seeing_each_other(bolt_target: BoltTarget) -> None:
    one, two = open_store(bolt_target), open_store(bolt_target)
    for store, text in ((one, "lisbon flat"), (two, "lisbon office")):
        store.create_cube(CubeHeader(cube_id="same", owner_id="alice"))
        store.add("same", [item(text)])
    assert [i.text for i in one.list_items("same")] == ["lisbon flat"]
    assert [i.text for i in two.list_items("same")] == ["lisbon office"]
    assert [c.cube_id for c in one.list_cubes()] == ["same"]
    one.delete_cube("same")
    assert two.count("same") == 1
    one.close()
    two.close()


def test_async_twins_use_the_async_driver(neo4j_store: Neo4jMemoryStore, cube: str) -> None:
    async def scenario() -> None:
        assert neo4j_store._loop_driver() is not None  # native async, not a worker thread
        a = item("async kites", 3)
        await neo4j_store.aadd(cube, [a])
        assert await neo4j_store.arun(CountOp(cube)) == 1
        assert (await neo4j_store.atext_search(cube, "kites", 3))[0][0] == a.id
        assert (await neo4j_store.avector_search(cube, vec(3), 1))[0][0] == a.id
        _, listed, n = await neo4j_store.abatch([RecordEventOp(cube, "k", {"x": 1}), ListOp(cube), CountOp(cube)])
        assert [i.id for i in listed] == [a.id] and n == 1
        await neo4j_store.aclose()

    asyncio.run(scenario())


def test_bad_uri_and_unreachable_server_are_typed() -> None:
    for bad in ("http://nowhere:1", "nowhere:7687", "ftp://x:1"):
        with pytest.raises(ConfigError):
            Neo4jMemoryStore.from_uri(bad)
    store = Neo4jMemoryStore.from_uri("bolt://127.0.0.1:9", auth=("u", "p"), connection_timeout=2)
    with pytest.raises(StoreError):
        store.setup()
    with pytest.raises(StoreError, match="setup"):
        store.count("c")


def test_bm25_ranks_like_the_embedded_store(bolt_target: BoltTarget, tmp_path: Path) -> None:
    texts = [
        "Melanie painted a sunrise over the lake last year",
        "Caroline went hiking with friends near the lake",
        "Melanie: painting sunsets and sunrises is relaxing",
        "The support group meets on Tuesdays; Caroline goes every week",
        "Painted pottery, painted bowls, a painting class with the kids",
        "Zoë's café serves crêpes",
    ]
    items = [item(t) for t in texts]
    lite = SQLiteMemoryStore(tmp_path / "m.db")
    lite.setup()
    graph = Neo4jMemoryStore.from_uri(
        bolt_target.uri,
        auth=bolt_target.auth,
        database=bolt_target.database,
        tenant=new_tenant(),
        use_fulltext_index=False,
    )
    graph.setup()
    other = item("Melanie paints sunrises every lake morning, painting painting painting")
    for store in (lite, graph):  # another cube's content must not change this cube's ranking
        store.create_cube(CubeHeader(cube_id="other", owner_id="bob"))
        store.add("other", [other])
    for store in (lite, graph):
        store.create_cube(CubeHeader(cube_id="c", owner_id="alice"))
        store.add("c", items)
    for query in ("When did Melanie paint a sunrise?", "lake hiking", "painted bowls class", "zoe cafe crepes"):
        a, b = lite.text_search("c", query, 10), graph.text_search("c", query, 10)
        assert [i for i, _ in a] == [i for i, _ in b], query
        assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-6), query
    graph.close()
    lite.close()


def neo4j_options(target: BoltTarget) -> list[str]:
    """The `memos` options (before the command) that point at a Bolt server."""
    return [
        "--neo4j-uri",
        target.uri,
        "--neo4j-user",
        target.auth[0],
        "--neo4j-password",
        target.auth[1],
        *(["--neo4j-database", target.database] if target.database else []),
    ]


def memos_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memos_agents", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "160"},
    )


@pytest.mark.smoke
def test_cube_round_trips_sqlite_neo4j_sqlite_exactly(bolt_target: BoltTarget, tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path / "src", **PRESET_OFFLINE) as mos:
        mos.create_cube("notes", "alice", description="round trip")
        turns = [
            {"name": n, "content": c, "id": f"D1:{k}", "session_id": "s1", "timestamp": T0}
            for k, (n, c) in enumerate(
                [
                    ("Alice", "I adopted a cat named Pixel."),
                    ("Bob", "Pixel is a lovely name! Does she like tuna?"),
                    ("Alice", "She loves tuna and sleeping on my keyboard."),
                    ("Bob", "Classic cat. I moved to Lisbon in May."),
                ],
                1,
            )
        ]
        mos.add(turns, "alice", "notes")
        for n, session in enumerate(("s2", "s3"), 2):  # the same single turn twice: merged, originals archived
            mos.add([{**turns[0], "id": f"D{n}:1", "session_id": session}], "alice", "notes")
        mos.store.record_event("notes", "note", {"x": 1})
        n = mos.store.count("notes")
    store_opts = ["--store", "neo4j", *neo4j_options(bolt_target), "--neo4j-tenant", new_tenant()]
    home = ["--home", str(tmp_path / "src")]
    steps = [
        ["cube", "export", "notes", "a.zip", "--user", "alice", *home],
        [*store_opts, "cube", "import", "a.zip", "--user", "alice"],
        [*store_opts, "cube", "export", "notes", "b.zip", "--user", "alice"],
        ["cube", "import", "b.zip", "--user", "alice", "--home", str(tmp_path / "dst")],
        ["cube", "export", "notes", "c.zip", "--user", "alice", "--home", str(tmp_path / "dst")],
    ]
    for step in steps:
        run = memos_cli(*step, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
    a, b, c = (read_archive(tmp_path / f"{x}.zip") for x in "abc")
    assert len(a.items) == n and any(e.type == RelationType.MERGED_TO for e in a.edges)
    for other in (b, c):
        assert [i.model_dump() for i in other.items] == [i.model_dump() for i in a.items]
        assert [e.model_dump() for e in other.edges] == [e.model_dump() for e in a.edges]
        assert other.header.model_dump(exclude={"storage"}) == a.header.model_dump(exclude={"storage"})
    assert b.header.storage.backend == "Neo4jMemoryStore" and c.header.storage.backend == "SQLiteMemoryStore"


def test_memos_facade_on_neo4j(bolt_target: BoltTarget, tmp_path: Path) -> None:
    with MemOS.from_path(
        tmp_path,
        **PRESET_OFFLINE,
        store={
            "backend": "neo4j",
            "uri": bolt_target.uri,
            "user": bolt_target.auth[0],
            "password": bolt_target.auth[1],
            "database": bolt_target.database,
            "tenant": new_tenant(),
        },
    ) as mos:
        assert isinstance(mos.store, Neo4jMemoryStore)
        mos.create_cube("notes", "alice")
        facts = [
            "I moved to Lisbon in May.",
            "My sister teaches piano in Porto.",
            "Our dog Rex hates thunderstorms.",
            "I started a pottery class on Tuesdays.",
            "Bob recommended a sci-fi novel about Mars.",
            "We painted the kitchen yellow last spring.",
        ]
        for n, fact in enumerate(facts):
            mos.add([{"name": "Alice", "content": fact, "id": f"m{n}"}], "alice", "notes")
        hits = mos.search("Which city did Alice move to, Lisbon?", "alice", ["notes"], top_k=1)
        assert hits and "Lisbon" in hits[0].item.text
        assert mos.store.count("notes", SearchFilters()) == len(facts)


def test_config_requires_a_uri_for_neo4j(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        MemOS.from_path(tmp_path, **PRESET_OFFLINE, store={"backend": "neo4j"})


@pytest.mark.smoke
def test_bench_compares_stores(bolt_target: BoltTarget, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    locomo = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"
    run = memos_cli(
        *neo4j_options(bolt_target),
        "bench",
        "locomo",
        "--data",
        str(locomo),
        "--conversations",
        "1",
        "--embedder",
        "hashing",
        "--k",
        "5,10",
        "--store",
        "sqlite,neo4j",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    neo = comparison["stores"]["neo4j"]
    assert comparison["baseline"] == "sqlite"
    assert all(abs(d) <= 0.01 for d in neo["recall_at_delta"].values())  # retrieval logic is shared
    assert neo["ingest_ratio"] > 0 and neo["search_p50_ratio"] > 0
    sqlite_results = json.loads((out / "sqlite" / "results.json").read_text())
    neo_results = json.loads((out / "neo4j" / "results.json").read_text())
    assert sqlite_results["questions"] == neo_results["questions"] > 100
    assert neo_results["setup"]["store"] == "Neo4jMemoryStore"
    assert (out / "comparison.md").read_text().startswith("# Store comparison")


def test_two_instances_on_one_tenant_lose_no_write(bolt_target: BoltTarget) -> None:
    """Two MemOS instances (own drivers) on one tenant, writing first turns of shared sessions at once."""
    import threading

    sessions = 4

    def turn(writer: str, n: int) -> list[dict[str, object]]:
        text = f"Writer {writer} says note number {n} about kites and {writer}-{n * 7919}."
        return [{"role": "user", "name": "Alice", "content": text, "id": f"{writer}:{n}", "session_id": f"s{n % 4}"}]

    tenant = new_tenant()
    stores = [open_store(bolt_target, tenant) for _ in range(2)]
    instances = [MemOS.from_path(Path("/nonexistent-home"), store=s, **PRESET_OFFLINE) for s in stores]
    instances[0].create_cube("c1", "alice")
    ids: list[str] = []
    errors: list[BaseException] = []

    def write(mos: MemOS, writer: str) -> None:
        try:
            for n in range(10):
                ids.extend(mos.add(turn(writer, n), "alice", "c1").ids)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(m, f"w{k}")) for k, m in enumerate(instances)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    memories = [i for i in stores[0].list_items("c1") if i.node_kind.value == "memory"]
    assert sorted(i.id for i in memories) == sorted(ids) and len(ids) == 20
    assert stores[0].count("c1", SearchFilters(node_kinds=[NodeKind.TOPIC])) == sessions
    follows = stores[0].get_edges("c1", types=[RelationType.FOLLOWS])
    assert len(follows) == len(ids) - sessions
    assert len({e.source_id for e in follows}) == len(follows) and len({e.target_id for e in follows}) == len(follows)
    for store in stores:
        store.close()
