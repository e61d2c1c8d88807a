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
import time
from collections.abc import Callable, Sequence
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
from memos_agents.plaintext.stores import base
from memos_agents.schema import LifecycleState, MemoryItem, MemoryType, SearchFilters, utcnow

__all__ = [
    "TRANSITIONS",
    "LifecyclePolicy",
    "LifecycleReport",
    "MemLifecycle",
    "check_transition",
    "transitioned",
]

S = LifecycleState

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
        max_items: The most items one step moves in one cube per pass (default 10,000).

    """

    model_config = ConfigDict(extra="forbid")

    expire: bool = True
    purge_expired_after_days: float | None = Field(default=30.0, ge=0, le=36_500)
    promote_working_after_hours: float | None = Field(default=24.0, ge=0, le=876_000)
    max_items: int = Field(default=10_000, ge=1, le=100_000)

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
        skipped: Items whose move the store refused (id -> the error), retried by the next pass.
        more: Whether a step stopped at ``max_items`` (the next pass goes on).

    """

    cube_id: str
    at: datetime
    seconds: float = 0.0
    expired: list[str] = Field(default_factory=list)
    purged: list[str] = Field(default_factory=list)
    promoted: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    more: bool = False


class MemLifecycle:
    """Runs lifecycle transitions and maintenance passes as flows (each step one store batch).

    Args:
        policy: The maintenance policy (default :class:`LifecyclePolicy`).
        clock: Returns "now" (UTC); injectable for tests (default: the system clock).

    """

    def __init__(self, policy: LifecyclePolicy | None = None, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.policy = policy or LifecyclePolicy()
        self.clock = clock

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
            try:
                (result,) = yield [base.WriteOp(cube_id, base.WriteBatch(update=moved))]
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
        report.seconds = time.perf_counter() - started
        return report

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
