"""Activation memory: KV caches of plaintext memories (MemOS §4.2), built off the request path and injected exactly.

* :mod:`memos_agents.activation.kv` — build, compose, serialise (safetensors) and inject a KV cache.
* :mod:`memos_agents.activation.memory` — :class:`ActivationMemory` (``MemOS.activation``): activation
  MemCubes with fingerprint and provenance, freshness checks, invalidation.
* :mod:`memos_agents.activation.worker` — the background build worker and its visible states.

Needs the ``hf`` extra (torch, transformers, safetensors) for anything that touches a model.
"""
