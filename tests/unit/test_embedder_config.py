"""Embedder backend settings and the export cache, without any model.

The export machinery (:func:`ensure_export`) is driven with builders that write small files; the
exported-model path of :class:`SentenceTransformerEmbedder` runs on a word-level tokenizer and a
numpy stand-in for the ONNX graph.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from pydantic import ValidationError

from memos_agents import MemOS
from memos_agents.config import EmbedderConfig, MemOSConfig
from memos_agents.errors import ConfigError, ModelError
from memos_agents.models import embedders
from memos_agents.models.embedders import (
    BACKENDS,
    MANIFEST,
    PRECISIONS,
    ExportedModel,
    SentenceTransformerEmbedder,
    ensure_export,
    export_dir,
    read_manifest,
    source_fingerprint,
)
from memos_agents.os import build_embedder

pytestmark = pytest.mark.unit

FP = "f" * 64


def _writer(payload: bytes = b"onnx", info: dict[str, Any] | None = None, calls: list[Path] | None = None) -> Any:
    def build(out: Path) -> dict[str, Any]:
        if calls is not None:
            calls.append(out)
        (out / "model.onnx").write_bytes(payload)
        (out / "sub").mkdir()
        (out / "sub" / "extra.bin").write_bytes(b"xyz")
        return dict(info or {"dim": 4})

    return build


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".trash-")))


# -- configuration -------------------------------------------------------------------------------


def test_config_defaults_pick_auto_backend() -> None:
    e = EmbedderConfig()
    assert (e.backend, e.precision, e.cache_dir, e.num_threads) == ("auto", "auto", None, None)


def test_config_literals_match_the_embedder() -> None:
    assert get_args(EmbedderConfig.model_fields["backend"].annotation) == BACKENDS
    assert get_args(EmbedderConfig.model_fields["precision"].annotation) == PRECISIONS


@pytest.mark.parametrize("backend", ["auto", "torch", "openvino"])
def test_config_int8_needs_the_onnx_backend(backend: str) -> None:
    with pytest.raises(ValidationError, match="int8"):
        EmbedderConfig(backend=backend, precision="int8")  # type: ignore[arg-type]
    assert EmbedderConfig(backend="onnx", precision="int8").precision == "int8"


@pytest.mark.parametrize(
    "bad", [{"backend": "tensorflow"}, {"precision": "fp16"}, {"num_threads": 0}, {"cache_dir": 3.5}]
)
def test_config_rejects_bad_values(bad: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        MemOS.from_path(tmp_path, embedder=bad)


def test_build_embedder_passes_backend_settings(tmp_path: Path) -> None:
    config = MemOSConfig(home=tmp_path, embedder={"backend": "onnx", "precision": "int8", "num_threads": 1})
    e = build_embedder(config)
    assert isinstance(e, SentenceTransformerEmbedder)
    assert (e.backend, e.precision, e.num_threads) == ("onnx", "int8", 1)
    assert e.cache_dir is None  # the embedder's default_cache_dir(), shared by every home
    other = build_embedder(MemOSConfig(home=tmp_path, embedder={"cache_dir": tmp_path / "elsewhere"}))
    assert isinstance(other, SentenceTransformerEmbedder)
    assert (other.backend, other.cache_dir) == ("auto", tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "tensorflow"},
        {"precision": "fp16"},
        {"backend": "openvino", "precision": "int8"},
        {"backend": "torch", "precision": "int8"},
        {"num_threads": 0},
        {"backend": "onnx", "device": "cuda"},
    ],
)
def test_embedder_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(**kwargs)


def test_embedder_class_default_stays_torch() -> None:
    e = SentenceTransformerEmbedder()
    assert (e.backend, e.precision, e.cache_dir, e.runtime) == ("torch", "auto", None, None)


def test_default_cache_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert embedders.default_cache_dir() == tmp_path / ".cache" / "memos-agents"


# -- cache naming and fingerprints ---------------------------------------------------------------


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text("{}")
    first = source_fingerprint(tmp_path)
    assert first == source_fingerprint(tmp_path) and len(first) == 64
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert source_fingerprint(tmp_path) != first
    with pytest.raises(ModelError):
        source_fingerprint(tmp_path / "missing")


def test_export_dir_names(tmp_path: Path) -> None:
    bundled = export_dir(tmp_path, "/anywhere/model", "fp32", bundled=True)
    assert bundled == tmp_path / "onnx" / "all-MiniLM-L6-v2-fp32"
    a = export_dir(tmp_path, tmp_path / "a" / "my model", "int8")
    b = export_dir(tmp_path, tmp_path / "b" / "my model", "int8")
    assert a.parent == tmp_path / "onnx" and a.name.startswith("my_model-") and a.name.endswith("-int8")
    assert a != b  # same directory name, other model


# -- ensure_export -------------------------------------------------------------------------------


def test_export_is_built_once_and_published_whole(tmp_path: Path) -> None:
    target = tmp_path / "onnx" / "m-fp32"
    calls: list[Path] = []
    manifest = ensure_export(target, FP, _writer(calls=calls))
    assert manifest["files"] == {"model.onnx": 4, "sub/extra.bin": 3}
    assert (manifest["format"], manifest["source_fingerprint"], manifest["dim"]) == (1, FP, 4)
    assert calls[0].parent == target.parent and calls[0].name.startswith(".tmp-m-fp32-")
    assert ensure_export(target, FP, _writer(calls=calls)) == manifest
    assert len(calls) == 1 and _leftovers(target.parent) == []
    assert read_manifest(target, FP) == manifest and read_manifest(target, "0" * 64) is None


@pytest.mark.parametrize("damage", ["no_manifest", "truncated", "missing_file", "bad_json", "old_format", "escape"])
def test_half_written_or_damaged_copy_is_exported_again(tmp_path: Path, damage: str) -> None:
    target = tmp_path / "m-fp32"
    ensure_export(target, FP, _writer())
    manifest_path = target / MANIFEST
    data = json.loads(manifest_path.read_text())
    if damage == "no_manifest":
        manifest_path.unlink()
    elif damage == "truncated":
        (target / "model.onnx").write_bytes(b"on")
    elif damage == "missing_file":
        (target / "sub" / "extra.bin").unlink()
    elif damage == "bad_json":
        manifest_path.write_text("{not json")
    elif damage == "old_format":
        manifest_path.write_text(json.dumps({**data, "format": 0}))
    else:
        manifest_path.write_text(json.dumps({**data, "files": {"../outside": 1}}))
    assert read_manifest(target, FP) is None
    calls: list[Path] = []
    manifest = ensure_export(target, FP, _writer(b"rebuilt", calls=calls))
    assert len(calls) == 1 and manifest["files"]["model.onnx"] == 7
    assert (target / "model.onnx").read_bytes() == b"rebuilt" and _leftovers(tmp_path) == []


def test_other_source_is_exported_again(tmp_path: Path) -> None:
    target = tmp_path / "m-fp32"
    ensure_export(target, FP, _writer())
    manifest = ensure_export(target, "e" * 64, _writer(b"new source"))
    assert manifest["source_fingerprint"] == "e" * 64 and (target / "model.onnx").read_bytes() == b"new source"


def test_replace_exports_a_valid_copy_again(tmp_path: Path) -> None:
    target = tmp_path / "m-fp32"
    ensure_export(target, FP, _writer())
    ensure_export(target, FP, _writer(b"again"), replace=True)
    assert (target / "model.onnx").read_bytes() == b"again" and _leftovers(tmp_path) == []


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m-fp32"

    def fail(out: Path) -> dict[str, Any]:
        (out / "model.onnx").write_bytes(b"half")
        raise ModelError("export broke")

    with pytest.raises(ModelError, match="export broke"):
        ensure_export(target, FP, fail)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_concurrent_exports_build_once(tmp_path: Path) -> None:
    target = tmp_path / "m-fp32"
    calls: list[Path] = []
    inner = _writer(calls=calls)

    def slow(out: Path) -> dict[str, Any]:
        time.sleep(0.3)
        return inner(out)

    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_export(target, FP, slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4 and all(r == results[0] for r in results)
    assert _leftovers(tmp_path) == []


def test_without_a_lock_the_first_published_copy_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exporters that cannot lock (e.g. no flock) race; the rename keeps one whole copy."""

    class NoLock:
        def __init__(self, *args: Any) -> None:
            pass

        def __enter__(self) -> bool:
            return False

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(embedders, "_export_lock", NoLock)
    target = tmp_path / "m-fp32"

    def loser(out: Path) -> dict[str, Any]:
        ensure_export(target, FP, _writer(b"winner", {"who": "winner"}))  # publishes while this one builds
        return _writer(b"loser", {"who": "loser"})(out)

    manifest = ensure_export(target, FP, loser)
    assert manifest["who"] == "winner" and (target / "model.onnx").read_bytes() == b"winner"
    assert _leftovers(tmp_path) == []


def test_stale_temporary_exports_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "m-fp32"
    stale, fresh, trash = (tmp_path / n for n in (".tmp-m-fp32-old", ".tmp-m-fp32-new", ".trash-m-fp32-x"))
    for d in (stale, fresh, trash):
        d.mkdir()
    old = time.time() - 2 * embedders.STALE_TEMP_S
    os.utime(stale, (old, old))
    ensure_export(target, FP, _writer())
    assert not stale.exists() and not trash.exists() and fresh.exists()


# -- the exported-model path, on a word-level tokenizer and a numpy graph ------------------------

VOCAB = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("alpha beta gamma delta memory what hi".split())}}


def _tokenizer_file(path: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def _graph(feeds: dict[str, np.ndarray]) -> np.ndarray:
    """A stand-in for the ONNX graph: a 4-d vector from the unpadded ids, independent of the padding."""
    ids = np.pad(feeds["input_ids"], ((0, 0), (1, 0)), constant_values=1)  # a leading token, as [CLS] would be
    mask = np.pad(feeds["attention_mask"], ((0, 0), (1, 0)), constant_values=1)
    n = mask.sum(axis=1)
    first = ids[:, 1] if ids.shape[1] > 1 else np.zeros(len(ids))
    total = (ids * mask).sum(axis=1)
    return np.stack([n, first, total, np.ones_like(n)], axis=1).astype(np.float32)


def _exported(tmp_path: Path) -> ExportedModel:
    from tokenizers import Tokenizer

    tok = embedders._configure_tokenizer(Tokenizer.from_file(str(_tokenizer_file(tmp_path / "t.json"))), 6, 0, "[PAD]")
    return ExportedModel(_graph, ["input_ids", "attention_mask"], tok, 4, "numpy")


def test_exported_model_batches_by_length_and_keeps_the_order(tmp_path: Path) -> None:
    model = _exported(tmp_path)
    texts = ["alpha", "beta gamma delta", "hi", "", "memory memory memory memory memory memory memory", "what beta"]
    together = model.encode(texts, batch_size=2)
    alone = np.concatenate([model.encode([t], batch_size=1) for t in texts])
    assert together.shape == (6, 4) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-6)
    assert model.probe_cosine(texts, alone) == pytest.approx(1.0)


def test_exported_model_checks_the_graph_output(tmp_path: Path) -> None:
    model = _exported(tmp_path)
    model.run = lambda feeds: np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(ModelError, match="shape"):
        model.encode(["alpha", "beta"], batch_size=2)
    with pytest.raises(ModelError, match="unsupported inputs"):
        ExportedModel(_graph, ["input_ids", "pixel_values"], model.tokenizer, 4, "numpy")


class _FakeExports:
    """Stand-ins for the exporter and the runtimes; ``bad_opens`` runtimes return wrong vectors."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bad_opens: int = 0) -> None:
        self.exports = 0
        self.opens: list[bool] = []
        self.bad_opens = bad_opens
        monkeypatch.setattr(embedders, "export_onnx_fp32", self.export)
        monkeypatch.setattr(embedders, "_onnxruntime_runner", lambda f, n: self.runner(True))
        monkeypatch.setattr(embedders, "_openvino_runner", lambda f, n, fp32: self.runner(fp32))

    def export(self, source: Path, out: Path) -> dict[str, Any]:
        from tokenizers import Tokenizer

        self.exports += 1
        _tokenizer_file(out / embedders.TOKENIZER_FILE)
        (out / embedders.MODEL_FILE).write_bytes(b"graph")
        probes = ["alpha beta", "hi", "", "memory what"]
        tok = embedders._configure_tokenizer(Tokenizer.from_file(str(out / embedders.TOKENIZER_FILE)), 6, 0, "[PAD]")
        ref = ExportedModel(_graph, ["input_ids", "attention_mask"], tok, 4, "ref").encode(probes, 4)
        np.save(out / embedders.PROBES_FILE, ref)
        return {"dim": 4, "max_seq_length": 6, "pad_id": 0, "pad_token": "[PAD]", "probes": probes}

    def runner(self, fp32: bool) -> tuple[Any, list[str], str]:
        self.opens.append(fp32)
        if len(self.opens) <= self.bad_opens:
            return (lambda feeds: np.ones((len(feeds["input_ids"]), 4), dtype=np.float32)), ["input_ids"], "bad"
        return _graph, ["input_ids", "attention_mask"], "fake"


def _model_dir(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    return source


def test_embedder_exports_once_then_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeExports(monkeypatch)
    source = _model_dir(tmp_path)
    kwargs: dict[str, Any] = {"dim": 4, "backend": "onnx", "cache_dir": tmp_path / "cache"}
    first = SentenceTransformerEmbedder(str(source), **kwargs)
    vectors = first.embed(["alpha beta", "hi"])
    assert vectors.shape == (2, 4) and first.runtime == "fake, fp32 weights"
    second = SentenceTransformerEmbedder(str(source), **kwargs)
    np.testing.assert_allclose(second.embed(["alpha beta", "hi"]), vectors)
    assert fake.exports == 1
    assert read_manifest(export_dir(tmp_path / "cache", source, "fp32")) is not None
    assert sorted(p.name for p in source.iterdir()) == ["config.json"]  # the model directory is only read


def test_failing_probes_trigger_one_re_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeExports(monkeypatch, bad_opens=1)
    e = SentenceTransformerEmbedder(str(_model_dir(tmp_path)), dim=4, backend="onnx", cache_dir=tmp_path / "c")
    assert e.embed(["alpha"]).shape == (1, 4)
    assert fake.exports == 2


def test_persistent_probe_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeExports(monkeypatch, bad_opens=99)
    e = SentenceTransformerEmbedder(str(_model_dir(tmp_path)), dim=4, backend="onnx", cache_dir=tmp_path / "c")
    with pytest.raises(ModelError, match="probe cosine"):
        e.embed(["alpha"])
    assert fake.exports == 2


def test_openvino_auto_precision_falls_back_to_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeExports(monkeypatch, bad_opens=1)
    e = SentenceTransformerEmbedder(str(_model_dir(tmp_path)), dim=4, backend="openvino", cache_dir=tmp_path / "c")
    e.embed(["alpha"])
    assert fake.opens == [False, True] and fake.exports == 1  # default precision, then fp32; no re-export


def test_wrong_dimension_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeExports(monkeypatch)
    e = SentenceTransformerEmbedder(str(_model_dir(tmp_path)), dim=384, backend="onnx", cache_dir=tmp_path / "c")
    with pytest.raises(ModelError, match="4-d"):
        e.embed(["alpha"])


def test_auto_backend_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SentenceTransformerEmbedder, path: str, backend: str) -> Any:
        raise ModelError("no export for you")

    loaded: list[str] = []

    def torch_model(self: SentenceTransformerEmbedder, path: str) -> Any:
        loaded.append(path)
        self.runtime = "torch"
        return object()

    monkeypatch.setattr(embedders.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(SentenceTransformerEmbedder, "_load_exported", broken)
    monkeypatch.setattr(SentenceTransformerEmbedder, "_load_torch", torch_model)
    e = SentenceTransformerEmbedder(str(tmp_path), backend="auto", cache_dir=tmp_path / "c")
    e._load()
    assert loaded == [str(tmp_path)] and e.runtime == "torch"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hashing", {"provider": "hashing", "dim": 64}),
        ("sentence-transformers", {"provider": "sentence-transformers"}),
        ("sentence-transformers:torch", {"provider": "sentence-transformers", "backend": "torch"}),
        (
            "sentence-transformers:onnx:int8",
            {"provider": "sentence-transformers", "backend": "onnx", "precision": "int8"},
        ),
    ],
)
def test_bench_embedder_option(spec: str, expected: dict[str, Any]) -> None:
    from memos_agents.cli import _embedder_spec

    assert _embedder_spec(spec, hashing_dim=64) == expected


@pytest.mark.parametrize(
    "spec", ["openai", "hashing:torch", "sentence-transformers:tpu", "sentence-transformers:openvino:int8", "a:b:c:d"]
)
def test_bench_embedder_option_refuses_unknown_values(spec: str) -> None:
    from memos_agents.cli import _embedder_spec
    from memos_agents.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        _embedder_spec(spec, hashing_dim=64)
