"""MemOSMemoryBlock: a long-term memory block of LlamaIndex's ``Memory``, on a MemCube."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory import BaseMemoryBlock
from llama_index.core.utils import get_tokenizer
from llama_index.memory.memos._common import (
    DEFAULT_ROLES,
    check_count,
    check_cube_ids,
    check_filters,
    check_id,
    check_positive,
    check_roles,
    memos_session_id,
    query_text,
    render_memories,
    to_memos_messages,
    truncate_rendered,
)

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError
from memos_agents.schema import SearchFilters


class MemOSMemoryBlock(BaseMemoryBlock[str]):
    """A ``Memory`` block that stores flushed messages in a MemCube and recalls the relevant memories.

    ``llama_index.core.memory.Memory`` keeps the recent chat in its FIFO queue and hands this block
    only the messages it flushes when the queue is over its token limit: :meth:`aput` reads them
    into the cube (``MemOS.aadd``, fast mode). On every ``Memory.get``, :meth:`aget` searches the
    cubes with the latest user message(s) as the query (``MemOS.asearch``) and returns the
    memories as text, one ``"- "`` entry per memory, best first, which ``Memory`` puts into its
    system message inside ``<memos_memory>`` tags (the block's ``name``). To write every message,
    not only flushed ones, use :class:`~llama_index.memory.memos.MemOSMemory` instead.

    Example::

        block = MemOSMemoryBlock(mos=mos, user_id="alice", cube_id="alice-notes")
        memory = Memory.from_defaults(session_id="chat-1", memory_blocks=[block])

    Args:
        mos: An open :class:`~memos_agents.MemOS` (``setup()`` done; the caller closes it).
        user_id: The caller MemOS checks permissions for (write on ``cube_id``, read on every cube
            searched); recorded as each memory's author.
        cube_id: The cube flushed messages are written to.
        session_id: MemOS session of the written messages (default: the session id ``Memory``
            stamps on the messages it flushes, i.e. ``Memory.session_id``; one that is not a
            MemOS id, such as ``"chat 1"``, becomes ``"li-"`` and 32 hex digits of its SHA-256,
            always the same for the same session).
        cube_ids: The cubes searched (default: ``[cube_id]``).
        top_k: Most memories returned (default: MemOS's ``retrieval.top_k``).
        token_budget: Most tokens of the memories returned, counted by MemOS (default: MemOS's
            ``default_token_budget``).
        filters: :class:`~memos_agents.schema.SearchFilters` or a dict of its fields.
        query_messages: How many of the latest user messages form the query (default 1).
        roles: Roles of the messages written (default ``("user", "assistant")``; messages without
            text, such as tool calls, are never written).
        tokenizer_fn: Tokenizer :meth:`atruncate` counts with (default: LlamaIndex's global
            tokenizer, which ``Memory`` counts with too).
        **kwargs: ``BaseMemoryBlock`` fields: ``name`` (default ``"memos_memory"``), ``description``,
            ``priority`` (default 1: truncatable, lowest-ranked memories first; 0: never truncated)
            and ``accept_short_term_memory``.

    Raises:
        InvalidInputError: ``mos`` is not a MemOS, a malformed id, ``cube_ids`` given as a string,
            ``top_k``/``token_budget`` not an integer from 1 to ``MemOS.MAX_COUNT``,
            ``query_messages`` not a positive integer, invalid ``filters`` or ``roles``.

    """

    name: str = Field(default="memos_memory", description="The name of the memory block (its tag in the prompt).")
    priority: int = Field(
        default=1, description="Truncation priority (0 = never truncate; truncation drops the lowest-ranked memories)."
    )
    mos: MemOS = Field(exclude=True, description="The MemOS the memories live in.")
    user_id: str = Field(description="The caller MemOS checks permissions for.")
    cube_id: str = Field(description="The cube flushed messages are written to.")
    session_id: str | None = Field(default=None, description="MemOS session of the written messages.")
    cube_ids: list[str] | None = Field(default=None, description="The cubes searched (None: [cube_id]).")
    top_k: int | None = Field(default=None, description="Most memories returned (None: MemOS's default).")
    token_budget: int | None = Field(default=None, description="Most tokens of memories (None: MemOS's default).")
    filters: SearchFilters | None = Field(default=None, description="MemOS search filters.")
    query_messages: int = Field(default=1, description="How many of the latest user messages form the query.")
    roles: tuple[str, ...] = Field(default=DEFAULT_ROLES, description="Roles of the messages written.")
    tokenizer_fn: Callable[[str], Sequence[Any]] = Field(
        default_factory=get_tokenizer, exclude=True, description="Tokenizer truncation counts with."
    )

    def __init__(
        self,
        *,
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
        **kwargs: Any,
    ) -> None:
        if not isinstance(mos, MemOS):
            raise InvalidInputError(f"mos must be a MemOS instance, not {type(mos).__name__}")
        fields: dict[str, Any] = {  # checked here, so that bad input raises MemOS's typed errors
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
        }
        super().__init__(**fields, **kwargs)

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """Return the memories relevant to the latest user message(s) of ``messages``, rendered as text.

        Args:
            messages: The chat history ``Memory`` passes (its input, if any, appended as a user message).
            **block_kwargs: What ``Memory`` passes along (``session_id``, ...); not used.

        Returns:
            One ``"- "`` entry per memory, best first (further lines of a memory indented by two
            spaces); ``""`` when there is no user message with text or nothing is found.

        Raises:
            CubeNotFoundError / PermissionDeniedError: A searched cube is missing or not readable
                by ``user_id``.
            ModelError: The embedder failed.

        """
        query = query_text(messages or [], self.query_messages, self.mos.config.max_text_chars)
        if not query:
            return ""
        results = await self.mos.asearch(
            query,
            self.user_id,
            self.cube_ids if self.cube_ids is not None else [self.cube_id],
            top_k=self.top_k,
            filters=self.filters,
            token_budget=self.token_budget,
        )
        return render_memories(results, self.mos.scheduler.render)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Write the messages ``Memory`` flushed into ``cube_id`` (one atomic ``MemOS.aadd``).

        Messages of roles outside ``roles`` and messages without text are left out; nothing is
        written when none remains.

        Raises:
            CubeNotFoundError / PermissionDeniedError: ``cube_id`` is missing or ``user_id`` may not write it.
            InvalidInputError: A message longer than MemOS's ``max_text_chars`` (``TextTooLongError``).

        """
        payload = to_memos_messages(messages, self.roles)
        if not payload:
            return
        session = self.session_id
        if session is None:  # Memory's, which LlamaIndex does not restrict: mapped onto a MemOS id
            session = memos_session_id(
                next((m.additional_kwargs["session_id"] for m in messages if "session_id" in m.additional_kwargs), None)
            )
        await self.mos.aadd(payload, self.user_id, self.cube_id, session_id=session)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop the lowest-ranked memories until the text is at least ``tokens_to_truncate`` tokens shorter.

        Args:
            content: What :meth:`aget` returned.
            tokens_to_truncate: Tokens to remove, counted with ``tokenizer_fn`` (0 or less: none).

        Returns:
            The best memories that remain, or None when all had to go (``Memory`` then leaves the
            block out).

        """
        if not content:
            return None
        return truncate_rendered(content, tokens_to_truncate, lambda text: len(self.tokenizer_fn(text)))
