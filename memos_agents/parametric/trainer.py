"""A background LoRA trainer: one worker thread that trains queued jobs in turn (``hf`` extra).

:class:`LoRATrainer` takes jobs (memories, optional question–answer pairs, a :class:`LoRAConfig`
with its step and time budgets, a checkpoint directory, an output directory) and trains them one
after another with :func:`~memos_agents.parametric.lora.train_adapter` on its own copy of the base
model, so the caller's model keeps serving meanwhile. :meth:`LoRATrainer.status` reports the
state (``queued``, ``training``, ``done``, ``cancelled``, ``failed`` with the reason), the step out
of the planned steps, the last loss and the seconds spent. :meth:`LoRATrainer.cancel` stops a job
before its next step (a queued job never starts); a job that had a checkpoint directory keeps a
checkpoint of the step it stopped at, and a later job given the same directory and data resumes
from it: its step count, LoRA weights, optimizer state and data order continue, so training N
steps in one job or in several gives the same adapter.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from memos_agents.errors import InvalidInputError, NotFoundError
from memos_agents.parametric.lora import (
    AdapterArtifact,
    LoRAConfig,
    StopReason,
    TrainingProgress,
    _check_items,
    _check_qa,
    train_adapter,
)
from memos_agents.schema import MemoryItem

JobState = Literal["queued", "training", "done", "cancelled", "failed"]
#: Most jobs waiting in the queue of one trainer.
MAX_QUEUED_JOBS = 256


class JobStatus(BaseModel):
    """A snapshot of one training job.

    Attributes:
        job_id: The id :meth:`LoRATrainer.submit` returned.
        state: ``queued``, ``training``, ``done`` (the planned steps ran, or the time budget ended
            the run: see ``stopped_by``), ``cancelled`` or ``failed``.
        step: Steps done (resumed runs included).
        total_steps: Steps planned (None until the first step).
        loss: The last step's loss (nats per target token; None before the first step).
        elapsed_s: Wall-clock seconds since the job started training (0 while queued).
        stopped_by: Why training ended (``completed``, ``max_seconds``, ``cancelled``), once it has.
        reason: Why the job failed (the error's type and message), for ``failed``.
        checkpoint_dir: The job's checkpoint directory (None: none).
        output_dir: Where the adapter was saved (set once it is).

    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    state: JobState
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    elapsed_s: float = 0.0
    stopped_by: StopReason | None = None
    reason: str | None = None
    checkpoint_dir: str | None = None
    output_dir: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more (done, cancelled or failed)."""
        return self.state in ("done", "cancelled", "failed")


@dataclass
class _Job:
    job_id: str
    items: list[MemoryItem]
    config: LoRAConfig
    qa: dict[str, list[tuple[str, str]]]
    checkpoint_dir: Path | None
    output_dir: Path | None
    cancel: threading.Event = field(default_factory=threading.Event)
    status: JobStatus | None = None
    artifact: AdapterArtifact | None = None
    started: float = 0.0


class LoRATrainer:
    """Trains LoRA adapters in a background thread, one job at a time.

    Args:
        model: The base model (a transformers causal LM without peft layers).
        tokenizer: Its tokenizer.
        copy_model: Train on a deep copy made now (default True: ``model`` stays free for serving;
            SmolLM2-135M in bf16 costs about 270 MB more). With False the trainer changes ``model``
            while a job runs (it is restored afterwards) and nothing else may use it meanwhile.
        model_id: Name recorded in the adapters' fingerprint (default ``config.name_or_path``).

    The worker is a daemon thread started by the first :meth:`submit`; :meth:`close` (or leaving a
    ``with`` block) cancels what is left and joins it.

    """

    def __init__(self, model: Any, tokenizer: Any, *, copy_model: bool = True, model_id: str | None = None) -> None:
        self._model = copy.deepcopy(model) if copy_model else model
        self._tokenizer = tokenizer
        self._model_id = model_id
        self._jobs: dict[str, _Job] = {}
        self._queue: Queue[str | None] = Queue()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._ids = itertools.count(1)

    def __enter__(self) -> LoRATrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        items: Sequence[MemoryItem],
        config: LoRAConfig | None = None,
        *,
        qa: Mapping[str, Sequence[tuple[str, str]]] | None = None,
        checkpoint_dir: str | Path | None = None,
        output_dir: str | Path | None = None,
    ) -> str:
        """Queue a training job and return its id.

        Args:
            items: The memories (checked now: see :func:`~memos_agents.parametric.lora.training_examples`).
            config: Hyperparameters and budgets (default :class:`LoRAConfig`).
            qa: Question–answer pairs per item id.
            checkpoint_dir: Checkpoints go here; an existing checkpoint of the same model, data and
                hyperparameters is resumed.
            output_dir: The finished adapter is saved here (replacing what is there) when the job is done.

        Raises:
            InvalidInputError: Bad items or pairs, :data:`MAX_QUEUED_JOBS` jobs waiting, or the trainer is closed.

        """
        checked = _check_items(items)
        pairs = _check_qa(qa, {i.id for i in checked})
        with self._cond:
            if self._closed:
                raise InvalidInputError("the trainer is closed")
            waiting = sum(1 for j in self._jobs.values() if j.status is not None and j.status.state == "queued")
            if waiting >= MAX_QUEUED_JOBS:
                raise InvalidInputError(f"{waiting} training jobs are waiting already")
            job_id = f"lora-{next(self._ids)}"
            job = _Job(
                job_id=job_id,
                items=checked,
                config=config or LoRAConfig(),
                qa=pairs,
                checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
                output_dir=Path(output_dir) if output_dir is not None else None,
            )
            job.status = JobStatus(
                job_id=job_id,
                state="queued",
                checkpoint_dir=str(job.checkpoint_dir) if job.checkpoint_dir else None,
            )
            self._jobs[job_id] = job
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="memos-lora-trainer", daemon=True)
                self._worker.start()
        self._queue.put(job_id)
        return job_id

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no training job {job_id!r}")
        return job

    def status(self, job_id: str) -> JobStatus:
        """Return the job's current :class:`JobStatus`.

        Raises:
            NotFoundError: No such job.

        """
        with self._cond:
            status = self._job(job_id).status
            assert status is not None
            if status.state == "training":
                status = status.model_copy(update={"elapsed_s": round(time.monotonic() - self._job(job_id).started, 3)})
            return status

    def jobs(self) -> list[JobStatus]:
        """Return every job's status, in submission order."""
        with self._cond:
            ids = list(self._jobs)
        return [self.status(j) for j in ids]

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop: a queued job is cancelled at once, a training one before its next step.

        Returns:
            False if the job had finished already, else True.

        Raises:
            NotFoundError: No such job.

        """
        with self._cond:
            job = self._job(job_id)
            assert job.status is not None
            if job.status.finished:
                return False
            job.cancel.set()
            if job.status.state == "queued":
                self._set(job, state="cancelled", stopped_by="cancelled")
            return True

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job finishes (or ``timeout`` seconds pass); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            job = self._job(job_id)
            while job.status is not None and not job.status.finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        return self.status(job_id)

    def result(self, job_id: str) -> AdapterArtifact | None:
        """Return the job's adapter: a done job's, or a cancelled one's partial adapter (None otherwise).

        Raises:
            NotFoundError: No such job.

        """
        with self._cond:
            return self._job(job_id).artifact

    def close(self, *, timeout: float | None = None) -> None:
        """Cancel every unfinished job, stop the worker and wait for it (up to ``timeout`` seconds)."""
        with self._cond:
            self._closed = True
            for job_id in list(self._jobs):
                job = self._jobs[job_id]
                assert job.status is not None
                if not job.status.finished:
                    job.cancel.set()
                    if job.status.state == "queued":
                        self._set(job, state="cancelled", stopped_by="cancelled")
            worker = self._worker
        self._queue.put(None)
        if worker is not None:
            worker.join(timeout)

    # ----------------------------------------------------------------- worker

    def _set(self, job: _Job, **changes: Any) -> None:
        """Update a job's status (caller holds ``self._cond``) and wake waiters."""
        assert job.status is not None
        job.status = job.status.model_copy(update=changes)
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._cond:
                job = self._jobs[job_id]
                assert job.status is not None
                if job.status.state != "queued":
                    continue
                job.started = time.monotonic()
                self._set(job, state="training")
            self._train(job)

    def _train(self, job: _Job) -> None:
        def progress(p: TrainingProgress) -> None:
            with self._cond:
                self._set(job, step=p.step, total_steps=p.total_steps, loss=p.loss)

        try:
            artifact = train_adapter(
                self._model,
                self._tokenizer,
                job.items,
                job.config,
                qa=job.qa,
                progress=progress,
                cancel=job.cancel.is_set,
                checkpoint_dir=job.checkpoint_dir,
                model_id=self._model_id,
            )
            metrics = artifact.metrics
            state: JobState = "cancelled" if metrics.stopped_by == "cancelled" else "done"
            saved = None
            if state == "done" and job.output_dir is not None:
                saved = str(artifact.save(job.output_dir, overwrite=True))
            with self._cond:
                job.artifact = artifact
                last = metrics.losses[-1] if metrics.losses else None
                self._set(
                    job,
                    state=state,
                    step=metrics.steps,
                    total_steps=metrics.total_steps,
                    loss=last,
                    stopped_by=metrics.stopped_by,
                    output_dir=saved,
                    elapsed_s=round(time.monotonic() - job.started, 3),
                )
        except Exception as exc:  # the worker outlives any job: the failure is reported in the job's status
            with self._cond:
                self._set(
                    job,
                    state="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                    elapsed_s=round(time.monotonic() - job.started, 3),
                )
