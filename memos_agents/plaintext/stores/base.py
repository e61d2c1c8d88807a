"""The plaintext store interface: typed operations run in batches, as the caller, one transaction each.

After LangGraph's ``BaseStore``: every operation is a small typed value (``GetOp``, ``WriteOp``,
``VectorSearchOp``, ...) and a backend implements only :meth:`BaseMemoryStore.batch` and
:meth:`BaseMemoryStore.abatch` (plus ``setup``/``close``); every convenience method
(``get``, ``add``, ``vector_search``, ...) and its ``a``-prefixed async twin is concrete here and
builds an op.

* **One transaction per batch.** All ops of a batch see one snapshot and its writes commit together
  or not at all (SQLite: one ``BEGIN`` … ``COMMIT``; Neo4j: one managed transaction driving the
  ops' generator bodies). The exception is a cube import or cube delete, which a backend may write
  in bounded chunks that readers cannot see until the end (see the backend).
* **The caller travels with the batch.** ``batch(ops, ctx=...)`` runs every op as ``ctx``
  (:class:`CallContext`: the acting principal, later its roles). Each op names the permission it
  needs (:data:`OP_PERMISSION`) and the backend checks the cube's ACL *inside the same transaction*
  as the read or write. ``SYSTEM`` (the default of the convenience methods) is trusted code of the
  application itself; the :class:`~memos_agents.os.MemOS` facade always passes the caller.
* **Tenant-scoped.** Every op names its cube; a backend never returns or touches an item of
  another cube. An op on a cube that does not exist raises ``CubeNotFoundError`` (reads included),
  one the caller may not use ``PermissionDeniedError``.
* **One write-planning step.** :func:`plan_write` checks a :class:`WriteBatch` against what the
  backend read in the transaction (duplicate and existing ids, embedding dimension, versions, edge
  ends, FOLLOWS chains) and returns the exact rows to write, so every backend refuses alike.
* **Capabilities are data.** ``store.capabilities`` is filled by :meth:`setup` with what the
  backend found (vector index or exact scan, full-text index or per-cube BM25, native async).

Adding an operation: its op class and convenience method here (:data:`OP_PERMISSION` entry), a
``@handles(NewOp)`` method in each backend, and a conformance test.

Every backend must pass :mod:`memos_agents.testing.conformance`.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos_agents.cube import CubeHeader, Permission
from memos_agents.errors import (
    EmbeddingDimensionError,
    InvalidEmbeddingError,
    InvalidInputError,
    ItemExistsError,
    MemoryNotFoundError,
    PermissionDeniedError,
    SensitiveDataError,
    VersionConflictError,
)
from memos_agents.infra.audit import (
    AuditEntry,
    AuditOutcome,
    ChainHead,
    ChainVerification,
    seal,
)
from memos_agents.infra.redaction import RedactionMode, RedactionPolicy, default_redactor
from memos_agents.infra.registry import RegistryEntry, Subscription
from memos_agents.infra.users import UserRecord, check_new_user_id
from memos_agents.plaintext.stores.filters import Predicate, matches, visible_to
from memos_agents.schema import (
    Edge,
    Id,
    MemoryItem,
    RelationType,
    SearchFilters,
    Visibility,
    new_id,
    utcnow,
    validated,
)

Direction = Literal["out", "in", "both"]
T = TypeVar("T")

#: Longest path a graph expansion walks.
MAX_EXPAND_DEPTH = 5
#: The system-wide role of operators (see :attr:`CallContext.roles`).
SYSTEM_ADMIN = "admin"


class CallContext(BaseModel):
    """Who is calling: carried with every store batch and checked where the data is read.

    Attributes:
        principal: The acting principal (a user or service account id) whose permissions apply.
            It is not necessarily whom a memory is about (``MemoryItem.user_id``, the subject).
        roles: System-wide roles of the principal: :data:`SYSTEM_ADMIN` (an operator: every
            permission on every cube, and the store's own audit chain) or none. Given by trusted
            configuration (``MemOSConfig.admins``), never by the caller.
        system: Trusted application code (migrations, maintenance, tests): no ACL check.
        request_id: Correlates the store work of one request (random by default).

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: Id
    roles: tuple[str, ...] = ()
    system: bool = False
    request_id: str = Field(default_factory=new_id)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(roles) - {SYSTEM_ADMIN}
        if unknown:
            raise ValueError(f"unknown system-wide roles {sorted(unknown)}; the only one is {SYSTEM_ADMIN!r}")
        return roles

    @property
    def unrestricted(self) -> bool:
        """Whether no cube ACL applies: trusted code, or a system-wide admin (still audited by name)."""
        return self.system or SYSTEM_ADMIN in self.roles

    @classmethod
    def of(cls, principal: str, *, admin: bool = False) -> CallContext:
        """Return the context of a caller: ACL-checked, or a system-wide admin with ``admin``.

        Raises:
            InvalidInputError: Malformed principal id, or ``system`` (the name trusted code is
                audited under: a caller of that name would be indistinguishable in the log).

        """
        from memos_agents.schema import validate_id

        validate_id(principal, "user_id")
        if principal == "system":
            raise InvalidInputError("'system' is reserved for trusted application code and cannot be a caller")
        return cls(principal=principal, roles=(SYSTEM_ADMIN,) if admin else ())


#: Trusted application code: every op is allowed (the convenience methods' default).
SYSTEM = CallContext(principal="system", system=True)


#: What a read-only cube refuses.
_CONTENT_CHANGES = (Permission.WRITE, Permission.DELETE)


def authorize(header: CubeHeader, ctx: CallContext, permission: Permission | None) -> CubeHeader:
    """Check that ``ctx`` may do ``permission`` on the cube of ``header``; return the header.

    A read-only cube (``CubeHeader.read_only``: a MemStore snapshot or an imported bundle)
    refuses ``write`` and ``delete`` to every caller but trusted code, its owner and system-wide
    admins included.

    Raises:
        PermissionDeniedError: The cube's owner and ACL do not allow it, or the cube is read-only.

    """
    if header.read_only and permission in _CONTENT_CHANGES and not ctx.system:
        raise PermissionDeniedError(
            f"cube {header.cube_id!r} is read-only (a published snapshot or an imported bundle): "
            f"user {ctx.principal!r} may not {permission.value} it"
        )
    if permission is None or ctx.unrestricted or header.allows(ctx.principal, permission):
        return header
    raise PermissionDeniedError(f"user {ctx.principal!r} may not {permission.value} cube {header.cube_id!r}")


def read_scope(header: CubeHeader, ctx: CallContext) -> list[Predicate]:
    """Return the per-item visibility predicates a read of ``ctx`` on the cube of ``header`` adds.

    Trusted code and system-wide admins read everything (no predicate); a caller with ``read`` on
    the cube reads what is not ``private`` and its own private items; any other caller reads
    ``public`` items only. A backend serves that last scope only when the cube holds a public item
    (otherwise it raises :func:`deny_read`'s error, as before per-item visibility existed), and
    renders the predicate in every read path: get, list, count, edges, dense and BM25 search,
    graph expansion (never walking through an item the caller may not read) and history.
    """
    if ctx.unrestricted:
        return []
    return [visible_to(ctx.principal if header.allows(ctx.principal, Permission.READ) else None)]


def public_only(scope: Sequence[Predicate]) -> bool:
    """Whether ``scope`` (from :func:`read_scope`) admits public items only (a caller without read)."""
    return bool(scope) and scope[0].value is None


def deny_read(header: CubeHeader, ctx: CallContext) -> PermissionDeniedError:
    """Return the error of a read by a caller without ``read`` on a cube that holds no public item."""
    return PermissionDeniedError(f"user {ctx.principal!r} may not read cube {header.cube_id!r}")


def check_header(header: CubeHeader) -> None:
    """Validate a header a caller hands to the store as if it had just been built.

    ``model_copy(update=...)`` skips pydantic's validation, so a header (or an ACL entry in it)
    could carry a cube id or principal the model refuses; stored, it would make every later read
    of the cube fail. Called by :meth:`BaseMemoryStore.handler` for every op that stores a header,
    inside the audited part of the batch.

    Raises:
        InvalidInputError: A field the model refuses (named, without the value).

    """
    if not isinstance(header, CubeHeader):
        raise InvalidInputError(f"a cube header must be a CubeHeader, not {type(header).__name__}")
    validated(CubeHeader, header.model_dump(), "cube header")


def check_new_cube(header: CubeHeader, ctx: CallContext) -> None:
    """Check that ``ctx`` may create (or import) the cube of ``header``: only for itself as owner.

    Trusted code and system-wide admins may create cubes for anyone; any other caller only cubes
    it owns, so no one can plant a cube that another user would later take for its own.

    Raises:
        PermissionDeniedError: ``header.owner_id`` is not the caller.

    """
    if not ctx.unrestricted and header.owner_id != ctx.principal:
        raise PermissionDeniedError(
            f"user {ctx.principal!r} may create cubes only for itself, not for owner {header.owner_id!r}"
        )


def check_header_update(current: CubeHeader, new: CubeHeader, ctx: CallContext) -> None:
    """Check that ``ctx`` may replace a cube's header ``current`` by ``new`` (an ``UpdateCubeOp``).

    A caller with neither ``admin`` nor ``share`` is refused first (the stored version is not
    revealed to it). ``new`` must carry the stored ``version`` (it was read from the current
    header: optimistic concurrency, so a change made meanwhile is never overwritten unseen). Then:

    * ``read_only`` and ``published_as`` change only by trusted code (a snapshot stays read-only).
    * Trusted code (SYSTEM) and system-wide admins may change anything else.
    * Only the owner may change ``owner_id`` (hand the cube over).
    * ``admin`` may change every other field.
    * ``share`` alone may change only the ACL, and only entries that grant at most the caller's own
      permissions, before and after the change (no one raises anyone, themselves included, above
      their own level, nor demotes someone who has more).

    Version and ``updated_at`` are set by the store and not compared.

    Raises:
        VersionConflictError: ``new.version`` is not the stored version.
        PermissionDeniedError: What the caller may not change, named.

    """
    if not ctx.unrestricted and not current.permissions_of(ctx.principal) & {Permission.ADMIN, Permission.SHARE}:
        raise PermissionDeniedError(f"user {ctx.principal!r} may not admin cube {current.cube_id!r}")
    if new.version != current.version:
        raise VersionConflictError(
            f"cube {current.cube_id!r}: the header is at version {current.version}, not {new.version}; "
            "read it again and reapply the change"
        )
    if current.namespace != new.namespace:
        raise PermissionDeniedError(f"cube {current.cube_id!r}: its document namespace is set once, at creation")
    if not ctx.system and (current.read_only, current.published_as) != (new.read_only, new.published_as):
        raise PermissionDeniedError(
            f"cube {current.cube_id!r}: read_only and published_as are set by the MemStore registry, "
            "not by header updates"
        )
    if ctx.unrestricted:
        return
    mine = current.permissions_of(ctx.principal)
    if new.owner_id != current.owner_id and ctx.principal != current.owner_id:
        raise PermissionDeniedError(f"only the owner of cube {current.cube_id!r} may hand it over")
    if Permission.ADMIN in mine:
        return
    skip = {"acl", "version", "updated_at"}
    if Permission.SHARE not in mine or current.model_dump(exclude=skip) != new.model_dump(exclude=skip):
        raise PermissionDeniedError(f"user {ctx.principal!r} may not admin cube {current.cube_id!r}")
    before = {(e.principal, e.role, tuple(sorted(e.permissions))): e for e in current.acl}
    after = {(e.principal, e.role, tuple(sorted(e.permissions))): e for e in new.acl}
    for key in before.keys() ^ after.keys():  # entries added or removed (a change is both)
        entry = before.get(key) or after[key]
        if not entry.granted() <= mine:
            raise PermissionDeniedError(
                f"user {ctx.principal!r} may not grant or revoke {sorted(p.value for p in entry.granted())} "
                f"on cube {current.cube_id!r}: more than its own permissions"
            )


def added_principals(current: CubeHeader | None, new: CubeHeader) -> list[str]:
    """Return the principals a header write gives something: a new owner, and ACL principals granted more than before.

    Stores check each (:func:`~memos_agents.infra.users.check_principals`: never a disabled user;
    with ``require_users`` only registered ones). Entries kept, narrowed or removed are not
    checked, so a disabled user's old entry never blocks another change of the header, nor its
    own reduction.
    """
    had: dict[str, frozenset[Permission]] = {}
    owner = None
    if current is not None:
        owner = current.owner_id
        for e in current.acl:
            had[e.principal] = had.get(e.principal, frozenset()) | e.granted()
    out = [] if new.owner_id == owner else [new.owner_id]
    gets: dict[str, frozenset[Permission]] = {}
    for e in new.acl:
        gets[e.principal] = gets.get(e.principal, frozenset()) | e.granted()
    for principal, granted in gets.items():
        before = had.get(principal)
        if before is None or not granted <= before:
            out.append(principal)
    return list(dict.fromkeys(out))


def authorize_users(ctx: CallContext, user_id: str | None = None) -> None:
    """Check that ``ctx`` may manage users (system-wide admins, trusted code), or read ``user_id``'s own record.

    Raises:
        PermissionDeniedError: Anyone else.

    """
    if ctx.unrestricted or (user_id is not None and user_id == ctx.principal):
        return
    raise PermissionDeniedError(f"user {ctx.principal!r} may not manage users: that needs a system-wide admin")


def new_user(op: CreateUserOp, ctx: CallContext) -> UserRecord:
    """Return the record a :class:`CreateUserOp` stores (validated; created now by ``ctx``, enabled).

    Raises:
        PermissionDeniedError: ``ctx`` may not manage users.
        InvalidInputError: A malformed record or a reserved id.

    """
    authorize_users(ctx)
    record = check_user(op.user)
    check_new_user_id(record.user_id)
    return record.model_copy(update={"created_at": utcnow(), "created_by": ctx.principal, "disabled_at": None})


def user_update(op: UpdateUserOp, ctx: CallContext) -> UserRecord:
    """Check that ``ctx`` may run ``op`` and return its validated record (see :func:`changed_user`).

    Raises:
        PermissionDeniedError: ``ctx`` may not manage users.
        InvalidInputError: A malformed record.

    """
    authorize_users(ctx)
    return check_user(op.user)


def changed_user(current: UserRecord, new: UserRecord) -> UserRecord:
    """Return ``current`` with the fields an update may change taken from ``new``: name, kind, disabled_at."""
    return current.model_copy(update={"name": new.name, "kind": new.kind, "disabled_at": new.disabled_at})


def check_user(user: object) -> UserRecord:
    """Validate a user record handed to the store as if it had just been built (see :func:`check_header`).

    Raises:
        InvalidInputError: Not a :class:`UserRecord`, or a field the model refuses (named, without the value).

    """
    if not isinstance(user, UserRecord):
        raise InvalidInputError(f"a user must be a UserRecord, not {type(user).__name__}")
    return validated(UserRecord, user.model_dump(), "user record")


class StoreCapabilities(BaseModel):
    """What a backend found it can do (filled by ``setup()``; read by callers, e.g. the benchmark).

    Attributes:
        vector_search: ``"index"`` (an approximate vector index) or ``"exact"`` (exact cosine).
        text_search: ``"index"`` (the engine's full-text index, its own ranking) or ``"bm25"``
            (BM25 with per-cube statistics, ranked identically on every backend).
        native_async: ``abatch`` runs on a native async driver (else in a worker thread).
        chunked_import: Imports and cube deletes are written in bounded chunks, hidden until done.

    """

    vector_search: Literal["index", "exact"] = "exact"
    text_search: Literal["index", "bm25"] = "bm25"
    native_async: bool = False
    chunked_import: bool = False


class Neighbor(BaseModel):
    """An item reached by graph expansion: ``id`` was reached from ``from_id`` over ``type``."""

    id: str
    from_id: str
    type: RelationType
    depth: int = 1


class FollowLink(BaseModel):
    """``item_id`` FOLLOWS the newest member (PARENT target) of ``topic_id`` stored before the batch.

    Resolved by the store inside the write transaction, so two writers appending to one session
    never both link to the same predecessor from a stale read.
    """

    item_id: Id
    topic_id: Id


class WriteBatch(BaseModel):
    """One atomic write.

    Attributes:
        add: New items (their ids must not exist).
        ensure: Items inserted only if no item of that id exists (idempotent, e.g. session topics).
        update: Replacements of stored items, each carrying the version it was based on.
        edges: Edges added or replaced (keyed by source, target and type).
        follows: FOLLOWS edges resolved in the transaction (see :class:`FollowLink`).
        clear_embeddings: Ids of updated items whose stored embedding goes (an update without an
            embedding otherwise keeps the stored one): a replaced document that is no longer indexed.

    """

    add: list[MemoryItem] = Field(default_factory=list)
    ensure: list[MemoryItem] = Field(default_factory=list)
    update: list[MemoryItem] = Field(default_factory=list)
    clear_embeddings: list[str] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    follows: list[FollowLink] = Field(default_factory=list)


class WriteResult(BaseModel):
    """What a write stored: ids added (``ensure`` items that were inserted included), stored updates."""

    added: list[str] = Field(default_factory=list)
    updated: list[MemoryItem] = Field(default_factory=list)


class ItemVersion(BaseModel):
    """One version of an item kept by MemVault: the item as it was, and what replaced it.

    Attributes:
        item: The item as stored at that version (``embedding`` only when asked for).
        change: ``update`` or ``delete``: what ended this version; None for the current version.
        changed_at: When it was ended (None: current).
        changed_by: The principal whose write ended it (None: current).
        request_id: The request that ended it (None: current); the audit log's entries share it.
        edges: For a ``delete``: the edges removed with the item (restored by a rollback when
            their other end still exists).

    """

    item: MemoryItem
    change: Literal["update", "delete"] | None = None
    changed_at: datetime | None = None
    changed_by: str | None = None
    request_id: str | None = None
    edges: list[Edge] = Field(default_factory=list)


def version_row(
    old: MemoryItem, change: Literal["update", "delete"], ctx: CallContext, at: datetime, edges: Sequence[Edge] = ()
) -> dict[str, Any]:
    """Return the stored form of the version ``old`` that a write of ``ctx`` ends (every backend stores these keys).

    ``item`` and ``edges`` are JSON (the item with its embedding, so a rollback restores it exactly).
    """
    return {
        "item_id": old.id,
        "version": old.version,
        "item": old.model_dump_json(),
        "edges": json.dumps([e.model_dump(mode="json") for e in edges]),
        "change": change,
        "changed_at": at.isoformat(),
        "changed_by": ctx.principal,
        "request_id": ctx.request_id,
    }


def version_from_row(row: dict[str, Any], with_embeddings: bool) -> ItemVersion:
    """Return the :class:`ItemVersion` of a row written from :func:`version_row`."""
    item = MemoryItem.model_validate_json(row["item"])
    if not with_embeddings:
        item = item.model_copy(update={"embedding": None})
    return ItemVersion(
        item=item,
        change=row["change"],
        changed_at=datetime.fromisoformat(row["changed_at"]),
        changed_by=row["changed_by"],
        request_id=row["request_id"],
        edges=[Edge.model_validate(e) for e in json.loads(row["edges"])],
    )


# -- operations ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateCubeOp:
    """Register a new cube (result None). CubeExistsError if it exists."""

    header: CubeHeader


@dataclass(frozen=True, slots=True)
class GetCubeOp:
    """Return a cube's header (read)."""

    cube_id: str


@dataclass(frozen=True, slots=True)
class ListCubesOp:
    """Return the headers of the cubes the caller may read, ordered by id (read).

    ``owner_id``: only that user's. ``id_prefix``: only cubes whose id starts with it (served by
    the cube id's index where the backend has one: the cost is the cubes under the prefix).
    ``namespaced``: only document namespace cubes (True), only the others (False), or both (None);
    with ``owner_id``, served by an index on (owner, namespaced) where the backend has one, so a
    user's default searches do not read the headers of their chat logs.
    """

    owner_id: str | None = None
    id_prefix: str | None = None
    namespaced: bool | None = None


@dataclass(frozen=True, slots=True)
class UpdateCubeOp:
    """Replace a cube's header, version incremented; returns the stored header (admin)."""

    header: CubeHeader


@dataclass(frozen=True, slots=True)
class DeleteCubeOp:
    """Delete a cube with all its items, edges and events (admin)."""

    cube_id: str


@dataclass(frozen=True, slots=True)
class ImportCubeOp:
    """Create a cube together with its content: all of it is stored, or none (the cube too)."""

    header: CubeHeader
    items: Sequence[MemoryItem] = ()
    edges: Sequence[Edge] = ()


@dataclass(frozen=True, slots=True)
class WriteOp:
    """Apply a :class:`WriteBatch` (write); returns a :class:`WriteResult`. See :func:`plan_write`."""

    cube_id: str
    batch: WriteBatch


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Delete items and their edges (write); returns how many items were deleted."""

    cube_id: str
    ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class GetOp:
    """Return the items with these ids that exist in the cube, in the order asked (read)."""

    cube_id: str
    ids: Sequence[str]
    with_embeddings: bool = False


@dataclass(frozen=True, slots=True)
class ListOp:
    """Return the cube's items matching ``filters`` (None: all), in insertion order (read)."""

    cube_id: str
    filters: SearchFilters | None = None
    limit: int | None = None
    offset: int = 0
    with_embeddings: bool = False


@dataclass(frozen=True, slots=True)
class CountOp:
    """Return how many items of the cube match ``filters`` (None: all) (read)."""

    cube_id: str
    filters: SearchFilters | None = None


@dataclass(frozen=True, slots=True)
class EdgesOp:
    """Return edges touching ``ids`` (None: all of the cube) of ``types`` (None: all), in insertion order (read)."""

    cube_id: str
    ids: Sequence[str] | None = None
    types: Sequence[RelationType] | None = None
    direction: Direction = "both"

    def __post_init__(self) -> None:
        if self.direction not in ("out", "in", "both"):
            raise InvalidInputError(f"direction must be 'out', 'in' or 'both', not {self.direction!r}")


@dataclass(frozen=True, slots=True)
class VectorSearchOp:
    """Return up to ``k`` ``(id, cosine)`` pairs, best first, among filtered items (read)."""

    cube_id: str
    embedding: Sequence[float] | np.ndarray
    k: int
    filters: SearchFilters | None = None


@dataclass(frozen=True, slots=True)
class TextSearchOp:
    """Return up to ``k`` ``(id, BM25 score)`` pairs (higher is better) among filtered items (read)."""

    cube_id: str
    query: str
    k: int
    filters: SearchFilters | None = None


@dataclass(frozen=True, slots=True)
class ExpandOp:
    """Walk edges of ``types`` (both directions) from ``ids`` up to ``depth`` hops (read).

    The result lists items reached (not in ``ids``) that match ``filters``, each once over a
    shortest path from the best-ranked seed at that distance (``ids`` are ranked best first).
    """

    cube_id: str
    ids: Sequence[str]
    types: Sequence[RelationType]
    depth: int = 1
    filters: SearchFilters | None = None


@dataclass(frozen=True, slots=True)
class RecordEventOp:
    """Append an event (e.g. an extraction failure) to the cube's event log (write)."""

    cube_id: str
    kind: str
    payload: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryOp:
    """Return an item's versions (MemVault), oldest first, the current one last if it exists (read).

    Every update and delete keeps the version it ends (:class:`ItemVersion`), in the same
    transaction; an item never stored gives an empty list.
    """

    cube_id: str
    item_id: str
    with_embeddings: bool = False


def check_aware(value: object, name: str) -> None:
    """Refuse a time that is not a timezone-aware datetime (store times are UTC; a naive one is ambiguous).

    Raises:
        InvalidInputError: ``value`` is not an aware datetime.

    """
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(f"{name} must be a timezone-aware datetime, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class AsOfOp:
    """Return the cube as it was at ``as_of`` (MemVault point-in-time read; read).

    Items (every status and node kind) and edges as stored at that instant, rebuilt from the
    current rows and the kept versions (:func:`snapshot_as_of`), then narrowed to the caller's read
    scope *as of then*. With ``ids``: only those items (cost: their versions) and the edges among
    them; None: the whole cube (cost: the cube).
    A purged version (:class:`PurgeVersionsOp`) is gone: a time before the retention window reads
    what is left of it.
    """

    cube_id: str
    as_of: datetime
    ids: Sequence[str] | None = None
    with_embeddings: bool = False

    def __post_init__(self) -> None:
        check_aware(self.as_of, "as_of")


@dataclass(frozen=True, slots=True)
class ChangedSinceOp:
    """Return the ids of the items added, updated or deleted after ``since`` (read; the caller's scope).

    Cost: the changes (an index on change times), not the cube. What :meth:`MemOS.rollback_cube`
    undoes.
    """

    cube_id: str
    since: datetime

    def __post_init__(self) -> None:
        check_aware(self.since, "since")


@dataclass(frozen=True, slots=True)
class PurgeVersionsOp:
    """Remove the versions ended before ``before``: the retention purge of MemVault (admin).

    Deletion is soft: a deleted item lives on as its last version (readable by :class:`HistoryOp`
    and :class:`AsOfOp`, restorable by a rollback) until this purge removes it for good. Returns
    how many versions were removed.
    """

    cube_id: str
    before: datetime

    def __post_init__(self) -> None:
        check_aware(self.before, "before")


@dataclass(frozen=True, slots=True)
class ForgetUserOp:
    """Erase everything of one user from a cube (GDPR-style erasure; admin on the cube).

    Items whose subject (``user_id``) or author (``author_id``) is ``user_id`` are deleted with
    their edges, their BM25 postings and dense-index entries, and every kept version of them; so
    are the versions of other items that were about or by the user in an earlier version. Nothing
    is kept as a version. Returns the erased item ids (the audit entry lists ids and the count,
    never contents).
    """

    cube_id: str
    user_id: str

    def __post_init__(self) -> None:
        from memos_agents.schema import validate_id

        validate_id(self.user_id, "user_id")


class CubeSnapshot(BaseModel):
    """A cube as it was at one instant (:class:`AsOfOp`): items in storage order and the edges between them."""

    items: list[MemoryItem] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)


def snapshot_as_of(
    as_of: datetime,
    current: Iterable[MemoryItem],
    versions: Iterable[ItemVersion],
    edges: Iterable[Edge],
    scope: Sequence[Predicate],
    ids: Sequence[str] | None = None,
) -> CubeSnapshot:
    """Rebuild the state at ``as_of`` (the rule every backend's :class:`AsOfOp` shares).

    A stored state is valid from its ``updated_at`` (set by the store when it was written) until
    the ``changed_at`` of the version that kept it (the current state: until now). The state of an
    item at ``as_of`` is the one valid then; an item with none did not exist (not yet added, or
    already deleted).

    Args:
        as_of: The instant (timezone-aware).
        current: Current items (at least those with ``updated_at <= as_of``, or those of ``ids``).
        versions: Kept versions (at least those with ``changed_at > as_of``).
        edges: Current edges (their ``created_at`` is when they were stored) and the edges kept
            with deleted versions; an edge shows when it was stored by then and both ends existed.
        scope: The caller's read scope (:func:`read_scope`), applied to the states at ``as_of``.
        ids: Only these items (None: all).

    """
    wanted = None if ids is None else set(ids)
    state: dict[str, MemoryItem] = {}
    for item in current:
        if item.updated_at <= as_of and (wanted is None or item.id in wanted):
            state[item.id] = item
    for v in sorted(versions, key=lambda v: v.changed_at or as_of):
        item = v.item
        if v.changed_at is None or v.changed_at <= as_of or item.updated_at > as_of or item.id in state:
            continue
        if wanted is None or item.id in wanted:
            state[item.id] = item
    items = [i for i in state.values() if matches(scope, i)]
    alive = {i.id for i in items}
    kept: dict[tuple[str, str, str], Edge] = {}
    for e in edges:
        if e.created_at <= as_of and e.source_id in alive and e.target_id in alive:
            kept[(e.source_id, e.target_id, RelationType(e.type).value)] = e
    return CubeSnapshot(items=items, edges=list(kept.values()))


@dataclass(frozen=True, slots=True)
class ListAuditOp:
    """Return entries of one audit chain, oldest first (audit; see :mod:`memos_agents.infra.audit`).

    ``cube_id`` names the cube's chain (it may be a deleted cube's: then only trusted code may read
    it); None names the store's own chain (operations on no cube, and on ids that name no valid
    cube), which only trusted code may read. An ordinary caller with ``audit`` on the cube sees
    the entries written since the cube was created (not those of an earlier cube of that id).

    Attributes:
        cube_id: The chain.
        actor: Only entries of this actor.
        action: Only this action (e.g. ``write``, ``search.vector``).
        outcome: Only this outcome.
        since: Only entries at or after this time.
        until: Only entries before this time.
        after_seq: Only entries with a greater ``seq`` (paging).
        limit: At most this many (1 to 10,000; default 1,000).

    """

    cube_id: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int = 1000

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, int) and 1 <= self.limit <= 10_000):
            raise InvalidInputError("limit must be an integer from 1 to 10,000")
        if not (isinstance(self.after_seq, int) and self.after_seq >= 0):
            raise InvalidInputError("after_seq must be a non-negative integer")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise InvalidInputError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class VerifyAuditOp:
    """Verify one audit chain against its stored head; return a ``ChainVerification`` (audit).

    ``cube_id`` as in :class:`ListAuditOp` (None: the store's chain, trusted code only). The whole
    chain is read in one transaction, in storage order, one SHA-256 per entry.
    """

    cube_id: str | None = None


@dataclass(frozen=True, slots=True)
class ListAuditChainsOp:
    """Return the ids of every audit chain in the store (``""``: the store's own), sorted (trusted code only)."""


@dataclass(frozen=True, slots=True)
class ListExpiringOp:
    """Return up to ``limit`` memory items whose ``expires_at`` is at or before ``before``, soonest first (read).

    ``expired=False``: items still to expire (any state but ``expired`` and ``frozen``: a frozen
    item never expires); ``expired=True``: items already ``expired`` (for the retention purge).
    Served by an index on ``expires_at`` (cost: the items returned). Items come without
    embeddings, in the caller's read scope.
    """

    cube_id: str
    before: datetime
    expired: bool = False
    limit: int = 1000

    def __post_init__(self) -> None:
        check_aware(self.before, "before")
        if not isinstance(self.limit, int) or not 1 <= self.limit <= 100_000:
            raise InvalidInputError("limit must be an integer from 1 to 100,000")


#: The most items one :class:`RecordAccessOp` records.
MAX_ACCESS_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class RecordAccessOp:
    """Record that items of a cube were used: each id's ``access_count`` grows by its count (read).

    Callers other than trusted code record one use per item, at no later than now (see
    :func:`access_record`).

    MemLifecycle's access tracking (``MemOS`` buffers search hits and reads and records them in
    batches, off the search path). ``last_accessed_at`` becomes ``at`` unless a later access is
    already stored. Neither the version, ``updated_at`` nor MemVault's history move: using a
    memory does not change it. Ids the caller may not read, or that are gone, are passed over.
    Returns how many items were recorded.

    Attributes:
        cube_id: The cube.
        counts: item id -> how often it was used (1 to 1,000,000), at most
            :data:`MAX_ACCESS_ITEMS` ids.
        at: When (timezone-aware).

    """

    cube_id: str
    counts: Mapping[str, int]
    at: datetime

    def __post_init__(self) -> None:
        from memos_agents.schema import validate_id

        check_aware(self.at, "at")
        if not isinstance(self.counts, Mapping) or not 1 <= len(self.counts) <= MAX_ACCESS_ITEMS:
            raise InvalidInputError(f"counts must map 1 to {MAX_ACCESS_ITEMS:,} memory ids to access counts")
        for item_id, n in self.counts.items():
            validate_id(item_id, "memory id")
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000:
                raise InvalidInputError(f"access count of {item_id!r} must be an integer from 1 to 1,000,000")


@dataclass(frozen=True, slots=True)
class ListIdleOp:
    """Return up to ``limit`` ``activated`` memories last used (or, never used, stored) before ``before`` (read).

    Least recently used first, ties by id; for MemLifecycle's decay step. ``after``: a cursor,
    the ``(last use, id)`` of the last memory of a previous page (its ``last_accessed_at`` or,
    never used, ``created_at``): the page starts after it. Served by an index on ``(cube,
    status, last use)`` (cost: the items returned); without embeddings, in the caller's read scope.
    """

    cube_id: str
    before: datetime
    limit: int = 1000
    after: tuple[datetime, str] | None = None

    def __post_init__(self) -> None:
        check_aware(self.before, "before")
        if self.after is not None:
            if not isinstance(self.after, tuple) or len(self.after) != 2 or not isinstance(self.after[1], str):
                raise InvalidInputError("after must be a (datetime, memory id) cursor")
            check_aware(self.after[0], "after")
        if not isinstance(self.limit, int) or not 1 <= self.limit <= 100_000:
            raise InvalidInputError("limit must be an integer from 1 to 100,000")


@dataclass(frozen=True, slots=True)
class ListHotOp:
    """Return up to ``limit`` ``activated`` memories used at least ``min_uses`` times (read).

    Most used first (``access_count`` descending), ties by id ascending; for MemLifecycle's
    promotion of often-used memories (plaintext to KV cache). Served by an index on ``(cube,
    status, access_count)`` where the backend has one (cost: the items returned); without
    embeddings, in the caller's read scope (like :class:`ListIdleOp`: items private to another
    author are not returned to the caller).
    """

    cube_id: str
    min_uses: int = 1
    limit: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.min_uses, int) or isinstance(self.min_uses, bool) or not 1 <= self.min_uses <= 2**62:
            raise InvalidInputError("min_uses must be an integer from 1 to 2**62")
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or not 1 <= self.limit <= 100_000:
            raise InvalidInputError("limit must be an integer from 1 to 100,000")


def access_record(op: RecordAccessOp, ctx: CallContext) -> tuple[datetime, Mapping[str, int]]:
    """Return the ``(time, counts)`` a store records for ``op`` run by ``ctx``.

    Trusted code (MemOS's access tracker, whose counts are uses it saw) is taken at its word. Any
    other caller records at most one use per item per op, at no later than the store's clock: a
    reader cannot make a memory look used in the future, nor a thousand times at once.
    """
    if ctx.system:
        return op.at, op.counts
    from memos_agents.schema import utcnow

    return min(op.at, utcnow()), dict.fromkeys(op.counts, 1)


def expiring_statuses(expired: bool) -> tuple[str, ...]:
    """Return the states :class:`ListExpiringOp` selects: ``expired``, or every state that can still expire."""
    from memos_agents.schema import LifecycleState

    if expired:
        return (LifecycleState.EXPIRED.value,)
    return tuple(s.value for s in LifecycleState if s not in (LifecycleState.EXPIRED, LifecycleState.FROZEN))


@dataclass(frozen=True, slots=True)
class CreateUserOp:
    """Register a user (system-wide admins and trusted code); returns the stored :class:`UserRecord`.

    The store sets ``created_at``, ``created_by`` (the caller) and clears ``disabled_at``.
    ``UserExistsError`` if the id is registered (disabled ids too: ids are never reused);
    ``InvalidInputError`` for a reserved id (``system``, ``*``).
    """

    user: UserRecord


@dataclass(frozen=True, slots=True)
class GetUserOp:
    """Return a user's record (the user itself, system-wide admins, trusted code). ``UserNotFoundError`` if none."""

    user_id: str


@dataclass(frozen=True, slots=True)
class ListUsersOp:
    """Return the registered users ordered by id, disabled ones only with ``include_disabled`` (admins)."""

    include_disabled: bool = False


@dataclass(frozen=True, slots=True)
class UpdateUserOp:
    """Replace a user's ``name``, ``kind`` and ``disabled_at`` (admins); returns the stored record.

    ``created_at`` and ``created_by`` stay as stored. ``UserNotFoundError`` if none.
    """

    user: UserRecord


@dataclass(frozen=True, slots=True)
class ListEventsOp:
    """Return the cube's events of ``kind`` (None: all), oldest first (read).

    Each event is ``{"kind", "payload", "created_at"}``.
    """

    cube_id: str
    kind: str | None = None


# -- the MemStore registry (memos_agents.infra.registry: models and the ops' bodies) ---------------------
def _check_registry_name(name: object, version: object = None) -> None:
    from memos_agents.infra.registry import check_name, check_version

    check_name(name)
    if version is not None:
        check_version(version)


@dataclass(frozen=True, slots=True)
class PublishOp:
    """Record ``entry`` in the MemStore registry; returns the stored entry (``published_at`` set).

    The caller must be the entry's publisher (or trusted code, a system-wide admin) and hold share
    or admin on its source cube; a snapshot entry's read-only cube (``name@version``) must exist,
    owned by the publisher (created in the same batch by an :class:`ImportCubeOp`). A signed
    entry must verify, with the key the registry recorded for its publisher if it has one (the
    first signed publication records it). ``RegistryEntryExistsError`` for a version already
    published; a name's later versions only by its first publisher.
    """

    entry: RegistryEntry

    def __post_init__(self) -> None:
        if not isinstance(self.entry, RegistryEntry):
            raise InvalidInputError(f"entry must be a RegistryEntry, not {type(self.entry).__name__}")
        validated(RegistryEntry, self.entry.model_dump(), "registry entry")


@dataclass(frozen=True, slots=True)
class GetPublishedOp:
    """Return the entry ``name@version`` (revoked ones too), or the latest current release the caller sees.

    ``RegistryEntryNotFoundError`` when there is none the caller may see (the same for both).
    """

    name: str
    version: str | None = None

    def __post_init__(self) -> None:
        _check_registry_name(self.name, self.version)


@dataclass(frozen=True, slots=True)
class ListPublishedOp:
    """Return the entries the caller sees, by name then newest version first, at most ``limit``.

    Filters: ``name`` (exact), ``text`` (every word in the name, description or tags), ``tag``,
    ``publisher``; revoked entries only with ``include_revoked``. Reads every entry of the
    registry when no name is given (registries hold entries per published version, not memories).
    """

    text: str | None = None
    name: str | None = None
    tag: str | None = None
    publisher: str | None = None
    include_revoked: bool = False
    limit: int = 100

    def __post_init__(self) -> None:
        if self.name is not None:
            _check_registry_name(self.name)
        for what, value in (("text", self.text), ("tag", self.tag), ("publisher", self.publisher)):
            if value is not None and (not isinstance(value, str) or len(value) > 1_000):
                raise InvalidInputError(f"{what} must be a string of at most 1,000 characters")
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or not 1 <= self.limit <= 1_000:
            raise InvalidInputError("limit must be an integer from 1 to 1,000")


@dataclass(frozen=True, slots=True)
class SubscribeOp:
    """Subscribe the caller to ``name@version`` (None: the latest current release); returns a :class:`Subscription`.

    One subscription per subscriber and name: subscribing to another version or access replaces
    it. Grants role reader (``access="read"``) or writer (``"write"``: live entries published with
    write access) on the entry's cube, in this transaction, unless the caller already has those
    permissions. Refused: an entry the caller does not see or that was revoked
    (``RegistryEntryNotFoundError``), write access not offered (``PermissionDeniedError``), a
    deleted cube (``CubeNotFoundError``), a cube whose ACL is full (``InvalidInputError``).
    """

    name: str
    version: str | None = None
    access: str = "read"

    def __post_init__(self) -> None:
        _check_registry_name(self.name, self.version)
        if self.access not in ("read", "write"):
            raise InvalidInputError(f"access must be 'read' or 'write', not {self.access!r}")


@dataclass(frozen=True, slots=True)
class UnsubscribeOp:
    """End the caller's subscription to ``name`` and remove the grant it added; returns how many ended (0 or 1)."""

    name: str

    def __post_init__(self) -> None:
        _check_registry_name(self.name)


@dataclass(frozen=True, slots=True)
class RevokePublishedOp:
    """The publisher (or a system-wide admin) revokes: returns a :class:`RevokeResult`.

    With ``subscriber``: that subscriber's subscription to ``name`` (``version``: only if it is
    to that version) ends and its grant is removed. Without: the entries (one ``version``, or
    every version of ``name``) are withdrawn (kept, marked revoked, so a version is never
    reused; hidden from listings) and all their subscriptions end. Access ends with the transaction.
    """

    name: str
    version: str | None = None
    subscriber: str | None = None

    def __post_init__(self) -> None:
        from memos_agents.schema import validate_id

        _check_registry_name(self.name, self.version)
        if self.subscriber is not None:
            validate_id(self.subscriber, "subscriber")


@dataclass(frozen=True, slots=True)
class ListSubscriptionsOp:
    """Return subscriptions: the caller's own, or with ``name`` every subscriber's when the caller publishes it.

    ``everyone``: every subscription of the registry (system-wide admins, trusted code). Each
    carries ``active``: whether its subscriber may still read the cube.
    """

    name: str | None = None
    everyone: bool = False

    def __post_init__(self) -> None:
        if self.name is not None:
            _check_registry_name(self.name)


@dataclass(frozen=True, slots=True)
class GetPublisherKeyOp:
    """Return the Ed25519 public key (hex) the registry recorded for ``publisher`` (None: none); public to everyone."""

    publisher: str

    def __post_init__(self) -> None:
        from memos_agents.schema import validate_id

        validate_id(self.publisher, "publisher")


#: The registry's ops (each backend serves their bodies, :func:`memos_agents.infra.registry.body`).
REGISTRY_OPS: tuple[type, ...] = (
    PublishOp,
    GetPublishedOp,
    ListPublishedOp,
    SubscribeOp,
    UnsubscribeOp,
    RevokePublishedOp,
    ListSubscriptionsOp,
    GetPublisherKeyOp,
)


Op = (
    CreateCubeOp
    | GetCubeOp
    | ListCubesOp
    | UpdateCubeOp
    | DeleteCubeOp
    | ImportCubeOp
    | WriteOp
    | DeleteOp
    | GetOp
    | ListOp
    | CountOp
    | EdgesOp
    | VectorSearchOp
    | TextSearchOp
    | ExpandOp
    | RecordEventOp
    | ListEventsOp
    | HistoryOp
    | AsOfOp
    | ChangedSinceOp
    | PurgeVersionsOp
    | ForgetUserOp
    | ListAuditOp
    | VerifyAuditOp
    | ListAuditChainsOp
    | ListExpiringOp
    | RecordAccessOp
    | ListIdleOp
    | ListHotOp
    | CreateUserOp
    | GetUserOp
    | ListUsersOp
    | UpdateUserOp
    | PublishOp
    | GetPublishedOp
    | ListPublishedOp
    | SubscribeOp
    | UnsubscribeOp
    | RevokePublishedOp
    | ListSubscriptionsOp
    | GetPublisherKeyOp
)

#: The cube permission each op needs (None: checked otherwise; a list filters by read permission).
OP_PERMISSION: dict[type, Permission | None] = {
    CreateCubeOp: None,
    ImportCubeOp: None,
    ListCubesOp: None,
    GetCubeOp: Permission.READ,
    UpdateCubeOp: None,  # check_header_update: admin, or share for ACL-only changes
    DeleteCubeOp: Permission.ADMIN,
    WriteOp: Permission.WRITE,
    DeleteOp: Permission.DELETE,
    RecordEventOp: Permission.WRITE,
    GetOp: Permission.READ,
    ListOp: Permission.READ,
    CountOp: Permission.READ,
    EdgesOp: Permission.READ,
    VectorSearchOp: Permission.READ,
    TextSearchOp: Permission.READ,
    ExpandOp: Permission.READ,
    ListEventsOp: Permission.READ,
    HistoryOp: Permission.READ,
    AsOfOp: Permission.READ,
    ChangedSinceOp: Permission.READ,
    PurgeVersionsOp: Permission.ADMIN,
    ForgetUserOp: Permission.ADMIN,
    ListAuditOp: None,  # authorize_audit: audit on the cube, or trusted code for a deleted cube / the store
    VerifyAuditOp: None,
    ListAuditChainsOp: None,
    ListExpiringOp: Permission.READ,
    RecordAccessOp: Permission.READ,  # using what one may read; counts only items in the caller's read scope
    ListIdleOp: Permission.READ,
    ListHotOp: Permission.READ,
    CreateUserOp: None,  # authorize_users: system-wide admins and trusted code
    GetUserOp: None,
    ListUsersOp: None,
    UpdateUserOp: None,
    # the registry's: checked in their bodies (visibility, publisher, share on the source cube)
    **dict.fromkeys(REGISTRY_OPS),
}

#: Ops that write (a backend opens a write transaction for a batch holding any of them).
WRITE_OPS: tuple[type, ...] = (
    CreateCubeOp,
    UpdateCubeOp,
    DeleteCubeOp,
    ImportCubeOp,
    WriteOp,
    DeleteOp,
    RecordEventOp,
    PurgeVersionsOp,
    ForgetUserOp,
    CreateUserOp,
    UpdateUserOp,
    RecordAccessOp,
    PublishOp,
    SubscribeOp,
    UnsubscribeOp,
    RevokePublishedOp,
)


def handles(*op_types: type) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Mark a backend method as the handler of ``op_types`` (collected by :class:`BaseMemoryStore`)."""

    def mark(fn: Callable[..., T]) -> Callable[..., T]:
        fn._handles = op_types  # type: ignore[attr-defined]
        return fn

    return mark


def check_permission(op: Any) -> Permission | None:
    """Return the permission ``op`` needs (see :data:`OP_PERMISSION`).

    Raises:
        InvalidInputError: Not a store op.

    """
    try:
        return OP_PERMISSION[type(op)]
    except KeyError:
        raise InvalidInputError(f"not a store operation: {type(op).__name__}") from None


# -- the audit log --------------------------------------------------------------------------------------
#: The chain of operations on no cube (and on ids that name no valid cube).
STORE_CHAIN = ""

#: The action each op is audited as.
AUDIT_ACTIONS: dict[type, str] = {
    CreateCubeOp: "cube.create",
    GetCubeOp: "cube.get",
    ListCubesOp: "cube.list",
    UpdateCubeOp: "cube.update",
    DeleteCubeOp: "cube.delete",
    ImportCubeOp: "cube.import",
    WriteOp: "write",
    DeleteOp: "delete",
    GetOp: "get",
    ListOp: "list",
    CountOp: "count",
    EdgesOp: "edges",
    VectorSearchOp: "search.vector",
    TextSearchOp: "search.text",
    ExpandOp: "search.expand",
    RecordEventOp: "event.record",
    ListEventsOp: "event.list",
    HistoryOp: "history",
    AsOfOp: "history.as_of",
    ChangedSinceOp: "history.changes",
    PurgeVersionsOp: "vault.purge",
    ForgetUserOp: "forget_user",
    ListAuditOp: "audit.list",
    VerifyAuditOp: "audit.verify",
    ListAuditChainsOp: "audit.chains",
    ListExpiringOp: "lifecycle.expiring",
    RecordAccessOp: "lifecycle.access",
    ListIdleOp: "lifecycle.idle",
    ListHotOp: "lifecycle.hot",
    CreateUserOp: "user.create",
    GetUserOp: "user.get",
    ListUsersOp: "user.list",
    UpdateUserOp: "user.update",
    PublishOp: "registry.publish",
    GetPublishedOp: "registry.get",
    ListPublishedOp: "registry.list",
    SubscribeOp: "registry.subscribe",
    UnsubscribeOp: "registry.unsubscribe",
    RevokePublishedOp: "registry.revoke",
    ListSubscriptionsOp: "registry.subscriptions",
    GetPublisherKeyOp: "registry.key",
}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One operation to audit, before it is sealed into its chain (see :func:`seal_records`).

    Attributes:
        chain: The chain it goes to: the cube's id, or :data:`STORE_CHAIN`.
        action: :data:`AUDIT_ACTIONS` of the op.
        cube_id: The cube named (None: none, or not a valid cube id).
        item_ids: Items read or written (ids only).
        outcome: How it ended.
        reason: Why it was refused or failed (an error type and our own message; never contents).

    """

    chain: str
    action: str
    cube_id: str | None
    item_ids: tuple[str, ...] = ()
    outcome: AuditOutcome = AuditOutcome.OK
    reason: str | None = None


def op_cube(op: Any) -> str | None:
    """Return the cube an op is audited on: its valid cube id, or None (the store's chain: none, or malformed)."""
    if isinstance(op, CreateCubeOp | ImportCubeOp | UpdateCubeOp):
        cube_id = getattr(op.header, "cube_id", None)  # a header built by model_copy may hold anything
    else:
        cube_id = getattr(op, "cube_id", None)
    if not isinstance(cube_id, str):
        return None
    from memos_agents.schema import validate_id

    try:
        return validate_id(cube_id, "cube_id")
    except InvalidInputError:
        return None  # a crafted id: audited on the store's chain, without the id


def _touched_ids(op: Any, result: Any) -> tuple[str, ...]:
    """Return the item ids an op read or wrote, from the op and its result (never contents)."""
    if isinstance(op, WriteOp) and isinstance(result, WriteResult):
        return (*result.added, *(item.id for item in result.updated))
    if isinstance(op, DeleteOp):
        return tuple(op.ids)
    if isinstance(op, ImportCubeOp):
        return tuple(item.id for item in op.items)
    if isinstance(op, GetOp | ListOp | ListExpiringOp | ListIdleOp | ListHotOp) and isinstance(result, list):
        return tuple(item.id for item in result)
    if isinstance(op, VectorSearchOp | TextSearchOp) and isinstance(result, list):
        return tuple(hit[0] for hit in result)
    if isinstance(op, ExpandOp) and isinstance(result, list):
        return tuple(n.id for n in result)
    if isinstance(op, HistoryOp):
        return (op.item_id,)
    if isinstance(op, EdgesOp) and op.ids is not None:
        return tuple(op.ids)
    if isinstance(op, AsOfOp) and isinstance(result, CubeSnapshot):
        return tuple(i.id for i in result.items)
    if isinstance(op, ChangedSinceOp | ForgetUserOp) and isinstance(result, list):
        return tuple(result)
    if isinstance(op, RecordAccessOp):
        return tuple(op.counts)
    if isinstance(op, SubscribeOp) and isinstance(result, Subscription):
        return (result.key,)
    return _requested_ids(op) if isinstance(op, (CreateUserOp, GetUserOp, UpdateUserOp, *REGISTRY_OPS)) else ()


def _requested_ids(op: Any) -> tuple[str, ...]:
    """Return the item ids an op named (a refused op's record keeps what it tried to reach)."""
    if isinstance(op, WriteOp):
        b = op.batch
        return tuple(dict.fromkeys(i.id for i in (*b.add, *b.ensure, *b.update)))
    if isinstance(op, DeleteOp | GetOp | ExpandOp):
        return tuple(str(i) for i in op.ids)
    if isinstance(op, HistoryOp):
        return (str(op.item_id),)
    if isinstance(op, EdgesOp | AsOfOp) and op.ids is not None:
        return tuple(str(i) for i in op.ids)
    if isinstance(op, CreateUserOp | UpdateUserOp):
        user_id = getattr(op.user, "user_id", None)  # the user the op is about (a record may hold anything)
        return (user_id,) if isinstance(user_id, str) else ()
    if isinstance(op, GetUserOp):
        return (str(op.user_id),)
    if isinstance(op, PublishOp):
        return (op.entry.key,)
    if isinstance(op, GetPublishedOp | SubscribeOp | RevokePublishedOp) and op.version is not None:
        return (f"{op.name}@{op.version}",)
    if isinstance(op, GetPublishedOp | SubscribeOp | UnsubscribeOp | RevokePublishedOp):
        return (op.name,)
    if isinstance(op, RecordAccessOp):
        return tuple(str(i) for i in op.counts)
    return ()


def audit_record(op: Any, result: Any) -> AuditRecord:
    """Return the record of ``op`` that succeeded with ``result``."""
    cube_id = op_cube(op)
    return AuditRecord(
        chain=cube_id if cube_id is not None else STORE_CHAIN,
        action=AUDIT_ACTIONS[type(op)],
        cube_id=cube_id,
        item_ids=_touched_ids(op, result),
    )


def refusal_reason(exc: BaseException) -> tuple[AuditOutcome, str]:
    """Return the outcome and the logged reason of an op that raised ``exc``.

    Refusals by an access check or a policy (``PermissionDeniedError``, ``SensitiveDataError``) are
    ``denied``; anything else ``failed``. The reason is the error's type and, for our own errors
    (whose messages name ids, kinds and limits, never memory contents), its message; for any other
    exception (a backend's, whose message may quote data) only its type.
    """
    from memos_agents.errors import MemOSError

    outcome = (
        AuditOutcome.DENIED if isinstance(exc, PermissionDeniedError | SensitiveDataError) else AuditOutcome.FAILED
    )
    if isinstance(exc, MemOSError):
        return outcome, f"{type(exc).__name__}: {str(exc)[:1500]}"
    return outcome, type(exc).__name__


def audit_failure(ops: Sequence[Any], done: int, exc: BaseException) -> list[AuditRecord]:
    """Return the records of a batch that raised ``exc`` after ``done`` of its ops had finished.

    With ``done < len(ops)`` op ``done`` failed and carries the reason, the batch's other ops
    being recorded as ``failed``, "not applied", since nothing of the batch was kept; with every
    op finished the batch failed at commit and every op carries the reason. Each record keeps
    the item ids its op named.
    """
    outcome, reason = refusal_reason(exc)
    records = []
    for i, op in enumerate(ops):
        cube_id = op_cube(op)
        here = i == done or done >= len(ops)
        records.append(
            AuditRecord(
                chain=cube_id if cube_id is not None else STORE_CHAIN,
                action=AUDIT_ACTIONS[type(op)],
                cube_id=cube_id,
                item_ids=_requested_ids(op),
                outcome=outcome if here else AuditOutcome.FAILED,
                reason=reason if here else "not applied: another operation of its batch failed",
            )
        )
    return records


def seal_records(
    records: Sequence[AuditRecord], heads: dict[str, ChainHead | None], ctx: CallContext, at: datetime
) -> list[tuple[str, AuditEntry]]:
    """Seal ``records`` onto their chains, in order; return ``(chain, entry)`` pairs.

    ``heads`` maps each chain named by a record to its stored head (None: an empty chain) and is
    updated in place to the new heads, which the backend stores with the entries.
    """
    out = []
    for record in records:
        entry = seal(
            heads.get(record.chain),
            at=at,
            actor=ctx.principal,
            action=record.action,
            request_id=ctx.request_id,
            cube_id=record.cube_id,
            item_ids=record.item_ids,
            outcome=record.outcome,
            reason=record.reason,
        )
        heads[record.chain] = ChainHead(entry.seq, entry.hash)
        out.append((record.chain, entry))
    return out


def authorize_audit(header: CubeHeader | None, ctx: CallContext, cube_id: str | None) -> datetime | None:
    """Check that ``ctx`` may read the audit chain of ``cube_id`` (None: the store's chain).

    Returns the earliest time the caller may see (the cube's creation for an ordinary caller, so
    that the owner of a new cube never reads an earlier, deleted cube's entries; None: all).

    Raises:
        PermissionDeniedError: The store's chain for an ordinary caller, or no ``audit`` permission.
        CubeNotFoundError: An ordinary caller named a cube that does not exist.

    """
    from memos_agents.errors import CubeNotFoundError

    if ctx.unrestricted:
        return None
    if cube_id is None:
        raise PermissionDeniedError(f"user {ctx.principal!r} may not read the store's audit chain")
    if header is None:
        raise CubeNotFoundError(f"no cube {cube_id!r}")
    authorize(header, ctx, Permission.AUDIT)
    return header.created_at


def audit_row_matches(entry: AuditEntry, op: ListAuditOp, floor: datetime | None) -> bool:
    """Whether ``entry`` passes ``op``'s filters (and the caller's ``floor`` from :func:`authorize_audit`)."""
    return (
        entry.seq > op.after_seq
        and (op.actor is None or entry.actor == op.actor)
        and (op.action is None or entry.action == op.action)
        and (op.outcome is None or entry.outcome == op.outcome)
        and (op.since is None or entry.at >= op.since)
        and (op.until is None or entry.at < op.until)
        and (floor is None or entry.at >= floor)
    )


# -- shared checks and the write planning step ----------------------------------------------------------
def check_embedding_dim(items: Iterable[MemoryItem], dim: int | None) -> int | None:
    """Check that every embedding is finite and has the cube's dimension; return it (set by the first one if None).

    Raises:
        EmbeddingDimensionError: An embedding's length differs.
        InvalidEmbeddingError: An embedding holds NaN or infinity (one such vector would flatten the
            dense scores of its whole cube and make the cube's export unreadable).

    """
    for item in items:
        if item.embedding is None:
            continue
        if dim is None:
            dim = len(item.embedding)
        check_vector(item.embedding, dim, f"item {item.id}: embedding")
    return dim


def check_vector(vector: Sequence[float] | np.ndarray, dim: int, what: str = "query embedding") -> np.ndarray:
    """Return ``vector`` as a float32 array after checking its shape ``(dim,)`` and that every value is finite.

    Raises:
        EmbeddingDimensionError: The vector is not of shape ``(dim,)``.
        InvalidEmbeddingError: It holds NaN or infinity.

    """
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidEmbeddingError(f"{what} is not a vector of numbers") from exc
    if arr.shape != (dim,):
        raise EmbeddingDimensionError(f"{what} has shape {arr.shape}; the cube has dimension {dim}")
    if not np.isfinite(arr).all():
        raise InvalidEmbeddingError(f"{what} holds NaN or infinite values")
    return arr


def check_depth(depth: object) -> int:
    """Check a graph-expansion depth: an integer from 1 to :data:`MAX_EXPAND_DEPTH`.

    Raises:
        InvalidInputError: Anything else.

    """
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_EXPAND_DEPTH:
        raise InvalidInputError(f"depth must be an integer from 1 to {MAX_EXPAND_DEPTH}, got {depth!r}")
    return depth


@dataclass(frozen=True, slots=True)
class StoredItem:
    """What the planner needs to know of a stored item (``content``: its :func:`content_key`, None: unknown).

    ``access_count`` and ``last_accessed_at`` are its access tracking, which an update keeps.
    """

    version: int
    node_kind: str
    embedding: list[float] | None = None
    author_id: str | None = None
    visibility: str = Visibility.CUBE.value
    content: str | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None


def content_key(search_text: str, metadata_json: str, document_json: str | None = None) -> str:
    """Return a fingerprint of an item's checked content: text, key and tags (``search_text``), metadata and document.

    Args:
        search_text: The stored ``search_text``.
        metadata_json: The stored metadata JSON.
        document_json: The stored document JSON (None: no document).

    """
    import hashlib

    doc = "" if document_json is None else f"\0{document_json}"
    return hashlib.sha256(f"{search_text}\0{metadata_json}{doc}".encode("utf-8", "surrogatepass")).hexdigest()


def item_content_key(item: MemoryItem) -> str:
    """Return :func:`content_key` of ``item`` as the codec stores it."""
    from memos_agents.plaintext.stores.codec import search_text

    document = None if item.document is None else json.dumps(item.document, ensure_ascii=False)
    return content_key(search_text(item), json.dumps(item.metadata), document)


@dataclass(frozen=True, slots=True)
class WriteProbe:
    """The ids a backend must look up (inside the write transaction) before :func:`plan_write`.

    Attributes:
        ids: Every id whose existence matters: new, ensured and updated items and edge ends.
        updated: Ids whose version, node kind, embedding and author are needed.
        topics: Topics whose newest member (PARENT target) FOLLOWS links need.

    """

    ids: list[str]
    updated: list[str]
    topics: list[str]


def write_probe(batch: WriteBatch) -> WriteProbe:
    """Return what a backend must read before planning ``batch``."""
    ends = [x for e in batch.edges for x in (e.source_id, e.target_id)]
    ids = [i.id for i in batch.add] + [i.id for i in batch.ensure] + [i.id for i in batch.update] + ends
    ids += [f.item_id for f in batch.follows]
    return WriteProbe(
        ids=list(dict.fromkeys(ids)),
        updated=list(dict.fromkeys(i.id for i in batch.update)),
        topics=list(dict.fromkeys(f.topic_id for f in batch.follows)),
    )


@dataclass
class WritePlan:
    """The rows a write stores, checked: insert ``insert``, replace ``replace``, upsert ``edges``.

    Attributes:
        insert: New items, ``cube_id`` and ``author_id`` set, in batch order (ensured ones included).
        replace: Updated items at their new version.
        edges: Edges to add or replace (FOLLOWS links resolved).
        dim: The cube's embedding dimension after the write.
        dim_changed: Whether the write sets it (the first embedding of the cube).
        result: What the write returns.

    """

    insert: list[MemoryItem]
    replace: list[MemoryItem]
    edges: list[Edge]
    dim: int | None
    dim_changed: bool
    result: WriteResult


def document_strings(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(path, string)`` for every string of a JSON document, its keys included (for redaction)."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[object, str]] = [(document, "document")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                out.append((f"{path} key", str(k)))
                stack.append((v, f"{path}[{k!r}]"))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{n}]") for n, v in enumerate(node))
        elif isinstance(node, str):
            out.append((path, node))
        elif isinstance(node, int | float) and not isinstance(node, bool):  # a card number stored as a number
            out.append((path, str(node)))
    return out


def refuse_unredacted(cube_id: str, items: Sequence[MemoryItem], policy: RedactionPolicy | None) -> None:
    """Refuse a write whose items hold personal data or secrets the cube's policy covers.

    The facade masks (or refuses) texts before they are embedded; this check is the store's own,
    so that no path that skips the facade (a store op, a framework adapter) stores what the policy
    keeps out. Texts masked with the policy's mask pass: the masks hold no finding. Cost: one
    :meth:`~memos_agents.infra.redaction.Redactor.detect` per non-empty text field (about 12 µs
    for a conversation turn); nothing with the policy ``off``.

    Args:
        cube_id: The cube written to (for the message).
        items: The items of the write (new, ensured and updated).
        policy: The cube's :class:`~memos_agents.infra.redaction.RedactionPolicy` (None: no check).

    Raises:
        SensitiveDataError: The first item with a finding, naming its id, the field, the kinds and
            their offsets, never the values. Nothing of the write is stored.

    """
    if policy is None or policy.mode is RedactionMode.OFF:
        return
    refuse = policy.model_copy(update={"mode": RedactionMode.REFUSE})  # mask too: what is left is refused
    redactor = default_redactor()
    for item in items:
        fields = [("text", item.text), ("key", item.key or "")]
        fields += [(f"tags[{n}]", tag) for n, tag in enumerate(item.tags)]
        fields += [(f"metadata[{k!r}]", v) for k, v in item.metadata.items() if isinstance(v, str)]
        if item.document is not None:
            fields += document_strings(item.document)
        for name, value in fields:
            try:
                redactor.redact(value, refuse)
            except SensitiveDataError as exc:
                raise SensitiveDataError(
                    f"memory {item.id!r}, {name}: {exc}; cube {cube_id!r} redacts with mode "
                    f"{policy.mode.value!r}: nothing was stored",
                    kinds=exc.kinds,
                    spans=exc.spans,
                ) from None


def check_items(items: Iterable[object]) -> list[MemoryItem]:
    """Return items handed to the store validated as if they had just been built (see :func:`check_header`).

    ``model_copy(update=...)`` skips pydantic's validation, so an item could carry an id, a tag or
    a text the model refuses (stored, it would make the cube's export impossible to import again),
    or a naive or non-UTC time (compared wrongly by expiry). The returned copies hold the
    validated fields (times in UTC) and the original embedding, which
    :func:`check_embedding_dim` checks with its own error types.

    Raises:
        InvalidInputError: Not a :class:`MemoryItem`, or a field the model refuses (named, without the value).

    """
    out = []
    for item in items:
        if not isinstance(item, MemoryItem):
            raise InvalidInputError(f"a memory item must be a MemoryItem, not {type(item).__name__}")
        valid = validated(MemoryItem, item.model_dump(exclude={"embedding"}, warnings=False), "memory item")
        valid.embedding = item.embedding
        out.append(valid)
    return out


def plan_write(
    cube_id: str,
    batch: WriteBatch,
    *,
    ctx: CallContext,
    dim: int | None,
    existing: set[str],
    stored: dict[str, StoredItem],
    newest_member: dict[str, str],
    now: datetime,
    redaction: RedactionPolicy | None = None,
    may_publish: bool = True,
    stamp: bool = True,
) -> WritePlan:
    """Check ``batch`` against the stored state and return the rows to write (the one write-planning step).

    Args:
        cube_id: The cube.
        batch: The write.
        ctx: The caller: a non-system principal becomes each new item's ``author_id`` and cannot
            change a stored item's.
        dim: The cube's embedding dimension (None: not yet set).
        existing: Which ids of :func:`write_probe` exist in the cube.
        stored: Version, node kind, embedding and author of each stored item among ``probe.updated``.
        newest_member: Newest member of each topic among ``probe.topics`` that has one.
        now: The write time (``updated_at`` of updates).
        redaction: The cube's redaction policy (None or ``off``: not checked); see
            :func:`refuse_unredacted`.
        may_publish: Whether the caller may store ``public`` items (``share`` on the cube, or
            unrestricted): making an item readable by anyone is sharing it.
        stamp: Set ``updated_at`` of new items and ``created_at`` of edges to ``now`` (when they
            entered the store: MemVault's point-in-time reads rely on it); False for an import,
            which stores an archive as it was.

    Returns:
        The plan; the backend writes it as it is.

    Raises:
        InvalidInputError: An item the model refuses (see :func:`check_items`), duplicate ids in
            the batch, a new id that exists, an update that changes an item's node kind, a
            dangling edge.
        EmbeddingDimensionError / InvalidEmbeddingError: A bad embedding.
        MemoryNotFoundError: An updated item does not exist, or is another author's private item
            (which the caller may not read, so for it does not exist).
        VersionConflictError: An updated item's version is not the stored one.
        SensitiveDataError: An item's text, key, tags or metadata still hold what ``redaction`` covers.
        PermissionDeniedError: A ``public`` item without ``may_publish``.

    """
    batch = batch.model_copy(
        update={"add": check_items(batch.add), "ensure": check_items(batch.ensure), "update": check_items(batch.update)}
    )
    # an update that leaves the stored text, key, tags and metadata as they are adds nothing the
    # policy covers (e.g. a lifecycle move of a memory stored before the policy was tightened)
    changed = [i for i in batch.update if i.id not in stored or stored[i.id].content != item_content_key(i)]
    refuse_unredacted(cube_id, [*batch.add, *batch.ensure, *changed], redaction)
    if not may_publish:
        public = [i.id for i in [*batch.add, *batch.ensure, *batch.update] if i.visibility is Visibility.PUBLIC]
        if public:
            raise PermissionDeniedError(
                f"user {ctx.principal!r} may not make memories public in cube {cube_id!r} (needs share): "
                f"{sorted(public)[:5]}"
            )

    def own(item: MemoryItem) -> MemoryItem:
        author = item.author_id if ctx.system else ctx.principal
        update: dict[str, Any] = {"cube_id": cube_id, "author_id": author}
        if stamp:  # a new memory: stored now, never used yet (an import keeps the archive's tracking)
            update.update(updated_at=now, access_count=0, last_accessed_at=None)
        return item.model_copy(update=update)

    new_ids = [i.id for i in batch.add]
    ensure_ids = [i.id for i in batch.ensure]
    if len(set(new_ids)) != len(new_ids) or len(set(ensure_ids)) != len(ensure_ids) or set(new_ids) & set(ensure_ids):
        raise InvalidInputError("duplicate item ids in one write")
    taken = [i for i in new_ids if i in existing]
    if taken:
        raise ItemExistsError(f"item ids already exist in cube {cube_id!r}: {sorted(taken)[:5]}")
    insert = [own(i) for i in batch.add]
    inserted_ensured = [own(i) for i in batch.ensure if i.id not in existing]
    new_dim = check_embedding_dim([*insert, *inserted_ensured, *batch.update], dim)
    replace: list[MemoryItem] = []
    clear = set(batch.clear_embeddings)
    for item in batch.update:
        row = stored.get(item.id)
        if row is not None and not (
            ctx.unrestricted or row.visibility != Visibility.PRIVATE.value or row.author_id == ctx.principal
        ):
            row = None  # another author's private item: as if it did not exist
        kept = None if row is None or item.id in clear else row.embedding
        new = next_version(item, cube_id, None if row is None else row.version, kept, now)
        assert row is not None  # next_version raised otherwise
        if row.node_kind != item.node_kind.value:
            raise InvalidInputError(f"memory {item.id!r}: the node kind of a stored item cannot change")
        if not ctx.system:  # who wrote an item is provenance: only trusted code may change it
            new = new.model_copy(update={"author_id": row.author_id})
        # access tracking is the store's: an update keeps it (backends leave its columns as they are)
        new = new.model_copy(update={"access_count": row.access_count, "last_accessed_at": row.last_accessed_at})
        stored[item.id] = StoredItem(
            new.version,
            row.node_kind,
            row.embedding,
            new.author_id,
            new.visibility.value,
            access_count=row.access_count,
            last_accessed_at=row.last_accessed_at,
        )
        replace.append(new)
    edges = [e.model_copy(update={"created_at": now}) for e in batch.edges] if stamp else list(batch.edges)
    for link in batch.follows:
        previous = newest_member.get(link.topic_id)
        if previous is not None and previous != link.item_id:
            edges.append(Edge(source_id=link.item_id, target_id=previous, type=RelationType.FOLLOWS, created_at=now))
    known = existing | set(new_ids) | set(ensure_ids) | set(newest_member.values())  # stored members
    missing = sorted({x for e in edges for x in (e.source_id, e.target_id)} - known)
    if missing:
        raise InvalidInputError(f"edge ends not in cube {cube_id!r}: {missing[:5]}")
    return WritePlan(
        insert=[*insert, *inserted_ensured],
        replace=replace,
        edges=edges,
        dim=new_dim,
        dim_changed=new_dim != dim,
        result=WriteResult(added=[*new_ids, *(i.id for i in inserted_ensured)], updated=replace),
    )


def next_version(
    item: MemoryItem,
    cube_id: str,
    stored_version: int | None,
    stored_embedding: Sequence[float] | None,
    now: datetime,
) -> MemoryItem:
    """Return the copy of ``item`` that an update stores.

    Args:
        item: The update, carrying the version it was based on.
        cube_id: The cube.
        stored_version: The stored item's version (None: there is no stored item).
        stored_embedding: The stored embedding, kept when ``item`` has none.
        now: The update time.

    Returns:
        ``item`` in ``cube_id`` at ``version + 1`` with ``updated_at = now``.

    Raises:
        MemoryNotFoundError: There is no stored item.
        VersionConflictError: ``item.version`` is not the stored version.

    """
    if stored_version is None:
        raise MemoryNotFoundError(f"no memory {item.id!r} in cube {cube_id!r}")
    if stored_version != item.version:
        raise VersionConflictError(
            f"memory {item.id!r} is at version {stored_version}, update was based on {item.version}"
        )
    new = item.model_copy(update={"cube_id": cube_id, "version": stored_version + 1, "updated_at": now})
    if new.embedding is None and stored_embedding is not None:
        new = new.model_copy(update={"embedding": [float(x) for x in stored_embedding]})
    return new


def breadth_first(
    ids: Sequence[str],
    depth: int,
    edges_of: Callable[[list[str]], Iterable[Edge]],
    visible: Callable[[list[str]], set[str]] | None = None,
) -> list[Neighbor]:
    """Walk edges in both directions from ``ids`` up to ``depth`` hops (the semantics of :class:`ExpandOp`).

    Args:
        ids: Seeds, best first.
        depth: Hops (checked by :func:`check_depth`).
        edges_of: Returns the edges (of the wanted types) touching any of the given ids, in
            insertion order (a backend's edge read).
        visible: Returns which of the given ids the caller may read (its read scope, see
            :func:`read_scope`); None: all. A seed or reached item outside it is neither returned
            nor walked through, so nothing is reached by way of an item the caller may not read.

    Returns:
        Items reached (not among ``ids``), each once with the item it was first reached from,
        nearest first; not filtered by search filters.

    """
    check_depth(depth)
    seen = set(ids)
    frontier = list(dict.fromkeys(ids))
    if visible is not None and frontier:
        admitted = visible(frontier)
        frontier = [i for i in frontier if i in admitted]
    reached: list[Neighbor] = []
    for level in range(1, depth + 1):
        if not frontier:
            break
        current = set(frontier)
        found: list[Neighbor] = []
        for edge in edges_of(frontier):
            for origin, other in ((edge.source_id, edge.target_id), (edge.target_id, edge.source_id)):
                if origin in current and other not in seen:
                    seen.add(other)
                    found.append(Neighbor(id=other, from_id=origin, type=edge.type, depth=level))
        if visible is not None and found:
            admitted = visible([n.id for n in found])
            found = [n for n in found if n.id in admitted]
        reached += found
        frontier = [n.id for n in found]
    return reached


def order_found(ids: Sequence[str], found: Iterable[MemoryItem]) -> list[MemoryItem]:
    """Return the ``found`` items in the order of ``ids`` (a missing id is skipped, a repeated one repeated)."""
    by_id = {i.id: i for i in found}
    return [by_id[i] for i in ids if i in by_id]


class BaseMemoryStore(ABC):
    """Abstract plaintext store. See the module docstring for the contract.

    Subclasses implement :meth:`setup`, :meth:`close`, :meth:`batch` and :meth:`abatch`, and mark
    one handler method per op type with :func:`handles` (collected into ``_handlers``).
    """

    _handlers: ClassVar[dict[type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(cls._handlers)
        for name, value in vars(cls).items():
            for op_type in getattr(value, "_handles", ()):
                found[op_type] = name
        cls._handlers = found

    def __init__(self, *, require_users: bool = False) -> None:
        self.capabilities = StoreCapabilities()
        #: Whether only registered, enabled users may call (checked in every batch's transaction;
        #: trusted code and system-wide admins exempt) and every principal a cube header adds must
        #: be one (see :mod:`memos_agents.infra.users`).
        self.require_users = require_users

    @property
    def sync_path(self) -> bool:
        """Whether :meth:`batch` can run (False for a store built with an async driver only)."""
        return True

    def checks_caller(self, ctx: CallContext) -> bool:
        """Whether a batch of ``ctx`` must find its principal registered and enabled (:attr:`require_users`)."""
        return self.require_users and not ctx.unrestricted

    def handler(self, op: Any) -> Callable[..., Any]:
        """Return this backend's bound handler of ``op``.

        Raises:
            InvalidInputError: Not a store op, or one this backend does not handle.

        """
        check_permission(op)
        if isinstance(op, CreateCubeOp | ImportCubeOp | UpdateCubeOp):
            check_header(op.header)
        name = self._handlers.get(type(op))
        if name is None:
            raise InvalidInputError(f"{type(self).__name__} does not handle {type(op).__name__}")
        return cast(Callable[..., Any], getattr(self, name))

    # -- what a backend implements ---------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Create schema, indexes and run pending migrations; fill :attr:`capabilities`. Idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    def batch(self, ops: Sequence[Op], *, ctx: CallContext = SYSTEM) -> list[Any]:
        """Run ``ops`` in order as ``ctx`` in one transaction; return one result per op.

        Raises:
            The first op's error; nothing of the batch is written then (see the module docstring
            for chunked imports and cube deletes).

        """

    async def abatch(self, ops: Sequence[Op], *, ctx: CallContext = SYSTEM) -> list[Any]:
        """Async twin of :meth:`batch` (default: :meth:`batch` in a worker thread)."""
        return await asyncio.to_thread(self.batch, ops, ctx=ctx)

    async def asetup(self) -> None:
        """Async twin of :meth:`setup`."""
        await asyncio.to_thread(self.setup)

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        await asyncio.to_thread(self.close)

    # -- one op ------------------------------------------------------------------------------------
    def run(self, op: Op, *, ctx: CallContext = SYSTEM) -> Any:
        """Run one op in its own transaction and return its result."""
        return self.batch([op], ctx=ctx)[0]

    async def arun(self, op: Op, *, ctx: CallContext = SYSTEM) -> Any:
        """Async twin of :meth:`run`."""
        return (await self.abatch([op], ctx=ctx))[0]

    # -- convenience methods (each builds one op) ----------------------------------------------------
    def create_cube(self, header: CubeHeader, *, ctx: CallContext = SYSTEM) -> None:
        """Register a new cube. Raises CubeExistsError if it exists."""
        self.run(CreateCubeOp(header), ctx=ctx)

    def get_cube(self, cube_id: str, *, ctx: CallContext = SYSTEM) -> CubeHeader:
        """Return a cube's header. Raises CubeNotFoundError / PermissionDeniedError."""
        return cast(CubeHeader, self.run(GetCubeOp(cube_id), ctx=ctx))

    def list_cubes(self, *, ctx: CallContext = SYSTEM, owner_id: str | None = None) -> list[CubeHeader]:
        """Return the headers of the cubes ``ctx`` may read (of ``owner_id`` only, if given), by id."""
        return cast(list[CubeHeader], self.run(ListCubesOp(owner_id), ctx=ctx))

    def update_cube(self, header: CubeHeader, *, ctx: CallContext = SYSTEM) -> CubeHeader:
        """Replace a cube's header (version incremented); returns the stored header."""
        return cast(CubeHeader, self.run(UpdateCubeOp(header), ctx=ctx))

    def delete_cube(self, cube_id: str, *, ctx: CallContext = SYSTEM) -> None:
        """Delete a cube with all its items, edges and events."""
        self.run(DeleteCubeOp(cube_id), ctx=ctx)

    def import_cube(
        self, header: CubeHeader, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), *, ctx: CallContext = SYSTEM
    ) -> None:
        """Create a cube with its content, all or nothing. Raises CubeExistsError, or a write's errors."""
        self.run(ImportCubeOp(header, list(items), list(edges)), ctx=ctx)

    def apply(self, cube_id: str, batch: WriteBatch, *, ctx: CallContext = SYSTEM) -> WriteResult:
        """Apply a write batch atomically (see :func:`plan_write` for what is refused)."""
        return cast(WriteResult, self.run(WriteOp(cube_id, batch), ctx=ctx))

    def add(
        self, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), *, ctx: CallContext = SYSTEM
    ) -> list[str]:
        """Store new items and edges atomically; returns their ids."""
        return self.apply(cube_id, WriteBatch(add=list(items), edges=list(edges)), ctx=ctx).added

    def update(self, cube_id: str, items: Sequence[MemoryItem], *, ctx: CallContext = SYSTEM) -> list[MemoryItem]:
        """Replace existing items atomically (version-checked); returns the stored items."""
        return self.apply(cube_id, WriteBatch(update=list(items)), ctx=ctx).updated

    def add_edges(self, cube_id: str, edges: Sequence[Edge], *, ctx: CallContext = SYSTEM) -> None:
        """Add (or replace, keyed by source, target and type) edges atomically."""
        self.apply(cube_id, WriteBatch(edges=list(edges)), ctx=ctx)

    def delete(self, cube_id: str, ids: Sequence[str], *, ctx: CallContext = SYSTEM) -> int:
        """Delete items and their edges; returns how many items were deleted."""
        return cast(int, self.run(DeleteOp(cube_id, list(ids)), ctx=ctx))

    def get(
        self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False, ctx: CallContext = SYSTEM
    ) -> list[MemoryItem]:
        """Return the items with these ids that exist in the cube, in the order asked."""
        return cast(list[MemoryItem], self.run(GetOp(cube_id, list(ids), with_embeddings), ctx=ctx))

    def list_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
        ctx: CallContext = SYSTEM,
    ) -> list[MemoryItem]:
        """Return the cube's items matching ``filters`` (None: all items), in insertion order."""
        return cast(list[MemoryItem], self.run(ListOp(cube_id, filters, limit, offset, with_embeddings), ctx=ctx))

    def count(self, cube_id: str, filters: SearchFilters | None = None, *, ctx: CallContext = SYSTEM) -> int:
        """Return how many items of the cube match ``filters`` (None: all items)."""
        return cast(int, self.run(CountOp(cube_id, filters), ctx=ctx))

    def get_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
        *,
        ctx: CallContext = SYSTEM,
    ) -> list[Edge]:
        """Return edges touching ``ids`` (None: all edges of the cube) of the given types."""
        op = EdgesOp(cube_id, None if ids is None else list(ids), None if types is None else list(types), direction)
        return cast(list[Edge], self.run(op, ctx=ctx))

    def vector_search(
        self,
        cube_id: str,
        embedding: Sequence[float] | np.ndarray,
        k: int,
        filters: SearchFilters | None = None,
        *,
        ctx: CallContext = SYSTEM,
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` pairs, best first, among filtered items."""
        return cast(list[tuple[str, float]], self.run(VectorSearchOp(cube_id, embedding, k, filters), ctx=ctx))

    def text_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None, *, ctx: CallContext = SYSTEM
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, BM25 score)`` pairs (higher is better) among filtered items."""
        return cast(list[tuple[str, float]], self.run(TextSearchOp(cube_id, query, k, filters), ctx=ctx))

    def expand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
        ctx: CallContext = SYSTEM,
    ) -> list[Neighbor]:
        """Walk edges of ``types`` (both directions) from ``ids`` up to ``depth`` hops; see :class:`ExpandOp`."""
        return cast(list[Neighbor], self.run(ExpandOp(cube_id, list(ids), list(types), depth, filters), ctx=ctx))

    def record_event(self, cube_id: str, kind: str, payload: dict[str, object], *, ctx: CallContext = SYSTEM) -> None:
        """Append an event (e.g. an extraction failure) to the cube's event log."""
        self.run(RecordEventOp(cube_id, kind, dict(payload)), ctx=ctx)

    def list_events(self, cube_id: str, kind: str | None = None, *, ctx: CallContext = SYSTEM) -> list[dict[str, Any]]:
        """Return the cube's events (of ``kind``, None: all), oldest first."""
        return cast(list[dict[str, Any]], self.run(ListEventsOp(cube_id, kind), ctx=ctx))

    def history(
        self, cube_id: str, item_id: str, *, with_embeddings: bool = False, ctx: CallContext = SYSTEM
    ) -> list[ItemVersion]:
        """Return an item's versions, oldest first, the current one last; see :class:`HistoryOp`."""
        return cast(list[ItemVersion], self.run(HistoryOp(cube_id, item_id, with_embeddings), ctx=ctx))

    def as_of(
        self,
        cube_id: str,
        as_of: datetime,
        ids: Sequence[str] | None = None,
        *,
        with_embeddings: bool = False,
        ctx: CallContext = SYSTEM,
    ) -> CubeSnapshot:
        """Return the cube (or the items ``ids``) as it was at ``as_of``; see :class:`AsOfOp`."""
        return cast(CubeSnapshot, self.run(AsOfOp(cube_id, as_of, ids, with_embeddings), ctx=ctx))

    def changed_since(self, cube_id: str, since: datetime, *, ctx: CallContext = SYSTEM) -> list[str]:
        """Return the ids of the items changed after ``since``; see :class:`ChangedSinceOp`."""
        return cast(list[str], self.run(ChangedSinceOp(cube_id, since), ctx=ctx))

    def purge_versions(self, cube_id: str, before: datetime, *, ctx: CallContext = SYSTEM) -> int:
        """Remove the versions ended before ``before``; see :class:`PurgeVersionsOp`."""
        return cast(int, self.run(PurgeVersionsOp(cube_id, before), ctx=ctx))

    def forget_user(self, cube_id: str, user_id: str, *, ctx: CallContext = SYSTEM) -> list[str]:
        """Erase a user's items and versions from a cube; see :class:`ForgetUserOp`."""
        return cast(list[str], self.run(ForgetUserOp(cube_id, user_id), ctx=ctx))

    def record_access(self, cube_id: str, counts: Mapping[str, int], at: datetime, *, ctx: CallContext = SYSTEM) -> int:
        """Record uses of items; see :class:`RecordAccessOp`. Returns how many items were recorded."""
        return cast(int, self.run(RecordAccessOp(cube_id, counts, at), ctx=ctx))

    async def arecord_access(
        self, cube_id: str, counts: Mapping[str, int], at: datetime, *, ctx: CallContext = SYSTEM
    ) -> int:
        """Async twin of :meth:`record_access`."""
        return cast(int, await self.arun(RecordAccessOp(cube_id, counts, at), ctx=ctx))

    def list_audit(
        self,
        cube_id: str | None = None,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: AuditOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        ctx: CallContext = SYSTEM,
    ) -> list[AuditEntry]:
        """Return audit entries of the cube's chain (None: the store's), oldest first; see :class:`ListAuditOp`."""
        op = ListAuditOp(cube_id, actor, action, outcome, since, until, after_seq, limit)
        return cast(list[AuditEntry], self.run(op, ctx=ctx))

    def verify_audit(self, cube_id: str | None = None, *, ctx: CallContext = SYSTEM) -> ChainVerification:
        """Verify the cube's audit chain (None: the store's) against its stored head; see :class:`VerifyAuditOp`."""
        return cast(ChainVerification, self.run(VerifyAuditOp(cube_id), ctx=ctx))

    def list_audit_chains(self, *, ctx: CallContext = SYSTEM) -> list[str]:
        """Return every audit chain's id (``""``: the store's own), sorted (trusted code only)."""
        return cast(list[str], self.run(ListAuditChainsOp(), ctx=ctx))

    def create_user(self, user: UserRecord, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Register a user; see :class:`CreateUserOp`."""
        return cast(UserRecord, self.run(CreateUserOp(user), ctx=ctx))

    def get_user(self, user_id: str, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Return a user's record; see :class:`GetUserOp`."""
        return cast(UserRecord, self.run(GetUserOp(user_id), ctx=ctx))

    def list_users(self, *, include_disabled: bool = False, ctx: CallContext = SYSTEM) -> list[UserRecord]:
        """Return the registered users by id; see :class:`ListUsersOp`."""
        return cast(list[UserRecord], self.run(ListUsersOp(include_disabled), ctx=ctx))

    def update_user(self, user: UserRecord, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Replace a user's name, kind and disabled time; see :class:`UpdateUserOp`."""
        return cast(UserRecord, self.run(UpdateUserOp(user), ctx=ctx))

    # -- async twins of the convenience methods --------------------------------------------------------
    async def acreate_user(self, user: UserRecord, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Async twin of :meth:`create_user`."""
        return cast(UserRecord, await self.arun(CreateUserOp(user), ctx=ctx))

    async def aget_user(self, user_id: str, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Async twin of :meth:`get_user`."""
        return cast(UserRecord, await self.arun(GetUserOp(user_id), ctx=ctx))

    async def alist_users(self, *, include_disabled: bool = False, ctx: CallContext = SYSTEM) -> list[UserRecord]:
        """Async twin of :meth:`list_users`."""
        return cast(list[UserRecord], await self.arun(ListUsersOp(include_disabled), ctx=ctx))

    async def aupdate_user(self, user: UserRecord, *, ctx: CallContext = SYSTEM) -> UserRecord:
        """Async twin of :meth:`update_user`."""
        return cast(UserRecord, await self.arun(UpdateUserOp(user), ctx=ctx))

    async def ahistory(
        self, cube_id: str, item_id: str, *, with_embeddings: bool = False, ctx: CallContext = SYSTEM
    ) -> list[ItemVersion]:
        """Async twin of :meth:`history`."""
        return cast(list[ItemVersion], await self.arun(HistoryOp(cube_id, item_id, with_embeddings), ctx=ctx))

    async def aas_of(
        self,
        cube_id: str,
        as_of: datetime,
        ids: Sequence[str] | None = None,
        *,
        with_embeddings: bool = False,
        ctx: CallContext = SYSTEM,
    ) -> CubeSnapshot:
        """Async twin of :meth:`as_of`."""
        return cast(CubeSnapshot, await self.arun(AsOfOp(cube_id, as_of, ids, with_embeddings), ctx=ctx))

    async def achanged_since(self, cube_id: str, since: datetime, *, ctx: CallContext = SYSTEM) -> list[str]:
        """Async twin of :meth:`changed_since`."""
        return cast(list[str], await self.arun(ChangedSinceOp(cube_id, since), ctx=ctx))

    async def apurge_versions(self, cube_id: str, before: datetime, *, ctx: CallContext = SYSTEM) -> int:
        """Async twin of :meth:`purge_versions`."""
        return cast(int, await self.arun(PurgeVersionsOp(cube_id, before), ctx=ctx))

    async def aforget_user(self, cube_id: str, user_id: str, *, ctx: CallContext = SYSTEM) -> list[str]:
        """Async twin of :meth:`forget_user`."""
        return cast(list[str], await self.arun(ForgetUserOp(cube_id, user_id), ctx=ctx))

    async def alist_audit(
        self,
        cube_id: str | None = None,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: AuditOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        ctx: CallContext = SYSTEM,
    ) -> list[AuditEntry]:
        """Async twin of :meth:`list_audit`."""
        op = ListAuditOp(cube_id, actor, action, outcome, since, until, after_seq, limit)
        return cast(list[AuditEntry], await self.arun(op, ctx=ctx))

    async def averify_audit(self, cube_id: str | None = None, *, ctx: CallContext = SYSTEM) -> ChainVerification:
        """Async twin of :meth:`verify_audit`."""
        return cast(ChainVerification, await self.arun(VerifyAuditOp(cube_id), ctx=ctx))

    async def acreate_cube(self, header: CubeHeader, *, ctx: CallContext = SYSTEM) -> None:
        """Async twin of :meth:`create_cube`."""
        await self.arun(CreateCubeOp(header), ctx=ctx)

    async def aget_cube(self, cube_id: str, *, ctx: CallContext = SYSTEM) -> CubeHeader:
        """Async twin of :meth:`get_cube`."""
        return cast(CubeHeader, await self.arun(GetCubeOp(cube_id), ctx=ctx))

    async def aapply(self, cube_id: str, batch: WriteBatch, *, ctx: CallContext = SYSTEM) -> WriteResult:
        """Async twin of :meth:`apply`."""
        return cast(WriteResult, await self.arun(WriteOp(cube_id, batch), ctx=ctx))

    async def aadd(
        self, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), *, ctx: CallContext = SYSTEM
    ) -> list[str]:
        """Async twin of :meth:`add`."""
        return (await self.aapply(cube_id, WriteBatch(add=list(items), edges=list(edges)), ctx=ctx)).added

    async def aupdate(
        self, cube_id: str, items: Sequence[MemoryItem], *, ctx: CallContext = SYSTEM
    ) -> list[MemoryItem]:
        """Async twin of :meth:`update`."""
        return (await self.aapply(cube_id, WriteBatch(update=list(items)), ctx=ctx)).updated

    async def adelete(self, cube_id: str, ids: Sequence[str], *, ctx: CallContext = SYSTEM) -> int:
        """Async twin of :meth:`delete`."""
        return cast(int, await self.arun(DeleteOp(cube_id, list(ids)), ctx=ctx))

    async def aget(
        self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False, ctx: CallContext = SYSTEM
    ) -> list[MemoryItem]:
        """Async twin of :meth:`get`."""
        return cast(list[MemoryItem], await self.arun(GetOp(cube_id, list(ids), with_embeddings), ctx=ctx))

    async def avector_search(
        self,
        cube_id: str,
        embedding: Sequence[float] | np.ndarray,
        k: int,
        filters: SearchFilters | None = None,
        *,
        ctx: CallContext = SYSTEM,
    ) -> list[tuple[str, float]]:
        """Async twin of :meth:`vector_search`."""
        return cast(list[tuple[str, float]], await self.arun(VectorSearchOp(cube_id, embedding, k, filters), ctx=ctx))

    async def atext_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None, *, ctx: CallContext = SYSTEM
    ) -> list[tuple[str, float]]:
        """Async twin of :meth:`text_search`."""
        return cast(list[tuple[str, float]], await self.arun(TextSearchOp(cube_id, query, k, filters), ctx=ctx))
