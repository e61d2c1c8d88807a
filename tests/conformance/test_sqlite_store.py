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
