from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_memos import MemOSChatMessageHistory
from langchain_memos.chat_message_histories import message_role

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError, PermissionDeniedError

pytestmark = pytest.mark.unit


def _conversation() -> list[BaseMessage]:
    return [
        SystemMessage(content="You are a helpful assistant with memory."),
        HumanMessage(content="I adopted a parrot called Rio.", id="h-1", name="Alice"),
        AIMessage(
            content="",
            id="a-1",
            tool_calls=[{"name": "add_memory", "args": {"text": "Alice has a parrot called Rio."}, "id": "call_1"}],
            additional_kwargs={"reasoning": "worth remembering"},
        ),
        ToolMessage(
            content="Stored memory 1234.", tool_call_id="call_1", name="add_memory", artifact={"ids": ["1234"]}
        ),
        AIMessage(
            content=[{"type": "text", "text": "Rio is a lovely name!"}], response_metadata={"model_name": "fake"}
        ),
        ChatMessage(role="critic", content="Keep answers short."),
    ]


def test_round_trip_in_order(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice")
    original = _conversation()
    history.add_messages(original[:3])
    history.add_messages(original[3:])
    assert history.messages == original
    assert [type(m) for m in history.messages] == [type(m) for m in original]
    restored = history.messages[2]
    assert isinstance(restored, AIMessage)
    assert restored.tool_calls == original[2].tool_calls  # type: ignore[attr-defined]


def test_log_holds_roles_and_text(mos: MemOS) -> None:
    MemOSChatMessageHistory(mos, session_id="s1", user_id="alice").add_messages(_conversation())
    logged = mos.messages.list("s1", user_id="alice")
    assert [m.role for m in logged] == ["system", "user", "assistant", "tool", "assistant", "critic"]
    assert [m.content for m in logged][1:5] == [
        "I adopted a parrot called Rio.",
        "",
        "Stored memory 1234.",
        "Rio is a lovely name!",
    ]
    assert logged[1].name == "Alice" and logged[1].id == "h-1"
    assert [m.seq for m in logged] == list(range(6))


def test_convenience_methods_and_limit(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice")
    history.add_user_message("one")
    history.add_ai_message("two")
    history.add_message(HumanMessage(content="three"))
    assert [m.content for m in history.messages] == ["one", "two", "three"]
    last_two = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice", limit=2)
    assert [m.content for m in last_two.messages] == ["two", "three"]


def test_sessions_and_users_are_isolated(mos: MemOS) -> None:
    MemOSChatMessageHistory(mos, session_id="s1", user_id="alice").add_messages([HumanMessage(content="alice s1")])
    MemOSChatMessageHistory(mos, session_id="s2", user_id="alice").add_messages([HumanMessage(content="alice s2")])
    MemOSChatMessageHistory(mos, session_id="s1", user_id="bob").add_messages([HumanMessage(content="bob s1")])
    assert [m.content for m in MemOSChatMessageHistory(mos, "s1", "alice").messages] == ["alice s1"]
    assert [m.content for m in MemOSChatMessageHistory(mos, "s2", "alice").messages] == ["alice s2"]
    assert [m.content for m in MemOSChatMessageHistory(mos, "s1", "bob").messages] == ["bob s1"]
    assert MemOSChatMessageHistory(mos, "s3", "alice").messages == []


def test_clear_empties_one_session(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice")
    other = MemOSChatMessageHistory(mos, session_id="s2", user_id="alice")
    history.add_messages(_conversation())
    other.add_messages([HumanMessage(content="kept")])
    history.clear()
    assert history.messages == []
    assert [m.content for m in other.messages] == ["kept"]
    history.add_messages([HumanMessage(content="again")])  # the session starts over
    assert [m.content for m in history.messages] == ["again"]


@pytest.mark.asyncio
async def test_async_round_trip_and_clear(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice")
    original = _conversation()
    await history.aadd_messages(original)
    assert await history.aget_messages() == original
    assert history.messages == original
    await history.aclear()
    assert await history.aget_messages() == []


def test_reader_is_off_by_default(mos: MemOS) -> None:
    MemOSChatMessageHistory(mos, session_id="s1", user_id="alice").add_messages(_conversation())
    assert mos.search("parrot Rio", user_id="alice", cube_ids=["c1"]) == []


def test_reader_feeds_human_and_ai_text_into_memory(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice", reader_cube_id="c1")
    history.add_messages(_conversation())
    hits = mos.search("parrot called Rio", user_id="alice", cube_ids=["c1"], top_k=50)
    texts = "\n".join(h.item.text for h in hits)
    assert "user: I adopted a parrot called Rio." not in texts  # the speaker's name is used
    assert "Alice: I adopted a parrot called Rio." in texts
    assert "assistant: Rio is a lovely name!" in texts
    assert "Stored memory 1234" not in texts  # tool results are not remembered
    assert "helpful assistant" not in texts  # nor system prompts
    assert "Keep answers short" not in texts  # nor other message types
    assert all(h.item.sources.session_ids == ["s1"] for h in hits)
    assert all(h.item.author_id == "alice" for h in hits)


@pytest.mark.asyncio
async def test_reader_feed_async(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s9", user_id="alice", reader_cube_id="c1")
    await history.aadd_messages([HumanMessage(content="My favourite colour is teal.")])
    hits = await mos.asearch("favourite colour teal", user_id="alice", cube_ids=["c1"])
    assert [h.item.text for h in hits] == ["user: My favourite colour is teal."]
    assert hits[0].item.sources.session_ids == ["s9"]


def test_reader_types_are_configurable(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, "s1", "alice", reader_cube_id="c1", reader_types=["human"])
    history.add_messages([HumanMessage(content="I sail on weekends."), AIMessage(content="Sailing sounds fun.")])
    texts = [h.item.text for h in mos.search("sail sailing weekends fun", user_id="alice", cube_ids=["c1"])]
    assert texts == ["user: I sail on weekends."]


def test_reader_cube_of_another_user_is_refused(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice", reader_cube_id="b1")
    with pytest.raises(PermissionDeniedError):
        history.add_messages([HumanMessage(content="hello")])
    assert [m.content for m in history.messages] == ["hello"]  # logged first, as documented
    assert mos.search("hello", user_id="bob", cube_ids=["b1"]) == []


def test_messages_logged_by_other_surfaces(mos: MemOS) -> None:
    mos.messages.append(
        "s1",
        [
            {"role": "user", "content": "hi", "name": "Alice", "id": "x-1"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "be brief"},
            {"role": "tool", "content": "42"},
        ],
        user_id="alice",
    )
    assert MemOSChatMessageHistory(mos, "s1", "alice").messages == [
        HumanMessage(content="hi", name="Alice", id="x-1"),
        AIMessage(content="hello"),
        SystemMessage(content="be brief"),
        ChatMessage(role="tool", content="42"),
    ]


def test_bad_input_is_refused(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice")
    with pytest.raises(InvalidInputError, match="BaseMessage"):
        history.add_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="JSON"):
        history.add_messages([HumanMessage(content="hi", additional_kwargs={"obj": object()})])
    with pytest.raises(InvalidInputError, match="session_id"):
        MemOSChatMessageHistory(mos, session_id="no spaces", user_id="alice").add_messages([HumanMessage("hi")])
    assert history.messages == []
    history.add_messages([])  # nothing to do
    assert history.messages == []


def test_foreign_data_shaped_like_a_message_dict_is_read_by_role(mos: MemOS) -> None:
    # the core message log takes any JSON object as data; one that only looks like LangChain's form
    # must not make the whole history unreadable (it raised "Got unexpected message type: event")
    mos.messages.append(
        "s1",
        [
            {"role": "user", "content": "hi", "data": {"type": "event", "data": {"kind": "click"}}},
            {"role": "assistant", "content": "ok", "data": {"type": "ai", "data": {"content": ["not", 1]}}},
            {"role": "human", "content": "tagged", "data": {"langchain": {"type": "nope", "data": {}}}},
            {"role": "developer", "content": "rules", "data": {"langchain": "not a message"}},
        ],
        user_id="alice",
    )
    history = MemOSChatMessageHistory(mos, "s1", "alice")
    history.add_messages([AIMessage(content="still mine", id="a-9")])
    expected = [
        HumanMessage(content="hi"),
        AIMessage(content="ok"),
        HumanMessage(content="tagged"),
        SystemMessage(content="rules"),
        AIMessage(content="still mine", id="a-9"),
    ]
    assert history.messages == expected


@pytest.mark.asyncio
async def test_foreign_data_async(mos: MemOS) -> None:
    await mos.messages.aappend(
        "s1",
        [{"role": "user", "content": "hi", "data": {"type": "event", "data": {"kind": "click"}}}],
        user_id="alice",
    )
    assert await MemOSChatMessageHistory(mos, "s1", "alice").aget_messages() == [HumanMessage(content="hi")]


def test_own_messages_are_tagged_and_the_untagged_form_is_still_read(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, "s1", "alice")
    call = AIMessage(content="", id="a-1", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call_1"}])
    history.add_messages([call])
    (logged,) = mos.messages.list("s1", user_id="alice")
    assert logged.data == {"langchain": message_to_dict(call)}
    # what earlier versions wrote: the message_to_dict form as data itself
    legacy = ToolMessage(content="42", tool_call_id="call_1", name="lookup")
    mos.messages.append("s1", [{"role": "tool", "content": "42", "data": message_to_dict(legacy)}], user_id="alice")
    assert history.messages == [call, legacy]
    assert isinstance(history.messages[1], ToolMessage)


def test_roles_are_normalised(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, "s1", "alice")
    history.add_messages(
        [
            FunctionMessage(content="42", name="lookup"),
            ChatMessage(role="Human", content="hello"),
            ChatMessage(role="developer", content="be brief"),
            AIMessageChunk(content="chunk"),
            ChatMessage(role="critic", content="short!"),
        ]
    )
    assert [m.role for m in mos.messages.list("s1", user_id="alice")] == [
        "tool",
        "user",
        "system",
        "assistant",
        "critic",
    ]
    assert [message_role(m) for m in history.messages] == ["tool", "user", "system", "assistant", "critic"]
    mos.messages.append("s2", [{"role": "human", "content": "hi"}, {"role": "ai", "content": "yo"}], user_id="alice")
    assert MemOSChatMessageHistory(mos, "s2", "alice").messages == [HumanMessage("hi"), AIMessage("yo")]


def test_reader_keeps_valid_message_ids_and_skips_others(mos: MemOS) -> None:
    history = MemOSChatMessageHistory(mos, "s1", "alice", reader_cube_id="c1", reader_mode="facts")
    history.add_messages(
        [
            HumanMessage(content="I keep bees on the roof.", id="h-1"),
            AIMessage(content="Bees are wonderful.", id="not a memos id"),
        ]
    )
    hits = mos.search("bees roof wonderful", user_id="alice", cube_ids=["c1"], top_k=10)
    by_text = {h.item.text: h.item.sources.message_ids for h in hits}
    assert by_text == {"I keep bees on the roof.": ["h-1"], "Bees are wonderful.": []}
    assert [m.id for m in history.messages] == ["h-1", "not a memos id"]  # the log keeps both
