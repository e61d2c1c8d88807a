"""Hybrid retrieval over a plaintext store: dense + BM25 + graph, fused and reranked.

For each cube, dense cosine candidates (the store's vector search) and BM25 candidates (the
store's full-text search) are fused:

* ``score`` (default): a convex combination of normalised scores (Bruch, Gai & Ingber, ACM TOIS
  2023, "An Analysis of Fusion Functions for Hybrid Retrieval"): the cosine is min-max normalised
  between the best and the last of the ``candidates`` dense hits, BM25 is divided by the best BM25
  score, and ``score = w_dense · dense + w_bm25 · bm25`` (an item missing from a list scores 0 there).
* ``rrf``: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): ``Σ w / (k + rank)``.

The best fused hits then seed a graph expansion over whitelisted relations (FOLLOWS, MERGED_TO and
DERIVED_FROM by default, as in MemOS's tree retrieval): a neighbour gains ``neighbor_weight`` × its
seed's score. FOLLOWS is walked only from single-turn seeds: a multi-turn window already holds its
neighbouring turns, and boosting the overlapping windows around it only repeats them (on LoCoMo it
cost 0.03 recall within 1,000 tokens). Filters are applied inside the store, before ranking.
With ``decay_weight`` > 0 each result's score is multiplied by ``1 - w + w·P``, ``P`` the
memory's ACT-R recall probability (:mod:`memos_agents.plaintext.decay`: age, use count, last
use; 1 for frozen memories), so among close matches the memories in use come first.
Results of several cubes are merged by score; equal scores put the newer memory (event time, else
ingestion time) first, so an older statement never hides a newer one that ties with it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import numpy as np

from memos_agents.config import FusionMethod, RetrievalConfig
from memos_agents.plaintext.decay import item_activation, recall_probability
from memos_agents.plaintext.stores.base import ExpandOp, GetOp, Neighbor, Op, TextSearchOp, VectorSearchOp
from memos_agents.schema import (
    LifecycleState,
    MemoryItem,
    MemoryQuery,
    RelationType,
    ScoredMemory,
    SearchFilters,
    utcnow,
)

T = TypeVar("T")


def _when(item: MemoryItem) -> datetime:
    return item.event_time or item.created_at


#: A sans-IO body: yields store op batches, is sent their results, returns a value.
Body = Generator[list[Op], list[Any], T]


class HybridRetriever:
    """Dense + BM25 + graph retrieval, fused by normalised-score combination (default) or RRF.

    Retrieval is a sans-IO body of typed steps (:meth:`retrieve`): each step yields one batch of
    store ops for every cube at once (one transaction), so a search over several cubes costs three
    store round trips however many cubes it reads.

    Args:
        config: Fusion and expansion constants (see :class:`~memos_agents.config.RetrievalConfig`).

    """

    #: The first candidate pool is ``2 * k + 10``; each widening multiplies it by this.
    WIDEN = 4

    def __init__(self, config: RetrievalConfig | None = None) -> None:
        self.config = config or RetrievalConfig()

    def retrieve(
        self,
        cube_ids: Sequence[str],
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        *,
        k: int,
        filters: SearchFilters | None = None,
        dedupe: Callable[[list[ScoredMemory]], list[ScoredMemory]] = list,
        now: datetime | None = None,
    ) -> Body[list[ScoredMemory]]:
        """Run the retrieval policy: candidates, de-duplication, a wider net while that left too few.

        The scheduler drops turns already shown by better results, so more candidates than ``k``
        are fetched (``2k + 10``); when de-duplication leaves fewer than ``k`` and the pool was
        full, it is fetched again :attr:`WIDEN` times wider.

        Args:
            cube_ids: Cubes to search (the store checks the caller may read each).
            query: The parsed query.
            query_vector: Its embedding, shape ``(dim,)``; None skips dense retrieval.
            k: Results wanted (≥ 1).
            filters: Store-side filters (default: active memories).
            dedupe: Removes what a better result already shows (the scheduler's ``deduplicate``).
            now: The instant of the search (default: the clock's now): items whose ``expires_at``
                is at or before it are left out (MemLifecycle expiry, before a pass marks them).

        Returns:
            De-duplicated candidates, best first (at least ``k`` when the cubes hold them).

        """
        limit = 2 * k + 10
        while True:
            results, pool = yield from self._search(cube_ids, query, query_vector, limit, filters, now)
            chosen = dedupe(results)
            if len(chosen) >= k or pool < limit:  # pool: candidates before expired ones were dropped
                return chosen
            limit *= self.WIDEN

    def search(
        self,
        cube_ids: Sequence[str],
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        *,
        limit: int,
        filters: SearchFilters | None = None,
        now: datetime | None = None,
    ) -> Body[list[ScoredMemory]]:
        """Return up to ``limit`` ranked candidates over ``cube_ids``, best first (expired ones left out).

        Steps (each one store batch over every cube): dense and BM25 candidates; the fused top
        ``limit`` items and the graph neighbours of the best ``expand_top``; items reached only
        through the graph.

        Returns:
            Scored results without embeddings; ``tokens`` is left 0 (the scheduler fills it).

        """
        return (yield from self._search(cube_ids, query, query_vector, limit, filters, now))[0]

    def _search(
        self,
        cube_ids: Sequence[str],
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        limit: int,
        filters: SearchFilters | None,
        now: datetime | None,
    ) -> Body[tuple[list[ScoredMemory], int]]:
        """Return :meth:`search`'s results and how many candidates it ranked before expired ones were dropped."""
        cfg = self.config
        filters = filters or SearchFilters()
        if "statuses" not in filters.model_fields_set:  # pinned (frozen) memories are searched too
            filters = filters.model_copy(update={"statuses": [LifecycleState.ACTIVATED, LifecycleState.FROZEN]})
        now = now or utcnow()

        def live(item: MemoryItem) -> bool:  # frozen memories never expire
            return item.expires_at is None or item.expires_at > now or item.status is LifecycleState.FROZEN

        cubes = list(cube_ids)
        dense = query_vector is not None and cfg.dense_weight > 0
        step: list[Op] = []
        for cube_id in cubes:
            if dense:
                assert query_vector is not None
                step.append(VectorSearchOp(cube_id, query_vector, cfg.candidates, filters))
            if cfg.bm25_weight > 0:
                step.append(TextSearchOp(cube_id, query.text, cfg.candidates, filters))
        found = iter((yield step) if step else [])
        states = []
        for cube_id in cubes:
            rankings: list[tuple[str, float, list[tuple[str, float]]]] = []
            if dense:
                rankings.append(("dense", cfg.dense_weight, next(found)))
            if cfg.bm25_weight > 0:
                rankings.append(("bm25", cfg.bm25_weight, next(found)))
            states.append(self._fuse(cube_id, rankings))
        expanding = cfg.expand_top > 0 and cfg.neighbor_weight > 0 and bool(cfg.expand_types)
        step = []
        for state in states:
            step.append(GetOp(state.cube_id, state.ranked[:limit]))
            if expanding and state.ranked:
                step.append(ExpandOp(state.cube_id, state.ranked[: cfg.expand_top], cfg.expand_types, 1, filters))
        got = iter((yield step) if step else [])
        missing: list[Op] = []
        for state in states:
            state.items = {i.id: i for i in next(got) if live(i)}
            if expanding and state.ranked:
                self._boost(state, next(got))
                state.missing = [i for i in state.ranked[:limit] if i not in state.items]
                if state.missing:
                    missing.append(GetOp(state.cube_id, state.missing))
        more = iter((yield missing) if missing else [])
        out: list[ScoredMemory] = []
        for state in states:
            if state.missing:
                state.items.update({i.id: i for i in next(more) if live(i)})
            for i in state.ranked[:limit]:
                if i in state.items:
                    score = state.fused[i] * self._decay_factor(state.items[i], now, state.signals[i])
                    out.append(
                        ScoredMemory(item=state.items[i], score=score, signals=state.signals[i], via=state.via.get(i))
                    )
        # equal scores (e.g. a correction and the statement it corrects): the newer statement first
        out.sort(key=lambda r: (-r.score, -_when(r.item).timestamp()))
        return out[:limit], sum(min(len(state.ranked), limit) for state in states)

    def _decay_factor(self, item: MemoryItem, now: datetime, signals: dict[str, float]) -> float:
        """Return ``1 - w + w·P`` (see the module docstring) and note ``P`` in ``signals["decay"]``; 1 when off."""
        cfg = self.config
        if cfg.decay_weight <= 0:
            return 1.0
        if item.status is LifecycleState.FROZEN:
            p = 1.0
        else:
            b = item_activation(item, now, cfg.decay_rate)
            p = recall_probability(b, cfg.decay_threshold, cfg.decay_noise)
        signals["decay"] = p
        return 1.0 - cfg.decay_weight + cfg.decay_weight * p

    def _normalised(self, name: str, rank: int, raw: float, hits: list[tuple[str, float]]) -> float:
        if self.config.fusion == FusionMethod.RRF:
            return 1.0 / (self.config.rrf_k + rank + 1)
        best, last = hits[0][1], hits[-1][1]
        if name == "bm25":
            return raw / best if best > 0 else 0.0
        return max(0.0, (raw - last) / (best - last)) if best > last else 1.0

    def _fuse(self, cube_id: str, rankings: list[tuple[str, float, list[tuple[str, float]]]]) -> _CubeState:
        state = _CubeState(cube_id)
        for name, weight, hits in rankings:
            for rank, (item_id, raw) in enumerate(hits):
                state.fused[item_id] = state.fused.get(item_id, 0.0) + weight * self._normalised(name, rank, raw, hits)
                state.signals.setdefault(item_id, {})[name] = raw
        state.ranked = sorted(state.fused, key=lambda i: -state.fused[i])
        return state

    def _boost(self, state: _CubeState, neighbours: list[Neighbor]) -> None:
        """Add the graph bonus: a neighbour gains ``neighbor_weight`` × its seed's score."""
        cfg = self.config
        seeds = state.ranked[: cfg.expand_top]
        windows = {s for s in seeds if s in state.items and state.items[s].turns > 1}
        bonus: dict[str, float] = {}
        for n in neighbours:
            if n.from_id not in state.items:
                continue  # its seed expired (left out): it lends no bonus and names no path
            if n.type == RelationType.FOLLOWS and n.from_id in windows:
                continue  # a window already holds its neighbouring turns
            gain = cfg.neighbor_weight * state.fused[n.from_id]
            if gain > bonus.get(n.id, 0.0):
                bonus[n.id] = gain
                if n.id not in state.fused:
                    state.via[n.id] = n.from_id
        for item_id, gain in bonus.items():
            state.fused[item_id] = state.fused.get(item_id, 0.0) + gain
            state.signals.setdefault(item_id, {})["graph"] = gain
        if bonus:
            state.ranked = sorted(state.fused, key=lambda i: -state.fused[i])


@dataclass
class _CubeState:
    """One cube's candidates while a search runs."""

    cube_id: str
    fused: dict[str, float] = field(default_factory=dict)
    signals: dict[str, dict[str, float]] = field(default_factory=dict)
    ranked: list[str] = field(default_factory=list)
    items: dict[str, MemoryItem] = field(default_factory=dict)
    via: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
