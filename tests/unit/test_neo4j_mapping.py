"""Pure helpers of the Neo4j store: property flattening, whitelists, query building (no server)."""

import sqlite3

import pytest

from memos_agents.errors import InvalidInputError
from memos_agents.plaintext.stores.neo4j import (
    filter_cypher,
    item_from_properties,
    item_properties,
    lucene_query,
    node_labels,
    relation_type,
)
from memos_agents.plaintext.text import bm25_query_terms, bm25_terms
from memos_agents.schema import MemoryItem, MemoryType, NodeKind, RelationType, SearchFilters, Sources
from memos_agents.testing.conformance import T0, vec

pytestmark = pytest.mark.unit


def test_properties_are_flat_and_round_trip_exactly() -> None:
    original = MemoryItem(
        text="Caroline: I went to a LGBTQ support group yesterday.",
        memory_type=MemoryType.USER,
        node_kind=NodeKind.TOPIC,
        key="support group",
        tags=["lgbtq", "group"],
        sources=Sources(message_ids=["D1:3"], session_ids=["session_1"], speakers=["Caroline"]),
        user_id="alice",
        event_time=T0,
        confidence=0.75,
        metadata={"role": "user", "n": 3, "ok": True, "x": 1.5, "none": None},
        embedding=vec(1, 2),
        cube_id="c",
        version=4,
    )
    props = item_properties(original, "tenant-a", 7)
    assert all(not isinstance(v, dict) for v in props.values())  # Neo4j refuses nested maps
    assert all(not isinstance(x, dict | list) for v in props.values() if isinstance(v, list) for x in v)
    assert props["tenant"] == "tenant-a" and props["seq"] == 7 and props["event_us"] is not None
    assert props["doc_len"] == len(props["terms"]) > 0
    assert item_from_properties(props).model_dump() == original.model_dump()


def test_whitelists() -> None:
    assert relation_type(RelationType.MERGED_TO) == "MERGED_TO" and relation_type("FOLLOWS") == "FOLLOWS"
    for bad in ("follows", "FOLLOWS]->(x) DETACH DELETE x //", "KNOWS", "", "PARENT|FOLLOWS"):
        with pytest.raises(InvalidInputError):
            relation_type(bad)
    assert node_labels(NodeKind.TOPIC) == "Memory:Topic" and node_labels("memory") == "Memory"
    with pytest.raises(InvalidInputError):
        node_labels("Memory) DETACH DELETE (n")


def test_filters_are_parameters() -> None:
    where, params = filter_cypher(SearchFilters(user_id="x' OR 1=1 //", tags_any=["a"], time_from=T0))
    assert "x'" not in where and "$f_user" in where and params["f_user"] == "x' OR 1=1 //"
    assert filter_cypher(None) == ("", {})


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
