"""MemOS for LlamaIndex: memories in MemCubes for LlamaIndex agents, chat engines and retrieval.

* :class:`MemOSMemoryBlock`: a long-term memory block of ``llama_index.core.memory.Memory``
  (stores the messages ``Memory`` flushes, recalls memories into its system message).
* :class:`MemOSMemory`: a ``BaseMemory`` for agents that writes every message to a cube and puts
  the relevant memories in front of the chat history.
* :class:`MemOSRetriever`: MemOS hybrid search as a ``BaseRetriever`` of ``NodeWithScore``.

All memory logic (reading, the memory tree, search, ACLs, token budgets) is memos-agents'; errors
are its typed :class:`~memos_agents.errors.MemOSError` subclasses.
"""

from llama_index.memory.memos.block import MemOSMemoryBlock
from llama_index.memory.memos.memory import DEFAULT_MEMORY_HEADER, MemOSMemory
from llama_index.memory.memos.retriever import MemOSRetriever, to_node

__all__ = ["DEFAULT_MEMORY_HEADER", "MemOSMemory", "MemOSMemoryBlock", "MemOSRetriever", "to_node"]
