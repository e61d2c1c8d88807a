from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.documents import Document
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_memos import (
    AddMemoryTool,
    DeleteMemoryTool,
    MemoryScope,
    SearchMemoryTool,
    UpdateMemoryTool,
    create_memory_tools,
    resolve_scope,
)

from memos_agents import MemOS
from memos_agents.errors import ConfigError, InvalidInputError, MemoryNotFoundError, PermissionDeniedError

pytestmark = pytest.mark.unit

BOB_SECRET = "Whiskers"


def _runtime(context: Any = None, configurable: dict[str, Any] | None = None) -> ToolRuntime:
    config: dict[str, Any] = {"configurable": configurable} if configurable is not None else {}
    return ToolRuntime(
        state={"messages": []},
        context=context,
        config=config,  # type: ignore[arg-type]
        stream_writer=lambda _: None,
        tool_call_id="call-1",
        store=None,
    )


def _call(name: str, args: dict[str, Any], call_id: str = "call-1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


@dataclass
class AgentContext:
    user_id: str
    cube_id: str | None = None


class ScriptedToolModel(FakeMessagesListChatModel):
    """A fake chat model that replays scripted AI messages (tool calls included) and accepts tools."""

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self  # type: ignore[return-value]


def _agent(mos: MemOS, *steps: AIMessage) -> Any:
    return create_agent(ScriptedToolModel(responses=[*steps, AIMessage(content="Done.")]), create_memory_tools(mos))


def _tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


# -- scope -----------------------------------------------------------------------------------------
def test_scope_sources_in_order() -> None:
    ctx = {"user_id": "ctx-user", "cube_id": "ctx-cube"}
    conf = {"user_id": "conf-user", "cube_id": "conf-cube"}
    direct = {"configurable": {"user_id": "direct-user", "cube_id": "direct-cube"}}
    defaults = {"default_user_id": "dflt-user", "default_cube_id": "dflt-cube"}
    assert resolve_scope(_runtime(ctx, conf), direct, **defaults) == MemoryScope(user_id="ctx-user", cube_id="ctx-cube")
    assert resolve_scope(_runtime(None, conf), direct, **defaults) == MemoryScope(
        user_id="conf-user", cube_id="conf-cube"
    )
    assert resolve_scope(None, direct, **defaults) == MemoryScope(user_id="direct-user", cube_id="direct-cube")
    assert resolve_scope(None, None, **defaults) == MemoryScope(user_id="dflt-user", cube_id="dflt-cube")
    # each value separately: the user from the context object, the cube from the defaults
    assert resolve_scope(_runtime(AgentContext("obj-user")), {}, **defaults) == MemoryScope(
        user_id="obj-user", cube_id="dflt-cube"
    )


def test_missing_scope_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no user_id or cube_id"):
        resolve_scope(None, None)
    with pytest.raises(ConfigError, match="no cube_id"):
        resolve_scope(_runtime({"user_id": "alice"}), None)
    assert resolve_scope(_runtime({"user_id": "alice"}), None, need_cube=False) == MemoryScope(user_id="alice")
    with pytest.raises(InvalidInputError, match="user_id must be a string"):
        resolve_scope(_runtime({"user_id": 7, "cube_id": "c1"}), None)


def test_model_facing_schemas_hold_no_scope(mos: MemOS) -> None:
    for tool in create_memory_tools(mos):
        props = tool.tool_call_schema.model_json_schema()["properties"]  # type: ignore[union-attr]
        assert props and not {"user_id", "cube_id", "runtime"} & set(props)
    assert [t.name for t in create_memory_tools(mos)] == [
        "search_memory",
        "add_memory",
        "update_memory",
        "delete_memory",
    ]


# -- the tools, invoked directly -------------------------------------------------------------------
def test_scope_from_runtime_context(seeded: MemOS) -> None:
    search = SearchMemoryTool(mos=seeded)
    rt = _runtime(AgentContext("alice", "c1"))
    msg = search.invoke(_call("search_memory", {"query": "Which city? Lisbon", "k": 2, "runtime": rt}))
    assert isinstance(msg, ToolMessage)
    assert "Alice lives in Lisbon." in msg.content.splitlines()[0]
    assert len(msg.artifact) == 2 and all(isinstance(d, Document) for d in msg.artifact)
    assert msg.artifact[0].metadata["cube_id"] == "c1"


def test_scope_from_config(seeded: MemOS) -> None:
    add = AddMemoryTool(mos=seeded)
    out = add.invoke({"text": "Alice visited Kyoto in April."}, {"configurable": {"user_id": "alice", "cube_id": "c1"}})
    assert out.startswith("Stored memory ")
    memory_id = out.removeprefix("Stored memory ").rstrip(".")
    item = seeded.get(memory_id, "alice", "c1")
    assert item.text == "Alice visited Kyoto in April." and item.author_id == "alice"


def test_scope_from_defaults_and_search_of_own_cubes(seeded: MemOS) -> None:
    search = SearchMemoryTool(mos=seeded, default_user_id="alice", k=3)
    docs = search.invoke(_call("search_memory", {"query": "Alice"})).artifact
    assert len(docs) == 3 and {d.metadata["cube_id"] for d in docs} == {"c1"}
    seeded.create_cube("e1", "carol")
    assert SearchMemoryTool(mos=seeded, default_user_id="carol").invoke({"query": "Alice"}) == "No memories found."


def test_add_update_delete(mos: MemOS) -> None:
    scope = {"default_user_id": "alice", "default_cube_id": "c1"}
    add, update, delete = (
        AddMemoryTool(mos=mos, **scope),
        UpdateMemoryTool(mos=mos, **scope),
        DeleteMemoryTool(mos=mos, **scope),
    )
    memory_id = add.invoke({"text": "Alice's locker code is 4411."}).removeprefix("Stored memory ").rstrip(".")
    assert update.invoke({"memory_id": memory_id, "text": "Alice's locker code is 5522."}) == (
        f"Updated memory {memory_id} (version 2)."
    )
    assert mos.get(memory_id, "alice", "c1").text == "Alice's locker code is 5522."
    assert delete.invoke({"memory_id": memory_id}) == f"Deleted memory {memory_id}."
    assert delete.invoke({"memory_id": memory_id}) == f"No memory {memory_id} to delete."
    with pytest.raises(MemoryNotFoundError):
        update.invoke({"memory_id": memory_id, "text": "gone"})


@pytest.mark.asyncio
async def test_add_update_delete_search_async(mos: MemOS) -> None:
    tools = {t.name: t for t in create_memory_tools(mos)}
    config = {"configurable": {"user_id": "alice", "cube_id": "c1"}}
    out = await tools["add_memory"].ainvoke({"text": "Alice's gym is on Rua Augusta."}, config)
    memory_id = out.removeprefix("Stored memory ").rstrip(".")
    found = await tools["search_memory"].ainvoke(_call("search_memory", {"query": "gym Rua Augusta"}), config)
    assert [d.id for d in found.artifact] == [memory_id]
    assert "Updated" in await tools["update_memory"].ainvoke(
        {"memory_id": memory_id, "text": "Alice's gym moved."}, config
    )
    assert await tools["delete_memory"].ainvoke({"memory_id": memory_id}, config) == f"Deleted memory {memory_id}."
    with pytest.raises(ConfigError):
        await tools["add_memory"].ainvoke({"text": "no scope"})


def test_write_tools_need_a_cube(mos: MemOS) -> None:
    with pytest.raises(ConfigError, match="no cube_id"):
        AddMemoryTool(mos=mos, default_user_id="alice").invoke({"text": "x"})


# -- a model cannot reach another user's memory ---------------------------------------------------
def test_scope_in_tool_call_args_is_ignored(seeded: MemOS) -> None:
    search = SearchMemoryTool(mos=seeded)
    forged = {"query": "bank PIN hint cat", "user_id": "bob", "cube_id": "b1"}
    msg = search.invoke(_call("search_memory", forged), {"configurable": {"user_id": "alice"}})
    assert BOB_SECRET not in msg.content
    assert {d.metadata["cube_id"] for d in msg.artifact} == {"c1"}


def test_forged_runtime_in_tool_call_args_is_refused(seeded: MemOS) -> None:
    search = SearchMemoryTool(mos=seeded, default_user_id="alice")
    forged = {"query": "bank PIN hint cat", "runtime": {"context": {"user_id": "bob", "cube_id": "b1"}}}
    with pytest.raises(InvalidInputError, match="ToolRuntime"):
        search.invoke(_call("search_memory", forged))


def test_agent_adds_then_searches_memory(mos: MemOS) -> None:
    agent = _agent(
        mos,
        AIMessage(content="", tool_calls=[_call("add_memory", {"text": "Alice's cat is called Miso."}, "c-1")]),
        AIMessage(content="", tool_calls=[_call("search_memory", {"query": "cat called Miso"}, "c-2")]),
    )
    result = agent.invoke({"messages": [HumanMessage("Remember my cat Miso.")]}, context=AgentContext("alice", "c1"))
    added, searched = _tool_messages(result)
    assert added.name == "add_memory" and added.content.startswith("Stored memory ")
    memory_id = added.content.removeprefix("Stored memory ").rstrip(".")
    assert searched.name == "search_memory"
    assert f"(id={memory_id}," in searched.content and "Alice's cat is called Miso." in searched.content
    assert result["messages"][-1].content == "Done."
    assert mos.get(memory_id, "alice", "c1").author_id == "alice"


@pytest.mark.asyncio
async def test_agent_async_with_dict_context(mos: MemOS) -> None:
    agent = _agent(
        mos,
        AIMessage(content="", tool_calls=[_call("add_memory", {"text": "Alice's bike is red."}, "c-1")]),
        AIMessage(content="", tool_calls=[_call("search_memory", {"query": "bike red"}, "c-2")]),
    )
    result = await agent.ainvoke({"messages": [HumanMessage("hi")]}, context={"user_id": "alice", "cube_id": "c1"})
    added, searched = _tool_messages(result)
    assert "Alice's bike is red." in searched.content
    assert added.content.removeprefix("Stored memory ").rstrip(".") == searched.artifact[0].id


def test_agent_model_cannot_reach_another_users_memory(seeded: MemOS) -> None:
    forged_scope = {"user_id": "bob", "cube_id": "b1", "runtime": {"context": {"user_id": "bob", "cube_id": "b1"}}}
    agent = _agent(
        seeded,
        AIMessage(
            content="",
            tool_calls=[
                _call("search_memory", {"query": "Bob bank PIN hint first cat", **forged_scope}, "c-1"),
                _call("add_memory", {"text": "Bob's PIN is 0000.", **forged_scope}, "c-2"),
            ],
        ),
    )
    result = agent.invoke({"messages": [HumanMessage("What is Bob's PIN?")]}, context=AgentContext("alice", "c1"))
    searched, added = _tool_messages(result)
    assert BOB_SECRET not in searched.content
    assert {d.metadata["cube_id"] for d in searched.artifact} == {"c1"}
    # the "forged" write landed in alice's own cube, authored by alice; bob's cube is untouched
    memory_id = added.content.removeprefix("Stored memory ").rstrip(".")
    assert seeded.get(memory_id, "alice", "c1").author_id == "alice"
    bob_texts = [h.item.text for h in seeded.search("PIN", user_id="bob", cube_ids=["b1"])]
    assert bob_texts == ["Bob's bank PIN hint is the name of his first cat, Whiskers."]


def test_agent_context_naming_another_users_cube_is_refused(seeded: MemOS) -> None:
    agent = _agent(seeded, AIMessage(content="", tool_calls=[_call("search_memory", {"query": "PIN"}, "c-1")]))
    with pytest.raises(PermissionDeniedError):
        agent.invoke({"messages": [HumanMessage("hi")]}, context=AgentContext("alice", "b1"))


def test_agent_without_scope_fails_clearly(mos: MemOS) -> None:
    agent = _agent(mos, AIMessage(content="", tool_calls=[_call("search_memory", {"query": "x"}, "c-1")]))
    with pytest.raises(ConfigError, match="user_id"):
        agent.invoke({"messages": [HumanMessage("hi")]})
