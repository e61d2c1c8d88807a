"""``MemOSStore``: LangGraph's ``BaseStore`` on MemOS documents (namespace cubes).

Mapping (the translation; the storage, governance, expiry and retrieval are MemOS's, see
:mod:`memos_agents.plaintext.documents`):

* **Namespace → cube.** Each LangGraph namespace is one MemCube, ``lg.<slug>.<hash>`` (prefix
  ``cube_prefix``), created by the first put, owned by the store's ``user_id`` and governed like
  any cube. A store reads and writes only its own user's namespaces (another user's reads as
  empty, a write to it is a :class:`~memos_agents.errors.PermissionDeniedError`), unless built
  with ``shared=True``: then other users' namespaces as their ACLs allow. A namespace belongs to
  whoever writes it first: give each tenant its own ``cube_prefix`` where several principals
  write through one MemOS home. Labels are validated as
  LangGraph does (non-empty strings without ``.``; root label not ``langgraph`` for puts) and as
  MemOS does (at most 16 labels of at most 256 characters).
* **Namespace → subject.** With ``subject_label=i`` the ``i``-th label of a namespace (such as
  the user id in LangMem's ``("memories", "{langgraph_user_id}")``) is the subject of its items
  (``MemoryItem.user_id``), so ``MemOS.forget_user`` reaches them; it must be a MemOS id. By
  default the subject is ``user_id``.
* **Key → item.** A key is one item (id derived from the key); the value is kept intact as the
  item's JSON document; ``put`` upserts; ``delete`` deletes; ``delete_namespace`` deletes a
  namespace and every namespace under it.
* **Search.** With an ``index`` config (``dims``, ``embed``, ``fields``), as LangGraph's own
  stores: the texts at the index fields (or the put's ``index`` fields; ``index=False``: none)
  are embedded with ``embed`` and a query ranks by cosine; documents without a vector follow
  with score None. One vector per document: the texts of several fields are embedded together,
  where LangGraph's stores keep one vector per field and take the best. Without an ``index``
  config, the MemOS embedder and hybrid retrieval (dense + BM25 + graph, fused) rank; the text
  indexed is the value's strings (or the ``index`` fields'), at most the MemOS text limit.
* **Filters**: exact match on top-level or nested values (``{"a": {"b": 1}}`` or ``"a.b"``), and
  ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``; a missing or non-numeric value never
  matches a range (strings compare as text). Filters are matched on the stored values after
  ranking (with a query: over the best 10,000 items at most; a filter whose matches all rank
  lower finds fewer) or while paging through the namespaces (without one).
* **TTL** (``supports_ttl``): an item's time to live (minutes) becomes the item's MemLifecycle
  expiry; expired items are never returned (``omit_expired`` is always on) and
  :meth:`sweep_ttl` deletes them; a read refreshes the TTL when the store's
  ``ttl.refresh_on_read`` is on (off by default, as LangGraph's SQLite and Postgres stores).

Choices where LangGraph's own stores disagree (tested in ``tests/test_lg_store.py``):

* ``created_at`` is kept when a key is put again (as the SQLite and Postgres stores do; the
  in-memory store resets it); ``updated_at`` moves, and so does it on a TTL refresh (a
  versioned write).
* Times are timezone-aware UTC.
* A search without a query lists namespaces in sorted order, then items in the order their keys
  were first put; a namespace whose items were all deleted is not listed (the in-memory store
  keeps listing it).
* Values come back as fresh copies (a caller mutating one changes nothing stored).
* In one batch, reads see the store as it was before the batch's puts (as the in-memory
  store); the batch's puts and deletes are one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError
from memos_agents.plaintext.documents import (
    MAX_NAMESPACE_DEPTH,
    PAGE,
    Document,
    DocumentWrite,
    Namespace,
    check_prefix,
)
from memos_agents.schema import MAX_LABEL_CHARS, validate_id

__all__ = ["MemOSStore"]

#: Filter operators LangGraph's stores accept.
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


def _check_labels(namespace: tuple[str, ...]) -> None:
    """MemOS's own namespace limits (LangGraph's rules are checked by ``validate_op_namespace``)."""
    if len(namespace) > MAX_NAMESPACE_DEPTH:
        raise InvalidNamespaceError(f"a namespace has at most {MAX_NAMESPACE_DEPTH} labels: {namespace}")
    for label in namespace:
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidNamespaceError(f"namespace labels have at most {MAX_LABEL_CHARS} characters: {label[:40]!r}")


def _value_at(value: Any, key: str) -> tuple[Any, bool]:
    """Return ``(value, found)`` of ``key`` in ``value``: the literal key, else a dotted path."""
    if isinstance(value, dict) and key in value:
        return value[key], True
    if "." in key:
        node = value
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None, False
            node = node[part]
        return node, True
    return None, False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _operator(value: Any, found: bool, op: str, target: Any) -> bool:
    if op == "$eq":
        return found and value == target
    if op == "$ne":
        return not found or value != target
    a, b = _number(value), _number(target)
    if a is None or b is None:
        if isinstance(value, str) and isinstance(target, str):  # strings compare as text
            return {"$gt": value > target, "$gte": value >= target, "$lt": value < target, "$lte": value <= target}[op]
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _matches(value: Any, found: bool, condition: Any) -> bool:
    if isinstance(condition, dict):
        ops = [k for k in condition if isinstance(k, str) and k.startswith("$")]
        if ops:
            unknown = [k for k in ops if k not in OPERATORS]
            if unknown or len(ops) != len(condition):
                raise InvalidInputError(f"unsupported filter operator(s) {unknown or list(condition)}; use {OPERATORS}")
            return all(_operator(value, found, k, v) for k, v in condition.items())
        if not isinstance(value, dict):
            return False
        return all(_matches(*_value_at(value, k), v) for k, v in condition.items())
    return found and value == condition


def matches_filter(value: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """Whether a stored value satisfies a LangGraph filter (see the module docstring).

    Raises:
        InvalidInputError: An unknown ``$`` operator, or operators mixed with plain keys.

    """
    if not flt:
        return True
    return all(_matches(*_value_at(value, k), cond) for k, cond in flt.items())


def _does_match(condition: MatchCondition, namespace: Namespace) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    pairs = (
        zip(namespace, path, strict=False)
        if condition.match_type == "prefix"
        else zip(reversed(namespace), reversed(path), strict=False)
    )
    return all(p == "*" or k == p for k, p in pairs)


def _strings(value: Any) -> list[str]:
    """Return the string leaves of a JSON value, in document order (what hybrid retrieval indexes by default)."""
    out: list[str] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if node.strip():
                out.append(node)
        elif isinstance(node, dict):
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif node is not None:
            out.append(str(node))
    return out


class MemOSStore(BaseStore):
    """LangGraph ``BaseStore`` whose items are MemOS documents (see the module docstring).

    Example:
        >>> from langgraph_memos import MemOSStore
        >>> store = MemOSStore.from_path("~/.memos", user_id="agent")  # doctest: +SKIP
        >>> store.put(("memories", "alice"), "tea", {"content": "Alice likes green tea"})  # doctest: +SKIP
        >>> store.search(("memories", "alice"), query="what does Alice drink?")  # doctest: +SKIP

    Args:
        mos: The MemOS whose store keeps the items (its embedder serves searches without ``index``).
        user_id: The acting principal every call runs as (owner of the namespace cubes it creates).
        index: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``; ``text_fields`` is
            read as ``fields``). None: the MemOS embedder and hybrid retrieval.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` minutes, ``refresh_on_read``,
            ``sweep_interval_minutes``).
        cube_prefix: Cube id prefix of the namespace cubes (default ``lg``; 1-32 of ``[A-Za-z0-9_-]``).
        subject_label: Position of the namespace label naming the items' subject (None: ``user_id``).
        shared: Also read and write namespaces other users own, as their ACLs allow (default False:
            only this user's own namespaces; another's reads as empty and a write to it is refused,
            so nobody can plant items in what an agent reads back).

    Raises:
        InvalidInputError: A malformed ``user_id``, ``cube_prefix`` or ``subject_label``, an
            ``index`` without ``dims`` or ``embed``.

    """

    supports_ttl: bool = True

    def __init__(
        self,
        mos: MemOS,
        *,
        user_id: str,
        index: IndexConfig | dict[str, Any] | None = None,
        ttl: TTLConfig | dict[str, Any] | None = None,
        cube_prefix: str = "lg",
        subject_label: int | None = None,
        shared: bool = False,
    ) -> None:
        self.mos = mos
        self.shared = bool(shared)
        self.user_id = validate_id(user_id, "user_id")
        self.cube_prefix = check_prefix(cube_prefix)
        if subject_label is not None and (isinstance(subject_label, bool) or not isinstance(subject_label, int)):
            raise InvalidInputError(f"subject_label must be a label position (int) or None, not {subject_label!r}")
        self.subject_label = subject_label
        self.ttl_config: TTLConfig | None = TTLConfig(**ttl) if ttl else None  # type: ignore[typeddict-item]
        self.index_config: dict[str, Any] | None = None
        self.embeddings = None
        self._fields: list[tuple[str, Any]] = []
        if index:
            config = dict(index)
            if "text_fields" in config and "fields" not in config:  # the SQLite store's name for it
                config["fields"] = config["text_fields"]
            if not config.get("dims") or config.get("embed") is None:
                raise InvalidInputError("an index config needs 'dims' (int) and 'embed' (Embeddings or a function)")
            self.index_config = config
            self.embeddings = ensure_embeddings(config["embed"])
            self._fields = [(p, tokenize_path(p) if p != "$" else p) for p in (config.get("fields") or ["$"])]
        #: The scope of every documents call: this user, these cubes, its own namespaces unless shared.
        self._scope: dict[str, Any] = {"user_id": self.user_id, "prefix": self.cube_prefix, "owned": not self.shared}
        self._sweeper: threading.Thread | None = None
        self._sweep_stop = threading.Event()

    @classmethod
    def from_path(
        cls,
        home: str | Path,
        *,
        user_id: str,
        index: IndexConfig | dict[str, Any] | None = None,
        ttl: TTLConfig | dict[str, Any] | None = None,
        cube_prefix: str = "lg",
        subject_label: int | None = None,
        **memos_config: Any,
    ) -> MemOSStore:
        """Open a MemOSStore on the embedded MemOS store under ``home`` (see ``MemOS.from_path``).

        Args:
            home: The MemOS home directory.
            user_id: The acting principal.
            index: As the constructor.
            ttl: As the constructor.
            cube_prefix: As the constructor.
            subject_label: As the constructor.
            **memos_config: ``MemOSConfig`` fields (e.g. ``embedder={"provider": "hashing"}``).

        """
        mos = MemOS.from_path(home, **memos_config).setup()
        return cls(mos, user_id=user_id, index=index, ttl=ttl, cube_prefix=cube_prefix, subject_label=subject_label)

    # -- the op translation ------------------------------------------------------------------------
    @property
    def _embedding_model(self) -> tuple[str, int] | None:
        if self.index_config is None:
            return None
        embed = self.index_config["embed"]
        name = embed if isinstance(embed, str) else type(embed).__name__
        return (f"langgraph:{name}"[:MAX_LABEL_CHARS], int(self.index_config["dims"]))

    def _subject(self, namespace: Namespace) -> str | None:
        if self.subject_label is None or not -len(namespace) <= self.subject_label < len(namespace):
            return None
        label = namespace[self.subject_label]
        try:
            return validate_id(label, "subject label")
        except InvalidInputError as exc:
            raise InvalidNamespaceError(f"namespace {namespace}: label {label!r} names no user id ({exc})") from exc

    def _texts(self, op: PutOp) -> list[str]:
        assert op.value is not None
        if op.index is False:
            return []
        if op.index is not None:
            fields = [(p, tokenize_path(p)) for p in op.index]
        elif self.index_config is not None:
            fields = self._fields
        else:
            return _strings(op.value)
        return [t for _, path in fields for t in get_text_at_path(op.value, path)]

    def _write(self, op: PutOp, vector: list[float] | None) -> DocumentWrite:
        namespace = tuple(op.namespace)
        if op.value is None:
            return DocumentWrite(namespace, op.key, None)
        texts = self._texts(op)
        text = "\n".join(texts)[: self.mos.config.max_text_chars] if texts else None
        ttl = getattr(op, "ttl", None)
        if ttl is not None and not isinstance(ttl, int | float):
            ttl = None  # NOT_PROVIDED reaches batch only through put(); BaseStore resolved it there
        return DocumentWrite(
            namespace,
            op.key,
            dict(op.value),
            text=text,
            embedding=vector,
            embed=self.index_config is None and text is not None,
            ttl_s=None if ttl is None else float(ttl) * 60.0,
            subject_id=self._subject(namespace),
        )

    def _plan(self, ops: Iterable[Op]) -> tuple[list[Op], dict[tuple[Namespace, str], int]]:
        listed = list(ops)
        for op in listed:
            if not isinstance(op, GetOp | PutOp | SearchOp | ListNamespacesOp):
                raise InvalidInputError(f"unknown store operation {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, GetOp | PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                _check_labels(tuple(op.namespace))
            elif isinstance(op, SearchOp):
                _check_labels(tuple(op.namespace_prefix))
        puts = {(tuple(op.namespace), op.key): n for n, op in enumerate(listed) if isinstance(op, PutOp)}
        return listed, puts

    def _to_embed(self, listed: list[Op], puts: dict[tuple[Namespace, str], int]) -> list[tuple[int, str]]:
        if self.embeddings is None:
            return []
        out = []
        for n in puts.values():
            op = listed[n]
            assert isinstance(op, PutOp)
            if op.value is not None:
                texts = self._texts(op)
                if texts:
                    out.append((n, "\n".join(texts)))
        return out

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph store ops: reads first (as the store was), then the puts in one transaction.

        Raises:
            InvalidNamespaceError: A label LangGraph or MemOS refuses.
            MemOSError: A typed MemOS error (``PermissionDeniedError``, ``InvalidInputError``, ...).

        """
        return self._drive(self._batch_steps(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async twin of :meth:`batch` (MemOS's native async path; embeddings with ``aembed_*``)."""
        return await self._adrive(self._batch_steps(ops))

    # -- one generator of steps per batch, driven sync or async ------------------------------------
    # A step is ("docs", method, args, kwargs): a ``mos.documents`` method (its ``a``-twin when
    # async), or ("embed_documents" | "embed_query", texts): the index's embeddings.
    def _drive(self, steps: Generator[Any, Any, Any]) -> Any:
        docs = self.mos.documents
        try:
            step = next(steps)
            while True:
                if step[0] == "docs":
                    result = getattr(docs, step[1])(*step[2], **step[3])
                else:
                    result = getattr(self.embeddings, step[0])(step[1])
                step = steps.send(result)
        except StopIteration as stop:
            return stop.value

    async def _adrive(self, steps: Generator[Any, Any, Any]) -> Any:
        docs = self.mos.documents
        try:
            step = next(steps)
            while True:
                if step[0] == "docs":
                    result = await getattr(docs, "a" + step[1])(*step[2], **step[3])
                else:
                    result = await getattr(self.embeddings, "a" + step[0])(step[1])
                step = steps.send(result)
        except StopIteration as stop:
            return stop.value

    def _docs(self, method: str, *args: Any, **kwargs: Any) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
        """Return a step calling ``mos.documents.<method>`` in the store's scope."""
        return ("docs", method, args, {**self._scope, **kwargs})

    def _batch_steps(self, ops: Iterable[Op]) -> Generator[Any, Any, list[Result]]:
        listed, puts = self._plan(ops)
        results: list[Result] = [None] * len(listed)
        namespaces: list[Namespace] | None = None
        gets = [(n, op) for n, op in enumerate(listed) if isinstance(op, GetOp)]
        for refresh in (False, True):
            chosen = [(n, op) for n, op in gets if self._refreshes(op.refresh_ttl) is refresh]
            if chosen:
                refs = [(tuple(op.namespace), op.key) for _, op in chosen]
                docs = yield self._docs("get", refs, refresh_ttl=refresh)
                for (n, _), doc in zip(chosen, docs, strict=True):
                    results[n] = None if doc is None else self._item(doc)
        for n, op in enumerate(listed):
            if isinstance(op, SearchOp):
                searched = yield self._docs("list_namespaces", under=tuple(op.namespace_prefix), live=False)
                results[n] = yield from self._search_steps(op, searched)
            elif isinstance(op, ListNamespacesOp):
                if namespaces is None:
                    namespaces = yield self._docs("list_namespaces")
                results[n] = self._list_namespaces(op, namespaces)
        if puts:
            jobs = self._to_embed(listed, puts)
            vectors: dict[int, list[float]] = {}
            if jobs:
                embedded = yield ("embed_documents", [t for _, t in jobs])
                vectors = {n: list(v) for (n, _), v in zip(jobs, embedded, strict=True)}
            writes = [self._write(self._put(listed[n]), vectors.get(n)) for n in sorted(puts.values())]
            yield self._docs("write", writes, embedding_model=self._embedding_model)
        return results

    def _refreshes(self, asked: bool) -> bool:
        """Whether a read refreshes TTLs: the op asks and the store's ``ttl.refresh_on_read`` is on.

        As LangGraph's SQLite and Postgres stores: without ``refresh_on_read`` in the store's TTL
        config, reads never refresh (``TTLConfig``'s docstring says it defaults to on; those
        stores, and this one, leave it off, so that a read costs no write unless asked).
        """
        return bool(asked and self.ttl_config and self.ttl_config.get("refresh_on_read", False))

    @staticmethod
    def _put(op: Op) -> PutOp:
        assert isinstance(op, PutOp)
        if op.value is not None and not isinstance(op.value, dict):
            raise InvalidInputError(f"a store value must be a dict, not {type(op.value).__name__}")
        return op

    @staticmethod
    def _item(doc: Document) -> Item:
        return Item(
            value=doc.value, key=doc.key, namespace=doc.namespace, created_at=doc.created_at, updated_at=doc.updated_at
        )

    @staticmethod
    def _search_item(doc: Document, score: float | None) -> SearchItem:
        return SearchItem(
            namespace=doc.namespace,
            key=doc.key,
            value=doc.value,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            score=score,
        )

    @staticmethod
    def _list_namespaces(op: ListNamespacesOp, namespaces: Sequence[Namespace]) -> list[tuple[str, ...]]:
        found = [ns for ns in namespaces if all(_does_match(c, ns) for c in op.match_conditions or ())]
        if op.max_depth is not None:
            found = sorted({ns[: op.max_depth] for ns in found})
        else:
            found = sorted(found)
        return found[op.offset : op.offset + op.limit]

    @staticmethod
    def _searched(op: SearchOp, namespaces: Sequence[Namespace]) -> list[Namespace]:
        prefix = tuple(op.namespace_prefix)
        return [ns for ns in namespaces if ns[: len(prefix)] == prefix]

    def _search_steps(self, op: SearchOp, namespaces: Sequence[Namespace]) -> Generator[Any, Any, list[SearchItem]]:
        """Yield the steps of one search (see :meth:`_batch_steps`); return its SearchItems."""
        if op.limit < 0 or op.offset < 0:
            raise InvalidInputError("search limit and offset must not be negative")
        if op.filter is not None and not isinstance(op.filter, dict):
            raise InvalidInputError(f"a search filter must be a dict, not {type(op.filter).__name__}")
        searched = self._searched(op, namespaces)
        want = op.offset + op.limit
        if not searched or op.limit == 0:
            return []
        query_vector = None
        if op.query and self.embeddings is not None:
            query_vector = list((yield ("embed_query", op.query)))
        kept: list[tuple[Document, float | None]] = []
        if op.query and (query_vector is not None or self.index_config is None):
            k = max(want, 10)
            while True:
                ranked: list[Document] = yield self._docs(
                    "search", searched, query=op.query, query_embedding=query_vector, limit=min(k, 10_000)
                )
                hits = [d for d in ranked if matches_filter(d.value, op.filter)]
                if len(hits) >= want or len(ranked) < min(k, 10_000) or k >= 10_000:
                    break
                k *= 4
            kept = [(d, d.score) for d in hits[op.offset : want]]
            if len(kept) < op.limit and len(ranked) < min(k, 10_000):
                # every ranked document is in ``hits``: fill with the documents that have no vector
                seen = {(d.namespace, d.key) for d in ranked}
                scoreless = 0
                for ns in searched:
                    at = 0
                    while len(kept) < op.limit:
                        docs, covered = yield self._docs("page", ns, offset=at, limit=PAGE)
                        for d in docs:
                            if (d.namespace, d.key) in seen or not matches_filter(d.value, op.filter):
                                continue
                            if len(hits) + scoreless >= op.offset:
                                kept.append((d, None))
                            scoreless += 1
                            if len(kept) >= op.limit:
                                break
                        if covered < PAGE:
                            break
                        at += covered
                    if len(kept) >= op.limit:
                        break
        else:
            seen_n = 0
            for ns in searched:
                at = 0
                while len(kept) < op.limit:
                    docs, covered = yield self._docs("page", ns, offset=at, limit=PAGE)
                    for d in docs:
                        if not matches_filter(d.value, op.filter):
                            continue
                        if seen_n >= op.offset:
                            kept.append((d, None))
                        seen_n += 1
                        if len(kept) >= op.limit:
                            break
                    if covered < PAGE:
                        break
                    at += covered
                if len(kept) >= op.limit:
                    break
        if self._refreshes(op.refresh_ttl) and any(d.expires_at is not None for d, _ in kept):
            refs = [(d.namespace, d.key) for d, _ in kept]
            refreshed: list[Document | None] = yield self._docs("get", refs, refresh_ttl=True)
            kept = [(r or d, s) for (d, s), r in zip(kept, refreshed, strict=True)]
        return [self._search_item(d, s) for d, s in kept]

    # -- beyond BaseStore ----------------------------------------------------------------------------
    def delete_namespace(self, namespace: tuple[str, ...]) -> int:
        """Delete a namespace and every namespace under it, with all their items.

        Returns:
            How many namespaces were deleted.

        Raises:
            InvalidNamespaceError: A malformed namespace.
            PermissionDeniedError: The store's user may not delete one of them (none is deleted
                after the first refusal; those before it are).

        """
        prefix = self._namespace_prefix(namespace)
        docs = self.mos.documents
        found = docs.list_namespaces(under=prefix, live=False, **self._scope)
        doomed = [ns for ns in found if ns[: len(prefix)] == prefix]
        return sum(docs.delete_namespace(ns, **self._scope) for ns in doomed)

    async def adelete_namespace(self, namespace: tuple[str, ...]) -> int:
        """Async twin of :meth:`delete_namespace`."""
        prefix = self._namespace_prefix(namespace)
        docs = self.mos.documents
        found = await docs.alist_namespaces(under=prefix, live=False, **self._scope)
        deleted = 0
        for ns in (ns for ns in found if ns[: len(prefix)] == prefix):
            deleted += await docs.adelete_namespace(ns, **self._scope)
        return deleted

    @staticmethod
    def _namespace_prefix(namespace: tuple[str, ...]) -> Namespace:
        validate_op_namespace(GetOp(tuple(namespace), "k"))
        if not namespace:
            raise InvalidNamespaceError("Namespace cannot be empty.")
        _check_labels(tuple(namespace))
        return tuple(namespace)

    def sweep_ttl(self) -> int:
        """Delete the items whose TTL has passed (in the namespaces the store's user may delete from).

        Returns:
            How many items were deleted.

        """
        return self.mos.documents.purge_expired(**self._scope)

    async def asweep_ttl(self) -> int:
        """Async twin of :meth:`sweep_ttl`."""
        return await self.mos.documents.apurge_expired(**self._scope)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> Future[None]:
        """Sweep expired items periodically in a daemon thread.

        Args:
            sweep_interval_minutes: Minutes between sweeps (default ``ttl.sweep_interval_minutes``, else 5).

        Returns:
            A future that completes when the sweeper stops (:meth:`stop_ttl_sweeper`).

        """
        interval = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        done: Future[None] = Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            done.set_result(None)
            return done
        self._sweep_stop.clear()

        def run() -> None:
            try:
                while not self._sweep_stop.wait(float(interval) * 60.0):
                    self.sweep_ttl()
            finally:
                done.set_result(None)

        self._sweeper = threading.Thread(target=run, name="memos-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return done

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; return whether it stopped within ``timeout`` seconds."""
        if self._sweeper is None:
            return True
        self._sweep_stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped

    def close(self) -> None:
        """Stop the sweeper and close the MemOS."""
        self.stop_ttl_sweeper()
        self.mos.close()

    def __enter__(self) -> MemOSStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
