import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE, ReaderConfig
from memos_agents.errors import ModelError
from memos_agents.models.embedders import HashingEmbedder
from memos_agents.models.llm import BaseLLM
from memos_agents.operation.reader import MemReader, ReadMode
from memos_agents.prompts import extract_facts
from memos_agents.schema import MemoryType, Message, RelationType

pytestmark = pytest.mark.unit


class ScriptedLLM(BaseLLM):
    """Replays canned answers in order and records the prompts (a test double for an LLM endpoint)."""

    model_name = "scripted"

    def __init__(self, answers: Sequence[str | Exception]) -> None:
        self.answers = list(answers)
        self.prompts: list[Sequence[dict[str, str]]] = []

    def generate(self, messages, *, max_tokens=256, temperature=0.0):  # type: ignore[no-untyped-def]
        self.prompts.append(messages)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


MESSAGES = [
    Message(name="Caroline", content="I started pottery classes last week, I love it.", id="D1:1", session_id="s1"),
    Message(name="Melanie", content="Cool! I prefer painting landscapes.", id="D1:2", session_id="s1"),
]


def test_fast_mode_items_and_context() -> None:
    reader = MemReader(HashingEmbedder(64), config=ReaderConfig(context_turns=1))
    result = reader.read(MESSAGES, user_id="u", mode=ReadMode.FAST)
    assert [i.text for i in result.items] == [
        "Caroline: I started pottery classes last week, I love it.",
        "Melanie: Cool! I prefer painting landscapes.",
    ]
    assert result.items[0].key == "pottery classes" or "pottery classes" in result.items[0].tags
    assert all(i.embedding is not None and len(i.embedding) == 64 for i in result.items)
    texts = reader.index_texts(MESSAGES, result.items)
    assert texts[0] == result.items[0].text
    assert texts[1].startswith("Caroline: I started pottery") and texts[1].endswith("painting landscapes.")


def test_fine_mode_extracts_validated_facts() -> None:
    answer = json.dumps(
        {
            "facts": [
                {
                    "text": "Caroline takes pottery classes.",
                    "memory_type": "UserMemory",
                    "key": "pottery",
                    "tags": ["Pottery"],
                    "source_ids": ["D1:1", "D9:9"],
                    "confidence": 0.9,
                },
                {"text": "Melanie prefers painting landscapes.", "source_ids": []},
            ]
        }
    )
    llm = ScriptedLLM(["Sure! ```json\n" + answer + "\n```"])
    result = MemReader(HashingEmbedder(64), llm).read(MESSAGES, user_id="u", mode=ReadMode.FINE)
    assert len(result.items) == 4 and not result.failures
    fact = result.items[2]
    assert fact.memory_type == MemoryType.USER and fact.sources.message_ids == ["D1:1"] and fact.tags == ["pottery"]
    assert result.items[3].sources.message_ids == ["D1:1", "D1:2"]  # no citation: the whole window
    assert {(e.source_id, e.type) for e in result.edges} == {
        (fact.id, RelationType.DERIVED_FROM),
        (result.items[3].id, RelationType.DERIVED_FROM),
    }
    assert "[D1:1]" in llm.prompts[0][1]["content"]


def test_fine_mode_retries_then_records_failure(tmp_path: Path) -> None:
    llm = ScriptedLLM(["not json", ModelError("server down"), '{"facts": "nope"}'])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm, **{"reader": {"fine_max_retries": 2}}) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 2  # the raw turns are stored anyway
        assert len(result.failures) == 1 and len(result.failures[0]["errors"]) == 3  # type: ignore[arg-type]
        events = mos.store.list_events("c", "extraction_failed")
        assert events and events[0]["payload"]["message_ids"] == ["D1:1", "D1:2"]  # type: ignore[index]
        assert llm.answers == []


def test_fine_mode_retry_succeeds(tmp_path: Path) -> None:
    llm = ScriptedLLM(["{broken", '{"facts": [{"text": "Caroline does pottery.", "source_ids": ["D1:1"]}]}'])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 3 and not result.failures
        hits = mos.search("pottery", "u", ["c"])
        assert "Caroline does pottery." in [h.item.text for h in hits]


def test_parse_rejects_invalid_json() -> None:
    with pytest.raises(ValueError):
        extract_facts.parse('{"facts": [{"text": ""}]}')
    with pytest.raises(ValueError):
        extract_facts.parse("no json here")
    assert extract_facts.parse('{"facts": []}').facts == []


def test_chat_uses_memories(tmp_path: Path) -> None:
    llm = ScriptedLLM(["Caroline takes pottery classes."])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm) as mos:
        mos.create_cube("c", "u")
        mos.add(MESSAGES, "u", "c")
        result = mos.chat("What class did Caroline start?", "u", ["c"])
        assert result.answer == "Caroline takes pottery classes."
        assert "pottery classes" in llm.prompts[0][-1]["content"]
        assert result.memories and result.search_ms >= 0


def test_offline_preset_has_no_llm(tmp_path: Path) -> None:
    mos = MemOS.from_path(tmp_path, **PRESET_OFFLINE)
    assert mos.llm is None
