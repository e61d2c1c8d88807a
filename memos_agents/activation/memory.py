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
import threading
from collections import OrderedDict
from collections.abc import Sequence
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
from memos_agents.cube import ActivationPayload, CubeHeader, DerivedSource, StorageProfile, derived_from_any
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

#: Prefix of activation cube ids: ``kv.<source cube id>``.
KV_CUBE_PREFIX = "kv."
#: Default cap on the tokens of one KV cache (SmolLM2's context is 8,192; room is left for the prompt).
DEFAULT_MAX_KV_TOKENS = 6_144


def kv_cube_id(source_cube_id: str) -> str:
    """Return the activation cube id of a plaintext cube (``kv.<id>``, or ``kv.<sha256 prefix>`` for a long id)."""
    validate_id(source_cube_id, "cube_id")
    cid = KV_CUBE_PREFIX + source_cube_id
    return cid if len(cid) <= 128 else KV_CUBE_PREFIX + hashlib.sha256(source_cube_id.encode()).hexdigest()[:48]


def memory_lines(items: Sequence[MemoryItem]) -> str:
    """Render memories as the lines of a prompt's memory block, each ending with a newline."""
    from memos_agents.operation.scheduler import MemScheduler

    return "".join(MemScheduler.render(item) + "\n" for item in items)


def system_text(lines: str) -> str:
    """Return the system message of a memory prompt whose stable memories are ``lines`` (see ``prompts.answer``)."""
    return answer_prompt.stable_system(lines)


@dataclass(frozen=True, slots=True)
class UsableKV:
    """A fresh activation cube the scheduler may use: its loaded KV cache and the memories it covers, in prompt order.

    ``cache`` is None in prompt-prefix mode (no local model): the memories then go first in the
    prompt as text, the same text every time.
    """

    cube_id: str
    cache: KVCache | None
    items: list[MemoryItem]
    lines: str


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
        self._loaded: OrderedDict[str, KVCache] = OrderedDict()  # file sha256 -> cache
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

    # -- requests ------------------------------------------------------------------------------------
    def request(self, cube_id: str, user_id: str, memory_ids: Sequence[str]) -> JobStatus:
        """Queue a build of the KV cache of ``memory_ids`` (in that order) from ``cube_id``; return at once.

        The cache is the activation cube :func:`kv_cube_id` of ``cube_id``; a new request replaces
        the memories it covers. The build runs as ``user_id`` on the worker thread: it reads the
        memories (read permission), creates the activation cube owned by ``user_id`` with the
        source cube's ACL, or updates it (admin permission on it).

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
        items = [i for i in items if i.status == LifecycleState.ACTIVATED]
        if not items:
            raise InvalidInputError(f"none of the memories asked for is an activated memory of {cube_id!r}")
        items = items[: self.max_memories]
        if self.llm is None:  # prompt-prefix mode (an OpenAI-compatible endpoint): the memory list only
            sources = [DerivedSource(cube_id=cube_id, item_id=i.id, version=i.version) for i in items]
            lines = memory_lines(items)
            payload = ActivationPayload(
                model_name_or_path="prompt-prefix",
                derived_from=sources,
                prefix_sha256=hashlib.sha256(lines.encode()).hexdigest(),
            )
            self.mem._run(self._write_header(key, source, existing, payload, user_id), user_id)
            return
        model, tokenizer, fp = self.model()
        lines = memory_lines(items)
        prefix = render_prefix(tokenizer, system_text(lines))
        n_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        while n_tokens > self.max_tokens and len(items) > 1:  # drop the last memories until it fits
            items = items[: max(1, len(items) * self.max_tokens // n_tokens)]
            lines = memory_lines(items)
            prefix = render_prefix(tokenizer, system_text(lines))
            n_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        sources = [DerivedSource(cube_id=cube_id, item_id=i.id, version=i.version) for i in items]
        cache = self._reuse(existing, tokenizer, fp, items, sources)
        if cache is None:
            cache = build_kv_cache(model, tokenizer, prefix, fp, sources)
        name = f"{key}/{cache.meta.prefix_sha256[:32]}.{self.codec}.safetensors"
        path = self.root / name
        size = cache.save(path, self.codec)
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
        )
        old = (
            existing.payload.cache_path
            if existing is not None and isinstance(existing.payload, ActivationPayload)
            else None
        )
        self.mem._run(self._write_header(key, source, existing, payload, user_id), user_id)
        if self.codec == "native":  # the tensors in memory are the file's: keep them warm
            with self._lock:
                self._loaded[digest] = KVCache(cache.meta.model_copy(update={"codec": "native"}), cache.layers())
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
            base_cache = self._load(p)
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
    ) -> Flow[None]:
        if existing is None:
            header = CubeHeader(
                cube_id=key,
                owner_id=user_id,
                acl=list(source.acl),
                description=f"KV cache of memories of {source.cube_id}",
                source=source.cube_id,
                storage=StorageProfile(backend="safetensors"),
                payload=payload,
            )
            try:
                yield [base.CreateCubeOp(header)]
                return
            except CubeExistsError:
                (existing,) = yield [base.GetCubeOp(key)]
        assert existing is not None
        if not isinstance(existing.payload, ActivationPayload):
            raise CubeExistsError(f"cube {key!r} exists and is not an activation cube")
        yield [base.UpdateCubeOp(existing.model_copy(update={"payload": payload}))]

    # -- use -----------------------------------------------------------------------------------------
    def usable(self, cube_ids: Sequence[str], user_id: str, *, queue_rebuild: bool = True) -> Flow[list[UsableKV]]:
        """Return the ready, fresh caches of ``cube_ids``' activation cubes the caller may use (a flow).

        One store batch reads the activation headers (read permission); a second the source
        memories as the caller. A cache whose sources are not all current, activated and readable
        is left out, marked ``stale`` and (``queue_rebuild``) rebuilt in the background; one
        built by another model (fingerprint) or whose file is missing or corrupt is left out and
        marked ``failed``. Nothing here waits on a model but the first load of the fingerprint.
        """
        keys = {kv_cube_id(c): c for c in dict.fromkeys(cube_ids)}
        if not keys:
            return []
        (headers,) = yield [base.ListCubesOp(id_prefix=KV_CUBE_PREFIX)]
        found = [
            h for h in cast(list[CubeHeader], headers) if h.cube_id in keys and isinstance(h.payload, ActivationPayload)
        ]
        prefix_mode = self.llm is None
        ready = [
            h
            for h in found
            if (cast(ActivationPayload, h.payload).cache_path and not prefix_mode)
            or (prefix_mode and cast(ActivationPayload, h.payload).derived_from)
        ]
        if not ready:
            return []
        sources = yield from read_sources(ready, keys)
        fp = None if prefix_mode else self.model()[2]
        out: list[UsableKV] = []
        for h, (source, items) in zip(ready, sources, strict=True):
            p = cast(ActivationPayload, h.payload)
            if source is not None and not trusted_derived(h, source, user_id):
                continue  # someone else's cube under this name: never injected
            reason = _stale_reason(p, items)
            if reason is not None:
                self.worker.mark(h.cube_id, JobState.STALE, reason)
                if queue_rebuild and items and h.owner_id == user_id:  # only its owner may rewrite it
                    live = [i.id for i in items if i.status == LifecycleState.ACTIVATED]
                    if live:
                        self._resubmit(h.cube_id, keys[h.cube_id], user_id, live)
                continue
            cache = None
            if fp is not None:
                if p.fingerprint is None or p.fingerprint.differences(fp, "kv"):
                    self.worker.mark(h.cube_id, JobState.FAILED, "built by another model (fingerprint differs)")
                    continue
                try:
                    cache = self._load(p)
                except MemOSError as exc:
                    self.worker.mark(h.cube_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")
                    continue
            self.worker.mark(h.cube_id, JobState.READY)
            by_id = {i.id: i for i in items or []}
            ordered = [by_id[s.item_id] for s in p.derived_from]
            out.append(UsableKV(h.cube_id, cache, ordered, memory_lines(ordered)))
        return out

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
            return got[0]
        status = self.status(cube_id)
        if status is None:
            raise CubeNotFoundError(f"no built KV cache for cube {cube_id!r}")
        if status.state == JobState.FAILED and status.reason and "fingerprint" in status.reason:
            raise FingerprintMismatchError(f"the KV cache of {cube_id!r} was {status.reason}")
        raise StaleMemoryError(f"the KV cache of {cube_id!r} is {status.state}: {status.reason or 'not ready'}")

    def _load(self, p: ActivationPayload) -> KVCache:
        assert p.cache_path and p.file_sha256
        with self._lock:
            cached = self._loaded.get(p.file_sha256)
            if cached is not None:
                self._loaded.move_to_end(p.file_sha256)
                return cached
        path = self._path(p.cache_path)
        if _file_sha256(path) != p.file_sha256:
            raise CubeFormatError(f"KV cache file {path} does not match its cube header (checksum)")
        cache = KVCache.load(path)
        if cache.meta.prefix_sha256 != p.prefix_sha256 or cache.meta.sources != p.derived_from:
            raise CubeFormatError(f"KV cache file {path} does not match its cube header")
        with self._lock:
            self._loaded[p.file_sha256] = cache
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

    # -- invalidation --------------------------------------------------------------------------------
    def invalidate(self, user_id: str, sources: dict[str, set[str] | None] | None = None) -> list[str]:
        """Delete the files of activation cubes derived from any of ``sources`` (cube id -> item ids, None: all).

        Called after a delete or a forget: the cache holds the deleted text's keys and values, so
        it must not outlive it. The header stays, with no file (``cache_path`` None), marked
        ``stale``. None: every activation cube the caller may read. Returns the cube ids invalidated.
        """
        return invalidate_derived(self.mem, user_id, sources, self.root, self)


def invalidate_derived(
    mem: MemOS,
    user_id: str,
    sources: dict[str, set[str] | None] | None,
    root: Path | None = None,
    activation: ActivationMemory | None = None,
) -> list[str]:
    """Drop the KV files derived from ``sources`` (see :meth:`ActivationMemory.invalidate`).

    Works without an :class:`ActivationMemory` (no model is loaded): ``MemOS.delete`` and
    ``MemOS.forget_user`` call it whenever the activation directory exists. Headers the caller
    may not change are handed to the store's trusted path (the data must go whoever deleted it).
    """
    root = root or Path(mem.config.home) / "activation"
    if not root.is_dir():
        return []
    headers = mem.store.batch([base.ListCubesOp(id_prefix=KV_CUBE_PREFIX)], ctx=base.SYSTEM)[0]
    done = []
    for h in cast(list[CubeHeader], headers):
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
            if root.resolve() in path.parents:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise ArchiveIOError(f"cannot delete KV cache file {name}: {exc}") from exc
        if activation is not None:
            activation.worker.mark(h.cube_id, JobState.STALE, "a source memory was deleted")
            with activation._lock:
                activation._loaded.pop(p.file_sha256 or "", None)
        done.append(h.cube_id)
    return done


def trusted_derived(header: CubeHeader, source: CubeHeader, user_id: str) -> bool:
    """Whether a derived cube (KV cache, adapter) may enter ``user_id``'s model: the caller's or the source owner's.

    Anyone may create a cube named ``kv.<cube>``; its tensors go into the model unseen, so a cube
    made by a third party (a reader of the source, or someone who took the name first) is never
    used for anyone else, whatever its ACL says. Every recorded source must be of the source cube.
    """
    if header.owner_id not in (user_id, source.owner_id):
        return False
    payload = header.payload
    derived = getattr(payload, "derived_from", [])
    return all(s.cube_id == source.cube_id for s in derived)


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
