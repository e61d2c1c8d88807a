"""memos-agents: a memory operating system for LLM agents, after MemOS (MemTensor, 2025).

Importing this package loads no model and touches no file.
"""

from memos_agents.api import AddResult, ChatResult
from memos_agents.config import MemOSConfig
from memos_agents.cube import AclEntry, CubeHeader, MemCube, Permission
from memos_agents.errors import MemOSError
from memos_agents.operation.lifecycle import LifecyclePolicy, LifecycleReport
from memos_agents.operation.reader import MemReader, ReadMode
from memos_agents.operation.scheduler import MemScheduler
from memos_agents.os import MemOS
from memos_agents.plaintext.stores.base import CallContext
from memos_agents.schema import (
    Edge,
    LifecycleState,
    MemoryItem,
    MemoryOrigin,
    MemoryQuery,
    MemoryType,
    Message,
    NodeKind,
    RelationType,
    ScoredMemory,
    SearchFilters,
    Sources,
    Visibility,
)

__version__ = "0.1.0"

__all__ = [
    "AclEntry",
    "AddResult",
    "CallContext",
    "ChatResult",
    "CubeHeader",
    "Edge",
    "LifecyclePolicy",
    "LifecycleReport",
    "LifecycleState",
    "MemCube",
    "MemOS",
    "MemOSConfig",
    "MemOSError",
    "MemReader",
    "MemScheduler",
    "MemoryItem",
    "MemoryOrigin",
    "MemoryQuery",
    "MemoryType",
    "Message",
    "NodeKind",
    "Permission",
    "ReadMode",
    "RelationType",
    "ScoredMemory",
    "SearchFilters",
    "Sources",
    "Visibility",
]
