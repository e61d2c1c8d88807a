"""Property tests (hypothesis): random histories of adds, updates, deletes, merges, rollbacks and refused writes.

After any such history, on the in-memory and the SQLite store: every state an item was ever
stored in is kept exactly once in its history, in version order, the current one last; a
rollback (of an item, or of the whole cube to an earlier instant, across merges) restores the
old texts, states and embeddings exactly; every point-in-time read (``as_of``) of an instant
after each step equals the cube as it was read then; refused writes change nothing and are
audited as denied; and the cube's audit chain verifies.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_agents import MemOS
from memos_agents.errors import PermissionDeniedError
from memos_agents.infra.audit import AuditOutcome
from memos_agents.plaintext.stores.base import BaseMemoryStore, CallContext, WriteBatch
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.schema import Edge, LifecycleState, MemoryItem, NodeKind, RelationType, SearchFilters

pytestmark = pytest.mark.unit

IDS = ("m1", "m2", "m3")
DIM = 8
WORDS = st.sampled_from(["tea", "kites", "Porto", "Lisbon", "piano", "lake", "concert", "garden"])
TEXT = st.lists(WORDS, min_size=1, max_size=4).map(" ".join)
OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(IDS), TEXT),  # add if absent, else update
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.just("")),
    st.tuples(st.just("rollback"), st.sampled_from(IDS), st.integers(min_value=1, max_value=6)),
    st.tuples(st.just("intrude"), st.sampled_from(IDS), TEXT),  # a stranger tries to write
    st.tuples(st.just("merge"), st.sampled_from(IDS), st.sampled_from(IDS)),  # as the tree organizer merges
    st.tuples(st.just("back"), st.sampled_from(IDS), st.integers(min_value=0, max_value=30)),  # rollback_cube
)
EVERYTHING = SearchFilters(statuses=list(LifecycleState), node_kinds=list(NodeKind))
State = dict[str, tuple[str, str, list[float] | None]]


def _state(store: BaseMemoryStore) -> State:
    """The cube as a caller reads it now: id -> (text, status, embedding)."""
    items = store.list_items("c", EVERYTHING, with_embeddings=True)
    return {i.id: (i.text, i.status.value, i.embedding) for i in items}


def _vector(text: str) -> list[float]:
    v = [0.0] * DIM
    for word in text.split():
        v[sum(map(ord, word)) % DIM] += 1.0
    return v


def _replay(mos: MemOS, ops: list[tuple[str, str, object]]) -> None:
    store, owner, stranger = mos.store, CallContext.of("ann"), CallContext.of("mallory")
    mos.create_cube("c", "ann")
    states: dict[str, list[tuple[int, str, list[float]]]] = {i: [] for i in IDS}  # every stored state
    present: set[str] = set()
    refused = 0
    checkpoints: list[tuple[datetime, State]] = [(datetime.now(UTC), {})]
    for n, (kind, item_id, arg) in enumerate(ops):
        if kind == "put":
            text = str(arg)
            if item_id in present:
                (cur,) = store.get("c", [item_id])
                (new,) = store.update(
                    "c", [cur.model_copy(update={"text": text, "embedding": _vector(text)})], ctx=owner
                )
            elif not states[item_id]:
                new = MemoryItem(id=item_id, text=text, embedding=_vector(text))
                store.add("c", [new], ctx=owner)
            else:
                continue  # a deleted id comes back only by rollback
            present.add(item_id)
            states[item_id].append((new.version, text, _vector(text)))
        elif kind == "delete" and item_id in present:
            assert store.delete("c", [item_id], ctx=owner) == 1
            present.discard(item_id)
        elif kind == "rollback":
            kept = {v: (t, e) for v, t, e in states[item_id]}
            if int(str(arg)) not in kept or (item_id in present and states[item_id][-1][0] == int(str(arg))):
                continue
            back = mos.rollback(item_id, "ann", "c", int(str(arg)))
            text, vector = kept[int(str(arg))]
            assert back.text == text and back.version == max(kept) + 1
            assert store.get("c", [item_id], with_embeddings=True)[0].embedding == vector  # the exact old vector
            present.add(item_id)
            states[item_id].append((back.version, text, vector))
        elif kind == "intrude":
            with pytest.raises(PermissionDeniedError):
                store.add("c", [MemoryItem(text=str(arg), embedding=_vector(str(arg)))], ctx=stranger)
            refused += 1
        elif kind == "merge" and item_id != arg and {item_id, str(arg)} <= present:
            originals = store.get("c", [item_id, str(arg)])
            merged = MemoryItem(id=f"g{n}", text=" / ".join(o.text for o in originals), embedding=_vector("merged"))
            archived = [o.model_copy(update={"status": LifecycleState.ARCHIVED}) for o in originals]
            edges = [Edge(source_id=o.id, target_id=merged.id, type=RelationType.MERGED_TO) for o in originals]
            result = store.apply("c", WriteBatch(add=[merged], update=archived, edges=edges), ctx=owner)
            for new in result.updated:
                states[new.id].append((new.version, new.text, _vector(new.text)))
            present.add(merged.id)
        elif kind == "back":
            to, then = checkpoints[int(str(arg)) % len(checkpoints)]
            done = mos.rollback_cube("c", "ann", to=to)
            assert _state(store) == then  # the cube reads as it did, merges undone
            for back_id in [*done.updated, *done.restored]:
                if back_id in states:
                    (cur,) = store.get("c", [back_id], with_embeddings=True)
                    states[back_id].append((cur.version, cur.text, cur.embedding or []))
            present = set(then)
        checkpoints.append((datetime.now(UTC), _state(store)))
    for at, then in checkpoints:  # every point-in-time read equals what was read at that time
        snap = store.as_of("c", at, with_embeddings=True)
        assert {i.id: (i.text, i.status.value, i.embedding) for i in snap.items} == then
    for item_id in IDS:
        history = store.history("c", item_id, with_embeddings=True)
        assert [(v.item.version, v.item.text, v.item.embedding) for v in history] == states[item_id]
        assert [v.change is None for v in history] == [
            i == len(history) - 1 and item_id in present for i in range(len(history))
        ]
    assert store.count("c") == len(present)
    denied = store.list_audit("c", outcome=AuditOutcome.DENIED, limit=10_000)
    assert len(denied) == refused and all(e.actor == "mallory" for e in denied)
    assert store.verify_audit("c").ok


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=30))
def test_histories_on_the_in_memory_store(ops: list[tuple[str, str, object]]) -> None:
    with tempfile.TemporaryDirectory() as home:
        mos = MemOS.from_path(
            Path(home), store=InMemoryStore(), embedder={"provider": "hashing", "dim": DIM}, llm={"provider": "none"}
        )
        with mos:
            _replay(mos, ops)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=30))
def test_histories_on_the_sqlite_store(ops: list[tuple[str, str, object]]) -> None:
    with tempfile.TemporaryDirectory() as home:
        with MemOS.from_path(Path(home), embedder={"provider": "hashing", "dim": DIM}, llm={"provider": "none"}) as mos:
            _replay(mos, ops)
