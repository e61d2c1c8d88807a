"""MemReader: turns chat messages into memory items, and questions into a :class:`MemoryQuery`.

After MemOS's MemReader (MemTensor, 2025, §5.3):

* ``fast`` mode uses no LLM. Each turn becomes one line (``"Speaker: text"``) and is embedded
  once. Items are sliding windows of ``window_turns`` consecutive turns of a session (stride 1; a
  session shorter than the window gives one item), so that a short reply ("Yes, last Sunday!") is
  stored with what it answers. An item's embedding is the normalised mean of its turns' embeddings
  (no turn is embedded twice), its sources are its turns' message ids, its event time the first
  turn's, its key and tags RAKE key phrases. Windows form within one ``add`` call; turns added one
  call at a time become single-turn items chained by FOLLOWS edges.
* ``fine`` mode also asks an LLM to extract self-contained facts as JSON validated by
  :class:`~memos_agents.prompts.extract_facts.FactExtraction`. A reply that does not validate is
  retried with the model shown its reply and the validation error
  (:func:`~memos_agents.prompts.extract_facts.retry_messages`); a failed call is resent as it was.
  After ``fine_max_retries`` retries the window is recorded as a failure; the raw turns are stored
  either way, and each fact is linked to the turns it came from (DERIVED_FROM).

* ``facts`` mode stores each message's content as one fact, as given (``origin=direct``; no
  window, no LLM): what a memory tool saves ("Ann lives in Porto").

Window items carry ``origin=turns`` and their turn count in the typed ``turns`` field; facts carry
``origin=extracted``. Nothing that code branches on is kept in ``metadata``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from memos_agents.config import ReaderConfig
from memos_agents.errors import ConfigError, InvalidInputError, ModelError
from memos_agents.models.embedders import BaseEmbedder
from memos_agents.models.llm import BaseLLM, first_stop
from memos_agents.plaintext.text import key_phrases
from memos_agents.prompts import extract_facts, update_memory
from memos_agents.prompts.update_memory import MemoryDecision
from memos_agents.schema import (
    MAX_LABEL_CHARS,
    Edge,
    MemoryItem,
    MemoryOrigin,
    MemoryQuery,
    MemoryType,
    Message,
    RelationType,
    Sources,
)

log = logging.getLogger(__name__)
P = TypeVar("P")


class ReadMode(StrEnum):
    """How MemReader turns messages into memories."""

    FAST = "fast"
    FINE = "fine"
    FACTS = "facts"


@dataclass
class ReadResult:
    """What :meth:`MemReader.read` produced: items (embedded), edges between them, failures."""

    items: list[MemoryItem] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    failures: list[dict[str, object]] = field(default_factory=list)


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
        """Turn messages (already validated) into embedded items.

        Args:
            messages: Turns in conversation order.
            user_id: Owner recorded on every item.
            mode: ``fast`` (no LLM), ``fine`` (LLM extraction as well) or ``facts`` (each message's
                content stored as one fact, as given: what a memory tool saves).

        Returns:
            Items with embeddings, DERIVED_FROM edges (fine mode), and extraction failures.

        Raises:
            ConfigError: ``fine`` mode without an LLM.
            ModelError: The embedder failed.

        """
        if mode == ReadMode.FINE and self.llm is None:
            raise ConfigError("fine mode needs an LLM; configure one or use mode='fast'")
        if mode == ReadMode.FACTS:
            return self._facts(messages, user_id)
        lines = self.embedding_texts(messages)
        turn_vectors = self.embed(lines)
        result = ReadResult()
        containing: dict[int, list[MemoryItem]] = {}  # turn position -> windows that hold it
        for positions in self.windows(messages):
            item = self._window_item([messages[p] for p in positions], [lines[p] for p in positions], user_id)
            item.embedding = _unit_mean(turn_vectors[positions])
            result.items.append(item)
            for p in positions:
                containing.setdefault(p, []).append(item)
        if mode == ReadMode.FINE:
            facts_from = len(result.items)
            for start in range(0, len(messages), self.config.fine_window):
                window = list(range(start, min(start + self.config.fine_window, len(messages))))
                self._extract(messages, window, containing, user_id, result)
            facts = result.items[facts_from:]
            if facts:
                for fact, vec in zip(facts, self.embed([f.text for f in facts]), strict=True):
                    fact.embedding = vec.tolist()
        return result

    def _facts(self, messages: Sequence[Message], user_id: str | None) -> ReadResult:
        """``facts`` mode: each message's content is one fact as given (``origin=direct``; no window, no LLM)."""
        items = []
        for m in messages:
            text = " ".join(m.content.split())
            if not text:
                raise InvalidInputError("a fact must not be blank")
            phrases = [p[:MAX_LABEL_CHARS] for p in key_phrases(text, self.config.key_phrases)]
            items.append(
                MemoryItem(
                    text=text,
                    key=phrases[0] if phrases else None,
                    tags=phrases,
                    sources=Sources(
                        message_ids=[m.id] if m.id else [],
                        session_ids=[m.session_id] if m.session_id else [],
                        speakers=[m.speaker],
                    ),
                    user_id=user_id,
                    origin=MemoryOrigin.DIRECT,
                    event_time=m.timestamp,
                )
            )
        for item, vec in zip(items, self.embed([i.text for i in items]), strict=True):
            item.embedding = vec.tolist()
        return ReadResult(items=items)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the embedder, checking what it returns.

        Args:
            texts: Texts to embed.

        Returns:
            Float32 array of shape ``(len(texts), dim)``.

        Raises:
            ModelError: The embedder raised (any exception of a custom embedder is wrapped), or
                returned the wrong shape, or NaN/infinite values (which would flatten the dense
                scores of a whole cube).

        """
        try:
            vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"embedder {self.embedder.model_name!r} failed: {type(exc).__name__}: {exc}") from exc
        if vectors.shape != (len(texts), self.embedder.dim):
            raise ModelError(f"embedder returned shape {vectors.shape}, expected {(len(texts), self.embedder.dim)}")
        if not np.isfinite(vectors).all():
            raise ModelError(f"embedder {self.embedder.model_name!r} returned NaN or infinite values")
        return vectors

    def embedding_texts(self, messages: Sequence[Message]) -> list[str]:
        """Return the texts fast mode embeds: one rendered line per turn."""
        return [m.line() for m in messages]

    def windows(self, messages: Sequence[Message]) -> list[list[int]]:
        """Return the turn positions of each window item: ``window_turns`` consecutive turns of one session.

        Consecutive messages with the same ``session_id`` form a run; a run of L turns gives
        ``max(1, L - window_turns + 1)`` windows with stride 1.
        """
        size = self.config.window_turns
        out: list[list[int]] = []
        run: list[int] = []
        for pos, m in enumerate([*messages, None]):
            if run and (m is None or m.session_id != messages[run[0]].session_id):
                out.extend(run[i : i + size] for i in range(max(1, len(run) - size + 1)))
                run = []
            if m is not None:
                run.append(pos)
        return out

    def _window_item(self, turns: list[Message], lines: list[str], user_id: str | None) -> MemoryItem:
        phrases = key_phrases(
            " . ".join(f"{m.content} {m.image_caption or ''}" for m in turns), self.config.key_phrases
        )
        ids = [m.id for m in turns if m.id]
        phrases = [p[:MAX_LABEL_CHARS] for p in phrases]  # a "word" can be thousands of characters long
        return MemoryItem(
            text="\n".join(lines),
            memory_type=MemoryType.LONG_TERM,
            key=phrases[0] if phrases else None,
            tags=phrases,
            sources=Sources(
                message_ids=ids,
                session_ids=list(dict.fromkeys(m.session_id for m in turns if m.session_id)),
                speakers=list(dict.fromkeys(m.speaker for m in turns)),
            ),
            user_id=user_id,
            origin=MemoryOrigin.TURNS,
            turns=len(turns),
            event_time=turns[0].timestamp,
        )

    def _extract(
        self,
        messages: Sequence[Message],
        window: list[int],
        containing: dict[int, list[MemoryItem]],
        user_id: str | None,
        result: ReadResult,
    ) -> None:
        assert self.llm is not None
        turns = [messages[p] for p in window]
        ids = [m.id or f"T{p}" for m, p in zip(turns, window, strict=True)]
        prompt = extract_facts.build_messages([m.model_copy(update={"id": i}) for m, i in zip(turns, ids, strict=True)])
        parsed, errors = self._ask(prompt, extract_facts.parse, '{"facts": [...]}', max_tokens=512)
        if parsed is None:
            log.warning("fact extraction failed for %d turns: %s", len(window), errors[-1])
            result.failures.append({"task": "extract_facts", "message_ids": [m.id for m in turns], "errors": errors})
            return
        for fact in parsed.facts:
            cited = [p for p, i in zip(window, ids, strict=True) if i in fact.source_ids] or window
            sources = list(dict.fromkeys(item.id for p in cited for item in containing.get(p, [])))
            times = [t for p in cited if (t := messages[p].timestamp) is not None]
            item = MemoryItem(
                text=fact.text,
                memory_type=fact.memory_type if fact.memory_type != MemoryType.WORKING else MemoryType.LONG_TERM,
                key=fact.key,
                tags=[t.lower() for t in fact.tags][: max(self.config.key_phrases, 1)],
                sources=Sources(
                    message_ids=[i for i in (messages[p].id for p in cited) if i],
                    session_ids=list(dict.fromkeys(s for p in cited if (s := messages[p].session_id))),
                    speakers=list(dict.fromkeys(messages[p].speaker for p in cited)),
                ),
                user_id=user_id,
                origin=MemoryOrigin.EXTRACTED,
                event_time=min(times) if times else None,
                confidence=fact.confidence,
                metadata={"extracted_by": getattr(self.llm, "model_name", "llm")},  # information only
            )
            result.items.append(item)
            result.edges.extend(Edge(source_id=item.id, target_id=t, type=RelationType.DERIVED_FROM) for t in sources)

    def _ask(
        self, prompt: list[dict[str, str]], parse: Callable[[str], P], form: str, *, max_tokens: int
    ) -> tuple[P | None, list[str]]:
        """Ask the LLM and parse its reply (up to ``fine_max_retries`` retries); return ``(parsed or None, errors)``.

        A failed call is resent as it was; a reply that does not parse is shown to the model with
        what was wrong with it (:func:`~memos_agents.prompts.extract_facts.retry_messages`).
        """
        assert self.llm is not None
        errors: list[str] = []
        attempt = prompt
        for _attempt in range(self.config.fine_max_retries + 1):
            try:
                reply = call_llm(self.llm, attempt, max_tokens=max_tokens)
            except ModelError as exc:  # the call failed: nothing to show the model, resend as it was
                errors.append(str(exc)[:300])
                continue
            try:
                return parse(reply), errors
            except ValueError as exc:  # show the model its reply and what was wrong with it
                errors.append(str(exc)[: extract_facts.MAX_ERROR_CHARS])
                attempt = extract_facts.retry_messages(prompt, reply, errors[-1], form)
        return None, errors

    def decide(self, candidates: Sequence[tuple[MemoryItem, Sequence[MemoryItem]]]) -> dict[str, MemoryDecision]:
        """Ask the LLM what each new fact does to the stored facts close to it (see ``prompts.update_memory``).

        Args:
            candidates: ``(new fact, stored facts close to it)`` pairs.

        Returns:
            New fact id -> the validated decision. A fact whose decision failed every retry is left
            out (the caller falls back to the rule) and logged.

        """
        if self.llm is None:
            return {}
        out: dict[str, MemoryDecision] = {}
        for new, stored in candidates:
            ids = [i.id for i in stored]
            decision, errors = self._ask(
                update_memory.build_messages(new, stored),
                functools.partial(update_memory.parse, allowed=ids),
                '{"action": ..., "target": ...}',
                max_tokens=64,
            )
            if decision is None:
                log.warning("memory update decision failed, the rule decides: %s", errors[-1] if errors else "")
                continue
            out[new.id] = decision
        return out

    def parse_query(self, query: str) -> MemoryQuery:
        """Turn a question into a :class:`MemoryQuery`."""
        return MemoryQuery(text=query)


def call_llm(
    llm: BaseLLM,
    messages: Sequence[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
) -> str:
    """Call ``llm.generate`` so that any failure is a :class:`ModelError`.

    Args:
        llm: The model.
        messages: OpenAI-style chat messages.
        max_tokens: Upper bound on generated tokens.
        temperature: 0 for greedy decoding (default).
        stop: Stop strings (default none): passed to models that take them
            (``llm.supports_stop``), so generation ends early, and applied to every reply: it is cut
            before the first stop string after its leading whitespace.

    Returns:
        The reply text, stripped.

    Raises:
        ModelError: The model raised (a custom LLM's own exception is wrapped) or returned a non-string.

    """
    stops = [s for s in stop if s]
    extra: dict[str, Any] = {"stop": stops} if stops and llm.supports_stop else {}
    try:
        reply = llm.generate(messages, max_tokens=max_tokens, temperature=temperature, **extra)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"LLM {getattr(llm, 'model_name', 'llm')!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(reply, str):
        raise ModelError(f"LLM returned {type(reply).__name__}, expected a string")
    reply = reply.strip()
    cut = first_stop(reply, stops)
    return reply[:cut].strip() if cut >= 0 else reply


def _unit_mean(vectors: np.ndarray) -> list[float]:
    """Return the normalised mean of ``vectors`` (shape ``(n, dim)``) as a list."""
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return [float(x) for x in mean / (norm or 1.0)]
