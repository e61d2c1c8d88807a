"""The embedded default plaintext store: one SQLite file per MemOS home.

* One transaction per batch of ops (:meth:`SQLiteMemoryStore.batch`): ``BEGIN IMMEDIATE`` when
  the batch writes, ``BEGIN`` (a read snapshot) when it only reads, ``COMMIT`` at the end and
  ``ROLLBACK`` on any error. WAL journal, foreign keys on. The caller's cube permission is checked
  against the cube row read inside that transaction.
* BM25 over an inverted index (``item_terms``: cube, term, item, term frequency) of each item's
  text, key and tags, tokenised and Porter-stemmed as FTS5's ``porter unicode61`` tokenizer does
  (:func:`~memos_agents.plaintext.text.bm25_terms`), with FTS5's formula and statistics (document
  count, document frequencies, average length) over the item's cube only, so one cube's content
  never changes another's ranking and every store backend ranks alike. No FTS5 table is used:
  schema version 1 had one, whose statistics span the whole file; migration 2 replaced it.
* Vectors stored as float32 blobs beside each row; exact cosine search in numpy over a per-cube
  in-memory matrix that is built lazily, extended after a committed write that only adds, and
  dropped on updates, deletes, a rolled-back batch, or when another process commits to the file
  (``PRAGMA data_version``).
* Rows are encoded and decoded by the shared :data:`~memos_agents.plaintext.stores.codec.TABLE_CODEC`,
  filters rendered from :func:`~memos_agents.plaintext.stores.filters.compile_filters`, writes
  checked by :func:`~memos_agents.plaintext.stores.base.plan_write`.
* Versioned migrations recorded in ``schema_migrations``; :meth:`SQLiteMemoryStore.setup` is
  idempotent.
* Long writes never hold the write lock for long: a cube import (``ImportCubeOp``) writes a hidden
  cube (``state = 'importing'``) in transactions of :data:`CHUNK_ROWS` rows and switches it in
  with one short transaction; a cube delete hides the cube at once (``'deleting'``) and removes its
  rows in chunks. Readers see the whole cube or none of it. The decisive step of each (the switch
  to ``'ready'``, the switch to ``'deleting'``, a new cube's row) runs in the batch's transaction,
  so a batch that mixes them with other ops is still all or nothing: an import's hidden rows are
  written before that transaction and removed again if the batch fails, a deleted cube's rows are
  removed after it commits. A cube deleted by a batch cannot be created again in the same batch
  (``CubeExistsError``: it is still being deleted). A writer
  waits up to ``busy_timeout_s`` (default 30 s) for the lock; SQLite retries within that time, so
  callers do not see "database is locked" while other writers make progress. An import or delete
  interrupted by a crash is cleaned up by the next ``setup``.
* Durability: ``synchronous="NORMAL"`` (default) survives any process crash (WAL; tested with
  kill -9) and may lose the last commits on power loss or an OS crash; ``"FULL"`` syncs the WAL on
  every commit and loses nothing acknowledged, at a cost in write latency. NORMAL is the default
  because it is SQLite's recommended setting for WAL and an agent's memory tolerates the loss of
  its last seconds on power failure better than slow writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from memos_agents.cube import CubeHeader, Permission
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    StoreError,
    UserExistsError,
    UserNotFoundError,
)
from memos_agents.infra import registry
from memos_agents.infra.audit import (
    AuditEntry,
    AuditOutcome,
    ChainHead,
    ChainVerification,
    stored_time,
    verify_chain,
)
from memos_agents.infra.users import UserRecord, check_caller, check_principals
from memos_agents.plaintext.stores import base
from memos_agents.plaintext.stores.codec import ACCESS_COLUMNS, TABLE_CODEC, access_tracking, edge_from_row
from memos_agents.plaintext.stores.filters import Predicate, compile_filters, matches
from memos_agents.plaintext.stores.vector_index import CubeVectorIndex, HNSWParams, IndexRow
from memos_agents.plaintext.text import BM25_B, BM25_K1, bm25_idf, bm25_query_terms, bm25_terms
from memos_agents.schema import (
    Edge,
    MemoryItem,
    RelationType,
    SearchFilters,
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


def _fill_statistics(cur: sqlite3.Cursor) -> None:
    """Migration 5's data step: per-cube BM25 statistics, document frequencies, the store id and change counter."""
    cur.execute(
        "UPDATE cubes SET n_docs = (SELECT count(*) FROM items i WHERE i.cube_id = cubes.cube_id), "
        "sum_doc_len = (SELECT coalesce(sum(doc_len), 0) FROM items i WHERE i.cube_id = cubes.cube_id)"
    )
    cur.execute("INSERT INTO term_stats SELECT cube_id, term, count(*) FROM item_terms GROUP BY cube_id, term")
    cur.execute("UPDATE item_terms SET doc_len = (SELECT doc_len FROM items WHERE items.rowid = item_terms.item_rowid)")
    cur.execute("INSERT INTO store_meta VALUES ('store_id', ?), ('change_seq', 0)", (uuid.uuid4().hex,))


def _fill_cube_owners(cur: sqlite3.Cursor) -> None:
    """Migration 14's data step: copy each cube's owner and whether it holds a namespace out of its header."""
    rows = cur.execute("SELECT cube_id, header FROM cubes").fetchall()
    for cube_id, header in rows:
        h = CubeHeader.model_validate_json(header)
        cur.execute(
            "UPDATE cubes SET owner_id = ?, namespaced = ? WHERE cube_id = ?",
            (h.owner_id, int(h.namespace is not None), cube_id),
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
    (
        4,
        """
        ALTER TABLE items ADD COLUMN author_id TEXT;
        ALTER TABLE items ADD COLUMN origin TEXT;
        ALTER TABLE items ADD COLUMN turns INTEGER NOT NULL DEFAULT 0;
        """,
        None,
    ),
    (
        5,
        """
        ALTER TABLE items ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX items_by_change ON items(cube_id, change_seq);
        CREATE TABLE item_tombstones (
            cube_id TEXT NOT NULL,
            item_rowid INTEGER NOT NULL,
            change_seq INTEGER NOT NULL
        );
        CREATE INDEX item_tombstones_by_change ON item_tombstones(cube_id, change_seq);
        ALTER TABLE cubes ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE cubes ADD COLUMN n_docs INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE cubes ADD COLUMN sum_doc_len INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE term_stats (
            cube_id TEXT NOT NULL,
            term TEXT NOT NULL,
            df INTEGER NOT NULL,
            PRIMARY KEY (cube_id, term)
        ) WITHOUT ROWID;
        CREATE INDEX edges_by_source_type ON edges(cube_id, source_id, type);
        CREATE TABLE store_meta (key TEXT PRIMARY KEY, value NOT NULL);
        ALTER TABLE item_terms ADD COLUMN doc_len INTEGER NOT NULL DEFAULT 0;
        """,
        _fill_statistics,
    ),
    (
        6,
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            chain TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            cube_id TEXT,
            item_ids TEXT NOT NULL,
            item_count INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT,
            request_id TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_by_chain ON audit_log(chain, seq);
        CREATE TABLE audit_heads (chain TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        """,
        None,
    ),
    (
        7,
        """
        CREATE TABLE item_versions (
            cube_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            item TEXT NOT NULL,
            edges TEXT NOT NULL,
            change TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            changed_by TEXT NOT NULL,
            request_id TEXT NOT NULL
        );
        CREATE INDEX item_versions_by_item ON item_versions(cube_id, item_id, version);
        """,
        None,
    ),
    (
        8,
        """
        ALTER TABLE items ADD COLUMN visibility TEXT NOT NULL DEFAULT 'cube';
        CREATE INDEX items_public ON items(cube_id) WHERE visibility = 'public';
        CREATE INDEX item_versions_by_time ON item_versions(cube_id, changed_at);
        CREATE INDEX items_by_updated ON items(cube_id, updated_at);
        """,
        None,
    ),
    (
        9,
        """
        CREATE TABLE users (
            user_id TEXT PRIMARY KEY,
            record TEXT NOT NULL,
            enabled INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
        None,
    ),
    (
        10,
        """
        ALTER TABLE items ADD COLUMN expires_at TEXT;
        CREATE INDEX items_expiring ON items(cube_id, status, expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX items_by_type ON items(cube_id, memory_type, status);
        """,
        None,
    ),
    (
        11,
        """
        ALTER TABLE items ADD COLUMN access_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE items ADD COLUMN touched_at TEXT;
        UPDATE items SET touched_at = created_at;
        CREATE INDEX items_idle ON items(cube_id, status, touched_at, id);
        """,
        None,
    ),
    (
        12,
        """
        CREATE TABLE registry_entries (
            name TEXT NOT NULL, version TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (name, version)
        );
        CREATE TABLE registry_subscriptions (
            subscriber TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (subscriber, name)
        );
        CREATE INDEX registry_subscriptions_by_name ON registry_subscriptions(name, subscriber);
        CREATE TABLE registry_keys (publisher TEXT PRIMARY KEY, public_key TEXT NOT NULL, recorded_at TEXT NOT NULL);
        """,
        None,
    ),
    (
        13,
        """
        ALTER TABLE items ADD COLUMN document TEXT;
        ALTER TABLE items ADD COLUMN ttl_s REAL;
        """,
        None,
    ),
    (
        14,
        """
        ALTER TABLE cubes ADD COLUMN owner_id TEXT;
        ALTER TABLE cubes ADD COLUMN namespaced INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX cubes_by_owner ON cubes(owner_id, namespaced, cube_id);
        """,
        _fill_cube_owners,
    ),
    (
        15,
        """
        CREATE INDEX items_hot ON items(cube_id, status, access_count DESC, id);
        """,
        None,
    ),
]
_EDGE_COLUMNS = ("source_id", "target_id", "type", "weight", "created_at")
_VERSION_COLUMNS = ("item_id", "version", "item", "edges", "change", "changed_at", "changed_by", "request_id")

log = logging.getLogger(__name__)

_AUDIT_COLUMNS = "seq, at, actor, action, cube_id, item_ids, item_count, outcome, reason, request_id, prev_hash, hash"

#: Read entries queued (``audit_reads="buffered"``) before they are stored in a transaction of their own.
AUDIT_BUFFER_ENTRIES = 256
#: Seconds a queued read entry waits at most (checked at the next read) before it is stored.
AUDIT_BUFFER_S = 1.0

#: Rows per transaction of a cube import or a cube delete: short enough that another writer's
#: transaction waits well under a second for the write lock between two chunks.
CHUNK_ROWS = 500
#: An import that made no progress for this long (seconds) was interrupted; ``setup`` removes it.
STALE_IMPORT_S = 600.0

#: SQLite page cache of the connection, in KiB (SQLite's default is 2,000): the interior pages of
#: a large cube's tables and the posting lists of frequent terms stay in memory between searches.
CACHE_KIB = 64 * 1024

#: Schema version this code writes.
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_READ_COLUMNS = ", ".join(TABLE_CODEC.read_columns)
_WRITE_COLUMNS = [c for c in TABLE_CODEC.columns]
_INSERT_SQL = (
    f"INSERT INTO items ({', '.join(_WRITE_COLUMNS)}, change_seq) VALUES ({', '.join('?' * (len(_WRITE_COLUMNS) + 1))})"
)
#: Columns an update writes: not the key, not access tracking (only RecordAccessOp moves it).
_UPDATE_COLUMNS = [c for c in _WRITE_COLUMNS if c not in ("id", "cube_id", *ACCESS_COLUMNS)]
_UPDATE_SQL = (
    f"UPDATE items SET {', '.join(c + ' = ?' for c in _UPDATE_COLUMNS)}, change_seq = ? WHERE cube_id = ? AND id = ?"
)
_AUDIT_READS = (base.ListAuditOp, base.VerifyAuditOp, base.ListAuditChainsOp)

#: Columns of a row the dense index needs (see :class:`IndexRow`).
_INDEX_COLUMNS = "rowid, status, memory_type, node_kind, user_id, event_us, tags, embedding, visibility, author_id"


def _index_row(r: Sequence[Any]) -> IndexRow:
    return IndexRow(
        rowid=int(r[0]),
        status=r[1],
        memory_type=r[2],
        node_kind=r[3],
        user_id=r[4],
        event_us=r[5],
        tags=() if r[6] == "[]" else tuple(json.loads(r[6])),
        embedding=None if r[7] is None else np.frombuffer(r[7], dtype=np.float32),
        visibility=r[8],
        author_id=r[9],
    )


def _sql_filter(predicates: Sequence[Predicate], alias: str = "") -> tuple[str, list[Any]]:
    """Render filter predicates as an ``AND ...`` SQL fragment over the items table (alias ``alias``)."""
    clauses: list[str] = []
    params: list[Any] = []
    for p in predicates:
        col = alias + p.field
        if p.op == "visible_to":
            if p.value is None:
                clauses.append(f"{alias}visibility = 'public'")
            else:
                clauses.append(f"({alias}visibility != 'private' OR {alias}author_id = ?)")
                params.append(p.value)
        elif p.op == "in":
            clauses.append(f"{col} IN ({','.join('?' * len(p.value))})")
            params += list(p.value)
        elif p.op == "overlaps":
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each({col}) WHERE json_each.value IN ({','.join('?' * len(p.value))}))"
            )
            params += list(p.value)
        else:
            clauses.append(f"{col} {({'eq': '=', 'ge': '>=', 'le': '<='})[p.op]} ?")
            params.append(p.value)
    return ("" if not clauses else " AND " + " AND ".join(clauses)), params


@dataclass
class _Tx:
    """One batch's transaction: its cursor, caller, change sequence number and the cubes it changed."""

    cur: sqlite3.Cursor
    ctx: base.CallContext
    #: This transaction's change sequence number (allocated by the first write).
    seq: int | None = None
    #: Cubes whose items this transaction changed (their dense indexes catch up before COMMIT).
    touched: set[str] = field(default_factory=set)
    #: cube id -> (header, dim) already read in this transaction (dropped when the batch changes them).
    cubes: dict[str, tuple[CubeHeader, int | None]] = field(default_factory=dict)
    #: Cubes a user was erased from (:class:`base.ForgetUserOp`): their dense indexes and snapshots
    #: are dropped after COMMIT, and the freed pages are overwritten.
    erased: set[str] = field(default_factory=set)
    #: ``id()`` of an :class:`base.ImportCubeOp` of the batch -> the generation of its hidden cube,
    #: written before this transaction (:meth:`SQLiteMemoryStore._stage_import`).
    staged: dict[int, str] = field(default_factory=dict)
    #: ``(cube id, generation)`` of cubes this batch deleted: their rows are removed after COMMIT.
    deleted: list[tuple[str, str]] = field(default_factory=list)

    def next_seq(self, cube_id: str) -> int:
        """Return this transaction's change sequence number (one per transaction) and mark ``cube_id`` changed."""
        if self.seq is None:
            self.seq = int(
                self.cur.execute(
                    "UPDATE store_meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value"
                ).fetchone()[0]
            )
        if cube_id not in self.touched:
            self.touched.add(cube_id)
            self.cur.execute("UPDATE cubes SET change_seq = ? WHERE cube_id = ?", (self.seq, cube_id))
        return self.seq


class SQLiteMemoryStore(base.BaseMemoryStore):
    """Embedded plaintext store on one SQLite file.

    Construct with :meth:`from_path` (or the constructor); nothing touches the disk until
    :meth:`setup`. Safe to share between threads (one connection behind a lock) and between
    processes (SQLite's file locks; each batch is one transaction).

    Args:
        path: The database file, or ``":memory:"`` for a private in-memory database.
        synchronous: ``"NORMAL"`` (default) or ``"FULL"``; see the module docstring on durability.
        busy_timeout_s: How long a write waits for another connection's write lock, in seconds
            (default 30).
        ann_threshold: Searchable items of a cube above which dense search uses an HNSW index
            instead of exact cosine (default 20,000; see
            :mod:`~memos_agents.plaintext.stores.vector_index`).
        hnsw: HNSW parameters (default :class:`HNSWParams`: M 32, ef_construction 100, ef_search 384).
        snapshot_every: Changes to an HNSW index after which its snapshot beside the database file
            is rewritten (default 20,000, or a quarter of the index when that is more, so that a
            growing cube writes its snapshot a bounded number of times; also on :meth:`close`
            when at least one in 1,000 of its items changed).
            After a crash, at most that many changes are replayed from SQLite on the next open.
        audit: Write every batch to the audit log (default True): a batch that writes appends its
            entries in its own transaction; a read-only batch's are stored as ``audit_reads``
            says; a refused or failed batch appends them after its rollback. Cube create, import
            and delete are audited in the batch's transaction like every other write.
        audit_reads: ``"buffered"`` (default): a read-only batch's entries are queued and stored
            with this store's next write batch (in its transaction, before its own entries), or
            after :data:`AUDIT_BUFFER_ENTRIES` entries or :data:`AUDIT_BUFFER_S` seconds, or on
            :meth:`close`, so a search does not pay a write transaction; a process killed before
            then loses those read entries (never a write's). ``"sync"``: stored before the read's
            results are returned.
        require_users: Only registered, enabled users may call, and grant only to such users
            (default False; see :mod:`memos_agents.infra.users`).

    Raises:
        ConfigError: An invalid ``synchronous``, ``busy_timeout_s``, ``ann_threshold`` or ``snapshot_every``.

    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 30.0,
        ann_threshold: int = 20_000,
        hnsw: HNSWParams | None = None,
        snapshot_every: int = 20_000,
        audit: bool = True,
        audit_reads: Literal["buffered", "sync"] = "buffered",
        require_users: bool = False,
    ) -> None:
        super().__init__(require_users=require_users)
        if audit_reads not in ("buffered", "sync"):
            raise ConfigError(f"audit_reads must be 'buffered' or 'sync', not {audit_reads!r}")
        #: Whether every batch is written to the audit log (see :mod:`memos_agents.infra.audit`).
        self.audit = audit
        self.audit_reads = audit_reads
        #: Read batches' audit entries not stored yet: (caller, time, records), oldest first.
        self._audit_pending: list[tuple[base.CallContext, datetime, list[base.AuditRecord]]] = []
        self._audit_pending_since: float | None = None
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if not busy_timeout_s >= 0:
            raise ConfigError("busy_timeout_s must be a non-negative number of seconds")
        if not (isinstance(ann_threshold, int) and ann_threshold >= 0):
            raise ConfigError("ann_threshold must be a non-negative integer")
        if not (isinstance(snapshot_every, int) and snapshot_every >= 1):
            raise ConfigError("snapshot_every must be a positive integer")
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout_s = float(busy_timeout_s)
        self.ann_threshold = ann_threshold
        self.hnsw = hnsw or HNSWParams()
        self.snapshot_every = snapshot_every
        #: Where HNSW snapshots live: ``<database file>.ann/`` (None for ``:memory:``).
        self.index_dir: Path | None = None if self.path == ":memory:" else Path(self.path + ".ann")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._indexes: dict[str, CubeVectorIndex] = {}
        self._store_id = ""
        self._headers: dict[str, tuple[str, CubeHeader]] = {}

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

    def setup(self) -> None:
        """Open the file (creating it), switch to WAL and apply pending migrations. Idempotent."""
        try:
            self._setup()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc
        self.capabilities = base.StoreCapabilities(
            vector_search="exact" if self.ann_threshold > 10**12 else "index", text_search="bm25", chunked_import=True
        )

    def _setup(self) -> None:
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
                conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
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
            self._store_id = str(conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()[0])
            self._purge_interrupted()

    def close(self) -> None:
        """Write the snapshots of HNSW indexes that changed, then close the connection. Idempotent.

        An index changed by fewer than one in 1,000 of its items keeps its older snapshot: the
        next open replays those few changes from SQLite, which costs far less than rewriting a
        large graph (about 1.7 GB at a million items) for a process that added one message.
        """
        with self._lock:
            if self._audit_pending and self._conn is not None:
                try:
                    self._write_audit([])
                except sqlite3.Error as exc:
                    log.error("could not store %d queued read audit entries: %s", len(self._audit_pending), exc)
            for cube_id, index in list(self._indexes.items()):
                if index.dirty and index.dirty >= len(index) // 1000:
                    self._save_snapshot(cube_id, index)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._indexes.clear()

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Cursor]:
        """One transaction (``BEGIN IMMEDIATE`` to write): commit on success, roll back on any exception."""
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    # -- batches -----------------------------------------------------------------------------------
    def batch(self, ops: Sequence[base.Op], *, ctx: base.CallContext = base.SYSTEM) -> list[Any]:
        """Run ``ops`` as ``ctx`` in one transaction; nothing of the batch is kept if one op fails.

        Cube imports write their rows hidden before that transaction (removed again if the batch
        fails); cube deletes remove their rows after it commits (see the module docstring).

        Raises:
            StoreError: SQLite failed; the transaction was rolled back.
            The typed errors of each op (see :mod:`~memos_agents.plaintext.stores.base`).

        """
        ops = list(ops)
        for op in ops:
            base.check_permission(op)
        staged: dict[int, str] = {}
        try:
            if self._audit_pending and any(isinstance(op, _AUDIT_READS) for op in ops):
                self._write_audit([])  # who reads the log sees every read this store made so far
            if self.checks_caller(ctx) and any(isinstance(op, base.ImportCubeOp) for op in ops):
                try:  # before an import's rows are staged: an unknown caller writes nothing at all
                    with self._lock, self._tx(write=False) as cur:
                        self._check_caller(_Tx(cur, ctx))
                except Exception as exc:
                    self._audit_refusal(ctx, base.audit_failure(ops, 0, exc))
                    raise
            for i, op in enumerate(ops):
                if isinstance(op, base.CreateCubeOp | base.ImportCubeOp):
                    try:
                        self.handler(op)  # validates the header before anything is written
                        base.check_new_cube(op.header, ctx)
                        self._purge_interrupted(op.header.cube_id)  # a leftover of that id, where safe
                        if isinstance(op, base.ImportCubeOp):
                            staged[id(op)] = self._stage_import(op)
                    except Exception as exc:
                        self._audit_refusal(ctx, base.audit_failure(ops, i, exc))
                        raise
            return self._run_group(ops, ctx, staged)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc
        finally:
            for op in ops:  # an import the batch did not switch in (it failed): its hidden rows go
                generation = staged.get(id(op))
                if generation is not None and isinstance(op, base.ImportCubeOp):
                    self._purge(op.header.cube_id, generation)

    def _run_group(self, ops: Sequence[base.Op], ctx: base.CallContext, staged: dict[int, str]) -> list[Any]:
        write = any(isinstance(op, base.WRITE_OPS) for op in ops)
        with self._lock:
            tx: _Tx | None = None
            out: list[Any] = []
            try:
                with self._tx(write=write) as cur:
                    tx = _Tx(cur, ctx, staged=staged)
                    if self.checks_caller(ctx):
                        self._check_caller(tx)
                    for op in ops:
                        out.append(self.handler(op)(op, tx))
                    for cube_id in tx.touched:  # before COMMIT: the indexes follow this batch's changes
                        if cube_id in self._indexes:
                            self._catch_up(tx, cube_id, self._indexes[cube_id])
                    flushed = 0
                    if write and self.audit:  # in the batch's own transaction: both commit, or neither
                        records = [base.audit_record(op, r) for op, r in zip(ops, out, strict=True)]
                        flushed = self._append_audit(cur, [(ctx, utcnow(), records)])
                del self._audit_pending[:flushed]  # committed with this batch
            except BaseException as exc:
                for cube_id in tx.touched if tx is not None else ():
                    self._indexes.pop(cube_id, None)  # may hold rolled-back changes: reloaded on next use
                if isinstance(exc, Exception):
                    self._audit_refusal(ctx, base.audit_failure(ops, len(out), exc))
                raise
            staged.clear()  # switched in: the imports' rows stay
            for cube_id, generation in tx.deleted:
                self._purge(cube_id, generation)
            if tx.erased:
                self._finish_erasure(tx.erased)
            if not write and self.audit:
                self._audit_read(ctx, [base.audit_record(op, r) for op, r in zip(ops, out, strict=True)])
            for cube_id in tx.touched:
                index = self._indexes.get(cube_id)
                if (
                    index is not None
                    and index.mode == "hnsw"
                    and index.dirty >= max(self.snapshot_every, len(index) // 4)
                ):
                    self._save_snapshot(cube_id, index)
        return out

    # -- the audit log ---------------------------------------------------------------------------------
    def _audit_read(self, ctx: base.CallContext, records: list[base.AuditRecord]) -> None:
        """Audit a read-only batch: queued (``audit_reads="buffered"``) or stored now (``"sync"``).

        A read's entries are written in a write transaction after its snapshot, so readers never
        hold the write lock while they search. Buffered, they wait for the next write batch of this
        store (whose transaction stores them first, in order), or for :data:`AUDIT_BUFFER_ENTRIES`
        queued entries or :data:`AUDIT_BUFFER_S` seconds, or for :meth:`close`; sync, the results
        are returned only once their entries are stored.
        """
        self._audit_pending.append((ctx, utcnow(), records))
        pending = sum(len(g[2]) for g in self._audit_pending)
        if self._audit_pending_since is None:
            self._audit_pending_since = time.monotonic()
        if (
            self.audit_reads == "sync"
            or pending >= AUDIT_BUFFER_ENTRIES
            or time.monotonic() - self._audit_pending_since >= AUDIT_BUFFER_S
        ):
            self._write_audit([])

    def _write_audit(self, groups: list[tuple[base.CallContext, datetime, list[base.AuditRecord]]]) -> None:
        """Store the queued read entries and ``groups`` in a write transaction of their own."""
        with self._lock:
            with self._tx() as cur:
                flushed = self._append_audit(cur, groups)
            del self._audit_pending[:flushed]

    def _append_audit(
        self, cur: sqlite3.Cursor, groups: list[tuple[base.CallContext, datetime, list[base.AuditRecord]]]
    ) -> int:
        """Seal the queued read entries, then ``groups``, onto their chains and store them with ``cur``.

        ``cur`` is in a write transaction. Returns how many queued groups it stored: the caller
        drops them from the queue once the transaction has committed.
        """
        queued = len(self._audit_pending)
        groups = [*self._audit_pending, *groups]
        self._audit_pending_since = None  # what is queued after this transaction starts a new wait
        heads: dict[str, ChainHead | None] = {}
        for chain in dict.fromkeys(r.chain for _, _, records in groups for r in records):
            row = cur.execute("SELECT seq, hash FROM audit_heads WHERE chain = ?", (chain,)).fetchone()
            heads[chain] = None if row is None else ChainHead(int(row[0]), row[1])
        sealed = [entry for ctx, at, records in groups for entry in base.seal_records(records, heads, ctx, at)]
        cur.executemany(
            f"INSERT INTO audit_log (chain, {_AUDIT_COLUMNS}) VALUES ({', '.join('?' * 13)})",
            [
                (
                    chain,
                    e.seq,
                    stored_time(e.at),
                    e.actor,
                    e.action,
                    e.cube_id,
                    json.dumps(e.item_ids),
                    e.item_count,
                    e.outcome.value,
                    e.reason,
                    e.request_id,
                    e.prev_hash,
                    e.hash,
                )
                for chain, e in sealed
            ],
        )
        cur.executemany(
            "INSERT INTO audit_heads (chain, seq, hash) VALUES (?, ?, ?) "
            "ON CONFLICT(chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            [(chain, head.seq, head.hash) for chain, head in heads.items() if head is not None],
        )
        return queued

    def _audit_refusal(self, ctx: base.CallContext, records: Sequence[base.AuditRecord]) -> None:
        """Store the entries of a refused or failed batch, in a transaction of their own (after its rollback).

        A failure to store them is logged, and the batch's own error is what the caller sees.
        """
        if not self.audit:
            return
        try:
            self._write_audit([(ctx, utcnow(), list(records))])
        except sqlite3.Error as exc:
            log.error("could not write the audit entries of a refused batch: %s", exc)

    @staticmethod
    def _audit_entry(row: sqlite3.Row | tuple[Any, ...]) -> AuditEntry:
        return AuditEntry(
            seq=row[0],
            at=datetime.fromisoformat(row[1]),
            actor=row[2],
            action=row[3],
            cube_id=row[4],
            item_ids=tuple(json.loads(row[5])),
            item_count=row[6],
            outcome=AuditOutcome(row[7]),
            reason=row[8],
            request_id=row[9],
            prev_hash=row[10],
            hash=row[11],
        )

    def _audit_floor(self, tx: _Tx, cube_id: str | None) -> datetime | None:
        header = None
        if cube_id is not None and not tx.ctx.unrestricted:
            try:
                header = self._cube(tx, cube_id, None)[0]
            except CubeNotFoundError:
                header = None
        return base.authorize_audit(header, tx.ctx, cube_id)

    @base.handles(base.ListAuditOp)
    def _list_audit(self, op: base.ListAuditOp, tx: _Tx) -> list[AuditEntry]:
        floor = self._audit_floor(tx, op.cube_id)
        where: list[str] = ["chain = ?", "seq > ?"]
        params: list[object] = [op.cube_id or base.STORE_CHAIN, op.after_seq]
        for column, value in (("actor", op.actor), ("action", op.action), ("outcome", op.outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        for bound, when in ((">=", op.since), ("<", op.until), (">=", floor)):
            if when is not None:
                where.append(f"at {bound} ?")  # fixed-width UTC strings compare as times
                params.append(stored_time(when))
        rows = tx.cur.execute(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq, id LIMIT ?",
            (*params, op.limit),
        ).fetchall()
        return [self._audit_entry(r) for r in rows]

    @base.handles(base.VerifyAuditOp)
    def _verify_audit(self, op: base.VerifyAuditOp, tx: _Tx) -> ChainVerification:
        self._audit_floor(tx, op.cube_id)
        chain = op.cube_id or base.STORE_CHAIN
        head = tx.cur.execute("SELECT seq, hash FROM audit_heads WHERE chain = ?", (chain,)).fetchone()
        # storage order (the rowid), not seq: a reordered entry must show as reordered
        rows = self.conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE chain = ? ORDER BY id", (chain,))
        return verify_chain(
            (self._audit_entry(r) for r in rows), expected_head=None if head is None else ChainHead(head[0], head[1])
        )

    @base.handles(base.ListAuditChainsOp)
    def _list_audit_chains(self, op: base.ListAuditChainsOp, tx: _Tx) -> list[str]:
        base.authorize_audit(None, tx.ctx, None)
        return [r[0] for r in tx.cur.execute("SELECT chain FROM audit_heads ORDER BY chain")]

    def _cube(
        self, tx: _Tx, cube_id: str, permission: Permission | None, *, generation: str | None = None
    ) -> tuple[CubeHeader, int | None]:
        """Read the cube row in ``tx``, check ``tx.ctx`` may do ``permission``; return ``(header, dim)``.

        With ``generation``: the hidden cube of that import instead of a ready cube (and a
        heartbeat that this import is making progress).

        Raises:
            CubeNotFoundError: No such (ready) cube.
            PermissionDeniedError: The caller may not.

        """
        known = tx.cubes.get(cube_id) if generation is None else None
        if known is not None:
            return base.authorize(known[0], tx.ctx, permission), known[1]
        row = tx.cur.execute(
            "SELECT header, embedding_dim, state, generation FROM cubes WHERE cube_id = ?", (cube_id,)
        ).fetchone()
        expected = ("ready", row[3] if row else None) if generation is None else ("importing", generation)
        if row is None or (row[2], row[3]) != expected:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        if generation is not None:
            tx.cur.execute("UPDATE cubes SET state_since = ? WHERE cube_id = ?", (utcnow().isoformat(), cube_id))
        cached = self._headers.get(cube_id)
        if cached is None or cached[0] != row[0]:
            cached = (row[0], CubeHeader.model_validate_json(row[0]))
            self._headers[cube_id] = cached
        dim = None if row[1] is None else int(row[1])
        if generation is None:
            tx.cubes[cube_id] = (cached[1], dim)
        return base.authorize(cached[1], tx.ctx, permission), dim

    def _read(self, tx: _Tx, cube_id: str) -> tuple[CubeHeader, int | None, list[Predicate]]:
        """Return ``(header, dim, read scope)`` of a read of ``tx.ctx`` on a cube (see :func:`base.read_scope`).

        Raises:
            CubeNotFoundError: No such (ready) cube.
            PermissionDeniedError: The caller has no read on the cube, which holds no public item.

        """
        header, dim = self._cube(tx, cube_id, None)
        scope = base.read_scope(header, tx.ctx)
        if (
            base.public_only(scope)
            and not tx.cur.execute(
                "SELECT 1 FROM items INDEXED BY items_public WHERE cube_id = ? AND visibility = 'public' LIMIT 1",
                (cube_id,),
            ).fetchone()
        ):
            raise base.deny_read(header, tx.ctx)
        return header, dim, scope

    def _visible_ids(self, tx: _Tx, cube_id: str, ids: Iterable[str], scope: Sequence[Predicate]) -> set[str]:
        """Return which of ``ids`` are items of the cube that pass ``scope`` (a read scope, or any predicates)."""
        where, params = _sql_filter(scope)
        out: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            out.update(
                r[0]
                for r in tx.cur.execute(
                    f"SELECT id FROM items WHERE cube_id = ? AND id IN ({marks}){where}", (cube_id, *chunk, *params)
                )
            )
        return out

    # -- cubes ---------------------------------------------------------------------------------
    @base.handles(base.CreateCubeOp)
    def _create_cube(self, op: base.CreateCubeOp, tx: _Tx) -> None:
        base.check_new_cube(op.header, tx.ctx)
        self._check_grants(tx, None, op.header)
        self._insert_cube(tx.cur, op.header, "ready")
        tx.cubes.pop(op.header.cube_id, None)

    def _insert_cube(self, cur: sqlite3.Cursor, header: CubeHeader, state: str) -> str:
        """Insert the cube row in ``state`` with ``cur``; return its generation (a fresh token naming this incarnation).

        Raises:
            CubeExistsError: A cube of that id exists, or is being imported or deleted.

        """
        generation = uuid.uuid4().hex
        row = cur.execute("SELECT state FROM cubes WHERE cube_id = ?", (header.cube_id,)).fetchone()
        if row is not None and row[0] != "ready":
            raise CubeExistsError(
                f"cube {header.cube_id!r} is being {'deleted' if row[0] == 'deleting' else 'imported'} "
                "(a delete is finished after its batch commits; an interrupted import is removed "
                f"{STALE_IMPORT_S:.0f} s after its last progress)"
            )
        if row is not None:
            raise CubeExistsError(f"cube {header.cube_id!r} already exists")
        cur.execute(
            "INSERT INTO cubes (cube_id, header, embedding_dim, state, state_since, generation, owner_id, namespaced) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                header.cube_id,
                header.model_dump_json(),
                header.storage.embedding_dim,
                state,
                utcnow().isoformat(),
                generation,
                header.owner_id,
                int(header.namespace is not None),
            ),
        )
        return generation

    def _stage_import(self, op: base.ImportCubeOp) -> str:
        """Write an import's cube hidden (``'importing'``) in short transactions; return its generation.

        The cube row and its items and edges are written in transactions of :data:`CHUNK_ROWS`
        items or edges, each checking that the hidden cube is still this import's (its
        generation); reads and ``create_cube`` see it as absent or busy. :meth:`_import_cube`
        switches it in within the batch's transaction. On a failure here its rows are removed.
        Items keep their ``author_id`` (archived provenance).
        """
        header = op.header
        with self._lock, self._tx() as cur:
            generation = self._insert_cube(cur, header, "importing")
        try:
            for chunk in _chunks(list(op.items), CHUNK_ROWS):
                self._write_hidden(header.cube_id, base.WriteBatch(add=chunk), generation)
            for links in _chunks(list(op.edges), CHUNK_ROWS * 4):
                self._write_hidden(header.cube_id, base.WriteBatch(edges=links), generation)
        except BaseException:
            self._purge(header.cube_id, generation)
            raise
        return generation

    @base.handles(base.ImportCubeOp)
    def _import_cube(self, op: base.ImportCubeOp, tx: _Tx) -> None:
        """Switch in the cube :meth:`_stage_import` wrote hidden before this batch's transaction."""
        self._check_grants(tx, None, op.header)
        switched = tx.cur.execute(
            "UPDATE cubes SET state = 'ready', state_since = ? "
            "WHERE cube_id = ? AND state = 'importing' AND generation = ?",
            (utcnow().isoformat(), op.header.cube_id, tx.staged.get(id(op))),
        ).rowcount
        if switched != 1:
            raise StoreError(f"the import of cube {op.header.cube_id!r} was removed while it ran")
        tx.cubes.pop(op.header.cube_id, None)

    def _check_grants(self, tx: _Tx, current: CubeHeader | None, header: CubeHeader) -> None:
        """Refuse a header that gives a disabled user (with :attr:`require_users`: any unregistered one) anything."""
        added = base.added_principals(current, header)
        if added:
            check_principals(added, self._users(tx, added), registered=self.require_users)

    # -- users ----------------------------------------------------------------------------------
    def _check_caller(self, tx: _Tx) -> None:
        """Refuse ``tx.ctx`` unless its principal is a registered, enabled user (``require_users``)."""
        principal = tx.ctx.principal
        check_caller(principal, self._users(tx, [principal]).get(principal))

    @staticmethod
    def _users(tx: _Tx, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        """Return the stored records of ``user_ids`` (those registered), read in ``tx``."""
        out: dict[str, UserRecord] = {}
        for chunk in _chunks(list(dict.fromkeys(user_ids)), 500):
            marks = ",".join("?" * len(chunk))
            for (record,) in tx.cur.execute(f"SELECT record FROM users WHERE user_id IN ({marks})", chunk):
                user = UserRecord.model_validate_json(record)
                out[user.user_id] = user
        return out

    @base.handles(base.CreateUserOp)
    def _create_user(self, op: base.CreateUserOp, tx: _Tx) -> UserRecord:
        user = base.new_user(op, tx.ctx)
        if self._users(tx, [user.user_id]):
            raise UserExistsError(f"user {user.user_id!r} is already registered (ids are never reused)")
        tx.cur.execute(
            "INSERT INTO users (user_id, record, enabled) VALUES (?, ?, 1)", (user.user_id, user.model_dump_json())
        )
        return user

    @base.handles(base.GetUserOp)
    def _get_user(self, op: base.GetUserOp, tx: _Tx) -> UserRecord:
        base.authorize_users(tx.ctx, op.user_id)
        user = self._users(tx, [op.user_id]).get(op.user_id)
        if user is None:
            raise UserNotFoundError(f"no user {op.user_id!r}")
        return user

    @base.handles(base.ListUsersOp)
    def _list_users(self, op: base.ListUsersOp, tx: _Tx) -> list[UserRecord]:
        base.authorize_users(tx.ctx)
        where = "" if op.include_disabled else " WHERE enabled = 1"
        return [
            UserRecord.model_validate_json(r[0])
            for r in tx.cur.execute(f"SELECT record FROM users{where} ORDER BY user_id")
        ]

    @base.handles(base.UpdateUserOp)
    def _update_user(self, op: base.UpdateUserOp, tx: _Tx) -> UserRecord:
        new = base.user_update(op, tx.ctx)
        current = self._users(tx, [new.user_id]).get(new.user_id)
        if current is None:
            raise UserNotFoundError(f"no user {new.user_id!r}")
        user = base.changed_user(current, new)
        tx.cur.execute(
            "UPDATE users SET record = ?, enabled = ? WHERE user_id = ?",
            (user.model_dump_json(), int(user.enabled), user.user_id),
        )
        return user

    # -- the MemStore registry (bodies in memos_agents.infra.registry) ------------------------------
    @base.handles(*base.REGISTRY_OPS)
    def _registry(self, op: Any, tx: _Tx) -> Any:
        return registry.drive(registry.body(op, tx.ctx, utcnow()), lambda request: self._serve(tx, request))

    def _serve(self, tx: _Tx, request: registry.Request) -> Any:
        """Answer one request of a registry op's body in ``tx``."""
        cur = tx.cur
        if isinstance(request, registry.ReadEntries):
            where, args = ("", ()) if request.name is None else (" WHERE name = ?", (request.name,))
            rows = cur.execute(f"SELECT record FROM registry_entries{where}", args)
            return [registry.RegistryEntry.model_validate_json(r[0]) for r in rows]
        if isinstance(request, registry.ReadSubscriptions):
            clauses = [(c, v) for c, v in (("subscriber", request.subscriber), ("name", request.name)) if v is not None]
            where = " AND ".join(f"{c} = ?" for c, _ in clauses)
            rows = cur.execute(
                "SELECT record FROM registry_subscriptions"
                + (f" WHERE {where}" if where else "")
                + " ORDER BY name, subscriber",
                [v for _, v in clauses],
            )
            return [registry.Subscription.model_validate_json(r[0]) for r in rows]
        if isinstance(request, registry.ReadKey):
            row = cur.execute(
                "SELECT public_key FROM registry_keys WHERE publisher = ?", (request.publisher,)
            ).fetchone()
            return None if row is None else str(row[0])
        if isinstance(request, registry.ReadHeader):
            try:
                return self._cube(tx, request.cube_id, None)[0]  # batches that write hold the write lock
            except CubeNotFoundError:
                return None
        plan = request.plan
        for entry, create in plan.entries:
            cur.execute(
                ("INSERT INTO registry_entries (record, name, version) VALUES (?, ?, ?)")
                if create
                else "UPDATE registry_entries SET record = ? WHERE name = ? AND version = ?",
                (entry.model_dump_json(), entry.name, entry.version),
            )
        for subscriber, name in plan.unsubscribe:
            cur.execute("DELETE FROM registry_subscriptions WHERE subscriber = ? AND name = ?", (subscriber, name))
        for sub in plan.subscriptions:
            cur.execute(
                "INSERT OR REPLACE INTO registry_subscriptions (subscriber, name, record) VALUES (?, ?, ?)",
                (sub.subscriber, sub.name, sub.model_dump_json(exclude={"active"})),
            )
        if plan.key is not None:
            cur.execute(
                "INSERT INTO registry_keys (publisher, public_key, recorded_at) VALUES (?, ?, ?)",
                (*plan.key, utcnow().isoformat()),
            )
        for current, new in plan.headers:
            self._store_header(tx, current, new)
        return None

    def _store_header(self, tx: _Tx, current: CubeHeader, new: CubeHeader) -> CubeHeader:
        """Write ``new`` over ``current`` at the next version (its grants checked); return what was stored."""
        self._check_grants(tx, current, new)
        stored = new.model_copy(update={"version": current.version + 1, "updated_at": utcnow()})
        tx.cur.execute(
            "UPDATE cubes SET header = ?, embedding_dim = COALESCE(embedding_dim, ?), owner_id = ? WHERE cube_id = ?",
            (stored.model_dump_json(), stored.storage.embedding_dim, stored.owner_id, stored.cube_id),
        )
        tx.cubes.pop(stored.cube_id, None)
        return stored

    def _write_hidden(self, cube_id: str, batch: base.WriteBatch, generation: str) -> None:
        with self._lock, self._tx() as cur:
            self._write(_Tx(cur, base.SYSTEM), cube_id, batch, generation=generation)

    @base.handles(base.GetCubeOp)
    def _get_cube(self, op: base.GetCubeOp, tx: _Tx) -> CubeHeader:
        return self._cube(tx, op.cube_id, Permission.READ)[0]

    @base.handles(base.ListCubesOp)
    def _list_cubes(self, op: base.ListCubesOp, tx: _Tx) -> list[CubeHeader]:
        where: list[str] = ["state = 'ready'"]
        params: list[object] = []
        if op.id_prefix:  # a range over the primary key: the cubes under the prefix only
            where.append("cube_id >= ? AND cube_id < ?")
            params += [op.id_prefix, op.id_prefix + "\U0010ffff"]
        if op.owner_id is not None:  # the (owner, namespaced) index
            where.append("owner_id = ?")
            params.append(op.owner_id)
        if op.namespaced is not None:
            where.append("namespaced = ?")
            params.append(int(op.namespaced))
        rows = tx.cur.execute(
            f"SELECT header FROM cubes WHERE {' AND '.join(where)} ORDER BY cube_id", params
        ).fetchall()
        headers = [CubeHeader.model_validate_json(r[0]) for r in rows]
        return [
            h
            for h in headers
            if (op.owner_id is None or h.owner_id == op.owner_id)
            and (op.namespaced is None or (h.namespace is not None) == op.namespaced)
            and (tx.ctx.unrestricted or h.allows(tx.ctx.principal, Permission.READ))
        ]

    @base.handles(base.UpdateCubeOp)
    def _update_cube(self, op: base.UpdateCubeOp, tx: _Tx) -> CubeHeader:
        current, _ = self._cube(tx, op.header.cube_id, None)
        base.check_header_update(current, op.header, tx.ctx)
        return self._store_header(tx, current, op.header)

    @base.handles(base.DeleteCubeOp)
    def _delete_cube(self, op: base.DeleteCubeOp, tx: _Tx) -> None:
        """Delete a cube: hidden in the batch's transaction (which checks admin), its rows removed after COMMIT."""
        self._cube(tx, op.cube_id, Permission.ADMIN)
        generation = uuid.uuid4().hex
        tx.cur.execute(
            "UPDATE cubes SET state = 'deleting', state_since = ?, generation = ? "
            "WHERE cube_id = ? AND state = 'ready'",
            (utcnow().isoformat(), generation, op.cube_id),
        )
        tx.cubes.pop(op.cube_id, None)
        tx.touched.discard(op.cube_id)  # no index to catch up: it is dropped with the rows
        tx.deleted.append((op.cube_id, generation))

    def _purge(self, cube_id: str, generation: str | None) -> None:
        """Remove a hidden cube's rows in chunks of :data:`CHUNK_ROWS`, then the cube row.

        Every chunk's transaction first checks that the cube row is still the hidden one of
        ``generation`` (None: a row from before generations existed): once another writer has
        finished this purge and created a new cube of the same id, nothing of the new cube is touched.
        """
        owned = "EXISTS (SELECT 1 FROM cubes WHERE cube_id = ? AND state != 'ready' AND generation IS ?)"
        with self._lock:
            self._indexes.pop(cube_id, None)
        # deleting items cascades to their item_terms
        for table in ("edges", "events", "items", "term_stats", "item_tombstones", "item_versions"):
            while True:
                with self._tx() as cur:
                    key = "term" if table == "term_stats" else "rowid"  # term_stats has no rowid
                    done = cur.execute(
                        f"DELETE FROM {table} WHERE {owned} AND cube_id = ? AND {key} IN "
                        f"(SELECT {key} FROM {table} WHERE cube_id = ? LIMIT ?)",
                        (cube_id, generation, cube_id, cube_id, CHUNK_ROWS),
                    ).rowcount
                if done < CHUNK_ROWS:
                    break
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM cubes WHERE cube_id = ? AND state != 'ready' AND generation IS ?", (cube_id, generation)
            )
        with self._lock:
            self._indexes.pop(cube_id, None)
        if self.index_dir is not None:  # its snapshot names the old generation: never loaded again; remove it
            for f in self.index_dir.glob(_snapshot_key(cube_id) + ".*"):
                f.unlink(missing_ok=True)

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

    # -- writes -----------------------------------------------------------------------------------
    @base.handles(base.WriteOp)
    def _write_op(self, op: base.WriteOp, tx: _Tx) -> base.WriteResult:
        return self._write(tx, op.cube_id, op.batch)

    def _write(
        self, tx: _Tx, cube_id: str, batch: base.WriteBatch, *, generation: str | None = None
    ) -> base.WriteResult:
        cur = tx.cur
        header, dim = self._cube(tx, cube_id, Permission.WRITE, generation=generation)
        probe = base.write_probe(batch)
        existing: set[str] = set()
        for chunk in _chunks(probe.ids, 500):
            marks = ",".join("?" * len(chunk))
            existing.update(
                r[0]
                for r in cur.execute(f"SELECT id FROM items WHERE cube_id = ? AND id IN ({marks})", (cube_id, *chunk))
            )
        stored: dict[str, base.StoredItem] = {}
        updated_rowids: dict[str, int] = {}
        for chunk in _chunks(probe.updated, 500):
            marks = ",".join("?" * len(chunk))
            for r in cur.execute(
                "SELECT id, version, node_kind, embedding, author_id, rowid, visibility, search_text, metadata, "
                f"access_count, touched_at, document FROM items WHERE cube_id = ? AND id IN ({marks})",
                (cube_id, *chunk),
            ):
                content = base.content_key(r[7], r[8] or "{}", r[11])
                stored[r[0]] = base.StoredItem(
                    int(r[1]),
                    r[2],
                    TABLE_CODEC.embedding(r[3]),
                    r[4],
                    r[6],
                    content,
                    *access_tracking({"access_count": r[9], "touched_at": r[10]}),
                )
                updated_rowids[r[0]] = int(r[5])
        newest: dict[str, str] = {}
        for topic in probe.topics:
            row = cur.execute(
                "SELECT target_id FROM edges INDEXED BY edges_by_source_type "
                "WHERE cube_id = ? AND source_id = ? AND type = ? ORDER BY rowid DESC LIMIT 1",
                (cube_id, topic, RelationType.PARENT.value),
            ).fetchone()
            if row is not None:
                newest[topic] = row[0]
        plan = base.plan_write(
            cube_id,
            batch,
            ctx=tx.ctx,
            dim=dim,
            existing=existing,
            stored=stored,
            newest_member=newest,
            now=utcnow(),
            redaction=header.redaction if generation is None else None,  # an import stores the archive as it is
            stamp=generation is None,
            may_publish=generation is not None
            or tx.ctx.unrestricted
            or header.allows(tx.ctx.principal, Permission.SHARE),
        )
        if plan.dim_changed:
            cur.execute("UPDATE cubes SET embedding_dim = ? WHERE cube_id = ?", (plan.dim, cube_id))
            tx.cubes.pop(cube_id, None)
        if plan.insert or plan.replace:
            seq = tx.next_seq(cube_id)
            rows = [TABLE_CODEC.encode(i) for i in plan.insert]
            cur.executemany(_INSERT_SQL, [[*(r[c] for c in _WRITE_COLUMNS), seq] for r in rows])
            rowids: dict[str, int] = {}
            for chunk in _chunks([r["id"] for r in rows], 500):
                marks = ",".join("?" * len(chunk))
                rowids.update(
                    cur.execute(f"SELECT id, rowid FROM items WHERE cube_id = ? AND id IN ({marks})", (cube_id, *chunk))
                )
            replaced = [TABLE_CODEC.encode(item) for item in plan.replace]
            old_rowids = [updated_rowids[r["id"]] for r in replaced]  # an UPDATE keeps the row's rowid
            self._keep_versions(tx, cube_id, old_rowids, "update")
            self._drop_terms(cur, cube_id, old_rowids)
            for r in replaced:
                cur.execute(
                    _UPDATE_SQL,
                    [*(r[c] for c in _UPDATE_COLUMNS), seq, cube_id, r["id"]],
                )
            self._add_terms(
                cur,
                cube_id,
                [(rowids[r["id"]], r["terms"]) for r in rows]
                + [(updated_rowids[r["id"]], r["terms"]) for r in replaced],
            )
        cur.executemany(
            "INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?, ?, ?)",
            [
                (cube_id, e.source_id, e.target_id, RelationType(e.type).value, e.weight, e.created_at.isoformat())
                for e in plan.edges
            ],
        )
        return plan.result

    def _keep_versions(self, tx: _Tx, cube_id: str, rowids: Sequence[int], change: Literal["update", "delete"]) -> None:
        """Copy the stored rows ``rowids`` into ``item_versions`` before ``change`` ends them (MemVault)."""
        now = utcnow()
        for chunk in _chunks(list(rowids), 500):
            marks = ",".join("?" * len(chunk))
            old = self._select(tx.cur, f"rowid IN ({marks})", chunk, True)
            edges: dict[str, list[Edge]] = {}
            if change == "delete":
                ids = [i.id for i in old]
                id_marks = ",".join("?" * len(ids))
                for r in tx.cur.execute(
                    "SELECT source_id, target_id, type, weight, created_at FROM edges WHERE cube_id = ? "
                    f"AND (source_id IN ({id_marks}) OR target_id IN ({id_marks})) ORDER BY rowid",
                    (cube_id, *ids, *ids),
                ):
                    edge = edge_from_row(dict(zip(_EDGE_COLUMNS, r, strict=True)))
                    for end in {edge.source_id, edge.target_id} & set(ids):
                        edges.setdefault(end, []).append(edge)
            rows = [base.version_row(i, change, tx.ctx, now, edges.get(i.id, ())) for i in old]
            tx.cur.executemany(
                f"INSERT INTO item_versions (cube_id, {', '.join(_VERSION_COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(_VERSION_COLUMNS) + 1))})",
                [(cube_id, *(r[c] for c in _VERSION_COLUMNS)) for r in rows],
            )

    @base.handles(base.HistoryOp)
    def _history(self, op: base.HistoryOp, tx: _Tx) -> list[base.ItemVersion]:
        _, _, scope = self._read(tx, op.cube_id)
        rows = tx.cur.execute(
            f"SELECT {', '.join(_VERSION_COLUMNS)} FROM item_versions WHERE cube_id = ? AND item_id = ? "
            "ORDER BY version, rowid",
            (op.cube_id, op.item_id),
        ).fetchall()
        out = [base.version_from_row(dict(zip(_VERSION_COLUMNS, r, strict=True)), op.with_embeddings) for r in rows]
        where, params = _sql_filter(scope)
        current = self._select(
            tx.cur, f"cube_id = ? AND id = ?{where}", (op.cube_id, op.item_id, *params), op.with_embeddings
        )
        return [v for v in out if matches(scope, v.item)] + [base.ItemVersion(item=i) for i in current]

    def _version_rows(
        self, tx: _Tx, cube_id: str, where: str, params: Sequence[Any], with_embeddings: bool
    ) -> list[base.ItemVersion]:
        rows = tx.cur.execute(
            f"SELECT {', '.join(_VERSION_COLUMNS)} FROM item_versions WHERE cube_id = ? AND {where} "
            "ORDER BY changed_at, rowid",
            (cube_id, *params),
        ).fetchall()
        return [base.version_from_row(dict(zip(_VERSION_COLUMNS, r, strict=True)), with_embeddings) for r in rows]

    @base.handles(base.AsOfOp)
    def _as_of(self, op: base.AsOfOp, tx: _Tx) -> base.CubeSnapshot:
        _, _, scope = self._read(tx, op.cube_id)
        at = op.as_of.astimezone(UTC).isoformat()
        if op.ids is None:  # the whole cube: its rows stored by then, the versions ended since
            current = self._select(tx.cur, "cube_id = ? AND updated_at <= ?", (op.cube_id, at), op.with_embeddings)
            versions = self._version_rows(tx, op.cube_id, "changed_at > ?", [at], op.with_embeddings)
            edges = self._edges(tx.cur, op.cube_id, None, None, "both")
        else:
            ids = list(dict.fromkeys(op.ids))
            current, versions, edges = [], [], []
            for chunk in _chunks(ids, 400):
                marks = ",".join("?" * len(chunk))
                current += self._select(
                    tx.cur, f"cube_id = ? AND id IN ({marks})", (op.cube_id, *chunk), op.with_embeddings
                )
                versions += self._version_rows(
                    tx, op.cube_id, f"item_id IN ({marks}) AND changed_at > ?", [*chunk, at], op.with_embeddings
                )
            edges = self._edges(tx.cur, op.cube_id, ids, None, "both")
        kept = [e for v in versions for e in v.edges]
        return base.snapshot_as_of(op.as_of, current, versions, [*kept, *edges], scope, op.ids)

    @base.handles(base.ChangedSinceOp)
    def _changed_since(self, op: base.ChangedSinceOp, tx: _Tx) -> list[str]:
        _, _, scope = self._read(tx, op.cube_id)
        at = op.since.astimezone(UTC).isoformat()
        versions = self._version_rows(tx, op.cube_id, "changed_at > ?", [at], False)
        current = self._select(
            tx.cur, "cube_id = ? AND updated_at > ?", (op.cube_id, at), False, "ORDER BY updated_at, rowid"
        )
        ids = [i.id for i in current if matches(scope, i)] + [v.item.id for v in versions if matches(scope, v.item)]
        return list(dict.fromkeys(ids))

    @base.handles(base.PurgeVersionsOp)
    def _purge_versions(self, op: base.PurgeVersionsOp, tx: _Tx) -> int:
        self._cube(tx, op.cube_id, Permission.ADMIN)
        return int(
            tx.cur.execute(
                "DELETE FROM item_versions WHERE cube_id = ? AND changed_at < ?",
                (op.cube_id, op.before.astimezone(UTC).isoformat()),
            ).rowcount
        )

    @base.handles(base.ForgetUserOp)
    def _forget_user(self, op: base.ForgetUserOp, tx: _Tx) -> list[str]:
        self._cube(tx, op.cube_id, Permission.ADMIN)
        cur = tx.cur
        cur.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable in the file
        tx.erased.add(op.cube_id)
        found = cur.execute(
            "SELECT rowid, id FROM items WHERE cube_id = ? AND (user_id = ? OR author_id = ?) ORDER BY rowid",
            (op.cube_id, op.user_id, op.user_id),
        ).fetchall()
        rowids, ids = [int(r[0]) for r in found], [r[1] for r in found]
        if rowids:
            self._remove(tx, op.cube_id, rowids, ids)  # keeping no version
            for chunk in _chunks(ids, 400):
                cur.execute(
                    f"DELETE FROM item_versions WHERE cube_id = ? AND item_id IN ({','.join('?' * len(chunk))})",
                    (op.cube_id, *chunk),
                )
        cur.execute(  # earlier versions of other items that were about or by the user
            "DELETE FROM item_versions WHERE cube_id = ? AND "
            "(json_extract(item, '$.user_id') = ? OR json_extract(item, '$.author_id') = ?)",
            (op.cube_id, op.user_id, op.user_id),
        )
        return ids

    def _finish_erasure(self, cubes: set[str]) -> None:
        """Finish a committed erasure: drop dense indexes and snapshots, checkpoint the WAL.

        The indexes are rebuilt from SQLite on next use, without the erased vectors; the checkpoint
        leaves no copy of the erased rows in the write-ahead log.
        """
        with self._lock:
            for cube_id in cubes:
                self._indexes.pop(cube_id, None)
            self.conn.execute("PRAGMA secure_delete = OFF")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self.index_dir is not None:
            for cube_id in cubes:
                for f in self.index_dir.glob(_snapshot_key(cube_id) + ".*"):
                    f.unlink(missing_ok=True)

    @staticmethod
    def _add_terms(cur: sqlite3.Cursor, cube_id: str, items: Sequence[tuple[int, list[str]]]) -> None:
        """Index ``(rowid, BM25 terms)`` of items: postings, document frequencies and the cube's BM25 statistics."""
        if not items:
            return
        postings = [
            (cube_id, term, rowid, tf, len(terms)) for rowid, terms in items for term, tf in Counter(terms).items()
        ]
        cur.executemany("INSERT INTO item_terms VALUES (?, ?, ?, ?, ?)", postings)
        df = Counter(p[1] for p in postings)
        cur.executemany(
            "INSERT INTO term_stats VALUES (?, ?, ?) ON CONFLICT (cube_id, term) DO UPDATE SET df = df + excluded.df",
            [(cube_id, term, n) for term, n in df.items()],
        )
        cur.execute(
            "UPDATE cubes SET n_docs = n_docs + ?, sum_doc_len = sum_doc_len + ? WHERE cube_id = ?",
            (len(items), sum(len(terms) for _, terms in items), cube_id),
        )

    @staticmethod
    def _drop_terms(cur: sqlite3.Cursor, cube_id: str, rowids: Sequence[int]) -> None:
        """Remove items (by rowid) from the BM25 index and statistics: the inverse of :meth:`_add_terms`."""
        for chunk in _chunks(list(rowids), 500):
            marks = ",".join("?" * len(chunk))
            dfs = cur.execute(
                f"SELECT term, count(*) FROM item_terms WHERE item_rowid IN ({marks}) GROUP BY term", chunk
            ).fetchall()
            cur.executemany(
                "UPDATE term_stats SET df = df - ? WHERE cube_id = ? AND term = ?", [(n, cube_id, t) for t, n in dfs]
            )
            cur.executemany(
                "DELETE FROM term_stats WHERE cube_id = ? AND term = ? AND df <= 0", [(cube_id, t) for t, _ in dfs]
            )
            n, total = cur.execute(
                f"SELECT count(*), coalesce(sum(doc_len), 0) FROM items WHERE rowid IN ({marks})", chunk
            ).fetchone()
            cur.execute(
                "UPDATE cubes SET n_docs = n_docs - ?, sum_doc_len = sum_doc_len - ? WHERE cube_id = ?",
                (n, total, cube_id),
            )
            cur.execute(f"DELETE FROM item_terms WHERE item_rowid IN ({marks})", chunk)

    @base.handles(base.DeleteOp)
    def _delete(self, op: base.DeleteOp, tx: _Tx) -> int:
        header, _ = self._cube(tx, op.cube_id, Permission.DELETE)
        where, params = _sql_filter(base.read_scope(header, tx.ctx))  # another author's private item: not found
        deleted = 0
        for chunk in _chunks(list(dict.fromkeys(op.ids)), 500):
            marks = ",".join("?" * len(chunk))
            found = tx.cur.execute(
                f"SELECT rowid, id FROM items WHERE cube_id = ? AND id IN ({marks}){where}",
                (op.cube_id, *chunk, *params),
            ).fetchall()
            rowids = [int(r[0]) for r in found]
            if rowids:
                self._keep_versions(tx, op.cube_id, rowids, "delete")
                deleted += self._remove(tx, op.cube_id, rowids, [r[1] for r in found])
        return deleted

    def _remove(self, tx: _Tx, cube_id: str, rowids: Sequence[int], ids: Sequence[str]) -> int:
        """Remove items (``rowids``, whose ids are ``ids``) with their edges, postings and dense-index entries.

        The one removal path of a delete and an erasure: BM25 statistics and postings go, a
        tombstone per row tells the dense indexes (this process's and others') to drop it.
        Returns how many rows were removed.
        """
        seq = tx.next_seq(cube_id)
        self._drop_terms(tx.cur, cube_id, rowids)
        tx.cur.executemany("INSERT INTO item_tombstones VALUES (?, ?, ?)", [(cube_id, r, seq) for r in rowids])
        removed = 0
        for chunk in _chunks(list(rowids), 500):
            removed += tx.cur.execute(
                f"DELETE FROM items WHERE rowid IN ({','.join('?' * len(chunk))})", chunk
            ).rowcount
        for part in _chunks(list(ids), 400):
            marks = ",".join("?" * len(part))
            tx.cur.execute(
                f"DELETE FROM edges WHERE cube_id = ? AND (source_id IN ({marks}) OR target_id IN ({marks}))",
                (cube_id, *part, *part),
            )
        return removed

    @base.handles(base.RecordEventOp)
    def _record_event(self, op: base.RecordEventOp, tx: _Tx) -> None:
        self._cube(tx, op.cube_id, Permission.WRITE)
        tx.cur.execute(
            "INSERT INTO events (cube_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
            (op.cube_id, op.kind, json.dumps(op.payload, default=str), utcnow().isoformat()),
        )

    @base.handles(base.ListEventsOp)
    def _list_events(self, op: base.ListEventsOp, tx: _Tx) -> list[dict[str, Any]]:
        self._cube(tx, op.cube_id, Permission.READ)
        rows = tx.cur.execute(
            "SELECT kind, payload, created_at FROM events WHERE cube_id = ? AND (? IS NULL OR kind = ?) ORDER BY seq",
            (op.cube_id, op.kind, op.kind),
        ).fetchall()
        return [{"kind": r[0], "payload": json.loads(r[1]), "created_at": r[2]} for r in rows]

    # -- reads ----------------------------------------------------------------------------------------
    def _select(
        self, cur: sqlite3.Cursor, where: str, params: Sequence[Any], with_embeddings: bool, tail: str = ""
    ) -> list[MemoryItem]:
        columns = [*TABLE_CODEC.read_columns, *(["embedding"] if with_embeddings else [])]
        rows = cur.execute(f"SELECT {', '.join(columns)} FROM items WHERE {where} {tail}", tuple(params)).fetchall()
        return [TABLE_CODEC.decode(dict(zip(columns, r, strict=True))) for r in rows]

    @base.handles(base.GetOp)
    def _get(self, op: base.GetOp, tx: _Tx) -> list[MemoryItem]:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(scope)
        found: list[MemoryItem] = []
        for chunk in _chunks(list(dict.fromkeys(op.ids)), 500):
            marks = ",".join("?" * len(chunk))
            found += self._select(
                tx.cur, f"cube_id = ? AND id IN ({marks}){where}", (op.cube_id, *chunk, *params), op.with_embeddings
            )
        return base.order_found(op.ids, found)

    @base.handles(base.ListOp)
    def _list(self, op: base.ListOp, tx: _Tx) -> list[MemoryItem]:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(compile_filters(op.filters) + scope)
        return self._select(
            tx.cur,
            f"cube_id = ?{where}",
            [op.cube_id, *params, -1 if op.limit is None else op.limit, max(op.offset, 0)],
            op.with_embeddings,
            "ORDER BY rowid LIMIT ? OFFSET ?",
        )

    @base.handles(base.ListExpiringOp)
    def _list_expiring(self, op: base.ListExpiringOp, tx: _Tx) -> list[MemoryItem]:
        _, _, scope = self._read(tx, op.cube_id)
        statuses = base.expiring_statuses(op.expired)
        where, params = _sql_filter([Predicate("status", "in", statuses), *scope])
        return self._select(
            tx.cur,
            f"cube_id = ? AND expires_at IS NOT NULL AND expires_at <= ? AND node_kind = 'memory'{where}",
            [op.cube_id, op.before.astimezone(UTC).isoformat(), *params, op.limit],
            False,
            "ORDER BY expires_at, rowid LIMIT ?",
        )

    @base.handles(base.RecordAccessOp)
    def _record_access(self, op: base.RecordAccessOp, tx: _Tx) -> int:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(scope)
        when, counts = base.access_record(op, tx.ctx)
        at = when.astimezone(UTC).isoformat()
        recorded = 0
        for item_id, n in counts.items():  # no version, no change_seq: using a memory does not change it
            tx.cur.execute(
                "UPDATE items SET access_count = access_count + ?, "
                "touched_at = CASE WHEN touched_at IS NULL OR touched_at < ? THEN ? ELSE touched_at END "
                f"WHERE cube_id = ? AND id = ? AND node_kind = 'memory'{where}",
                (n, at, at, op.cube_id, item_id, *params),
            )
            recorded += tx.cur.rowcount
        return recorded

    @base.handles(base.ListIdleOp)
    def _list_idle(self, op: base.ListIdleOp, tx: _Tx) -> list[MemoryItem]:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(scope)
        page: list[Any] = []
        if op.after is not None:
            where += " AND (touched_at > ? OR (touched_at = ? AND id > ?))"
            at = op.after[0].astimezone(UTC).isoformat()
            page = [at, at, op.after[1]]
        return self._select(
            tx.cur,
            f"cube_id = ? AND status = 'activated' AND touched_at < ? AND node_kind = 'memory'{where}",
            [op.cube_id, op.before.astimezone(UTC).isoformat(), *params, *page, op.limit],
            False,
            "ORDER BY touched_at, id LIMIT ?",
        )

    @base.handles(base.ListHotOp)
    def _list_hot(self, op: base.ListHotOp, tx: _Tx) -> list[MemoryItem]:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(scope)
        return self._select(  # the items_hot index: (cube_id, status) then access_count descending
            tx.cur,
            f"cube_id = ? AND status = 'activated' AND access_count >= ? AND node_kind = 'memory'{where}",
            [op.cube_id, op.min_uses, *params, op.limit],
            False,
            "ORDER BY access_count DESC, id LIMIT ?",
        )

    @base.handles(base.CountOp)
    def _count(self, op: base.CountOp, tx: _Tx) -> int:
        _, _, scope = self._read(tx, op.cube_id)
        where, params = _sql_filter(compile_filters(op.filters) + scope)
        return int(
            tx.cur.execute(f"SELECT COUNT(*) FROM items WHERE cube_id = ?{where}", (op.cube_id, *params)).fetchone()[0]
        )

    @base.handles(base.EdgesOp)
    def _edges_op(self, op: base.EdgesOp, tx: _Tx) -> list[Edge]:
        _, _, scope = self._read(tx, op.cube_id)
        edges = self._edges(tx.cur, op.cube_id, op.ids, op.types, op.direction)
        if scope and edges:  # an edge shows only when the caller may read both of its ends
            ok = self._visible_ids(tx, op.cube_id, (x for e in edges for x in (e.source_id, e.target_id)), scope)
            edges = [e for e in edges if e.source_id in ok and e.target_id in ok]
        return edges

    @staticmethod
    def _edges(
        cur: sqlite3.Cursor,
        cube_id: str,
        ids: Sequence[str] | None,
        types: Sequence[RelationType] | None,
        direction: str,
    ) -> list[Edge]:
        sql = "SELECT source_id, target_id, type, weight, created_at FROM edges WHERE cube_id = ?"
        params: list[Any] = [cube_id]
        if types is not None:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += [RelationType(t).value for t in types]
        rows: list[Any] = []
        chunks = [None] if ids is None else _chunks(list(ids), 400)
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
            rows += cur.execute(sql + extra + " ORDER BY rowid", (*params, *extra_params)).fetchall()
        names = ("source_id", "target_id", "type", "weight", "created_at")
        unique = {(r[0], r[1], r[2]): r for r in rows}
        return [edge_from_row(dict(zip(names, r, strict=True))) for r in unique.values()]

    # -- dense index ---------------------------------------------------------------------------------
    def _index(self, tx: _Tx, cube_id: str, dim: int) -> CubeVectorIndex:
        """Return the cube's dense index, current as of ``tx``: loaded (snapshot) or built once, then caught up.

        Catching up reads only the rows whose change sequence number is above the index's
        watermark (and the tombstones of removed ones), so another process's commit costs what it
        changed, never a reload.
        """
        seq, generation = tx.cur.execute(
            "SELECT change_seq, generation FROM cubes WHERE cube_id = ?", (cube_id,)
        ).fetchone()
        index = self._indexes.get(cube_id)
        if index is not None and (index.generation != generation or index.dim != dim or index.watermark > seq):
            index = None  # a recreated cube, or a database that went back in time
        if index is None:
            options: dict[str, Any] = {"ann_threshold": self.ann_threshold, "hnsw": self.hnsw}
            if self.index_dir is not None:
                index = CubeVectorIndex.load(
                    self.index_dir,
                    _snapshot_key(cube_id),
                    store_id=self._store_id,
                    generation=generation,
                    dim=dim,
                    max_watermark=seq,
                    **options,
                )
            if index is None:
                index = CubeVectorIndex(dim, generation, **options)
                rows = tx.cur.execute(
                    f"SELECT {_INDEX_COLUMNS} FROM items WHERE cube_id = ? AND embedding IS NOT NULL ORDER BY rowid",
                    (cube_id,),
                )
                while batch := rows.fetchmany(20_000):
                    index.apply([_index_row(r) for r in batch])
                index.watermark = seq
                index.dirty = len(index)
            self._indexes[cube_id] = index
        if index.watermark < seq:
            self._catch_up(tx, cube_id, index)
        return index

    @staticmethod
    def _catch_up(tx: _Tx, cube_id: str, index: CubeVectorIndex) -> None:
        """Apply the rows changed since ``index.watermark`` (read in ``tx``) to ``index``."""
        seq = tx.seq if cube_id in tx.touched and tx.seq is not None else None
        if seq is None:
            seq = int(tx.cur.execute("SELECT change_seq FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone()[0])
        if seq <= index.watermark:
            return
        upserts = [
            _index_row(r)
            for r in tx.cur.execute(
                f"SELECT {_INDEX_COLUMNS} FROM items WHERE cube_id = ? AND change_seq > ?", (cube_id, index.watermark)
            )
        ]
        present = {row.rowid for row in upserts}
        removed = [
            int(r[0])
            for r in tx.cur.execute(
                "SELECT item_rowid FROM item_tombstones WHERE cube_id = ? AND change_seq > ?",
                (cube_id, index.watermark),
            )
            if int(r[0]) not in present  # a reused rowid: its current row wins
        ]
        index.apply(upserts, removed, watermark=seq)

    def _save_snapshot(self, cube_id: str, index: CubeVectorIndex) -> None:
        """Write an HNSW index's snapshot; a failure only leaves the previous snapshot (it is rebuilt or caught up)."""
        if self.index_dir is None or index.mode != "hnsw":
            return
        try:
            index.save(self.index_dir, _snapshot_key(cube_id), self._store_id)
        except OSError:
            pass  # SQLite stays the source of truth; the next open replays more changes

    # -- search --------------------------------------------------------------------------------------
    @base.handles(base.VectorSearchOp)
    def _vector_search(self, op: base.VectorSearchOp, tx: _Tx) -> list[tuple[str, float]]:
        _, dim, scope = self._read(tx, op.cube_id)
        if dim is None or op.k <= 0:
            return []
        query = base.check_vector(op.embedding, dim, f"query embedding for cube {op.cube_id!r}")
        index = self._index(tx, op.cube_id, dim)
        hits = index.search(query, op.k, compile_filters(op.filters or SearchFilters()) + scope)
        return self._with_ids(tx.cur, hits)

    @staticmethod
    def _with_ids(cur: sqlite3.Cursor, hits: Sequence[tuple[int, float]]) -> list[tuple[str, float]]:
        """Replace rowids by item ids, keeping the order."""
        if not hits:
            return []
        marks = ",".join("?" * len(hits))
        ids = dict(cur.execute(f"SELECT rowid, id FROM items WHERE rowid IN ({marks})", [r for r, _ in hits]))
        return [(ids[r], score) for r, score in hits if r in ids]

    @base.handles(base.TextSearchOp)
    def _text_search(self, op: base.TextSearchOp, tx: _Tx) -> list[tuple[str, float]]:
        """BM25 (FTS5's formula, the cube's statistics) with MaxScore top-k pruning.

        Terms are taken from the highest possible contribution (the rarest) down, each one's
        postings read from the inverted index alone (term frequency and document length are kept
        in it). After each, if ``k`` candidates that pass the filters already score more than any
        item could gain from the terms left, the remaining terms are looked up only for the
        candidates that can still reach the top ``k`` (MaxScore: Turtle & Flood, "Query evaluation:
        strategies and optimizations", IP&M 1995). Filters are checked only for the candidates that
        matter, best first. The result is the exhaustive ranking's (scores summed in the same term
        order, ties by rowid); only the postings of the rarest terms are read in full.

        Scores are kept in numpy arrays (sorted rowids, their partial scores) and a posting list
        is read as three ``group_concat`` strings in one row (SQLite builds them without a Python
        object per posting), which costs about half of a row-by-row read. When the cube's dense
        index is loaded, the filters of the items it holds are read from its cached mask (current
        as of this transaction) instead of SQL.
        """
        _, dim, scope = self._read(tx, op.cube_id)
        terms = Counter(bm25_query_terms(op.query))  # a repeated query term weighs more, as in FTS5
        if not terms or op.k <= 0:
            return []
        cur = tx.cur
        n_docs, sum_len = cur.execute(
            "SELECT n_docs, sum_doc_len FROM cubes WHERE cube_id = ?", (op.cube_id,)
        ).fetchone()
        avgdl = float((sum_len / n_docs if n_docs else 0.0) or 1.0)
        marks = ",".join("?" * len(terms))
        dfs = dict(
            cur.execute(
                f"SELECT term, df FROM term_stats WHERE cube_id = ? AND term IN ({marks})", (op.cube_id, *terms)
            ).fetchall()
        )
        if not dfs:
            return []
        weights = {term: terms[term] * bm25_idf(n_docs, df) for term, df in dfs.items()}
        order = sorted(weights, key=lambda t: (-weights[t], t))
        bound = [weights[t] * (BM25_K1 + 1.0) for t in order]  # a term's largest possible contribution
        predicates = compile_filters(op.filters or SearchFilters()) + scope
        passes = _FilterCheck(cur, predicates)
        if dim is not None and op.cube_id in self._indexes:
            index = self._index(tx, op.cube_id, dim)  # caught up to this transaction
            passes.indexed = (index.pos, index.mask(predicates)[0])
        ids = np.zeros(0, dtype=np.int64)  # rowids seen so far, ascending
        scores = np.zeros(0, dtype=np.float64)  # their scores over the terms read so far

        def gains(term: str, tf: np.ndarray, dl: np.ndarray) -> np.ndarray:
            return weights[term] * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * dl / avgdl))

        pruned = False
        theta = 0.0
        for n, term in enumerate(order):
            rest = sum(bound[n + 1 :])
            if not pruned or dfs[term] <= 4 * len(ids):  # the whole list (cheaper than probes when short)
                found, tf, dl = _postings(cur, op.cube_id, term)
                if pruned:  # only the candidates still count
                    at = np.minimum(np.searchsorted(ids, found), len(ids) - 1)
                    hit = ids[at] == found
                    found, tf, dl = found[hit], tf[hit], dl[hit]
            else:
                parts = [_postings(cur, op.cube_id, term, chunk) for chunk in _chunks(ids.tolist(), 500)]
                found, tf, dl = (np.concatenate([p[i] for p in parts]) for i in range(3))
            ids, scores = _accumulate(ids, scores, found, gains(term, tf, dl))
            if pruned:  # drop the candidates that can no longer reach the top k
                keep = scores + rest >= theta
                ids, scores = ids[keep], scores[keep]
            elif n + 1 < len(order):
                best = passes.best(ids, scores, op.k)
                if len(best) == op.k:
                    kth = float(scores[np.searchsorted(ids, best[-1])])
                    if rest < kth:  # nothing outside can reach the top k
                        theta, pruned = kth, True
                        keep = scores + rest >= theta
                        ids, scores = ids[keep], scores[keep]
        top = passes.best(ids, scores, op.k)
        return self._with_ids(cur, [(r, float(scores[np.searchsorted(ids, r)])) for r in top])

    @base.handles(base.ExpandOp)
    def _expand(self, op: base.ExpandOp, tx: _Tx) -> list[base.Neighbor]:
        _, _, scope = self._read(tx, op.cube_id)
        types = [RelationType(t) for t in op.types]
        if not types:
            base.check_depth(op.depth)
            return []
        reached = base.breadth_first(
            op.ids,
            op.depth,
            lambda ids: self._edges(tx.cur, op.cube_id, ids, types, "both"),
            (lambda ids: self._visible_ids(tx, op.cube_id, ids, scope)) if scope else None,
        )
        if op.filters is not None and reached:
            ok = self._visible_ids(tx, op.cube_id, (n.id for n in reached), compile_filters(op.filters))
            reached = [n for n in reached if n.id in ok]
        return reached


class _FilterCheck:
    """Which rowids pass search filters, asked only for the candidates that matter (answers cached)."""

    def __init__(self, cur: sqlite3.Cursor, predicates: Sequence[Predicate]) -> None:
        self.cur = cur
        self.where, self.params = _sql_filter(predicates)
        self.known: dict[int, bool] = {}
        #: The dense index's rowid -> position map and its mask of these filters (None: SQL only).
        self.indexed: tuple[dict[int, int], np.ndarray] | None = None

    def _ask(self, rowids: Sequence[int]) -> None:
        ask = [r for r in rowids if r not in self.known]
        if self.indexed is not None and ask:
            pos, mask = self.indexed
            at = [pos.get(r) for r in ask]
            self.known.update((r, bool(mask[p])) for r, p in zip(ask, at, strict=True) if p is not None)
            ask = [r for r, p in zip(ask, at, strict=True) if p is None]  # not in the index: no embedding
        for chunk in _chunks(ask, 500):
            ok = {
                int(r[0])
                for r in self.cur.execute(
                    f"SELECT rowid FROM items WHERE rowid IN ({','.join('?' * len(chunk))}){self.where}",
                    (*chunk, *self.params),
                )
            }
            self.known.update((r, r in ok) for r in chunk)

    def best(self, rowids: np.ndarray, values: np.ndarray, k: int) -> list[int]:
        """Return the ``k`` best passing rowids by (score desc, rowid), checking the filters best first.

        Costs a partial selection over the scores (numpy), not a sort of all of them.
        """
        if not len(rowids):
            return []
        out: list[int] = []
        want = max(2 * k, 64)
        while True:
            if want < len(values):
                kth = np.partition(-values, want - 1)[want - 1]
                sel = np.flatnonzero(-values <= kth)  # ties at the cut come along
            else:
                sel = np.arange(len(values))
            ranked = rowids[sel][np.lexsort((rowids[sel], -values[sel]))].tolist()
            self._ask(ranked)
            out = [r for r in ranked if self.known[r]]
            if len(out) >= k or len(sel) == len(values):
                return out[:k]
            want *= 4


def _postings(
    cur: sqlite3.Cursor, cube_id: str, term: str, rowids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return a term's postings (rowids ascending, term frequencies, document lengths) in the cube.

    With ``rowids``: only those items' postings. Read as one row of three ``group_concat`` strings
    (aligned: every aggregate steps over the same rows), parsed by numpy.
    """
    sql = (
        "SELECT group_concat(item_rowid), group_concat(tf), group_concat(doc_len) FROM item_terms "
        "WHERE cube_id = ? AND term = ?"
    )
    params: list[Any] = [cube_id, term]
    if rowids is not None:
        sql += f" AND item_rowid IN ({','.join('?' * len(rowids))})"
        params += list(rowids)
    row = cur.execute(sql, params).fetchone()
    if row is None or row[0] is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64)
    found = np.fromstring(row[0], dtype=np.int64, sep=",")
    tf = np.fromstring(row[1], dtype=np.float64, sep=",")
    dl = np.fromstring(row[2], dtype=np.float64, sep=",")
    if len(found) > 1 and not bool(np.all(found[1:] > found[:-1])):
        order = np.argsort(found, kind="stable")
        found, tf, dl = found[order], tf[order], dl[order]
    return found, tf, dl


def _accumulate(
    ids: np.ndarray, scores: np.ndarray, found: np.ndarray, gains: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``gains`` of rowids ``found`` (ascending, distinct) to the running ``scores`` of ``ids`` (ascending).

    Each score becomes ``old + gain`` (0 + gain for a new rowid): the same floating-point sums, in
    the same term order, as adding term by term in a dict.
    """
    if not len(found):
        return ids, scores
    if not len(ids):
        return found, 0.0 + gains
    every = np.concatenate([ids, found])
    values = np.concatenate([scores, gains])
    order = np.argsort(every, kind="stable")  # an existing score comes before the new gain of its rowid
    every, values = every[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], every[1:] != every[:-1]]))
    return every[starts], np.add.reduceat(values, starts)


def _snapshot_key(cube_id: str) -> str:
    """File-name stem of a cube's HNSW snapshot (a digest: cube ids may hold characters file names should not)."""
    return "cube-" + hashlib.sha256(cube_id.encode()).hexdigest()[:32]


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
