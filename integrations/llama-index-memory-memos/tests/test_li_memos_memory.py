"""MemOSMemory: every message written to MemOS, memories injected into the history, refusals."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.memory import ChatMemoryBuffer, Memory
from llama_index.memory.memos import DEFAULT_MEMORY_HEADER, MemOSMemory

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError, PermissionDeniedError
from memos_agents.schema import MemoryItem

pytestmark = pytest.mark.unit


def user(text: str) -> ChatMessage:
    """Return a user message."""
    return ChatMessage(role=MessageRole.USER, content=text)


def assistant(text: str) -> ChatMessage:
    """Return an assistant message."""
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


def test_put_writes_every_message_and_get_injects_memories(
    mos: MemOS, stored: Callable[..., list[MemoryItem]], stored_lines: Callable[..., list[str]]
) -> None:
    """Every put is written to MemOS; get puts the memories first and keeps the history."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", session_id="chat-1")
    memory.put(user("I moved to Lisbon in May."))
    memory.put(assistant("Lisbon is lovely in spring."))
    assert stored_lines() == ["user: I moved to Lisbon in May.", "assistant: Lisbon is lovely in spring."]
    assert {s for i in stored() for s in i.sources.session_ids} == {"chat-1"}

    memory.put(user("Where do I live?"))
    messages = memory.get()
    assert [m.role for m in messages] == [MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT, MessageRole.USER]
    system = messages[0].content or ""
    assert system.startswith(DEFAULT_MEMORY_HEADER + "\n- ")
    assert "user: I moved to Lisbon in May." in system
    assert [m.content for m in messages[1:]] == [m.content for m in memory.get_all()]
    assert len(memory.get_all()) == 3  # the history itself holds no memories


def test_async_twins_write_and_inject(mos: MemOS, stored_lines: Callable[..., list[str]]) -> None:
    """aput, aput_messages, aget and aget_all behave as their sync twins."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")

    async def run() -> list[ChatMessage]:
        await memory.aput(user("My cat is called Pixel."))
        await memory.aput_messages([assistant("Pixel is a lovely name."), user("She is three years old.")])
        return await memory.aget(input="What is my cat called?")

    messages = asyncio.run(run())
    assert stored_lines() == [
        "user: My cat is called Pixel.",
        "assistant: Pixel is a lovely name.",
        "user: She is three years old.",
    ]
    assert messages[0].role == MessageRole.SYSTEM and "Pixel" in (messages[0].content or "")
    assert len(asyncio.run(memory.aget_all())) == 3
    # the default session is the primary Memory's, one MemOS session per conversation
    assert isinstance(memory.primary_memory, Memory) and memory.session_id == memory.primary_memory.session_id


def test_memories_outlive_the_conversation(mos: MemOS) -> None:
    """A new conversation on the same cube recalls what an earlier, reset one stored."""
    first = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    first.put_messages([user("My sister Ana visits every summer."), assistant("How nice!")])
    first.reset()
    assert first.get_all() == []
    second = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    second.put(user("Who visits me in summer?"))
    assert "Ana" in (second.get()[0].content or "")


def test_get_without_user_message_or_without_hits_returns_the_history(mos: MemOS) -> None:
    """Without a user message or without hits the history comes back unchanged."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    assert memory.get() == []
    memory.put(assistant("Hello, how can I help?"))  # written, but there is no user message to search with
    assert [m.content for m in memory.get()] == ["Hello, how can I help?"]
    no_hits = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", filters={"tags_any": ["no-such-tag"]})
    no_hits.put(user("How can you help me?"))
    assert [m.content for m in no_hits.get()] == ["How can you help me?"]
    assert [m.content for m in asyncio.run(no_hits.aget())] == ["How can you help me?"]


def test_existing_system_message_gets_the_memories_on_a_copy(mos: MemOS) -> None:
    """A leading system message gets the memories prepended on a copy; roles limits what is written."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", roles=["user"])
    memory.put(ChatMessage(role=MessageRole.SYSTEM, content="You are a helpful assistant."))
    memory.put(user("I work as a nurse on night shifts."))
    memory.put(assistant("That sounds demanding."))
    messages = memory.get(input="What is my job?")
    system = messages[0]
    assert system.role == MessageRole.SYSTEM
    texts = [b.text for b in system.blocks if isinstance(b, TextBlock)]
    assert texts[0].startswith(DEFAULT_MEMORY_HEADER) and "nurse" in texts[0]
    assert texts[-1] == "You are a helpful assistant."
    assert memory.get_all()[0].content == "You are a helpful assistant."  # stored history unchanged
    assert "assistant: That sounds demanding." not in texts[0]  # roles=["user"]: assistant turns not written


def test_set_writes_only_new_messages(mos: MemOS, stored_lines: Callable[..., list[str]]) -> None:
    """Setting a history writes only the messages after the common start with the current history."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    history = [user("My cat is called Pixel."), assistant("Nice name.")]
    memory.set(history)
    memory.set([*history, user("I adopted her in 2021.")])
    assert stored_lines() == ["user: My cat is called Pixel.", "assistant: Nice name.", "user: I adopted her in 2021."]
    asyncio.run(memory.aset([user("A different start."), assistant("Indeed.")]))
    assert stored_lines()[-2:] == ["user: A different start.", "assistant: Indeed."]
    assert len(stored_lines()) == 5
    assert [m.content for m in memory.get_all()] == ["A different start.", "Indeed."]


def test_tool_calls_and_tool_output_are_not_written(mos: MemOS, stored_lines: Callable[..., list[str]]) -> None:
    """Tool calls and tool output stay in the history only."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    call = ChatMessage(role=MessageRole.ASSISTANT, blocks=[ToolCallBlock(tool_name="weather", tool_kwargs={})])
    memory.put_messages([user("Weather?"), call, ChatMessage(role=MessageRole.TOOL, content="sunny, 24 C")])
    assert stored_lines() == ["user: Weather?"]
    assert len(memory.get_all()) == 3


def test_any_base_memory_can_hold_the_history(mos: MemOS, stored_lines: Callable[..., list[str]]) -> None:
    """from_client with a ChatMemoryBuffer as primary memory."""
    buffer = ChatMemoryBuffer.from_defaults(token_limit=1000)
    memory = MemOSMemory.from_client(mos, "alice", "c1", primary_memory=buffer, session_id="s-7")
    memory.put(user("I am learning Portuguese on Tuesdays."))
    assert buffer.get_all()[0].content == "I am learning Portuguese on Tuesdays."
    assert stored_lines() == ["user: I am learning Portuguese on Tuesdays."]
    assert "Portuguese" in (memory.get(input="When do I study languages?")[0].content or "")


def test_search_settings_are_applied(mos: MemOS) -> None:
    """top_k and token_budget reach MemOS's search."""
    for fact in ["My cat is called Pixel.", "My dog is called Rex.", "My fish is called Bubbles."]:
        mos.add([{"role": "user", "content": fact}], user_id="alice", cube_id="c1")
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", top_k=1)
    system = memory.get(input="What is my cat called?")[0].content or ""
    assert system.count("\n- ") == 1 and "Pixel" in system
    budget = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", token_budget=3)
    assert budget.get(input="What is my cat called?") == []  # no memory fits in 3 tokens: nothing injected


def test_another_users_cube_is_refused_and_history_unchanged(
    mos: MemOS, stored: Callable[..., list[MemoryItem]]
) -> None:
    """Bob's cube is refused with PermissionDeniedError, before the history changes."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c2")
    with pytest.raises(PermissionDeniedError):
        memory.put(user("Writing into Bob's cube."))
    with pytest.raises(PermissionDeniedError):
        asyncio.run(memory.aput_messages([user("Again, async.")]))
    assert memory.get_all() == []
    assert stored("c2", "bob") == []
    reader = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", cube_ids=["c2"])
    reader.put(user("Hello"))
    with pytest.raises(PermissionDeniedError):
        reader.get()
    with pytest.raises(PermissionDeniedError):
        asyncio.run(reader.aget())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"user_id": "not valid"}, "user_id"),
        ({"session_id": "with space"}, "session_id"),
        ({"cube_ids": "c1"}, "cube_ids"),
        ({"top_k": -1}, "top_k"),
        ({"token_budget": 1.5}, "token_budget"),
        ({"filters": {"memory_types": ["Nope"]}}, "filters"),
        ({"query_messages": False}, "query_messages"),
        ({"roles": [""]}, "roles"),
        ({"primary_memory": "history"}, "primary_memory"),
    ],
)
def test_bad_arguments_raise_invalid_input(mos: MemOS, kwargs: dict[str, object], match: str) -> None:
    """Every malformed argument is refused with InvalidInputError naming it."""
    args: dict[str, object] = {"mos": mos, "user_id": "alice", "cube_id": "c1", **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        MemOSMemory.from_defaults(**args)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="MemOS"):
        MemOSMemory.from_defaults(mos=None, user_id="alice", cube_id="c1")  # type: ignore[arg-type]


def test_primary_memory_with_a_malformed_session_id_is_mapped(
    mos: MemOS, stored: Callable[..., list[MemoryItem]]
) -> None:
    """A primary Memory whose session id MemOS refuses ("chat 1") writes under a mapped MemOS session."""
    primary = Memory.from_defaults(session_id="chat 1")
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1", primary_memory=primary)
    mapped = "li-" + hashlib.sha256(b"chat 1").hexdigest()[:32]
    assert memory.session_id == mapped
    memory.put(user("I moved to Lisbon in May."))
    assert [i.sources.session_ids for i in stored()] == [[mapped]]
    assert [m.content for m in memory.get_all()] == ["I moved to Lisbon in May."]
    # a well-formed one is kept as it is
    kept = MemOSMemory.from_defaults(
        mos=mos, user_id="alice", cube_id="c1", primary_memory=Memory.from_defaults(session_id="chat-2")
    )
    assert kept.session_id == "chat-2"
