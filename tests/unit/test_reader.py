import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE, ReaderConfig
from memos_agents.errors import ModelError
from memos_agents.operation.reader import MemReader, ReadMode
from memos_agents.operation.scheduler import MemScheduler
from memos_agents.prompts import extract_facts
from memos_agents.schema import MemoryOrigin, MemoryQuery, MemoryType, Message, RelationType, ScoredMemory
from memos_agents.testing import HashingEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit


MESSAGES = [
    Message(name="Caroline", content="I started pottery classes last week, I love it.", id="D1:1", session_id="s1"),
    Message(name="Melanie", content="Cool! I prefer painting landscapes.", id="D1:2", session_id="s1"),
]


def test_fast_mode_windows_embed_each_turn_once() -> None:
    class CountingEmbedder(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__(64)
            self.seen: list[str] = []

        def embed(self, texts: Sequence[str]) -> np.ndarray:
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
    assert first.origin == MemoryOrigin.TURNS and first.turns == 3
    assert first.metadata == {}  # nothing code branches on lives in metadata
    assert first.sources.message_ids == ["D1:1", "D1:2", "D1:3"] and first.sources.session_ids == ["s1"]
    assert first.key and {"pottery classes", "prefer painting landscapes"} <= set(first.tags)
    turn_vectors = embedder.embed(embedder.seen[:3])
    mean = turn_vectors.mean(axis=0)
    assert first.embedding is not None and np.allclose(first.embedding, mean / np.linalg.norm(mean), atol=1e-6)
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
    assert window.origin == MemoryOrigin.TURNS and window.turns == 2
    assert fact.origin == other.origin == MemoryOrigin.EXTRACTED and fact.turns == 0
    assert fact.metadata == {"extracted_by": "scripted"}  # information only
    assert other.sources.message_ids == ["D1:1", "D1:2"]  # no citation: the whole window
    assert {(e.source_id, e.target_id, e.type) for e in result.edges} == {
        (fact.id, window.id, RelationType.DERIVED_FROM),
        (other.id, window.id, RelationType.DERIVED_FROM),
    }
    assert "[D1:1]" in llm.calls[0].messages[1]["content"]
    assert len(llm.calls) == 1 and llm.calls[0].max_tokens == 512 and llm.calls[0].temperature == 0.0


def test_fine_mode_retry_shows_the_model_its_error() -> None:
    bad = 'Here you go: {"facts": [{"text": "   ", "source_ids": ["D1:1"]}]}'
    good = '{"facts": [{"text": "Caroline does pottery.", "source_ids": ["D1:1"]}]}'
    llm = ScriptedLLM([bad, good])
    result = MemReader(HashingEmbedder(64), llm).read(MESSAGES, user_id="u", mode=ReadMode.FINE)
    assert not result.failures and [i.text for i in result.items][1:] == ["Caroline does pottery."]
    first, second = (c.messages for c in llm.calls)
    assert second[: len(first)] == first  # the original prompt, unchanged
    assert second[len(first)] == {"role": "assistant", "content": bad}  # the model's bad reply
    follow_up = second[len(first) + 1]
    assert follow_up["role"] == "user" and len(second) == len(first) + 2
    assert "facts.0.text: Value error, fact text must not be blank" in follow_up["content"]
    assert "corrected JSON only" in follow_up["content"]


def test_fine_mode_retry_quotes_a_json_error_and_stays_short() -> None:
    broken = '{"facts": [' + ", ".join(['"x"'] * 400)  # unclosed and long
    llm = ScriptedLLM([broken, '{"facts": []}'])
    result = MemReader(HashingEmbedder(64), llm).read(MESSAGES, user_id="u", mode=ReadMode.FINE)
    assert not result.failures and len(result.items) == 1
    with pytest.raises(ValueError) as info:
        extract_facts.parse(broken)
    retry = llm.calls[1].messages
    assert retry[-2] == {"role": "assistant", "content": broken}
    assert str(info.value) in retry[-1]["content"] and "invalid JSON" in str(info.value)
    error_part = retry[-1]["content"].split("\n")[0]
    assert len(error_part) <= len("Your answer above is not valid: ") + extract_facts.MAX_ERROR_CHARS


def test_fine_mode_failed_call_is_resent_unchanged_and_failures_recorded() -> None:
    llm = ScriptedLLM([ModelError("server down"), "not json", '{"facts": "nope"}'])
    config = ReaderConfig(fine_max_retries=2)
    result = MemReader(HashingEmbedder(64), llm, config).read(MESSAGES, user_id="u", mode=ReadMode.FINE)
    assert len(result.items) == 1 and len(result.failures) == 1  # the window is kept, no fact
    errors = result.failures[0]["errors"]
    assert isinstance(errors, list) and len(errors) == 3 and "server down" in errors[0]
    first, second, third = (c.messages for c in llm.calls)
    assert second == first  # a failed call has no reply to show: resent as it was
    assert third == extract_facts.retry_messages(first, "not json", errors[1])
    assert llm.remaining == 0


def test_retry_messages_bound_the_error() -> None:
    prompt = extract_facts.build_messages(MESSAGES)
    out = extract_facts.retry_messages(prompt, "nope", "bad\n" + "x" * 1000)
    assert out[:2] == prompt and out[2] == {"role": "assistant", "content": "nope"}
    assert "bad x" in out[3]["content"] and "x" * (extract_facts.MAX_ERROR_CHARS - 10) in out[3]["content"]
    assert "x" * extract_facts.MAX_ERROR_CHARS not in out[3]["content"]
    out[0]["content"] = "changed"
    assert prompt[0]["content"] == extract_facts.SYSTEM  # the prompt's dicts are copied


def test_parse_query_is_the_text() -> None:
    query = MemReader(HashingEmbedder(64)).parse_query("When did Melanie paint a sunrise?")
    assert query == MemoryQuery(text="When did Melanie paint a sunrise?")
    assert set(MemoryQuery.model_fields) == {"text"}


def test_scheduler_trims_overlapping_windows_by_origin() -> None:
    messages = [*MESSAGES, Message(name="Caroline", content="Painting is fun.", id="D1:3", session_id="s1")]
    items = MemReader(HashingEmbedder(64), config=ReaderConfig(window_turns=2)).read(messages, user_id="u").items
    first, second = (ScoredMemory(item=i.model_copy(update={"cube_id": "c"}), score=1.0) for i in items)
    out = MemScheduler.deduplicate([first, second])
    assert [r.trimmed for r in out] == [False, True]
    assert out[1].item.text == "Caroline: Painting is fun." and out[1].item.sources.message_ids == ["D1:3"]
    assert out[1].item.turns == 1
    # the same text without origin=turns (e.g. an imported item) is not trimmed line by line
    direct = second.model_copy(update={"item": second.item.model_copy(update={"origin": MemoryOrigin.DIRECT})})
    assert [r.trimmed for r in MemScheduler.deduplicate([first, direct])] == [False, False]


def test_fine_mode_retries_then_records_failure(tmp_path: Path) -> None:
    llm = ScriptedLLM(["not json", ModelError("server down"), '{"facts": "nope"}'])
    with MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm, **{"reader": {"fine_max_retries": 2}}) as mos:
        mos.create_cube("c", "u")
        result = mos.add(MESSAGES, "u", "c", mode="fine")
        assert len(result.ids) == 1  # the raw turns (one window) are stored anyway
        assert len(result.failures) == 1 and len(result.failures[0]["errors"]) == 3  # type: ignore[arg-type]
        events = mos.store.list_events("c", "extraction_failed")
        assert events and events[0]["payload"]["message_ids"] == ["D1:1", "D1:2"]  # type: ignore[index]
        assert llm.remaining == 0


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
        assert "pottery classes" in llm.calls[0].messages[-1]["content"]
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
