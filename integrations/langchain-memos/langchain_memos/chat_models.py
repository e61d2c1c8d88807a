"""A LangChain chat model over a memos-agents LLM (the local SmolLM2, or any OpenAI-compatible endpoint).

Typical use::

    model = ChatMemOS(llm=mos.llm, max_tokens=96)
    model.invoke([SystemMessage("Answer briefly."), HumanMessage("Hi!")]).content
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field

from memos_agents.errors import InvalidInputError
from memos_agents.models.llm import BaseLLM
from memos_agents.operation.reader import call_llm
from memos_agents.schema import normalize_role

__all__ = ["ChatMemOS"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}
#: Roles this model cannot take (it has no tool calling), after :func:`~memos_agents.schema.normalize_role`.
_TOOL_ROLES = frozenset({"tool"})


def _to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Return OpenAI-style ``{"role", "content"}`` dicts of Human, AI, System and Chat messages.

    A ``ChatMessage``'s role is normalised (:func:`~memos_agents.schema.normalize_role`: ``human``
    → ``user``, ``ai`` → ``assistant``, ``developer`` → ``system``, ...).

    Raises:
        InvalidInputError: A tool or function message (``ChatMessage`` roles ``tool`` and
            ``function`` included), or an AI message with tool calls (this model has no tool calling).

    """
    out = []
    for pos, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            role = normalize_role(m.role)
            if role in _TOOL_ROLES:
                raise InvalidInputError(
                    f"message {pos} is a chat message of role {m.role!r}; "
                    "ChatMemOS has no tool calling and takes no tool or function messages"
                )
        elif m.type in _ROLES and not (isinstance(m, AIMessage) and m.tool_calls):
            role = _ROLES[m.type]
        else:
            raise InvalidInputError(
                f"message {pos} is a {m.type!r} message{' with tool calls' if m.type == 'ai' else ''}; "
                "ChatMemOS has no tool calling and takes human, ai, system and chat messages only"
            )
        out.append({"role": role, "content": m.text})
    return out


def _check_max_tokens(value: object) -> int:
    """Return ``value`` if it is an integer of at least 1 (the bound of the ``max_tokens`` field).

    Raises:
        InvalidInputError: Anything else (``bool`` and floats included).

    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"max_tokens must be an integer of at least 1, not {value!r}")
    return value


def _check_temperature(value: object) -> float:
    """Return ``value`` as a float if it is a finite number of at least 0 (the bound of the ``temperature`` field).

    Raises:
        InvalidInputError: Anything else (``bool``, NaN and infinity included).

    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"temperature must be a finite number of at least 0, not {value!r}")
    return float(value)


class ChatMemOS(BaseChatModel):
    """A memos-agents LLM (:class:`~memos_agents.models.llm.BaseLLM`) as a LangChain chat model.

    Use it to run the local SmolLM2 (``mos.llm``) in LangChain chains and LangGraph graphs. It
    generates text only: there is no tool calling (:meth:`bind_tools`, and hence
    ``with_structured_output``, raise ``NotImplementedError``) and no token streaming (a stream
    yields the whole reply as one chunk). Async calls run generation in a worker thread.

    Attributes:
        llm: The memos-agents LLM, e.g. ``mos.llm`` or ``HFLocalLLM()``.
        max_tokens: Most tokens generated per reply (default 256); ``invoke(..., max_tokens=64)``
            overrides it per call.
        temperature: Sampling temperature (default 0.0: greedy).
        stop: Stop strings of every call (default none); a call's ``stop`` is added to them.
            The reply ends before the first one, which is not returned.

    Raises (on invoke):
        InvalidInputError: A tool or function message (a ``ChatMessage`` of role ``tool`` or
            ``function`` too), or an AI message with tool calls, in the input; a per-call
            ``max_tokens`` or ``temperature`` out of the fields' bounds.
        ModelError: The LLM failed (any exception of a custom LLM is wrapped).

    """

    llm: BaseLLM
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    stop: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "memos"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.llm.model_name,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Generate one reply.

        Args:
            messages: The conversation (human, ai, system and chat messages).
            stop: Stop strings of this call, added to the ``stop`` field.
            run_manager: LangChain's callback manager.
            **kwargs: ``max_tokens`` (an integer of at least 1) and ``temperature`` (a finite
                number of at least 0) override the fields for this call; nothing else is accepted.

        Returns:
            One generation holding an ``AIMessage`` with the reply text.

        Raises:
            InvalidInputError: Unsupported messages, an unknown keyword argument, or a
                ``max_tokens``/``temperature`` override out of its field's bounds.
            ModelError: The LLM failed.

        """
        unknown = set(kwargs) - {"max_tokens", "temperature"}
        if unknown:
            raise InvalidInputError(f"ChatMemOS does not take {', '.join(sorted(unknown))}")
        max_tokens = _check_max_tokens(kwargs["max_tokens"]) if "max_tokens" in kwargs else self.max_tokens
        temperature = _check_temperature(kwargs["temperature"]) if "temperature" in kwargs else self.temperature
        chat = _to_chat_messages(messages)
        reply = call_llm(
            self.llm,
            chat,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=[*self.stop, *(stop or [])],
        )
        message = AIMessage(content=reply, response_metadata={"model_name": self.llm.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Refuse: memos-agents LLMs have no tool calling.

        Raises:
            NotImplementedError: Always. Call the memory tools from your own code, or use
                :class:`~langchain_memos.retrievers.MemOSRetriever` to put memories in the prompt.

        """
        raise NotImplementedError(
            f"ChatMemOS ({self.llm.model_name}) has no tool calling: memos-agents LLMs generate text only. "
            "Put memories in the prompt with MemOSRetriever, or use a tool-calling chat model for agents."
        )
