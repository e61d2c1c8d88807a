"""langchain-memos: MemOS (memos-agents) for LangChain.

* :class:`MemOSRetriever` — hybrid search over MemCubes as a retriever.
* :class:`MemOSChatMessageHistory` — chat history in the MemOS message log, optionally read into memory.
* :func:`create_memory_tools` — ``search_memory``, ``add_memory``, ``update_memory``, ``delete_memory``
  for agents, scoped by the injected ``ToolRuntime`` (never by the model).
* :class:`ChatMemOS` — a memos-agents LLM (e.g. the local SmolLM2) as a LangChain chat model.

All memory logic lives in memos-agents; this package only translates.
"""

from langchain_memos.chat_message_histories import MemOSChatMessageHistory
from langchain_memos.chat_models import ChatMemOS
from langchain_memos.retrievers import MemOSRetriever, memory_to_document
from langchain_memos.tools import (
    AddMemoryTool,
    DeleteMemoryTool,
    MemoryScope,
    SearchMemoryTool,
    UpdateMemoryTool,
    create_memory_tools,
    resolve_scope,
)

__version__ = "0.1.0"

__all__ = [
    "AddMemoryTool",
    "ChatMemOS",
    "DeleteMemoryTool",
    "MemOSChatMessageHistory",
    "MemOSRetriever",
    "MemoryScope",
    "SearchMemoryTool",
    "UpdateMemoryTool",
    "create_memory_tools",
    "memory_to_document",
    "resolve_scope",
]
