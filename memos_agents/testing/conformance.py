"""Store conformance suite: every plaintext store backend must pass it.

Like ``langchain-tests`` and langgraph's checkpoint conformance: subclass
:class:`StoreConformanceTests` in your test module and provide a ``store`` fixture that yields a
set-up, empty-or-shared store; every test uses its own fresh cube ids::

    import pytest
    from memos_agents.testing.conformance import StoreConformanceTests

    class TestMyStore(StoreConformanceTests):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(...); s.setup(); yield s; s.close()

It includes the adversarial section (:mod:`memos_agents.testing.adversarial`): attacks by
outsiders, readers, revoked users and crafted values that every backend must refuse.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memos_agents.cube import AclEntry, CubeHeader, Permission, Role, StorageProfile
from memos_agents.errors import (
    CubeExistsError,
    CubeNotFoundError,
    EmbeddingDimensionError,
    InvalidEmbeddingError,
    InvalidInputError,
    ItemExistsError,
    MemoryNotFoundError,
    PermissionDeniedError,
    VersionConflictError,
)
from memos_agents.infra.audit import AuditOutcome
from memos_agents.plaintext.stores.base import (
    SYSTEM,
    BaseMemoryStore,
    CallContext,
    CountOp,
    CubeSnapshot,
    DeleteCubeOp,
    DeleteOp,
    EdgesOp,
    ExpandOp,
    FollowLink,
    GetCubeOp,
    GetOp,
    HistoryOp,
    ListCubesOp,
    ListExpiringOp,
    ListHotOp,
    ListIdleOp,
    ListOp,
    Op,
    RecordAccessOp,
    RecordEventOp,
    TextSearchOp,
    UpdateCubeOp,
    VectorSearchOp,
    WriteBatch,
    WriteOp,
)
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryType,
    NodeKind,
    RelationType,
    SearchFilters,
    Sources,
    Visibility,
)
from memos_agents.testing.adversarial import AdversarialTests
from memos_agents.testing.helpers import DIM, T0, item, vec
from memos_agents.testing.registry import RegistryTests
from memos_agents.testing.users import UserTests

__all__ = ["DIM", "T0", "AdversarialTests", "StoreConformanceTests", "item", "vec"]


@pytest.mark.conformance
class StoreConformanceTests(AdversarialTests, UserTests, RegistryTests):
    """The behaviour every :class:`BaseMemoryStore` must have. Provide a ``store`` fixture.

    It includes the adversarial section (:class:`~memos_agents.testing.adversarial.AdversarialTests`),
    the users section (:class:`~memos_agents.testing.users.UserTests`) and the MemStore registry
    section (:class:`~memos_agents.testing.registry.RegistryTests`).
    """

    # the ``store`` and ``cube`` (owned by "alice") fixtures: inherited from AdversarialTests

    def _other_cube(self, store: BaseMemoryStore) -> str:
        cube_id = "cube-" + uuid.uuid4().hex[:12]
        store.create_cube(CubeHeader(cube_id=cube_id, owner_id="bob", storage=StorageProfile(embedding_dim=DIM)))
        return cube_id

    # -- lifecycle and cubes -----------------------------------------------------------------------
    def test_setup_is_idempotent(self, store: BaseMemoryStore, cube: str) -> None:
        store.add(cube, [item("kept across setup")])
        store.setup()
        store.setup()
        assert store.count(cube) == 1

    def test_cube_crud(self, store: BaseMemoryStore, cube: str) -> None:
        header = store.get_cube(cube)
        assert header.owner_id == "alice" and header.storage.embedding_dim == DIM
        with pytest.raises(CubeExistsError):
            store.create_cube(header)
        assert cube in [h.cube_id for h in store.list_cubes()]
        updated = store.update_cube(header.model_copy(update={"description": "notes"}))
        assert updated.version == header.version + 1
        assert store.get_cube(cube).description == "notes"
        store.add(cube, [item("a")])
        store.delete_cube(cube)
        with pytest.raises(CubeNotFoundError):
            store.get_cube(cube)
        with pytest.raises(CubeNotFoundError):
            store.delete_cube(cube)

    def test_a_header_update_keeps_the_stored_dimension(self, store: BaseMemoryStore) -> None:
        cube_id = "cube-" + uuid.uuid4().hex[:12]
        store.create_cube(CubeHeader(cube_id=cube_id, owner_id="alice"))  # no dimension yet
        a = item("first vector")
        store.add(cube_id, [a])  # sets it
        store.update_cube(store.get_cube(cube_id).model_copy(update={"description": "renamed"}))
        assert [h for h, _ in store.vector_search(cube_id, vec(0), 3)] == [a.id]
        with pytest.raises(EmbeddingDimensionError):
            store.add(cube_id, [MemoryItem(text="other dimension", embedding=[1.0, 0.0])])
        with pytest.raises(InvalidInputError):
            store.get_edges(cube_id, direction="sideways")  # type: ignore[arg-type]

    def test_unknown_cube_is_refused(self, store: BaseMemoryStore) -> None:
        with pytest.raises(CubeNotFoundError):
            store.add("no-such-cube", [item("x")])
        with pytest.raises(CubeNotFoundError):
            store.get_cube("no-such-cube")

    # -- items -----------------------------------------------------------------------------------
    def test_roundtrip_is_exact(self, store: BaseMemoryStore, cube: str) -> None:
        original = MemoryItem(
            text="Caroline: I went to a LGBTQ support group yesterday.",
            memory_type=MemoryType.USER,
            key="lgbtq support group",
            tags=["lgbtq support group", "yesterday"],
            sources=Sources(message_ids=["D1:3"], session_ids=["session_1"], speakers=["Caroline"]),
            user_id="alice",
            event_time=T0,
            confidence=0.75,
            expires_at=T0 + timedelta(days=3, microseconds=7),
            metadata={"role": "user", "n": 3, "ok": True, "x": 1.5, "none": None},
            embedding=vec(1, 2),
        )
        before = datetime.now(UTC)
        store.add(cube, [original])
        (got,) = store.get(cube, [original.id], with_embeddings=True)
        exclude = {"embedding", "updated_at"}  # updated_at: when the store wrote it (MemVault's clock)
        assert got.model_dump(exclude=exclude) == original.model_copy(update={"cube_id": cube}).model_dump(
            exclude=exclude
        )
        assert before <= got.updated_at <= datetime.now(UTC)
        assert np.allclose(got.embedding or [], original.embedding or [])
        (plain,) = store.get(cube, [original.id])
        assert plain.embedding is None

    def test_documents_and_ttl_roundtrip_and_version(self, store: BaseMemoryStore, cube: str) -> None:
        doc = {"content": "Alice likes green tea", "nested": {"n": [1, 2.5, None, True]}, "é": "ünïcode ✓"}
        original = MemoryItem(text="Alice likes green tea", key="k/1", document=doc, ttl_s=90.5)
        store.add(cube, [original])
        (got,) = store.get(cube, [original.id])
        assert got.document == doc and got.ttl_s == 90.5
        changed = got.model_copy(update={"document": {"content": "changed"}, "ttl_s": None})
        store.update(cube, [changed])
        (got,) = store.get(cube, [original.id])
        assert (got.document, got.ttl_s, got.version) == ({"content": "changed"}, None, 2)
        (history,) = store.batch([HistoryOp(cube, original.id)])
        (old,) = [v for v in history if v.item.version == 1]
        assert old.item.document == doc  # MemVault keeps the document of every version

    def test_list_cubes_by_id_prefix(self, store: BaseMemoryStore) -> None:
        for cube_id in ("pfx.a", "pfx.a.b", "pfx.b", "pfy.a", "pf"):
            store.create_cube(CubeHeader(cube_id=cube_id, owner_id="alice"))
        (found,) = store.batch([ListCubesOp(id_prefix="pfx.a")])
        assert [h.cube_id for h in found] == ["pfx.a", "pfx.a.b"]
        (mine,) = store.batch([ListCubesOp(owner_id="bob", id_prefix="pfx.")])
        assert mine == []
        store.create_cube(CubeHeader(cube_id="pfx.ns", owner_id="alice", namespace=("memories", "alice")))
        spaces, plain = store.batch(
            [ListCubesOp(owner_id="alice", namespaced=True), ListCubesOp(owner_id="alice", namespaced=False)]
        )
        assert [h.cube_id for h in spaces] == ["pfx.ns"] and spaces[0].namespace == ("memories", "alice")
        assert [h.cube_id for h in plain] == ["pf", "pfx.a", "pfx.a.b", "pfx.b", "pfy.a"]
        header = store.get_cube("pfx.a")
        store.update_cube(header.model_copy(update={"owner_id": "carol"}))  # a handover moves the owner index
        (carols,) = store.batch([ListCubesOp(owner_id="carol")])
        assert [h.cube_id for h in carols] == ["pfx.a"]
        with pytest.raises(ItemExistsError):  # a typed refusal a writer can retry on
            store.add("pfx.a", [MemoryItem(id="x", text="one")])
            store.add("pfx.a", [MemoryItem(id="x", text="two")])

    def test_list_expiring_uses_expiry_state_and_read_scope(self, store: BaseMemoryStore, cube: str) -> None:
        now = datetime.now(UTC)
        at = {n: now + timedelta(minutes=n) for n in range(-5, 6)}
        due = [item(f"due {n}", 1, expires_at=at[n]) for n in (-1, -3, -2)]
        exact = item("due right now", 2, expires_at=now)
        later = item("not yet", 3, expires_at=at[5])
        forever = item("no expiry", 4)
        frozen = item("pinned", 5, expires_at=at[-4], status=LifecycleState.FROZEN)
        gone = item("already expired", 6, expires_at=at[-5], status=LifecycleState.EXPIRED)
        archived = item("archived, due", 7, expires_at=at[-4], status=LifecycleState.ARCHIVED)
        topic = item("a topic", 0, expires_at=at[-4], node_kind=NodeKind.TOPIC)
        secret = item("bob's private note", 1, expires_at=at[-4], visibility=Visibility.PRIVATE)
        store.add(cube, [*due, exact, later, forever, frozen, gone, archived, topic])
        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal="bob", role=Role.WRITER)]}))
        store.add(cube, [secret], ctx=CallContext.of("bob"))
        (found,) = store.batch([ListExpiringOp(cube, now)], ctx=CallContext.of("alice"))
        assert [i.id for i in found] == [archived.id, due[1].id, due[2].id, due[0].id, exact.id]
        assert all(i.embedding is None for i in found)
        (mine,) = store.batch([ListExpiringOp(cube, now)], ctx=CallContext.of("bob"))
        assert secret.id in [i.id for i in mine]
        (first,) = store.batch([ListExpiringOp(cube, now, limit=2)])
        assert [i.id for i in first] == [archived.id, secret.id]  # soonest first, ties in storage order
        (expired,) = store.batch([ListExpiringOp(cube, now, expired=True)])
        assert [i.id for i in expired] == [gone.id]
        (none_yet,) = store.batch([ListExpiringOp(cube, at[-5] - timedelta(seconds=1))])
        assert none_yet == []
        with pytest.raises(PermissionDeniedError):
            store.batch([ListExpiringOp(cube, now)], ctx=CallContext.of("mallory"))
        with pytest.raises(InvalidInputError):
            ListExpiringOp(cube, now.replace(tzinfo=None))
        with pytest.raises(InvalidInputError):
            ListExpiringOp(cube, now, limit=0)

    def test_record_access_counts_uses_without_changing_the_memory(self, store: BaseMemoryStore, cube: str) -> None:
        now = datetime.now(UTC)
        a, b = item("used twice", 1), item("used once", 2)
        topic = item("a topic", 0, node_kind=NodeKind.TOPIC)
        secret = item("bob's private note", 3, visibility=Visibility.PRIVATE)
        store.add(cube, [a, b.model_copy(update={"access_count": 99, "last_accessed_at": now}), topic])
        header = store.get_cube(cube)
        acl = [AclEntry(principal="bob", role=Role.WRITER), AclEntry(principal="rita", role=Role.READER)]
        store.update_cube(header.model_copy(update={"acl": acl}))
        store.add(cube, [secret], ctx=CallContext.of("bob"))
        (fresh,) = store.get(cube, [b.id])
        assert (fresh.access_count, fresh.last_accessed_at) == (0, None)  # an add starts unused
        (stored_a,) = store.get(cube, [a.id])
        t1 = datetime.now(UTC)  # a use after the memories were stored
        assert store.record_access(cube, {a.id: 2, b.id: 1, topic.id: 1, "missing-id": 1}, t1) == 2
        (got_a, got_b) = store.get(cube, [a.id, b.id])
        assert (got_a.access_count, got_a.last_accessed_at, got_b.access_count) == (2, t1, 1)
        assert (got_a.version, got_a.updated_at) == (stored_a.version, stored_a.updated_at)  # not a change
        assert len(store.history(cube, a.id)) == 1
        assert store.record_access(cube, {a.id: 1}, t1 - timedelta(seconds=1)) == 1  # a later use stays the last
        (got_a,) = store.get(cube, [a.id])
        assert (got_a.access_count, got_a.last_accessed_at) == (3, t1)
        (updated,) = store.update(cube, [got_a.model_copy(update={"text": "used twice, edited", "access_count": 0})])
        assert updated.access_count == 3  # an update keeps the store's count
        (got_a,) = store.get(cube, [a.id])
        assert (got_a.text, got_a.access_count, got_a.last_accessed_at) == ("used twice, edited", 3, t1)
        # read scope: a reader records only what it may read, one use per item, never in the future
        later = datetime.now(UTC) + timedelta(days=365)
        assert store.record_access(cube, {secret.id: 1, b.id: 500}, later, ctx=CallContext.of("rita")) == 1
        (got_b,) = store.get(cube, [b.id])
        assert got_b.access_count == 2 and got_b.last_accessed_at is not None
        assert got_b.last_accessed_at <= datetime.now(UTC)
        assert store.record_access(cube, {secret.id: 1}, t1, ctx=CallContext.of("bob")) == 1
        with pytest.raises(PermissionDeniedError):
            store.record_access(cube, {a.id: 1}, t1, ctx=CallContext.of("mallory"))
        for bad in ({}, {a.id: 0}, {a.id: True}, {"bad id!": 1}):
            with pytest.raises(InvalidInputError):
                RecordAccessOp(cube, bad, t1)
        with pytest.raises(InvalidInputError):
            RecordAccessOp(cube, {a.id: 1}, t1.replace(tzinfo=None))

    def test_an_update_clears_fields_and_keeps_uses(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("expiring, with a key", 1, expires_at=datetime.now(UTC) + timedelta(days=1)).model_copy(
            update={"key": "a key", "tags": ["a tag"]}
        )
        store.add(cube, [a])
        store.record_access(cube, {a.id: 3}, datetime.now(UTC))
        (got,) = store.get(cube, [a.id])
        cleared = got.model_copy(update={"expires_at": None, "key": None, "tags": [], "status": LifecycleState.FROZEN})
        store.update(cube, [cleared])
        (after,) = store.get(cube, [a.id])
        assert (after.expires_at, after.key, after.tags, after.status) == (None, None, [], LifecycleState.FROZEN)
        assert (after.access_count, after.last_accessed_at) == (3, got.last_accessed_at)

    def test_list_idle_returns_least_recently_used_activated_memories(self, store: BaseMemoryStore, cube: str) -> None:
        now = datetime.now(UTC)
        old = [item(f"old {n}", n) for n in range(3)]
        frozen = item("pinned", 4, status=LifecycleState.FROZEN)
        archived = item("archived", 5, status=LifecycleState.ARCHIVED)
        store.add(cube, [*old, frozen, archived])
        store.record_access(cube, {old[0].id: 1}, now + timedelta(seconds=10))  # used last
        store.record_access(cube, {old[2].id: 1}, now + timedelta(seconds=5))
        cut = now + timedelta(seconds=7)
        (idle,) = store.batch([ListIdleOp(cube, cut)])
        assert [i.id for i in idle] == [old[1].id, old[2].id]  # never used (its storing), then used at +5 s
        assert all(i.embedding is None for i in idle)
        (one,) = store.batch([ListIdleOp(cube, cut, limit=1)])
        assert [i.id for i in one] == [old[1].id]
        (none,) = store.batch([ListIdleOp(cube, now - timedelta(days=1))])
        assert none == []
        with pytest.raises(PermissionDeniedError):
            store.batch([ListIdleOp(cube, cut)], ctx=CallContext.of("mallory"))
        with pytest.raises(InvalidInputError):
            ListIdleOp(cube, cut, limit=0)

    def test_list_hot_returns_most_used_activated_memories(self, store: BaseMemoryStore, cube: str) -> None:
        now = datetime.now(UTC)
        a, b, c, d, e = (item(f"used {n}", i, id=f"hot-{n}") for i, n in enumerate("abcde"))
        frozen = item("pinned", 1, id="hot-frozen", status=LifecycleState.FROZEN)
        archived = item("archived", 2, id="hot-archived", status=LifecycleState.ARCHIVED)
        expired = item("expired", 3, id="hot-expired", status=LifecycleState.EXPIRED)
        topic = item("a topic", 0, id="hot-topic", node_kind=NodeKind.TOPIC)
        secret = item("bob's private note", 4, id="hot-secret", visibility=Visibility.PRIVATE)
        store.add(cube, [e, d, c, b, a, frozen, archived, expired, topic])  # ids out of storage order
        acl = [AclEntry(principal="bob", role=Role.WRITER), AclEntry(principal="rita", role=Role.READER)]
        store.update_cube(store.get_cube(cube).model_copy(update={"acl": acl}))
        store.add(cube, [secret], ctx=CallContext.of("bob"))
        counts = {a.id: 5, b.id: 3, c.id: 3, d.id: 1, frozen.id: 9, archived.id: 9, expired.id: 9, topic.id: 9}
        store.record_access(cube, {**counts, secret.id: 7}, now)
        rita = CallContext.of("rita")

        def hot(op: ListHotOp, ctx: CallContext = rita) -> list[str]:
            (found,) = store.batch([op], ctx=ctx)
            assert all(i.embedding is None for i in found)
            return [i.id for i in found]

        assert hot(ListHotOp(cube)) == [a.id, b.id, c.id, d.id]  # most used first, ties by id; never used: not hot
        assert hot(ListHotOp(cube, min_uses=3)) == [a.id, b.id, c.id]
        assert hot(ListHotOp(cube, min_uses=6)) == []
        assert hot(ListHotOp(cube, limit=2)) == [a.id, b.id]
        assert hot(ListHotOp(cube, min_uses=3), CallContext.of("bob")) == [secret.id, a.id, b.id, c.id]
        (found,) = store.batch([ListHotOp(cube, min_uses=5)], ctx=rita)
        assert [(i.id, i.access_count) for i in found] == [(a.id, 5)]
        with pytest.raises(PermissionDeniedError):
            store.batch([ListHotOp(cube)], ctx=CallContext.of("mallory"))
        bad_values: list[dict[str, object]] = [{"min_uses": n} for n in (0, -1, True, 2**62 + 1, 1.5)]
        bad_values += [{"limit": n} for n in (0, 100_001, True, "5")]
        for bad in bad_values:
            with pytest.raises(InvalidInputError):
                ListHotOp(cube, **bad)  # type: ignore[arg-type]
        assert ListHotOp(cube, min_uses=2**62, limit=100_000).limit == 100_000

    def test_get_keeps_order_and_skips_missing(self, store: BaseMemoryStore, cube: str) -> None:
        a, b = item("a"), item("b")
        store.add(cube, [a, b])
        assert [i.id for i in store.get(cube, [b.id, "missing-id", a.id])] == [b.id, a.id]

    def test_wrong_dimension_writes_nothing(self, store: BaseMemoryStore, cube: str) -> None:
        good = item("good")
        bad = MemoryItem(text="bad", embedding=[1.0, 0.0])
        with pytest.raises(EmbeddingDimensionError):
            store.add(cube, [good, bad])
        assert store.count(cube) == 0

    @pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_embeddings_are_refused(self, store: BaseMemoryStore, cube: str, bad_value: float) -> None:
        good = item("good")
        bad = MemoryItem.model_construct(**{**item("bad").model_dump(), "embedding": [bad_value, *vec(0)[1:]]})
        with pytest.raises(InvalidEmbeddingError):
            store.add(cube, [good, bad])
        assert store.count(cube) == 0
        store.add(cube, [good])
        with pytest.raises(InvalidEmbeddingError):
            store.update(cube, [good.model_copy(update={"embedding": [bad_value] * DIM})])
        assert store.get(cube, [good.id], with_embeddings=True)[0].embedding == pytest.approx(vec(0))
        with pytest.raises(InvalidEmbeddingError):
            store.vector_search(cube, [bad_value] * DIM, 5)

    def test_import_cube_is_all_or_nothing(self, store: BaseMemoryStore) -> None:
        cube_id = "cube-" + uuid.uuid4().hex[:12]
        header = CubeHeader(cube_id=cube_id, owner_id="alice", storage=StorageProfile(embedding_dim=DIM))
        items = [item(f"memory {n}", n % DIM) for n in range(1200)]
        edges = [Edge(source_id=a.id, target_id=b.id, type=RelationType.FOLLOWS) for a, b in itertools.pairwise(items)]
        dangling = [*edges, Edge(source_id=items[0].id, target_id="nowhere", type=RelationType.FOLLOWS)]
        with pytest.raises(InvalidInputError):
            store.import_cube(header, items, dangling)
        with pytest.raises(CubeNotFoundError):
            store.get_cube(cube_id)
        assert cube_id not in [h.cube_id for h in store.list_cubes()]
        store.import_cube(header, items, edges)  # the failed import left nothing behind
        assert store.count(cube_id) == len(items)
        assert len(store.get_edges(cube_id)) == len(edges)
        with pytest.raises(CubeExistsError):
            store.import_cube(header, items[:1])
        store.delete_cube(cube_id)
        with pytest.raises(CubeNotFoundError):
            store.get_cube(cube_id)

    def test_duplicate_ids_write_nothing(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("a")
        with pytest.raises(InvalidInputError):
            store.add(cube, [a, a.model_copy(update={"text": "again"})])
        store.add(cube, [a])
        with pytest.raises(InvalidInputError):
            store.add(cube, [item("new"), a])
        assert store.count(cube) == 1

    def test_dangling_edge_writes_nothing(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("a")
        with pytest.raises(InvalidInputError):
            store.add(cube, [a], [Edge(source_id=a.id, target_id="nowhere", type=RelationType.FOLLOWS)])
        assert store.count(cube) == 0
        assert store.get_edges(cube) == []

    def test_failed_batch_rolls_back_updates_too(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("a")
        store.add(cube, [a])
        batch = WriteBatch(
            add=[item("b")],
            update=[a.model_copy(update={"text": "changed"})],
            edges=[Edge(source_id=a.id, target_id="nowhere", type=RelationType.RELATE_TO)],
        )
        with pytest.raises(InvalidInputError):
            store.apply(cube, batch)
        assert store.count(cube) == 1
        assert store.get(cube, [a.id])[0].text == "a"
        assert store.get(cube, [a.id])[0].version == 1

    def test_update_versions(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("a")
        store.add(cube, [a])
        (v2,) = store.update(cube, [a.model_copy(update={"text": "a2"})])
        assert v2.version == 2 and store.get(cube, [a.id])[0].text == "a2"
        assert store.get(cube, [a.id], with_embeddings=True)[0].embedding is not None  # kept
        with pytest.raises(VersionConflictError):
            store.update(cube, [a.model_copy(update={"text": "stale"})])
        with pytest.raises(MemoryNotFoundError):
            store.update(cube, [item("never stored")])
        assert store.get(cube, [a.id])[0].text == "a2"

    def test_delete_removes_edges(self, store: BaseMemoryStore, cube: str) -> None:
        a, b = item("a"), item("b")
        store.add(cube, [a, b], [Edge(source_id=b.id, target_id=a.id, type=RelationType.FOLLOWS)])
        assert store.delete(cube, [a.id]) == 1
        assert store.get(cube, [a.id]) == []
        assert store.get_edges(cube) == []
        assert store.delete(cube, [a.id]) == 0

    def test_list_and_count_with_filters(self, store: BaseMemoryStore, cube: str) -> None:
        items = [
            item("a", user_id="u1"),
            item("b", user_id="u2", memory_type=MemoryType.USER),
            item("c", status=LifecycleState.ARCHIVED),
            item("t", node_kind=NodeKind.TOPIC),
        ]
        store.add(cube, items)
        assert [i.text for i in store.list_items(cube)] == ["a", "b", "c", "t"]
        assert store.count(cube) == 4
        assert store.count(cube, SearchFilters()) == 2
        assert [i.text for i in store.list_items(cube, SearchFilters(user_id="u2"))] == ["b"]
        assert store.count(cube, SearchFilters(memory_types=[MemoryType.LONG_TERM])) == 1
        assert [i.text for i in store.list_items(cube, limit=2, offset=1)] == ["b", "c"]

    # -- tenancy --------------------------------------------------------------------------------------
    def test_cubes_are_isolated(self, store: BaseMemoryStore, cube: str) -> None:
        other = self._other_cube(store)
        a = item("secret lisbon apartment", 1)
        store.add(cube, [a])
        b = item("public lisbon note", 1)
        store.add(other, [b])
        assert store.get(other, [a.id]) == []
        assert [i for i, _ in store.vector_search(other, vec(1), 10)] == [b.id]
        assert [i for i, _ in store.text_search(other, "lisbon", 10)] == [b.id]
        assert store.delete(other, [a.id]) == 0
        assert store.count(cube) == 1
        with pytest.raises(InvalidInputError):
            store.add_edges(other, [Edge(source_id=b.id, target_id=a.id, type=RelationType.RELATE_TO)])
        assert store.expand(other, [b.id], list(RelationType)) == []

    def test_same_id_in_two_cubes(self, store: BaseMemoryStore, cube: str) -> None:
        other = self._other_cube(store)
        a = item("one")
        store.add(cube, [a])
        store.add(other, [a.model_copy(update={"text": "two"})])
        assert store.get(cube, [a.id])[0].text == "one"
        assert store.get(other, [a.id])[0].text == "two"

    # -- search ---------------------------------------------------------------------------------------
    def test_vector_search_ranks_by_cosine(self, store: BaseMemoryStore, cube: str) -> None:
        near, mid, far = item("near", 0), item("mid", 0, 1), item("far", 3)
        store.add(cube, [far, mid, near])
        hits = store.vector_search(cube, vec(0), 3)
        assert [h for h, _ in hits] == [near.id, mid.id, far.id]
        assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert hits[1][1] == pytest.approx(float(np.dot(vec(0), vec(0, 1))), abs=1e-5)
        assert len(store.vector_search(cube, vec(0), 1)) == 1
        with pytest.raises(EmbeddingDimensionError):
            store.vector_search(cube, [1.0, 0.0], 3)

    def test_vector_search_filters_before_ranking(self, store: BaseMemoryStore, cube: str) -> None:
        store.add(
            cube,
            [
                item("archived", 0, status=LifecycleState.ARCHIVED),
                item("topic", 0, node_kind=NodeKind.TOPIC),
                item("other user", 0, user_id="u2"),
                item("old", 0, 1, user_id="u1", event_time=T0 - timedelta(days=30), tags=["trip"]),
                item("new", 0, 2, user_id="u1", event_time=T0, tags=["work"]),
            ],
        )

        def texts(flt: SearchFilters) -> list[str]:
            hits = store.vector_search(cube, vec(0), 1, flt)
            return [i.text for i in store.get(cube, [h for h, _ in hits])]

        assert texts(SearchFilters(user_id="u1", time_from=T0 - timedelta(days=1))) == ["new"]
        assert texts(SearchFilters(user_id="u1", time_to=T0 - timedelta(days=1))) == ["old"]
        assert texts(SearchFilters(tags_any=["trip"])) == ["old"]
        assert texts(SearchFilters(statuses=[LifecycleState.ARCHIVED])) == ["archived"]
        assert texts(SearchFilters(node_kinds=[NodeKind.TOPIC])) == ["topic"]
        assert texts(SearchFilters(user_id="nobody")) == []

    def test_text_search_bm25(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("Melanie painted a sunrise over the lake last year")
        b = item("Caroline went hiking with friends")
        c = item("A painted sunrise, a painted lake, painted again", status=LifecycleState.ARCHIVED)
        store.add(cube, [a, b, c])
        hits = store.text_search(cube, "When did Melanie paint a sunrise?", 10)
        assert hits and hits[0][0] == a.id
        assert all(score > 0 for _, score in hits)
        assert c.id not in [h for h, _ in hits]
        assert store.text_search(cube, "the and of", 10) == []

    def test_text_search_treats_syntax_as_data(self, store: BaseMemoryStore, cube: str) -> None:
        evil = 'x\'); DROP TABLE items; -- MATCH (n) DETACH DELETE n "NEAR(a b)" * OR AND {x}'
        a = item(evil)
        store.add(cube, [a])
        assert store.get(cube, [a.id])[0].text == evil
        hits = store.text_search(cube, evil, 5)
        assert [h for h, _ in hits] == [a.id]
        store.text_search(cube, 'NEAR( "unbalanced * ^ -', 5)
        assert store.count(cube) == 1

    def test_expand_walks_whitelisted_edges(self, store: BaseMemoryStore, cube: str) -> None:
        a, b, c, d = item("a"), item("b"), item("c"), item("d", status=LifecycleState.ARCHIVED)
        store.add(
            cube,
            [a, b, c, d],
            [
                Edge(source_id=b.id, target_id=a.id, type=RelationType.FOLLOWS),
                Edge(source_id=c.id, target_id=b.id, type=RelationType.FOLLOWS),
                Edge(source_id=a.id, target_id=d.id, type=RelationType.RELATE_TO),
            ],
        )
        one = store.expand(cube, [a.id], [RelationType.FOLLOWS])
        assert [(n.id, n.from_id, n.type, n.depth) for n in one] == [(b.id, a.id, RelationType.FOLLOWS, 1)]
        two = store.expand(cube, [a.id], [RelationType.FOLLOWS], depth=2)
        assert [(n.id, n.depth) for n in two] == [(b.id, 1), (c.id, 2)]
        both = store.expand(cube, [a.id], [RelationType.FOLLOWS, RelationType.RELATE_TO])
        assert {n.id for n in both} == {b.id, d.id}
        filtered = store.expand(cube, [a.id], [RelationType.FOLLOWS, RelationType.RELATE_TO], filters=SearchFilters())
        assert {n.id for n in filtered} == {b.id}

    def test_edges_by_direction_and_type(self, store: BaseMemoryStore, cube: str) -> None:
        a, b, t = item("a"), item("b"), item("topic", node_kind=NodeKind.TOPIC)
        store.add(
            cube,
            [a, b, t],
            [
                Edge(source_id=t.id, target_id=a.id, type=RelationType.PARENT),
                Edge(source_id=t.id, target_id=b.id, type=RelationType.PARENT),
                Edge(source_id=b.id, target_id=a.id, type=RelationType.FOLLOWS),
            ],
        )
        assert [e.target_id for e in store.get_edges(cube, [t.id], [RelationType.PARENT], "out")] == [a.id, b.id]
        assert [e.source_id for e in store.get_edges(cube, [a.id], None, "in")] == [t.id, b.id]
        assert store.get_edges(cube, [a.id], None, "out") == []
        assert len(store.get_edges(cube)) == 3
        store.add_edges(cube, [Edge(source_id=b.id, target_id=a.id, type=RelationType.FOLLOWS, weight=0.5)])
        (follows,) = store.get_edges(cube, [b.id], [RelationType.FOLLOWS], "out")
        assert follows.weight == 0.5

    def test_concurrent_writes_and_searches(self, store: BaseMemoryStore, cube: str) -> None:
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for k in range(10):
                    store.add(cube, [item(f"writer {n} memory {k} about kites", (n + k) % DIM)])
            except BaseException as exc:
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(20):
                    hits = store.vector_search(cube, vec(1), 5)
                    assert len({h for h, _ in hits}) == len(hits)
                    store.text_search(cube, "kites", 5)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.count(cube) == 30
        assert len(store.vector_search(cube, vec(1), 100)) == 30
        assert len(store.text_search(cube, "kites", 100)) == 30

    # -- the caller, checked in the store ---------------------------------------------------------------
    @staticmethod
    def _reads(cube: str) -> list[Op]:
        return [
            GetCubeOp(cube),
            GetOp(cube, ["x"]),
            ListOp(cube),
            CountOp(cube),
            EdgesOp(cube),
            VectorSearchOp(cube, vec(0), 3),
            TextSearchOp(cube, "kites", 3),
            ExpandOp(cube, ["x"], [RelationType.FOLLOWS]),
        ]

    @staticmethod
    def _writes(cube: str) -> list[Op]:
        return [WriteOp(cube, WriteBatch(add=[item("x")])), DeleteOp(cube, ["x"]), RecordEventOp(cube, "note", {})]

    def test_every_op_on_an_unknown_cube_is_refused(self, store: BaseMemoryStore) -> None:
        header = CubeHeader(cube_id="no-such-cube", owner_id="alice")
        for op in [*self._reads("no-such-cube"), *self._writes("no-such-cube"), UpdateCubeOp(header)]:
            with pytest.raises(CubeNotFoundError):
                store.run(op)
            with pytest.raises(CubeNotFoundError):
                store.run(op, ctx=CallContext.of("alice"))
        with pytest.raises(CubeNotFoundError):
            store.run(DeleteCubeOp("no-such-cube"))
        with pytest.raises(CubeNotFoundError):
            asyncio.run(store.arun(GetOp("no-such-cube", ["x"])))

    def test_the_caller_is_checked_by_the_store(self, store: BaseMemoryStore, cube: str) -> None:
        alice, bob, carol = CallContext.of("alice"), CallContext.of("bob"), CallContext.of("carol")
        a = item("alice's note about kites")
        store.add(cube, [a], ctx=alice)
        for op in [*self._reads(cube), *self._writes(cube), UpdateCubeOp(store.get_cube(cube)), DeleteCubeOp(cube)]:
            with pytest.raises(PermissionDeniedError):
                store.run(op, ctx=bob)
        assert store.count(cube) == 1
        assert cube not in [h.cube_id for h in store.list_cubes(ctx=bob)]
        for op in self._reads(cube):
            store.run(op, ctx=alice)  # the owner may do everything

        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal="bob", permissions=[Permission.READ])]}))
        assert cube in [h.cube_id for h in store.list_cubes(ctx=bob)]
        assert cube not in [h.cube_id for h in store.list_cubes(ctx=carol)]
        assert [i.id for i in store.get(cube, [a.id], ctx=bob)] == [a.id]
        for op in self._writes(cube):
            with pytest.raises(PermissionDeniedError):
                store.run(op, ctx=bob)
        with pytest.raises(PermissionDeniedError):
            store.run(GetOp(cube, [a.id]), ctx=carol)

        header = store.get_cube(cube)
        store.update_cube(
            header.model_copy(update={"acl": [AclEntry(principal="*", permissions=[Permission.WRITE])]}), ctx=alice
        )
        store.add(cube, [item("carol's note")], ctx=carol)  # write implies read
        assert store.count(cube, ctx=carol) == 2
        with pytest.raises(PermissionDeniedError):
            store.delete_cube(cube, ctx=carol)  # admin only
        store.delete_cube(cube, ctx=alice)

    def test_a_denied_op_rolls_back_its_batch(self, store: BaseMemoryStore, cube: str) -> None:
        other = self._other_cube(store)  # owned by bob
        alice = CallContext.of("alice")
        with pytest.raises(PermissionDeniedError):
            store.batch(
                [WriteOp(cube, WriteBatch(add=[item("mine")])), WriteOp(other, WriteBatch(add=[item("theirs")]))],
                ctx=alice,
            )
        assert store.count(cube) == 0 and store.count(other) == 0

    def test_the_author_is_the_caller_and_the_subject_is_kept(self, store: BaseMemoryStore, cube: str) -> None:
        header = store.get_cube(cube)
        store.update_cube(
            header.model_copy(update={"acl": [AclEntry(principal="svc", permissions=[Permission.WRITE])]})
        )
        written = item("Bob prefers tea", user_id="bob", author_id="mallory")
        store.add(cube, [written], ctx=CallContext.of("svc"))
        (got,) = store.get(cube, [written.id])
        assert (got.user_id, got.author_id) == ("bob", "svc")  # a caller cannot claim another author
        trusted = item("imported", author_id="dana")
        store.add(cube, [trusted], ctx=SYSTEM)
        assert store.get(cube, [trusted.id])[0].author_id == "dana"
        (forged,) = store.update(cube, [got.model_copy(update={"author_id": "mallory"})], ctx=CallContext.of("svc"))
        assert forged.author_id == "svc" and store.get(cube, [written.id])[0].author_id == "svc"  # kept

    def test_redaction_policy_is_enforced_on_every_write(self, store: BaseMemoryStore, cube: str) -> None:
        from memos_agents.errors import SensitiveDataError
        from memos_agents.infra.redaction import PIIKind, RedactionMode, RedactionPolicy

        email = "dana.smith" + "@" + "example.org"  # never in a stored row nor an error message
        plain = item("Dana wrote from " + email, 1)
        store.add(cube, [plain])  # policy off: stored as it is
        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"redaction": RedactionPolicy(mode=RedactionMode.MASK)}))
        assert store.get_cube(cube).redaction.mode == "mask"
        for bad in (
            item("write to " + email, 2),
            item("ok text", 2, key=email),
            item("ok text", 2, tags=["contact " + email]),
            item("ok text", 2, metadata={"from": email}),
        ):
            with pytest.raises(SensitiveDataError) as caught:
                store.add(cube, [item("a harmless neighbour", 3), bad], ctx=SYSTEM)  # trusted code too
            assert email not in str(caught.value) and caught.value.kinds == ("email",)
        assert store.count(cube) == 1  # nothing of those batches
        (stored,) = store.get(cube, [plain.id])
        with pytest.raises(SensitiveDataError):  # an update is checked as a new write
            store.update(cube, [stored.model_copy(update={"text": "now at " + email})])
        assert store.get(cube, [plain.id])[0].text == plain.text
        masked = item("Dana wrote from [EMAIL]", 2)
        store.add(cube, [masked])
        assert store.count(cube) == 2
        store.update_cube(
            store.get_cube(cube).model_copy(
                update={"redaction": RedactionPolicy(mode=RedactionMode.REFUSE, kinds=frozenset({PIIKind.PHONE}))}
            )
        )
        store.add(cube, [item("only phones are refused now: " + email, 3)])  # e-mail not among the kinds
        assert store.count(cube) == 3

    def test_roles_are_checked_by_the_store(self, store: BaseMemoryStore, cube: str) -> None:

        header = store.get_cube(cube)  # owned by "alice" (the fixture)
        acl = [
            AclEntry(principal="rita", role=Role.READER),
            AclEntry(principal="walt", role=Role.WRITER),
            AclEntry(principal="sam", permissions=[Permission.SHARE]),
            AclEntry(principal="ada", role=Role.ADMIN),
            AclEntry(principal="gus", role=Role.GUEST),
            AclEntry(principal="old", permissions=[Permission.WRITE]),  # before roles: write could delete
        ]
        store.update_cube(header.model_copy(update={"acl": acl}))
        rita, walt, sam, ada, gus, old = (CallContext.of(u) for u in ("rita", "walt", "sam", "ada", "gus", "old"))
        a = item("a fact about kites", 1)
        store.add(cube, [a], ctx=walt)
        assert [i.id for i in store.get(cube, [a.id], ctx=rita)] == [a.id]
        for denied in (
            lambda: store.add(cube, [item("x", 2)], ctx=rita),
            lambda: store.delete(cube, [a.id], ctx=rita),
            lambda: store.get(cube, [a.id], ctx=gus),
            lambda: store.text_search(cube, "kites", 5, ctx=gus),
            lambda: store.update_cube(store.get_cube(cube).model_copy(update={"description": "mine"}), ctx=walt),
            lambda: store.update_cube(store.get_cube(cube).model_copy(update={"acl": []}), ctx=walt),
            lambda: store.delete_cube(cube, ctx=walt),
        ):
            with pytest.raises(PermissionDeniedError):
                denied()
        current = store.get_cube(cube)
        # share: may add a reader (at most its own level: share+read), not a writer, not touch an admin
        store.update_cube(
            current.model_copy(update={"acl": [*current.acl, AclEntry(principal="newbie", role=Role.READER)]}), ctx=sam
        )
        current = store.get_cube(cube)
        for escalation in (
            [*current.acl, AclEntry(principal="sam", role=Role.WRITER)],
            [*current.acl, AclEntry(principal="eve", permissions=[Permission.ADMIN])],
            [e for e in current.acl if e.principal != "ada"],
        ):
            with pytest.raises(PermissionDeniedError):
                store.update_cube(current.model_copy(update={"acl": escalation}), ctx=sam)
        with pytest.raises(PermissionDeniedError):  # share is not admin: no other field
            store.update_cube(current.model_copy(update={"description": "x"}), ctx=sam)
        with pytest.raises(PermissionDeniedError):  # an admin cannot take the cube over
            store.update_cube(current.model_copy(update={"owner_id": "ada"}), ctx=ada)
        store.update_cube(current.model_copy(update={"description": "by ada"}), ctx=ada)
        assert store.get_cube(cube).description == "by ada" and store.get_cube(cube).acl == current.acl
        assert store.delete(cube, [a.id], ctx=old) == 1  # a legacy write entry still deletes
        stale = store.get_cube(cube)
        store.update_cube(stale.model_copy(update={"description": "first"}), ctx=ada)
        with pytest.raises(VersionConflictError):  # written over a newer header: refused, not lost
            store.update_cube(stale.model_copy(update={"acl": []}), ctx=ada)
        assert store.get_cube(cube).description == "first" and store.get_cube(cube).acl == current.acl
        b = item("another", 2)
        store.add(cube, [b], ctx=walt)
        assert store.delete(cube, [b.id], ctx=walt) == 1
        assert store.count(cube) == 0

    def test_one_batch_is_one_transaction(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("a")
        with pytest.raises(InvalidInputError):
            store.batch([WriteOp(cube, WriteBatch(add=[a])), WriteOp(cube, WriteBatch(add=[a]))])
        assert store.count(cube) == 0
        b = item("b about kites")
        results = store.batch(
            [WriteOp(cube, WriteBatch(add=[b])), GetOp(cube, [b.id]), CountOp(cube), TextSearchOp(cube, "kites", 5)]
        )
        assert results[0].added == [b.id] and [i.id for i in results[1]] == [b.id] and results[2] == 1
        assert [h for h, _ in results[3]] == [b.id]
        assert [h for h, _ in store.batch([VectorSearchOp(cube, vec(0), 5)])[0]] == [b.id]

    def test_ensure_inserts_once_and_follows_are_resolved_in_the_store(self, store: BaseMemoryStore, cube: str) -> None:
        topic = item("session topic", node_kind=NodeKind.TOPIC, id="topic.s1")
        first, second = item("turn 1"), item("turn 2")
        r1 = store.apply(
            cube,
            WriteBatch(
                add=[first],
                ensure=[topic],
                edges=[Edge(source_id=topic.id, target_id=first.id, type=RelationType.PARENT)],
                follows=[FollowLink(item_id=first.id, topic_id=topic.id)],
            ),
        )
        assert r1.added == [first.id, topic.id]
        r2 = store.apply(
            cube,
            WriteBatch(
                add=[second],
                ensure=[topic.model_copy(update={"text": "another text"})],
                edges=[Edge(source_id=topic.id, target_id=second.id, type=RelationType.PARENT)],
                follows=[FollowLink(item_id=second.id, topic_id=topic.id)],
            ),
        )
        assert r2.added == [second.id]  # the topic existed: left as it was
        assert store.get(cube, [topic.id])[0].text == "session topic"
        follows = store.get_edges(cube, types=[RelationType.FOLLOWS])
        assert [(e.source_id, e.target_id) for e in follows] == [(second.id, first.id)]
        with pytest.raises(InvalidInputError):
            store.apply(cube, WriteBatch(add=[item("x", id="dup")], ensure=[item("y", id="dup")]))

    def test_async_batch(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("async batch about tea", 2)

        async def scenario() -> list[object]:
            return await store.abatch(
                [WriteOp(cube, WriteBatch(add=[a])), VectorSearchOp(cube, vec(2), 1), CountOp(cube)],
                ctx=CallContext.of("alice"),
            )

        written, hits, n = asyncio.run(scenario())
        assert written.added == [a.id] and hits[0][0] == a.id and n == 1  # type: ignore[attr-defined,index]
        with pytest.raises(PermissionDeniedError):
            asyncio.run(store.abatch([CountOp(cube)], ctx=CallContext.of("bob")))

    # -- per-item visibility ------------------------------------------------------------------------------
    def test_item_visibility_is_enforced_in_every_read_path(self, store: BaseMemoryStore, cube: str) -> None:
        header = store.get_cube(cube)  # owned by "alice"
        acl = [
            AclEntry(principal="rita", role=Role.READER),
            AclEntry(principal="walt", role=Role.WRITER),
            AclEntry(principal="gus", role=Role.GUEST),
        ]
        store.update_cube(header.model_copy(update={"acl": acl}))
        alice, rita, walt, gus, zed = (CallContext.of(u) for u in ("alice", "rita", "walt", "gus", "zed"))
        admin = CallContext.of("operator", admin=True)
        c1 = item("walt notes kites on the beach", 1)
        p = item("walt's private diary: kites and the secret lake", 1, 2, visibility=Visibility.PRIVATE)
        c2 = item("a note about the lake", 3)
        store.add(
            cube,
            [c1, p, c2],
            [
                Edge(source_id=c1.id, target_id=p.id, type=RelationType.FOLLOWS),
                Edge(source_id=p.id, target_id=c2.id, type=RelationType.FOLLOWS),
            ],
            ctx=walt,
        )
        with pytest.raises(PermissionDeniedError):  # a cube without public items stays closed to strangers
            store.get(cube, [c1.id], ctx=zed)
        with pytest.raises(PermissionDeniedError):  # publishing is sharing: a writer may not
            store.add(cube, [item("for everyone", 4, visibility=Visibility.PUBLIC)], ctx=walt)
        pub = item("the public timetable of the lake ferry", 4, visibility=Visibility.PUBLIC)
        store.add(cube, [pub], [Edge(source_id=pub.id, target_id=p.id, type=RelationType.RELATE_TO)], ctx=alice)
        everything = {c1.id, p.id, c2.id, pub.id}

        def visible(ctx: CallContext) -> dict[str, object]:
            everyone = SearchFilters(statuses=list(LifecycleState), node_kinds=list(NodeKind))
            return {
                "get": {i.id for i in store.get(cube, sorted(everything), ctx=ctx)},
                "list": {i.id for i in store.list_items(cube, everyone, ctx=ctx)},
                "count": store.count(cube, everyone, ctx=ctx),
                "dense": {h for h, _ in store.vector_search(cube, vec(1, 2), 10, ctx=ctx)},
                "bm25": {h for h, _ in store.text_search(cube, "diary secret kites lake ferry", 10, ctx=ctx)},
                "edges": {(e.source_id, e.target_id) for e in store.get_edges(cube, ctx=ctx)},
                "expand": {
                    (n.id, n.from_id)
                    for seed in sorted(everything)
                    for n in store.expand(cube, [seed], list(RelationType), depth=3, ctx=ctx)
                },
                "history": {v.item.id for i in sorted(everything) for v in store.history(cube, i, ctx=ctx)},
            }

        full = visible(walt)  # the author sees his private item
        assert full == visible(admin) and full["get"] == everything and full["count"] == 4
        assert (c1.id, p.id) in full["edges"] and (c2.id, p.id) in full["expand"]  # type: ignore[operator]
        members = {c1.id, c2.id, pub.id}
        for ctx in (rita, alice):  # read on the cube: everything but another author's private item
            seen = visible(ctx)
            assert seen["get"] == seen["list"] == seen["history"] == members and seen["count"] == 3
            assert p.id not in seen["dense"] and c1.id in seen["dense"]  # type: ignore[operator]
            assert seen["bm25"] == {c1.id, c2.id, pub.id}
            assert seen["edges"] == set()  # every edge touches the private item
            assert seen["expand"] == set()  # never walked through it: c1 and c2 are not neighbours
        for ctx in (gus, zed):  # a guest and a stranger: the public item only
            seen = visible(ctx)
            assert seen["get"] == seen["list"] == seen["history"] == seen["bm25"] == seen["dense"] == {pub.id}
            assert seen["count"] == 1 and seen["edges"] == set() and seen["expand"] == set()
        # another author's private item cannot be changed or deleted: for the caller it does not exist
        before = store.history(cube, p.id, with_embeddings=True)
        with pytest.raises(MemoryNotFoundError):
            store.update(cube, [p.model_copy(update={"text": "overwritten"})], ctx=alice)
        assert store.delete(cube, [p.id], ctx=alice) == 0
        assert store.history(cube, p.id, with_embeddings=True) == before
        assert store.count(cube, ctx=walt) == 4
        # the author opens it to the cube: now the reader sees it, with its links
        (opened,) = store.get(cube, [p.id], ctx=walt)
        store.update(cube, [opened.model_copy(update={"visibility": Visibility.CUBE})], ctx=walt)
        assert {i.id for i in store.get(cube, [p.id], ctx=rita)} == {p.id}
        assert (c1.id, p.id) in {(e.source_id, e.target_id) for e in store.get_edges(cube, ctx=rita)}
        assert [v.item.visibility for v in store.history(cube, p.id, ctx=rita)] == [Visibility.CUBE]
        assert store.get(cube, [p.id], ctx=zed) == []

    # -- MemVault ---------------------------------------------------------------------------------------
    def test_updates_and_deletes_keep_versions(self, store: BaseMemoryStore, cube: str) -> None:
        alice, walt = CallContext.of("alice"), CallContext.of("walt")
        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal="walt", role=Role.WRITER)]}))
        a, b = item("Ana lives in Porto", 1), item("Ana teaches piano", 2)
        store.add(cube, [a, b], [Edge(source_id=a.id, target_id=b.id, type=RelationType.RELATE_TO)], ctx=alice)
        (a2,) = store.update(
            cube, [a.model_copy(update={"text": "Ana lives in Lisbon", "embedding": vec(3)})], ctx=walt
        )
        history = store.history(cube, a.id, with_embeddings=True)
        assert [(v.item.version, v.change, v.changed_by) for v in history] == [(1, "update", "walt"), (2, None, None)]
        assert history[0].item.text == "Ana lives in Porto" and history[0].item.embedding == vec(1)
        assert history[0].item.author_id == "alice" and history[1].item.text == "Ana lives in Lisbon"
        assert history[0].changed_at is not None and history[0].request_id
        assert store.history(cube, a.id)[0].item.embedding is None  # embeddings only when asked for
        store.delete(cube, [a.id], ctx=alice)
        gone = store.history(cube, a.id)
        assert [(v.item.version, v.change) for v in gone] == [(1, "update"), (2, "delete")]
        assert [(e.source_id, e.target_id) for e in gone[1].edges] == [(a.id, b.id)]  # removed with it
        assert gone[1].item.text == a2.text
        assert store.history(cube, "never-stored") == []
        with pytest.raises(PermissionDeniedError):
            store.history(cube, a.id, ctx=CallContext.of("bob"))
        with pytest.raises(CubeNotFoundError):
            store.history("no-such-cube", a.id)
        entries = store.list_audit(cube, action="history")
        assert entries and entries[-1].item_ids == (a.id,)

    def test_point_in_time_reads_and_changes(self, store: BaseMemoryStore, cube: str) -> None:
        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal="rita", role=Role.READER)]}))
        alice, walt, rita = CallContext.of("alice"), CallContext.of("walt"), CallContext.of("rita")
        t0 = datetime.now(UTC)
        a, b = item("Ana lives in Porto", 1), item("Ben plays chess", 2)
        store.add(cube, [a, b], [Edge(source_id=a.id, target_id=b.id, type=RelationType.RELATE_TO)], ctx=alice)
        t1 = datetime.now(UTC)
        (a2,) = store.get(cube, [a.id])
        store.update(cube, [a2.model_copy(update={"text": "Ana lives in Lisbon", "embedding": vec(4)})], ctx=alice)
        c = item("a private note", 3, visibility=Visibility.PRIVATE)
        store.add(cube, [c], ctx=alice)
        store.delete(cube, [b.id], ctx=alice)
        t2 = datetime.now(UTC)

        def state(snap: CubeSnapshot) -> tuple[dict[str, str], set[tuple[str, str]]]:
            return {i.id: i.text for i in snap.items}, {(e.source_id, e.target_id) for e in snap.edges}

        assert state(store.as_of(cube, t0)) == ({}, set())
        at1 = store.as_of(cube, t1, with_embeddings=True)
        assert state(at1) == ({a.id: "Ana lives in Porto", b.id: "Ben plays chess"}, {(a.id, b.id)})
        assert {i.id: i.embedding for i in at1.items}[a.id] == vec(1)  # the vector of then, exactly
        assert state(store.as_of(cube, t2)) == ({a.id: "Ana lives in Lisbon", c.id: "a private note"}, set())
        assert state(store.as_of(cube, t2, ctx=rita))[0] == {a.id: "Ana lives in Lisbon"}  # scope as of then
        assert state(store.as_of(cube, t1, [a.id])) == ({a.id: "Ana lives in Porto"}, set())
        assert state(store.as_of(cube, t1, [a.id, b.id]))[1] == {(a.id, b.id)}
        assert all(i.embedding is None for i in store.as_of(cube, t2).items)
        assert set(store.changed_since(cube, t1)) == {a.id, b.id, c.id}
        assert set(store.changed_since(cube, t1, ctx=rita)) == {a.id, b.id}  # not the private item's id
        assert store.changed_since(cube, t2) == []
        with pytest.raises(InvalidInputError):
            store.as_of(cube, datetime(2024, 1, 1))  # naive: ambiguous
        with pytest.raises(PermissionDeniedError):
            store.as_of(cube, t1, ctx=CallContext.of("bob"))
        assert [e.action for e in store.list_audit(cube)][-5:].count("history.as_of") >= 1

        # retention: versions ended before the cut are purged for good (admin only)
        with pytest.raises(PermissionDeniedError):
            store.purge_versions(cube, t2, ctx=walt)
        assert store.purge_versions(cube, t2, ctx=alice) == 2  # a's first version, b's last
        assert [v.change for v in store.history(cube, b.id)] == []  # the deleted item is gone
        assert state(store.as_of(cube, t1))[0] == {}  # nothing left of that time
        assert store.purge_versions(cube, t2) == 0

    def test_forget_user_erases_items_versions_and_index_entries(self, store: BaseMemoryStore, cube: str) -> None:
        alice = CallContext.of("alice")
        header = store.get_cube(cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal="uma", role=Role.WRITER)]}))
        uma = CallContext.of("uma")
        by_uma = item("uma's zebra-crossing diary", 1)
        about_uma = item("uma has a zebra named Quagga", 2, user_id="uma")
        other = item("the office zebra mural", 3)
        kept = item("was about uma once: zebra", 5, user_id="uma")
        store.add(cube, [by_uma], ctx=uma)
        store.add(cube, [about_uma, other, kept], ctx=alice)
        store.add_edges(cube, [Edge(source_id=other.id, target_id=by_uma.id, type=RelationType.RELATE_TO)])
        (k,) = store.get(cube, [kept.id])
        store.update(cube, [k.model_copy(update={"user_id": "zoe", "text": "now about zoe: zebra"})], ctx=alice)
        (u,) = store.get(cube, [about_uma.id])
        store.update(cube, [u.model_copy(update={"text": "uma has two zebras"})], ctx=alice)
        with pytest.raises(PermissionDeniedError):
            store.forget_user(cube, "uma", ctx=uma)  # an erasure is the cube admin's (or an operator's)
        erased = store.forget_user(cube, "uma", ctx=alice)
        assert set(erased) == {by_uma.id, about_uma.id}
        assert {i.id for i in store.list_items(cube)} == {other.id, kept.id}
        assert store.history(cube, by_uma.id) == [] and store.history(cube, about_uma.id) == []
        assert [v.item.user_id for v in store.history(cube, kept.id)] == ["zoe"]  # uma's earlier version erased
        assert {h for h, _ in store.vector_search(cube, vec(1), 10)} == {other.id, kept.id}
        assert {h for h, _ in store.text_search(cube, "zebra quagga diary", 10)} == {other.id, kept.id}
        assert store.get_edges(cube) == []
        snapshot = store.as_of(cube, datetime.now(UTC))
        assert {i.id for i in snapshot.items} == {other.id, kept.id}
        (refused, entry) = store.list_audit(cube, action="forget_user")
        assert refused.actor == "uma" and refused.outcome == AuditOutcome.DENIED
        assert entry.actor == "alice" and set(entry.item_ids) == set(erased) and entry.item_count == 2
        assert "zebra" not in entry.model_dump_json() and "Quagga" not in entry.model_dump_json()
        assert store.forget_user(cube, "uma") == []  # idempotent
        assert store.verify_audit(cube).ok

    def test_a_refused_write_keeps_no_version(self, store: BaseMemoryStore, cube: str) -> None:
        a = item("first", 1)
        store.add(cube, [a])
        with pytest.raises(VersionConflictError):
            store.update(cube, [a.model_copy(update={"text": "stale", "version": 7})])
        with pytest.raises(PermissionDeniedError):
            store.delete(cube, [a.id], ctx=CallContext.of("bob"))
        assert [v.change for v in store.history(cube, a.id)] == [None]

    # -- the audit log ----------------------------------------------------------------------------------
    def tamper_audit(self, store: BaseMemoryStore, chain: str, how: str) -> None:
        """Edit the stored audit rows of ``chain`` directly, as an attacker with the files would.

        ``how``: ``edit`` (entry 2's actor), ``delete`` (entry 2), ``insert`` (a forged entry after
        entry 2), ``reorder`` (entries 2 and 3 swapped), ``truncate`` (the last entry removed, the
        head left). Every backend's test module implements it against its own storage.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement tamper_audit for its backend")

    def test_every_operation_is_audited_without_contents(self, store: BaseMemoryStore, cube: str) -> None:
        alice, bob = CallContext.of("alice"), CallContext.of("bob")
        a = item("kites at the secret lake", 1)
        store.add(cube, [a], ctx=alice)
        assert [h for h, _ in store.vector_search(cube, vec(1), 5, ctx=alice)] == [a.id]
        with pytest.raises(PermissionDeniedError):
            store.get(cube, [a.id], ctx=bob)
        bobs = CallContext.of("bob")
        with pytest.raises(PermissionDeniedError):
            store.batch([WriteOp(cube, WriteBatch(add=[item("x", 2)])), DeleteOp(cube, [a.id])], ctx=bobs)
        assert store.count(cube) == 1  # nothing of the refused batch
        entries = store.list_audit(cube, ctx=alice)  # the owner may audit its cube
        seen = [(e.actor, e.action, e.outcome) for e in entries]
        assert seen == [
            ("system", "cube.create", AuditOutcome.OK),
            ("alice", "write", AuditOutcome.OK),
            ("alice", "search.vector", AuditOutcome.OK),
            ("bob", "get", AuditOutcome.DENIED),
            ("bob", "write", AuditOutcome.DENIED),
            ("bob", "delete", AuditOutcome.FAILED),
            ("system", "count", AuditOutcome.OK),
        ]
        assert entries[1].item_ids == (a.id,) and entries[2].item_ids == (a.id,) and entries[1].item_count == 1
        assert entries[3].reason is not None and entries[3].reason.startswith("PermissionDeniedError")
        assert entries[4].request_id == entries[5].request_id == bobs.request_id  # one request
        assert entries[5].reason is not None and "not applied" in entries[5].reason
        assert [e.seq for e in entries] == list(range(1, 8))
        assert all("kites" not in e.model_dump_json() and "secret" not in e.model_dump_json() for e in entries)
        # queries: actor, action, outcome, time range, paging
        assert [e.seq for e in store.list_audit(cube, actor="bob")] == [4, 5, 6]
        assert [e.seq for e in store.list_audit(cube, action="write")] == [2, 5]
        assert [e.seq for e in store.list_audit(cube, outcome=AuditOutcome.DENIED)] == [4, 5]
        assert [e.seq for e in store.list_audit(cube, since=entries[2].at, until=entries[2].at)] == []
        assert entries[2].seq in [e.seq for e in store.list_audit(cube, since=entries[2].at)]
        assert [e.seq for e in store.list_audit(cube, after_seq=5, limit=2)] == [6, 7]
        verified = store.verify_audit(cube)
        assert verified.ok and verified.checked >= 7 and verified.head is not None
        # who may read the log: audit on the cube; the store's own chain is for trusted code only
        with pytest.raises(PermissionDeniedError):
            store.list_audit(cube, ctx=bob)
        with pytest.raises(PermissionDeniedError):
            store.verify_audit(cube, ctx=bob)
        with pytest.raises(PermissionDeniedError):
            store.list_audit(None, ctx=alice)
        assert store.list_audit(cube, action="audit.list", outcome=AuditOutcome.DENIED)[0].actor == "bob"
        # an op on a crafted cube id is refused and audited on the store's chain, without the id
        crafted = CallContext.of("mallory")
        with pytest.raises((InvalidInputError, CubeNotFoundError)):
            store.get("../" + cube, ["x"], ctx=crafted)
        (refused,) = [e for e in store.list_audit(None, actor="mallory") if e.request_id == crafted.request_id]
        assert refused.cube_id is None and refused.outcome == AuditOutcome.FAILED
        assert cube in store.list_audit_chains() and "" in store.list_audit_chains()

    def test_the_audit_log_outlives_its_cube(self, store: BaseMemoryStore, cube: str) -> None:
        alice = CallContext.of("alice")
        store.add(cube, [item("a")], ctx=alice)
        store.delete_cube(cube, ctx=alice)
        assert [e.action for e in store.list_audit(cube)][-1] == "cube.delete"  # trusted code still reads it
        with pytest.raises(CubeNotFoundError):
            store.list_audit(cube, ctx=alice)
        # a new cube of that id: its owner sees only what happened since it was created
        store.create_cube(CubeHeader(cube_id=cube, owner_id="mallory", storage=StorageProfile(embedding_dim=DIM)))
        mine = store.list_audit(cube, ctx=CallContext.of("mallory"))
        assert [e.action for e in mine] == ["cube.create"]
        assert store.verify_audit(cube).ok  # one chain across both cubes

    def test_async_audit_twins(self, store: BaseMemoryStore, cube: str) -> None:
        async def scenario() -> None:
            await store.aadd(cube, [item("async")], ctx=CallContext.of("alice"))
            assert (await store.alist_audit(cube, actor="alice"))[0].action == "write"
            assert (await store.averify_audit(cube)).ok

        asyncio.run(scenario())

    @pytest.mark.parametrize(
        ("how", "kind"),
        # a cut-off tail shows as "truncated", or as "missing" once a later entry was appended after it
        [
            ("edit", "edited"),
            ("delete", "missing"),
            ("insert", None),
            ("reorder", None),
            ("truncate", "truncated|missing"),
        ],
    )
    def test_audit_verify_detects_edited_rows(
        self, store: BaseMemoryStore, cube: str, how: str, kind: str | None
    ) -> None:
        alice = CallContext.of("alice")
        for n in range(4):
            store.add(cube, [item(f"fact {n}")], ctx=alice)
        assert store.verify_audit(cube).ok
        self.tamper_audit(store, cube, how)
        result = store.verify_audit(cube)
        assert not result.ok, how
        if kind is not None:
            assert set(kind.split("|")) & {p.kind for p in result.problems}, result.problems

    # -- events and async -------------------------------------------------------------------------------
    def test_events(self, store: BaseMemoryStore, cube: str) -> None:
        store.record_event(cube, "extraction_failed", {"message_ids": ["D1:1"], "errors": ["bad json"]})
        store.record_event(cube, "other", {})
        events = store.list_events(cube, "extraction_failed")
        assert len(events) == 1 and events[0]["payload"] == {"message_ids": ["D1:1"], "errors": ["bad json"]}
        assert len(store.list_events(cube)) == 2
        assert [e["kind"] for e in store.list_events(cube)] == ["extraction_failed", "other"]  # oldest first
        with pytest.raises(PermissionDeniedError):
            store.list_events(cube, ctx=CallContext.of("bob"))
        with pytest.raises(CubeNotFoundError):
            store.list_events("no-such-cube")

    def test_async_twins(self, store: BaseMemoryStore, cube: str) -> None:
        async def scenario() -> None:
            a = item("async memory about tea", 2)
            await store.aadd(cube, [a])
            assert [i.id for i in await store.aget(cube, [a.id])] == [a.id]
            assert (await store.avector_search(cube, vec(2), 1))[0][0] == a.id
            assert (await store.atext_search(cube, "tea", 1))[0][0] == a.id
            (new,) = await store.aupdate(cube, [a.model_copy(update={"text": "async memory about coffee"})])
            assert new.version == 2
            assert await store.adelete(cube, [a.id]) == 1

        asyncio.run(scenario())
