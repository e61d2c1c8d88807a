"""Test doubles for code built on memos-agents: a scripted LLM and a model-free embedder.

Neither needs a model file, a network or pytest::

    from memos_agents.testing import HashingEmbedder, ScriptedLLM

    llm = ScriptedLLM(['{"facts": []}'])
    mos = MemOS.from_path(tmp_path, embedder=HashingEmbedder(64), llm=llm)
    ...
    assert llm.calls[0].messages[-1]["role"] == "user"

:class:`ScriptedLLM` replays replies from a list (an exception in the list is raised instead of
returned, to stand for a failing endpoint) or computes them with a function, and records every
call. :class:`~memos_agents.models.embedders.HashingEmbedder` is the deterministic
feature-hashing embedder (shared words give similar vectors), re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from memos_agents.models.embedders import HashingEmbedder
from memos_agents.models.llm import BaseLLM, ChatMessage, first_stop

__all__ = ["HashingEmbedder", "LLMCall", "ManualClock", "ScriptExhaustedError", "ScriptedLLM"]


class ScriptExhaustedError(RuntimeError):
    """A :class:`ScriptedLLM` was called more often than its script has replies.

    Library code that calls an LLM through ``memos_agents.operation.reader.call_llm`` wraps this
    (as any exception of a custom LLM) in a ``ModelError``; the message still names it.
    """


@dataclass(frozen=True)
class LLMCall:
    """One call of :meth:`ScriptedLLM.generate`, as it was made.

    Attributes:
        messages: Copies of the chat messages passed (later changes to the caller's list or
            dicts do not show here).
        max_tokens: The ``max_tokens`` argument.
        temperature: The ``temperature`` argument.
        stop: The stop strings in effect (the ``stop`` argument, or the instance's default when
            it was None); empty when none.

    """

    messages: list[ChatMessage]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]


#: A script: replies (or exceptions to raise) in call order, or a function of the call.
Script = Sequence[str | Exception] | Callable[[LLMCall], str]


class ScriptedLLM(BaseLLM):
    """An LLM that answers from a script and records every call.

    Args:
        script: Either the replies in call order (an exception instance in the list is raised
            by that call instead, e.g. ``ModelError("server down")``), or a function that gets
            the :class:`LLMCall` and returns the reply (it may raise to stand for a failure).
        model_name: The model name reported (default ``"scripted"``).
        stop: Default stop strings, used when a call passes ``stop=None`` (default none).

    Stop strings follow OpenAI's semantics, as the shipped LLMs do: the reply ends before the
    first one found after its leading whitespace, and the stop string is not returned.

    Attributes:
        calls: One :class:`LLMCall` per call of :meth:`generate`, in order, including calls that
            raised (a scripted exception, or :class:`ScriptExhaustedError`).

    Raises:
        TypeError: ``script`` is neither a sequence nor a callable, or a listed reply is neither
            a string nor an exception.

    """

    supports_stop = True

    def __init__(self, script: Script, *, model_name: str = "scripted", stop: Sequence[str] = ()) -> None:
        self.model_name = model_name
        self.stop: tuple[str, ...] = tuple(stop)
        self.calls: list[LLMCall] = []
        self._respond: Callable[[LLMCall], str] | None = None
        self._replies: list[str | Exception] = []
        if callable(script):
            self._respond = script
        elif isinstance(script, Sequence) and not isinstance(script, str | bytes):
            bad = [r for r in script if not isinstance(r, str | Exception)]
            if bad:
                raise TypeError(f"a scripted reply must be a str or an exception, not {type(bad[0]).__name__}")
            self._replies = list(script)
        else:
            raise TypeError("script must be a sequence of replies or a callable taking an LLMCall")

    @property
    def remaining(self) -> int | None:
        """Replies left in a list script (None for a callable script)."""
        return None if self._respond is not None else len(self._replies)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> str:
        """Record the call and return the next scripted reply (cut at the first stop string).

        Raises:
            ScriptExhaustedError: A list script has no reply left for this call.
            Exception: The scripted exception of this call, or whatever the callable raised.

        """
        stops = tuple(s for s in (self.stop if stop is None else stop) if s)
        call = LLMCall([dict(m) for m in messages], max_tokens, temperature, stops)
        self.calls.append(call)
        if self._respond is not None:
            reply = self._respond(call)
        elif not self._replies:
            last = call.messages[-1]["content"][:80] if call.messages else ""
            raise ScriptExhaustedError(
                f"ScriptedLLM {self.model_name!r} has no reply left for call {len(self.calls)} "
                f"(its script held {len(self.calls) - 1}); last message: {last!r}"
            )
        else:
            next_reply = self._replies.pop(0)
            if isinstance(next_reply, Exception):
                raise next_reply
            reply = next_reply
        if not isinstance(reply, str):
            raise TypeError(f"the script returned {type(reply).__name__}, expected a str")
        text = reply.lstrip()
        cut = first_stop(text, stops)
        return text[:cut] if cut >= 0 else reply


class ManualClock:
    """A clock a test moves by hand: ``MemOS(clock=...)``, ``MemLifecycle(clock=...)``, ``AccessTracker(clock=...)``.

    It starts at the real time (stores stamp their own writes with the system clock, and
    MemVault's reads go by those stamps), then moves only when :meth:`advance` is called.
    """

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward by ``timedelta(**delta)`` (e.g. ``advance(days=30)``)."""
        self.now += timedelta(**delta)
