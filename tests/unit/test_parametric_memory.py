"""Parametric memory in a MemOS: adapter cubes with provenance, freshness, scheduling, invalidation, lifecycle."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_agents.cube import ParametricPayload  # noqa: E402
from memos_agents.errors import ConfigError  # noqa: E402
from memos_agents.models.llm import HFLocalLLM  # noqa: E402
from memos_agents.os import MemOS  # noqa: E402
from memos_agents.parametric.memory import lora_cube_id  # noqa: E402
from memos_agents.plaintext.stores import base  # noqa: E402
from memos_agents.schema import utcnow  # noqa: E402
from memos_agents.testing import ScriptedLLM  # noqa: E402
from memos_agents.testing.tiny_lm import tiny_llama  # noqa: E402

pytestmark = pytest.mark.unit

FACTS = ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."]
LORA = {"max_steps": 3, "batch_size": 2, "num_threads": 1, "evaluate": False}


def _mem(tmp_path, **extra):
    model, tok = tiny_llama(layers=2)
    llm = HFLocalLLM.from_loaded(model, tok, "tiny-llama", num_threads=0)
    config = {
        "embedder": {"provider": "hashing", "dim": 64},
        "llm": llm,
        "parametric": {"enabled": True, "lora": LORA},
        "track_access": False,
        **extra,
    }
    m = MemOS.from_path(tmp_path / "home", **config).setup()
    m.create_cube("alice.mem", "alice")
    return m, model, tok


def _add(m, texts):
    return m.add([{"role": "user", "content": t} for t in texts], "alice", "alice.mem", mode="facts").ids


def _train(m, ids):
    m.parametric.request("alice.mem", "alice", ids)
    status = m.parametric.wait("alice.mem", 120)
    assert status is not None and status.state == "done", status
    return m.get_cube(lora_cube_id("alice.mem"), "alice")


def _logits(model, tok):
    with torch.inference_mode():
        return model(**tok("Caroline moved to", return_tensors="pt")).logits[0, -1].clone()


def test_adapter_cube_records_fingerprint_provenance_hyperparameters_and_metrics(tmp_path):
    m, _, _ = _mem(tmp_path)
    try:
        ids = _add(m, FACTS)
        header = _train(m, ids)
        p = header.payload
        assert isinstance(p, ParametricPayload) and p.adapter_path and p.rank == 8
        assert sorted(s.item_id for s in p.derived_from) == sorted(ids)
        assert all(s.version == 1 for s in p.derived_from)
        assert p.fingerprint.model_id == "tiny-llama" and p.hyperparameters["max_steps"] == 3
        assert p.metrics["steps"] == 3 and p.size_bytes > 0
        folder = m.parametric.root / p.adapter_path
        assert (folder / "adapter_model.safetensors").exists()
        assert not (m.parametric.root / (p.adapter_path + ".checkpoint")).exists()
        assert lora_cube_id("alice.mem") not in [h.cube_id for h in m.default_cubes("alice")]
    finally:
        m.close()


def test_chat_activates_a_fresh_adapter_and_restores_the_base_model(tmp_path):
    m, model, tok = _mem(tmp_path)
    try:
        ids = _add(m, FACTS)
        base_logits = _logits(model, tok)
        _train(m, ids)
        res = m.chat("Where did Caroline move?", "alice", max_tokens=6)
        assert res.plan.adapter_cube_id == lora_cube_id("alice.mem")
        assert res.plan.kv_cube_id is None
        assert torch.equal(_logits(model, tok), base_logits)  # the adapter is off again
        m.update(ids[0], "alice", "alice.mem", text="Caroline moved to Porto in May 2023.")
        stale = m.chat("Where did Caroline move?", "alice", max_tokens=6)
        assert stale.plan.adapter_cube_id is None  # never used stale
    finally:
        m.close()


def test_deleting_a_source_deletes_the_adapter(tmp_path):
    m, _, _ = _mem(tmp_path)
    try:
        ids = _add(m, FACTS)
        header = _train(m, ids)
        folder = m.parametric.root / header.payload.adapter_path
        m.delete([ids[0]], "alice", "alice.mem")
        assert not folder.exists()
        assert m.get_cube(lora_cube_id("alice.mem"), "alice").payload.adapter_path is None
        header = _train(m, [ids[1]])
        folder = m.parametric.root / header.payload.adapter_path
        m.forget_user("alice", "alice")
        assert not folder.exists()
    finally:
        m.close()


def test_kv_cache_and_adapter_are_never_used_together(tmp_path):
    m, _, _ = _mem(tmp_path, activation={"enabled": True})
    try:
        ids = _add(m, FACTS)
        _train(m, ids)
        m.activation.request("alice.mem", "alice", ids)
        assert m.activation.wait("alice.mem", 60).state == "ready"
        res = m.chat("Where did Caroline move?", "alice", max_tokens=6)
        assert res.plan.kv_cube_id is not None and res.plan.adapter_cube_id is None
        assert any("not activated" in n for n in res.plan.notes)
    finally:
        m.close()


def test_lifecycle_trains_on_stable_memories_and_demotes_when_none_is(tmp_path):
    from datetime import timedelta

    m, _, _ = _mem(tmp_path)
    now = [utcnow() + timedelta(days=10)]
    try:
        ids = _add(m, FACTS)
        m.clock = lambda: now[0]
        m.store.batch([base.RecordAccessOp("alice.mem", {ids[0]: 3, ids[1]: 1}, utcnow())], ctx=base.SYSTEM)
        policy = {"parametric_min_uses": 2, "parametric_stable_days": 7}
        (report,) = m.run_lifecycle("alice", policy=policy)
        assert report.derived == [f"{lora_cube_id('alice.mem')}: training requested on 1 stable memories"]
        (busy,) = m.run_lifecycle("alice", policy=policy)
        assert busy.derived == [] or m.parametric.status("alice.mem").finished
        assert m.parametric.wait("alice.mem", 120).state == "done"
        header = m.get_cube(lora_cube_id("alice.mem"), "alice")
        assert [s.item_id for s in header.payload.derived_from] == [ids[0]]
        (again,) = m.run_lifecycle("alice", policy=policy)
        assert again.derived == []
        m.update(ids[0], "alice", "alice.mem", text="Caroline moved to Porto in May 2023.")
        now[0] = utcnow() + timedelta(days=1)  # changed a day ago: no longer stable
        (demoted,) = m.run_lifecycle("alice", policy=policy)
        assert "demoted" in demoted.derived[0]
        assert lora_cube_id("alice.mem") not in [h.cube_id for h in m.list_cubes("alice")]
    finally:
        m.close()


def test_parametric_memory_needs_a_local_model(tmp_path):
    with pytest.raises(ConfigError, match="local Hugging Face"):
        MemOS.from_path(tmp_path, embedder={"provider": "hashing"}, llm=ScriptedLLM([]), parametric={"enabled": True})
    with pytest.raises(ConfigError, match="lora"):
        model, tok = tiny_llama()
        MemOS.from_path(
            tmp_path,
            embedder={"provider": "hashing"},
            llm=HFLocalLLM.from_loaded(model, tok, "t"),
            parametric={"enabled": True, "lora": {"rank": 0}},
        )
