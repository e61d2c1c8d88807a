"""Tree/graph organisation of plaintext memory (MemOS §5.2, "tree memory").

:class:`TreeOrganizer` turns freshly read items into one atomic :class:`WriteBatch`, in two steps:
:meth:`TreeOrganizer.plan` reads a :class:`TreeSnapshot` (each new item's nearest stored memories,
two store batches) and the pure :meth:`TreeOrganizer.organize` decides the :class:`TreeUpdate`. What
depends on state that a concurrent writer may change is left to the store's write transaction: a
session's topic node is *ensured* (inserted only if absent) and its first new turn *follows* the
newest stored turn of the session (resolved in the transaction).

* **Episodes in order** — each item FOLLOWS the previous item of its session (across calls too).
* **Topics** — every session (or, without one, every event day) has a topic node; its members hang
  under it by PARENT edges. A topic's text names the session, its date, speakers and key phrases;
  its embedding is the normalised mean of its first members' (no extra embedding call). Private
  items hang under a private topic of their author's (:func:`item_topic`), so no topic text shows
  readers of the cube what a private item says.
* **Near-duplicates merged** — an item whose cosine to an active memory of the same user and
  visibility that shares none of its source messages is at least ``merge_threshold`` is merged with it, unless the
  two differ in a number, date, time, name or negation (:func:`~memos_agents.plaintext.text.same_statement`):
  those are different statements (a correction, a new appointment), both stay active and the newer
  is linked to the older by CONFLICTS_WITH; nor when they happened on different days (a repeated
  event: both stay, linked by RELATE_TO). A true merge never drops information and never lets
  an older statement hide a newer one: the merged item takes the newer statement's text (followed
  by the older's unless the newer holds all of its content terms), the newer's event time and the
  union of provenance; the originals are archived (not deleted) and point to it by MERGED_TO, so
  they stay reachable.
* **Related items linked** — RELATE_TO to the most similar non-overlapping active memory of the
  same user when it lies in another session and the cosine is at least ``relate_threshold``.
* **Superseded statements archived** (MemLifecycle's conflicts and updates; ``ReaderConfig.supersede``)
  — a new *statement* (a fact: stored as given with ``mode="facts"`` or extracted by an LLM;
  never conversation turns, which are the record of what was said) supersedes a stored statement
  of the same subject and visibility (both expiring or neither) among its
  ``STATEMENT_NEIGHBOURS`` nearest whose cosine is at least ``supersede_threshold`` (a changed
  value moves the embedding) when it is not older and, by the rule :func:`~memos_agents.plaintext.text.changed_value`,
  restates it with a value changed. In fine mode the LLM decides instead
  (:mod:`~memos_agents.prompts.update_memory`: add, update = merge, supersede, ignore), the rule
  deciding where its answer failed. The new statement SUPERSEDES the old one (an edge from new
  to old: the old one is superseded by it), which is archived, never deleted: search returns the
  current statement and ``MemOS.superseded`` walks back through what it replaced.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import numpy as np

from memos_agents.config import ReaderConfig
from memos_agents.flow import Compute, Flow
from memos_agents.plaintext.stores.base import FollowLink, GetOp, Op, VectorSearchOp, WriteBatch
from memos_agents.plaintext.text import changed_value, content_terms, same_statement
from memos_agents.prompts.update_memory import MemoryAction, MemoryDecision
from memos_agents.schema import (
    ID_PATTERN,
    MAX_ITEM_TEXT_CHARS,
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryOrigin,
    NodeKind,
    RelationType,
    SearchFilters,
    Visibility,
    most_restrictive,
    utcnow,
)

T = TypeVar("T")


def session_key(item: MemoryItem) -> str:
    """Return the episode an item belongs to: its first session id, else ``":day:YYYY-MM-DD"``, else ``":undated"``.

    Session ids are well-formed ids, which start with a letter or digit, so the fallback keys (which
    start with ``:``) never equal a session's.
    """
    if item.sources.session_ids:
        return item.sources.session_ids[0]
    if item.event_time is not None:
        return item.event_time.strftime(":day:%Y-%m-%d")
    return ":undated"


def session_label(key: str) -> str:
    """Return how a :func:`session_key` reads in a topic's text (``"2023-05-08"``, ``"undated"``, the session id)."""
    return key.removeprefix(":day:").removeprefix(":")


def item_topic(item: MemoryItem) -> str:
    """Return the id of the topic node an item hangs under: its episode's, or for a private item its author's own.

    A topic's text names key phrases of its members, so private items get a private topic of their
    author's (and a FOLLOWS chain of their own) rather than one that readers of the cube see.
    """
    key = session_key(item)
    if item.visibility is Visibility.PRIVATE:
        return topic_id(f"{key}:private:{item.author_id or ''}")
    return topic_id(key)


def topic_id(session: str) -> str:
    """Deterministic id of a session's topic node, distinct for distinct session keys.

    ``"topic." + key`` when that is a valid id (at most 128 characters), else ``"topic-"`` and 48 hex
    digits of the key's SHA-256 (never truncated, so long session ids that share a prefix do not share a topic).
    """
    tid = "topic." + session
    if len(tid) <= 128 and ID_PATTERN.fullmatch(tid):
        return tid
    return "topic-" + hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()[:48]


def _unit(v: np.ndarray) -> list[float]:
    n = float(np.linalg.norm(v))
    return cast(list[float], (v / (n or 1.0)).astype(np.float32).tolist())


def _is_turn(item: MemoryItem) -> bool:
    """Whether an item holds conversation turns (fast-mode windows), not an LLM-extracted fact."""
    return item.node_kind == NodeKind.MEMORY and item.origin == MemoryOrigin.TURNS


def _kept_apart(new: MemoryItem, old: MemoryItem, score: float) -> Edge | None:
    """Return the edge that links two near-duplicates that must not be merged, or None if they may be.

    A different number, date, time, name or negation makes a new statement (CONFLICTS_WITH, newer
    to older); the same statement about another day is a repeated event (RELATE_TO).
    """
    if not same_statement(old.text, new.text):
        return Edge(source_id=new.id, target_id=old.id, type=RelationType.CONFLICTS_WITH, weight=score)
    if new.event_time is not None and old.event_time is not None and new.event_time.date() != old.event_time.date():
        return Edge(source_id=new.id, target_id=old.id, type=RelationType.RELATE_TO, weight=score)
    return None


def is_statement(item: MemoryItem) -> bool:
    """Whether an item states a fact that a newer statement can supersede.

    Facts are: stored as given (``mode="facts"``, ``origin=direct``), extracted by an LLM, or a
    merge of such (no line of it a ``"Speaker: "`` turn). Conversation turns are not: they are
    the record of what was said ("we hiked in the Alps", then "in the Andes", are two events).
    """
    if item.node_kind != NodeKind.MEMORY:
        return False
    if item.origin in (MemoryOrigin.EXTRACTED, MemoryOrigin.DIRECT):
        return True
    if item.origin != MemoryOrigin.MERGED:
        return False
    prefixes = tuple(f"{speaker}: " for speaker in item.sources.speakers)
    return not any(line.startswith(prefixes) for line in item.text.splitlines()) if prefixes else True


def _when(item: MemoryItem) -> datetime:
    return item.event_time or item.created_at


def _may_supersede(new: MemoryItem, old: MemoryItem) -> bool:
    """Whether ``new`` may replace ``old`` at all: statements of one subject and visibility, expiry alike, not older."""
    return (
        is_statement(new)
        and is_statement(old)
        and new.user_id == old.user_id
        and new.visibility == old.visibility
        and (new.expires_at is None) == (old.expires_at is None)
        and _when(new) >= _when(old)
        and not _overlap(new, old)
    )


def _overlap(a: MemoryItem, b: MemoryItem) -> bool:
    """Whether two items share a turn: a message id within a common session (ids are reused across sessions)."""
    if not set(a.sources.message_ids) & set(b.sources.message_ids):
        return False
    sa, sb = set(a.sources.session_ids), set(b.sources.session_ids)
    return not sa or not sb or bool(sa & sb)


@dataclass
class TreeUpdate:
    """What :meth:`TreeOrganizer.organize` decided: one atomic write and what it means.

    Attributes:
        batch: The write (new items, topic nodes to ensure, archived originals, edges, FOLLOWS links).
        memory_ids: Ids of the new memory items (turns, facts and merged items; not topic nodes).
        merged: How many new items were merged into others (and archived).

    """

    batch: WriteBatch
    memory_ids: list[str]
    merged: int


@dataclass(frozen=True)
class TreeSnapshot:
    """What organising reads of the stored tree: each new item's nearest stored memories.

    Attributes:
        neighbours: New item id → ``(stored item with embedding, cosine)``, best first, at least
            ``relate_threshold`` (for a statement: ``supersede_threshold`` when lower), among
            active memories of the same subject.

    """

    neighbours: dict[str, list[tuple[MemoryItem, float]]] = field(default_factory=dict)


#: A sans-IO body: yields store op batches, is sent their results, returns a value.
Body = Generator[list[Op], list[Any], T]
#: Fine mode's decision step: ``(new fact, stored statements it may supersede)`` pairs -> decision per new fact id.
Decider = Callable[[list[tuple[MemoryItem, list[MemoryItem]]]], dict[str, MemoryDecision]]


class TreeOrganizer:
    """Places new items in a cube's memory tree: a pure :meth:`organize` over what :meth:`plan` read.

    Args:
        config: Thresholds and key-phrase count (see :class:`~memos_agents.config.ReaderConfig`).

    """

    #: Stored neighbours read per new item.
    NEIGHBOURS = 3
    #: Stored neighbours read per new statement (the statement it restates may rank below others
    #: of the same frame: "Bob lives in Lisbon" beside "Ann lives in Porto" for "Ann lives in Lisbon").
    STATEMENT_NEIGHBOURS = 10

    def __init__(self, config: ReaderConfig | None = None) -> None:
        self.config = config or ReaderConfig()

    def plan(
        self,
        cube_id: str,
        items: Sequence[MemoryItem],
        edges: Sequence[Edge] = (),
        *,
        now: datetime | None = None,
        decide: Decider | None = None,
    ) -> Flow[TreeUpdate]:
        """Read the snapshot (two store batches), ask ``decide`` if given, and organize; a flow the facade drives.

        Args:
            cube_id: Target cube.
            items: New, embedded memory items in conversation order.
            edges: Edges that come with them (e.g. DERIVED_FROM from fine mode).
            now: The write's instant (default: the clock's now): stored memories whose
                ``expires_at`` has passed are no neighbours (nothing merges into expired content).
            decide: Fine mode's LLM decision (``MemReader.decide``), asked (one ``Compute`` step)
                about each extracted fact that has stored statements it may supersede.

        Returns:
            The :class:`TreeUpdate` (nothing is written here).

        """
        snapshot = yield from self.neighbours(
            cube_id,
            items,
            k=lambda i: self.STATEMENT_NEIGHBOURS if self.config.supersede and is_statement(i) else self.NEIGHBOURS,
            floor=self._floor,
            now=now,
        )
        decisions: dict[str, MemoryDecision] = {}
        if decide is not None and self.config.supersede:
            asks = [
                (i, [h for h, _ in snapshot.neighbours.get(i.id, []) if _may_supersede(i, h)])
                for i in items
                if i.origin == MemoryOrigin.EXTRACTED
            ]
            asks = [(i, hits) for i, hits in asks if hits]
            if asks:
                decisions = yield Compute(lambda: decide(asks))
        return self.organize(items, edges, snapshot, decisions)

    def neighbours(
        self,
        cube_id: str,
        items: Sequence[MemoryItem],
        *,
        k: Callable[[MemoryItem], int],
        floor: Callable[[MemoryItem], float],
        now: datetime | None = None,
    ) -> Body[TreeSnapshot]:
        """Read each item's ``k(item)`` nearest stored memories of its subject with cosine ≥ ``floor(item)``.

        Two store batches: one vector search per embedded memory item, then the hits (with
        embeddings) that are not past their ``expires_at`` at ``now`` (default: the clock's now).
        """
        searchable = [i for i in items if i.node_kind == NodeKind.MEMORY and i.embedding is not None]
        if not searchable:
            return TreeSnapshot()
        hits: list[list[tuple[str, float]]] = yield [
            VectorSearchOp(cube_id, i.embedding or [], k(i), SearchFilters(user_id=i.user_id)) for i in searchable
        ]
        kept = {i.id: [(h, sc) for h, sc in found if sc >= floor(i)] for i, found in zip(searchable, hits, strict=True)}
        wanted = list(dict.fromkeys(h for found in kept.values() for h, _ in found))
        stored: dict[str, MemoryItem] = {}
        if wanted:
            (got,) = yield [GetOp(cube_id, wanted, with_embeddings=True)]
            at = now or utcnow()
            stored = {i.id: i for i in got if i.expires_at is None or i.expires_at > at}
        return TreeSnapshot(
            {item_id: [(stored[h], sc) for h, sc in found if h in stored] for item_id, found in kept.items()}
        )

    def _floor(self, item: MemoryItem) -> float:
        """Return the lowest cosine at which a stored memory is a neighbour of ``item`` worth reading."""
        cfg = self.config
        if cfg.supersede and is_statement(item):
            return min(cfg.relate_threshold, cfg.supersede_threshold)
        return cfg.relate_threshold

    def organize(
        self,
        items: Sequence[MemoryItem],
        edges: Sequence[Edge],
        snapshot: TreeSnapshot,
        decisions: Mapping[str, MemoryDecision] | None = None,
    ) -> TreeUpdate:
        """Return the update that stores ``items`` with their tree edges, topics, merges and supersessions (pure).

        The input items are not changed: the batch holds copies.

        Args:
            items: New, embedded memory items in conversation order.
            edges: Edges that come with them.
            snapshot: Their nearest stored memories (see :meth:`plan`).
            decisions: The LLM's decision per new fact id (fine mode); the rule decides for the others.

        Returns:
            A batch adding the items (duplicates archived), merged items, ensuring topic nodes,
            updating archived originals, adding every edge and the FOLLOWS links.

        """
        new = [i.model_copy() for i in items]
        batch = WriteBatch(edges=list(edges))
        self._follows(new, batch)
        self._topics(new, batch)
        merged = self._dedupe_and_relate(new, snapshot, batch, decisions or {})
        batch.add = [*new, *batch.add]
        return TreeUpdate(
            batch=batch, memory_ids=[i.id for i in batch.add if i.node_kind == NodeKind.MEMORY], merged=merged
        )

    @staticmethod
    def _follows(items: Sequence[MemoryItem], batch: WriteBatch) -> None:
        """Chain each session's turns: the first FOLLOWS the session's newest stored turn (resolved by the store)."""
        last: dict[str, str] = {}
        for item in items:
            if not _is_turn(item):
                continue
            key = session_key(item)
            if key in last:
                batch.edges.append(Edge(source_id=item.id, target_id=last[key], type=RelationType.FOLLOWS))
            else:
                batch.follows.append(FollowLink(item_id=item.id, topic_id=item_topic(item)))
            last[key] = item.id

    def _topics(self, items: Sequence[MemoryItem], batch: WriteBatch) -> None:
        groups: dict[tuple[str, str], list[MemoryItem]] = {}
        for item in items:
            if _is_turn(item):
                groups.setdefault((session_key(item), item_topic(item)), []).append(item)
        for (session, tid), members in groups.items():
            batch.ensure.append(self._topic_node(tid, session, members))  # inserted unless it exists
            batch.edges.extend(Edge(source_id=tid, target_id=m.id, type=RelationType.PARENT) for m in members)

    def _topic_node(self, tid: str, session: str, members: list[MemoryItem]) -> MemoryItem:
        phrases = Counter(t for m in members for t in m.tags).most_common(max(self.config.key_phrases, 1) * 2)
        speakers = list(dict.fromkeys(s for m in members for s in m.sources.speakers))
        times = [m.event_time for m in members if m.event_time is not None]
        when = f" on {min(times):%d %B %Y}" if times else ""
        about = ", ".join(p for p, _ in phrases) or "various things"
        text = f"Topic {session_label(session)}{when}: {', '.join(speakers)} talk about {about}"
        vectors = [m.embedding for m in members if m.embedding is not None]
        return MemoryItem(
            id=tid,
            text=text,
            node_kind=NodeKind.TOPIC,
            key=session_label(session),
            tags=[p for p, _ in phrases[: self.config.key_phrases]],
            sources=members[0].sources.model_copy(update={"message_ids": [], "speakers": speakers}),
            user_id=members[0].user_id,
            visibility=Visibility.PRIVATE if members[0].visibility is Visibility.PRIVATE else Visibility.CUBE,
            event_time=min(times) if times else None,
            origin=MemoryOrigin.STRUCTURE,
            embedding=_unit(np.mean(np.asarray(vectors, dtype=np.float32), axis=0)) if vectors else None,
        )

    def _supersede(
        self,
        item: MemoryItem,
        neighbours: Sequence[tuple[MemoryItem, float]],
        decision: MemoryDecision | None,
        batch: WriteBatch,
        archived_now: set[str],
    ) -> tuple[MemoryItem, float] | None:
        """Archive the stored statements ``item`` supersedes (SUPERSEDES edges); return a forced merge, if any.

        With a ``decision`` (fine mode) it says what happens: ``supersede`` its target, ``update``
        (returned: merge with the target), ``ignore`` (``item`` archived, MERGED_TO the target),
        ``add`` (nothing). Without one, or when its target is no longer open (archived by an
        earlier item of this batch), every neighbour that :func:`changed_value` says ``item``
        restates with a value changed is superseded.
        """
        if not self.config.supersede:
            return None
        open_ = [(h, sc) for h, sc in neighbours if h.id not in archived_now and _may_supersede(item, h)]
        if decision is not None and decision.action is MemoryAction.ADD:
            return None
        target = None if decision is None else next(((h, sc) for h, sc in open_ if h.id == decision.target), None)
        if target is not None:
            assert decision is not None
            if decision.action is MemoryAction.UPDATE:
                return target
            if decision.action is MemoryAction.IGNORE:
                item.status = LifecycleState.ARCHIVED
                batch.edges.append(
                    Edge(source_id=item.id, target_id=target[0].id, type=RelationType.MERGED_TO, weight=target[1])
                )
                return None
            chosen = [target]
        else:
            chosen = [(h, sc) for h, sc in open_ if changed_value(h.text, item.text)]
        for hit, score in chosen:
            batch.update.append(hit.model_copy(update={"status": LifecycleState.ARCHIVED, "embedding": None}))
            batch.edges.append(Edge(source_id=item.id, target_id=hit.id, type=RelationType.SUPERSEDES, weight=score))
            archived_now.add(hit.id)
        return None

    def _dedupe_and_relate(
        self,
        items: Sequence[MemoryItem],
        snapshot: TreeSnapshot,
        batch: WriteBatch,
        decisions: Mapping[str, MemoryDecision],
    ) -> int:
        """Supersede, merge near-duplicates and link related items; return how many new items were archived.

        ``items`` are this update's own copies: their status is set here.
        """
        cfg = self.config
        pending: list[tuple[MemoryItem, np.ndarray]] = []  # active new items a later one may merge into
        archived_now: set[str] = set()  # stored items archived by this batch
        merged_count = 0
        inputs = {i.id for i in items}
        for item in items:
            if item.node_kind != NodeKind.MEMORY or item.embedding is None:
                continue
            vec = np.asarray(item.embedding, dtype=np.float32)
            neighbours = snapshot.neighbours.get(item.id, [])
            forced = self._supersede(item, neighbours, decisions.get(item.id), batch, archived_now)
            if item.status is LifecycleState.ARCHIVED:  # the LLM says a stored fact already holds it
                merged_count += 1
                continue
            best_score, best, is_stored = -1.0, None, False
            for hit, score in [] if forced else neighbours:
                if (
                    score < cfg.relate_threshold  # read only as a candidate to supersede
                    or hit.id in archived_now
                    or _overlap(hit, item)
                    or hit.visibility != item.visibility
                    or (hit.expires_at is None) != (item.expires_at is None)
                ):
                    continue  # overlapping windows share turns (neighbours, not duplicates); never across
                    # visibility, nor between a memory that expires and one that does not
                kept_apart = _kept_apart(item, hit, score) if score >= cfg.merge_threshold else None
                if kept_apart is not None:
                    batch.edges.append(kept_apart)
                elif score >= cfg.merge_threshold:
                    best_score, best, is_stored = score, hit, True
                elif session_key(hit) != session_key(item):
                    batch.edges.append(
                        Edge(source_id=item.id, target_id=hit.id, type=RelationType.RELATE_TO, weight=score)
                    )
                break
            for other, other_vec in pending:
                score = float(other_vec @ vec)
                if (
                    score > best_score
                    and other.user_id == item.user_id
                    and other.visibility == item.visibility
                    and (other.expires_at is None) == (item.expires_at is None)
                    and not _overlap(other, item)
                ):
                    kept_apart = _kept_apart(item, other, score) if score >= cfg.merge_threshold else None
                    if kept_apart is not None:
                        batch.edges.append(kept_apart)
                        continue
                    best_score, best, is_stored = score, other, False
            if forced is not None:  # the LLM says it refines a stored fact: merged with it
                best, best_score = forced
                is_stored = True
            elif best is None or best_score < cfg.merge_threshold:
                pending.append((item, vec))
                continue
            merged = self._merge(best, item)  # best is the older (stored or earlier in this batch)
            item.status = LifecycleState.ARCHIVED
            merged_count += 1
            if is_stored:
                batch.update.append(best.model_copy(update={"status": LifecycleState.ARCHIVED, "embedding": None}))
                archived_now.add(best.id)
            else:
                best.status = LifecycleState.ARCHIVED
                if best.id in inputs:  # not a merged item made by this batch
                    merged_count += 1
                pending = [(o, v) for o, v in pending if o.id != best.id]
            batch.add.append(merged)
            pending.append((merged, np.asarray(merged.embedding, dtype=np.float32)))
            for original in (item, best):
                batch.edges.append(
                    Edge(source_id=original.id, target_id=merged.id, type=RelationType.MERGED_TO, weight=best_score)
                )
        return merged_count

    def consolidate(self, changed: Sequence[MemoryItem], snapshot: TreeSnapshot) -> TreeUpdate:
        """Merge stored near-duplicates found after they were written (MemLifecycle's consolidation step; pure).

        For memories written without meeting each other (two concurrent adds, an import, a
        rollback), the same test as on write: an active memory of ``changed`` and an active
        neighbour of the same subject and visibility, expiry alike, sharing no turn, with cosine
        at least ``merge_threshold``, the same statement on the same day (:func:`_kept_apart`
        finds nothing), are merged as :meth:`_merge` does; the originals are archived and point
        to the merge by MERGED_TO. Each memory takes part in one merge per call.

        Args:
            changed: Stored memories (with embeddings) to look at.
            snapshot: Their nearest stored memories (each may list the memory itself: skipped).

        Returns:
            The update (merged items added, originals archived, MERGED_TO edges); ``merged``
            counts the merges.

        """
        cfg = self.config
        batch = WriteBatch()
        taken: set[str] = set()
        for item in changed:
            if item.id in taken or item.status is not LifecycleState.ACTIVATED or item.node_kind != NodeKind.MEMORY:
                continue
            for hit, score in snapshot.neighbours.get(item.id, []):
                if (
                    hit.id == item.id
                    or hit.id in taken
                    or score < cfg.merge_threshold
                    or hit.status is not LifecycleState.ACTIVATED
                    or hit.visibility != item.visibility
                    or (hit.expires_at is None) != (item.expires_at is None)
                    or _overlap(hit, item)
                ):
                    continue
                old, new = (hit, item) if _when(hit) <= _when(item) else (item, hit)
                if _kept_apart(new, old, score) is not None:
                    continue
                merged = self._merge(old, new)
                batch.add.append(merged)
                for original in (old, new):
                    batch.update.append(
                        original.model_copy(update={"status": LifecycleState.ARCHIVED, "embedding": None})
                    )
                    batch.edges.append(
                        Edge(source_id=original.id, target_id=merged.id, type=RelationType.MERGED_TO, weight=score)
                    )
                taken |= {old.id, new.id}
                break
        return TreeUpdate(batch=batch, memory_ids=[i.id for i in batch.add], merged=len(batch.add))

    def _merge(self, old: MemoryItem, new: MemoryItem) -> MemoryItem:
        """Merge a new item into an older near-duplicate stating the same thing, without losing either.

        The newer statement is ``new`` unless both have event times and ``old``'s is later. Its text
        is kept alone when it holds every content term of the older one; otherwise both, newer first
        (so a correction that drops a detail is still the first thing read; the newer alone if both
        would exceed :data:`~memos_agents.schema.MAX_ITEM_TEXT_CHARS`). The originals stay reachable
        by MERGED_TO.
        """
        if old.event_time is not None and new.event_time is not None and old.event_time > new.event_time:
            old, new = new, old
        if set(content_terms(new.text)) >= set(content_terms(old.text)) or (
            len(new.text) + len(old.text) + 1 > MAX_ITEM_TEXT_CHARS
        ):
            text = new.text
        else:
            text = new.text + "\n" + old.text
        return MemoryItem(
            text=text,
            memory_type=new.memory_type,
            key=new.key or old.key,
            tags=list(dict.fromkeys([*new.tags, *old.tags]))[: max(self.config.key_phrases, 1) * 2],
            sources=old.sources.union(new.sources),
            user_id=new.user_id,
            visibility=most_restrictive(old.visibility, new.visibility),
            event_time=new.event_time or old.event_time,
            confidence=max(old.confidence, new.confidence),
            status=LifecycleState.ACTIVATED,
            # merges never cross expiry (see _dedupe_and_relate): no content outlives its own expiry
            expires_at=None
            if old.expires_at is None or new.expires_at is None
            else min(old.expires_at, new.expires_at),
            embedding=_unit(
                np.asarray(old.embedding or [], dtype=np.float32) + np.asarray(new.embedding or [], dtype=np.float32)
            ),
            origin=MemoryOrigin.MERGED,
            created_at=max(old.created_at, new.created_at),  # stored when its newest content was (decay's age)
        )
