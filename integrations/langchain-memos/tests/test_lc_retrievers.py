from __future__ import annotations

from datetime import UTC, datetime

import pytest
from langchain_core.documents import Document
from langchain_memos import MemOSRetriever, memory_to_document
from pydantic import ValidationError

from memos_agents import MemoryItem, MemoryType, MemOS, ScoredMemory, SearchFilters
from memos_agents.errors import CubeNotFoundError, InvalidInputError, PermissionDeniedError

pytestmark = pytest.mark.unit


def _retriever(mos: MemOS, **kwargs: object) -> MemOSRetriever:
    return MemOSRetriever(mos=mos, user_id="alice", cube_ids=["c1"], **kwargs)


def test_invoke_returns_memories_as_documents(seeded: MemOS) -> None:
    docs = _retriever(seeded).invoke("Which city does Alice live in? Lisbon")
    assert docs and all(isinstance(d, Document) for d in docs)
    assert docs[0].page_content == "Alice lives in Lisbon."
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    stored = seeded.get(docs[0].id, "alice", "c1")  # the document id is the memory id
    assert stored.text == docs[0].page_content


@pytest.mark.asyncio
async def test_ainvoke_matches_invoke(seeded: MemOS) -> None:
    retriever = _retriever(seeded, k=4)
    sync_docs = retriever.invoke("cello quartet")
    async_docs = await retriever.ainvoke("cello quartet")
    assert [d.id for d in async_docs] == [d.id for d in sync_docs]
    assert async_docs[0].page_content == "Alice plays the cello in a quartet."


def test_k_field_and_invoke_kwarg(seeded: MemOS) -> None:
    assert len(_retriever(seeded).invoke("Alice")) == 10  # the default k
    retriever = _retriever(seeded, k=3)
    assert len(retriever.invoke("Alice")) == 3
    assert len(retriever.invoke("Alice", k=5)) == 5  # the kwarg wins for that call only
    assert len(retriever.invoke("Alice")) == 3


@pytest.mark.asyncio
async def test_k_invoke_kwarg_async(seeded: MemOS) -> None:
    assert len(await _retriever(seeded, k=3).ainvoke("Alice", k=2)) == 2


def test_bad_k_is_refused(seeded: MemOS) -> None:
    with pytest.raises(ValidationError):
        _retriever(seeded, k=0)
    with pytest.raises(InvalidInputError, match="top_k"):
        _retriever(seeded).invoke("Alice", k=0)


def test_metadata(seeded: MemOS) -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    seeded.add(
        [{"role": "user", "name": "Alice", "content": "Alice adopted a parrot.", "id": "m-7", "timestamp": when}],
        user_id="alice",
        cube_id="c1",
        session_id="s-1",
        mode="facts",
    )
    doc = _retriever(seeded, k=1).invoke("adopted a parrot")[0]
    meta = doc.metadata
    assert doc.page_content == "Alice adopted a parrot."
    assert set(meta) == {
        "score",
        "cube_id",
        "memory_type",
        "sources",
        "created_at",
        "updated_at",
        "event_time",
        "tags",
        "key",
        "tokens",
    }
    assert isinstance(meta["score"], float)
    assert meta["cube_id"] == "c1"
    assert meta["memory_type"] == "LongTermMemory"
    assert meta["sources"] == {"message_ids": ["m-7"], "session_ids": ["s-1"], "speakers": ["Alice"]}
    assert datetime.fromisoformat(meta["event_time"]) == when
    created, updated = datetime.fromisoformat(meta["created_at"]), datetime.fromisoformat(meta["updated_at"])
    assert created.tzinfo is not None and updated >= created
    assert meta["tags"] and all(isinstance(t, str) for t in meta["tags"])
    assert meta["key"] == meta["tags"][0]
    assert isinstance(meta["tokens"], int) and meta["tokens"] > 0


def test_metadata_event_time_unset_and_published() -> None:
    item = MemoryItem(text="A fact.", cube_id="shared", tags=["fact"])
    doc = memory_to_document(ScoredMemory(item=item, score=0.5, tokens=3, published="team-facts@1.0.0"))
    assert doc.metadata["event_time"] is None
    assert doc.metadata["published"] == "team-facts@1.0.0"
    assert doc.id == item.id


def test_filters_field_and_kwarg(seeded: MemOS) -> None:
    target = _retriever(seeded, k=1).invoke("green tea")[0]
    seeded.update(target.id, "alice", "c1", memory_type=MemoryType.USER)
    only_user = {"memory_types": ["UserMemory"]}
    docs = _retriever(seeded, filters=only_user).invoke("Alice")
    assert [d.id for d in docs] == [target.id]
    assert docs[0].metadata["memory_type"] == "UserMemory"
    assert isinstance(_retriever(seeded, filters=only_user).filters, SearchFilters)  # dict converted
    by_kwarg = _retriever(seeded).invoke("Alice", filters=SearchFilters(memory_types=[MemoryType.USER]))
    assert [d.id for d in by_kwarg] == [target.id]
    long_term = _retriever(seeded, filters={"memory_types": ["LongTermMemory"]}).invoke("green tea")
    assert target.id not in {d.id for d in long_term}


def test_invalid_filters_are_refused(seeded: MemOS) -> None:
    with pytest.raises(ValidationError):
        _retriever(seeded, filters={"no_such_field": 1})


def test_token_budget(seeded: MemOS) -> None:
    unbudgeted = _retriever(seeded).invoke("Alice")
    budget = sum(d.metadata["tokens"] for d in unbudgeted[:2])
    budgeted = _retriever(seeded, token_budget=budget).invoke("Alice")
    assert 1 <= len(budgeted) < len(unbudgeted)
    assert sum(d.metadata["tokens"] for d in budgeted) <= budget
    per_call = _retriever(seeded).invoke("Alice", token_budget=budget)
    assert [d.id for d in per_call] == [d.id for d in budgeted]


def test_another_users_cube_is_refused(seeded: MemOS) -> None:
    intruder = MemOSRetriever(mos=seeded, user_id="bob", cube_ids=["c1"])
    with pytest.raises(PermissionDeniedError):
        intruder.invoke("Where does Alice live?")


@pytest.mark.asyncio
async def test_another_users_cube_is_refused_async(seeded: MemOS) -> None:
    intruder = MemOSRetriever(mos=seeded, user_id="bob", cube_ids=["c1"])
    with pytest.raises(PermissionDeniedError):
        await intruder.ainvoke("Where does Alice live?")


def test_without_cube_ids_only_own_cubes_are_searched(seeded: MemOS, alice_facts: list[str]) -> None:
    bob_docs = MemOSRetriever(mos=seeded, user_id="bob").invoke("Alice lives in Lisbon")
    assert bob_docs and all(d.metadata["cube_id"] == "b1" for d in bob_docs)
    alice_texts = {d.page_content for d in MemOSRetriever(mos=seeded, user_id="alice", k=20).invoke("Alice")}
    assert alice_texts == set(alice_facts)


def test_unknown_cube_and_empty_query(seeded: MemOS) -> None:
    with pytest.raises(CubeNotFoundError):
        MemOSRetriever(mos=seeded, user_id="alice", cube_ids=["nope"]).invoke("Alice")
    with pytest.raises(InvalidInputError):
        _retriever(seeded).invoke("   ")
