"""Plain data types shared by every layer: memory items, edges, messages, queries, results.

The names follow MemOS (MemTensor, 2025, "MemOS: A Memory OS for AI System"): a plaintext memory
item lives in one of three memory types (working, long-term, user), moves through lifecycle states,
and is linked to others by typed relations in a tree/graph.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos_agents.errors import InvalidInputError

#: Ids of cubes, users and memory items: 1-128 characters from a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$")


def validate_id(value: str, what: str = "id") -> str:
    """Check that ``value`` is a well-formed id.

    Args:
        value: The id to check.
        what: What the id names, for the error message ("cube_id", "user_id", ...).

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidInputError: If ``value`` is not a string of 1-128 characters from
            ``[A-Za-z0-9_.:@-]`` starting with a letter or digit.

    """
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidInputError(f"malformed {what}: {value!r} (expected 1-128 chars of [A-Za-z0-9_.:@-])")
    return value


def new_id() -> str:
    """Return a fresh random memory id (a UUID4 as 32 hex characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class MemoryType(StrEnum):
    """Where a plaintext memory lives in the MemOS tree (MemOS §5.2)."""

    WORKING = "WorkingMemory"
    LONG_TERM = "LongTermMemory"
    USER = "UserMemory"


class NodeKind(StrEnum):
    """What a node of the memory tree is: a memory, or a topic that groups memories."""

    MEMORY = "memory"
    TOPIC = "topic"


class LifecycleState(StrEnum):
    """Lifecycle of a memory item or cube (MemOS: generated → activated → merged → archived → expired/frozen)."""

    GENERATED = "generated"
    ACTIVATED = "activated"
    MERGED = "merged"
    ARCHIVED = "archived"
    EXPIRED = "expired"
    FROZEN = "frozen"


class RelationType(StrEnum):
    """Whitelisted relation types of the memory graph.

    Backends interpolate only these names into queries (Cypher relationship types, SQL values).
    """

    PARENT = "PARENT"  # topic -> member
    FOLLOWS = "FOLLOWS"  # later episode item -> the one before it
    MERGED_TO = "MERGED_TO"  # archived original -> merged item
    RELATE_TO = "RELATE_TO"  # semantically related items (undirected in meaning)
    DERIVED_FROM = "DERIVED_FROM"  # extracted fact -> raw turn it came from
    CONFLICTS_WITH = "CONFLICTS_WITH"
    SUPERSEDES = "SUPERSEDES"


class Sources(BaseModel):
    """Provenance of a memory: the messages, sessions and speakers it came from."""

    model_config = ConfigDict(extra="forbid")

    message_ids: list[str] = Field(default_factory=list, description="Ids of source messages, e.g. LoCoMo dia_ids.")
    session_ids: list[str] = Field(default_factory=list)
    speakers: list[str] = Field(default_factory=list)

    def union(self, other: Sources) -> Sources:
        """Return the order-preserving union of two provenance records."""

        def merge(a: list[str], b: list[str]) -> list[str]:
            return list(dict.fromkeys([*a, *b]))

        return Sources(
            message_ids=merge(self.message_ids, other.message_ids),
            session_ids=merge(self.session_ids, other.session_ids),
            speakers=merge(self.speakers, other.speakers),
        )


class MemoryItem(BaseModel):
    """One plaintext memory (or topic node) of a cube.

    Attributes:
        id: Item id (see :func:`validate_id`); random UUID4 hex by default.
        cube_id: The MemCube the item belongs to; set by the store on write.
        text: The memory text as it goes into a prompt (non-empty).
        memory_type: Working, long-term or user memory.
        node_kind: ``memory`` or ``topic`` (topic nodes group memories through PARENT edges).
        key: A short title (a key phrase in fast mode, the LLM's key in fine mode).
        tags: Key phrases / labels used for filtering and BM25.
        sources: Provenance (message ids, session ids, speakers).
        user_id: The user the memory is about/was written by.
        event_time: When the remembered event happened (UTC), separate from ``created_at``.
        created_at: Ingestion time (UTC).
        updated_at: Last change (UTC).
        confidence: 0..1; 1.0 for verbatim turns, the extractor's estimate for LLM facts.
        status: Lifecycle state; search sees ``activated`` items by default.
        version: Incremented by the store on every update, starting at 1.
        embedding: Unit-norm float vector of the cube's embedding dimension, or None.
        metadata: Flat JSON-able extras (str/int/float/bool values).

    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str = Field(default_factory=new_id)
    cube_id: str = ""
    text: str
    memory_type: MemoryType = MemoryType.LONG_TERM
    node_kind: NodeKind = NodeKind.MEMORY
    key: str | None = None
    tags: list[str] = Field(default_factory=list)
    sources: Sources = Field(default_factory=Sources)
    user_id: str | None = None
    event_time: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    status: LifecycleState = LifecycleState.ACTIVATED
    version: int = Field(default=1, ge=1)
    embedding: list[float] | None = None
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("memory text must not be empty")
        return value

    @field_validator("id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"malformed memory id {value!r}")
        return value

    @field_validator("event_time", "created_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class Edge(BaseModel):
    """A typed, directed relation between two items of the same cube."""

    model_config = ConfigDict(extra="forbid")

    source_id: str
    target_id: str
    type: RelationType
    weight: float = 1.0
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value) or utcnow()


class Message(BaseModel):
    """One chat message given to ``MemOS.add``.

    Accepts OpenAI/LangChain-style dicts: ``{"role": "user", "content": "..."}``; ``name`` is the
    speaker's name when known; ``id`` a message id kept as provenance (e.g. a LoCoMo dia_id).
    """

    model_config = ConfigDict(extra="ignore")

    role: str = "user"
    content: str
    name: str | None = None
    id: str | None = None
    timestamp: datetime | None = None
    session_id: str | None = None
    image_caption: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @property
    def speaker(self) -> str:
        """The speaker's name, falling back to the role."""
        return self.name or self.role

    def line(self) -> str:
        """Render the turn as one line: ``"Speaker: content [shares a photo: caption]"`` (whitespace folded)."""
        caption = f" [shares a photo: {self.image_caption}]" if self.image_caption else ""
        return " ".join(f"{self.speaker}: {self.content}{caption}".split())


class SearchFilters(BaseModel):
    """Filters applied inside the store before ranking (never after truncation).

    Attributes:
        user_id: Only memories of this user.
        memory_types: Only these memory types (None: all).
        statuses: Only these lifecycle states (default: activated).
        node_kinds: Only these node kinds (default: memories, not topic nodes).
        time_from: Only memories whose event time is at or after this (UTC).
        time_to: Only memories whose event time is at or before this (UTC).
        tags_any: Only memories carrying at least one of these tags.

    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    memory_types: list[MemoryType] | None = None
    statuses: list[LifecycleState] = Field(default_factory=lambda: [LifecycleState.ACTIVATED])
    node_kinds: list[NodeKind] = Field(default_factory=lambda: [NodeKind.MEMORY])
    time_from: datetime | None = None
    time_to: datetime | None = None
    tags_any: list[str] | None = None

    @field_validator("time_from", "time_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class MemoryQuery(BaseModel):
    """A parsed query (MemReader's output for a question), ready for retrieval."""

    text: str
    keywords: list[str] = Field(default_factory=list)
    speakers: list[str] = Field(default_factory=list)


class ScoredMemory(BaseModel):
    """One search result.

    Attributes:
        item: The memory (embedding omitted unless asked for).
        score: Fused relevance score; higher is better; comparable only within one search.
        tokens: Tokens of the item as rendered into a prompt (see ``MemScheduler.render``).
        signals: Per-retriever evidence, e.g. ``{"dense": 0.61, "bm25": 7.2, "graph": 0.3}``.
        via: For graph-expanded results, the id of the hit it was reached from.
        trimmed: True when the scheduler removed lines already shown by a better result (the
            stored item is unchanged; ``MemOS.get`` returns it whole).

    """

    item: MemoryItem
    score: float
    tokens: int = 0
    signals: dict[str, float] = Field(default_factory=dict)
    via: str | None = None
    trimmed: bool = False


def jsonable(value: Any) -> Any:
    """Convert enums and datetimes inside ``value`` into JSON-friendly values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
