"""A FunctionAgent with MemOSMemory: what one run writes, a later run (a new conversation) recalls."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.memory.memos import MemOSMemory
from pydantic.warnings import PydanticDeprecationWarning

from memos_agents import MemOS

pytestmark = pytest.mark.unit


class ScriptedLLM:
    """Replies of a function-calling LLM: book when asked to, report the tool's result, else answer from memory."""

    def __init__(self) -> None:
        self.calls: list[list[ChatMessage]] = []

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.calls.append(list(messages))
        last = messages[-1]
        if last.role == MessageRole.TOOL:
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"Done: {last.content}.")
        if "book" in (last.content or "").lower():
            call = ToolCallBlock(tool_call_id="call-1", tool_name="book_table", tool_kwargs={"city": "Lisbon"})
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        recalled = [
            line.removeprefix("- assistant: ")
            for m in messages
            if m.role == MessageRole.SYSTEM
            for line in (m.content or "").split("\n")
            if "Tasca do Chico" in line and line.startswith("- assistant: ")
        ]
        return ChatMessage(role=MessageRole.ASSISTANT, content=recalled[0] if recalled else "I do not know.")


def test_function_agent_writes_memories_and_finds_them_in_a_later_run(
    mos: MemOS, stored_lines: Callable[..., list[str]]
) -> None:
    """A tool-calling run writes the conversation to MemOS; a new conversation's run gets it back as memories."""
    booked: list[str] = []

    def book_table(city: str) -> str:
        """Book a dinner table in a city; returns the booking."""
        booked.append(city)
        return f"Booked a table at Tasca do Chico in {city} for Friday"

    script = ScriptedLLM()
    with warnings.catch_warnings():  # the workflow runtime inspects the (pydantic) agent's deprecated attributes
        warnings.simplefilter("ignore", PydanticDeprecationWarning)
        agent = FunctionAgent(
            tools=[FunctionTool.from_defaults(fn=book_table)],
            llm=MockFunctionCallingLLM(response_generator=script),
            system_prompt="You are a concierge.",
        )

    async def chat(user_msg: str, memory: MemOSMemory) -> str:
        return str(await agent.run(user_msg=user_msg, memory=memory))

    def run(user_msg: str, memory: MemOSMemory) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticDeprecationWarning)
            return asyncio.run(chat(user_msg, memory))

    first = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")
    answer = run("Please book a table for dinner in Lisbon.", first)
    assert booked == ["Lisbon"]
    assert answer == "Done: Booked a table at Tasca do Chico in Lisbon for Friday."
    # the user's message and the final answer were written; the tool call and tool output were not
    assert stored_lines() == [
        "user: Please book a table for dinner in Lisbon.",
        "assistant: Done: Booked a table at Tasca do Chico in Lisbon for Friday.",
    ]
    assert [m.role for m in first.get_all()] == [
        MessageRole.USER,
        MessageRole.ASSISTANT,
        MessageRole.TOOL,
        MessageRole.ASSISTANT,
    ]

    second = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="c1")  # a new conversation
    script.calls.clear()
    answer = run("Where is my dinner on Friday?", second)
    assert booked == ["Lisbon"]  # no new booking
    seen = script.calls[0]
    assert [m.role for m in seen] == [MessageRole.SYSTEM, MessageRole.SYSTEM, MessageRole.USER]
    assert "Tasca do Chico" in (seen[1].content or "")  # the memories, found by MemOS in the first run's cube
    assert answer == "Done: Booked a table at Tasca do Chico in Lisbon for Friday."
    assert "user: Where is my dinner on Friday?" in stored_lines()
    assert second.session_id != first.session_id
