"""A LangChain agent (``create_agent``) with MemOS memory: memory tools, and recall by a retriever in its prompt.

* The langchain-memos tools (``search_memory``, ``add_memory``, ...) let the model save and look
  up facts; whose cube they touch comes from the run's context, never from the model: the
  scripted model below even sends ``user_id``/``cube_id`` of bob's in a call, and they are dropped.
* A ``MemOSRetriever`` puts the memories relevant to each user message into the system prompt
  (a ``dynamic_prompt`` middleware), so a new conversation starts knowing what earlier ones saved.

Run: ``python cookbook/langchain_agent_with_memory.py [--home DIR] [--real-models]``.
"""

from __future__ import annotations

import sys
from typing import Any

from _common import ScriptedToolModel, open_mos, parse_args
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, dynamic_prompt
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_memos import MemOSRetriever, create_memory_tools


def main() -> int:
    """Save facts in one conversation, recall them in the next; print the tool traffic and the recall."""
    args = parse_args(__doc__.splitlines()[0])
    with open_mos(args) as mos:
        mos.create_cube("alice-notes", owner_id="alice")
        mos.create_cube("bob-notes", owner_id="bob")

        @dynamic_prompt
        def recall(request: ModelRequest) -> str:
            """Put the memories relevant to the last user message into the system prompt."""
            context: dict[str, Any] = request.runtime.context
            retriever = MemOSRetriever(mos=mos, user_id=context["user_id"], cube_ids=[context["cube_id"]], k=3)
            question = next(str(m.text) for m in reversed(request.messages) if isinstance(m, HumanMessage))
            docs = retriever.invoke(question)
            print(f"  retriever recalled {len(docs)}: {[d.page_content for d in docs]}")
            lines = "\n".join(f"- {d.page_content}" for d in docs) or "(none)"
            return f"You are a helpful assistant with a long-term memory.\nMemories:\n{lines}"

        model = ScriptedToolModel(
            plan=[
                [
                    ("add_memory", {"text": "Alice moved to Lisbon in May."}),
                    # a model trying to write elsewhere: the tool's schema holds no scope, these are dropped
                    ("add_memory", {"text": "Alice's dog is called Pixel.", "user_id": "bob", "cube_id": "bob-notes"}),
                ],
                [("search_memory", {"query": "Where does Alice live?"})],
            ]
        )
        agent = create_agent(model, create_memory_tools(mos), middleware=[recall])
        context = {"user_id": "alice", "cube_id": "alice-notes"}

        for thread, text in (
            ("conversation-1", "Please remember that I moved to Lisbon in May and that my dog is called Pixel."),
            ("conversation-2", "Where do I live?"),
        ):
            print(f"\n[{thread}] user: {text}")
            out = agent.invoke(
                {"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}}, context=context
            )
            for message in out["messages"]:
                if isinstance(message, ToolMessage):
                    print(f"  tool {message.name}: {str(message.text).replace(chr(10), ' / ')}")
            print(f"  answer: {out['messages'][-1].text}")

        alice = mos.stats("alice-notes", "alice").active_memories
        bob = mos.stats("bob-notes", "bob").active_memories
        print(f"\nalice-notes holds {alice} memories; bob-notes holds {bob} (the model could not write there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
