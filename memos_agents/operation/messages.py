"""The chat message log: a session's messages in order, with their roles, kept in the core.

MemReader keeps what a conversation means (memories: windows of turns, facts); the message log
keeps what was said, exactly, for chat histories (``langchain_memos.MemOSChatMessageHistory``).
Each session of each user is one document namespace (:mod:`memos_agents.plaintext.documents`)
``("messages", user_id, session_id)`` under the cube prefix ``msg``: a cube the user owns (so
governed, audited and versioned like any cube), one document per message, keyed by its position
(``000000000042``). A message's text is indexed (BM25), never embedded.
"""

from __future__ import annotations

import builtins
import functools
import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos_agents.errors import InvalidInputError, VersionConflictError
from memos_agents.flow import Compute, Flow
from memos_agents.plaintext.documents import (
    Document,
    DocumentWrite,
    Namespace,
    check_namespace,
    namespace_cube_id,
)
from memos_agents.plaintext.stores import base
from memos_agents.schema import Label, LifecycleState, MemoryItem, SearchFilters, check_document, validate_id

if TYPE_CHECKING:
    from memos_agents.os import MemOS

#: Cube id prefix of message log namespaces.
PREFIX = "msg"
#: Every lifecycle state: what the next position is counted over.
_EVERY = SearchFilters(statuses=list(LifecycleState))
#: Tries of an append whose positions concurrent appends keep taking.
APPEND_ATTEMPTS = 32
#: Most messages appended in one call.
MAX_APPEND = 1_000


class LoggedMessage(BaseModel):
    """One message of a session, as logged.

    Attributes:
        seq: Its position in the session (0 for the first message).
        role: The speaker's role (``user``, ``assistant``, ``system``, ``tool``, or a framework's
            own name such as ``human``/``ai``).
        content: Its text (may be empty, e.g. an assistant message that only calls tools).
        name: The speaker's name, if any.
        id: The message's own id, if any (a framework's message id; any string up to 256 characters).
        data: The framework's own serialisation of the message (a JSON object kept intact, e.g.
            LangChain's ``message_to_dict``), so that tool calls and extra fields round-trip.
        created_at: When it was logged (UTC).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    role: Label
    content: str = Field(max_length=1_000_000)
    name: Label | None = None
    id: Label | None = None
    data: dict[str, Any] | None = None
    created_at: datetime


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Label
    content: str = Field(default="", max_length=1_000_000)
    name: Label | None = None
    id: Label | None = None
    data: dict[str, Any] | None = None


def session_namespace(user_id: str, session_id: str) -> Namespace:
    """Return the document namespace of a user's session: ``("messages", user_id, session_id)``."""
    return check_namespace(("messages", validate_id(user_id, "user_id"), validate_id(session_id, "session_id")))


def _key(seq: int) -> str:
    return f"{seq:012d}"


def _logged(doc: Document) -> LoggedMessage:
    v = doc.value
    return LoggedMessage(
        seq=int(doc.key),
        role=v["role"],
        content=v.get("content", ""),
        name=v.get("name"),
        id=v.get("id"),
        data=v.get("data"),
        created_at=doc.created_at,
    )


class MessageLog:
    """Sessions' messages in order: ``MemOS.messages`` (see the module docstring).

    Every method runs as ``user_id``, on that user's own sessions only: the namespace names the
    user, only that user may create it (``DocumentStore.OWNER_LABELS``), and every read and append
    reads only a cube the user owns (``owned=True``), so nobody can plant messages in a session.

    Args:
        mos: The MemOS whose documents keep the log.

    """

    def __init__(self, mos: MemOS) -> None:
        self._mos = mos

    def append(
        self, session_id: str, messages: Sequence[Mapping[str, Any]], *, user_id: str
    ) -> builtins.list[LoggedMessage]:
        """Append messages to a session, in order, in one transaction.

        Args:
            session_id: The session (an id: 1-128 of ``[A-Za-z0-9_.:@-]``).
            messages: Up to :data:`MAX_APPEND` mappings with ``role`` and optional ``content``,
                ``name``, ``id`` and ``data`` (see :class:`LoggedMessage`).
            user_id: The caller, whose session it is.

        Returns:
            The messages as logged, with their positions.

        Raises:
            InvalidInputError: A malformed id or message.

        """
        return self._mos._run(self._append(session_id, messages, user_id), user_id)

    async def aappend(
        self, session_id: str, messages: Sequence[Mapping[str, Any]], *, user_id: str
    ) -> builtins.list[LoggedMessage]:
        """Async twin of :meth:`append`."""
        return await self._mos._arun(self._append(session_id, messages, user_id), user_id)

    def _append(
        self, session_id: str, messages: Sequence[Mapping[str, Any]], user_id: str
    ) -> Flow[builtins.list[LoggedMessage]]:
        ns = session_namespace(user_id, session_id)
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages must be a list of mappings")
        if len(messages) > MAX_APPEND:
            raise InvalidInputError(f"at most {MAX_APPEND:,} messages per append, not {len(messages):,}")
        incoming = []
        for n, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise InvalidInputError(f"message {n} must be a mapping, not {type(m).__name__}")
            try:
                msg = _Incoming.model_validate(dict(m))
            except ValidationError as exc:
                raise InvalidInputError(f"invalid message {n}: {exc.errors()[0]['msg']}") from exc
            if msg.data is not None:
                check_document(msg.data, f"message {n} data")
            incoming.append(msg)
        if not incoming:
            return []
        docs = self._mos.documents
        for attempt in range(APPEND_ATTEMPTS):
            start = yield from self._next(ns, user_id)
            writes = [
                DocumentWrite(
                    ns,
                    _key(start + n),
                    {k: v for k, v in m.model_dump().items() if v is not None},
                    text=(m.content or m.role)[: self._mos.config.max_text_chars],  # what BM25 indexes
                    exclusive=True,
                )
                for n, m in enumerate(incoming)
            ]
            try:
                stored = yield from docs._write(writes, user_id, PREFIX, None, True)
            except VersionConflictError:  # a concurrent append took these positions: look again
                if attempt == APPEND_ATTEMPTS - 1:
                    raise
                pause = random.uniform(0, 0.002 * (attempt + 1))
                yield Compute(functools.partial(time.sleep, pause))
                continue
            return [_logged(cast(Document, d)) for d in stored]
        raise VersionConflictError(f"session {session_id!r}: concurrent appends kept taking the next position")

    def _next(self, ns: Namespace, user_id: str) -> Flow[int]:
        """Return the next free position: one past the last message stored (archived ones included).

        A deleted message in the middle keeps its position free; a deleted last one's is taken again.
        """
        cube = namespace_cube_id(ns, PREFIX)
        headers = yield from self._mos.documents._readable({cube: ns}, user_id, PREFIX, True)
        if cube not in headers:
            return 0
        (n,) = yield [base.CountOp(cube, _EVERY)]
        if not n:
            return 0
        (last,) = yield [base.ListOp(cube, _EVERY, limit=1, offset=cast(int, n) - 1)]
        items = cast(builtins.list[MemoryItem], last)
        return int(items[0].key or "0") + 1 if items else cast(int, n)

    def list(self, session_id: str, *, user_id: str, limit: int | None = None) -> builtins.list[LoggedMessage]:
        """Return a session's messages, oldest first (``limit``: only the last ``limit``).

        Raises:
            InvalidInputError: A malformed id or limit.

        """
        return self._mos._run(self._list(session_id, user_id, limit), user_id)

    async def alist(self, session_id: str, *, user_id: str, limit: int | None = None) -> builtins.list[LoggedMessage]:
        """Async twin of :meth:`list`."""
        return await self._mos._arun(self._list(session_id, user_id, limit), user_id)

    def _list(self, session_id: str, user_id: str, limit: int | None) -> Flow[builtins.list[LoggedMessage]]:
        ns = session_namespace(user_id, session_id)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInputError(f"limit must be a positive integer, not {limit!r}")
        docs = self._mos.documents
        offset = 0
        if limit is not None:
            total = yield from docs._count(ns, user_id, PREFIX, True)
            offset = max(0, total - limit)
        found = yield from docs._list(ns, user_id, PREFIX, limit, offset, True)
        return sorted((_logged(d) for d in found), key=lambda m: m.seq)

    def clear(self, session_id: str, *, user_id: str) -> int:
        """Delete a session's messages; returns how many there were.

        Raises:
            InvalidInputError: A malformed id.

        """
        return self._mos._run(self._clear(session_id, user_id), user_id)

    async def aclear(self, session_id: str, *, user_id: str) -> int:
        """Async twin of :meth:`clear`."""
        return await self._mos._arun(self._clear(session_id, user_id), user_id)

    def _clear(self, session_id: str, user_id: str) -> Flow[int]:
        ns = session_namespace(user_id, session_id)
        docs = self._mos.documents
        n = yield from docs._count(ns, user_id, PREFIX, True)
        yield from docs._delete_namespace(ns, user_id, PREFIX, True)
        return n
