from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.testing.conformance import StoreConformanceTests


def tamper_sqlite_audit(store: SQLiteMemoryStore, chain: str, how: str) -> None:
    """Edit the audit rows of ``chain`` in the file, past the append-only triggers (as an attacker would)."""
    conn = store.conn
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    ids = [r[0] for r in conn.execute("SELECT id FROM audit_log WHERE chain = ? ORDER BY id", (chain,))]
    columns = (
        "chain, seq, at, actor, action, cube_id, item_ids, item_count, outcome, reason, request_id, prev_hash, hash"
    )
    if how == "edit":
        conn.execute("UPDATE audit_log SET actor = 'someone-else' WHERE id = ?", (ids[1],))
    elif how == "delete":
        conn.execute("DELETE FROM audit_log WHERE id = ?", (ids[1],))
    elif how == "insert":  # a forged entry appended at the end of the table, numbered after entry 2
        conn.execute(
            f"INSERT INTO audit_log ({columns}) SELECT chain, seq + 1, at, 'forger', action, cube_id, item_ids, "
            "item_count, outcome, reason, request_id, hash, hash FROM audit_log WHERE id = ?",
            (ids[1],),
        )
    elif how == "reorder":  # rows 2 and 3 exchange their contents: storage order changes
        rows = {i: conn.execute(f"SELECT {columns} FROM audit_log WHERE id = ?", (i,)).fetchone() for i in ids[1:3]}
        sets = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
        conn.execute(f"UPDATE audit_log SET {sets} WHERE id = ?", (*rows[ids[2]], ids[1]))
        conn.execute(f"UPDATE audit_log SET {sets} WHERE id = ?", (*rows[ids[1]], ids[2]))
    elif how == "truncate":
        conn.execute("DELETE FROM audit_log WHERE id = ?", (ids[-1],))
    else:
        raise ValueError(how)


class TestSQLiteStore(StoreConformanceTests):
    def tamper_audit(self, store: SQLiteMemoryStore, chain: str, how: str) -> None:  # type: ignore[override]
        tamper_sqlite_audit(store, chain, how)

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteMemoryStore]:
        s = SQLiteMemoryStore.from_path(tmp_path / "memos.db")
        s.setup()
        yield s
        s.close()


class TestSQLiteInMemoryStore(StoreConformanceTests):
    def tamper_audit(self, store: SQLiteMemoryStore, chain: str, how: str) -> None:  # type: ignore[override]
        tamper_sqlite_audit(store, chain, how)

    @pytest.fixture
    def store(self) -> Iterator[SQLiteMemoryStore]:
        s = SQLiteMemoryStore(":memory:")
        s.setup()
        yield s
        s.close()


def test_vector_cache_sees_other_connections(tmp_path: Path) -> None:
    from memos_agents.cube import CubeHeader, StorageProfile
    from memos_agents.testing.conformance import item, vec

    a, b = SQLiteMemoryStore(tmp_path / "m.db"), SQLiteMemoryStore(tmp_path / "m.db")
    a.setup()
    b.setup()
    a.create_cube(CubeHeader(cube_id="c", owner_id="u", storage=StorageProfile(embedding_dim=8)))
    first = item("first", 1)
    a.add("c", [first])
    assert [h for h, _ in a.vector_search("c", vec(1), 5)] == [first.id]  # cache built in a
    second = item("second", 1)
    b.add("c", [second])  # another connection, as another process would
    assert {h for h, _ in a.vector_search("c", vec(1), 5)} == {first.id, second.id}
    a.close()
    b.close()


def test_schema_1_database_is_migrated_with_its_terms(tmp_path: Path) -> None:
    """A file written by schema version 1 (FTS5 index) gets the per-cube BM25 index of version 2."""
    import sqlite3

    from memos_agents.plaintext.stores.sqlite import _MIGRATIONS, SCHEMA_VERSION, _statements

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    for statement in _statements(_MIGRATIONS[0][1]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, '2026-01-01')")
    conn.execute("INSERT INTO cubes VALUES ('c', ?, NULL)", ('{"cube_id": "c", "owner_id": "u"}',))
    conn.execute(
        "INSERT INTO items (cube_id, id, text, search_text, memory_type, node_kind, tags, sources, created_at, "
        "updated_at, confidence, status, version, metadata) VALUES ('c', 'a', 'Melanie painted a sunrise', "
        "'Melanie painted a sunrise', 'LongTermMemory', 'memory', '[]', '{}', '2026-01-01T00:00:00+00:00', "
        "'2026-01-01T00:00:00+00:00', 1.0, 'activated', 1, '{}')"
    )
    conn.commit()
    conn.close()
    store = SQLiteMemoryStore(path)
    store.setup()
    assert [h for h, _ in store.text_search("c", "When did Melanie paint?", 5)] == ["a"]
    versions = [r[0] for r in store.conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert store.conn.execute("SELECT doc_len FROM items").fetchone()[0] == 4
    from memos_agents.plaintext.stores.base import ListCubesOp

    (owned,) = store.batch([ListCubesOp(owner_id="u", namespaced=False)])  # migration 14 filled the owner
    assert [h.cube_id for h in owned] == ["c"]
    from memos_agents.plaintext.stores.base import ListHotOp

    store.record_access("c", {"a": 2}, store.get("c", ["a"])[0].created_at)
    (hot,) = store.batch([ListHotOp("c", min_uses=2)])  # migration 15: the items_hot index
    assert [(i.id, i.access_count) for i in hot] == [("a", 2)]
    plan = store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM items WHERE cube_id = 'c' AND status = 'activated' AND access_count >= 1 "
        "AND node_kind = 'memory' ORDER BY access_count DESC, id LIMIT 10"
    ).fetchall()
    assert "items_hot" in str(plan) and "TEMP B-TREE" not in str(plan)
    store.delete("c", ["a"])
    assert store.conn.execute("SELECT count(*) FROM item_terms").fetchone()[0] == 0  # cascaded
    store.close()


def test_read_entries_are_queued_then_stored_in_order(tmp_path: Path) -> None:
    from memos_agents.cube import CubeHeader, StorageProfile
    from memos_agents.plaintext.stores.base import CallContext
    from memos_agents.testing.conformance import item

    u = CallContext.of("u")
    a, other = SQLiteMemoryStore(tmp_path / "m.db"), SQLiteMemoryStore(tmp_path / "m.db")
    a.setup()
    other.setup()
    a.create_cube(CubeHeader(cube_id="c", owner_id="u", storage=StorageProfile(embedding_dim=8)))

    def seen() -> list[str]:  # u's entries as another process sees them
        return [e.action for e in other.list_audit("c", actor="u")]

    a.count("c", ctx=u)
    assert seen() == []  # queued in a's process
    assert [e.action for e in a.list_audit("c", actor="u")] == ["count"]  # a reader of the log sees it
    a.count("c", ctx=u)
    a.add("c", [item("x", 1)], ctx=u)  # a write stores the queue first, in its transaction
    assert seen() == ["count", "count", "write"]
    a.get("c", ["x"], ctx=u)
    a.close()  # close stores what is still queued
    assert seen()[-1] == "get"
    strict = SQLiteMemoryStore(tmp_path / "m.db", audit_reads="sync")
    strict.setup()
    strict.count("c", ctx=u)
    assert seen()[-1] == "count"  # stored before the result came back
    assert other.verify_audit("c").ok
    strict.close()
    other.close()
