"""A LangChain chat message history kept in the MemOS message log, optionally read into memory.

Typical use::

    history = MemOSChatMessageHistory(mos, session_id="s1", user_id="alice", reader_cube_id="alice-notes")
    history.add_messages([HumanMessage("I moved to Lisbon."), AIMessage("Noted!")])
    history.messages          # [HumanMessage(...), AIMessage(...)], exactly as added

Each LangChain message is logged with its role (OpenAI-style, ``normalize_role``), text and
``message_to_dict`` form (with JSON values) under the ``"langchain"`` key of the log's ``data``, so
every message type (tool calls, tool results, additional kwargs, ids) comes back as it was added.
Messages logged by other surfaces (any JSON object as ``data``) and by earlier versions (the
``message_to_dict`` form as ``data`` itself) are read too; one LangChain cannot rebuild is rebuilt
from its role and text, so one foreign message never makes the history unreadable.

langchain-core 1.6.4 deprecated ``BaseChatMessageHistory`` (direct instances warn; subclasses do
not) in favour of LangGraph's short-term memory; it remains the interface of
``RunnableWithMessageHistory`` and of existing chains, which is what this class serves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    messages_from_dict,
)
from pydantic_core import PydanticSerializationError

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError
from memos_agents.operation.messages import LoggedMessage
from memos_agents.schema import normalize_role, validate_id

__all__ = ["MemOSChatMessageHistory", "message_role"]

#: Key of the log's ``data`` under which this history keeps a message's ``message_to_dict`` form.
DATA_KEY = "langchain"

_CHUNK = "MessageChunk"


def message_role(message: BaseMessage) -> str:
    """Return the OpenAI-style role of a LangChain message (:func:`~memos_agents.schema.normalize_role`).

    ``human`` → ``user``, ``ai`` → ``assistant``, ``system``, ``tool`` and ``function`` → ``tool``;
    a ``ChatMessage`` its own ``role`` (normalised the same way); a chunk (``AIMessageChunk``, ...)
    the role of its message type; any other type its LangChain ``type``.
    """
    if isinstance(message, ChatMessage):
        return normalize_role(message.role)
    kind = message.type
    if kind.endswith(_CHUNK) and len(kind) > len(_CHUNK):
        kind = kind[: -len(_CHUNK)].lower()
    return normalize_role(kind)


def _to_dict(message: BaseMessage, pos: int) -> dict[str, Any]:
    """Return ``message_to_dict(message)`` with JSON values (the message log keeps JSON only).

    Raises:
        InvalidInputError: A field holds a value JSON cannot represent (e.g. an arbitrary object
            in ``additional_kwargs``).

    """
    try:
        return {"type": message.type, "data": message.model_dump(mode="json")}
    except PydanticSerializationError as exc:
        raise InvalidInputError(f"message {pos} cannot be logged as JSON: {exc}") from exc


def _valid_id(value: str) -> bool:
    """Whether ``value`` is a well-formed MemOS id (:func:`~memos_agents.schema.validate_id`)."""
    try:
        validate_id(value)
    except InvalidInputError:
        return False
    return True


def _is_message_dict(value: object) -> bool:
    """Whether ``value`` has the shape of a ``message_to_dict`` form: ``{"type": str, "data": {...}}``."""
    return isinstance(value, Mapping) and isinstance(value.get("type"), str) and isinstance(value.get("data"), Mapping)


def _langchain_form(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Return the ``message_to_dict`` form a logged message's ``data`` holds, if it holds one.

    This history writes it under :data:`DATA_KEY`; earlier versions wrote it as ``data`` itself.
    """
    if not isinstance(data, Mapping):
        return None
    tagged = data.get(DATA_KEY)
    if _is_message_dict(tagged):
        return tagged
    return data if _is_message_dict(data) else None


def _from_log(logged: LoggedMessage) -> BaseMessage:
    """Rebuild a LangChain message from one logged message.

    The ``message_to_dict`` form in ``data`` is used when present and LangChain accepts it. Any
    other message (logged by another surface, or whose ``data`` only looks like that form, e.g.
    ``{"type": "event", "data": {...}}``) becomes a Human, AI or System message by its role
    (normalised: ``human`` is ``user``, ...), else a ``ChatMessage`` of its logged role.
    """
    form = _langchain_form(logged.data)
    if form is not None:
        try:
            return messages_from_dict([dict(form)])[0]
        except (ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
            pass  # not LangChain's after all: rebuilt from role and text below
    fields: dict[str, Any] = {"content": logged.content or ""}
    if logged.name:
        fields["name"] = logged.name
    if logged.id:
        fields["id"] = logged.id
    role = normalize_role(logged.role)
    if role == "user":
        return HumanMessage(**fields)
    if role == "assistant":
        return AIMessage(**fields)
    if role == "system":
        return SystemMessage(**fields)
    return ChatMessage(role=logged.role, **fields)


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """Chat history of one session of one user, kept in the MemOS message log (``mos.messages``).

    With ``reader_cube_id`` set, :meth:`add_messages` also reads the new messages into memories of
    that cube (``mos.add``: MemReader, the tree, the cube's redaction policy), so what was said is
    found later by search, retrievers and memory tools.

    Args:
        mos: The MemOS instance (set up).
        session_id: The conversation (a well-formed id: 1-128 characters of ``[A-Za-z0-9_.:@-]``).
        user_id: The caller whose session it is; sessions of different users are separate.
        reader_cube_id: Cube the messages are also read into (default None: logged only). The
            caller needs write permission on it.
        reader_mode: MemReader mode of that reading: ``"fast"`` (default, no LLM) or ``"fine"``
            (LLM fact extraction as well).
        reader_types: LangChain message types read into memory (default ``("human", "ai")``:
            the conversation; system prompts and tool results are logged but not remembered).
            Messages without text (e.g. an AI message holding only tool calls) are never read.
        limit: Most recent messages :attr:`messages` returns (default None: all).

    Raises:
        InvalidInputError: (from the message log, on first use) a malformed ``session_id`` or ``user_id``.

    """

    def __init__(
        self,
        mos: MemOS,
        session_id: str,
        user_id: str,
        *,
        reader_cube_id: str | None = None,
        reader_mode: str = "fast",
        reader_types: Collection[str] = ("human", "ai"),
        limit: int | None = None,
    ) -> None:
        super().__init__()
        self.mos = mos
        self.session_id = session_id
        self.user_id = user_id
        self.reader_cube_id = reader_cube_id
        self.reader_mode = reader_mode
        self.reader_types = frozenset(reader_types)
        self.limit = limit

    # -- reading ---------------------------------------------------------------------------------
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first (the last ``limit`` when set)."""
        logged = self.mos.messages.list(self.session_id, user_id=self.user_id, limit=self.limit)
        return [_from_log(m) for m in logged]

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of :attr:`messages`."""
        logged = await self.mos.messages.alist(self.session_id, user_id=self.user_id, limit=self.limit)
        return [_from_log(m) for m in logged]

    # -- writing ---------------------------------------------------------------------------------
    @staticmethod
    def _log_entries(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
        entries = []
        for pos, m in enumerate(messages):
            if not isinstance(m, BaseMessage):
                raise InvalidInputError(f"message {pos} must be a LangChain BaseMessage, not {type(m).__name__}")
            entry: dict[str, Any] = {"role": message_role(m), "content": m.text, "data": {DATA_KEY: _to_dict(m, pos)}}
            if m.name is not None:
                entry["name"] = m.name
            if m.id is not None:
                entry["id"] = m.id
            entries.append(entry)
        return entries

    def _reader_messages(self, messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
        """Return the ``mos.add`` messages of those of ``reader_types`` with text.

        Each keeps its role (normalised), text, name and, when it is a well-formed MemOS id, its id
        (recorded as the memory's provenance); an id MemOS would refuse is left out.
        """
        out = []
        for m in messages:
            if m.type not in self.reader_types or not m.text.strip():
                continue
            entry: dict[str, Any] = {"role": message_role(m), "content": m.text, "name": m.name}
            if m.id is not None and _valid_id(m.id):
                entry["id"] = m.id
            out.append(entry)
        return out

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages to the session's log, then (``reader_cube_id`` set) read them into memory.

        Args:
            messages: LangChain messages of any type, in order.

        Raises:
            InvalidInputError: Not a ``BaseMessage``, a value JSON cannot hold, more than 1,000
                messages, or malformed ids; nothing was logged.
            PermissionDeniedError / CubeNotFoundError: The caller may not write the reader cube
                (the messages were logged; nothing was read into memory).
            SensitiveDataError: The reader cube's redaction policy refuses a message (logged,
                not read into memory).

        """
        if not messages:
            return
        self.mos.messages.append(self.session_id, self._log_entries(messages), user_id=self.user_id)
        cube_id = self.reader_cube_id
        feed = self._reader_messages(messages) if cube_id is not None else []
        if cube_id is not None and feed:
            self.mos.add(
                feed,
                user_id=self.user_id,
                cube_id=cube_id,
                session_id=self.session_id,
                mode=self.reader_mode,
            )

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of :meth:`add_messages` (``mos.messages.aappend`` and ``mos.aadd``)."""
        if not messages:
            return
        await self.mos.messages.aappend(self.session_id, self._log_entries(messages), user_id=self.user_id)
        cube_id = self.reader_cube_id
        feed = self._reader_messages(messages) if cube_id is not None else []
        if cube_id is not None and feed:
            await self.mos.aadd(
                feed,
                user_id=self.user_id,
                cube_id=cube_id,
                session_id=self.session_id,
                mode=self.reader_mode,
            )

    def clear(self) -> None:
        """Delete the session's logged messages (memories already read from them stay)."""
        self.mos.messages.clear(self.session_id, user_id=self.user_id)

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self.mos.messages.aclear(self.session_id, user_id=self.user_id)
