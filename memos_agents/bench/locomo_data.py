r"""Loader for LoCoMo conversations (Maharana et al., ACL 2024, arXiv 2402.17753).

Reads the JSON schema of ``snap-research/LoCoMo`` (``locomo10.json``): each sample has a
``conversation`` with ``session_<N>`` turn lists and ``session_<N>_date_time`` strings, and ``qa``
with evidence dia_ids. Only sessions with a turn list count; evidence ids are cleaned (split on
``[;,\\s]+``, zero padding stripped, unknown ids dropped). The model-generated ``observation``,
``session_summary`` and ``event_summary`` annotations are never read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from memos_agents.errors import InvalidInputError
from memos_agents.schema import Message

#: Categories used by the standard evaluation (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop).
STANDARD_CATEGORIES = (1, 2, 3, 4)
_SESSION = re.compile(r"^session_(\d+)$")
_DIA = re.compile(r"^D(\d+):(\d+)$")


@dataclass
class QA:
    """One question with its cleaned evidence set."""

    question: str
    answer: str
    evidence: list[str]
    category: int


@dataclass
class Session:
    """One dated session of turns."""

    session_id: str
    time: datetime | None
    turns: list[Message] = field(default_factory=list)


@dataclass
class Conversation:
    """One LoCoMo sample."""

    sample_id: str
    speakers: tuple[str, str]
    sessions: list[Session]
    qa: list[QA]

    @property
    def turn_count(self) -> int:
        """Number of turns over all sessions."""
        return sum(len(s.turns) for s in self.sessions)


def parse_session_time(value: str | None) -> datetime | None:
    """Parse ``"1:56 pm on 8 May, 2023"`` as a UTC datetime (None when absent or unparsable)."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def clean_evidence(raw: list[str], known: set[str]) -> list[str]:
    """Split, strip zero padding, and drop unknown dia_ids (see the data README)."""
    out: list[str] = []
    for entry in raw:
        for part in re.split(r"[;,\s]+", str(entry)):
            m = _DIA.match(part.strip())
            if m:
                dia = f"D{int(m.group(1))}:{int(m.group(2))}"
                if dia in known and dia not in out:
                    out.append(dia)
    return out


def load_locomo(path: str | Path) -> list[Conversation]:
    """Load LoCoMo conversations.

    Args:
        path: A LoCoMo JSON file (a list of samples).

    Returns:
        Conversations with sessions in order and QAs of every category.

    Raises:
        InvalidInputError: The file is missing or not LoCoMo-shaped.

    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read LoCoMo data from {path}: {exc}") from exc
    if not isinstance(data, list):
        raise InvalidInputError(f"{path}: expected a JSON list of LoCoMo samples")
    out = []
    for sample in data:
        try:
            conv = sample["conversation"]
            sessions: list[Session] = []
            numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION.match(k)) and isinstance(conv[k], list))
            for n in numbers:
                when = parse_session_time(conv.get(f"session_{n}_date_time"))
                session = Session(session_id=f"session_{n}", time=when)
                for turn in conv[f"session_{n}"]:
                    session.turns.append(
                        Message(
                            role="user",
                            name=turn["speaker"],
                            content=turn.get("text") or "",
                            id=turn["dia_id"],
                            timestamp=when,
                            session_id=session.session_id,
                            image_caption=turn.get("blip_caption"),
                        )
                    )
                sessions.append(session)
            known = {t.id for s in sessions for t in s.turns if t.id}
            qa = [
                QA(
                    question=q["question"],
                    answer=str(q.get("answer", q.get("adversarial_answer", ""))),
                    evidence=clean_evidence(q.get("evidence", []), known),
                    category=int(q["category"]),
                )
                for q in sample.get("qa", [])
            ]
            out.append(Conversation(sample["sample_id"], (conv["speaker_a"], conv["speaker_b"]), sessions, qa))
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}: sample is not LoCoMo-shaped ({exc})") from exc
    return out


def evidence_recall(evidence: list[str], retrieved_sources: list[list[str]]) -> float:
    """Evidence recall: ``|E ∩ ⋃ src(R_i)| / |E|`` (1.0 for an empty E is never asked; callers skip it)."""
    got = {s for sources in retrieved_sources for s in sources}
    return len(set(evidence) & got) / len(evidence)
