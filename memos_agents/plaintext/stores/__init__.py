"""Plaintext store backends: the batch-op interface, the embedded SQLite default, the in-memory reference.

The Neo4j backend (``memos_agents.plaintext.stores.neo4j``) needs the ``neo4j`` extra and is not
imported here.
"""

from memos_agents.plaintext.stores.base import (
    SYSTEM,
    BaseMemoryStore,
    CallContext,
    Neighbor,
    StoreCapabilities,
    WriteBatch,
    WriteResult,
)
from memos_agents.plaintext.stores.memory import InMemoryStore
from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore

__all__ = [
    "SYSTEM",
    "BaseMemoryStore",
    "CallContext",
    "InMemoryStore",
    "Neighbor",
    "SQLiteMemoryStore",
    "StoreCapabilities",
    "WriteBatch",
    "WriteResult",
]
