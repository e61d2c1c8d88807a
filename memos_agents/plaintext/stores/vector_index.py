"""The embedded store's dense index of one cube: exact below a size threshold, HNSW above it.

:class:`CubeVectorIndex` keeps, per item *position*, the item's SQLite rowid, the columns that
search filters test (lifecycle state, memory type, node kind, subject, event time, tags) and its
unit vector: in a numpy matrix while the cube holds at most ``ann_threshold`` searchable items
(exact cosine, as before), in an HNSW graph (Malkov & Yashunin, "Efficient and robust approximate
nearest neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018; the
``hnswlib`` library) above it.

* **Filters during the search.** A query's filters are rendered once as a boolean mask over
  positions (numpy, cached per filter until the index changes). HNSW receives it as its filter
  callback, so the graph walk skips items that fail it and still returns ``k`` results however
  selective the filter is; a filter that leaves at most :attr:`CubeVectorIndex.exact_below` items is
  answered exactly from those items' vectors. ``hnswlib`` was chosen by measurement on this
  machine (``docs/bench/scale-issue10/ann-libraries.md``): its filtered search kept recall@10 ≥ 0.99
  with a selective filter where faiss' HNSW with an ``IDSelector`` fell to 0.67–0.93, and usearch's
  Python API has no filtered search.
* **Ties** are broken by rowid (insertion order), as the exact path always did, so the exact path
  ranks exactly as the in-memory reference store does.
* **Incremental.** :meth:`CubeVectorIndex.apply` takes changed rows (upserts) and removed rowids;
  a removed item's position is marked deleted in the graph and reused by the next insert. The
  cube's change sequence number up to which the index is current is :attr:`CubeVectorIndex.watermark`.
* **Snapshots.** :meth:`CubeVectorIndex.save` writes an ANN index beside the database (graph,
  columns, then a manifest, each written to a temporary file, fsynced and renamed, the manifest
  last); :meth:`CubeVectorIndex.load` reads one back and refuses (returns None) anything that does
  not match the store, cube generation, dimension or format, so the caller rebuilds from SQLite.
  SQLite stays the source of truth: a snapshot only ever lags it and is brought up to date from the
  rows whose change sequence is above its watermark.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from memos_agents.plaintext.stores.filters import Predicate
from memos_agents.schema import LifecycleState, MemoryType, NodeKind

#: Small integer codes of the enum columns (fast numpy masks); -1 never matches.
CODES: dict[str, dict[str, int]] = {
    name: {member.value: code for code, member in enumerate(enum)}
    for name, enum in (("status", LifecycleState), ("memory_type", MemoryType), ("node_kind", NodeKind))
}
MISSING_US = np.iinfo(np.int64).min
#: Snapshot format version (a snapshot of another version is rebuilt).
FORMAT = 1


@dataclass(frozen=True)
class IndexRow:
    """One searchable item as the index stores it (``embedding`` None: not searchable)."""

    rowid: int
    status: str
    memory_type: str
    node_kind: str
    user_id: str | None
    event_us: int | None
    tags: tuple[str, ...]
    embedding: np.ndarray | None


@dataclass(frozen=True)
class HNSWParams:
    """HNSW construction and search parameters (hnswlib's names).

    Attributes:
        m: Links per node (default 32).
        ef_construction: Candidate list size while inserting (default 100).
        ef_search: Candidate list size while searching, at least ``k`` (default 256).

    """

    m: int = 32
    ef_construction: int = 100
    ef_search: int = 256


class CubeVectorIndex:
    """Dense index of one cube (see the module docstring).

    Args:
        dim: Vector dimension.
        generation: The cube incarnation it indexes (a recreated cube gets a new index).
        ann_threshold: Searchable items above which the HNSW graph replaces the exact matrix
            (default 20,000).
        hnsw: HNSW parameters.
        exact_below: A filter passing at most this many items is answered exactly (default 4,096).

    """

    def __init__(
        self,
        dim: int,
        generation: str | None,
        *,
        ann_threshold: int = 20_000,
        hnsw: HNSWParams | None = None,
        exact_below: int = 4_096,
    ) -> None:
        self.dim = dim
        self.generation = generation
        self.ann_threshold = ann_threshold
        self.params = hnsw or HNSWParams()
        self.exact_below = exact_below
        self.watermark = 0
        #: Changes applied since the last snapshot.
        self.dirty = 0
        self._n = 0  # positions in use (live or free)
        cap = 64
        self.rowids = np.full(cap, -1, dtype=np.int64)
        self.alive = np.zeros(cap, dtype=bool)
        self.cols = {name: np.full(cap, -1, dtype=np.int16) for name in CODES}
        self.user = np.full(cap, -1, dtype=np.int32)
        self.event_us = np.full(cap, MISSING_US, dtype=np.int64)
        self.users: dict[str, int] = {}
        self.tags: dict[str, set[int]] = {}
        self.pos_tags: dict[int, tuple[str, ...]] = {}
        self.pos: dict[int, int] = {}
        self.free: list[int] = []
        self.matrix: np.ndarray | None = np.zeros((cap, dim), dtype=np.float32)
        self.graph: Any = None
        self._masks: dict[tuple[Any, ...], tuple[np.ndarray, int, bytes | None]] = {}

    # -- size ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Searchable items."""
        return len(self.pos)

    @property
    def mode(self) -> str:
        """``"exact"`` or ``"hnsw"``."""
        return "exact" if self.graph is None else "hnsw"

    def _grow(self, need: int) -> None:
        cap = len(self.rowids)
        if need <= cap:
            return
        new = max(need, cap * 2)

        def ext(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype)
            out[:cap] = a
            return out

        self.rowids = ext(self.rowids, -1)
        self.alive = ext(self.alive, False)
        self.cols = {k: ext(v, -1) for k, v in self.cols.items()}
        self.user = ext(self.user, -1)
        self.event_us = ext(self.event_us, MISSING_US)
        if self.matrix is not None:
            self.matrix = ext(self.matrix, 0.0)
        if self.graph is not None and self.graph.get_max_elements() < new:
            self.graph.resize_index(new)

    # -- changes -------------------------------------------------------------------------------------
    def apply(self, upserts: Sequence[IndexRow], removed: Iterable[int] = (), watermark: int | None = None) -> None:
        """Apply changed rows (inserted or updated items) and removed rowids, then set the watermark.

        A row without an embedding is removed (it is not searchable).
        """
        changed = False
        for rowid in removed:
            changed |= self._remove(rowid)
        fresh: list[tuple[int, np.ndarray]] = []
        for row in upserts:
            if row.embedding is None:
                changed |= self._remove(row.rowid)
                continue
            p = self.pos.get(row.rowid)
            if p is None:
                p = self.free.pop() if self.free else self._n
                if p == self._n:
                    self._n += 1
                    self._grow(self._n)
                self.pos[row.rowid] = p
                self.rowids[p] = row.rowid
                self.alive[p] = True
            self._set_columns(p, row)
            vec = np.asarray(row.embedding, dtype=np.float32).reshape(self.dim)
            norm = float(np.linalg.norm(vec))
            fresh.append((p, vec / (norm or 1.0)))
            changed = True
        if fresh:
            positions = np.asarray([p for p, _ in fresh], dtype=np.int64)
            vectors = np.vstack([v for _, v in fresh])
            if self.matrix is not None:
                self.matrix[positions] = vectors
            else:
                self.graph.add_items(vectors, positions, num_threads=1 if len(fresh) < 256 else -1)
        if changed:
            self._masks.clear()
            self.dirty += len(fresh) + (0 if not removed else 1)
        if self.graph is None and len(self.pos) > self.ann_threshold:
            self._build_graph()
        if watermark is not None:
            self.watermark = max(self.watermark, watermark)

    def _set_columns(self, p: int, row: IndexRow) -> None:
        for name in CODES:
            self.cols[name][p] = CODES[name].get(getattr(row, name), -1)
        if row.user_id is None:
            self.user[p] = -1
        else:
            self.user[p] = self.users.setdefault(row.user_id, len(self.users))
        self.event_us[p] = MISSING_US if row.event_us is None else row.event_us
        for tag in self.pos_tags.pop(p, ()):
            self.tags[tag].discard(p)
        if row.tags:
            self.pos_tags[p] = row.tags
            for tag in row.tags:
                self.tags.setdefault(tag, set()).add(p)

    def _remove(self, rowid: int) -> bool:
        p = self.pos.pop(rowid, None)
        if p is None:
            return False
        self.alive[p] = False
        self.rowids[p] = -1
        for tag in self.pos_tags.pop(p, ()):
            self.tags[tag].discard(p)
        if self.graph is not None:
            self.graph.mark_deleted(p)
        else:
            assert self.matrix is not None
            self.matrix[p] = 0.0
        self.free.append(p)
        return True

    def _build_graph(self) -> None:
        """Move from the exact matrix to an HNSW graph over the same positions."""
        assert self.matrix is not None
        graph = hnswlib.Index(space="ip", dim=self.dim)
        graph.init_index(max_elements=len(self.rowids), ef_construction=self.params.ef_construction, M=self.params.m)
        graph.set_ef(self.params.ef_search)
        live = np.flatnonzero(self.alive[: self._n])
        graph.add_items(self.matrix[live], live, num_threads=-1)
        for p in np.flatnonzero(~self.alive[: self._n]):  # free positions: present and deleted, reused later
            graph.add_items(np.zeros((1, self.dim), dtype=np.float32), [int(p)])
            graph.mark_deleted(int(p))
        self.graph = graph
        self.matrix = None
        self._masks.clear()

    # -- search --------------------------------------------------------------------------------------
    def mask(self, predicates: Sequence[Predicate]) -> tuple[np.ndarray, int, bytes | None]:
        """Return ``(mask over positions, how many pass, the mask as bytes for the graph or None)``; cached."""
        key = tuple(
            (p.field, p.op, tuple(p.value) if isinstance(p.value, list | tuple) else p.value) for p in predicates
        )
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        n = self._n
        m = self.alive[:n].copy()
        for p in predicates:
            if p.op == "overlaps":
                inside = np.zeros(n, dtype=bool)
                for tag in p.value:
                    members = self.tags.get(tag)
                    if members:
                        inside[list(members)] = True
                m &= inside
            elif p.field == "user_id":
                codes = [self.users.get(v, -2) for v in (p.value if p.op == "in" else [p.value])]
                m &= np.isin(self.user[:n], codes)
            elif p.field in CODES:
                wanted = [CODES[p.field].get(v, -2) for v in (p.value if p.op == "in" else [p.value])]
                m &= np.isin(self.cols[p.field][:n], wanted)
            else:  # event_us ranges
                col = self.event_us[:n]
                m &= (col != MISSING_US) & (col >= p.value if p.op == "ge" else col <= p.value)
        count = int(m.sum())
        packed = None if self.graph is None or count == len(self.pos) else m.tobytes()
        if len(self._masks) > 32:
            self._masks.clear()
        self._masks[key] = (m, count, packed)
        return self._masks[key]

    def search(self, query: np.ndarray, k: int, predicates: Sequence[Predicate]) -> list[tuple[int, float]]:
        """Return up to ``k`` ``(rowid, cosine)`` of items passing ``predicates``, best first, ties by rowid.

        Args:
            query: Vector of shape ``(dim,)`` (normalised here).
            k: How many results.
            predicates: Filters (all must hold).

        """
        if k <= 0 or not self.pos:
            return []
        norm = float(np.linalg.norm(query))
        q = (np.asarray(query, dtype=np.float32) / (norm or 1.0)).astype(np.float32)
        m, count, packed = self.mask(predicates)
        if count == 0:
            return []
        if self.matrix is not None:  # one product over the whole matrix: the same floats as every exact store
            return self._ranked(np.flatnonzero(m), (self.matrix[: self._n] @ q)[m], k)
        if count <= max(self.exact_below, k):
            idx = np.flatnonzero(m)
            vectors = np.asarray(self.graph.get_items(idx, return_type="numpy"), dtype=np.float32)
            return self._ranked(idx, vectors @ q, k)
        want = min(k, count)
        self.graph.set_ef(max(self.params.ef_search, want))
        try:
            labels, distances = self.graph.knn_query(
                q, k=want, num_threads=1, filter=None if packed is None else packed.__getitem__
            )
        except RuntimeError:  # fewer than k reachable through the filter: answer exactly
            idx = np.flatnonzero(m)
            vectors = np.asarray(self.graph.get_items(idx, return_type="numpy"), dtype=np.float32)
            return self._ranked(idx, vectors @ q, k)
        idx = labels[0].astype(np.int64)
        return self._ranked(idx, 1.0 - distances[0].astype(np.float64), k)

    def _ranked(self, positions: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top ``k`` by score, ties by rowid (exact when ``positions`` holds every candidate)."""
        if len(positions) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth
            positions, scores = positions[keep], scores[keep]
        rowids = self.rowids[positions]
        order = np.lexsort((rowids, -scores))[:k]
        return [(int(rowids[i]), float(scores[i])) for i in order]

    # -- snapshots -----------------------------------------------------------------------------------
    def save(self, directory: Path, key: str, store_id: str) -> None:
        """Write this (HNSW) index as a snapshot ``directory/key.*`` (crash-safe; see the module docstring).

        Raises:
            OSError: The files could not be written (the previous snapshot stays valid).

        """
        if self.graph is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"{self.watermark}-{os.getpid()}-{os.urandom(4).hex()}"
        graph_file = directory / f"{key}.{tag}.hnsw"
        cols_file = directory / f"{key}.{tag}.npz"
        self.graph.save_index(str(graph_file))
        n = self._n
        tag_names = sorted(self.tags)
        tag_pos = [(p, i) for i, t in enumerate(tag_names) for p in sorted(self.tags[t])]
        with open(cols_file, "wb") as fh:
            arrays: dict[str, np.ndarray] = {
                "rowids": self.rowids[:n],
                "alive": self.alive[:n],
                "user": self.user[:n],
                "event_us": self.event_us[:n],
                "tag_pos": np.asarray(tag_pos, dtype=np.int64).reshape(-1, 2),
                **{f"col_{k}": v[:n] for k, v in self.cols.items()},
            }
            np.savez(fh, allow_pickle=False, **arrays)
        for f in (graph_file, cols_file):
            _fsync(f)
        manifest = {
            "format": FORMAT,
            "store_id": store_id,
            "generation": self.generation,
            "dim": self.dim,
            "watermark": self.watermark,
            "positions": n,
            "hnsw": {"m": self.params.m, "ef_construction": self.params.ef_construction},
            "graph": graph_file.name,
            "graph_bytes": graph_file.stat().st_size,
            "columns": cols_file.name,
            "columns_bytes": cols_file.stat().st_size,
            "users": sorted(self.users, key=self.users.__getitem__),
            "tags": tag_names,
        }
        target = directory / f"{key}.json"
        old = _read_manifest(target)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(directory)
        self.dirty = 0
        if old is not None:
            for name in (old.get("graph"), old.get("columns")):
                if isinstance(name, str) and name not in (graph_file.name, cols_file.name):
                    (directory / name).unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        directory: Path,
        key: str,
        *,
        store_id: str,
        generation: str | None,
        dim: int,
        max_watermark: int,
        **kwargs: Any,
    ) -> CubeVectorIndex | None:
        """Read the snapshot ``directory/key.*``; None when absent, unreadable or not this cube's.

        A snapshot is refused when its store id, cube generation, dimension or format differs, or
        its watermark is above ``max_watermark`` (the database is older than the snapshot).
        """
        manifest = _read_manifest(directory / f"{key}.json")
        if manifest is None:
            return None
        try:
            if (
                manifest["format"] != FORMAT
                or manifest["store_id"] != store_id
                or manifest["generation"] != generation
                or manifest["dim"] != dim
                or not 0 <= int(manifest["watermark"]) <= max_watermark
            ):
                return None
            graph_file = directory / str(manifest["graph"])
            cols_file = directory / str(manifest["columns"])
            if (
                graph_file.stat().st_size != manifest["graph_bytes"]
                or cols_file.stat().st_size != manifest["columns_bytes"]
            ):
                return None
            index = cls(dim, generation, **kwargs)
            with np.load(cols_file, allow_pickle=False) as data:
                n = int(manifest["positions"])
                index._grow(max(n, 64))
                index._n = n
                index.rowids[:n] = data["rowids"]
                index.alive[:n] = data["alive"]
                index.user[:n] = data["user"]
                index.event_us[:n] = data["event_us"]
                for name in CODES:
                    index.cols[name][:n] = data[f"col_{name}"]
                tag_pos = data["tag_pos"]
            index.users = {u: i for i, u in enumerate(manifest["users"])}
            names = list(manifest["tags"])
            for p, t in tag_pos.tolist():
                index.tags.setdefault(names[t], set()).add(p)
                index.pos_tags[p] = (*index.pos_tags.get(p, ()), names[t])
            index.pos = {int(r): p for p, r in enumerate(index.rowids[:n].tolist()) if index.alive[p]}
            index.free = [p for p in range(n) if not index.alive[p]]
            graph = hnswlib.Index(space="ip", dim=dim)
            graph.load_index(str(graph_file), max_elements=len(index.rowids))
            graph.set_ef(index.params.ef_search)
            index.graph = graph
            index.matrix = None
            index.watermark = int(manifest["watermark"])
            return index
        except (KeyError, TypeError, ValueError, OSError, RuntimeError, IndexError):
            return None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some platforms
        pass
