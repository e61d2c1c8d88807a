"""MemLifecycle conflicts and updates: a newer statement supersedes the one it restates (rule and LLM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memos_agents import MemOS
from memos_agents.errors import MemoryNotFoundError
from memos_agents.plaintext.text import changed_value
from memos_agents.plaintext.tree import is_statement
from memos_agents.prompts import update_memory
from memos_agents.schema import LifecycleState, MemoryItem, MemoryOrigin, RelationType, Sources
from memos_agents.testing.doubles import LLMCall, ScriptedLLM

pytestmark = pytest.mark.unit

#: The hashing test embedder gives lower cosines than MiniLM: relate (and so supersede) from 0.5.
READER = {"relate_threshold": 0.5}


def make(home: Path, **config: Any) -> MemOS:
    m = MemOS.from_path(home, embedder={"provider": "hashing", "dim": 256}, llm={"provider": "none"}, **config)
    m.setup()
    m.create_cube("notes", "ann")
    return m


@pytest.fixture
def mos(tmp_path: Path) -> Iterator[MemOS]:
    m = make(tmp_path / "home", reader=READER)
    yield m
    m.close()


def say(mos: MemOS, text: str, *, user: str = "ann", **kw: Any) -> str:
    (memory_id,) = mos.add([{"role": "user", "content": text}], user, "notes", mode="facts", **kw).ids
    return memory_id


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ("The door code is 4711", "The door code is 1234", True),
        ("Ann's favourite colour is blue", "Ann's favourite colour is green", True),
        ("Ann lives in Lisbon", "Ann lives in Porto", True),
        ("I like tea", "I do not like tea", False),  # no attribute in the frame: both kept (conservative)
        ("Ann is not married", "Ann is married now", True),  # a negation flipped, with a change cue
        ("Ann plays tennis", "Ann now plays golf", True),  # a change cue
        ("Ann has a dog", "Ann has a cat", False),  # several values at once: both stay
        ("Ann speaks French", "Ann speaks Spanish", False),
        ("Ann visited Paris in 2023", "Ann visited Rome in 2024", False),
        ("Ann is allergic to peanuts", "Ann is allergic to shellfish", False),
        ("Ann is vegetarian", "Ann is Canadian", False),
        ("Ann moved to Lisbon", "Ann moved to Lisbon in May", False),  # a detail added: a refinement
        ("Ann lives in Lisbon", "Bob lives in Porto", False),  # another subject and value: no shared frame
        ("Ann lives in Porto", "Bob lives in Porto", False),  # the same value for someone else
        ("These days Ann likes red best", "These days Bob likes blue best", False),  # two values changed
        ("Ann moved to New York", "Ann moved to San Francisco", True),  # one value of two words
        ("Ann keeps bees", "The weather was fine", False),
        ("Ann lives in Lisbon", "Ann lives in Lisbon", False),  # the same statement
    ],
)
def test_the_rule(old: str, new: str, changed: bool) -> None:
    assert changed_value(old, new) is changed


def test_statements_are_facts_not_turns() -> None:
    assert is_statement(MemoryItem(text="x", origin=MemoryOrigin.EXTRACTED))
    assert is_statement(MemoryItem(text="x", origin=MemoryOrigin.DIRECT))
    assert not is_statement(MemoryItem(text="Ann: x", origin=MemoryOrigin.TURNS, turns=1))
    assert not is_statement(MemoryItem(text="a\nb\nc", origin=MemoryOrigin.TURNS, turns=3))
    assert is_statement(MemoryItem(text="x", origin=MemoryOrigin.MERGED))
    merged_facts = MemoryItem(text="Ann lives in Porto\nAnn lives in Porto now", origin=MemoryOrigin.MERGED)
    assert is_statement(merged_facts.model_copy(update={"sources": Sources(speakers=["Ann"])}))
    merged_turns = MemoryItem(text="Bob: hi\nAnn: x", origin=MemoryOrigin.MERGED, sources={"speakers": ["Ann", "Bob"]})
    assert not is_statement(merged_turns)


def test_a_changed_value_supersedes_and_search_returns_the_current_fact(mos: MemOS) -> None:
    blue = say(mos, "Ann's favourite colour is blue")
    green = say(mos, "Ann's favourite colour is green")
    red = say(mos, "Ann's favourite colour is red")
    hits = mos.search("what is Ann's favourite colour", "ann", ["notes"], top_k=3)
    assert [h.item.id for h in hits][:1] == [red] and {blue, green}.isdisjoint(h.item.id for h in hits)
    assert [i.id for i in mos.superseded(red, "ann", "notes")] == [green, blue]  # newest first
    assert mos.superseded(blue, "ann", "notes") == []
    assert mos.get(blue, "ann", "notes").status is LifecycleState.ARCHIVED  # never deleted
    edges = mos.store.get_edges("notes", [red], [RelationType.SUPERSEDES], "out")
    assert [(e.source_id, e.target_id) for e in edges] == [(red, green)]
    history = mos.history(green, "ann", "notes")  # the move is a versioned update
    assert [v.item.status for v in history] == [LifecycleState.ACTIVATED, LifecycleState.ARCHIVED]
    everything = mos.search("favourite colour", "ann", ["notes"], filters={"statuses": ["activated", "archived"]})
    assert {blue, green, red} <= {h.item.id for h in everything}  # the history stays searchable on request
    with pytest.raises(MemoryNotFoundError):
        mos.superseded("nope", "ann", "notes")


def test_what_is_not_superseded(mos: MemOS) -> None:
    lisbon = say(mos, "Ann moved to Lisbon")
    say(mos, "Ann moved to Lisbon in May")  # a refinement
    say(mos, "Ann's brother moved to Lisbon", user="ann", subject_id="bob")  # another subject
    mos.grant("notes", "ann", "bob", role="writer")
    say(mos, "Ann moved to Porto", user="bob", visibility="private")  # another visibility
    say(mos, "Ann moved to Berlin", ttl_s=3600)  # an expiring statement does not replace a lasting one
    window = mos.add(
        [
            {"role": "user", "content": "Ann said the train was late"},
            {"role": "assistant", "content": "That is annoying"},
            {"role": "user", "content": "It was late by an hour"},
        ],
        "ann",
        "notes",
    ).ids
    (turn,) = mos.add([{"role": "user", "content": "We went hiking in the Alps"}], "ann", "notes").ids
    mos.add([{"role": "user", "content": "We went hiking in the Andes"}], "ann", "notes")
    statuses = {i.id: i.status for i in mos.store.get("notes", [lisbon, *window, turn])}
    assert set(statuses.values()) == {LifecycleState.ACTIVATED}  # conversation turns are a record, never replaced


def test_an_older_statement_does_not_supersede_a_newer_one(mos: MemOS) -> None:
    now = datetime.now(UTC)
    porto = say(mos, "Ann lives in Porto")
    late = mos.add(
        [{"role": "user", "content": "Ann lives in Lisbon", "timestamp": (now - timedelta(days=400)).isoformat()}],
        "ann",
        "notes",
        mode="facts",
    ).ids[0]
    assert mos.get(porto, "ann", "notes").status is LifecycleState.ACTIVATED
    assert mos.get(late, "ann", "notes").status is LifecycleState.ACTIVATED


def test_superseding_can_be_turned_off(tmp_path: Path) -> None:
    m = make(tmp_path / "off", reader={**READER, "supersede": False})
    old = say(m, "The door code is 4711")
    say(m, "The door code is 1234")
    assert m.get(old, "ann", "notes").status is LifecycleState.ACTIVATED
    m.close()


# -- fine mode: the LLM decides ------------------------------------------------------------------------
def fine_mos(home: Path, decide: Any) -> tuple[MemOS, ScriptedLLM]:
    """A MemOS whose scripted LLM extracts each message as one fact and answers decisions with ``decide``."""

    def respond(call: LLMCall) -> str:
        system = call.messages[0]["content"]
        user = call.messages[-1]["content"]
        if system == update_memory.SYSTEM:
            return str(decide(user))
        text = user.split("] ", 1)[1].split(": ", 1)[1]
        return json.dumps({"facts": [{"text": text, "key": "fact", "source_ids": []}]})

    llm = ScriptedLLM(respond)
    m = MemOS.from_path(home, embedder={"provider": "hashing", "dim": 256}, llm=llm, reader=READER)
    m.setup()
    m.create_cube("notes", "ann")
    return m, llm


def extracted(m: MemOS, text: str) -> MemoryItem:
    m.add([{"role": "user", "content": text}], "ann", "notes", mode="fine")
    facts = [i for i in m.store.list_items("notes") if i.origin is MemoryOrigin.EXTRACTED and i.text == text]
    assert len(facts) == 1
    return facts[0]


def first_id(prompt: str) -> str:
    return prompt.split("Stored facts:\n[", 1)[1].split("]", 1)[0]


@pytest.mark.parametrize("action", ["supersede", "update", "ignore", "add"])
def test_the_llm_decides_in_fine_mode(tmp_path: Path, action: str) -> None:
    m, llm = fine_mos(
        tmp_path / action,
        lambda prompt: json.dumps({"action": action, "target": None if action == "add" else first_id(prompt)}),
    )
    old = extracted(m, "Ann works at the bakery")
    new = extracted(m, "Ann works at the library")
    asked = [c for c in llm.calls if c.messages[0]["content"] == update_memory.SYSTEM]
    assert len(asked) == 1 and f"[{old.id}]" in asked[0].messages[-1]["content"]
    status = {i.id: i.status for i in m.store.get("notes", [old.id, new.id])}
    if action == "supersede":
        assert status == {old.id: LifecycleState.ARCHIVED, new.id: LifecycleState.ACTIVATED}
        assert [i.id for i in m.superseded(new.id, "ann", "notes")] == [old.id]
    elif action == "update":  # merged: both archived, the merge holds the newer statement first
        assert status == {old.id: LifecycleState.ARCHIVED, new.id: LifecycleState.ARCHIVED}
        (merged,) = [i for i in m.store.list_items("notes") if i.origin is MemoryOrigin.MERGED]
        assert merged.text.startswith("Ann works at the library")
    elif action == "ignore":  # already known: stored archived, pointing to what holds it
        assert status == {old.id: LifecycleState.ACTIVATED, new.id: LifecycleState.ARCHIVED}
        edges = m.store.get_edges("notes", [new.id], [RelationType.MERGED_TO], "out")
        assert [e.target_id for e in edges] == [old.id]
    else:  # add: the LLM's word stands over the rule's
        assert status == {old.id: LifecycleState.ACTIVATED, new.id: LifecycleState.ACTIVATED}
    m.close()


def test_an_invalid_decision_is_retried_and_then_the_rule_decides(tmp_path: Path) -> None:
    replies = iter(['{"action": "supersede", "target": "not-shown"}', "no json", '{"action": "delete"}'])
    m, llm = fine_mos(tmp_path / "home", lambda prompt: next(replies))
    old = extracted(m, "The door code is 4711")
    new = extracted(m, "The door code is 1234")
    asked = [c for c in llm.calls if c.messages[0]["content"] == update_memory.SYSTEM]
    assert len(asked) == 3  # the first try and two retries, each shown what was wrong
    assert "not-shown" in asked[1].messages[-1]["content"] or "target" in asked[1].messages[-1]["content"]
    assert m.get(old.id, "ann", "notes").status is LifecycleState.ARCHIVED  # the rule: a changed value
    assert [i.id for i in m.superseded(new.id, "ann", "notes")] == [old.id]
    m.close()


def test_decision_model_validation() -> None:
    with pytest.raises(ValueError):
        update_memory.parse('{"action": "update"}', ["a1"])  # needs a target
    with pytest.raises(ValueError):
        update_memory.parse('{"action": "supersede", "target": "zz"}', ["a1"])
    assert update_memory.parse('```json\n{"action": "add"}\n```', ["a1"]).action is update_memory.MemoryAction.ADD


def test_a_blank_fact_is_refused(mos: MemOS) -> None:
    from memos_agents.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        mos.add([{"role": "user", "content": "   "}], "ann", "notes", mode="facts")
    with pytest.raises(InvalidInputError):
        mos.add([{"role": "user", "content": "x"}], "ann", "notes", mode="nonsense")
