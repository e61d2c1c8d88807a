"""MemReader: turns chat messages into memory items, and questions into a :class:`MemoryQuery`.

After MemOS's MemReader (MemTensor, 2025, §5.3):

* ``fast`` mode uses no LLM: one item per turn, its text the speaker and the turn, its event time
  the message's (or session's) time, its key and tags RAKE key phrases. The embedded text adds the
  preceding turn(s) of the same session as context, so that a short reply ("Yes, last Sunday!")
  is found by what it answers; the prompt text stays the turn itself.
* ``fine`` mode also asks an LLM to extract self-contained facts as JSON validated by
  :class:`~memos_agents.prompts.extract_facts.FactExtraction`. A parse failure is retried, then
  recorded as a failure; the raw turns are stored either way, and each fact is linked to the turns
  it came from (DERIVED_FROM).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from memos_agents.config import ReaderConfig
from memos_agents.errors import ConfigError, ModelError
from memos_agents.models.embedders import BaseEmbedder
from memos_agents.models.llm import BaseLLM
from memos_agents.plaintext.text import content_terms, key_phrases
from memos_agents.prompts import extract_facts
from memos_agents.schema import Edge, MemoryItem, MemoryQuery, MemoryType, Message, RelationType, Sources

log = logging.getLogger(__name__)


class ReadMode(StrEnum):
    """How MemReader turns messages into memories."""

    FAST = "fast"
    FINE = "fine"


@dataclass
class ReadResult:
    """What :meth:`MemReader.read` produced: items (embedded), edges between them, failures."""

    items: list[MemoryItem] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    failures: list[dict[str, object]] = field(default_factory=list)


def render_turn(message: Message) -> str:
    """Render one turn as memory text: ``"Speaker: content [shares a photo: caption]"``."""
    caption = f" [shares a photo: {message.image_caption}]" if message.image_caption else ""
    return f"{message.speaker}: {message.content}{caption}"


class MemReader:
    """Turns messages into memory items.

    Args:
        embedder: Embeds item texts (one batch per call).
        llm: Needed for ``fine`` mode only.
        config: Reader settings (defaults: :class:`~memos_agents.config.ReaderConfig`).

    """

    def __init__(self, embedder: BaseEmbedder, llm: BaseLLM | None = None, config: ReaderConfig | None = None):
        self.embedder = embedder
        self.llm = llm
        self.config = config or ReaderConfig()

    def read(self, messages: Sequence[Message], *, user_id: str | None, mode: ReadMode = ReadMode.FAST) -> ReadResult:
        """Turn messages (already validated, with ids) into embedded items.

        Args:
            messages: Turns in conversation order.
            user_id: Owner recorded on every item.
            mode: ``fast`` (no LLM) or ``fine`` (LLM extraction as well).

        Returns:
            Items with embeddings, DERIVED_FROM edges (fine mode), and extraction failures.

        Raises:
            ConfigError: ``fine`` mode without an LLM.
            ModelError: The embedder failed.

        """
        result = ReadResult(items=[self._turn_item(m, user_id) for m in messages])
        if mode == ReadMode.FINE:
            if self.llm is None:
                raise ConfigError("fine mode needs an LLM; configure one or use mode='fast'")
            by_message = {m.id: item for m, item in zip(messages, result.items, strict=True)}
            for start in range(0, len(messages), self.config.fine_window):
                window = list(messages[start : start + self.config.fine_window])
                self._extract(window, by_message, user_id, result)
        texts = self.index_texts(messages, result.items)
        vectors = self.embedder.embed(texts)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise ModelError(f"embedder returned shape {vectors.shape}, expected {(len(texts), self.embedder.dim)}")
        for item, vec in zip(result.items, vectors, strict=True):
            item.embedding = vec.tolist()
        return result

    def _turn_item(self, m: Message, user_id: str | None) -> MemoryItem:
        text = render_turn(m)
        phrases = key_phrases(f"{m.content} {m.image_caption or ''}", self.config.key_phrases)
        return MemoryItem(
            text=text,
            memory_type=MemoryType.LONG_TERM,
            key=phrases[0] if phrases else None,
            tags=phrases,
            sources=Sources(
                message_ids=[m.id] if m.id else [],
                session_ids=[m.session_id] if m.session_id else [],
                speakers=[m.speaker],
            ),
            user_id=user_id,
            event_time=m.timestamp,
            metadata={"role": m.role},
        )

    def index_texts(self, messages: Sequence[Message], items: list[MemoryItem]) -> list[str]:
        """Texts to embed: turn items get their preceding same-session turns as context."""
        texts = []
        n = self.config.context_turns
        for pos, item in enumerate(items):
            if pos < len(messages) and n:
                context = [
                    render_turn(p) for p in messages[max(0, pos - n) : pos] if p.session_id == messages[pos].session_id
                ]
                texts.append("\n".join([*context, item.text]))
            else:
                texts.append(item.text)
        return texts

    def _extract(
        self, window: list[Message], by_message: dict[str | None, MemoryItem], user_id: str | None, result: ReadResult
    ) -> None:
        assert self.llm is not None
        prompt = extract_facts.build_messages(window)
        errors: list[str] = []
        parsed = None
        for _attempt in range(self.config.fine_max_retries + 1):
            try:
                raw = self.llm.generate(prompt, max_tokens=512)
                parsed = extract_facts.parse(raw)
                break
            except (ValueError, ModelError) as exc:
                errors.append(str(exc)[:300])
        if parsed is None:
            log.warning("fact extraction failed for %d turns: %s", len(window), errors[-1])
            result.failures.append({"task": "extract_facts", "message_ids": [m.id for m in window], "errors": errors})
            return
        window_ids = [m.id for m in window]
        for fact in parsed.facts:
            cited = [i for i in fact.source_ids if i in window_ids] or window_ids
            turns = [by_message[i] for i in cited if i in by_message]
            times = [t.event_time for t in turns if t.event_time is not None]
            item = MemoryItem(
                text=fact.text,
                memory_type=fact.memory_type if fact.memory_type != MemoryType.WORKING else MemoryType.LONG_TERM,
                key=fact.key,
                tags=[t.lower() for t in fact.tags][: max(self.config.key_phrases, 1)],
                sources=Sources(
                    message_ids=[i for i in cited if i],
                    session_ids=list(dict.fromkeys(s for t in turns for s in t.sources.session_ids)),
                    speakers=list(dict.fromkeys(s for t in turns for s in t.sources.speakers)),
                ),
                user_id=user_id,
                event_time=min(times) if times else None,
                confidence=fact.confidence,
                metadata={"extracted_by": getattr(self.llm, "model_name", "llm")},
            )
            result.items.append(item)
            result.edges.extend(Edge(source_id=item.id, target_id=t.id, type=RelationType.DERIVED_FROM) for t in turns)

    def parse_query(self, query: str) -> MemoryQuery:
        """Turn a question into a :class:`MemoryQuery` (its content terms as keywords)."""
        return MemoryQuery(text=query, keywords=content_terms(query))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return ``vectors`` with rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
