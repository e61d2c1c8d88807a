"""MemOS for LangGraph: ``MemOSStore`` (a ``BaseStore`` on MemCubes) and memory nodes for StateGraph."""

from langgraph_memos.nodes import (
    MEMORY_STATE_TYPES,
    MemLifecycleNode,
    MemoryState,
    MemReaderNode,
    MemSchedulerNode,
    RunScope,
    resolve_mos,
    resolve_run_scope,
)
from langgraph_memos.store import MemOSStore

__all__ = [
    "MEMORY_STATE_TYPES",
    "MemLifecycleNode",
    "MemOSStore",
    "MemReaderNode",
    "MemSchedulerNode",
    "MemoryState",
    "RunScope",
    "resolve_mos",
    "resolve_run_scope",
]
