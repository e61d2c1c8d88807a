"""The plaintext store interface every backend implements (embedded SQLite, Neo4j, ...).

The interface is small and tenant-scoped: every read and write names the cube it acts on, and a
backend never returns or touches an item of another cube. Writes are atomic: ``add`` stores all
items and edges of one call in one transaction or nothing at all.

Sync methods are the primitives; the ``a``-prefixed async twins run them in a worker thread by
default so they never block the event loop. A backend with a native async driver (Neo4j) overrides
the async twins. Capabilities are flags on :attr:`BaseMemoryStore.capabilities`, not try/except.

Every backend must pass :mod:`memos_agents.testing`'s conformance suite.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from memos_agents.cube import CubeHeader
from memos_agents.errors import (
    EmbeddingDimensionError,
    InvalidEmbeddingError,
    MemoryNotFoundError,
    VersionConflictError,
)
from memos_agents.schema import Edge, MemoryItem, RelationType, SearchFilters

Direction = Literal["out", "in", "both"]


class StoreCapabilities(BaseModel):
    """What a backend can do natively."""

    supports_vector_search: bool = True
    supports_full_text: bool = True
    supports_graph_expansion: bool = True
    supports_transactions: bool = True
    supports_ttl: bool = False


class Neighbor(BaseModel):
    """An item reached by graph expansion: ``id`` was reached from ``from_id`` over ``type``."""

    id: str
    from_id: str
    type: RelationType
    depth: int = 1


class WriteBatch(BaseModel):
    """One atomic write: new items, replaced items (version-checked) and edges."""

    add: list[MemoryItem] = Field(default_factory=list)
    update: list[MemoryItem] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)


class WriteResult(BaseModel):
    """What :meth:`BaseMemoryStore.apply` stored."""

    added: list[str] = Field(default_factory=list)
    updated: list[MemoryItem] = Field(default_factory=list)


def event_us(value: datetime | None) -> int | None:
    """Return a UTC datetime as integer microseconds since the epoch (None stays None), for range filters."""
    return None if value is None else int(value.timestamp() * 1_000_000)


def check_embedding_dim(items: Sequence[MemoryItem], dim: int | None) -> int | None:
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


def next_version(
    item: MemoryItem,
    cube_id: str,
    stored_version: int | None,
    stored_embedding: Sequence[float] | None,
    now: datetime,
) -> MemoryItem:
    """Return the copy of ``item`` that an update stores (see :meth:`BaseMemoryStore.apply`).

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


def search_text(item: MemoryItem) -> str:
    """Return the text a store indexes for BM25: the item's text, key and tags, one per line."""
    return "\n".join([item.text, *([item.key] if item.key else []), *item.tags])


class BaseMemoryStore(ABC):
    """Abstract plaintext store. See the module docstring for the contract."""

    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities()

    # -- lifecycle -------------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Create schema, indexes and run pending migrations. Idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    # -- cubes -----------------------------------------------------------------------------
    @abstractmethod
    def create_cube(self, header: CubeHeader) -> None:
        """Register a new cube.

        Raises:
            CubeExistsError: If a cube with this id exists.

        """

    @abstractmethod
    def get_cube(self, cube_id: str) -> CubeHeader:
        """Return a cube's header.

        Raises:
            CubeNotFoundError: If there is no such cube.

        """

    @abstractmethod
    def list_cubes(self) -> list[CubeHeader]:
        """Return every cube's header, ordered by id."""

    @abstractmethod
    def update_cube(self, header: CubeHeader) -> CubeHeader:
        """Replace a cube's header (its version is incremented). Returns the stored header.

        Raises:
            CubeNotFoundError: If there is no such cube.

        """

    @abstractmethod
    def delete_cube(self, cube_id: str) -> None:
        """Delete a cube with all its items, edges and events.

        Raises:
            CubeNotFoundError: If there is no such cube.

        """

    def import_cube(self, header: CubeHeader, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> None:
        """Create a cube together with its content: all of it is stored, or none (the cube too).

        The default creates the cube, adds the content in one :meth:`apply` and deletes the cube
        again if that fails. A backend whose long transactions block other writers (SQLite)
        overrides it to write in bounded chunks that readers cannot see until the end.

        Raises:
            CubeExistsError: The cube exists.
            EmbeddingDimensionError / InvalidEmbeddingError / InvalidInputError / StoreError: Nothing was stored.

        """
        self.create_cube(header)
        try:
            self.add(header.cube_id, items, edges)
        except BaseException:
            self.delete_cube(header.cube_id)
            raise

    # -- items -----------------------------------------------------------------------------
    @abstractmethod
    def apply(self, cube_id: str, batch: WriteBatch) -> WriteResult:
        """Apply a write batch in one transaction: everything is stored, or nothing.

        New items get ``cube_id`` set. Each updated item's ``version`` must equal the stored
        version; the stored copy gets ``version + 1`` and a fresh ``updated_at`` (an update
        without an embedding keeps the stored one). Edges are added or replaced (keyed by source,
        target and type) and both ends must be in the cube after the batch.

        Raises:
            CubeNotFoundError: Unknown cube.
            EmbeddingDimensionError: An embedding's length differs from the cube's dimension.
            InvalidInputError: Duplicate or existing ids among new items, or a dangling edge.
            MemoryNotFoundError: An updated item does not exist.
            VersionConflictError: An updated item's version is not the stored one.
            StoreError: The backend failed; nothing was written.

        """

    def add(self, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> list[str]:
        """Store new items and edges atomically; returns their ids. See :meth:`apply`."""
        return self.apply(cube_id, WriteBatch(add=list(items), edges=list(edges))).added

    def update(self, cube_id: str, items: Sequence[MemoryItem]) -> list[MemoryItem]:
        """Replace existing items atomically; returns the stored items. See :meth:`apply`."""
        return self.apply(cube_id, WriteBatch(update=list(items))).updated

    @abstractmethod
    def get(self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False) -> list[MemoryItem]:
        """Return the items with these ids that exist in the cube, in the order asked."""

    @abstractmethod
    def delete(self, cube_id: str, ids: Sequence[str]) -> int:
        """Delete items and their edges. Returns how many items were deleted."""

    @abstractmethod
    def list_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
    ) -> list[MemoryItem]:
        """Return the cube's items matching ``filters`` (None: all items), in insertion order."""

    @abstractmethod
    def count(self, cube_id: str, filters: SearchFilters | None = None) -> int:
        """Return how many items of the cube match ``filters`` (None: all items)."""

    # -- edges -----------------------------------------------------------------------------
    @abstractmethod
    def add_edges(self, cube_id: str, edges: Sequence[Edge]) -> None:
        """Add (or replace, keyed by source, target and type) edges atomically."""

    @abstractmethod
    def get_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
    ) -> list[Edge]:
        """Return edges touching ``ids`` (None: all edges of the cube) of the given types."""

    # -- search ----------------------------------------------------------------------------
    @abstractmethod
    def vector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` pairs, best first, among filtered items."""

    @abstractmethod
    def text_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, BM25 score)`` pairs (higher is better) among filtered items."""

    @abstractmethod
    def expand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
    ) -> list[Neighbor]:
        """Walk edges of ``types`` (both directions) from ``ids`` up to ``depth`` hops.

        Returns:
            Items reached (not in ``ids``) that match ``filters``, each with the item it was first
            reached from, nearest first.

        """

    # -- events ----------------------------------------------------------------------------
    @abstractmethod
    def record_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> None:
        """Append an event (e.g. an extraction failure) to the cube's event log."""

    @abstractmethod
    def list_events(self, cube_id: str, kind: str | None = None) -> list[dict[str, object]]:
        """Return the cube's events, oldest first, each ``{"kind", "payload", "created_at"}``."""

    # -- async twins -------------------------------------------------------------------------
    async def asetup(self) -> None:
        """Async twin of :meth:`setup`."""
        await asyncio.to_thread(self.setup)

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        await asyncio.to_thread(self.close)

    async def acreate_cube(self, header: CubeHeader) -> None:
        """Async twin of :meth:`create_cube`."""
        await asyncio.to_thread(self.create_cube, header)

    async def aget_cube(self, cube_id: str) -> CubeHeader:
        """Async twin of :meth:`get_cube`."""
        return await asyncio.to_thread(self.get_cube, cube_id)

    async def aapply(self, cube_id: str, batch: WriteBatch) -> WriteResult:
        """Async twin of :meth:`apply`."""
        return await asyncio.to_thread(self.apply, cube_id, batch)

    async def aadd(self, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> list[str]:
        """Async twin of :meth:`add`."""
        return await asyncio.to_thread(self.add, cube_id, items, edges)

    async def aget(self, cube_id: str, ids: Sequence[str], *, with_embeddings: bool = False) -> list[MemoryItem]:
        """Async twin of :meth:`get`."""
        return await asyncio.to_thread(lambda: self.get(cube_id, ids, with_embeddings=with_embeddings))

    async def aupdate(self, cube_id: str, items: Sequence[MemoryItem]) -> list[MemoryItem]:
        """Async twin of :meth:`update`."""
        return await asyncio.to_thread(self.update, cube_id, items)

    async def adelete(self, cube_id: str, ids: Sequence[str]) -> int:
        """Async twin of :meth:`delete`."""
        return await asyncio.to_thread(self.delete, cube_id, ids)

    async def avector_search(
        self, cube_id: str, embedding: Sequence[float], k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """Async twin of :meth:`vector_search`."""
        return await asyncio.to_thread(self.vector_search, cube_id, embedding, k, filters)

    async def atext_search(
        self, cube_id: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """Async twin of :meth:`text_search`."""
        return await asyncio.to_thread(self.text_search, cube_id, query, k, filters)

    async def alist_cubes(self) -> list[CubeHeader]:
        """Async twin of :meth:`list_cubes`."""
        return await asyncio.to_thread(self.list_cubes)

    async def aupdate_cube(self, header: CubeHeader) -> CubeHeader:
        """Async twin of :meth:`update_cube`."""
        return await asyncio.to_thread(self.update_cube, header)

    async def adelete_cube(self, cube_id: str) -> None:
        """Async twin of :meth:`delete_cube`."""
        await asyncio.to_thread(self.delete_cube, cube_id)

    async def alist_items(
        self,
        cube_id: str,
        filters: SearchFilters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_embeddings: bool = False,
    ) -> list[MemoryItem]:
        """Async twin of :meth:`list_items`."""
        return await asyncio.to_thread(
            lambda: self.list_items(cube_id, filters, limit=limit, offset=offset, with_embeddings=with_embeddings)
        )

    async def acount(self, cube_id: str, filters: SearchFilters | None = None) -> int:
        """Async twin of :meth:`count`."""
        return await asyncio.to_thread(self.count, cube_id, filters)

    async def aadd_edges(self, cube_id: str, edges: Sequence[Edge]) -> None:
        """Async twin of :meth:`add_edges`."""
        await asyncio.to_thread(self.add_edges, cube_id, edges)

    async def aget_edges(
        self,
        cube_id: str,
        ids: Sequence[str] | None = None,
        types: Sequence[RelationType] | None = None,
        direction: Direction = "both",
    ) -> list[Edge]:
        """Async twin of :meth:`get_edges`."""
        return await asyncio.to_thread(self.get_edges, cube_id, ids, types, direction)

    async def aexpand(
        self,
        cube_id: str,
        ids: Sequence[str],
        types: Sequence[RelationType],
        *,
        depth: int = 1,
        filters: SearchFilters | None = None,
    ) -> list[Neighbor]:
        """Async twin of :meth:`expand`."""
        return await asyncio.to_thread(lambda: self.expand(cube_id, ids, types, depth=depth, filters=filters))

    async def arecord_event(self, cube_id: str, kind: str, payload: dict[str, object]) -> None:
        """Async twin of :meth:`record_event`."""
        await asyncio.to_thread(self.record_event, cube_id, kind, payload)

    async def alist_events(self, cube_id: str, kind: str | None = None) -> list[dict[str, object]]:
        """Async twin of :meth:`list_events`."""
        return await asyncio.to_thread(self.list_events, cube_id, kind)
