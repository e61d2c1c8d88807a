"""What the cookbook scripts share: the command line, the MemOS home, and a scripted tool-calling chat model.

Each script runs offline by default: the ``PRESET_OFFLINE`` configuration (hashing embeddings, no
LLM) and scripted chat models where tools are called, so it needs no model file and no network.
``--real-models`` uses the MemOS defaults instead (the local MiniLM embeddings; SmolLM2 where a
script answers without tools).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE

#: The repository root (``graphs/`` lives there).
REPO = Path(__file__).resolve().parents[1]


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``--home DIR`` (default: a temporary directory) and ``--real-models``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", type=Path, default=None, help="MemOS home (default: a temporary directory)")
    parser.add_argument("--real-models", action="store_true", help="the MemOS default models instead of offline ones")
    return parser.parse_args(argv)


@contextmanager
def open_mos(args: argparse.Namespace) -> Iterator[MemOS]:
    """Yield a set-up MemOS on ``args.home`` (or a temporary home), offline unless ``args.real_models``."""
    with tempfile.TemporaryDirectory(prefix="memos-cookbook-") as tmp:
        home = args.home or Path(tmp)
        with MemOS.from_path(home, **({} if args.real_models else PRESET_OFFLINE)) as mos:
            print(f"MemOS home: {home} ({'default models' if args.real_models else 'offline preset'})")
            yield mos


class ScriptedToolModel(BaseChatModel):
    """A scripted tool-calling chat model for agents, standing in for a real one.

    For each user turn it sends the next planned tool calls (``plan[i]``: ``(tool name, arguments)``
    pairs); once the tool results are back it answers with them (``"From my tools: ..."``). A turn
    planned with no tool calls is answered with ``"OK."``. ``bind_tools`` returns the model itself.
    """

    plan: list[list[tuple[str, dict[str, Any]]]] = Field(default_factory=list)
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "cookbook-scripted-tools"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolModel:  # type: ignore[override]
        """Return the model itself: its tool calls are scripted."""
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        results: list[str] = []
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                break
            results.insert(0, str(message.text))
        if results:
            reply = AIMessage("From my tools: " + " | ".join(r.replace("\n", " / ") for r in results))
        else:
            calls = self.plan[self.turn] if self.turn < len(self.plan) else []
            self.turn += 1
            reply = AIMessage(
                "" if calls else "OK.",
                tool_calls=[
                    {"name": name, "args": args, "id": f"call-{self.turn}-{n}", "type": "tool_call"}
                    for n, (name, args) in enumerate(calls)
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])
