"""Testing aids: a store factory for LangGraph's store test suites, and stand-ins for the stores they build.

``make_test_store(*, index=None, ttl=None)`` returns a fresh, empty :class:`MemOSStore` on its own
embedded MemOS home (a temporary directory removed when the store is closed or collected), with
the offline preset (a hashing embedder, no LLM), so that anyone can run a store test suite
against MemOSStore.

LangGraph's own suites build their stores themselves (``InMemoryStore(index=...)``,
``SqliteStore.from_conn_string(":memory:", index=..., ttl=...)``, ``AsyncSqliteStore...``).
:class:`InMemoryStoreAdapter`, :class:`SqliteStoreAdapter` and :class:`AsyncSqliteStoreAdapter`
take those constructors' arguments and build the store with :func:`make_test_store`; the runner
``python -m langgraph_memos.upstream`` puts them in place of LangGraph's classes and runs the
suites from LangGraph's own source distributions.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langgraph.store.base import IndexConfig, TTLConfig

from langgraph_memos.store import MemOSStore
from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE

__all__ = [
    "AsyncSqliteStoreAdapter",
    "InMemoryStoreAdapter",
    "SqliteStoreAdapter",
    "make_test_store",
]

#: The user every test store acts as.
TEST_USER = "langgraph-tests"


def _fresh(index: IndexConfig | dict[str, Any] | None) -> tuple[MemOS, str, dict[str, Any] | None]:
    """Return a MemOS on a new temporary home, the home, and the index config MemOSStore takes.

    Raises:
        NotImplementedError: A ``distance_type`` other than cosine.

    """
    if index and index.get("distance_type", "cosine") not in ("cosine", None):
        raise NotImplementedError(f"MemOSStore ranks by cosine only, not {index['distance_type']!r}")
    config = None if not index else {k: v for k, v in index.items() if k not in ("distance_type", "ann_index_config")}
    home = tempfile.mkdtemp(prefix="memos-lg-")
    return MemOS.from_path(home, **PRESET_OFFLINE).setup(), home, config


def _finalize(store: MemOSStore, home: str) -> None:
    """Close the store's MemOS and remove its home when the store is collected (or at exit)."""
    mos = store.mos

    def cleanup() -> None:
        try:
            mos.close()
        finally:
            shutil.rmtree(home, ignore_errors=True)

    weakref.finalize(store, cleanup)


def make_test_store(
    *, index: IndexConfig | dict[str, Any] | None = None, ttl: TTLConfig | dict[str, Any] | None = None
) -> MemOSStore:
    """Return a fresh, empty MemOSStore for a store test suite.

    Args:
        index: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``/``text_fields``), or None.
        ttl: LangGraph's ``TTLConfig``, or None.

    Returns:
        A store on the embedded SQLite MemOS in a new temporary home (removed when the store is
        closed or garbage-collected), acting as :data:`TEST_USER`.

    Raises:
        NotImplementedError: An index config asking for what MemOSStore does not do (a
            ``distance_type`` other than cosine).

    """
    mos, home, config = _fresh(index)
    store = MemOSStore(mos, user_id=TEST_USER, index=config, ttl=ttl)
    _finalize(store, home)
    return store


class InMemoryStoreAdapter(MemOSStore):
    """Built as LangGraph's ``InMemoryStore(*, index=None)``: a fresh store from :func:`make_test_store`."""

    def __init__(self, *, index: IndexConfig | dict[str, Any] | None = None) -> None:
        mos, home, config = _fresh(index)
        super().__init__(mos, user_id=TEST_USER, index=config)
        _finalize(self, home)


class SqliteStoreAdapter(MemOSStore):
    """Built as LangGraph's ``SqliteStore.from_conn_string(conn, *, index=None, ttl=None)``.

    The connection string is ignored: every store is a fresh one from :func:`make_test_store`.
    """

    def __init__(
        self, *, index: IndexConfig | dict[str, Any] | None = None, ttl: TTLConfig | dict[str, Any] | None = None
    ) -> None:
        mos, home, config = _fresh(index)
        super().__init__(mos, user_id=TEST_USER, index=config, ttl=ttl)
        _finalize(self, home)

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        index: IndexConfig | dict[str, Any] | None = None,
        ttl: TTLConfig | dict[str, Any] | None = None,
    ) -> Iterator[SqliteStoreAdapter]:
        """Yield a fresh store (``conn_string`` is ignored)."""
        store = cls(index=index, ttl=ttl)
        try:
            yield store
        finally:
            store.stop_ttl_sweeper()

    def setup(self) -> None:
        """Create the schema (done by ``make_test_store``: MemOS ``setup`` is idempotent)."""
        self.mos.setup()


class AsyncSqliteStoreAdapter(SqliteStoreAdapter):
    """Built as LangGraph's ``AsyncSqliteStore.from_conn_string(...)`` (an async context manager)."""

    @classmethod
    @asynccontextmanager
    async def from_conn_string(  # type: ignore[override]
        cls,
        conn_string: str,
        *,
        index: IndexConfig | dict[str, Any] | None = None,
        ttl: TTLConfig | dict[str, Any] | None = None,
    ) -> AsyncIterator[AsyncSqliteStoreAdapter]:
        """Yield a fresh store (``conn_string`` is ignored)."""
        store = cls(index=index, ttl=ttl)
        try:
            yield store
        finally:
            store.stop_ttl_sweeper()

    async def setup(self) -> None:  # type: ignore[override]
        """Create the schema (MemOS ``asetup``)."""
        await self.mos.asetup()

    async def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> Future[None]:  # type: ignore[override]
        """Start the sweeper thread (see :meth:`MemOSStore.start_ttl_sweeper`)."""
        return MemOSStore.start_ttl_sweeper(self, sweep_interval_minutes)

    async def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Stop the sweeper thread."""
        return MemOSStore.stop_ttl_sweeper(self, timeout)

    async def sweep_ttl(self) -> int:  # type: ignore[override]
        """Delete expired items (async)."""
        return await self.asweep_ttl()
