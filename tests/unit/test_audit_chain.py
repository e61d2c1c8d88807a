"""The audit log's hash chain: sealing, and verification against every kind of tampering."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from memos_agents.errors import InvalidInputError
from memos_agents.infra.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditOutcome,
    ChainHead,
    entry_hash,
    seal,
    verify_chain,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _chain(n: int) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    for i in range(n):
        out.append(
            seal(
                out[-1] if out else None,
                at=T0 + timedelta(seconds=i),
                actor=f"user-{i % 3}",
                action=("search", "write", "delete")[i % 3],
                request_id=f"req-{i}",
                cube_id="cube-a",
                item_ids=[f"item-{i}"],
                outcome=AuditOutcome.DENIED if i % 5 == 4 else AuditOutcome.OK,
                reason="PermissionDeniedError: reader may not write" if i % 5 == 4 else None,
            )
        )
    return out


def _head(chain: list[AuditEntry]) -> ChainHead:
    return ChainHead(chain[-1].seq, chain[-1].hash)


def _kinds(chain: list[AuditEntry], head: ChainHead | None) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in verify_chain(chain, expected_head=head).problems]


def test_sealed_chain_verifies() -> None:
    chain = _chain(10)
    assert chain[0].seq == 1 and chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert all(entry_hash(e) == e.hash for e in chain)
    result = verify_chain(iter(chain), expected_head=_head(chain))
    assert result.ok and result.checked == 10 and result.head == _head(chain)
    assert verify_chain([]).ok and verify_chain([]).head is None


def test_hash_is_the_sha256_of_the_canonical_fields() -> None:
    import hashlib
    import json

    entry = _chain(1)[0]
    fields = entry.model_dump(mode="json", exclude={"hash"})
    expected = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert entry.hash == expected


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "mallory"},
        {"action": "search"},
        {"cube_id": "cube-b"},
        {"item_ids": ("item-x",)},
        {"outcome": AuditOutcome.OK},
        {"reason": None},
        {"at": T0 - timedelta(days=1)},
        {"request_id": "req-forged"},
    ],
)
def test_an_edited_field_is_seen(change: dict[str, object]) -> None:
    chain = _chain(8)
    chain[4] = chain[4].model_copy(update=change)  # entry seq 5 (a refusal: outcome and reason differ)
    assert _kinds(chain, _head(chain)) == [(5, "edited")]


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() -> None:
    chain = _chain(8)
    forged = chain[3].model_copy(update={"actor": "mallory"})
    chain[3] = forged.model_copy(update={"hash": entry_hash(forged)})
    assert _kinds(chain, _head(chain)) == [(5, "inserted")]


def test_a_deleted_entry_is_seen() -> None:
    chain = _chain(8)
    del chain[3]
    assert _kinds(chain, _head(chain)) == [(5, "missing")]


def test_deleted_tail_is_seen_against_the_head() -> None:
    chain = _chain(8)
    head = _head(chain)
    assert _kinds(chain[:6], head) == [(8, "truncated")]
    assert _kinds(chain[:6], None) == []  # without the head a truncation cannot be seen
    assert _kinds([], head) == [(8, "truncated")]


def test_a_resealed_tail_is_seen_against_the_head() -> None:
    chain = _chain(8)
    head = _head(chain)
    resealed = [*chain[:7], seal(chain[6], at=T0, actor="mallory", action="write", request_id="r")]
    assert _kinds(resealed, head) == [(8, "edited")]
    longer = [*chain, seal(chain[-1], at=T0, actor="mallory", action="write", request_id="r")]
    assert _kinds(longer, head) == [(9, "inserted")]


def test_an_inserted_entry_is_seen() -> None:
    chain = _chain(8)
    forged = seal(chain[2], at=T0, actor="mallory", action="delete", request_id="r")  # claims seq 4
    chain.insert(3, forged)
    problems = _kinds(chain, _head(chain))
    assert (4, "reordered") in problems  # the original seq 4 now comes after the forged one


def test_swapped_entries_are_seen() -> None:
    chain = _chain(8)
    chain[3], chain[4] = chain[4], chain[3]
    problems = _kinds(chain, _head(chain))
    assert (5, "missing") in problems and (4, "reordered") in problems


def test_renumbered_entries_still_break_the_links() -> None:
    chain = _chain(6)
    del chain[2]
    renumbered = [e.model_copy(update={"seq": i + 1}) for i, e in enumerate(chain)]
    kinds = {k for _, k in _kinds(renumbered, None)}
    assert "edited" in kinds  # seq is hashed, so renumbering shows as edits


def test_seal_refuses_bad_fields() -> None:
    with pytest.raises(InvalidInputError):
        seal(None, at=datetime(2026, 1, 1), actor="a", action="write", request_id="r")  # naive time
    with pytest.raises(InvalidInputError):
        seal(None, at=T0, actor="", action="write", request_id="r")
    with pytest.raises(InvalidInputError):
        seal(None, at=T0, actor="a", action="write", request_id="r", reason="x" * 5000)


def test_times_are_kept_in_utc() -> None:
    other = datetime(2026, 11, 23, 13, 0, tzinfo=UTC).astimezone(tz=None)
    entry = seal(None, at=other, actor="a", action="write", request_id="r")
    assert entry.at.tzinfo == UTC and entry.at == other
