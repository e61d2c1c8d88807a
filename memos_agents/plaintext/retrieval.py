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
Results of several cubes are merged by score; equal scores put the newer memory (event time, else
ingestion time) first, so an older statement never hides a newer one that ties with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from memos_agents.config import FusionMethod, RetrievalConfig
from memos_agents.plaintext.stores.base import BaseMemoryStore
from memos_agents.schema import MemoryItem, MemoryQuery, RelationType, ScoredMemory, SearchFilters


def _when(item: MemoryItem) -> datetime:
    return item.event_time or item.created_at


class HybridRetriever:
    """Dense + BM25 + graph retrieval, fused by normalised-score combination (default) or RRF.

    Args:
        config: Fusion and expansion constants (see :class:`~memos_agents.config.RetrievalConfig`).

    """

    def __init__(self, config: RetrievalConfig | None = None) -> None:
        self.config = config or RetrievalConfig()

    def search(
        self,
        store: BaseMemoryStore,
        cube_ids: Sequence[str],
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        *,
        limit: int,
        filters: SearchFilters | None = None,
    ) -> list[ScoredMemory]:
        """Return up to ``limit`` ranked candidates over ``cube_ids``, best first.

        Args:
            store: The plaintext store.
            cube_ids: Cubes to search (already access-checked by the caller).
            query: The parsed query.
            query_vector: Its embedding, shape ``(dim,)``; None skips dense retrieval.
            limit: Candidates to return (≥ 1); the scheduler trims overlaps and cuts to top-k.
            filters: Store-side filters (default: active memories).

        Returns:
            Scored results without embeddings; ``tokens`` is left 0 (the scheduler fills it).

        """
        filters = filters or SearchFilters()
        out: list[ScoredMemory] = []
        for cube_id in cube_ids:
            out.extend(self._search_cube(store, cube_id, query, query_vector, filters, limit))
        # equal scores (e.g. a correction and the statement it corrects): the newer statement first
        out.sort(key=lambda r: (-r.score, -_when(r.item).timestamp()))
        return out[:limit]

    def _normalised(self, name: str, rank: int, raw: float, hits: list[tuple[str, float]]) -> float:
        if self.config.fusion == FusionMethod.RRF:
            return 1.0 / (self.config.rrf_k + rank + 1)
        best, last = hits[0][1], hits[-1][1]
        if name == "bm25":
            return raw / best if best > 0 else 0.0
        return max(0.0, (raw - last) / (best - last)) if best > last else 1.0

    def _search_cube(
        self,
        store: BaseMemoryStore,
        cube_id: str,
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        filters: SearchFilters,
        limit: int,
    ) -> list[ScoredMemory]:
        cfg = self.config
        signals: dict[str, dict[str, float]] = {}
        fused: dict[str, float] = {}
        rankings: list[tuple[str, float, list[tuple[str, float]]]] = []
        if query_vector is not None and cfg.dense_weight > 0:
            dense = store.vector_search(cube_id, query_vector.tolist(), cfg.candidates, filters)
            rankings.append(("dense", cfg.dense_weight, dense))
        if cfg.bm25_weight > 0:
            rankings.append(("bm25", cfg.bm25_weight, store.text_search(cube_id, query.text, cfg.candidates, filters)))
        for name, weight, hits in rankings:
            for rank, (item_id, raw) in enumerate(hits):
                fused[item_id] = fused.get(item_id, 0.0) + weight * self._normalised(name, rank, raw, hits)
                signals.setdefault(item_id, {})[name] = raw
        ranked = sorted(fused, key=lambda i: -fused[i])
        items = {i.id: i for i in store.get(cube_id, ranked[:limit])}
        via: dict[str, str] = {}
        if cfg.expand_top > 0 and cfg.neighbor_weight > 0 and ranked and cfg.expand_types:
            seeds = ranked[: cfg.expand_top]
            windows = {s for s in seeds if s in items and int(items[s].metadata.get("turns") or 1) > 1}
            bonus: dict[str, float] = {}
            for n in store.expand(cube_id, seeds, cfg.expand_types, depth=1, filters=filters):
                if n.type == RelationType.FOLLOWS and n.from_id in windows:
                    continue  # a window already holds its neighbouring turns
                gain = cfg.neighbor_weight * fused[n.from_id]
                if gain > bonus.get(n.id, 0.0):
                    bonus[n.id] = gain
                    if n.id not in fused:
                        via[n.id] = n.from_id
            for item_id, gain in bonus.items():
                fused[item_id] = fused.get(item_id, 0.0) + gain
                signals.setdefault(item_id, {})["graph"] = gain
            if bonus:
                ranked = sorted(fused, key=lambda i: -fused[i])
                missing = [i for i in ranked[:limit] if i not in items]
                items.update({i.id: i for i in store.get(cube_id, missing)} if missing else {})
        return [
            ScoredMemory(item=items[i], score=fused[i], signals=signals[i], via=via.get(i))
            for i in ranked[:limit]
            if i in items
        ]
