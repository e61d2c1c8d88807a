"""Concurrent writers on one home lose nothing: two MemOS instances (threads) and two processes.

Before the tree write moved into the store's transaction (topics inserted idempotently, FOLLOWS
links resolved in the write), 15 of 40 concurrent first-turn adds to new sessions failed with a
UNIQUE-constraint error.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE
from memos_agents.schema import NodeKind, RelationType

pytestmark = pytest.mark.unit

SESSIONS = 4


def turn(writer: str, n: int) -> list[dict[str, object]]:
    """One first-or-later turn of session ``s{n % SESSIONS}``, distinct from every other."""
    return [
        {
            "role": "user",
            "name": "Alice",
            "content": f"Writer {writer} says note number {n} about kites and {writer}-{n * 7919}.",
            "id": f"{writer}:{n}",
            "session_id": f"s{n % SESSIONS}",
        }
    ]


def write_many(home: str, writer: str, count: int) -> list[str]:
    """Add ``count`` one-turn messages as ``writer``; return the stored ids (runs in threads and processes)."""
    ids: list[str] = []
    with MemOS.from_path(home, **PRESET_OFFLINE) as mos:
        for n in range(count):
            ids += mos.add(turn(writer, n), "alice", "c1").ids
    return ids


def check_tree(home: Path, expected_ids: list[str]) -> None:
    with MemOS.from_path(home, **PRESET_OFFLINE) as mos:
        items = mos.store.list_items("c1")
        memories = [i for i in items if i.node_kind == NodeKind.MEMORY]
        assert sorted(i.id for i in memories) == sorted(expected_ids)  # nothing lost, nothing extra
        topics = [i for i in items if i.node_kind == NodeKind.TOPIC]
        assert sorted(t.id for t in topics) == [f"topic.s{n}" for n in range(SESSIONS)]
        parents = mos.store.get_edges("c1", types=[RelationType.PARENT])
        assert Counter(e.target_id for e in parents) == Counter(expected_ids)  # each turn under one topic
        follows = mos.store.get_edges("c1", types=[RelationType.FOLLOWS])
        # each session is one chain: every turn but the first follows exactly one, none is followed twice
        assert len(follows) == len(expected_ids) - SESSIONS
        assert max(Counter(e.source_id for e in follows).values()) == 1
        assert max(Counter(e.target_id for e in follows).values()) == 1


def test_two_instances_in_threads_lose_no_write(tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as mos:
        mos.create_cube("c1", "alice")
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def run(writer: str) -> None:
        try:
            results[writer] = write_many(str(tmp_path), writer, 10)
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [i for writer_ids in results.values() for i in writer_ids]
    assert len(ids) == 40
    check_tree(tmp_path, ids)


def test_two_processes_lose_no_write(tmp_path: Path) -> None:
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as mos:
        mos.create_cube("c1", "alice")
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        results = pool.starmap(write_many, [(str(tmp_path), "p0", 20), (str(tmp_path), "p1", 20)])
    ids = [i for writer_ids in results for i in writer_ids]
    assert len(ids) == 40
    check_tree(tmp_path, ids)
