"""Serving LoRA adapters: load, switch, combine and unload them on one base model (``hf`` extra).

:class:`AdapterRuntime` owns a base model while adapters are loaded: peft injects LoRA layers
into the model object in place (``model.generate`` and ``model(...)`` use the active adapter),
and unloading the last adapter removes them again, leaving the very modules and outputs the model
had before. An adapter is refused, before the model is touched, unless its base-model
fingerprint matches the model's on the fields a LoRA adapter depends on
(:data:`~memos_agents.models.fingerprint.LORA_FIELDS`: base weights, tokenizer, shapes) and its
tensors have exactly the names and shapes the model's target modules need.

Adapters are combined with peft's ``add_weighted_adapter(combination_type="cat")``: the LoRA
matrices are concatenated (rank = the sum of the ranks), so the combined update is exactly
``sum_i w_i * scaling_i * B_i @ A_i``, with no approximation (``svd`` truncates to a rank,
``linear`` mixes ``A`` and ``B`` separately and so adds cross terms) and no rank constraint
(``linear``/``ties`` need equal ranks). The combined adapter is one more loaded adapter.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memos_agents.errors import CubeFormatError, InvalidInputError, ModelError, NotFoundError, require
from memos_agents.models.fingerprint import ModelFingerprint, fingerprint
from memos_agents.parametric.lora import (
    AdapterArtifact,
    _is_wrapped,
    _quiet,
    chat_prompt_ids,
    lora_tensor_shapes,
)
from memos_agents.schema import validate_id

#: Largest total rank of a combined adapter.
MAX_COMBINED_RANK = 4_096
ChatMessages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter loaded into an :class:`AdapterRuntime`.

    Attributes:
        name: The name it was loaded (or combined) under.
        rank: Its LoRA rank (a combined adapter's is the sum of its parts').
        artifact: The artifact it was loaded from (None for a combination).
        combined_from: ``(name, weight)`` of the adapters a combination was made of (empty otherwise).

    """

    name: str
    rank: int
    artifact: AdapterArtifact | None = None
    combined_from: tuple[tuple[str, float], ...] = field(default_factory=tuple)


class AdapterRuntime:
    """Loads LoRA adapters onto a base model and runs it with the active one (thread-safe).

    Args:
        model: A transformers causal LM without peft layers; the runtime changes it in place while
            adapters are loaded (see the module docstring) and restores it when the last is unloaded.
        tokenizer: Its tokenizer.
        model_id: Name recorded in the fingerprint (default ``config.name_or_path``).

    Raises:
        InvalidInputError: The model already carries peft layers.

    """

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str | None = None) -> None:
        if _is_wrapped(model):
            raise InvalidInputError("the model already carries peft adapters; give the runtime the plain base model")
        self.tokenizer = tokenizer
        self._model = model
        self.fingerprint: ModelFingerprint = fingerprint(model, tokenizer, model_id)
        self._peft: Any = None
        self._grad_flags: dict[str, bool] = {}
        self._adapters: dict[str, LoadedAdapter] = {}
        self._internal: dict[str, str] = {}
        self._counter = 0
        self._active: str | None = None
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- state

    @property
    def model(self) -> Any:
        """The model, with the active adapter applied by its forward pass and ``generate``."""
        return self._model

    @property
    def active(self) -> str | None:
        """The active adapter's name (None: the base model)."""
        return self._active

    def loaded(self) -> list[LoadedAdapter]:
        """Return the loaded adapters in load order."""
        with self._lock:
            return list(self._adapters.values())

    # ----------------------------------------------------------------- load / unload

    def _new_internal(self) -> str:
        # peft warns about (and may re-initialise) adapter names that occur in its "lora_" prefix,
        # and user names may hold characters module names cannot: peft only ever sees our own names
        self._counter += 1
        return f"memos{self._counter}"

    def _check_new_name(self, name: str) -> None:
        validate_id(name, "adapter name")
        if name in self._adapters:
            raise InvalidInputError(f"an adapter named {name!r} is loaded already")

    def load(self, artifact: AdapterArtifact | str | Path, name: str, *, activate: bool = True) -> LoadedAdapter:
        """Load an adapter (an artifact, or the directory of a saved one) under ``name``.

        Args:
            artifact: The adapter, or its directory (read with :meth:`AdapterArtifact.load`).
            name: A name not in use (1-128 characters of ``[A-Za-z0-9_.:@-]``).
            activate: Make it the active adapter (default True); otherwise the active one stays.

        Raises:
            FingerprintMismatchError: The adapter was trained on another base model (nothing is changed).
            CubeFormatError: Its tensors do not have the names and shapes this model needs.
            InvalidInputError: ``name`` is malformed or in use.
            ArchiveIOError, ChecksumMismatchError, NewerFormatError: Reading a directory failed.
            MissingDependencyError: peft is not installed.

        """
        try:
            from peft import get_peft_model, set_peft_model_state_dict
        except ImportError as exc:
            raise require("peft", "hf") from exc
        if not isinstance(artifact, AdapterArtifact):
            artifact = AdapterArtifact.load(artifact)
        with self._lock:
            self._check_new_name(name)
            artifact.fingerprint.check(self.fingerprint, "lora", f"LoRA adapter {name!r}")
            try:
                expected = lora_tensor_shapes(self._model, artifact.config)
            except InvalidInputError as exc:
                raise CubeFormatError(f"LoRA adapter {name!r} does not fit this model: {exc}") from exc
            got = {k: tuple(v.shape) for k, v in artifact.tensors.items()}
            if got != expected:
                raise CubeFormatError(
                    f"LoRA adapter {name!r} has tensors of other names or shapes than this model needs"
                )
            internal = self._new_internal()
            peft_config = artifact.config.peft_config(inference=True)
            with _quiet():
                if self._peft is None:
                    self._grad_flags = {n: p.requires_grad for n, p in self._model.named_parameters()}
                    self._peft = get_peft_model(self._model, peft_config, adapter_name=internal)
                else:
                    self._peft.add_adapter(internal, peft_config)
                try:
                    result = set_peft_model_state_dict(self._peft, artifact.tensors, adapter_name=internal)
                    if getattr(result, "unexpected_keys", None):
                        raise CubeFormatError(f"peft did not place tensors of adapter {name!r}")
                except Exception:
                    self._drop(internal)
                    raise
            self._internal[name] = internal
            entry = LoadedAdapter(name=name, rank=artifact.config.rank, artifact=artifact)
            self._adapters[name] = entry
            self._apply(name if activate else self._active)
            return entry

    def _drop(self, internal: str) -> None:
        """Remove peft adapter ``internal``; the last one unwraps the model back to its own modules."""
        with _quiet():
            if len(self._peft.peft_config) <= 1:
                restored = self._peft.unload()
                if restored is not self._model:
                    raise ModelError("peft did not restore the model in place")
                for pname, param in self._model.named_parameters():
                    param.requires_grad_(self._grad_flags.get(pname, param.requires_grad))
                self._peft = None
            else:
                self._peft.delete_adapter(internal)

    def unload(self, name: str) -> None:
        """Unload adapter ``name``; if it was active the base model becomes active.

        Unloading the last adapter removes every peft layer: the model's modules and outputs are
        exactly those it had before the first load.

        Raises:
            NotFoundError: No adapter of that name is loaded.

        """
        with self._lock:
            if name not in self._adapters:
                raise NotFoundError(f"no adapter named {name!r} is loaded")
            internal = self._internal.pop(name)
            del self._adapters[name]
            self._drop(internal)
            self._apply(None if self._active == name else self._active)

    def unload_all(self) -> None:
        """Unload every adapter (the model is restored to its own modules)."""
        with self._lock:
            for name in list(self._adapters):
                self.unload(name)

    def activate(self, name: str | None) -> None:
        """Make adapter ``name`` the active one, or the base model when None.

        Raises:
            NotFoundError: No adapter of that name is loaded.

        """
        with self._lock:
            if name is not None and name not in self._adapters:
                raise NotFoundError(f"no adapter named {name!r} is loaded")
            self._apply(name)

    def _apply(self, name: str | None) -> None:
        self._active = name
        if self._peft is None:
            return
        with _quiet():
            if name is None:
                self._peft.base_model.disable_adapter_layers()
            else:
                self._peft.base_model.enable_adapter_layers()
                self._peft.set_adapter(self._internal[name], inference_mode=True)
        self._model.eval()

    # ----------------------------------------------------------------- combine

    def combine(
        self, names: Sequence[str], weights: Sequence[float], name: str, *, activate: bool = True
    ) -> LoadedAdapter:
        """Load the weighted sum of loaded adapters as a new adapter ``name`` (peft ``cat``; see the module docstring).

        Args:
            names: Loaded adapters, each once.
            weights: One finite weight per adapter (negative ones subtract an adapter's effect).
            name: The new adapter's name (not in use).
            activate: Make it active (default True).

        Raises:
            InvalidInputError: Empty or repeated names, a weight count that differs, a non-finite
                weight, a name in use, a total rank over :data:`MAX_COMBINED_RANK`, or a
                combination peft refuses.
            NotFoundError: One of ``names`` is not loaded.

        """
        names, weights = list(names), list(weights)
        with self._lock:
            self._check_new_name(name)
            if not names:
                raise InvalidInputError("combine needs at least one adapter")
            if len(set(names)) != len(names):
                raise InvalidInputError("combine got the same adapter twice")
            if len(weights) != len(names):
                raise InvalidInputError(f"combine got {len(weights)} weights for {len(names)} adapters")
            for w in weights:
                if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
                    raise InvalidInputError(f"combination weights must be finite numbers, got {w!r}")
            for n in names:
                if n not in self._adapters:
                    raise NotFoundError(f"no adapter named {n!r} is loaded")
            rank = sum(self._adapters[n].rank for n in names)
            if rank > MAX_COMBINED_RANK:
                raise InvalidInputError(f"the combined adapter would have rank {rank} > {MAX_COMBINED_RANK}")
            internal = self._new_internal()
            with _quiet():
                try:
                    self._peft.base_model.add_weighted_adapter(
                        [self._internal[n] for n in names],
                        [float(w) for w in weights],
                        internal,
                        combination_type="cat",
                    )
                except (ValueError, TypeError, RuntimeError) as exc:
                    if internal in self._peft.peft_config:
                        self._drop(internal)
                    raise InvalidInputError(f"peft cannot combine {names}: {exc}") from exc
            self._internal[name] = internal
            entry = LoadedAdapter(
                name=name, rank=rank, combined_from=tuple((n, float(w)) for n, w in zip(names, weights, strict=True))
            )
            self._adapters[name] = entry
            self._apply(name if activate else self._active)
            return entry

    # ----------------------------------------------------------------- inference

    def generate(self, messages: ChatMessages, *, max_new_tokens: int = 64) -> str:
        """Return the greedy reply to ``messages`` with the active adapter (see :meth:`generate_batch`)."""
        return self.generate_batch([messages], max_new_tokens=max_new_tokens)[0]

    def generate_batch(
        self, conversations: Sequence[ChatMessages], *, max_new_tokens: int = 64, batch_size: int = 16
    ) -> list[str]:
        """Return the greedy reply to each conversation with the active adapter.

        Prompts are rendered by the chat template, left-padded and decoded ``batch_size`` at a time.

        Args:
            conversations: OpenAI-style messages, one list per reply.
            max_new_tokens: Most tokens per reply (default 64; 1-4096).
            batch_size: Conversations per ``generate`` call (default 16).

        Raises:
            InvalidInputError: Malformed messages or bounds.
            ModelError: Generation failed.

        """
        import torch

        if not 1 <= max_new_tokens <= 4096 or batch_size < 1:
            raise InvalidInputError("max_new_tokens must be 1-4096 and batch_size at least 1")
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [chat_prompt_ids(tok, list(c)) for c in conversations]
        out: list[str] = []
        with self._lock:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                width = max(len(p) for p in chunk)
                ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, p in enumerate(chunk):
                    ids[row, width - len(p) :] = torch.tensor(p)
                    mask[row, width - len(p) :] = 1
                try:
                    with torch.inference_mode(), _quiet():
                        gen = self._model.generate(
                            input_ids=ids.to(self._model.device),
                            attention_mask=mask.to(self._model.device),
                            max_new_tokens=max_new_tokens,
                            do_sample=False,
                            pad_token_id=int(pad),
                            eos_token_id=tok.eos_token_id,
                        )
                except (RuntimeError, ValueError) as exc:
                    raise ModelError(f"generation failed: {exc}") from exc
                out.extend(str(tok.decode(row[width:].cpu(), skip_special_tokens=True)).strip() for row in gen)
        return out

    def mean_nll(self, texts: Sequence[str], *, max_tokens: int = 512) -> float:
        """Return the mean next-token loss (nats per token) of plain ``texts`` with the active adapter.

        Each text is scored on its own (no chat template, no special tokens), cut to ``max_tokens``.

        Raises:
            InvalidInputError: No text of at least two tokens.

        """
        import torch
        import torch.nn.functional as F

        total, count = 0.0, 0
        with self._lock, torch.inference_mode():
            for text in texts:
                ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])[:max_tokens]
                if len(ids) < 2:
                    continue
                x = torch.tensor([ids], device=self._model.device)
                logits = self._model(input_ids=x, use_cache=False).logits[0, :-1].float()  # (tokens-1, vocab)
                total += float(F.cross_entropy(logits, x[0, 1:], reduction="sum"))
                count += len(ids) - 1
        if not count:
            raise InvalidInputError("mean_nll needs a text of at least two tokens")
        return total / count
