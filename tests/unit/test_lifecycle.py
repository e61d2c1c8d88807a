"""MemLifecycle: the transition table, expiry with an injected clock, retention, consolidation, policies."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.errors import ConfigError, InvalidInputError, LifecycleTransitionError, PermissionDeniedError
from memos_agents.operation.lifecycle import TRANSITIONS, LifecyclePolicy, check_transition
from memos_agents.plaintext.stores.base import WriteBatch
from memos_agents.schema import LifecycleState, MemoryItem, MemoryType, RelationType
from memos_agents.testing.doubles import ManualClock

pytestmark = pytest.mark.unit

S = LifecycleState
#: Every legal move (a move to the same state is none, and always allowed).
LEGAL = {
    (S.GENERATED, S.ACTIVATED),
    (S.GENERATED, S.ARCHIVED),
    (S.GENERATED, S.EXPIRED),
    (S.GENERATED, S.FROZEN),
    (S.ACTIVATED, S.MERGED),
    (S.ACTIVATED, S.ARCHIVED),
    (S.ACTIVATED, S.EXPIRED),
    (S.ACTIVATED, S.FROZEN),
    (S.MERGED, S.ARCHIVED),
    (S.MERGED, S.EXPIRED),
    (S.ARCHIVED, S.ACTIVATED),
    (S.ARCHIVED, S.EXPIRED),
    (S.FROZEN, S.ACTIVATED),
}


Clock = ManualClock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mos(tmp_path: Path, clock: Clock) -> Iterator[MemOS]:
    m = MemOS.from_path(tmp_path / "home", embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"})
    m.clock = clock
    m.setup()
    m.create_cube("notes", "ann")
    yield m
    m.close()


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_every_pair_of_the_transition_table(old: LifecycleState, new: LifecycleState) -> None:
    if old == new or (old, new) in LEGAL:
        check_transition(old, new)
    else:
        with pytest.raises(LifecycleTransitionError) as err:
            check_transition(old, new)
        assert old.value in str(err.value) and new.value in str(err.value)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


def test_unknown_states_are_refused() -> None:
    with pytest.raises(LifecycleTransitionError):
        check_transition("activated", "deleted")
    assert issubclass(LifecycleTransitionError, InvalidInputError)


def test_transitions_are_checked_versioned_and_audited(mos: MemOS) -> None:
    (a,) = mos.add([{"role": "user", "content": "ann keeps bees"}], "ann", "notes").ids
    (b,) = mos.add([{"role": "user", "content": "ann sails on sundays"}], "ann", "notes").ids
    frozen = mos.transition([a], "ann", "notes", "frozen")
    assert [(i.id, i.status, i.version) for i in frozen] == [(a, S.FROZEN, 2)]
    with pytest.raises(LifecycleTransitionError):  # frozen -> archived is not a move: both stay as they are
        mos.transition([b, a], "ann", "notes", "archived")
    assert mos.get(b, "ann", "notes").status == S.ACTIVATED
    mos.transition([a], "ann", "notes", "activated")
    assert [h.item.id for h in mos.search("bees", "ann", ["notes"])][:1] == [a]  # searchable again
    assert [i.status for i in asyncio.run(mos.atransition([a, b], "ann", "notes", "archived"))] == [S.ARCHIVED] * 2
    assert mos.transition([a], "ann", "notes", S.ARCHIVED)[0].version == 4  # already there: nothing written
    history = mos.history(a, "ann", "notes")
    assert [v.item.status for v in history] == [S.ACTIVATED, S.FROZEN, S.ACTIVATED, S.ARCHIVED]
    writes = [e for e in mos.audit_log("ann", "notes", action="write") if a in e.item_ids]
    assert len(writes) == 4  # the add and three moves
    mos.transition([a], "ann", "notes", "expired")
    with pytest.raises(LifecycleTransitionError):  # expired is final
        mos.transition([a], "ann", "notes", "activated")
    with pytest.raises(LifecycleTransitionError):  # update(status=...) follows the table too
        mos.update(a, "ann", "notes", status=S.ACTIVATED)
    with pytest.raises(PermissionDeniedError):
        mos.transition([b], "eve", "notes", "activated")
    with pytest.raises(InvalidInputError):
        mos.transition("abc", "ann", "notes", "activated")  # type: ignore[arg-type]


def test_expiry_leaves_search_at_once_and_a_pass_expires_purges_and_promotes(mos: MemOS, clock: Clock) -> None:
    (short,) = mos.add([{"role": "user", "content": "the door code is 4711 this week"}], "ann", "notes", ttl_s=3600).ids
    (lasting,) = mos.add([{"role": "user", "content": "the door code of the shed is 1234"}], "ann", "notes").ids
    assert mos.get(short, "ann", "notes").expires_at == clock.now + timedelta(hours=1)
    assert short in [h.item.id for h in mos.search("door code", "ann", ["notes"])]
    clock.advance(hours=1)  # expires_at reached: gone from search at once, before any pass
    hits = [h.item.id for h in mos.search("door code", "ann", ["notes"])]
    assert short not in hits and lasting in hits
    assert mos.get(short, "ann", "notes").status == S.ACTIVATED  # not marked yet
    # working memory, written directly, older than the policy's age
    old_note = MemoryItem(text="ann is drafting a letter", memory_type=MemoryType.WORKING, embedding=[0.125] * 64)
    mos.store.apply("notes", WriteBatch(add=[old_note]))
    policy = LifecyclePolicy(purge_expired_after_days=1, promote_working_after_hours=0)
    (report,) = mos.run_lifecycle("ann", ["notes"], policy=policy)
    assert (report.expired, report.purged, report.promoted, report.more) == ([short], [], [old_note.id], False)
    assert mos.get(short, "ann", "notes").status == S.EXPIRED
    assert mos.get(old_note.id, "ann", "notes").memory_type == MemoryType.LONG_TERM
    (again,) = mos.run_lifecycle("ann", ["notes"], policy=policy)  # nothing left to do
    assert (again.expired, again.purged, again.promoted) == ([], [], [])
    clock.advance(days=1, seconds=1)  # retention over: deleted, its last version kept by MemVault
    (later,) = mos.run_lifecycle("ann", ["notes"], policy=policy)
    assert later.purged == [short]
    assert [v.change for v in mos.history(short, "ann", "notes")][-1] == "delete"
    assert lasting in [h.item.id for h in mos.search("door code", "ann", ["notes"])]


def test_a_pass_is_bounded_and_goes_on_where_it_stopped(mos: MemOS, clock: Clock) -> None:
    ids = mos.add([{"role": "user", "content": f"reminder number {n}"} for n in range(7)], "ann", "notes", ttl_s=60).ids
    clock.advance(minutes=2)
    policy = {"max_items": 3, "purge_expired_after_days": None, "promote_working_after_hours": None}
    moved: list[str] = []
    for _ in range(3):
        (report,) = mos.run_lifecycle("ann", ["notes"], policy=policy)
        moved += report.expired
    assert sorted(moved) == sorted(ids) and len(moved) == len(set(moved))
    assert mos.after_turn("ann", "notes").expired == []


def test_a_cube_default_ttl_and_frozen_memories(mos: MemOS, clock: Clock) -> None:
    header = mos.get_cube("notes", "ann")
    mos.store.update_cube(header.model_copy(update={"memory_ttl_s": 600}))
    (pinned,) = mos.add([{"role": "user", "content": "ann's passport number is kept in the safe"}], "ann", "notes").ids
    (other,) = mos.add([{"role": "user", "content": "ann bought milk"}], "ann", "notes", ttl_s=60).ids
    assert mos.get(pinned, "ann", "notes").expires_at == clock.now + timedelta(minutes=10)
    mos.transition([pinned], "ann", "notes", "frozen")
    clock.advance(hours=1)
    report = mos.after_turn("ann", "notes")
    assert report.expired == [other]  # frozen never expires
    assert mos.get(pinned, "ann", "notes").status == S.FROZEN


def test_policies_from_files(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("[lifecycle]\nmax_items = 50\npurge_expired_after_days = 7\n")
    (tmp_path / "p.yaml").write_text("expire: false\npromote_working_after_hours: 2\n")
    (tmp_path / "p.json").write_text('{"max_items": 5}')
    assert LifecyclePolicy.from_file(tmp_path / "p.toml").purge_expired_after_days == 7
    assert LifecyclePolicy.from_file(tmp_path / "p.yaml").expire is False
    assert LifecyclePolicy.from_file(tmp_path / "p.json").max_items == 5
    (tmp_path / "bad.toml").write_text("max_items = 0\n")
    (tmp_path / "typo.json").write_text('{"max_itemz": 5}')
    (tmp_path / "broken.yaml").write_text("a: [\n")
    for bad in ("bad.toml", "typo.json", "broken.yaml", "missing.toml", "p.txt"):
        (tmp_path / "p.txt").write_text("")
        with pytest.raises(ConfigError):
            LifecyclePolicy.from_file(tmp_path / bad)


def test_a_memory_stored_before_a_stricter_redaction_policy_still_expires(mos: MemOS, clock: Clock) -> None:
    (pii,) = mos.add([{"role": "user", "content": "call ann on +49 30 1234567"}], "ann", "notes", ttl_s=60).ids
    mos.set_redaction("notes", "ann", "refuse")
    clock.advance(minutes=2)
    (report,) = mos.run_lifecycle("ann", ["notes"])
    assert report.expired == [pii] and report.skipped == {}
    from memos_agents.errors import SensitiveDataError

    with pytest.raises(SensitiveDataError):  # a change of the content is still checked
        mos.store.update("notes", [mos.get(pii, "ann", "notes").model_copy(update={"text": "ann: +49 30 7654321"})])


def test_expired_candidates_do_not_shrink_the_results(mos: MemOS, clock: Clock) -> None:
    for n in range(40):  # one memory each (a multi-turn add is stored as windows of turns)
        mos.add([{"role": "user", "content": f"lunch at the canteen on day {n}"}], "ann", "notes", ttl_s=60)
    keep = [
        mos.add([{"role": "user", "content": f"lunch at the canteen with bob {n}"}], "ann", "notes").ids[0]
        for n in range(6)
    ]
    clock.advance(minutes=5)
    hits = mos.search("lunch at the canteen", "ann", ["notes"], top_k=5)
    assert len(hits) == 5 and {h.item.id for h in hits} <= set(keep)
    assert all(h.via is None or h.via in keep for h in hits)


def test_frozen_memories_are_pinned_and_searched(mos: MemOS, clock: Clock) -> None:
    (a,) = mos.add(
        [{"role": "user", "content": "ann's wifi password hint is the cat's name"}], "ann", "notes", ttl_s=60
    ).ids
    (frozen,) = mos.transition([a], "ann", "notes", "frozen")
    assert frozen.expires_at is None  # pinned: its expiry is cleared
    clock.advance(hours=2)
    assert [h.item.id for h in mos.search("wifi password hint", "ann", ["notes"])][:1] == [a]
    assert mos.after_turn("ann", "notes").expired == []
    assert mos.transition([a], "ann", "notes", "activated")[0].expires_at is None  # no stale expiry comes back


def test_times_handed_over_unvalidated_are_stored_in_utc(mos: MemOS, clock: Clock) -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    local = (clock.now + timedelta(hours=1)).astimezone(plus2)
    item = MemoryItem(text="ann's parcel arrives", embedding=[0.125] * 64).model_copy(update={"expires_at": local})
    mos.store.apply("notes", WriteBatch(add=[item]))
    stored = mos.get(item.id, "ann", "notes")
    assert stored.expires_at == local and stored.expires_at.utcoffset() == timedelta(0)
    clock.advance(minutes=61)
    assert mos.after_turn("ann", "notes").expired == [item.id]


def test_merges_never_cross_expiry_and_never_revive_expired_content(mos: MemOS, clock: Clock) -> None:
    said = [{"role": "user", "content": "ann likes green tea with honey"}]
    (lasting,) = mos.add(said, "ann", "notes").ids
    (short,) = mos.add(said, "ann", "notes", ttl_s=600).ids  # the same statement, but it expires: kept apart
    assert mos.get(lasting, "ann", "notes").status == S.ACTIVATED and mos.get(short, "ann", "notes").expires_at
    again = mos.add(said, "ann", "notes", ttl_s=60)  # both expire: merged, expiring with the earlier
    assert again.merged == 1
    merged = [mos.get(i, "ann", "notes") for i in again.ids]
    assert [m.expires_at for m in merged if m.status == S.ACTIVATED] == [clock.now + timedelta(seconds=60)]
    clock.advance(hours=1)  # everything with a TTL is past its expiry: a new one is no duplicate of it
    fresh = mos.add(said, "ann", "notes", ttl_s=60)
    assert fresh.merged == 0 and mos.get(fresh.ids[0], "ann", "notes").status == S.ACTIVATED


def test_near_duplicates_written_apart_are_merged_by_a_pass(mos: MemOS) -> None:
    text = "ann's bike is the red one with the basket"
    (vector,) = mos.embedder.embed([text])
    twins = [MemoryItem(text=text, embedding=[float(x) for x in vector]) for _ in range(2)]
    other = MemoryItem(
        text="ann plays chess on fridays", embedding=[float(x) for x in mos.embedder.embed(["chess"])[0]]
    )
    mos.store.apply("notes", WriteBatch(add=[*twins, other]))  # as an import would: never organised together
    policy = {"consolidate_changed_within_hours": 1, "purge_expired_after_days": None}
    (report,) = mos.run_lifecycle("ann", ["notes"], policy=policy)
    assert len(report.consolidated) == 1
    (merged,) = mos.store.get("notes", report.consolidated)
    assert merged.text == text and merged.status is S.ACTIVATED
    statuses = {i.id: i.status for i in mos.store.get("notes", [t.id for t in twins] + [other.id])}
    assert statuses == {twins[0].id: S.ARCHIVED, twins[1].id: S.ARCHIVED, other.id: S.ACTIVATED}
    edges = mos.store.get_edges("notes", [t.id for t in twins], [RelationType.MERGED_TO], "out")
    assert sorted(e.source_id for e in edges) == sorted(t.id for t in twins)
    assert {e.target_id for e in edges} == {merged.id}
    assert mos.run_lifecycle("ann", ["notes"], policy=policy)[0].consolidated == []  # nothing left to merge
    assert [h.item.id for h in mos.search("ann's bike", "ann", ["notes"], top_k=1)] == [merged.id]
