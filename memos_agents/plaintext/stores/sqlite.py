"""The embedded default plaintext store: one SQLite file per MemOS home.

* WAL journal, one transaction per write call (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any
  error), foreign keys on.
* BM25 over an inverted index (``item_terms``: cube, term, item, term frequency) of each item's
  text, key and tags, tokenised and Porter-stemmed as FTS5's ``porter unicode61`` does
  (:func:`~memos_agents.plaintext.text.bm25_terms`), with FTS5's formula and statistics (document
  count, document frequencies, average length) over the item's cube only, so one cube's content
  never changes another's ranking and every store backend ranks alike. (Schema version 1 used an
  FTS5 index, whose statistics span the whole file; migration 2 replaces it.)
* Vectors stored as float32 blobs beside each row; exact cosine search in numpy over a per-cube
  in-memory matrix that is built lazily, extended on ``add`` and dropped on ``update``/``delete``
  or when another process commits to the file (``PRAGMA data_version``).
* Versioned migrations recorded in ``schema_migrations``; :meth:`SQLiteMemoryStore.setup` is
  idempotent.
* Long writes never hold the write lock for long: a cube import (:meth:`SQLiteMemoryStore.import_cube`)
  writes a hidden cube (``state = 'importing'``) in transactions of :data:`CHUNK_ROWS` rows and
  switches it in with one short transaction; ``delete_cube`` hides the cube at once
  (``'deleting'``) and removes its rows in chunks. Readers see the whole cube or none of it. A
  writer waits up to ``busy_timeout_s`` (default 30 s) for the lock; SQLite retries within that
  time, so callers do not see "database is locked" while other writers make progress. An import
  or delete interrupted by a crash is cleaned up by the next ``setup``.
* Durability: ``synchronous="NORMAL"`` (default) survives any process crash (WAL; tested with
  kill -9) and may lose the last commits on power loss or an OS crash; ``"FULL"`` syncs the WAL on
  every commit and loses nothing acknowledged, at a cost in write latency. NORMAL is the default
  because it is SQLite's recommended setting for WAL and an agent's memory tolerates the loss of
  its last seconds on power failure better than slow writes.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np

from memos_agents.cube import CubeHeader
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    StoreError,
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
from memos_agents.plaintext.text import BM25_B, BM25_K1, bm25_idf, bm25_query_terms, bm25_terms
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
)


def _index_all_terms(cur: sqlite3.Cursor) -> None:
    """Migration 2's data step: fill ``doc_len`` and ``item_terms`` for the items already stored."""
    rows = cur.execute("SELECT rowid, cube_id, search_text FROM items").fetchall()
    for rowid, cube_id, text in rows:
        terms = bm25_terms(text)
        cur.execute("UPDATE items SET doc_len = ? WHERE rowid = ?", (len(terms), rowid))
        cur.executemany(
            "INSERT INTO item_terms VALUES (?, ?, ?, ?)",
            [(cube_id, term, rowid, tf) for term, tf in Counter(terms).items()],
        )


#: Versioned migrations: (version, SQL script, optional data step run after it in the same transaction).
_MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Cursor], None] | None]] = [
    (
        1,
        """
        CREATE TABLE cubes (
            cube_id TEXT PRIMARY KEY,
            header TEXT NOT NULL,
            embedding_dim INTEGER
        );
        CREATE TABLE items (
            rowid INTEGER PRIMARY KEY,
            cube_id TEXT NOT NULL REFERENCES cubes(cube_id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            text TEXT NOT NULL,
            search_text TEXT NOT NULL,
            memory_type TEXT NOT NULL,
            node_kind TEXT NOT NULL,
            key TEXT,
            tags TEXT NOT NULL,
            sources TEXT NOT NULL,
            user_id TEXT,
            event_time TEXT,
            event_us INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            confidence REAL NOT NULL,
            status TEXT NOT NULL,
            version INTEGER NOT NULL,
            embedding BLOB,
            metadata TEXT NOT NULL,
            UNIQUE (cube_id, id)
        );
        CREATE INDEX items_by_status ON items(cube_id, status, node_kind);
        CREATE VIRTUAL TABLE items_fts USING fts5(
            search_text, content='items', content_rowid='rowid', tokenize='porter unicode61'
        );
        CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
            INSERT INTO items_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
        END;
        CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
        END;
        CREATE TRIGGER items_au AFTER UPDATE OF search_text ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
            INSERT INTO items_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
        END;
        CREATE TABLE edges (
            cube_id TEXT NOT NULL REFERENCES cubes(cube_id) ON DELETE CASCADE,
            source_id TEXT NOT NULL,
            target_id TEXT NOT NULL,
            type TEXT NOT NULL,
            weight REAL NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (cube_id, source_id, target_id, type)
        );
        CREATE INDEX edges_by_target ON edges(cube_id, target_id);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            cube_id TEXT NOT NULL REFERENCES cubes(cube_id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
        None,
    ),
    (
        2,
        """
        ALTER TABLE items ADD COLUMN doc_len INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE item_terms (
            cube_id TEXT NOT NULL,
            term TEXT NOT NULL,
            item_rowid INTEGER NOT NULL REFERENCES items(rowid) ON DELETE CASCADE,
            tf INTEGER NOT NULL,
            PRIMARY KEY (cube_id, term, item_rowid)
        ) WITHOUT ROWID;
        CREATE INDEX item_terms_by_item ON item_terms(item_rowid);
        DROP TRIGGER items_ai;
        DROP TRIGGER items_ad;
        DROP TRIGGER items_au;
        DROP TABLE items_fts;
        """,
        _index_all_terms,
    ),
    (
        3,
        """
        ALTER TABLE cubes ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
        ALTER TABLE cubes ADD COLUMN state_since TEXT;
        ALTER TABLE cubes ADD COLUMN generation TEXT;
        """,
        None,
    ),
]

#: Rows per transaction of a cube import or a cube delete: short enough that another writer's
#: transaction waits well under a second for the write lock between two chunks.
CHUNK_ROWS = 500
#: An import that made no progress for this long (seconds) was interrupted; ``setup`` removes it.
STALE_IMPORT_S = 600.0

#: Schema version this code writes.
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_ITEM_COLUMNS = (
    "id, text, memory_type, node_kind, key, tags, sources, user_id, event_time, created_at, "
    "updated_at, confidence, status, version, metadata, cube_id"
)


F = TypeVar("F", bound=Callable[..., Any])


def _store_errors(fn: F) -> F:
    """Re-raise any ``sqlite3.Error`` escaping ``fn`` as :class:`StoreError` (after its rollback)."""

    @functools.wraps(fn)
    def wrapper(self: SQLiteMemoryStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    return cast(F, wrapper)


#: Small integer codes of the enum columns kept in the vector cache (fast numpy masks).
_CODES: dict[Any, int] = {
    value: code for enum in (LifecycleState, MemoryType, NodeKind) for code, value in enumerate(enum)
}


@dataclass
class _VectorCache:
    """Per-cube matrix of unit vectors plus the columns filters need."""

    ids: list[str]
    matrix: np.ndarray  # (n, d) float32, unit rows
    status: np.ndarray
    memory_type: np.ndarray
    node_kind: np.ndarray
    user_id: np.ndarray
    event_us: np.ndarray  # int64, INT64_MIN when unknown
    tags: list[frozenset[str]]

    def extended(self, items: Sequence[MemoryItem]) -> _VectorCache:
        """Return a new cache with ``items`` appended (readers of this one are unaffected)."""
        rows = [i for i in items if i.embedding is not None]
        if not rows:
            return self
        other = _VectorCache.build(rows, self.matrix.shape[1])
        return _VectorCache(
            ids=[*self.ids, *other.ids],
            matrix=np.vstack([self.matrix, other.matrix]),
            status=np.concatenate([self.status, other.status]),
            memory_type=np.concatenate([self.memory_type, other.memory_type]),
            node_kind=np.concatenate([self.node_kind, other.node_kind]),
            user_id=np.concatenate([self.user_id, other.user_id]),
            event_us=np.concatenate([self.event_us, other.event_us]),
            tags=[*self.tags, *other.tags],
        )

    @staticmethod
    def build(items: Sequence[MemoryItem], dim: int) -> _VectorCache:
        rows = [i for i in items if i.embedding is not None]
        matrix: np.ndarray = np.asarray([i.embedding for i in rows], dtype=np.float32).reshape(len(rows), dim)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms == 0, 1.0, norms)
        missing = np.iinfo(np.int64).min
        return _VectorCache(
            ids=[i.id for i in rows],
            matrix=matrix,
            status=np.asarray([_CODES[i.status] for i in rows], dtype=np.int16),
            memory_type=np.asarray([_CODES[i.memory_type] for i in rows], dtype=np.int16),
            node_kind=np.asarray([_CODES[i.node_kind] for i in rows], dtype=np.int16),
            user_id=np.asarray([i.user_id for i in rows], dtype=object),
            event_us=np.asarray(
                [missing if i.event_time is None else event_us(i.event_time) for i in rows], dtype=np.int64
            ),
            tags=[frozenset(i.tags) for i in rows],
        )

    def mask(self, filters: SearchFilters) -> np.ndarray:
        m = np.isin(self.status, [_CODES[s] for s in filters.statuses])
        m &= np.isin(self.node_kind, [_CODES[k] for k in filters.node_kinds])
        if filters.memory_types is not None:
            m &= np.isin(self.memory_type, [_CODES[t] for t in filters.memory_types])
        if filters.user_id is not None:
            m &= self.user_id == filters.user_id
        missing = np.iinfo(np.int64).min
        if filters.time_from is not None:
            m &= (self.event_us != missing) & (self.event_us >= event_us(filters.time_from))
        if filters.time_to is not None:
            m &= (self.event_us != missing) & (self.event_us <= event_us(filters.time_to))
        if filters.tags_any is not None:
            wanted = set(filters.tags_any)
            m &= np.asarray([bool(t & wanted) for t in self.tags], dtype=bool)
        return m


class SQLiteMemoryStore(BaseMemoryStore):
    """Embedded plaintext store on one SQLite file.

    Construct with :meth:`from_path` (or the constructor); nothing touches the disk until
    :meth:`setup`. Safe to share between threads (one connection behind a lock).

    Args:
        path: The database file, or ``":memory:"`` for a private in-memory database.
        synchronous: ``"NORMAL"`` (default) or ``"FULL"``; see the module docstring on durability.
        busy_timeout_s: How long a write waits for another connection's write lock, in seconds
            (default 30).

    Raises:
        ConfigError: An invalid ``synchronous`` or ``busy_timeout_s``.

    """

    capabilities = StoreCapabilities(
        supports_vector_search=True,
        supports_full_text=True,
        supports_graph_expansion=True,
        supports_transactions=True,
        supports_ttl=False,
    )

    def __init__(
        self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL", busy_timeout_s: float = 30.0
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if not busy_timeout_s >= 0:
            raise ConfigError("busy_timeout_s must be a non-negative number of seconds")
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_s = float(busy_timeout_s)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._vectors: dict[str, _VectorCache] = {}
        self._data_version: int | None = None

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> SQLiteMemoryStore:
        """Return a store for the SQLite file at ``path`` (not opened until :meth:`setup`); kwargs as for the class."""
        return cls(path, **kwargs)

    # -- connection --------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not set up: call setup() first")
        return self._conn

    @_store_errors
    def setup(self) -> None:
        """Open the file (creating it), switch to WAL and apply pending migrations. Idempotent."""
        with self._lock:
            if self._conn is None:
                if self.path != ":memory:":
                    target = Path(self.path)
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise StoreError(f"cannot create the directory of {self.path}: {exc}") from exc
                    if target.is_dir():
                        raise StoreError(f"{self.path} is a directory, not a database file")
                conn = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout_s
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
                self._conn = conn
            conn = self.conn
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            if applied and max(applied) > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {max(applied)}, newer than {SCHEMA_VERSION}")
            for version, script, data_step in _MIGRATIONS:
                if version in applied:
                    continue
                with self._tx() as cur:
                    for statement in _statements(script):
                        cur.execute(statement)
                    if data_step is not None:
                        data_step(cur)
                    cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, utcnow().isoformat()))
            self._purge_interrupted()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._vectors.clear()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: commit on success, roll back on any exception."""
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    # -- cubes ---------------------------------------------------------------------------------
    @_store_errors
    def create_cube(self, header: CubeHeader) -> None:
        self._create(header, "ready")

    def _create(self, header: CubeHeader, state: str) -> str:
        """Insert the cube row in ``state``; return its generation (a fresh token that names this incarnation).

        A leftover of the same id is finished first when that is safe: a cube being deleted, or an
        import with no progress for :data:`STALE_IMPORT_S` seconds.
        """
        self._purge_interrupted(header.cube_id)
        generation = uuid.uuid4().hex
        with self._tx() as cur:
            row = cur.execute("SELECT state FROM cubes WHERE cube_id = ?", (header.cube_id,)).fetchone()
            if row is not None and row[0] != "ready":
                raise CubeExistsError(
                    f"cube {header.cube_id!r} is being {row[0]} (an interrupted import is removed "
                    f"{STALE_IMPORT_S:.0f} s after its last progress)"
                )
            if row is not None:
                raise CubeExistsError(f"cube {header.cube_id!r} already exists")
            cur.execute(
                "INSERT INTO cubes (cube_id, header, embedding_dim, state, state_since, generation) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    header.cube_id,
                    header.model_dump_json(),
                    header.storage.embedding_dim,
                    state,
                    utcnow().isoformat(),
                    generation,
                ),
            )
        return generation

    @_store_errors
    def import_cube(self, header: CubeHeader, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> None:
        """Create a cube with its content without holding the write lock for long.

        The cube is written hidden (``get_cube``, ``list_cubes`` and ``create_cube`` see it as absent
        or busy) in transactions of :data:`CHUNK_ROWS` items or edges, each checking that the hidden
        cube is still this import's (its generation), then made visible in one short transaction; on
        any failure its rows are removed again. Readers see all of it or none.

        Raises:
            CubeExistsError: The cube exists (or another import of it is under way).
            EmbeddingDimensionError / InvalidEmbeddingError / InvalidInputError: Bad content; nothing stays.
            StoreError: The backend failed, or the import was removed as stale while it ran; nothing stays.

        """
        generation = self._create(header, "importing")
        try:
            for chunk in _chunks(list(items), CHUNK_ROWS):
                self._write(header.cube_id, WriteBatch(add=chunk), generation=generation)
            for links in _chunks(list(edges), CHUNK_ROWS * 4):
                self._write(header.cube_id, WriteBatch(edges=links), generation=generation)
            with self._tx() as cur:
                switched = cur.execute(
                    "UPDATE cubes SET state = 'ready', state_since = ? "
                    "WHERE cube_id = ? AND state = 'importing' AND generation = ?",
                    (utcnow().isoformat(), header.cube_id, generation),
                ).rowcount
                if switched != 1:
                    raise StoreError(f"the import of cube {header.cube_id!r} was removed while it ran")
        except BaseException:
            self._purge(header.cube_id, generation)
            raise

    @_store_errors
    def get_cube(self, cube_id: str) -> CubeHeader:
        with self._lock:
            row = self.conn.execute(
                "SELECT header FROM cubes WHERE cube_id = ? AND state = 'ready'", (cube_id,)
            ).fetchone()
        if row is None:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        return CubeHeader.model_validate_json(row[0])

    @_store_errors
    def list_cubes(self) -> list[CubeHeader]:
        with self._lock:
            rows = self.conn.execute("SELECT header FROM cubes WHERE state = 'ready' ORDER BY cube_id").fetchall()
        return [CubeHeader.model_validate_json(r[0]) for r in rows]

    @_store_errors
    def update_cube(self, header: CubeHeader) -> CubeHeader:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT header FROM cubes WHERE cube_id = ? AND state = 'ready'", (header.cube_id,)
            ).fetchone()
            if row is None:
                raise CubeNotFoundError(f"no cube {header.cube_id!r}")
            current = CubeHeader.model_validate_json(row[0])
            stored = header.model_copy(update={"version": current.version + 1, "updated_at": utcnow()})
            cur.execute(
                "UPDATE cubes SET header = ?, embedding_dim = ? WHERE cube_id = ?",
                (stored.model_dump_json(), stored.storage.embedding_dim, header.cube_id),
            )
        return stored

    @_store_errors
    def delete_cube(self, cube_id: str) -> None:
        """Delete a cube: hidden at once (one short transaction), its rows then removed in chunks.

        Raises:
            CubeNotFoundError: If there is no such cube.

        """
        generation = uuid.uuid4().hex
        with self._tx() as cur:
            hidden = cur.execute(
                "UPDATE cubes SET state = 'deleting', state_since = ?, generation = ? "
                "WHERE cube_id = ? AND state = 'ready'",
                (utcnow().isoformat(), generation, cube_id),
            ).rowcount
            if hidden == 0:
                raise CubeNotFoundError(f"no cube {cube_id!r}")
        self._purge(cube_id, generation)

    def _purge(self, cube_id: str, generation: str | None) -> None:
        """Remove a hidden cube's rows in chunks of :data:`CHUNK_ROWS`, then the cube row.

        Every chunk's transaction first checks that the cube row is still the hidden one of
        ``generation`` (None: a row from before generations existed): once another writer has
        finished this purge and created a new cube of the same id, nothing of the new cube is touched.
        """
        owned = "EXISTS (SELECT 1 FROM cubes WHERE cube_id = ? AND state != 'ready' AND generation IS ?)"
        with self._lock:
            self._vectors.pop(cube_id, None)
        for table in ("edges", "events", "items"):  # deleting items cascades to their item_terms
            while True:
                with self._tx() as cur:
                    done = cur.execute(
                        f"DELETE FROM {table} WHERE {owned} AND rowid IN "
                        f"(SELECT rowid FROM {table} WHERE cube_id = ? LIMIT ?)",
                        (cube_id, generation, cube_id, CHUNK_ROWS),
                    ).rowcount
                if done < CHUNK_ROWS:
                    break
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM cubes WHERE cube_id = ? AND state != 'ready' AND generation IS ?", (cube_id, generation)
            )
        with self._lock:
            self._vectors.pop(cube_id, None)

    def _purge_interrupted(self, cube_id: str | None = None) -> None:
        """Finish interrupted deletes and remove imports with no progress for :data:`STALE_IMPORT_S` seconds.

        Args:
            cube_id: Only this cube (None: every cube).

        """
        sql = "SELECT cube_id, state, state_since, generation FROM cubes WHERE state != 'ready'"
        with self._lock:
            rows = self.conn.execute(
                *((sql,) if cube_id is None else (sql + " AND cube_id = ?", (cube_id,)))
            ).fetchall()
        now = utcnow()
        for cid, state, since, generation in rows:
            stale = since is None or (now - datetime.fromisoformat(since)).total_seconds() > STALE_IMPORT_S
            if state == "deleting" or stale:
                self._purge(cid, generation)

    def _cube_dim(self, cur: sqlite3.Cursor, cube_id: str, *, generation: str | None = None) -> int | None:
        """Return the cube's embedding dimension: of a ready cube, or with ``generation`` of that hidden import."""
        row = cur.execute("SELECT embedding_dim, state, generation FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone()
        expected = ("ready", row[2] if row else None) if generation is None else ("importing", generation)
        if row is None or (row[1], row[2]) != expected:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        if generation is not None:  # heartbeat: this import is making progress
            cur.execute("UPDATE cubes SET state_since = ? WHERE cube_id = ?", (utcnow().isoformat(), cube_id))
        return int(row[0]) if row[0] is not None else None

    # -- items -----------------------------------------------------------------------------------
    @staticmethod
    def _row(item: MemoryItem, doc_len: int) -> tuple[Any, ...]:
        emb = None if item.embedding is None else np.asarray(item.embedding, dtype=np.float32).tobytes()
        return (
            item.cube_id,
            item.id,
            item.text,
            search_text(item),
            item.memory_type.value,
            item.node_kind.value,
            item.key,
            json.dumps(item.tags),
            item.sources.model_dump_json(),
            item.user_id,
            None if item.event_time is None else item.event_time.isoformat(),
            event_us(item.event_time),
            item.created_at.isoformat(),
            item.updated_at.isoformat(),
            item.confidence,
            item.status.value,
            item.version,
            emb,
            json.dumps(item.metadata),
            doc_len,
        )

    @_store_errors
    def apply(self, cube_id: str, batch: WriteBatch) -> WriteResult:
        return self._write(cube_id, batch)

    def _write(self, cube_id: str, batch: WriteBatch, *, generation: str | None = None) -> WriteResult:
        added = [i.model_copy(update={"cube_id": cube_id}) for i in batch.add]
        ids = [i.id for i in added]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("duplicate item ids in one write")
        now = utcnow()
        updated: list[MemoryItem] = []
        with self._lock:
            with self._tx() as cur:
                dim = self._cube_dim(cur, cube_id, generation=generation)
                new_dim = check_embedding_dim([*added, *batch.update], dim)
                if new_dim != dim:
                    cur.execute("UPDATE cubes SET embedding_dim = ? WHERE cube_id = ?", (new_dim, cube_id))
                terms = [bm25_terms(search_text(i)) for i in added]
                try:
                    cur.executemany(
                        "INSERT INTO items (cube_id, id, text, search_text, memory_type, node_kind, key, tags, "
                        "sources, user_id, event_time, event_us, created_at, updated_at, confidence, status, "
                        "version, embedding, metadata, doc_len) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [self._row(i, len(t)) for i, t in zip(added, terms, strict=True)],
                    )
                except sqlite3.IntegrityError as exc:
                    raise InvalidInputError(f"an item id already exists in cube {cube_id!r}: {exc}") from exc
                rowids: dict[str, int] = {}
                for chunk in _chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    rowids.update(
                        cur.execute(
                            f"SELECT id, rowid FROM items WHERE cube_id = ? AND id IN ({marks})", (cube_id, *chunk)
                        )
                    )
                self._index_terms(cur, cube_id, [(rowids[i], t) for i, t in zip(ids, terms, strict=True)])
                for item in batch.update:
                    updated.append(self._update_one(cur, cube_id, item, now))
                self._insert_edges(cur, cube_id, batch.edges)
            # after COMMIT, still under the lock: readers see rows and cache change together
            if updated:
                self._vectors.pop(cube_id, None)
            elif cube_id in self._vectors:
                self._vectors[cube_id] = self._vectors[cube_id].extended(added)
        return WriteResult(added=ids, updated=updated)

    @staticmethod
    def _index_terms(cur: sqlite3.Cursor, cube_id: str, items: Sequence[tuple[int, list[str]]]) -> None:
        """Add ``(rowid, terms)`` of items to the BM25 inverted index."""
        cur.executemany(
            "INSERT INTO item_terms VALUES (?, ?, ?, ?)",
            [(cube_id, term, rowid, tf) for rowid, terms in items for term, tf in Counter(terms).items()],
        )

    def _update_one(self, cur: sqlite3.Cursor, cube_id: str, item: MemoryItem, now: datetime) -> MemoryItem:
        row = cur.execute(
            "SELECT version, embedding, rowid FROM items WHERE cube_id = ? AND id = ?", (cube_id, item.id)
        ).fetchone()
        stored = None if row is None or row[1] is None else np.frombuffer(row[1], dtype=np.float32).tolist()
        new = next_version(item, cube_id, None if row is None else row[0], stored, now)  # raises: missing, stale
        rowid = int(row[2])
        terms = bm25_terms(search_text(new))
        r = self._row(new, len(terms))
        cur.execute(
            "UPDATE items SET text=?, search_text=?, memory_type=?, node_kind=?, key=?, tags=?, sources=?, "
            "user_id=?, event_time=?, event_us=?, created_at=?, updated_at=?, confidence=?, status=?, "
            "version=?, embedding=?, metadata=?, doc_len=? WHERE cube_id = ? AND id = ?",
            (*r[2:], cube_id, item.id),
        )
        cur.execute("DELETE FROM item_terms WHERE item_rowid = ?", (rowid,))
        self._index_terms(cur, cube_id, [(rowid, terms)])
        return new

    def _insert_edges(self, cur: sqlite3.Cursor, cube_id: str, edges: Sequence[Edge]) -> None:
        if not edges:
            return
        ends = sorted({e.source_id for e in edges} | {e.target_id for e in edges})
        found: set[str] = set()
        for chunk in _chunks(ends, 500):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in cur.execute(f"SELECT id FROM items WHERE cube_id = ? AND id IN ({marks})", (cube_id, *chunk))
            )
        missing = set(ends) - found
        if missing:
            raise InvalidInputError(f"edge ends not in cube {cube_id!r}: {sorted(missing)[:5]}")
        cur.executemany(
            "INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?, ?, ?)",
            [
                (cube_id, e.source_id, e.target_id, RelationType(e.type).value, e.weight, e.created_at.isoformat())
                for e in edges
            ],
        )

    def _items_from_rows(self, rows: Sequence[Sequence[Any]], with_embeddings: bool) -> list[MemoryItem]:
        out = []
        for r in rows:
            emb = None
            if with_embeddings and r[16] is not None:
                emb = np.frombuffer(r[16], dtype=np.float32).tolist()
            out.append(
                MemoryItem.model_construct(
                    id=r[0],
                    text=r[1],
                    memory_type=MemoryType(r[2]),
                    node_kind=NodeKind(r[3]),
                    key=r[4],
                    tags=json.loads(r[5]),
                    sources=Sources.model_construct(**json.loads(r[6])),
                    user_id=r[7],
                    event_time=None if r[8] is None else as_utc(datetime.fromisoformat(r[8])),
                    created_at=as_utc(datetime.fromisoformat(r[9])),
                    updated_at=as_utc(datetime.fromisoformat(r[10])),
                    confidence=r[11],
                    status=LifecycleState(r[12]),
                    version=r[13],
                    metadata=json.loads(r[14]),
                    cube_id=r[15],
                    embedding=emb,
                )
            )
        return out

    def _select(self, where: str, params: Sequence[Any], with_embeddings: bool, tail: str = "") -> list[MemoryItem]:
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {_ITEM_COLUMNS}, embedding FROM items WHERE {where} {tail}", tuple(params)
            ).fetchall()
        return self._items_from_rows(rows, with_embeddings)

    @_store_errors
    def get(self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False) -> list[MemoryItem]:
        found: dict[str, MemoryItem] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for item in self._select(f"cube_id = ? AND id IN ({marks})", (cube_id, *chunk), with_embeddings):
                found[item.id] = item
        return [found[i] for i in ids if i in found]

    @_store_errors
    def delete(self, cube_id: str, ids: Sequence[str]) -> int:
        deleted = 0
        with self._lock:
            with self._tx() as cur:
                self._cube_dim(cur, cube_id)
                for chunk in _chunks(list(ids), 500):
                    marks = ",".join("?" * len(chunk))
                    deleted += cur.execute(
                        f"DELETE FROM items WHERE cube_id = ? AND id IN ({marks})", (cube_id, *chunk)
                    ).rowcount
                    cur.execute(
                        f"DELETE FROM edges WHERE cube_id = ? AND (source_id IN ({marks}) OR target_id IN ({marks}))",
                        (cube_id, *chunk, *chunk),
                    )
            self._vectors.pop(cube_id, None)
        return deleted

    @staticmethod
    def _filter_sql(filters: SearchFilters | None, alias: str = "") -> tuple[str, list[Any]]:
        if filters is None:
            return "", []
        p = alias
        clauses = [
            f"{p}status IN ({','.join('?' * len(filters.statuses))})",
            f"{p}node_kind IN ({','.join('?' * len(filters.node_kinds))})",
        ]
        params: list[Any] = [s.value for s in filters.statuses] + [k.value for k in filters.node_kinds]
        if filters.memory_types is not None:
            clauses.append(f"{p}memory_type IN ({','.join('?' * len(filters.memory_types))})")
            params += [t.value for t in filters.memory_types]
        if filters.user_id is not None:
            clauses.append(f"{p}user_id = ?")
            params.append(filters.user_id)
        if filters.time_from is not None:
            clauses.append(f"{p}event_us >= ?")
            params.append(event_us(filters.time_from))
        if filters.time_to is not None:
            clauses.append(f"{p}event_us <= ?")
            params.append(event_us(filters.time_to))
        if filters.tags_any is not None:
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each({p}tags) WHERE json_each.value IN "
                f"({','.join('?' * len(filters.tags_any))}))"
            )
            params += list(filters.tags_any)
        return " AND " + " AND ".join(clauses), params

    @_store_errors
    def list_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
    ) -> list[MemoryItem]:
        where, params = self._filter_sql(filters)
        tail = "ORDER BY rowid LIMIT ? OFFSET ?"
        return self._select(
            f"cube_id = ?{where}", [cube_id, *params, -1 if limit is None else limit, offset], with_embeddings, tail
        )

    @_store_errors
    def count(self, cube_id: str, filters: SearchFilters | None = None) -> int:
        where, params = self._filter_sql(filters)
        with self._lock:
            return int(
                self.conn.execute(
                    f"SELECT COUNT(*) FROM items WHERE cube_id = ?{where}", (cube_id, *params)
                ).fetchone()[0]
            )

    # -- edges -------------------------------------------------------------------------------------
    @_store_errors
    def add_edges(self, cube_id: str, edges: Sequence[Edge]) -> None:
        with self._tx() as cur:
            self._cube_dim(cur, cube_id)
            self._insert_edges(cur, cube_id, edges)

    @_store_errors
    def get_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
    ) -> list[Edge]:
        sql = "SELECT source_id, target_id, type, weight, created_at FROM edges WHERE cube_id = ?"
        params: list[Any] = [cube_id]
        if types is not None:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += [RelationType(t).value for t in types]
        rows: list[Any] = []
        chunks = [None] if ids is None else _chunks(list(ids), 400)
        with self._lock:
            for chunk in chunks:
                extra, extra_params = "", []
                if chunk is not None:
                    marks = ",".join("?" * len(chunk))
                    conds = {
                        "out": [f"source_id IN ({marks})"],
                        "in": [f"target_id IN ({marks})"],
                        "both": [f"source_id IN ({marks})", f"target_id IN ({marks})"],
                    }[direction]
                    extra = " AND (" + " OR ".join(conds) + ")"
                    extra_params = list(chunk) * len(conds)
                rows += self.conn.execute(sql + extra + " ORDER BY rowid", (*params, *extra_params)).fetchall()
        seen: dict[tuple[str, str, str], Edge] = {}
        for r in rows:
            seen[(r[0], r[1], r[2])] = Edge(
                source_id=r[0],
                target_id=r[1],
                type=RelationType(r[2]),
                weight=r[3],
                created_at=datetime.fromisoformat(r[4]),
            )
        return list(seen.values())

    # -- search --------------------------------------------------------------------------------------
    def _cache(self, cube_id: str) -> _VectorCache | None:
        with self._lock:
            # data_version changes when another connection (another process) commits to the file
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._vectors.clear()
                self._data_version = version
            cache = self._vectors.get(cube_id)
        if cache is None:
            with self._lock:
                row = self.conn.execute(
                    "SELECT embedding_dim FROM cubes WHERE cube_id = ? AND state = 'ready'", (cube_id,)
                ).fetchone()
                if row is None:
                    raise CubeNotFoundError(f"no cube {cube_id!r}")
                if row[0] is None:
                    return None
                items = self._select("cube_id = ? AND embedding IS NOT NULL", (cube_id,), True, "ORDER BY rowid")
                cache = _VectorCache.build(items, int(row[0]))
                self._vectors[cube_id] = cache
        return cache

    @_store_errors
    def vector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        cache = self._cache(cube_id)
        if cache is None or not cache.ids or k <= 0:
            return []
        query = check_vector(embedding, cache.matrix.shape[1], f"query embedding for cube {cube_id!r}")
        norm = float(np.linalg.norm(query))
        scores = cache.matrix @ (query / (norm or 1.0))
        mask = cache.mask(filters or SearchFilters())
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        sub = scores[idx]
        top = idx[np.argsort(-sub, kind="stable")[:k]] if idx.size > k else idx[np.argsort(-sub, kind="stable")]
        return [(cache.ids[i], float(scores[i])) for i in top]

    @_store_errors
    def text_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        terms = Counter(bm25_query_terms(query))  # a repeated query term weighs more, as in FTS5
        if not terms or k <= 0:
            return []
        where, params = self._filter_sql(filters or SearchFilters(), alias="i.")
        marks = ",".join("?" * len(terms))
        with self._lock:
            n_docs, avgdl = self.conn.execute(
                "SELECT count(*), avg(doc_len) FROM items WHERE cube_id = ?", (cube_id,)
            ).fetchone()
            dfs = self.conn.execute(
                f"SELECT term, count(*) FROM item_terms WHERE cube_id = ? AND term IN ({marks}) GROUP BY term",
                (cube_id, *terms),
            ).fetchall()
            if not dfs:
                return []
            weights = [(term, terms[term] * bm25_idf(n_docs, df)) for term, df in dfs]
            rows = self.conn.execute(
                f"WITH w(term, weight) AS (VALUES {','.join(['(?, ?)'] * len(weights))}) "
                "SELECT i.id, sum(w.weight * t.tf * (? + 1.0) / (t.tf + ? * (1.0 - ? + ? * i.doc_len / ?))) AS score "
                "FROM item_terms t JOIN w ON w.term = t.term JOIN items i ON i.rowid = t.item_rowid "
                f"WHERE t.cube_id = ?{where} GROUP BY i.rowid ORDER BY score DESC, i.rowid LIMIT ?",
                (
                    *[x for pair in weights for x in pair],
                    BM25_K1,
                    BM25_K1,
                    BM25_B,
                    BM25_B,
                    float(avgdl or 1.0),
                    cube_id,
                    *params,
                    k,
                ),
            ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    @_store_errors
    def expand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
    ) -> list[Neighbor]:
        seen = set(ids)
        frontier = list(dict.fromkeys(ids))
        reached: list[Neighbor] = []
        for level in range(1, depth + 1):
            if not frontier:
                break
            next_frontier: list[str] = []
            for edge in self.get_edges(cube_id, frontier, types, "both"):
                for origin, other in ((edge.source_id, edge.target_id), (edge.target_id, edge.source_id)):
                    if origin in frontier and other not in seen:
                        seen.add(other)
                        next_frontier.append(other)
                        reached.append(Neighbor(id=other, from_id=origin, type=edge.type, depth=level))
            frontier = next_frontier
        if filters is not None and reached:
            where, params = self._filter_sql(filters)
            ok: set[str] = set()
            with self._lock:
                for chunk in _chunks([n.id for n in reached], 500):
                    marks = ",".join("?" * len(chunk))
                    ok.update(
                        r[0]
                        for r in self.conn.execute(
                            f"SELECT id FROM items WHERE cube_id = ? AND id IN ({marks}){where}",
                            (cube_id, *chunk, *params),
                        )
                    )
            reached = [n for n in reached if n.id in ok]
        return reached

    # -- events ----------------------------------------------------------------------------------------
    @_store_errors
    def record_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> None:
        with self._tx() as cur:
            self._cube_dim(cur, cube_id)
            cur.execute(
                "INSERT INTO events (cube_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                (cube_id, kind, json.dumps(payload, default=str), utcnow().isoformat()),
            )

    @_store_errors
    def list_events(self, cube_id: str, kind: str | None = None) -> list[dict[str, object]]:
        sql = "SELECT kind, payload, created_at FROM events WHERE cube_id = ?"
        params: list[Any] = [cube_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        with self._lock:
            rows = self.conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [{"kind": r[0], "payload": json.loads(r[1]), "created_at": r[2]} for r in rows]


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements (triggers contain semicolons)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise StoreError(f"incomplete statement in migration: {buf.strip()[:80]}")
    return out


V = TypeVar("V")


def _chunks(values: list[V], size: int) -> list[list[V]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
