from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.testing.conformance import StoreConformanceTests


class TestSQLiteStore(StoreConformanceTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteMemoryStore]:
        s = SQLiteMemoryStore.from_path(tmp_path / "memos.db")
        s.setup()
        yield s
        s.close()


class TestSQLiteInMemoryStore(StoreConformanceTests):
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
