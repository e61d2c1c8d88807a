"""Request and result types of the MemOS operations: one pydantic model each, in one module.

The :class:`~memos_agents.os.MemOS` facade validates every call through these models, and the
same models are meant for the HTTP server, the MCP tools and the LangChain tools, so every
surface accepts and returns exactly the same shapes. A malformed request raises
:class:`~memos_agents.errors.InvalidInputError` (see :func:`parse`), never a pydantic error.

``user_id`` is always the *acting principal* (whose cube permissions apply); ``subject_id`` (on
add) is whom the memories are about, by default the caller: a service account can write for a user.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from memos_agents.errors import InvalidInputError
from memos_agents.infra.users import UserRecord
from memos_agents.operation.reader import ReadMode
from memos_agents.operation.scheduler import SchedulePlan
from memos_agents.schema import (
    Id,
    Label,
    LifecycleState,
    MemoryType,
    Message,
    ScoredMemory,
    SearchFilters,
    Visibility,
)

#: Upper bound of every count argument (top_k, token_budget, max_tokens): far above any real use,
#: and small enough for every backend's integer type.
MAX_COUNT = 1_000_000
#: Most earlier messages ``chat`` takes as history.
MAX_HISTORY = 1_000
#: Most memory ids one delete names.
MAX_IDS = 10_000

#: A count argument: a strict integer (not a bool) from 1 to MAX_COUNT.
Count = Annotated[int, Field(strict=True, ge=1, le=MAX_COUNT)]

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate ``data`` as ``model``.

    Raises:
        InvalidInputError: The first problem pydantic found, with where it is (``top_k``,
            ``messages.0.content``, ...).

    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or model.__name__
        raise InvalidInputError(f"invalid {where}: {err['msg']}") from exc


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


class AddRequest(_Request):
    """Store conversation turns as memories (``MemOS.add``)."""

    messages: list[Message] = Field(min_length=1, max_length=100_000)
    user_id: Id
    cube_id: Id
    session_id: Id | None = None
    mode: ReadMode = ReadMode.FAST
    subject_id: Id | None = None
    visibility: Visibility = Visibility.CUBE
    ttl_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86_400, allow_inf_nan=False)


class CubeRollback(BaseModel):
    """What ``MemOS.rollback_cube`` changed.

    Attributes:
        updated: Items put back to their state of then.
        restored: Items deleted since, added back (with their edges to items that exist).
        deleted: Items added since, deleted (their versions are kept).

    """

    updated: list[str] = Field(default_factory=list)
    restored: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)


class UserRemoval(BaseModel):
    """What ``MemOS.remove_user`` did.

    Attributes:
        user: The user's record, now disabled (kept: its id is never given to anyone else).
        revoked_from: Cubes whose ACL entries for the user were removed.
        owned: Cubes the user still owns (an owner keeps every permission: hand them over).

    """

    user: UserRecord
    revoked_from: list[str] = Field(default_factory=list)
    owned: list[str] = Field(default_factory=list)


class AddResult(BaseModel):
    """What ``MemOS.add`` stored.

    Attributes:
        ids: Ids of the new memory items (turns, facts and merged items; not topic nodes).
        merged: How many new items were merged into existing ones (and archived).
        failures: Fine-mode extraction failures (also recorded in the cube's event log).
        redacted: Findings masked in the messages by the cube's redaction policy, per kind (e.g.
            ``{"email": 2}``; also recorded in the cube's event log as a ``redacted`` event).

    """

    ids: list[str] = Field(default_factory=list)
    merged: int = 0
    failures: list[dict[str, Any]] = Field(default_factory=list)
    redacted: dict[str, int] = Field(default_factory=dict)


class SearchRequest(_Request):
    """Hybrid search over cubes the caller may read (``MemOS.search``)."""

    query: str
    user_id: Id
    cube_ids: list[Id] | None = Field(default=None, max_length=1_000)
    top_k: Count | None = None
    filters: SearchFilters | None = None
    token_budget: Count | None = None
    as_of: AwareDatetime | None = None


class HistoryMessage(_Request):
    """One earlier message of a chat."""

    model_config = ConfigDict(extra="ignore")

    role: Label = Field(min_length=1)
    content: str


class ChatRequest(SearchRequest):
    """Answer a question with the memories search finds (``MemOS.chat``)."""

    token_budget: Count | None = 1000
    history: list[HistoryMessage] = Field(default_factory=list, max_length=MAX_HISTORY)
    max_tokens: Count | None = None


class ChatResult(BaseModel):
    """Answer of ``MemOS.chat`` with the memories it was given and timings (ms)."""

    answer: str
    memories: list[ScoredMemory]
    search_ms: float
    generate_ms: float
    #: How the memories entered the model (None: activation memory off, all as prompt text).
    plan: SchedulePlan | None = None
    #: Prompt tokens served by an injected KV cache (0: none).
    cached_tokens: int = 0


class ScheduledContext(BaseModel):
    """What ``MemOS.schedule`` decided for one query: the memories and how each enters the model.

    Attributes:
        memories: The search results (fitted to the token budget), in rank order.
        plan: The MemScheduler's plan (None: activation memory off; every memory is prompt text).
        stable: The stable memories' text, one line each, in their fixed order: the start of the
            system message (``prompts.answer.stable_system``), which a KV cache or a server's prefix
            cache covers ("" : none).
        context: The other memories rendered for the prompt, one per line, in rank order.

    """

    memories: list[ScoredMemory]
    plan: SchedulePlan | None = None
    stable: str = ""
    context: str = ""


class GetRequest(_Request):
    """Read one memory (``MemOS.get``)."""

    memory_id: Id
    user_id: Id
    cube_id: Id


class UpdateRequest(GetRequest):
    """Change one memory (``MemOS.update``); None leaves a field as it is."""

    text: str | None = None
    memory_type: MemoryType | None = None
    tags: list[Label] | None = None
    status: LifecycleState | None = None
    expected_version: int | None = Field(default=None, ge=1)


class DeleteRequest(_Request):
    """Delete memories (``MemOS.delete``)."""

    memory_ids: list[Id] = Field(max_length=MAX_IDS)
    user_id: Id
    cube_id: Id


class CubeStats(BaseModel):
    """What a cube holds (``MemOS.stats``): node, memory, topic and edge counts."""

    cube_id: str
    nodes: int
    active_memories: int
    archived_memories: int
    topics: int
    edges: int
