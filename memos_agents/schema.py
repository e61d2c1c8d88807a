"""Plain data types shared by every layer: memory items, edges, messages, queries, results.

The names follow MemOS (MemTensor, 2025, "MemOS: A Memory OS for AI System"): a plaintext memory
item lives in one of three memory types (working, long-term, user), moves through lifecycle states,
and is linked to others by typed relations in a tree/graph.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos_agents.errors import InvalidInputError, TextTooLongError

#: Ids of cubes, users, sessions, messages and memory items: 1-128 characters from a safe alphabet.
#: Matched whole (``fullmatch``), so a trailing newline is refused.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}")

#: Hard limits on stored text fields, on every path (add, update, import), in characters. The
#: facade's ``MemOSConfig.max_text_chars`` (default 8,000) is the tighter limit on what a caller
#: writes; these bound what any item can hold (a fast-mode window joins several turns, a merge two items).
MAX_ITEM_TEXT_CHARS = 65_536
#: Longest key, speaker name, tag or metadata key (characters).
MAX_LABEL_CHARS = 256
#: Longest metadata string value (characters).
MAX_METADATA_VALUE_CHARS = 4_096
#: Most tags per item, metadata entries per item.
MAX_TAGS = 64
MAX_METADATA_ENTRIES = 64
#: Longest JSON document an item carries (characters of its compact JSON encoding): 1 MiB of ASCII.
MAX_DOCUMENT_CHARS = 1_048_576
#: Deepest nesting of a JSON document (objects and arrays).
MAX_DOCUMENT_DEPTH = 64
#: Most message ids, session ids or speakers in one item's provenance.
MAX_SOURCES = 4_096


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
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = value[:140] if isinstance(value, str) else value
        raise InvalidInputError(f"malformed {what}: {shown!r} (expected 1-128 chars of [A-Za-z0-9_.:@-])")
    return value


ModelT = TypeVar("ModelT", bound=BaseModel)


def validated(model: type[ModelT], data: Mapping[str, Any], what: str) -> ModelT:
    """Return ``model`` built from ``data`` by pydantic; a refusal names the fields, never their values.

    Raises:
        InvalidInputError: ``invalid <what>: field, field.sub, ...``.

    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise InvalidInputError(f"invalid {what}: {', '.join(fields)}") from None


def check_text(value: object, what: str = "text", max_chars: int = MAX_ITEM_TEXT_CHARS, *, blank: bool = False) -> str:
    """Check that ``value`` is a storable string.

    Args:
        value: The text to check.
        what: What the text is, for the error message.
        max_chars: Longest accepted length in characters (default :data:`MAX_ITEM_TEXT_CHARS`).
        blank: Accept an empty or all-whitespace string (default False).

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidInputError: Not a string, blank (unless ``blank``), longer than ``max_chars``, or
            not encodable as UTF-8 (lone surrogates), which no store can keep.
        TextTooLongError: Longer than ``max_chars`` (a subclass of InvalidInputError).

    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {type(value).__name__}")
    if not blank and not value.strip():
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > max_chars:
        raise TextTooLongError(f"{what} has {len(value)} characters; the limit is {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode text (lone surrogate at {exc.start})") from exc
    return value


def _label(value: str) -> str:
    return check_text(value, "label", MAX_LABEL_CHARS, blank=True)


def _optional_id(value: str | None) -> str | None:
    return None if value is None else validate_id(value)


#: A short string field (key, tag, speaker, metadata key): at most MAX_LABEL_CHARS, valid UTF-8.
Label = Annotated[str, AfterValidator(_label)]
#: A well-formed id (see :func:`validate_id`).
Id = Annotated[str, AfterValidator(validate_id)]


def new_id() -> str:
    """Return a fresh random memory id (a UUID4 as 32 hex characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC).

    Raises:
        ValueError: The time lies outside what a UTC datetime can hold (years 1-9999 after
            conversion), e.g. ``datetime(1, 1, 1, tzinfo=+01:00)``.

    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from exc


def check_document(value: object, what: str = "document") -> dict[str, Any]:
    """Check that ``value`` is a JSON object that round-trips exactly, and return it.

    Args:
        value: The document: a dict with string keys whose values are None, bool, int, finite
            float, str (valid UTF-8), list or dict of the same.
        what: What the document is, for the error message.

    Returns:
        ``value`` itself (not copied).

    Raises:
        InvalidInputError: Not a dict, a non-string key, a value JSON cannot hold (a tuple, a
            set, bytes, an object, NaN or infinity), a string that is not valid UTF-8, nesting
            deeper than :data:`MAX_DOCUMENT_DEPTH`, or more than :data:`MAX_DOCUMENT_CHARS`
            characters of compact JSON.

    """
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object (a dict), not {type(value).__name__}")
    stack: list[tuple[object, int, str]] = [(value, 1, "$")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DOCUMENT_DEPTH:
            raise InvalidInputError(f"{what} nests deeper than {MAX_DOCUMENT_DEPTH} levels at {path}")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise InvalidInputError(f"{what} has a non-string key {k!r} at {path}")
                check_text(k, f"{what} key at {path}", MAX_DOCUMENT_CHARS, blank=True)
                stack.append((v, depth + 1, f"{path}.{k}"))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{path}[{n}]") for n, v in enumerate(node))
        elif isinstance(node, str):
            check_text(node, f"{what} string at {path}", MAX_DOCUMENT_CHARS, blank=True)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInputError(f"{what} holds a non-finite number at {path}")
        elif node is not None and not isinstance(node, bool | int):
            raise InvalidInputError(f"{what} holds a {type(node).__name__} at {path}: JSON cannot keep it")
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidInputError(f"{what} cannot be written as JSON: {exc}") from exc
    if size > MAX_DOCUMENT_CHARS:
        raise InvalidInputError(f"{what} is {size:,} characters of JSON (at most {MAX_DOCUMENT_CHARS:,})")
    return value


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


class MemoryOrigin(StrEnum):
    """How a memory item came to be; code branches on this typed field, never on user metadata."""

    DIRECT = "direct"  # stored as given (a store write, an import)
    TURNS = "turns"  # conversation turns, one per text line (MemReader fast mode)
    EXTRACTED = "extracted"  # a fact an LLM extracted from turns (MemReader fine mode)
    MERGED = "merged"  # the merge of near-duplicates (tree organizer)
    STRUCTURE = "structure"  # a node the tree organizer built (session topics)


class Visibility(StrEnum):
    """Who may read one memory item (MemGovernance), on top of the cube's ACL.

    ``private``: its author only (and system-wide admins); ``cube``: everyone with ``read`` on the
    cube (the default); ``public``: anyone, even without a role on the cube. Ordered from the most
    to the least restrictive (see :func:`most_restrictive`).
    """

    PRIVATE = "private"
    CUBE = "cube"
    PUBLIC = "public"


def most_restrictive(*levels: Visibility) -> Visibility:
    """Return the most restrictive of ``levels`` (what a merge of items of those levels may be read by)."""
    order = list(Visibility)
    return min(levels, key=order.index)


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

    message_ids: list[Label] = Field(
        default_factory=list, max_length=MAX_SOURCES, description="Ids of source messages, e.g. LoCoMo dia_ids."
    )
    session_ids: list[Label] = Field(default_factory=list, max_length=MAX_SOURCES)
    speakers: list[Label] = Field(default_factory=list, max_length=MAX_SOURCES)

    def union(self, other: Sources) -> Sources:
        """Return the order-preserving union of two provenance records."""

        def merge(a: list[str], b: list[str]) -> list[str]:
            return list(dict.fromkeys([*a, *b]))

        return Sources(
            message_ids=merge(self.message_ids, other.message_ids)[:MAX_SOURCES],
            session_ids=merge(self.session_ids, other.session_ids)[:MAX_SOURCES],
            speakers=merge(self.speakers, other.speakers)[:MAX_SOURCES],
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
        user_id: The memory's subject: the user the memory is about (not necessarily who wrote it).
        author_id: The acting principal that stored it (set by the store from the call context;
            None for trusted system writes that did not name one).
        visibility: Who may read it (:class:`Visibility`): its author only, everyone with read
            on the cube (default), or anyone. Setting ``public`` needs ``share`` on the cube.
        origin: How the item came to be (:class:`MemoryOrigin`).
        turns: How many conversation turns the text holds, one per line in the order of
            ``sources.message_ids`` when every turn had an id (0: the text is not a list of turns).
        event_time: When the remembered event happened (UTC), separate from ``created_at``.
        created_at: Ingestion time (UTC).
        updated_at: When the store last wrote it (UTC): set by the store on every add and update
            (an import keeps the archive's); MemVault's point-in-time reads go by it.
        confidence: 0..1; 1.0 for verbatim turns, the extractor's estimate for LLM facts.
        status: Lifecycle state; search sees ``activated`` items by default. Changed through
            MemLifecycle's transition table (:mod:`memos_agents.operation.lifecycle`).
        expires_at: When the memory expires (UTC; None: never): search leaves it out from then
            on, and a lifecycle pass moves it to ``expired`` (``frozen`` items never expire).
        version: Incremented by the store on every update, starting at 1.
        access_count: How often the memory was used since it was stored: returned by a search
            or read by id (MemLifecycle's access tracking, recorded by the store in batches; no
            write sets it: an add starts at 0, an update keeps the stored count, an import keeps
            the archive's). With ``created_at`` and ``last_accessed_at`` it drives decay
            (:mod:`memos_agents.plaintext.decay`).
        last_accessed_at: When it was last used (UTC; None: never since stored).
        embedding: Unit-norm float vector of the cube's embedding dimension, or None; every
            value finite (NaN and infinity are refused).
        metadata: Flat JSON-able extras (str/int/float/bool values; at most
            :data:`MAX_METADATA_ENTRIES`, finite numbers).
        document: A JSON object kept intact beside the text (None: none): the value of a
            document in a namespace cube (:mod:`memos_agents.plaintext.documents`: a LangGraph
            store item, a logged chat message). At most :data:`MAX_DOCUMENT_CHARS` characters of
            compact JSON and :data:`MAX_DOCUMENT_DEPTH` levels, string keys, finite numbers.
        ttl_s: The time to live the item was written with, in seconds (None: none), so that a
            read can push ``expires_at`` to that long from then (a document's TTL refresh).

    Every text field is bounded (``text`` by :data:`MAX_ITEM_TEXT_CHARS`, key and tags by
    :data:`MAX_LABEL_CHARS`) and must be valid UTF-8, so no path (add, update, import) stores an
    unbounded or unstorable value.

    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    id: str = Field(default_factory=new_id)
    cube_id: str = ""
    text: str
    memory_type: MemoryType = MemoryType.LONG_TERM
    node_kind: NodeKind = NodeKind.MEMORY
    key: Label | None = None
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS)
    sources: Sources = Field(default_factory=Sources)
    user_id: Annotated[str | None, AfterValidator(_optional_id)] = None
    author_id: Annotated[str | None, AfterValidator(_optional_id)] = None
    visibility: Visibility = Visibility.CUBE
    origin: MemoryOrigin = MemoryOrigin.DIRECT
    turns: int = Field(default=0, ge=0, le=MAX_SOURCES)
    event_time: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    status: LifecycleState = LifecycleState.ACTIVATED
    expires_at: datetime | None = None
    version: int = Field(default=1, ge=1, le=2**62)
    access_count: int = Field(default=0, ge=0, le=2**62)
    last_accessed_at: datetime | None = None
    embedding: list[float] | None = Field(default=None, max_length=65_536)
    metadata: dict[Label, str | int | float | bool | None] = Field(
        default_factory=dict, max_length=MAX_METADATA_ENTRIES
    )
    document: dict[str, Any] | None = None
    ttl_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86_400)

    @field_validator("text")
    @classmethod
    def _text_ok(cls, value: str) -> str:
        return check_text(value, "memory text")

    @field_validator("id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        return validate_id(value, "memory id")

    @field_validator("metadata")
    @classmethod
    def _metadata_ok(cls, value: dict[str, Any]) -> dict[str, Any]:
        for k, v in value.items():
            if isinstance(v, str):
                check_text(v, f"metadata[{k!r}]", MAX_METADATA_VALUE_CHARS, blank=True)
            elif isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"metadata[{k!r}] is not a finite number")
        return value

    @field_validator("document")
    @classmethod
    def _document_ok(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_document(value)

    @field_validator("event_time", "created_at", "updated_at", "expires_at", "last_accessed_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class Edge(BaseModel):
    """A typed, directed relation between two items of the same cube."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source_id: Id
    target_id: Id
    type: RelationType
    weight: float = 1.0
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value) or utcnow()


#: Frameworks' message types and roles -> the OpenAI-style role MemOS records (LangChain's ``human``
#: and ``ai``, OpenAI's ``developer`` and legacy ``function``); see :func:`normalize_role`.
ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "ai": "assistant",
    "developer": "system",
    "function": "tool",
    "chatbot": "assistant",
    "model": "assistant",
}


def normalize_role(role: str) -> str:
    """Return the OpenAI-style role (``user``, ``assistant``, ``system``, ``tool``) of a framework's role name.

    Known aliases (:data:`ROLE_ALIASES`, any case) map onto the four; any other role is returned as
    given, so a custom role keeps its name.
    """
    return ROLE_ALIASES.get(
        role.lower(), role.lower() if role.lower() in ("user", "assistant", "system", "tool") else role
    )


class Message(BaseModel):
    """One chat message given to ``MemOS.add``.

    Accepts OpenAI/LangChain-style dicts: ``{"role": "user", "content": "..."}``; ``name`` is the
    speaker's name when known; ``id`` a message id kept as provenance (e.g. a LoCoMo dia_id);
    ``session_id`` and ``id`` must be well-formed ids (:func:`validate_id`); ``role`` and ``name``
    are at most :data:`MAX_LABEL_CHARS` characters; ``content`` and ``image_caption`` at most
    :data:`MAX_ITEM_TEXT_CHARS` each (``MemOS.add`` applies its tighter ``max_text_chars`` to both
    together). An integer ``timestamp`` is read as pydantic reads it: seconds since the epoch, or
    milliseconds when it is above 2·10¹⁰.
    """

    model_config = ConfigDict(extra="ignore")

    role: Label = "user"
    content: str
    name: Label | None = None
    id: Annotated[str | None, AfterValidator(_optional_id)] = None
    timestamp: datetime | None = None
    session_id: Annotated[str | None, AfterValidator(_optional_id)] = None
    image_caption: str | None = None

    @field_validator("content", "image_caption")
    @classmethod
    def _texts_ok(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value, "message text", blank=True)

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
        user_id: Only memories whose subject is this user.
        memory_types: Only these memory types (None: all).
        statuses: Only these lifecycle states (default: activated).
        node_kinds: Only these node kinds (default: memories, not topic nodes).
        time_from: Only memories whose event time is at or after this (UTC).
        time_to: Only memories whose event time is at or before this (UTC).
        tags_any: Only memories carrying at least one of these tags.

    """

    model_config = ConfigDict(extra="forbid")

    user_id: Label | None = None
    memory_types: list[MemoryType] | None = None
    statuses: list[LifecycleState] = Field(default_factory=lambda: [LifecycleState.ACTIVATED])
    node_kinds: list[NodeKind] = Field(default_factory=lambda: [NodeKind.MEMORY])
    time_from: datetime | None = None
    time_to: datetime | None = None
    tags_any: list[Label] | None = Field(default=None, max_length=MAX_TAGS)

    @field_validator("time_from", "time_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


class MemoryQuery(BaseModel):
    """A parsed query (MemReader's output for a question), ready for retrieval."""

    text: str


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
        published: ``name@version`` of the MemStore entry the caller subscribed to that serves
            the item's cube (None: not read through a subscription); the cube is ``item.cube_id``.

    """

    item: MemoryItem
    score: float
    tokens: int = 0
    signals: dict[str, float] = Field(default_factory=dict)
    via: str | None = None
    trimmed: bool = False
    published: str | None = None


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
