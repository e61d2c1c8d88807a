"""MemVault through the facade: history, diff and rollback (the stores' own part: the conformance suite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.errors import MemoryNotFoundError, PermissionDeniedError, SensitiveDataError
from memos_agents.plaintext.stores.base import WriteBatch
from memos_agents.schema import Edge, MemoryItem, RelationType

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
