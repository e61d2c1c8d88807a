"""KV caches of plaintext memories: build, compose, serialise, inject (activation memory, MemOS §4.2).

A :class:`KVCache` holds the keys and values a causal LM computed over a *memory prefix*: the
rendered start of a chat prompt (the system message with the memories, see
:func:`render_prefix`). A later prompt that starts with exactly those tokens skips their prefill:
the cache is handed to ``generate`` and only the rest of the prompt (history, question) is run.

Correctness rules, each tested (tests/unit/test_activation.py, tests/models/test_kv_smollm2.py):

* **Identity.** A cache records the :class:`~memos_agents.models.fingerprint.ModelFingerprint` of
  the model that built it (weights hash, dtype, tokenizer, chat template, shapes), the exact token
  ids it covers and its source memories with their versions. Injecting it into another model
  raises :class:`~memos_agents.errors.FingerprintMismatchError`; a prompt whose tokens do not start
  with the cached ones raises :class:`~memos_agents.errors.PrefixMismatchError` (``MemOS.chat``
  then runs the same prompt without the cache).
* **No mutation.** Every generation gets a fresh ``DynamicCache`` whose layers point at the
  stored tensors; transformers' dynamic layers grow by concatenation (a new tensor), so the
  stored tensors and the stored length never change (the reference implementation handed its
  stored cache to ``generate`` and it grew every turn).
* **Exact output.** Greedy generation with the injected cache equals generation with the same
  text in the prompt, token for token, when the cache is kept in the model's dtype (``codec``
  ``"native"``, or ``"bfloat16"`` for a bf16 model). ``"int8"`` (per-channel absmax over the
  tokens) cuts the size about 2x below bf16 and is lossy: outputs may differ.
* **Composition by prefill, not re-rotation.** :func:`extend_kv_cache` appends a memory group to
  a cache by running the model over the group's tokens on top of the cached ones. That is exactly
  the computation of one pass over the concatenated text (same tokens, same positions, same
  attention to what precedes them), so a composed cache equals the one-shot cache (to float
  rounding) and gives the same greedy output. Re-rotating the keys of a separately built group to
  their new RoPE positions would be exact only in the first layer: from the second layer on, a
  token's keys and values depend on the tokens it attended to, and a group built alone never saw
  the groups before it (a test shows the difference).

Serialisation is safetensors (never pickle): tensors ``k.<layer>`` and ``v.<layer>`` of shape
``[1, kv_heads, tokens, head_dim]`` (plus ``ks.<layer>`` / ``vs.<layer>`` scales for int8) and
the metadata as JSON under the ``memos-kv`` key. :meth:`KVCache.load` reads the metadata only;
tensors are read on first use.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos_agents.cube import DerivedSource
from memos_agents.errors import (
    ArchiveIOError,
    CubeFormatError,
    InvalidInputError,
    ModelError,
    PrefixMismatchError,
    require,
)
from memos_agents.models.fingerprint import ModelFingerprint
from memos_agents.schema import utcnow

#: Name and version of the serialised format (metadata key ``memos-kv``).
KV_FORMAT: Literal["memos-kv"] = "memos-kv"
KV_FORMAT_VERSION = 1
#: Most tokens one cache may cover (a bound on what a corrupt or hostile file can ask to allocate).
MAX_KV_TOKENS = 131_072

Codec = Literal["native", "bfloat16", "float16", "float32", "int8"]
CODECS: tuple[str, ...] = ("native", "bfloat16", "float16", "float32", "int8")


#: A memory a KV cache was built from, at a version (the cube header's DERIVED_FROM provenance).
KVSource = DerivedSource


class KVCacheMeta(BaseModel):
    """What a KV cache is: model, tokens, sources and storage codec.

    Attributes:
        fingerprint: The model that computed it.
        token_ids: The exact token ids it covers, in order.
        prefix_sha256: SHA-256 of the rendered prefix text the tokens came from.
        sources: The memories (with versions) the prefix renders.
        codec: How the tensors are stored (``native``: the model's dtype).
        created_at: When it was built (UTC).

    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["memos-kv"] = KV_FORMAT
    format_version: int = KV_FORMAT_VERSION
    fingerprint: ModelFingerprint
    token_ids: list[int] = Field(max_length=MAX_KV_TOKENS)
    prefix_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    sources: list[KVSource] = Field(default_factory=list, max_length=MAX_KV_TOKENS)
    codec: Codec = "native"
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def num_tokens(self) -> int:
        """How many tokens the cache covers."""
        return len(self.token_ids)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise require("torch", "hf") from exc
    return torch


class KVCache:
    """An immutable KV cache of a memory prefix: per layer, keys and values ``[1, kv_heads, tokens, head_dim]``.

    Build one with :func:`build_kv_cache` or :func:`extend_kv_cache`, or read one with :meth:`load`.
    Use :meth:`fresh_cache` to get a transformers cache for one generation; the stored tensors are
    never changed.
    """

    def __init__(
        self,
        meta: KVCacheMeta,
        layers: Sequence[tuple[Any, Any]] | None = None,
        *,
        loader: Callable[[], list[tuple[Any, Any]]] | None = None,
    ) -> None:
        if layers is None and loader is None:
            raise InvalidInputError("a KVCache needs its layers or a loader")
        self.meta = meta
        self._layers: list[tuple[Any, Any]] | None = list(layers) if layers is not None else None
        self._loader = loader
        self._lock = threading.Lock()

    @property
    def num_tokens(self) -> int:
        """How many tokens the cache covers."""
        return self.meta.num_tokens

    @property
    def loaded(self) -> bool:
        """Whether the tensors are in memory (a loaded file reads them on first use)."""
        return self._layers is not None

    def layers(self) -> list[tuple[Any, Any]]:
        """Return ``[(keys, values), ...]`` per layer in the model's dtype (reading the file on first use).

        Raises:
            CubeFormatError: The file's tensors do not match its metadata.
            ArchiveIOError: The file cannot be read.

        """
        with self._lock:
            if self._layers is None:
                assert self._loader is not None
                self._layers = self._loader()
                self._loader = None
            return self._layers

    def nbytes(self) -> int:
        """Bytes the tensors take in memory."""
        return sum(int(k.numel() * k.element_size() + v.numel() * v.element_size()) for k, v in self.layers())

    def fresh_cache(self, model: Any) -> Any:
        """Return a new transformers ``DynamicCache`` over the stored tensors, for one forward or generate.

        The cache's layers point at the stored tensors without copying them; transformers' dynamic
        layers append by concatenation into new tensors, so whatever the caller runs, the stored
        tensors and :attr:`num_tokens` stay as they are.
        """
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
        layers = self.layers()
        if len(cache.layers) not in (0, len(layers)):
            raise ModelError(f"the model has {len(cache.layers)} layers, the KV cache {len(layers)}")
        for i, (k, v) in enumerate(layers):
            layer = cache.layers[i] if cache.layers else None
            if layer is not None and type(layer) is DynamicLayer:
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k, v  # zero-copy; update() concatenates into new tensors
            else:  # sliding-window or other layer types: let them copy what they keep
                cache.update(k, v, i)
        return cache

    # -- serialisation -----------------------------------------------------------------------------
    def save(self, path: str | Path, codec: Codec | None = None) -> int:
        """Write the cache to a safetensors file (atomically: a temporary file renamed into place).

        Args:
            path: Target file.
            codec: ``native`` (the model's dtype: lossless), ``bfloat16`` / ``float16`` / ``float32``
                (cast), or ``int8`` (absmax per layer, head and channel: lossy). None: the cache's own.

        Returns:
            The file size in bytes.

        Raises:
            InvalidInputError: Unknown codec.
            ArchiveIOError: The file cannot be written.

        """
        torch = _torch()
        from safetensors.torch import save_file

        codec = codec or self.meta.codec
        if codec not in CODECS:
            raise InvalidInputError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
        tensors: dict[str, Any] = {}
        for i, (k, v) in enumerate(self.layers()):
            for name, t in (("k", k), ("v", v)):
                if codec == "int8":
                    scale = t.float().abs().amax(dim=-2, keepdim=True).clamp_min(1e-8) / 127.0
                    tensors[f"{name}.{i}"] = torch.round(t.float() / scale).clamp(-127, 127).to(torch.int8).contiguous()
                    tensors[f"{name}s.{i}"] = scale.contiguous()
                elif codec == "native":
                    tensors[f"{name}.{i}"] = t.contiguous()
                else:
                    tensors[f"{name}.{i}"] = t.to(getattr(torch, codec)).contiguous()
        meta = self.meta.model_copy(update={"codec": codec})
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{time.monotonic_ns()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp), metadata={KV_FORMAT: meta.model_dump_json()})
            tmp.replace(target)
            return target.stat().st_size
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArchiveIOError(f"cannot write KV cache {target}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path, *, lazy: bool = True) -> KVCache:
        """Read a cache written by :meth:`save`: the metadata now, the tensors on first use (``lazy``).

        Tensors come back in the dtype of the model that built the cache (int8 is dequantised).

        Raises:
            ArchiveIOError: The file cannot be read.
            CubeFormatError: Not a memos-kv file, a newer format, or tensors that do not match the metadata.

        """
        target = Path(path)
        meta = read_kv_meta(target)

        def loader() -> list[tuple[Any, Any]]:
            return _read_tensors(target, meta)

        cache = cls(meta, loader=loader)
        if not lazy:
            cache.layers()
        return cache


def read_kv_meta(path: Path) -> KVCacheMeta:
    """Read and validate the metadata of a KV cache file (no tensor is read).

    Raises:
        ArchiveIOError: The file cannot be read.
        CubeFormatError: The header is not a valid memos-kv header.

    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(KV_FORMAT)
    except FileNotFoundError as exc:
        raise ArchiveIOError(f"no KV cache file at {path}") from exc
    except OSError as exc:
        raise ArchiveIOError(f"cannot read KV cache {path}: {exc}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError on a malformed header
        raise CubeFormatError(f"{path} is not a safetensors file: {exc}") from exc
    if raw is None:
        raise CubeFormatError(f"{path} is not a memos-kv file (no {KV_FORMAT!r} metadata)")
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and int(doc.get("format_version", 0)) > KV_FORMAT_VERSION:
            raise CubeFormatError(f"{path} has KV format version {doc['format_version']}; this reader knows up to 1")
        return KVCacheMeta.model_validate(doc)
    except (ValueError, TypeError, ValidationError) as exc:
        raise CubeFormatError(f"{path} has an invalid memos-kv header: {exc}") from exc


def _read_tensors(path: Path, meta: KVCacheMeta) -> list[tuple[Any, Any]]:
    torch = _torch()
    from safetensors import safe_open

    fp = meta.fingerprint
    dtype = getattr(torch, fp.dtype, None)
    if dtype is None:
        raise CubeFormatError(f"{path}: unknown model dtype {fp.dtype!r}")
    shape = (1, fp.num_kv_heads, meta.num_tokens, fp.head_dim)
    scale_shape = (1, fp.num_kv_heads, 1, fp.head_dim)
    expected = {f"{n}.{i}" for i in range(fp.num_layers) for n in ("k", "v")}
    if meta.codec == "int8":
        expected |= {f"{n}s.{i}" for i in range(fp.num_layers) for n in ("k", "v")}
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            if names != expected:
                raise CubeFormatError(f"{path}: tensors {sorted(names ^ expected)[:4]} unexpected or missing")
            out = []
            for i in range(fp.num_layers):
                pair = []
                for n in ("k", "v"):
                    t = f.get_tensor(f"{n}.{i}")
                    if tuple(t.shape) != shape:
                        raise CubeFormatError(f"{path}: {n}.{i} has shape {tuple(t.shape)}, expected {shape}")
                    if meta.codec == "int8":
                        s = f.get_tensor(f"{n}s.{i}")
                        if tuple(s.shape) != scale_shape or t.dtype != torch.int8:
                            raise CubeFormatError(f"{path}: {n}s.{i} is not an int8 scale of shape {scale_shape}")
                        t = t.float() * s.float()
                    pair.append(t.to(dtype))
                out.append((pair[0], pair[1]))
            return out
    except CubeFormatError:
        raise
    except OSError as exc:
        raise ArchiveIOError(f"cannot read KV cache {path}: {exc}") from exc
    except Exception as exc:
        raise CubeFormatError(f"{path}: unreadable KV tensors: {exc}") from exc


# -- prompt layout -----------------------------------------------------------------------------------
def render_prefix(tokenizer: Any, system: str) -> str:
    """Return the start of every chat prompt whose system message is ``system``: the template's text up to its end.

    The text stops where the system message's content ends (before the template closes the
    message), so a cache of it can be extended by more memory lines (:func:`extend_kv_cache`) and
    any conversation ``[{"role": "system", "content": system + more}, ...]`` starts with it.
    :func:`generate` checks token by token that the prompt starts with the cached tokens.

    Raises:
        ModelError: The chat template does not render the system message verbatim.

    """
    rendered = str(tokenizer.apply_chat_template([{"role": "system", "content": system}], tokenize=False))
    at = rendered.find(system)
    if not system or at < 0:
        raise ModelError("the chat template does not render the system message verbatim; no KV prefix can be cut")
    return rendered[: at + len(system)]


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template with the generation prompt.

    The rendered text is tokenised as a whole without extra special tokens, the same way for a
    prompt with and without an injected cache.
    """
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cache_kwarg(model: Any) -> str:
    """Return the cache argument's name: ``cache`` in transformers 5, ``past_key_values`` in 4.x."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _layers_of(cache: Any) -> list[tuple[Any, Any]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]  # transformers 4.x


def _prefill(model: Any, ids: list[int], past: KVCache | None) -> list[tuple[Any, Any]]:
    torch = _torch()
    from transformers import DynamicCache

    start = past.num_tokens if past is not None else 0
    new = ids[start:]
    if not new:
        raise InvalidInputError("nothing to prefill: the text adds no tokens")
    if len(ids) > MAX_KV_TOKENS:
        raise InvalidInputError(f"a KV cache covers at most {MAX_KV_TOKENS} tokens, not {len(ids)}")
    device = next(iter(model.parameters())).device
    cache = past.fresh_cache(model) if past is not None else DynamicCache(config=model.config)
    try:
        with torch.inference_mode():
            input_ids = torch.tensor([new], device=device)
            out = model(
                input_ids=input_ids,
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                use_cache=True,
                logits_to_keep=1,
                **{_cache_kwarg(model): cache},
            )
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelError(f"prefill failed: {exc}") from exc
    result = getattr(out, "cache", None) or out.past_key_values
    return [(k.detach(), v.detach()) for k, v in _layers_of(result)]


def build_kv_cache(
    model: Any,
    tokenizer: Any,
    prefix_text: str,
    fingerprint: ModelFingerprint,
    sources: Sequence[KVSource] = (),
) -> KVCache:
    """Run ``model`` over ``prefix_text`` and keep its keys and values.

    Args:
        model: A transformers causal LM (eval mode).
        tokenizer: Its tokenizer.
        prefix_text: The rendered prompt prefix (see :func:`render_prefix`).
        fingerprint: ``fingerprint(model, tokenizer)`` (computed once by the caller).
        sources: The memories the prefix renders (provenance and staleness checks).

    Returns:
        A :class:`KVCache` of ``len(tokenizer(prefix_text))`` tokens in the model's dtype.

    Raises:
        InvalidInputError: Empty text, or more than :data:`MAX_KV_TOKENS` tokens.
        ModelError: The forward pass failed.

    """
    ids = _text_ids(tokenizer, prefix_text)
    layers = _prefill(model, ids, None)
    meta = KVCacheMeta(
        fingerprint=fingerprint,
        token_ids=ids,
        prefix_sha256=hashlib.sha256(prefix_text.encode()).hexdigest(),
        sources=list(sources),
    )
    return KVCache(meta, layers)


def extend_kv_cache(
    model: Any,
    tokenizer: Any,
    base: KVCache,
    base_text: str,
    more_text: str,
    fingerprint: ModelFingerprint,
    sources: Sequence[KVSource] = (),
) -> KVCache:
    """Compose: the cache of ``base_text + more_text``, reusing ``base`` (the cache of ``base_text``).

    Only ``more_text``'s tokens are run, at their positions after the cached ones (see the module
    docstring for why this is exact and re-rotation is not). ``base`` is not changed.

    Raises:
        FingerprintMismatchError: ``base`` was built by another model.
        InvalidInputError: ``base_text`` is not the text ``base`` covers, or the concatenation
            tokenises differently at the seam (a token spanning both texts): rebuild instead.
        ModelError: The forward pass failed.

    """
    base.meta.fingerprint.check(fingerprint, "kv", "the KV cache to extend")
    if hashlib.sha256(base_text.encode()).hexdigest() != base.meta.prefix_sha256:
        raise InvalidInputError("base_text is not the text the base cache covers")
    text = base_text + more_text
    ids = _text_ids(tokenizer, text)
    if ids[: base.num_tokens] != base.meta.token_ids:
        raise InvalidInputError("the concatenated text tokenises differently where the groups meet; rebuild it whole")
    layers = _prefill(model, ids, base)
    meta = KVCacheMeta(
        fingerprint=fingerprint,
        token_ids=ids,
        prefix_sha256=hashlib.sha256(text.encode()).hexdigest(),
        sources=[*base.meta.sources, *sources],
        codec=base.meta.codec,
    )
    return KVCache(meta, layers)


@dataclass(frozen=True, slots=True)
class Generation:
    """What :func:`generate` returns.

    Attributes:
        text: The reply (stop strings cut off, stripped).
        token_ids: The generated token ids.
        prompt_tokens: Tokens of the whole prompt.
        cached_tokens: Of those, how many came from the injected cache (0: none injected).
        ttft_s: Seconds from the call to the first generated token (prefill included).
        total_s: Seconds of the whole call.

    """

    text: str
    token_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    total_s: float


def generate(
    model: Any,
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    kv: KVCache | None = None,
    fingerprint: ModelFingerprint | None = None,
    max_new_tokens: int = 96,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
) -> Generation:
    """Generate a reply to ``messages``, with ``kv`` injected as the cache of the prompt's first tokens.

    Args:
        model: A transformers causal LM (eval mode).
        tokenizer: Its tokenizer (with a chat template).
        messages: OpenAI-style messages; with ``kv``, the first must be the system message the cache
            was built from (see :func:`render_prefix`).
        kv: The cache to inject (None: plain prefill of the whole prompt).
        fingerprint: The model's fingerprint (required with ``kv``).
        max_new_tokens: Upper bound on generated tokens (default 96).
        stop: Stop strings: generation ends once the reply contains one; the reply is cut before it.
        temperature: 0 for greedy decoding (default).

    Returns:
        A :class:`Generation`.

    Raises:
        FingerprintMismatchError: ``kv`` was built by another model (or tokenizer, template, dtype).
        PrefixMismatchError: The prompt does not start with the cached tokens.
        ModelError: Generation failed.
        InvalidInputError: ``kv`` without ``fingerprint``.

    """
    torch = _torch()
    import transformers

    from memos_agents.models.llm import _stop_criteria, first_stop

    ids = prompt_ids(tokenizer, messages)
    cached = 0
    kwargs: dict[str, Any] = {}
    if kv is not None:
        if fingerprint is None:
            raise InvalidInputError("injecting a KV cache needs the model's fingerprint")
        kv.meta.fingerprint.check(fingerprint, "kv", "the KV cache")
        cached = kv.num_tokens
        if len(ids) <= cached or ids[:cached] != kv.meta.token_ids:
            raise PrefixMismatchError("the prompt does not start with the cached tokens (another prefix or template)")
        kwargs[_cache_kwarg(model)] = kv.fresh_cache(model)
    device = next(iter(model.parameters())).device
    first: list[float] = []
    t0 = time.perf_counter()

    class _FirstToken(transformers.StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            if not first:
                first.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    criteria = transformers.StoppingCriteriaList([_FirstToken()])
    stops = tuple(s for s in stop if s)
    if stops:
        criteria.extend(_stop_criteria(tokenizer, len(ids), stops))
    sampling: dict[str, Any] = {"temperature": temperature} if temperature > 0 else {}
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                stopping_criteria=criteria,
                **sampling,
                **kwargs,
            )
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelError(f"generation failed: {exc}") from exc
    t1 = time.perf_counter()
    new_ids = [int(t) for t in out[0][len(ids) :]]
    text = str(tokenizer.decode(new_ids, skip_special_tokens=True)).lstrip()
    cut = first_stop(text, stops)
    return Generation(
        text=(text[:cut] if cut >= 0 else text).strip(),
        token_ids=new_ids,
        prompt_tokens=len(ids),
        cached_tokens=cached,
        ttft_s=(first[0] if first else t1) - t0,
        total_s=t1 - t0,
    )


def kv_bytes_per_token(fp: ModelFingerprint, codec: Codec = "native") -> float:
    """Bytes one token takes in a stored cache of a model with fingerprint ``fp`` (tensors only)."""
    width = {"native": {"float32": 4}.get(fp.dtype, 2), "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}[codec]
    return 2.0 * fp.num_layers * fp.num_kv_heads * fp.head_dim * width
