"""MemLifecycle: the states a memory moves through, and the maintenance passes that move it.

After MemLifecycle in "MemOS: A Memory OS for AI System" (MemTensor 2025, section 5.2): every
memory is ``generated``, ``activated``, ``merged`` or ``archived``, and ends ``expired``;
``frozen`` pins a memory (it never expires). The reference implementation keeps a status field
that nothing moves; here every change of state goes through :data:`TRANSITIONS` (an illegal one
is a :class:`~memos_agents.errors.LifecycleTransitionError`) and is written as an update of the
item, so MemVault keeps the version it ends and the store's audit log records it.

A maintenance pass (:meth:`MemLifecycle.run_pass`, ``MemOS.run_lifecycle``, ``memos lifecycle
run``) follows a typed :class:`LifecyclePolicy`:

1. **Expiry**: items whose ``expires_at`` has passed become ``expired`` (search already leaves them
   out from that instant: ``HybridRetriever`` drops them). An item whose write the store refuses
   (e.g. it holds personal data its cube's redaction policy now refuses) is expired on its own
   or, failing that, reported in ``LifecycleReport.skipped`` and retried by the next pass.
2. **Retention**: ``expired`` items are deleted ``purge_expired_after_days`` after their expiry
   (MemVault keeps their last version until ``purge_versions``).
3. **Consolidation**: working memories older than ``promote_working_after_hours`` become
   long-term memories.
4. **Near-duplicates** (off unless ``consolidate_changed_within_hours`` is set): memories written
   in that window (the store's change index, :class:`~memos_agents.plaintext.stores.base.ChangedSinceOp`)
   that are near-duplicates of a stored memory are merged as on write
   (:meth:`~memos_agents.plaintext.tree.TreeOrganizer.consolidate`): those written without meeting
   each other (concurrent adds, imports, rollbacks). Set the window to the interval between
   passes: a pass then reads only what changed since the one before.
5. **Decay** (off unless ``archive_below_activation`` is set): ``activated`` memories whose ACT-R
   base-level activation (:mod:`memos_agents.plaintext.decay`: age, use count, last use) fell
   below the threshold are ``archived`` (kept, searchable by asking for ``archived``, movable
   back). Only memories unused for ``exp(-threshold / d)`` seconds can be below it, so the step
   reads just those, least recently used first (index on ``(cube, status, last use)``), at most
   ``max_items`` per pass; memories read but still above the threshold are passed over by the
   next pass (a cursor the caller keeps; ``MemOS`` keeps it for its lifetime), which starts from
   the front again once it has read to the end. A fresh process (``memos lifecycle run``) starts
   from the front.

Uses are recorded by :class:`AccessTracker`: ``MemOS`` notes every search result and read in
memory and a background thread records them in one batch per cube every ``access_flush_s``
seconds (:class:`~memos_agents.plaintext.stores.base.RecordAccessOp`), so search never waits on
the write.

Each step reads only what it moves: expiry and retention through the stores' index on
``(cube, status, expires_at)`` (:class:`~memos_agents.plaintext.stores.base.ListExpiringOp`),
consolidation the cube's active working memories (index on ``(cube, memory_type, status)``; by
its nature a small set). Each step moves at most ``max_items`` items per cube; the next pass goes
on where this one stopped, so a pass's cost is bounded by the work, not the store.

A pass runs as its caller, in the caller's read scope: another author's private memories are
left to their author's passes or to an operator's (a system-wide admin reads everything); search
leaves out every expired memory at once either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos_agents.errors import (
    ConfigError,
    InvalidInputError,
    LifecycleTransitionError,
    SensitiveDataError,
    VersionConflictError,
)
from memos_agents.flow import Flow
from memos_agents.plaintext.decay import DEFAULT_DECAY, idle_seconds_below, item_activation
from memos_agents.plaintext.stores import base
from memos_agents.plaintext.tree import TreeOrganizer
from memos_agents.schema import LifecycleState, MemoryItem, MemoryType, NodeKind, SearchFilters, utcnow

__all__ = [
    "TRANSITIONS",
    "AccessTracker",
    "LifecyclePolicy",
    "LifecycleReport",
    "MemLifecycle",
    "check_transition",
    "transitioned",
    "use_ops",
]

S = LifecycleState
log = logging.getLogger(__name__)

#: state -> the states it may move to (a move to the same state is no transition and always allowed).
TRANSITIONS: dict[LifecycleState, frozenset[LifecycleState]] = {
    S.GENERATED: frozenset({S.ACTIVATED, S.ARCHIVED, S.EXPIRED, S.FROZEN}),
    S.ACTIVATED: frozenset({S.MERGED, S.ARCHIVED, S.EXPIRED, S.FROZEN}),
    S.MERGED: frozenset({S.ARCHIVED, S.EXPIRED}),
    S.ARCHIVED: frozenset({S.ACTIVATED, S.EXPIRED}),
    S.FROZEN: frozenset({S.ACTIVATED}),
    S.EXPIRED: frozenset(),
}

#: How often a step re-reads and re-applies its moves when a concurrent write changed an item.
WRITE_ATTEMPTS = 5


def check_transition(old: LifecycleState | str, new: LifecycleState | str) -> None:
    """Check that a memory may move from state ``old`` to ``new`` (see :data:`TRANSITIONS`).

    Raises:
        LifecycleTransitionError: Not allowed (e.g. anything out of ``expired``, or ``frozen``
            straight to ``archived``), or an unknown state.

    """
    try:
        a, b = LifecycleState(old), LifecycleState(new)
    except ValueError:
        raise LifecycleTransitionError(f"unknown lifecycle state in {old!r} -> {new!r}") from None
    if a != b and b not in TRANSITIONS[a]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[a])) or "none: it is final"
        raise LifecycleTransitionError(f"a memory cannot move from {a.value} to {b.value} (from {a.value}: {allowed})")


def use_ops(cube_id: str, ids: Sequence[str], at: datetime) -> list[base.Op]:
    """Return the ops that record one use of each of ``ids`` at ``at`` (a memory brought back is one in use)."""
    ids = list(dict.fromkeys(ids))
    step = base.MAX_ACCESS_ITEMS
    return [base.RecordAccessOp(cube_id, dict.fromkeys(ids[i : i + step], 1), at) for i in range(0, len(ids), step)]


def transitioned(item: MemoryItem, to: LifecycleState | str) -> MemoryItem:
    """Return ``item`` moved to state ``to`` (checked; the store versions it when written).

    Freezing pins a memory: its ``expires_at`` is cleared (a frozen memory never expires, and
    unfreezing it does not bring back an expiry that passed meanwhile).

    Raises:
        LifecycleTransitionError: See :func:`check_transition`.

    """
    check_transition(item.status, to)
    update: dict[str, Any] = {"status": LifecycleState(to)}
    if update["status"] is LifecycleState.FROZEN:
        update["expires_at"] = None
    return item.model_copy(update=update)


class LifecyclePolicy(BaseModel):
    """What a maintenance pass does (see the module docstring); every step can be turned off.

    Attributes:
        expire: Move items past their ``expires_at`` to ``expired`` (default True).
        purge_expired_after_days: Delete ``expired`` items this many days after their expiry
            (default 30; None: never).
        promote_working_after_hours: Turn working memories older than this into long-term
            memories (default 24; None: never).
        consolidate_changed_within_hours: Merge near-duplicates among memories written in the
            last this many hours (None, the default: never; see step 4).
        archive_below_activation: Archive ``activated`` memories whose ACT-R activation is
            below this (None, the default: never). E.g. -7.5 archives a memory stored and never
            used for about 38 days; each use lifts it (see :mod:`memos_agents.plaintext.decay`).
        decay_rate: ACT-R's decay ``d`` for that step (0.5).
        max_items: The most items one step moves (decay: reads) in one cube per pass (default 10,000).
        activation_min_uses: Transformation plaintext → activation (needs ``MemOS.activation``,
            i.e. ``activation.enabled``): the cube's ``activated`` memories used at least this
            many times (most used first, up to ``activation.max_memories``; store index on the
            use count) get a KV-cache MemCube, built in the background; it is rebuilt when that set
            or a member's version changes (None, the default: off).
        activation_idle_days: A memory unused for this long is cold and leaves the KV cache;
            when no memory is hot any more the activation cube is deleted (demotion: the
            memories stay plaintext) (default 7; None: memories never go cold).
        parametric_min_uses: Transformation plaintext → parametric (needs ``MemOS.parametric``,
            i.e. ``parametric.enabled``): the cube's *stable* memories, ``activated``, used at least
            this many times and unchanged for ``parametric_stable_days``, get a LoRA adapter
            trained on them in the background; it is retrained when that set or a member's version
            changes, and the parametric cube is deleted when no memory is stable any more
            (demotion) (None, the default: off).
        parametric_stable_days: How long a memory must be unchanged to count as stable (default 7).

    """

    model_config = ConfigDict(extra="forbid")

    expire: bool = True
    purge_expired_after_days: float | None = Field(default=30.0, ge=0, le=36_500)
    promote_working_after_hours: float | None = Field(default=24.0, ge=0, le=876_000)
    consolidate_changed_within_hours: float | None = Field(default=None, gt=0, le=876_000)
    archive_below_activation: float | None = Field(default=None, ge=-100, le=100)
    decay_rate: float = Field(default=DEFAULT_DECAY, gt=0, lt=1)
    max_items: int = Field(default=10_000, ge=1, le=100_000)
    activation_min_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    activation_idle_days: float | None = Field(default=7.0, gt=0, le=36_500)
    parametric_min_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    parametric_stable_days: float = Field(default=7.0, ge=0, le=36_500)

    @classmethod
    def from_file(cls, path: str | Path) -> LifecyclePolicy:
        """Read a policy from a TOML, YAML or JSON file (by its suffix); a ``[lifecycle]`` table is used if present.

        Raises:
            ConfigError: Unreadable file, unknown suffix, or values the policy refuses.

        """
        p = Path(path)
        try:
            raw = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read lifecycle policy {p}: {exc.strerror or exc}") from None
        suffix = p.suffix.lower()
        try:
            if suffix == ".toml":
                import tomllib

                data: Any = tomllib.loads(raw)
            elif suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(raw)
            elif suffix == ".json":
                data = json.loads(raw)
            else:
                raise ConfigError(f"lifecycle policy {p}: use a .toml, .yaml, .yml or .json file")
        except ConfigError:
            raise
        except Exception as exc:  # each parser has its own error type
            raise ConfigError(f"lifecycle policy {p} is not valid {suffix[1:].upper()}: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("lifecycle"), dict):
            data = data["lifecycle"]
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid lifecycle policy {p}: {exc}") from None


class LifecycleReport(BaseModel):
    """What one maintenance pass moved in one cube.

    Attributes:
        cube_id: The cube.
        at: The pass's "now" (UTC).
        seconds: How long it took (wall clock).
        expired: Items moved to ``expired``.
        purged: Expired items deleted after retention.
        promoted: Working memories made long-term.
        consolidated: Merged memories made from near-duplicates (their originals archived).
        archived: Memories archived by decay.
        skipped: Items whose move the store refused (id -> the error), retried by the next pass.
        derived: What the pass did to derived memories, in words (KV caches requested, demoted, invalidated).
        more: Whether a step stopped at ``max_items`` (the next pass goes on).

    """

    cube_id: str
    at: datetime
    seconds: float = 0.0
    expired: list[str] = Field(default_factory=list)
    purged: list[str] = Field(default_factory=list)
    promoted: list[str] = Field(default_factory=list)
    consolidated: list[str] = Field(default_factory=list)
    archived: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    derived: list[str] = Field(default_factory=list)
    more: bool = False


class MemLifecycle:
    """Runs lifecycle transitions and maintenance passes as flows (each step one store batch).

    Args:
        policy: The maintenance policy (default :class:`LifecyclePolicy`).
        clock: Returns "now" (UTC); injectable for tests (default: the system clock).
        organizer: Merges near-duplicates for the consolidation step (default: default thresholds).
        cursors: Where each cube's decay step goes on (a dict the caller keeps between passes, so
            that memories that stay above the threshold do not hold back the ones after them).

    """

    def __init__(
        self,
        policy: LifecyclePolicy | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        organizer: TreeOrganizer | None = None,
        cursors: dict[str, tuple[datetime, str]] | None = None,
    ) -> None:
        self.policy = policy or LifecyclePolicy()
        self.clock = clock
        self.organizer = organizer or TreeOrganizer()
        #: Where each cube's decay step goes on at the next pass (kept by the caller across passes).
        self.cursors: dict[str, tuple[datetime, str]] = cursors if cursors is not None else {}

    def transition(self, cube_id: str, ids: Sequence[str], to: LifecycleState | str) -> Flow[list[MemoryItem]]:
        """Move the items ``ids`` of a cube to state ``to`` in one write (all or none); return them as stored.

        Items already in ``to`` are returned unchanged (nothing written for them).

        Raises:
            MemoryNotFoundError: An id that is not an item of the cube the caller may read.
            LifecycleTransitionError: A move the table does not allow (nothing is written).

        """
        from memos_agents.errors import MemoryNotFoundError

        try:
            target = LifecycleState(to)
        except ValueError:
            raise LifecycleTransitionError(f"unknown lifecycle state {to!r}") from None
        ids = list(dict.fromkeys(ids))
        for attempt in range(WRITE_ATTEMPTS):
            (found,) = yield [base.GetOp(cube_id, ids, with_embeddings=True)]  # a move keeps the vector
            items = cast(list[MemoryItem], found)
            missing = sorted(set(ids) - {i.id for i in items})
            if missing:
                raise MemoryNotFoundError(f"no memory {missing[0]!r} in cube {cube_id!r}")
            moved = [transitioned(i, target) for i in items if i.status != target]
            if not moved:
                return items
            ops: list[base.Op] = [base.WriteOp(cube_id, base.WriteBatch(update=moved))]
            if target is LifecycleState.ACTIVATED:  # brought back (unarchived, unfrozen): a use, decay restarts
                ops += use_ops(cube_id, [i.id for i in moved], self.clock())
            try:
                (result, *_) = yield ops
            except VersionConflictError:
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
                continue
            stored = {i.id: i for i in cast(base.WriteResult, result).updated}
            return [stored.get(i.id, i) for i in items]
        raise AssertionError("unreachable")  # pragma: no cover

    def run_pass(self, cube_id: str) -> Flow[LifecycleReport]:
        """Run one maintenance pass over a cube (see the module docstring); return what moved."""
        started = time.perf_counter()
        now = self.clock()
        report = LifecycleReport(cube_id=cube_id, at=now)
        p = self.policy
        if p.expire:
            report.expired = yield from self._move(
                cube_id,
                lambda: [base.ListExpiringOp(cube_id, now, limit=p.max_items)],
                lambda item: transitioned(item, LifecycleState.EXPIRED),
                report,
            )
            report.more |= len(report.expired) >= p.max_items
        if p.purge_expired_after_days is not None:
            cut = now - timedelta(days=p.purge_expired_after_days)
            (old,) = yield [base.ListExpiringOp(cube_id, cut, expired=True, limit=p.max_items)]
            ids = [i.id for i in cast(list[MemoryItem], old)]
            if ids:
                yield [base.DeleteOp(cube_id, ids)]
            report.purged = ids
            report.more |= len(ids) >= p.max_items
        if p.promote_working_after_hours is not None:
            cut = now - timedelta(hours=p.promote_working_after_hours)
            working = SearchFilters(memory_types=[MemoryType.WORKING])  # active working memories
            report.promoted = yield from self._move(
                cube_id,
                lambda: [base.ListOp(cube_id, working, limit=p.max_items, with_embeddings=True)],
                lambda item: (
                    item.model_copy(update={"memory_type": MemoryType.LONG_TERM}) if item.created_at <= cut else None
                ),
                report,
            )
            report.more |= len(report.promoted) >= p.max_items
        if p.consolidate_changed_within_hours is not None:
            since = now - timedelta(hours=p.consolidate_changed_within_hours)
            report.consolidated = yield from self._consolidate(cube_id, since, report)
        if p.archive_below_activation is not None:
            threshold, d = p.archive_below_activation, p.decay_rate
            idle_cut = now - timedelta(seconds=min(idle_seconds_below(threshold, d), 3.0e9))
            start = self.cursors.get(cube_id)
            seen: list[MemoryItem] = []

            def idle() -> list[Any]:
                seen.clear()
                return [base.ListIdleOp(cube_id, idle_cut, limit=p.max_items, after=start)]

            def archive(item: MemoryItem) -> MemoryItem | None:
                seen.append(item)
                if item_activation(item, now, d) >= threshold:
                    return None
                return transitioned(item, LifecycleState.ARCHIVED)

            report.archived = yield from self._move(cube_id, idle, archive, report)
            # memories still above the threshold stay idle: a full page makes the next pass read on
            # after them; a pass that reaches the end starts the next one from the least recently used
            if len(seen) >= p.max_items:
                tail = seen[-1]
                self.cursors[cube_id] = (tail.last_accessed_at or tail.created_at, tail.id)
                report.more = True
            else:
                self.cursors.pop(cube_id, None)
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _consolidate_k(_: MemoryItem) -> int:
        return TreeOrganizer.NEIGHBOURS + 1  # each finds itself too

    def _merge_floor(self, _: MemoryItem) -> float:
        return self.organizer.config.merge_threshold

    def _consolidate(self, cube_id: str, since: datetime, report: LifecycleReport) -> Flow[list[str]]:
        """Merge near-duplicates among memories changed since ``since`` (step 4); return the merged items' ids."""
        p = self.policy
        for attempt in range(WRITE_ATTEMPTS):
            (changed,) = yield [base.ChangedSinceOp(cube_id, since)]
            ids = cast(list[str], changed)[: p.max_items]
            report.more |= len(changed) > p.max_items
            if not ids:
                return []
            (found,) = yield [base.GetOp(cube_id, ids, with_embeddings=True)]
            items = [
                i
                for i in cast(list[MemoryItem], found)
                if i.status is LifecycleState.ACTIVATED and i.embedding is not None and i.node_kind is NodeKind.MEMORY
            ]
            if not items:
                return []
            snapshot = yield from self.organizer.neighbours(
                cube_id, items, k=self._consolidate_k, floor=self._merge_floor, now=self.clock()
            )
            update = self.organizer.consolidate(items, snapshot)
            if not update.batch.add:
                return []
            try:
                yield [base.WriteOp(cube_id, update.batch)]
            except VersionConflictError:
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
                continue
            return update.memory_ids
        raise AssertionError("unreachable")  # pragma: no cover

    def _move(
        self,
        cube_id: str,
        read: Callable[[], list[Any]],
        change: Callable[[MemoryItem], MemoryItem | None],
        report: LifecycleReport,
    ) -> Flow[list[str]]:
        """Read items with ``read``, write ``change`` of each (None: left as is) as one update; return the ids moved.

        A concurrent write that changed one of them (a version conflict) makes it read and apply
        again. When the store refuses the update for a reason of one item's own (it holds what the
        cube's redaction policy now refuses, or the model no longer accepts), the items are moved
        one by one and those refused are put in ``report.skipped``.
        """
        for attempt in range(WRITE_ATTEMPTS):
            (found,) = yield read()
            moved = [m for m in (change(i) for i in cast(list[MemoryItem], found)) if m is not None]
            if not moved:
                return []
            try:
                yield [base.WriteOp(cube_id, base.WriteBatch(update=moved))]
            except VersionConflictError:
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
                continue
            except (SensitiveDataError, InvalidInputError):
                done = []
                for item in moved:
                    try:
                        yield [base.WriteOp(cube_id, base.WriteBatch(update=[item]))]
                    except (SensitiveDataError, InvalidInputError, VersionConflictError) as exc:
                        report.skipped[item.id] = f"{type(exc).__name__}: {exc}"
                    else:
                        done.append(item.id)
                return done
            return [m.id for m in moved]
        raise AssertionError("unreachable")  # pragma: no cover


class AccessTracker:
    """Buffers memory uses (search results, reads) and records them in batches, off the caller's path.

    :meth:`note` only counts in memory (a dict update under a lock). A daemon thread records the
    counts every ``flush_s`` seconds, or sooner when ``max_pending`` distinct memories wait, as one
    :class:`~memos_agents.plaintext.stores.base.RecordAccessOp` per cube in one store batch (as
    trusted code: every noted use came from a read the store authorised). A failed write keeps
    the counts for the next flush (up to ``max_pending`` memories; beyond, uses are counted in
    :attr:`dropped` and logged); a cube deleted meanwhile is forgotten. :meth:`close` stops the
    thread and records what is left; uses noted in the last ``flush_s`` seconds before a process
    dies without closing are lost (they are usage statistics, not memories).

    A store without a sync path (a Neo4j store given only an async driver) gets no thread: the
    caller's async paths schedule :meth:`aflush` on their event loop when :meth:`due`
    (``MemOS.asearch``/``aget`` do).

    Args:
        store: The store to record into.
        flush_s: Seconds between flushes (default 2.0).
        max_pending: Distinct memories buffered before an early flush (default 4,096).
        clock: "Now" (UTC) written as the time of use (default: the system clock).
        threaded: Flush from a background thread (default True; False: only when asked).

    """

    def __init__(
        self,
        store: base.BaseMemoryStore,
        *,
        flush_s: float = 2.0,
        max_pending: int = 4096,
        clock: Callable[[], datetime] = utcnow,
        threaded: bool = True,
    ) -> None:
        self.store = store
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.clock = clock
        self.threaded = threaded
        self._last_flush = time.monotonic()
        #: Uses given up because the store kept refusing and the buffer was full.
        self.dropped = 0
        self._pending: dict[str, Counter[str]] = {}
        self._size = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def note(self, uses: Iterable[tuple[str, str]]) -> None:
        """Count one use of each ``(cube_id, item_id)``; never blocks on the store."""
        with self._lock:
            if self._closed:
                return
            for cube_id, item_id in uses:
                counts = self._pending.setdefault(cube_id, Counter())
                if item_id not in counts:
                    self._size += 1
                counts[item_id] += 1
            full = self._size >= self.max_pending
            if self.threaded and self._size and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="memos-access-tracker", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed tracker takes no more uses)."""
        return self._closed

    def due(self) -> bool:
        """Whether uses wait and ``flush_s`` passed since the last flush, or the buffer is full."""
        with self._lock:
            size = self._size
        return bool(size) and (size >= self.max_pending or time.monotonic() - self._last_flush >= self.flush_s)

    @property
    def pending(self) -> int:
        """How many distinct memories have uses not yet recorded."""
        with self._lock:
            return self._size

    def _take(self) -> tuple[dict[str, Counter[str]], datetime]:
        with self._lock:
            taken, self._pending, self._size = self._pending, {}, 0
            self._last_flush = time.monotonic()
        try:
            return taken, self.clock()
        except Exception:  # a broken clock loses no counts
            self._failed(taken, RuntimeError("the clock failed"))
            raise

    def _ops(self, taken: dict[str, Counter[str]], at: datetime) -> list[base.RecordAccessOp]:
        ops = []
        for cube_id, counts in taken.items():
            items = [(i, min(n, 1_000_000)) for i, n in counts.items()]
            for start in range(0, len(items), base.MAX_ACCESS_ITEMS):
                ops.append(base.RecordAccessOp(cube_id, dict(items[start : start + base.MAX_ACCESS_ITEMS]), at))
        return ops

    def _failed(self, taken: dict[str, Counter[str]], exc: Exception) -> None:
        """Keep the counts of a failed flush for the next one (cubes that are gone are forgotten)."""
        from memos_agents.errors import CubeNotFoundError

        if isinstance(exc, CubeNotFoundError) and len(taken) == 1:
            return
        log.warning("access tracking: recording uses failed, retrying later: %s", exc)
        with self._lock:
            for cube_id, counts in taken.items():
                mine = self._pending.setdefault(cube_id, Counter())
                for item_id, n in counts.items():
                    if item_id not in mine and self._size >= self.max_pending:
                        self.dropped += n
                        continue
                    if item_id not in mine:
                        self._size += 1
                    mine[item_id] += n
        if self.dropped:
            log.warning("access tracking: %d uses dropped (the store kept refusing)", self.dropped)

    def flush(self) -> int:
        """Record every buffered use now; return how many memories were recorded."""
        with self._flushing:
            taken, at = self._take()
            if not taken:
                return 0
            try:
                results = self.store.batch(self._ops(taken, at))
            except Exception as exc:  # any store failure: keep the counts, never break the caller
                if len(taken) > 1:  # one cube that is gone fails the batch: record cube by cube
                    return sum(self._flush_one(cube_id, counts, at) for cube_id, counts in taken.items())
                self._failed(taken, exc)
                return 0
            return sum(int(n) for n in results)

    def _flush_one(self, cube_id: str, counts: Counter[str], at: datetime) -> int:
        try:
            results = self.store.batch(self._ops({cube_id: counts}, at))
        except Exception as exc:
            self._failed({cube_id: counts}, exc)
            return 0
        return sum(int(n) for n in results)

    async def aflush(self) -> int:
        """Async twin of :meth:`flush` (the store's async path)."""
        taken, at = self._take()
        total = 0
        for cube_id, counts in taken.items():
            try:
                results = await self.store.abatch(self._ops({cube_id: counts}, at))
            except Exception as exc:
                self._failed({cube_id: counts}, exc)
                continue
            total += sum(int(n) for n in results)
        return total

    def _stop(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join(timeout=max(5.0, 2 * self.flush_s))

    def close(self) -> None:
        """Stop the thread and record what is left."""
        self._stop()
        self.flush()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        self._stop()
        await self.aflush()

    def _loop(self) -> None:
        """Flush every ``flush_s`` s; end when closed, idle or failing (the next :meth:`note` starts it again)."""
        failures = 0
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
            try:
                failures = failures + 1 if self.flush() == 0 and self.pending else 0
            except Exception:  # never die holding the slot: the next note starts a new thread
                log.exception("access tracking: flush failed")
                failures += 1
            with self._lock:
                if not self._size or self._closed or failures >= 5:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
