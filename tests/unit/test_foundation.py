"""The foundation's contracts seen from the facade: the caller reaches the store, async is native,
the tree plan is pure, control flow never rides in user metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from memos_agents import CallContext, MemoryOrigin, MemOS
from memos_agents.api import AddResult
from memos_agents.config import PRESET_OFFLINE
from memos_agents.cube import AclEntry, Permission
from memos_agents.errors import InvalidInputError, PermissionDeniedError
from memos_agents.plaintext.stores.base import SYSTEM, Op
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.plaintext.tree import TreeOrganizer, TreeSnapshot
from memos_agents.schema import MemoryItem, NodeKind

pytestmark = pytest.mark.unit


def turn(text: str, n: int = 1, session: str = "s1") -> list[dict[str, object]]:
    return [{"role": "user", "name": "Alice", "content": text, "id": f"m{n}", "session_id": session}]


class RecordingStore(SQLiteMemoryStore):
    """Records every batch's caller and whether it came through the sync or the async path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, str, list[str]]] = []

    def batch(self, ops: Sequence[Op], *, ctx: CallContext = SYSTEM) -> list[Any]:
        self.calls.append(("sync", ctx.principal, [type(o).__name__ for o in ops]))
        return super().batch(ops, ctx=ctx)

    async def abatch(self, ops: Sequence[Op], *, ctx: CallContext = SYSTEM) -> list[Any]:
        self.calls.append(("async", ctx.principal, [type(o).__name__ for o in ops]))
        return super().batch(ops, ctx=ctx)  # not batch(): that would record a sync call


@pytest.fixture
def recorded(tmp_path: Path) -> Any:
    store = RecordingStore(tmp_path / "m.db")
    with MemOS.from_path(tmp_path, store=store, **PRESET_OFFLINE) as mos:
        mos.create_cube("c1", "alice")
        store.calls.clear()
        yield mos, store


def test_every_store_batch_carries_the_caller(recorded: Any) -> None:
    mos, store = recorded
    mos.add(turn("I moved to Lisbon in May."), "alice", "c1")
    mos.search("Where does Alice live?", "alice", ["c1"])
    assert store.calls and {principal for _, principal, _ in store.calls} == {"alice"}
    write = [ops for _, _, ops in store.calls if "WriteOp" in ops]
    assert write == [["WriteOp"]]  # the tree update is one batch: one transaction
    searches = [ops for _, _, ops in store.calls if "VectorSearchOp" in ops and "TextSearchOp" in ops]
    # dense and BM25 of every cube: one batch, which also reads the caller's MemStore subscriptions (labels)
    assert searches == [["VectorSearchOp", "TextSearchOp", "ListSubscriptionsOp"]]


def test_async_twins_take_the_stores_async_path_and_agree_with_sync(recorded: Any) -> None:
    mos, store = recorded

    async def scenario() -> tuple[AddResult, list[str]]:
        added = await mos.aadd(turn("I adopted a cat named Miso."), "alice", "c1")
        hits = await mos.asearch("What is the cat called?", "alice", ["c1"], top_k=3)
        return added, [h.item.id for h in hits]

    added, async_hits = asyncio.run(scenario())
    assert {path for path, _, _ in store.calls} == {"async"}
    sync_hits = [h.item.id for h in mos.search("What is the cat called?", "alice", ["c1"], top_k=3)]
    assert async_hits == sync_hits and added.ids[0] in async_hits
    with pytest.raises(InvalidInputError):
        asyncio.run(mos.asearch("q", "alice", "c1"))  # type: ignore[arg-type]


def test_a_service_account_writes_for_a_user(tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as mos:
        mos.create_cube("bob-notes", "bob", acl=[AclEntry(principal="svc", permissions=[Permission.WRITE])])
        result = mos.add(turn("Bob prefers green tea."), "svc", "bob-notes", subject_id="bob")
        item = mos.get(result.ids[0], "bob", "bob-notes")
        assert (item.user_id, item.author_id) == ("bob", "svc")  # about bob, written by svc
        with pytest.raises(PermissionDeniedError):
            mos.add(turn("Mallory was here."), "mallory", "bob-notes", subject_id="bob")
        with pytest.raises(PermissionDeniedError):
            mos.search("tea", "mallory", ["bob-notes"])


def test_user_metadata_does_not_steer_the_memory_os(tmp_path: Path) -> None:
    """A stored ``metadata={"turns": 3, "lines_match_sources": True}`` changes no behaviour."""
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as mos:
        mos.create_cube("c1", "alice")
        direct = MemoryItem(
            text="Alice: one\nAlice: two",
            metadata={"turns": 3, "lines_match_sources": True, "extracted_by": "me"},
            embedding=mos.reader.embed(["Alice: one\nAlice: two"])[0].tolist(),
        )
        mos.store.add("c1", [direct])
        (stored,) = mos.store.get("c1", [direct.id])
        assert (stored.origin, stored.turns) == (MemoryOrigin.DIRECT, 0)
        assert stored.metadata == direct.metadata  # kept as the user's data, never read by the code
        windows = mos.add(turn("Alice: three", 1) + turn("four", 2), "alice", "c1")
        (window,) = mos.store.get("c1", windows.ids[:1])
        assert (window.origin, window.turns, window.metadata) == (MemoryOrigin.TURNS, 2, {})


def test_organize_is_pure() -> None:
    items = [
        MemoryItem(
            text=f"Alice: I love painting sunsets at the lake{'!' if n else '.'}",
            embedding=[1.0, 0.0],
            origin=MemoryOrigin.TURNS,
            turns=1,
            user_id="alice",
        )
        for n in range(2)
    ]
    before = [i.model_copy(deep=True) for i in items]
    update = TreeOrganizer().organize(items, [], TreeSnapshot())
    assert items == before  # nothing of the caller's changed
    assert update.merged == 2 and len(update.memory_ids) == 3  # two originals and their merge
    assert [i.node_kind for i in update.batch.ensure] == [NodeKind.TOPIC]
    assert [f.item_id for f in update.batch.follows] == [items[0].id]


def test_the_facade_runs_on_the_in_memory_store(tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path, store=InMemoryStore(), **PRESET_OFFLINE) as mos:
        mos.create_cube("c1", "alice")
        added = mos.add(turn("I moved to Lisbon in May."), "alice", "c1")
        assert [h.item.id for h in mos.search("Where did Alice move?", "alice")] == added.ids
        assert mos.stats("c1", "alice").topics == 1
