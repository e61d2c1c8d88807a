"""MemOSMemory: a LlamaIndex ``BaseMemory`` that writes every message to a MemCube and recalls memories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import ConfigDict, Field, SerializeAsAny
from llama_index.core.memory import BaseMemory, Memory
from llama_index.memory.memos._common import (
    DEFAULT_ROLES,
    check_count,
    check_cube_ids,
    check_filters,
    check_id,
    check_positive,
    check_roles,
    memos_session_id,
    message_text,
    query_text,
    render_memories,
    to_memos_messages,
)

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError
from memos_agents.schema import ScoredMemory, SearchFilters

#: The first line of the system message that carries the memories.
DEFAULT_MEMORY_HEADER = "Memories about the user and earlier conversations (MemOS), most relevant first:"


class MemOSMemory(BaseMemory):
    """Chat memory for LlamaIndex agents and chat engines, backed by a MemCube.

    The chat history lives in a primary memory (a ``llama_index.core.memory.Memory`` by default);
    every message that goes in through :meth:`put`, :meth:`put_messages` or :meth:`set` (and their
    async twins) is also read into ``cube_id`` (``MemOS.add``, fast mode; messages of other roles
    than ``roles`` and messages without text, such as tool calls, are left out). :meth:`get`
    returns the history with the memories relevant to the latest user message (``MemOS.search``
    over ``cube_ids``) in a system message at its start; the memories outlive the history, so a
    new conversation (a new ``MemOSMemory`` on the same cube) recalls what earlier ones stored.

    A write MemOS refuses raises its typed error and leaves the history unchanged.

    Build one with :meth:`from_defaults` (or :meth:`from_client`)::

        memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="alice-notes")
        response = await agent.run(user_msg="Book my usual table", memory=memory)

    Args:
        primary_memory: The chat history (any ``BaseMemory``).
        mos: An open :class:`~memos_agents.MemOS` (``setup()`` done; the caller closes it).
        user_id: The caller MemOS checks permissions for (write on ``cube_id``, read on every cube
            searched); recorded as each memory's author.
        cube_id: The cube messages are written to.
        session_id: MemOS session of the written messages (None: MemOS's default session).
        cube_ids: The cubes searched (default: ``[cube_id]``).
        top_k: Most memories injected (default: MemOS's ``retrieval.top_k``).
        token_budget: Most tokens of the memories injected (default: MemOS's ``default_token_budget``).
        filters: :class:`~memos_agents.schema.SearchFilters` or a dict of its fields.
        query_messages: How many of the latest user messages form the query (default 1).
        roles: Roles of the messages written (default ``("user", "assistant")``).
        memory_header: First line of the memories' system message.

    Raises:
        InvalidInputError: ``mos`` is not a MemOS, a malformed id, ``cube_ids`` given as a string,
            ``top_k``/``token_budget`` not an integer from 1 to ``MemOS.MAX_COUNT``,
            ``query_messages`` not a positive integer, invalid ``filters`` or ``roles``.

    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    primary_memory: SerializeAsAny[BaseMemory] = Field(description="The chat history.")
    mos: MemOS = Field(exclude=True, description="The MemOS the memories live in.")
    user_id: str = Field(description="The caller MemOS checks permissions for.")
    cube_id: str = Field(description="The cube messages are written to.")
    session_id: str | None = Field(default=None, description="MemOS session of the written messages.")
    cube_ids: list[str] | None = Field(default=None, description="The cubes searched (None: [cube_id]).")
    top_k: int | None = Field(default=None, description="Most memories injected (None: MemOS's default).")
    token_budget: int | None = Field(default=None, description="Most tokens of memories (None: MemOS's default).")
    filters: SearchFilters | None = Field(default=None, description="MemOS search filters.")
    query_messages: int = Field(default=1, description="How many of the latest user messages form the query.")
    roles: tuple[str, ...] = Field(default=DEFAULT_ROLES, description="Roles of the messages written.")
    memory_header: str = Field(default=DEFAULT_MEMORY_HEADER, description="First line of the memories' message.")

    def __init__(
        self,
        *,
        primary_memory: BaseMemory,
        mos: MemOS,
        user_id: str,
        cube_id: str,
        session_id: str | None = None,
        cube_ids: Sequence[str] | None = None,
        top_k: int | None = None,
        token_budget: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        query_messages: int = 1,
        roles: Sequence[str] = DEFAULT_ROLES,
        memory_header: str = DEFAULT_MEMORY_HEADER,
    ) -> None:
        if not isinstance(mos, MemOS):
            raise InvalidInputError(f"mos must be a MemOS instance, not {type(mos).__name__}")
        if not isinstance(primary_memory, BaseMemory):
            raise InvalidInputError(f"primary_memory must be a BaseMemory, not {type(primary_memory).__name__}")
        fields: dict[str, Any] = {  # checked here, so that bad input raises MemOS's typed errors
            "primary_memory": primary_memory,
            "mos": mos,
            "user_id": check_id(user_id, "user_id"),
            "cube_id": check_id(cube_id, "cube_id"),
            "session_id": None if session_id is None else check_id(session_id, "session_id"),
            "cube_ids": check_cube_ids(cube_ids),
            "top_k": check_count(top_k, "top_k"),
            "token_budget": check_count(token_budget, "token_budget"),
            "filters": check_filters(filters),
            "query_messages": check_positive(query_messages, "query_messages"),
            "roles": check_roles(roles),
            "memory_header": memory_header,
        }
        super().__init__(**fields)

    @classmethod
    def class_name(cls) -> str:
        """Return the class name LlamaIndex serializes this memory under."""
        return "MemOSMemory"

    @classmethod
    def from_defaults(  # type: ignore[override]
        cls,
        mos: MemOS,
        user_id: str,
        cube_id: str,
        *,
        session_id: str | None = None,
        primary_memory: BaseMemory | None = None,
        **kwargs: Any,
    ) -> MemOSMemory:
        """Create a MemOSMemory whose chat history is a new ``Memory`` (or ``primary_memory``).

        Args:
            mos: An open :class:`~memos_agents.MemOS`.
            user_id: The caller (see the class).
            cube_id: The cube messages are written to.
            session_id: The conversation's id: the ``Memory``'s chat-store key and the MemOS session
                of its messages (default: the ``primary_memory``'s ``session_id`` when it is a
                ``Memory``, else a new UUID: one MemOS session per conversation). A ``Memory``'s
                session id that is not a MemOS id (e.g. ``"chat 1"``) becomes ``"li-"`` and 32 hex
                digits of its SHA-256 for MemOS; one given here must be a MemOS id.
            primary_memory: The chat history to use instead of a new ``Memory``.
            **kwargs: Other constructor arguments (``cube_ids``, ``top_k``, ``token_budget``,
                ``filters``, ``query_messages``, ``roles``, ``memory_header``).

        Returns:
            The memory, with an empty history unless ``primary_memory`` holds one.

        Raises:
            InvalidInputError: As the constructor.

        """
        if session_id is not None:
            check_id(session_id, "session_id")
        if primary_memory is None:
            primary_memory = Memory.from_defaults(session_id=session_id)
        if session_id is None and isinstance(primary_memory, Memory):
            # LlamaIndex takes any string as a session id: a malformed one is mapped onto a MemOS id
            session_id = memos_session_id(primary_memory.session_id)
        return cls(
            primary_memory=primary_memory, mos=mos, user_id=user_id, cube_id=cube_id, session_id=session_id, **kwargs
        )

    @classmethod
    def from_client(cls, client: MemOS, user_id: str, cube_id: str, **kwargs: Any) -> MemOSMemory:
        """Create a MemOSMemory on a MemOS "client", as ``Mem0Memory.from_client`` does (see :meth:`from_defaults`).

        Raises:
            InvalidInputError: As the constructor.

        """
        return cls.from_defaults(client, user_id, cube_id, **kwargs)

    # -- reads -------------------------------------------------------------------------------------
    def get(self, input: str | ChatMessage | None = None, **kwargs: Any) -> list[ChatMessage]:
        """Return the chat history, with the memories relevant to the latest user message first.

        Args:
            input: The next user message, if it is not in the history yet: it is then the query
                (with earlier user messages when ``query_messages`` > 1).
            **kwargs: Passed to the primary memory's ``get``.

        Returns:
            The primary memory's messages; when memories are found, a system message with
            ``memory_header`` and one ``"- "`` entry per memory comes first (an existing leading
            system message gets them prepended, on a copy: the stored history is not changed).

        Raises:
            CubeNotFoundError / PermissionDeniedError: A searched cube is missing or not readable.
            ModelError: The embedder failed.

        """
        messages = self.primary_memory.get(input=self._text(input), **kwargs)
        query = self._query(messages, input)
        if not query:
            return messages
        results = self.mos.search(query, self.user_id, self._cubes, **self._search_kwargs)
        return self._with_memories(messages, results)

    async def aget(self, input: str | ChatMessage | None = None, **kwargs: Any) -> list[ChatMessage]:
        """Async twin of :meth:`get` (``MemOS.asearch``)."""
        messages = await self.primary_memory.aget(input=self._text(input), **kwargs)
        query = self._query(messages, input)
        if not query:
            return messages
        results = await self.mos.asearch(query, self.user_id, self._cubes, **self._search_kwargs)
        return self._with_memories(messages, results)

    def get_all(self) -> list[ChatMessage]:
        """Return the whole chat history of the primary memory (no memories added)."""
        return self.primary_memory.get_all()

    async def aget_all(self) -> list[ChatMessage]:
        """Async twin of :meth:`get_all`."""
        return await self.primary_memory.aget_all()

    # -- writes ------------------------------------------------------------------------------------
    def put(self, message: ChatMessage) -> None:
        """Write ``message`` to MemOS, then append it to the chat history.

        Raises:
            CubeNotFoundError / PermissionDeniedError: ``cube_id`` is missing or not writable by ``user_id``.
            TextTooLongError: The message is longer than MemOS's ``max_text_chars``.

        """
        self._write([message])
        self.primary_memory.put(message)

    async def aput(self, message: ChatMessage) -> None:
        """Async twin of :meth:`put` (``MemOS.aadd``)."""
        await self._awrite([message])
        await self.primary_memory.aput(message)

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Write ``messages`` to MemOS in one atomic add, then append them to the chat history.

        Raises:
            CubeNotFoundError / PermissionDeniedError / TextTooLongError: As :meth:`put`; nothing
                is written and the history is unchanged.

        """
        self._write(messages)
        self.primary_memory.put_messages(messages)

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`put_messages`."""
        await self._awrite(messages)
        await self.primary_memory.aput_messages(messages)

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the chat history with ``messages``; write to MemOS those the history did not start with.

        The messages after the longest common start of the current history and ``messages``
        (same roles and texts) are new and written, so setting a history that extends the
        current one writes only the extension.

        Raises:
            CubeNotFoundError / PermissionDeniedError / TextTooLongError: As :meth:`put`; the
                history is unchanged.

        """
        self._write(self._new(self.primary_memory.get_all(), messages))
        self.primary_memory.set(messages)

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`set`."""
        await self._awrite(self._new(await self.primary_memory.aget_all(), messages))
        await self.primary_memory.aset(messages)

    def reset(self) -> None:
        """Clear the chat history. The memories stay in the cube (delete them through MemOS)."""
        self.primary_memory.reset()

    async def areset(self) -> None:
        """Async twin of :meth:`reset`."""
        await self.primary_memory.areset()

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def _cubes(self) -> list[str]:
        return self.cube_ids if self.cube_ids is not None else [self.cube_id]

    @property
    def _search_kwargs(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "filters": self.filters, "token_budget": self.token_budget}

    @staticmethod
    def _text(input: str | ChatMessage | None) -> str | None:
        # a primary memory takes text as input (Memory reads nothing else from a ChatMessage input)
        return message_text(input) if isinstance(input, ChatMessage) else input

    def _query(self, messages: list[ChatMessage], input: str | ChatMessage | None) -> str:
        if isinstance(input, str):
            messages = [*messages, ChatMessage(role=MessageRole.USER, content=input)]
        elif isinstance(input, ChatMessage):
            messages = [*messages, input]
        return query_text(messages, self.query_messages, self.mos.config.max_text_chars)

    def _with_memories(self, messages: list[ChatMessage], results: list[ScoredMemory]) -> list[ChatMessage]:
        if not results:
            return messages
        text = f"{self.memory_header}\n{render_memories(results, self.mos.scheduler.render)}"
        if messages and messages[0].role == MessageRole.SYSTEM:
            first = messages[0]
            merged = first.model_copy(update={"blocks": [TextBlock(text=text + "\n"), *first.blocks]})
            return [merged, *messages[1:]]
        return [ChatMessage(role=MessageRole.SYSTEM, content=text), *messages]

    @staticmethod
    def _new(history: list[ChatMessage], messages: list[ChatMessage]) -> list[ChatMessage]:
        same = 0
        for old, new in zip(history, messages, strict=False):
            if old.role != new.role or message_text(old) != message_text(new):
                break
            same += 1
        return messages[same:]

    def _write(self, messages: list[ChatMessage]) -> None:
        payload = to_memos_messages(messages, self.roles)
        if payload:
            self.mos.add(payload, self.user_id, self.cube_id, session_id=self.session_id)

    async def _awrite(self, messages: list[ChatMessage]) -> None:
        payload = to_memos_messages(messages, self.roles)
        if payload:
            await self.mos.aadd(payload, self.user_id, self.cube_id, session_id=self.session_id)
