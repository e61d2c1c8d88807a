"""The shipped test doubles: ScriptedLLM replays and records, HashingEmbedder is re-exported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memos_agents.errors import ModelError
from memos_agents.models import embedders
from memos_agents.models.llm import BaseLLM
from memos_agents.operation.reader import call_llm
from memos_agents.testing import HashingEmbedder, LLMCall, ScriptedLLM, ScriptExhaustedError

pytestmark = pytest.mark.unit

HI = [{"role": "user", "content": "hi"}]


def test_replies_in_order_and_records_every_call() -> None:
    llm = ScriptedLLM(["one", "two"])
    assert isinstance(llm, BaseLLM) and llm.supports_stop and llm.model_name == "scripted"
    assert llm.remaining == 2
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert llm.generate(messages, max_tokens=7, temperature=0.5) == "one"
    messages[1]["content"] = "changed later"  # the record is a copy
    assert llm.generate(HI, stop=["\n"]) == "two"
    assert llm.calls == [
        LLMCall([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], 7, 0.5, ()),
        LLMCall(HI, 256, 0.0, ("\n",)),
    ]
    assert llm.remaining == 0


def test_exhausted_script_raises_a_clear_error() -> None:
    llm = ScriptedLLM(["only"], model_name="m")
    llm.generate(HI)
    with pytest.raises(ScriptExhaustedError, match=r"'m' has no reply left for call 2 \(its script held 1\)"):
        llm.generate(HI)
    assert len(llm.calls) == 2  # the failed call is recorded too
    with pytest.raises(ModelError, match="ScriptExhaustedError"):  # call_llm wraps it, naming it
        call_llm(llm, HI, max_tokens=5)


def test_scripted_exceptions_are_raised_in_turn() -> None:
    llm = ScriptedLLM([ModelError("server down"), "ok"])
    with pytest.raises(ModelError, match="server down"):
        llm.generate(HI)
    assert llm.generate(HI) == "ok" and len(llm.calls) == 2


def test_callable_script_sees_the_call() -> None:
    def reply(call: LLMCall) -> str:
        return f"{call.messages[-1]['content']} x{call.max_tokens}"

    llm = ScriptedLLM(reply)
    assert llm.generate(HI, max_tokens=3) == "hi x3"
    assert llm.generate([{"role": "user", "content": "yo"}]) == "yo x256"
    assert llm.remaining is None and len(llm.calls) == 2


def test_stop_strings_cut_the_reply() -> None:
    llm = ScriptedLLM(["  Paris.\nQuestion: next?", "a. b", "keep  "], stop=["."])
    assert llm.generate(HI, stop=["\n"]) == "Paris."  # leading whitespace ignored, cut before the stop
    assert llm.generate(HI) == "a"  # the instance default
    assert llm.generate(HI, stop=[]) == "keep  "  # no stop: the reply exactly as scripted
    assert [c.stop for c in llm.calls] == [("\n",), (".",), ()]
    assert call_llm(ScriptedLLM(["Yes.\nNo."]), HI, max_tokens=4, stop=["\n"]) == "Yes."


def test_bad_scripts_are_refused() -> None:
    with pytest.raises(TypeError):
        ScriptedLLM("a string is not a list of replies")
    with pytest.raises(TypeError):
        ScriptedLLM([1])  # type: ignore[list-item]
    llm = ScriptedLLM(lambda call: 3)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="expected a str"):
        llm.generate(HI)


def test_hashing_embedder_is_the_library_one() -> None:
    assert HashingEmbedder is embedders.HashingEmbedder
    vectors = HashingEmbedder(32).embed(["pottery class", "pottery class", "x"])
    assert vectors.shape == (3, 32) and (vectors[0] == vectors[1]).all()


def test_testing_package_does_not_import_pytest() -> None:
    code = "import sys, memos_agents.testing as t; t.ScriptedLLM(['x']); print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
