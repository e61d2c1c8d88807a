"""Activation memory: KV caches built, composed, stored and injected exactly (tiny random Llama, no files)."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memos_agents.activation.kv import (  # noqa: E402
    KVCache,
    KVSource,
    build_kv_cache,
    extend_kv_cache,
    generate,
    kv_bytes_per_token,
    render_prefix,
)
from memos_agents.activation.memory import kv_cube_id  # noqa: E402
from memos_agents.activation.worker import BuildWorker, JobState  # noqa: E402
from memos_agents.cube import ActivationPayload  # noqa: E402
from memos_agents.errors import (  # noqa: E402
    ArchiveIOError,
    CubeFormatError,
    FingerprintMismatchError,
    InvalidInputError,
    PrefixMismatchError,
    StaleMemoryError,
)
from memos_agents.models.fingerprint import fingerprint  # noqa: E402
from memos_agents.models.llm import HFLocalLLM  # noqa: E402
from memos_agents.os import MemOS  # noqa: E402
from memos_agents.prompts import answer as answer_prompt  # noqa: E402
from memos_agents.testing import ScriptedLLM  # noqa: E402
from memos_agents.testing.tiny_lm import tiny_llama  # noqa: E402

pytestmark = pytest.mark.unit

MEMORIES = "Caroline moved to Lisbon in May 2023.\nMelanie paints landscapes on weekends.\n"
QUESTION = "Where did Caroline move?"


@pytest.fixture(scope="module")
def lm():
    model, tok = tiny_llama(layers=3)
    return model, tok, fingerprint(model, tok)


def _messages(system_lines: str = MEMORIES, question: str = QUESTION):
    return answer_prompt.build_scheduled_messages(question, system_lines, "", ())


def _cache(lm, lines: str = MEMORIES, sources=()):
    model, tok, fp = lm
    return build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(lines)), fp, sources)


# -- injection -----------------------------------------------------------------------------------------
def test_injected_cache_gives_the_same_greedy_output_as_the_text_and_is_never_mutated(lm):
    model, tok, fp = lm
    kv = _cache(lm)
    before = [(k.clone(), v.clone()) for k, v in kv.layers()]
    length = kv.num_tokens
    plain = generate(model, tok, _messages(), max_new_tokens=16)
    first = generate(model, tok, _messages(), kv=kv, fingerprint=fp, max_new_tokens=16)
    second = generate(model, tok, _messages(), kv=kv, fingerprint=fp, max_new_tokens=16)
    assert len(set(plain.token_ids)) > 3  # a real sequence, not one token repeated
    assert first.token_ids == plain.token_ids == second.token_ids
    assert first.cached_tokens == length and plain.cached_tokens == 0
    assert kv.num_tokens == length
    for (k0, v0), (k1, v1) in zip(before, kv.layers(), strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
        assert k1.shape[-2] == length


def test_another_question_after_the_same_cache(lm):
    model, tok, fp = lm
    kv = _cache(lm)
    for q in ("What does Melanie paint?", "When did Caroline move?"):
        plain = generate(model, tok, _messages(question=q), max_new_tokens=8)
        cached = generate(model, tok, _messages(question=q), kv=kv, fingerprint=fp, max_new_tokens=8)
        assert cached.token_ids == plain.token_ids


def test_bfloat16_model_cache_is_exact(tmp_path):
    model, tok = tiny_llama(layers=2, dtype="bfloat16")
    fp = fingerprint(model, tok)
    kv = build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(MEMORIES)), fp)
    kv.save(tmp_path / "kv.safetensors", "bfloat16")
    loaded = KVCache.load(tmp_path / "kv.safetensors")
    assert loaded.layers()[0][0].dtype == torch.bfloat16
    plain = generate(model, tok, _messages(), max_new_tokens=12)
    assert generate(model, tok, _messages(), kv=loaded, fingerprint=fp, max_new_tokens=12).token_ids == plain.token_ids


def test_cache_of_another_model_is_refused(lm):
    _, tok, _ = lm
    kv = _cache(lm)
    other, _ = tiny_llama(seed=1, layers=3)
    with pytest.raises(FingerprintMismatchError) as err:
        generate(other, tok, _messages(), kv=kv, fingerprint=fingerprint(other, tok))
    assert "weights_sha256" in err.value.fields
    bf16, _ = tiny_llama(layers=3, dtype="bfloat16")  # the same weights in another dtype
    with pytest.raises(FingerprintMismatchError) as err:
        generate(bf16, tok, _messages(), kv=kv, fingerprint=fingerprint(bf16, tok))
    assert "dtype" in err.value.fields


def test_other_chat_template_is_refused(lm):
    model, tok, _ = lm
    kv = _cache(lm)
    _, tok2 = tiny_llama(layers=3)
    tok2.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    with pytest.raises(FingerprintMismatchError) as err:
        generate(model, tok2, _messages(), kv=kv, fingerprint=fingerprint(model, tok2))
    assert err.value.fields == ("chat_template_sha256",)


def test_prompt_that_does_not_start_with_the_cache_is_refused(lm):
    model, tok, fp = lm
    kv = _cache(lm)
    with pytest.raises(PrefixMismatchError):
        generate(model, tok, _messages(system_lines="Other memories.\n"), kv=kv, fingerprint=fp)
    with pytest.raises(InvalidInputError):
        generate(model, tok, _messages(), kv=kv)  # no fingerprint


# -- composition -----------------------------------------------------------------------------------------
def test_composed_cache_equals_the_one_built_over_the_concatenated_text(lm):
    model, tok, fp = lm
    a_lines, b_lines = "Caroline moved to Lisbon in May 2023.\n", "Melanie paints landscapes on weekends.\n"
    a_text = render_prefix(tok, answer_prompt.stable_system(a_lines))
    a = build_kv_cache(model, tok, a_text, fp, [KVSource(cube_id="c", item_id="a", version=1)])
    composed = extend_kv_cache(model, tok, a, a_text, b_lines, fp, [KVSource(cube_id="c", item_id="b", version=1)])
    whole = _cache(lm)
    assert composed.meta.token_ids == whole.meta.token_ids
    assert [s.item_id for s in composed.meta.sources] == ["a", "b"]
    assert composed.meta.prefix_sha256 == whole.meta.prefix_sha256
    for (k0, v0), (k1, v1) in zip(composed.layers(), whole.layers(), strict=True):
        torch.testing.assert_close(k0, k1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v0, v1, rtol=1e-5, atol=1e-5)
    assert a.num_tokens < composed.num_tokens  # the base is unchanged
    plain = generate(model, tok, _messages(), max_new_tokens=16)
    assert (
        generate(model, tok, _messages(), kv=composed, fingerprint=fp, max_new_tokens=16).token_ids == plain.token_ids
    )


def _rotate(k, delta: int, theta: float):
    """Llama RoPE applied again for an offset of ``delta`` positions (rotate_half convention)."""
    dim = k.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    ang = delta * inv
    cos, sin = torch.cat([ang.cos(), ang.cos()]), torch.cat([ang.sin(), ang.sin()])
    half = torch.cat([-k[..., dim // 2 :], k[..., : dim // 2]], dim=-1)
    return k * cos + half * sin


def test_re_rotation_is_exact_only_in_the_first_layer_which_is_why_composition_prefills(lm):
    model, tok, fp = lm
    a_text = render_prefix(tok, answer_prompt.stable_system("Caroline moved to Lisbon in May 2023.\n"))
    b_lines = "Melanie paints landscapes on weekends.\n"
    whole = build_kv_cache(model, tok, a_text + b_lines, fp)
    n_a = len(tok(a_text, add_special_tokens=False)["input_ids"])
    alone = build_kv_cache(model, tok, b_lines, fp)  # the group built on its own, positions from 0
    assert alone.num_tokens == whole.num_tokens - n_a
    theta = float(getattr(model.config, "rope_theta", None) or model.config.rope_parameters["rope_theta"])
    errors = []
    for (k_alone, _), (k_whole, _) in zip(alone.layers(), whole.layers(), strict=True):
        moved = _rotate(k_alone, n_a, theta)
        errors.append(float((moved - k_whole[..., n_a:, :]).abs().max()))
    assert errors[0] < 1e-4  # layer 0: keys depend on the token and its position only
    assert min(errors[1:]) > 1e-2  # later layers: they depend on the text before, which the group never saw


def test_extend_refuses_a_base_text_it_does_not_cover(lm):
    model, tok, fp = lm
    kv = _cache(lm)
    with pytest.raises(InvalidInputError):
        extend_kv_cache(model, tok, kv, "not the text", "more\n", fp)


# -- serialisation --------------------------------------------------------------------------------------
def test_save_and_lazy_load_each_codec(lm, tmp_path):
    model, tok, fp = lm
    kv = _cache(lm, sources=[KVSource(cube_id="c", item_id="m1", version=2)])
    plain = generate(model, tok, _messages(), max_new_tokens=12)
    sizes = {}
    for codec in ("native", "bfloat16", "int8"):
        path = tmp_path / f"{codec}.safetensors"
        sizes[codec] = kv.save(path, codec)
        loaded = KVCache.load(path)
        assert not loaded.loaded  # metadata only
        assert loaded.meta.codec == codec and loaded.meta.sources == kv.meta.sources
        assert loaded.meta.token_ids == kv.meta.token_ids
        got = generate(model, tok, _messages(), kv=loaded, fingerprint=fp, max_new_tokens=12)
        assert loaded.loaded
        if codec == "native":
            assert got.token_ids == plain.token_ids
            for (k0, _), (k1, _) in zip(kv.layers(), loaded.layers(), strict=True):
                assert torch.equal(k0, k1)
    tensor_bytes = kv.num_tokens * kv_bytes_per_token(fp)
    assert sizes["native"] >= tensor_bytes and sizes["bfloat16"] < 0.6 * sizes["native"]
    assert sizes["int8"] < 0.7 * sizes["bfloat16"]
    assert b"pickle" not in (tmp_path / "native.safetensors").read_bytes()[:8]


def _rewrite_header(path: Path, change) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    change(header)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_corrupt_or_foreign_files_are_refused(lm, tmp_path):
    kv = _cache(lm)
    path = tmp_path / "kv.safetensors"
    kv.save(path)
    with pytest.raises(ArchiveIOError):
        KVCache.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CubeFormatError):
        KVCache.load(junk)

    def newer(h):
        meta = json.loads(h["__metadata__"]["memos-kv"])
        meta["format_version"] = 99
        h["__metadata__"]["memos-kv"] = json.dumps(meta)

    p2 = tmp_path / "newer.safetensors"
    p2.write_bytes(path.read_bytes())
    _rewrite_header(p2, newer)
    with pytest.raises(CubeFormatError, match="version"):
        KVCache.load(p2)

    def fewer_tokens(h):
        meta = json.loads(h["__metadata__"]["memos-kv"])
        meta["token_ids"] = meta["token_ids"][:-1]
        h["__metadata__"]["memos-kv"] = json.dumps(meta)

    p3 = tmp_path / "short.safetensors"
    p3.write_bytes(path.read_bytes())
    _rewrite_header(p3, fewer_tokens)
    loaded = KVCache.load(p3)  # the header alone is valid ...
    with pytest.raises(CubeFormatError, match="shape"):
        loaded.layers()  # ... the tensors do not match it


# -- worker ---------------------------------------------------------------------------------------------
def test_worker_states_queued_building_ready_failed():
    worker = BuildWorker("test-worker")
    gate = threading.Event()
    runs = []

    def slow():
        runs.append("a")
        gate.wait(5)

    s = worker.submit("a", slow)
    assert s.state in (JobState.QUEUED, JobState.BUILDING)
    deadline = time.monotonic() + 5
    while worker.status("a").state != JobState.BUILDING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.status("a").state == JobState.BUILDING
    worker.submit("a", slow)  # inputs changed while building: it runs once more
    worker.submit("b", lambda: (_ for _ in ()).throw(ValueError("no model")))
    assert worker.status("b").state == JobState.QUEUED
    gate.set()
    assert worker.join(10)
    assert worker.status("a").state == JobState.READY and worker.status("a").builds == 2 and runs == ["a", "a"]
    failed = worker.status("b")
    assert failed.state == JobState.FAILED and "ValueError: no model" in failed.reason
    worker.mark("a", JobState.STALE, "source moved")
    assert worker.status("a").reason == "source moved"
    worker.close()
    with pytest.raises(InvalidInputError):
        worker.submit("c", lambda: None)


# -- MemOS ----------------------------------------------------------------------------------------------
@pytest.fixture()
def mem(tmp_path, lm):
    model, tok, _ = lm
    llm = HFLocalLLM.from_loaded(model, tok, "tiny-llama", num_threads=0)
    m = MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm=llm,
        activation={"enabled": True},
        track_access=False,
    ).setup()
    m.create_cube("alice.mem", "alice")
    yield m
    m.close()


def _add(mem, texts, user="alice", cube="alice.mem"):
    ids = []
    for t in texts:
        res = mem.add([{"role": "user", "content": t}], user, cube, mode="facts")
        ids.extend(res.ids)
    return ids


def _build(mem, ids, user="alice", cube="alice.mem"):
    mem.activation.request(cube, user, ids)
    status = mem.activation.wait(cube, 60)
    assert status is not None and status.state == JobState.READY, status
    return mem.get_cube(kv_cube_id(cube), user)


def test_memos_builds_an_activation_cube_with_fingerprint_and_provenance(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."])
    header = _build(mem, ids)
    p = header.payload
    assert isinstance(p, ActivationPayload) and p.cache_path and p.num_tokens > 10
    assert [s.item_id for s in p.derived_from] == ids and all(s.version == 1 for s in p.derived_from)
    assert p.fingerprint.model_id == "tiny-llama" and p.fingerprint.dtype == "float32"
    assert (mem.activation.root / p.cache_path).stat().st_size == p.size_bytes
    assert header.owner_id == "alice" and header.source == "alice.mem"
    # not a memory cube: default search and lifecycle leave it out
    assert kv_cube_id("alice.mem") not in [h.cube_id for h in mem.default_cubes("alice")]
    mem.search("Lisbon", "alice")


def test_chat_injects_the_cache_and_answers_as_the_text_would(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."])
    _build(mem, ids)
    first = mem.chat("Where did Caroline move?", "alice", max_tokens=8)
    second = mem.chat("Where did Caroline move?", "alice", max_tokens=8)
    assert first.plan is not None and first.plan.kv_cube_id == kv_cube_id("alice.mem")
    assert first.plan.kv_memory_ids == ids and first.cached_tokens > 0 and first.plan.text == []
    assert first.answer == second.answer
    # the same messages without the cache give the same reply
    model, tok, _ = mem.activation.model()
    lines = "".join(mem.scheduler.render(mem.get(i, "alice", "alice.mem")) + "\n" for i in ids)
    messages = answer_prompt.build_scheduled_messages("Where did Caroline move?", lines, "", ())
    assert generate(model, tok, messages, max_new_tokens=8, stop=answer_prompt.STOP).text == first.answer


def test_a_changed_source_makes_the_cache_stale_and_it_is_rebuilt_never_used(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."])
    _build(mem, ids)
    mem.update(ids[0], "alice", "alice.mem", text="Caroline moved to Porto in May 2023.")
    got = mem._run(mem.activation.usable(["alice.mem"], "alice"), "alice")
    assert got == []  # never used stale
    status = mem.activation.wait("alice.mem", 60)
    assert status.state == JobState.READY and status.builds == 2
    header = mem.get_cube(kv_cube_id("alice.mem"), "alice")
    assert [s.version for s in header.payload.derived_from] == [2, 1]
    chat = mem.chat("Where did Caroline move?", "alice", max_tokens=4)
    assert chat.plan.kv_cube_id is not None


def test_load_raises_stale_after_a_change(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    _build(mem, ids)
    mem.transition(ids, "alice", "alice.mem", "archived")
    with pytest.raises(StaleMemoryError):
        mem.activation.load("alice.mem", "alice")


def test_deleting_or_forgetting_a_source_deletes_the_cache_file(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."])
    header = _build(mem, ids)
    path = mem.activation.root / header.payload.cache_path
    assert path.exists()
    mem.delete([ids[1]], "alice", "alice.mem")
    assert not path.exists()
    assert mem.get_cube(kv_cube_id("alice.mem"), "alice").payload.cache_path is None
    header = _build(mem, [ids[0]])
    path = mem.activation.root / header.payload.cache_path
    mem.forget_user("alice", "alice")
    assert not path.exists()


def test_deleting_the_cubes_removes_the_files(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    header = _build(mem, ids)
    path = mem.activation.root / header.payload.cache_path
    mem.delete_cube(kv_cube_id("alice.mem"), "alice")  # the derived cube alone: its folder goes
    assert not path.exists() and not (mem.activation.root / kv_cube_id("alice.mem")).exists()
    header = _build(mem, ids)
    path = mem.activation.root / header.payload.cache_path
    mem.delete_cube("alice.mem", "alice")  # the source: its derived cubes go with it
    assert not path.exists()
    assert kv_cube_id("alice.mem") not in [h.cube_id for h in mem.list_cubes("alice")]


def test_a_reader_without_access_to_the_sources_never_gets_the_cache(mem):
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    _build(mem, ids)
    mem.create_cube("bob.mem", "bob")
    assert mem._run(mem.activation.usable(["alice.mem"], "bob"), "bob") == []
    mem.grant("alice.mem", "alice", "bob", role="reader")
    mem.grant(kv_cube_id("alice.mem"), "alice", "bob", role="reader")
    got = mem._run(mem.activation.usable(["alice.mem"], "bob"), "bob")
    assert [g.cube_id for g in got] == [kv_cube_id("alice.mem")]
    mem.revoke("alice.mem", "alice", "bob")
    assert mem._run(mem.activation.usable(["alice.mem"], "bob"), "bob") == []


def test_adding_memories_extends_the_cache_instead_of_rebuilding_it(mem, lm):
    model, tok, fp = lm
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    _build(mem, ids)
    more = _add(mem, ["Melanie paints landscapes on weekends."])
    calls = []
    import memos_agents.activation.memory as memory_mod

    real = memory_mod.extend_kv_cache

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    memory_mod.extend_kv_cache = spy
    try:
        header = _build(mem, ids + more)
    finally:
        memory_mod.extend_kv_cache = real
    assert calls == [1]
    stored = KVCache.load(mem.activation.root / header.payload.cache_path)
    lines = "".join(mem.scheduler.render(mem.get(i, "alice", "alice.mem")) + "\n" for i in ids + more)
    whole = build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(lines)), fp)
    assert stored.meta.token_ids == whole.meta.token_ids
    for (k0, _), (k1, _) in zip(stored.layers(), whole.layers(), strict=True):
        torch.testing.assert_close(k0, k1, rtol=1e-5, atol=1e-5)


def test_request_validates_input(mem):
    with pytest.raises(InvalidInputError):
        mem.activation.request("alice.mem", "alice", [])
    with pytest.raises(InvalidInputError):
        mem.activation.request("alice.mem", "alice", ["bad id!"])
    mem.activation.request("alice.mem", "alice", ["nosuchitem"])
    status = mem.activation.wait("alice.mem", 30)
    assert status.state == JobState.FAILED and "activated memory" in status.reason


def test_openai_endpoint_gets_the_stable_memories_first_in_a_fixed_order(tmp_path):
    llm = ScriptedLLM(lambda call: "Lisbon.")
    m = MemOS.from_path(
        tmp_path / "home", embedder={"provider": "hashing", "dim": 64}, llm=llm, activation={"enabled": True}
    ).setup()
    try:
        m.create_cube("alice.mem", "alice")
        ids = _add(m, ["Caroline moved to Lisbon in May 2023.", "Melanie paints landscapes on weekends."])
        _build(m, ids)
        header = m.get_cube(kv_cube_id("alice.mem"), "alice")
        assert header.payload.cache_path is None and header.payload.num_tokens > 0  # no file: no local model
        a = m.chat("Where did Caroline move?", "alice")
        b = m.chat("What does Melanie paint?", "alice")
        assert b.plan.stable_prefix
        assert a.plan.stable_prefix and a.plan.kv_cube_id is None and "prefix cache" in a.plan.notes[-1]
        systems = [c.messages[0]["content"] for c in llm.calls]
        assert systems[0] == systems[1] and "Caroline moved to Lisbon" in systems[0]
    finally:
        m.close()


def test_lifecycle_promotes_hot_memories_to_kv_and_demotes_them_when_cold(tmp_path, lm):
    from datetime import timedelta

    from memos_agents.plaintext.stores import base
    from memos_agents.schema import utcnow

    model, tok, _ = lm
    now = [utcnow()]
    m = MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm=HFLocalLLM.from_loaded(model, tok, "tiny-llama", num_threads=0),
        activation={"enabled": True},
        track_access=False,
    )
    m.clock = lambda: now[0]
    m.setup()
    try:
        m.create_cube("alice.mem", "alice")
        hot, warm, cold = _add(m, ["Caroline moved to Lisbon.", "Melanie paints.", "The sky is blue."])
        m.store.batch([base.RecordAccessOp("alice.mem", {hot: 5, warm: 2, cold: 1}, now[0])], ctx=base.SYSTEM)
        policy = {"activation_min_uses": 2, "activation_idle_days": 7}
        (report,) = m.run_lifecycle("alice", policy=policy)
        assert report.derived == [f"{kv_cube_id('alice.mem')}: build requested over 2 hot memories"]
        assert m.activation.wait("alice.mem", 60).state == JobState.READY
        header = m.get_cube(kv_cube_id("alice.mem"), "alice")
        assert [s.item_id for s in header.payload.derived_from] == [hot, warm]  # most used first
        (again,) = m.run_lifecycle("alice", policy=policy)
        assert again.derived == []  # nothing changed: no rebuild
        m.update(warm, "alice", "alice.mem", text="Melanie paints portraits.")
        (changed,) = m.run_lifecycle("alice", policy=policy)
        assert changed.derived and "build requested" in changed.derived[0]
        assert m.activation.wait("alice.mem", 60).state == JobState.READY
        path = m.activation.root / m.get_cube(kv_cube_id("alice.mem"), "alice").payload.cache_path
        now[0] += timedelta(days=8)  # nobody used them since: cold
        (demoted,) = m.run_lifecycle("alice", policy=policy)
        assert "demoted" in demoted.derived[0]
        assert not path.exists()
        assert kv_cube_id("alice.mem") not in [h.cube_id for h in m.list_cubes("alice")]
    finally:
        m.close()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_eager_attention_gives_bit_identical_logits_with_and_without_the_cache(dtype):
    model, tok = tiny_llama(layers=3, dtype=dtype)
    model.set_attn_implementation("eager")
    fp = fingerprint(model, tok)
    assert fp.attention == "eager"
    lines = "Caroline moved to Lisbon in May 2023.\n" * 20
    kv = build_kv_cache(model, tok, render_prefix(tok, answer_prompt.stable_system(lines)), fp)
    from memos_agents.activation.kv import prompt_ids

    ids = prompt_ids(tok, answer_prompt.build_scheduled_messages("Where?", lines, "", ()))
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([ids])).logits[0, -1]
        part = model(input_ids=torch.tensor([ids[kv.num_tokens :]]), cache=kv.fresh_cache(model)).logits[0, -1]
    assert torch.equal(full, part)


def test_a_cache_built_with_other_attention_is_refused(lm):
    _, tok, _ = lm
    kv = _cache(lm)
    eager, _ = tiny_llama(layers=3)
    eager.set_attn_implementation("eager")
    with pytest.raises(FingerprintMismatchError) as err:
        generate(eager, tok, _messages(), kv=kv, fingerprint=fingerprint(eager, tok))
    assert err.value.fields == ("attention",)


def test_bfloat16_with_sdpa_is_refused_by_the_config(tmp_path):
    from memos_agents.errors import ConfigError

    with pytest.raises(ConfigError, match="eager"):
        MemOS.from_path(tmp_path, embedder={"provider": "hashing"}, activation={"enabled": True, "dtype": "bfloat16"})


def test_weights_hash_names_values_not_the_dtype_they_are_held_in():
    model, tok = tiny_llama(layers=2, dtype="bfloat16")
    bf16 = fingerprint(model, tok)
    model.to(torch.float32)  # an exact copy of the bf16 values
    f32 = fingerprint(model, tok)
    assert bf16.weights_sha256 == f32.weights_sha256 and bf16.dtype != f32.dtype
    assert bf16.differences(f32, "lora") == ()  # an adapter of one loads on the other
    assert bf16.differences(f32, "kv") == ("dtype",)  # a KV cache does not


def test_nobody_but_the_owner_makes_or_plants_a_cube_under_the_kv_name(mem, tmp_path):
    from memos_agents.errors import InvalidInputError
    from memos_agents.plaintext.stores import base

    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    mem.grant("alice.mem", "alice", "bob", role="reader")
    mem.activation.request("alice.mem", "bob", ids)  # a reader may not build it
    status = mem.activation.wait("alice.mem", 30)
    assert status.state == JobState.FAILED and "PermissionDeniedError" in status.reason
    with pytest.raises(InvalidInputError, match="reserved"):
        mem.create_cube(kv_cube_id("alice.mem"), "bob")
    header = _build(mem, ids)
    mem.export_cube("alice.mem", "alice", tmp_path / "a.memcube")
    with pytest.raises(InvalidInputError, match="reserved"):
        mem.import_cube(tmp_path / "a.memcube", "bob", cube_id="lora.alice.mem")
    # a header planted straight in the store under another name, pointing at alice's file
    planted = header.model_copy(update={"cube_id": kv_cube_id("bob.mem"), "owner_id": "bob", "acl": []})
    mem.create_cube("bob.mem", "bob")
    mem.store.batch([base.CreateCubeOp(planted)], ctx=base.CallContext.of("bob"))
    assert mem._run(mem.activation.usable(["bob.mem"], "bob"), "bob") == []  # sources are not bob.mem's


def test_archives_of_derived_cubes_are_refused(mem, tmp_path):
    import zipfile

    from memos_agents.errors import CubeFormatError

    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    _build(mem, ids)
    mem.export_cube(kv_cube_id("alice.mem"), "alice", tmp_path / "kv.memcube")
    assert zipfile.is_zipfile(tmp_path / "kv.memcube")
    with pytest.raises(CubeFormatError, match="plaintext"):
        mem.import_cube(tmp_path / "kv.memcube", "alice", cube_id="copy")


def test_a_trimmed_cache_is_not_rebuilt_by_every_lifecycle_pass(tmp_path, lm):
    from memos_agents.plaintext.stores import base
    from memos_agents.schema import utcnow

    model, tok, _ = lm
    m = MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm=HFLocalLLM.from_loaded(model, tok, "tiny-llama", num_threads=0),
        activation={"enabled": True, "max_tokens": 260},
        track_access=False,
    ).setup()
    try:
        m.create_cube("alice.mem", "alice")
        ids = _add(m, [f"Fact number {n} about Caroline and Lisbon in May 2023." for n in range(6)])
        m.store.batch([base.RecordAccessOp("alice.mem", dict.fromkeys(ids, 3), utcnow())], ctx=base.SYSTEM)
        policy = {"activation_min_uses": 2}
        (first,) = m.run_lifecycle("alice", policy=policy)
        assert first.derived and m.activation.wait("alice.mem", 60).state == JobState.READY
        header = m.get_cube(kv_cube_id("alice.mem"), "alice")
        assert 0 < len(header.payload.derived_from) < len(ids) and header.payload.num_tokens <= 260  # trimmed
        (second,) = m.run_lifecycle("alice", policy=policy)
        assert second.derived == []
    finally:
        m.close()


def test_rolling_a_cube_back_past_a_source_drops_the_cache(mem):
    from memos_agents.schema import utcnow

    before = utcnow()
    ids = _add(mem, ["Caroline moved to Lisbon in May 2023."])
    header = _build(mem, ids)
    path = mem.activation.root / header.payload.cache_path
    mem.rollback_cube("alice.mem", "alice", to=before)
    assert not path.exists()


def test_a_bf16_model_with_sdpa_is_refused_whatever_the_config_says(tmp_path):
    model, tok = tiny_llama(layers=2, dtype="bfloat16")
    m = MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm=HFLocalLLM.from_loaded(model, tok, "tiny-bf16", num_threads=0),
        activation={"enabled": True, "dtype": "model"},
        track_access=False,
    ).setup()
    try:
        m.create_cube("alice.mem", "alice")
        ids = _add(m, FACTS_FOR_BF16)
        m.activation.request("alice.mem", "alice", ids)
        status = m.activation.wait("alice.mem", 30)
        assert status.state == JobState.FAILED and "eager" in status.reason
    finally:
        m.close()


FACTS_FOR_BF16 = ["Caroline moved to Lisbon in May 2023."]
