"""Fine-mode MemReader task: extract atomic facts from a window of conversation turns as JSON.

After MemOS's MemReader "fine" extraction (MemTensor, 2025): the LLM returns a list of
self-contained facts, each with a memory type, a short key, tags, the ids of the turns it rests on
and a confidence. The answer must validate against :class:`FactExtraction`; when it does not, the
retry shows the model its answer and the error (:func:`retry_messages`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos_agents.schema import MAX_ITEM_TEXT_CHARS, MAX_TAGS, Label, MemoryType, Message, check_text

SYSTEM = (
    "You extract long-term memories from a conversation. Return only JSON of the form "
    '{"facts": [{"text": str, "memory_type": "LongTermMemory"|"UserMemory", "key": str, '
    '"tags": [str], "source_ids": [str], "confidence": number between 0 and 1}]}. '
    "Each fact is one self-contained sentence naming the person it is about, with dates made absolute "
    "from the turn's date. UserMemory is a person's stable trait or preference; LongTermMemory is an event "
    "or fact. source_ids are the [ids] of the turns the fact comes from. Use an empty list when nothing is "
    "worth remembering."
)

#: Longest validation error shown to the model in a retry (characters).
MAX_ERROR_CHARS = 300

RETRY = (
    "Your answer above is not valid: {error}\n"
    "Reply with the corrected JSON only, of the form {form} as described, and nothing else."
)


class ExtractedFact(BaseModel):
    """One fact as the LLM must return it."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("fact text must not be blank")
        return check_text(value, "fact text", MAX_ITEM_TEXT_CHARS)

    memory_type: MemoryType = MemoryType.LONG_TERM
    key: Label | None = None
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS)
    source_ids: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)


class FactExtraction(BaseModel):
    """The whole JSON answer."""

    model_config = ConfigDict(extra="ignore")

    facts: list[ExtractedFact]


def build_messages(turns: Sequence[Message]) -> list[dict[str, str]]:
    """Render a window of turns into chat messages for the extractor.

    Args:
        turns: The turns, each with an id (assigned by the reader when the caller gave none).

    Returns:
        OpenAI-style messages.

    """
    lines = []
    for t in turns:
        when = f" ({t.timestamp:%d %B %Y})" if t.timestamp else ""
        lines.append(f"[{t.id}]{when} {t.line()}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def retry_messages(
    prompt: Sequence[dict[str, str]], reply: str, error: str, form: str = '{"facts": [...]}'
) -> list[dict[str, str]]:
    """Return the messages of a retry: the prompt, the model's invalid reply, and what was wrong with it.

    Args:
        prompt: The messages of the first attempt (from :func:`build_messages`).
        reply: The model's reply that did not validate.
        error: The validation error (cut to :data:`MAX_ERROR_CHARS` characters).
        form: The shape of the JSON asked for, as the retry names it.

    Returns:
        ``prompt`` followed by the reply as an assistant message and a user message that states
        the error and asks for corrected JSON only.

    """
    shown = " ".join(error.split())
    if len(shown) > MAX_ERROR_CHARS:
        shown = shown[: MAX_ERROR_CHARS - 1] + "…"
    return [
        *(dict(m) for m in prompt),
        {"role": "assistant", "content": reply},
        {"role": "user", "content": RETRY.format(error=shown, form=form)},
    ]


def _describe(exc: json.JSONDecodeError | ValidationError) -> str:
    """Return a one-line description of a JSON or validation error (the first three problems)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    problems = [
        f"{'.'.join(str(part) for part in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors(include_url=False)
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse(raw: str) -> FactExtraction:
    """Parse the LLM's answer (bare JSON, or JSON in a code fence, or JSON inside prose).

    Raises:
        ValueError: No JSON object validating against :class:`FactExtraction` was found.

    """
    return parse_model(raw, FactExtraction, "fact")


M = TypeVar("M", bound=BaseModel)


def parse_model(raw: str, model: type[M], what: str) -> M:
    """Parse an LLM's JSON answer into ``model``: bare JSON, JSON in a code fence, or JSON inside prose.

    Raises:
        ValueError: No JSON object validating against ``model`` (the message names ``what`` and
            the first problems, for a retry).

    """
    candidates = [m.group(1) for m in _FENCE.finditer(raw)]
    start, end = raw.find("{"), raw.rfind("}")
    if start != -1:
        candidates.append(raw[start : end + 1] if end > start else raw[start:])  # unclosed: say where it breaks
    errors: list[str] = []
    for text in dict.fromkeys(candidates):
        try:
            return model.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            errors.append(_describe(exc))
    raise ValueError(
        f"no valid {what} JSON in LLM answer: " + ("; ".join(dict.fromkeys(errors)) or "no JSON object found")
    )
