"""The reference plaintext store: every cube held in Python dicts, beside the ABC.

:class:`InMemoryStore` is to :class:`~memos_agents.plaintext.stores.base.BaseMemoryStore` what
langchain-core's ``InMemoryVectorStore`` and langgraph's ``InMemoryStore`` are to theirs: the
plainest implementation of the contract, readable in one sitting. It is the reference
implementation: it passes the same conformance suite (:mod:`memos_agents.testing.conformance`) as
every other backend, and every backend must behave as it does (same results, same order, same
errors; BM25 and cosine scores equal to those of the SQLite store).

* **One transaction per batch.** A batch runs under one :class:`threading.RLock`. Before an op
  first writes a cube, the cube's state is copied and the copy becomes the live one; if any op of
  the batch raises, the untouched originals are put back, so every op's effect is kept or none
  (cube creation, import and deletion included).
* **The caller is checked per op**, against the cube's header inside the batch, with
  :func:`~memos_agents.plaintext.stores.base.authorize`.
* **Search is exact and linear.** Cosine similarity over a float32 matrix of unit rows (built
  lazily per cube and dropped on every write), stable ordering by insertion on ties; BM25 with
  FTS5's formula and per-cube statistics (document count and average length over all items of the
  cube, document frequencies of the query terms), computed item by item.

Not for large data: every list, count, filter and search scans the cube's items, and every write
batch copies the state of the cubes it writes. Use it for tests, examples and small agents, and
as the specification the other backends are checked against. The data lives as long as the store
object: :meth:`InMemoryStore.close` releases nothing and keeps every cube.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np

from memos_agents.cube import CubeHeader, Permission
from memos_agents.errors import (
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    UserExistsError,
    UserNotFoundError,
)
from memos_agents.infra import registry
from memos_agents.infra.audit import AuditEntry, ChainHead, ChainVerification, verify_chain
from memos_agents.infra.users import UserRecord, check_caller, check_principals
from memos_agents.plaintext.stores import base
from memos_agents.plaintext.stores.codec import search_text
from memos_agents.plaintext.stores.filters import Predicate, compile_filters, matches
from memos_agents.plaintext.text import BM25_B, BM25_K1, bm25_idf, bm25_query_terms, bm25_terms
from memos_agents.schema import Edge, LifecycleState, MemoryItem, NodeKind, RelationType, SearchFilters, utcnow

#: An edge's key: source id, target id and relation type (an edge of the same key replaces it).
EdgeKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Row:
    """A stored item (a private copy, never mutated) with its BM25 terms.

    Attributes:
        item: The item as stored.
        tf: Term frequency of each BM25 term of the item's search text.
        doc_len: How many BM25 terms the search text has (repeats included).

    """

    item: MemoryItem
    tf: Counter[str]
    doc_len: int

    @staticmethod
    def of(item: MemoryItem) -> _Row:
        """Return the row storing a private copy of ``item``."""
        terms = bm25_terms(search_text(item))
        return _Row(item.model_copy(deep=True), Counter(terms), len(terms))


@dataclass(frozen=True, slots=True)
class _Vectors:
    """A cube's items with embeddings, in insertion order, and their unit rows as a float32 matrix."""

    items: list[MemoryItem]
    matrix: np.ndarray  # (n, dim) float32, unit rows (zero rows stay zero)

    @staticmethod
    def build(rows: Sequence[_Row], dim: int) -> _Vectors:
        """Build the matrix of the rows that have an embedding, as the SQLite store's vector cache does."""
        items = [r.item for r in rows if r.item.embedding is not None]
        matrix: np.ndarray = np.asarray([i.embedding for i in items], dtype=np.float32).reshape(len(items), dim)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return _Vectors(items, matrix / np.where(norms == 0, 1.0, norms))


@dataclass(slots=True)
class _Cube:
    """Everything of one cube.

    Attributes:
        header: The cube's header (a private copy).
        dim: The cube's embedding dimension (None: not set yet).
        items: Rows by item id, in insertion order (an update keeps the item's place).
        edges: Edges by key, in insertion order (a replaced edge moves to the end).
        events: The event log, oldest first.
        vectors: The vector matrix, built on the first vector search and dropped on every write.
        versions: MemVault: the versions ended by updates and deletes (:func:`base.version_row`), oldest first.

    """

    header: CubeHeader
    dim: int | None
    items: dict[str, _Row] = field(default_factory=dict)
    edges: dict[EdgeKey, Edge] = field(default_factory=dict)
    events: list[dict[str, object]] = field(default_factory=list)
    vectors: _Vectors | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> _Cube:
        """Return a copy whose containers can change without changing this cube (rows are shared: never mutated)."""
        return _Cube(
            self.header,
            self.dim,
            dict(self.items),
            dict(self.edges),
            list(self.events),
            self.vectors,
            list(self.versions),
        )


@dataclass(slots=True)
class _Tx:
    """One batch: the caller, and the state of each cube the batch wrote before its first write.

    Attributes:
        ctx: The caller.
        saved: Cube id -> the cube as it was before the batch wrote it (None: it did not exist).
        saved_users: User id -> the record as it was before the batch wrote it (None: none).
        saved_registry: The registry as it was before the batch's first registry write (None: unwritten).

    """

    ctx: base.CallContext
    saved: dict[str, _Cube | None] = field(default_factory=dict)
    saved_users: dict[str, UserRecord | None] = field(default_factory=dict)
    saved_registry: _Registry | None = None


@dataclass(slots=True)
class _Registry:
    """The MemStore registry: entries by (name, version), subscriptions by (subscriber, name), keys by publisher."""

    entries: dict[tuple[str, str], registry.RegistryEntry] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], registry.Subscription] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def copy(self) -> _Registry:
        return _Registry(dict(self.entries), dict(self.subscriptions), dict(self.keys))


def _edge_key(edge: Edge) -> EdgeKey:
    return (edge.source_id, edge.target_id, RelationType(edge.type).value)


class InMemoryStore(base.BaseMemoryStore):
    """The reference plaintext store, held in memory (see the module docstring).

    Safe to share between threads: every batch runs under one lock. Nothing is persisted; the data
    lives as long as the object. Ops work with or without :meth:`setup`, which only fills
    :attr:`capabilities`.

    Example:
        >>> from memos_agents.cube import CubeHeader
        >>> from memos_agents.schema import MemoryItem
        >>> store = InMemoryStore()
        >>> store.setup()
        >>> store.create_cube(CubeHeader(cube_id="notes", owner_id="alice"))
        >>> ids = store.add("notes", [MemoryItem(text="Alice likes green tea")])
        >>> [hit for hit, _ in store.text_search("notes", "tea", 5)] == ids
        True

    """

    def __init__(self, *, audit: bool = True, require_users: bool = False) -> None:
        super().__init__(require_users=require_users)
        self._lock = threading.RLock()
        #: user id -> its record (see :mod:`memos_agents.infra.users`).
        self._users: dict[str, UserRecord] = {}
        self._cubes: dict[str, _Cube] = {}
        self._registry = _Registry()
        #: Whether every batch is written to the audit log (see :mod:`memos_agents.infra.audit`).
        self.audit = audit
        #: chain id -> its entries, in order (the audit log outlives the cubes it describes).
        self._audit: dict[str, list[AuditEntry]] = {}
        #: chain id -> the head written with its last entry (kept apart: a truncated tail shows).
        self._audit_heads: dict[str, ChainHead] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Fill :attr:`capabilities` (exact vector search, per-cube BM25). Idempotent; keeps all data."""
        self.capabilities = base.StoreCapabilities(vector_search="exact", text_search="bm25")

    def close(self) -> None:
        """Do nothing: there is nothing to release, and the data stays until the object is dropped. Idempotent."""

    async def asetup(self) -> None:
        """Async twin of :meth:`setup` (runs it directly: it never blocks)."""
        self.setup()

    async def aclose(self) -> None:
        """Async twin of :meth:`close` (runs it directly: it never blocks)."""
        self.close()

    # -- batches -----------------------------------------------------------------------------------
    def batch(self, ops: Sequence[base.Op], *, ctx: base.CallContext = base.SYSTEM) -> list[Any]:
        """Run ``ops`` in order as ``ctx`` in one transaction; return one result per op.

        Args:
            ops: The operations.
            ctx: The caller, checked against each op's cube (default: trusted system code).

        Returns:
            One result per op, in order.

        Raises:
            InvalidInputError: An op that is not a store op (nothing is run then).
            The typed errors of each op (see :mod:`~memos_agents.plaintext.stores.base`); nothing
            of the batch is kept then.

        """
        ops = list(ops)
        for op in ops:
            base.check_permission(op)
        with self._lock:
            tx = _Tx(ctx)
            out: list[Any] = []
            try:
                if self.checks_caller(ctx):
                    check_caller(ctx.principal, self._users.get(ctx.principal))
                for op in ops:
                    out.append(self.handler(op)(op, tx))
            except BaseException as exc:
                for cube_id, original in tx.saved.items():
                    if original is None:
                        self._cubes.pop(cube_id, None)
                    else:
                        self._cubes[cube_id] = original
                for user_id, record in tx.saved_users.items():
                    if record is None:
                        self._users.pop(user_id, None)
                    else:
                        self._users[user_id] = record
                if tx.saved_registry is not None:
                    self._registry = tx.saved_registry
                if self.audit and isinstance(exc, Exception):
                    self._append_audit(ctx, base.audit_failure(ops, len(out), exc))
                raise
            if self.audit:
                self._append_audit(ctx, [base.audit_record(op, r) for op, r in zip(ops, out, strict=True)])
            return out

    def _append_audit(self, ctx: base.CallContext, records: Sequence[base.AuditRecord]) -> None:
        heads: dict[str, ChainHead | None] = {r.chain: self._audit_heads.get(r.chain) for r in records}
        for chain_id, entry in base.seal_records(records, heads, ctx, utcnow()):
            self._audit.setdefault(chain_id, []).append(entry)
        self._audit_heads.update((k, v) for k, v in heads.items() if v is not None)

    # -- the audit log ---------------------------------------------------------------------------------
    def _audit_chain(self, tx: _Tx, cube_id: str | None) -> tuple[list[AuditEntry], datetime | None]:
        cube = None if cube_id is None else self._cubes.get(cube_id)
        floor = base.authorize_audit(None if cube is None else cube.header, tx.ctx, cube_id)
        return self._audit.get(base.STORE_CHAIN if cube_id is None else cube_id, []), floor

    @base.handles(base.ListAuditOp)
    def _list_audit(self, op: base.ListAuditOp, tx: _Tx) -> list[AuditEntry]:
        chain, floor = self._audit_chain(tx, op.cube_id)
        return [e for e in chain if base.audit_row_matches(e, op, floor)][: op.limit]

    @base.handles(base.VerifyAuditOp)
    def _verify_audit(self, op: base.VerifyAuditOp, tx: _Tx) -> ChainVerification:
        chain, _ = self._audit_chain(tx, op.cube_id)
        return verify_chain(chain, expected_head=self._audit_heads.get(op.cube_id or base.STORE_CHAIN))

    @base.handles(base.ListAuditChainsOp)
    def _list_audit_chains(self, op: base.ListAuditChainsOp, tx: _Tx) -> list[str]:
        base.authorize_audit(None, tx.ctx, None)
        return sorted(self._audit)

    async def abatch(self, ops: Sequence[base.Op], *, ctx: base.CallContext = base.SYSTEM) -> list[Any]:
        """Async twin of :meth:`batch`, run directly on the event loop.

        The store never waits on I/O: its lock is only ever held while a batch computes, so
        :meth:`batch` is called directly instead of in a worker thread.
        """
        return self.batch(ops, ctx=ctx)

    def _touch(self, tx: _Tx, cube_id: str, *, keep_vectors: bool = False) -> _Cube | None:
        """Prepare ``cube_id`` for a write in ``tx``: keep its state for a rollback; return the live cube.

        On the batch's first write of the cube, the live cube is replaced by a copy (the original is
        kept in ``tx.saved``); every write drops the cube's vector matrix.
        """
        if cube_id not in tx.saved:
            original = self._cubes.get(cube_id)
            tx.saved[cube_id] = original
            if original is not None:
                self._cubes[cube_id] = original.copy()
        cube = self._cubes.get(cube_id)
        if cube is not None and not keep_vectors:
            cube.vectors = None
        return cube

    def _cube(self, tx: _Tx, cube_id: str, op: base.Op) -> _Cube:
        """Return the cube ``op`` works on after checking that ``tx.ctx`` may run ``op`` on it.

        A write op gets the live copy it may change (see :meth:`_touch`).

        Raises:
            CubeNotFoundError: No such cube.
            PermissionDeniedError: The caller may not.

        """
        cube = self._cubes.get(cube_id)
        if cube is None:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        base.authorize(cube.header, tx.ctx, base.OP_PERMISSION[type(op)])
        if isinstance(op, base.WRITE_OPS):
            touched = self._touch(tx, cube_id)
            assert touched is not None
            return touched
        return cube

    def _read(self, tx: _Tx, cube_id: str) -> tuple[_Cube, list[Predicate]]:
        """Return the cube of a read of ``tx.ctx`` and its read scope (see :func:`base.read_scope`).

        Raises:
            CubeNotFoundError: No such cube.
            PermissionDeniedError: The caller has no read on the cube, which holds no public item.

        """
        cube = self._cubes.get(cube_id)
        if cube is None:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        scope = base.read_scope(cube.header, tx.ctx)
        if base.public_only(scope) and not any(matches(scope, r.item) for r in cube.items.values()):
            raise base.deny_read(cube.header, tx.ctx)
        return cube, scope

    @staticmethod
    def _visible(cube: _Cube, scope: Sequence[Predicate]) -> Callable[[list[str]], set[str]]:
        """Return which of some ids are items of ``cube`` that ``scope`` admits (for :func:`base.breadth_first`)."""
        return lambda ids: {i for i in ids if i in cube.items and matches(scope, cube.items[i].item)}

    # -- cubes ---------------------------------------------------------------------------------------
    def _new_cube(self, tx: _Tx, header: CubeHeader) -> _Cube:
        """Register a new, empty cube in ``tx``.

        Raises:
            CubeExistsError: A cube of that id exists.

        """
        base.check_new_cube(header, tx.ctx)
        if header.cube_id in self._cubes:
            raise CubeExistsError(f"cube {header.cube_id!r} already exists")
        self._touch(tx, header.cube_id)
        cube = _Cube(header.model_copy(deep=True), header.storage.embedding_dim)
        self._cubes[header.cube_id] = cube
        return cube

    def _check_grants(self, current: CubeHeader | None, header: CubeHeader) -> None:
        """Refuse a header that gives a disabled user (with :attr:`require_users`: any unregistered one) anything."""
        check_principals(base.added_principals(current, header), self._users, registered=self.require_users)

    @base.handles(base.CreateCubeOp)
    def _create_cube(self, op: base.CreateCubeOp, tx: _Tx) -> None:
        base.check_new_cube(op.header, tx.ctx)
        self._check_grants(None, op.header)
        self._new_cube(tx, op.header)

    @base.handles(base.ImportCubeOp)
    def _import_cube(self, op: base.ImportCubeOp, tx: _Tx) -> None:
        """Create the cube and write its content in one plan; items keep their ``author_id``."""
        base.check_new_cube(op.header, tx.ctx)
        self._check_grants(None, op.header)
        cube = self._new_cube(tx, op.header)
        self._write(cube, base.WriteBatch(add=list(op.items), edges=list(op.edges)), base.SYSTEM, stamp=False)

    @base.handles(base.GetCubeOp)
    def _get_cube(self, op: base.GetCubeOp, tx: _Tx) -> CubeHeader:
        return self._cube(tx, op.cube_id, op).header.model_copy(deep=True)

    @base.handles(base.ListCubesOp)
    def _list_cubes(self, op: base.ListCubesOp, tx: _Tx) -> list[CubeHeader]:
        return [
            cube.header.model_copy(deep=True)
            for cube_id, cube in sorted(self._cubes.items())
            if (op.owner_id is None or cube.header.owner_id == op.owner_id)
            and (not op.id_prefix or cube_id.startswith(op.id_prefix))
            and (op.namespaced is None or (cube.header.namespace is not None) == op.namespaced)
            and (tx.ctx.unrestricted or cube.header.allows(tx.ctx.principal, Permission.READ))
        ]

    @base.handles(base.UpdateCubeOp)
    def _update_cube(self, op: base.UpdateCubeOp, tx: _Tx) -> CubeHeader:
        """Store the new header at the next version; a dimension set by stored vectors stays."""
        cube = self._cube(tx, op.header.cube_id, op)
        base.check_header_update(cube.header, op.header, tx.ctx)
        self._check_grants(cube.header, op.header)
        stored = op.header.model_copy(update={"version": cube.header.version + 1, "updated_at": utcnow()}, deep=True)
        cube.header = stored
        if cube.dim is None:
            cube.dim = stored.storage.embedding_dim
        return stored.model_copy(deep=True)

    @base.handles(base.ListExpiringOp)
    def _list_expiring(self, op: base.ListExpiringOp, tx: _Tx) -> list[MemoryItem]:
        cube, scope = self._read(tx, op.cube_id)
        statuses = base.expiring_statuses(op.expired)
        due = [
            r.item
            for r in cube.items.values()
            if r.item.expires_at is not None
            and r.item.expires_at <= op.before
            and r.item.node_kind is NodeKind.MEMORY
            and r.item.status.value in statuses
            and matches(scope, r.item)
        ]
        due.sort(key=lambda i: cast(datetime, i.expires_at))
        return [i.model_copy(update={"embedding": None}, deep=True) for i in due[: op.limit]]

    @base.handles(base.RecordAccessOp)
    def _record_access(self, op: base.RecordAccessOp, tx: _Tx) -> int:
        _, scope = self._read(tx, op.cube_id)
        cube = self._touch(tx, op.cube_id, keep_vectors=True)  # a use changes no vector
        assert cube is not None
        when, counts = base.access_record(op, tx.ctx)
        recorded = 0
        for item_id, n in counts.items():
            row = cube.items.get(item_id)
            if row is None or row.item.node_kind is not NodeKind.MEMORY or not matches(scope, row.item):
                continue
            last = row.item.last_accessed_at or row.item.created_at  # as the other stores' ``touched_at``
            update = {"access_count": row.item.access_count + n, "last_accessed_at": max(last, when)}
            cube.items[item_id] = _Row(row.item.model_copy(update=update), row.tf, row.doc_len)
            recorded += 1
        return recorded

    @base.handles(base.ListIdleOp)
    def _list_idle(self, op: base.ListIdleOp, tx: _Tx) -> list[MemoryItem]:
        cube, scope = self._read(tx, op.cube_id)

        def touched(item: MemoryItem) -> datetime:
            return item.last_accessed_at or item.created_at

        idle = [
            r.item
            for r in cube.items.values()
            if r.item.status is LifecycleState.ACTIVATED
            and r.item.node_kind is NodeKind.MEMORY
            and touched(r.item) < op.before
            and (op.after is None or (touched(r.item), r.item.id) > op.after)
            and matches(scope, r.item)
        ]
        idle.sort(key=lambda i: (touched(i), i.id))
        return [i.model_copy(update={"embedding": None}, deep=True) for i in idle[: op.limit]]

    @base.handles(base.ListHotOp)
    def _list_hot(self, op: base.ListHotOp, tx: _Tx) -> list[MemoryItem]:
        cube, scope = self._read(tx, op.cube_id)
        hot = [
            r.item
            for r in cube.items.values()
            if r.item.status is LifecycleState.ACTIVATED
            and r.item.node_kind is NodeKind.MEMORY
            and r.item.access_count >= op.min_uses
            and matches(scope, r.item)
        ]
        hot.sort(key=lambda i: (-i.access_count, i.id))
        return [i.model_copy(update={"embedding": None}, deep=True) for i in hot[: op.limit]]

    # -- the MemStore registry (bodies in memos_agents.infra.registry) ------------------------------
    @base.handles(*base.REGISTRY_OPS)
    def _registry_op(self, op: Any, tx: _Tx) -> Any:
        return registry.drive(registry.body(op, tx.ctx, utcnow()), lambda request: self._serve(tx, request))

    def _serve(self, tx: _Tx, request: registry.Request) -> Any:
        """Answer one request of a registry op's body."""
        reg = self._registry
        if isinstance(request, registry.ReadEntries):
            return [e for (name, _), e in reg.entries.items() if request.name in (None, name)]
        if isinstance(request, registry.ReadSubscriptions):
            subs = [
                s
                for (subscriber, name), s in sorted(reg.subscriptions.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                if request.subscriber in (None, subscriber) and request.name in (None, name)
            ]
            return subs
        if isinstance(request, registry.ReadKey):
            return reg.keys.get(request.publisher)
        if isinstance(request, registry.ReadHeader):
            cube = self._cubes.get(request.cube_id)
            return None if cube is None else cube.header.model_copy(deep=True)
        plan = request.plan
        if tx.saved_registry is None:
            tx.saved_registry = reg.copy()
        for entry, _ in plan.entries:
            reg.entries[(entry.name, entry.version)] = entry
        for key in plan.unsubscribe:
            reg.subscriptions.pop(key, None)
        for sub in plan.subscriptions:
            reg.subscriptions[(sub.subscriber, sub.name)] = sub
        if plan.key is not None:
            reg.keys[plan.key[0]] = plan.key[1]
        for current, new in plan.headers:
            cube = self._touch(tx, current.cube_id, keep_vectors=True)
            assert cube is not None
            self._check_grants(cube.header, new)
            cube.header = new.model_copy(update={"version": cube.header.version + 1, "updated_at": utcnow()}, deep=True)
        return None

    # -- users ---------------------------------------------------------------------------------------
    def _save_user(self, tx: _Tx, user: UserRecord) -> UserRecord:
        tx.saved_users.setdefault(user.user_id, self._users.get(user.user_id))
        self._users[user.user_id] = user
        return user.model_copy()

    @base.handles(base.CreateUserOp)
    def _create_user(self, op: base.CreateUserOp, tx: _Tx) -> UserRecord:
        user = base.new_user(op, tx.ctx)
        if user.user_id in self._users:
            raise UserExistsError(f"user {user.user_id!r} is already registered (ids are never reused)")
        return self._save_user(tx, user)

    @base.handles(base.GetUserOp)
    def _get_user(self, op: base.GetUserOp, tx: _Tx) -> UserRecord:
        base.authorize_users(tx.ctx, op.user_id)
        user = self._users.get(op.user_id)
        if user is None:
            raise UserNotFoundError(f"no user {op.user_id!r}")
        return user.model_copy()

    @base.handles(base.ListUsersOp)
    def _list_users(self, op: base.ListUsersOp, tx: _Tx) -> list[UserRecord]:
        base.authorize_users(tx.ctx)
        return [u.model_copy() for _, u in sorted(self._users.items()) if op.include_disabled or u.enabled]

    @base.handles(base.UpdateUserOp)
    def _update_user(self, op: base.UpdateUserOp, tx: _Tx) -> UserRecord:
        new = base.user_update(op, tx.ctx)
        current = self._users.get(new.user_id)
        if current is None:
            raise UserNotFoundError(f"no user {new.user_id!r}")
        return self._save_user(tx, base.changed_user(current, new))

    @base.handles(base.DeleteCubeOp)
    def _delete_cube(self, op: base.DeleteCubeOp, tx: _Tx) -> None:
        self._cube(tx, op.cube_id, op)
        del self._cubes[op.cube_id]

    # -- writes ----------------------------------------------------------------------------------------
    @base.handles(base.WriteOp)
    def _write_op(self, op: base.WriteOp, tx: _Tx) -> base.WriteResult:
        return self._write(self._cube(tx, op.cube_id, op), op.batch, tx.ctx)

    def _write(
        self, cube: _Cube, batch: base.WriteBatch, ctx: base.CallContext, *, stamp: bool = True
    ) -> base.WriteResult:
        """Plan ``batch`` against ``cube`` (a live copy of the batch) and store the plan's rows."""
        probe = base.write_probe(batch)
        existing = {i for i in probe.ids if i in cube.items}
        stored: dict[str, base.StoredItem] = {}
        for item_id in probe.updated:
            row = cube.items.get(item_id)
            if row is not None:
                embedding = row.item.embedding
                stored[item_id] = base.StoredItem(
                    row.item.version,
                    row.item.node_kind.value,
                    None if embedding is None else list(embedding),
                    row.item.author_id,
                    row.item.visibility.value,
                    base.item_content_key(row.item),
                    row.item.access_count,
                    row.item.last_accessed_at,
                )
        newest: dict[str, str] = {}
        for topic in probe.topics:
            member = self._newest_member(cube, topic)
            if member is not None:
                newest[topic] = member
        plan = base.plan_write(
            cube.header.cube_id,
            batch,
            ctx=ctx,
            dim=cube.dim,
            existing=existing,
            stored=stored,
            newest_member=newest,
            now=utcnow(),
            redaction=cube.header.redaction,
            stamp=stamp,
            may_publish=ctx.unrestricted or cube.header.allows(ctx.principal, Permission.SHARE),
        )
        if plan.dim_changed:
            cube.dim = plan.dim
        now = utcnow()
        cube.versions += [base.version_row(cube.items[i.id].item, "update", ctx, now) for i in plan.replace]
        for item in [*plan.insert, *plan.replace]:  # a replaced item keeps its place
            cube.items[item.id] = _Row.of(item)
        for edge in plan.edges:  # as INSERT OR REPLACE: a replaced edge moves to the end
            key = _edge_key(edge)
            cube.edges.pop(key, None)
            cube.edges[key] = edge.model_copy()
        return plan.result

    @staticmethod
    def _newest_member(cube: _Cube, topic_id: str) -> str | None:
        """Return the target of the most recently stored PARENT edge from ``topic_id`` (None: none)."""
        parent = RelationType.PARENT.value
        for source, target, type_ in reversed(cube.edges):
            if source == topic_id and type_ == parent:
                return target
        return None

    @base.handles(base.DeleteOp)
    def _delete(self, op: base.DeleteOp, tx: _Tx) -> int:
        cube = self._cube(tx, op.cube_id, op)
        scope = base.read_scope(cube.header, tx.ctx)  # another author's private item: not found
        ids = {i for i in op.ids if i in cube.items and matches(scope, cube.items[i].item)}
        now = utcnow()
        for item_id in dict.fromkeys(op.ids):
            row = cube.items.get(item_id)
            if row is not None and item_id in ids:
                edges = [e for k, e in cube.edges.items() if item_id in (k[0], k[1])]
                cube.versions.append(base.version_row(row.item, "delete", tx.ctx, now, edges))
        deleted = sum(1 for item_id in ids if cube.items.pop(item_id, None) is not None)
        cube.edges = {k: e for k, e in cube.edges.items() if k[0] not in ids and k[1] not in ids}
        return deleted

    @base.handles(base.HistoryOp)
    def _history(self, op: base.HistoryOp, tx: _Tx) -> list[base.ItemVersion]:
        cube, scope = self._read(tx, op.cube_id)
        rows = sorted((r for r in cube.versions if r["item_id"] == op.item_id), key=lambda r: int(r["version"]))
        out = [v for v in (base.version_from_row(r, op.with_embeddings) for r in rows) if matches(scope, v.item)]
        current = cube.items.get(op.item_id)
        if current is not None and matches(scope, current.item):
            out.append(base.ItemVersion(item=self._out(current.item, op.with_embeddings)))
        return out

    @base.handles(base.AsOfOp)
    def _as_of(self, op: base.AsOfOp, tx: _Tx) -> base.CubeSnapshot:
        cube, scope = self._read(tx, op.cube_id)
        versions = [base.version_from_row(r, op.with_embeddings) for r in cube.versions]
        current = [self._out(r.item, op.with_embeddings) for r in cube.items.values()]
        edges = [e.model_copy() for e in cube.edges.values()] + [e for v in versions for e in v.edges]
        return base.snapshot_as_of(op.as_of, current, versions, edges, scope, op.ids)

    @base.handles(base.ChangedSinceOp)
    def _changed_since(self, op: base.ChangedSinceOp, tx: _Tx) -> list[str]:
        cube, scope = self._read(tx, op.cube_id)
        current = sorted(
            (r.item for r in cube.items.values() if r.item.updated_at > op.since), key=lambda i: i.updated_at
        )
        kept = (base.version_from_row(r, False) for r in cube.versions)
        versions = [v for v in kept if v.changed_at is not None and v.changed_at > op.since]
        ids = [i.id for i in current if matches(scope, i)] + [v.item.id for v in versions if matches(scope, v.item)]
        return list(dict.fromkeys(ids))

    @base.handles(base.PurgeVersionsOp)
    def _purge_versions(self, op: base.PurgeVersionsOp, tx: _Tx) -> int:
        cube = self._cube(tx, op.cube_id, op)
        keep = [r for r in cube.versions if datetime.fromisoformat(r["changed_at"]) >= op.before]
        purged = len(cube.versions) - len(keep)
        cube.versions = keep
        return purged

    @base.handles(base.ForgetUserOp)
    def _forget_user(self, op: base.ForgetUserOp, tx: _Tx) -> list[str]:
        cube = self._cube(tx, op.cube_id, op)
        ids = [i for i, r in cube.items.items() if op.user_id in (r.item.user_id, r.item.author_id)]
        gone = set(ids)
        for item_id in ids:
            del cube.items[item_id]
        cube.edges = {k: e for k, e in cube.edges.items() if k[0] not in gone and k[1] not in gone}
        cube.versions = [
            r
            for r in cube.versions
            if r["item_id"] not in gone
            and op.user_id not in (json.loads(r["item"]).get("user_id"), json.loads(r["item"]).get("author_id"))
        ]
        cube.vectors = None
        return ids

    @base.handles(base.RecordEventOp)
    def _record_event(self, op: base.RecordEventOp, tx: _Tx) -> None:
        cube = self._cube(tx, op.cube_id, op)
        cube.events.append(
            {
                "kind": op.kind,
                "payload": json.loads(json.dumps(op.payload, default=str)),
                "created_at": utcnow().isoformat(),
            }
        )

    @base.handles(base.ListEventsOp)
    def _list_events(self, op: base.ListEventsOp, tx: _Tx) -> list[dict[str, Any]]:
        cube = self._cube(tx, op.cube_id, op)
        return [copy.deepcopy(e) for e in cube.events if op.kind is None or e["kind"] == op.kind]

    # -- reads -----------------------------------------------------------------------------------------
    @staticmethod
    def _out(item: MemoryItem, with_embeddings: bool) -> MemoryItem:
        """Return a caller's copy of a stored item (without its embedding unless asked for)."""
        return item.model_copy(update=None if with_embeddings else {"embedding": None}, deep=True)

    @base.handles(base.GetOp)
    def _get(self, op: base.GetOp, tx: _Tx) -> list[MemoryItem]:
        cube, scope = self._read(tx, op.cube_id)
        found = [
            self._out(cube.items[i].item, op.with_embeddings)
            for i in dict.fromkeys(op.ids)
            if i in cube.items and matches(scope, cube.items[i].item)
        ]
        return base.order_found(op.ids, found)

    @base.handles(base.ListOp)
    def _list(self, op: base.ListOp, tx: _Tx) -> list[MemoryItem]:
        cube, scope = self._read(tx, op.cube_id)
        predicates = compile_filters(op.filters) + scope
        found = [r.item for r in cube.items.values() if matches(predicates, r.item)]
        start = max(op.offset, 0)
        end = None if op.limit is None or op.limit < 0 else start + op.limit  # a negative limit: none (as SQL)
        return [self._out(i, op.with_embeddings) for i in found[start:end]]

    @base.handles(base.CountOp)
    def _count(self, op: base.CountOp, tx: _Tx) -> int:
        cube, scope = self._read(tx, op.cube_id)
        predicates = compile_filters(op.filters) + scope
        return sum(1 for r in cube.items.values() if matches(predicates, r.item))

    @base.handles(base.EdgesOp)
    def _edges_op(self, op: base.EdgesOp, tx: _Tx) -> list[Edge]:
        cube, scope = self._read(tx, op.cube_id)
        edges = self._edges(cube, op.ids, op.types, op.direction)
        if scope:  # an edge shows only when the caller may read both of its ends
            ok = self._visible(cube, scope)([x for e in edges for x in (e.source_id, e.target_id)])
            edges = [e for e in edges if e.source_id in ok and e.target_id in ok]
        return [e.model_copy() for e in edges]

    @staticmethod
    def _edges(
        cube: _Cube, ids: Sequence[str] | None, types: Sequence[RelationType] | None, direction: base.Direction
    ) -> list[Edge]:
        """Return the stored edges touching ``ids`` (None: any) of ``types`` (None: any), in insertion order.

        Raises:
            InvalidInputError: An unknown direction.

        """
        if direction not in ("out", "in", "both"):
            raise InvalidInputError(f"direction must be 'out', 'in' or 'both', not {direction!r}")
        wanted = None if types is None else {RelationType(t).value for t in types}
        ends = None if ids is None else set(ids)
        out: list[Edge] = []
        for (source, target, type_), edge in cube.edges.items():
            if wanted is not None and type_ not in wanted:
                continue
            if ends is not None and not (
                (direction != "in" and source in ends) or (direction != "out" and target in ends)
            ):
                continue
            out.append(edge)
        return out

    # -- search ----------------------------------------------------------------------------------------
    @base.handles(base.VectorSearchOp)
    def _vector_search(self, op: base.VectorSearchOp, tx: _Tx) -> list[tuple[str, float]]:
        cube, scope = self._read(tx, op.cube_id)
        if cube.dim is None:
            return []
        if cube.vectors is None:
            cube.vectors = _Vectors.build(list(cube.items.values()), cube.dim)
        vectors = cube.vectors
        if not vectors.items or op.k <= 0:
            return []
        query = base.check_vector(op.embedding, vectors.matrix.shape[1], f"query embedding for cube {op.cube_id!r}")
        norm = float(np.linalg.norm(query))
        scores = vectors.matrix @ (query / (norm or 1.0))
        predicates = compile_filters(op.filters or SearchFilters()) + scope
        mask = np.fromiter((matches(predicates, i) for i in vectors.items), dtype=bool, count=len(vectors.items))
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        top = idx[np.argsort(-scores[idx], kind="stable")[: op.k]]  # stable: ties keep insertion order
        return [(vectors.items[i].id, float(scores[i])) for i in top]

    @base.handles(base.TextSearchOp)
    def _text_search(self, op: base.TextSearchOp, tx: _Tx) -> list[tuple[str, float]]:
        """BM25 as FTS5 computes it, with the statistics of the whole cube (filters only select hits)."""
        cube, scope = self._read(tx, op.cube_id)
        terms = Counter(bm25_query_terms(op.query))  # a repeated query term weighs more, as in FTS5
        if not terms or op.k <= 0:
            return []
        rows = list(cube.items.values())
        n_docs = len(rows)
        avgdl = float((sum(r.doc_len for r in rows) / n_docs if n_docs else 0.0) or 1.0)
        dfs = {term: sum(1 for r in rows if term in r.tf) for term in sorted(terms)}
        weights = {term: terms[term] * bm25_idf(n_docs, df) for term, df in dfs.items() if df}
        if not weights:
            return []
        predicates = compile_filters(op.filters or SearchFilters()) + scope
        hits: list[tuple[float, int, str]] = []
        for position, row in enumerate(rows):
            found = [term for term in weights if term in row.tf]
            if not found or not matches(predicates, row.item):
                continue
            norm = 1.0 - BM25_B + BM25_B * row.doc_len / avgdl
            score = 0.0
            for term in found:
                tf = row.tf[term]
                score += weights[term] * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)
            hits.append((-score, position, row.item.id))
        hits.sort()  # best first, ties in insertion order
        return [(item_id, -negated) for negated, _, item_id in hits[: op.k]]

    @base.handles(base.ExpandOp)
    def _expand(self, op: base.ExpandOp, tx: _Tx) -> list[base.Neighbor]:
        """Breadth-first over the edges of ``op.types`` in both directions, in edge insertion order."""
        cube, scope = self._read(tx, op.cube_id)
        types = [RelationType(t) for t in op.types]
        if not types:
            base.check_depth(op.depth)
            return []
        reached = base.breadth_first(
            op.ids,
            op.depth,
            lambda ids: self._edges(cube, ids, types, "both"),
            self._visible(cube, scope) if scope else None,
        )
        if op.filters is not None and reached:
            predicates = compile_filters(op.filters)
            reached = [n for n in reached if n.id in cube.items and matches(predicates, cube.items[n.id].item)]
        return reached
