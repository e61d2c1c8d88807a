"""MemOSMemoryBlock: writes into a cube, recall as text, real truncation, inside ``Memory``, refusals."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.memory import Memory
from llama_index.core.utils import get_tokenizer
from llama_index.memory.memos import MemOSMemoryBlock
from llama_index.memory.memos._common import check_id, memos_session_id

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError, PermissionDeniedError
from memos_agents.schema import MemoryItem

pytestmark = pytest.mark.unit

FACTS = [
    "I moved to Lisbon in May and live near the river.",
    "My cat is called Pixel and she likes the balcony in Lisbon.",
    "I work as a nurse at the hospital in Lisbon on night shifts.",
    "My sister Ana visits Lisbon every summer with her two kids.",
    "I am learning Portuguese on Tuesdays because I live in Lisbon now.",
    "My favourite restaurant in Lisbon serves grilled sardines.",
]


def user(text: str) -> ChatMessage:
    """Return a user message."""
    return ChatMessage(role=MessageRole.USER, content=text)


def assistant(text: str) -> ChatMessage:
    """Return an assistant message."""
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


def tokens(text: str) -> int:
    """Count tokens as Memory does (LlamaIndex's global tokenizer)."""
    return len(get_tokenizer()(text))


def test_put_writes_messages_into_the_cube_and_get_recalls_them(
    mos: MemOS, stored: Callable[..., list[MemoryItem]]
) -> None:
    """Flushed messages become one memory of the cube; aget renders it as one entry."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", session_id="s-1")

    async def run() -> str:
        await block.aput([user("I moved to Lisbon in May."), assistant("Lisbon is lovely in spring.")])
        return await block.aget([user("Hello"), assistant("Hi!"), user("Where do I live now?")])

    text = asyncio.run(run())
    items = stored()
    assert [i.text for i in items] == ["user: I moved to Lisbon in May.\nassistant: Lisbon is lovely in spring."]
    assert items[0].sources.session_ids == ["s-1"]
    assert items[0].author_id == "alice"
    # one entry per memory, its further lines indented
    assert text == "- user: I moved to Lisbon in May.\n  assistant: Lisbon is lovely in spring."


def test_put_skips_other_roles_and_messages_without_text(mos: MemOS, stored: Callable[..., list[MemoryItem]]) -> None:
    """Tool calls, tool output, system and blank messages are not written."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1")
    call = ChatMessage(role=MessageRole.ASSISTANT, blocks=[ToolCallBlock(tool_name="lookup", tool_kwargs={})])
    tool = ChatMessage(role=MessageRole.TOOL, content="lookup result: 42")
    asyncio.run(block.aput([call, tool, ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), user("   ")]))
    assert stored() == []  # nothing to write: no call at all
    asyncio.run(block.aput([call, tool, user("My cat is called Pixel.")]))
    assert [i.text for i in stored()] == ["user: My cat is called Pixel."]


def test_get_without_a_user_message_returns_nothing(mos: MemOS) -> None:
    """No user message with text: no search, empty text."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1")
    asyncio.run(block.aput([user("I moved to Lisbon in May.")]))
    assert asyncio.run(block.aget(None)) == ""
    assert asyncio.run(block.aget([assistant("How can I help?"), user(" ")])) == ""


def test_get_uses_the_latest_user_messages_as_query(mos: MemOS) -> None:
    """The query is the latest user message, or the latest query_messages ones."""
    for fact in FACTS:
        mos.add([{"role": "user", "content": fact}], user_id="alice", cube_id="c1")
    history = [user("What is my cat called?"), assistant("Let me check."), user("And where do I work at night?")]
    last_only = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=1)
    assert "night shifts" in asyncio.run(last_only.aget(history))
    last_two = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=2, query_messages=2)
    recalled = asyncio.run(last_two.aget(history))
    assert "night shifts" in recalled and "Pixel" in recalled


def test_truncate_drops_lowest_ranked_memories_until_short_enough(mos: MemOS) -> None:
    """Truncation removes at least the asked tokens, dropping the worst entries, and no more than needed."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=10)
    for fact in FACTS:
        asyncio.run(block.aput([user(fact)]))
    content = asyncio.run(block.aget([user("What do I do in Lisbon?")]))
    entries = content.split("\n")
    assert len(entries) == len(FACTS) and all(e.startswith("- user: ") for e in entries)
    total = tokens(content)

    assert asyncio.run(block.atruncate(content, 0)) == content
    best_only = total - tokens(entries[0])  # what dropping all but the best memory saves
    for asked in (1, 5, total // 3, total // 2, best_only):
        cut = asyncio.run(block.atruncate(content, asked))
        assert cut is not None
        assert total - tokens(cut) >= asked  # shorter by at least what was asked
        kept = cut.split("\n")
        assert kept == entries[: len(kept)]  # the best entries stay, in rank order
        # and no more than needed went: with one more entry it would not have been short enough
        assert total - tokens("\n".join(entries[: len(kept) + 1])) < asked
    assert asyncio.run(block.atruncate(content, best_only)) == entries[0]
    assert asyncio.run(block.atruncate(content, best_only + 1)) is None  # even the best one had to go
    assert asyncio.run(block.atruncate(content, total)) is None
    assert asyncio.run(block.atruncate("", 3)) is None


def test_truncate_keeps_multiline_memories_whole(mos: MemOS) -> None:
    """A memory of several lines is dropped whole, never cut in the middle."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=10)
    asyncio.run(block.aput([user("My cat is called Pixel."), assistant("Pixel is a lovely name for a cat.")]))
    asyncio.run(block.aput([user("I adopted Pixel in 2021 from a shelter.")]))
    content = asyncio.run(block.aget([user("Tell me about Pixel the cat.")]))
    assert content.count("\n- ") == 1  # two memories, one of two lines
    first = content.split("\n- ")[0]
    cut = asyncio.run(block.atruncate(content, 1))
    assert cut == first


def test_memory_flushes_into_memos_and_injects_the_block(mos: MemOS, stored: Callable[..., list[MemoryItem]]) -> None:
    """Memory flushes its oldest turns into MemOS and puts the recalled block into its system message."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1")
    memory = Memory.from_defaults(
        session_id="chat-1", memory_blocks=[block], token_limit=60, chat_history_token_ratio=0.5, token_flush_size=20
    )
    turns = [
        user("I moved to Lisbon in May and live near the river."),
        assistant("Lisbon is a beautiful city, enjoy the river views."),
        user("My cat is called Pixel."),
        assistant("Pixel is a lovely name."),
        user("What should I cook tonight?"),
    ]
    for message in turns:
        memory.put(message)

    items = stored()
    assert items, "the queue went over its limit, so Memory flushed the oldest turn into the block"
    lines = [line for i in items for line in i.text.split("\n")]
    assert lines[0] == "user: I moved to Lisbon in May and live near the river."
    assert all(i.sources.session_ids == ["chat-1"] for i in items)  # Memory's session id
    active = memory.get_all(status=None)
    assert len(active) == len(turns)  # archived by Memory, not lost

    messages = memory.get(input="Where do I live?")
    assert messages[0].role == MessageRole.SYSTEM
    system = messages[0].content or ""
    assert "<memos_memory>" in system and "- user: I moved to Lisbon in May" in system
    assert messages[-1].content == "What should I cook tonight?"


def test_memory_truncates_the_block_to_its_token_limit(mos: MemOS) -> None:
    """Memory over its token limit keeps the best memories that fit."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=10)
    for fact in FACTS:
        asyncio.run(block.aput([user(fact)]))
    history = [user("What do I do in Lisbon?")]
    content = asyncio.run(block.aget(history))
    probe = Memory.from_defaults(chat_history=history)
    history_tokens = sum(probe._estimate_token_count(m) for m in history)
    limit = history_tokens + tokens(content) // 2
    memory = Memory.from_defaults(chat_history=history, memory_blocks=[block], token_limit=limit)

    messages = memory.get()
    memory_text = "".join(b.text for b in messages[0].blocks if isinstance(b, TextBlock))
    kept = [line for line in memory_text.split("\n") if line.startswith("- user: ")]
    all_entries = content.split("\n")
    assert 0 < len(kept) < len(all_entries)
    assert kept == all_entries[: len(kept)]
    assert tokens("\n".join(kept)) <= limit - history_tokens


def test_priority_zero_is_never_truncated(mos: MemOS) -> None:
    """priority=0 opts out of truncation, as for every Memory block."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", top_k=10, priority=0)
    for fact in FACTS:
        asyncio.run(block.aput([user(fact)]))
    memory = Memory.from_defaults(chat_history=[user("What do I do in Lisbon?")], memory_blocks=[block], token_limit=20)
    text = memory.get()[0].content or ""
    assert sum(line.startswith("- user: ") for line in text.split("\n")) == len(FACTS)


def test_another_users_cube_is_refused(mos: MemOS, stored: Callable[..., list[MemoryItem]]) -> None:
    """Writing into or searching Bob's cube as Alice raises PermissionDeniedError."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c2")
    with pytest.raises(PermissionDeniedError):
        asyncio.run(block.aput([user("Let me write into Bob's cube.")]))
    with pytest.raises(PermissionDeniedError):
        asyncio.run(block.aget([user("What is in Bob's cube?")]))
    assert stored("c2", "bob") == []
    reader = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1", cube_ids=["c1", "c2"])
    with pytest.raises(PermissionDeniedError):
        asyncio.run(reader.aget([user("Search both cubes")]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "alice smith"),
        ("cube_id", ""),
        ("session_id", "a/b"),
        ("cube_ids", "c1"),
        ("top_k", 0),
        ("top_k", 2.5),
        ("token_budget", True),
        ("filters", {"colour": "red"}),
        ("query_messages", 0),
        ("roles", "user"),
    ],
)
def test_bad_arguments_raise_invalid_input(mos: MemOS, field: str, value: object) -> None:
    """Every malformed argument is refused with InvalidInputError naming it."""
    kwargs: dict[str, object] = {"mos": mos, "user_id": "alice", "cube_id": "c1", field: value}
    with pytest.raises(InvalidInputError, match=field if field != "cube_ids" else "cube_ids"):
        MemOSMemoryBlock(**kwargs)  # type: ignore[arg-type]


def test_not_a_memos_is_refused() -> None:
    """Something else than a MemOS is refused with InvalidInputError."""
    with pytest.raises(InvalidInputError, match="MemOS"):
        MemOSMemoryBlock(mos=object(), user_id="alice", cube_id="c1")  # type: ignore[arg-type]


def test_memos_session_id_maps_malformed_ids_deterministically() -> None:
    """A well-formed session id stays; any other becomes "li-" + 32 hex digits of its SHA-256."""
    assert memos_session_id(None) is None
    assert memos_session_id("chat-1") == "chat-1"
    mapped = memos_session_id("chat 1")
    assert mapped == "li-" + hashlib.sha256(b"chat 1").hexdigest()[:32]
    assert mapped == memos_session_id("chat 1") != memos_session_id("chat 2")
    for odd in ("", "a/b", "x" * 129, "-lead", "trailing\n", "caf\u00e9", "\ud800", 42):
        assert check_id(memos_session_id(odd), "session_id")  # always a MemOS id


def test_memory_with_a_malformed_session_id_keeps_flushed_messages(
    mos: MemOS, stored: Callable[..., list[MemoryItem]]
) -> None:
    """A Memory session id MemOS refuses ("chat 1") is mapped, so flushes are written, not lost."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="c1")
    memory = Memory.from_defaults(session_id="chat 1", memory_blocks=[block], token_limit=60)

    async def run() -> None:
        for n in range(8):
            await memory.aput(user(f"Fact number {n}: I moved to Lisbon in May and live near the river."))

    asyncio.run(run())  # raised InvalidInputError on every flush, after Memory had moved the messages
    items = stored()
    assert items, "Memory flushed its oldest messages into the block"
    mapped = "li-" + hashlib.sha256(b"chat 1").hexdigest()[:32]
    assert all(i.sources.session_ids == [mapped] for i in items)
    flushed = [line for i in items for line in i.text.split("\n")]
    assert flushed[0] == "user: Fact number 0: I moved to Lisbon in May and live near the river."
    # every message is either in MemOS or still in Memory's active queue: none was lost
    active = [m.content for m in memory.get_all()]
    texts = {line.removeprefix("user: ") for line in flushed} | set(active)
    assert {f"Fact number {n}: I moved to Lisbon in May and live near the river." for n in range(8)} <= texts
