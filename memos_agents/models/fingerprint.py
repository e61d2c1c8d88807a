"""Model fingerprints: what a KV cache or a LoRA adapter must match before it is used.

A KV cache is only valid for the exact model that computed it: the same weights in the same
dtype, the same tokenizer (the cache is a function of token ids) and, since the cached text is a
rendered chat prompt, the same chat template. A LoRA adapter is valid for the base weights it was
trained on (its deltas are added to them) and the same tokenizer; the dtype and chat template
may differ. :class:`ModelFingerprint` records all of it; :meth:`ModelFingerprint.check` raises
:class:`~memos_agents.errors.FingerprintMismatchError` naming the fields that differ.

The weights hash is the SHA-256 of every parameter and buffer (name, shape and bytes, floating
tensors as float32, in name order), so it names the weights' values whatever dtype they are held
in: a bf16 model and its exact float32 copy hash alike (an adapter trained on one loads on the
other), while the separate ``dtype`` field still ties a KV cache to one dtype. About a second for
SmolLM2-135M on these CPUs, computed once per loaded model object and dtype. A
model id or a Hub revision alone is not enough: two copies of "the same" model quantised or
converted differently compute different caches.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memos_agents.errors import FingerprintMismatchError, ModelError

#: Fields a KV cache must match (everything that changes the keys and values of a token sequence).
KV_FIELDS = (
    "weights_sha256",
    "dtype",
    "attention",
    "tokenizer_sha256",
    "chat_template_sha256",
    "architecture",
    "num_layers",
    "num_kv_heads",
    "head_dim",
)
#: Fields a LoRA adapter must match (its base weights and vocabulary; dtype and template may differ).
LORA_FIELDS = ("weights_sha256", "tokenizer_sha256", "architecture", "num_layers", "hidden_size", "vocab_size")

_LOCK = threading.Lock()
_BY_MODEL: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()


class ModelFingerprint(BaseModel):
    """The identity of a loaded causal LM and its tokenizer.

    Attributes:
        model_id: The model's name or local path (informative; never compared).
        revision: The Hub commit of the loaded files when known (informative).
        weights_sha256: SHA-256 over the base model's parameters and buffers, as float32 (see the module docstring);
            LoRA layers a peft wrapper added are left out, so a model with adapters loaded keeps its
            base fingerprint.
        dtype: Torch dtype of the weights, e.g. ``"bfloat16"``.
        attention: The attention implementation (``config._attn_implementation``: ``"eager"``,
            ``"sdpa"``, ...). Kernels round differently: in bf16, SmolLM2's keys from the second
            layer on differ between eager and SDPA, so a cache is tied to the one that built it.
        tokenizer_sha256: SHA-256 of the tokenizer's full serialisation (vocabulary, merges, special tokens).
        chat_template_sha256: SHA-256 of the chat template (None: the tokenizer has none).
        architecture: ``config.model_type`` (e.g. ``"llama"``).
        num_layers / num_kv_heads / head_dim / hidden_size / vocab_size: Shapes from the config.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(max_length=4096)
    revision: str | None = None
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dtype: str
    attention: str = "sdpa"
    tokenizer_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chat_template_sha256: str | None = None
    architecture: str
    num_layers: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)

    def differences(self, other: ModelFingerprint, purpose: Literal["kv", "lora"] = "kv") -> tuple[str, ...]:
        """Return the fields of ``purpose`` (:data:`KV_FIELDS` or :data:`LORA_FIELDS`) that differ."""
        fields = KV_FIELDS if purpose == "kv" else LORA_FIELDS
        return tuple(f for f in fields if getattr(self, f) != getattr(other, f))

    def check(self, model: ModelFingerprint, purpose: Literal["kv", "lora"], what: str) -> None:
        """Raise unless ``model`` (the model at hand) matches this fingerprint (the artifact's) for ``purpose``.

        Raises:
            FingerprintMismatchError: Some field differs; the message and ``fields`` name them.

        """
        diff = self.differences(model, purpose)
        if diff:
            detail = ", ".join(f"{f}: {getattr(self, f)!r} != {getattr(model, f)!r}" for f in diff)
            raise FingerprintMismatchError(
                f"{what} was made for {self.model_id!r}, not for the model given ({model.model_id!r}): {detail}", diff
            )


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _base_tensors(model: Any) -> list[tuple[str, Any]]:
    """Return the base model's named parameters and buffers, without peft's LoRA layers, in name order."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    named = dict(base.named_parameters())
    named.update(dict(base.named_buffers()))
    out = []
    for name, tensor in named.items():
        if "lora_" in name:
            continue
        # peft wraps a target Linear as <name>.base_layer; the base weight keeps its own name
        out.append((name.replace(".base_layer.", "."), tensor))
    return sorted(out, key=lambda kv: kv[0])


def weights_sha256(model: Any) -> str:
    """Return the SHA-256 of ``model``'s base parameters and buffers (cached per model object and dtype).

    Raises:
        ModelError: A tensor could not be read.

    """
    dtype = str(next(iter(model.parameters())).dtype)
    with _LOCK:
        cached = _BY_MODEL.get(model)
    key = hash(dtype)
    if cached is not None and cached[0] == key:
        return cached[1]
    import torch

    h = hashlib.sha256()
    try:
        with torch.no_grad():
            for name, tensor in _base_tensors(model):
                t = tensor.detach().to("cpu")
                if t.is_floating_point():  # canonical float32: a bf16 model and its float32 copy hash alike
                    t = t.to(torch.float32)
                t = t.contiguous()
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"cannot hash the model's weights: {exc}") from exc
    digest = h.hexdigest()
    with _LOCK:
        _BY_MODEL[model] = (key, digest)
    return digest


def tokenizer_sha256(tokenizer: Any) -> str:
    """Return the SHA-256 of a tokenizer's serialisation (fast tokenizers) or of its vocabulary and specials."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return hashlib.sha256(backend.to_str().encode()).hexdigest()
    vocab = sorted(tokenizer.get_vocab().items())
    return _sha256_json({"vocab": vocab, "special": sorted(map(str, tokenizer.all_special_tokens))})


def fingerprint(model: Any, tokenizer: Any, model_id: str | None = None) -> ModelFingerprint:
    """Return the :class:`ModelFingerprint` of a loaded transformers causal LM and its tokenizer.

    Args:
        model: A ``PreTrainedModel`` (or a peft model around one).
        tokenizer: Its tokenizer.
        model_id: Name to record (default: ``config.name_or_path``).

    Raises:
        ModelError: The config lacks the shapes of a decoder-only transformer.

    """
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        heads = int(text_config.num_attention_heads)
        kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
        hidden = int(text_config.hidden_size)
        head_dim = int(getattr(text_config, "head_dim", None) or hidden // heads)
        layers = int(text_config.num_hidden_layers)
        vocab = int(text_config.vocab_size)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ModelError(f"the model's config lacks decoder shapes: {exc}") from exc
    template = getattr(tokenizer, "chat_template", None)
    return ModelFingerprint(
        model_id=model_id or str(getattr(config, "name_or_path", "") or "unknown"),
        revision=getattr(config, "_commit_hash", None),
        weights_sha256=weights_sha256(model),
        dtype=str(next(iter(model.parameters())).dtype).removeprefix("torch."),
        attention=str(getattr(config, "_attn_implementation", None) or "eager"),
        tokenizer_sha256=tokenizer_sha256(tokenizer),
        chat_template_sha256=None if not template else _sha256_json(template),
        architecture=str(config.model_type),
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=vocab,
    )
