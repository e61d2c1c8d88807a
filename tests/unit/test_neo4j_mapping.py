"""Pure helpers of the Neo4j store: node properties, whitelists, query building (no server)."""

import sqlite3

import pytest

from memos_agents.errors import InvalidInputError
from memos_agents.plaintext.stores.codec import GRAPH_CODEC
from memos_agents.plaintext.stores.filters import Predicate, compile_filters
from memos_agents.plaintext.stores.neo4j import (
    ITEM_PROPERTIES,
    cypher_filter,
    lucene_query,
    node_labels,
    node_properties,
    relation_type,
)
from memos_agents.plaintext.text import bm25_query_terms, bm25_terms
from memos_agents.schema import (
    MemoryItem,
    MemoryOrigin,
    MemoryType,
    NodeKind,
    RelationType,
    SearchFilters,
    Sources,
)
from memos_agents.testing.conformance import T0, vec

pytestmark = pytest.mark.unit


def as_read(props: dict[str, object], with_embedding: bool = True) -> dict[str, object]:
    """What a read returns for a node written with ``props``: the projection of the codec's read columns.

    The server does not store ``None`` values, and a map projection of a missing property is null.
    """
    stored = {k: v for k, v in props.items() if v is not None}
    columns = (*GRAPH_CODEC.read_columns, *(("embedding",) if with_embedding else ()))
    return {c: stored.get(c) for c in columns}


def test_properties_are_flat_and_round_trip_exactly() -> None:
    original = MemoryItem(
        text="Caroline: I went to a LGBTQ support group yesterday.",
        memory_type=MemoryType.USER,
        node_kind=NodeKind.TOPIC,
        key="support group",
        tags=["lgbtq", "group"],
        sources=Sources(message_ids=["D1:3"], session_ids=["session_1"], speakers=["Caroline"]),
        user_id="alice",
        author_id="svc-reader",
        origin=MemoryOrigin.TURNS,
        turns=1,
        event_time=T0,
        confidence=0.75,
        metadata={"role": "user", "n": 3, "ok": True, "x": 1.5, "none": None},
        embedding=vec(1, 2),
        cube_id="c",
        version=4,
    )
    props = node_properties(original, "tenant-a", 7)
    assert all(not isinstance(v, dict) for v in props.values())  # Neo4j refuses nested maps
    assert all(not isinstance(x, dict | list) for v in props.values() if isinstance(v, list) for x in v)
    assert props["tenant"] == "tenant-a" and props["seq"] == 7 and props["event_us"] is not None
    assert props["doc_len"] == len(props["terms"]) > 0  # the BM25 terms are a node property
    assert (props["author_id"], props["origin"], props["turns"]) == ("svc-reader", "turns", 1)
    assert set(props) == {*GRAPH_CODEC.columns, "tenant", "seq"}
    assert GRAPH_CODEC.decode(as_read(props)).model_dump() == original.model_dump()
    assert GRAPH_CODEC.decode(as_read(props, with_embedding=False)).embedding is None
    plain = MemoryItem(text="x", cube_id="c")  # None-valued properties are not stored, and read back as None
    assert GRAPH_CODEC.decode(as_read(node_properties(plain, "t", 0))).model_dump() == plain.model_dump()


def test_nodes_written_before_origin_and_author_are_read() -> None:
    window = MemoryItem(text="Alice: hi\nBob: hello", cube_id="c", metadata={"turns": 2, "lines_match_sources": True})
    legacy = {k: v for k, v in node_properties(window, "t", 0).items() if k not in ("author_id", "origin", "turns")}
    got = GRAPH_CODEC.decode(as_read(legacy))
    assert (got.origin, got.turns, got.author_id, got.metadata) == (MemoryOrigin.TURNS, 2, None, {})


def test_property_names_in_cypher_are_plain_identifiers() -> None:
    assert {"status", "node_kind", "memory_type", "user_id", "event_us", "tags"} <= ITEM_PROPERTIES
    assert all(name.isidentifier() and name.islower() for name in ITEM_PROPERTIES)


def test_whitelists() -> None:
    assert relation_type(RelationType.MERGED_TO) == "MERGED_TO" and relation_type("FOLLOWS") == "FOLLOWS"
    for bad in ("follows", "FOLLOWS]->(x) DETACH DELETE x //", "KNOWS", "", "PARENT|FOLLOWS"):
        with pytest.raises(InvalidInputError):
            relation_type(bad)
    assert node_labels(NodeKind.TOPIC) == "Memory:Topic" and node_labels("memory") == "Memory"
    with pytest.raises(InvalidInputError):
        node_labels("Memory) DETACH DELETE (n")


def test_filters_are_parameters() -> None:
    flt = SearchFilters(user_id="x' OR 1=1 //", tags_any=["a"], time_from=T0, time_to=T0)
    where, params = cypher_filter(compile_filters(flt))
    assert "x'" not in where and "'a'" not in where
    assert where.startswith(" AND ") and "m.status IN $f0" in where and "m.node_kind IN $f1" in where
    assert "m.user_id = $f2" in where and "m.event_us >= $f3" in where and "m.event_us <= $f4" in where
    assert "any(tag IN m.tags WHERE tag IN $f5)" in where
    assert params["f2"] == "x' OR 1=1 //" and params["f5"] == ["a"] and isinstance(params["f0"], list)
    assert params["f3"] == params["f4"] == int(T0.timestamp() * 1_000_000)
    assert cypher_filter(compile_filters(None)) == ("", {})
    assert cypher_filter(compile_filters(SearchFilters()), var="d")[0].startswith(" AND d.status IN $f0")
    with pytest.raises(InvalidInputError):  # property names are never taken from outside the codec
        cypher_filter([Predicate("status = 1 OR true //", "eq", 1)])


def test_lucene_query_escapes_syntax() -> None:
    assert lucene_query("the and of") is None
    q = lucene_query('Melanie AND "paint*" OR sunrise~ NOT x:y')
    assert q == '"melanie" OR "paint" OR "sunrise"'
    assert lucene_query('back\\slash "quote"') == '"back" OR "slash" OR "quote"'


def test_bm25_terms_match_sqlite_fts5_porter_unicode61() -> None:
    texts = [
        "Melanie painted a sunrise over the lake last year; painting relaxes her.",
        "Caroline's LGBTQ support-group meets weekly — she's been going since 2022!",
        "Zoë's café serves crêpes and connections, connected, connecting.",
        "I/O, e-mail, state_of_the_art, x2 and 3D printing at 10:30pm",
    ]
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE f USING fts5(x, tokenize='porter unicode61')")
    con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'instance')")
    for n, text in enumerate(texts, 1):
        con.execute("INSERT INTO f(rowid, x) VALUES (?, ?)", (n, text))
        fts5 = [r[0] for r in con.execute("SELECT term FROM v WHERE doc = ? ORDER BY offset", (n,))]
        assert bm25_terms(text) == fts5, text
    assert bm25_query_terms("When did Melanie paint a sunrise?") == ["melani", "paint", "sunris"]
