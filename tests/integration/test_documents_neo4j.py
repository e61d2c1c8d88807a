"""Documents, the message log and LangGraph's MemOSStore on the Neo4j store (a real Bolt server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE, MemOSConfig
from memos_agents.errors import PermissionDeniedError
from memos_agents.plaintext.documents import DocumentWrite
from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore


def test_documents_messages_and_memos_store_on_neo4j(neo4j_store: Neo4jMemoryStore, tmp_path: Path) -> None:
    from langgraph_memos import MemOSStore

    mos = MemOS(MemOSConfig(home=tmp_path, **PRESET_OFFLINE), store=neo4j_store)
    docs = mos.documents
    ns = ("memories", "alice")
    docs.write(
        [DocumentWrite(ns, "k", {"content": "Alice likes tea", "n": [1, {"x": None}]}, text="tea", embed=True)],
        user_id="agent",
    )
    (again,) = docs.write(
        [DocumentWrite(ns, "k", {"content": "Alice likes green tea"}, text="green tea", embed=True)], user_id="agent"
    )
    assert again is not None and again.version == 2
    (got,) = docs.get([(ns, "k")], user_id="agent")
    assert got is not None and got.value == {"content": "Alice likes green tea"}
    assert docs.search([ns], user_id="agent", query="green tea")[0].key == "k"
    assert docs.get([(ns, "k")], user_id="eve") == [None]  # not hers: reads as absent
    with pytest.raises(PermissionDeniedError):
        docs.write([DocumentWrite(ns, "k", {"x": 1})], user_id="eve")

    mos.messages.append(
        "s1", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], user_id="alice"
    )
    assert [m.content for m in mos.messages.list("s1", user_id="alice")] == ["hi", "hello"]

    store = MemOSStore(mos, user_id="agent")
    store.put(("users", "bob"), "prefs", {"theme": "dark", "size": 3})
    assert store.get(("users", "bob"), "prefs").value == {"theme": "dark", "size": 3}  # type: ignore[union-attr]
    assert [i.key for i in store.search(("users",), filter={"size": {"$gte": 3}})] == ["prefs"]
    assert store.list_namespaces() == [("users", "bob")]  # the store's prefix (lg) keeps mos.documents' (ns) apart

    async def run() -> None:
        await store.aput(("users", "bob"), "more", {"theme": "light"})
        assert {i.key for i in await store.asearch(("users", "bob"), query="light theme")} == {"prefs", "more"}

    asyncio.run(run())
    store.delete(("users", "bob"), "prefs")
    store.delete(("users", "bob"), "more")
    assert store.list_namespaces() == []
    assert docs.list_namespaces(user_id="agent") == [ns]
