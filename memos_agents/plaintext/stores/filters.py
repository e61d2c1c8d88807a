"""The one filter compiler: :class:`~memos_agents.schema.SearchFilters` → typed predicates.

Every backend renders the same predicates in its own language (SQL in the SQLite store, Cypher in
the Neo4j store, numpy masks over the SQLite vector cache, Python in the in-memory store), so a new
filter field is added here once and each renderer learns one more predicate kind at most.

Fields named by predicates are stored item columns/properties: ``status``, ``node_kind``,
``memory_type``, ``user_id``, ``event_us`` (event time as integer microseconds since the epoch)
and ``tags``; the caller's read scope (:func:`visible_to`) tests ``visibility`` and ``author_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from memos_agents.schema import MemoryItem, SearchFilters, Visibility

#: ``in``: the field's value is one of ``value`` (a tuple); ``eq``: equals ``value``; ``ge``/``le``:
#: is at least/at most ``value`` (a missing value never matches); ``overlaps``: the field (a list)
#: shares an element with ``value`` (a tuple); ``visible_to``: the item may be read by principal
#: ``value`` (its visibility is not ``private`` or ``value`` is its author), or by anyone when
#: ``value`` is None (its visibility is ``public``): see :func:`visible_to`.
PredicateOp = Literal["in", "eq", "ge", "le", "overlaps", "visible_to"]


@dataclass(frozen=True, slots=True)
class Predicate:
    """One condition on a stored item field."""

    field: str
    op: PredicateOp
    value: Any


def event_us(value: datetime | None) -> int | None:
    """Return a UTC datetime as integer microseconds since the epoch (None stays None), for range filters."""
    return None if value is None else int(value.timestamp() * 1_000_000)


def compile_filters(filters: SearchFilters | None) -> list[Predicate]:
    """Translate filters into predicates, all of which must hold (None: no condition at all)."""
    if filters is None:
        return []
    out = [
        Predicate("status", "in", tuple(s.value for s in filters.statuses)),
        Predicate("node_kind", "in", tuple(k.value for k in filters.node_kinds)),
    ]
    if filters.memory_types is not None:
        out.append(Predicate("memory_type", "in", tuple(t.value for t in filters.memory_types)))
    if filters.user_id is not None:
        out.append(Predicate("user_id", "eq", filters.user_id))
    if filters.time_from is not None:
        out.append(Predicate("event_us", "ge", event_us(filters.time_from)))
    if filters.time_to is not None:
        out.append(Predicate("event_us", "le", event_us(filters.time_to)))
    if filters.tags_any is not None:
        out.append(Predicate("tags", "overlaps", tuple(filters.tags_any)))
    return out


def visible_to(principal: str | None) -> Predicate:
    """Return the read scope of a caller as a predicate (per-item visibility, MemGovernance).

    Args:
        principal: A caller with ``read`` on the cube: it sees items that are not ``private``,
            and its own private items (``author_id`` is ``principal``). None: a caller without
            ``read`` on the cube, who sees ``public`` items only.

    """
    return Predicate("visibility", "visible_to", principal)


def may_read(item: MemoryItem, principal: str | None) -> bool:
    """Return whether the scope ``visible_to(principal)`` admits ``item`` (the Python rendering)."""
    if principal is None:
        return item.visibility is Visibility.PUBLIC
    return item.visibility is not Visibility.PRIVATE or item.author_id == principal


def field_value(item: MemoryItem, name: str) -> Any:
    """Return the stored value of predicate field ``name`` for ``item`` (enum values as strings)."""
    if name == "event_us":
        return event_us(item.event_time)
    value = getattr(item, name)
    return getattr(value, "value", value)


def matches(predicates: Sequence[Predicate], item: MemoryItem) -> bool:
    """Return whether ``item`` satisfies every predicate (the Python rendering)."""
    for p in predicates:
        if p.op == "visible_to":
            if not may_read(item, p.value):
                return False
            continue
        value = field_value(item, p.field)
        if p.op == "in":
            ok = value in p.value
        elif p.op == "eq":
            ok = value == p.value
        elif p.op == "ge":
            ok = value is not None and value >= p.value
        elif p.op == "le":
            ok = value is not None and value <= p.value
        else:
            ok = bool(set(value) & set(p.value))
        if not ok:
            return False
    return True
