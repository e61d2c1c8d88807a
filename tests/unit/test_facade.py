import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos_agents import MemOS, Permission
from memos_agents.config import PRESET_OFFLINE
from memos_agents.cube import AclEntry
from memos_agents.errors import (
    ConfigError,
    CubeNotFoundError,
    EmbeddingDimensionError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
    PermissionDeniedError,
    TextTooLongError,
    VersionConflictError,
)
from memos_agents.models.embedders import HashingEmbedder
from memos_agents.schema import LifecycleState, MemoryItem, NodeKind, RelationType, SearchFilters

pytestmark = pytest.mark.unit

T = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def turns(session: str, *texts: str, start: int = 1) -> list[dict[str, object]]:
    speakers = ["Caroline", "Melanie"]
    return [
        {
            "role": "user",
            "name": speakers[n % 2],
            "content": t,
            "id": f"D{session}:{start + n}",
            "timestamp": T,
            "session_id": f"session_{session}",
        }
        for n, t in enumerate(texts)
    ]


@pytest.fixture
def mos(tmp_path: Path):
    with MemOS.from_path(tmp_path, **PRESET_OFFLINE) as m:
        m.create_cube("c1", "alice")
        yield m


def test_add_builds_the_tree(mos: MemOS) -> None:
    r1 = mos.add(
        turns(
            "1",
            "I went to the LGBTQ support group yesterday.",
            "That sounds inspiring!",
            "I am researching adoption agencies.",
            "Which agency did you pick?",
        ),
        "alice",
        "c1",
    )
    r2 = mos.add(turns("1", "The one that supports LGBTQ+ folks.", start=5), "alice", "c1")
    # 4 turns -> two sliding windows of 3 turns; a lone turn in a later call -> one single-turn item
    w1, w2 = mos.store.get("c1", r1.ids)
    assert w1.sources.message_ids == ["D1:1", "D1:2", "D1:3"] and w2.sources.message_ids == ["D1:2", "D1:3", "D1:4"]
    assert w1.text.splitlines()[1] == "Melanie: That sounds inspiring!"
    assert w1.sources.speakers == ["Caroline", "Melanie"] and w1.event_time == T and w1.key and w1.tags
    assert len(r2.ids) == 1 and mos.get(r2.ids[0], "alice", "c1").sources.message_ids == ["D1:5"]
    follows = {(e.source_id, e.target_id) for e in mos.store.get_edges("c1", types=[RelationType.FOLLOWS])}
    assert follows == {(w2.id, w1.id), (r2.ids[0], w2.id)}  # the chain continues across calls
    parents = mos.store.get_edges("c1", ["topic.session_1"], [RelationType.PARENT], "out")
    assert [e.target_id for e in parents] == [*r1.ids, *r2.ids]
    (topic,) = mos.store.get("c1", ["topic.session_1"])
    assert topic.node_kind == NodeKind.TOPIC and "Caroline" in topic.text


def test_search_trims_overlapping_windows(mos: MemOS) -> None:
    mos.add(
        turns("1", "We adopted a puppy.", "What is its name?", "Its name is Biscuit.", "Cute!", "Bye!"), "alice", "c1"
    )
    hits = mos.search("puppy name Biscuit", "alice", ["c1"], top_k=10)
    shown = [m for h in hits for m in h.item.sources.message_ids]
    assert len(shown) == len(set(shown)) == 5  # every turn once, no repeats across windows
    trimmed = [h for h in hits if h.trimmed]
    assert trimmed and all(len(h.item.text.splitlines()) == len(h.item.sources.message_ids) for h in hits)
    whole = mos.get(trimmed[0].item.id, "alice", "c1")
    assert len(whole.sources.message_ids) == 3  # the stored item is unchanged


def test_near_duplicates_are_merged_not_deleted(mos: MemOS) -> None:
    first = mos.add(turns("1", "I love painting sunsets at the lake."), "alice", "c1")
    second = mos.add(turns("2", "I love painting sunsets at the lake.", start=1), "alice", "c1")
    assert second.merged == 1
    originals = mos.store.get("c1", [first.ids[0], second.ids[0]])
    assert [o.status for o in originals] == [LifecycleState.ARCHIVED, LifecycleState.ARCHIVED]
    merged_edges = mos.store.get_edges("c1", types=[RelationType.MERGED_TO])
    (target,) = {e.target_id for e in merged_edges}
    merged = mos.get(target, "alice", "c1")
    assert merged.status == LifecycleState.ACTIVATED
    assert merged.sources.message_ids == ["D1:1", "D2:1"]
    hits = mos.search("painting sunsets", "alice", ["c1"])
    assert [h.item.id for h in hits][:1] == [target]


def test_search_filters_and_budget(mos: MemOS) -> None:
    places = [
        "Alps",
        "Andes",
        "Rockies",
        "Atlas",
        "Urals",
        "Pyrenees",
        "Carpathians",
        "Dolomites",
        "Tatras",
        "Cascades",
        "Appalachians",
        "Himalayas",
    ]
    for n, place in enumerate(places):
        mos.add(turns(str(n), f"We went hiking on mountain trails in the {place}."), "alice", "c1")
    hits = mos.search("hiking mountains", "alice", ["c1"], top_k=12)
    assert len(hits) == 12 and all(h.tokens > 0 for h in hits)
    assert hits == sorted(hits, key=lambda h: -h.score)
    budget = hits[0].tokens * 3
    within = mos.search("hiking mountains", "alice", ["c1"], top_k=12, token_budget=budget)
    assert 0 < len(within) <= 3 and sum(h.tokens for h in within) <= budget
    assert mos.search("hiking", "alice", ["c1"], filters={"user_id": "someone-else"}) == []
    assert mos.search("hiking", "alice", ["c1"], filters=SearchFilters(time_from=T.replace(year=2024))) == []
    assert all(h.item.node_kind == NodeKind.MEMORY for h in hits)


def test_search_spans_cubes_and_checks_acl(mos: MemOS) -> None:
    mos.create_cube("c2", "bob", acl=[AclEntry(principal="alice", permissions=[Permission.READ])])
    mos.create_cube("c3", "bob")
    mos.add(turns("1", "Bob's cat is called Pixel."), "bob", "c2")
    mos.add(turns("1", "Bob's secret diary entry about Pixel."), "bob", "c3")
    mos.add(turns("1", "Alice adopted a dog named Byte."), "alice", "c1")
    hits = mos.search("pet names Pixel Byte", "alice", ["c1", "c2"])
    assert {h.item.cube_id for h in hits} == {"c1", "c2"}
    with pytest.raises(PermissionDeniedError):
        mos.search("Pixel", "alice", ["c3"])
    with pytest.raises(PermissionDeniedError):
        mos.add(turns("1", "Alice writes into Bob's cube."), "alice", "c2")
    assert [h.cube_id for h in mos.list_cubes("alice")] == ["c1", "c2"]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], InvalidInputError),
        ("just a string", InvalidInputError),
        ([{"role": "user", "content": "   "}], InvalidInputError),
        ([{"role": "user"}], InvalidInputError),
        ([{"role": "user", "content": "x" * 9000}], TextTooLongError),
        ([{"role": "user", "content": "ok", "id": "bad id with spaces"}], InvalidInputError),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(mos: MemOS, messages: object, error: type) -> None:
    good = {"role": "user", "content": "a valid turn"}
    payload = [good, *messages] if isinstance(messages, list) and messages else messages
    with pytest.raises(error):
        mos.add(payload, "alice", "c1")  # type: ignore[arg-type]
    assert mos.store.count("c1") == 0


def test_typed_errors(mos: MemOS) -> None:
    with pytest.raises(CubeNotFoundError):
        mos.add([{"content": "x"}], "alice", "nope")
    with pytest.raises(InvalidInputError):
        mos.search("x", "alice", ["bad cube id!"])
    with pytest.raises(InvalidInputError):
        mos.search("", "alice", ["c1"])
    with pytest.raises(InvalidInputError):
        mos.add([{"content": "x"}], "alice", "c1", mode="turbo")
    with pytest.raises(MemoryNotFoundError):
        mos.get("0" * 32, "alice", "c1")
    with pytest.raises(ConfigError):
        mos.add([{"content": "x"}], "alice", "c1", mode="fine")  # no LLM configured
    with pytest.raises(ConfigError):
        mos.chat("hello?", "alice", ["c1"])
    with pytest.raises(EmbeddingDimensionError):
        mos.store.add("c1", [MemoryItem(text="wrong dim", embedding=[0.1] * 3)])
    assert issubclass(PermissionDeniedError, MemOSError)


def test_embedder_mismatch_is_a_config_error(mos: MemOS, tmp_path: Path) -> None:
    other = MemOS(mos.config, store=mos.store, embedder=HashingEmbedder(dim=64))
    with pytest.raises(ConfigError):
        other.add([{"content": "x"}], "alice", "c1")


def test_update_reembeds_and_checks_versions(mos: MemOS) -> None:
    (mid,) = mos.add(turns("1", "I live in Porto."), "alice", "c1").ids
    updated = mos.update(mid, "alice", "c1", text="I live in Lisbon.", expected_version=1)
    assert updated.version == 2
    assert mos.search("Lisbon", "alice", ["c1"])[0].item.id == mid
    with pytest.raises(VersionConflictError):
        mos.update(mid, "alice", "c1", text="stale", expected_version=1)
    assert mos.delete([mid], "alice", "c1") == 1
    with pytest.raises(MemoryNotFoundError):
        mos.get(mid, "alice", "c1")


def test_async_twins(mos: MemOS) -> None:
    async def scenario() -> None:
        result = await mos.aadd(turns("1", "Async tea ceremony memories."), "alice", "c1")
        hits = await mos.asearch("tea ceremony", "alice", ["c1"])
        assert hits[0].item.id == result.ids[0]
        got = await mos.aget(result.ids[0], "alice", "c1")
        assert got.text.endswith("Async tea ceremony memories.")
        assert await mos.adelete(result.ids, "alice", "c1") == 1

    asyncio.run(scenario())


def test_merges_stay_within_one_user(mos: MemOS) -> None:
    mos.create_cube("shared", "alice", acl=[AclEntry(principal="bob", permissions=[Permission.WRITE])])
    mos.add(turns("1", "I love painting sunsets at the lake."), "alice", "shared")
    bob = mos.add(turns("2", "I love painting sunsets at the lake."), "bob", "shared")
    assert bob.merged == 0
    hits = mos.search("painting sunsets", "alice", ["shared"], filters={"user_id": "bob"})
    assert [h.item.id for h in hits] == bob.ids


def test_more_bad_input_is_typed(mos: MemOS, tmp_path: Path) -> None:
    (mid,) = mos.add(turns("1", "A memory."), "alice", "c1").ids
    with pytest.raises(InvalidInputError):
        mos.delete(mid, "alice", "c1")  # a string, not a list of ids
    with pytest.raises(InvalidInputError):
        mos.update(mid, "alice", "c1", status="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        mos.update(mid, "alice", "c1", tags="abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        mos.search("x", "alice", ["c1"], filters=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        MemOS.from_path(tmp_path / "other", retrieval={"top_k": 0})
    assert mos.get(mid, "alice", "c1").version == 1


def test_search_all_skips_cubes_of_another_embedder(mos: MemOS) -> None:
    mos.add(turns("1", "Alice plays the cello."), "alice", "c1")
    other = MemOS(mos.config, store=mos.store, embedder=HashingEmbedder(dim=32))
    other.create_cube("c32", "alice")
    other.add(turns("1", "Alice plays the cello in a 32-d cube."), "alice", "c32")
    assert {h.item.cube_id for h in mos.search("cello", "alice")} == {"c1"}
    assert {h.item.cube_id for h in other.search("cello", "alice")} == {"c32"}
    with pytest.raises(ConfigError):
        mos.search("cello", "alice", ["c32"])


def test_non_ascii_text_is_searchable(mos: MemOS) -> None:
    (mid,) = mos.add(turns("1", "Zoë opened a café in Zürich."), "alice", "c1").ids
    (rid,) = mos.add(turns("2", "Мы ездили в Москву летом."), "alice", "c1").ids
    assert mos.store.text_search("c1", "Where is Zoe's cafe?", 5)[0][0] == mid
    assert mos.store.text_search("c1", "Москву", 5)[0][0] == rid


def test_private_memories_stay_with_their_author(mos: MemOS) -> None:
    mos.grant("c1", "alice", "bob", role="writer")
    mine = mos.add(turns("1", "My PIN hint is the lake house.", "Noted."), "bob", "c1", visibility="private")
    shared = mos.add(turns("1", "The team offsite is at the lake house.", start=3), "alice", "c1")
    twice = mos.add(turns("2", "My PIN hint is the lake house."), "alice", "c1")  # same words, cube-visible
    assert twice.merged == 0  # never merged across visibility: the private original stays private
    items = mos.store.get("c1", [*mine.ids, *shared.ids])
    assert {i.visibility.value for i in items if i.id in mine.ids} == {"private"}
    private_topic = {e.source_id for e in mos.store.get_edges("c1", mine.ids, [RelationType.PARENT], "in")}
    shared_topic = {e.source_id for e in mos.store.get_edges("c1", shared.ids, [RelationType.PARENT], "in")}
    assert private_topic.isdisjoint(shared_topic)  # the author's own topic node, private too
    assert {i.visibility.value for i in mos.store.get("c1", sorted(private_topic))} == {"private"}
    seen_by_alice = {h.item.id for h in mos.search("PIN hint lake house", "alice", ["c1"], top_k=20)}
    seen_by_bob = {h.item.id for h in mos.search("PIN hint lake house", "bob", ["c1"], top_k=20)}
    assert seen_by_alice.isdisjoint(mine.ids) and set(mine.ids) <= seen_by_bob
    with pytest.raises(MemoryNotFoundError):
        mos.get(mine.ids[0], "alice", "c1")
    with pytest.raises(PermissionDeniedError):  # a writer may not publish
        mos.add(turns("3", "Hello world."), "bob", "c1", visibility="public")
    with pytest.raises(InvalidInputError):
        mos.add(turns("3", "Hello world."), "bob", "c1", visibility="everyone")
