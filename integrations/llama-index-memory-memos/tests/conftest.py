"""Fixtures of the LlamaIndex integration's tests: an offline MemOS (hashing embedder, no LLM) with two cubes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE
from memos_agents.plaintext.stores.base import CallContext, ListOp
from memos_agents.schema import MemoryItem, SearchFilters


@pytest.fixture
def mos(tmp_path: Path) -> Iterator[MemOS]:
    """Yield a MemOS on a temporary home: cube ``c1`` owned by alice, cube ``c2`` owned by bob."""
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as m:
        m.create_cube("c1", "alice")
        m.create_cube("c2", "bob")
        yield m


@pytest.fixture
def stored(mos: MemOS) -> Callable[..., list[MemoryItem]]:
    """``stored(cube_id="c1", user_id="alice")``: every active memory of a cube (no topic nodes), oldest first."""

    def read(cube_id: str = "c1", user_id: str = "alice") -> list[MemoryItem]:
        items: list[MemoryItem] = mos.store.batch(
            [ListOp(cube_id, filters=SearchFilters())], ctx=CallContext.of(user_id)
        )[0]
        return items

    return read


@pytest.fixture
def stored_lines(stored: Callable[..., list[MemoryItem]]) -> Callable[..., list[str]]:
    """``stored_lines(cube_id="c1")``: the text lines of a cube's memories (one line per conversation turn)."""

    def read(cube_id: str = "c1", user_id: str = "alice") -> list[str]:
        return [line for item in stored(cube_id, user_id) for line in item.text.split("\n")]

    return read
