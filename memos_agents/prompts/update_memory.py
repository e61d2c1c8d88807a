"""Fine-mode MemLifecycle task: decide what a new fact does to the stored facts it resembles.

After mem0's memory update step (Chhikara et al., 2025, "Mem0: Building Production-Ready AI
Agents with Scalable Long-Term Memory": ADD / UPDATE / DELETE / NONE) and MemOS's MemLifecycle:
the LLM sees a new fact and the stored facts closest to it and answers, as JSON validated by
:class:`MemoryDecision`, one of

* ``add``: a new, independent fact (stored as it is);
* ``update``: it refines the stored fact ``target`` (the two are merged; the originals are archived
  and point to the merged fact by MERGED_TO);
* ``supersede``: it replaces the stored fact ``target``, which is no longer true (the new fact
  SUPERSEDES it; the old one is archived, never deleted);
* ``ignore``: ``target`` already says it (the new fact is stored archived, MERGED_TO the target).

Unlike mem0 nothing is deleted: MemVault keeps every version and a superseded fact stays
reachable (``MemOS.superseded``). A reply that does not validate is retried with the model shown
its reply and the error, as fact extraction does.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, model_validator

from memos_agents.schema import MemoryItem

SYSTEM = (
    "You maintain a memory of facts. You are given stored facts, each with an [id], and one new fact. "
    'Return only JSON of the form {"action": "add"|"update"|"supersede"|"ignore", "target": id or null}. '
    "add: the new fact is independent of the stored ones. update: it adds detail to the stored fact "
    "[target] and both stay true. supersede: it replaces the stored fact [target], which is no longer "
    "true (a changed value, a correction, a reversal). ignore: the stored fact [target] already says it. "
    "target must be one of the given ids (null only for add)."
)


class MemoryAction(StrEnum):
    """What a new fact does to the stored facts (see the module docstring)."""

    ADD = "add"
    UPDATE = "update"
    SUPERSEDE = "supersede"
    IGNORE = "ignore"


class MemoryDecision(BaseModel):
    """The whole JSON answer: an action and, unless ``add``, the stored fact it applies to."""

    model_config = ConfigDict(extra="ignore")

    action: MemoryAction
    target: str | None = None

    @model_validator(mode="after")
    def _target_needed(self) -> MemoryDecision:
        if self.action is not MemoryAction.ADD and not self.target:
            raise ValueError(f"action {self.action.value!r} needs the id of a stored fact as target")
        return self


def build_messages(new: MemoryItem, stored: Sequence[MemoryItem]) -> list[dict[str, str]]:
    """Render the decision prompt: the stored facts (``[id] text``, with their dates) and the new fact.

    Returns:
        OpenAI-style messages.

    """

    def line(item: MemoryItem) -> str:
        when = item.event_time or item.created_at
        return f"[{item.id}] ({when:%d %B %Y}) {item.text}"

    body = "Stored facts:\n" + "\n".join(line(i) for i in stored) + f"\n\nNew fact:\n{line(new)}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


def parse(raw: str, allowed: Sequence[str]) -> MemoryDecision:
    """Parse the LLM's answer and check that its target is one of the ``allowed`` ids.

    Raises:
        ValueError: No JSON object validating against :class:`MemoryDecision`, or a target that
            is not one of the stored facts shown.

    """
    from memos_agents.prompts.extract_facts import parse_model

    decision = parse_model(raw, MemoryDecision, "decision")
    if decision.action is not MemoryAction.ADD and decision.target not in allowed:
        raise ValueError(f"target must be one of the stored fact ids {list(allowed)}, not {decision.target!r}")
    return decision
