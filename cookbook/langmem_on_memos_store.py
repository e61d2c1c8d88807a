"""LangMem's memory tools on a ``MemOSStore``: LangGraph store namespaces become governed MemCubes.

``create_manage_memory_tool`` and ``create_search_memory_tool`` with the namespace
``("memories", "{langgraph_user_id}")`` run inside a ``create_agent`` agent whose store is a
``MemOSStore``: each namespace is a MemCube owned by the store's user, searched by MemOS's hybrid
retrieval; ``subject_label=1`` makes the user id in the namespace the memories' subject, so
``MemOS.forget_user`` reaches them. The model is scripted: it saves a preference in one
conversation and searches for it in the next.

Run: ``python cookbook/langmem_on_memos_store.py [--home DIR] [--real-models]``.
"""

from __future__ import annotations

import sys

from _common import ScriptedToolModel, open_mos, parse_args
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph_memos import MemOSStore
from langmem import create_manage_memory_tool, create_search_memory_tool

NAMESPACE = ("memories", "{langgraph_user_id}")


def main() -> int:
    """Save a memory with LangMem, find it in a new conversation, and show the MemCube behind it."""
    args = parse_args(__doc__.splitlines()[0])
    with open_mos(args) as mos:
        store = MemOSStore(mos, user_id="assistant", subject_label=1)
        tools = [create_manage_memory_tool(NAMESPACE), create_search_memory_tool(NAMESPACE)]
        model = ScriptedToolModel(
            plan=[
                [("manage_memory", {"content": "Alice prefers green tea to coffee.", "action": "create"})],
                [("search_memory", {"query": "What does Alice like to drink?"})],
            ]
        )
        agent = create_agent(model, tools, store=store)
        for thread, text in (
            ("conversation-1", "By the way, I much prefer green tea to coffee."),
            ("conversation-2", "What should you bring me from the café?"),
        ):
            run = {"configurable": {"thread_id": thread, "langgraph_user_id": "alice"}}
            out = agent.invoke({"messages": [HumanMessage(text)]}, run)
            print(f"\n[{thread}] user: {text}")
            for message in out["messages"]:
                if isinstance(message, ToolMessage):
                    print(f"  tool {message.name}: {str(message.text)[:160]}")
            print(f"  answer: {str(out['messages'][-1].text)[:160]}")

        items = store.search(("memories", "alice"), query="tea")
        print(f"\nstore.search(('memories', 'alice'), query='tea'): {[i.value['content'] for i in items]}")
        for cube in mos.list_cubes("assistant"):
            print(f"MemCube behind the namespace: {cube.cube_id} (owner {cube.owner_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
