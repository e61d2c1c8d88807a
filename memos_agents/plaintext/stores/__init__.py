"""Plaintext store backends: the ABC, the embedded SQLite default, and (later) Neo4j."""

from memos_agents.plaintext.stores.base import (
    BaseMemoryStore,
    Neighbor,
    StoreCapabilities,
    WriteBatch,
    WriteResult,
)
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore

__all__ = ["BaseMemoryStore", "Neighbor", "SQLiteMemoryStore", "StoreCapabilities", "WriteBatch", "WriteResult"]
