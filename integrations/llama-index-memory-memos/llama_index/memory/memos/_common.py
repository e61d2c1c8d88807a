"""What the block, the memory and the retriever share: argument checks and text conversions.

Memories are rendered as a bullet list, one entry per memory, best first::

    - user: I moved to Lisbon in May.
      assistant: Lisbon is lovely in spring.
    - [8 May 2023] user: My cat is called Pixel.

An entry starts with ``"- "`` at the start of a line; the further lines of a memory's text are
indented by two spaces, so the entries can be told apart again from the text alone (which is how
:func:`truncate_rendered` drops the lowest-ranked ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from llama_index.core.base.llms.types import ChatMessage, TextBlock

from memos_agents.api import MAX_COUNT
from memos_agents.errors import InvalidInputError
from memos_agents.schema import MemoryItem, ScoredMemory, SearchFilters, validate_id, validated

#: The roles whose messages are written to MemOS by default: the conversation itself, not tool
#: calls and tool output (which a tool that wants them remembered can write on its own).
DEFAULT_ROLES: tuple[str, ...] = ("user", "assistant")

_ENTRY = "- "
_CONTINUATION = "  "


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a MemOS id (1-128 chars of ``[A-Za-z0-9_.:@-]``).

    Raises:
        InvalidInputError: Not a well-formed id.

    """
    validate_id(cast(str, value), what)
    return cast(str, value)


#: Prefix of the MemOS session id :func:`memos_session_id` derives from a malformed LlamaIndex one.
SESSION_PREFIX = "li-"


def memos_session_id(value: object) -> str | None:
    """Return the MemOS session id of a LlamaIndex session id (e.g. ``Memory.session_id``).

    LlamaIndex takes any string as a session id; MemOS only 1-128 characters of
    ``[A-Za-z0-9_.:@-]``. A well-formed id is returned unchanged; any other value is mapped,
    deterministically (the same LlamaIndex session is always the same MemOS session), to
    ``"li-"`` and the first 32 hex digits of the SHA-256 of its text, so a ``Memory`` whose session
    id is ``"chat 1"`` can still write to MemOS instead of failing after it has moved its messages
    out of its queue. Used wherever a session id LlamaIndex chose reaches MemOS; session ids given
    to this package's constructors are checked instead (:func:`check_id`).

    Args:
        value: The LlamaIndex session id (None: no session).

    Returns:
        A well-formed MemOS id, or None for None.

    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return validate_id(value)
        except InvalidInputError:
            pass
    digest = hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()
    return SESSION_PREFIX + digest[:32]


def check_cube_ids(value: object, what: str = "cube_ids") -> list[str] | None:
    """Return a list of cube ids, or None.

    Raises:
        InvalidInputError: A single string instead of a list, or a malformed id.

    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a list of cube ids (or None), not {type(value).__name__}")
    return [check_id(v, f"{what} entry") for v in value]


def check_count(value: object, what: str) -> int | None:
    """Return ``value`` if it is None or an integer from 1 to MemOS's ``MAX_COUNT``.

    Raises:
        InvalidInputError: Anything else (``bool``, floats and zero included).

    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidInputError(f"{what} must be an integer from 1 to {MAX_COUNT}, not {value!r}")
    return value


def check_filters(value: object) -> SearchFilters | None:
    """Return ``value`` as :class:`~memos_agents.schema.SearchFilters` (a dict is validated), or None.

    Raises:
        InvalidInputError: Unknown fields or invalid values.

    """
    if value is None or isinstance(value, SearchFilters):
        return value
    if not isinstance(value, dict):
        raise InvalidInputError(f"filters must be SearchFilters or a dict of its fields, not {type(value).__name__}")
    return validated(SearchFilters, value, "filters")


def check_roles(value: object) -> tuple[str, ...]:
    """Return the roles as a tuple of non-empty strings.

    Raises:
        InvalidInputError: A single string, or an entry that is not a non-empty string.

    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError("roles must be a list of role names such as ['user', 'assistant']")
    if not all(isinstance(r, str) and r for r in value):
        raise InvalidInputError("roles must be non-empty strings")
    return tuple(value)


def check_positive(value: object, what: str) -> int:
    """Return ``value`` if it is a positive integer.

    Raises:
        InvalidInputError: Anything else.

    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer, not {value!r}")
    return value


def message_text(message: ChatMessage) -> str:
    """Return the text of a message's text blocks, one per line (images, tool calls and the like are left out)."""
    return "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def to_memos_messages(messages: Sequence[ChatMessage], roles: Sequence[str]) -> list[dict[str, Any]]:
    """Convert LlamaIndex messages to the ``{"role", "content"}`` dicts ``MemOS.add`` reads.

    Messages of other roles and messages without text (e.g. an assistant's tool calls) are left out.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.role.value
        text = message_text(message)
        if role in roles and text.strip():
            out.append({"role": role, "content": text})
    return out


def query_text(messages: Sequence[ChatMessage], last: int, max_chars: int) -> str:
    """Return the search query: the text of the ``last`` latest user messages, oldest first.

    A query longer than ``max_chars`` (MemOS's ``max_text_chars``) keeps its end, the latest words.
    Empty when there is no user message with text.
    """
    texts: list[str] = []
    for message in reversed(messages):
        if len(texts) == last:
            break
        if message.role.value == "user" and (text := message_text(message).strip()):
            texts.append(text)
    query = "\n".join(reversed(texts))
    return query[-max_chars:].strip() if len(query) > max_chars else query


def render_memories(results: Sequence[ScoredMemory], render: Callable[[MemoryItem], str]) -> str:
    """Render search results as the bullet list of the module docstring, best first ("" for none)."""
    entries = []
    for result in results:
        first, *rest = render(result.item).split("\n")
        entries.append("\n".join([_ENTRY + first, *(_CONTINUATION + line for line in rest)]))
    return "\n".join(entries)


def split_entries(text: str) -> list[str]:
    """Split a rendering of :func:`render_memories` back into its entries, best first."""
    entries: list[list[str]] = []
    for line in text.split("\n"):
        if line.startswith(_ENTRY) or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return ["\n".join(lines) for lines in entries if any(line.strip() for line in lines)]


def truncate_rendered(text: str, tokens_to_truncate: int, count: Callable[[str], int]) -> str | None:
    """Drop the lowest-ranked entries of a rendering until it is at least ``tokens_to_truncate`` tokens shorter.

    Args:
        text: A rendering of :func:`render_memories`.
        tokens_to_truncate: How many tokens to remove (0 or less: ``text`` is returned unchanged).
        count: Token counter of the caller (the tokenizer ``Memory`` counts with).

    Returns:
        The best entries that remain, or None when all had to go.

    """
    if tokens_to_truncate <= 0:
        return text
    entries = split_entries(text)
    total = count(text)
    while entries:
        entries.pop()
        kept = "\n".join(entries)
        if total - count(kept) >= tokens_to_truncate:
            return kept or None
    return None
