import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
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


def test_fast_mode_windows_embed_each_turn_once() -> None:
    class CountingEmbedder(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__(64)
            self.seen: list[str] = []

        def embed(self, texts):  # type: ignore[no-untyped-def]
            self.seen.extend(texts)
            return super().embed(texts)

    embedder = CountingEmbedder()
    messages = [
        *MESSAGES,
        Message(name="Caroline", content="Painting sounds\nrelaxing.", id="D1:3", session_id="s1"),
        Message(name="Melanie", content="It is!", id="D1:4", session_id="s1"),
        Message(name="Caroline", content="New session, new topic.", id="D2:1", session_id="s2"),
    ]
    reader = MemReader(embedder, config=ReaderConfig(window_turns=3))
    assert reader.windows(messages) == [[0, 1, 2], [1, 2, 3], [4]]
    result = reader.read(messages, user_id="u", mode=ReadMode.FAST)
    assert embedder.seen == [
        "Caroline: I started pottery classes last week, I love it.",
        "Melanie: Cool! I prefer painting landscapes.",
        "Caroline: Painting sounds relaxing.",  # one line per turn, newlines folded
        "Melanie: It is!",
        "Caroline: New session, new topic.",
    ]
    first = result.items[0]
    assert first.text.splitlines() == embedder.seen[:3]
    assert first.sources.message_ids == ["D1:1", "D1:2", "D1:3"] and first.sources.session_ids == ["s1"]
    assert first.key and {"pottery classes", "prefer painting landscapes"} <= set(first.tags)
    turn_vectors = embedder.embed(embedder.seen[:3])
    mean = turn_vectors.mean(axis=0)
    assert np.allclose(first.embedding, mean / np.linalg.norm(mean), atol=1e-6)
    assert result.items[2].sources.message_ids == ["D2:1"]
    single = MemReader(HashingEmbedder(64), config=ReaderConfig(window_turns=1)).windows(messages)
    assert single == [[0], [1], [2], [3], [4]]


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
    assert len(result.items) == 3 and not result.failures
    window, fact, other = result.items
    assert fact.memory_type == MemoryType.USER and fact.sources.message_ids == ["D1:1"] and fact.tags == ["pottery"]
    assert fact.embedding is not None and fact.confidence == 0.9
    assert other.sources.message_ids == ["D1:1", "D1:2"]  # no citation: the whole window
    assert {(e.source_id, e.target_id, e.type) for e in result.edges} == {
        (fact.id, window.id, RelationType.DERIVED_FROM),
        (other.id, window.id, RelationType.DERIVED_FROM),
    }
    assert "[D1:1]" in llm.prompts[0][1]["content"]


def test_fine_mode_retries_then_records_failure(tmp_path: Path) -> None:
    llm = ScriptedLLM(["not json", ModelError("server down"), '{"facts": "nope"}'])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm, **{"reader": {"fine_max_retries": 2}}) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 1  # the raw turns (one window) are stored anyway
        assert len(result.failures) == 1 and len(result.failures[0]["errors"]) == 3  # type: ignore[arg-type]
        events = mos.store.list_events("c", "extraction_failed")
        assert events and events[0]["payload"]["message_ids"] == ["D1:1", "D1:2"]  # type: ignore[index]
        assert llm.answers == []


def test_fine_mode_retry_succeeds(tmp_path: Path) -> None:
    llm = ScriptedLLM(["{broken", '{"facts": [{"text": "Caroline does pottery.", "source_ids": ["D1:1"]}]}'])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 2 and not result.failures
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


def test_blank_fact_is_retried_then_recorded(tmp_path: Path) -> None:
    blank = '{"facts": [{"text": "   "}]}'
    llm = ScriptedLLM([blank, blank, blank])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 1 and len(result.failures) == 1
