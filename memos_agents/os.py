"""MemOS: the facade that ties store, reader, retrieval, scheduler and models together.

Typical use::

    from memos_agents import MemOS

    with MemOS.from_path("~/.memos") as mos:
        mos.create_cube("alice-notes", owner_id="alice", exist_ok=True)
        mos.add([{"role": "user", "content": "I moved to Lisbon in May."}], user_id="alice",
                cube_id="alice-notes")
        hits = mos.search("Where does Alice live?", user_id="alice", cube_ids=["alice-notes"])

Every call names the caller (``user_id``) and the cube(s); the cube's ACL is checked before the
store is touched. Writes are validated completely before anything is written, then go to the store
as one atomic batch. ``add``, ``search``, ``get``, ``update``, ``delete`` and ``chat`` have
``a``-prefixed async twins that run them in a worker thread; concurrent adds to one cube are
serialised within the process, so the tree is extended one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memos_agents.config import EmbedderProvider, LLMProvider, MemOSConfig, StoreBackend
from memos_agents.cube import AclEntry, CubeHeader, MemCube, Permission, StorageProfile, read_archive, write_archive
from memos_agents.errors import (
    ConfigError,
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    MemoryNotFoundError,
    PermissionDeniedError,
    TextTooLongError,
)
from memos_agents.models.embedders import BaseEmbedder, HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder
from memos_agents.models.llm import BaseLLM, HFLocalLLM, OpenAICompatibleLLM
from memos_agents.models.tokens import TokenCounter
from memos_agents.operation.reader import MemReader, ReadMode, call_llm
from memos_agents.operation.scheduler import MemScheduler
from memos_agents.plaintext.retrieval import HybridRetriever
from memos_agents.plaintext.stores.base import BaseMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
from memos_agents.plaintext.tree import TreeOrganizer
from memos_agents.prompts import answer as answer_prompt
from memos_agents.schema import (
    MAX_LABEL_CHARS,
    LifecycleState,
    MemoryItem,
    MemoryType,
    Message,
    ScoredMemory,
    SearchFilters,
    check_text,
    validate_id,
)

log = logging.getLogger(__name__)

MessageLike = Message | dict[str, Any]


@dataclass
class AddResult:
    """What :meth:`MemOS.add` stored.

    Attributes:
        ids: Ids of the new memory items (turns, facts and merged items; not topic nodes).
        merged: How many new items were merged into existing ones (and archived).
        failures: Fine-mode extraction failures (also recorded in the cube's event log).

    """

    ids: list[str] = field(default_factory=list)
    merged: int = 0
    failures: list[dict[str, object]] = field(default_factory=list)


@dataclass
class ChatResult:
    """Answer of :meth:`MemOS.chat` with the memories it was given and timings (ms)."""

    answer: str
    memories: list[ScoredMemory]
    search_ms: float
    generate_ms: float


def build_embedder(config: MemOSConfig) -> BaseEmbedder:
    """Create the embedder a config asks for (no model is loaded until first use)."""
    e = config.embedder
    if e.provider == EmbedderProvider.HASHING:
        return HashingEmbedder(dim=e.dim)
    if e.provider == EmbedderProvider.OPENAI:
        if not e.model:
            raise ConfigError("embedder.model is required for the openai provider")
        return OpenAIEmbedder(e.model, e.dim, base_url=e.base_url, api_key=e.api_key, batch_size=e.batch_size)
    return SentenceTransformerEmbedder(e.model, dim=e.dim, batch_size=e.batch_size)


def build_store(config: MemOSConfig) -> BaseMemoryStore:
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
            s.uri or "", auth=auth, database=s.database, tenant=s.tenant, use_fulltext_index=s.use_fulltext_index
        )
    return SQLiteMemoryStore(config.db_path, synchronous=s.sqlite_synchronous, busy_timeout_s=s.busy_timeout_s)


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

    def __init__(
        self,
        config: MemOSConfig | None = None,
        *,
        store: BaseMemoryStore | None = None,
        embedder: BaseEmbedder | None = None,
        llm: BaseLLM | None = None,
        token_counter: TokenCounter | None = None,
    ) -> None:
        self.config = config or MemOSConfig()
        self.store = store or build_store(self.config)
        self.embedder = embedder or build_embedder(self.config)
        self.llm = llm if llm is not None else build_llm(self.config)
        self.reader = MemReader(self.embedder, self.llm, self.config.reader)
        self.organizer = TreeOrganizer(self.config.reader)
        self.retriever = HybridRetriever(self.config.retrieval)
        self.scheduler = MemScheduler(token_counter or TokenCounter(self.config.tokenizer_encoding))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _write_lock(self, cube_id: str) -> threading.Lock:
        """Return the lock that serialises tree updates of one cube within this process."""
        with self._locks_guard:
            return self._locks.setdefault(cube_id, threading.Lock())

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
            ("store", BaseMemoryStore),
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

    def setup(self) -> MemOS:
        """Open the store and apply migrations (idempotent). Returns self."""
        self.store.setup()
        return self

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> MemOS:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()

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
    ) -> CubeHeader:
        """Create a plaintext MemCube owned by ``owner_id``.

        Args:
            cube_id: New cube id.
            owner_id: Owner (has every permission).
            description: Free text.
            source: Provenance of the cube.
            acl: Extra ACL entries.
            exist_ok: Return the existing header instead of raising (the caller must be allowed to read it).

        Raises:
            InvalidInputError: Malformed ids.
            CubeExistsError: The cube exists and ``exist_ok`` is False.

        """
        validate_id(cube_id, "cube_id")
        validate_id(owner_id, "owner_id")
        if exist_ok:
            try:
                return self._cube_for(cube_id, owner_id, Permission.READ)
            except CubeNotFoundError:
                pass
        try:
            header = CubeHeader(
                cube_id=cube_id,
                owner_id=owner_id,
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
        self.store.create_cube(header)
        return header

    def get_cube(self, cube_id: str, user_id: str) -> CubeHeader:
        """Return a cube's header (needs read permission)."""
        return self._cube_for(cube_id, user_id, Permission.READ)

    def list_cubes(self, user_id: str) -> list[CubeHeader]:
        """Return the headers of the cubes ``user_id`` may read (their own and those shared with them)."""
        validate_id(user_id, "user_id")
        return [h for h in self.store.list_cubes() if h.allows(user_id, Permission.READ)]

    def default_cubes(self, user_id: str) -> list[CubeHeader]:
        """Return the cubes ``search``/``chat`` read when no ``cube_ids`` are given: those ``user_id`` owns.

        Cubes merely readable by the caller (shared with them, or readable by ``*``) are searched
        only when named: otherwise anyone could put text into everyone's prompts by marking a cube
        world-readable. Only cubes whose embedding dimension matches this MemOS's embedder are
        included (others need their own embedder).
        """
        validate_id(user_id, "user_id")
        return [
            h
            for h in self.store.list_cubes()
            if h.owner_id == user_id and h.storage.embedding_dim in (None, self.embedder.dim)
        ]

    def delete_cube(self, cube_id: str, user_id: str) -> None:
        """Delete a cube and everything in it (needs admin permission)."""
        self._cube_for(cube_id, user_id, Permission.ADMIN)
        self.store.delete_cube(cube_id)

    def _cube_for(self, cube_id: str, user_id: str, permission: Permission) -> CubeHeader:
        validate_id(cube_id, "cube_id")
        validate_id(user_id, "user_id")
        header = self.store.get_cube(cube_id)
        if not header.allows(user_id, permission):
            raise PermissionDeniedError(f"user {user_id!r} may not {permission.value} cube {cube_id!r}")
        return header

    def _check_embedder(self, header: CubeHeader) -> None:
        dim = header.storage.embedding_dim
        if dim is not None and dim != self.embedder.dim:
            raise ConfigError(
                f"cube {header.cube_id!r} holds {dim}-d embeddings ({header.storage.embedding_model}); "
                f"this MemOS embeds with {self.embedder.model_name} ({self.embedder.dim}-d)"
            )

    def _check_text(self, text: str, what: str) -> None:
        check_text(text, what, self.config.max_text_chars)

    #: Upper bound of every count argument (top_k, token_budget, max_tokens): far above any real
    #: use, and small enough for every backend's integer type.
    MAX_COUNT = 1_000_000
    #: Most earlier messages ``chat`` takes as history.
    MAX_HISTORY = 1_000

    @classmethod
    def _count_arg(cls, value: object, what: str) -> int:
        """Check a count argument (``top_k``, ``token_budget``, ``max_tokens``): an int from 1 to MAX_COUNT."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{what} must be a positive integer, not {value!r}")
        if not 1 <= value <= cls.MAX_COUNT:
            raise InvalidInputError(f"{what} must be between 1 and {cls.MAX_COUNT}, not {value}")
        return value

    def _search_cubes(self, cube_ids: Sequence[str] | None, user_id: str) -> list[str]:
        """Resolve the cubes a search or chat reads, checking read permission on each named one."""
        if cube_ids is None:
            return [h.cube_id for h in self.default_cubes(user_id)]
        if isinstance(cube_ids, str | bytes) or not isinstance(cube_ids, Sequence):
            raise InvalidInputError("cube_ids must be a list of cube ids (or None), not a single string")
        cubes = list(dict.fromkeys(validate_id(cid, "cube_id") for cid in cube_ids))
        for cid in cubes:
            self._check_embedder(self._cube_for(cid, user_id, Permission.READ))
        return cubes

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
    ) -> AddResult:
        """Read messages into memories and store them atomically in the cube's tree.

        Args:
            messages: Chat messages (``Message`` or dicts with ``role``/``content``, optional
                ``name`` (speaker), ``id``, ``timestamp``, ``session_id``, ``image_caption``).
            user_id: The caller; needs write permission; recorded as the items' user.
            cube_id: Target cube (must exist).
            mode: ``"fast"`` (no LLM) or ``"fine"`` (LLM fact extraction too).
            session_id: Session for messages that carry none.

        Returns:
            The stored ids, how many were merged, and extraction failures.

        Raises:
            InvalidInputError: Empty/oversized text, malformed ids or messages, unknown mode.
            CubeNotFoundError: Unknown cube.
            PermissionDeniedError: No write permission.
            ConfigError: ``fine`` mode without an LLM, or an embedder that does not match the cube.
            EmbeddingDimensionError / StoreError: Nothing was written.

        """
        try:
            read_mode = ReadMode(mode)
        except ValueError as exc:
            raise InvalidInputError(f"unknown mode {mode!r}; use 'fast' or 'fine'") from exc
        header = self._cube_for(cube_id, user_id, Permission.WRITE)
        self._check_embedder(header)
        if session_id is not None:
            validate_id(session_id, "session_id")
        msgs = self._messages(messages, session_id)
        read = self.reader.read(msgs, user_id=user_id, mode=read_mode)
        with self._write_lock(cube_id):  # the tree is read and extended as one step per cube
            batch = self.organizer.organize(self.store, cube_id, read.items, read.edges)
            self.store.apply(cube_id, batch)
        for failure in read.failures:
            self.store.record_event(cube_id, "extraction_failed", failure)
        merged = sum(1 for i in read.items if i.status == LifecycleState.ARCHIVED)
        ids = [i.id for i in batch.add if i.node_kind.value == "memory"]
        return AddResult(ids=ids, merged=merged, failures=read.failures)

    def get(self, memory_id: str, user_id: str, cube_id: str) -> MemoryItem:
        """Return one memory (needs read permission).

        Raises:
            MemoryNotFoundError: No such memory in the cube.

        """
        self._cube_for(cube_id, user_id, Permission.READ)
        validate_id(memory_id, "memory_id")
        found = self.store.get(cube_id, [memory_id])
        if not found:
            raise MemoryNotFoundError(f"no memory {memory_id!r} in cube {cube_id!r}")
        return found[0]

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
        header = self._cube_for(cube_id, user_id, Permission.WRITE)
        self._check_embedder(header)
        validate_id(memory_id, "memory_id")
        current = self.store.get(cube_id, [memory_id])
        if not current:
            raise MemoryNotFoundError(f"no memory {memory_id!r} in cube {cube_id!r}")
        item = current[0]
        changes: dict[str, Any] = {}
        if expected_version is not None:
            changes["version"] = expected_version
        if text is not None:
            self._check_text(text, "text")
            changes["text"] = text
            changes["embedding"] = self.reader.embed([text])[0].tolist()
        try:
            if memory_type is not None:
                changes["memory_type"] = MemoryType(memory_type)
            if status is not None:
                changes["status"] = LifecycleState(status)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if tags is not None:
            if isinstance(tags, str | bytes) or not isinstance(tags, Sequence):
                raise InvalidInputError("tags must be a list of strings")
            changes["tags"] = list(tags)
        try:  # validate the whole new item: every field bounded, embedding finite
            new = MemoryItem.model_validate({**item.model_dump(), **changes})
        except ValidationError as exc:
            raise InvalidInputError(f"invalid update: {exc.errors()[0]['msg']}") from exc
        return self.store.update(cube_id, [new])[0]

    def delete(self, memory_ids: Sequence[str], user_id: str, cube_id: str) -> int:
        """Delete memories and their edges (needs write permission). Returns how many were deleted."""
        self._cube_for(cube_id, user_id, Permission.WRITE)
        if isinstance(memory_ids, str | bytes) or not isinstance(memory_ids, Sequence):
            raise InvalidInputError("memory_ids must be a list of ids")
        for mid in memory_ids:
            validate_id(mid, "memory_id")
        return self.store.delete(cube_id, list(memory_ids))

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
    ) -> list[ScoredMemory]:
        """Hybrid search over the cubes the caller may read.

        Args:
            query: The question (non-empty, at most ``max_text_chars``).
            user_id: The caller (read permission on every cube).
            cube_ids: Cubes to search, a list (None: the caller's own cubes, see
                :meth:`default_cubes`; shared and public cubes are searched only when named).
            top_k: Maximum results (default ``config.retrieval.top_k``).
            filters: :class:`SearchFilters` or a dict of its fields.
            token_budget: Maximum total tokens of the rendered results (default
                ``config.default_token_budget``); results that do not fit are skipped.

        Returns:
            Results best first, each with score, tokens and per-retriever signals.

        Raises:
            InvalidInputError: Empty or oversized query, ``cube_ids`` given as a string, ``top_k``
                or ``token_budget`` not a positive integer, invalid filters.
            CubeNotFoundError / PermissionDeniedError: A named cube is missing or not readable.
            ModelError: The embedder failed.

        """
        self._check_text(query, "query")
        k = self._count_arg(self.config.retrieval.top_k if top_k is None else top_k, "top_k")
        if token_budget is not None:
            self._count_arg(token_budget, "token_budget")
        try:
            flt = (
                filters
                if isinstance(filters, SearchFilters) or filters is None
                else SearchFilters.model_validate(filters)
            )
        except ValidationError as exc:
            raise InvalidInputError(f"invalid filters: {exc.errors()[0]['msg']}") from exc
        cubes = self._search_cubes(cube_ids, user_id)
        if not cubes:
            return []
        parsed = self.reader.parse_query(query)
        vector = self.reader.embed([query])[0]
        budget = token_budget if token_budget is not None else self.config.default_token_budget
        # the scheduler drops turns already shown by better results, so fetch more candidates than
        # top_k; fetch again with a wider net when overlaps left fewer than top_k
        limit = 2 * k + 10
        while True:
            results = self.retriever.search(self.store, cubes, parsed, vector, limit=limit, filters=flt)
            chosen = self.scheduler.deduplicate(results)
            if len(chosen) >= k or len(results) < limit:
                return self.scheduler.fit(chosen, top_k=k, token_budget=budget)
            limit *= 4

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
            history: Earlier OpenAI-style messages of this chat.
            max_tokens: Answer length limit (default ``config.llm.max_tokens``).

        Raises:
            ConfigError: No LLM configured.
            ModelError: The LLM failed (any exception of a custom LLM is wrapped).
            InvalidInputError / CubeNotFoundError / PermissionDeniedError: As :meth:`search`.

        """
        if self.llm is None:
            raise ConfigError("chat needs an LLM; configure llm.provider")
        limit = self.config.llm.max_tokens if max_tokens is None else self._count_arg(max_tokens, "max_tokens")
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise InvalidInputError("history must be a list of {'role': str, 'content': str} messages")
        if len(history) > self.MAX_HISTORY:
            raise InvalidInputError(f"history has {len(history)} messages; the limit is {self.MAX_HISTORY}")
        for m in history:
            if not isinstance(m, dict):
                raise InvalidInputError("history must be a list of {'role': str, 'content': str} messages")
            check_text(m.get("role"), "history role", MAX_LABEL_CHARS)
            check_text(m.get("content"), "history message", self.config.max_text_chars, blank=True)
        t0 = time.perf_counter()
        memories = self.search(query, user_id, cube_ids, top_k=top_k, token_budget=token_budget)
        t1 = time.perf_counter()
        messages = answer_prompt.build_messages(query, self.scheduler.render_context(memories), history)
        answer = call_llm(
            self.llm, messages, max_tokens=limit, temperature=self.config.llm.temperature, stop=answer_prompt.STOP
        )
        t2 = time.perf_counter()
        return ChatResult(answer=answer, memories=memories, search_ms=(t1 - t0) * 1000, generate_ms=(t2 - t1) * 1000)

    # -- archives ----------------------------------------------------------------------------------
    def export_cube(self, cube_id: str, user_id: str, path: str | Path) -> Path:
        """Write a cube (header, every item with embedding, every edge) to one archive file."""
        header = self._cube_for(cube_id, user_id, Permission.READ)
        items = self.store.list_items(cube_id, with_embeddings=True)
        edges = self.store.get_edges(cube_id)
        return write_archive(path, MemCube(header=header, items=items, edges=edges))

    def import_cube(
        self, path: str | Path, user_id: str, *, cube_id: str | None = None, keep_acl: bool = False
    ) -> CubeHeader:
        """Create a cube from an archive, atomically: all of its content is stored, or nothing.

        The importer becomes the cube's owner. Nothing in an archive is trusted for access: its
        header is written by whoever made the file, so its owner and ACL could name anyone. The
        archived ACL is dropped unless ``keep_acl`` is set; the importer, as the new owner, is
        entitled to grant those entries on their own cube. The archive's owner is recorded in the
        cube's event log (``imported``) as provenance. An existing cube is never replaced or merged into.

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
        validate_id(user_id, "user_id")
        if cube_id is not None:
            validate_id(cube_id, "cube_id")
        cube = read_archive(path)
        target = cube_id or cube.header.cube_id
        try:
            self.store.get_cube(target)
        except CubeNotFoundError:
            pass
        else:
            raise CubeExistsError(f"cube {target!r} already exists; import it under another id (cube_id=...)")
        archived_owner = cube.header.owner_id
        header = cube.header.model_copy(
            update={
                "cube_id": target,
                "owner_id": user_id,
                "acl": list(cube.header.acl) if keep_acl else [],
                "storage": cube.header.storage.model_copy(update={"backend": type(self.store).__name__}),
            }
        )
        self.store.import_cube(header, cube.items, cube.edges)
        self.store.record_event(
            target,
            "imported",
            {
                "by": user_id,
                "archive_cube_id": cube.header.cube_id,
                "archive_owner": archived_owner,
                "kept_acl": keep_acl,
            },
        )
        return header

    # -- async twins -------------------------------------------------------------------------------
    async def aadd(self, messages: Sequence[MessageLike], user_id: str, cube_id: str, **kwargs: Any) -> AddResult:
        """Async twin of :meth:`add`."""
        return await asyncio.to_thread(lambda: self.add(messages, user_id, cube_id, **kwargs))

    async def asearch(
        self, query: str, user_id: str, cube_ids: Sequence[str] | None = None, **kwargs: Any
    ) -> list[ScoredMemory]:
        """Async twin of :meth:`search`."""
        return await asyncio.to_thread(lambda: self.search(query, user_id, cube_ids, **kwargs))

    async def aget(self, memory_id: str, user_id: str, cube_id: str) -> MemoryItem:
        """Async twin of :meth:`get`."""
        return await asyncio.to_thread(self.get, memory_id, user_id, cube_id)

    async def aupdate(self, memory_id: str, user_id: str, cube_id: str, **kwargs: Any) -> MemoryItem:
        """Async twin of :meth:`update`."""
        return await asyncio.to_thread(lambda: self.update(memory_id, user_id, cube_id, **kwargs))

    async def adelete(self, memory_ids: Sequence[str], user_id: str, cube_id: str) -> int:
        """Async twin of :meth:`delete`."""
        return await asyncio.to_thread(self.delete, memory_ids, user_id, cube_id)

    async def achat(self, query: str, user_id: str, cube_ids: Sequence[str] | None = None, **kwargs: Any) -> ChatResult:
        """Async twin of :meth:`chat`."""
        return await asyncio.to_thread(lambda: self.chat(query, user_id, cube_ids, **kwargs))
