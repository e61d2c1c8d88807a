"""Parametric memory of a MemOS: LoRA-adapter MemCubes trained on plaintext memories, off the request path.

``MemOS.parametric`` (:class:`ParametricMemory`) trains, with the background
:class:`~memos_agents.parametric.trainer.LoRATrainer`, a LoRA adapter on a set of plaintext
memories of one cube and records it as the *parametric cube* ``lora.<cube>``: a header whose
:class:`~memos_agents.cube.ParametricPayload` holds the base-model fingerprint, the training
memories with their versions (DERIVED_FROM provenance), the hyperparameters and the training
metrics, and an adapter directory under ``<home>/parametric/`` (safetensors weights and manifest,
:class:`~memos_agents.parametric.lora.AdapterArtifact`).

The rules are those of activation memory (:mod:`memos_agents.activation.memory`): the build is
queued and visible (:meth:`ParametricMemory.status`: the trainer's state, step, loss); an adapter
is used only while every source memory is at its trained version, activated and readable by the
caller; deleting or forgetting a source deletes the adapter directory; the cube is owned by
whoever requested it and carries the source cube's ACL at training time. ``MemOS.chat`` activates
a fresh adapter of a searched cube when the scheduler picks it (never together with an injected
KV cache, see :mod:`memos_agents.operation.scheduler`) and unloads it from the model afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from memos_agents.activation.memory import (
    derived_headers,
    derived_of,
    read_sources,
    trusted_derived,
    write_derived_header,
)
from memos_agents.cube import CubeHeader, DerivedSource, ParametricPayload, derived_from_any
from memos_agents.errors import (
    ConfigError,
    CubeFormatError,
    CubeNotFoundError,
    InvalidInputError,
    MemOSError,
    PermissionDeniedError,
)
from memos_agents.flow import Flow
from memos_agents.models.llm import HFLocalLLM
from memos_agents.plaintext.stores import base
from memos_agents.schema import LifecycleState, MemoryItem, validate_id

if TYPE_CHECKING:
    from memos_agents.os import MemOS
    from memos_agents.parametric.lora import LoRAConfig
    from memos_agents.parametric.runtime import AdapterRuntime
    from memos_agents.parametric.trainer import JobStatus, LoRATrainer

log = logging.getLogger(__name__)

#: Prefix of parametric cube ids: ``lora.<source cube id>``.
LORA_CUBE_PREFIX = "lora."


def lora_cube_id(source_cube_id: str) -> str:
    """Return the parametric cube id of a plaintext cube (``lora.<id>``, hashed for a long id)."""
    validate_id(source_cube_id, "cube_id")
    cid = LORA_CUBE_PREFIX + source_cube_id
    return cid if len(cid) <= 128 else LORA_CUBE_PREFIX + hashlib.sha256(source_cube_id.encode()).hexdigest()[:48]


@dataclass(frozen=True, slots=True)
class UsableAdapter:
    """A fresh parametric cube the scheduler may activate."""

    cube_id: str
    header: CubeHeader


@dataclass
class _Pending:
    key: str
    cube_id: str
    user_id: str
    job_id: str
    items: list[MemoryItem]
    source: CubeHeader
    output: Path


class ParametricMemory:
    """The LoRA memory of one MemOS (``MemOS.parametric``): train, check, activate, invalidate.

    Args:
        mem: The MemOS.
        llm: The local HF model adapters are trained on and applied to.
        root: Directory of the adapters (default ``<home>/parametric``).
        config: Default hyperparameters and budgets (default :class:`~memos_agents.parametric.lora.LoRAConfig`).

    """

    def __init__(
        self, mem: MemOS, llm: HFLocalLLM, *, root: Path | None = None, config: LoRAConfig | None = None
    ) -> None:
        self.mem = mem
        self.llm = llm
        self.root = root or Path(mem.config.home) / "parametric"
        self.config = config
        self._trainer: LoRATrainer | None = None
        self._runtime: AdapterRuntime | None = None
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.RLock()

    # -- model, trainer, runtime -------------------------------------------------------------------
    def runtime(self) -> AdapterRuntime:
        """Return the adapter runtime over the served model (created on first use)."""
        from memos_agents.parametric.runtime import AdapterRuntime

        with self._lock:
            if self._runtime is None:
                model, tokenizer = self.mem.local_model()
                self._runtime = AdapterRuntime(model, tokenizer, model_id=self.llm.model_name)
            return self._runtime

    def _trainer_for(self) -> LoRATrainer:
        from memos_agents.parametric.trainer import LoRATrainer

        with self._lock:
            if self._trainer is None:
                model, tokenizer = self.mem.local_model()
                runtime = self._runtime
                if runtime is not None and runtime.loaded():  # train a copy of the base, never with adapters in
                    runtime.unload_all()
                self._trainer = LoRATrainer(model, tokenizer, copy_model=True, model_id=self.llm.model_name)
            return self._trainer

    def close(self) -> None:
        """Cancel queued training and stop the trainer."""
        with self._lock:
            if self._trainer is not None:
                self._trainer.close(timeout=30)

    # -- requests ------------------------------------------------------------------------------------
    def request(
        self, cube_id: str, user_id: str, memory_ids: Sequence[str], *, config: LoRAConfig | None = None
    ) -> JobStatus:
        """Queue training of an adapter on ``memory_ids`` of ``cube_id``; return the job's status at once.

        The memories are read now, as ``user_id`` (read permission); the adapter becomes the
        parametric cube :func:`lora_cube_id` when the job is done (:meth:`wait` or the next
        :meth:`usable` records it), owned by ``user_id`` with the source cube's ACL.

        Raises:
            InvalidInputError: Malformed ids, no ids, no activated memory among them, or too many jobs queued.
            CubeNotFoundError / PermissionDeniedError: From the store.

        """
        validate_id(cube_id, "cube_id")
        validate_id(user_id, "user_id")
        if isinstance(memory_ids, str) or not memory_ids:
            raise InvalidInputError("memory_ids must be a non-empty list of memory ids")
        ids = [validate_id(i, "memory id") for i in dict.fromkeys(memory_ids)]
        source, items = self.mem._run(self._read(cube_id, ids), user_id)
        if source.owner_id != user_id:
            raise PermissionDeniedError(f"only the owner of {cube_id!r} may train its adapter")
        items = [i for i in items if i.status == LifecycleState.ACTIVATED]
        if not items:
            raise InvalidInputError(f"none of the memories asked for is an activated memory of {cube_id!r}")
        key = lora_cube_id(cube_id)
        chosen = config or self.config
        from memos_agents.parametric.lora import LoRAConfig

        training = json.dumps((chosen or LoRAConfig()).training_key(), sort_keys=True, default=str)
        data = "|".join(f"{i.id}@{i.version}" for i in items) + "|" + training  # a checkpoint resumes only its own run
        digest = hashlib.sha256(data.encode()).hexdigest()[:32]
        output = self.root / key / digest
        trainer = self._trainer_for()
        with self._lock:
            previous = self._pending.pop(key, None)
        if previous is not None:  # a newer request replaces it: its job and files go
            self._drop(previous)
        job_id = trainer.submit(
            items, chosen, checkpoint_dir=self.root / key / f"{digest}.checkpoint", output_dir=output
        )
        with self._lock:
            self._pending[key] = _Pending(key, cube_id, user_id, job_id, items, source, output)
        return trainer.status(job_id)

    def _drop(self, pending: _Pending) -> None:
        """Cancel a job, wait for it to stop, and delete its output and checkpoint (they hold its memories)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.cancel(pending.job_id)
            trainer.wait(pending.job_id, 60)
        rel = str(pending.output.relative_to(self.root))
        _remove(self.root, rel)
        _remove(self.root, rel + ".checkpoint")

    def _read(self, cube_id: str, ids: list[str]) -> Flow[tuple[CubeHeader, list[MemoryItem]]]:
        source, items = yield [base.GetCubeOp(cube_id), base.GetOp(cube_id, ids)]
        return cast(CubeHeader, source), cast(list[MemoryItem], items)

    def status(self, cube_id: str) -> JobStatus | None:
        """Return the training status of ``cube_id``'s adapter in this process (None: none requested)."""
        with self._lock:
            pending = self._pending.get(lora_cube_id(cube_id))
        if pending is None or self._trainer is None:
            return None
        return self._trainer.status(pending.job_id)

    def training(self, cube_id: str) -> bool:
        """Whether a training job for ``cube_id``'s adapter is queued or running in this process."""
        status = self.status(cube_id)
        return status is not None and not status.finished

    def cancel(self, cube_id: str) -> bool:
        """Cancel the training of ``cube_id``'s adapter (its last checkpoint is kept for a later resume)."""
        with self._lock:
            pending = self._pending.get(lora_cube_id(cube_id))
        return bool(pending and self._trainer and self._trainer.cancel(pending.job_id))

    def wait(self, cube_id: str, timeout: float | None = None) -> JobStatus | None:
        """Wait for the training of ``cube_id``'s adapter, record the parametric cube when done; return the status."""
        with self._lock:
            pending = self._pending.get(lora_cube_id(cube_id))
        if pending is None or self._trainer is None:
            return None
        status = self._trainer.wait(pending.job_id, timeout)
        self.finalize()
        return status

    def finalize(self) -> list[str]:
        """Record the parametric cubes of finished jobs (done: header written; failed/cancelled: dropped)."""
        done = []
        with self._lock:
            pending = list(self._pending.values())
        for p in pending:
            assert self._trainer is not None
            status = self._trainer.status(p.job_id)
            if not status.finished:
                continue
            with self._lock:
                if self._pending.get(p.key) is p:
                    self._pending.pop(p.key)
            rel = str(p.output.relative_to(self.root))
            if status.state != "done" or not p.output.is_dir():
                _remove(self.root, rel)  # cancelled or failed: nothing of its memories stays
                _remove(self.root, rel + ".checkpoint")
                continue
            try:
                self.mem._run(self._record(p), p.user_id)
            except MemOSError as exc:  # one job's failure never fails the caller's chat
                log.warning("cannot record the adapter of %s: %s", p.key, exc)
                _remove(self.root, rel)
            else:
                done.append(p.key)
            _remove(self.root, rel + ".checkpoint")  # the adapter is final
        return done

    def _record(self, p: _Pending) -> Flow[None]:
        from memos_agents.parametric.lora import AdapterArtifact

        artifact = AdapterArtifact.load(p.output)
        m = artifact.manifest
        sources = [DerivedSource(cube_id=s.cube_id, item_id=s.item_id, version=s.version) for s in m.sources]
        metrics = {k: float(v) for k, v in m.metrics.model_dump().items() if isinstance(v, int | float)}
        payload = ParametricPayload(
            base_model=m.fingerprint.model_id,
            adapter_path=str(p.output.relative_to(self.root)),
            rank=m.config.rank,
            fingerprint=m.fingerprint,
            derived_from=sources,
            hyperparameters=m.config.model_dump(mode="json"),
            metrics=metrics,
            file_sha256=m.weights_sha256,
            size_bytes=m.weights_bytes,
        )
        try:
            (existing,) = yield [base.GetCubeOp(p.key)]
        except CubeNotFoundError:
            existing = None
        replaced = yield from write_derived_header(p.key, p.source, existing, payload, p.user_id, "LoRA adapter")
        old = cast(ParametricPayload, replaced.payload).adapter_path if replaced is not None else None
        if old and old != payload.adapter_path:
            _remove(self.root, old)

    # -- use -----------------------------------------------------------------------------------------
    def usable(self, cube_ids: Sequence[str], user_id: str) -> Flow[list[UsableAdapter]]:
        """Return the parametric cubes of ``cube_ids`` with a fresh adapter the caller may use (a flow)."""
        keys = {lora_cube_id(c): c for c in dict.fromkeys(cube_ids)}
        headers = yield from derived_headers(keys)
        ready = [
            h
            for h in headers
            if isinstance(h.payload, ParametricPayload)
            and h.payload.adapter_path
            and h.payload.adapter_path.startswith(h.cube_id + "/")
            and h.payload.derived_from
        ]
        out = []
        sources = yield from read_sources(ready, keys)
        for h, (source, items) in zip(ready, sources, strict=True):
            p = cast(ParametricPayload, h.payload)
            if source is None or items is None or not trusted_derived(h, source, user_id):
                continue
            by_id = {i.id: i for i in items}
            if all(
                (i := by_id.get(s.item_id)) is not None
                and i.version == s.version
                and i.status == LifecycleState.ACTIVATED
                for s in p.derived_from
            ):
                out.append(UsableAdapter(h.cube_id, h))
        return out

    def generate(self, adapter: UsableAdapter, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """Generate with ``adapter`` active (loaded on first use), then switch the model back to its base.

        Raises:
            FingerprintMismatchError: The adapter was trained on another base model.
            CubeFormatError / ArchiveIOError: Its directory is damaged or gone.

        """
        from memos_agents.activation.kv import generate
        from memos_agents.parametric.lora import AdapterArtifact

        p = cast(ParametricPayload, adapter.header.payload)
        assert p.adapter_path is not None
        name = f"{adapter.cube_id}.{(p.file_sha256 or '')[:12]}"
        runtime = self.runtime()
        with self._lock:
            if name not in {a.name for a in runtime.loaded()}:
                for stale in [a.name for a in runtime.loaded() if a.name.startswith(adapter.cube_id + ".")]:
                    runtime.unload(stale)
                artifact = AdapterArtifact.load(_checked(self.root, p.adapter_path))
                sources = [(s.cube_id, s.item_id, s.version) for s in artifact.manifest.sources]
                if artifact.manifest.weights_sha256 != p.file_sha256 or sources != [
                    (s.cube_id, s.item_id, s.version) for s in p.derived_from
                ]:
                    raise CubeFormatError(f"the adapter of {adapter.cube_id!r} does not match its cube header")
                runtime.load(artifact, name, activate=False)
        with self.llm.busy, self.llm.threads():  # nobody else runs the model while the adapter is on
            runtime.activate(name)
            try:
                return generate(runtime.model, runtime.tokenizer, messages, **kwargs)
            finally:
                runtime.activate(None)


def _checked(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise ConfigError(f"adapter path {name!r} leaves the parametric directory")
    return path


def _remove(root: Path, name: str) -> None:
    try:
        shutil.rmtree(_checked(root, name), ignore_errors=True)
    except MemOSError:
        pass


def invalidate_adapters(
    mem: MemOS,
    sources: dict[str, set[str] | None] | None,
    root: Path | None = None,
    parametric: ParametricMemory | None = None,
) -> list[str]:
    """Delete the adapters derived from ``sources`` (cube id -> deleted item ids, None: the whole cube).

    Trusted code, called by ``MemOS`` after it deleted memories (see
    ``memos_agents.activation.memory.invalidate_derived``): an adapter's weights were trained on its
    memories' text, so they go with them, whoever deleted them. Training jobs of this process on
    a deleted memory are cancelled and their files deleted; adapters loaded on the model are
    unloaded. The header stays with no adapter (``adapter_path`` None). Only the parametric cubes
    of the named source cubes are read (by id). Returns the cube ids invalidated.
    """
    root = root or Path(mem.config.home) / "parametric"
    if parametric is not None:
        with parametric._lock:
            doomed = [
                p
                for p in parametric._pending.values()
                if sources is None
                or (
                    p.cube_id in sources
                    and (sources[p.cube_id] is None or {i.id for i in p.items} & (sources[p.cube_id] or set()))
                )
            ]
            for p in doomed:
                parametric._pending.pop(p.key, None)
        for p in doomed:
            parametric._drop(p)
    if not root.is_dir():
        return []
    done = []
    for h in derived_of(mem, sources, LORA_CUBE_PREFIX, lora_cube_id):
        pl = h.payload
        if not isinstance(pl, ParametricPayload) or not pl.adapter_path:
            continue
        if not derived_from_any(pl.derived_from, sources):
            continue
        if parametric is not None and parametric._runtime is not None:
            with parametric.llm.busy:
                for a in parametric._runtime.loaded():
                    if a.name.startswith(h.cube_id + "."):
                        parametric._runtime.unload(a.name)
        _remove(root, pl.adapter_path)
        _remove(root, pl.adapter_path + ".checkpoint")
        cleared = h.model_copy(update={"payload": pl.model_copy(update={"adapter_path": None, "file_sha256": None})})
        mem.store.batch([base.UpdateCubeOp(cleared)], ctx=base.SYSTEM)
        done.append(h.cube_id)
    return done
