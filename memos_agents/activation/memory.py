"""Activation memory of a MemOS: KV-cache MemCubes over plaintext memories, built off the request path.

``MemOS.activation`` (:class:`ActivationMemory`) turns a set of plaintext memories of one cube
into an *activation cube* ``kv.<cube>``: a cube header whose :class:`~memos_agents.cube.ActivationPayload`
records the model fingerprint, the source memories with their versions (DERIVED_FROM provenance),
the token count and the file, and a safetensors file under ``<home>/activation/`` holding the
keys and values (:mod:`memos_agents.activation.kv`).

* **Off the request path.** :meth:`ActivationMemory.request` queues a build on a
  :class:`~memos_agents.activation.worker.BuildWorker` and returns at once; its state is visible
  (:meth:`ActivationMemory.status`: queued, building, ready, stale, failed with the reason).
* **Never stale.** :meth:`ActivationMemory.usable` (what ``MemOS.chat``'s scheduler calls) reads
  the header and the source memories *as the caller* in one store batch: if a source moved to
  another version, left the ``activated`` state, was deleted, or the caller may no longer read it,
  the cache is not used (the memories go into the prompt as text), it is marked ``stale`` and a
  rebuild is queued. Deleting or forgetting a source deletes the file at once
  (:meth:`ActivationMemory.invalidate`, called by ``MemOS.delete`` and ``MemOS.forget_user``).
* **Reuse.** A rebuild whose memory list starts with the memories of the ready cache (same
  versions: memories were only added) extends that cache by the new lines
  (:func:`~memos_agents.activation.kv.extend_kv_cache`) instead of recomputing it.
* **Tenancy.** The activation cube is owned by whoever requested it and carries the source cube's
  ACL at build time; using it needs read permission on it *and* on every source memory (the
  freshness read above), so a cache never shows memories its reader could not search.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from memos_agents.activation.kv import (
    CODECS,
    Codec,
    KVCache,
    build_kv_cache,
    extend_kv_cache,
    render_prefix,
)
from memos_agents.activation.worker import BuildWorker, JobState, JobStatus
from memos_agents.cube import (
    ActivationPayload,
    CubeHeader,
    DerivedSource,
    ParametricPayload,
    StorageProfile,
    derived_from_any,
)
from memos_agents.errors import (
    ArchiveIOError,
    ConfigError,
    CubeExistsError,
    CubeFormatError,
    CubeNotFoundError,
    FingerprintMismatchError,
    InvalidInputError,
    MemOSError,
    PermissionDeniedError,
    StaleMemoryError,
)
from memos_agents.flow import Flow
from memos_agents.models.fingerprint import ModelFingerprint, fingerprint
from memos_agents.models.llm import HFLocalLLM
from memos_agents.plaintext.stores import base
from memos_agents.prompts import answer as answer_prompt
from memos_agents.schema import LifecycleState, MemoryItem, validate_id

if TYPE_CHECKING:
    from memos_agents.os import MemOS

log = logging.getLogger(__name__)

#: Prefix of activation cube ids: ``kv.<source cube id>``.
KV_CUBE_PREFIX = "kv."
#: Default cap on the tokens of one KV cache (SmolLM2's context is 8,192; room is left for the prompt).
DEFAULT_MAX_KV_TOKENS = 6_144


def kv_cube_id(source_cube_id: str) -> str:
    """Return the activation cube id of a plaintext cube (``kv.<id>``, or ``kv.<sha256 prefix>`` for a long id)."""
    validate_id(source_cube_id, "cube_id")
    cid = KV_CUBE_PREFIX + source_cube_id
    return cid if len(cid) <= 128 else KV_CUBE_PREFIX + hashlib.sha256(source_cube_id.encode()).hexdigest()[:48]


def request_sha256(items: Sequence[MemoryItem]) -> str:
    """SHA-256 of a requested memory list (ids and versions, in order): what a rebuild request is compared by."""
    return hashlib.sha256("|".join(f"{i.id}@{i.version}" for i in items).encode()).hexdigest()


def memory_lines(items: Sequence[MemoryItem]) -> str:
    """Render memories as the lines of a prompt's memory block, each ending with a newline."""
    from memos_agents.operation.scheduler import MemScheduler

    return "".join(MemScheduler.render(item) + "\n" for item in items)


def system_text(lines: str) -> str:
    """Return the system message of a memory prompt whose stable memories are ``lines`` (see ``prompts.answer``)."""
    return answer_prompt.stable_system(lines)


@dataclass(slots=True)
class UsableKV:
    """A fresh activation cube the scheduler may use: its loaded KV cache and the memories it covers, in prompt order.

    ``cache`` is None in prompt-prefix mode (no local model): the memories then go first in the
    prompt as text, the same text every time.
    """

    cube_id: str
    payload: ActivationPayload
    items: list[MemoryItem]
    lines: str
    cache: KVCache | None = None

    @property
    def tokens(self) -> int:
        """Tokens the cache (or, in prompt-prefix mode, the stable memories) covers."""
        return self.payload.num_tokens or 0

    @property
    def prefix_only(self) -> bool:
        """True in prompt-prefix mode: no cache to inject, the memories go first as text."""
        return self.payload.cache_path is None


class ActivationMemory:
    """The KV-cache memory of one MemOS (``MemOS.activation``): build, check, load, invalidate.

    Args:
        mem: The MemOS.
        llm: The local HF model caches are built with and injected into (None: prompt-prefix mode
            for an OpenAI-compatible endpoint: the activation cube records the stable memory list,
            no cache is built, and the scheduler puts those memories first in the prompt so that
            the server's own prefix cache can hit).
        root: Directory of the cache files (default ``<home>/activation``).
        codec: How caches are stored (``native``: the model's dtype, lossless; ``int8``: smaller, lossy).
        max_tokens: The most tokens one cache covers (memories past it are left out, newest last).
        max_loaded: How many caches are kept in memory (least recently used dropped; default 4).
        max_memories: The most memories one activation cube covers (default 256).
        dtype: The dtype the model serves in (``float32``, ``bfloat16`` or ``model``: as loaded; see
            :class:`~memos_agents.config.ActivationConfig`); the model is converted on first use.
        attention: Attention implementation to set (``sdpa``, ``eager``; None: as loaded).

    """

    def __init__(
        self,
        mem: MemOS,
        llm: HFLocalLLM | None,
        *,
        root: Path | None = None,
        codec: Codec = "native",
        max_tokens: int = DEFAULT_MAX_KV_TOKENS,
        max_loaded: int = 4,
        max_memories: int = 256,
        dtype: str = "float32",
        attention: str | None = "sdpa",
    ) -> None:
        if codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
        if not 1 <= max_tokens <= 131_072:
            raise ConfigError(f"max_tokens must be 1..131072, not {max_tokens}")
        self.mem = mem
        self.llm = llm
        self.root = root or Path(mem.config.home) / "activation"
        self.codec: Codec = codec
        self.max_tokens = max_tokens
        self.max_loaded = max(1, max_loaded)
        self.max_memories = max(1, max_memories)
        if dtype not in ("float32", "bfloat16", "model"):
            raise ConfigError(f"dtype must be float32, bfloat16 or model, not {dtype!r}")
        self.dtype = dtype
        self.attention = attention
        self.worker = BuildWorker("memos-kv-worker")
        self._loaded: OrderedDict[tuple[str, str], KVCache] = OrderedDict()  # (file, sha256) -> cache
        self._lock = threading.Lock()
        self._fp: ModelFingerprint | None = None

    # -- the model -----------------------------------------------------------------------------------
    def model(self) -> tuple[Any, Any, ModelFingerprint]:
        """Load (once) and return ``(model, tokenizer, fingerprint)``."""
        if self.llm is None:
            raise ConfigError("KV caches need a local Hugging Face LLM (llm.provider = hf)")
        model, tokenizer = self.llm.load()
        with self._lock:
            if self._fp is None:
                self._prepare(model)
                self._fp = fingerprint(model, tokenizer, self.llm.model_name)
            return model, tokenizer, self._fp

    def _prepare(self, model: Any) -> None:
        """Put the served model in the configured dtype and attention implementation (once, before the fingerprint)."""
        import torch

        if self.dtype != "model":
            want = getattr(torch, self.dtype)
            if next(iter(model.parameters())).dtype != want:
                model.to(want)
        if self.attention is not None and getattr(model.config, "_attn_implementation", None) != self.attention:
            try:
                model.set_attn_implementation(self.attention)
            except (AttributeError, ValueError) as exc:
                raise ConfigError(f"the model cannot use {self.attention!r} attention: {exc}") from exc
        attention = getattr(model.config, "_attn_implementation", None)
        if next(iter(model.parameters())).dtype == torch.bfloat16 and attention != "eager":
            raise ConfigError(
                "a bfloat16 model serves KV caches exactly only with eager attention (activation.attention = eager); "
                "with SDPA the cached and uncached prefills round differently and outputs diverge"
            )

    # -- requests ------------------------------------------------------------------------------------
    def request(self, cube_id: str, user_id: str, memory_ids: Sequence[str]) -> JobStatus:
        """Queue a build of the KV cache of ``memory_ids`` (in that order) from ``cube_id``; return at once.

        The cache is the activation cube :func:`kv_cube_id` of ``cube_id``; a new request replaces
        the memories it covers. The build runs as ``user_id`` on the worker thread: it reads the
        memories, refuses (status ``failed``: PermissionDeniedError) unless ``user_id`` owns
        ``cube_id``, and creates the activation cube owned by them with the source cube's ACL, or
        updates it. Memories past ``max_memories``, or past ``max_tokens`` once rendered, are left out.

        Raises:
            InvalidInputError: Malformed ids, or no memory ids.

        """
        validate_id(cube_id, "cube_id")
        validate_id(user_id, "user_id")
        if isinstance(memory_ids, str) or not memory_ids:
            raise InvalidInputError("memory_ids must be a non-empty list of memory ids")
        ids = [validate_id(i, "memory id") for i in dict.fromkeys(memory_ids)]
        key = kv_cube_id(cube_id)
        return self.worker.submit(key, lambda: self._build(key, cube_id, user_id, ids))

    def status(self, cube_id: str) -> JobStatus | None:
        """Return the build status of the activation cube of ``cube_id`` in this process (None: none requested)."""
        return self.worker.status(kv_cube_id(cube_id))

    def wait(self, cube_id: str, timeout: float | None = None) -> JobStatus | None:
        """Block until the build of ``cube_id``'s activation cube is done (or ``timeout`` s passed)."""
        return self.worker.wait(kv_cube_id(cube_id), timeout)

    def close(self) -> None:
        """Stop the worker (after its current build)."""
        self.worker.close()

    # -- the build (worker thread) ---------------------------------------------------------------------
    def _build(self, key: str, cube_id: str, user_id: str, ids: list[str]) -> None:
        source, items, existing = self.mem._run(self._read_sources(key, cube_id, ids), user_id)
        if source.owner_id != user_id:
            raise PermissionDeniedError(f"only the owner of {cube_id!r} may build its KV cache")
        items = [i for i in items if i.status == LifecycleState.ACTIVATED]
        if not items:
            raise InvalidInputError(f"none of the memories asked for is an activated memory of {cube_id!r}")
        requested = request_sha256(items)
        items = items[: self.max_memories]
        if self.llm is None:  # prompt-prefix mode (an OpenAI-compatible endpoint): the memory list only
            counter = self.mem.scheduler.counter
            while len(items) > 1 and counter.count(system_text(memory_lines(items))) > self.max_tokens:
                items = items[:-1]
            sources = [DerivedSource(cube_id=cube_id, item_id=i.id, version=i.version) for i in items]
            lines = memory_lines(items)
            payload = ActivationPayload(
                model_name_or_path="prompt-prefix",
                num_tokens=counter.count(system_text(lines)),
                derived_from=sources,
                prefix_sha256=hashlib.sha256(lines.encode()).hexdigest(),
                request_sha256=requested,
            )
            self.mem._run(self._write_header(key, source, existing, payload, user_id), user_id)
            return
        model, tokenizer, fp = self.model()
        lines = memory_lines(items)
        prefix = render_prefix(tokenizer, system_text(lines))
        n_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        while n_tokens > self.max_tokens and len(items) > 1:  # drop the last memories until it fits
            items = items[: max(1, min(len(items) - 1, len(items) * self.max_tokens // n_tokens))]
            lines = memory_lines(items)
            prefix = render_prefix(tokenizer, system_text(lines))
            n_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        sources = [DerivedSource(cube_id=cube_id, item_id=i.id, version=i.version) for i in items]
        with self.llm.busy:  # one forward pass at a time on the shared model (an adapter may be switched on)
            cache = self._reuse(existing, tokenizer, fp, items, sources)
            if cache is None:
                cache = build_kv_cache(model, tokenizer, prefix, fp, sources)
        name = f"{key}/{cache.meta.prefix_sha256[:32]}.{self.codec}.safetensors"
        path = self.root / name
        size = cache.save(path, self.codec)
        try:
            self._record(key, cube_id, user_id, source, existing, cache, fp, sources, name, size, requested)
        except BaseException:
            old = existing.payload.cache_path if existing and isinstance(existing.payload, ActivationPayload) else None
            if old != name:
                self._unlink(name)  # a file no header names would never be found by an invalidation
            raise

    def _record(
        self,
        key: str,
        cube_id: str,
        user_id: str,
        source: CubeHeader,
        existing: CubeHeader | None,
        cache: KVCache,
        fp: ModelFingerprint,
        sources: list[DerivedSource],
        name: str,
        size: int,
        requested: str,
    ) -> None:
        """Write the header of a saved cache, then check that no source was deleted or changed meanwhile."""
        path = self.root / name
        digest = _file_sha256(path)
        payload = ActivationPayload(
            model_name_or_path=fp.model_id,
            cache_path=name,
            num_tokens=cache.num_tokens,
            fingerprint=fp,
            derived_from=sources,
            codec=self.codec,
            file_sha256=digest,
            size_bytes=size,
            prefix_sha256=cache.meta.prefix_sha256,
            request_sha256=requested,
        )
        old = (
            existing.payload.cache_path
            if existing is not None and isinstance(existing.payload, ActivationPayload)
            else None
        )
        self.mem._run(self._write_header(key, source, existing, payload, user_id), user_id)
        # a delete that ran while the cache was built found no file to drop: look again now
        (now,) = self.mem._run(self.mem._ops_all([base.GetOp(cube_id, [s.item_id for s in sources])]), user_id)
        reason = _stale_reason(payload, now)
        if reason is not None:
            invalidate_derived(self.mem, {cube_id: {s.item_id for s in sources}}, self.root, self)
            raise StaleMemoryError(f"a source changed while the cache was built: {reason}")
        if self.codec == "native":  # the tensors in memory are the file's: keep them warm
            with self._lock:
                warm = KVCache(cache.meta.model_copy(update={"codec": "native"}), cache.layers())
                self._loaded[(name, digest)] = warm
        if old and old != name:
            self._unlink(old)

    def _read_sources(
        self, key: str, cube_id: str, ids: list[str]
    ) -> Flow[tuple[CubeHeader, list[MemoryItem], CubeHeader | None]]:
        source, items = yield [base.GetCubeOp(cube_id), base.GetOp(cube_id, ids)]
        try:
            (existing,) = yield [base.GetCubeOp(key)]
        except CubeNotFoundError:
            existing = None
        return cast(CubeHeader, source), cast(list[MemoryItem], items), existing

    def _reuse(
        self,
        existing: CubeHeader | None,
        tokenizer: Any,
        fp: ModelFingerprint,
        items: list[MemoryItem],
        sources: list[DerivedSource],
    ) -> KVCache | None:
        """Extend the ready cache when the new memory list starts with its memories (same versions)."""
        if existing is None or not isinstance(existing.payload, ActivationPayload):
            return None
        p = existing.payload
        n = len(p.derived_from)
        if not p.cache_path or p.fingerprint is None or n == 0 or n >= len(sources) or p.derived_from != sources[:n]:
            return None
        if p.fingerprint.differences(fp, "kv"):
            return None
        try:
            base_cache = self._load(existing.cube_id, p)
        except MemOSError:
            return None
        base_text = render_prefix(tokenizer, system_text(memory_lines(items[:n])))
        more = memory_lines(items[n:])
        model, _, _ = self.model()
        try:
            return extend_kv_cache(model, tokenizer, base_cache, base_text, more, fp, sources[n:])
        except InvalidInputError:
            return None  # the seam tokenises differently: rebuild whole

    def _write_header(
        self, key: str, source: CubeHeader, existing: CubeHeader | None, payload: ActivationPayload, user_id: str
    ) -> Flow[CubeHeader | None]:
        return (yield from write_derived_header(key, source, existing, payload, user_id, "KV cache"))

    # -- use -----------------------------------------------------------------------------------------
    def usable(self, cube_ids: Sequence[str], user_id: str, *, queue_rebuild: bool = True) -> Flow[list[UsableKV]]:
        """Return the built, fresh activation cubes of ``cube_ids`` the caller may use (a flow; no model, no file).

        One store batch reads the activation headers by id (read permission), a second the source
        cube headers and memories as the caller. A cube whose sources are not all current,
        activated and readable is left out, marked ``stale`` and (``queue_rebuild``, for the
        source's owner) rebuilt in the background. A cube not owned by the source cube's owner is
        never used (:func:`trusted_derived`). The cache itself is loaded by :meth:`load_cache`,
        for the one the scheduler picks.
        """
        keys = {kv_cube_id(c): c for c in dict.fromkeys(cube_ids)}
        found = yield from derived_headers(keys)
        prefix_mode = self.llm is None
        ready = [
            h
            for h in found
            if isinstance(h.payload, ActivationPayload)
            and h.payload.derived_from
            and (h.payload.cache_path is not None) != prefix_mode
        ]
        if not ready:
            return []
        sources = yield from read_sources(ready, keys)
        out: list[UsableKV] = []
        for h, (source, items) in zip(ready, sources, strict=True):
            p = cast(ActivationPayload, h.payload)
            if source is None or not trusted_derived(h, source, user_id):
                continue  # a cube under this name that the source's owner did not make: never injected
            reason = _stale_reason(p, items)
            if reason is not None:
                self.worker.mark(h.cube_id, JobState.STALE, reason)
                if queue_rebuild and items and source.owner_id == user_id:  # only its owner rebuilds it
                    live = [i.id for i in items if i.status == LifecycleState.ACTIVATED]
                    if live:
                        self._resubmit(h.cube_id, keys[h.cube_id], user_id, live)
                continue
            if not prefix_mode and p.fingerprint is None:
                continue
            by_id = {i.id: i for i in items or []}
            ordered = [by_id[s.item_id] for s in p.derived_from]
            out.append(UsableKV(h.cube_id, p, ordered, memory_lines(ordered)))
        return out

    def load_cache(self, chosen: UsableKV) -> KVCache:
        """Load ``chosen``'s cache (blocking: run it off the event loop) after checking it fits the served model.

        Raises:
            FingerprintMismatchError: Built by another model, dtype, attention, tokenizer or template.
            CubeFormatError / ArchiveIOError: The file is missing, altered or does not match its header.

        """
        _, _, fp = self.model()
        p = chosen.payload
        assert p.fingerprint is not None
        try:
            p.fingerprint.check(fp, "kv", f"the KV cache of {chosen.cube_id}")
            cache = self._load(chosen.cube_id, p)
        except MemOSError as exc:
            self.worker.mark(chosen.cube_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        self.worker.mark(chosen.cube_id, JobState.READY)
        chosen.cache = cache
        return cache

    def _resubmit(self, key: str, cube_id: str, user_id: str, ids: list[str]) -> None:
        self.worker.submit(key, lambda: self._build(key, cube_id, user_id, ids))

    def load(self, cube_id: str, user_id: str) -> UsableKV:
        """Return the fresh KV cache of ``cube_id``'s activation cube, as :meth:`usable` checks it.

        Raises:
            CubeNotFoundError: No activation cube (or it was never built).
            StaleMemoryError: A source changed, was deleted, or is unreadable by the caller (a rebuild is queued).
            FingerprintMismatchError: Built by another model.

        """
        got = self.mem._run(self.usable([cube_id], user_id), user_id)
        if got:
            if not got[0].prefix_only:
                self.load_cache(got[0])
            return got[0]
        status = self.status(cube_id)
        if status is None:
            raise CubeNotFoundError(f"no built KV cache for cube {cube_id!r}")
        if status.state == JobState.FAILED and status.reason and "fingerprint" in status.reason:
            raise FingerprintMismatchError(f"the KV cache of {cube_id!r} was {status.reason}")
        raise StaleMemoryError(f"the KV cache of {cube_id!r} is {status.state}: {status.reason or 'not ready'}")

    def _load(self, cube_id: str, p: ActivationPayload) -> KVCache:
        if not p.cache_path or not p.file_sha256 or not p.cache_path.startswith(cube_id + "/"):
            raise CubeFormatError(f"the header of {cube_id!r} names no KV cache file of its own")
        slot = (p.cache_path, p.file_sha256)
        with self._lock:
            cached = self._loaded.get(slot)
            if cached is not None:
                if cached.meta.prefix_sha256 != p.prefix_sha256 or cached.meta.sources != p.derived_from:
                    raise CubeFormatError(f"the KV cache of {cube_id!r} does not match its cube header")
                self._loaded.move_to_end(slot)
                return cached
        path = self._path(p.cache_path)
        if _file_sha256(path) != p.file_sha256:
            raise CubeFormatError(f"KV cache file {path} does not match its cube header (checksum)")
        cache = KVCache.load(path)
        if cache.meta.prefix_sha256 != p.prefix_sha256 or cache.meta.sources != p.derived_from:
            raise CubeFormatError(f"KV cache file {path} does not match its cube header")
        with self._lock:
            self._loaded[slot] = cache
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return cache

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise CubeFormatError(f"KV cache path {name!r} leaves the activation directory")
        return path

    def _unlink(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except (OSError, CubeFormatError):
            pass


def invalidate_derived(
    mem: MemOS,
    sources: dict[str, set[str] | None] | None,
    root: Path | None = None,
    activation: ActivationMemory | None = None,
) -> list[str]:
    """Drop the KV files derived from ``sources`` (cube id -> deleted item ids, None: the whole cube).

    Trusted code, never a caller's request: ``MemOS.delete``, ``forget_user``, ``delete_cube``,
    ``rollback_cube`` and the lifecycle purge call it (through ``MemOS._invalidate_derived``)
    after they deleted memories, as the store's trusted principal, since a cache holds the deleted
    text's keys and values and must go whoever deleted it. The header stays, with no file
    (``cache_path`` None). Only the activation cubes of the named source cubes are read (by id);
    ``sources`` None reads every one (an operator's clean-up). A file that cannot be removed is
    logged and the others are still handled. Returns the cube ids invalidated.
    """
    root = root or Path(mem.config.home) / "activation"
    if not root.is_dir():
        return []
    done = []
    for h in derived_of(mem, sources, KV_CUBE_PREFIX, kv_cube_id):
        p = h.payload
        if not isinstance(p, ActivationPayload) or not p.cache_path:
            continue
        if not derived_from_any(p.derived_from, sources):
            continue
        name = p.cache_path
        stale = h.model_copy(update={"payload": p.model_copy(update={"cache_path": None, "file_sha256": None})})
        mem.store.batch([base.UpdateCubeOp(stale)], ctx=base.SYSTEM)
        try:
            path = (root / name).resolve()
            if root.resolve() in path.parents and path.is_file():
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete KV cache file %s: %s", name, exc)
        if activation is not None:
            activation.worker.mark(h.cube_id, JobState.STALE, "a source memory was deleted")
            with activation._lock:
                for slot in [k for k in activation._loaded if k[0] == name]:
                    activation._loaded.pop(slot, None)
        done.append(h.cube_id)
    return done


def write_derived_header(
    key: str,
    source: CubeHeader,
    existing: CubeHeader | None,
    payload: ActivationPayload | ParametricPayload,
    user_id: str,
    what: str,
) -> Flow[CubeHeader | None]:
    """Create the derived cube ``key`` of ``source`` (owned by ``user_id``, the source's ACL) or replace its payload.

    Returns the header it replaced (None: created). A concurrent creation is taken as existing.

    Raises:
        CubeExistsError: ``key`` exists with another payload type.

    """
    if existing is None:
        header = CubeHeader(
            cube_id=key,
            owner_id=user_id,
            acl=list(source.acl),
            description=f"{what} of memories of {source.cube_id}",
            source=source.cube_id,
            storage=StorageProfile(backend="safetensors"),
            payload=payload,
        )
        try:
            yield [base.CreateCubeOp(header)]
            return None
        except CubeExistsError:
            (existing,) = yield [base.GetCubeOp(key)]
    assert existing is not None
    if type(existing.payload) is not type(payload):
        raise CubeExistsError(f"cube {key!r} exists as a {existing.payload.type} cube, not {payload.type}")
    yield [base.UpdateCubeOp(existing.model_copy(update={"payload": payload}))]
    return existing


def derived_of(
    mem: MemOS, sources: dict[str, set[str] | None] | None, prefix: str, name: Callable[[str], str]
) -> list[CubeHeader]:
    """Read, as trusted code, the derived cubes (``prefix``, ``name(source)``) of the source cubes in ``sources``.

    By id: the cost is the source cubes named, not the store; ``sources`` None reads all of them.
    """
    if sources is None:
        return cast(list[CubeHeader], mem.store.batch([base.ListCubesOp(id_prefix=prefix)], ctx=base.SYSTEM)[0])
    keys = {name(c) for c in sources}
    lists = mem.store.batch([base.ListCubesOp(id_prefix=k) for k in keys], ctx=base.SYSTEM)
    return [h for hs in lists for h in cast(list[CubeHeader], hs) if h.cube_id in keys]


def derived_headers(keys: dict[str, str]) -> Flow[list[CubeHeader]]:
    """Read the derived cubes named ``keys`` that exist and the caller may read (one batch of id-prefix reads)."""
    if not keys:
        return []
    lists = yield [base.ListCubesOp(id_prefix=k) for k in keys]
    return [h for hs in lists for h in cast(list[CubeHeader], hs) if h.cube_id in keys]


def trusted_derived(header: CubeHeader, source: CubeHeader, user_id: str) -> bool:
    """Whether a derived cube (KV cache, adapter) may enter ``user_id``'s model: it is the source owner's.

    Only a source cube's owner builds its derived cubes (``request`` refuses others; ``create_cube``
    and ``import_cube`` refuse the ``kv.``/``lora.`` names and derived payloads), and their tensors
    go into the model unseen, so a cube of another owner under the name is never used, whatever
    its ACL says. It must record at least one source, all of the source cube.
    """
    if header.owner_id != source.owner_id:
        return False
    derived = getattr(header.payload, "derived_from", [])
    return bool(derived) and all(s.cube_id == source.cube_id for s in derived)


def read_sources(
    headers: Sequence[CubeHeader], keys: dict[str, str]
) -> Flow[list[tuple[CubeHeader | None, list[MemoryItem] | None]]]:
    """Read, as the caller, each derived cube's source cube header and source memories (one batch if all readable).

    A source cube that is gone or unreadable gives ``(None, None)`` for that derived cube.
    """
    ops: list[Any] = []
    for h in headers:
        src = keys[h.cube_id]
        ops += [base.GetCubeOp(src), base.GetOp(src, [s.item_id for s in getattr(h.payload, "derived_from", [])])]
    try:
        results = yield ops
    except (PermissionDeniedError, CubeNotFoundError):
        results = None
    out: list[tuple[CubeHeader | None, list[MemoryItem] | None]] = []
    for n in range(len(headers)):
        if results is not None:
            out.append((results[2 * n], results[2 * n + 1]))
            continue
        try:  # some source cube is gone or unreadable: check one by one
            header, items = yield ops[2 * n : 2 * n + 2]
        except (PermissionDeniedError, CubeNotFoundError):
            header, items = None, None
        out.append((header, items))
    return out


def _stale_reason(p: ActivationPayload, items: list[MemoryItem] | None) -> str | None:
    if items is None:
        return "the source cube is gone or the caller may not read it"
    by_id = {i.id: i for i in items}
    for s in p.derived_from:
        item = by_id.get(s.item_id)
        if item is None:
            return f"source memory {s.item_id} was deleted or is not readable"
        if item.version != s.version:
            return f"source memory {s.item_id} moved from version {s.version} to {item.version}"
        if item.status != LifecycleState.ACTIVATED:
            return f"source memory {s.item_id} is {item.status}"
    return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise ArchiveIOError(f"KV cache file {path} is missing") from exc
    except OSError as exc:
        raise ArchiveIOError(f"cannot read KV cache file {path}: {exc}") from exc
    return h.hexdigest()
