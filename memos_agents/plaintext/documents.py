"""Documents: JSON objects under a namespace and a key, kept as the memories of namespace cubes.

This is what the framework adapters that need a key-value document store stand on (LangGraph's
``BaseStore``: ``langgraph_memos.MemOSStore``) and what the chat message log
(:class:`~memos_agents.operation.messages.MessageLog`) keeps its messages in.

Mapping (one rule, no second storage):

* A **namespace** is a path of 1-16 labels (``("memories", "alice")``). Each namespace is one
  MemCube, whose id is derived from the path (:func:`namespace_cube_id`: a readable slug plus a
  hash of the exact path, under a prefix such as ``lg``) and whose header records the path
  (``CubeHeader.namespace``, set once). The cube is created by the first write to it, owned by
  the writer; from then on it is governed like any cube: its owner and ACL decide who may read
  and write it, the store checks that on every call, and audits it. Namespace cubes are left out
  of a user's default searches (they are searched when named).
* A **document** is one item of that cube: its id is derived from the key (:func:`document_id`),
  ``key`` is the key, ``document`` the JSON object (kept intact), ``text`` what retrieval indexes
  (BM25, and dense when an embedding is given or made), ``user_id`` its subject, ``expires_at``
  and ``ttl_s`` its time to live. A put replaces the item (a new version in MemVault; its
  ``created_at`` kept); a delete deletes it.
* **Expiry** is MemLifecycle's: a document whose ``expires_at`` has passed is not returned by any
  read here, and a lifecycle pass (``MemOS.run_lifecycle``) moves it to ``expired`` and later
  purges it. A read may refresh the time to live (``refresh_ttl``): a versioned write that pushes
  ``expires_at`` to ``ttl_s`` from then.

Cost: a get, put or delete touches the documents named (one batch per namespace touched); a
listing of namespaces reads the caller's cube headers (one per namespace) and counts each; a
search reads the namespaces searched, and grows with their sizes only as hybrid retrieval does.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from memos_agents.api import MAX_COUNT
from memos_agents.cube import CubeHeader, Permission, StorageProfile
from memos_agents.errors import (
    CubeExistsError,
    InvalidInputError,
    ItemExistsError,
    MemoryNotFoundError,
    PermissionDeniedError,
    VersionConflictError,
)
from memos_agents.flow import Compute, Flow
from memos_agents.plaintext.stores import base
from memos_agents.schema import (
    MAX_LABEL_CHARS,
    LifecycleState,
    MemoryItem,
    MemoryOrigin,
    SearchFilters,
    check_document,
    check_text,
    validate_id,
)

if TYPE_CHECKING:
    from memos_agents.os import MemOS

#: A namespace: a path of labels, outermost first.
Namespace = tuple[str, ...]

#: Most labels in a namespace.
MAX_NAMESPACE_DEPTH = 16
#: Longest cube id prefix of namespace cubes.
MAX_PREFIX_CHARS = 32
#: Default cube id prefix of namespace cubes.
DEFAULT_PREFIX = "ns"
#: Most documents written or read in one call.
MAX_BATCH_DOCUMENTS = 10_000
#: Tries of a write whose keys a concurrent write changed between its read and its write.
WRITE_ATTEMPTS = 32
#: Items read per page when a namespace is listed.
PAGE = 500

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def check_namespace(namespace: object, what: str = "namespace") -> Namespace:
    """Return ``namespace`` as a tuple of labels, or refuse it.

    Args:
        namespace: A tuple or list of 1-:data:`MAX_NAMESPACE_DEPTH` strings, each 1-256
            characters of valid UTF-8 text.
        what: What the namespace is, for the error message.

    Raises:
        InvalidInputError: Not a tuple or list of strings, empty, too deep, or a label that is
            empty, too long or not valid text.

    """
    if isinstance(namespace, str | bytes) or not isinstance(namespace, tuple | list):
        raise InvalidInputError(f"{what} must be a tuple of strings, not {type(namespace).__name__}")
    if not 1 <= len(namespace) <= MAX_NAMESPACE_DEPTH:
        raise InvalidInputError(f"{what} must have 1 to {MAX_NAMESPACE_DEPTH} labels, not {len(namespace)}")
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidInputError(f"{what} labels must be strings, not {type(label).__name__}")
        check_text(label, f"{what} label", MAX_LABEL_CHARS)
    return tuple(namespace)


def check_key(key: object) -> str:
    """Return ``key`` if it is a document key: 1-256 characters of valid UTF-8 text.

    Raises:
        InvalidInputError: Not a string, empty, longer than 256 characters or not valid text.

    """
    if not isinstance(key, str):
        raise InvalidInputError(f"a document key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidInputError("a document key must not be empty")
    return check_text(key, "document key", MAX_LABEL_CHARS, blank=True)


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a cube id (1-32 of ``[A-Za-z0-9_-]``); else InvalidInputError."""
    if not isinstance(prefix, str) or not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{MAX_PREFIX_CHARS}}}", prefix):
        raise InvalidInputError(f"malformed namespace cube prefix {prefix!r} (1-{MAX_PREFIX_CHARS} of [A-Za-z0-9_-])")
    return prefix


def _digest(value: str, n: int) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def namespace_cube_id(namespace: Namespace, prefix: str = DEFAULT_PREFIX) -> str:
    """Return the id of the cube that holds ``namespace``: ``<prefix>.<slug>.<hash>``.

    The slug (the labels joined by ``.``, other characters than ``[A-Za-z0-9_-]`` folded to ``-``,
    at most 48 characters) is for people; the hash (96 bits of SHA-256 of the exact path as JSON)
    makes it unique. The cube's header records the exact path, which every read compares.
    """
    ns = check_namespace(namespace)
    slug = namespace_slug(ns)
    digest = _digest(json.dumps(list(ns), ensure_ascii=False), 24)
    return f"{check_prefix(prefix)}.{slug}.{digest}" if slug else f"{check_prefix(prefix)}.{digest}"


def namespace_slug(namespace: Namespace) -> str:
    """Return the readable part of a namespace cube's id (see :func:`namespace_cube_id`).

    The slug of a namespace starts with the slug of each of its prefixes, so the cube ids of a
    namespace's subtree share the id prefix ``<prefix>.<slug>`` (a superset: other namespaces may
    share it too; their headers tell them apart).
    """
    return ".".join(s for s in (_SLUG.sub("-", label).strip("-") for label in namespace) if s)[:48].strip(".-")


def subtree_id_prefix(under: Namespace, prefix: str) -> str:
    """Return the cube id prefix every namespace cube at or below ``under`` starts with."""
    slug = namespace_slug(under) if under else ""
    return f"{check_prefix(prefix)}.{slug}" if slug else f"{check_prefix(prefix)}."


def document_id(key: str) -> str:
    """Return the item id of the document ``key`` (``d.`` and 160 bits of SHA-256 of the key)."""
    return "d." + _digest(check_key(key), 40)


class Document(BaseModel):
    """A document as read back.

    Attributes:
        namespace: Its namespace.
        key: Its key.
        value: The JSON object, as written.
        cube_id: The namespace cube.
        created_at: When it was first written (UTC; kept by later puts).
        updated_at: When it was last written (UTC).
        expires_at: When it expires (UTC; None: never).
        version: Its MemVault version (1 at the first put).
        score: Relevance when returned by a search with a query (higher is better), else None.
        user_id: Its subject (the user it is about).

    """

    model_config = ConfigDict(frozen=True)

    namespace: Namespace
    key: str
    value: dict[str, Any]
    cube_id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    version: int = 1
    score: float | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """One put (``value`` a dict) or delete (``value`` None) of :meth:`DocumentStore.write`.

    Attributes:
        namespace: The namespace.
        key: The key.
        value: The JSON object to store (see :func:`~memos_agents.schema.check_document`), or None
            to delete the document.
        text: What retrieval indexes (BM25, and the MemOS embedder when ``embed``); None: the key.
        embedding: A vector for dense search, of the namespace cube's dimension (None: none, unless
            ``embed``).
        embed: Embed ``text`` with the MemOS embedder (ignored when ``embedding`` is given).
        ttl_s: Time to live in seconds (None: none).
        subject_id: The user the document is about (None: the caller).
        exclusive: Add only: if the key exists (or is added concurrently), the whole write is
            refused with :class:`~memos_agents.errors.VersionConflictError` (an append log's
            positions, never overwritten).

    """

    namespace: Namespace
    key: str
    value: dict[str, Any] | None
    text: str | None = None
    embedding: Sequence[float] | None = None
    embed: bool = False
    ttl_s: float | None = None
    subject_id: str | None = None
    exclusive: bool = False


def as_document(item: MemoryItem, namespace: Namespace, score: float | None = None) -> Document:
    """Return the :class:`Document` an item of a namespace cube holds."""
    return Document(
        namespace=namespace,
        key=item.key or "",
        value=item.document or {},
        cube_id=item.cube_id,
        created_at=item.created_at,
        updated_at=item.updated_at,
        expires_at=item.expires_at,
        version=item.version,
        score=score,
        user_id=item.user_id,
    )


def _may(header: CubeHeader, ctx: base.CallContext, permission: Permission) -> bool:
    try:
        base.authorize(header, ctx, permission)
    except PermissionDeniedError:
        return False
    return True


def _live(item: MemoryItem, now: datetime) -> bool:
    """Whether a stored item is a document a read returns: activated, not expired."""
    return (
        item.document is not None
        and item.status is LifecycleState.ACTIVATED
        and (item.expires_at is None or item.expires_at > now)
    )


#: The filter of document reads: activated memory items (expiry is checked against the MemOS clock).
_FILTERS = SearchFilters()


class DocumentStore:
    """Namespaced JSON documents on namespace cubes: ``MemOS.documents`` (see the module docstring).

    Every method runs as ``user_id`` (the acting principal): the store checks read (get, list,
    search) or write (put, delete) on each namespace cube inside the transaction, and audits it.
    A namespace the caller may not read reads as absent (no document, not listed); a write to it
    is refused. With ``owned=True`` only namespaces the caller owns are read or written: another
    owner's namespace reads as absent and a write to it is refused, whatever its ACL says (what an
    agent's own store and the message log use, so that nobody can plant documents in them).

    Namespaces under a prefix of :data:`OWNER_LABELS` name their owner: only that user may create
    them (the message log's ``("messages", user_id, session_id)``).

    Args:
        mos: The MemOS whose store, embedder and clock are used.

    """

    #: Cube id prefix -> position of the namespace label that must be the creating user.
    OWNER_LABELS: ClassVar[dict[str, int]] = {"msg": 1}

    def __init__(self, mos: MemOS) -> None:
        self._mos = mos

    # -- writes ------------------------------------------------------------------------------------
    def write(
        self,
        writes: Sequence[DocumentWrite],
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        embedding_model: tuple[str, int] | None = None,
        owned: bool = False,
    ) -> builtins.list[Document | None]:
        """Apply puts and deletes, all in one transaction: all of them are stored, or none.

        Puts upsert by (namespace, key): a new key is added; an existing one is replaced (its
        ``created_at`` kept, its version incremented; a put without a vector leaves the document
        unindexed for dense search). The last write of a (namespace, key) in ``writes`` wins. A
        namespace cube is created, owned by the caller, by its first put (never by a delete).

        Args:
            writes: Up to :data:`MAX_BATCH_DOCUMENTS` puts and deletes.
            user_id: The caller.
            prefix: Cube id prefix of the namespace cubes (default ``ns``).
            embedding_model: ``(name, dimension)`` recorded in new namespace cubes' storage profile
                when the writes carry their own vectors (None: the MemOS embedder's).
            owned: Refuse to write a namespace another user owns, whatever its ACL.

        Returns:
            Per write, the stored :class:`Document` (puts) or None (deletes).

        Raises:
            InvalidInputError: A malformed namespace, key, value, text, TTL or subject.
            PermissionDeniedError: The caller may not write a namespace cube (or, ``owned``, does
                not own it; or the namespace names another owner, see :data:`OWNER_LABELS`).
            EmbeddingDimensionError: A vector of another dimension than the cube's.
            SensitiveDataError: A value holds what the cube's redaction policy refuses.
            VersionConflictError: An ``exclusive`` write found its key taken.

        """
        return self._mos._run(self._write(writes, user_id, prefix, embedding_model, owned), user_id)

    async def awrite(
        self,
        writes: Sequence[DocumentWrite],
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        embedding_model: tuple[str, int] | None = None,
        owned: bool = False,
    ) -> builtins.list[Document | None]:
        """Async twin of :meth:`write` (embedding in a worker thread)."""
        return await self._mos._arun(self._write(writes, user_id, prefix, embedding_model, owned), user_id)

    def _header(self, namespace: Namespace, owner: str, prefix: str, model: tuple[str, int] | None) -> CubeHeader:
        name, dim = model if model is not None else (self._mos.embedder.model_name, self._mos.embedder.dim)
        try:
            return CubeHeader(
                cube_id=namespace_cube_id(namespace, prefix),
                owner_id=owner,
                namespace=namespace,
                model=name,
                source="documents",
                storage=StorageProfile(backend=type(self._mos.store).__name__, embedding_model=name, embedding_dim=dim),
            )
        except ValidationError as exc:
            raise InvalidInputError(f"invalid namespace cube header: {exc}") from exc

    def _write(
        self,
        writes: Sequence[DocumentWrite],
        user_id: str,
        prefix: str,
        model: tuple[str, int] | None,
        owned: bool,
    ) -> Flow[builtins.list[Document | None]]:
        validate_id(user_id, "user_id")
        check_prefix(prefix)
        if isinstance(writes, str | bytes) or not isinstance(writes, Sequence):
            raise InvalidInputError("writes must be a list of DocumentWrite")
        if len(writes) > MAX_BATCH_DOCUMENTS:
            raise InvalidInputError(f"at most {MAX_BATCH_DOCUMENTS:,} documents per write, not {len(writes):,}")
        checked = [self._check_write(w) for w in writes]
        last = {(w.namespace, w.key): n for n, w in enumerate(checked)}  # the last write of a key wins
        by_cube: dict[str, builtins.list[tuple[int, DocumentWrite]]] = {}
        spaces: dict[str, Namespace] = {}
        for n, w in enumerate(checked):
            if last[(w.namespace, w.key)] == n:
                cube = namespace_cube_id(w.namespace, prefix)
                by_cube.setdefault(cube, []).append((n, w))
                spaces[cube] = w.namespace
        creating = {c for c, ws in by_cube.items() if any(w.value is not None for _, w in ws)}
        to_embed = [n for n, w in enumerate(checked) if w.embed and w.embedding is None and w.value is not None]
        vectors: dict[int, builtins.list[float]] = {}
        if to_embed:
            texts = [checked[n].text or checked[n].key for n in to_embed]
            embedded = yield Compute(lambda: self._mos.embedder.embed(texts))
            vectors = {n: np.asarray(v, dtype=np.float32).tolist() for n, v in zip(to_embed, embedded, strict=True)}
        for attempt in range(WRITE_ATTEMPTS):
            headers = yield from self._write_headers(by_cube, creating, spaces, user_id, prefix, model, owned)
            cubes = builtins.list(headers)
            reads: builtins.list[base.Op] = [base.GetOp(c, [document_id(w.key) for _, w in by_cube[c]]) for c in cubes]
            stored_lists = (yield reads) if reads else []
            ops: builtins.list[Any] = []
            out: builtins.list[Document | None] = [None] * len(checked)
            now = self._mos.clock()
            for cube, stored in zip(cubes, stored_lists, strict=True):
                have = {i.id: i for i in cast(builtins.list[MemoryItem], stored)}
                batch = base.WriteBatch()
                deletes: builtins.list[str] = []
                for n, w in by_cube[cube]:
                    item_id = document_id(w.key)
                    old = have.get(item_id)
                    if w.value is None:
                        if old is not None:
                            deletes.append(item_id)
                        continue
                    if w.exclusive and old is not None:
                        raise VersionConflictError(f"document {w.key!r} of namespace {w.namespace!r} exists")
                    item = self._item(w, item_id, user_id, now, old, vectors.get(n))
                    if old is None:
                        batch.add.append(item)
                    else:
                        batch.update.append(item)
                        if item.embedding is None:  # no vector now: the stored one goes too
                            batch.clear_embeddings.append(item_id)
                    out[n] = as_document(item.model_copy(update={"cube_id": cube}), spaces[cube])
                if batch.add or batch.update:
                    ops.append(base.WriteOp(cube, batch))
                if deletes:
                    ops.append(base.DeleteOp(cube, deletes))
            if not ops:
                return self._fill(out, checked, last)
            try:
                results = yield ops
            except (VersionConflictError, MemoryNotFoundError, ItemExistsError) as exc:
                # a concurrent put or delete of the same key (its version moved, it was added or
                # deleted meanwhile): read again and plan again; an exclusive key taken is final
                if any(w.exclusive for w in checked):
                    raise VersionConflictError(f"a document of this write was written concurrently: {exc}") from exc
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                pause = random.uniform(0, 0.002 * (attempt + 1))
                yield Compute(functools.partial(time.sleep, pause))
                continue
            stored_now = {
                (r_cube, i.id): i
                for r_cube, r in zip(self._op_cubes(ops), results, strict=True)
                if isinstance(r, base.WriteResult)
                for i in r.updated
            }
            for n, doc in enumerate(out):
                if doc is not None:
                    fresh = stored_now.get((doc.cube_id, document_id(doc.key)))
                    if fresh is not None:
                        out[n] = as_document(fresh, doc.namespace)
            return self._fill(out, checked, last)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _op_cubes(ops: Sequence[Any]) -> builtins.list[str]:
        return [op.cube_id for op in ops]

    def _write_headers(
        self,
        by_cube: dict[str, builtins.list[tuple[int, DocumentWrite]]],
        creating: set[str],
        spaces: dict[str, Namespace],
        user_id: str,
        prefix: str,
        model: tuple[str, int] | None,
        owned: bool,
    ) -> Flow[dict[str, CubeHeader]]:
        """Return the headers of the cubes written (creating those with puts that do not exist yet)."""
        found = yield from self._read_headers(builtins.list(by_cube), spaces, prefix)
        for cube in by_cube:
            if cube in found or cube not in creating:
                continue
            self._check_owner_label(spaces[cube], prefix, user_id)
            header = self._header(spaces[cube], user_id, prefix, model)
            try:
                yield [base.CreateCubeOp(header)]
            except CubeExistsError:  # created meanwhile, or there but not readable by the caller
                (header,) = yield [base.GetCubeOp(cube)]
                header = cast(CubeHeader, header)
                self._check_namespace_of(header, spaces[cube])
            found[cube] = header
        if owned:
            for cube, header in found.items():
                if header.owner_id != user_id:
                    raise PermissionDeniedError(
                        f"namespace {spaces[cube]!r} belongs to {header.owner_id!r}, not to {user_id!r}"
                    )
        return {c: found[c] for c in by_cube if c in found}

    def _check_owner_label(self, namespace: Namespace, prefix: str, user_id: str) -> None:
        at = self.OWNER_LABELS.get(prefix)
        if at is not None and (len(namespace) <= at or namespace[at] != user_id):
            raise PermissionDeniedError(
                f"namespace {namespace!r} under {prefix!r} names its owner at label {at}: "
                f"only that user may create it, not {user_id!r}"
            )

    @staticmethod
    def _check_namespace_of(header: CubeHeader, namespace: Namespace) -> None:
        if header.namespace != namespace:
            raise InvalidInputError(
                f"cube {header.cube_id!r} does not hold namespace {namespace!r} (it holds {header.namespace!r})"
            )

    @staticmethod
    def _fill(
        out: builtins.list[Document | None], writes: Sequence[DocumentWrite], last: dict[tuple[Namespace, str], int]
    ) -> builtins.list[Document | None]:
        """Give every earlier write of a (namespace, key) the result of its last one."""
        return [out[last[(w.namespace, w.key)]] for w in writes]

    def _check_write(self, w: object) -> DocumentWrite:
        if not isinstance(w, DocumentWrite):
            raise InvalidInputError(f"writes must be DocumentWrite, not {type(w).__name__}")
        namespace = check_namespace(w.namespace)
        check_key(w.key)
        if w.value is not None:
            check_document(w.value, "document value")
        if w.text is not None:
            check_text(w.text, "document text", self._mos.config.max_text_chars)
        if w.ttl_s is not None and (
            isinstance(w.ttl_s, bool) or not isinstance(w.ttl_s, int | float) or not 0 < w.ttl_s <= 100 * 365 * 86_400
        ):
            raise InvalidInputError(f"ttl_s must be a positive number of seconds up to 100 years, not {w.ttl_s!r}")
        if w.subject_id is not None:
            validate_id(w.subject_id, "subject_id")
        if namespace != w.namespace:
            return DocumentWrite(
                namespace, w.key, w.value, w.text, w.embedding, w.embed, w.ttl_s, w.subject_id, w.exclusive
            )
        return w

    def _item(
        self,
        w: DocumentWrite,
        item_id: str,
        user_id: str,
        now: datetime,
        old: MemoryItem | None,
        vector: builtins.list[float] | None,
    ) -> MemoryItem:
        embedding = builtins.list(map(float, w.embedding)) if w.embedding is not None else vector
        fields: dict[str, Any] = {
            "id": item_id,
            "text": w.text or w.key,
            "key": w.key,
            "document": w.value,
            "user_id": w.subject_id or user_id,
            "origin": MemoryOrigin.DIRECT,
            "embedding": embedding,
            "ttl_s": w.ttl_s,
            "expires_at": now + timedelta(seconds=w.ttl_s) if w.ttl_s is not None else None,
            "created_at": old.created_at if old is not None else now,
            "updated_at": now,
            "version": old.version if old is not None else 1,
        }
        try:
            return MemoryItem(**fields)
        except (ValidationError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid document {w.key!r}: {exc}") from exc

    def _read_headers(
        self, cubes: builtins.list[str], spaces: dict[str, Namespace], prefix: str
    ) -> Flow[dict[str, CubeHeader]]:
        """Return the headers of the existing cubes among ``cubes`` that the caller may read (one batch)."""
        if not cubes:
            return {}
        listed = yield [base.ListCubesOp(id_prefix=c) for c in cubes]
        found: dict[str, CubeHeader] = {}
        for cube, headers in zip(cubes, listed, strict=True):
            for header in cast(builtins.list[CubeHeader], headers):
                if header.cube_id == cube:
                    self._check_namespace_of(header, spaces[cube])
                    found[cube] = header
        return found

    def _readable(
        self, spaces: dict[str, Namespace], user_id: str, prefix: str, owned: bool
    ) -> Flow[dict[str, CubeHeader]]:
        found = yield from self._read_headers(builtins.list(spaces), spaces, prefix)
        return {c: h for c, h in found.items() if not owned or h.owner_id == user_id}

    def _one(self, namespace: Namespace, user_id: str, prefix: str, owned: bool) -> Flow[tuple[Namespace, str | None]]:
        """Check the arguments of a one-namespace call; return the namespace and its cube (None: none readable)."""
        validate_id(user_id, "user_id")
        check_prefix(prefix)
        ns = check_namespace(namespace)
        cube = namespace_cube_id(ns, prefix)
        headers = yield from self._readable({cube: ns}, user_id, prefix, owned)
        return ns, cube if cube in headers else None

    # -- reads -------------------------------------------------------------------------------------
    def get(
        self,
        refs: Sequence[tuple[Namespace, str]],
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        refresh_ttl: bool = False,
        owned: bool = False,
    ) -> builtins.list[Document | None]:
        """Return the documents ``(namespace, key)``: None where there is none or it expired.

        A namespace the caller may not read reads as absent (None for its keys).

        Args:
            refs: Up to :data:`MAX_BATCH_DOCUMENTS` ``(namespace, key)`` pairs.
            user_id: The caller.
            prefix: Cube id prefix of the namespace cubes.
            refresh_ttl: Push the expiry of each document read that has a TTL to ``ttl_s`` from
                now (a versioned write, needing write permission).
            owned: Read only namespaces the caller owns.

        Raises:
            InvalidInputError: A malformed ref, namespace or key.
            PermissionDeniedError: With ``refresh_ttl``, the caller may not write a namespace read.

        """
        return self._mos._run(self._get(refs, user_id, prefix, refresh_ttl, owned), user_id)

    async def aget(
        self,
        refs: Sequence[tuple[Namespace, str]],
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        refresh_ttl: bool = False,
        owned: bool = False,
    ) -> builtins.list[Document | None]:
        """Async twin of :meth:`get`."""
        return await self._mos._arun(self._get(refs, user_id, prefix, refresh_ttl, owned), user_id)

    def _get(
        self, refs: Sequence[tuple[Namespace, str]], user_id: str, prefix: str, refresh: bool, owned: bool
    ) -> Flow[builtins.list[Document | None]]:
        validate_id(user_id, "user_id")
        check_prefix(prefix)
        if isinstance(refs, str | bytes) or not isinstance(refs, Sequence) or len(refs) > MAX_BATCH_DOCUMENTS:
            raise InvalidInputError(f"refs must be a list of at most {MAX_BATCH_DOCUMENTS:,} (namespace, key) pairs")
        checked: builtins.list[tuple[Namespace, str]] = []
        for ref in refs:
            if not isinstance(ref, tuple | builtins.list) or len(ref) != 2:
                raise InvalidInputError(f"a ref must be a (namespace, key) pair, not {ref!r}"[:200])
            checked.append((check_namespace(ref[0]), check_key(ref[1])))
        spaces = {namespace_cube_id(ns, prefix): ns for ns, _ in checked}
        headers = yield from self._readable(spaces, user_id, prefix, owned)
        cubes = builtins.list(headers)
        wanted: dict[str, builtins.list[str]] = {c: [] for c in cubes}
        for ns, key in checked:
            cube = namespace_cube_id(ns, prefix)
            if cube in wanted and document_id(key) not in wanted[cube]:
                wanted[cube].append(document_id(key))
        results = (yield [base.GetOp(c, wanted[c]) for c in cubes]) if cubes else []
        now = self._mos.clock()
        items = {
            (c, i.id): i
            for c, found in zip(cubes, results, strict=True)
            for i in cast(builtins.list[MemoryItem], found)
            if _live(i, now)
        }
        if refresh:
            items = yield from self._refresh(items, now)
        out: builtins.list[Document | None] = []
        for ns, key in checked:
            item = items.get((namespace_cube_id(ns, prefix), document_id(key)))
            out.append(None if item is None else as_document(item, ns))
        return out

    def _refresh(
        self, items: dict[tuple[str, str], MemoryItem], now: datetime
    ) -> Flow[dict[tuple[str, str], MemoryItem]]:
        """Push the expiry of the items with a TTL to ``ttl_s`` from ``now``: one versioned write per cube."""
        batches: dict[str, base.WriteBatch] = {}
        for (cube, _), item in items.items():
            if item.ttl_s is not None:
                moved = item.model_copy(update={"expires_at": now + timedelta(seconds=item.ttl_s)})
                batches.setdefault(cube, base.WriteBatch()).update.append(moved)
        if not batches:
            return items
        try:
            results = yield [base.WriteOp(c, b) for c, b in batches.items()]
        except (VersionConflictError, MemoryNotFoundError):  # written or deleted meanwhile: that write decides
            return items
        out = dict(items)
        for cube, result in zip(batches, results, strict=True):
            for fresh in cast(base.WriteResult, result).updated:
                out[(cube, fresh.id)] = fresh
        return out

    def list_namespaces(
        self,
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        under: Namespace | None = None,
        live: bool = True,
        owned: bool = False,
    ) -> builtins.list[Namespace]:
        """Return the namespaces the caller may read, sorted.

        Args:
            user_id: The caller.
            prefix: Cube id prefix of the namespace cubes.
            under: Only this namespace and those below it (None: all).
            live: Only namespaces holding at least one live document (default); False: every
                namespace cube, emptied ones too (what a search needs: the headers only).
            owned: Only namespaces the caller owns.

        Cost: the cube headers under ``<prefix>.<slug of under>`` (an index range on SQLite);
        with ``live``, one count per namespace (and a scan of those whose documents all expired).

        Raises:
            InvalidInputError: A malformed user id, prefix or ``under``.

        """
        return self._mos._run(self._namespaces(user_id, prefix, under, live, owned), user_id)

    async def alist_namespaces(
        self,
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        under: Namespace | None = None,
        live: bool = True,
        owned: bool = False,
    ) -> builtins.list[Namespace]:
        """Async twin of :meth:`list_namespaces`."""
        return await self._mos._arun(self._namespaces(user_id, prefix, under, live, owned), user_id)

    def _namespace_headers(
        self, user_id: str, prefix: str, under: Namespace | None, owned: bool
    ) -> Flow[builtins.list[CubeHeader]]:
        validate_id(user_id, "user_id")
        check_prefix(prefix)
        top: tuple[str, ...] = () if under is None or len(under) == 0 else check_namespace(under)
        (headers,) = yield [
            base.ListCubesOp(
                owner_id=user_id if owned else None, id_prefix=subtree_id_prefix(top, prefix), namespaced=True
            )
        ]
        return [
            h
            for h in cast(builtins.list[CubeHeader], headers)
            if h.namespace is not None and h.cube_id.startswith(prefix + ".") and h.namespace[: len(top)] == top
        ]

    def _namespaces(
        self, user_id: str, prefix: str, under: Namespace | None, live: bool, owned: bool
    ) -> Flow[builtins.list[Namespace]]:
        mine = yield from self._namespace_headers(user_id, prefix, under, owned)
        if not mine or not live:
            return sorted(cast(Namespace, h.namespace) for h in mine)
        # a cube whose documents are all deleted or expired holds no namespace any more
        now = self._mos.clock()
        counts = yield [base.CountOp(h.cube_id, _FILTERS) for h in mine]
        out = []
        for h, count in zip(mine, counts, strict=True):
            if count and (yield from self._any_live(h.cube_id, now)):
                out.append(cast(Namespace, h.namespace))
        return sorted(out)

    def _any_live(self, cube_id: str, now: datetime) -> Flow[bool]:
        offset = 0
        while True:
            (page,) = yield [base.ListOp(cube_id, _FILTERS, limit=PAGE, offset=offset)]
            items = cast(builtins.list[MemoryItem], page)
            if any(_live(i, now) for i in items):
                return True
            if len(items) < PAGE:
                return False
            offset += PAGE

    def list(
        self,
        namespace: Namespace,
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        limit: int | None = None,
        offset: int = 0,
        owned: bool = False,
    ) -> builtins.list[Document]:
        """Return the live documents of one namespace in the order they were first written.

        Args:
            namespace: The namespace.
            user_id: The caller (a namespace it may not read lists nothing).
            prefix: Cube id prefix of the namespace cubes.
            limit: At most this many (None: all).
            offset: Skip this many activated documents first. Expired documents that no sweep
                (:meth:`purge_expired`, MemLifecycle) has moved yet count here, though they are
                not returned: the offset is served by the store's index, not by a scan.
            owned: Only a namespace the caller owns.

        Raises:
            InvalidInputError: A malformed namespace, a negative limit or offset.

        """
        return self._mos._run(self._list(namespace, user_id, prefix, limit, offset, owned), user_id)

    async def alist(
        self,
        namespace: Namespace,
        *,
        user_id: str,
        prefix: str = DEFAULT_PREFIX,
        limit: int | None = None,
        offset: int = 0,
        owned: bool = False,
    ) -> builtins.list[Document]:
        """Async twin of :meth:`list`."""
        return await self._mos._arun(self._list(namespace, user_id, prefix, limit, offset, owned), user_id)

    def _list(
        self, namespace: Namespace, user_id: str, prefix: str, limit: int | None, offset: int, owned: bool
    ) -> Flow[builtins.list[Document]]:
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"{name} must be a non-negative integer, not {value!r}")
        ns, cube = yield from self._one(namespace, user_id, prefix, owned)
        if cube is None:
            return []
        now = self._mos.clock()
        out: builtins.list[Document] = []
        at = offset
        while limit is None or len(out) < limit:
            want = PAGE if limit is None else min(PAGE, limit - len(out))
            (page,) = yield [base.ListOp(cube, _FILTERS, limit=want, offset=at)]
            items = cast(builtins.list[MemoryItem], page)
            out.extend(as_document(i, ns) for i in items if _live(i, now))
            if len(items) < want:
                break
            at += len(items)
        return out

    def page(
        self,
        namespace: Namespace,
        *,
        user_id: str,
        offset: int,
        limit: int = PAGE,
        prefix: str = DEFAULT_PREFIX,
        owned: bool = False,
    ) -> tuple[builtins.list[Document], int]:
        """Read one page of a namespace: ``limit`` activated items from ``offset``, in insertion order.

        For callers that page through a namespace themselves (a filtered listing): the next page
        starts at ``offset`` plus the count returned, whatever number of live documents came back.

        Returns:
            ``(live documents of the page, activated items the page covered)``; fewer items than
            ``limit`` means the namespace ended.

        Raises:
            InvalidInputError: A malformed namespace, offset or limit.

        """
        return self._mos._run(self._page(namespace, user_id, offset, limit, prefix, owned), user_id)

    async def apage(
        self,
        namespace: Namespace,
        *,
        user_id: str,
        offset: int,
        limit: int = PAGE,
        prefix: str = DEFAULT_PREFIX,
        owned: bool = False,
    ) -> tuple[builtins.list[Document], int]:
        """Async twin of :meth:`page`."""
        return await self._mos._arun(self._page(namespace, user_id, offset, limit, prefix, owned), user_id)

    def _page(
        self, namespace: Namespace, user_id: str, offset: int, limit: int, prefix: str, owned: bool
    ) -> Flow[tuple[builtins.list[Document], int]]:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError(f"offset must be a non-negative integer, not {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BATCH_DOCUMENTS:
            raise InvalidInputError(f"limit must be an integer from 1 to {MAX_BATCH_DOCUMENTS:,}, not {limit!r}")
        ns, cube = yield from self._one(namespace, user_id, prefix, owned)
        if cube is None:
            return [], 0
        (page,) = yield [base.ListOp(cube, _FILTERS, limit=limit, offset=offset)]
        items = cast(builtins.list[MemoryItem], page)
        now = self._mos.clock()
        return [as_document(i, ns) for i in items if _live(i, now)], len(items)

    def count(self, namespace: Namespace, *, user_id: str, prefix: str = DEFAULT_PREFIX, owned: bool = False) -> int:
        """Return how many activated documents a namespace holds (expired ones not yet moved included).

        Raises:
            InvalidInputError: A malformed namespace.

        """
        return self._mos._run(self._count(namespace, user_id, prefix, owned), user_id)

    async def acount(
        self, namespace: Namespace, *, user_id: str, prefix: str = DEFAULT_PREFIX, owned: bool = False
    ) -> int:
        """Async twin of :meth:`count`."""
        return await self._mos._arun(self._count(namespace, user_id, prefix, owned), user_id)

    def _count(self, namespace: Namespace, user_id: str, prefix: str, owned: bool) -> Flow[int]:
        _, cube = yield from self._one(namespace, user_id, prefix, owned)
        if cube is None:
            return 0
        (n,) = yield [base.CountOp(cube, _FILTERS)]
        return cast(int, n)

    def search(
        self,
        namespaces: Sequence[Namespace],
        *,
        user_id: str,
        query: str | None = None,
        query_embedding: Sequence[float] | None = None,
        prefix: str = DEFAULT_PREFIX,
        limit: int = 10,
        owned: bool = False,
    ) -> builtins.list[Document]:
        """Rank the live documents of ``namespaces`` for a query, best first, each with its score.

        Two modes: with ``query_embedding`` (documents carrying their own vectors), exact cosine
        over each namespace's vectors (the store's ``VectorSearchOp``, widened past expired
        documents until ``limit`` live ones are found), scores merged; otherwise MemOS hybrid
        retrieval (dense with the MemOS embedder + BM25 + graph expansion, the fused score) over
        the namespace cubes, with no token budget. Namespaces that do not exist, that the caller
        may not read, or whose vectors have another dimension than the query's are skipped.

        Args:
            namespaces: The namespaces searched.
            user_id: The caller.
            query: The query text (needed without ``query_embedding``).
            query_embedding: A query vector.
            prefix: Cube id prefix of the namespace cubes.
            limit: At most this many documents (1-10,000).
            owned: Only namespaces the caller owns.

        Raises:
            InvalidInputError: A malformed namespace, no query, a bad limit.

        """
        flow = self._search(namespaces, user_id, query, query_embedding, prefix, limit, owned)
        return self._mos._run(flow, user_id)

    async def asearch(
        self,
        namespaces: Sequence[Namespace],
        *,
        user_id: str,
        query: str | None = None,
        query_embedding: Sequence[float] | None = None,
        prefix: str = DEFAULT_PREFIX,
        limit: int = 10,
        owned: bool = False,
    ) -> builtins.list[Document]:
        """Async twin of :meth:`search`."""
        flow = self._search(namespaces, user_id, query, query_embedding, prefix, limit, owned)
        return await self._mos._arun(flow, user_id)

    def _search(
        self,
        namespaces: Sequence[Namespace],
        user_id: str,
        query: str | None,
        query_embedding: Sequence[float] | None,
        prefix: str,
        limit: int,
        owned: bool,
    ) -> Flow[builtins.list[Document]]:
        validate_id(user_id, "user_id")
        check_prefix(prefix)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BATCH_DOCUMENTS:
            raise InvalidInputError(f"limit must be an integer from 1 to {MAX_BATCH_DOCUMENTS:,}, not {limit!r}")
        if isinstance(namespaces, str | bytes) or not isinstance(namespaces, Sequence):
            raise InvalidInputError("namespaces must be a list of namespaces")
        if query is None and query_embedding is None:
            raise InvalidInputError("search needs a query or a query embedding")
        spaces = {namespace_cube_id(ns, prefix): check_namespace(ns) for ns in namespaces}
        headers = yield from self._readable(spaces, user_id, prefix, owned)
        now = self._mos.clock()
        if query_embedding is not None:
            vector = np.asarray(query_embedding, dtype=np.float32)
            if vector.ndim != 1 or not np.all(np.isfinite(vector)):
                raise InvalidInputError("the query embedding must be a finite vector")
            cubes = [c for c, h in headers.items() if h.storage.embedding_dim in (None, len(vector))]
            return (yield from self._vector_search(cubes, spaces, vector, limit, now))
        dim = self._mos.embedder.dim
        cubes = [c for c, h in headers.items() if h.storage.embedding_dim in (None, dim)]
        if not cubes:
            return []
        want = limit  # widened below when expired documents not yet swept took places
        while True:
            request = self._mos._search_request(cast(str, query), user_id, cubes, want, None, MAX_COUNT, as_of=None)
            results = yield from self._mos._search(request)
            live = [r for r in results if r.item.cube_id in spaces and _live(r.item, now)]
            if len(live) >= limit or len(results) < want or want >= MAX_BATCH_DOCUMENTS:
                return [as_document(r.item, spaces[r.item.cube_id], r.score) for r in live[:limit]]
            want = min(want * 4, MAX_BATCH_DOCUMENTS)

    def _vector_search(
        self,
        cubes: builtins.list[str],
        spaces: dict[str, Namespace],
        vector: np.ndarray,
        limit: int,
        now: datetime,
    ) -> Flow[builtins.list[Document]]:
        if not cubes:
            return []
        k = limit  # widened below when expired documents not yet swept took places
        while True:
            hits = yield [base.VectorSearchOp(c, vector, k, _FILTERS) for c in cubes]
            scored = sorted(
                ((float(s), c, i) for c, pairs in zip(cubes, hits, strict=True) for i, s in pairs),
                key=lambda t: (-t[0], t[1], t[2]),
            )
            found = yield [base.GetOp(c, [i for _, cc, i in scored if cc == c]) for c in cubes]
            by_id = {(c, i.id): i for c, items in zip(cubes, found, strict=True) for i in items}
            out = []
            for score, cube, item_id in scored:
                item = by_id.get((cube, item_id))
                if item is not None and _live(item, now):
                    out.append(as_document(item, spaces[cube], score))
            exhausted = all(len(pairs) < k for pairs in hits)
            if len(out) >= limit or exhausted or k >= MAX_BATCH_DOCUMENTS:
                return out[:limit]
            k = min(k * 4, MAX_BATCH_DOCUMENTS)

    # -- expiry ------------------------------------------------------------------------------------
    def purge_expired(
        self, *, user_id: str, prefix: str = DEFAULT_PREFIX, limit: int = 10_000, owned: bool = False
    ) -> int:
        """Delete documents whose time to live has passed, in the namespaces the caller may delete from.

        Reads each namespace cube's expiring items through the store's expiry index (cost: the
        namespace headers, and the documents deleted), at most ``limit`` per namespace per call.

        Returns:
            How many documents were deleted.

        Raises:
            InvalidInputError: A malformed user id, prefix or limit.

        """
        return self._mos._run(self._purge(user_id, prefix, limit, owned), user_id)

    async def apurge_expired(
        self, *, user_id: str, prefix: str = DEFAULT_PREFIX, limit: int = 10_000, owned: bool = False
    ) -> int:
        """Async twin of :meth:`purge_expired`."""
        return await self._mos._arun(self._purge(user_id, prefix, limit, owned), user_id)

    def _purge(self, user_id: str, prefix: str, limit: int, owned: bool) -> Flow[int]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise InvalidInputError(f"limit must be an integer from 1 to 100,000, not {limit!r}")
        headers = yield from self._namespace_headers(user_id, prefix, None, owned)
        ctx = base.CallContext.of(user_id)
        cubes = [h.cube_id for h in headers if _may(h, ctx, Permission.DELETE)]
        if not cubes:
            return 0
        now = self._mos.clock()
        found = yield [
            *(base.ListExpiringOp(c, now, expired=False, limit=limit) for c in cubes),
            *(base.ListExpiringOp(c, now, expired=True, limit=limit) for c in cubes),
        ]
        doomed: dict[str, builtins.list[str]] = {}
        for cube, items in zip([*cubes, *cubes], found, strict=True):
            doomed.setdefault(cube, []).extend(i.id for i in cast(builtins.list[MemoryItem], items))
        ops: builtins.list[base.Op] = [
            base.DeleteOp(c, builtins.list(dict.fromkeys(ids))) for c, ids in doomed.items() if ids
        ]
        if not ops:
            return 0
        deleted = yield ops
        return sum(cast(builtins.list[int], deleted))

    # -- namespaces --------------------------------------------------------------------------------
    def delete_namespace(
        self, namespace: Namespace, *, user_id: str, prefix: str = DEFAULT_PREFIX, owned: bool = False
    ) -> bool:
        """Delete a namespace with all its documents (its cube; needs admin on it).

        Returns:
            Whether it existed (for the caller: one it may not read does not).

        Raises:
            InvalidInputError: A malformed namespace.
            PermissionDeniedError: The caller may read but not delete the namespace cube.

        """
        return self._mos._run(self._delete_namespace(namespace, user_id, prefix, owned), user_id)

    async def adelete_namespace(
        self, namespace: Namespace, *, user_id: str, prefix: str = DEFAULT_PREFIX, owned: bool = False
    ) -> bool:
        """Async twin of :meth:`delete_namespace`."""
        return await self._mos._arun(self._delete_namespace(namespace, user_id, prefix, owned), user_id)

    def _delete_namespace(self, namespace: Namespace, user_id: str, prefix: str, owned: bool) -> Flow[bool]:
        _, cube = yield from self._one(namespace, user_id, prefix, owned)
        if cube is None:
            return False
        yield [base.DeleteCubeOp(cube)]
        return True
