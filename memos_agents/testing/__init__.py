"""Testing aids for memos-agents and code built on it.

* :mod:`memos_agents.testing.doubles` — :class:`ScriptedLLM` and :class:`HashingEmbedder`, test
  doubles that need no model, network or pytest (exported here).
* :mod:`memos_agents.testing.conformance` — the store conformance suite (needs pytest; import it
  explicitly), with its adversarial section :mod:`memos_agents.testing.adversarial`.
"""

from memos_agents.testing.doubles import HashingEmbedder, LLMCall, ScriptedLLM, ScriptExhaustedError

__all__ = ["HashingEmbedder", "LLMCall", "ScriptExhaustedError", "ScriptedLLM"]
