"""Memory tools for LangChain agents: search, add, update and delete memories in a MemCube.

Whose memory a tool reads or writes (the scope: ``user_id``, ``cube_id``) never comes from the
model. It is resolved, for each of the two values separately, from the first of:

1. ``runtime.context`` — the :class:`~langchain.tools.ToolRuntime` that LangGraph's ``ToolNode``
   (and so ``create_agent``) injects: ``agent.invoke(..., context={"user_id": "alice",
   "cube_id": "alice-notes"})``; an object with those attributes or a mapping with those keys;
2. ``runtime.config["configurable"]`` — ``graph.invoke(..., config={"configurable": {...}})``;
3. the ``config["configurable"]`` of a direct call: ``tool.invoke(args, config)``;
4. the tool's ``default_user_id`` / ``default_cube_id``.

Arguments the model sends are validated against each tool's schema, which holds no scope:
``user_id`` or ``cube_id`` in a tool call are dropped, and ``ToolNode`` strips any ``runtime``
the model sends before injecting the real one. A ``runtime`` that is not a ``ToolRuntime``
(e.g. JSON sent by a model to a tool called outside ``ToolNode``) is refused.

Errors are not turned into tool messages: a call raises the typed MemOS error. To show the model
its own mistakes (an unknown memory id) instead, give ``ToolNode`` a ``handle_tool_errors``
(e.g. ``(MemoryNotFoundError, InvalidInputError)``) or use agent middleware.

Typical use::

    tools = create_memory_tools(mos)
    agent = create_agent(model, tools)
    agent.invoke({"messages": [...]}, context={"user_id": "alice", "cube_id": "alice-notes"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from langchain.tools import ToolRuntime
from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg
from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from langchain_memos.retrievers import memory_to_document
from memos_agents import MemOS
from memos_agents.errors import ConfigError, InvalidInputError, PermissionDeniedError
from memos_agents.operation.reader import ReadMode

__all__ = [
    "AddMemoryTool",
    "DeleteMemoryTool",
    "MemoryScope",
    "SearchMemoryTool",
    "UpdateMemoryTool",
    "authenticated_user_id",
    "check_authenticated",
    "create_memory_tools",
    "resolve_scope",
]

#: The injected runtime: hidden from the model's schema (``InjectedToolArg``), found by
#: ``ToolNode`` by its name ``runtime``; not validated or serialised by pydantic (checked by
#: :func:`resolve_scope`), since a ``ToolRuntime`` holds the graph state, store and callbacks.
InjectedRuntime = Annotated[ToolRuntime | None, InjectedToolArg, SkipValidation()]


class MemoryScope(BaseModel):
    """Whose memory a tool call reads or writes.

    Attributes:
        user_id: The acting principal (its cube permissions apply).
        cube_id: The cube (None: only allowed for search, which then reads the caller's own cubes).

    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    cube_id: str | None = None


def _lookup(source: Any, key: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def authenticated_user_id(*configs: RunnableConfig | None) -> str | None:
    """Return the identity of the user a LangGraph server authenticated for this run, if any.

    LangGraph Server puts the authenticated user in ``config["configurable"]["langgraph_auth_user"]``
    (an object with ``identity``, or a mapping with an ``"identity"`` key); the first config that
    holds one wins. None: the run is not authenticated (a local run, or a server without auth).
    """
    for config in configs:
        user = ((config or {}).get("configurable") or {}).get("langgraph_auth_user")
        if user is None:
            continue
        identity = user.get("identity") if isinstance(user, dict) else getattr(user, "identity", None)
        if identity is not None:
            return str(identity)
    return None


def check_authenticated(user_id: str | None, identity: str | None) -> str | None:
    """Return the caller of an authenticated run: its identity, which a named ``user_id`` must equal.

    Raises:
        PermissionDeniedError: The run is authenticated as one user and names another.

    """
    if identity is None:
        return user_id
    if user_id is not None and user_id != identity:
        raise PermissionDeniedError(f"the run is authenticated as {identity!r}: it may not act on {user_id!r}'s memory")
    return identity


def resolve_scope(
    runtime: Any,
    config: RunnableConfig | None,
    *,
    default_user_id: str | None = None,
    default_cube_id: str | None = None,
    need_cube: bool = True,
) -> MemoryScope:
    """Resolve a tool call's scope from its runtime, its config and the tool's defaults.

    Each of ``user_id`` and ``cube_id`` is taken from the first source that has it:
    ``runtime.context`` (attribute or key), ``runtime.config["configurable"]``,
    ``config["configurable"]``, then the default. On a LangGraph server with authentication,
    the caller is the authenticated user (``langgraph_auth_user``): a ``user_id`` from any source
    must be that user, since the context and configurable come from the HTTP client.

    Args:
        runtime: The :class:`~langchain.tools.ToolRuntime` injected by ``ToolNode``, or None.
        config: The ``RunnableConfig`` of the call, or None.
        default_user_id: The tool's default caller.
        default_cube_id: The tool's default cube.
        need_cube: Whether a cube is required (False for search: None means the caller's own cubes).

    Returns:
        The scope.

    Raises:
        InvalidInputError: ``runtime`` is neither None nor a ``ToolRuntime`` (e.g. a model
            tried to send one as JSON), or a scope value is not a string.
        ConfigError: No ``user_id`` (or, with ``need_cube``, no ``cube_id``) in any source.
        PermissionDeniedError: An authenticated run names another ``user_id``.

    """
    if runtime is not None and not isinstance(runtime, ToolRuntime):
        raise InvalidInputError(
            f"runtime must be the ToolRuntime that ToolNode injects, not {type(runtime).__name__}; "
            "a memory tool's scope never comes from tool-call arguments"
        )
    sources: list[Any] = []
    if runtime is not None:
        sources += [runtime.context, (runtime.config or {}).get("configurable")]
    sources.append((config or {}).get("configurable"))
    found: dict[str, str | None] = {}
    for key, default in (("user_id", default_user_id), ("cube_id", default_cube_id)):
        value = next((v for v in (_lookup(s, key) for s in sources) if v is not None), default)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"scope {key} must be a string, not {type(value).__name__}")
        found[key] = value
    identity = authenticated_user_id(None if runtime is None else runtime.config, config)
    user_id, cube_id = check_authenticated(found["user_id"], identity), found["cube_id"]
    missing = [
        k for k, v in (("user_id", user_id), ("cube_id", cube_id)) if v is None and (k == "user_id" or need_cube)
    ]
    if user_id is None or missing:
        raise ConfigError(
            f"memory tool has no {' or '.join(missing)}: pass it in the agent's context "
            f"(agent.invoke(..., context={{{', '.join(repr(k) + ': ...' for k in missing)}}})), in "
            "config['configurable'], or as default_user_id/default_cube_id when creating the tool; "
            "it is never taken from the model's tool call"
        )
    return MemoryScope(user_id=user_id, cube_id=cube_id)


class _MemoryTool(BaseTool):
    """Shared fields and scope resolution of the memory tools.

    Attributes:
        mos: The MemOS instance (set up).
        default_user_id: Caller used when neither the runtime nor the config names one.
        default_cube_id: Cube used when neither the runtime nor the config names one.

    """

    mos: MemOS
    default_user_id: str | None = None
    default_cube_id: str | None = None

    #: Whether the tool needs a cube (search does not: it then reads the caller's own cubes).
    _needs_cube: ClassVar[bool] = True

    def _scope(self, runtime: Any, config: RunnableConfig) -> MemoryScope:
        return resolve_scope(
            runtime,
            config,
            default_user_id=self.default_user_id,
            default_cube_id=self.default_cube_id,
            need_cube=self._needs_cube,
        )

    def _cube_scope(self, runtime: Any, config: RunnableConfig) -> tuple[str, str]:
        """Return ``(user_id, cube_id)`` of a tool that needs a cube (resolve_scope raised if there is none)."""
        scope = self._scope(runtime, config)
        if scope.cube_id is None:  # pragma: no cover - resolve_scope(need_cube=True) refuses this
            raise ConfigError(f"{self.name} needs a cube_id")
        return scope.user_id, scope.cube_id


class _ToolInput(BaseModel):
    """Base of the tools' argument schemas (arbitrary types: the injected ``ToolRuntime``'s fields)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)


# -- search ----------------------------------------------------------------------------------------
class SearchMemoryInput(_ToolInput):
    """Arguments of ``search_memory`` the model sends."""

    query: str = Field(description="What to look for, as a question or keywords.")
    k: int | None = Field(default=None, ge=1, le=50, description="Most memories to return (optional).")
    runtime: InjectedRuntime = Field(default=None, exclude=True)


def _render_hits(docs: list[Document]) -> str:
    if not docs:
        return "No memories found."
    return "\n".join(
        f"[{i}] (id={d.id}, score={d.metadata['score']:.3f}) {d.page_content}" for i, d in enumerate(docs, 1)
    )


class SearchMemoryTool(_MemoryTool):
    """``search_memory``: hybrid search over the caller's memory (``MemOS.search``).

    Searches the scope's cube, or without one the caller's own cubes. The tool message holds one
    line per memory (``[n] (id=..., score=...) text``, best first, or ``No memories found.``); its
    artifact is the list of documents (:func:`~langchain_memos.retrievers.memory_to_document`).

    Attributes:
        k: Memories returned when the model does not say (default 5).
        token_budget: Most tokens of all returned memories (default None: the MemOS default).

    Raises (on invoke):
        ConfigError: No ``user_id`` in scope.
        InvalidInputError / PermissionDeniedError / CubeNotFoundError / ModelError: As ``MemOS.search``.

    """

    name: str = "search_memory"
    description: str = (
        "Search long-term memory for facts about the user and earlier conversations. "
        "Returns matching memories with their ids, best first."
    )
    args_schema: type[BaseModel] = SearchMemoryInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    k: int = Field(default=5, ge=1)
    token_budget: int | None = Field(default=None, ge=1)

    _needs_cube: ClassVar[bool] = False

    def _search_args(self, query: str, k: int | None, scope: MemoryScope) -> dict[str, Any]:
        return {
            "query": query,
            "user_id": scope.user_id,
            "cube_ids": None if scope.cube_id is None else [scope.cube_id],
            "top_k": self.k if k is None else k,
            "token_budget": self.token_budget,
        }

    def _run(
        self,
        query: str,
        k: int | None = None,
        runtime: InjectedRuntime = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, list[Document]]:
        scope = self._scope(runtime, config)
        docs = [memory_to_document(h) for h in self.mos.search(**self._search_args(query, k, scope))]
        return _render_hits(docs), docs

    async def _arun(
        self,
        query: str,
        k: int | None = None,
        runtime: InjectedRuntime = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, list[Document]]:
        scope = self._scope(runtime, config)
        docs = [memory_to_document(h) for h in await self.mos.asearch(**self._search_args(query, k, scope))]
        return _render_hits(docs), docs


# -- add -------------------------------------------------------------------------------------------
class AddMemoryInput(_ToolInput):
    """Arguments of ``add_memory`` the model sends."""

    text: str = Field(description="One self-contained fact to remember, e.g. 'Alice moved to Lisbon in May 2024.'")
    runtime: InjectedRuntime = Field(default=None, exclude=True)


class AddMemoryTool(_MemoryTool):
    """``add_memory``: store one fact in the scope's cube (``MemOS.add`` in ``facts`` mode).

    The text is stored as given (one memory); a fact that restates a stored one with a value
    changed supersedes it. The tool message names the stored memory id(s).

    Raises (on invoke):
        ConfigError: No ``user_id`` or ``cube_id`` in scope.
        InvalidInputError / SensitiveDataError / PermissionDeniedError / CubeNotFoundError: As ``MemOS.add``.

    """

    name: str = "add_memory"
    description: str = "Save one fact about the user or the conversation to long-term memory, so it can be found later."
    args_schema: type[BaseModel] = AddMemoryInput

    @staticmethod
    def _add_args(text: str, user_id: str, cube_id: str) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": text}],
            "user_id": user_id,
            "cube_id": cube_id,
            "mode": ReadMode.FACTS,
        }

    @staticmethod
    def _render(ids: list[str]) -> str:
        return f"Stored memory {', '.join(ids)}." if ids else "Nothing new was stored."

    def _run(self, text: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        result = self.mos.add(**self._add_args(text, *self._cube_scope(runtime, config)))
        return self._render(result.ids)

    async def _arun(self, text: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        result = await self.mos.aadd(**self._add_args(text, *self._cube_scope(runtime, config)))
        return self._render(result.ids)


# -- update ----------------------------------------------------------------------------------------
class UpdateMemoryInput(_ToolInput):
    """Arguments of ``update_memory`` the model sends."""

    memory_id: str = Field(description="Id of the memory to change, as search_memory returned it.")
    text: str = Field(description="The corrected text that replaces the memory's text.")
    runtime: InjectedRuntime = Field(default=None, exclude=True)


class UpdateMemoryTool(_MemoryTool):
    """``update_memory``: replace a memory's text (``MemOS.update``; re-embedded, version incremented).

    Raises (on invoke):
        ConfigError: No ``user_id`` or ``cube_id`` in scope.
        MemoryNotFoundError: No such memory in the scope's cube.
        InvalidInputError / PermissionDeniedError / VersionConflictError: As ``MemOS.update``.

    """

    name: str = "update_memory"
    description: str = "Correct a stored memory: replace the text of the memory with the given id."
    args_schema: type[BaseModel] = UpdateMemoryInput

    def _run(self, memory_id: str, text: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        user_id, cube_id = self._cube_scope(runtime, config)
        item = self.mos.update(memory_id, user_id, cube_id, text=text)
        return f"Updated memory {item.id} (version {item.version})."

    async def _arun(self, memory_id: str, text: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        user_id, cube_id = self._cube_scope(runtime, config)
        item = await self.mos.aupdate(memory_id, user_id, cube_id, text=text)
        return f"Updated memory {item.id} (version {item.version})."


# -- delete ----------------------------------------------------------------------------------------
class DeleteMemoryInput(_ToolInput):
    """Arguments of ``delete_memory`` the model sends."""

    memory_id: str = Field(description="Id of the memory to forget, as search_memory returned it.")
    runtime: InjectedRuntime = Field(default=None, exclude=True)


class DeleteMemoryTool(_MemoryTool):
    """``delete_memory``: delete a memory and its edges (``MemOS.delete``; its versions are kept).

    Raises (on invoke):
        ConfigError: No ``user_id`` or ``cube_id`` in scope.
        InvalidInputError / PermissionDeniedError / CubeNotFoundError: As ``MemOS.delete``.

    """

    name: str = "delete_memory"
    description: str = "Forget a stored memory: delete the memory with the given id."
    args_schema: type[BaseModel] = DeleteMemoryInput

    @staticmethod
    def _render(memory_id: str, deleted: int) -> str:
        return f"Deleted memory {memory_id}." if deleted else f"No memory {memory_id} to delete."

    def _run(self, memory_id: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        user_id, cube_id = self._cube_scope(runtime, config)
        return self._render(memory_id, self.mos.delete([memory_id], user_id, cube_id))

    async def _arun(self, memory_id: str, runtime: InjectedRuntime = None, *, config: RunnableConfig) -> str:
        user_id, cube_id = self._cube_scope(runtime, config)
        return self._render(memory_id, await self.mos.adelete([memory_id], user_id, cube_id))


def create_memory_tools(
    mos: MemOS, *, default_user_id: str | None = None, default_cube_id: str | None = None
) -> list[BaseTool]:
    """Return the four memory tools: ``search_memory``, ``add_memory``, ``update_memory``, ``delete_memory``.

    Args:
        mos: The MemOS instance (set up).
        default_user_id: Caller used when neither the runtime context nor the config names one
            (default None: every call must name it there).
        default_cube_id: Cube used likewise (default None).

    Returns:
        The tools, in that order; pass them to ``create_agent`` or ``ToolNode``.

    """
    return [
        cls(mos=mos, default_user_id=default_user_id, default_cube_id=default_cube_id)
        for cls in (SearchMemoryTool, AddMemoryTool, UpdateMemoryTool, DeleteMemoryTool)
    ]
