"""MemOSRetriever: nodes with memory ids, scores and metadata, sync and async, settings, refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.memory.memos import MemOSRetriever

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError, PermissionDeniedError

pytestmark = pytest.mark.unit

FACTS = [
    "My cat is called Pixel.",
    "My dog is called Rex and he loves the beach.",
    "I moved to Lisbon in May.",
]


@pytest.fixture
def filled(mos: MemOS) -> MemOS:
    """Return the MemOS with three one-message memories in c1 (ids m0-m2, May 2024, session s-1)."""
    for n, fact in enumerate(FACTS):
        mos.add(
            [{"role": "user", "content": fact, "id": f"m{n}", "timestamp": datetime(2024, 5, n + 1, tzinfo=UTC)}],
            user_id="alice",
            cube_id="c1",
            session_id="s-1",
        )
    return mos


def test_retrieve_returns_nodes_as_memos_search_ranks_them(filled: MemOS) -> None:
    """Nodes carry the memory ids and scores of MemOS's search, best first."""
    retriever = MemOSRetriever(filled, user_id="alice", cube_ids=["c1"])
    nodes = retriever.retrieve("What is my cat called?")
    expected = filled.search("What is my cat called?", user_id="alice", cube_ids=["c1"])
    assert len(nodes) == len(expected) == len(FACTS)
    assert [n.node.node_id for n in nodes] == [r.item.id for r in expected]
    assert [n.score for n in nodes] == [r.score for r in expected]
    assert nodes[0].node.get_content() == "user: My cat is called Pixel."
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    assert [n.score for n in nodes] == sorted((n.score or 0.0 for n in nodes), reverse=True)


def test_node_metadata(filled: MemOS) -> None:
    """Node metadata: cube, memory type, key, tags, sources, times, published."""
    top = MemOSRetriever(filled, user_id="alice", cube_ids=["c1"], similarity_top_k=1).retrieve("Pixel the cat")[0]
    item = filled.get(top.node.node_id, user_id="alice", cube_id="c1")
    meta = top.node.metadata
    assert meta["cube_id"] == "c1"
    assert meta["memory_type"] == "LongTermMemory"
    assert meta["sources"] == {"message_ids": ["m0"], "session_ids": ["s-1"], "speakers": ["user"]}
    assert meta["tags"] == item.tags and meta["tags"]
    assert meta["key"] == item.key == "called pixel"
    assert meta["event_time"] == "2024-05-01T00:00:00+00:00"  # the message's timestamp
    assert datetime.fromisoformat(meta["created_at"]) == item.created_at
    assert datetime.fromisoformat(meta["updated_at"]) == item.updated_at
    assert meta["published"] is None
    # what an LLM sees: the text and the event time, not the bookkeeping; embeddings see the text only
    assert top.node.get_content(MetadataMode.LLM) == f"event_time: {meta['event_time']}\n\n{item.text}"
    assert top.node.get_content(MetadataMode.EMBED) == item.text


def test_aretrieve_matches_retrieve(filled: MemOS) -> None:
    """The native async path returns what the sync one does."""
    retriever = MemOSRetriever(filled, user_id="alice", cube_ids=["c1"])
    sync = retriever.retrieve("Where do I live?")
    async_ = asyncio.run(retriever.aretrieve("Where do I live?"))
    assert [(n.node.node_id, n.score, n.node.metadata) for n in async_] == [
        (n.node.node_id, n.score, n.node.metadata) for n in sync
    ]
    assert "Lisbon" in sync[0].node.get_content()


def test_top_k_filters_budget_and_default_cubes(filled: MemOS) -> None:
    """similarity_top_k, filters, token_budget and the default cubes reach MemOS's search."""
    assert len(MemOSRetriever(filled, "alice", ["c1"], similarity_top_k=2).retrieve("my pets")) == 2
    no_tags = MemOSRetriever(filled, "alice", ["c1"], filters={"tags_any": ["no-such-tag"]})
    assert no_tags.retrieve("my pets") == []
    tagged = filled.search("Pixel", user_id="alice", cube_ids=["c1"], top_k=1)[0].item
    by_tag = MemOSRetriever(filled, "alice", ["c1"], filters={"tags_any": [tagged.tags[0]]}).retrieve("my pets")
    assert tagged.id in {n.node.node_id for n in by_tag}
    assert all(tagged.tags[0] in n.node.metadata["tags"] for n in by_tag)
    assert MemOSRetriever(filled, "alice", ["c1"], token_budget=3).retrieve("my pets") == []
    own = MemOSRetriever(filled, "alice").retrieve("my pets")  # no cube_ids: alice's own cubes
    assert {n.node.metadata["cube_id"] for n in own} == {"c1"} and len(own) == len(FACTS)


def test_another_users_cube_is_refused(filled: MemOS) -> None:
    """Searching Bob's cube as Alice raises PermissionDeniedError, sync and async."""
    retriever = MemOSRetriever(filled, user_id="alice", cube_ids=["c2"])
    with pytest.raises(PermissionDeniedError):
        retriever.retrieve("What is in Bob's cube?")
    with pytest.raises(PermissionDeniedError):
        asyncio.run(retriever.aretrieve("What is in Bob's cube?"))


def test_bad_input_raises_invalid_input(filled: MemOS) -> None:
    """Malformed query and arguments are refused with InvalidInputError."""
    retriever = MemOSRetriever(filled, user_id="alice", cube_ids=["c1"])
    with pytest.raises(InvalidInputError):
        retriever.retrieve("   ")
    with pytest.raises(InvalidInputError, match="cube_ids"):
        MemOSRetriever(filled, user_id="alice", cube_ids="c1")
    with pytest.raises(InvalidInputError, match="similarity_top_k"):
        MemOSRetriever(filled, user_id="alice", similarity_top_k=0)
    with pytest.raises(InvalidInputError, match="user_id"):
        MemOSRetriever(filled, user_id="")
    with pytest.raises(InvalidInputError, match="filters"):
        MemOSRetriever(filled, user_id="alice", filters={"time_from": "yesterday"})
