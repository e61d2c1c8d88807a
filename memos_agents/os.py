"""MemOS: the facade that ties store, reader, retrieval, scheduler and models together.

Typical use::

    from memos_agents import MemOS

    with MemOS.from_path("~/.memos") as mos:
        mos.create_cube("alice-notes", owner_id="alice", exist_ok=True)
        mos.add([{"role": "user", "content": "I moved to Lisbon in May."}], user_id="alice",
                cube_id="alice-notes")
        hits = mos.search("Where does Alice live?", user_id="alice", cube_ids=["alice-notes"])

Every call names the caller (``user_id``, the acting principal) and the cube(s). The caller
travels to the store with every batch (:class:`~memos_agents.plaintext.stores.base.CallContext`),
which checks the cube's ACL in the same transaction as the read or write. Writes are validated
completely before anything is written, then go to the store as one atomic batch; the tree update
is planned from a snapshot and written with idempotent topic creation and FOLLOWS links resolved in
the store, so concurrent writers (threads, other ``MemOS`` instances, other processes) lose
nothing; a batch whose plan went stale (a version conflict) is planned again.

Each operation is written once, as a sans-IO flow (:mod:`memos_agents.flow`); the sync methods
drive it on the calling thread, their ``a``-prefixed async twins on the store's native async path
(the Neo4j driver's) with model work in a worker thread. Request and result types are in
:mod:`memos_agents.api`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from memos_agents.activation.memory import (
    KV_CUBE_PREFIX,
    ActivationMemory,
    UsableKV,
    derived_headers,
    kv_cube_id,
    request_sha256,
)
from memos_agents.api import (
    MAX_COUNT,
    MAX_HISTORY,
    AddRequest,
    AddResult,
    ChatRequest,
    ChatResult,
    CubeRollback,
    CubeStats,
    DeleteRequest,
    GetRequest,
    ScheduledContext,
    SearchRequest,
    UpdateRequest,
    UserRemoval,
    parse,
)
from memos_agents.config import EmbedderProvider, LLMProvider, MemOSConfig, StoreBackend
from memos_agents.cube import (
    RESERVED_CUBE_PREFIXES,
    AclEntry,
    ActivationPayload,
    CubeHeader,
    MemCube,
    ParametricPayload,
    Permission,
    Role,
    StorageProfile,
    check_user_cube_id,
    read_archive,
    write_archive,
)
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    EmbeddingDimensionError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
    PrefixMismatchError,
    SensitiveDataError,
    TextTooLongError,
    VersionConflictError,
)
from memos_agents.flow import Compute, Flow, piggyback, run_async, run_sync
from memos_agents.infra.audit import AuditEntry, AuditOutcome, ChainVerification
from memos_agents.infra.memstore import MemStore
from memos_agents.infra.redaction import RedactionMode, RedactionPolicy, default_redactor
from memos_agents.infra.registry import Subscription
from memos_agents.infra.users import UserKind, UserRecord
from memos_agents.infra.vault import VersionDiff, diff_items
from memos_agents.models.embedders import BaseEmbedder, HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder
from memos_agents.models.llm import BaseLLM, HFLocalLLM, OpenAICompatibleLLM
from memos_agents.models.tokens import TokenCounter
from memos_agents.operation.lifecycle import (
    AccessTracker,
    LifecyclePolicy,
    LifecycleReport,
    MemLifecycle,
    check_transition,
    use_ops,
)
from memos_agents.operation.messages import MessageLog
from memos_agents.operation.reader import MemReader, ReadMode, call_llm
from memos_agents.operation.scheduler import MemScheduler
from memos_agents.parametric.memory import LORA_CUBE_PREFIX, ParametricMemory, UsableAdapter, lora_cube_id
from memos_agents.plaintext.documents import DocumentStore
from memos_agents.plaintext.retrieval import HybridRetriever
from memos_agents.plaintext.stores import base
from memos_agents.plaintext.stores.base import ItemVersion
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.plaintext.stores.vector_index import HNSWParams
from memos_agents.plaintext.tree import TreeOrganizer
from memos_agents.prompts import answer as answer_prompt
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryType,
    Message,
    NodeKind,
    RelationType,
    ScoredMemory,
    SearchFilters,
    Visibility,
    check_text,
    utcnow,
    validate_id,
    validated,
)

log = logging.getLogger(__name__)


def _rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


MessageLike = Message | dict[str, Any]
T = TypeVar("T")
__all__ = ["AddResult", "ChatResult", "MemOS", "build_embedder", "build_llm", "build_store"]


def _redaction_policy(value: RedactionPolicy | dict[str, Any] | str | None) -> RedactionPolicy:
    """Return the policy a ``redaction`` argument names (None: ``off``).

    Raises:
        InvalidInputError: An unknown mode or kind, or a malformed mask.

    """
    if isinstance(value, RedactionPolicy):
        return value
    try:
        if value is None:
            return RedactionPolicy()
        if isinstance(value, str):
            return RedactionPolicy(mode=RedactionMode(value))
        return RedactionPolicy.model_validate(value)
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"invalid redaction policy {value!r}: {exc}") from None


def redact_messages(messages: Sequence[Message], policy: RedactionPolicy) -> tuple[list[Message], dict[str, int]]:
    """Apply a cube's redaction policy to messages' contents and image captions.

    Args:
        messages: Validated messages.
        policy: The cube's :class:`~memos_agents.infra.redaction.RedactionPolicy`.

    Returns:
        The messages (masked copies where something was found) and the findings masked per kind.

    Raises:
        SensitiveDataError: The policy refuses and a message holds a finding; ``index`` is the
            message's position; the message names the field, kinds and offsets, never the values.

    """
    if policy.mode is RedactionMode.OFF:
        return list(messages), {}
    redactor = default_redactor()
    out: list[Message] = []
    counts: dict[str, int] = {}
    for pos, message in enumerate(messages):
        changes: dict[str, str] = {}
        for name in ("content", "image_caption"):
            value = getattr(message, name)
            if not value:
                continue
            try:
                result = redactor.redact(value, policy)
            except SensitiveDataError as exc:
                raise SensitiveDataError(
                    f"message {pos} {name}: {exc}", kinds=exc.kinds, spans=exc.spans, index=pos
                ) from None
            if result.changed:
                changes[name] = result.text
                for finding in result.findings:
                    counts[finding.kind.value] = counts.get(finding.kind.value, 0) + 1
        out.append(message.model_copy(update=changes) if changes else message)
    return out, counts


def build_embedder(config: MemOSConfig) -> BaseEmbedder:
    """Create the embedder a config asks for (no model is loaded until first use).

    Raises:
        ConfigError: The openai provider without a model.

    """
    e = config.embedder
    if e.provider == EmbedderProvider.HASHING:
        return HashingEmbedder(dim=e.dim)
    if e.provider == EmbedderProvider.OPENAI:
        if not e.model:
            raise ConfigError("embedder.model is required for the openai provider")
        return OpenAIEmbedder(e.model, e.dim, base_url=e.base_url, api_key=e.api_key, batch_size=e.batch_size)
    return SentenceTransformerEmbedder(
        e.model,
        dim=e.dim,
        batch_size=e.batch_size,
        backend=e.backend,
        precision=e.precision,
        cache_dir=e.cache_dir,
        num_threads=e.num_threads,
    )


def build_store(config: MemOSConfig) -> base.BaseMemoryStore:
    """Create the plaintext store a config asks for (nothing is opened until ``setup()``).

    Raises:
        MissingDependencyError: ``neo4j`` backend without the ``neo4j`` extra installed.
        ConfigError: The Neo4j URI is refused by the driver.

    """
    s = config.store
    if s.backend == StoreBackend.NEO4J:
        from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore

        auth = (s.user, s.password or "") if s.user else None
        return Neo4jMemoryStore.from_uri(
            s.uri or "",
            auth=auth,
            database=s.database,
            tenant=s.tenant,
            use_fulltext_index=s.use_fulltext_index,
            audit=s.audit,
            require_users=s.require_users,
        )
    return SQLiteMemoryStore(
        config.db_path,
        synchronous=s.sqlite_synchronous,
        busy_timeout_s=s.busy_timeout_s,
        ann_threshold=s.ann_threshold,
        hnsw=HNSWParams(m=s.hnsw_m, ef_construction=s.hnsw_ef_construction, ef_search=s.hnsw_ef_search),
        snapshot_every=s.snapshot_every,
        audit=s.audit,
        audit_reads=s.audit_reads,
        require_users=s.require_users,
    )


def _lifecycle_policy(policy: LifecyclePolicy | dict[str, Any] | str | Path | None) -> LifecyclePolicy:
    """Return a lifecycle policy from a policy, its fields, or a file path (None: the default).

    Raises:
        ConfigError: Fields the policy refuses, or an unreadable or invalid file.

    """
    if policy is None:
        return LifecyclePolicy()
    if isinstance(policy, LifecyclePolicy):
        return policy
    if isinstance(policy, str | Path):
        return LifecyclePolicy.from_file(policy)
    try:
        return LifecyclePolicy.model_validate(policy)
    except ValidationError as exc:
        raise ConfigError(f"invalid lifecycle policy: {exc}") from None


def build_llm(config: MemOSConfig) -> BaseLLM | None:
    """Create the LLM a config asks for, or None for provider ``none`` (nothing is loaded yet)."""
    c = config.llm
    if c.provider == LLMProvider.NONE:
        return None
    if c.provider == LLMProvider.OPENAI:
        if not c.model:
            raise ConfigError("llm.model is required for the openai provider")
        return OpenAICompatibleLLM(c.model, base_url=c.base_url, api_key=c.api_key)
    cache = config.model_cache / "smollm2-135m-instruct" if c.model is None else None
    return HFLocalLLM(c.model, gguf_file=c.gguf_file, cache_dir=cache, num_threads=c.num_threads)


class MemOS:
    """The memory operating system facade.

    Construction does no I/O; call :meth:`setup` (or use it as a context manager) before use.

    Args:
        config: Settings (default: :class:`~memos_agents.config.MemOSConfig` with ``$MEMOS_HOME``).
        store: Plaintext store (default: from ``config.store``: embedded SQLite at ``config.db_path``).
        embedder: Embedder (default: from ``config.embedder``).
        llm: LLM for ``chat`` and fine-mode reading (default: from ``config.llm``).
        token_counter: Token counter for budgets (default: tiktoken ``config.tokenizer_encoding``).

    """

    #: Upper bound of every count argument (top_k, token_budget, max_tokens).
    MAX_COUNT = MAX_COUNT
    #: Most earlier messages ``chat`` takes as history.
    MAX_HISTORY = MAX_HISTORY
    #: How often an add is planned and written when a concurrent writer made its plan stale.
    WRITE_ATTEMPTS = 5

    def __init__(
        self,
        config: MemOSConfig | None = None,
        *,
        store: base.BaseMemoryStore | None = None,
        embedder: BaseEmbedder | None = None,
        llm: BaseLLM | None = None,
        token_counter: TokenCounter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config or MemOSConfig()
        #: "Now" (UTC) for expiry and lifecycle passes; injectable for tests (default: the system clock).
        self.clock: Callable[[], datetime] = clock or utcnow
        self.store = store or build_store(self.config)
        self.embedder = embedder or build_embedder(self.config)
        self.llm = llm if llm is not None else build_llm(self.config)
        self.reader = MemReader(self.embedder, self.llm, self.config.reader)
        self.organizer = TreeOrganizer(self.config.reader)
        self.retriever = HybridRetriever(self.config.retrieval)
        self.scheduler = MemScheduler(token_counter or TokenCounter(self.config.tokenizer_encoding))
        self._idle_cursors: dict[str, tuple[datetime, str]] = {}  # MemLifecycle's decay step, per cube
        self._flushing: asyncio.Task[int] | None = None  # an async-only store's pending flush
        #: Buffers memory uses (search results, reads) for decay; None when ``config.track_access`` is off.
        self.access: AccessTracker | None = self._tracker()
        #: The MemStore registry: publish, list, subscribe, revoke, bundles (:class:`MemStore`).
        self.registry = MemStore(self)
        #: Namespaced JSON documents on namespace cubes (:class:`DocumentStore`; LangGraph's store).
        self.documents = DocumentStore(self)
        #: Sessions' chat messages in order, with roles (:class:`MessageLog`; chat histories).
        self.messages = MessageLog(self)
        #: KV-cache memory (:class:`~memos_agents.activation.memory.ActivationMemory`), when
        #: ``config.activation.enabled``; None otherwise. No model is loaded until a build or a chat needs it.
        self.activation: ActivationMemory | None = self._activation()
        #: LoRA-adapter memory (:class:`~memos_agents.parametric.memory.ParametricMemory`), when
        #: ``config.parametric.enabled``; None otherwise.
        self.parametric: ParametricMemory | None = self._parametric()

    @classmethod
    def from_path(cls, home: str | Path, **kwargs: Any) -> MemOS:
        """Create a MemOS whose embedded store and caches live under ``home``.

        Args:
            home: The MemOS home directory.
            **kwargs: Other :class:`MemOSConfig` fields (e.g. ``embedder={"provider": "hashing"}``),
                or ``store``/``embedder``/``llm``/``token_counter`` instances, which are used as given.

        Raises:
            ConfigError: A configuration value is invalid.

        """
        instances = (
            ("store", base.BaseMemoryStore),
            ("embedder", BaseEmbedder),
            ("llm", BaseLLM),
            ("token_counter", TokenCounter),
        )
        parts = {k: kwargs.pop(k) for k, kind in instances if isinstance(kwargs.get(k), kind)}
        try:
            config = MemOSConfig.model_validate({"home": Path(home), **kwargs})
        except ValidationError as exc:
            raise ConfigError(f"invalid MemOS configuration: {exc}") from exc
        return cls(config, **parts)

    def _activation(self) -> ActivationMemory | None:
        cfg = self.config.activation
        if not cfg.enabled:
            return None
        from memos_agents.activation.memory import ActivationMemory

        return ActivationMemory(
            self,
            self.llm if isinstance(self.llm, HFLocalLLM) else None,
            codec=cfg.codec,
            max_tokens=cfg.max_tokens,
            max_memories=cfg.max_memories,
            dtype=cfg.dtype,
            attention=cfg.attention,
        )

    def _parametric(self) -> ParametricMemory | None:
        cfg = self.config.parametric
        if not cfg.enabled:
            return None
        if not isinstance(self.llm, HFLocalLLM):
            raise ConfigError("parametric memory needs a local Hugging Face LLM (llm.provider = hf)")
        from memos_agents.parametric.lora import LoRAConfig

        try:
            lora = LoRAConfig.model_validate(cfg.lora)
        except ValidationError as exc:
            raise ConfigError(f"invalid parametric.lora: {exc}") from exc
        return ParametricMemory(self, self.llm, config=lora)

    def local_model(self) -> tuple[Any, Any]:
        """Return the local HF model and tokenizer that activation and parametric memory serve with.

        With activation memory on, the model is first put in its configured dtype and attention
        implementation (once; every cache and adapter fingerprint records them).

        Raises:
            ConfigError: The LLM is not a local Hugging Face model.
            ModelError / MissingDependencyError: Loading failed.

        """
        if self.activation is not None and self.activation.llm is not None:
            model, tokenizer, _ = self.activation.model()
            return model, tokenizer
        if not isinstance(self.llm, HFLocalLLM):
            raise ConfigError("a local model is needed here (llm.provider = hf)")
        return self.llm.load()

    def _tracker(self) -> AccessTracker | None:
        if not self.config.track_access:
            return None
        return AccessTracker(
            self.store,
            flush_s=self.config.access_flush_s,
            clock=lambda: self.clock(),
            threaded=self.store.sync_path,
        )

    def setup(self) -> MemOS:
        """Open the store and apply migrations (idempotent). Returns self."""
        self.store.setup()
        self._reopen_tracker()
        return self

    async def asetup(self) -> MemOS:
        """Async twin of :meth:`setup`."""
        await self.store.asetup()
        self._reopen_tracker()
        return self

    def _reopen_tracker(self) -> None:
        if self.access is not None and self.access.closed:  # set up again after close: track again
            self.access = self._tracker()

    def close(self) -> None:
        """Stop the activation worker (after its current build), record buffered memory uses, then close the store."""
        if self.activation is not None:
            self.activation.close()
        if self.parametric is not None:
            self.parametric.close()
        if self.access is not None:
            self.access.close()
        self.store.close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        if self.activation is not None:
            await asyncio.to_thread(self.activation.close)
        if self.parametric is not None:
            await asyncio.to_thread(self.parametric.close)
        if self.access is not None:
            await self.access.aclose()
        await self.store.aclose()

    def flush_access(self) -> int:
        """Record buffered memory uses now (they are otherwise recorded every ``access_flush_s``); return how many."""
        return self.access.flush() if self.access is not None else 0

    async def aflush_access(self) -> int:
        """Async twin of :meth:`flush_access`."""
        return await self.access.aflush() if self.access is not None else 0

    def _note_access(self, items: Iterable[MemoryItem]) -> None:
        if self.access is not None:
            self.access.note((i.cube_id, i.id) for i in items)

    def _aflush_soon(self) -> None:
        """For a tracker without a thread (async-only store): schedule a flush on this loop when one is due."""
        tracker = self.access
        if tracker is None or tracker.threaded or not tracker.due():
            return
        if self._flushing is not None and not self._flushing.done():
            return
        self._flushing = asyncio.get_running_loop().create_task(tracker.aflush())

    def __enter__(self) -> MemOS:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MemOS:
        return await self.asetup()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- driving flows -------------------------------------------------------------------------------
    def _ctx(self, user_id: object) -> base.CallContext:
        if not isinstance(user_id, str):
            raise InvalidInputError(f"user_id must be a string, not {type(user_id).__name__}")
        return base.CallContext.of(user_id, admin=user_id in self.config.admins)

    def _run(self, flow: Flow[T], user_id: object) -> T:
        ctx = self._ctx(user_id)
        return run_sync(flow, self.store, ctx)

    async def _arun(self, flow: Flow[T], user_id: object) -> T:
        ctx = self._ctx(user_id)
        return await run_async(flow, self.store, ctx)

    # -- cubes -------------------------------------------------------------------------------------
    def create_cube(
        self,
        cube_id: str,
        owner_id: str,
        *,
        description: str = "",
        source: str | None = None,
        acl: Sequence[AclEntry] = (),
        exist_ok: bool = False,
        redaction: RedactionPolicy | dict[str, Any] | str | None = None,
    ) -> CubeHeader:
        """Create a plaintext MemCube owned by ``owner_id`` (the caller).

        Args:
            cube_id: New cube id.
            owner_id: Owner (has every permission); the acting principal.
            description: Free text.
            source: Provenance of the cube.
            acl: Extra ACL entries.
            exist_ok: Return the existing header instead of raising (the caller must be allowed to read it).
            redaction: The cube's PII redaction: a :class:`~memos_agents.infra.redaction.RedactionPolicy`,
                its fields as a dict, or a mode (``"off"``, ``"mask"``, ``"refuse"``; None: ``off``).

        Raises:
            InvalidInputError: Malformed ids or redaction policy.
            CubeExistsError: The cube exists and ``exist_ok`` is False.
            PermissionDeniedError: ``exist_ok`` and the existing cube is not readable by the caller.

        """
        flow = self._create_cube(cube_id, owner_id, description, source, acl, exist_ok, redaction)
        return self._run(flow, owner_id)

    async def acreate_cube(
        self,
        cube_id: str,
        owner_id: str,
        *,
        description: str = "",
        source: str | None = None,
        acl: Sequence[AclEntry] = (),
        exist_ok: bool = False,
        redaction: RedactionPolicy | dict[str, Any] | str | None = None,
    ) -> CubeHeader:
        """Async twin of :meth:`create_cube`."""
        flow = self._create_cube(cube_id, owner_id, description, source, acl, exist_ok, redaction)
        return await self._arun(flow, owner_id)

    def _create_cube(
        self,
        cube_id: str,
        owner_id: str,
        description: str,
        source: str | None,
        acl: Sequence[AclEntry],
        exist_ok: bool,
        redaction: RedactionPolicy | dict[str, Any] | str | None,
    ) -> Flow[CubeHeader]:
        check_user_cube_id(validate_id(cube_id, "cube_id"))
        validate_id(owner_id, "owner_id")
        policy = _redaction_policy(redaction)
        try:
            header = CubeHeader(
                cube_id=cube_id,
                owner_id=owner_id,
                redaction=policy,
                acl=list(acl),
                description=description,
                source=source,
                model=self.embedder.model_name,
                storage=StorageProfile(
                    backend=type(self.store).__name__,
                    embedding_model=self.embedder.model_name,
                    embedding_dim=self.embedder.dim,
                ),
            )
        except (ValidationError, TypeError) as exc:
            raise InvalidInputError(f"invalid cube header: {exc}") from exc
        try:
            yield [base.CreateCubeOp(header)]
        except CubeExistsError:
            if not exist_ok:
                raise
            (existing,) = yield [base.GetCubeOp(cube_id)]
            return cast(CubeHeader, existing)
        return header

    def set_redaction(
        self, cube_id: str, user_id: str, redaction: RedactionPolicy | dict[str, Any] | str
    ) -> CubeHeader:
        """Change a cube's PII redaction policy (needs admin permission); returns the new header.

        The policy applies to writes from then on; stored items are not re-examined.

        Args:
            cube_id: The cube.
            user_id: The caller.
            redaction: A :class:`~memos_agents.infra.redaction.RedactionPolicy`, its fields as a
                dict, or a mode (``"off"``, ``"mask"``, ``"refuse"``).

        Raises:
            InvalidInputError: Malformed ids or policy.
            CubeNotFoundError / PermissionDeniedError: Unknown cube, or the caller is not an admin of it.

        """
        return self._run(self._set_redaction(cube_id, user_id, redaction), user_id)

    async def aset_redaction(
        self, cube_id: str, user_id: str, redaction: RedactionPolicy | dict[str, Any] | str
    ) -> CubeHeader:
        """Async twin of :meth:`set_redaction`."""
        return await self._arun(self._set_redaction(cube_id, user_id, redaction), user_id)

    def _set_redaction(
        self, cube_id: str, user_id: str, redaction: RedactionPolicy | dict[str, Any] | str
    ) -> Flow[CubeHeader]:
        policy = _redaction_policy(redaction)
        return (yield from self._change_header(cube_id, lambda _: {"redaction": policy}))

    def grant(
        self,
        cube_id: str,
        user_id: str,
        principal: str,
        *,
        role: Role | str | None = None,
        permissions: Sequence[Permission | str] = (),
    ) -> CubeHeader:
        """Give ``principal`` a role and/or permissions on a cube, replacing its entry; returns the header.

        Args:
            cube_id: The cube.
            user_id: The caller: needs ``admin``, or ``share`` when what it grants (and what the
                replaced entry granted) is within its own permissions.
            principal: A user or service id, or ``*`` for everybody.
            role: ``admin``, ``writer``, ``reader`` or ``guest`` (see :class:`~memos_agents.cube.Role`).
            permissions: Further permissions (``read``, ``write``, ``delete``, ``share``, ``admin``, ``audit``).

        Raises:
            InvalidInputError: Malformed ids, an unknown role or permission, nothing to grant, or the
                ``owner`` role (the owner is the cube's ``owner_id``).
            CubeNotFoundError / PermissionDeniedError: Checked by the store in the writing transaction.

        """
        return self._run(self._grant(cube_id, user_id, principal, role, permissions), user_id)

    async def agrant(
        self,
        cube_id: str,
        user_id: str,
        principal: str,
        *,
        role: Role | str | None = None,
        permissions: Sequence[Permission | str] = (),
    ) -> CubeHeader:
        """Async twin of :meth:`grant`."""
        return await self._arun(self._grant(cube_id, user_id, principal, role, permissions), user_id)

    def _grant(
        self,
        cube_id: str,
        user_id: str,
        principal: str,
        role: Role | str | None,
        permissions: Sequence[Permission | str],
    ) -> Flow[CubeHeader]:
        if isinstance(permissions, str | bytes):
            raise InvalidInputError("permissions must be a list")
        try:
            entry = AclEntry.model_validate({"principal": principal, "role": role, "permissions": list(permissions)})
        except ValidationError as exc:
            raise InvalidInputError(f"invalid ACL entry: {exc.errors()[0]['msg']}") from None
        if not entry.granted() and entry.role is None:
            raise InvalidInputError("grant needs a role or at least one permission")
        return (
            yield from self._change_header(
                cube_id, lambda h: {"acl": [e for e in h.acl if e.principal != entry.principal] + [entry]}
            )
        )

    def _change_header(self, cube_id: str, change: Callable[[CubeHeader], dict[str, Any] | None]) -> Flow[CubeHeader]:
        """Read a cube's header, apply ``change`` (the fields to replace; None: nothing) and write it.

        The store refuses a header written over a newer one (``VersionConflictError``): the change
        is then applied to the newer header, up to ``WRITE_ATTEMPTS`` times, so two concurrent
        grants, or a grant and a redaction change, both take effect.
        """
        validate_id(cube_id, "cube_id")
        for attempt in range(self.WRITE_ATTEMPTS):
            (header,) = yield [base.GetCubeOp(cube_id)]
            fields = change(cast(CubeHeader, header))
            if fields is None:
                return cast(CubeHeader, header)
            try:
                (stored,) = yield [base.UpdateCubeOp(header.model_copy(update=fields))]
            except VersionConflictError:
                if attempt + 1 == self.WRITE_ATTEMPTS:
                    raise
                continue
            return cast(CubeHeader, stored)
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, cube_id: str, user_id: str, principal: str) -> CubeHeader:
        """Remove ``principal``'s ACL entry from a cube; returns the header.

        Needs ``admin``, or ``share`` when the entry grants no more than the caller's own
        permissions. Revoking a principal without an entry changes nothing.

        Raises:
            InvalidInputError / CubeNotFoundError / PermissionDeniedError.

        """
        return self._run(self._revoke(cube_id, user_id, principal), user_id)

    async def arevoke(self, cube_id: str, user_id: str, principal: str) -> CubeHeader:
        """Async twin of :meth:`revoke`."""
        return await self._arun(self._revoke(cube_id, user_id, principal), user_id)

    def _revoke(self, cube_id: str, user_id: str, principal: str) -> Flow[CubeHeader]:
        if principal != "*":
            validate_id(principal, "principal")

        def without(header: CubeHeader) -> dict[str, Any] | None:
            acl = [e for e in header.acl if e.principal != principal]
            return None if len(acl) == len(header.acl) else {"acl": acl}

        return (yield from self._change_header(cube_id, without))

    def get_cube(self, cube_id: str, user_id: str) -> CubeHeader:
        """Return a cube's header (needs read permission)."""
        return cast(CubeHeader, self._run(self._ops([base.GetCubeOp(validate_id(cube_id, "cube_id"))]), user_id))

    async def aget_cube(self, cube_id: str, user_id: str) -> CubeHeader:
        """Async twin of :meth:`get_cube`."""
        return cast(CubeHeader, await self._arun(self._ops([base.GetCubeOp(validate_id(cube_id, "cube_id"))]), user_id))

    def list_cubes(self, user_id: str) -> list[CubeHeader]:
        """Return the headers of the cubes ``user_id`` may read (their own and those shared with them)."""
        return cast(list[CubeHeader], self._run(self._ops([base.ListCubesOp()]), user_id))

    async def alist_cubes(self, user_id: str) -> list[CubeHeader]:
        """Async twin of :meth:`list_cubes`."""
        return cast(list[CubeHeader], await self._arun(self._ops([base.ListCubesOp()]), user_id))

    # -- MemLifecycle: what a statement replaced -------------------------------------------------------
    #: How far :meth:`superseded` walks back.
    MAX_SUPERSEDED = 50

    def superseded(self, memory_id: str, user_id: str, cube_id: str) -> list[MemoryItem]:
        """Return the statements a memory superseded, newest first, through every earlier replacement.

        A new statement that restates a stored one with a value changed supersedes it (SUPERSEDES
        edges; see :mod:`memos_agents.plaintext.tree`): the older one is archived, out of the
        default search. This walks back from ``memory_id`` (at most :attr:`MAX_SUPERSEDED` steps),
        e.g. "lives in Porto" ← "lives in Lisbon" ← "lives in Berlin". Needs read on the cube; items
        the caller may not read are left out.

        Raises:
            InvalidInputError: Malformed ids.
            MemoryNotFoundError: No such memory in the cube.
            CubeNotFoundError / PermissionDeniedError: As the store checks them.

        """
        return self._run(self._superseded(memory_id, cube_id), user_id)

    async def asuperseded(self, memory_id: str, user_id: str, cube_id: str) -> list[MemoryItem]:
        """Async twin of :meth:`superseded`."""
        return await self._arun(self._superseded(memory_id, cube_id), user_id)

    def _superseded(self, memory_id: str, cube_id: str) -> Flow[list[MemoryItem]]:
        cube_id, memory_id = validate_id(cube_id, "cube_id"), validate_id(memory_id, "memory id")
        (found,) = yield [base.GetOp(cube_id, [memory_id])]
        if not found:
            raise MemoryNotFoundError(f"no memory {memory_id!r} in cube {cube_id!r}")
        chain: list[MemoryItem] = []
        seen, frontier = {memory_id}, [memory_id]
        while frontier and len(chain) < self.MAX_SUPERSEDED:
            (edges,) = yield [base.EdgesOp(cube_id, frontier, [RelationType.SUPERSEDES], "out")]
            back = [e.target_id for e in cast(list[Edge], edges) if e.source_id in frontier and e.target_id not in seen]
            older = list(dict.fromkeys(back))[: self.MAX_SUPERSEDED - len(chain)]
            if not older:
                break
            seen.update(older)
            (items,) = yield [base.GetOp(cube_id, older)]
            items = sorted(cast(list[MemoryItem], items), key=lambda i: i.event_time or i.created_at, reverse=True)
            chain += items
            frontier = [i.id for i in items]
        return chain

    # -- MemVault: versions, diffs, rollback ---------------------------------------------------------
    def history(self, memory_id: str, user_id: str, cube_id: str) -> list[ItemVersion]:
        """Return a memory's versions, oldest first, the current one last (if it was not deleted).

        Every update and delete keeps the version it ends, with its provenance (``change``,
        ``changed_at``, ``changed_by``, ``request_id``: the audit log's entries of that write
        share it). Needs read on the cube.

        Raises:
            InvalidInputError: Malformed ids.
            CubeNotFoundError / PermissionDeniedError: As the store checks them.

        """
        return self._run(self._history(memory_id, cube_id, False), user_id)

    async def ahistory(self, memory_id: str, user_id: str, cube_id: str) -> list[ItemVersion]:
        """Async twin of :meth:`history`."""
        return await self._arun(self._history(memory_id, cube_id, False), user_id)

    def _history(self, memory_id: str, cube_id: str, with_embeddings: bool) -> Flow[list[ItemVersion]]:
        op = base.HistoryOp(validate_id(cube_id, "cube_id"), validate_id(memory_id, "memory_id"), with_embeddings)
        (versions,) = yield [op]
        return cast(list[ItemVersion], versions)

    @staticmethod
    def _version(versions: Sequence[ItemVersion], memory_id: str, version: int) -> ItemVersion:
        found = [v for v in versions if v.item.version == version]
        if not found:
            kept = sorted({v.item.version for v in versions})
            raise MemoryNotFoundError(f"memory {memory_id!r} has no version {version} (kept: {kept})")
        return found[-1]

    def diff(self, memory_id: str, user_id: str, cube_id: str, from_version: int, to_version: int) -> VersionDiff:
        """Return what changed between two versions of a memory (see :func:`~memos_agents.infra.vault.diff_items`).

        Raises:
            MemoryNotFoundError: A version that was never kept.
            InvalidInputError / CubeNotFoundError / PermissionDeniedError: As for :meth:`history`.

        """
        return self._run(self._diff(memory_id, cube_id, from_version, to_version), user_id)

    async def adiff(
        self, memory_id: str, user_id: str, cube_id: str, from_version: int, to_version: int
    ) -> VersionDiff:
        """Async twin of :meth:`diff`."""
        return await self._arun(self._diff(memory_id, cube_id, from_version, to_version), user_id)

    def _diff(self, memory_id: str, cube_id: str, from_version: int, to_version: int) -> Flow[VersionDiff]:
        versions = yield from self._history(memory_id, cube_id, True)
        old = self._version(versions, memory_id, from_version)
        new = self._version(versions, memory_id, to_version)
        return diff_items(old.item, new.item)

    def rollback(self, memory_id: str, user_id: str, cube_id: str, version: int) -> MemoryItem:
        """Restore a memory to a kept version; returns the stored item (a new version).

        The restored content (text, embedding, tags, metadata, ...) is that of ``version``; the
        version number moves on (a rollback is itself a change, kept in the history and audited,
        with a ``rollback`` event naming the version). A deleted memory comes back with the edges
        that were removed with it whose other end still exists. Restoring the current version
        changes nothing. A concurrent change is retried up to ``WRITE_ATTEMPTS`` times.

        Raises:
            MemoryNotFoundError: ``version`` was never kept.
            SensitiveDataError: The cube's redaction policy refuses the old content now.
            InvalidInputError / CubeNotFoundError / PermissionDeniedError: As the store checks them.

        """
        return self._run(self._rollback(memory_id, cube_id, version), user_id)

    async def arollback(self, memory_id: str, user_id: str, cube_id: str, version: int) -> MemoryItem:
        """Async twin of :meth:`rollback`."""
        return await self._arun(self._rollback(memory_id, cube_id, version), user_id)

    def _rollback(self, memory_id: str, cube_id: str, version: int) -> Flow[MemoryItem]:
        for attempt in range(self.WRITE_ATTEMPTS):
            versions = yield from self._history(memory_id, cube_id, True)
            target = self._version(versions, memory_id, version)
            current = versions[-1] if versions[-1].change is None else None
            if target.change is None:
                return target.item.model_copy(update={"embedding": None})
            event = base.RecordEventOp(cube_id, "rollback", {"memory_id": memory_id, "to_version": version})
            if current is not None:
                restored = target.item.model_copy(update={"version": current.item.version})
                batch = base.WriteBatch(update=[restored])
            else:
                last = max(v.item.version for v in versions)
                edges = next(v.edges for v in reversed(versions) if v.change == "delete")
                others = sorted({x for e in edges for x in (e.source_id, e.target_id)} - {memory_id})
                exists: set[str] = set()
                if others:
                    (alive,) = yield [base.GetOp(cube_id, others)]
                    exists = {i.id for i in alive}
                keep = [e for e in edges if {e.source_id, e.target_id} - {memory_id} <= exists]
                batch = base.WriteBatch(add=[target.item.model_copy(update={"version": last + 1})], edges=keep)
            try:
                (written, _, *_) = yield [
                    base.WriteOp(cube_id, batch),
                    event,
                    *use_ops(cube_id, [memory_id], self.clock()),
                ]
            except (VersionConflictError, InvalidInputError) as exc:
                # a concurrent update (version), re-add (id taken) or edge-end delete: read again
                if attempt + 1 == self.WRITE_ATTEMPTS or isinstance(exc, SensitiveDataError):
                    raise
                continue
            if written.updated:
                return cast(MemoryItem, written.updated[0]).model_copy(update={"embedding": None})
            (found,) = yield [base.GetOp(cube_id, [memory_id])]
            return cast(MemoryItem, found[0])
        raise AssertionError("unreachable")  # pragma: no cover

    def rollback_cube(self, cube_id: str, user_id: str, *, to: datetime) -> CubeRollback:
        """Put a cube back as it was at ``to`` (MemVault): every change made since is undone.

        Items updated since get their state of then back (a merge is undone too: the merged item,
        added since, is deleted, and its archived originals become active again with their
        vectors); items deleted since are restored with the edges they had to items that still
        exist; items added since are deleted (their versions are kept: the rollback itself can be
        rolled back). One transaction, through the normal write path (redaction, ACL, audit), with
        a ``rollback`` event; retried on a concurrent change. Only items the caller may read are
        touched (another author's private items stay as they are).

        Args:
            cube_id: The cube.
            user_id: The caller: needs read, write and delete on the cube.
            to: The instant to go back to (timezone-aware).

        Returns:
            The ids updated, restored and deleted.

        Raises:
            InvalidInputError: Malformed ids, a naive ``to``.
            CubeNotFoundError / PermissionDeniedError / SensitiveDataError: As the store checks them.
            VersionConflictError: Concurrent writers kept changing the cube.

        """
        return self._run(self._rollback_cube(cube_id, to), user_id)

    async def arollback_cube(self, cube_id: str, user_id: str, *, to: datetime) -> CubeRollback:
        """Async twin of :meth:`rollback_cube`."""
        return await self._arun(self._rollback_cube(cube_id, to), user_id)

    def _rollback_cube(self, cube_id: str, to: datetime) -> Flow[CubeRollback]:
        cube_id = validate_id(cube_id, "cube_id")
        for attempt in range(self.WRITE_ATTEMPTS):
            (ids,) = yield [base.ChangedSinceOp(cube_id, to)]
            if not ids:
                return CubeRollback()
            then_snap, now_items = yield [
                base.AsOfOp(cube_id, to, ids, with_embeddings=True),
                base.GetOp(cube_id, ids, with_embeddings=True),
            ]
            then = {i.id: i for i in cast(base.CubeSnapshot, then_snap).items}
            now = {i.id: i for i in cast(list[MemoryItem], now_items)}
            update = [then[i].model_copy(update={"version": now[i].version}) for i in ids if i in then and i in now]
            same = {"version", "access_count", "last_accessed_at"}  # uses since are no change to undo
            update = [u for u in update if u.model_dump(exclude=same) != now[u.id].model_dump(exclude=same)]
            readd = [i for i in ids if i in then and i not in now]
            delete = [i for i in ids if i not in then and i in now]
            histories = (yield [base.HistoryOp(cube_id, i) for i in readd]) if readd else []
            add = [
                then[i].model_copy(update={"version": max(v.item.version for v in h) + 1})
                for i, h in zip(readd, histories, strict=True)
            ]
            alive = (set(now) - set(delete)) | set(then)
            candidates = list(cast(base.CubeSnapshot, then_snap).edges)
            candidates += [e for h in histories for v in h if v.change == "delete" for e in v.edges]
            others = sorted({x for e in candidates for x in (e.source_id, e.target_id)} - set(ids))
            if others:  # an end that did not change since: it exists now as it did then
                (present,) = yield [base.GetOp(cube_id, others)]
                alive |= {i.id for i in present}
            edges = list(
                {
                    (e.source_id, e.target_id, e.type): e
                    for e in candidates
                    if e.source_id in alive and e.target_id in alive and (e.source_id in readd or e.target_id in readd)
                }.values()
            )
            payload = {"to": to.isoformat(), "updated": len(update), "restored": len(add), "deleted": len(delete)}
            ops: list[base.Op] = []
            if delete:
                ops.append(base.DeleteOp(cube_id, delete))
            ops += [
                base.WriteOp(cube_id, base.WriteBatch(update=update, add=add, edges=edges)),
                base.RecordEventOp(cube_id, "rollback", payload),
                *use_ops(cube_id, [*readd, *(u.id for u in update)], self.clock()),  # brought back: in use
            ]
            try:
                yield ops
            except (VersionConflictError, InvalidInputError) as exc:
                if attempt + 1 == self.WRITE_ATTEMPTS or isinstance(exc, SensitiveDataError):
                    raise
                continue
            if delete:
                yield from self._invalidate_derived({cube_id: set(delete)})
            return CubeRollback(updated=[u.id for u in update], restored=readd, deleted=delete)
        raise AssertionError("unreachable")  # pragma: no cover

    def purge_versions(self, cube_id: str, user_id: str, *, older_than_days: float | None = None) -> int:
        """Remove the versions ended longer ago than the retention period (MemVault's purge).

        Deletion is soft: a deleted memory stays restorable (:meth:`rollback`, :meth:`rollback_cube`)
        and readable by :meth:`history` and ``as_of`` reads until this purge removes its versions.

        Args:
            cube_id: The cube.
            user_id: The caller: needs admin on the cube.
            older_than_days: The retention period in days (default ``config.version_retention_days``).

        Returns:
            How many versions were removed.

        Raises:
            InvalidInputError: Malformed ids, a negative period.
            CubeNotFoundError / PermissionDeniedError: As the store checks them.

        """
        return self._run(self._purge_versions(cube_id, older_than_days), user_id)

    async def apurge_versions(self, cube_id: str, user_id: str, *, older_than_days: float | None = None) -> int:
        """Async twin of :meth:`purge_versions`."""
        return await self._arun(self._purge_versions(cube_id, older_than_days), user_id)

    def _purge_versions(self, cube_id: str, older_than_days: float | None) -> Flow[int]:
        days = self.config.version_retention_days if older_than_days is None else older_than_days
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 36_500:
            raise InvalidInputError(f"older_than_days must be a number from 0 to 36500, got {days!r}")
        before = utcnow() - timedelta(days=float(days))
        (n,) = yield [base.PurgeVersionsOp(validate_id(cube_id, "cube_id"), before)]
        return cast(int, n)

    def forget_user(self, forgotten: str, user_id: str) -> dict[str, list[str]]:
        """Erase one user's memories from every cube and every index (a GDPR-style erasure).

        In every cube the caller administers (for a system-wide admin, ``MemOSConfig.admins``:
        every cube of the store): the items about (``user_id``) or by (``author_id``) the user,
        their edges, BM25 postings and dense-index entries, and every kept version of them (and
        the earlier versions of other items that were about or by the user). One store batch:
        erased everywhere, or nowhere. Each cube's audit chain records a ``forget_user`` entry with
        the erased ids and their count, never contents. The embedded store also zeroes the freed
        pages (``secure_delete``), checkpoints the write-ahead log and drops the cube's dense index
        and its snapshot files.

        Args:
            forgotten: The user to erase.
            user_id: The caller: a system-wide admin, or a cube admin (its own cubes only).

        Returns:
            Cube id -> erased item ids (cubes with nothing erased included, as empty lists).

        Raises:
            InvalidInputError: Malformed ids.

        """
        return self._run(self._forget_user(forgotten, user_id), user_id)

    async def aforget_user(self, forgotten: str, user_id: str) -> dict[str, list[str]]:
        """Async twin of :meth:`forget_user`."""
        return await self._arun(self._forget_user(forgotten, user_id), user_id)

    def _forget_user(self, forgotten: str, user_id: str) -> Flow[dict[str, list[str]]]:
        forgotten = validate_id(forgotten, "user_id")
        ctx = self._ctx(user_id)
        (headers,) = yield [base.ListCubesOp()]
        cubes = [
            h.cube_id
            for h in cast(list[CubeHeader], headers)
            if ctx.unrestricted or h.allows(ctx.principal, Permission.ADMIN)
        ]
        if not cubes:
            return {}
        erased = yield [base.ForgetUserOp(cid, forgotten) for cid in cubes]
        out = {cid: list(ids) for cid, ids in zip(cubes, erased, strict=True)}
        yield from self._invalidate_derived({cid: set(ids) for cid, ids in out.items() if ids})
        return out

    def _invalidate_derived(self, sources: dict[str, set[str] | None]) -> Flow[None]:
        """Drop the KV caches derived from ``sources`` (cube -> deleted item ids, None: the whole cube).

        A cache holds the keys and values of its memories' text, so it goes with them: the file is
        deleted and the activation cube's header loses it (as trusted code: whoever deleted the
        memories, the derived copy must go). Costs nothing unless ``<home>/activation`` exists.
        """
        home = Path(self.config.home)
        if sources and (home / "activation").is_dir():
            from memos_agents.activation.memory import invalidate_derived

            yield Compute(lambda: invalidate_derived(self, sources, activation=self.activation))
        if sources and (home / "parametric").is_dir():
            from memos_agents.parametric.memory import invalidate_adapters

            yield Compute(lambda: invalidate_adapters(self, sources, parametric=self.parametric))

    # -- MemLifecycle -------------------------------------------------------------------------------
    def transition(
        self, memory_ids: Sequence[str], user_id: str, cube_id: str, to: LifecycleState | str
    ) -> list[MemoryItem]:
        """Move memories to lifecycle state ``to`` in one write (all or none), checked against the transition table.

        Each move is an update: MemVault keeps the version it ends and the audit log records it.
        Memories already in ``to`` are left as they are.

        Args:
            memory_ids: The memories.
            user_id: The caller (write permission).
            cube_id: Their cube.
            to: ``activated``, ``merged``, ``archived``, ``expired`` or ``frozen`` (pinned: never
                expires); see :data:`~memos_agents.operation.lifecycle.TRANSITIONS`.

        Returns:
            The memories as stored, in the order asked.

        Raises:
            LifecycleTransitionError: A move the table does not allow (nothing written).
            MemoryNotFoundError / PermissionDeniedError / InvalidInputError.

        """
        return self._run(self._transition(memory_ids, cube_id, to), user_id)

    async def atransition(
        self, memory_ids: Sequence[str], user_id: str, cube_id: str, to: LifecycleState | str
    ) -> list[MemoryItem]:
        """Async twin of :meth:`transition`."""
        return await self._arun(self._transition(memory_ids, cube_id, to), user_id)

    def _transition(self, memory_ids: Sequence[str], cube_id: str, to: LifecycleState | str) -> Flow[list[MemoryItem]]:
        if isinstance(memory_ids, str | bytes) or not memory_ids:
            raise InvalidInputError("memory_ids must be a non-empty list of ids")
        ids = [validate_id(i, "memory id") for i in memory_ids]
        return (yield from MemLifecycle(clock=self.clock).transition(validate_id(cube_id, "cube_id"), ids, to))

    def run_lifecycle(
        self,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        policy: LifecyclePolicy | dict[str, Any] | str | Path | None = None,
    ) -> list[LifecycleReport]:
        """Run one MemLifecycle maintenance pass over cubes: expiry, retention purge, consolidation.

        See :mod:`memos_agents.operation.lifecycle` for the steps. Each step of each cube is one
        store batch, checked and audited as the caller (write and delete permission).

        Args:
            user_id: The caller. A pass sees what the caller may read: another author's private
                memories are left to that author's passes, or to a system-wide admin's.
            cube_ids: The cubes (default: the caller's own cubes, but read-only snapshots and document namespaces).
            policy: A :class:`~memos_agents.operation.lifecycle.LifecyclePolicy`, its fields as a
                dict, or a TOML/YAML/JSON file (default: the default policy).

        Returns:
            One report per cube: what moved, and whether a step stopped at ``max_items``.

        Raises:
            ConfigError: An invalid policy.
            CubeNotFoundError / PermissionDeniedError.

        """
        self.flush_access()  # decay sees every use so far
        return self._run(self._run_lifecycle(user_id, cube_ids, policy), user_id)

    async def arun_lifecycle(
        self,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        policy: LifecyclePolicy | dict[str, Any] | str | Path | None = None,
    ) -> list[LifecycleReport]:
        """Async twin of :meth:`run_lifecycle`."""
        await self.aflush_access()
        return await self._arun(self._run_lifecycle(user_id, cube_ids, policy), user_id)

    def after_turn(
        self, user_id: str, cube_id: str, *, policy: LifecyclePolicy | dict[str, Any] | None = None
    ) -> LifecycleReport:
        """Run the per-turn lifecycle step agent graphs call after an answer: a bounded pass over one cube.

        The same steps as :meth:`run_lifecycle`, with at most ``max_items`` (default here: 100)
        items moved per step, so a turn never waits on a backlog (the next turn, or a scheduled
        :meth:`run_lifecycle`, goes on).

        Raises:
            CubeNotFoundError / PermissionDeniedError / ConfigError.

        """
        return self._run(self._after_turn(user_id, cube_id, policy), user_id)

    async def aafter_turn(
        self, user_id: str, cube_id: str, *, policy: LifecyclePolicy | dict[str, Any] | None = None
    ) -> LifecycleReport:
        """Async twin of :meth:`after_turn`."""
        return await self._arun(self._after_turn(user_id, cube_id, policy), user_id)

    def _after_turn(
        self, user_id: str, cube_id: str, policy: LifecyclePolicy | dict[str, Any] | None
    ) -> Flow[LifecycleReport]:
        chosen = _lifecycle_policy(policy) if policy is not None else LifecyclePolicy(max_items=100)
        (report,) = yield from self._run_lifecycle(user_id, [cube_id], chosen)
        return report

    def _run_lifecycle(
        self,
        user_id: str,
        cube_ids: Sequence[str] | None,
        policy: LifecyclePolicy | dict[str, Any] | str | Path | None,
    ) -> Flow[list[LifecycleReport]]:
        chosen = _lifecycle_policy(policy)
        if cube_ids is None:  # the caller's own cubes, whatever their embedder
            (owned,) = yield [base.ListCubesOp(owner_id=validate_id(user_id, "user_id"), namespaced=False)]
            # snapshots do not age; document namespaces (LangGraph stores, message logs) expire by their
            # own TTLs (DocumentStore.purge_expired) and are passed only when named
            cubes = [
                h.cube_id
                for h in cast(list[CubeHeader], owned)
                if not h.read_only and h.namespace is None and h.payload.type == "plaintext"
            ]
        elif isinstance(cube_ids, str | bytes):
            raise InvalidInputError("cube_ids must be a list of cube ids")
        else:
            cubes = [validate_id(c, "cube_id") for c in dict.fromkeys(cube_ids)]
        lifecycle = MemLifecycle(chosen, clock=self.clock, organizer=self.organizer, cursors=self._idle_cursors)
        reports = []
        for cube_id in cubes:
            report = yield from lifecycle.run_pass(cube_id)
            if report.purged:
                yield from self._invalidate_derived({cube_id: set(report.purged)})
            if self.activation is not None and chosen.activation_min_uses is not None:
                report.derived.extend((yield from self._promote_kv(cube_id, user_id, chosen)))
            if self.parametric is not None and chosen.parametric_min_uses is not None:
                report.derived.extend((yield from self._promote_lora(cube_id, user_id, chosen)))
            reports.append(report)
        return reports

    def _drop_derived_cubes(self, cube_ids: list[str]) -> None:
        """Delete derived cubes and their directories as trusted code (their source cube is gone)."""
        home = Path(self.config.home)
        for cid in cube_ids:
            try:
                self.store.batch([base.DeleteCubeOp(cid)], ctx=base.SYSTEM)
            except CubeNotFoundError:
                pass
            for folder in (home / "activation" / cid, home / "parametric" / cid):
                shutil.rmtree(folder, ignore_errors=True)

    def _promote_lora(self, cube_id: str, user_id: str, policy: LifecyclePolicy) -> Flow[list[str]]:
        """Plaintext → parametric: train ``lora.<cube>`` on the cube's stable memories, or demote it when none is."""
        parametric = self.parametric
        assert parametric is not None and policy.parametric_min_uses is not None
        key = lora_cube_id(cube_id)
        limit = self.config.parametric.max_memories
        source, hot = yield [base.GetCubeOp(cube_id), base.ListHotOp(cube_id, policy.parametric_min_uses, limit=limit)]
        if cast(CubeHeader, source).owner_id != user_id:
            return []  # only a cube's owner keeps its derived cubes
        cut = self.clock() - timedelta(days=policy.parametric_stable_days)
        stable = [i for i in cast(list[MemoryItem], hot) if i.updated_at <= cut]
        found = yield from derived_headers({key: cube_id})
        existing = found[0] if found else None
        payload = existing.payload if existing is not None else None
        current = list(payload.derived_from) if isinstance(payload, ParametricPayload) else []
        if not stable:
            if existing is None:
                return []
            yield from self._delete_cube(key)
            return [f"{key}: demoted (no stable memory used {policy.parametric_min_uses}+ times); deleted"]
        wanted = sorted((i.id, i.version) for i in stable)
        have = sorted((s.item_id, s.version) for s in current)
        trained = isinstance(payload, ParametricPayload) and payload.adapter_path is not None
        if (wanted == have and trained) or parametric.training(cube_id):
            return []
        ids = [i.id for i in stable]
        yield Compute(lambda: parametric.request(cube_id, user_id, ids))
        return [f"{key}: training requested on {len(ids)} stable memories"]

    def _promote_kv(self, cube_id: str, user_id: str, policy: LifecyclePolicy) -> Flow[list[str]]:
        """Plaintext → activation: keep ``kv.<cube>`` over the cube's hot memories, or demote it when none is hot."""
        activation = self.activation
        assert activation is not None and policy.activation_min_uses is not None
        key = kv_cube_id(cube_id)
        source, hot = yield [
            base.GetCubeOp(cube_id),
            base.ListHotOp(cube_id, policy.activation_min_uses, limit=activation.max_memories),
        ]
        if cast(CubeHeader, source).owner_id != user_id:
            return []  # only a cube's owner keeps its derived cubes
        hot = cast(list[MemoryItem], hot)
        if policy.activation_idle_days is not None:
            cut = self.clock() - timedelta(days=policy.activation_idle_days)
            hot = [i for i in hot if (i.last_accessed_at or i.created_at) >= cut]
        found = yield from derived_headers({key: cube_id})
        existing = found[0] if found else None
        current = (
            list(existing.payload.derived_from)
            if existing is not None and isinstance(existing.payload, ActivationPayload)
            else []
        )
        if not hot:
            if existing is None:
                return []
            yield from self._delete_cube(key)
            return [f"{key}: demoted (no memory used {policy.activation_min_uses}+ times recently); deleted"]
        by_id = {i.id: i for i in hot}
        order = [s.item_id for s in current if s.item_id in by_id]
        order += [i.id for i in hot if i.id not in set(order)]
        payload = existing.payload if existing is not None else None
        built = isinstance(payload, ActivationPayload) and (payload.cache_path is not None or activation.llm is None)
        # the build may keep fewer memories than asked (token cap): compare what was asked
        if built and cast(ActivationPayload, payload).request_sha256 == request_sha256([by_id[i] for i in order]):
            return []
        activation.request(cube_id, user_id, order)
        return [f"{key}: build requested over {len(order)} hot memories"]

    # -- users (MemGovernance) ----------------------------------------------------------------------
    def create_user(
        self, new_user: str, user_id: str, *, name: str = "", kind: UserKind | str = UserKind.USER
    ) -> UserRecord:
        """Register a user (a person, an agent or a service account) in the store.

        With ``StoreConfig.require_users`` only registered, enabled users may call the store and
        be granted access (see :mod:`memos_agents.infra.users`); without it the records are a
        directory. Ids are never reused: a removed (disabled) user's id stays taken.

        Args:
            new_user: The new user's id (not ``system`` or ``*``).
            user_id: The caller: a system-wide admin (``MemOSConfig.admins``).
            name: Display name (default empty; at most 200 characters).
            kind: ``user`` (default), ``agent`` or ``service``.

        Returns:
            The stored record (``created_at`` and ``created_by`` set by the store).

        Raises:
            InvalidInputError: A malformed or reserved id, name or kind.
            PermissionDeniedError: The caller is not a system-wide admin.
            UserExistsError: The id is registered (enabled or disabled).

        """
        return cast(
            UserRecord, self._run(self._ops([base.CreateUserOp(self._user_record(new_user, name, kind))]), user_id)
        )

    async def acreate_user(
        self, new_user: str, user_id: str, *, name: str = "", kind: UserKind | str = UserKind.USER
    ) -> UserRecord:
        """Async twin of :meth:`create_user`."""
        return await self._arun(self._ops([base.CreateUserOp(self._user_record(new_user, name, kind))]), user_id)

    @staticmethod
    def _user_record(user: str, name: str, kind: UserKind | str) -> UserRecord:
        return validated(UserRecord, {"user_id": user, "name": name, "kind": kind}, "user")

    def get_user(self, user: str, user_id: str) -> UserRecord:
        """Return a user's record (the user itself, or a system-wide admin).

        Raises:
            PermissionDeniedError: Another user's record, asked by someone not a system-wide admin.
            UserNotFoundError: Not registered.

        """
        return cast(UserRecord, self._run(self._ops([base.GetUserOp(validate_id(user, "user_id"))]), user_id))

    async def aget_user(self, user: str, user_id: str) -> UserRecord:
        """Async twin of :meth:`get_user`."""
        return await self._arun(self._ops([base.GetUserOp(validate_id(user, "user_id"))]), user_id)

    def list_users(self, user_id: str, *, include_disabled: bool = False) -> list[UserRecord]:
        """Return the registered users by id (removed ones only with ``include_disabled``); system-wide admins.

        Raises:
            PermissionDeniedError: The caller is not a system-wide admin.

        """
        return self._run(self._ops([base.ListUsersOp(include_disabled)]), user_id)

    async def alist_users(self, user_id: str, *, include_disabled: bool = False) -> list[UserRecord]:
        """Async twin of :meth:`list_users`."""
        return await self._arun(self._ops([base.ListUsersOp(include_disabled)]), user_id)

    def remove_user(self, removed: str, user_id: str) -> UserRemoval:
        """Remove a user: disable its record, then revoke its ACL entries on every cube (one batch).

        The record stays (disabled), so the id cannot be registered again and inherit grants; no
        store grants a disabled user anything (so no grant made meanwhile survives the revocation),
        and a store with ``require_users`` refuses every later call of the user at once. Cubes the
        user owns are listed, not changed (hand them over first; :meth:`forget_user` erases its
        memories). Removing a removed user again revokes what is left.

        Args:
            removed: The user to remove.
            user_id: The caller: a system-wide admin.

        Raises:
            PermissionDeniedError: The caller is not a system-wide admin.
            UserNotFoundError: Not registered.

        """
        return self._run(self._remove_user(removed), user_id)

    async def aremove_user(self, removed: str, user_id: str) -> UserRemoval:
        """Async twin of :meth:`remove_user`."""
        return await self._arun(self._remove_user(removed), user_id)

    def _remove_user(self, removed: str) -> Flow[UserRemoval]:
        removed = validate_id(removed, "user_id")
        (current,) = yield [base.GetUserOp(removed)]
        stored = cast(UserRecord, current)
        if stored.enabled:  # first: from now on no store grants the user anything, so none slips in
            (written,) = yield [base.UpdateUserOp(stored.model_copy(update={"disabled_at": self.clock()}))]
            stored = cast(UserRecord, written)
        for attempt in range(self.WRITE_ATTEMPTS):
            (headers,) = yield [base.ListCubesOp()]
            revoke = [
                h.model_copy(update={"acl": [e for e in h.acl if e.principal != removed]})
                for h in cast(list[CubeHeader], headers)
                if any(e.principal == removed for e in h.acl)
            ]
            try:
                if revoke:
                    yield [base.UpdateCubeOp(h) for h in revoke]
            except VersionConflictError:  # a header changed meanwhile: read again
                if attempt + 1 == self.WRITE_ATTEMPTS:
                    raise
                continue
            owned = [h.cube_id for h in cast(list[CubeHeader], headers) if h.owner_id == removed]
            return UserRemoval(user=stored, revoked_from=[h.cube_id for h in revoke], owned=owned)
        raise AssertionError("unreachable")  # pragma: no cover

    def enable_user(self, user: str, user_id: str) -> UserRecord:
        """Enable a removed user again (its grants are not restored); system-wide admins.

        Raises:
            PermissionDeniedError: The caller is not a system-wide admin.
            UserNotFoundError: Not registered.

        """
        return self._run(self._enable_user(user), user_id)

    async def aenable_user(self, user: str, user_id: str) -> UserRecord:
        """Async twin of :meth:`enable_user`."""
        return await self._arun(self._enable_user(user), user_id)

    def _enable_user(self, user: str) -> Flow[UserRecord]:
        (current,) = yield [base.GetUserOp(validate_id(user, "user_id"))]
        (stored,) = yield [base.UpdateUserOp(cast(UserRecord, current).model_copy(update={"disabled_at": None}))]
        return cast(UserRecord, stored)

    # -- the audit log (MemGovernance) --------------------------------------------------------------
    def audit_log(
        self,
        user_id: str,
        cube_id: str | None = None,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: AuditOutcome | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Return audit entries, oldest first (see :mod:`memos_agents.infra.audit`).

        Args:
            user_id: The caller: needs ``audit`` on the cube; the store's own chain and deleted
                cubes' chains need a system-wide admin (``MemOSConfig.admins``).
            cube_id: One cube's chain; None: every chain the caller may read (its cubes with
                ``audit``; for an admin every chain, the store's included), merged by time.
            actor: Only entries of this principal.
            action: Only this action (``write``, ``search.vector``, ``cube.update``, ...).
            outcome: Only ``ok``, ``denied`` or ``failed`` entries.
            since: Only entries at or after this time (timezone-aware).
            until: Only entries before this time (timezone-aware).
            after_seq: With ``cube_id``: only entries after this position (paging).
            limit: At most this many (1 to 10,000; default 1,000).

        Raises:
            InvalidInputError: Malformed ids, naive times, a bad limit or outcome.
            CubeNotFoundError / PermissionDeniedError: As the store checks them (audited too).

        """
        flow = self._audit_log(user_id, cube_id, actor, action, outcome, since, until, after_seq, limit)
        return self._run(flow, user_id)

    async def aaudit_log(
        self,
        user_id: str,
        cube_id: str | None = None,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: AuditOutcome | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Async twin of :meth:`audit_log`."""
        flow = self._audit_log(user_id, cube_id, actor, action, outcome, since, until, after_seq, limit)
        return await self._arun(flow, user_id)

    def _audit_chains(self, user_id: str, cube_id: str | None) -> Flow[list[str | None]]:
        """Return the chains a request names: ``cube_id``'s, or every chain the caller may read."""
        if cube_id is not None:
            return [validate_id(cube_id, "cube_id")]
        if self._ctx(user_id).unrestricted:
            (chains,) = yield [base.ListAuditChainsOp()]
            return [c or None for c in chains]
        (headers,) = yield [base.ListCubesOp()]
        return [h.cube_id for h in headers if h.allows(user_id, Permission.AUDIT)]

    def _audit_log(
        self,
        user_id: str,
        cube_id: str | None,
        actor: str | None,
        action: str | None,
        outcome: AuditOutcome | str | None,
        since: datetime | None,
        until: datetime | None,
        after_seq: int,
        limit: int,
    ) -> Flow[list[AuditEntry]]:
        try:
            wanted = None if outcome is None else AuditOutcome(outcome)
        except ValueError:
            raise InvalidInputError(f"outcome must be one of {[o.value for o in AuditOutcome]}") from None
        chains = yield from self._audit_chains(user_id, cube_id)
        if not chains:
            return []
        ops: list[Any] = [base.ListAuditOp(c, actor, action, wanted, since, until, after_seq, limit) for c in chains]
        results = yield ops
        entries = [e for found in results for e in found]
        if len(chains) > 1:
            entries.sort(key=lambda e: (e.at, e.cube_id or "", e.seq))
        return entries[:limit]

    def iter_audit(self, user_id: str, cube_id: str | None = None, *, page: int = 1000) -> Iterator[AuditEntry]:
        """Yield every audit entry the caller may read, chain by chain, each chain oldest first.

        Reads ``page`` entries per store batch, so an export of a long log holds one page in
        memory. Each page read is itself audited (``audit.list``).

        Raises:
            As :meth:`audit_log`.

        """
        for chain in self._run(self._audit_chains(user_id, cube_id), user_id):
            after = 0
            while True:
                found = self._run(self._ops([base.ListAuditOp(chain, after_seq=after, limit=page)]), user_id)
                yield from found
                if len(found) < page:
                    break
                after = found[-1].seq

    def verify_audit(self, user_id: str, cube_id: str | None = None) -> dict[str, ChainVerification]:
        """Verify audit chains against their stored heads; return one result per chain (``""``: the store's).

        Args:
            user_id: The caller (as for :meth:`audit_log`).
            cube_id: One cube's chain; None: every chain the caller may read.

        Raises:
            As :meth:`audit_log`.

        """
        return self._run(self._verify_audit(user_id, cube_id), user_id)

    async def averify_audit(self, user_id: str, cube_id: str | None = None) -> dict[str, ChainVerification]:
        """Async twin of :meth:`verify_audit`."""
        return await self._arun(self._verify_audit(user_id, cube_id), user_id)

    def _verify_audit(self, user_id: str, cube_id: str | None) -> Flow[dict[str, ChainVerification]]:
        chains = yield from self._audit_chains(user_id, cube_id)
        out: dict[str, ChainVerification] = {}
        for chain in chains:  # one chain per batch: each is read in one transaction
            (out[chain or ""],) = yield [base.VerifyAuditOp(chain)]
        return out

    def default_cubes(self, user_id: str) -> list[CubeHeader]:
        """Return the cubes ``search``/``chat`` read when no ``cube_ids`` are given: those ``user_id`` owns.

        Cubes merely readable by the caller (shared with them, or readable by ``*``) are searched
        only when named: otherwise anyone could put text into everyone's prompts by marking a cube
        world-readable. Only cubes whose embedding dimension matches this MemOS's embedder are
        included (others need their own embedder), and no document namespace cubes (a LangGraph
        store's items, chat message logs: :attr:`documents`), which are searched when named.
        """
        return self._run(self._default_cubes(user_id), user_id)

    def _default_cubes(self, user_id: str) -> Flow[list[CubeHeader]]:
        (owned,) = yield [base.ListCubesOp(owner_id=user_id, namespaced=False)]
        return self._searchable(owned)

    def _searchable(self, headers: Sequence[CubeHeader]) -> list[CubeHeader]:
        return [
            h
            for h in headers
            if h.storage.embedding_dim in (None, self.embedder.dim)
            and h.namespace is None
            and h.payload.type == "plaintext"
        ]

    def delete_cube(self, cube_id: str, user_id: str) -> None:
        """Delete a cube and everything in it (needs admin permission); KV caches derived from it are dropped."""
        self._run(self._delete_cube(validate_id(cube_id, "cube_id")), user_id)

    async def adelete_cube(self, cube_id: str, user_id: str) -> None:
        """Async twin of :meth:`delete_cube`."""
        await self._arun(self._delete_cube(validate_id(cube_id, "cube_id")), user_id)

    def _delete_cube(self, cube_id: str) -> Flow[None]:
        yield [base.DeleteCubeOp(cube_id)]
        yield from self._invalidate_derived({cube_id: None})
        if not cube_id.startswith(RESERVED_CUBE_PREFIXES):  # its derived cubes go with it (trusted: whoever deleted it)
            derived = [kv_cube_id(cube_id), lora_cube_id(cube_id)]
            yield Compute(lambda: self._drop_derived_cubes(derived))
        home = Path(self.config.home)
        for prefix, folder in ((KV_CUBE_PREFIX, home / "activation"), (LORA_CUBE_PREFIX, home / "parametric")):
            target = folder / cube_id
            if cube_id.startswith(prefix) and target.is_dir():  # a derived cube: its files go too
                yield Compute(_rmtree(target))

    def stats(self, cube_id: str, user_id: str) -> CubeStats:
        """Return how many nodes, active and archived memories, topics and edges a cube holds (read).

        The counts come from one store transaction, so they agree with each other.
        """
        return self._run(self._stats(validate_id(cube_id, "cube_id")), user_id)

    def _stats(self, cube_id: str) -> Flow[CubeStats]:
        every = list(LifecycleState)
        nodes, active, archived, topics, edges = yield [
            base.CountOp(cube_id),
            base.CountOp(cube_id, SearchFilters()),
            base.CountOp(cube_id, SearchFilters(statuses=[LifecycleState.ARCHIVED])),
            base.CountOp(cube_id, SearchFilters(statuses=every, node_kinds=[NodeKind.TOPIC])),
            base.EdgesOp(cube_id),
        ]
        return CubeStats(
            cube_id=cube_id,
            nodes=nodes,
            active_memories=active,
            archived_memories=archived,
            topics=topics,
            edges=len(edges),
        )

    @staticmethod
    def _ops(ops: list[Any]) -> Flow[Any]:
        """Run one store batch and return its single result (a flow)."""
        (result,) = yield ops
        return result

    def _cube(self, cube_id: str, permission: Permission, ctx_user: str) -> Flow[CubeHeader]:
        """Read a cube header (the store checks read) and check ``permission`` before costly work.

        The store checks the permission again inside the transaction that writes: this early
        check only avoids reading and embedding for a caller who may not write.
        """
        (header,) = yield [base.GetCubeOp(cube_id)]
        return base.authorize(header, base.CallContext.of(ctx_user), permission)

    def _check_embedder(self, header: CubeHeader) -> None:
        dim = header.storage.embedding_dim
        if dim is not None and dim != self.embedder.dim:
            raise ConfigError(
                f"cube {header.cube_id!r} holds {dim}-d embeddings ({header.storage.embedding_model}); "
                f"this MemOS embeds with {self.embedder.model_name} ({self.embedder.dim}-d)"
            )

    def _check_text(self, text: str, what: str) -> None:
        check_text(text, what, self.config.max_text_chars)

    # -- writes ------------------------------------------------------------------------------------
    def _messages(self, messages: Sequence[MessageLike], session_id: str | None) -> list[Message]:
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages must be a list of messages")
        if not messages:
            raise InvalidInputError("messages must not be empty")
        out: list[Message] = []
        for pos, raw in enumerate(messages):
            try:
                m = raw if isinstance(raw, Message) else Message.model_validate(raw)
            except ValidationError as exc:
                raise InvalidInputError(f"message {pos} is malformed: {exc.errors()[0]['msg']}") from exc
            self._check_text(m.content, f"message {pos} content")
            if m.image_caption is not None and len(m.content) + len(m.image_caption) > self.config.max_text_chars:
                raise TextTooLongError(
                    f"message {pos} content and image caption have {len(m.content) + len(m.image_caption)} "
                    f"characters together; the limit is {self.config.max_text_chars}"
                )
            if session_id is not None and m.session_id is None:
                m = m.model_copy(update={"session_id": session_id})
            out.append(m)
        return out

    def add(
        self,
        messages: Sequence[MessageLike],
        user_id: str,
        cube_id: str,
        *,
        mode: ReadMode | str = ReadMode.FAST,
        session_id: str | None = None,
        subject_id: str | None = None,
        visibility: Visibility | str = Visibility.CUBE,
        ttl_s: float | None = None,
    ) -> AddResult:
        """Read messages into memories and store them atomically in the cube's tree.

        Args:
            messages: Chat messages (``Message`` or dicts with ``role``/``content``, optional
                ``name`` (speaker), ``id``, ``timestamp``, ``session_id``, ``image_caption``).
            user_id: The caller (acting principal); needs write permission; recorded as each
                item's ``author_id``.
            cube_id: Target cube (must exist).
            mode: ``"fast"`` (no LLM: the turns in windows), ``"fine"`` (LLM fact extraction too) or
                ``"facts"`` (each message's content is one fact as given, e.g. what a memory tool
                saves; a fact that restates a stored one with a value changed supersedes it).
            session_id: Session for messages that carry none.
            subject_id: Whom the memories are about (each item's ``user_id``; default: the caller),
                e.g. the user a service account writes for.
            visibility: Who may read the new memories: ``"private"`` (the caller only, under a
                topic of its own), ``"cube"`` (everyone with read on the cube; default) or
                ``"public"`` (anyone; needs share on the cube).
            ttl_s: How long the new memories live, in seconds (default: the cube's
                ``memory_ttl_s``, or forever): from then on search leaves them out and a lifecycle
                pass expires them (:mod:`memos_agents.operation.lifecycle`).

        Returns:
            The stored ids, how many were merged, and extraction failures.

        Raises:
            InvalidInputError: Empty/oversized text, malformed ids or messages, unknown mode.
            CubeNotFoundError: Unknown cube.
            PermissionDeniedError: No write permission (or no share permission for ``public``).
            ConfigError: ``fine`` mode without an LLM, or an embedder that does not match the cube.
            EmbeddingDimensionError / StoreError: Nothing was written.

        """
        flow = self._add(messages, user_id, cube_id, mode, session_id, subject_id, visibility, ttl_s)
        return self._run(flow, user_id)

    async def aadd(
        self,
        messages: Sequence[MessageLike],
        user_id: str,
        cube_id: str,
        *,
        mode: ReadMode | str = ReadMode.FAST,
        session_id: str | None = None,
        subject_id: str | None = None,
        visibility: Visibility | str = Visibility.CUBE,
        ttl_s: float | None = None,
    ) -> AddResult:
        """Async twin of :meth:`add` (the store's async path; reading and embedding in a worker thread)."""
        flow = self._add(messages, user_id, cube_id, mode, session_id, subject_id, visibility, ttl_s)
        return await self._arun(flow, user_id)

    def _add(
        self,
        messages: Sequence[MessageLike],
        user_id: str,
        cube_id: str,
        mode: ReadMode | str,
        session_id: str | None,
        subject_id: str | None,
        visibility: Visibility | str = Visibility.CUBE,
        ttl_s: float | None = None,
    ) -> Flow[AddResult]:
        try:
            read_mode = ReadMode(mode)
        except ValueError as exc:
            raise InvalidInputError(f"unknown mode {mode!r}; use 'fast', 'fine' or 'facts'") from exc
        req = parse(
            AddRequest,
            {
                "messages": self._messages(messages, session_id),
                "user_id": user_id,
                "cube_id": cube_id,
                "session_id": session_id,
                "mode": read_mode,
                "subject_id": subject_id,
                "visibility": visibility,
                "ttl_s": ttl_s,
            },
        )
        header = yield from self._cube(req.cube_id, Permission.WRITE, req.user_id)
        ttl = req.ttl_s if req.ttl_s is not None else header.memory_ttl_s
        self._check_embedder(header)
        subject = req.subject_id or req.user_id
        messages, redacted = redact_messages(req.messages, header.redaction)  # before any model sees them
        read = yield Compute(lambda: self.reader.read(messages, user_id=subject, mode=req.mode))
        now = self.clock()  # when the memories were stored: their age (decay) and expiry count from it
        stamp: dict[str, Any] = {"visibility": req.visibility, "author_id": req.user_id, "created_at": now}
        if ttl is not None:
            stamp["expires_at"] = now + timedelta(seconds=ttl)
        items = [i.model_copy(update=stamp) for i in read.items]
        events = [base.RecordEventOp(req.cube_id, "extraction_failed", f) for f in read.failures]
        if redacted:  # kinds and counts only, never values
            events.append(base.RecordEventOp(req.cube_id, "redacted", {"kinds": redacted, "by": req.user_id}))
        for attempt in range(self.WRITE_ATTEMPTS):
            decide = self.reader.decide if req.mode is ReadMode.FINE and self.llm is not None else None
            update = yield from self.organizer.plan(req.cube_id, items, read.edges, now=now, decide=decide)
            try:  # the plan, the failures and the caller's permission: one transaction
                yield [base.WriteOp(req.cube_id, update.batch), *events]
            except VersionConflictError:
                if attempt + 1 == self.WRITE_ATTEMPTS:
                    raise
                log.info("add to cube %s: a concurrent write made the plan stale; planning again", req.cube_id)
                continue
            return AddResult(ids=update.memory_ids, merged=update.merged, failures=read.failures, redacted=redacted)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, memory_id: str, user_id: str, cube_id: str, *, as_of: datetime | None = None) -> MemoryItem:
        """Return one memory (needs read permission), as it is now or as it was at ``as_of``.

        Args:
            memory_id: The memory.
            user_id: The caller.
            cube_id: Its cube.
            as_of: A past instant (timezone-aware): the version stored then (MemVault; the
                caller's read scope as of then). None: now.

        Raises:
            InvalidInputError: Malformed ids, a naive ``as_of``.
            MemoryNotFoundError: No such memory in the cube (at ``as_of``: none stored then).

        """
        return self._run(self._get(memory_id, user_id, cube_id, as_of), user_id)

    async def aget(self, memory_id: str, user_id: str, cube_id: str, *, as_of: datetime | None = None) -> MemoryItem:
        """Async twin of :meth:`get`."""
        item = await self._arun(self._get(memory_id, user_id, cube_id, as_of), user_id)
        self._aflush_soon()
        return item

    def _get(self, memory_id: str, user_id: str, cube_id: str, as_of: datetime | None = None) -> Flow[MemoryItem]:
        req = parse(GetRequest, {"memory_id": memory_id, "user_id": user_id, "cube_id": cube_id})
        if as_of is not None:
            (snap,) = yield [base.AsOfOp(req.cube_id, as_of, [req.memory_id])]
            found = cast(base.CubeSnapshot, snap).items
            if not found:
                raise MemoryNotFoundError(f"no memory {req.memory_id!r} in cube {req.cube_id!r} at {as_of.isoformat()}")
            return found[0]
        (found,) = yield [base.GetOp(req.cube_id, [req.memory_id])]
        if not found:
            raise MemoryNotFoundError(f"no memory {req.memory_id!r} in cube {req.cube_id!r}")
        self._note_access(found)
        return cast(MemoryItem, found[0])

    def update(
        self,
        memory_id: str,
        user_id: str,
        cube_id: str,
        *,
        text: str | None = None,
        memory_type: MemoryType | None = None,
        tags: list[str] | None = None,
        status: LifecycleState | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Change a memory; a new text is re-embedded. The version is incremented.

        Args:
            memory_id: The memory to change.
            user_id: The caller (write permission).
            cube_id: The memory's cube.
            text: New text, re-embedded (None: unchanged).
            memory_type: New memory type (None: unchanged).
            tags: New tags (None: unchanged).
            status: New lifecycle state (None: unchanged).
            expected_version: Fail unless the stored version is this (optimistic concurrency).

        Raises:
            MemoryNotFoundError / VersionConflictError / InvalidInputError / PermissionDeniedError.

        """
        flow = self._update(memory_id, user_id, cube_id, text, memory_type, tags, status, expected_version)
        return self._run(flow, user_id)

    async def aupdate(
        self,
        memory_id: str,
        user_id: str,
        cube_id: str,
        *,
        text: str | None = None,
        memory_type: MemoryType | None = None,
        tags: list[str] | None = None,
        status: LifecycleState | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Async twin of :meth:`update`."""
        flow = self._update(memory_id, user_id, cube_id, text, memory_type, tags, status, expected_version)
        return await self._arun(flow, user_id)

    def _update(
        self,
        memory_id: str,
        user_id: str,
        cube_id: str,
        text: str | None,
        memory_type: MemoryType | None,
        tags: list[str] | None,
        status: LifecycleState | None,
        expected_version: int | None,
    ) -> Flow[MemoryItem]:
        if tags is not None and (isinstance(tags, str | bytes) or not isinstance(tags, Sequence)):
            raise InvalidInputError("tags must be a list of strings")
        req = parse(
            UpdateRequest,
            {
                "memory_id": memory_id,
                "user_id": user_id,
                "cube_id": cube_id,
                "text": text,
                "memory_type": memory_type,
                "tags": None if tags is None else list(tags),
                "status": status,
                "expected_version": expected_version,
            },
        )
        header = yield from self._cube(req.cube_id, Permission.WRITE, req.user_id)
        self._check_embedder(header)
        (current,) = yield [base.GetOp(req.cube_id, [req.memory_id])]
        if not current:
            raise MemoryNotFoundError(f"no memory {req.memory_id!r} in cube {req.cube_id!r}")
        changes: dict[str, Any] = {}
        if req.expected_version is not None:
            changes["version"] = req.expected_version
        if req.text is not None:
            self._check_text(req.text, "text")
            new_text = default_redactor().redact(req.text, header.redaction).text  # refuse: raises
            changes["text"] = new_text
            changes["embedding"] = (yield Compute(lambda: self.reader.embed([new_text])[0])).tolist()
        if req.status is not None:
            check_transition(current[0].status, req.status)
        for name in ("memory_type", "status", "tags"):
            if getattr(req, name) is not None:
                changes[name] = getattr(req, name)
        try:  # validate the whole new item: every field bounded, embedding finite
            new = MemoryItem.model_validate({**current[0].model_dump(), **changes})
        except ValidationError as exc:
            raise InvalidInputError(f"invalid update: {exc.errors()[0]['msg']}") from exc
        (written,) = yield [base.WriteOp(req.cube_id, base.WriteBatch(update=[new]))]
        return cast(MemoryItem, written.updated[0])

    def delete(self, memory_ids: Sequence[str], user_id: str, cube_id: str) -> int:
        """Delete memories and their edges (needs write permission). Returns how many were deleted."""
        return self._run(self._delete(memory_ids, user_id, cube_id), user_id)

    async def adelete(self, memory_ids: Sequence[str], user_id: str, cube_id: str) -> int:
        """Async twin of :meth:`delete`."""
        return await self._arun(self._delete(memory_ids, user_id, cube_id), user_id)

    def _delete(self, memory_ids: Sequence[str], user_id: str, cube_id: str) -> Flow[int]:
        if isinstance(memory_ids, str | bytes) or not isinstance(memory_ids, Sequence):
            raise InvalidInputError("memory_ids must be a list of ids")
        req = parse(DeleteRequest, {"memory_ids": list(memory_ids), "user_id": user_id, "cube_id": cube_id})
        (deleted,) = yield [base.DeleteOp(req.cube_id, req.memory_ids)]
        if deleted:
            yield from self._invalidate_derived({req.cube_id: set(req.memory_ids)})
        return cast(int, deleted)

    # -- reads -------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        token_budget: int | None = None,
        as_of: datetime | None = None,
    ) -> list[ScoredMemory]:
        """Hybrid search over the cubes the caller may read.

        Args:
            query: The question (non-empty, at most ``max_text_chars``).
            user_id: The caller (read permission on every cube, checked by the store).
            cube_ids: Cubes to search, a list (None: the caller's own cubes, see
                :meth:`default_cubes`; shared and public cubes are searched only when named).
            top_k: Maximum results (default ``config.retrieval.top_k``).
            filters: :class:`SearchFilters` or a dict of its fields.
            token_budget: Maximum total tokens of the rendered results (default
                ``config.default_token_budget``); results that do not fit are skipped.
            as_of: A past instant (timezone-aware): search the cubes as they were then
                (MemVault point-in-time read: each cube's state at ``as_of`` is rebuilt from its
                kept versions and searched exactly, in memory; cost grows with the cube's size,
                not the changes). None: now.

        Returns:
            Results best first, each with score, tokens and per-retriever signals.

        Raises:
            InvalidInputError: Empty or oversized query, ``cube_ids`` given as a string, ``top_k``
                or ``token_budget`` not a positive integer, invalid filters.
            CubeNotFoundError / PermissionDeniedError: A named cube is missing or not readable.
            ModelError: The embedder failed.

        """
        req = self._search_request(query, user_id, cube_ids, top_k, filters, token_budget, as_of=as_of)
        return self._run(self._search(req), user_id)

    async def asearch(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        token_budget: int | None = None,
        as_of: datetime | None = None,
    ) -> list[ScoredMemory]:
        """Async twin of :meth:`search` (the store's async path; embedding in a worker thread)."""
        req = self._search_request(query, user_id, cube_ids, top_k, filters, token_budget, as_of=as_of)
        results = await self._arun(self._search(req), user_id)
        self._aflush_soon()
        return results

    def _search_request(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None,
        top_k: int | None,
        filters: SearchFilters | dict[str, Any] | None,
        token_budget: int | None,
        model: type[SearchRequest] = SearchRequest,
        **extra: Any,
    ) -> SearchRequest:
        self._check_text(query, "query")
        if isinstance(cube_ids, str | bytes) or not (cube_ids is None or isinstance(cube_ids, Sequence)):
            raise InvalidInputError("cube_ids must be a list of cube ids (or None), not a single string")
        fields = {
            "query": query,
            "user_id": user_id,
            "cube_ids": None if cube_ids is None else list(cube_ids),
            "top_k": top_k,
            "filters": filters,
            "token_budget": token_budget,
            **extra,
        }
        return parse(model, {k: v for k, v in fields.items() if v is not None or k in ("top_k", "cube_ids")})

    def _search_cubes(self, req: SearchRequest) -> Flow[tuple[list[str], dict[str, str] | None]]:
        """Resolve the cubes a search reads and label those read through a MemStore subscription.

        Without ``cube_ids``: the caller's own cubes (not the snapshots it published) and the
        cubes of its subscriptions it may still read, with their labels (``cube id ->
        name@version``). Named cubes are not read here: every op of the retrieval checks the
        caller may read its cube, in the transaction that reads it (and refuses an unknown one);
        their labels (None here) are read with the retrieval's first batch.
        """
        if req.cube_ids is None:
            owned, subs = yield [base.ListCubesOp(owner_id=req.user_id, namespaced=False), base.ListSubscriptionsOp()]
            cubes = [h.cube_id for h in self._searchable(owned) if h.published_as is None]
            labels = self._labels(subs)
            return cubes + [c for c in labels if c not in cubes], labels
        return list(dict.fromkeys(req.cube_ids)), None

    @staticmethod
    def _labels(subs: Sequence[Subscription]) -> dict[str, str]:
        return {s.cube_id: s.key for s in subs if s.active}

    def _search(self, req: SearchRequest) -> Flow[list[ScoredMemory]]:
        k = req.top_k if req.top_k is not None else self.config.retrieval.top_k
        cubes, labels = yield from self._search_cubes(req)
        if not cubes:
            return []
        vector = yield Compute(lambda: self.reader.embed([req.query])[0])
        try:
            retrieval = self.retriever.retrieve(
                cubes,
                self.reader.parse_query(req.query),
                vector,
                k=k,
                filters=req.filters,
                dedupe=self.scheduler.deduplicate,
                now=req.as_of or self.clock(),
            )
            extra: list[base.Op] = [base.ListSubscriptionsOp()] if labels is None else []
            if req.as_of is None:
                chosen, got = yield from piggyback(retrieval, extra)
            else:  # the cubes as they were: rebuilt by the store (caller's scope), searched in memory
                read = yield [*(base.AsOfOp(cid, req.as_of, with_embeddings=True) for cid in cubes), *extra]
                snaps, got = read[: len(cubes)], read[len(cubes) :]
                chosen = yield Compute(lambda: self._search_snapshots(cubes, snaps, retrieval))
            if labels is None:
                labels = self._labels(got[0])
        except EmbeddingDimensionError:  # say which cube needs which embedder
            for header in (yield [base.GetCubeOp(cid) for cid in cubes]):
                self._check_embedder(header)
            raise
        budget = req.token_budget if req.token_budget is not None else self.config.default_token_budget
        results = self.scheduler.fit(chosen, top_k=k, token_budget=budget)
        if labels:
            results = [
                r.model_copy(update={"published": labels[r.item.cube_id]}) if r.item.cube_id in labels else r
                for r in results
            ]
        if req.as_of is None:  # a use of what the memories are now (a look into the past is none)
            self._note_access(r.item for r in results)
        return results

    @staticmethod
    def _search_snapshots(
        cubes: Sequence[str], snaps: Sequence[base.CubeSnapshot], retrieval: Flow[list[ScoredMemory]]
    ) -> list[ScoredMemory]:
        """Run a retrieval flow against point-in-time snapshots loaded into an in-memory store."""
        from memos_agents.plaintext.stores.memory import InMemoryStore

        past = InMemoryStore(audit=False)  # the reads were audited by the real store (history.as_of)
        past.setup()
        for cube_id, snap in zip(cubes, snaps, strict=True):
            header = CubeHeader(cube_id=cube_id, owner_id="system")
            past.run(base.ImportCubeOp(header, snap.items, snap.edges))
        return run_sync(retrieval, past, base.SYSTEM)

    def chat(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        token_budget: int | None = 1000,
        history: Sequence[dict[str, str]] = (),
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Answer ``query`` with the LLM, given the memories search finds.

        Args:
            query: The question.
            user_id: The caller (read permission on every cube).
            cube_ids: Cubes to use (None: the caller's own cubes, as in :meth:`search`).
            top_k: Maximum memories (default ``config.retrieval.top_k``).
            token_budget: Tokens of memory context (default 1000).
            history: Earlier OpenAI-style messages of this chat (at most :data:`MAX_HISTORY`).
            max_tokens: Answer length limit (default ``config.llm.max_tokens``).

        Raises:
            ConfigError: No LLM configured.
            ModelError: The LLM failed (any exception of a custom LLM is wrapped).
            InvalidInputError / CubeNotFoundError / PermissionDeniedError: As :meth:`search`.

        """
        flow = self._chat(query, user_id, cube_ids, top_k, token_budget, history, max_tokens)
        return self._run(flow, user_id)

    async def achat(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        token_budget: int | None = 1000,
        history: Sequence[dict[str, str]] = (),
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Async twin of :meth:`chat` (generation in a worker thread)."""
        flow = self._chat(query, user_id, cube_ids, top_k, token_budget, history, max_tokens)
        return await self._arun(flow, user_id)

    def _chat(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None,
        top_k: int | None,
        token_budget: int | None,
        history: Sequence[dict[str, str]],
        max_tokens: int | None,
    ) -> Flow[ChatResult]:
        llm = self.llm
        if llm is None:
            raise ConfigError("chat needs an LLM; configure llm.provider")
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise InvalidInputError("history must be a list of {'role': str, 'content': str} messages")
        if len(history) > self.MAX_HISTORY:
            raise InvalidInputError(f"history has {len(history)} messages; the limit is {self.MAX_HISTORY}")
        for m in history:
            if not isinstance(m, dict):
                raise InvalidInputError("history must be a list of {'role': str, 'content': str} messages")
            check_text(m.get("role"), "history role", 256)
            check_text(m.get("content"), "history message", self.config.max_text_chars, blank=True)
        req = self._search_request(
            query,
            user_id,
            cube_ids,
            top_k,
            None,
            token_budget,
            model=ChatRequest,
            history=[{"role": m["role"], "content": m["content"]} for m in history],
            max_tokens=max_tokens,
        )
        assert isinstance(req, ChatRequest)
        limit = self.config.llm.max_tokens if req.max_tokens is None else req.max_tokens
        t0 = time.perf_counter()
        memories = yield from self._search(req)
        history = [m.model_dump() for m in req.history]
        if self.activation is None and self.parametric is None:
            t1 = time.perf_counter()
            messages = answer_prompt.build_messages(req.query, self.scheduler.render_context(memories), history)
            answer = yield Compute(
                lambda: call_llm(
                    llm, messages, max_tokens=limit, temperature=self.config.llm.temperature, stop=answer_prompt.STOP
                )
            )
            t2 = time.perf_counter()
            return ChatResult(
                answer=answer, memories=memories, search_ms=(t1 - t0) * 1000, generate_ms=(t2 - t1) * 1000
            )
        activation = self.activation
        scheduled, chosen, adapter = yield from self._plan(req, memories)
        plan = scheduled.plan
        messages = answer_prompt.build_scheduled_messages(req.query, scheduled.stable, scheduled.context, history)
        t1 = time.perf_counter()
        cached = 0
        if chosen is not None and not chosen.prefix_only and activation is not None:
            gen = yield Compute(lambda: self._generate_with_kv(activation, messages, chosen, limit, plan))
            answer, cached = gen.text, gen.cached_tokens
        elif adapter is not None and self.parametric is not None:
            parametric = self.parametric
            kwargs: dict[str, Any] = {
                "max_new_tokens": limit,
                "stop": answer_prompt.STOP,
                "temperature": self.config.llm.temperature,
            }
            gen = yield Compute(lambda: parametric.generate(adapter, messages, **kwargs))
            answer = gen.text
        else:
            answer = yield Compute(
                lambda: call_llm(
                    llm, messages, max_tokens=limit, temperature=self.config.llm.temperature, stop=answer_prompt.STOP
                )
            )
        t2 = time.perf_counter()
        return ChatResult(
            answer=answer,
            memories=memories,
            search_ms=(t1 - t0) * 1000,
            generate_ms=(t2 - t1) * 1000,
            plan=plan,
            cached_tokens=cached,
        )

    def schedule(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        token_budget: int | None = 1000,
    ) -> ScheduledContext:
        """Search, then decide how each memory enters the model (MemScheduler), as ``chat`` does before generating.

        With activation memory off, every memory is prompt text (``plan`` None). On, the plan says
        which memories a fresh KV cache covers (``stable`` is their text: the start of the system
        message, which the cache covers or, with an OpenAI-compatible endpoint, a server's prefix
        cache can reuse) and which go as text (``context``); see
        :mod:`memos_agents.operation.scheduler`. Frameworks that call their own LLM (LangGraph's
        MemSchedulerNode) use this to lay out their prompt as ``chat`` does.

        Raises:
            InvalidInputError / CubeNotFoundError / PermissionDeniedError: As :meth:`search`.

        """
        req = self._search_request(query, user_id, cube_ids, top_k, None, token_budget)
        return self._run(self._schedule(req), user_id)

    async def aschedule(
        self,
        query: str,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        token_budget: int | None = 1000,
    ) -> ScheduledContext:
        """Async twin of :meth:`schedule`."""
        req = self._search_request(query, user_id, cube_ids, top_k, None, token_budget)
        return await self._arun(self._schedule(req), user_id)

    def _schedule(self, req: SearchRequest) -> Flow[ScheduledContext]:
        memories = yield from self._search(req)
        if self.activation is None and self.parametric is None:
            return ScheduledContext(memories=memories, context=self.scheduler.render_context(memories))
        scheduled, _, _ = yield from self._plan(req, memories)
        return scheduled

    def _plan(
        self, req: SearchRequest, memories: list[ScoredMemory]
    ) -> Flow[tuple[ScheduledContext, UsableKV | None, UsableAdapter | None]]:
        activation, parametric = self.activation, self.parametric
        cubes, _ = yield from self._search_cubes(req)
        usable = (yield from activation.usable(cubes, req.user_id)) if activation is not None else []
        adapters: list[UsableAdapter] = []
        if parametric is not None:
            yield Compute(parametric.finalize)
            adapters = yield from parametric.usable(cubes, req.user_id)
        # the adapter of the cube whose memories rank highest
        rank = {r.item.cube_id: n for n, r in reversed(list(enumerate(memories)))}
        adapter = min(adapters, key=lambda a: rank.get(cast(str, a.header.source), len(rank)), default=None)
        plan = self.scheduler.plan(
            memories,
            usable,
            adapter.cube_id if adapter is not None else None,
            kv_budget=activation.max_tokens if activation is not None else None,
        )
        chosen = next((u for u in usable if plan.kv_memory_ids and [i.id for i in u.items] == plan.kv_memory_ids), None)
        scheduled = ScheduledContext(
            memories=memories,
            plan=plan,
            stable=chosen.lines if chosen is not None else "",
            context=self.scheduler.render_context(plan.text),
        )
        return scheduled, chosen, adapter if plan.adapter_cube_id is not None else None

    def _generate_with_kv(
        self, activation: ActivationMemory, messages: list[dict[str, str]], chosen: UsableKV, limit: int, plan: Any
    ) -> Any:
        """Generate with ``chosen``'s KV cache injected (without it if the prompt does not start with its tokens)."""
        from memos_agents.activation.kv import generate

        model, tokenizer, fp = activation.model()
        assert isinstance(self.llm, HFLocalLLM)
        kwargs: dict[str, Any] = {
            "max_new_tokens": limit,
            "stop": answer_prompt.STOP,
            "temperature": self.config.llm.temperature,
        }
        try:
            cache = activation.load_cache(chosen)
        except MemOSError as exc:  # another model, a damaged or missing file: the same prompt without it
            cache = None
            plan.notes.append(f"KV cache not injected ({type(exc).__name__}: {exc}); its memories went as prompt text")
            plan.kv_cube_id, plan.kv_tokens = None, 0
        with self.llm.threads(), self.llm.busy:
            if cache is not None:
                try:
                    return generate(model, tokenizer, messages, kv=cache, fingerprint=fp, **kwargs)
                except PrefixMismatchError as exc:
                    plan.notes.append(f"KV cache not injected ({exc}); its memories went as prompt text")
                    plan.kv_cube_id, plan.kv_tokens = None, 0
            return generate(model, tokenizer, messages, **kwargs)

    # -- archives ----------------------------------------------------------------------------------
    def export_cube(self, cube_id: str, user_id: str, path: str | Path) -> Path:
        """Write a cube (header, every item with embedding, every edge) to one archive file (read).

        Header, items and edges are read in one store transaction: the archive is a consistent snapshot.
        """
        validate_id(cube_id, "cube_id")
        header, items, edges = self._run(
            self._ops_all([base.GetCubeOp(cube_id), base.ListOp(cube_id, with_embeddings=True), base.EdgesOp(cube_id)]),
            user_id,
        )
        return write_archive(path, MemCube(header=header, items=items, edges=edges))

    @staticmethod
    def _ops_all(ops: list[Any]) -> Flow[list[Any]]:
        """Run one store batch and return every result (a flow)."""
        return cast(list[Any], (yield ops))

    def import_cube(
        self, path: str | Path, user_id: str, *, cube_id: str | None = None, keep_acl: bool = False
    ) -> CubeHeader:
        """Create a cube from an archive, atomically: all of its content is stored, or nothing.

        The importer becomes the cube's owner. Nothing in an archive is trusted for access: its
        header is written by whoever made the file, so its owner and ACL could name anyone. The
        archived ACL is dropped unless ``keep_acl`` is set; the importer, as the new owner, is
        entitled to grant those entries on their own cube. The archive's owner is recorded in the
        cube's event log (``imported``) as provenance. An existing cube is never replaced or merged into.
        Items keep their archived ``author_id`` (provenance).

        Args:
            path: Archive written by :meth:`export_cube`.
            user_id: The importer; owner of the new cube.
            cube_id: Import under this id instead of the archive's.
            keep_acl: Keep the archive's ACL entries (default False: the new cube is private).

        Returns:
            The stored header.

        Raises:
            CubeFormatError: Unknown/newer format, corrupt or oversized archive.
            ArchiveIOError: The file cannot be read.
            CubeExistsError: A cube with the target id exists (import under another id with
                ``cube_id``, or delete that cube first).
            InvalidInputError: Malformed ids.

        """
        ctx = self._ctx(user_id)
        if cube_id is not None:
            validate_id(cube_id, "cube_id")
        cube = read_archive(path)
        target = check_user_cube_id(cube_id or cube.header.cube_id)
        header = cube.header.model_copy(
            update={
                "cube_id": target,
                "owner_id": user_id,
                "acl": list(cube.header.acl) if keep_acl else [],
                "published_as": None,  # a registry's snapshot elsewhere; here an ordinary cube
                "storage": cube.header.storage.model_copy(update={"backend": type(self.store).__name__}),
            }
        )
        provenance = {
            "by": user_id,
            "archive_cube_id": cube.header.cube_id,
            "archive_owner": cube.header.owner_id,
            "kept_acl": keep_acl,
        }
        self.store.batch(
            [base.ImportCubeOp(header, cube.items, cube.edges), base.RecordEventOp(target, "imported", provenance)],
            ctx=ctx,
        )
        return header
