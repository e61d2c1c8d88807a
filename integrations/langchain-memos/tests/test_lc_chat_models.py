from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_memos import ChatMemOS
from pydantic import BaseModel

from memos_agents.errors import InvalidInputError, ModelError
from memos_agents.testing import ScriptedLLM

pytestmark = pytest.mark.unit


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return query


def test_invoke_maps_roles_and_returns_an_ai_message() -> None:
    llm = ScriptedLLM(["Lisbon."])
    model = ChatMemOS(llm=llm, max_tokens=32)
    reply = model.invoke(
        [
            SystemMessage(content="Answer briefly."),
            HumanMessage(content="Where do I live?"),
            AIMessage(content="Let me think."),
            ChatMessage(role="user", content=[{"type": "text", "text": "Well?"}]),
        ]
    )
    assert isinstance(reply, AIMessage)
    assert reply.content == "Lisbon."
    assert reply.response_metadata["model_name"] == "scripted"
    (call,) = llm.calls
    assert call.messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Where do I live?"},
        {"role": "assistant", "content": "Let me think."},
        {"role": "user", "content": "Well?"},
    ]
    assert (call.max_tokens, call.temperature) == (32, 0.0)


def test_per_call_settings_and_stop() -> None:
    llm = ScriptedLLM(["first line\nsecond line", "a. b. c"])
    model = ChatMemOS(llm=llm, stop=["\n"], temperature=0.2)
    assert model.invoke("hi", max_tokens=7).content == "first line"
    assert model.invoke("hi", stop=[". "]).content == "a"
    assert (llm.calls[0].max_tokens, llm.calls[0].temperature, llm.calls[0].stop) == (7, 0.2, ("\n",))
    assert llm.calls[1].stop == ("\n", ". ")
    with pytest.raises(InvalidInputError, match="tools"):
        model.invoke("hi", tools=[])


def test_in_a_chain() -> None:
    chain = ChatPromptTemplate.from_messages([("system", "Be {style}."), ("human", "{q}")]) | ChatMemOS(
        llm=ScriptedLLM(lambda call: f"{call.messages[0]['content']} / {call.messages[1]['content']}")
    )
    assert chain.invoke({"style": "terse", "q": "Hello?"}).content == "Be terse. / Hello?"


@pytest.mark.asyncio
async def test_ainvoke_and_astream() -> None:
    model = ChatMemOS(llm=ScriptedLLM(["async reply", "streamed reply"]))
    assert (await model.ainvoke("hi")).content == "async reply"
    chunks = [c async for c in model.astream("hi")]
    assert "".join(str(c.content) for c in chunks) == "streamed reply"


def test_no_tool_calling() -> None:
    model = ChatMemOS(llm=ScriptedLLM([]))
    with pytest.raises(NotImplementedError, match="no tool calling"):
        model.bind_tools([lookup])

    class Answer(BaseModel):
        text: str

    with pytest.raises(NotImplementedError):
        model.with_structured_output(Answer)
    with pytest.raises(InvalidInputError, match="'tool' message"):
        model.invoke([HumanMessage("hi"), ToolMessage(content="x", tool_call_id="1")])
    with pytest.raises(InvalidInputError, match="with tool calls"):
        model.invoke([AIMessage(content="", tool_calls=[{"name": "lookup", "args": {}, "id": "1"}])])


def test_model_failure_is_a_model_error() -> None:
    model = ChatMemOS(llm=ScriptedLLM([RuntimeError("server down")]))
    with pytest.raises(ModelError, match="server down"):
        model.invoke("hi")


def test_identifying_params() -> None:
    model = ChatMemOS(llm=ScriptedLLM([], model_name="SmolLM2-135M-Instruct"), max_tokens=96)
    assert model._llm_type == "memos"
    assert model._identifying_params["model_name"] == "SmolLM2-135M-Instruct"
    assert model._identifying_params["max_tokens"] == 96


def test_in_an_agent_without_tools() -> None:
    llm = ScriptedLLM(["Hello from SmolLM2."])
    agent = create_agent(ChatMemOS(llm=llm), tools=[], system_prompt="Be kind.")
    result = agent.invoke({"messages": [HumanMessage("Hi")]})
    assert result["messages"][-1].content == "Hello from SmolLM2."
    assert llm.calls[0].messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(NotImplementedError, match="no tool calling"):
        create_agent(ChatMemOS(llm=llm), tools=[lookup]).invoke({"messages": [HumanMessage("Hi")]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "64"}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": False}, "temperature"),
    ],
)
def test_per_call_settings_are_checked(kwargs: dict[str, object], match: str) -> None:
    llm = ScriptedLLM(["never"])
    model = ChatMemOS(llm=llm)
    with pytest.raises(InvalidInputError, match=match):
        model.invoke("hi", **kwargs)
    assert llm.calls == []  # refused before the LLM was called


@pytest.mark.asyncio
async def test_per_call_settings_are_checked_async() -> None:
    llm = ScriptedLLM(["never", "ok"])
    model = ChatMemOS(llm=llm)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        await model.ainvoke("hi", max_tokens=0)
    assert (await model.ainvoke("hi", max_tokens=1, temperature=0)).content == "never"
    assert (llm.calls[0].max_tokens, llm.calls[0].temperature) == (1, 0.0)


def test_field_temperature_must_be_finite() -> None:
    with pytest.raises(ValueError, match="temperature"):
        ChatMemOS(llm=ScriptedLLM([]), temperature=float("inf"))


@pytest.mark.parametrize("role", ["tool", "function", "Tool", "FUNCTION"])
def test_chat_messages_of_tool_roles_are_refused(role: str) -> None:
    llm = ScriptedLLM(["never"])
    with pytest.raises(InvalidInputError, match="no tool calling"):
        ChatMemOS(llm=llm).invoke([HumanMessage("hi"), ChatMessage(role=role, content="42")])
    assert llm.calls == []


def test_chat_message_roles_are_normalised() -> None:
    llm = ScriptedLLM(["ok"])
    ChatMemOS(llm=llm).invoke(
        [
            ChatMessage(role="developer", content="Be brief."),
            ChatMessage(role="Human", content="Hi"),
            ChatMessage(role="ai", content="Hello"),
        ]
    )
    assert [m["role"] for m in llm.calls[0].messages] == ["system", "user", "assistant"]
