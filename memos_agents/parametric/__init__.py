"""Parametric memory: LoRA adapters trained with peft from plaintext memories (``hf`` extra).

* :mod:`memos_agents.parametric.lora` — how memories become training text
  (:func:`training_examples`), the training loop (:func:`train_adapter`: step and time budgets,
  cancel, checkpoints and exact resume) and the adapter artifact (:class:`AdapterArtifact`:
  safetensors weights and an ``adapter.json`` with the base-model fingerprint, provenance,
  hyperparameters and metrics).
* :mod:`memos_agents.parametric.runtime` — :class:`AdapterRuntime`: load, switch, combine and
  unload adapters on a base model, refusing adapters of another base model.
* :mod:`memos_agents.parametric.trainer` — :class:`LoRATrainer`: a background trainer with job
  status, cancel and resume.

Importing this package does not import torch or peft; the functions that need them do.
"""

from memos_agents.parametric.lora import (
    AdapterArtifact,
    AdapterManifest,
    AdapterSource,
    LoRAConfig,
    TrainingExample,
    TrainingMetrics,
    TrainingProgress,
    latest_checkpoint_step,
    train_adapter,
    training_examples,
)
from memos_agents.parametric.runtime import AdapterRuntime, LoadedAdapter
from memos_agents.parametric.trainer import JobStatus, LoRATrainer

__all__ = [
    "AdapterArtifact",
    "AdapterManifest",
    "AdapterRuntime",
    "AdapterSource",
    "JobStatus",
    "LoRAConfig",
    "LoRATrainer",
    "LoadedAdapter",
    "TrainingExample",
    "TrainingMetrics",
    "TrainingProgress",
    "latest_checkpoint_step",
    "train_adapter",
    "training_examples",
]
