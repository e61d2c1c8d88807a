"""Two agents that share memory through the MemStore registry: a researcher and a writer under a supervisor.

* The **researcher** (a subgraph run as the principal ``researcher_id``) asks its model for
  findings on the topic, writes them into its cube (``MemReaderNode``, mode ``facts``) and
  publishes the cube in the MemStore registry as a live entry with read access.
* The **writer** (a subgraph run as ``writer_id``) subscribes to that entry, recalls from its own
  cube and the subscribed one (``MemSchedulerNode``), drafts from what it recalled and writes the
  draft into its own cube. It then tries to file a note into the researcher's cube: the store
  refuses (the subscription made the writer a reader of it), with ``PermissionDeniedError``.
* The **supervisor** routes: researcher until there are findings, writer until there is a draft.

Every write goes through MemOS as the agent that makes it, so each is checked against that
agent's role on the cube. The principals, cubes and entry name come from the run's context
(:class:`TeamContext`), never from a model's output; each agent's subgraph is invoked with its
own context (``user_id``, ``cube_id``, ``cube_ids``). The registry entry the writer reads must be
the researcher's own research cube (:func:`check_entry`): a name someone else published first is
refused. Served by a LangGraph server, the run's context comes from the HTTP client: with the
server's authentication on, the memory nodes accept only the authenticated user as a principal
(so one user cannot run the team as two others); without it, whoever may call the server
chooses the principals, as with any unauthenticated MemOS deployment.

The models are scripted by default (deterministic; tests and the offline run): the researcher's
returns fixed findings, the writer's drafts from the memories in its prompt. ``build_graph``
takes any LangChain chat models instead. ``graph`` (module level, for ``langgraph.json``) is
compiled without a MemOS: it takes the run context's or the store's (a ``MemOSStore``).

Run ``python graphs/multi_agent.py [--home DIR] [--topic TEXT]``: prints what crossed from the
researcher to the writer and what was refused.
"""

# No ``from __future__ import annotations``: the state and context schemas resolve without a
# lookup of this module in ``sys.modules`` (servers load it by path).
import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.store.base import BaseStore
from langgraph_memos.nodes import MemLifecycleNode, MemoryState, MemReaderNode, MemSchedulerNode, resolve_mos

from memos_agents.errors import MemOSError, PermissionDeniedError, RegistryEntryNotFoundError
from memos_agents.infra.registry import RegistryEntry, Subscription
from memos_agents.os import MemOS
from memos_agents.schema import ScoredMemory

#: The heading of the memory block in the writer's prompt (its scripted model reads what follows).
MEMORIES_HEADING = "Research memories:"
#: Findings the scripted researcher reports, one per line (about the default topic).
DEFAULT_FINDINGS = (
    "Lisbon's tram 28 runs from Martim Moniz to Campo de Ourique.\n"
    "The Santa Justa lift opened in 1902 and links the Baixa to the Largo do Carmo.\n"
    "Lisbon's trams have run on electricity since 1901."
)
DEFAULT_TOPIC = "Lisbon's trams"


class TeamContext(TypedDict, total=False):
    """The run's context; every key is optional (defaults in :data:`TEAM_DEFAULTS`).

    Attributes:
        mos: The MemOS (default: the graph store's, when it is a ``MemOSStore``).
        researcher_id: The researcher's principal.
        writer_id: The writer's principal.
        research_cube: The researcher's cube (created, owned by the researcher, when missing).
        writer_cube: The writer's cube (likewise).
        entry: The MemStore registry name the research cube is published under.

    """

    mos: Any
    researcher_id: str
    writer_id: str
    research_cube: str
    writer_cube: str
    entry: str


#: The team's principals, cubes and registry entry when the run's context does not name them.
TEAM_DEFAULTS: dict[str, str] = {
    "researcher_id": "researcher",
    "writer_id": "writer",
    "research_cube": "research-notes",
    "writer_cube": "writer-drafts",
    "entry": "research-notes",
}


class TeamState(TypedDict, total=False):
    """The team's state.

    Attributes:
        topic: What to research and write about.
        findings: The researcher's findings, one per item.
        published: ``name@version`` of the registry entry the writer subscribed to.
        crossed: The memories the writer recalled from the researcher's published cube.
        refused: Writes the store refused, one line each (who, which cube, the error).
        draft: The writer's draft.

    """

    topic: str
    findings: list[str]
    published: str
    crossed: list[str]
    refused: list[str]
    draft: str


class ScriptedResearcher(BaseChatModel):
    """Scripted researcher model: always replies with ``findings`` (one finding per line)."""

    findings: str = DEFAULT_FINDINGS

    @property
    def _llm_type(self) -> str:
        return "memos-scripted-researcher"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.findings))])


class ScriptedWriter(BaseChatModel):
    """Scripted writer model: drafts one paragraph from the memory lines of its prompt (not its own earlier briefs)."""

    @property
    def _llm_type(self) -> str:
        return "memos-scripted-writer"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        system = next((str(m.text) for m in messages if isinstance(m, SystemMessage)), "")
        _, _, block = system.partition(MEMORIES_HEADING)
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        facts = list(dict.fromkeys(line for line in lines if not line.startswith("Brief:")))  # not its own briefs
        draft = "Brief: " + " ".join(facts) if facts else "Brief: nothing is known yet."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(draft))])


def _team(runtime: Runtime[Any] | None) -> dict[str, str]:
    """Return the team's ids: the run context's, else :data:`TEAM_DEFAULTS`."""
    context = runtime.context if runtime is not None else None
    out = dict(TEAM_DEFAULTS)
    for key in TEAM_DEFAULTS:
        value = context.get(key) if isinstance(context, dict) else getattr(context, key, None)
        if isinstance(value, str):
            out[key] = value
    return out


def _model_step(llm: BaseChatModel, prompt: Any) -> RunnableLambda[Any, dict[str, Any]]:
    """Return a node that sends ``prompt(state)`` to ``llm`` and appends the reply to ``messages``."""

    def call(state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [llm.invoke(prompt(state), config)]}

    async def acall(state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(prompt(state), config)]}

    return RunnableLambda(call, afunc=acall, name="model")


def _researcher_prompt(state: MemoryState) -> list[BaseMessage]:
    system = SystemMessage("You are a researcher. Report findings on the topic, one short factual sentence per line.")
    return [system, *list(state.get("messages") or [])[-1:]]


def _writer_prompt(state: MemoryState) -> list[BaseMessage]:
    system = SystemMessage(
        "You are a writer. Write a short brief using only these memories.\n"
        f"{MEMORIES_HEADING}\n{state.get('memory_context') or ''}"
    )
    return [system, *list(state.get("messages") or [])[-1:]]


class _WriterState(MemoryState, total=False):
    memory_results: list[ScoredMemory]


class _ResearcherState(MemoryState, total=False):
    findings: list[AIMessage]


def _split_findings(state: _ResearcherState) -> dict[str, Any]:
    """Turn the model's reply into one message per finding (each stored as one fact)."""
    reply = str(state["messages"][-1].text)
    return {"findings": [AIMessage(line.strip()) for line in reply.splitlines() if line.strip()]}


def build_researcher(llm: BaseChatModel) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the researcher: model -> one message per finding -> write them (mode ``facts``) -> lifecycle pass.

    The caller and cube come from the context it is invoked with (``user_id``, ``cube_id``).
    """
    builder = StateGraph(_ResearcherState)
    builder.add_node("research", _model_step(llm, _researcher_prompt))
    builder.add_node("split", _split_findings)
    builder.add_node("write_findings", MemReaderNode(messages_key="findings", mode="facts", roles=("assistant",)))
    builder.add_node("lifecycle", MemLifecycleNode())
    builder.add_edge(START, "research")
    builder.add_edge("research", "split")
    builder.add_edge("split", "write_findings")
    builder.add_edge("write_findings", "lifecycle")
    builder.add_edge("lifecycle", END)
    return builder.compile(name="researcher")


def build_writer(llm: BaseChatModel, *, token_budget: int = 600) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the writer: query -> recall within ``token_budget`` -> model -> write the draft -> lifecycle.

    The caller, its cube and the cubes it recalls from come from the context it is invoked with
    (``user_id``, ``cube_id``, ``cube_ids``).
    """
    builder = StateGraph(_WriterState)
    builder.add_node("query", MemReaderNode(write=False))
    builder.add_node("recall", MemSchedulerNode(token_budget=token_budget, results_key="memory_results"))
    builder.add_node("draft", _model_step(llm, _writer_prompt))
    builder.add_node("write_draft", MemReaderNode(mode="facts", roles=("assistant",)))
    builder.add_node("lifecycle", MemLifecycleNode())
    builder.add_edge(START, "query")
    builder.add_edge("query", "recall")
    builder.add_edge("recall", "draft")
    builder.add_edge("draft", "write_draft")
    builder.add_edge("write_draft", "lifecycle")
    builder.add_edge("lifecycle", END)
    return builder.compile(name="writer")


def supervise(state: TeamState) -> str:
    """Route: the researcher until there are findings, then the writer until there is a draft, then end."""
    if not state.get("findings"):
        return "researcher"
    if not state.get("draft"):
        return "writer"
    return END


def check_entry(entry: RegistryEntry, team: dict[str, str]) -> None:
    """Refuse a registry entry of the team's name that is not the researcher's live research cube.

    Registry names belong to their first publisher: if someone else took the team's entry name
    first, the writer must not read that publisher's cube as research.

    Raises:
        PermissionDeniedError: The entry was published by someone else, or serves another cube.

    """
    if entry.publisher != team["researcher_id"] or entry.cube_id != team["research_cube"]:
        raise PermissionDeniedError(
            f"registry entry {entry.name}@{entry.version} is {entry.publisher!r}'s cube {entry.cube_id!r}, "
            f"not {team['researcher_id']!r}'s {team['research_cube']!r}: choose another entry name"
        )


def check_subscription(sub: Subscription, team: dict[str, str]) -> None:
    """Refuse a subscription that does not read the researcher's research cube (see :func:`check_entry`).

    Raises:
        PermissionDeniedError: The subscribed entry serves another cube.

    """
    if sub.cube_id != team["research_cube"]:
        raise PermissionDeniedError(
            f"subscription to {sub.name} reads cube {sub.cube_id!r}, not the research cube {team['research_cube']!r}"
        )


def build_graph(
    mos: MemOS | None = None,
    *,
    researcher_llm: BaseChatModel | None = None,
    writer_llm: BaseChatModel | None = None,
    entry_version: str = "1.0.0",
    store: BaseStore | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the team: supervisor, researcher and writer.

    Args:
        mos: The MemOS (None: the run context's ``mos``, or the store's when it is a MemOSStore).
        researcher_llm: The researcher's chat model (default :class:`ScriptedResearcher`).
        writer_llm: The writer's chat model (default :class:`ScriptedWriter`).
        entry_version: The version the research cube is published under (once; later runs find it).
        store: The graph's store, e.g. a ``MemOSStore`` (default none).

    Returns:
        The compiled graph. Input ``{"topic": ...}``; output adds ``findings``, ``published``,
        ``crossed``, ``refused`` and ``draft``.

    """
    researcher = build_researcher(researcher_llm or ScriptedResearcher())
    writer = build_writer(writer_llm or ScriptedWriter())

    def setup(runtime: Runtime[Any] | None) -> tuple[MemOS, dict[str, str]]:
        return resolve_mos(mos, runtime, "team"), _team(runtime)

    def publish_sync(m: MemOS, team: dict[str, str]) -> None:
        try:  # published once: a live entry serves the cube as it changes
            entry = m.registry.get(team["entry"], team["researcher_id"], version=entry_version)
        except RegistryEntryNotFoundError:
            entry = m.registry.publish(
                team["research_cube"], team["researcher_id"], name=team["entry"], version=entry_version, kind="live"
            )
        check_entry(entry, team)

    async def publish_async(m: MemOS, team: dict[str, str]) -> None:
        try:
            entry = await m.registry.aget(team["entry"], team["researcher_id"], version=entry_version)
        except RegistryEntryNotFoundError:
            entry = await m.registry.apublish(
                team["research_cube"], team["researcher_id"], name=team["entry"], version=entry_version, kind="live"
            )
        check_entry(entry, team)

    def researcher_input(state: TeamState) -> dict[str, Any]:
        return {"messages": [HumanMessage(f"Research this topic: {state.get('topic') or DEFAULT_TOPIC}")]}

    def researcher_output(out: dict[str, Any]) -> dict[str, Any]:
        return {"findings": [str(m.text) for m in out.get("findings") or []]}

    def research(state: TeamState) -> dict[str, Any]:
        m, team = setup(get_runtime())
        context = {"mos": m, "user_id": team["researcher_id"], "cube_id": team["research_cube"]}
        m.create_cube(team["research_cube"], owner_id=team["researcher_id"], exist_ok=True)
        out = researcher.invoke(researcher_input(state), context=context)
        publish_sync(m, team)
        return researcher_output(out)

    async def aresearch(state: TeamState) -> dict[str, Any]:
        m, team = setup(get_runtime())
        context = {"mos": m, "user_id": team["researcher_id"], "cube_id": team["research_cube"]}
        await m.acreate_cube(team["research_cube"], owner_id=team["researcher_id"], exist_ok=True)
        out = await researcher.ainvoke(researcher_input(state), context=context)
        await publish_async(m, team)
        return researcher_output(out)

    def writer_input(state: TeamState) -> dict[str, Any]:
        return {"messages": [HumanMessage(f"Write a short brief about {state.get('topic') or DEFAULT_TOPIC}.")]}

    def writer_output(out: dict[str, Any], published: str, shared_cube: str, refused: str | None) -> dict[str, Any]:
        results: list[ScoredMemory] = out.get("memory_results") or []
        return {
            "published": published,
            "crossed": [r.item.text for r in results if r.item.cube_id == shared_cube],
            "refused": [refused] if refused else [],
            "draft": str(out["messages"][-1].text),
        }

    def refusal(team: dict[str, str], cube: str, exc: MemOSError) -> str:
        return f"{team['writer_id']} -> {cube}: {type(exc).__name__}: {exc}"

    # The writer filing a note into the researcher's cube: a MemReaderNode run as the writer.
    trespass = StateGraph(MemoryState)
    trespass.add_node("file_note", MemReaderNode(mode="facts", roles=("assistant",)))
    trespass.add_edge(START, "file_note")
    file_note = trespass.compile(name="writer_note")
    note = {"messages": [AIMessage("Editor's note: the tram section needs a source.")]}

    def note_context(m: MemOS, team: dict[str, str], cube: str) -> dict[str, Any]:
        return {"mos": m, "user_id": team["writer_id"], "cube_id": cube}

    def write(state: TeamState) -> dict[str, Any]:
        m, team = setup(get_runtime())
        m.create_cube(team["writer_cube"], owner_id=team["writer_id"], exist_ok=True)
        sub = m.registry.subscribe(team["entry"], team["writer_id"], version=entry_version)
        check_subscription(sub, team)
        context = {
            "mos": m,
            "user_id": team["writer_id"],
            "cube_id": team["writer_cube"],
            "cube_ids": [team["writer_cube"], sub.cube_id],
        }
        out = writer.invoke(writer_input(state), context=context)
        refused = None
        try:
            file_note.invoke(note, context=note_context(m, team, sub.cube_id))
        except PermissionDeniedError as exc:
            refused = refusal(team, sub.cube_id, exc)
        return writer_output(out, sub.key, sub.cube_id, refused)

    async def awrite(state: TeamState) -> dict[str, Any]:
        m, team = setup(get_runtime())
        await m.acreate_cube(team["writer_cube"], owner_id=team["writer_id"], exist_ok=True)
        sub = await m.registry.asubscribe(team["entry"], team["writer_id"], version=entry_version)
        check_subscription(sub, team)
        context = {
            "mos": m,
            "user_id": team["writer_id"],
            "cube_id": team["writer_cube"],
            "cube_ids": [team["writer_cube"], sub.cube_id],
        }
        out = await writer.ainvoke(writer_input(state), context=context)
        refused = None
        try:
            await file_note.ainvoke(note, context=note_context(m, team, sub.cube_id))
        except PermissionDeniedError as exc:
            refused = refusal(team, sub.cube_id, exc)
        return writer_output(out, sub.key, sub.cube_id, refused)

    builder = StateGraph(TeamState, context_schema=TeamContext)
    builder.add_node("supervisor", lambda state: {})
    builder.add_node("researcher", RunnableLambda(research, afunc=aresearch, name="researcher"))
    builder.add_node("writer", RunnableLambda(write, afunc=awrite, name="writer"))
    builder.add_edge(START, "supervisor")
    builder.add_conditional_edges("supervisor", supervise, ["researcher", "writer", END])
    builder.add_edge("researcher", "supervisor")
    builder.add_edge("writer", "supervisor")
    return builder.compile(store=store, name="multi_agent")


#: The graph ``langgraph.json`` serves: MemOS from the server's store, scripted models.
graph = build_graph()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the team once and print the findings, what crossed, what was refused and the draft."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="MemOS home (default: a temporary directory)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"what to research (default {DEFAULT_TOPIC!r})")
    parser.add_argument("--real-models", action="store_true", help="MiniLM embeddings and the local SmolLM2")
    args = parser.parse_args(argv)

    from memos_agents.config import PRESET_OFFLINE

    with tempfile.TemporaryDirectory(prefix="memos-team-") as tmp:
        home = args.home or Path(tmp)
        with MemOS.from_path(home, **({} if args.real_models else PRESET_OFFLINE)) as mos:
            researcher_llm: BaseChatModel | None = None
            writer_llm: BaseChatModel | None = None
            if args.real_models:
                from langchain_memos import ChatMemOS

                researcher_llm, writer_llm = ChatMemOS(llm=mos.llm), ChatMemOS(llm=mos.llm)
            team = build_graph(mos, researcher_llm=researcher_llm, writer_llm=writer_llm)
            out = team.invoke({"topic": args.topic}, context={"mos": mos})
            print(f"team run on {home} (topic: {args.topic})")
            print(f"researcher wrote {len(out['findings'])} findings into {TEAM_DEFAULTS['research_cube']}:")
            for finding in out["findings"]:
                print(f"  - {finding}")
            print(f"writer subscribed to {out['published']}")
            print(f"crossed ({len(out['crossed'])} memories read by the writer from the published cube):")
            for text in out["crossed"]:
                print(f"  - {text}")
            print(f"refused ({len(out['refused'])}):")
            for line in out["refused"]:
                print(f"  - {line}")
            print(f"draft: {out['draft']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
