"""Hybrid retrieval over a plaintext store: dense + BM25 + graph, fused and reranked.

For each cube: dense cosine candidates (the store's vector search) and BM25 candidates (the
store's full-text search) are fused by weighted reciprocal rank fusion (Cormack, Clarke &
Büttcher, SIGIR 2009: ``score = Σ w / (k + rank)``). The best fused hits then seed a graph
expansion over whitelisted relations (FOLLOWS by default: the turns around a hit, as in MemOS's
tree retrieval): a neighbour gets ``neighbor_weight`` × its seed's score, or that much added to
its own score when it was already a candidate. Filters are applied inside the store, before
ranking. Results of several cubes are merged by score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memos_agents.config import RetrievalConfig
from memos_agents.plaintext.stores.base import BaseMemoryStore
from memos_agents.schema import MemoryQuery, ScoredMemory, SearchFilters


class HybridRetriever:
    """Dense + BM25 + graph retrieval with RRF fusion.

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
        top_k: int,
        filters: SearchFilters | None = None,
    ) -> list[ScoredMemory]:
        """Return up to ``top_k`` results over ``cube_ids``, best first.

        Args:
            store: The plaintext store.
            cube_ids: Cubes to search (already access-checked by the caller).
            query: The parsed query.
            query_vector: Its embedding, shape ``(dim,)``; None skips dense retrieval.
            top_k: Results to return (≥ 1).
            filters: Store-side filters (default: active memories).

        Returns:
            Scored results without embeddings; ``tokens`` is left 0 (the scheduler fills it).

        """
        filters = filters or SearchFilters()
        scored: list[tuple[float, str, str, dict[str, float], str | None]] = []
        for cube_id in cube_ids:
            scored.extend(self._search_cube(store, cube_id, query, query_vector, filters))
        scored.sort(key=lambda r: -r[0])
        top = scored[:top_k]
        out: list[ScoredMemory] = []
        for cube_id in dict.fromkeys(r[1] for r in top):
            wanted = [r for r in top if r[1] == cube_id]
            items = {i.id: i for i in store.get(cube_id, [r[2] for r in wanted])}
            out.extend(
                ScoredMemory(item=items[r[2]], score=r[0], signals=r[3], via=r[4]) for r in wanted if r[2] in items
            )
        out.sort(key=lambda r: -r.score)
        return out

    def _search_cube(
        self,
        store: BaseMemoryStore,
        cube_id: str,
        query: MemoryQuery,
        query_vector: np.ndarray | None,
        filters: SearchFilters,
    ) -> list[tuple[float, str, str, dict[str, float], str | None]]:
        cfg = self.config
        signals: dict[str, dict[str, float]] = {}
        fused: dict[str, float] = {}
        rankings: list[tuple[str, float, list[tuple[str, float]]]] = []
        if query_vector is not None and cfg.dense_weight > 0:
            rankings.append(
                (
                    "dense",
                    cfg.dense_weight,
                    store.vector_search(cube_id, query_vector.tolist(), cfg.candidates, filters),
                )
            )
        if cfg.bm25_weight > 0:
            rankings.append(("bm25", cfg.bm25_weight, store.text_search(cube_id, query.text, cfg.candidates, filters)))
        for name, weight, hits in rankings:
            for rank, (item_id, raw) in enumerate(hits):
                fused[item_id] = fused.get(item_id, 0.0) + weight / (cfg.rrf_k + rank + 1)
                signals.setdefault(item_id, {})[name] = raw
        via: dict[str, str] = {}
        if cfg.expand_top > 0 and cfg.neighbor_weight > 0 and fused and cfg.expand_types:
            seeds = sorted(fused, key=lambda i: -fused[i])[: cfg.expand_top]
            bonus: dict[str, float] = {}
            for n in store.expand(cube_id, seeds, cfg.expand_types, depth=1, filters=filters):
                gain = cfg.neighbor_weight * fused[n.from_id]
                if gain > bonus.get(n.id, 0.0):
                    bonus[n.id] = gain
                    if n.id not in fused:
                        via[n.id] = n.from_id
            for item_id, gain in bonus.items():
                fused[item_id] = fused.get(item_id, 0.0) + gain
                signals.setdefault(item_id, {})["graph"] = gain
        return [(score, cube_id, item_id, signals[item_id], via.get(item_id)) for item_id, score in fused.items()]
