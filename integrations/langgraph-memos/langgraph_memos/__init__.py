"""MemOS for LangGraph: ``MemOSStore`` (a ``BaseStore`` on MemCubes) and memory nodes for StateGraph."""

from langgraph_memos.store import MemOSStore

__all__ = ["MemOSStore"]
