"""MemVault through the facade: history, diff and rollback (the stores' own part: the conformance suite)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError, MemoryNotFoundError, PermissionDeniedError, SensitiveDataError
from memos_agents.plaintext.stores.base import WriteBatch
from memos_agents.schema import Edge, LifecycleState, MemoryItem, NodeKind, RelationType, SearchFilters

pytestmark = pytest.mark.unit


def _mos(tmp_path: Path) -> MemOS:
    return MemOS.from_path(tmp_path / "home", embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"})


def test_history_diff_and_rollback_of_an_update(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        m.grant("c", "ann", "bob", role="writer")
        m.grant("c", "ann", "rita", role="reader")
        (mid,) = m.add([{"role": "user", "content": "My sister Ana lives in Porto."}], "ann", "c").ids
        before = m.store.get("c", [mid], with_embeddings=True)[0]
        m.update(mid, "bob", "c", text="My sister Ana lives in Lisbon.", tags=["family"])
        history = m.history(mid, "rita", "c")  # read permission is enough to read history
        assert [(v.item.version, v.change, v.changed_by) for v in history] == [(1, "update", "bob"), (2, None, None)]
        d = m.diff(mid, "ann", "c", 1, 2)
        assert d.changed["text"] == ["user: My sister Ana lives in Porto.", "My sister Ana lives in Lisbon."]
        assert d.changed["tags"][1] == ["family"] and d.embedding_changed
        assert (
            "-user: My sister Ana lives in Porto." in d.text_diff and "+My sister Ana lives in Lisbon." in d.text_diff
        )
        with pytest.raises(MemoryNotFoundError, match="no version 9"):
            m.diff(mid, "ann", "c", 1, 9)
        with pytest.raises(PermissionDeniedError):
            m.rollback(mid, "rita", "c", 1)  # a reader may not
        restored = m.rollback(mid, "bob", "c", 1)
        assert restored.version == 3 and restored.text == before.text and restored.tags == before.tags
        stored = m.store.get("c", [mid], with_embeddings=True)[0]
        assert stored.embedding == before.embedding  # the old vector, not a re-embedding
        assert [v.change for v in m.history(mid, "ann", "c")] == ["update", "update", None]
        assert m.rollback(mid, "bob", "c", 3).version == 3  # the current version: nothing changes
        assert [e["payload"] for e in m.store.list_events("c", "rollback")] == [{"memory_id": mid, "to_version": 1}]
        hits = m.search("Where does Ana live?", "ann", ["c"], top_k=1)
        assert hits[0].item.id == mid and "Porto" in hits[0].item.text


def test_rollback_restores_a_deleted_memory_with_its_edges(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        a, b, c = (MemoryItem(text=t, embedding=[1.0] + [0.0] * 63) for t in ("a kite", "a lake", "a boat"))
        m.store.apply(
            "c",
            WriteBatch(
                add=[a, b, c],
                edges=[
                    Edge(source_id=a.id, target_id=b.id, type=RelationType.RELATE_TO),
                    Edge(source_id=c.id, target_id=a.id, type=RelationType.RELATE_TO),
                ],
            ),
        )
        assert m.delete([a.id], "ann", "c") == 1
        m.delete([c.id], "ann", "c")  # one of its neighbours is gone for good
        back = m.rollback(a.id, "ann", "c", 1)
        assert back.text == "a kite" and back.version == 2
        edges = m.store.get_edges("c", [a.id])
        assert [(e.source_id, e.target_id) for e in edges] == [(a.id, b.id)]  # the edge to the deleted one is not
        assert [v.change for v in m.history(a.id, "ann", "c")] == ["delete", None]


def test_rollback_respects_the_redaction_policy_of_now(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        (mid,) = m.add([{"role": "user", "content": "Write to ana@example.org about the trip."}], "ann", "c").ids
        m.update(mid, "ann", "c", text="Write to Ana about the trip.")
        m.set_redaction("c", "ann", "refuse")
        with pytest.raises(SensitiveDataError):
            m.rollback(mid, "ann", "c", 1)  # the old content holds what the cube now refuses
        assert m.get(mid, "ann", "c").version == 2


def test_async_twins(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _mos(tmp_path) as m:
            await m.acreate_cube("c", "ann")
            (mid,) = (await m.aadd([{"role": "user", "content": "tea at noon"}], "ann", "c")).ids
            await m.aupdate(mid, "ann", "c", text="coffee at noon")
            assert len(await m.ahistory(mid, "ann", "c")) == 2
            assert (await m.adiff(mid, "ann", "c", 1, 2)).changed["text"][1] == "coffee at noon"
            assert (await m.arollback(mid, "ann", "c", 1)).text == "user: tea at noon"

    asyncio.run(scenario())


def test_point_in_time_get_and_search(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        (mid,) = m.add([{"role": "user", "content": "My sister Ana lives in Porto."}], "ann", "c").ids
        then = datetime.now(UTC)
        m.update(mid, "ann", "c", text="My sister Ana lives in Lisbon.")
        assert m.get(mid, "ann", "c", as_of=then).text.endswith("Porto.")
        assert m.get(mid, "ann", "c").text.endswith("Lisbon.")
        past = m.search("Where does Ana live?", "ann", ["c"], as_of=then)
        assert next(h.item.text for h in past if h.item.id == mid).endswith("Porto.")
        assert all("Lisbon" not in h.item.text for h in past)
        with pytest.raises(MemoryNotFoundError):
            m.get(mid, "ann", "c", as_of=then - timedelta(days=1))
        with pytest.raises(InvalidInputError):
            m.search("Ana", "ann", ["c"], as_of=datetime(2024, 1, 1))  # naive
        assert asyncio.run(m.aget(mid, "ann", "c", as_of=then)).text.endswith("Porto.")


def test_rollback_cube_undoes_a_merge_updates_deletes_and_adds(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        first = m.add(
            [{"role": "user", "content": "I love painting sunsets at the lake.", "session_id": "s1"}], "ann", "c"
        )
        keep = m.add([{"role": "user", "content": "Ben plays chess on Sundays.", "session_id": "s9"}], "ann", "c")
        (original,) = m.store.get("c", first.ids, with_embeddings=True)
        to = datetime.now(UTC)
        second = m.add(
            [{"role": "user", "content": "I love painting sunsets at the lake.", "session_id": "s2"}], "ann", "c"
        )
        assert second.merged == 1
        m.delete([keep.ids[0]], "ann", "c")
        merged = {e.target_id for e in m.store.get_edges("c", types=[RelationType.MERGED_TO])}
        assert len(merged) == 1
        done = m.rollback_cube("c", "ann", to=to)
        assert original.id in done.updated and keep.ids[0] in done.restored
        assert merged <= set(done.deleted) and set(second.ids) <= set(done.deleted)
        (back,) = m.store.get("c", [original.id], with_embeddings=True)
        assert back.status.value == "activated" and back.embedding == original.embedding and back.text == original.text
        assert m.store.get_edges("c", types=[RelationType.MERGED_TO]) == []
        now_state = {
            i.id: i.text
            for i in m.store.list_items("c", SearchFilters(statuses=list(LifecycleState), node_kinds=list(NodeKind)))
        }
        then_state = {i.id: i.text for i in m.store.as_of("c", to).items}
        assert now_state == then_state  # the cube reads as it did
        assert m.rollback_cube("c", "ann", to=datetime.now(UTC)).model_dump() == {
            "updated": [],
            "restored": [],
            "deleted": [],
        }
        assert [e["payload"]["restored"] for e in m.store.list_events("c", "rollback")] == [1]
        with pytest.raises(PermissionDeniedError):
            m.rollback_cube("c", "mallory", to=to)


def test_purge_after_retention_makes_a_delete_final(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        (mid,) = m.add([{"role": "user", "content": "A note to delete."}], "ann", "c").ids
        m.delete([mid], "ann", "c")
        assert m.purge_versions("c", "ann") == 0  # within the 30-day retention: still restorable
        assert m.rollback(mid, "ann", "c", 1).id == mid
        m.delete([mid], "ann", "c")
        with pytest.raises(PermissionDeniedError):
            m.purge_versions("c", "bob", older_than_days=0)
        assert m.purge_versions("c", "ann", older_than_days=0) == 2
        assert m.history(mid, "ann", "c") == []
        with pytest.raises(MemoryNotFoundError):
            m.rollback(mid, "ann", "c", 1)
        with pytest.raises(InvalidInputError):
            m.purge_versions("c", "ann", older_than_days=-1)


def test_forget_user_leaves_no_trace_in_the_sqlite_file(tmp_path: Path) -> None:
    marker = "Xylophonequartz"
    cfg = {"embedder": {"provider": "hashing", "dim": 64}, "llm": {"provider": "none"}, "admins": ["op"]}
    with MemOS.from_path(tmp_path / "home", **cfg) as m:
        m.create_cube("c", "ann")
        m.create_cube("d", "dan")
        m.grant("c", "ann", "uma", role="writer")
        mine = m.add([{"role": "user", "content": f"My {marker} secret is blue."}], "uma", "c").ids
        m.update(mine[0], "uma", "c", text=f"My {marker} secret is green.")
        about = m.add([{"role": "user", "content": f"Uma's {marker} hobby."}], "dan", "d", subject_id="uma").ids
        other = m.add([{"role": "user", "content": "The weather is fine."}], "dan", "d").ids
        assert list(m.forget_user("uma", "ann")) == ["c"]  # a cube admin: its own cubes only
        erased = m.forget_user("uma", "op")  # an operator: every cube
        assert set(erased["d"]) >= set(about) and erased["c"] == []
        assert [h.item.id for h in m.search(marker, "op", ["c", "d"])] in ([], other)
        assert m.store.count("d") == len(other) and m.history(mine[0], "op", "c") == []
        entries = m.audit_log("op", "d", action="forget_user")
        assert entries and marker not in entries[-1].model_dump_json()
        db = m.store.path  # type: ignore[attr-defined]
    raw = b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*") if p.is_file())
    assert marker.encode() not in raw and marker.lower().encode() not in raw
