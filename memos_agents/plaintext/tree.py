"""Tree/graph organisation of plaintext memory (MemOS §5.2, "tree memory").

:class:`TreeOrganizer` turns freshly read items into one atomic :class:`WriteBatch`:

* **Episodes in order** — each item FOLLOWS the previous item of its session (across calls too).
* **Topics** — every session (or, without one, every event day) has a topic node; its members hang
  under it by PARENT edges. A topic's text names the session, its date, speakers and key phrases;
  its embedding is the normalised mean of its first members' (no extra embedding call).
* **Near-duplicates merged** — an item whose cosine to an active memory of the same user that
  shares none of its source messages is at least ``merge_threshold`` is merged with it: a new merged item (longer
  text, union of provenance) replaces both, the originals are archived (not deleted) and point to
  it by MERGED_TO.
* **Related items linked** — RELATE_TO to the most similar non-overlapping active memory of the
  same user when it lies in another session and the cosine is at least ``relate_threshold``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import cast

import numpy as np

from memos_agents.config import ReaderConfig
from memos_agents.plaintext.stores.base import BaseMemoryStore, WriteBatch
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    NodeKind,
    RelationType,
    SearchFilters,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@\-]")


def session_key(item: MemoryItem) -> str:
    """Return the episode an item belongs to: its first session id, else its event day, else ``"undated"``."""
    if item.sources.session_ids:
        return item.sources.session_ids[0]
    if item.event_time is not None:
        return item.event_time.strftime("%Y-%m-%d")
    return "undated"


def topic_id(session: str) -> str:
    """Deterministic id of a session's topic node."""
    return ("topic." + _UNSAFE.sub("_", session))[:128]


def _unit(v: np.ndarray) -> list[float]:
    n = float(np.linalg.norm(v))
    return cast(list[float], (v / (n or 1.0)).astype(np.float32).tolist())


def _is_turn(item: MemoryItem) -> bool:
    """Whether an item holds conversation turns (fast-mode windows), not an LLM-extracted fact."""
    return item.node_kind == NodeKind.MEMORY and not item.metadata.get("extracted_by")


def _overlap(a: MemoryItem, b: MemoryItem) -> bool:
    return bool(set(a.sources.message_ids) & set(b.sources.message_ids))


class TreeOrganizer:
    """Builds the write batch that places new items in a cube's memory tree.

    Args:
        config: Thresholds and key-phrase count (see :class:`~memos_agents.config.ReaderConfig`).

    """

    def __init__(self, config: ReaderConfig | None = None) -> None:
        self.config = config or ReaderConfig()

    def organize(
        self, store: BaseMemoryStore, cube_id: str, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()
    ) -> WriteBatch:
        """Return the batch that stores ``items`` with their tree edges, topics and merges.

        Args:
            store: The cube's store (read only here; the caller applies the batch).
            cube_id: Target cube.
            items: New, embedded memory items in conversation order.
            edges: Edges that come with them (e.g. DERIVED_FROM from fine mode).

        Returns:
            A batch adding the items (duplicates archived), merged items and new topic nodes,
            updating archived originals, and adding every edge.

        """
        batch = WriteBatch(add=[], update=[], edges=list(edges))
        self._follows(store, cube_id, items, batch)
        self._topics(store, cube_id, items, batch)
        self._dedupe_and_relate(store, cube_id, items, batch)
        batch.add = [*items, *batch.add]
        return batch

    def _follows(self, store: BaseMemoryStore, cube_id: str, items: Sequence[MemoryItem], batch: WriteBatch) -> None:
        last: dict[str, str] = {}
        turns = [i for i in items if _is_turn(i)]
        for item in turns:
            key = session_key(item)
            if key not in last:
                previous = self._last_in_session(store, cube_id, key)
                if previous is not None:
                    last[key] = previous
            if key in last:
                batch.edges.append(Edge(source_id=item.id, target_id=last[key], type=RelationType.FOLLOWS))
            last[key] = item.id

    @staticmethod
    def _last_in_session(store: BaseMemoryStore, cube_id: str, session: str) -> str | None:
        """Return the newest stored turn of ``session``: the newest member of its topic node."""
        members = store.get_edges(cube_id, [topic_id(session)], [RelationType.PARENT], "out")
        return members[-1].target_id if members else None

    def _topics(self, store: BaseMemoryStore, cube_id: str, items: Sequence[MemoryItem], batch: WriteBatch) -> None:
        groups: dict[str, list[MemoryItem]] = {}
        for item in items:
            if _is_turn(item):
                groups.setdefault(session_key(item), []).append(item)
        existing = {t.id for t in store.get(cube_id, [topic_id(s) for s in groups])}
        for session, members in groups.items():
            tid = topic_id(session)
            if tid not in existing:
                batch.add.append(self._topic_node(tid, session, members))
            batch.edges.extend(Edge(source_id=tid, target_id=m.id, type=RelationType.PARENT) for m in members)

    def _topic_node(self, tid: str, session: str, members: list[MemoryItem]) -> MemoryItem:
        phrases = Counter(t for m in members for t in m.tags).most_common(max(self.config.key_phrases, 1) * 2)
        speakers = list(dict.fromkeys(s for m in members for s in m.sources.speakers))
        times = [m.event_time for m in members if m.event_time is not None]
        when = f" on {min(times):%d %B %Y}" if times else ""
        about = ", ".join(p for p, _ in phrases) or "various things"
        text = f"Topic {session}{when}: {', '.join(speakers)} talk about {about}"
        vectors = [m.embedding for m in members if m.embedding is not None]
        return MemoryItem(
            id=tid,
            text=text,
            node_kind=NodeKind.TOPIC,
            key=session,
            tags=[p for p, _ in phrases[: self.config.key_phrases]],
            sources=members[0].sources.model_copy(update={"message_ids": [], "speakers": speakers}),
            user_id=members[0].user_id,
            event_time=min(times) if times else None,
            embedding=_unit(np.mean(np.asarray(vectors, dtype=np.float32), axis=0)) if vectors else None,
        )

    def _dedupe_and_relate(
        self, store: BaseMemoryStore, cube_id: str, items: Sequence[MemoryItem], batch: WriteBatch
    ) -> None:
        cfg = self.config
        pending: list[tuple[MemoryItem, np.ndarray]] = []  # active new items a later one may merge into
        archived_now: set[str] = set()  # stored items archived by this batch
        for item in items:
            if item.node_kind != NodeKind.MEMORY or item.embedding is None:
                continue
            vec = np.asarray(item.embedding, dtype=np.float32)
            best_score, best, is_stored = -1.0, None, False
            hits = [
                (h, sc)
                for h, sc in store.vector_search(cube_id, item.embedding, 3, SearchFilters(user_id=item.user_id))
                if h not in archived_now and sc >= cfg.relate_threshold
            ]
            stored = {i.id: i for i in store.get(cube_id, [h for h, _ in hits], with_embeddings=True)}
            for hit_id, score in hits:
                hit = stored.get(hit_id)
                if hit is None or _overlap(hit, item):
                    continue  # overlapping windows share turns: neighbours, not duplicates
                if score >= cfg.merge_threshold:
                    best_score, best, is_stored = score, hit, True
                elif session_key(hit) != session_key(item):
                    batch.edges.append(
                        Edge(source_id=item.id, target_id=hit_id, type=RelationType.RELATE_TO, weight=score)
                    )
                break
            for other, other_vec in pending:
                score = float(other_vec @ vec)
                if score > best_score and other.user_id == item.user_id and not _overlap(other, item):
                    best_score, best, is_stored = score, other, False
            if best is None or best_score < cfg.merge_threshold:
                pending.append((item, vec))
                continue
            merged = self._merge(best, item)
            item.status = LifecycleState.ARCHIVED
            if is_stored:
                batch.update.append(best.model_copy(update={"status": LifecycleState.ARCHIVED}))
                archived_now.add(best.id)
            else:
                best.status = LifecycleState.ARCHIVED
                pending = [(o, v) for o, v in pending if o.id != best.id]
            batch.add.append(merged)
            pending.append((merged, np.asarray(merged.embedding, dtype=np.float32)))
            for original in (item, best):
                batch.edges.append(
                    Edge(source_id=original.id, target_id=merged.id, type=RelationType.MERGED_TO, weight=best_score)
                )

    def _merge(self, a: MemoryItem, b: MemoryItem) -> MemoryItem:
        longer = a if len(a.text) >= len(b.text) else b
        times = [t for t in (a.event_time, b.event_time) if t is not None]
        return MemoryItem(
            text=longer.text,
            memory_type=a.memory_type,
            key=a.key or b.key,
            tags=list(dict.fromkeys([*a.tags, *b.tags]))[: max(self.config.key_phrases, 1) * 2],
            sources=a.sources.union(b.sources),
            user_id=a.user_id,
            event_time=min(times) if times else None,
            confidence=max(a.confidence, b.confidence),
            status=LifecycleState.ACTIVATED,
            embedding=_unit(
                np.asarray(a.embedding or [], dtype=np.float32) + np.asarray(b.embedding or [], dtype=np.float32)
            ),
            metadata={"merged_from": 2},
        )
