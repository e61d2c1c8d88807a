"""Fixtures of the langchain-memos tests: an offline MemOS (hashing embedder, no LLM) per test.

LangChain's standard test suites (``langchain_tests``) define ``async def`` tests without an
asyncio mark, written for ``asyncio_mode = "auto"``; this repository runs pytest-asyncio in strict
mode, where they would be skipped, and the suites forbid overriding their tests. The collection
hook below therefore marks unmarked coroutine tests of this directory only (conftest collection
hooks apply to the collectors under their directory), as auto mode would.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE

#: Facts about Alice, stored one memory each in her cube ``c1`` by the ``seeded`` fixture.
ALICE_FACTS = [
    "Alice lives in Lisbon.",
    "Alice works as a marine biologist.",
    "Alice has a dog named Pixel.",
    "Alice drinks green tea every morning.",
    "Alice plays the cello in a quartet.",
    "Alice was born in Porto in 1990.",
    "Alice is learning Japanese.",
    "Alice runs a half marathon every spring.",
    "Alice prefers trains to planes.",
    "Alice is allergic to peanuts.",
    "Alice's sister Carla lives in Berlin.",
    "Alice grows tomatoes on her balcony.",
]


@pytest.fixture
def alice_facts() -> list[str]:
    """Return the facts the ``seeded`` fixture stores in alice's cube ``c1``."""
    return list(ALICE_FACTS)


@pytest.fixture
def mos(tmp_path: Path) -> Iterator[MemOS]:
    """Yield a set-up MemOS with alice's cube ``c1`` and bob's cube ``b1``."""
    with MemOS.from_path(tmp_path / "home", **PRESET_OFFLINE) as m:
        m.create_cube("c1", "alice")
        m.create_cube("b1", "bob")
        yield m


@pytest.fixture
def seeded(mos: MemOS) -> MemOS:
    """``mos`` with :data:`ALICE_FACTS` in ``c1`` and one secret of bob's in ``b1``."""
    mos.add([{"role": "user", "content": f} for f in ALICE_FACTS], user_id="alice", cube_id="c1", mode="facts")
    mos.add(
        [{"role": "user", "content": "Bob's bank PIN hint is the name of his first cat, Whiskers."}],
        user_id="bob",
        cube_id="b1",
        mode="facts",
    )
    return mos


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Generator[None, Any, Any]:
    """Mark coroutine test functions that carry no asyncio mark with ``pytest.mark.asyncio``.

    ``trylast`` makes this wrapper run inside pytest-asyncio's, so the mark is there when
    pytest-asyncio turns the collected functions into its asyncio test items.
    """
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and item.get_closest_marker("asyncio") is None
        ):
            item.add_marker(pytest.mark.asyncio)
    return result
