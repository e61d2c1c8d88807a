"""Chat task: answer a question from retrieved memories (the MemScheduler's plaintext context)."""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM = (
    "You are a helpful assistant with a long-term memory. Answer the question using the memories given. "
    "Answer briefly, in one sentence. If the memories do not contain the answer, say you do not know."
)

#: Repeated after the question: small models (SmolLM2-135M) heed the last line far more than the
#: system prompt; without it they echo the transcript ("Caroline: ..."), start bullet lists or
#: run on to the token limit, with it they answer in one sentence (measured on 16 LoCoMo
#: questions: 6 of 16 replies ran past 40 tokens without it, 1 with it).
REMINDER = "Answer in one short sentence."

#: Stop strings for a one-sentence answer: the answer ends at its first line break.
STOP = ("\n",)


def build_messages(question: str, context: str, history: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Build chat messages: system rules, prior turns, then memories and the question.

    Args:
        question: The user's question.
        context: Rendered memories, one per line (see ``MemScheduler.render_context``).
        history: Earlier OpenAI-style chat messages of this conversation.

    Returns:
        OpenAI-style messages.

    """
    user = f"Memories:\n{context or '(none)'}\n\nQuestion: {question}\n{REMINDER}"
    return [{"role": "system", "content": SYSTEM}, *history, {"role": "user", "content": user}]


def stable_system(lines: str) -> str:
    """Return the system message that carries the stable memories ``lines`` (each ending with a newline).

    It is the same text for every request that uses the same stable memories, so it is the part
    of the prompt a KV cache covers (``memos_agents.activation``) and a server's prefix cache hits.
    """
    return f"{SYSTEM}\n\nMemories:\n{lines}" if lines else SYSTEM


def build_scheduled_messages(
    question: str, stable_lines: str, context: str, history: Sequence[dict[str, str]] = ()
) -> list[dict[str, str]]:
    """Build chat messages with a stable memory prefix first: the layout of ``MemScheduler.plan``.

    Args:
        question: The user's question.
        stable_lines: The stable memories, one line each ending with a newline, in their fixed
            order (they go into the system message; empty: none).
        context: The other memories for this question, one per line (see ``MemScheduler.render_context``).
        history: Earlier OpenAI-style chat messages of this conversation.

    Returns:
        OpenAI-style messages: ``[system (+ stable memories), *history, user (+ other memories, question)]``.

    """
    if context or not stable_lines:
        user = f"Memories:\n{context or '(none)'}\n\nQuestion: {question}\n{REMINDER}"
    else:
        user = f"Question: {question}\n{REMINDER}"
    return [{"role": "system", "content": stable_system(stable_lines)}, *history, {"role": "user", "content": user}]
