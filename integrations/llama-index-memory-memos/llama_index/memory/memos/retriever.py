"""MemOSRetriever: MemOS hybrid search as a LlamaIndex retriever."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.memory.memos._common import check_count, check_cube_ids, check_filters, check_id

from memos_agents import MemOS
from memos_agents.errors import InvalidInputError
from memos_agents.schema import ScoredMemory, SearchFilters

#: Metadata keys of the returned nodes. Only ``event_time`` goes into what an LLM sees of a node
#: (``node.get_content(MetadataMode.LLM)``); none goes into embeddings.
METADATA_KEYS = (
    "cube_id",
    "memory_type",
    "key",
    "tags",
    "sources",
    "event_time",
    "created_at",
    "updated_at",
    "published",
)


def to_node(result: ScoredMemory) -> NodeWithScore:
    """Convert one MemOS search result to a ``NodeWithScore``.

    Returns:
        A ``TextNode`` with ``id_`` the memory id, ``text`` the memory text and the metadata of
        :data:`METADATA_KEYS`: ``cube_id``, ``memory_type`` (``"LongTermMemory"``, ...), ``key``,
        ``tags`` (list), ``sources`` (``{"message_ids", "session_ids", "speakers"}``), the times
        ``event_time``/``created_at``/``updated_at`` (ISO 8601, ``event_time`` None when unknown)
        and ``published`` (``name@version`` of a MemStore subscription, or None); with the
        result's fused score.

    """
    item = result.item
    metadata: dict[str, Any] = {
        "cube_id": item.cube_id,
        "memory_type": item.memory_type.value,
        "key": item.key,
        "tags": list(item.tags),
        "sources": item.sources.model_dump(),
        "event_time": item.event_time.isoformat() if item.event_time is not None else None,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
        "published": result.published,
    }
    node = TextNode(
        id_=item.id,
        text=item.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(METADATA_KEYS),
        excluded_llm_metadata_keys=[k for k in METADATA_KEYS if k != "event_time"],
    )
    return NodeWithScore(node=node, score=result.score)


class MemOSRetriever(BaseRetriever):
    """Retrieve memories from MemCubes by MemOS's hybrid search (dense + BM25 + graph, token budget).

    Example::

        retriever = MemOSRetriever(mos, user_id="alice", cube_ids=["alice-notes"], similarity_top_k=5)
        for hit in retriever.retrieve("Where does Alice live?"):
            print(hit.score, hit.node.get_content(), hit.node.metadata["sources"])

    Args:
        mos: An open :class:`~memos_agents.MemOS` (``setup()`` done; the caller closes it).
        user_id: The caller; needs read permission on every cube searched.
        cube_ids: The cubes searched (None: the caller's own cubes and live subscriptions, as
            ``MemOS.search`` does; shared cubes are searched only when named).
        similarity_top_k: Most nodes returned (default: MemOS's ``retrieval.top_k``).
        filters: :class:`~memos_agents.schema.SearchFilters` or a dict of its fields (user,
            memory types, statuses, time range, tags), applied in the store before ranking.
        token_budget: Most tokens of the memories returned (default: MemOS's ``default_token_budget``);
            memories that do not fit are skipped.
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex's verbose flag.

    Raises:
        InvalidInputError: ``mos`` is not a MemOS, a malformed id, ``cube_ids`` given as a string,
            ``similarity_top_k``/``token_budget`` not an integer from 1 to ``MemOS.MAX_COUNT``,
            invalid ``filters``.

    """

    def __init__(
        self,
        mos: MemOS,
        user_id: str,
        cube_ids: Sequence[str] | None = None,
        *,
        similarity_top_k: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        token_budget: int | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(mos, MemOS):
            raise InvalidInputError(f"mos must be a MemOS instance, not {type(mos).__name__}")
        self.mos = mos
        self.user_id = check_id(user_id, "user_id")
        self.cube_ids = check_cube_ids(cube_ids)
        self.similarity_top_k = check_count(similarity_top_k, "similarity_top_k")
        self.filters = check_filters(filters)
        self.token_budget = check_count(token_budget, "token_budget")
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Search with ``query_bundle.query_str``; return nodes best first (see :func:`to_node`).

        Raises:
            InvalidInputError: Empty or oversized query.
            CubeNotFoundError / PermissionDeniedError: A named cube is missing or not readable.
            ModelError: The embedder failed.

        """
        results = self.mos.search(query_bundle.query_str, self.user_id, self.cube_ids, **self._search_kwargs)
        return [to_node(r) for r in results]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Async twin of :meth:`_retrieve` (``MemOS.asearch``)."""
        results = await self.mos.asearch(query_bundle.query_str, self.user_id, self.cube_ids, **self._search_kwargs)
        return [to_node(r) for r in results]

    @property
    def _search_kwargs(self) -> dict[str, Any]:
        return {"top_k": self.similarity_top_k, "filters": self.filters, "token_budget": self.token_budget}
