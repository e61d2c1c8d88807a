"""A background worker (one thread, an in-process queue) that builds derived memories off the request path.

``MemOS.add`` and ``MemOS.search`` never wait on a model: they (or the lifecycle pass) submit a
job keyed by the artifact it builds, and the worker runs jobs one at a time in submission order.
Every key has a visible :class:`JobStatus` (``queued``, ``building``, ``ready``, ``stale``,
``failed`` with the reason). A key submitted again while queued is not queued twice; submitted
while building, it runs once more after the current build (its inputs changed meanwhile).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from memos_agents.errors import InvalidInputError
from memos_agents.schema import utcnow

log = logging.getLogger(__name__)


class JobState(StrEnum):
    """State of a derived memory's build."""

    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    STALE = "stale"
    FAILED = "failed"


class JobStatus(BaseModel):
    """What the worker knows of one key.

    Attributes:
        key: The artifact (an activation cube id).
        state: See :class:`JobState`.
        reason: Why it failed or went stale (None otherwise).
        updated_at: When the state last changed (UTC).
        builds: How many builds of this key finished (ready or failed).

    """

    model_config = ConfigDict(extra="forbid")

    key: str
    state: JobState
    reason: str | None = None
    updated_at: datetime
    builds: int = 0


class BuildWorker:
    """Runs build jobs on one daemon thread (started on the first submit).

    Args:
        name: Thread name (default ``"memos-kv-worker"``).

    """

    def __init__(self, name: str = "memos-kv-worker") -> None:
        self._name = name
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._jobs: dict[str, Callable[[], None]] = {}
        self._status: dict[str, JobStatus] = {}
        self._again: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, key: str, job: Callable[[], None]) -> JobStatus:
        """Queue ``job`` (no arguments; raises to fail) as the build of ``key``; return its status.

        Raises:
            InvalidInputError: The worker is closed.

        """
        with self._cond:
            if self._closed:
                raise InvalidInputError("the build worker is closed")
            self._jobs[key] = job  # the newest job for a key is the one that runs
            current = self._status.get(key)
            if current is not None and current.state == JobState.QUEUED:
                return current
            if current is not None and current.state == JobState.BUILDING:
                self._again.add(key)
                return current
            status = self._set(key, JobState.QUEUED, None)
            self._queue.put(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            return status

    def status(self, key: str) -> JobStatus | None:
        """Return the status of ``key`` (None: never submitted in this process)."""
        with self._cond:
            return self._status.get(key)

    def mark(self, key: str, state: JobState, reason: str | None = None) -> JobStatus:
        """Record a state found outside a build (``stale`` when a source changed, ``ready`` when found on disk)."""
        with self._cond:
            current = self._status.get(key)
            if current is not None and current.state in (JobState.QUEUED, JobState.BUILDING):
                return current
            return self._set(key, state, reason)

    def wait(self, key: str, timeout: float | None = None) -> JobStatus | None:
        """Block until ``key`` is neither queued nor building (or ``timeout`` seconds passed); return its status."""
        with self._cond:
            self._cond.wait_for(
                lambda: (s := self._status.get(key)) is None or s.state not in (JobState.QUEUED, JobState.BUILDING),
                timeout,
            )
            return self._status.get(key)

    def join(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or building; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: all(s.state not in (JobState.QUEUED, JobState.BUILDING) for s in self._status.values()),
                timeout,
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop after the current job; queued jobs are dropped (their status says ``failed``: closed)."""
        with self._cond:
            self._closed = True
            for key, s in self._status.items():
                if s.state == JobState.QUEUED:
                    self._set(key, JobState.FAILED, "the worker was closed before the build ran")
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _set(self, key: str, state: JobState, reason: str | None, finished: bool = False) -> JobStatus:
        old = self._status.get(key)
        builds = (old.builds if old else 0) + (1 if finished else 0)
        status = JobStatus(key=key, state=state, reason=reason, updated_at=utcnow(), builds=builds)
        self._status[key] = status
        self._cond.notify_all()
        return status

    def _loop(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            with self._cond:
                if self._closed:
                    return
                job = self._jobs.pop(key, None)
                if job is None:
                    continue
                self._set(key, JobState.BUILDING, None)
            try:
                job()
            except Exception as exc:  # a failed build is a state, never a dead worker
                log.warning("build of %s failed: %s", key, exc)
                with self._cond:
                    self._set(key, JobState.FAILED, f"{type(exc).__name__}: {exc}", finished=True)
            else:
                with self._cond:
                    self._set(key, JobState.READY, None, finished=True)
            with self._cond:
                if key in self._again and not self._closed:
                    self._again.discard(key)
                    self._set(key, JobState.QUEUED, None)
                    self._queue.put(key)
