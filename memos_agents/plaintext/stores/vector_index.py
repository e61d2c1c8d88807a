"""The embedded store's dense index of one cube: exact below a size threshold, HNSW above it.

:class:`CubeVectorIndex` keeps, per item *position*, the item's SQLite rowid, the columns that
search filters test (lifecycle state, memory type, node kind, subject, event time, tags, and the
read scope's visibility and author) and its
unit vector: in a numpy matrix while the cube holds at most ``ann_threshold`` searchable items
(exact cosine, as before), in an HNSW graph (Malkov & Yashunin, "Efficient and robust approximate
nearest neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018; the
``hnswlib`` library) above it.

* **Filters.** A query's filters are rendered once as a boolean mask over positions (numpy,
  cached per filter and updated at the changed positions when the index changes). A filter that
  passes a large enough share of the items is applied after an unfiltered walk with a wider
  candidate list (:meth:`CubeVectorIndex._post_filtered`): hnswlib's filter is a Python callback per
  visited node, slower than the walk itself. A more selective one (or one that leaves fewer than
  ``k`` hits that way) goes to HNSW as its filter callback, so the graph walk skips items that fail
  it and still returns ``k`` results however selective the filter is; a filter that leaves at
  most :attr:`CubeVectorIndex.exact_below` items is answered exactly from those items' vectors.
  ``hnswlib`` was chosen by measurement on this machine (``docs/bench/scale-issue10/ann-libraries.md``):
  its filtered search kept recall@10 ≥ 0.99 with a selective filter where faiss' HNSW with an
  ``IDSelector`` fell to 0.67–0.93, and usearch's Python API has no filtered search.
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
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from memos_agents.plaintext.stores.filters import Predicate
from memos_agents.schema import LifecycleState, MemoryType, NodeKind, Visibility

#: Small integer codes of the enum columns (fast numpy masks); -1 never matches.
CODES: dict[str, dict[str, int]] = {
    name: {member.value: code for code, member in enumerate(enum)}
    for name, enum in (
        ("status", LifecycleState),
        ("memory_type", MemoryType),
        ("node_kind", NodeKind),
        ("visibility", Visibility),
    )
}
MISSING_US = np.iinfo(np.int64).min
#: Snapshot format version (a snapshot of another version is rebuilt). 2: visibility and author columns.
FORMAT = 2


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
    visibility: str = Visibility.CUBE.value
    author_id: str | None = None


@dataclass
class _Mask:
    """A cached filter mask: one byte per position (capacity), a bool view of it, and how many pass."""

    predicates: tuple[Predicate, ...]
    buf: bytearray
    arr: np.ndarray
    count: int
    #: How many entries of the index's change log it has applied (absolute, see ``_log_start``).
    seen: int


@dataclass(frozen=True)
class HNSWParams:
    """HNSW construction and search parameters (hnswlib's names).

    Attributes:
        m: Links per node (default 32).
        ef_construction: Candidate list size while inserting (default 100).
        ef_search: Candidate list size while searching, at least ``k`` (default 384: recall@10
            0.98 against exact at a million items, 0.968 at 256; ``docs/bench/scale-issue10/after-tuning``).

    """

    m: int = 32
    ef_construction: int = 100
    ef_search: int = 384


class CubeVectorIndex:
    """Dense index of one cube (see the module docstring).

    Args:
        dim: Vector dimension.
        generation: The cube incarnation it indexes (a recreated cube gets a new index).
        ann_threshold: Searchable items above which the HNSW graph replaces the exact matrix
            (default 20,000).
        hnsw: HNSW parameters.
        exact_below: A filter passing at most this many items is answered exactly (default 4,096).
        overfetch: Exponent of the post-filtered search's candidate list (default 0.6): a filter
            passing a fraction ``s`` of the items walks the graph unfiltered with
            ``ef_search × s^-overfetch`` candidates (see :meth:`_post_filtered`).
        max_fetch: Largest candidate list of a post-filtered search (default 4,096); a more
            selective filter is applied during the graph walk instead.

    """

    def __init__(
        self,
        dim: int,
        generation: str | None,
        *,
        ann_threshold: int = 20_000,
        hnsw: HNSWParams | None = None,
        exact_below: int = 4_096,
        overfetch: float = 0.6,
        max_fetch: int = 4_096,
    ) -> None:
        self.dim = dim
        self.generation = generation
        self.ann_threshold = ann_threshold
        self.params = hnsw or HNSWParams()
        self.exact_below = exact_below
        self.overfetch = overfetch
        self.max_fetch = max_fetch
        self.watermark = 0
        #: Changes applied since the last snapshot.
        self.dirty = 0
        self._n = 0  # positions in use (live or free)
        cap = 64
        self.rowids = np.full(cap, -1, dtype=np.int64)
        self.alive = np.zeros(cap, dtype=bool)
        self.cols = {name: np.full(cap, -1, dtype=np.int16) for name in CODES}
        self.user = np.full(cap, -1, dtype=np.int32)
        self.author = np.full(cap, -1, dtype=np.int32)  # codes of ``users`` (one id -> code map)
        self.event_us = np.full(cap, MISSING_US, dtype=np.int64)
        self.users: dict[str, int] = {}
        self.tags: dict[str, set[int]] = {}
        self.pos_tags: dict[int, tuple[str, ...]] = {}
        self.pos: dict[int, int] = {}
        self.free: list[int] = []
        self.matrix: np.ndarray | None = np.zeros((cap, dim), dtype=np.float32)
        self.graph: Any = None
        self._masks: dict[tuple[Any, ...], _Mask] = {}
        #: Positions changed by each :meth:`apply` since ``_log_start`` (cached masks catch up on use).
        self._log: list[np.ndarray] = []
        self._log_start = 0

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
        self.author = ext(self.author, -1)
        self.event_us = ext(self.event_us, MISSING_US)
        if self.matrix is not None:
            self.matrix = ext(self.matrix, 0.0)
        if self.graph is not None and self.graph.get_max_elements() < new:
            self.graph.resize_index(new)
        self._drop_masks()  # cached masks span the old capacity

    # -- changes -------------------------------------------------------------------------------------
    def apply(self, upserts: Sequence[IndexRow], removed: Iterable[int] = (), watermark: int | None = None) -> None:
        """Apply changed rows (inserted or updated items) and removed rowids, then set the watermark.

        A row without an embedding is removed (it is not searchable).
        """
        touched: list[int] = []  # positions whose columns changed
        for rowid in removed:
            if (gone := self._remove(rowid)) is not None:
                touched.append(gone)
        live: list[IndexRow] = []
        for row in upserts:
            if row.embedding is None:
                if (gone := self._remove(row.rowid)) is not None:
                    touched.append(gone)
            else:
                live.append(row)
        if live:  # column by column (numpy), not row by row: a full build reads every row of the cube
            where: list[int] = []
            for row in live:
                p = self.pos.get(row.rowid)
                if p is None:
                    p = self.free.pop() if self.free else self._n
                    if p == self._n:
                        self._n += 1
                    self.pos[row.rowid] = p
                where.append(p)
            self._grow(self._n)
            positions = np.asarray(where, dtype=np.int64)
            self.rowids[positions] = [row.rowid for row in live]
            self.alive[positions] = True
            for name, codes in CODES.items():
                self.cols[name][positions] = [codes.get(getattr(row, name), -1) for row in live]
            users = self.users
            self.user[positions] = [
                -1 if row.user_id is None else users.setdefault(row.user_id, len(users)) for row in live
            ]
            self.author[positions] = [
                -1 if row.author_id is None else users.setdefault(row.author_id, len(users)) for row in live
            ]
            self.event_us[positions] = [MISSING_US if row.event_us is None else row.event_us for row in live]
            for p, row in zip(where, live, strict=True):
                if row.tags or p in self.pos_tags:
                    self._set_tags(p, row.tags)
            raw = np.vstack([np.asarray(row.embedding, dtype=np.float32).reshape(1, self.dim) for row in live])
            norms = np.linalg.norm(raw, axis=1, keepdims=True)  # as the in-memory store normalises
            vectors = (raw / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)
            if self.matrix is not None:
                self.matrix[positions] = vectors
            else:
                self.graph.add_items(vectors, positions, num_threads=1 if len(live) < 256 else -1)
            touched += where
        if touched:
            self._log.append(np.asarray(touched, dtype=np.int64))
            if len(self._log) > 1024:  # masks that far behind are recomputed on use
                self._log_start += 512
                del self._log[:512]
            self.dirty += len(live) + (0 if not removed else 1)
        if self.graph is None and len(self.pos) > self.ann_threshold:
            self._build_graph()
        if watermark is not None:
            self.watermark = max(self.watermark, watermark)

    def _set_tags(self, p: int, tags: tuple[str, ...]) -> None:
        for tag in self.pos_tags.pop(p, ()):
            self.tags[tag].discard(p)
        if tags:
            self.pos_tags[p] = tags
            for tag in tags:
                self.tags.setdefault(tag, set()).add(p)

    def _remove(self, rowid: int) -> int | None:
        """Remove an item; return the position it had (None: not indexed)."""
        p = self.pos.pop(rowid, None)
        if p is None:
            return None
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
        return p

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
        self._drop_masks()

    # -- search --------------------------------------------------------------------------------------
    def mask(self, predicates: Sequence[Predicate]) -> tuple[np.ndarray, int, bytearray | None]:
        """Return ``(mask over positions, how many pass, the mask's bytes for the graph's filter or None)``.

        Cached per filter. A cached mask is brought up to date on use by re-evaluating the filter
        at the positions changed since (:meth:`apply` logs them), so a write to a large cube
        recomputes no mask in full. The bytes are None when no graph is searched or every item passes.
        """
        key = tuple(
            (p.field, p.op, tuple(p.value) if isinstance(p.value, list | tuple) else p.value) for p in predicates
        )
        end = self._log_start + len(self._log)
        hit = self._masks.get(key)
        if hit is not None and hit.seen < self._log_start:  # its changes left the log: recompute
            hit = None
        if hit is None:
            if len(self._masks) > 32:
                self._masks.clear()
            buf = bytearray(len(self.rowids))
            arr = np.frombuffer(buf, dtype=bool)
            m = self._evaluate(predicates, None)
            arr[: self._n] = m
            hit = self._masks[key] = _Mask(tuple(predicates), buf, arr, int(m.sum()), end)
        elif hit.seen < end:
            changed = np.unique(np.concatenate(self._log[hit.seen - self._log_start :]))
            new = self._evaluate(hit.predicates, changed)
            hit.count += int(new.sum()) - int(hit.arr[changed].sum())
            hit.arr[changed] = new
            hit.seen = end
        packed = None if self.graph is None or hit.count == len(self.pos) else hit.buf
        return hit.arr[: self._n], hit.count, packed

    def _drop_masks(self) -> None:
        self._masks.clear()
        self._log_start += len(self._log)
        self._log.clear()

    def _evaluate(self, predicates: Sequence[Predicate], positions: np.ndarray | None) -> np.ndarray:
        """Whether the items at ``positions`` (None: every position in use) pass ``predicates``."""
        n = self._n
        at: slice | np.ndarray = slice(0, n) if positions is None else positions
        m = self.alive[at].copy()
        for p in predicates:
            if p.op == "overlaps":
                if positions is None:
                    inside = np.zeros(n, dtype=bool)
                    for tag in p.value:
                        members = self.tags.get(tag)
                        if members:
                            inside[list(members)] = True
                else:
                    wanted = set(p.value)
                    inside = np.fromiter(
                        (not wanted.isdisjoint(self.pos_tags.get(q, ())) for q in positions.tolist()),
                        dtype=bool,
                        count=len(positions),
                    )
                m &= inside
            elif p.op == "visible_to":
                vis = self.cols["visibility"][at]
                if p.value is None:
                    m &= vis == CODES["visibility"][Visibility.PUBLIC.value]
                else:
                    mine = self.author[at] == self.users.get(p.value, -2)
                    m &= (vis != CODES["visibility"][Visibility.PRIVATE.value]) | mine
            elif p.field == "user_id":
                codes = [self.users.get(v, -2) for v in (p.value if p.op == "in" else [p.value])]
                m &= np.isin(self.user[at], codes)
            elif p.field in CODES:
                wanted_codes = [CODES[p.field].get(v, -2) for v in (p.value if p.op == "in" else [p.value])]
                m &= np.isin(self.cols[p.field][at], wanted_codes)
            else:  # event_us ranges
                col = self.event_us[at]
                m &= (col != MISSING_US) & (col >= p.value if p.op == "ge" else col <= p.value)
        return m

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
        if packed is not None:
            hits = self._post_filtered(q, want, m, count)
            if hits is not None:
                return hits
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

    def _post_filtered(self, q: np.ndarray, want: int, m: np.ndarray, count: int) -> list[tuple[int, float]] | None:
        """Walk the graph without the filter, with a wider candidate list, and keep the hits that pass ``m``.

        hnswlib applies a filter through a Python callback per visited node, which costs more
        than the walk itself (27 ms against 2 ms for ``k`` = 3 at a million items and a filter
        passing 1/12 of them). Instead the unfiltered walk runs with ``ef = ef_search ×
        s^-overfetch`` (``s``: the fraction of items that pass; at least ``2 × want / s`` so that
        about twice ``want`` hits are expected to pass) and returns all ``ef`` candidates, of
        which the best ``want`` that pass are kept. Post-filtering an exact unfiltered ranking
        gives the exact filtered one whenever ``want`` hits pass; the wider list makes up for the
        approximate ranking deeper in it (the exponent 0.6 was fitted at a million items: recall@10
        ≥ 0.98 for s = 1/12 and for s ≈ 1, see ``docs/bench/scale-issue10/after-tuning``).
        Returns None (the caller walks with the filter) when that ``ef`` would exceed
        :attr:`max_fetch` or fewer than ``want`` hits pass.
        """
        live = len(self.pos)
        share = count / live
        ef = max(math.ceil(self.params.ef_search * share**-self.overfetch), math.ceil(2 * want / share))
        if ef > self.max_fetch:
            return None
        ef = min(ef, live)
        self.graph.set_ef(ef)
        try:
            labels, distances = self.graph.knn_query(q, k=ef, num_threads=1)
        except RuntimeError:  # pragma: no cover - fewer reachable than asked: the filtered walk decides
            return None
        idx = labels[0].astype(np.int64)
        keep = m[idx]
        if int(keep.sum()) < want:
            return None
        return self._ranked(idx[keep], 1.0 - distances[0][keep].astype(np.float64), want)

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
                "author": self.author[:n],
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
                index.author[:n] = data["author"]
                index.event_us[:n] = data["event_us"]
                for name in CODES:
                    index.cols[name][:n] = data[f"col_{name}"]
                tag_pos = data["tag_pos"]
            index.users = {u: i for i, u in enumerate(manifest["users"])}
            names = list(manifest["tags"])
            for p, t in tag_pos.tolist():
                index.tags.setdefault(names[t], set()).add(p)
                index.pos_tags[p] = (*index.pos_tags.get(p, ()), names[t])
            alive = index.alive[:n]
            live = np.flatnonzero(alive)
            index.pos = dict(zip(index.rowids[live].tolist(), live.tolist(), strict=True))
            index.free = np.flatnonzero(~alive).tolist()
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
