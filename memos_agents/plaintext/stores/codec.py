"""The one codec between :class:`~memos_agents.schema.MemoryItem` and stored rows, for every backend.

A stored item is a flat map of named columns (SQLite) or node properties (Neo4j). Both backends
encode and decode through :class:`ItemCodec`; they differ only in how lists and vectors are kept:

* ``native_lists=False`` (SQLite): ``tags`` and ``sources`` as JSON text, the embedding as a
  float32 blob.
* ``native_lists=True`` (Neo4j, which refuses nested maps): ``tags`` as a list, ``sources`` as
  three lists (``source_message_ids``, ``source_session_ids``, ``source_speakers``), the embedding
  as a list of floats, plus ``terms`` (the item's BM25 terms, for BM25 computed in Cypher).

Besides the item's fields, every row carries what search needs: ``search_text`` (text, key and
tags), ``doc_len`` (BM25 document length) and ``event_us`` (event time in microseconds).

Adding a field to ``MemoryItem`` means one entry in :attr:`ItemCodec.columns`, one line in
``encode`` and ``decode``, and a migration adding the column in SQLite.

Access tracking (MemLifecycle) keeps two columns no item write changes: ``access_count`` and
``touched_at`` (the last access, else the creation time: what the decay's idle scan is indexed
on). An insert writes them from the item; an update leaves the stored ones (:data:`ACCESS_COLUMNS`);
only :class:`~memos_agents.plaintext.stores.base.RecordAccessOp` moves them.

``document`` (an item's JSON object, :mod:`memos_agents.plaintext.documents`) is kept as JSON text
by every backend (Neo4j refuses nested maps); it is not indexed.

Rows written before ``origin``/``turns`` existed are read through :func:`legacy_origin`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from memos_agents.plaintext.stores.filters import event_us
from memos_agents.plaintext.text import bm25_terms
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryOrigin,
    MemoryType,
    NodeKind,
    RelationType,
    Sources,
    Visibility,
    as_utc,
)

#: Columns every backend keeps, in order (the embedding is listed apart: it is read only when asked for).
BASE_COLUMNS = (
    "id",
    "cube_id",
    "text",
    "search_text",
    "doc_len",
    "memory_type",
    "node_kind",
    "key",
    "tags",
    "user_id",
    "author_id",
    "visibility",
    "origin",
    "turns",
    "event_time",
    "event_us",
    "created_at",
    "updated_at",
    "confidence",
    "status",
    "expires_at",
    "version",
    "metadata",
    "document",
    "ttl_s",
    "access_count",
    "touched_at",
)
#: Columns of access tracking: kept by the store across updates (see :class:`ItemCodec`).
ACCESS_COLUMNS = ("access_count", "touched_at")
_SOURCE_LISTS = ("source_message_ids", "source_session_ids", "source_speakers")


def search_text(item: MemoryItem) -> str:
    """Return the text a store indexes for BM25: the item's text, key and tags, one per line."""
    return "\n".join([item.text, *([item.key] if item.key else []), *item.tags])


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else as_utc(datetime.fromisoformat(value))


def legacy_origin(node_kind: NodeKind, metadata: dict[str, Any]) -> tuple[MemoryOrigin, int, dict[str, Any]]:
    """Read ``(origin, turns, metadata)`` of a row stored before those fields existed.

    Older versions kept them in metadata (``turns`` and ``lines_match_sources`` on fast-mode
    windows, ``extracted_by`` on LLM facts, ``merged_from`` on merged items); the control keys are
    removed from the returned metadata (``extracted_by`` stays: it names the model).
    """
    md = dict(metadata)
    if node_kind == NodeKind.TOPIC:
        return MemoryOrigin.STRUCTURE, 0, md
    if "lines_match_sources" in md and "turns" in md:
        md.pop("lines_match_sources")
        turns = md.pop("turns")
        return MemoryOrigin.TURNS, int(turns) if isinstance(turns, int) else 0, md
    if "extracted_by" in md:
        return MemoryOrigin.EXTRACTED, 0, md
    if md.get("merged_from") == 2:
        md.pop("merged_from")
        return MemoryOrigin.MERGED, 0, md
    return MemoryOrigin.DIRECT, 0, md


class ItemCodec:
    """Encode items into flat rows and decode them back. See the module docstring.

    Args:
        native_lists: Keep lists and vectors natively (graph stores) rather than as JSON and blobs.

    """

    def __init__(self, *, native_lists: bool) -> None:
        self.native_lists = native_lists
        sources = _SOURCE_LISTS if native_lists else ("sources",)
        extra = ("terms",) if native_lists else ()
        #: Columns written (the embedding last).
        self.columns: tuple[str, ...] = (*BASE_COLUMNS, *sources, *extra, "embedding")
        #: Columns read back (no search-only columns, no embedding).
        self.read_columns: tuple[str, ...] = tuple(
            c for c in (*BASE_COLUMNS, *sources) if c not in ("search_text", "doc_len", "event_us")
        )

    def encode(self, item: MemoryItem) -> dict[str, Any]:
        """Return the row of ``item`` (with ``cube_id`` set): every column of :attr:`columns`, and ``terms``."""
        indexed = search_text(item)
        terms = bm25_terms(indexed)
        row: dict[str, Any] = {
            "id": item.id,
            "cube_id": item.cube_id,
            "text": item.text,
            "search_text": indexed,
            "doc_len": len(terms),
            "memory_type": item.memory_type.value,
            "node_kind": item.node_kind.value,
            "key": item.key,
            "tags": list(item.tags) if self.native_lists else json.dumps(item.tags),
            "user_id": item.user_id,
            "author_id": item.author_id,
            "visibility": item.visibility.value,
            "origin": item.origin.value,
            "turns": item.turns,
            "event_time": _iso(item.event_time),
            "event_us": event_us(item.event_time),
            "created_at": _iso(item.created_at),
            "updated_at": _iso(item.updated_at),
            "confidence": float(item.confidence),
            "status": item.status.value,
            "expires_at": _iso(item.expires_at),
            "version": item.version,
            "metadata": json.dumps(item.metadata),
            "document": None if item.document is None else json.dumps(item.document, ensure_ascii=False),
            "ttl_s": item.ttl_s,
            "access_count": item.access_count,
            "touched_at": _iso(item.last_accessed_at or item.created_at),
            "terms": terms,  # the BM25 terms: a column of graph stores, the inverted index of table stores
        }
        if self.native_lists:
            row["source_message_ids"] = list(item.sources.message_ids)
            row["source_session_ids"] = list(item.sources.session_ids)
            row["source_speakers"] = list(item.sources.speakers)
            row["embedding"] = None if item.embedding is None else [float(x) for x in item.embedding]
        else:
            row["sources"] = item.sources.model_dump_json()
            row["embedding"] = (
                None if item.embedding is None else np.asarray(item.embedding, dtype=np.float32).tobytes()
            )
        return row

    def embedding(self, value: Any) -> list[float] | None:
        """Decode a stored embedding (blob or list); None stays None."""
        if value is None:
            return None
        if self.native_lists:
            return [float(x) for x in value]
        return np.frombuffer(value, dtype=np.float32).tolist()  # type: ignore[no-any-return]

    def decode(self, row: Mapping[str, Any]) -> MemoryItem:
        """Rebuild an item from a row holding :attr:`read_columns` (and ``embedding`` when read)."""
        if self.native_lists:
            sources = Sources.model_construct(
                message_ids=list(row.get("source_message_ids") or []),
                session_ids=list(row.get("source_session_ids") or []),
                speakers=list(row.get("source_speakers") or []),
            )
            tags = list(row.get("tags") or [])
        else:
            sources = Sources.model_construct(**json.loads(row["sources"]))
            tags = json.loads(row["tags"])
        node_kind = NodeKind(row["node_kind"])
        metadata = json.loads(row.get("metadata") or "{}")
        accesses, last_access = access_tracking(row)
        if row.get("origin") is None:
            origin, turns, metadata = legacy_origin(node_kind, metadata)
        else:
            origin, turns = MemoryOrigin(row["origin"]), int(row.get("turns") or 0)
        return MemoryItem.model_construct(
            id=row["id"],
            cube_id=row["cube_id"],
            text=row["text"],
            memory_type=MemoryType(row["memory_type"]),
            node_kind=node_kind,
            key=row.get("key"),
            tags=tags,
            sources=sources,
            user_id=row.get("user_id"),
            author_id=row.get("author_id"),
            visibility=Visibility(row.get("visibility") or Visibility.CUBE.value),
            origin=origin,
            turns=turns,
            event_time=_dt(row.get("event_time")),
            created_at=_dt(row["created_at"]),
            updated_at=_dt(row["updated_at"]),
            confidence=float(row["confidence"]),
            status=LifecycleState(row["status"]),
            expires_at=_dt(row.get("expires_at")),
            version=int(row["version"]),
            access_count=accesses,
            last_accessed_at=last_access,
            metadata=metadata,
            document=None if row.get("document") is None else json.loads(row["document"]),
            ttl_s=row.get("ttl_s"),
            embedding=self.embedding(row.get("embedding")),
        )


def access_tracking(row: Mapping[str, Any]) -> tuple[int, datetime | None]:
    """Return ``(access_count, last_accessed_at)`` from a row's access columns (missing: never accessed)."""
    count = int(row.get("access_count") or 0)
    return count, _dt(row.get("touched_at")) if count else None


def edge_from_row(row: Mapping[str, Any]) -> Edge:
    """Rebuild an edge from ``{source_id, target_id, type, weight, created_at}`` (as every backend reads it)."""
    return Edge(
        source_id=row["source_id"],
        target_id=row["target_id"],
        type=RelationType(row["type"]),
        weight=row["weight"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )


#: The codec of table stores (SQLite) and of graph stores (Neo4j).
TABLE_CODEC = ItemCodec(native_lists=False)
GRAPH_CODEC = ItemCodec(native_lists=True)
