"""A LlamaIndex ``FunctionAgent`` on MemOS: ``MemOSMemory`` for the conversation, ``MemOSRetriever`` as its tool.

* ``MemOSMemory`` writes every user and assistant message of a conversation to alice's cube and
  puts the memories relevant to the latest message in front of the chat history.
* A ``recall`` tool searches the cube through ``MemOSRetriever`` (hybrid search within a token
  budget) when the model asks.

The second conversation is a new ``MemOSMemory`` (a new session): what it knows comes from MemOS.
The LLM is scripted (LlamaIndex's ``MockFunctionCallingLLM`` with a reply function).

Run: ``python cookbook/llamaindex_pipeline_with_memos.py [--home DIR] [--real-models]``.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from _common import open_mos, parse_args
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.memory.memos import MemOSMemory, MemOSRetriever
from pydantic.warnings import PydanticDeprecationWarning


def scripted_reply(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
    """Reply as a function-calling model would: a question -> call ``recall``; a tool result -> answer with it."""
    last = messages[-1]
    if last.role == MessageRole.TOOL:
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"According to my memory: {last.content}")
    text = last.content or ""
    if text.rstrip().endswith("?"):
        call = ToolCallBlock(tool_call_id="recall-1", tool_name="recall", tool_kwargs={"query": text})
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
    return ChatMessage(role=MessageRole.ASSISTANT, content="Got it, I will remember that.")


def main() -> int:
    """Tell the agent something in one conversation, ask about it in the next; print both paths of recall."""
    args = parse_args(__doc__.splitlines()[0])
    warnings.simplefilter("ignore", PydanticDeprecationWarning)  # llama-index's workflow inspects old attributes
    with open_mos(args) as mos:
        mos.create_cube("alice-notes", owner_id="alice")
        retriever = MemOSRetriever(mos, "alice", ["alice-notes"], similarity_top_k=3, token_budget=300)

        def recall(query: str) -> str:
            """Search the user's long-term memory; returns the most relevant memories."""
            return " | ".join(hit.node.get_content().replace("\n", " / ") for hit in retriever.retrieve(query))

        agent = FunctionAgent(
            tools=[FunctionTool.from_defaults(fn=recall)],
            llm=MockFunctionCallingLLM(response_generator=scripted_reply),
            system_prompt="You are a personal assistant with a long-term memory.",
        )

        async def chat(text: str, memory: MemOSMemory) -> str:
            return str(await agent.run(user_msg=text, memory=memory))

        for conversation, text in (
            ("conversation 1", "I moved to Lisbon in May and my dog is called Pixel."),
            ("conversation 2", "Where do I live?"),
        ):
            memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="alice-notes", token_budget=300)
            print(f"\n[{conversation}, session {memory.session_id}] user: {text}")
            injected = [m.content for m in memory.get(input=text) if m.role == MessageRole.SYSTEM]
            print(f"  memories put before the history: {injected or '(none)'}")
            print(f"  answer: {asyncio.run(chat(text, memory))}")

        for hit in retriever.retrieve("Pixel"):
            print(f"retriever: {hit.score:.3f} {hit.node.get_content()!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
