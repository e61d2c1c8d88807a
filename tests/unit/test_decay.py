"""Access tracking and decay: ACT-R activation, the access tracker, decay in ranking, the archive step."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.errors import ConfigError, StoreError
from memos_agents.operation.lifecycle import AccessTracker, LifecyclePolicy
from memos_agents.plaintext.decay import activation, idle_seconds_below, recall_probability
from memos_agents.plaintext.stores.base import RecordAccessOp
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.schema import LifecycleState
from memos_agents.testing.doubles import ManualClock

pytestmark = pytest.mark.unit

DAY = 86_400.0


Clock = ManualClock


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_mos(home: Path, clock: Clock, **config: object) -> MemOS:
    m = MemOS.from_path(home, embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"}, **config)
    m.clock = clock
    m.setup()
    m.create_cube("notes", "ann")
    return m


@pytest.fixture
def mos(tmp_path: Path, clock: Clock) -> Iterator[MemOS]:
    m = make_mos(tmp_path / "home", clock, access_flush_s=3600.0)  # flushed by hand in these tests
    yield m
    m.close()


def exact_actr(uses_ago: list[float], d: float = 0.5) -> float:
    """ACT-R's base-level equation over every use (Anderson & Lebiere 1998)."""
    return math.log(sum(t**-d for t in uses_ago))


# -- the model -------------------------------------------------------------------------------------------
def test_activation_of_a_memory_never_used_is_actr_exactly() -> None:
    for t in (1.0, 60.0, DAY, 365 * DAY):
        assert activation(1, t, t) == pytest.approx(-0.5 * math.log(t))
        assert activation(1, t, t) == pytest.approx(exact_actr([t]))


def test_petrov_approximation_is_close_to_the_full_equation_for_evenly_spread_uses() -> None:
    # stored 30 days ago, used every day since, last use 1 day ago
    uses = [float(DAY * k) for k in range(1, 31)]
    approx = activation(len(uses), uses[-1], uses[0])
    assert approx == pytest.approx(exact_actr(uses), abs=0.1)


def test_activation_grows_with_use_and_recency_and_falls_with_age() -> None:
    base = activation(5, 30 * DAY, 5 * DAY)
    assert activation(10, 30 * DAY, 5 * DAY) > base  # more uses
    assert activation(5, 30 * DAY, 1 * DAY) > base  # used more recently
    assert activation(5, 90 * DAY, 5 * DAY) < base  # older (the same uses spread over a longer life)
    assert activation(1, 0.0, 0.0) == 0.0  # floored at one second
    with pytest.raises(ValueError):
        activation(0, DAY, DAY)
    with pytest.raises(ValueError):
        activation(1, DAY, DAY, decay=1.0)


def test_idle_bound_is_a_true_bound() -> None:
    """No memory used more recently than ``idle_seconds_below(θ)`` has an activation below θ."""
    for threshold in (-9.0, -7.5, -5.0):
        idle = idle_seconds_below(threshold)
        for uses in (1, 2, 10, 1000):
            for age in (idle, 10 * idle, 1000 * idle):
                for since in (1.0, idle / 2, idle * 0.999):
                    assert activation(uses, age, since) >= threshold - 1e-9
        assert activation(1, 2 * idle, 2 * idle) < threshold  # and it is reached when unused past it


def test_recall_probability() -> None:
    assert recall_probability(-7.0, -7.0, 0.5) == pytest.approx(0.5)
    assert recall_probability(-4.0, -7.0, 0.5) > 0.99
    assert recall_probability(-1e6, -7.0, 0.5) == 0.0
    with pytest.raises(ValueError):
        recall_probability(0.0, 0.0, 0.0)


# -- access tracking ------------------------------------------------------------------------------------
def test_search_results_and_reads_are_counted_once_flushed(mos: MemOS, clock: Clock) -> None:
    (bees,) = mos.add([{"role": "user", "content": "ann keeps bees in the garden"}], "ann", "notes").ids
    (boat,) = mos.add([{"role": "user", "content": "ann sails a small boat"}], "ann", "notes").ids
    hits = mos.search("bees garden", "ann", ["notes"], top_k=1)
    assert [h.item.id for h in hits] == [bees]
    mos.get(bees, "ann", "notes")
    mos.search("bees", "ann", ["notes"], top_k=1, as_of=clock.now)  # a look into the past is no use
    assert mos.store.get("notes", [bees])[0].access_count == 0  # buffered: search did not write
    assert mos.access is not None and mos.access.pending == 1
    clock.advance(minutes=1)
    assert mos.flush_access() == 1
    (got, other) = mos.store.get("notes", [bees, boat])
    assert (got.access_count, got.last_accessed_at, other.access_count) == (2, clock.now, 0)
    assert got.version == 1  # a use is not a change
    assert asyncio.run(mos.aflush_access()) == 0


def test_the_background_thread_records_uses_and_close_records_the_rest(tmp_path: Path, clock: Clock) -> None:
    m = make_mos(tmp_path / "home", clock, access_flush_s=0.05)
    (a,) = m.add([{"role": "user", "content": "ann keeps bees"}], "ann", "notes").ids
    m.get(a, "ann", "notes")
    deadline = time.monotonic() + 10
    while m.store.get("notes", [a])[0].access_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert m.store.get("notes", [a])[0].access_count == 1
    assert m.access is not None
    m.access.flush_s = 3600.0
    m.get(a, "ann", "notes")
    m.close()  # the last use is recorded on close
    m.store.setup()
    assert m.store.get("notes", [a])[0].access_count == 2
    m.store.close()


def test_tracking_can_be_turned_off(tmp_path: Path, clock: Clock) -> None:
    m = make_mos(tmp_path / "home", clock, track_access=False)
    (a,) = m.add([{"role": "user", "content": "ann keeps bees"}], "ann", "notes").ids
    m.get(a, "ann", "notes")
    assert m.access is None and m.flush_access() == 0
    assert m.store.get("notes", [a])[0].access_count == 0
    m.close()
    with pytest.raises(ConfigError):
        MemOS.from_path(tmp_path / "x", access_flush_s=0)


def test_the_tracker_keeps_uses_when_the_store_fails_and_forgets_deleted_cubes() -> None:
    store = InMemoryStore()
    store.setup()
    from memos_agents.cube import CubeHeader
    from memos_agents.schema import MemoryItem

    store.create_cube(CubeHeader(cube_id="c1", owner_id="ann"))
    store.create_cube(CubeHeader(cube_id="c2", owner_id="ann"))
    a, b = MemoryItem(text="a"), MemoryItem(text="b")
    store.add("c1", [a])
    store.add("c2", [b])
    tracker = AccessTracker(store, flush_s=3600.0, max_pending=2)
    tracker.note([("c1", a.id), ("c2", b.id), ("gone", "x1")])
    assert tracker.flush() == 2  # the deleted cube alone is refused and forgotten
    assert tracker.pending == 0
    real_batch = store.batch

    def failing(*args: object, **kwargs: object) -> list[object]:
        raise StoreError("the database is unreachable")

    store.batch = failing  # type: ignore[method-assign]  # every write now fails: the counts wait
    tracker.note([("c1", a.id), ("c1", a.id)])
    assert tracker.flush() == 0 and tracker.pending == 1
    tracker.note([("c1", "y1"), ("c1", "y2")])
    assert tracker.flush() == 0 and tracker.pending == 2 and tracker.dropped == 1
    store.batch = real_batch  # type: ignore[method-assign]
    tracker.close()
    assert store.get("c1", [a.id])[0].access_count == 3
    tracker.note([("c1", a.id)])  # closed: nothing more is taken
    assert tracker.pending == 0


def test_a_record_access_op_refuses_what_the_model_refuses() -> None:
    now = datetime.now(UTC)
    from memos_agents.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        RecordAccessOp("c1", {f"id{n}": 1 for n in range(10_001)}, now)
    with pytest.raises(InvalidInputError):
        RecordAccessOp("c1", {"a1": 1_000_001}, now)


# -- decay in ranking and in maintenance -----------------------------------------------------------------
def test_decay_weight_ranks_memories_in_use_first_among_close_matches(tmp_path: Path, clock: Clock) -> None:
    m = make_mos(tmp_path / "home", clock, retrieval={"decay_weight": 0.5}, access_flush_s=3600.0)
    (old,) = m.add([{"role": "user", "content": "ann parks the car at the station"}], "ann", "notes").ids
    clock.advance(days=40)
    (new,) = m.add([{"role": "user", "content": "ann parks the car at the office"}], "ann", "notes").ids
    hits = m.search("where does ann park the car", "ann", ["notes"], top_k=2)
    assert [h.item.id for h in hits] == [new, old]  # the memory unused for 40 days sinks
    assert all("decay" in h.signals for h in hits) and hits[0].signals["decay"] > hits[1].signals["decay"]
    m.store.record_access("notes", {old: 50}, clock.now)  # ... unless it is in use
    hits = m.search("where does ann park the car", "ann", ["notes"], top_k=2)
    assert hits[0].item.id == old
    m.close()
    off = make_mos(tmp_path / "off", clock)
    off.add([{"role": "user", "content": "ann parks the car"}], "ann", "notes")
    assert all("decay" not in h.signals for h in off.search("car", "ann", ["notes"]))
    off.close()


def test_the_decay_step_archives_memories_that_went_unused(mos: MemOS, clock: Clock) -> None:
    ids = mos.add([{"role": "user", "content": f"ann noted fact number {n}"} for n in range(6)], "ann", "notes").ids
    used, pinned, idle = ids[0], ids[1], ids[2:]
    mos.transition([pinned], "ann", "notes", "frozen")
    policy = LifecyclePolicy(
        archive_below_activation=-7.5, purge_expired_after_days=None, promote_working_after_hours=None, max_items=2
    )
    clock.advance(days=10)
    assert mos.run_lifecycle("ann", ["notes"], policy=policy)[0].archived == []  # not idle long enough yet
    for _ in range(3):
        mos.get(used, "ann", "notes")
    clock.advance(days=30)  # 40 days since stored: never used -> -0.5·ln(40 d) ≈ -7.52 < -7.5
    moved: list[str] = []
    for _ in range(3):  # two per pass (max_items), least recently used first
        (report,) = mos.run_lifecycle("ann", ["notes"], policy=policy)
        moved += report.archived
    assert sorted(moved) == sorted(idle)
    statuses = {i.id: i.status for i in mos.store.get("notes", ids)}
    assert statuses[used] is LifecycleState.ACTIVATED and statuses[pinned] is LifecycleState.FROZEN
    hits = {h.item.id for h in mos.search("fact number", "ann", ["notes"], top_k=10)}
    assert hits == {used, pinned}  # archived memories leave the default search
    archived = mos.search("fact number", "ann", ["notes"], filters={"statuses": ["archived"]}, top_k=10)
    assert {h.item.id for h in archived} == set(idle)
    history = mos.history(idle[0], "ann", "notes")
    assert [v.item.status for v in history] == [LifecycleState.ACTIVATED, LifecycleState.ARCHIVED]
    mos.transition([idle[0]], "ann", "notes", "activated")  # and back, by hand: a use, so it stays back
    assert mos.get(idle[0], "ann", "notes").status is LifecycleState.ACTIVATED
    assert mos.store.get("notes", [idle[0]])[0].access_count == 1
    assert idle[0] not in mos.run_lifecycle("ann", ["notes"], policy=policy)[0].archived


def test_memories_that_stay_above_the_threshold_do_not_hold_back_the_others(mos: MemOS, clock: Clock) -> None:
    def note(text: str) -> str:
        return mos.add([{"role": "user", "content": text}], "ann", "notes").ids[0]

    stuck = [note(f"ann's old note number {n}") for n in range(2)]
    mos.store.record_access("notes", dict.fromkeys(stuck, 50), clock.now)  # used a lot, long ago
    clock.advance(days=1)
    idle = [note(f"ann's other note number {n}") for n in range(2)]
    clock.advance(days=60)
    policy = LifecyclePolicy(
        archive_below_activation=-7.5, purge_expired_after_days=None, promote_working_after_hours=None, max_items=2
    )
    first = mos.run_lifecycle("ann", ["notes"], policy=policy)[0]
    assert (first.archived, first.more) == ([], True)  # the least recently used are still above it
    second = mos.run_lifecycle("ann", ["notes"], policy=policy)[0]
    assert sorted(second.archived) == sorted(idle)  # the next pass reads on after them
    third = mos.run_lifecycle("ann", ["notes"], policy=policy)[0]
    assert third.archived == []  # and then starts from the front again
    assert {i.status for i in mos.store.get("notes", stuck)} == {LifecycleState.ACTIVATED}


class AsyncOnlyStore(InMemoryStore):
    """A store whose sync path is missing (as a Neo4j store given only an async driver)."""

    @property
    def sync_path(self) -> bool:
        return False


def test_a_store_without_a_sync_path_is_flushed_on_the_event_loop(tmp_path: Path) -> None:
    m = MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm={"provider": "none"},
        store=AsyncOnlyStore(),
        access_flush_s=0.01,
    )

    async def run() -> int:
        await m.asetup()
        await m.acreate_cube("notes", "ann")
        (a,) = (await m.aadd([{"role": "user", "content": "ann keeps bees"}], "ann", "notes")).ids
        await m.aget(a, "ann", "notes")
        assert m.access is not None and not m.access.threaded
        await asyncio.sleep(0.05)
        await m.aget(a, "ann", "notes")  # due: a flush is scheduled on this loop
        await asyncio.sleep(0.05)
        count = m.store.get("notes", [a])[0].access_count
        await m.aclose()
        return count

    assert asyncio.run(run()) >= 1


def test_a_closed_memos_tracks_again_when_set_up_again(tmp_path: Path, clock: Clock) -> None:
    m = make_mos(tmp_path / "home", clock, access_flush_s=3600.0)
    (a,) = m.add([{"role": "user", "content": "ann keeps bees"}], "ann", "notes").ids
    m.close()
    m.setup()
    m.get(a, "ann", "notes")
    assert m.flush_access() == 1
    m.close()
