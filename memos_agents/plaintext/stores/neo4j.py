"""The scale-out plaintext store: Neo4j 5 (or any Bolt/Cypher server) through the official driver.

Install with ``pip install "memos-agents[neo4j]"``. Construction does no I/O; :meth:`setup` creates
constraints and indexes (versioned migrations recorded in the graph as ``:MemosMigration`` nodes)
and detects what the server can do::

    from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore

    with Neo4jMemoryStore.from_uri("neo4j://localhost:7687", auth=("neo4j", "secret")) as store:
        mos = MemOS(store=store)

Graph model (every property flat: Neo4j refuses nested maps):

* ``(:Cube {tenant, cube_id, header, embedding_dim, item_seq, edge_seq, event_seq})`` — the
  header as JSON text; the counters give items, edges and events their insertion order.
* ``(:Memory {tenant, cube_id, id, seq, text, search_text, terms, doc_len, memory_type, node_kind,
  key, tags, source_message_ids, source_session_ids, source_speakers, user_id, event_time,
  event_us, created_at, updated_at, confidence, status, version, embedding, metadata})`` — one per
  item; topic nodes (session topics of the tree) carry the extra label ``:Topic``. Timestamps are
  ISO-8601 text (exact to the microsecond), ``event_us`` their integer form for range filters,
  ``metadata`` JSON text, ``terms`` the item's BM25 terms.
* Relationships between ``:Memory`` nodes of one cube, typed by the
  :class:`~memos_agents.schema.RelationType` whitelist (PARENT, FOLLOWS, MERGED_TO, RELATE_TO,
  DERIVED_FROM, CONFLICTS_WITH, SUPERSEDES), with ``weight``, ``created_at``, ``seq``.
* ``(:Event {tenant, cube_id, seq, kind, payload, created_at})`` — the cube's event log.

Tenancy: every node carries ``tenant`` (the store's namespace) and ``cube_id``, and every query
matches both, so several deployments share one database (Neo4j Community has one); pass another
``database`` for one database per tenant where the server has several. Values always go in as
parameters; the only names interpolated into Cypher are labels and relationship types taken from
the whitelists above, and a validated integer path length.

Every write call (:meth:`Neo4jMemoryStore.apply` and the others) is one managed transaction
(batched with ``UNWIND``); any error rolls all of it back, and the driver retries transient
failures. Sync methods use a ``neo4j.Driver``, ``a``-prefixed twins an ``neo4j.AsyncDriver``
(one per event loop when the store owns its drivers), and both run the same transaction bodies.

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
  the driver's managed-transaction retry, so callers see neither.
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
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from memos_agents.cube import CubeHeader
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    MemOSError,
    StoreError,
    require,
)
from memos_agents.plaintext.stores.base import (
    BaseMemoryStore,
    Direction,
    Neighbor,
    StoreCapabilities,
    WriteBatch,
    WriteResult,
    check_embedding_dim,
    check_vector,
    event_us,
    next_version,
    search_text,
)
from memos_agents.plaintext.text import BM25_B, BM25_K1, bm25_query_terms, bm25_terms, content_terms
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryType,
    NodeKind,
    RelationType,
    SearchFilters,
    Sources,
    as_utc,
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

log = logging.getLogger(__name__)

T = TypeVar("T")
#: One Cypher statement and its parameters.
Step = tuple[str, dict[str, Any]]
Records = list[dict[str, Any]]
#: A transaction body: yields statements, is sent each one's records, returns the call's result.
Body = Generator[Step, Records, T]

#: Node labels by node kind (the only labels ever interpolated into Cypher).
NODE_LABELS: dict[NodeKind, str] = {NodeKind.MEMORY: "Memory", NodeKind.TOPIC: "Memory:Topic"}
#: Relationship types that may be interpolated into Cypher: the RelationType whitelist.
RELATION_TYPES: frozenset[str] = frozenset(t.value for t in RelationType)
_REL_NAME = re.compile(r"^[A-Z][A-Z_]{0,63}$")
#: Longest path walked by :meth:`Neo4jMemoryStore.expand`.
MAX_EXPAND_DEPTH = 5

#: URI schemes of the Bolt protocol (the driver's HTTP Query API is not used by this store).
BOLT_SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})
VECTOR_INDEX = "memos_memory_embedding"
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
]
#: Schema version this code writes.
SCHEMA_VERSION = _MIGRATIONS[-1][0]

#: Item properties returned by reads (the embedding only when asked for).
_ITEM_PROPS = (
    "id",
    "cube_id",
    "text",
    "memory_type",
    "node_kind",
    "key",
    "tags",
    "source_message_ids",
    "source_session_ids",
    "source_speakers",
    "user_id",
    "event_time",
    "created_at",
    "updated_at",
    "confidence",
    "status",
    "version",
    "metadata",
)
_PROJECTION = "m {" + ", ".join("." + p for p in _ITEM_PROPS) + "}"
_PROJECTION_EMB = "m {" + ", ".join("." + p for p in (*_ITEM_PROPS, "embedding")) + "}"
_CUBE = "(c:Cube {tenant: $tenant, cube_id: $cube_id})"
#: Match each item whose id is in ``$ids`` as ``m``.
_EACH_ITEM = "UNWIND $ids AS item_id MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id, id: item_id})"


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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else as_utc(datetime.fromisoformat(value))


def item_properties(item: MemoryItem, tenant: str, seq: int) -> dict[str, Any]:
    """Flatten an item into node properties (lists of scalars, JSON text for maps).

    Args:
        item: The item, with ``cube_id`` set.
        tenant: The store's namespace.
        seq: Insertion order within the cube.

    Returns:
        The property map; ``None`` values are simply not stored by the server.

    """
    indexed = search_text(item)
    terms = bm25_terms(indexed)
    return {
        "tenant": tenant,
        "cube_id": item.cube_id,
        "id": item.id,
        "seq": seq,
        "text": item.text,
        "search_text": indexed,
        "terms": terms,
        "doc_len": len(terms),
        "memory_type": item.memory_type.value,
        "node_kind": item.node_kind.value,
        "key": item.key,
        "tags": list(item.tags),
        "source_message_ids": list(item.sources.message_ids),
        "source_session_ids": list(item.sources.session_ids),
        "source_speakers": list(item.sources.speakers),
        "user_id": item.user_id,
        "event_time": _iso(item.event_time),
        "event_us": event_us(item.event_time),
        "created_at": _iso(item.created_at),
        "updated_at": _iso(item.updated_at),
        "confidence": float(item.confidence),
        "status": item.status.value,
        "version": item.version,
        "embedding": None if item.embedding is None else [float(x) for x in item.embedding],
        "metadata": json.dumps(item.metadata),
    }


def item_from_properties(p: dict[str, Any]) -> MemoryItem:
    """Rebuild an item from the properties :func:`item_properties` wrote (embedding if present)."""
    embedding = p.get("embedding")
    return MemoryItem.model_construct(
        id=p["id"],
        cube_id=p["cube_id"],
        text=p["text"],
        memory_type=MemoryType(p["memory_type"]),
        node_kind=NodeKind(p["node_kind"]),
        key=p.get("key"),
        tags=list(p.get("tags") or []),
        sources=Sources.model_construct(
            message_ids=list(p.get("source_message_ids") or []),
            session_ids=list(p.get("source_session_ids") or []),
            speakers=list(p.get("source_speakers") or []),
        ),
        user_id=p.get("user_id"),
        event_time=_dt(p.get("event_time")),
        created_at=_dt(p["created_at"]),
        updated_at=_dt(p["updated_at"]),
        confidence=float(p["confidence"]),
        status=LifecycleState(p["status"]),
        version=int(p["version"]),
        metadata=json.loads(p.get("metadata") or "{}"),
        embedding=None if embedding is None else [float(x) for x in embedding],
    )


def filter_cypher(filters: SearchFilters | None, var: str = "m") -> tuple[str, dict[str, Any]]:
    """Translate filters into a Cypher ``AND ...`` fragment over node ``var`` and its parameters."""
    if filters is None:
        return "", {}
    clauses = [f"{var}.status IN $f_statuses", f"{var}.node_kind IN $f_kinds"]
    params: dict[str, Any] = {
        "f_statuses": [s.value for s in filters.statuses],
        "f_kinds": [k.value for k in filters.node_kinds],
    }
    if filters.memory_types is not None:
        clauses.append(f"{var}.memory_type IN $f_types")
        params["f_types"] = [t.value for t in filters.memory_types]
    if filters.user_id is not None:
        clauses.append(f"{var}.user_id = $f_user")
        params["f_user"] = filters.user_id
    if filters.time_from is not None:
        clauses.append(f"{var}.event_us >= $f_from")
        params["f_from"] = event_us(filters.time_from)
    if filters.time_to is not None:
        clauses.append(f"{var}.event_us <= $f_to")
        params["f_to"] = event_us(filters.time_to)
    if filters.tags_any is not None:
        clauses.append(f"any(tag IN {var}.tags WHERE tag IN $f_tags)")
        params["f_tags"] = list(filters.tags_any)
    return " AND " + " AND ".join(clauses), params


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


class Neo4jMemoryStore(BaseMemoryStore):
    """Plaintext store on Neo4j 5 or another Bolt/Cypher server. See the module docstring.

    Args:
        driver: A ``neo4j.Driver`` for the sync methods (None: sync methods raise ConfigError,
            unless the store was built by :meth:`from_uri`).
        async_driver: A ``neo4j.AsyncDriver`` for the async twins, used from the event loop it
            belongs to (None: the store makes one per event loop when it owns its drivers, else
            the async twins run the sync methods in a worker thread).
        database: Database name (None: the server's default database).
        tenant: Namespace of this store inside the database (default ``"default"``); stores with
            different tenants never see each other's cubes.
        use_fulltext_index: Use Neo4j's full-text index for text search when :meth:`setup` finds
            it (default True); False computes BM25 in Cypher with the embedded store's terms,
            formula and per-cube statistics (a scan of the cube, so slower on large cubes).

    Raises:
        ConfigError: Neither driver given.
        InvalidInputError: Malformed tenant.

    """

    capabilities = StoreCapabilities(
        supports_vector_search=True,
        supports_full_text=True,
        supports_graph_expansion=True,
        supports_transactions=True,
        supports_ttl=False,
    )

    def __init__(
        self,
        driver: Driver | None = None,
        *,
        async_driver: AsyncDriver | None = None,
        database: str | None = None,
        tenant: str = "default",
        use_fulltext_index: bool = True,
    ) -> None:
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
        #: Whether setup() found Neo4j's vector index (else: exact cosine scan).
        self.vector_index = False
        #: Whether text search uses Neo4j's full-text index (found by setup(), and allowed).
        self.fulltext_index = False
        #: Whether the server's cosine is ``(1 + cos) / 2`` (Neo4j) rather than ``cos`` (ArcadeDB).
        self.cosine_normalized = False

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str | None = None,
        tenant: str = "default",
        use_fulltext_index: bool = True,
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
        store = cls(driver, database=database, tenant=tenant, use_fulltext_index=use_fulltext_index)
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

    # -- execution -------------------------------------------------------------------------------
    def _sync_driver(self) -> Driver:
        if self._driver is None:
            raise ConfigError("this Neo4jMemoryStore has no sync driver; use the async methods or pass driver=")
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

    def _check_ready(self) -> None:
        if not self._ready:
            raise StoreError("store is not set up: call setup() first")

    def _translate(self, exc: Exception) -> MemOSError:
        if isinstance(exc, neo4j.exceptions.ConstraintError):
            return InvalidInputError(f"write refused by a uniqueness constraint: {exc}")
        return StoreError(f"neo4j store ({self._uri or 'driver'}, database {self.database!r}): {exc}")

    def _execute(self, body: Callable[[], Body[T]], *, write: bool) -> T:
        """Run a transaction body in one managed sync transaction (retried on transient errors)."""
        self._check_ready()

        def work(tx: ManagedTransaction) -> T:
            return _drive(body(), lambda query, params: tx.run(query, params).data())  # type: ignore[arg-type]

        try:
            with self._sync_driver().session(database=self.database) as session:
                return session.execute_write(work) if write else session.execute_read(work)
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc

    async def _aexecute(self, body: Callable[[], Body[T]], *, write: bool) -> T:
        """Async twin of :meth:`_execute` on the async driver (a worker thread without one)."""
        self._check_ready()
        driver = self._loop_driver()
        if driver is None:
            return await asyncio.to_thread(self._execute, body, write=write)

        async def work(tx: AsyncManagedTransaction) -> T:
            async def run(query: str, params: dict[str, Any]) -> Records:
                return await (await tx.run(query, params)).data()  # type: ignore[arg-type]

            return await _adrive(body(), run)

        try:
            async with driver.session(database=self.database) as session:
                if write:
                    return await session.execute_write(work)
                return await session.execute_read(work)
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as exc:
            raise self._translate(exc) from exc

    def _params(self, cube_id: str, **extra: Any) -> dict[str, Any]:
        return {"tenant": self.tenant, "cube_id": cube_id, **extra}

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
        self.vector_index = online.get(VECTOR_INDEX) == "VECTOR"
        self.fulltext_index = self.use_fulltext_index and online.get(FULLTEXT_INDEX) == "FULLTEXT"
        probe = yield ("RETURN vector.similarity.cosine([1.0, 0.0], [0.0, 1.0]) AS s", {})
        self.cosine_normalized = bool(probe) and abs(float(probe[0]["s"]) - 0.5) < 1e-6

    def setup(self) -> None:
        """Apply pending migrations and detect the server's capabilities. Idempotent.

        Migrations are versioned and recorded as ``:MemosMigration {version, applied_at}`` nodes;
        the vector and full-text indexes are optional (a server that refuses them gets the
        fallbacks described in the module docstring).

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
    def _create_cube(self, header: CubeHeader) -> Body[None]:
        rows = yield (f"MATCH {_CUBE} RETURN c.cube_id AS id", self._params(header.cube_id))
        if rows:
            raise CubeExistsError(f"cube {header.cube_id!r} already exists")
        yield (
            "CREATE (c:Cube {tenant: $tenant, cube_id: $cube_id, header: $header, embedding_dim: $dim, "
            "item_seq: 0, edge_seq: 0, event_seq: 0})",
            self._params(header.cube_id, header=header.model_dump_json(), dim=header.storage.embedding_dim),
        )

    def create_cube(self, header: CubeHeader) -> None:
        self._execute(lambda: self._create_cube(header), write=True)

    async def acreate_cube(self, header: CubeHeader) -> None:
        await self._aexecute(lambda: self._create_cube(header), write=True)

    def _get_cube(self, cube_id: str) -> Body[CubeHeader]:
        rows = yield (f"MATCH {_CUBE} RETURN c.header AS header", self._params(cube_id))
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        return CubeHeader.model_validate_json(rows[0]["header"])

    def get_cube(self, cube_id: str) -> CubeHeader:
        return self._execute(lambda: self._get_cube(cube_id), write=False)

    async def aget_cube(self, cube_id: str) -> CubeHeader:
        return await self._aexecute(lambda: self._get_cube(cube_id), write=False)

    def _list_cubes(self) -> Body[list[CubeHeader]]:
        rows = yield (
            "MATCH (c:Cube {tenant: $tenant}) RETURN c.header AS header ORDER BY c.cube_id",
            {"tenant": self.tenant},
        )
        return [CubeHeader.model_validate_json(r["header"]) for r in rows]

    def list_cubes(self) -> list[CubeHeader]:
        return self._execute(self._list_cubes, write=False)

    async def alist_cubes(self) -> list[CubeHeader]:
        return await self._aexecute(self._list_cubes, write=False)

    def _update_cube(self, header: CubeHeader) -> Body[CubeHeader]:
        current = yield from self._get_cube(header.cube_id)
        stored = header.model_copy(update={"version": current.version + 1, "updated_at": utcnow()})
        yield (
            f"MATCH {_CUBE} SET c.header = $header, c.embedding_dim = $dim",
            self._params(header.cube_id, header=stored.model_dump_json(), dim=stored.storage.embedding_dim),
        )
        return stored

    def update_cube(self, header: CubeHeader) -> CubeHeader:
        return self._execute(lambda: self._update_cube(header), write=True)

    async def aupdate_cube(self, header: CubeHeader) -> CubeHeader:
        return await self._aexecute(lambda: self._update_cube(header), write=True)

    def _delete_cube(self, cube_id: str) -> Body[None]:
        yield from self._cube_dim(cube_id)
        params = self._params(cube_id)
        yield ("MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id}) DETACH DELETE m", params)
        yield ("MATCH (e:Event {tenant: $tenant, cube_id: $cube_id}) DELETE e", params)
        yield (f"MATCH {_CUBE} DELETE c", params)

    def delete_cube(self, cube_id: str) -> None:
        self._execute(lambda: self._delete_cube(cube_id), write=True)

    async def adelete_cube(self, cube_id: str) -> None:
        await self._aexecute(lambda: self._delete_cube(cube_id), write=True)

    def _cube_dim(self, cube_id: str) -> Body[int | None]:
        rows = yield (f"MATCH {_CUBE} RETURN c.embedding_dim AS dim", self._params(cube_id))
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        dim = rows[0]["dim"]
        return None if dim is None else int(dim)

    # -- items -------------------------------------------------------------------------------------
    def _apply(self, cube_id: str, batch: WriteBatch) -> Body[WriteResult]:
        added = [i.model_copy(update={"cube_id": cube_id}) for i in batch.add]
        ids = [i.id for i in added]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("duplicate item ids in one write")
        rels = [relation_type(e.type) for e in batch.edges]
        params = self._params(cube_id)
        # taking the cube's counters also serialises writers of one cube
        rows = yield (
            f"MATCH {_CUBE} SET c.item_seq = coalesce(c.item_seq, 0) + $n, c.edge_seq = coalesce(c.edge_seq, 0) + $e "
            "RETURN c.embedding_dim AS dim, c.item_seq AS item_seq, c.edge_seq AS edge_seq",
            {**params, "n": len(added), "e": len(batch.edges)},
        )
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        dim = rows[0]["dim"]
        new_dim = check_embedding_dim([*added, *batch.update], None if dim is None else int(dim))
        if new_dim != dim:
            yield (f"MATCH {_CUBE} SET c.embedding_dim = $dim", {**params, "dim": new_dim})
        if added:
            existing = yield (f"{_EACH_ITEM} RETURN m.id AS id", {**params, "ids": ids})
            if existing:
                raise InvalidInputError(
                    f"item ids already exist in cube {cube_id!r}: {sorted(r['id'] for r in existing)[:5]}"
                )
            first = int(rows[0]["item_seq"]) - len(added)
            groups: dict[str, list[dict[str, Any]]] = {}
            for n, item in enumerate(added):
                groups.setdefault(node_labels(item.node_kind), []).append(item_properties(item, self.tenant, first + n))
            for labels, group in groups.items():
                yield (f"UNWIND $rows AS row CREATE (m:{labels}) SET m = row", {"rows": group})
        updated = yield from self._updates(cube_id, batch.update)
        if batch.edges:
            ends = sorted({e.source_id for e in batch.edges} | {e.target_id for e in batch.edges})
            found = yield (f"{_EACH_ITEM} RETURN m.id AS id", {**params, "ids": ends})
            missing = set(ends) - {r["id"] for r in found}
            if missing:
                raise InvalidInputError(f"edge ends not in cube {cube_id!r}: {sorted(missing)[:5]}")
            yield from self._write_edges(cube_id, batch.edges, rels, int(rows[0]["edge_seq"]) - len(batch.edges))
        return WriteResult(added=ids, updated=updated)

    def _updates(self, cube_id: str, items: Sequence[MemoryItem]) -> Body[list[MemoryItem]]:
        if not items:
            return []
        params = self._params(cube_id)
        rows = yield (
            f"{_EACH_ITEM} "
            "RETURN m.id AS id, m.version AS version, m.seq AS seq, m.node_kind AS node_kind, m.embedding AS embedding",
            {**params, "ids": list(dict.fromkeys(i.id for i in items))},
        )
        stored = {r["id"]: r for r in rows}
        now = utcnow()
        out: list[MemoryItem] = []
        props: list[dict[str, Any]] = []
        for item in items:
            row = stored.get(item.id) or {}
            new = next_version(item, cube_id, row.get("version"), row.get("embedding"), now)
            if row["node_kind"] != item.node_kind.value:
                raise InvalidInputError(f"memory {item.id!r}: the node kind of a stored item cannot change")
            stored[item.id] = {**row, "version": new.version}
            out.append(new)
            props.append(item_properties(new, self.tenant, int(row["seq"])))
        yield (
            "UNWIND $rows AS row MATCH (m:Memory {tenant: $tenant, cube_id: $cube_id, id: row.id}) SET m = row",
            {**params, "rows": props},
        )
        return out

    def _write_edges(self, cube_id: str, edges: Sequence[Edge], rels: Sequence[str], first_seq: int) -> Body[None]:
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

    def apply(self, cube_id: str, batch: WriteBatch) -> WriteResult:
        return self._execute(lambda: self._apply(cube_id, batch), write=True)

    async def aapply(self, cube_id: str, batch: WriteBatch) -> WriteResult:
        return await self._aexecute(lambda: self._apply(cube_id, batch), write=True)

    async def aadd(self, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> list[str]:
        return (await self.aapply(cube_id, WriteBatch(add=list(items), edges=list(edges)))).added

    async def aupdate(self, cube_id: str, items: Sequence[MemoryItem]) -> list[MemoryItem]:
        return (await self.aapply(cube_id, WriteBatch(update=list(items)))).updated

    def _get(self, cube_id: str, ids: Sequence[str], with_embeddings: bool) -> Body[list[MemoryItem]]:
        if not ids:
            return []
        rows = yield (
            f"{_EACH_ITEM} RETURN {_PROJECTION_EMB if with_embeddings else _PROJECTION} AS m",
            self._params(cube_id, ids=list(dict.fromkeys(ids))),
        )
        found = {r["m"]["id"]: item_from_properties(r["m"]) for r in rows}
        return [found[i] for i in ids if i in found]

    def get(self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False) -> list[MemoryItem]:
        return self._execute(lambda: self._get(cube_id, ids, with_embeddings), write=False)

    async def aget(self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False) -> list[MemoryItem]:
        return await self._aexecute(lambda: self._get(cube_id, ids, with_embeddings), write=False)

    def _delete(self, cube_id: str, ids: Sequence[str]) -> Body[int]:
        yield from self._cube_dim(cube_id)
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        params = self._params(cube_id, ids=unique)
        rows = yield (f"{_EACH_ITEM} RETURN count(m) AS n", params)
        yield (f"{_EACH_ITEM} DETACH DELETE m", params)
        return int(rows[0]["n"]) if rows else 0

    def delete(self, cube_id: str, ids: Sequence[str]) -> int:
        return self._execute(lambda: self._delete(cube_id, ids), write=True)

    async def adelete(self, cube_id: str, ids: Sequence[str]) -> int:
        return await self._aexecute(lambda: self._delete(cube_id, ids), write=True)

    def _list_items(
        self, cube_id: str, filters: SearchFilters | None, limit: int | None, offset: int, with_embeddings: bool
    ) -> Body[list[MemoryItem]]:
        where, fparams = filter_cypher(filters)
        page = " SKIP $offset" + ("" if limit is None else " LIMIT $limit")
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
            f"WITH m ORDER BY m.seq{page} RETURN {_PROJECTION_EMB if with_embeddings else _PROJECTION} AS m",
            self._params(cube_id, offset=max(offset, 0), limit=limit, **fparams),
        )
        return [item_from_properties(r["m"]) for r in rows]

    def list_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
    ) -> list[MemoryItem]:
        return self._execute(lambda: self._list_items(cube_id, filters, limit, offset, with_embeddings), write=False)

    async def alist_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
    ) -> list[MemoryItem]:
        return await self._aexecute(
            lambda: self._list_items(cube_id, filters, limit, offset, with_embeddings), write=False
        )

    def _count(self, cube_id: str, filters: SearchFilters | None) -> Body[int]:
        where, fparams = filter_cypher(filters)
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} RETURN count(m) AS n",
            self._params(cube_id, **fparams),
        )
        return int(rows[0]["n"]) if rows else 0

    def count(self, cube_id: str, filters: SearchFilters | None = None) -> int:
        return self._execute(lambda: self._count(cube_id, filters), write=False)

    async def acount(self, cube_id: str, filters: SearchFilters | None = None) -> int:
        return await self._aexecute(lambda: self._count(cube_id, filters), write=False)

    # -- edges -------------------------------------------------------------------------------------
    def add_edges(self, cube_id: str, edges: Sequence[Edge]) -> None:
        self.apply(cube_id, WriteBatch(edges=list(edges)))

    async def aadd_edges(self, cube_id: str, edges: Sequence[Edge]) -> None:
        await self.aapply(cube_id, WriteBatch(edges=list(edges)))

    def _get_edges(
        self, cube_id: str, ids: Sequence[str] | None, types: Sequence[RelationType] | None, direction: Direction
    ) -> Body[list[Edge]]:
        rels = [relation_type(t) for t in (list(RelationType) if types is None else types)]
        if not rels or (ids is not None and not ids):
            return []
        params = self._params(cube_id, rels=rels, ids=None if ids is None else list(dict.fromkeys(ids)))

        def ret(source: str, target: str) -> str:
            # `o` is the other end: it must lie in the same tenant and cube
            return (
                "WHERE type(e) IN $rels AND o.tenant = $tenant AND o.cube_id = $cube_id "
                f"RETURN {source}.id AS source, {target}.id AS target, type(e) AS type, e.weight AS weight, "
                "e.created_at AS created_at, e.seq AS seq"
            )

        anchor = "(a:Memory {tenant: $tenant, cube_id: $cube_id, id: item_id})"
        rows: Records = []
        if ids is None:
            rows = yield (
                "MATCH (a:Memory {tenant: $tenant, cube_id: $cube_id})-[e]->(o:Memory) " + ret("a", "o"),
                params,
            )
        else:
            if direction in ("out", "both"):
                rows += yield (f"UNWIND $ids AS item_id MATCH {anchor}-[e]->(o:Memory) " + ret("a", "o"), params)
            if direction in ("in", "both"):
                rows += yield (f"UNWIND $ids AS item_id MATCH (o:Memory)-[e]->{anchor} " + ret("o", "a"), params)
        unique = {(r["source"], r["target"], r["type"]): r for r in rows}
        return [
            Edge(
                source_id=r["source"],
                target_id=r["target"],
                type=RelationType(r["type"]),
                weight=r["weight"],
                created_at=datetime.fromisoformat(r["created_at"]),
            )
            for r in sorted(unique.values(), key=lambda r: int(r["seq"]))
        ]

    def get_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
    ) -> list[Edge]:
        return self._execute(lambda: self._get_edges(cube_id, ids, types, direction), write=False)

    async def aget_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
    ) -> list[Edge]:
        return await self._aexecute(lambda: self._get_edges(cube_id, ids, types, direction), write=False)

    # -- search ------------------------------------------------------------------------------------
    def _vector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None
    ) -> Body[list[tuple[str, float]]]:
        dim = yield from self._cube_dim(cube_id)
        if dim is None or k <= 0:
            return []
        vector = check_vector(embedding, dim, f"query embedding for cube {cube_id!r}").tolist()
        where, fparams = filter_cypher(filters or SearchFilters())
        params = self._params(cube_id, v=vector, k=k, **fparams)

        def cosine(score: float) -> float:
            return 2.0 * score - 1.0 if self.cosine_normalized else score

        if self.vector_index:
            rows = yield (
                "CALL db.index.vector.queryNodes($index, $fetch, $v) YIELD node AS m, score "
                f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
                "RETURN m.id AS id, score ORDER BY score DESC LIMIT $k",
                {**params, "index": VECTOR_INDEX, "fetch": max(10 * k, 100)},
            )
            if len(rows) == k:
                return [(r["id"], cosine(float(r["score"]))) for r in rows]
        rows = yield (
            f"MATCH (m:Memory) WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND m.embedding IS NOT NULL{where} "
            "WITH m, vector.similarity.cosine(m.embedding, $v) AS score "
            "RETURN m.id AS id, score ORDER BY score DESC, m.seq LIMIT $k",
            params,
        )
        return [(r["id"], cosine(float(r["score"]))) for r in rows]

    def vector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        return self._execute(lambda: self._vector_search(cube_id, embedding, k, filters), write=False)

    async def avector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        return await self._aexecute(lambda: self._vector_search(cube_id, embedding, k, filters), write=False)

    def _text_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None
    ) -> Body[list[tuple[str, float]]]:
        where, fparams = filter_cypher(filters or SearchFilters())
        if k <= 0:
            return []
        if self.fulltext_index:
            lucene = lucene_query(query)
            if lucene is None:
                return []
            rows = yield (
                "CALL db.index.fulltext.queryNodes($index, $q) YIELD node AS m, score "
                f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id{where} "
                "RETURN m.id AS id, score ORDER BY score DESC LIMIT $k",
                self._params(cube_id, index=FULLTEXT_INDEX, q=lucene, k=k, **fparams),
            )
            return [(r["id"], float(r["score"])) for r in rows]
        terms = bm25_query_terms(query)
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
            self._params(cube_id, terms=terms, k=k, k1=BM25_K1, b=BM25_B, **fparams),
        )
        return [(r["id"], float(r["score"])) for r in rows]

    def text_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        return self._execute(lambda: self._text_search(cube_id, query, k, filters), write=False)

    async def atext_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        return await self._aexecute(lambda: self._text_search(cube_id, query, k, filters), write=False)

    def _expand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        depth: int,
        filters: SearchFilters | None,
    ) -> Body[list[Neighbor]]:
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_EXPAND_DEPTH:
            raise InvalidInputError(f"depth must be an integer from 1 to {MAX_EXPAND_DEPTH}, got {depth!r}")
        rels = "|".join(dict.fromkeys(relation_type(t) for t in types))
        seeds = list(dict.fromkeys(ids))
        if not seeds or not rels:
            return []
        where, fparams = filter_cypher(filters)
        rows = yield (
            "UNWIND range(0, size($ids) - 1) AS pos "
            "MATCH p = (s:Memory {tenant: $tenant, cube_id: $cube_id, id: $ids[pos]})"
            f"-[:{rels}*1..{depth}]-(m:Memory) "
            f"WHERE m.tenant = $tenant AND m.cube_id = $cube_id AND NOT m.id IN $ids{where} "
            "RETURN m.id AS id, length(p) AS depth, pos, nodes(p)[-2].id AS from_id, "
            "type(relationships(p)[-1]) AS type",
            self._params(cube_id, ids=seeds, **fparams),
        )
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            key = (int(r["depth"]), int(r["pos"]))
            current = best.get(r["id"])
            if current is None or key < (int(current["depth"]), int(current["pos"])):
                best[r["id"]] = r
        ordered = sorted(best.values(), key=lambda r: (int(r["depth"]), int(r["pos"])))
        return [
            Neighbor(id=r["id"], from_id=r["from_id"], type=RelationType(r["type"]), depth=int(r["depth"]))
            for r in ordered
        ]

    def expand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
    ) -> list[Neighbor]:
        """Walk whitelisted relationships in Cypher (variable-length paths) from ``ids``.

        Each reached item is reported once, over a shortest path, from the best-ranked seed among
        those at that distance (``ids`` are taken as ranked best first). See
        :meth:`BaseMemoryStore.expand`.

        Raises:
            InvalidInputError: ``depth`` outside 1..:data:`MAX_EXPAND_DEPTH`, or a type outside the whitelist.

        """
        return self._execute(lambda: self._expand(cube_id, ids, types, depth, filters), write=False)

    async def aexpand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
    ) -> list[Neighbor]:
        return await self._aexecute(lambda: self._expand(cube_id, ids, types, depth, filters), write=False)

    # -- events ------------------------------------------------------------------------------------
    def _record_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> Body[None]:
        text = json.dumps(payload, default=str)
        rows = yield (
            f"MATCH {_CUBE} SET c.event_seq = coalesce(c.event_seq, 0) + 1 RETURN c.event_seq AS seq",
            self._params(cube_id),
        )
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        yield (
            "CREATE (e:Event {tenant: $tenant, cube_id: $cube_id, seq: $seq, kind: $kind, payload: $payload, "
            "created_at: $created_at})",
            self._params(cube_id, seq=rows[0]["seq"], kind=kind, payload=text, created_at=utcnow().isoformat()),
        )

    def record_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> None:
        self._execute(lambda: self._record_event(cube_id, kind, payload), write=True)

    async def arecord_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> None:
        await self._aexecute(lambda: self._record_event(cube_id, kind, payload), write=True)

    def _list_events(self, cube_id: str, kind: str | None) -> Body[list[dict[str, object]]]:
        rows = yield (
            "MATCH (e:Event) WHERE e.tenant = $tenant AND e.cube_id = $cube_id AND ($kind IS NULL OR e.kind = $kind) "
            "RETURN e.kind AS kind, e.payload AS payload, e.created_at AS created_at ORDER BY e.seq",
            self._params(cube_id, kind=kind),
        )
        return [{"kind": r["kind"], "payload": json.loads(r["payload"]), "created_at": r["created_at"]} for r in rows]

    def list_events(self, cube_id: str, kind: str | None = None) -> list[dict[str, object]]:
        return self._execute(lambda: self._list_events(cube_id, kind), write=False)

    async def alist_events(self, cube_id: str, kind: str | None = None) -> list[dict[str, object]]:
        return await self._aexecute(lambda: self._list_events(cube_id, kind), write=False)
