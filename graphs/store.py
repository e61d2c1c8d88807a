"""The long-term store ``langgraph.json`` gives the graphs: a ``MemOSStore`` on the MemOS home.

A LangGraph server loads ``./graphs/store.py:make_store`` (the ``store.path`` of
``langgraph.json``), enters it once at startup and leaves it at shutdown; the graphs' memory
nodes then find the MemOS as ``get_store().mos``. Settings come from the environment:

* ``MEMOS_HOME``: the MemOS home (default ``.memos``).
* ``MEMOS_STORE_USER``: the principal the store's own operations run as (default ``langgraph``);
  the graphs' nodes act as the run's ``user_id``, not as this one.
* ``MEMOS_OFFLINE``: ``1``/``true`` for the offline preset (hashing embeddings, no LLM), e.g.
  where no model may be loaded; default: the MemOS defaults (MiniLM, SmolLM2).
* ``MEMOS_SUBJECT_LABEL``: the namespace label that names an item's subject (e.g. ``1`` for
  LangMem's ``("memories", "{langgraph_user_id}")``); default none (the store's user).

This file is loaded by path (not as a package module), so it imports nothing from ``graphs``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from langgraph_memos import MemOSStore

from memos_agents.config import PRESET_OFFLINE
from memos_agents.errors import ConfigError

DEFAULT_HOME = ".memos"
DEFAULT_STORE_USER = "langgraph"


def store_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the store's settings from the environment (see the module docstring).

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        ``MemOSStore.from_path`` keyword arguments, ``home`` included.

    Raises:
        ConfigError: ``MEMOS_SUBJECT_LABEL`` is not a non-negative integer.

    """
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {
        "home": env.get("MEMOS_HOME") or DEFAULT_HOME,
        "user_id": env.get("MEMOS_STORE_USER") or DEFAULT_STORE_USER,
    }
    if (env.get("MEMOS_OFFLINE") or "").strip().lower() in ("1", "true", "yes"):
        settings.update(PRESET_OFFLINE)
    label = (env.get("MEMOS_SUBJECT_LABEL") or "").strip()
    if label:
        if not label.isdigit():
            raise ConfigError(f"MEMOS_SUBJECT_LABEL must be a label position (0, 1, ...), not {label!r}")
        settings["subject_label"] = int(label)
    return settings


def build_store(environ: Mapping[str, str] | None = None) -> MemOSStore:
    """Open the ``MemOSStore`` the environment describes (the caller closes it: ``store.close()``).

    Raises:
        ConfigError: An invalid setting (see :func:`store_settings` and ``MemOS.from_path``).
        InvalidInputError: A malformed ``MEMOS_STORE_USER``.

    """
    settings = store_settings(environ)
    return MemOSStore.from_path(settings.pop("home"), **settings)


@asynccontextmanager
async def make_store() -> AsyncIterator[MemOSStore]:
    """Yield the store for a LangGraph server's lifetime (``langgraph.json`` ``store.path``), then close it."""
    store = build_store()
    try:
        yield store
    finally:
        store.close()
