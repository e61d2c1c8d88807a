"""The audit log's hash chain (MemGovernance): sealing entries and verifying a chain.

Every audited operation becomes one :class:`AuditEntry`: who (``actor``), what (``action``), on
which cube and items, when, with which outcome (including refusals) and request id. Memory
contents never go into an entry; a refusal's ``reason`` is the error's type and a message
written for the log.

Entries form a chain, as in a transparency log or a blockchain without consensus (Haber and
Stornetta, "How to time-stamp a digital document", 1991): entry ``n`` carries ``prev_hash``,
the SHA-256 of entry ``n - 1`` (:data:`GENESIS_HASH` for the first), and its own ``hash``, the
SHA-256 of its canonical JSON (every field but ``hash``, keys sorted, UTF-8, no whitespace).
Editing, deleting, inserting or reordering stored entries breaks the chain at that point, which
:func:`verify_chain` reports; truncating the tail is seen against a :class:`ChainHead` kept
apart from the entries (the store keeps the head it last wrote).

What a chain does not prove: someone able to rewrite the whole table and the head can recompute
every hash. Keeping a copy of the head elsewhere (``memos audit verify`` prints it) closes that.

This module is storage-free; the stores persist entries and the head (issue 11).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos_agents.errors import InvalidInputError

__all__ = [
    "GENESIS_HASH",
    "MAX_ITEM_IDS",
    "AuditEntry",
    "AuditOutcome",
    "ChainHead",
    "ChainProblem",
    "ChainVerification",
    "entry_hash",
    "seal",
    "stored_time",
    "verify_chain",
]

#: ``prev_hash`` of the first entry of a chain.
GENESIS_HASH = "0" * 64
#: Item ids kept in one entry (a listing of a large cube keeps the first ones and the count).
MAX_ITEM_IDS = 1000


class AuditOutcome(StrEnum):
    """How an audited operation ended."""

    OK = "ok"
    DENIED = "denied"  # refused by an access check or a policy (redaction ``refuse``)
    FAILED = "failed"  # invalid input, conflict or a backend error: nothing was changed


def _hex64(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("must be 64 lower-case hex digits (a SHA-256)")
    return value


class AuditEntry(BaseModel):
    """One sealed entry of the audit log.

    Attributes:
        seq: Position in the chain, from 1, without gaps.
        at: When the operation ended (UTC, microseconds).
        actor: The acting principal (``CallContext.principal``).
        action: The operation, e.g. ``search``, ``write``, ``delete``, ``acl.grant``.
        cube_id: The cube acted on (None for operations on no cube, e.g. user management).
        item_ids: The items read or written (ids only; the first :data:`MAX_ITEM_IDS`).
        item_count: How many items were read or written (``len(item_ids)`` unless more than
            :data:`MAX_ITEM_IDS`).
        outcome: :class:`AuditOutcome`.
        reason: For a refusal or failure: the error type and a message without memory contents.
        request_id: ``CallContext.request_id``: every entry of one request shares it.
        prev_hash: SHA-256 (hex) of the previous entry; :data:`GENESIS_HASH` for ``seq`` 1.
        hash: SHA-256 (hex) of this entry's canonical form (:func:`entry_hash`).

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1)
    at: datetime
    actor: str = Field(min_length=1, max_length=256)
    action: str = Field(min_length=1, max_length=64)
    cube_id: str | None = Field(default=None, max_length=256)
    item_ids: tuple[str, ...] = ()
    item_count: int = Field(default=0, ge=0)
    outcome: AuditOutcome = AuditOutcome.OK
    reason: str | None = Field(default=None, max_length=2000)
    request_id: str = Field(min_length=1, max_length=256)
    prev_hash: str
    hash: str

    _check_hashes = field_validator("prev_hash", "hash")(_hex64)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value.astimezone(UTC)

    def canonical(self) -> bytes:
        """Return the bytes :func:`entry_hash` digests: every field but ``hash`` as canonical JSON."""
        return _canonical(self.model_dump(mode="json", exclude={"hash"}))


def stored_time(at: datetime) -> str:
    """Return ``at`` as stores keep it: UTC, fixed width (``2026-01-02T03:04:05.000006+00:00``).

    Strings of this one format sort as the times they name.
    """
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: AuditEntry) -> str:
    """Return the SHA-256 (hex) of an entry's canonical form (its ``hash`` field excluded)."""
    return hashlib.sha256(entry.canonical()).hexdigest()


def seal(
    previous: AuditEntry | ChainHead | None,
    *,
    at: datetime,
    actor: str,
    action: str,
    request_id: str,
    cube_id: str | None = None,
    item_ids: Iterable[str] = (),
    item_count: int | None = None,
    outcome: AuditOutcome = AuditOutcome.OK,
    reason: str | None = None,
) -> AuditEntry:
    """Return the entry that follows ``previous`` (None: the first of a chain), hashed.

    Args:
        previous: The chain's last entry (or its head: position and hash), or None.
        at: When the operation ended (timezone-aware).
        actor: The acting principal.
        action: The operation's name.
        request_id: The request it belongs to.
        cube_id: The cube acted on (None: none).
        item_ids: The items read or written (the first :data:`MAX_ITEM_IDS` are kept).
        item_count: How many (None: ``len(item_ids)``).
        outcome: How it ended (default ``ok``).
        reason: Why it was refused or failed (no memory contents).

    Raises:
        InvalidInputError: A field is invalid (empty actor, naive time, overlong reason, ...).

    """
    seq, prev = (previous.seq + 1, previous.hash) if previous is not None else (1, GENESIS_HASH)
    ids = tuple(item_ids)
    fields: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "cube_id": cube_id,
        "item_ids": ids[:MAX_ITEM_IDS],
        "item_count": len(ids) if item_count is None else item_count,
        "outcome": outcome,
        "reason": reason,
        "request_id": request_id,
        "prev_hash": prev,
    }
    try:
        draft = AuditEntry(**fields, hash=GENESIS_HASH)
    except ValueError as exc:
        raise InvalidInputError(f"invalid audit entry: {exc}") from exc
    return draft.model_copy(update={"hash": entry_hash(draft)})


@dataclass(frozen=True)
class ChainHead:
    """The last entry's position and hash, kept apart from the entries to see a truncated tail."""

    seq: int
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    """One place where a chain does not verify.

    Attributes:
        seq: The stored ``seq`` of the entry where the problem shows (for ``truncated``: the head's).
        kind: ``edited`` (an entry's hash does not match its fields), ``missing`` (entries between
            two stored ones are gone), ``reordered`` (an entry is out of ``seq`` order or repeats a
            ``seq``), ``inserted`` (an entry whose ``prev_hash`` is not its predecessor's hash at
            the expected position), ``truncated`` (the chain ends before the head).
        detail: What was expected and found.

    """

    seq: int
    kind: str
    detail: str


@dataclass
class ChainVerification:
    """The result of :func:`verify_chain`.

    Attributes:
        ok: The chain verifies (no problems).
        checked: Entries read.
        head: The last entry's position and hash (None for an empty chain).
        problems: Every problem found, in chain order.

    """

    checked: int = 0
    head: ChainHead | None = None
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(entries: Iterable[AuditEntry], *, expected_head: ChainHead | None = None) -> ChainVerification:
    """Check a chain read in storage order; report every place it breaks.

    Each entry's hash is recomputed from its fields, its ``prev_hash`` compared with the hash of
    the entry read before it, and its ``seq`` with the position expected there. Cost: one SHA-256
    per entry, memory constant (entries are consumed as an iterator).

    Args:
        entries: The stored entries in the order they were appended (by ``seq`` or storage row).
        expected_head: The head recorded when the last entry was appended (None: not checked,
            so a truncated tail is not seen).

    Returns:
        A :class:`ChainVerification`; ``ok`` is False when anything was edited, deleted,
        inserted, reordered or truncated.

    """
    result = ChainVerification()
    prev_hash, expected_seq = GENESIS_HASH, 1
    last: AuditEntry | None = None
    for entry in entries:
        result.checked += 1
        if entry_hash(entry) != entry.hash:
            result.problems.append(ChainProblem(entry.seq, "edited", "the entry's fields do not give its hash"))
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                kind, detail = "missing", f"entries {expected_seq}..{entry.seq - 1} are gone"
            else:
                kind, detail = "reordered", f"seq {entry.seq} where {expected_seq} was expected"
            result.problems.append(ChainProblem(entry.seq, kind, detail))
        elif entry.prev_hash != prev_hash:
            result.problems.append(
                ChainProblem(entry.seq, "inserted", "its prev_hash is not the hash of the entry before it")
            )
        prev_hash, expected_seq, last = entry.hash, max(expected_seq, entry.seq) + 1, entry
    if last is not None:
        result.head = ChainHead(last.seq, last.hash)
    if expected_head is not None and expected_head.seq > 0:
        if last is None or last.seq < expected_head.seq:
            found = last.seq if last is not None else 0
            result.problems.append(
                ChainProblem(
                    expected_head.seq, "truncated", f"the chain ends at {found}, its head is {expected_head.seq}"
                )
            )
        elif last.seq > expected_head.seq:
            result.problems.append(
                ChainProblem(last.seq, "inserted", f"entries after the recorded head {expected_head.seq}")
            )
        elif last.hash != expected_head.hash:
            result.problems.append(ChainProblem(last.seq, "edited", "the last entry's hash is not the recorded head"))
    return result
