"""MemVault: comparing kept versions of a memory (the stores keep them; see ``HistoryOp``).

Every update and delete of an item keeps the version it ends, with its provenance (the change,
who made it, when, the request id shared with the audit log), in the same transaction as the
change (:class:`~memos_agents.plaintext.stores.base.ItemVersion`). ``MemOS.history``,
``MemOS.diff`` and ``MemOS.rollback`` read and restore them. After the versioned object stores
of the MemOS paper's MemVault ("MemOS: A Memory OS for AI System", MemTensor 2025, section 5.3).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, Field

from memos_agents.schema import MemoryItem

__all__ = ["COMPARED_FIELDS", "VersionDiff", "diff_items"]

#: The fields a diff compares (times of the write itself, ids and the version are left out).
COMPARED_FIELDS = (
    "text",
    "key",
    "memory_type",
    "node_kind",
    "tags",
    "user_id",
    "status",
    "expires_at",
    "confidence",
    "event_time",
    "sources",
    "metadata",
    "origin",
    "turns",
)


class VersionDiff(BaseModel):
    """What changed between two versions of one item.

    Attributes:
        item_id: The item.
        from_version / to_version: The versions compared.
        changed: Field name -> ``[old, new]`` (JSON values) for every compared field that differs.
        embedding_changed: Whether the stored embeddings differ.
        text_diff: A unified diff of the texts (empty when equal).

    """

    item_id: str
    from_version: int
    to_version: int
    changed: dict[str, list[Any]] = Field(default_factory=dict)
    embedding_changed: bool = False
    text_diff: str = ""


def diff_items(old: MemoryItem, new: MemoryItem) -> VersionDiff:
    """Return the differences between two versions of an item (``old`` → ``new``)."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed = {f: [a[f], b[f]] for f in COMPARED_FIELDS if a.get(f) != b.get(f)}
    text_diff = ""
    if old.text != new.text:
        text_diff = "".join(
            difflib.unified_diff(
                old.text.splitlines(keepends=True) or [""],
                new.text.splitlines(keepends=True) or [""],
                fromfile=f"v{old.version}",
                tofile=f"v{new.version}",
            )
        )
    return VersionDiff(
        item_id=old.id,
        from_version=old.version,
        to_version=new.version,
        changed=changed,
        embedding_changed=old.embedding != new.embedding,
        text_diff=text_diff,
    )
