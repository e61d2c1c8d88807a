"""A cube's redaction policy through the facade: masked before anything is embedded, refused whole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from memos_agents import MemOS
from memos_agents.cube import AclEntry, Permission
from memos_agents.errors import InvalidInputError, PermissionDeniedError, SensitiveDataError
from memos_agents.infra.redaction import RedactionMode, RedactionPolicy
from memos_agents.models.embedders import HashingEmbedder

pytestmark = pytest.mark.unit

EMAIL = "caroline.w" + "@" + "example.com"
PHONE = "+1 415 555 " + "2671"
CARD = "4111 1111 1111 " + "1111"


class RecordingEmbedder(HashingEmbedder):
    """Hashing embeddings that remember every text they were given."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return super().embed(texts)


@pytest.fixture
def mos(tmp_path: Path) -> Iterator[tuple[MemOS, RecordingEmbedder]]:
    embedder = RecordingEmbedder()
    with MemOS.from_path(tmp_path / "home", embedder=embedder, llm={"provider": "none"}) as m:
        yield m, embedder


def _all_text(m: MemOS, cube: str) -> str:
    return "\n".join(
        " ".join([i.text, i.key or "", *i.tags, *map(str, i.metadata.values())])
        for i in m.store.list_items(cube, limit=1000)
    )


def test_mask_replaces_findings_before_the_embedder_sees_them(mos: tuple[MemOS, RecordingEmbedder]) -> None:
    m, embedder = mos
    header = m.create_cube("c", "ann", redaction="mask")
    assert header.redaction == RedactionPolicy(mode=RedactionMode.MASK)
    result = m.add(
        [
            {"role": "user", "name": "Caroline", "content": f"Mail me at {EMAIL} or call {PHONE}."},
            {"role": "user", "name": "Mel", "content": "Sure, see you at the park.", "image_caption": f"card {CARD}"},
        ],
        "ann",
        "c",
    )
    assert result.redacted == {"email": 1, "phone": 1, "payment_card": 1}
    stored = _all_text(m, "c")
    for secret in (EMAIL, PHONE, CARD, "2671", "example.com"):
        assert secret not in stored
        assert not any(secret in t for t in embedder.seen)
    assert "[EMAIL]" in stored and "[PHONE]" in stored and "[PAYMENT_CARD]" in stored
    events = m.store.list_events("c", "redacted")
    assert [e["payload"]["kinds"] for e in events] == [{"email": 1, "phone": 1, "payment_card": 1}]
    assert EMAIL not in str(events)
    hits = m.search("how do I reach Caroline", "ann", ["c"])
    assert hits and all(EMAIL not in h.item.text for h in hits)


def test_refuse_stores_nothing_and_names_kinds_not_values(mos: tuple[MemOS, RecordingEmbedder]) -> None:
    m, embedder = mos
    m.create_cube("c", "ann", redaction={"mode": "refuse"})
    m.add([{"role": "user", "content": "a harmless first turn"}], "ann", "c")
    before = m.store.count("c")
    seen = len(embedder.seen)
    with pytest.raises(SensitiveDataError) as caught:
        m.add(
            [{"role": "user", "content": "fine"}, {"role": "user", "content": f"my card is {CARD}"}],
            "ann",
            "c",
        )
    assert caught.value.index == 1 and caught.value.kinds == ("payment_card",)
    assert CARD not in str(caught.value) and "1111" not in str(caught.value)
    assert m.store.count("c") == before and len(embedder.seen) == seen  # nothing stored, nothing embedded
    with pytest.raises(SensitiveDataError):
        asyncio.run(m.aadd([{"role": "user", "content": f"write {EMAIL}"}], "ann", "c"))
    assert m.store.count("c") == before


def test_update_is_redacted_too(mos: tuple[MemOS, RecordingEmbedder]) -> None:
    m, _ = mos
    m.create_cube("c", "ann", redaction="mask")
    (mid,) = m.add([{"role": "user", "content": "Caroline likes hiking"}], "ann", "c").ids
    updated = m.update(mid, "ann", "c", text=f"Caroline likes hiking; mail {EMAIL}")
    assert updated.text == "Caroline likes hiking; mail [EMAIL]"
    m.set_redaction("c", "ann", "refuse")
    with pytest.raises(SensitiveDataError):
        m.update(mid, "ann", "c", text=f"now {EMAIL}")
    assert m.get(mid, "ann", "c").text == "Caroline likes hiking; mail [EMAIL]"


def test_off_is_the_default_and_stores_text_as_it_is(mos: tuple[MemOS, RecordingEmbedder]) -> None:
    m, _ = mos
    assert m.create_cube("c", "ann").redaction.mode == RedactionMode.OFF
    result = m.add([{"role": "user", "content": f"mail {EMAIL}"}], "ann", "c")
    assert result.redacted == {} and EMAIL in _all_text(m, "c")


def test_policy_changes_need_admin_and_persist(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with MemOS.from_path(home, embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"}) as m:
        m.create_cube("c", "ann", acl=[AclEntry(principal="bob", permissions=[Permission.WRITE])])
        with pytest.raises(PermissionDeniedError):
            m.set_redaction("c", "bob", "off")
        with pytest.raises(InvalidInputError):
            m.set_redaction("c", "ann", "scramble")
        with pytest.raises(InvalidInputError):
            m.create_cube("d", "ann", redaction={"mode": "mask", "kinds": ["passport"]})
        m.set_redaction("c", "ann", {"mode": "refuse", "kinds": ["email", "secret"]})
        with pytest.raises(SensitiveDataError):  # a writer is held to it as well
            m.add([{"role": "user", "content": f"mail {EMAIL}"}], "bob", "c")
    with MemOS.from_path(home, embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"}) as m:
        policy = m.get_cube("c", "ann").redaction
        assert policy.mode == RedactionMode.REFUSE and {k.value for k in policy.kinds} == {"email", "secret"}
