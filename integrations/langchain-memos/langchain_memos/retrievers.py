"""A LangChain retriever over MemCubes: ``MemOS.search`` returning ``Document`` objects.

Typical use::

    retriever = MemOSRetriever(mos=mos, user_id="alice", cube_ids=["alice-notes"], k=5)
    docs = retriever.invoke("Where does Alice live?")          # or ainvoke; invoke(q, k=3)
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from memos_agents import MemOS, ScoredMemory, SearchFilters

__all__ = ["MemOSRetriever", "memory_to_document"]


def memory_to_document(hit: ScoredMemory) -> Document:
    """Return one search result as a LangChain ``Document``.

    Args:
        hit: A result of ``MemOS.search``.

    Returns:
        A document whose ``page_content`` is the memory text and ``id`` the memory id, with
        metadata ``score`` (float), ``cube_id``, ``memory_type`` (``"LongTermMemory"``, ...),
        ``sources`` (``{"message_ids": [...], "session_ids": [...], "speakers": [...]}``),
        ``created_at`` and ``updated_at`` (ISO 8601 strings), ``event_time`` (ISO 8601 or None),
        ``tags`` (list of str), ``key`` (str or None), ``tokens`` (int: the memory's tokens as
        rendered into a prompt) and, only for a cube read through a MemStore subscription,
        ``published`` (``"name@version"``).

    """
    item = hit.item
    metadata: dict[str, Any] = {
        "score": hit.score,
        "cube_id": item.cube_id,
        "memory_type": item.memory_type.value,
        "sources": item.sources.model_dump(),
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
        "event_time": item.event_time.isoformat() if item.event_time else None,
        "tags": list(item.tags),
        "key": item.key,
        "tokens": hit.tokens,
    }
    if hit.published is not None:
        metadata["published"] = hit.published
    return Document(page_content=item.text, id=item.id, metadata=metadata)


class MemOSRetriever(BaseRetriever):
    """Hybrid search over MemCubes as a LangChain retriever (``MemOS.search`` / ``MemOS.asearch``).

    Every call searches as ``user_id``: the store checks that this caller may read each cube, in
    the transaction that reads it. Documents are built by :func:`memory_to_document`.

    Attributes:
        mos: The MemOS instance (set up).
        user_id: The caller whose read permission applies.
        cube_ids: Cubes to search (default None: the caller's own cubes; shared and public
            cubes are searched only when named).
        k: Most documents returned (default 10); ``invoke(query, k=3)`` overrides it per call.
        filters: A :class:`~memos_agents.schema.SearchFilters` (a dict of its fields is converted
            at construction) applied inside the store before ranking (default None: activated
            memories).
        token_budget: Most tokens of all returned memories as rendered into a prompt (default
            None: the MemOS ``default_token_budget``); results that do not fit are left out.

    Raises (on invoke):
        InvalidInputError: An empty or oversized query, ``k`` or ``token_budget`` not a positive
            integer.
        PermissionDeniedError: ``user_id`` may not read a named cube.
        CubeNotFoundError: A named cube does not exist.
        ModelError: The embedder failed.

    Construction raises pydantic's ``ValidationError`` for fields of the wrong type (e.g.
    ``k=0`` or an unknown filter field).

    """

    mos: MemOS
    user_id: str
    cube_ids: list[str] | None = None
    k: int = Field(default=10, ge=1)
    filters: SearchFilters | None = None
    token_budget: int | None = Field(default=None, ge=1)

    def _search_args(
        self, query: str, k: int | None, filters: SearchFilters | dict[str, Any] | None, token_budget: int | None
    ) -> dict[str, Any]:
        return {
            "query": query,
            "user_id": self.user_id,
            "cube_ids": self.cube_ids,
            "top_k": self.k if k is None else k,
            "filters": self.filters if filters is None else filters,
            "token_budget": self.token_budget if token_budget is None else token_budget,
        }

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        token_budget: int | None = None,
    ) -> list[Document]:
        """Search and return documents best first.

        Args:
            query: The question.
            run_manager: LangChain's callback manager (passed by ``invoke``).
            k: Most documents for this call (None: the ``k`` field).
            filters: Filters for this call, replacing the ``filters`` field (None: the field).
            token_budget: Token budget for this call (None: the ``token_budget`` field).

        Returns:
            At most ``k`` documents, best first.

        """
        hits = self.mos.search(**self._search_args(query, k, filters, token_budget))
        return [memory_to_document(h) for h in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: SearchFilters | dict[str, Any] | None = None,
        token_budget: int | None = None,
    ) -> list[Document]:
        """Async twin of :meth:`_get_relevant_documents` (``MemOS.asearch``: the store's async path)."""
        hits = await self.mos.asearch(**self._search_args(query, k, filters, token_budget))
        return [memory_to_document(h) for h in hits]
