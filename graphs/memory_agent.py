"""One agent with MemOS memory: MemReader -> MemScheduler -> LLM -> MemReader (write) -> MemLifecycle.

Each turn the reader derives the memory query from the user's last message, the scheduler puts
the memories that fit the token budget into the prompt, the chat model answers, the turn (user
message and answer) is written to the caller's cube, and a bounded lifecycle pass runs over it.

The chat model is any LangChain chat model: by default the MemOS's own LLM (the local SmolLM2
with the default configuration) through ``langchain_memos.ChatMemOS``, or an OpenAI-compatible
endpoint when ``OPENAI_BASE_URL`` is set (``OPENAI_MODEL``, default ``gpt-4o-mini``;
``OPENAI_API_KEY``). The MemOS comes from the run's context (``mos``) or from the graph's store
(a ``MemOSStore``, as ``langgraph.json`` configures it); the caller and cube from the run's
context or ``config["configurable"]`` (``user_id``, ``cube_id``, optional ``session_id``).

``graph`` (module level, for ``langgraph.json``) is compiled without a MemOS or model: importing
this module loads nothing and touches no file. ``build_graph(mos, llm)`` binds both.

Run ``python graphs/memory_agent.py [--home DIR] [--real-models | --openai-base-url URL --model NAME]``
for one short conversation; without a model option it runs offline (hashing embeddings and a
scripted chat model that answers with what it recalled).
"""

# No ``from __future__ import annotations``: the state and context schemas resolve without a
# lookup of this module in ``sys.modules`` (servers load it by path).
import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.store.base import BaseStore
from langgraph.types import Checkpointer
from langgraph_memos.nodes import (
    MEMORY_STATE_TYPES,
    MemLifecycleNode,
    MemoryState,
    MemReaderNode,
    MemSchedulerNode,
    resolve_mos,
)
from pydantic import SecretStr

from memos_agents.errors import ConfigError
from memos_agents.os import MemOS
from memos_agents.prompts import answer as answer_prompt

#: Where the memory block starts and ends in the last user message (``memos_agents.prompts.answer``'s
#: format; the offline model reads what lies between).
MEMORIES_HEADING = "Memories:"
QUESTION_HEADING = "\n\nQuestion:"
#: Most tokens of an answer of the MemOS's own (local) LLM.
LOCAL_MAX_TOKENS = 64
#: Default model name for an OpenAI-compatible endpoint when ``OPENAI_MODEL`` is not set.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


class MemoryAgentContext(TypedDict, total=False):
    """The run's context (``graph.invoke(..., context={...})``); every key is optional.

    Attributes:
        user_id: The caller, whose cube is read and written (or ``config["configurable"]``).
        cube_id: The caller's cube (created on the first write when missing).
        session_id: The session new memories are filed under (default: the ``thread_id``).
        mos: The MemOS (default: the graph store's, when it is a ``MemOSStore``).
        llm: A LangChain chat model for this run (default: the graph's, see :func:`default_llm`).

    """

    user_id: str
    cube_id: str
    session_id: str
    mos: Any
    llm: Any


class MemoryAgentState(MemoryState, total=False):
    """The agent's state: the conversation and what the memory nodes write (see ``MemoryState``)."""


class RecallingChatModel(BaseChatModel):
    """An offline, scripted chat model: it answers with what the user said in the memories of its prompt.

    Stands in for a real model where none may be loaded (tests, the offline run): the answer is
    ``"You told me: <line>; <line>"`` with the user's lines of the recalled memories (speaker
    prefix removed, repeats dropped), or a fixed sentence when none were recalled, so a run
    shows exactly what the MemScheduler put into the prompt.
    """

    @property
    def _llm_type(self) -> str:
        return "memos-recalling-scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = next((str(m.text) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        _, _, after = last.partition(MEMORIES_HEADING)
        block, _, _ = after.partition(QUESTION_HEADING)
        said = [line.strip().removeprefix("user:").strip() for line in block.splitlines()]
        lines = list(
            dict.fromkeys(
                line
                for line, raw in zip(said, block.splitlines(), strict=True)
                if raw.strip().startswith("user:") and line
            )
        )
        text = "You told me: " + "; ".join(lines) if lines else "I do not remember anything about that yet."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


def default_llm(mos: MemOS) -> BaseChatModel:
    """Return the default chat model: an OpenAI-compatible endpoint when configured, else the MemOS's LLM.

    ``OPENAI_BASE_URL`` set: ``ChatOpenAI(base_url=..., model=$OPENAI_MODEL or gpt-4o-mini,
    api_key=$OPENAI_API_KEY or "not-needed")``. Otherwise ``ChatMemOS(llm=mos.llm)``, answering in
    one line of at most :data:`LOCAL_MAX_TOKENS` tokens.

    Raises:
        ConfigError: No endpoint and the MemOS has no LLM (``llm.provider`` ``none``).

    """
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        return openai_llm(base_url, os.environ.get("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL)
    if mos.llm is None:
        raise ConfigError(
            "the memory agent needs a chat model: give build_graph(llm=...), put llm in the run's context, "
            "set OPENAI_BASE_URL, or configure the MemOS's llm.provider"
        )
    from langchain_memos import ChatMemOS

    # one short answer, as MemOS.chat gives: small local models run on without a stop at the line break
    chat: BaseChatModel = ChatMemOS(llm=mos.llm, max_tokens=LOCAL_MAX_TOKENS, stop=list(answer_prompt.STOP))
    return chat


def openai_llm(base_url: str, model: str) -> BaseChatModel:
    """Return ``ChatOpenAI`` for an OpenAI-compatible endpoint (``OPENAI_API_KEY``, else a placeholder key)."""
    from langchain_openai import ChatOpenAI

    key = SecretStr(os.environ.get("OPENAI_API_KEY") or "not-needed")
    return ChatOpenAI(base_url=base_url, model=model, api_key=key)


def build_prompt(state: MemoryState, max_history: int) -> list[BaseMessage]:
    """Build the model's input as ``MemOS.chat`` does (``memos_agents.prompts.answer``).

    The answer rules as the system message, the earlier turns, then the last user message with
    the recalled memories in front of it and the one-sentence reminder after it (small local
    models heed the last lines of a prompt most).

    Args:
        state: The graph state (``messages``, ``memory_context``).
        max_history: Most earlier messages passed (the newest).

    """
    messages = list(state.get("messages") or [])
    last = next((n for n in range(len(messages) - 1, -1, -1) if isinstance(messages[n], HumanMessage)), None)
    if last is None:  # nothing to answer: the conversation as it is, after the rules
        return [SystemMessage(answer_prompt.SYSTEM), *messages[-max_history:]]
    history = [
        {"role": "assistant" if isinstance(m, AIMessage) else "user", "content": str(m.text)}
        for m in messages[:last][-max_history:]
        if isinstance(m, HumanMessage | AIMessage) and str(m.text).strip()
    ]
    question = str(messages[last].text)
    return convert_to_messages(answer_prompt.build_messages(question, state.get("memory_context") or "", history))


def _answer_node(llm: BaseChatModel | None, mos: MemOS | None, max_history: int) -> RunnableLambda[Any, dict[str, Any]]:
    """Return the LLM step: the graph's model, else the run's (``context["llm"]``), else :func:`default_llm`."""

    def pick() -> BaseChatModel:
        if llm is not None:
            return llm
        runtime = get_runtime()
        context = runtime.context if runtime is not None else None
        chosen = context.get("llm") if isinstance(context, dict) else getattr(context, "llm", None)
        if isinstance(chosen, BaseChatModel):
            return chosen
        return default_llm(resolve_mos(mos, runtime, "answer"))

    def answer(state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        reply = pick().invoke(build_prompt(state, max_history), config)
        return {"messages": [reply]}

    async def aanswer(state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        reply = await pick().ainvoke(build_prompt(state, max_history), config)
        return {"messages": [reply]}

    return RunnableLambda(answer, afunc=aanswer, name="answer")


def build_graph(
    mos: MemOS | None = None,
    llm: BaseChatModel | None = None,
    *,
    token_budget: int = 1000,
    top_k: int = 10,
    max_history: int = 20,
    mode: str = "fast",
    checkpointer: Checkpointer = None,
    store: BaseStore | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the memory agent.

    Args:
        mos: The MemOS (None: the run's context ``mos``, or the store's when it is a MemOSStore).
        llm: The chat model (None: the run's context ``llm``, else :func:`default_llm`).
        token_budget: Most tokens of recalled memories in the prompt (default 1000).
        top_k: Most memories recalled (default 10).
        max_history: Most conversation messages given to the model (default 20).
        mode: How turns are read into memory: ``fast`` (default), ``fine`` or ``facts``.
        checkpointer: Keeps the conversation between invocations of a thread (default none).
        store: The graph's store, e.g. a ``MemOSStore`` (default none).

    Returns:
        The compiled graph: nodes ``recall_query``, ``schedule``, ``answer``, ``remember``, ``lifecycle``.

    Raises:
        InvalidInputError: A bad ``token_budget``, ``top_k`` or ``mode``.

    """
    builder = StateGraph(MemoryAgentState, context_schema=MemoryAgentContext)
    builder.add_node("recall_query", MemReaderNode(mos, write=False, create_cube=True))
    builder.add_node("schedule", MemSchedulerNode(mos, token_budget=token_budget, top_k=top_k))
    builder.add_node("answer", _answer_node(llm, mos, max_history))
    builder.add_node("remember", MemReaderNode(mos, mode=mode, create_cube=True))
    builder.add_node("lifecycle", MemLifecycleNode(mos))
    builder.add_edge(START, "recall_query")
    builder.add_edge("recall_query", "schedule")
    builder.add_edge("schedule", "answer")
    builder.add_edge("answer", "remember")
    builder.add_edge("remember", "lifecycle")
    builder.add_edge("lifecycle", END)
    return builder.compile(checkpointer=checkpointer, store=store, name="memory_agent")


#: The graph ``langgraph.json`` serves: MemOS from the server's store, model from :func:`default_llm`.
graph = build_graph()

#: The short conversation of the command-line run.
CONVERSATION = (
    "Hi, I'm Alice. I moved to Lisbon in May and I work as a nurse.",
    "My dog is called Pixel and she loves the beach.",
    "Where do I live, and what is my dog called?",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one short conversation and print what was recalled and what was remembered each turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="MemOS home (default: a temporary directory)")
    parser.add_argument("--user", default="alice", help="the caller (default alice)")
    parser.add_argument("--cube", default=None, help="the caller's cube (default <user>-memory)")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--real-models", action="store_true", help="MiniLM embeddings and the local SmolLM2")
    models.add_argument("--openai-base-url", default=None, help="an OpenAI-compatible endpoint for the answers")
    parser.add_argument("--model", default=None, help="model name at --openai-base-url (default $OPENAI_MODEL)")
    args = parser.parse_args(argv)

    from memos_agents.config import PRESET_OFFLINE
    from memos_agents.os import MemOS

    cube = args.cube or f"{args.user}-memory"
    with tempfile.TemporaryDirectory(prefix="memos-agent-") as tmp:
        home = args.home or Path(tmp)
        with MemOS.from_path(home, **({} if args.real_models else PRESET_OFFLINE)) as mos:
            llm: BaseChatModel
            if args.openai_base_url:
                llm = openai_llm(
                    args.openai_base_url, args.model or os.environ.get("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL
                )
            elif args.real_models:
                llm = default_llm(mos)
            else:
                llm = RecallingChatModel()
            from langgraph.checkpoint.memory import InMemorySaver
            from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

            saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=MEMORY_STATE_TYPES))
            agent = build_graph(mos, llm, checkpointer=saver)
            run = {"configurable": {"thread_id": "memory-agent-demo"}}
            context: MemoryAgentContext = {"user_id": args.user, "cube_id": cube}
            print(f"memory agent: user {args.user}, cube {cube}, home {home}, model {type(llm).__name__}")
            for turn, text in enumerate(CONVERSATION, 1):
                out = agent.invoke({"messages": [HumanMessage(text)]}, run, context=context)
                print(f"\n[turn {turn}] user: {text}")
                recalled = [line for line in (out.get("memory_context") or "").splitlines() if line.strip()]
                n = len(out.get("memory_ids") or [])
                print(f"  recalled {n} memor{'y' if n == 1 else 'ies'} ({len(recalled)} lines):")
                for line in recalled:
                    print(f"    - {line}")
                print(f"  answer: {out['messages'][-1].text}")
                for memory_id in out.get("memory_written") or []:
                    item = mos.get(memory_id, args.user, cube)
                    print(f"  remembered: {item.text.replace(chr(10), ' | ')}")
                print(f"  lifecycle: {out.get('lifecycle')}")
            stats = mos.stats(cube, args.user)
            print(
                f"\ncube {cube}: {stats.active_memories} active memories, {stats.archived_memories} archived, "
                f"{stats.topics} topics, {stats.edges} edges"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
