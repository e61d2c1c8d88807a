"""Parametric memory on the real SmolLM2-135M-Instruct: a LoRA adapter learns facts the base model lacks.

The model loads in bfloat16 as MemOS loads it; training runs on a float32 copy (``train_dtype``)
and the adapter is served on the bfloat16 model it was fingerprinted against. About a minute on
two CPU cores (plus about 20 s for the first load's GGUF dequantisation when no bf16 copy is cached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_agents.bench.lora import UNRELATED_TEXT, make_facts  # noqa: E402
from memos_agents.config import MemOSConfig  # noqa: E402
from memos_agents.errors import MissingDependencyError  # noqa: E402
from memos_agents.models.fingerprint import fingerprint  # noqa: E402
from memos_agents.models.llm import HFLocalLLM  # noqa: E402
from memos_agents.parametric import AdapterArtifact, AdapterRuntime, LoRAConfig, train_adapter  # noqa: E402

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    try:
        return HFLocalLLM(cache_dir=MemOSConfig().model_cache / "smollm2-135m-instruct").load()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def test_an_adapter_recalls_trained_facts_on_smollm2(smollm2: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = smollm2
    threads = max(1, torch.get_num_threads() - 1)
    facts = make_facts(6, seed=11)
    items = [f.item for f in facts]
    qa = {f.item.id: [(f.question, f.value)] for f in facts}
    ids = torch.tensor([tok(UNRELATED_TEXT[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
    base_fp = fingerprint(model, tok)

    config = LoRAConfig(
        rank=16,
        alpha=32,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        learning_rate=1.5e-3,
        epochs=8,
        batch_size=6,
        max_seconds=90,
        num_threads=threads,
    )
    art = train_adapter(model, tok, items, config, qa=qa)
    m = art.metrics
    print(f"trained {m.steps} steps in {m.seconds:.1f} s, loss {m.loss_before:.3f} -> {m.loss_after:.3f}")
    assert m.loss_before is not None and m.loss_after is not None
    assert m.loss_after < 0.25 * m.loss_before, (m.loss_before, m.loss_after)
    assert art.fingerprint == base_fp and art.fingerprint.dtype == "bfloat16"
    assert next(iter(model.parameters())).dtype == torch.bfloat16  # trained on a float32 copy

    path = art.save(tmp_path / "facts")
    runtime = AdapterRuntime(model, tok)
    questions = [[{"role": "user", "content": f.question}] for f in facts]
    with torch.no_grad():
        torch.set_num_threads(threads)
        base_answers = runtime.generate_batch(questions, max_new_tokens=8)
        base_nll = runtime.mean_nll(UNRELATED_TEXT[:2])
        runtime.load(path, "facts")
        assert fingerprint(runtime._peft, tok) == base_fp
        answers = runtime.generate_batch(questions, max_new_tokens=8)
        lora_nll = runtime.mean_nll(UNRELATED_TEXT[:2])
        runtime.unload("facts")
        restored = model(input_ids=ids).logits
    hits = sum(f.value.lower() in a.lower() for f, a in zip(facts, answers, strict=True))
    base_hits = sum(f.value.lower() in a.lower() for f, a in zip(facts, base_answers, strict=True))
    print(f"hits {hits}/6 (base {base_hits}), unrelated-text loss {base_nll:.3f} -> {lora_nll:.3f}")
    assert base_hits <= 1, base_answers
    assert hits >= 5, answers
    assert lora_nll - base_nll < 1.0, (base_nll, lora_nll)
    assert torch.equal(restored, base_logits)
    assert AdapterArtifact.load(path).manifest == art.manifest
