"""Parametric memory (LoRA adapters with peft) on a tiny random Llama: training, artifacts, runtime, trainer."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_agents.errors import (  # noqa: E402
    ArchiveIOError,
    ChecksumMismatchError,
    ConfigError,
    CubeFormatError,
    FingerprintMismatchError,
    InvalidInputError,
    NewerFormatError,
    NotFoundError,
    StaleMemoryError,
)
from memos_agents.models.fingerprint import fingerprint  # noqa: E402
from memos_agents.parametric import (  # noqa: E402
    AdapterArtifact,
    AdapterRuntime,
    LoRAConfig,
    LoRATrainer,
    latest_checkpoint_step,
    train_adapter,
    training_examples,
)
from memos_agents.parametric.lora import IGNORE_INDEX, MANIFEST_FILE, WEIGHTS_FILE, lora_tensor_shapes  # noqa: E402
from memos_agents.schema import MemoryItem  # noqa: E402
from memos_agents.testing.tiny_lm import tiny_llama  # noqa: E402

pytestmark = pytest.mark.unit

PETS = ["Max", "Bella", "Rocky", "Luna", "Oscar", "Daisy", "Milo", "Coco"]


def memories(n: int = 8, cube: str = "c1") -> list[MemoryItem]:
    return [MemoryItem(id=f"m{i}", cube_id=cube, text=f"Person {i} has a dog named {PETS[i % 8]}.") for i in range(n)]


def pairs(n: int = 8) -> dict[str, list[tuple[str, str]]]:
    return {f"m{i}": [(f"What is the name of the dog of person {i}?", PETS[i % 8])] for i in range(n)}


FAST = {"num_threads": 1, "batch_size": 4}


def logits(model: Any, tok: Any, text: str = "Caroline moved to Lisbon with her dog") -> Any:
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def base() -> tuple[Any, Any]:
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def trained(base: tuple[Any, Any]) -> AdapterArtifact:
    model, tok = base
    config = LoRAConfig(epochs=40, learning_rate=1e-2, **FAST)
    return train_adapter(model, tok, memories(), config, qa=pairs())


@pytest.fixture(scope="module")
def other(base: tuple[Any, Any]) -> AdapterArtifact:
    model, tok = base
    items = [MemoryItem(id=f"o{i}", cube_id="c2", text=f"Town {i} lies by the river Vistula.") for i in range(4)]
    config = LoRAConfig(
        rank=4, alpha=8, epochs=4, learning_rate=5e-3, seed=3, target_modules=("q_proj", "v_proj"), **FAST
    )
    return train_adapter(model, tok, items, config)


# ----------------------------------------------------------------------------- training text


def test_examples_are_chat_exchanges_with_loss_on_the_answer_only(base: tuple[Any, Any]) -> None:
    _, tok = base
    items = memories(2)
    items[1] = items[1].model_copy(update={"key": "the dog"})
    examples = training_examples(items, tok, LoRAConfig(), qa={"m0": [("Whose dog is Max?", "Person 0's")]})
    assert [(e.item_id, e.kind) for e in examples] == [("m0", "memory"), ("m0", "qa"), ("m1", "memory")]
    assert examples[2].prompt == "What do you remember about the dog?"
    for ex in examples:
        assert len(ex.input_ids) == len(ex.labels)
        start = next(i for i, t in enumerate(ex.labels) if t != IGNORE_INDEX)
        assert all(t == IGNORE_INDEX for t in ex.labels[:start])
        assert list(ex.labels[start:]) == list(ex.input_ids[start:])
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": ex.prompt}], add_generation_prompt=True, tokenize=False
        )
        assert tok.decode(ex.input_ids[:start]) == prompt
        assert tok.decode(ex.input_ids[start:]) == ex.answer + tok.eos_token
    only_qa = training_examples(items[:1], tok, LoRAConfig(memory_text=False), qa={"m0": [("q?", "a")]})
    assert [e.kind for e in only_qa] == ["qa"]


def test_long_memory_is_cut_and_bad_input_is_refused(base: tuple[Any, Any]) -> None:
    _, tok = base
    long = MemoryItem(id="long", text="word " * 400)
    (ex,) = training_examples([long], tok, LoRAConfig(max_seq_len=64))
    assert ex.truncated and len(ex.input_ids) == 64
    with pytest.raises(InvalidInputError):
        training_examples([], tok)
    with pytest.raises(InvalidInputError):
        training_examples(memories(2) + memories(1), tok)
    with pytest.raises(InvalidInputError):
        training_examples(memories(1), tok, qa={"nope": [("q", "a")]})
    with pytest.raises(InvalidInputError):
        training_examples(memories(1), tok, qa={"m0": [("q", "")]})
    with pytest.raises(InvalidInputError):
        training_examples(memories(1), tok, LoRAConfig(memory_text=False))
    with pytest.raises(InvalidInputError):
        training_examples(memories(1), tok, LoRAConfig(max_seq_len=8))
    with pytest.raises(ValueError):
        LoRAConfig(target_modules=("q_proj; rm -rf",))
    with pytest.raises(ValueError):
        LoRAConfig(rank=0)


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_learns_the_answers(base: tuple[Any, Any], trained: AdapterArtifact) -> None:
    model, tok = base
    m = trained.metrics
    assert m.stopped_by == "completed" and m.steps == m.total_steps == 40 * 4
    assert m.loss_before is not None and m.loss_after is not None
    assert m.loss_after < 0.2 * m.loss_before
    assert m.final_loss is not None and m.final_loss < m.losses[0]
    assert [(s.item_id, s.version, s.examples) for s in trained.sources] == [(f"m{i}", 1, 2) for i in range(8)]
    runtime = AdapterRuntime(model, tok)
    try:
        runtime.load(trained, "pets")
        questions = [[{"role": "user", "content": q}] for q, _ in (p[0] for p in pairs().values())]
        answers = runtime.generate_batch(questions, max_new_tokens=6)
        assert sum(PETS[i] in a for i, a in enumerate(answers)) >= 6, answers
    finally:
        runtime.unload_all()


def test_training_leaves_the_model_as_it_was(base: tuple[Any, Any], trained: AdapterArtifact) -> None:
    model, tok = base
    before = logits(model, tok)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    train_adapter(model, tok, memories(2), LoRAConfig(max_steps=2, evaluate=False, **FAST))
    assert torch.equal(logits(model, tok), before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not any("lora" in n for n, _ in model.named_modules())
    assert not model.training
    assert trained.fingerprint == fingerprint(model, tok)


def test_a_wrapped_model_or_unknown_targets_are_refused(base: tuple[Any, Any], trained: AdapterArtifact) -> None:
    model, tok = base
    with pytest.raises(InvalidInputError, match="not found"):
        train_adapter(model, tok, memories(1), LoRAConfig(target_modules=("w_nope",), **FAST))
    with pytest.raises(InvalidInputError, match="not a Linear"):
        lora_tensor_shapes(model, LoRAConfig(target_modules=("embed_tokens",)))
    runtime = AdapterRuntime(model, tok)
    runtime.load(trained, "pets")
    try:
        with pytest.raises(InvalidInputError, match="peft"):
            train_adapter(model, tok, memories(1), LoRAConfig(**FAST))
        with pytest.raises(InvalidInputError):
            AdapterRuntime(model, tok)
    finally:
        runtime.unload_all()


def test_time_budget_stops_the_run(base: tuple[Any, Any]) -> None:
    model, tok = base
    art = train_adapter(model, tok, memories(), LoRAConfig(epochs=10_000, max_seconds=0.3, evaluate=False, **FAST))
    assert art.metrics.stopped_by == "max_seconds"
    assert 1 <= art.metrics.steps < art.metrics.total_steps
    assert art.metrics.seconds < 3.0


def test_cancel_stops_before_the_next_step(base: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = base
    stop = threading.Event()
    seen: list[int] = []

    def progress(p: Any) -> None:
        seen.append(p.step)
        if p.step == 3:
            stop.set()

    config = LoRAConfig(epochs=50, evaluate=False, **FAST)
    art = train_adapter(model, tok, memories(), config, progress=progress, cancel=stop.is_set, checkpoint_dir=tmp_path)
    assert art.metrics.stopped_by == "cancelled" and art.metrics.steps == 3 and seen == [1, 2, 3]
    assert latest_checkpoint_step(tmp_path) == 3


def test_resume_from_a_checkpoint_equals_one_uninterrupted_run(base: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = base
    # dropout on: the resumed run must also replay the dropout masks and the data order of epoch 2
    common = {**FAST, "dropout": 0.1, "learning_rate": 3e-3, "evaluate": False}
    straight = train_adapter(model, tok, memories(), LoRAConfig(max_steps=6, **common), qa=pairs())
    first = train_adapter(
        model, tok, memories(), LoRAConfig(max_steps=3, **common), qa=pairs(), checkpoint_dir=tmp_path / "ck"
    )
    assert first.metrics.steps == 3 and latest_checkpoint_step(tmp_path / "ck") == 3
    resumed = train_adapter(
        model,
        tok,
        memories(),
        LoRAConfig(max_steps=6, checkpoint_every=2, **common),
        qa=pairs(),
        checkpoint_dir=tmp_path / "ck",
    )
    assert resumed.metrics.resumed_from == 3 and resumed.metrics.steps == 6
    assert resumed.metrics.losses == pytest.approx(straight.metrics.losses, rel=1e-5)
    assert resumed.tensors.keys() == straight.tensors.keys()
    for key, value in straight.tensors.items():
        assert torch.allclose(resumed.tensors[key], value, atol=1e-6), key
    assert not torch.allclose(first.tensors[key], value, atol=1e-6)
    assert latest_checkpoint_step(tmp_path / "ck") == 6
    assert len(list((tmp_path / "ck").iterdir())) == 1  # older checkpoints are pruned
    with pytest.raises(ConfigError, match="hyperparameters"):
        train_adapter(
            model,
            tok,
            memories(),
            LoRAConfig(max_steps=8, **{**common, "learning_rate": 1e-3}),
            qa=pairs(),
            checkpoint_dir=tmp_path / "ck",
        )
    with pytest.raises(ConfigError, match="memories"):
        train_adapter(model, tok, memories(3), LoRAConfig(max_steps=8, **common), checkpoint_dir=tmp_path / "ck")


# ----------------------------------------------------------------------------- artifact


def test_save_load_round_trip_gives_identical_logits(
    base: tuple[Any, Any], trained: AdapterArtifact, tmp_path: Path
) -> None:
    model, tok = base
    path = trained.save(tmp_path / "pets")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.json", "adapter_config.json", WEIGHTS_FILE]
    loaded = AdapterArtifact.load(path)
    assert loaded.manifest == trained.manifest
    runtime = AdapterRuntime(model, tok)
    try:
        runtime.load(trained, "memory")
        from_memory = logits(model, tok)
        runtime.load(path, "disk")
        assert torch.equal(logits(model, tok), from_memory)
    finally:
        runtime.unload_all()
    with pytest.raises(ArchiveIOError):
        trained.save(path)
    trained.save(path, overwrite=True)
    payload = trained.to_payload(path)
    assert payload.type == "parametric" and payload.rank == 8 and payload.base_model == "tiny-llama-seed0"


def _rewrite(path: Path, tensors: dict[str, Any]) -> None:
    """Write ``tensors`` with a manifest that matches them (a crafted, internally consistent adapter)."""
    import hashlib

    from safetensors.torch import save

    data = save(tensors)
    (path / WEIGHTS_FILE).write_bytes(data)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest.update(
        weights_sha256=hashlib.sha256(data).hexdigest(),
        weights_bytes=len(data),
        tensors={k: list(v.shape) for k, v in tensors.items()},
    )
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_corrupt_or_crafted_artifacts_are_refused(trained: AdapterArtifact, tmp_path: Path) -> None:
    good = trained.save(tmp_path / "good")

    def copy(name: str) -> Path:
        return trained.save(tmp_path / name)

    flipped = copy("flipped")
    data = bytearray((flipped / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0xFF
    (flipped / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        AdapterArtifact.load(flipped)

    missing = copy("missing")
    (missing / WEIGHTS_FILE).unlink()
    with pytest.raises(ArchiveIOError):
        AdapterArtifact.load(missing)
    with pytest.raises(ArchiveIOError):
        AdapterArtifact.load(tmp_path / "nowhere")

    garbage = copy("garbage")
    (garbage / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CubeFormatError):
        AdapterArtifact.load(garbage)

    newer = copy("newer")
    manifest = json.loads((newer / MANIFEST_FILE).read_text())
    (newer / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(NewerFormatError):
        AdapterArtifact.load(newer)

    tensors = dict(trained.tensors)
    renamed = copy("renamed")
    key = next(iter(tensors))
    _rewrite(renamed, {**{k: v for k, v in tensors.items() if k != key}, key.replace("lora_A", "lora_C"): tensors[key]})
    with pytest.raises(CubeFormatError, match="unexpected tensor"):
        AdapterArtifact.load(renamed)

    reshaped = copy("reshaped")
    _rewrite(reshaped, {**tensors, key: torch.zeros(5, tensors[key].shape[1])})
    with pytest.raises(CubeFormatError, match="rank"):
        AdapterArtifact.load(reshaped)

    nan = copy("nan")
    _rewrite(nan, {**tensors, key: torch.full_like(tensors[key], float("nan"))})
    with pytest.raises(CubeFormatError, match="NaN"):
        AdapterArtifact.load(nan)

    unpaired = copy("unpaired")
    _rewrite(unpaired, {k: v for k, v in tensors.items() if k != key})
    with pytest.raises(CubeFormatError, match="both A and B"):
        AdapterArtifact.load(unpaired)

    not_safetensors = copy("not-safetensors")
    _rewrite(not_safetensors, tensors)
    raw = b"\xff" * 64
    (not_safetensors / WEIGHTS_FILE).write_bytes(raw)
    import hashlib

    manifest = json.loads((not_safetensors / MANIFEST_FILE).read_text())
    manifest.update(weights_sha256=hashlib.sha256(raw).hexdigest(), weights_bytes=len(raw))
    (not_safetensors / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CubeFormatError, match="safetensors"):
        AdapterArtifact.load(not_safetensors)
    assert AdapterArtifact.load(good).manifest == trained.manifest


def test_stale_sources_are_reported(trained: AdapterArtifact) -> None:
    current = memories()
    trained.check_fresh(current)
    current[2] = current[2].model_copy(update={"version": 2, "text": "Person 2 has a cat."})
    del current[5]
    assert [s.item_id for s in trained.stale_sources(current)] == ["m2", "m5"]
    with pytest.raises(StaleMemoryError, match="2 of the adapter"):
        trained.check_fresh(current)


# ----------------------------------------------------------------------------- runtime


def test_fingerprint_is_kept_by_the_peft_model_and_a_mismatch_is_refused(
    base: tuple[Any, Any], trained: AdapterArtifact
) -> None:
    model, tok = base
    runtime = AdapterRuntime(model, tok)
    try:
        runtime.load(trained, "pets")
        assert fingerprint(runtime._peft, tok) == trained.fingerprint  # the PeftModel wrapper
        assert fingerprint(model, tok) == trained.fingerprint
    finally:
        runtime.unload_all()
    stranger, stranger_tok = tiny_llama(seed=1)
    before = logits(stranger, stranger_tok)
    other_runtime = AdapterRuntime(stranger, stranger_tok)
    with pytest.raises(FingerprintMismatchError) as err:
        other_runtime.load(trained, "pets")
    assert err.value.fields == ("weights_sha256",)
    assert other_runtime.loaded() == [] and not any("lora" in n for n, _ in stranger.named_modules())
    assert torch.equal(logits(stranger, stranger_tok), before)


def test_switch_and_unload_restore_the_base_outputs(
    base: tuple[Any, Any], trained: AdapterArtifact, other: AdapterArtifact
) -> None:
    model, tok = base
    base_logits = logits(model, tok)
    runtime = AdapterRuntime(model, tok)
    runtime.load(trained, "pets")
    pets = logits(model, tok)
    assert not torch.allclose(pets, base_logits, atol=1e-3)
    runtime.load(other, "towns", activate=False)
    assert runtime.active == "pets" and torch.equal(logits(model, tok), pets)
    runtime.activate("towns")
    towns = logits(model, tok)
    assert not torch.allclose(towns, pets, atol=1e-3)
    runtime.activate(None)
    assert torch.equal(logits(model, tok), base_logits)
    runtime.activate("pets")
    assert torch.equal(logits(model, tok), pets)
    runtime.unload("pets")
    assert runtime.active is None and [a.name for a in runtime.loaded()] == ["towns"]
    assert torch.equal(logits(model, tok), base_logits)
    runtime.activate("towns")
    assert torch.equal(logits(model, tok), towns)
    with pytest.raises(NotFoundError):
        runtime.activate("pets")
    with pytest.raises(InvalidInputError):
        runtime.load(other, "towns")
    with pytest.raises(InvalidInputError):
        runtime.load(other, "bad name!")
    runtime.unload("towns")
    assert torch.equal(logits(model, tok), base_logits)
    assert not any("lora" in n for n, _ in model.named_modules())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(NotFoundError):
        runtime.unload("towns")


def test_combine_is_the_exact_weighted_sum(
    base: tuple[Any, Any], trained: AdapterArtifact, other: AdapterArtifact
) -> None:
    model, tok = base
    base_logits = logits(model, tok)
    runtime = AdapterRuntime(model, tok)
    try:
        runtime.load(trained, "pets")
        pets = logits(model, tok)
        runtime.load(trained, "pets2")
        runtime.load(other, "towns")
        # the same adapter minus itself cancels out; with weight 0 an adapter drops out
        runtime.combine(["pets", "pets2"], [1.0, -1.0], "nothing")
        assert torch.allclose(logits(model, tok), base_logits, atol=1e-5)
        runtime.combine(["pets", "towns"], [1.0, 0.0], "pets-only")
        assert torch.allclose(logits(model, tok), pets, atol=1e-5)
        entry = runtime.combine(["pets", "towns"], [0.7, 0.5], "mix")
        assert entry.rank == 12 and entry.combined_from == (("pets", 0.7), ("towns", 0.5))
        # per layer: the combined delta is 0.7 * delta(pets) + 0.5 * delta(towns)
        layer = model.model.layers[0].self_attn.q_proj
        names = runtime._internal
        want = 0.7 * layer.get_delta_weight(names["pets"]) + 0.5 * layer.get_delta_weight(names["towns"])
        assert torch.allclose(layer.get_delta_weight(names["mix"]), want, atol=1e-6)
        mixed = logits(model, tok)
        assert not torch.allclose(mixed, pets, atol=1e-3)
        with pytest.raises(NotFoundError):
            runtime.combine(["pets", "ghost"], [1.0, 1.0], "x")
        with pytest.raises(InvalidInputError):
            runtime.combine(["pets", "towns"], [1.0], "x")
        with pytest.raises(InvalidInputError):
            runtime.combine(["pets", "towns"], [1.0, float("nan")], "x")
        with pytest.raises(InvalidInputError):
            runtime.combine(["pets", "pets"], [1.0, 1.0], "x")
        with pytest.raises(InvalidInputError):
            runtime.combine(["pets", "towns"], [1.0, 1.0], "mix")
        with pytest.raises(InvalidInputError):
            runtime.combine([], [], "x")
        assert runtime.active == "mix" and torch.equal(logits(model, tok), mixed)
    finally:
        runtime.unload_all()
    assert torch.equal(logits(model, tok), base_logits)


def test_generation_and_nll_follow_the_active_adapter(base: tuple[Any, Any], trained: AdapterArtifact) -> None:
    model, tok = base
    runtime = AdapterRuntime(model, tok)
    question = [{"role": "user", "content": "What is the name of the dog of person 3?"}]
    try:
        plain = runtime.generate(question, max_new_tokens=4)
        base_nll = runtime.mean_nll(["Person 3 has a dog named Luna."])
        runtime.load(trained, "pets")
        assert "Luna" in runtime.generate(question, max_new_tokens=4)
        assert runtime.mean_nll(["Person 3 has a dog named Luna."]) < base_nll
        runtime.activate(None)
        assert runtime.generate(question, max_new_tokens=4) == plain
        with pytest.raises(InvalidInputError):
            runtime.generate([{"role": "user"}])
        with pytest.raises(InvalidInputError):
            runtime.mean_nll([""])
    finally:
        runtime.unload_all()


# ----------------------------------------------------------------------------- background trainer


def test_trainer_runs_jobs_in_the_background_and_resumes(base: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = base
    common = {**FAST, "evaluate": False, "learning_rate": 3e-3}
    straight = train_adapter(model, tok, memories(), LoRAConfig(max_steps=6, **common), qa=pairs())
    with LoRATrainer(model, tok) as trainer:
        assert trainer._model is not model
        first = trainer.submit(
            memories(), LoRAConfig(max_steps=3, **common), qa=pairs(), checkpoint_dir=tmp_path / "ck"
        )
        second = trainer.submit(
            memories(),
            LoRAConfig(max_steps=6, **common),
            qa=pairs(),
            checkpoint_dir=tmp_path / "ck",
            output_dir=tmp_path / "out",
        )
        done = trainer.wait(second, timeout=60)
        assert trainer.status(first).state == "done" and trainer.status(first).step == 3
        assert done.state == "done" and done.step == done.total_steps == 6 and done.stopped_by == "completed"
        assert done.loss is not None and done.elapsed_s > 0 and done.output_dir == str(tmp_path / "out")
        art = trainer.result(second)
        assert art is not None and art.metrics.resumed_from == 3
        for key, value in straight.tensors.items():
            assert torch.allclose(art.tensors[key], value, atol=1e-6)
        assert AdapterArtifact.load(tmp_path / "out").manifest == art.manifest
        failed = trainer.submit(memories(), LoRAConfig(target_modules=("nope",), **common))
        status = trainer.wait(failed, timeout=60)
        assert status.state == "failed" and status.reason is not None and "InvalidInputError" in status.reason
        with pytest.raises(NotFoundError):
            trainer.status("lora-999")
        with pytest.raises(InvalidInputError):
            trainer.submit([], LoRAConfig())


def test_trainer_cancel_keeps_the_checkpoint(base: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = base
    config = LoRAConfig(epochs=10_000, evaluate=False, checkpoint_every=1000, **FAST)
    with LoRATrainer(model, tok, copy_model=False) as trainer:
        running = trainer.submit(memories(), config, checkpoint_dir=tmp_path / "ck")
        queued = trainer.submit(memories(), config)
        assert trainer.status(queued).state == "queued"
        assert trainer.cancel(queued) and trainer.status(queued).state == "cancelled"
        while trainer.status(running).step < 2:
            trainer.wait(running, timeout=0.05)
        assert trainer.status(running).state == "training"
        assert trainer.cancel(running)
        status = trainer.wait(running, timeout=60)
        assert status.state == "cancelled" and status.stopped_by == "cancelled"
        assert 2 <= status.step < status.total_steps  # type: ignore[operator]
        assert latest_checkpoint_step(tmp_path / "ck") == status.step
        partial = trainer.result(running)
        assert partial is not None and partial.metrics.steps == status.step
        assert trainer.result(queued) is None and not trainer.cancel(running)
        resumed = trainer.submit(
            memories(), config.model_copy(update={"max_steps": status.step + 2}), checkpoint_dir=tmp_path / "ck"
        )
        again = trainer.wait(resumed, timeout=60)
        assert again.state == "done" and again.step == status.step + 2
    assert not any("lora" in n for n, _ in model.named_modules())


def test_the_loss_projects_only_labelled_positions_and_matches_the_full_logits(base: tuple[Any, Any]) -> None:
    import torch.nn.functional as F

    from memos_agents.parametric.lora import _batch, _loss_sum

    model, tok = base
    examples = training_examples(memories(3), tok, qa=pairs(3))
    ids, mask, labels = _batch(examples, tok.pad_token_id)
    with torch.no_grad():
        fast, count = _loss_sum(model, ids, mask, labels)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        full = F.cross_entropy(
            logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    assert count == int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(fast, full, rtol=1e-5)


def test_a_bfloat16_model_is_trained_as_a_float32_copy_and_the_adapter_fits_it() -> None:
    model, tok = tiny_llama(seed=0, dtype="bfloat16")
    before = logits(model, tok)
    art = train_adapter(model, tok, memories(4), LoRAConfig(max_steps=3, learning_rate=1e-2, **FAST), qa=pairs(4))
    assert art.metrics.loss_after is not None and art.metrics.loss_before is not None
    assert art.metrics.loss_after < art.metrics.loss_before
    assert art.fingerprint == fingerprint(model, tok) and art.fingerprint.dtype == "bfloat16"
    assert next(iter(model.parameters())).dtype == torch.bfloat16
    assert not any("lora" in n for n, _ in model.named_modules()) and torch.equal(logits(model, tok), before)
    assert all(t.dtype == torch.float32 for t in art.tensors.values())
    runtime = AdapterRuntime(model, tok)
    runtime.load(art, "bf16")
    assert not torch.equal(logits(model, tok), before)
    runtime.unload("bf16")
    assert torch.equal(logits(model, tok), before)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_peft_reads_the_saved_adapter_directory(
    base: tuple[Any, Any], trained: AdapterArtifact, tmp_path: Path
) -> None:
    from peft import PeftModel

    model, tok = base
    path = trained.save(tmp_path / "interop")
    runtime = AdapterRuntime(model, tok)
    runtime.load(path, "ours")
    ours = logits(model, tok)
    runtime.unload_all()
    twin, _ = tiny_llama(seed=0)
    peft_model = PeftModel.from_pretrained(twin, str(path))
    assert torch.allclose(logits(peft_model, tok), ours, atol=1e-6)
