"""The scale-out plaintext store: Neo4j 5 (or any Bolt/Cypher server) through the official driver.

Install with ``pip install "memos-agents[neo4j]"``. Construction does no I/O; :meth:`setup` creates
constraints and indexes (versioned migrations recorded in the graph as ``:MemosMigration`` nodes)
and detects what the server can do (``store.capabilities``)::

    from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore

    with Neo4jMemoryStore.from_uri("neo4j://localhost:7687", auth=("neo4j", "secret")) as store:
        mos = MemOS(store=store)

Graph model (every property flat: Neo4j refuses nested maps):

* ``(:Cube {tenant, cube_id, header, embedding_dim, item_seq, edge_seq, event_seq})`` — the
  header as JSON text; the counters give items, edges and events their insertion order.
* ``(:Memory {tenant, cube_id, id, seq, ...})`` — one per item, its properties those of the shared
  :data:`~memos_agents.plaintext.stores.codec.GRAPH_CODEC` (``text``, ``search_text``, ``terms``,
  ``doc_len``, ``memory_type``, ``node_kind``, ``key``, ``tags``, ``source_message_ids``,
  ``source_session_ids``, ``source_speakers``, ``user_id``, ``author_id``, ``origin``, ``turns``,
  ``event_time``, ``event_us``, ``created_at``, ``updated_at``, ``confidence``, ``status``,
  ``version``, ``embedding``, ``metadata``); topic nodes (session topics of the tree) carry the
  extra label ``:Topic``. Timestamps are ISO-8601 text (exact to the microsecond), ``event_us``
  their integer form for range filters, ``metadata`` JSON text, ``terms`` the item's BM25 terms.
  Nodes written before ``author_id``/``origin``/``turns`` existed are read as the codec reads
  legacy rows.
* Relationships between ``:Memory`` nodes of one cube, typed by the
  :class:`~memos_agents.schema.RelationType` whitelist (PARENT, FOLLOWS, MERGED_TO, RELATE_TO,
  DERIVED_FROM, CONFLICTS_WITH, SUPERSEDES), with ``weight``, ``created_at``, ``seq``.
* ``(:Event {tenant, cube_id, seq, kind, payload, created_at})`` — the cube's event log.

Tenancy: every node carries ``tenant`` (the store's namespace) and ``cube_id``, and every query
matches both, so several deployments share one database (Neo4j Community has one); pass another
``database`` for one database per tenant where the server has several. Values always go in as
parameters; the only names interpolated into Cypher are labels and relationship types taken from
the whitelists above, item property names of the codec, and a validated integer path length.

Transactions: :meth:`Neo4jMemoryStore.batch` runs all ops of a batch in ONE managed transaction
(``execute_write`` when any op writes, else ``execute_read``). Each op has one generator body (a
``@handles(...)`` method) that yields Cypher statements (batched with ``UNWIND``) and is sent each
one's records; the batch body chains the op bodies in order, so an op sees the writes of the ops
before it, and the batch commits whole or not at all: any error rolls all of it back. Every op
first reads its ``:Cube`` node in that transaction (once per cube and batch) and checks the
caller's permission against the header it read. The driver retries transient failures by running
the batch body afresh. ``batch`` drives the bodies on a ``neo4j.Driver``; ``abatch`` drives the
very same bodies on a ``neo4j.AsyncDriver`` (one per event loop when the store owns its drivers,
else ``batch`` in a worker thread). Cube imports and cube deletes are single transactions too
(not chunked), so a cube must fit in the server's transaction memory.

Differences between servers that this code handles (found with ArcadeDB's Bolt plugin, the real
Bolt/Cypher server CI runs, against Neo4j 5):

* **Vector index.** Neo4j: ``CREATE VECTOR INDEX`` and ``db.index.vector.queryNodes`` (approximate,
  over every tenant, so results are filtered after the call and an exact scan fills in when fewer
  than ``k`` survive). ArcadeDB refuses both; :meth:`~Neo4jMemoryStore.setup` records that and
  search is an exact ``vector.similarity.cosine()`` scan over the cube's nodes.
* **Cosine scale.** Neo4j's ``vector.similarity.cosine()`` and its cosine index return
  ``(1 + cos) / 2``; ArcadeDB's returns ``cos``. Setup probes ``cosine([1, 0], [0, 1])`` and scores
  are converted back to the cosine the store interface promises.
* **Full-text index.** Neo4j: ``CREATE FULLTEXT INDEX`` (Lucene, ``english`` analyzer) and
  ``db.index.fulltext.queryNodes`` (Lucene's BM25, whose statistics span the whole index, every
  tenant and cube, and whose analyzer differs from the embedded store's). ArcadeDB refuses both;
  then BM25 is computed in Cypher over each item's stored ``terms``: the same terms, formula
  (k1 = 1.2, b = 0.75, FTS5's idf) and per-cube statistics as the embedded SQLite store, so the two
  rank identically. ``use_fulltext_index=False`` chooses that computation on Neo4j too.
* **Index names.** ArcadeDB's ``SHOW INDEXES`` lists its own names and ignores the ones given, so
  capabilities are detected by what the server reports, never assumed from a migration.
* **Concurrency.** ArcadeDB is optimistic (MVCC): two transactions writing one cube conflict and
  one gets ``TransientError`` (``DeadlockDetected``); Neo4j takes locks and waits. Both end up in
  the driver's managed-transaction retry, so callers see neither. A write takes its cube's
  counters first, which serialises writers of one cube on Neo4j.
* **Constraints.** Uniqueness constraints are created where the server has them, but the store
  checks ids itself inside each transaction, so its typed errors do not depend on enforcement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from memos_agents.cube import CubeHeader, Permission
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    MemOSError,
    StoreError,
    UserExistsError,
    UserNotFoundError,
    require,
)
from memos_agents.infra import registry
from memos_agents.infra.audit import AuditEntry, ChainHead, ChainVerification, stored_time, verify_chain
from memos_agents.infra.users import UserRecord, check_caller, check_principals
from memos_agents.plaintext.stores import base
from memos_agents.plaintext.stores.codec import ACCESS_COLUMNS, GRAPH_CODEC, access_tracking, edge_from_row
from memos_agents.plaintext.stores.filters import Predicate, compile_filters, matches
from memos_agents.plaintext.text import BM25_B, BM25_K1, bm25_query_terms, content_terms
from memos_agents.schema import (
    Edge,
    MemoryItem,
    NodeKind,
    RelationType,
    SearchFilters,
    Visibility,
    utcnow,
    validate_id,
)

try:
    import neo4j
    import neo4j.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise require("neo4j", "neo4j") from exc

if TYPE_CHECKING:
    from neo4j import AsyncDriver, AsyncManagedTransaction, Driver, ManagedTransaction

#: Longest path a graph expansion walks (the store interface's limit).
MAX_EXPAND_DEPTH = base.MAX_EXPAND_DEPTH

__all__ = [
    "MAX_EXPAND_DEPTH",
    "NODE_LABELS",
    "RELATION_TYPES",
    "SCHEMA_VERSION",
    "Body",
    "Neo4jMemoryStore",
    "cypher_filter",
    "lucene_query",
    "node_labels",
    "node_properties",
    "relation_type",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: One Cypher statement and its parameters.
Step = tuple[str, dict[str, Any]]
Records = list[dict[str, Any]]
#: A transaction body: yields statements, is sent each one's records, returns the op's result.
Body = Generator[Step, Records, T]

#: Node labels by node kind (the only labels ever interpolated into Cypher).
NODE_LABELS: dict[NodeKind, str] = {NodeKind.MEMORY: "Memory", NodeKind.TOPIC: "Memory:Topic"}
#: Relationship types that may be interpolated into Cypher: the RelationType whitelist.
RELATION_TYPES: frozenset[str] = frozenset(t.value for t in RelationType)
_REL_NAME = re.compile(r"^[A-Z][A-Z_]{0,63}$")
#: Item property names that may be interpolated into Cypher (filters, projections): the codec's.
_PROPERTY = re.compile(r"^[a-z][a-z_]{0,63}$")
ITEM_PROPERTIES: frozenset[str] = frozenset(c for c in GRAPH_CODEC.columns if _PROPERTY.match(c))

#: URI schemes of the Bolt protocol (the driver's HTTP Query API is not used by this store).
BOLT_SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})
VECTOR_INDEX = "memos_memory_embedding"
#: A batch checks ids itself inside its transaction, so a uniqueness constraint that still fails
#: (at commit, on an optimistic server such as ArcadeDB) means a concurrent writer inserted the same
#: id (e.g. a session's topic node): the batch is run again this many times, then refused.
CONSTRAINT_RETRIES = 3
FULLTEXT_INDEX = "memos_memory_text"

#: Versioned schema migrations: (version, [(statement, required)]). A statement that is not
#: required may be refused by a server that lacks the feature (ArcadeDB: vector and full-text).
_MIGRATIONS: list[tuple[int, list[tuple[str, bool]]]] = [
    (
        1,
        [
            (
                "CREATE CONSTRAINT memos_cube_key IF NOT EXISTS FOR (c:Cube) REQUIRE (c.tenant, c.cube_id) IS UNIQUE",
                True,
            ),
            (
                "CREATE CONSTRAINT memos_memory_key IF NOT EXISTS "
                "FOR (m:Memory) REQUIRE (m.tenant, m.cube_id, m.id) IS UNIQUE",
                True,
            ),
            ("CREATE INDEX memos_memory_cube IF NOT EXISTS FOR (m:Memory) ON (m.tenant, m.cube_id)", True),
            ("CREATE INDEX memos_event_cube IF NOT EXISTS FOR (e:Event) ON (e.tenant, e.cube_id)", True),
            (
                f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} IF NOT EXISTS FOR (m:Memory) ON EACH [m.search_text] "
                "OPTIONS {indexConfig: {`fulltext.analyzer`: 'english'}}",
                False,
            ),
            (
                f"CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (m:Memory) ON m.embedding "
                "OPTIONS {indexConfig: {`vector.similarity_function`: 'cosine'}}",
                False,
            ),
        ],
    ),
    (
        2,
        [
            (
                "CREATE CONSTRAINT memos_audit_head_key IF NOT EXISTS "
                "FOR (h:AuditHead) REQUIRE (h.tenant, h.chain) IS UNIQUE",
                True,
            ),
            ("CREATE INDEX memos_audit_chain IF NOT EXISTS FOR (a:AuditEntry) ON (a.tenant, a.chain, a.seq)", True),
            (
                "CREATE INDEX memos_version_item IF NOT EXISTS "
                "FOR (v:MemoryVersion) ON (v.tenant, v.cube_id, v.item_id)",
                True,
            ),
        ],
    ),
    (
        3,
        [
            (
                "CREATE CONSTRAINT memos_user_key IF NOT EXISTS "
                "FOR (u:MemUser) REQUIRE (u.tenant, u.user_id) IS UNIQUE",
                True,
            ),
        ],
    ),
    (
        4,
        [
            (
                "CREATE INDEX memos_memory_expiry IF NOT EXISTS "
                "FOR (m:Memory) ON (m.tenant, m.cube_id, m.status, m.expires_at)",
                False,
            ),
            (
                "CREATE INDEX memos_memory_type IF NOT EXISTS "
                "FOR (m:Memory) ON (m.tenant, m.cube_id, m.memory_type, m.status)",
                False,
            ),
        ],
    ),
    (
        5,
        [  # access tracking: nodes stored before it were last touched when created; in batches of
            # 10,000 where the server takes CALL ... IN TRANSACTIONS (Neo4j 4.4+), in one go otherwise
            (
                "MATCH (m:Memory) WHERE m.touched_at IS NULL CALL { WITH m "
                "SET m.touched_at = m.created_at, m.access_count = 0 } IN TRANSACTIONS OF 10000 ROWS",
                False,
            ),
            ("MATCH (m:Memory) WHERE m.touched_at IS NULL SET m.touched_at = m.created_at, m.access_count = 0", True),
            (
                "CREATE INDEX memos_memory_idle IF NOT EXISTS "
                "FOR (m:Memory) ON (m.tenant, m.cube_id, m.status, m.touched_at)",
                False,
            ),
        ],
    ),
    (
        6,
        [  # the MemStore registry: one node per entry, subscription and publisher key
            (
                "CREATE CONSTRAINT memos_registry_entry IF NOT EXISTS "
                "FOR (r:RegistryEntry) REQUIRE (r.tenant, r.name, r.version) IS UNIQUE",
                True,
            ),
            (
                "CREATE CONSTRAINT memos_registry_subscription IF NOT EXISTS "
                "FOR (s:RegistrySubscription) REQUIRE (s.tenant, s.subscriber, s.name) IS UNIQUE",
                True,
            ),
            (
                "CREATE CONSTRAINT memos_registry_key IF NOT EXISTS "
                "FOR (k:RegistryKey) REQUIRE (k.tenant, k.publisher) IS UNIQUE",
                True,
            ),
            (
                "CREATE INDEX memos_registry_subscription_name IF NOT EXISTS "
                "FOR (s:RegistrySubscription) ON (s.tenant, s.name)",
                False,
            ),
        ],
    ),
    (
        7,
        [  # ListHotOp: the most used activated memories of a cube
            (
                "CREATE INDEX memos_memory_hot IF NOT EXISTS "
                "FOR (m:Memory) ON (m.tenant, m.cube_id, m.status, m.access_count)",
                False,
            ),
        ],
    ),
]
_AUDIT_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "cube_id",
    "item_ids",
    "item_count",
    "outcome",
    "reason",
    "request_id",
    "prev_hash",
    "hash",
)
_AUDIT_PROJECTION = "a {" + ", ".join("." + f for f in _AUDIT_FIELDS) + "}"
#: Ops whose handler's first query reads their cube (``_cube``/``_read``): with ``require_users``,
#: a batch starting with one checks its caller in that query instead of one more round trip.
_READS_CUBE_FIRST: tuple[type, ...] = (
    base.GetCubeOp,
    base.GetOp,
    base.ListOp,
    base.CountOp,
    base.EdgesOp,
    base.VectorSearchOp,
    base.TextSearchOp,
    base.ExpandOp,
    base.ListEventsOp,
    base.HistoryOp,
    base.AsOfOp,
    base.ChangedSinceOp,
    base.ListExpiringOp,
    base.RecordAccessOp,
    base.ListIdleOp,
    base.ListHotOp,
)
#: Schema version this code writes.
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_PROJECTION = "m {" + ", ".join("." + p for p in GRAPH_CODEC.read_columns) + "}"
_PROJECTION_EMB = "m {" + ", ".join("." + p for p in (*GRAPH_CODEC.read_columns, "embedding")) + "}"
_CUBE = "(c:Cube {tenant: $tenant, cube_id: $cube_id})"
#: Match each item whose id is in ``$ids`` as ``m``.
_EACH_ITEM = "UNWIND $ids AS item_id MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id, id: item_id})"
_CYPHER_OPS = {"eq": "=", "ge": ">=", "le": "<="}
#: The fields of a ``(:MemoryVersion)`` node as :func:`base.version_from_row` reads them.
_VERSION_FIELDS = (
    "v.item_id AS item_id, v.version AS version, v.item AS item, v.edges AS edges, v.change AS change, "
    "v.changed_at AS changed_at, v.changed_by AS changed_by, v.request_id AS request_id"
)


def node_labels(kind: NodeKind | str) -> str:
    """Return the Cypher labels of a node kind, from the :data:`NODE_LABELS` whitelist.

    Raises:
        InvalidInputError: Unknown node kind.

    """
    try:
        return NODE_LABELS[NodeKind(kind)]
    except ValueError as exc:
        raise InvalidInputError(f"unknown node kind {kind!r}") from exc


def relation_type(value: RelationType | str) -> str:
    """Return a relationship type safe to interpolate into Cypher: a member of the whitelist.

    Raises:
        InvalidInputError: ``value`` is not a :class:`~memos_agents.schema.RelationType`.

    """
    name = value.value if isinstance(value, RelationType) else str(value)
    if name not in RELATION_TYPES or not _REL_NAME.match(name):
        raise InvalidInputError(f"relationship type {value!r} is not in the whitelist {sorted(RELATION_TYPES)}")
    return name


def lucene_query(text: str) -> str | None:
    """Build a Lucene query for Neo4j's full-text index: the OR of the quoted content terms.

    Every Lucene operator character is escaped inside the quotes, so user text is never syntax.

    Returns:
        The query, or None when ``text`` has no content term.

    """
    terms = content_terms(text)
    if not terms:
        return None
    return " OR ".join('"' + re.sub(r'([\\"])', r"\\\1", t) + '"' for t in terms)


def node_properties(item: MemoryItem, tenant: str, seq: int) -> dict[str, Any]:
    """Return the node properties of ``item`` (with ``cube_id`` set): its codec row plus ``tenant`` and ``seq``.

    ``None`` values are simply not stored by the server (``SET m = row``).
    """
    return {**GRAPH_CODEC.encode(item), "tenant": tenant, "seq": seq}


def cypher_filter(predicates: Sequence[Predicate], var: str = "m", prefix: str = "f") -> tuple[str, dict[str, Any]]:
    """Render filter predicates as a Cypher ``AND ...`` fragment over node ``var`` and its parameters.

    Values are parameters (``$f0``, ``$f1``, ...; another ``prefix`` for a second fragment in one
    query); a property name must be an item property of the codec. A range over a missing value
    never matches (``null >= x`` is not true). A node stored before per-item visibility existed
    (no ``visibility`` property) reads as ``cube``.

    Raises:
        InvalidInputError: A predicate names no item property.

    """
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for n, p in enumerate(predicates):
        if p.field not in ITEM_PROPERTIES:
            raise InvalidInputError(f"cannot filter on {p.field!r}")
        name, prop = f"{prefix}{n}", f"{var}.{p.field}"
        if p.op == "visible_to":
            level = f"coalesce({prop}, '{Visibility.CUBE.value}')"
            if p.value is None:
                clauses.append(f"{level} = '{Visibility.PUBLIC.value}'")
                continue
            clauses.append(f"({level} <> '{Visibility.PRIVATE.value}' OR {var}.author_id = ${name})")
        elif p.op == "in":
            clauses.append(f"{prop} IN ${name}")
        elif p.op == "overlaps":
            clauses.append(f"any(tag IN {prop} WHERE tag IN ${name})")
        else:
            clauses.append(f"{prop} {_CYPHER_OPS[p.op]} ${name}")
        params[name] = list(p.value) if isinstance(p.value, tuple | list) else p.value
    return ("" if not clauses else " AND " + " AND ".join(clauses)), params


def _drive(body: Body[T], run: Callable[[str, dict[str, Any]], Records]) -> T:
    """Run a transaction body: each statement it yields goes to ``run``, whose records are sent back.

    A statement the server refuses (``ClientError``) is thrown into the body, which may handle it
    (optional schema statements) or let it propagate (everything else).
    """
    try:
        query, params = next(body)
        while True:
            try:
                records = run(query, params)
            except neo4j.exceptions.ClientError as exc:
                query, params = body.throw(exc)
            else:
                query, params = body.send(records)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _adrive(body: Body[T], run: Callable[[str, dict[str, Any]], Awaitable[Records]]) -> T:
    """Async twin of :func:`_drive`."""
    try:
        query, params = next(body)
        while True:
            try:
                records = await run(query, params)
            except neo4j.exceptions.ClientError as exc:
                query, params = body.throw(exc)
            else:
                query, params = body.send(records)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@dataclass
class _Batch:
    """One batch's state: the caller, and each cube's ``(header, embedding_dim)`` read so far."""

    ctx: base.CallContext
    cubes: dict[str, tuple[CubeHeader, int | None]] = field(default_factory=dict)
    #: The results of the ops run so far (how far a refused batch got).
    results: list[Any] = field(default_factory=list)
    #: The caller's user record is still to be checked (``require_users``): by the first cube read.
    caller_pending: bool = False

    def remember(self, cube_id: str, rows: Records) -> tuple[CubeHeader, int | None]:
        """Keep the cube read in ``rows`` (``header``, ``dim``); raise CubeNotFoundError if none."""
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        dim = rows[0]["dim"]
        known = (CubeHeader.model_validate_json(rows[0]["header"]), None if dim is None else int(dim))
        self.cubes[cube_id] = known
        return known


class Neo4jMemoryStore(base.BaseMemoryStore):
    """Plaintext store on Neo4j 5 or another Bolt/Cypher server. See the module docstring.

    Args:
        driver: A ``neo4j.Driver`` for :meth:`batch` (None: it raises ConfigError, unless the
            store was built by :meth:`from_uri`).
        async_driver: A ``neo4j.AsyncDriver`` for :meth:`abatch`, used from the event loop it
            belongs to (None: the store makes one per event loop when it owns its drivers, else
            ``abatch`` runs :meth:`batch` in a worker thread).
        database: Database name (None: the server's default database).
        tenant: Namespace of this store inside the database (default ``"default"``); stores with
            different tenants never see each other's cubes.
        use_fulltext_index: Use Neo4j's full-text index for text search when :meth:`setup` finds
            it (default True); False computes BM25 in Cypher with the embedded store's terms,
            formula and per-cube statistics (a scan of the cube, so slower on large cubes).
        audit: Write every batch to the audit log (default True): a batch that writes appends its
            entries in its own transaction, a read-only or refused one in a write transaction
            right after; each chain's ``AuditHead`` node is locked while appending, so appenders
            of one cube's chain serialise (as its writers already do on the cube's counters).
        require_users: Only registered, enabled users may call (checked in each batch's
            transaction: within the first query of a batch that starts by reading a cube, by one
            more query otherwise), and grant only to such users (default False; see
            :mod:`memos_agents.infra.users`).

    Raises:
        ConfigError: Neither driver given.
        InvalidInputError: Malformed tenant.

    """

    def __init__(
        self,
        driver: Driver | None = None,
        *,
        async_driver: AsyncDriver | None = None,
        database: str | None = None,
        tenant: str = "default",
        use_fulltext_index: bool = True,
        audit: bool = True,
        require_users: bool = False,
    ) -> None:
        super().__init__(require_users=require_users)
        #: Whether every batch is written to the audit log (see :mod:`memos_agents.infra.audit`).
        self.audit = audit
        if driver is None and async_driver is None:
            raise ConfigError("Neo4jMemoryStore needs a driver or an async_driver (or use from_uri)")
        self.database = database
        self.tenant = validate_id(tenant, "tenant")
        self.use_fulltext_index = use_fulltext_index
        self._driver = driver
        self._async_driver = async_driver
        self._uri: str | None = None
        self._auth: Any = None
        self._driver_config: dict[str, Any] = {}
        self._owned_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncDriver] = (
            weakref.WeakKeyDictionary()
        )
        self._owns_drivers = False
        self._ready = False
        # found by setup(): Neo4j's vector index (else exact cosine scan), its full-text index
        # (used when allowed; else BM25 in Cypher), cosine as (1 + cos) / 2 (Neo4j) rather than cos
        self._vector_index = False
        self._fulltext_index = False
        self._cosine_normalized = False

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str | None = None,
        tenant: str = "default",
        use_fulltext_index: bool = True,
        audit: bool = True,
        require_users: bool = False,
        **driver_config: Any,
    ) -> Neo4jMemoryStore:
        """Return a store that owns drivers for ``uri`` (no connection is made until :meth:`setup`).

        Use it as a context manager (``with`` or ``async with``): entering runs :meth:`setup`,
        leaving closes the drivers.

        Args:
            uri: Bolt URI, e.g. ``neo4j://localhost:7687`` or ``bolt://127.0.0.1:7687``.
            auth: ``(user, password)``.
            database: Database name (None: the server's default).
            tenant: Namespace inside the database.
            use_fulltext_index: See the class.
            audit: See the class.
            require_users: See the class.
            **driver_config: Passed to ``neo4j.GraphDatabase.driver`` (timeouts, pool size, ...).

        Raises:
            ConfigError: Not a Bolt URI (``bolt``/``neo4j`` schemes, ``+s``/``+ssc`` for TLS), or a
                configuration the driver refuses.

        """
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme not in BOLT_SCHEMES:
            raise ConfigError(f"not a Bolt URI: {uri!r}; expected one of {', '.join(sorted(BOLT_SCHEMES))}://host:port")
        try:
            driver = neo4j.GraphDatabase.driver(uri, auth=auth, **driver_config)
        except (ValueError, TypeError, neo4j.exceptions.ConfigurationError) as exc:
            raise ConfigError(f"invalid Neo4j URI or driver configuration: {exc}") from exc
        store = cls(
            driver,
            database=database,
            tenant=tenant,
            use_fulltext_index=use_fulltext_index,
            audit=audit,
            require_users=require_users,
        )
        store._uri, store._auth, store._driver_config = uri, auth, driver_config
        store._owns_drivers = True
        return store

    def __enter__(self) -> Neo4jMemoryStore:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Neo4jMemoryStore:
        await self.asetup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Neo4jMemoryStore(uri={self._uri!r}, database={self.database!r}, tenant={self.tenant!r})"

    @property
    def sync_path(self) -> bool:
        """Whether :meth:`batch` can run: a sync driver was given (``from_uri`` makes one)."""
        return self._driver is not None

    # -- execution -------------------------------------------------------------------------------
    def _sync_driver(self) -> Driver:
        if self._driver is None:
            raise ConfigError("this Neo4jMemoryStore has no sync driver; use abatch or pass driver=")
        return self._driver

    def _loop_driver(self) -> AsyncDriver | None:
        """Return the async driver for the running loop: the given one, an owned one per loop, or None."""
        if self._async_driver is not None:
            return self._async_driver
        if not self._owns_drivers or self._uri is None:
            return None
        loop = asyncio.get_running_loop()
        driver = self._owned_async.get(loop)
        if driver is None:
            driver = neo4j.AsyncGraphDatabase.driver(self._uri, auth=self._auth, **self._driver_config)
            self._owned_async[loop] = driver
        return driver

    def _translate(self, exc: Exception) -> MemOSError:
        if isinstance(exc, neo4j.exceptions.ConstraintError):
            return InvalidInputError(f"write refused by a uniqueness constraint: {exc}")
        return StoreError(f"neo4j store ({self._uri or 'driver'}, database {self.database!r}): {exc}")

    def _batch_body(self, ops: Sequence[base.Op], state: _Batch, write: bool) -> Body[list[Any]]:
        """Return the transaction body of a batch: the ops' bodies chained, sharing one :class:`_Batch`.

        A batch that writes appends its audit entries in the same transaction.
        """
        state.results = []
        if self.checks_caller(state.ctx):
            if ops and isinstance(ops[0], _READS_CUBE_FIRST):  # folded into its first query: no round trip
                state.caller_pending = True
            else:
                yield from self._check_caller(state)
        for op in ops:
            state.results.append((yield from self.handler(op)(op, state)))
        if state.caller_pending:  # never reached a cube read: checked now, before anything is returned
            yield from self._check_caller(state)
        if write and self.audit:
            yield from self._audit_body(
                state.ctx, [base.audit_record(op, r) for op, r in zip(ops, state.results, strict=True)]
            )
        return state.results

    # -- the audit log ---------------------------------------------------------------------------------
    def _audit_body(self, ctx: base.CallContext, records: Sequence[base.AuditRecord]) -> Body[None]:
        """Append ``records`` to their chains: lock each chain's head (in chain order), seal, store."""
        heads: dict[str, ChainHead | None] = {}
        for chain in sorted({r.chain for r in records}):
            # the SET takes the head's write lock before it is read: appenders of a chain serialise
            rows = yield (
                "MERGE (h:AuditHead {tenant: $tenant, chain: $chain}) ON CREATE SET h.seq = 0, h.hash = '' "
                "SET h.appends = coalesce(h.appends, 0) + 1 RETURN h.seq AS seq, h.hash AS hash",
                {"tenant": self.tenant, "chain": chain},
            )
            seq = int(rows[0]["seq"] or 0)
            heads[chain] = ChainHead(seq, str(rows[0]["hash"])) if seq else None
        sealed = base.seal_records(records, heads, ctx, utcnow())
        yield (
            "UNWIND $rows AS r CREATE (a:AuditEntry {tenant: $tenant, chain: r.chain, seq: r.seq, at: r.at, "
            "actor: r.actor, action: r.action, cube_id: r.cube_id, item_ids: r.item_ids, item_count: r.item_count, "
            "outcome: r.outcome, reason: r.reason, request_id: r.request_id, prev_hash: r.prev_hash, hash: r.hash})",
            {
                "tenant": self.tenant,
                "rows": [
                    {
                        **e.model_dump(mode="json", exclude={"at", "item_ids"}),
                        "at": stored_time(e.at),
                        "item_ids": json.dumps(e.item_ids),
                        "chain": chain,
                    }
                    for chain, e in sealed
                ],
            },
        )
        yield (
            "UNWIND $heads AS x MATCH (h:AuditHead {tenant: $tenant, chain: x.chain}) "
            "SET h.seq = x.seq, h.hash = x.hash",
            {
                "tenant": self.tenant,
                "heads": [{"chain": c, "seq": h.seq, "hash": h.hash} for c, h in heads.items() if h is not None],
            },
        )

    def _audit_now(self, ctx: base.CallContext, records: Sequence[base.AuditRecord]) -> None:
        """Append ``records`` in a write transaction of their own (a read batch's, or a refused batch's)."""

        def work(tx: ManagedTransaction) -> None:
            _drive(self._audit_body(ctx, records), lambda query, params: tx.run(query, params).data())  # type: ignore[arg-type]

        with self._sync_driver().session(database=self.database) as session:
            session.execute_write(work)

    async def _aaudit_now(
        self, driver: AsyncDriver, ctx: base.CallContext, records: Sequence[base.AuditRecord]
    ) -> None:
        """Async twin of :meth:`_audit_now`."""

        async def work(tx: AsyncManagedTransaction) -> None:
            async def run(query: str, params: dict[str, Any]) -> Records:
                return await (await tx.run(query, params)).data()  # type: ignore[arg-type]

            await _adrive(self._audit_body(ctx, records), run)

        async with driver.session(database=self.database) as session:
            await session.execute_write(work)

    def _audit_refused(self, ops: Sequence[base.Op], state: _Batch | None, exc: Exception) -> list[base.AuditRecord]:
        return base.audit_failure(ops, len(state.results) if state is not None else 0, exc)

    def _audit_entry(self, row: dict[str, Any]) -> AuditEntry:
        return AuditEntry.model_validate({**row, "item_ids": tuple(json.loads(row["item_ids"]))})

    def _audit_floor(self, state: _Batch, cube_id: str | None) -> Body[datetime | None]:
        header = None
        if cube_id is not None and not state.ctx.unrestricted:
            try:
                header = (yield from self._cube(state, cube_id, None))[0]
            except CubeNotFoundError:
                header = None
        return base.authorize_audit(header, state.ctx, cube_id)

    @base.handles(base.ListAuditOp)
    def _list_audit(self, op: base.ListAuditOp, state: _Batch) -> Body[list[AuditEntry]]:
        floor = yield from self._audit_floor(state, op.cube_id)
        params: dict[str, Any] = {
            "tenant": self.tenant,
            "chain": op.cube_id or base.STORE_CHAIN,
            "after": op.after_seq,
            "limit": op.limit,
            "actor": op.actor,
            "action": op.action,
            "outcome": None if op.outcome is None else op.outcome.value,
            "since": None if op.since is None else stored_time(op.since),
            "until": None if op.until is None else stored_time(op.until),
            "floor": None if floor is None else stored_time(floor),
        }
        rows = yield (
            "MATCH (a:AuditEntry) WHERE a.tenant = $tenant AND a.chain = $chain AND a.seq > $after "
            "AND ($actor IS NULL OR a.actor = $actor) AND ($action IS NULL OR a.action = $action) "
            "AND ($outcome IS NULL OR a.outcome = $outcome) AND ($since IS NULL OR a.at >= $since) "
            "AND ($until IS NULL OR a.at < $until) AND ($floor IS NULL OR a.at >= $floor) "
            f"RETURN {_AUDIT_PROJECTION} AS a ORDER BY a.seq LIMIT $limit",
            params,
        )
        return [self._audit_entry(r["a"]) for r in rows]

    @base.handles(base.VerifyAuditOp)
    def _verify_audit(self, op: base.VerifyAuditOp, state: _Batch) -> Body[ChainVerification]:
        yield from self._audit_floor(state, op.cube_id)
        params = {"tenant": self.tenant, "chain": op.cube_id or base.STORE_CHAIN}
        heads = yield (
            "MATCH (h:AuditHead {tenant: $tenant, chain: $chain}) RETURN h.seq AS seq, h.hash AS hash",
            params,
        )
        rows = yield (
            f"MATCH (a:AuditEntry) WHERE a.tenant = $tenant AND a.chain = $chain RETURN {_AUDIT_PROJECTION} AS a "
            "ORDER BY a.seq",
            params,
        )
        head = ChainHead(int(heads[0]["seq"]), str(heads[0]["hash"])) if heads and heads[0]["seq"] else None
        return verify_chain((self._audit_entry(r["a"]) for r in rows), expected_head=head)

    @base.handles(base.ListAuditChainsOp)
    def _list_audit_chains(self, op: base.ListAuditChainsOp, state: _Batch) -> Body[list[str]]:
        base.authorize_audit(None, state.ctx, None)
        rows = yield (
            "MATCH (h:AuditHead) WHERE h.tenant = $tenant RETURN h.chain AS chain ORDER BY chain",
            {"tenant": self.tenant},
        )
        return [str(r["chain"]) for r in rows]

    def _prepare(self, ops: Sequence[base.Op]) -> tuple[list[base.Op], bool]:
        """Check the ops (known types, store set up); return them and whether the batch writes."""
        ops = list(ops)
        for op in ops:  # known op types (a header is validated by handler(), inside the audited run)
            base.check_permission(op)
            if type(op) not in self._handlers:
                raise InvalidInputError(f"{type(self).__name__} does not handle {type(op).__name__}")
        if ops and not self._ready:
            raise StoreError("store is not set up: call setup() first")
        return ops, any(isinstance(op, base.WRITE_OPS) for op in ops)

    def batch(self, ops: Sequence[base.Op], *, ctx: base.CallContext = base.SYSTEM) -> list[Any]:
        """Run ``ops`` in order as ``ctx`` in one managed transaction (retried on transient errors).

        Raises:
            StoreError: The server failed or is unreachable; nothing of the batch was written.
            The typed errors of each op (see :mod:`~memos_agents.plaintext.stores.base`).

        """
        ops, write = self._prepare(ops)
        if not ops:
            return []
        state: _Batch | None = None

        def work(tx: ManagedTransaction) -> list[Any]:
            nonlocal state
            state = _Batch(ctx)
            return _drive(self._batch_body(ops, state, write), lambda query, params: tx.run(query, params).data())  # type: ignore[arg-type]

        try:
            for attempt in range(CONSTRAINT_RETRIES + 1):
                try:
                    with self._sync_driver().session(database=self.database) as session:
                        results = session.execute_write(work) if write else session.execute_read(work)
                    break
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
                    self._retry_or_raise(exc, attempt)
            if not write and self.audit:
                self._audit_now(ctx, [base.audit_record(op, r) for op, r in zip(ops, results, strict=True)])
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc
        except MemOSError as exc:
            if self.audit and not isinstance(exc, StoreError):
                try:
                    self._audit_now(ctx, self._audit_refused(ops, state, exc))
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as audit_exc:
                    log.error("could not write the audit entries of a refused batch: %s", audit_exc)
            raise
        return results

    async def abatch(self, ops: Sequence[base.Op], *, ctx: base.CallContext = base.SYSTEM) -> list[Any]:
        """Async twin of :meth:`batch` on the async driver (``batch`` in a worker thread without one)."""
        ops, write = self._prepare(ops)
        if not ops:
            return []
        driver = self._loop_driver()
        if driver is None:
            return await asyncio.to_thread(self.batch, ops, ctx=ctx)

        state: _Batch | None = None

        async def work(tx: AsyncManagedTransaction) -> list[Any]:
            nonlocal state
            state = _Batch(ctx)

            async def run(query: str, params: dict[str, Any]) -> Records:
                return await (await tx.run(query, params)).data()  # type: ignore[arg-type]

            return await _adrive(self._batch_body(ops, state, write), run)

        try:
            for attempt in range(CONSTRAINT_RETRIES + 1):
                try:
                    async with driver.session(database=self.database) as session:
                        if write:
                            results = await session.execute_write(work)
                        else:
                            results = await session.execute_read(work)
                    break
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
                    self._retry_or_raise(exc, attempt)
            if not write and self.audit:
                await self._aaudit_now(
                    driver, ctx, [base.audit_record(op, r) for op, r in zip(ops, results, strict=True)]
                )
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc
        except MemOSError as exc:
            if self.audit and not isinstance(exc, StoreError):
                try:
                    await self._aaudit_now(driver, ctx, self._audit_refused(ops, state, exc))
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as audit_exc:
                    log.error("could not write the audit entries of a refused batch: %s", audit_exc)
            raise
        return results

    def _retry_or_raise(self, exc: Exception, attempt: int) -> None:
        """Return when a failed batch should run again (see :data:`CONSTRAINT_RETRIES`); else raise it translated."""
        if isinstance(exc, neo4j.exceptions.ConstraintError) and attempt < CONSTRAINT_RETRIES:
            log.info("constraint violated at commit by a concurrent writer; running the batch again")
            return
        raise self._translate(exc) from exc

    def _params(self, cube_id: str, **extra: Any) -> dict[str, Any]:
        return {"tenant": self.tenant, "cube_id": cube_id, **extra}

    def _cube(self, state: _Batch, cube_id: str, permission: Permission | None) -> Body[tuple[CubeHeader, int | None]]:
        """Read the cube (once per batch), check the caller may do ``permission``; return ``(header, dim)``.

        Raises:
            CubeNotFoundError: No such cube.
            PermissionDeniedError: The caller may not.

        """
        known = state.cubes.get(cube_id)
        if known is None and state.caller_pending:  # require_users: the caller's record read with the cube
            principal = state.ctx.principal
            rows = yield (
                "OPTIONAL MATCH (u:MemUser {tenant: $tenant, user_id: $principal}) "
                f"OPTIONAL MATCH {_CUBE} RETURN u.record AS caller, c.header AS header, c.embedding_dim AS dim",
                self._params(cube_id, principal=principal),
            )
            record = rows[0]["caller"] if rows else None
            check_caller(principal, None if record is None else UserRecord.model_validate_json(record))
            state.caller_pending = False
            known = state.remember(cube_id, [r for r in rows if r["header"] is not None])
        elif known is None:
            rows = yield (f"MATCH {_CUBE} RETURN c.header AS header, c.embedding_dim AS dim", self._params(cube_id))
            known = state.remember(cube_id, rows)
        base.authorize(known[0], state.ctx, permission)
        return known

    def _read(self, state: _Batch, cube_id: str) -> Body[tuple[CubeHeader, int | None, list[Predicate]]]:
        """Return ``(header, dim, read scope)`` of a read of ``state.ctx`` (see :func:`base.read_scope`).

        Raises:
            CubeNotFoundError: No such cube.
            PermissionDeniedError: The caller has no read on the cube, which holds no public item.

        """
        header, dim = yield from self._cube(state, cube_id, None)
        scope = base.read_scope(header, state.ctx)
        if base.public_only(scope):
            rows = yield (
                "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id "
                f"AND m.visibility = '{Visibility.PUBLIC.value}' RETURN m.id AS id LIMIT 1",
                self._params(cube_id),
            )
            if not rows:
                raise base.deny_read(header, state.ctx)
        return header, dim, scope

    def _counters(
        self,
        state: _Batch,
        cube_id: str,
        permission: Permission | None,
        *,
        items: int = 0,
        edges: int = 0,
        events: int = 0,
    ) -> Body[dict[str, Any]]:
        """Reserve sequence numbers of the cube, check ``permission``; return the counters after.

        Writing the cube's counters takes the cube for this transaction, which serialises its writers.
        """
        rows = yield (
            f"MATCH {_CUBE} SET c.item_seq = coalesce(c.item_seq, 0) + $items, "
            "c.edge_seq = coalesce(c.edge_seq, 0) + $edges, c.event_seq = coalesce(c.event_seq, 0) + $events "
            "RETURN c.header AS header, c.embedding_dim AS dim, c.item_seq AS item_seq, c.edge_seq AS edge_seq, "
            "c.event_seq AS event_seq",
            self._params(cube_id, items=items, edges=edges, events=events),
        )
        base.authorize(state.remember(cube_id, rows)[0], state.ctx, permission)
        return rows[0]

    # -- lifecycle ---------------------------------------------------------------------------------
    def _setup(self) -> Body[None]:
        """Migrations and capability detection; each statement in its own auto-commit transaction.

        A statement the server refuses is thrown back into this body (see :func:`_drive`).
        """
        applied = [r["v"] for r in (yield ("MATCH (m:MemosMigration) RETURN m.version AS v", {}))]
        if applied and max(applied) > SCHEMA_VERSION:
            raise StoreError(f"database has memos schema version {max(applied)}, newer than {SCHEMA_VERSION}")
        for version, statements in _MIGRATIONS:
            if version in applied:
                continue
            for statement, required in statements:
                try:
                    yield (statement, {})
                except neo4j.exceptions.ClientError as exc:
                    if required:
                        raise
                    log.info("server refused optional schema statement (%s): %s", exc.code, statement)
            yield (
                "MERGE (m:MemosMigration {version: $v}) ON CREATE SET m.applied_at = $t",
                {"v": version, "t": utcnow().isoformat()},
            )
        online: dict[str, str] = {}
        try:
            for r in (yield ("SHOW INDEXES YIELD name, type, state RETURN name, type, state", {})):
                if str(r.get("state") or "ONLINE").upper() == "ONLINE":
                    online[str(r["name"])] = str(r.get("type") or "").upper()
        except neo4j.exceptions.ClientError as exc:
            log.info("SHOW INDEXES refused (%s); using exact vector search and Cypher BM25", exc.code)
        self._vector_index = online.get(VECTOR_INDEX) == "VECTOR"
        self._fulltext_index = self.use_fulltext_index and online.get(FULLTEXT_INDEX) == "FULLTEXT"
        probe = yield ("RETURN vector.similarity.cosine([1.0, 0.0], [0.0, 1.0]) AS s", {})
        self._cosine_normalized = bool(probe) and abs(float(probe[0]["s"]) - 0.5) < 1e-6
        self.capabilities = base.StoreCapabilities(
            vector_search="index" if self._vector_index else "exact",
            text_search="index" if self._fulltext_index else "bm25",
            native_async=self._async_driver is not None or self._owns_drivers,
        )

    def setup(self) -> None:
        """Apply pending migrations and detect the server's capabilities. Idempotent.

        Migrations are versioned and recorded as ``:MemosMigration {version, applied_at}`` nodes;
        the vector and full-text indexes are optional (a server that refuses them gets the
        fallbacks described in the module docstring). Fills :attr:`capabilities`.

        Raises:
            StoreError: The server is unreachable, refuses a required statement, or has a newer
                schema version than this code.

        """
        try:
            with self._sync_driver().session(database=self.database) as session:
                _drive(self._setup(), lambda query, params: session.run(query, params).data())  # type: ignore[arg-type]
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc
        self._ready = True

    async def asetup(self) -> None:
        """Async twin of :meth:`setup` (on the async driver, or in a worker thread without one)."""
        driver = self._loop_driver()
        if driver is None:
            await asyncio.to_thread(self.setup)
            return
        try:
            async with driver.session(database=self.database) as session:

                async def run(query: str, params: dict[str, Any]) -> Records:
                    return await (await session.run(query, params)).data()  # type: ignore[arg-type]

                await _adrive(self._setup(), run)
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc
        self._ready = True

    def close(self) -> None:
        """Close the drivers this store owns (not ones it was given). Idempotent."""
        if self._owns_drivers and self._driver is not None:
            self._driver.close()
        self._owned_async.clear()  # drivers of other loops cannot be closed from here; aclose() closes its loop's
        self._ready = False

    async def aclose(self) -> None:
        """Close this loop's async driver and the sync driver, where the store owns them. Idempotent."""
        if self._owns_drivers:
            try:
                loop = asyncio.get_running_loop()
                driver = self._owned_async.pop(loop, None)
                if driver is not None:
                    await driver.close()
            finally:
                self.close()
        else:
            self._ready = False

    # -- cubes -------------------------------------------------------------------------------------
    @base.handles(base.CreateCubeOp)
    def _create_cube(self, op: base.CreateCubeOp, state: _Batch) -> Body[None]:
        header = op.header
        base.check_new_cube(header, state.ctx)
        yield from self._check_grants(None, header)
        rows = yield (f"MATCH {_CUBE} RETURN c.cube_id AS id", self._params(header.cube_id))
        if rows:
            raise CubeExistsError(f"cube {header.cube_id!r} already exists")
        yield (
            "CREATE (c:Cube {tenant: $tenant, cube_id: $cube_id, header: $header, embedding_dim: $dim, "
            "item_seq: 0, edge_seq: 0, event_seq: 0})",
            self._params(header.cube_id, header=header.model_dump_json(), dim=header.storage.embedding_dim),
        )
        state.cubes[header.cube_id] = (header, header.storage.embedding_dim)

    @base.handles(base.ImportCubeOp)
    def _import_cube(self, op: base.ImportCubeOp, state: _Batch) -> Body[None]:
        """Create the cube and write its items and edges in this one transaction (all or nothing).

        Items keep their ``author_id`` (archived provenance): the content is planned as ``SYSTEM``.
        """
        yield from self._create_cube(base.CreateCubeOp(op.header), state)
        batch = base.WriteBatch(add=list(op.items), edges=list(op.edges))
        yield from self._write(state, op.header.cube_id, batch, as_system=True)

    @base.handles(base.GetCubeOp)
    def _get_cube(self, op: base.GetCubeOp, state: _Batch) -> Body[CubeHeader]:
        header, _ = yield from self._cube(state, op.cube_id, Permission.READ)
        return header

    @base.handles(base.ListCubesOp)
    def _list_cubes(self, op: base.ListCubesOp, state: _Batch) -> Body[list[CubeHeader]]:
        rows = yield (
            "MATCH (c:Cube {tenant: $tenant}) WHERE $prefix IS NULL OR c.cube_id STARTS WITH $prefix "
            "RETURN c.header AS header ORDER BY c.cube_id",
            {"tenant": self.tenant, "prefix": op.id_prefix or None},
        )
        ctx = state.ctx
        headers = [CubeHeader.model_validate_json(r["header"]) for r in rows]
        return [
            h
            for h in headers
            if (op.owner_id is None or h.owner_id == op.owner_id)
            and (op.namespaced is None or (h.namespace is not None) == op.namespaced)
            and (ctx.unrestricted or h.allows(ctx.principal, Permission.READ))
        ]

    @base.handles(base.UpdateCubeOp)
    def _update_cube(self, op: base.UpdateCubeOp, state: _Batch) -> Body[CubeHeader]:
        current, dim = yield from self._cube(state, op.header.cube_id, None)
        base.check_header_update(current, op.header, state.ctx)
        return (yield from self._store_header(state, current, dim, op.header))

    def _store_header(self, state: _Batch, current: CubeHeader, dim: int | None, new: CubeHeader) -> Body[CubeHeader]:
        """Write ``new`` over ``current`` at the next version (its grants checked); return what was stored."""
        yield from self._check_grants(current, new)
        stored = new.model_copy(update={"version": current.version + 1, "updated_at": utcnow()})
        dim = stored.storage.embedding_dim if dim is None else dim  # the stored vectors' dimension stays
        yield (
            f"MATCH {_CUBE} SET c.header = $header, c.embedding_dim = $dim",
            self._params(stored.cube_id, header=stored.model_dump_json(), dim=dim),
        )
        state.cubes[stored.cube_id] = (stored, dim)
        return stored

    # -- the MemStore registry (bodies in memos_agents.infra.registry) ------------------------------
    @base.handles(*base.REGISTRY_OPS)
    def _registry(self, op: Any, state: _Batch) -> Body[Any]:
        gen = registry.body(op, state.ctx, utcnow())
        value: Any = None
        while True:
            try:
                request = gen.send(value)
            except StopIteration as stop:
                return stop.value
            value = yield from self._serve(state, request)

    def _serve(self, state: _Batch, request: registry.Request) -> Body[Any]:
        """Answer one request of a registry op's body in the batch's transaction."""
        tenant = {"tenant": self.tenant}
        if isinstance(request, registry.ReadEntries):
            rows = yield (
                "MATCH (r:RegistryEntry {tenant: $tenant}) WHERE $name IS NULL OR r.name = $name "
                "RETURN r.record AS record",
                {**tenant, "name": request.name},
            )
            return [registry.RegistryEntry.model_validate_json(r["record"]) for r in rows]
        if isinstance(request, registry.ReadSubscriptions):
            rows = yield (
                "MATCH (s:RegistrySubscription {tenant: $tenant}) "
                "WHERE ($subscriber IS NULL OR s.subscriber = $subscriber) AND ($name IS NULL OR s.name = $name) "
                "RETURN s.record AS record ORDER BY s.name, s.subscriber",
                {**tenant, "subscriber": request.subscriber, "name": request.name},
            )
            return [registry.Subscription.model_validate_json(r["record"]) for r in rows]
        if isinstance(request, registry.ReadKey):
            rows = yield (
                "MATCH (k:RegistryKey {tenant: $tenant, publisher: $publisher}) RETURN k.public_key AS key",
                {**tenant, "publisher": request.publisher},
            )
            return str(rows[0]["key"]) if rows else None
        if isinstance(request, registry.ReadHeader):
            try:
                if request.lock:  # the header may be written: take the cube node first (writers serialise)
                    yield from self._counters(state, request.cube_id, None)
                    return state.cubes[request.cube_id][0]
                return (yield from self._cube(state, request.cube_id, None))[0]
            except CubeNotFoundError:
                return None
        plan = request.plan
        for entry, create in plan.entries:
            yield (
                "CREATE (r:RegistryEntry {tenant: $tenant, name: $name, version: $version, record: $record})"
                if create
                else "MATCH (r:RegistryEntry {tenant: $tenant, name: $name, version: $version}) SET r.record = $record",
                {**tenant, "name": entry.name, "version": entry.version, "record": entry.model_dump_json()},
            )
        for subscriber, name in plan.unsubscribe:
            yield (
                "MATCH (s:RegistrySubscription {tenant: $tenant, subscriber: $subscriber, name: $name}) DELETE s",
                {**tenant, "subscriber": subscriber, "name": name},
            )
        for sub in plan.subscriptions:
            yield (
                "MERGE (s:RegistrySubscription {tenant: $tenant, subscriber: $subscriber, name: $name}) "
                "SET s.record = $record",
                {
                    **tenant,
                    "subscriber": sub.subscriber,
                    "name": sub.name,
                    "record": sub.model_dump_json(exclude={"active"}),
                },
            )
        if plan.key is not None:
            yield (
                "CREATE (k:RegistryKey {tenant: $tenant, publisher: $publisher, public_key: $key, recorded_at: $at})",
                {**tenant, "publisher": plan.key[0], "key": plan.key[1], "at": utcnow().isoformat()},
            )
        for current, new in plan.headers:
            _, dim = state.cubes[current.cube_id]
            yield from self._store_header(state, current, dim, new)
        return None

    @base.handles(base.DeleteCubeOp)
    def _delete_cube(self, op: base.DeleteCubeOp, state: _Batch) -> Body[None]:
        yield from self._cube(state, op.cube_id, Permission.ADMIN)
        params = self._params(op.cube_id)
        yield ("MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id}) DETACH DELETE m", params)
        yield ("MATCH (e:Event {tenant: $tenant, cube_id: $cube_id}) DELETE e", params)
        yield ("MATCH (v:MemoryVersion {tenant: $tenant, cube_id: $cube_id}) DELETE v", params)
        yield (f"MATCH {_CUBE} DELETE c", params)
        state.cubes.pop(op.cube_id, None)

    def _check_grants(self, current: CubeHeader | None, header: CubeHeader) -> Body[None]:
        """Refuse a header that gives a disabled user (with :attr:`require_users`: any unregistered one) anything."""
        added = base.added_principals(current, header)
        if added:
            check_principals(added, (yield from self._users(added)), registered=self.require_users)

    # -- users ---------------------------------------------------------------------------------------
    def _check_caller(self, state: _Batch) -> Body[None]:
        """Refuse ``state.ctx`` unless its principal is a registered, enabled user (``require_users``)."""
        principal = state.ctx.principal
        check_caller(principal, (yield from self._users([principal])).get(principal))
        state.caller_pending = False

    def _users(self, user_ids: Sequence[str]) -> Body[dict[str, UserRecord]]:
        """Return the stored records of ``user_ids`` (those registered)."""
        if not user_ids:
            return {}
        rows = yield (
            "MATCH (u:MemUser) WHERE u.tenant = $tenant AND u.user_id IN $ids RETURN u.record AS record",
            {"tenant": self.tenant, "ids": list(user_ids)},
        )
        users = (UserRecord.model_validate_json(r["record"]) for r in rows)
        return {u.user_id: u for u in users}

    def _store_user(self, user: UserRecord, create: bool) -> Body[UserRecord]:
        yield (
            ("CREATE (u:MemUser {tenant: $tenant, user_id: $user_id, record: $record, enabled: $enabled})")
            if create
            else "MATCH (u:MemUser {tenant: $tenant, user_id: $user_id}) SET u.record = $record, u.enabled = $enabled",
            {"tenant": self.tenant, "user_id": user.user_id, "record": user.model_dump_json(), "enabled": user.enabled},
        )
        return user

    @base.handles(base.CreateUserOp)
    def _create_user(self, op: base.CreateUserOp, state: _Batch) -> Body[UserRecord]:
        user = base.new_user(op, state.ctx)
        if (yield from self._users([user.user_id])):
            raise UserExistsError(f"user {user.user_id!r} is already registered (ids are never reused)")
        return (yield from self._store_user(user, create=True))

    @base.handles(base.GetUserOp)
    def _get_user(self, op: base.GetUserOp, state: _Batch) -> Body[UserRecord]:
        base.authorize_users(state.ctx, op.user_id)
        user = (yield from self._users([op.user_id])).get(op.user_id)
        if user is None:
            raise UserNotFoundError(f"no user {op.user_id!r}")
        return user

    @base.handles(base.ListUsersOp)
    def _list_users(self, op: base.ListUsersOp, state: _Batch) -> Body[list[UserRecord]]:
        base.authorize_users(state.ctx)
        rows = yield (
            "MATCH (u:MemUser {tenant: $tenant}) WHERE $all OR u.enabled RETURN u.record AS record ORDER BY u.user_id",
            {"tenant": self.tenant, "all": op.include_disabled},
        )
        return [UserRecord.model_validate_json(r["record"]) for r in rows]

    @base.handles(base.UpdateUserOp)
    def _update_user(self, op: base.UpdateUserOp, state: _Batch) -> Body[UserRecord]:
        new = base.user_update(op, state.ctx)
        current = (yield from self._users([new.user_id])).get(new.user_id)
        if current is None:
            raise UserNotFoundError(f"no user {new.user_id!r}")
        return (yield from self._store_user(base.changed_user(current, new), create=False))

    # -- writes ------------------------------------------------------------------------------------
    @base.handles(base.WriteOp)
    def _write_op(self, op: base.WriteOp, state: _Batch) -> Body[base.WriteResult]:
        return (yield from self._write(state, op.cube_id, op.batch))

    def _write(
        self, state: _Batch, cube_id: str, batch: base.WriteBatch, *, as_system: bool = False
    ) -> Body[base.WriteResult]:
        """Probe what :func:`plan_write` needs, plan, and write the plan.

        Args:
            state: The batch.
            cube_id: The cube.
            batch: The write.
            as_system: Plan as ``SYSTEM`` (items keep their ``author_id``) with no permission check.

        """
        ctx = base.SYSTEM if as_system else state.ctx
        n_items, n_edges = len(batch.add) + len(batch.ensure), len(batch.edges) + len(batch.follows)
        # taking the cube's counters first also serialises writers of one cube
        counters = yield from self._counters(
            state, cube_id, None if as_system else Permission.WRITE, items=n_items, edges=n_edges
        )
        params = self._params(cube_id)
        probe = base.write_probe(batch)
        existing: set[str] = set()
        if probe.ids:
            rows = yield (f"{_EACH_ITEM} RETURN m.id AS id", {**params, "ids": probe.ids})
            existing = {r["id"] for r in rows}
        stored: dict[str, base.StoredItem] = {}
        seqs: dict[str, int] = {}
        if probe.updated:
            rows = yield (
                f"{_EACH_ITEM} RETURN m.id AS id, m.version AS version, m.node_kind AS node_kind, "
                "m.embedding AS embedding, m.author_id AS author_id, m.seq AS seq, m.visibility AS visibility, "
                "m.search_text AS search_text, m.metadata AS metadata, m.access_count AS access_count, "
                "m.touched_at AS touched_at, m.document AS document",
                {**params, "ids": probe.updated},
            )
            for r in rows:
                stored[r["id"]] = base.StoredItem(
                    int(r["version"]),
                    r["node_kind"],
                    GRAPH_CODEC.embedding(r["embedding"]),
                    r.get("author_id"),
                    r.get("visibility") or Visibility.CUBE.value,
                    base.content_key(r.get("search_text") or "", r.get("metadata") or "{}", r.get("document")),
                    *access_tracking(r),
                )
                seqs[r["id"]] = int(r["seq"])
        newest: dict[str, str] = {}
        for topic in probe.topics:
            rows = yield (
                "MATCH (t:Memory {tenant: $tenant, cube_id: $cube_id, id: $topic})-[e:PARENT]->(m:Memory) "
                "WHERE m.tenant = $tenant AND m.cube_id = $cube_id RETURN m.id AS id ORDER BY e.seq DESC LIMIT 1",
                {**params, "topic": topic},
            )
            if rows:
                newest[topic] = rows[0]["id"]
        plan = base.plan_write(
            cube_id,
            batch,
            ctx=ctx,
            dim=state.cubes[cube_id][1],
            existing=existing,
            stored=stored,
            newest_member=newest,
            now=utcnow(),
            redaction=state.cubes[cube_id][0].redaction,
            stamp=not as_system,
            may_publish=as_system
            or ctx.unrestricted
            or state.cubes[cube_id][0].allows(ctx.principal, Permission.SHARE),
        )
        rels = [relation_type(e.type) for e in plan.edges]
        if plan.dim_changed:
            yield (f"MATCH {_CUBE} SET c.embedding_dim = $dim", {**params, "dim": plan.dim})
            state.cubes[cube_id] = (state.cubes[cube_id][0], plan.dim)
        first = int(counters["item_seq"]) - n_items
        groups: dict[str, list[dict[str, Any]]] = {}
        for n, item in enumerate(plan.insert):
            groups.setdefault(node_labels(item.node_kind), []).append(node_properties(item, self.tenant, first + n))
        for labels, group in groups.items():
            yield (f"UNWIND $rows AS row CREATE (m:{labels}) SET m = row", {"rows": group})
        if plan.replace:
            old = yield from self._old_items(cube_id, [i.id for i in plan.replace])
            yield from self._keep_versions(state, cube_id, old, "update")
            rows = [node_properties(i, self.tenant, seqs[i.id]) for i in plan.replace]
            for row in rows:  # access tracking is left as stored: a use recorded meanwhile is kept
                for column in ACCESS_COLUMNS:
                    row.pop(column, None)
            yield (  # += with every item property: nulls remove what the update clears
                "UNWIND $rows AS row MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id, id: row.id}) SET m += row",
                {**params, "rows": rows},
            )
        if plan.edges:
            yield from self._write_edges(cube_id, plan.edges, rels, int(counters["edge_seq"]) - n_edges)
        return plan.result

    def _write_edges(self, cube_id: str, edges: Sequence[Edge], rels: Sequence[str], first_seq: int) -> Body[None]:
        """MERGE edges (keyed by source, target and type), ``seq`` numbered from ``first_seq``."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for n, (edge, rel) in enumerate(zip(edges, rels, strict=True)):
            groups.setdefault(rel, []).append(
                {
                    "source": edge.source_id,
                    "target": edge.target_id,
                    "weight": float(edge.weight),
                    "created_at": edge.created_at.isoformat(),
                    "seq": first_seq + n,
                }
            )
        for rel, rows in groups.items():
            yield (
                "UNWIND $rows AS row "
                "MATCH (s:Memory {tenant: $tenant, cube_id: $cube_id, id: row.source}) "
                "MATCH (t:Memory {tenant: $tenant, cube_id: $cube_id, id: row.target}) "
                f"MERGE (s)-[e:{rel}]->(t) "
                "SET e.weight = row.weight, e.created_at = row.created_at, e.seq = row.seq",
                self._params(cube_id, rows=rows),
            )

    @base.handles(base.DeleteOp)
    def _delete(self, op: base.DeleteOp, state: _Batch) -> Body[int]:
        header, _ = yield from self._cube(state, op.cube_id, Permission.DELETE)
        unique = list(dict.fromkeys(op.ids))
        if not unique:
            return 0
        scope = base.read_scope(header, state.ctx)  # another author's private item: not found
        old = [i for i in (yield from self._old_items(op.cube_id, unique)) if matches(scope, i)]
        if not old:
            return 0
        ids = [i.id for i in old]
        edges = yield from self._read_edges(base.EdgesOp(op.cube_id, ids))
        yield from self._keep_versions(
            state, op.cube_id, old, "delete", {i: [e for e in edges if i in (e.source_id, e.target_id)] for i in ids}
        )
        yield (f"{_EACH_ITEM} DETACH DELETE m", self._params(op.cube_id, ids=ids))
        return len(old)

    def _old_items(self, cube_id: str, ids: Sequence[str]) -> Body[list[MemoryItem]]:
        rows = yield (f"{_EACH_ITEM} RETURN {_PROJECTION_EMB} AS m", self._params(cube_id, ids=list(ids)))
        return [GRAPH_CODEC.decode(r["m"]) for r in rows]

    def _keep_versions(
        self,
        state: _Batch,
        cube_id: str,
        old: Sequence[MemoryItem],
        change: Literal["update", "delete"],
        edges: dict[str, list[Edge]] | None = None,
    ) -> Body[None]:
        """Store the versions that ``change`` ends as ``MemoryVersion`` nodes (MemVault), in the batch's transaction."""
        now = utcnow()
        rows = [base.version_row(i, change, state.ctx, now, (edges or {}).get(i.id, ())) for i in old]
        yield (
            "UNWIND $rows AS r CREATE (v:MemoryVersion {tenant: $tenant, cube_id: $cube_id, item_id: r.item_id, "
            "version: r.version, item: r.item, edges: r.edges, change: r.change, changed_at: r.changed_at, "
            "changed_by: r.changed_by, request_id: r.request_id})",
            self._params(cube_id, rows=rows),
        )

    @base.handles(base.HistoryOp)
    def _history(self, op: base.HistoryOp, state: _Batch) -> Body[list[base.ItemVersion]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        rows = yield (
            "MATCH (v:MemoryVersion) WHERE v.tenant = $tenant AND v.cube_id = $cube_id AND v.item_id = $item_id "
            f"RETURN {_VERSION_FIELDS} ORDER BY v.version, v.changed_at",
            self._params(op.cube_id, item_id=op.item_id),
        )
        out = [v for v in (base.version_from_row(r, op.with_embeddings) for r in rows) if matches(scope, v.item)]
        where, fparams = cypher_filter(scope)
        current = yield (
            f"{_EACH_ITEM} WHERE true{where} RETURN {_PROJECTION_EMB if op.with_embeddings else _PROJECTION} AS m",
            self._params(op.cube_id, ids=[op.item_id], **fparams),
        )
        return out + [base.ItemVersion(item=GRAPH_CODEC.decode(r["m"])) for r in current]

    def _versions(self, cube_id: str, where: str, with_embeddings: bool, **params: Any) -> Body[list[base.ItemVersion]]:
        rows = yield (
            f"MATCH (v:MemoryVersion) WHERE v.tenant = $tenant AND v.cube_id = $cube_id AND {where} "
            f"RETURN {_VERSION_FIELDS} ORDER BY v.changed_at",
            self._params(cube_id, **params),
        )
        return [base.version_from_row(r, with_embeddings) for r in rows]

    @base.handles(base.AsOfOp)
    def _as_of(self, op: base.AsOfOp, state: _Batch) -> Body[base.CubeSnapshot]:
        _, _, scope = yield from self._read(state, op.cube_id)
        at = op.as_of.astimezone(UTC).isoformat()
        projection = _PROJECTION_EMB if op.with_embeddings else _PROJECTION
        if op.ids is None:
            rows = yield (
                "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.updated_at <= $at "
                f"RETURN {projection} AS m ORDER BY m.seq",
                self._params(op.cube_id, at=at),
            )
            versions = yield from self._versions(op.cube_id, "v.changed_at > $at", op.with_embeddings, at=at)
            edges = yield from self._read_edges(base.EdgesOp(op.cube_id))
        else:
            ids = list(dict.fromkeys(op.ids))
            rows = yield (f"{_EACH_ITEM} RETURN {projection} AS m", self._params(op.cube_id, ids=ids))
            versions = yield from self._versions(
                op.cube_id, "v.item_id IN $ids AND v.changed_at > $at", op.with_embeddings, ids=ids, at=at
            )
            edges = yield from self._read_edges(base.EdgesOp(op.cube_id, ids))
        current = [GRAPH_CODEC.decode(r["m"]) for r in rows]
        kept = [e for v in versions for e in v.edges]
        return base.snapshot_as_of(op.as_of, current, versions, [*kept, *edges], scope, op.ids)

    @base.handles(base.ChangedSinceOp)
    def _changed_since(self, op: base.ChangedSinceOp, state: _Batch) -> Body[list[str]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        at = op.since.astimezone(UTC).isoformat()
        rows = yield (
            "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.updated_at > $at "
            f"RETURN {_PROJECTION} AS m ORDER BY m.updated_at, m.seq",
            self._params(op.cube_id, at=at),
        )
        versions = yield from self._versions(op.cube_id, "v.changed_at > $at", False, at=at)
        current = [GRAPH_CODEC.decode(r["m"]) for r in rows]
        ids = [i.id for i in current if matches(scope, i)] + [v.item.id for v in versions if matches(scope, v.item)]
        return list(dict.fromkeys(ids))

    @base.handles(base.PurgeVersionsOp)
    def _purge_versions(self, op: base.PurgeVersionsOp, state: _Batch) -> Body[int]:
        yield from self._cube(state, op.cube_id, Permission.ADMIN)
        rows = yield (
            "MATCH (v:MemoryVersion) WHERE v.tenant = $tenant AND v.cube_id = $cube_id AND v.changed_at < $before "
            "WITH collect(v) AS gone UNWIND gone AS v DELETE v RETURN count(*) AS n",
            self._params(op.cube_id, before=op.before.astimezone(UTC).isoformat()),
        )
        return int(rows[0]["n"]) if rows else 0

    @base.handles(base.ForgetUserOp)
    def _forget_user(self, op: base.ForgetUserOp, state: _Batch) -> Body[list[str]]:
        yield from self._cube(state, op.cube_id, Permission.ADMIN)
        rows = yield (
            "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id "
            "AND (m.user_id = $user OR m.author_id = $user) RETURN m.id AS id ORDER BY m.seq",
            self._params(op.cube_id, user=op.user_id),
        )
        ids = [r["id"] for r in rows]
        if ids:
            yield (f"{_EACH_ITEM} DETACH DELETE m", self._params(op.cube_id, ids=ids))
            yield (
                "MATCH (v:MemoryVersion) WHERE v.tenant = $tenant AND v.cube_id = $cube_id AND v.item_id IN $ids "
                "DELETE v",
                self._params(op.cube_id, ids=ids),
            )
        # earlier versions of other items that were about or by the user: the kept item is its
        # JSON (pydantic's compact form), where the field reads exactly `"user_id":"<id>"`
        yield (
            "MATCH (v:MemoryVersion) WHERE v.tenant = $tenant AND v.cube_id = $cube_id "
            "AND (v.item CONTAINS $subject OR v.item CONTAINS $author) DELETE v",
            self._params(
                op.cube_id,
                subject=f'"user_id":{json.dumps(op.user_id)}',
                author=f'"author_id":{json.dumps(op.user_id)}',
            ),
        )
        return ids

    @base.handles(base.RecordEventOp)
    def _record_event(self, op: base.RecordEventOp, state: _Batch) -> Body[None]:
        counters = yield from self._counters(state, op.cube_id, Permission.WRITE, events=1)
        yield (
            "CREATE (e:Event {tenant: $tenant, cube_id: $cube_id, seq: $seq, kind: $kind, payload: $payload, "
            "created_at: $created_at})",
            self._params(
                op.cube_id,
                seq=counters["event_seq"],
                kind=op.kind,
                payload=json.dumps(op.payload, default=str),
                created_at=utcnow().isoformat(),
            ),
        )

    @base.handles(base.ListEventsOp)
    def _list_events(self, op: base.ListEventsOp, state: _Batch) -> Body[list[dict[str, Any]]]:
        yield from self._cube(state, op.cube_id, Permission.READ)
        rows = yield (
            "MATCH (e:Event) WHERE e.tenant = $tenant AND e.cube_id = $cube_id AND ($kind IS NULL OR e.kind = $kind) "
            "RETURN e.kind AS kind, e.payload AS payload, e.created_at AS created_at ORDER BY e.seq",
            self._params(op.cube_id, kind=op.kind),
        )
        return [{"kind": r["kind"], "payload": json.loads(r["payload"]), "created_at": r["created_at"]} for r in rows]

    # -- reads -------------------------------------------------------------------------------------
    @base.handles(base.GetOp)
    def _get(self, op: base.GetOp, state: _Batch) -> Body[list[MemoryItem]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        if not op.ids:
            return []
        where, fparams = cypher_filter(scope)
        rows = yield (
            f"{_EACH_ITEM} WHERE true{where} RETURN {_PROJECTION_EMB if op.with_embeddings else _PROJECTION} AS m",
            self._params(op.cube_id, ids=list(dict.fromkeys(op.ids)), **fparams),
        )
        return base.order_found(op.ids, (GRAPH_CODEC.decode(r["m"]) for r in rows))

    @base.handles(base.ListOp)
    def _list(self, op: base.ListOp, state: _Batch) -> Body[list[MemoryItem]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter(compile_filters(op.filters) + scope)
        page = " SKIP $offset" + ("" if op.limit is None else " LIMIT $limit")
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
            f"WITH m ORDER BY m.seq{page} RETURN {_PROJECTION_EMB if op.with_embeddings else _PROJECTION} AS m",
            self._params(op.cube_id, offset=max(op.offset, 0), limit=op.limit, **fparams),
        )
        return [GRAPH_CODEC.decode(r["m"]) for r in rows]

    @base.handles(base.ListExpiringOp)
    def _list_expiring(self, op: base.ListExpiringOp, state: _Batch) -> Body[list[MemoryItem]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter([Predicate("status", "in", base.expiring_statuses(op.expired)), *scope])
        rows = yield (
            "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.expires_at IS NOT NULL "
            f"AND m.expires_at <= $before AND m.node_kind = 'memory'{where} "
            f"WITH m ORDER BY m.expires_at, m.seq LIMIT $limit RETURN {_PROJECTION} AS m",
            self._params(op.cube_id, before=op.before.astimezone(UTC).isoformat(), limit=op.limit, **fparams),
        )
        return [GRAPH_CODEC.decode(r["m"]) for r in rows]

    @base.handles(base.RecordAccessOp)
    def _record_access(self, op: base.RecordAccessOp, state: _Batch) -> Body[int]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter(scope)
        when, counts = base.access_record(op, state.ctx)
        rows = yield (  # no version, no seq: using a memory does not change it
            "UNWIND $rows AS row MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id, id: row.id}) "
            f"WHERE m.node_kind = 'memory'{where} "
            "SET m.access_count = coalesce(m.access_count, 0) + row.n, "
            "m.touched_at = CASE WHEN m.touched_at IS NULL OR m.touched_at < $at THEN $at ELSE m.touched_at END "
            "RETURN count(m) AS n",
            self._params(
                op.cube_id,
                rows=[{"id": i, "n": n} for i, n in counts.items()],
                at=when.astimezone(UTC).isoformat(),
                **fparams,
            ),
        )
        return int(rows[0]["n"]) if rows else 0

    @base.handles(base.ListIdleOp)
    def _list_idle(self, op: base.ListIdleOp, state: _Batch) -> Body[list[MemoryItem]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter(scope)
        page: dict[str, Any] = {}
        if op.after is not None:
            where += " AND (m.touched_at > $after_at OR (m.touched_at = $after_at AND m.id > $after_id))"
            page = {"after_at": op.after[0].astimezone(UTC).isoformat(), "after_id": op.after[1]}
        rows = yield (
            "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.status = 'activated' "
            f"AND m.touched_at < $before AND m.node_kind = 'memory'{where} "
            f"WITH m ORDER BY m.touched_at, m.id LIMIT $limit RETURN {_PROJECTION} AS m",
            self._params(op.cube_id, before=op.before.astimezone(UTC).isoformat(), limit=op.limit, **fparams, **page),
        )
        return [GRAPH_CODEC.decode(r["m"]) for r in rows]

    @base.handles(base.ListHotOp)
    def _list_hot(self, op: base.ListHotOp, state: _Batch) -> Body[list[MemoryItem]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter(scope)
        rows = yield (
            "MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.status = 'activated' "
            f"AND m.access_count >= $min_uses AND m.node_kind = 'memory'{where} "
            f"WITH m ORDER BY m.access_count DESC, m.id LIMIT $limit RETURN {_PROJECTION} AS m",
            self._params(op.cube_id, min_uses=op.min_uses, limit=op.limit, **fparams),
        )
        return [GRAPH_CODEC.decode(r["m"]) for r in rows]

    @base.handles(base.CountOp)
    def _count(self, op: base.CountOp, state: _Batch) -> Body[int]:
        _, _, scope = yield from self._read(state, op.cube_id)
        where, fparams = cypher_filter(compile_filters(op.filters) + scope)
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} RETURN count(m) AS n",
            self._params(op.cube_id, **fparams),
        )
        return int(rows[0]["n"]) if rows else 0

    @base.handles(base.EdgesOp)
    def _edges(self, op: base.EdgesOp, state: _Batch) -> Body[list[Edge]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        return (yield from self._read_edges(op, scope))

    def _read_edges(self, op: base.EdgesOp, scope: Sequence[Predicate] = ()) -> Body[list[Edge]]:
        """Return the edges ``op`` asks for, in insertion order (the caller has checked the cube).

        With ``scope`` (a read scope): only edges both of whose ends it admits.
        """
        rels = [relation_type(t) for t in (list(RelationType) if op.types is None else op.types)]
        if not rels or (op.ids is not None and not op.ids):
            return []
        seen_a, a_params = cypher_filter(scope, "a", "sa")
        seen_o, o_params = cypher_filter(scope, "o", "so")
        params = self._params(
            op.cube_id, rels=rels, ids=None if op.ids is None else list(dict.fromkeys(op.ids)), **a_params, **o_params
        )

        def ret(source: str, target: str) -> str:
            # `o` is the other end: it must lie in the same tenant and cube
            return (
                f"WHERE type(e) IN $rels AND o.tenant = $tenant AND o.cube_id = $cube_id{seen_a}{seen_o} "
                f"RETURN {source}.id AS source_id, {target}.id AS target_id, type(e) AS type, e.weight AS weight, "
                "e.created_at AS created_at, e.seq AS seq"
            )

        anchor = "(a:Memory {tenant: $tenant, cube_id: $cube_id, id: item_id})"
        rows: Records = []
        if op.ids is None:
            rows = yield (
                "MATCH (a:Memory {tenant: $tenant, cube_id: $cube_id})-[e]->(o:Memory) " + ret("a", "o"),
                params,
            )
        else:
            if op.direction in ("out", "both"):
                rows += yield (f"UNWIND $ids AS item_id MATCH {anchor}-[e]->(o:Memory) " + ret("a", "o"), params)
            if op.direction in ("in", "both"):
                rows += yield (f"UNWIND $ids AS item_id MATCH (o:Memory)-[e]->{anchor} " + ret("o", "a"), params)
        unique = {(r["source_id"], r["target_id"], r["type"]): r for r in rows}
        return [edge_from_row(r) for r in sorted(unique.values(), key=lambda r: int(r["seq"]))]

    @base.handles(base.VectorSearchOp)
    def _vector_search(self, op: base.VectorSearchOp, state: _Batch) -> Body[list[tuple[str, float]]]:
        _, dim, scope = yield from self._read(state, op.cube_id)
        if dim is None or op.k <= 0:
            return []
        vector = base.check_vector(op.embedding, dim, f"query embedding for cube {op.cube_id!r}").tolist()
        where, fparams = cypher_filter(compile_filters(op.filters or SearchFilters()) + scope)
        params = self._params(op.cube_id, v=vector, k=op.k, **fparams)

        def cosine(score: float) -> float:
            return 2.0 * score - 1.0 if self._cosine_normalized else score

        if self._vector_index:
            rows = yield (
                "CALL db.index.vector.queryNodes($index, $fetch, $v) YIELD node AS m, score "
                f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
                "RETURN m.id AS id, score ORDER BY score DESC LIMIT $k",
                {**params, "index": VECTOR_INDEX, "fetch": max(10 * op.k, 100)},
            )
            if len(rows) == op.k:
                return [(r["id"], cosine(float(r["score"]))) for r in rows]
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.embedding IS NOT NULL{where} "
            "WITH m, vector.similarity.cosine(m.embedding, $v) AS score "
            "RETURN m.id AS id, score ORDER BY score DESC, m.seq LIMIT $k",
            params,
        )
        return [(r["id"], cosine(float(r["score"]))) for r in rows]

    @base.handles(base.TextSearchOp)
    def _text_search(self, op: base.TextSearchOp, state: _Batch) -> Body[list[tuple[str, float]]]:
        _, _, scope = yield from self._read(state, op.cube_id)
        if op.k <= 0:
            return []
        where, fparams = cypher_filter(compile_filters(op.filters or SearchFilters()) + scope)
        if self._fulltext_index:
            lucene = lucene_query(op.query)
            if lucene is None:
                return []
            rows = yield (
                "CALL db.index.fulltext.queryNodes($index, $q) YIELD node AS m, score "
                f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
                "RETURN m.id AS id, score ORDER BY score DESC LIMIT $k",
                self._params(op.cube_id, index=FULLTEXT_INDEX, q=lucene, k=op.k, **fparams),
            )
            return [(r["id"], float(r["score"])) for r in rows]
        terms = bm25_query_terms(op.query)
        if not terms:
            return []
        # BM25 as the embedded store computes it (FTS5's idf, floored at 1e-6), statistics over the
        # cube; each document's terms are scanned once (into `hits`), tf is counted in that short list
        rows = yield (
            "MATCH (d:Memory) WHERE d.tenant = $tenant AND d.cube_id = $cube_id "
            "WITH collect(d) AS docs, count(d) AS n_docs, avg(d.doc_len) AS avgdl "
            "WITH docs, avgdl, [t IN $terms | [t, size([x IN docs WHERE t IN x.terms]), n_docs]] AS dfs "
            "WITH docs, avgdl, [p IN dfs | [p[0], CASE WHEN (p[2] - p[1] + 0.5) / (p[1] + 0.5) > 1.0 "
            "THEN log((p[2] - p[1] + 0.5) / (p[1] + 0.5)) ELSE 0.000001 END]] AS idfs "
            "UNWIND docs AS m "
            "WITH m, avgdl, idfs, [t IN m.terms WHERE t IN $terms] AS hits "
            f"WHERE size(hits) > 0{where} "
            "WITH m, $k1 * (1.0 - $b + $b * m.doc_len / avgdl) AS norm, idfs, hits "
            "WITH m, reduce(s = 0.0, p IN idfs | s + p[1] * "
            "toFloat(size([h IN hits WHERE h = p[0]])) * ($k1 + 1.0) / (size([h IN hits WHERE h = p[0]]) + norm)) "
            "AS score "
            "RETURN m.id AS id, score ORDER BY score DESC, m.seq LIMIT $k",
            self._params(op.cube_id, terms=terms, k=op.k, k1=BM25_K1, b=BM25_B, **fparams),
        )
        return [(r["id"], float(r["score"])) for r in rows]

    @base.handles(base.ExpandOp)
    def _expand(self, op: base.ExpandOp, state: _Batch) -> Body[list[base.Neighbor]]:
        """Walk whitelisted relationships in Cypher (variable-length paths) from ``op.ids``.

        Each reached item is reported once, over a shortest path, from the best-ranked seed among
        those at that distance (``ids`` are taken as ranked best first).

        Raises:
            InvalidInputError: ``depth`` outside 1..:data:`MAX_EXPAND_DEPTH`, or a type outside the whitelist.

        """
        _, _, scope = yield from self._read(state, op.cube_id)
        depth = base.check_depth(op.depth)
        rels = "|".join(dict.fromkeys(relation_type(t) for t in op.types))
        seeds = list(dict.fromkeys(op.ids))
        if not seeds or not rels:
            return []
        where, fparams = cypher_filter(compile_filters(op.filters))
        # every node of the path, the seed included, must be one the caller may read: nothing is
        # reached by way of an item it may not read
        seen, sparams = cypher_filter(scope, "x", "s")
        walk = f" AND all(x IN nodes(p) WHERE true{seen})" if scope else ""
        rows = yield (
            "UNWIND range(0, size($ids) - 1) AS pos "
            "MATCH p = (s:Memory {tenant: $tenant, cube_id: $cube_id, id: $ids[pos]})"
            f"-[:{rels}*1..{depth}]-(m:Memory) "
            f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND NOT m.id IN $ids{where}{walk} "
            "RETURN m.id AS id, length(p) AS depth, pos, nodes(p)[-2].id AS from_id, "
            "type(relationships(p)[-1]) AS type",
            self._params(op.cube_id, ids=seeds, **fparams, **sparams),
        )
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            key = (int(r["depth"]), int(r["pos"]))
            current = best.get(r["id"])
            if current is None or key < (int(current["depth"]), int(current["pos"])):
                best[r["id"]] = r
        ordered = sorted(best.values(), key=lambda r: (int(r["depth"]), int(r["pos"])))
        return [
            base.Neighbor(id=r["id"], from_id=r["from_id"], type=RelationType(r["type"]), depth=int(r["depth"]))
            for r in ordered
        ]
