"""Issue 8, item 1, with the real MiniLM embedder: a corrected phone number (cosine 0.99) is not merged away."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.schema import LifecycleState

pytestmark = pytest.mark.models

T = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def one(content: str, *, session: str = "s1", mid: str | None = None) -> list[dict[str, object]]:
    return [{"role": "user", "name": "Alice", "content": content, "id": mid, "timestamp": T, "session_id": session}]


def test_a_correction_stays_current_with_minilm(tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path / "home", llm={"provider": "none"}) as m:
        m.create_cube("c1", "alice")
        m.add(one("my number is 555-0101", mid="a"), "alice", "c1")
        m.add(one("my number is 555-0199", session="s2", mid="b"), "alice", "c1")
        hits = m.search("my number is 555-0199", "alice", ["c1"])
        assert "555-0199" in hits[0].item.text
        assert all(i.status == LifecycleState.ACTIVATED for i in m.store.list_items("c1"))
