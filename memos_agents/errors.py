"""One exception hierarchy for memos-agents, rooted at :class:`MemOSError`.

Every error that library code raises on purpose derives from :class:`MemOSError`, so callers can
catch one type. Errors caused by bad input also derive from :class:`ValueError` (or
:class:`KeyError` / :class:`LookupError` for missing things) so that generic handlers keep working.
"""

from __future__ import annotations


class MemOSError(Exception):
    """Root of every error raised by memos-agents."""


class InvalidInputError(MemOSError, ValueError):
    """The caller passed a value that can never be valid (empty text, malformed id, bad filter)."""


class TextTooLongError(InvalidInputError):
    """A memory or query text is longer than the configured maximum (in characters)."""


class InvalidEmbeddingError(InvalidInputError):
    """An embedding cannot be stored or searched: wrong dimension, or NaN/infinite values."""


class EmbeddingDimensionError(InvalidEmbeddingError):
    """An embedding does not have the dimension the cube/store was created with."""


class NotFoundError(MemOSError, LookupError):
    """Something that was asked for does not exist."""


class CubeNotFoundError(NotFoundError):
    """No MemCube with this id exists in the store."""


class MemoryNotFoundError(NotFoundError):
    """No memory item with this id exists in the given cube."""


class CubeExistsError(MemOSError):
    """A MemCube with this id already exists."""


class PermissionDeniedError(MemOSError, PermissionError):
    """The caller's ACL entry on the cube does not allow this operation."""


class UnknownUserError(PermissionDeniedError):
    """The caller, or a principal a grant names, is not a registered and enabled user of a store that requires users."""


class UserExistsError(MemOSError):
    """A user with this id is registered (enabled or disabled: ids are never reused)."""


class UserNotFoundError(NotFoundError):
    """No user with this id is registered."""


class ItemExistsError(InvalidInputError):
    """A write adds an item whose id the cube already holds (a concurrent writer may have added it)."""


class VersionConflictError(MemOSError):
    """An update was based on a version that is no longer current (optimistic concurrency)."""


class LifecycleTransitionError(InvalidInputError):
    """A lifecycle state change the transition table does not allow (e.g. from ``expired``)."""


class CubeFormatError(MemOSError, ValueError):
    """A cube archive is malformed, corrupt, or of an unknown or newer format version."""


class NewerFormatError(CubeFormatError):
    """An archive or bundle was written in a format version newer than this memos-agents reads."""


class ChecksumMismatchError(CubeFormatError):
    """A member of an archive does not hash to the checksum its manifest records (corrupt or altered)."""


class BundleError(CubeFormatError):
    """A MemStore bundle was refused on import (see the subclasses)."""


class TamperedBundleError(BundleError):
    """A bundle's signature does not verify, or its content does not match what the publisher signed."""


class UnsignedBundleError(BundleError):
    """A bundle carries no publisher signature (import it with ``allow_unsigned`` to accept that)."""


class UntrustedPublisherError(BundleError):
    """A bundle is signed with a key that is not the one this registry knows, or trusts, for its publisher."""


class IncompatibleBundleError(BundleError):
    """A bundle's embeddings come from another embedding model or dimension than this MemOS uses."""


class RegistryEntryNotFoundError(NotFoundError):
    """No published entry of this name (and version) that the caller may see."""


class RegistryEntryExistsError(MemOSError):
    """A name and version is already published (published versions are immutable, revoked ones too)."""


class StoreError(MemOSError):
    """The storage backend failed; the write, if any, was rolled back."""


class ConfigError(MemOSError, ValueError):
    """A configuration value is invalid or inconsistent."""


class MissingDependencyError(MemOSError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ModelError(MemOSError):
    """A model (embedder, LLM, tokenizer) could not be loaded or failed to run."""


class FingerprintMismatchError(ModelError):
    """A KV cache or LoRA adapter was made for another model than the one it is given to.

    Attributes:
        fields: The fingerprint fields that differ (e.g. ``("weights_sha256", "dtype")``).

    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class PrefixMismatchError(ModelError):
    """A prompt does not start with the tokens a KV cache covers, so the cache cannot be injected."""


class StaleMemoryError(MemOSError):
    """A derived memory (KV cache, LoRA adapter) no longer matches its source items.

    A source item changed (its version moved), was deleted or forgotten, or can no longer be read
    by the caller; the derived memory is never used stale: it is rebuilt or refused.
    """


class ArchiveIOError(MemOSError, OSError):
    """A cube archive could not be read or written on disk (missing file, a directory, no permission)."""


def require(module: str, extra: str) -> ImportError:
    """Build the error raised when an optional import fails.

    Args:
        module: The module that could not be imported.
        extra: The memos-agents extra that provides it.

    Returns:
        A :class:`MissingDependencyError` to raise, naming ``pip install "memos-agents[extra]"``.

    """
    return MissingDependencyError(f'{module!r} is not installed; install it with: pip install "memos-agents[{extra}]"')


class SensitiveDataError(InvalidInputError):
    """A write was refused because the cube's redaction policy refuses the personal data or secrets found in it.

    Nothing was stored. The message and the attributes name the kinds found and their character
    offsets (and, for a batch, which text), never the values.

    Attributes:
        kinds: The kinds found, sorted and without repeats (e.g. ``("email", "phone")``).
        spans: ``(kind, start, end)`` per finding, offsets in code points of the refused text.
        index: The position of the refused text in a batch, or None for a single text.

    """

    def __init__(
        self,
        message: str,
        *,
        kinds: tuple[str, ...] = (),
        spans: tuple[tuple[str, int, int], ...] = (),
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kinds = kinds
        self.spans = spans
        self.index = index
