"""Sans-IO flows: one implementation of each operation, driven sync or async.

A flow is a generator that yields *effects* and is sent their results:

* a ``list`` of store ops (:mod:`memos_agents.plaintext.stores.base`): one store batch, one
  transaction, run as the flow's caller; it is sent the list of results, or the batch's exception
  is thrown into it;
* a :class:`Compute`: blocking work (embedding, an LLM call, token counting of many texts); it is
  sent the return value, or the exception is thrown in.

:func:`run_sync` drives a flow with ``store.batch`` and direct calls; :func:`run_async` with
``await store.abatch`` (the Neo4j driver's native async path) and ``asyncio.to_thread`` for
compute, so the event loop never blocks. The Neo4j store drives its Cypher bodies the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from memos_agents.plaintext.stores.base import BaseMemoryStore, CallContext, Op

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Compute:
    """Blocking work a flow needs done: ``fn()`` (run in a worker thread by the async driver)."""

    fn: Callable[[], Any]


Effect = list[Op] | Compute
#: A flow: yields effects, is sent their results, returns ``T``.
Flow = Generator[Effect, Any, T]


def run_sync(flow: Flow[T], store: BaseMemoryStore, ctx: CallContext) -> T:
    """Drive ``flow`` to its end on the calling thread; return its value."""
    try:
        effect = next(flow)
        while True:
            try:
                result = effect.fn() if isinstance(effect, Compute) else store.batch(effect, ctx=ctx)
            except Exception as exc:  # delivered to the flow, which may handle it (e.g. retry)
                effect = flow.throw(exc)
            else:
                effect = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], store: BaseMemoryStore, ctx: CallContext) -> T:
    """Async twin of :func:`run_sync`: store batches on ``abatch``, compute in a worker thread."""
    try:
        effect = next(flow)
        while True:
            try:
                if isinstance(effect, Compute):
                    result = await asyncio.to_thread(effect.fn)
                else:
                    result = await store.abatch(effect, ctx=ctx)
            except Exception as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def piggyback(flow: Flow[T], extra: list[Op]) -> Flow[tuple[T, list[Any]]]:
    """Run ``flow`` with ``extra`` ops appended to its first store batch; return its value and their results.

    Saves a round trip (and a transaction) for a small read that goes with the flow's own, and
    keeps a refusal of the caller in the flow's first batch. A flow that runs no store batch gets
    ``extra`` in a batch of its own at its end; an empty ``extra`` changes nothing.
    """
    got: list[Any] | None = None if extra else []
    try:
        effect = next(flow)
        while True:
            try:
                if got is None and isinstance(effect, list):
                    results = yield [*effect, *extra]
                    got, result = results[len(effect) :], results[: len(effect)]
                else:
                    result = yield effect
            except Exception as exc:  # the batch failed: the flow may handle it, as under a driver
                effect = flow.throw(exc)
                continue
            effect = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
    if got is None:
        got = yield extra
    return value, got
