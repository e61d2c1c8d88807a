"""MemOS as LangGraph nodes: MemReader, MemScheduler and MemLifecycle as steps of a ``StateGraph``.

A memory-aware agent is a graph ``MemReaderNode -> MemSchedulerNode -> <LLM> -> MemLifecycleNode``::

    from langgraph.graph import START, END, StateGraph
    from langgraph_memos.nodes import MemLifecycleNode, MemoryState, MemReaderNode, MemSchedulerNode

    builder = StateGraph(MemoryState)
    builder.add_node("read", MemReaderNode())
    builder.add_node("schedule", MemSchedulerNode(token_budget=800))
    builder.add_node("answer", answer)          # any node that reads state["memory_context"]
    builder.add_node("lifecycle", MemLifecycleNode())
    ...
    graph.invoke({"messages": [("user", "Where do I live?")]},
                 context={"mos": mos, "user_id": "alice", "cube_id": "alice-notes"})

Each node is a LangChain :class:`~langchain_core.runnables.Runnable` with a native sync path
(``invoke``: ``MemOS.add``/``search``/``after_turn``) and a native async path (``ainvoke``: their
``a``-prefixed twins), so ``graph.invoke`` and ``graph.ainvoke`` both run without a thread hop.

**Which MemOS.** The one given to the node, else ``mos`` in the run's context (an attribute or a
dict key of ``runtime.context``), else the ``.mos`` of the graph's store when it is a
``MemOSStore`` (``graph.compile(store=MemOSStore(...))``, or the store a LangGraph server
builds from ``langgraph.json``).

**Whose memory.** The caller (``user_id``, the principal whose permissions every read and write is
checked against), the cube (``cube_id``), the cubes a search reads (``cube_ids``) and the session
(``session_id``) come only from the run: ``runtime.context`` (attribute or dict key) first, then
``config["configurable"]``. Nothing a model writes into the graph state is ever read as scope: a
state key ``user_id`` or a message that names another user changes nothing.

Errors are those of :mod:`memos_agents.errors`: a run without a caller or cube is refused with
:class:`~memos_agents.errors.InvalidInputError`, a graph without a MemOS with
:class:`~memos_agents.errors.ConfigError`; what the store refuses (e.g.
:class:`~memos_agents.errors.PermissionDeniedError`) propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict, cast

from langchain_core.messages import AnyMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_memos.tools import authenticated_user_id, check_authenticated
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime, get_runtime

from memos_agents.api import ScheduledContext
from memos_agents.errors import ConfigError, CubeNotFoundError, InvalidInputError
from memos_agents.operation.lifecycle import LifecyclePolicy, LifecycleReport
from memos_agents.os import MemOS
from memos_agents.schema import ID_PATTERN, MemoryQuery, normalize_role

__all__ = [
    "MEMORY_STATE_TYPES",
    "MemLifecycleNode",
    "MemReaderNode",
    "MemSchedulerNode",
    "MemoryState",
    "RunScope",
    "resolve_mos",
    "resolve_run_scope",
]

#: Types the nodes put in the graph state beyond LangChain messages, as ``(module, name)``: give them to
#: a checkpointer's serializer (``JsonPlusSerializer(allowed_msgpack_modules=MEMORY_STATE_TYPES)``)
#: (the default ``InMemorySaver`` otherwise logs "Deserializing unregistered type MemoryQuery" on each read).
MEMORY_STATE_TYPES: tuple[tuple[str, str], ...] = (("memos_agents.schema", "MemoryQuery"),)


class MemoryState(TypedDict, total=False):
    """A graph state with the keys the nodes read and write under their default names.

    Attributes:
        messages: The conversation (LangChain messages, merged by ``add_messages``).
        memory_query: The :class:`~memos_agents.schema.MemoryQuery` MemReaderNode derived from
            the last user message (None when there is none).
        memory_cursor: Which messages are already in memory: the ids of the latest ones read (at
            most 64), or, for messages without ids, how many were seen.
        memory_written: Ids of the memories the last MemReaderNode step stored.
        memory_context: The memories MemSchedulerNode chose, rendered for a prompt in rank order
            (a memory may span several lines).
        memory_ids: Ids of those memories, in rank order (with activation memory on: the stable
            ones first).
        memory_stable: The stable memories' text (with activation memory on): the start of the
            system message, which a KV cache or a server's prefix cache covers ("" : none).
        memory_plan: The MemScheduler's plan as a dict (None: activation memory off).
        lifecycle: MemLifecycleNode's summary of its pass (counts per step, see
            :meth:`MemLifecycleNode.summary`).

    """

    messages: Annotated[list[AnyMessage], add_messages]
    memory_query: MemoryQuery | None
    memory_cursor: list[str] | str | int | None
    memory_written: list[str]
    memory_context: str
    memory_ids: list[str]
    memory_stable: str
    memory_plan: dict[str, Any] | None
    lifecycle: dict[str, Any]


@dataclass(frozen=True)
class RunScope:
    """Whose memory a node step works on, read from the run (never from the graph state).

    Attributes:
        user_id: The caller: the principal whose permissions the store checks.
        cube_id: The cube written to and maintained (None when the run names none).
        cube_ids: The cubes a search reads (None: ``[cube_id]`` when a cube is named, else the
            caller's own cubes and subscriptions, as ``MemOS.search`` without ``cube_ids``).
        session_id: The session new memories are filed under (None: the run's ``thread_id``
            when it is a well-formed id, else the reader's default).

    """

    user_id: str
    cube_id: str | None = None
    cube_ids: tuple[str, ...] | None = None
    session_id: str | None = None

    def require_cube(self, node: str) -> str:
        """Return ``cube_id``.

        Raises:
            InvalidInputError: The run names no cube.

        """
        if self.cube_id is None:
            raise InvalidInputError(
                f"{node} needs the cube to work on: set cube_id in the run's context "
                "(graph.invoke(..., context={'cube_id': ...})) or in config['configurable']"
            )
        return self.cube_id

    def search_cubes(self) -> list[str] | None:
        """Return the cubes a search reads (see ``cube_ids``)."""
        if self.cube_ids is not None:
            return list(self.cube_ids)
        return [self.cube_id] if self.cube_id is not None else None


def _field(source: object, name: str) -> Any:
    """Return ``source[name]`` for a mapping, ``source.name`` otherwise (None when absent)."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _current_runtime() -> Runtime[Any] | None:
    """Return the LangGraph runtime of the run this step belongs to (None outside a graph run)."""
    try:
        runtime = get_runtime()
    except RuntimeError:  # not inside a runnable context at all
        return None
    return runtime if isinstance(runtime, Runtime) else None


def resolve_mos(mos: MemOS | None, runtime: Runtime[Any] | None, node: str = "node") -> MemOS:
    """Return the MemOS a step uses: the node's own, the run context's, or the graph store's.

    Args:
        mos: The MemOS given to the node (wins when set).
        runtime: The run's LangGraph runtime (None outside a graph).
        node: The node's name, for the error message.

    Returns:
        The MemOS.

    Raises:
        ConfigError: None of the three holds a MemOS.

    """
    if mos is not None:
        return mos
    if runtime is not None:
        found = _field(runtime.context, "mos")
        if isinstance(found, MemOS):
            return found
        store_mos = getattr(runtime.store, "mos", None)  # a MemOSStore exposes the MemOS it runs on
        if isinstance(store_mos, MemOS):
            return store_mos
    raise ConfigError(
        f"{node} has no MemOS: pass mos=..., put it in the run's context (context={{'mos': mos, ...}}), "
        "or compile the graph with a MemOSStore (graph.compile(store=MemOSStore(mos, user_id=...)))"
    )


def _ids(value: object, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a list of cube ids, not {type(value).__name__}")
    return tuple(value)


def resolve_run_scope(config: RunnableConfig | None, runtime: Runtime[Any] | None, node: str = "node") -> RunScope:
    """Read the caller, cube(s) and session of a step from the run: context first, then ``configurable``.

    Args:
        config: The step's config (its ``configurable`` is the second source).
        runtime: The run's LangGraph runtime (its ``context`` is the first source).
        node: The node's name, for the error message.

    Returns:
        The scope (ids are checked by MemOS when used).

    On a LangGraph server with authentication, the caller is the authenticated user
    (``Runtime.server_info.user``, ``configurable["langgraph_auth_user"]``): the context and
    configurable come from the HTTP client, so a ``user_id`` there must be that user.

    Raises:
        InvalidInputError: No ``user_id`` in either source, a scope value that is not a string, or
            ``cube_ids`` given as a single string.
        PermissionDeniedError: An authenticated run names another ``user_id``.

    """
    context = runtime.context if runtime is not None else None
    configurable = (config or {}).get("configurable") or {}

    def pick(name: str) -> Any:
        value = _field(context, name)
        return value if value is not None else configurable.get(name)

    identity = authenticated_user_id(config)
    if identity is None and runtime is not None and runtime.server_info is not None and runtime.server_info.user:
        identity = str(runtime.server_info.user.identity)
    user_id = check_authenticated(pick("user_id"), identity)
    if user_id is None:
        raise InvalidInputError(
            f"{node} needs the caller: set user_id in the run's context "
            "(graph.invoke(..., context={'user_id': ..., 'cube_id': ...})) or in config['configurable']"
        )
    scalars = {"user_id": user_id, "cube_id": pick("cube_id"), "session_id": pick("session_id")}
    for name, value in scalars.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string, not {type(value).__name__}")
    session = scalars["session_id"]
    if session is None:  # the conversation's thread, when it is usable as a session id
        thread = configurable.get("thread_id")
        session = thread if isinstance(thread, str) and ID_PATTERN.fullmatch(thread) else None
    return RunScope(
        user_id=user_id,
        cube_id=scalars["cube_id"],
        cube_ids=_ids(pick("cube_ids"), "cube_ids"),
        session_id=session,
    )


def _message_parts(message: object) -> tuple[str, str, str | None, str | None]:
    """Return ``(role, text, name, id)`` of a LangChain message, an OpenAI-style dict or a ``(role, text)`` pair.

    Raises:
        InvalidInputError: Anything else.

    """
    if isinstance(message, BaseMessage):
        kind = message.type
        return normalize_role(kind), str(message.text), message.name, message.id
    if isinstance(message, Mapping):
        kind = str(message.get("role") or message.get("type") or "user")
        content = message.get("content")
        text = content if isinstance(content, str) else _blocks_text(content)
        return normalize_role(kind), text, message.get("name"), message.get("id")
    if isinstance(message, tuple | list) and len(message) == 2 and isinstance(message[1], str):
        kind = str(message[0])
        return normalize_role(kind), message[1], None, None
    raise InvalidInputError(f"cannot read a message of type {type(message).__name__}")


def _blocks_text(content: object) -> str:
    """Join the text blocks of a content-block list (``[{"type": "text", "text": ...}, ...]``)."""
    if not isinstance(content, list):
        return ""
    parts = [b if isinstance(b, str) else b.get("text", "") for b in content if isinstance(b, str | Mapping)]
    return "".join(p for p in parts if isinstance(p, str))


#: How many of the latest message ids a cursor keeps (see ``MemoryState.memory_cursor``).
CURSOR_IDS = 64


def _unwritten(messages: Sequence[object], cursor: object) -> Sequence[object]:
    """Return the messages after the cursor (see ``MemoryState.memory_cursor``).

    A cursor of ids: the messages after the latest one whose id it holds, less those it holds (so a
    removed message, e.g. an answer regenerated with ``RemoveMessage``, does not make the whole
    conversation look new). A count (messages without ids): the messages past it.
    """
    if isinstance(cursor, str):  # a cursor written before cursors held several ids
        cursor = [cursor]
    if isinstance(cursor, list | tuple) and cursor:
        seen = {c for c in cursor if isinstance(c, str)}
        for pos in range(len(messages) - 1, -1, -1):
            if _message_parts(messages[pos])[3] in seen:
                return [m for m in messages[pos + 1 :] if _message_parts(m)[3] not in seen]
        return [m for m in messages if _message_parts(m)[3] not in seen]
    if isinstance(cursor, int) and not isinstance(cursor, bool) and 0 <= cursor <= len(messages):
        return messages[cursor:]
    return messages


def _cursor(messages: Sequence[object]) -> list[str] | int | None:
    """Return the cursor after reading ``messages``: the ids of the latest ones, else their count."""
    if not messages:
        return None
    ids = [i for i in (_message_parts(m)[3] for m in messages[-CURSOR_IDS:]) if isinstance(i, str) and i]
    return ids if ids and _message_parts(messages[-1])[3] else len(messages)


class _MemOSNode(Runnable[Any, dict[str, Any]]):
    """A graph node on a MemOS: sync and async paths, MemOS and scope resolved per run."""

    node_name = "memos_node"

    def __init__(self, mos: MemOS | None) -> None:
        self.mos = mos
        self.name = self.node_name

    def _resolve(self, config: RunnableConfig) -> tuple[MemOS, RunScope]:
        runtime = _current_runtime()
        mos = resolve_mos(self.mos, runtime, self.node_name)
        return mos, resolve_run_scope(config, runtime, self.node_name)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Run the step on the calling thread (MemOS's sync methods).

        Args:
            input: The graph state (a mapping, or an object with the keys as attributes, e.g. a
                pydantic state).
            config: The run's config (LangGraph passes it; its ``configurable`` may hold the scope).
            **kwargs: Ignored (Runnable protocol).

        Returns:
            The state update.

        """
        # _call_with_config hands ``config`` to a function that takes it (call_func_with_variable_args)
        return self._call_with_config(cast(Any, self._sync), input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Run the step on the event loop (MemOS's async twins). Same arguments as :meth:`invoke`."""
        return await self._acall_with_config(cast(Any, self._async), input, config)

    def __call__(self, state: Any, config: RunnableConfig | None = None) -> dict[str, Any]:
        """Run the step synchronously, as :meth:`invoke` (for use inside a plain function node)."""
        return self.invoke(state, config)

    def _sync(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        raise NotImplementedError

    async def _async(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        raise NotImplementedError


class MemReaderNode(_MemOSNode):
    """Write the conversation's new messages to memory and derive the memory query (MemReader step).

    Reads ``state[messages_key]`` (LangChain messages, OpenAI-style dicts or ``(role, text)``
    pairs); the messages after ``state["memory_cursor"]`` whose role is in ``roles`` and whose text
    is not blank are stored with ``MemOS.add`` (``human`` -> ``user``, ``ai`` -> ``assistant``; a
    message's ``name`` is kept as the speaker, a well-formed ``id`` as provenance) in the run's
    cube, as the run's caller, under the run's session.

    Args:
        mos: The MemOS (None: from the run's context or a ``MemOSStore``, see the module docs).
        messages_key: State key of the conversation (default ``"messages"``).
        query_key: State key the :class:`~memos_agents.schema.MemoryQuery` of the last user
            message is written to (default ``"memory_query"``; None when there is no user message).
        mode: The reader's mode: ``"fast"`` (default, no LLM), ``"fine"`` (LLM fact extraction
            too) or ``"facts"`` (each message one fact).
        write: Store the new messages (default True); False only derives the query (and leaves
            the cursor and the written ids alone), e.g. for a reader before the answer whose turn a
            writing reader after the answer stores.
        roles: Roles that are written (default user and assistant: system prompts and tool
            output are not the conversation's content).
        create_cube: Make sure the run's cube exists before the step (created, owned by the
            caller, when it does not exist; once per MemOS, caller and cube), so that a first turn
            can be recalled from and written to (default False: an unknown cube is an error).
        cursor_key: State key of the cursor (default ``"memory_cursor"``).
        written_key: State key of the stored memory ids (default ``"memory_written"``).

    Each step returns ``{query_key: MemoryQuery | None, cursor_key: ..., written_key: [ids]}``
    (``{query_key: ...}`` only with ``write=False``).

    Raises:
        InvalidInputError: No caller or cube in the run, malformed messages, or text MemOS refuses.
        ConfigError: No MemOS; ``fine`` mode without an LLM.
        CubeNotFoundError / PermissionDeniedError: From the store (no write permission on the cube).

    """

    node_name = "mem_reader"

    def __init__(
        self,
        mos: MemOS | None = None,
        *,
        messages_key: str = "messages",
        query_key: str = "memory_query",
        mode: str = "fast",
        write: bool = True,
        roles: Sequence[str] = ("user", "assistant"),
        create_cube: bool = False,
        cursor_key: str = "memory_cursor",
        written_key: str = "memory_written",
    ) -> None:
        super().__init__(mos)
        if mode not in ("fast", "fine", "facts"):
            raise InvalidInputError(f"unknown mode {mode!r}; use 'fast', 'fine' or 'facts'")
        self.messages_key = messages_key
        self.query_key = query_key
        self.mode = mode
        self.write = write
        self.roles = frozenset(roles)
        self.create_cube = create_cube
        self.cursor_key = cursor_key
        self.written_key = written_key

    def _plan(self, state: object) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Return the messages to store and the state update (without the written ids)."""
        messages = _field(state, self.messages_key) or []
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise InvalidInputError(f"state[{self.messages_key!r}] must be a list of messages")
        parts = [_message_parts(m) for m in messages]
        query = next(
            (MemoryQuery(text=text) for role, text, _, _ in reversed(parts) if role == "user" and text.strip()), None
        )
        if not self.write:  # the cursor belongs to the writing reader: it says what is in memory
            return [], {self.query_key: query}
        update: dict[str, Any] = {self.query_key: query, self.cursor_key: _cursor(messages), self.written_key: []}
        batch = []
        for message in _unwritten(messages, _field(state, self.cursor_key)):
            role, text, name, message_id = _message_parts(message)
            if role not in self.roles or not text.strip():
                continue
            entry: dict[str, Any] = {"role": role, "content": text}
            if name:
                entry["name"] = name
            if isinstance(message_id, str) and ID_PATTERN.fullmatch(message_id):
                entry["id"] = message_id
            batch.append(entry)
        return batch, update

    def _sync(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        batch, update = self._plan(state)
        if self.create_cube:  # every turn (one header read): the cube may have been deleted since
            mos.create_cube(scope.require_cube(self.node_name), owner_id=scope.user_id, exist_ok=True)
        if batch:
            cube = scope.require_cube(self.node_name)
            try:
                result = mos.add(batch, scope.user_id, cube, mode=self.mode, session_id=scope.session_id)
            except CubeNotFoundError:  # deleted since it was ensured
                if not self.create_cube:
                    raise
                mos.create_cube(cube, owner_id=scope.user_id, exist_ok=True)
                result = mos.add(batch, scope.user_id, cube, mode=self.mode, session_id=scope.session_id)
            update[self.written_key] = list(result.ids)
        return update

    async def _async(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        batch, update = self._plan(state)
        if self.create_cube:  # every turn (one header read): the cube may have been deleted since
            await mos.acreate_cube(scope.require_cube(self.node_name), owner_id=scope.user_id, exist_ok=True)
        if batch:
            cube = scope.require_cube(self.node_name)
            try:
                result = await mos.aadd(batch, scope.user_id, cube, mode=self.mode, session_id=scope.session_id)
            except CubeNotFoundError:  # deleted since it was ensured
                if not self.create_cube:
                    raise
                await mos.acreate_cube(cube, owner_id=scope.user_id, exist_ok=True)
                result = await mos.aadd(batch, scope.user_id, cube, mode=self.mode, session_id=scope.session_id)
            update[self.written_key] = list(result.ids)
        return update


def _query_text(value: object) -> str | None:
    """Return the text of a MemoryQuery, a ``{"text": ...}`` dict or a string (None when blank or absent)."""
    text: object
    if isinstance(value, MemoryQuery):
        text = value.text
    elif isinstance(value, Mapping):
        text = value.get("text")
    else:
        text = value
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidInputError(f"the memory query must be a MemoryQuery or a string, not {type(text).__name__}")
    return text if text.strip() else None


class MemSchedulerNode(_MemOSNode):
    """Choose the memories that enter the prompt, within a token budget (MemScheduler step).

    Searches the run's cubes (``cube_ids`` of the run, else its ``cube_id``, else the caller's own
    cubes and subscriptions) with ``state[query_key]``, keeps the best ``top_k`` that fit in
    ``token_budget`` tokens (as ``MemOS.search`` does: a result that does not fit is skipped,
    smaller later ones may still be taken) and writes them rendered in rank order (a memory may
    span several lines; ``memory_ids`` gives their ids in the same order).

    Args:
        mos: The MemOS (None: from the run's context or a ``MemOSStore``).
        query_key: State key of the query (a MemoryQuery, ``{"text": ...}`` or a string;
            default ``"memory_query"``). No query: an empty context, no search.
        context_key: State key of the rendered context (default ``"memory_context"``).
        ids_key: State key of the chosen memories' ids (default ``"memory_ids"``).
        results_key: State key for the chosen :class:`~memos_agents.schema.ScoredMemory` results
            themselves (default None: not written).
        plan_key: State key of the MemScheduler's plan (``MemOS.schedule``; default ``"memory_plan"``):
            with activation memory on, which memories a fresh KV cache covers (or, with an
            OpenAI-compatible endpoint, which go first for the server's prefix cache) and which go
            as text, as a dict of :class:`~memos_agents.operation.scheduler.SchedulePlan`; None when
            activation memory is off. None: not written.
        stable_key: State key of the stable memories' text (default ``"memory_stable"``): put it at the
            start of the system message, before anything that varies, and ``context_key``'s text
            after it, as ``MemOS.chat`` does (``prompts.answer.build_scheduled_messages``); "" when
            there are none. ``ids_key`` lists the stable memories first, then the others.
        token_budget: Most tokens of the rendered context (default 1000).
        top_k: Most memories (default 10).

    Raises:
        InvalidInputError: No caller in the run; a bad query, budget or ``top_k``.
        ConfigError: No MemOS.
        CubeNotFoundError / PermissionDeniedError: A named cube is missing or not readable.
        ModelError: The embedder failed.

    """

    node_name = "mem_scheduler"

    def __init__(
        self,
        mos: MemOS | None = None,
        *,
        query_key: str = "memory_query",
        context_key: str = "memory_context",
        ids_key: str = "memory_ids",
        results_key: str | None = None,
        plan_key: str | None = "memory_plan",
        stable_key: str = "memory_stable",
        token_budget: int = 1000,
        top_k: int = 10,
    ) -> None:
        super().__init__(mos)
        for name, value in (("token_budget", token_budget), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, not {value!r}")
        self.query_key = query_key
        self.context_key = context_key
        self.ids_key = ids_key
        self.results_key = results_key
        self.plan_key = plan_key
        self.stable_key = stable_key
        self.token_budget = token_budget
        self.top_k = top_k

    def _update(self, scheduled: ScheduledContext | None) -> dict[str, Any]:
        if scheduled is None:
            scheduled = ScheduledContext(memories=[])
        plan = scheduled.plan
        ids = [r.item.id for r in scheduled.memories]
        if plan is not None:
            ids = [*plan.kv_memory_ids, *(r.item.id for r in plan.text)]
        update: dict[str, Any] = {
            self.context_key: scheduled.context,
            self.ids_key: ids,
            self.stable_key: scheduled.stable,
        }
        if self.results_key is not None:
            update[self.results_key] = list(scheduled.memories)
        if self.plan_key is not None:
            update[self.plan_key] = None if plan is None else plan.model_dump(mode="json", exclude={"text"})
        return update

    def _sync(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        query = _query_text(_field(state, self.query_key))
        if query is None:
            return self._update(None)
        scheduled = mos.schedule(
            query, scope.user_id, scope.search_cubes(), top_k=self.top_k, token_budget=self.token_budget
        )
        return self._update(scheduled)

    async def _async(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        query = _query_text(_field(state, self.query_key))
        if query is None:
            return self._update(None)
        scheduled = await mos.aschedule(
            query, scope.user_id, scope.search_cubes(), top_k=self.top_k, token_budget=self.token_budget
        )
        return self._update(scheduled)


class MemLifecycleNode(_MemOSNode):
    """Run the per-turn lifecycle pass over the run's cube after the answer (MemLifecycle step).

    Calls ``MemOS.after_turn(user_id, cube_id)``: a bounded pass (expiry, retention purge,
    promotion, consolidation, decay) as the caller, and writes its summary to ``state[lifecycle_key]``.

    Args:
        mos: The MemOS (None: from the run's context or a ``MemOSStore``).
        lifecycle_key: State key of the summary (default ``"lifecycle"``).
        policy: A lifecycle policy or its fields (default: ``after_turn``'s, at most 100 items
            moved per step).

    Raises:
        InvalidInputError: No caller or cube in the run.
        ConfigError: No MemOS; an invalid policy.
        CubeNotFoundError / PermissionDeniedError: From the store.

    """

    node_name = "mem_lifecycle"

    def __init__(
        self,
        mos: MemOS | None = None,
        *,
        lifecycle_key: str = "lifecycle",
        policy: LifecyclePolicy | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(mos)
        self.lifecycle_key = lifecycle_key
        self.policy = policy

    @staticmethod
    def summary(report: LifecycleReport) -> dict[str, Any]:
        """Summarise a report: the cube, how many items each step moved, refusals, and whether more is left.

        Returns:
            ``{"cube_id", "expired", "purged", "promoted", "consolidated", "archived", "skipped": int,
            "more": bool}``.

        """
        return {
            "cube_id": report.cube_id,
            "expired": len(report.expired),
            "purged": len(report.purged),
            "promoted": len(report.promoted),
            "consolidated": len(report.consolidated),
            "archived": len(report.archived),
            "skipped": len(report.skipped),
            "more": report.more,
        }

    def _sync(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        report = mos.after_turn(scope.user_id, scope.require_cube(self.node_name), policy=self.policy)
        return {self.lifecycle_key: self.summary(report)}

    async def _async(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        mos, scope = self._resolve(config)
        report = await mos.aafter_turn(scope.user_id, scope.require_cube(self.node_name), policy=self.policy)
        return {self.lifecycle_key: self.summary(report)}
