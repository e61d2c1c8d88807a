"""One place that builds ``openai.OpenAI`` clients for OpenAI-compatible endpoints (``openai`` extra)."""

from __future__ import annotations

import os
from typing import Any

from memos_agents.errors import require


def make_client(base_url: str | None, api_key: str | None, timeout: float = 60.0, max_retries: int = 2) -> Any:
    """Return an ``openai.OpenAI`` client.

    Args:
        base_url: Endpoint, e.g. ``"http://127.0.0.1:8080/v1"`` (None: the client's default).
        api_key: Key; None falls back to ``OPENAI_API_KEY``, then to a dummy for local servers.
        timeout: Request timeout in seconds (default 60).
        max_retries: Retries of a failed request (default 2).

    Raises:
        MissingDependencyError: The ``openai`` extra is not installed.

    """
    try:
        import openai
    except ImportError as exc:
        raise require("openai", "openai") from exc
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
