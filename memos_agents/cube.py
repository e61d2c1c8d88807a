"""MemCube: the one unit of memory, and its archive format.

A MemCube (MemOS §4) is a metadata header around a typed payload. The header carries identity,
ownership, ACL, provenance, version, priority, timestamps, lifecycle state and storage profile.
The payload is one of:

* :class:`PlaintextPayload` — a tree/graph of :class:`~memos_agents.schema.MemoryItem` kept in a
  plaintext store (embedded SQLite by default).
* :class:`ActivationPayload` — a KV cache of a Hugging Face model over plaintext memories
  (:mod:`memos_agents.activation`).
* :class:`ParametricPayload` — a LoRA adapter trained with peft on plaintext memories
  (:mod:`memos_agents.parametric`).

Archives: :func:`write_archive` / :func:`read_archive` store a cube in one zip file holding
``manifest.json`` (format name and version, header, counts, SHA-256 of the header and of each
member), ``items.jsonl`` and ``edges.jsonl``. Readers refuse unknown formats, newer versions and
checksum mismatches. Checksums catch corruption, not tampering: they are not signatures. Readers
also treat archives as untrusted input: members are streamed under caps on inflated size and
compression ratio (zip bombs), encrypted or oddly compressed members and unexpected members are
refused, and so are NaN and infinite numbers. Format version 2 adds two optional members, a
MemStore bundle's ``registry.json`` and ``signature.json`` (:mod:`memos_agents.infra.registry`
signs and verifies them); plain exports are still written as version 1.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos_agents.errors import (
    ArchiveIOError,
    ChecksumMismatchError,
    CubeFormatError,
    InvalidInputError,
    NewerFormatError,
)
from memos_agents.infra.redaction import RedactionPolicy
from memos_agents.models.fingerprint import ModelFingerprint
from memos_agents.schema import Edge, Label, LifecycleState, MemoryItem, as_utc, check_text, utcnow, validate_id

#: Name written into every archive manifest.
ARCHIVE_FORMAT = "memos-cube"
#: Most ACL entries of one cube.
MAX_ACL_ENTRIES = 1_024
#: Longest model name or file path in a payload descriptor, in characters.
MAX_PATH_CHARS = 4_096
#: Longest cube description, in characters.
MAX_DESCRIPTION_CHARS = 4_096

#: Current archive format version; readers refuse anything newer. Version 1: the three members;
#: version 2: also the MemStore bundle members (:data:`BUNDLE_MEMBERS`). Plain exports are still
#: written as version 1, so that older readers take them.
ARCHIVE_FORMAT_VERSION = 2
#: Optional members of a version-2 archive: a MemStore bundle's registry entry and its signature
#: (see :mod:`memos_agents.infra.registry`), each at most :data:`MAX_EXTRA_BYTES`.
BUNDLE_MEMBERS = ("registry.json", "signature.json")
#: Cap on the inflated size of each optional bundle member, in bytes (1 MiB; real ones are ~2 KB).
MAX_EXTRA_BYTES = 1 << 20

#: Default cap on the inflated size of ``items.jsonl`` and of ``edges.jsonl``, in bytes (512 MiB:
#: about 60,000 items with 384-d embeddings, ~8.5 KB a line). Reading holds the parsed records,
#: which take up to about 4.5 times their JSON size (measured on edge lines), so the caps bound
#: the memory an import may take to a few GB; pass larger limits to ``read_archive`` for bigger cubes.
MAX_MEMBER_BYTES = 512 << 20
#: Default cap on the inflated size of all members together, in bytes (512 MiB).
MAX_ARCHIVE_BYTES = 512 << 20
#: Default cap on the inflated size of ``manifest.json``, in bytes (16 MiB; real ones are ~1 KB).
MAX_MANIFEST_BYTES = 16 << 20
#: Default cap on how many times a member may expand over its compressed size. Real exports
#: measure 2.3x (384-d random unit vectors), 11-18x (256-d hashing embeddings, edges) and up to
#: ~100x (thousands of identical long texts, no embeddings); deflate tops out near 1032x.
MAX_COMPRESSION_RATIO = 200.0
#: Members may always inflate to this many bytes, whatever their ratio (1 MiB).
RATIO_FLOOR_BYTES = 1 << 20
#: Cap on one line (record) of ``items.jsonl`` / ``edges.jsonl``, in bytes (16 MiB). The largest
#: valid item (64 Ki-char text, 64 tags, 64 metadata values, 4096 sources, an 8192-d embedding)
#: is under 4 MB of JSON; the cap bounds the memory a line without newlines can take.
MAX_RECORD_BYTES = 16 << 20

_MEMBERS = ("manifest.json", "items.jsonl", "edges.jsonl")
_COMPRESSIONS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
#: General-purpose flag bits for encryption: traditional (0), strong (6), central directory (13).
_ENCRYPTED_FLAGS = 0x1 | 0x40 | 0x2000
_CHUNK_BYTES = 1 << 20
#: What zipfile and zlib raise on a corrupt, truncated or unsupported archive.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    RuntimeError,  # encrypted member; NotImplementedError (unknown compression) derives from it
    ValueError,
    OverflowError,
    OSError,
    EOFError,
    KeyError,
    zlib.error,
    struct.error,
)
_RecordT = TypeVar("_RecordT", MemoryItem, Edge)


class Permission(StrEnum):
    """What a principal may do on a cube (MemGovernance).

    ``read`` (search, get, list, count, cube info, event log), ``write`` (add and update items,
    record events), ``delete`` (delete items), ``share`` (add, change or remove ACL entries that grant
    at most the caller's own permissions), ``admin`` (change the header, delete the cube; implies
    every other permission), ``audit`` (read the cube's audit trail).
    """

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    SHARE = "share"
    ADMIN = "admin"
    AUDIT = "audit"


class Role(StrEnum):
    """A named set of permissions on a cube (:data:`ROLE_PERMISSIONS`)."""

    OWNER = "owner"
    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"
    GUEST = "guest"


#: The permissions of each role. The owner is ``CubeHeader.owner_id`` (an ACL entry cannot make
#: another one); a guest has no permission on the cube's own items.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.ADMIN: frozenset(Permission),
    Role.WRITER: frozenset({Permission.READ, Permission.WRITE, Permission.DELETE}),
    Role.READER: frozenset({Permission.READ}),
    Role.GUEST: frozenset(),
}

#: What a permission listed in an entry brings with it: ``admin`` everything, ``write`` also
#: ``read`` and ``delete`` (as before roles existed, when writers could delete), ``share`` and
#: ``audit`` also ``read``.
_IMPLIED: dict[Permission, frozenset[Permission]] = {
    Permission.READ: frozenset({Permission.READ}),
    Permission.WRITE: frozenset({Permission.WRITE, Permission.READ, Permission.DELETE}),
    Permission.DELETE: frozenset({Permission.DELETE}),
    Permission.SHARE: frozenset({Permission.SHARE, Permission.READ}),
    Permission.ADMIN: frozenset(Permission),
    Permission.AUDIT: frozenset({Permission.AUDIT, Permission.READ}),
}


class AclEntry(BaseModel):
    """One access-control entry: a principal (user id or ``*``) with a role and/or permissions.

    Attributes:
        principal: A user or service id, or ``*`` for everybody.
        role: A :class:`Role` other than ``owner`` (None: only ``permissions``).
        permissions: Permissions granted on top of the role's (each with what it implies).

    """

    model_config = ConfigDict(extra="forbid")

    principal: str
    role: Role | None = None
    permissions: list[Permission] = Field(default_factory=list, max_length=len(Permission))

    @field_validator("principal")
    @classmethod
    def _principal(cls, value: str) -> str:
        return value if value == "*" else validate_id(value, "ACL principal")

    @field_validator("role")
    @classmethod
    def _role(cls, value: Role | None) -> Role | None:
        if value is Role.OWNER:
            raise ValueError("the owner is the cube's owner_id; an ACL entry cannot grant the owner role")
        return value

    def granted(self) -> frozenset[Permission]:
        """Return every permission this entry grants (its role's, its own, and what they imply)."""
        out = set(ROLE_PERMISSIONS[self.role]) if self.role is not None else set()
        for permission in self.permissions:
            out |= _IMPLIED[permission]
        return frozenset(out)


class StorageProfile(BaseModel):
    """Where and how a cube's payload is stored."""

    model_config = ConfigDict(extra="forbid")

    backend: Label = "sqlite"
    embedding_model: Label | None = None
    embedding_dim: int | None = Field(default=None, ge=1, le=65_536)


class PlaintextPayload(BaseModel):
    """Plaintext memory: items and edges live in the plaintext store under the cube id."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["plaintext"] = "plaintext"


#: Cube id prefixes of derived cubes (activation ``kv.<cube>``, parametric ``lora.<cube>``): only
#: memos-agents creates cubes under them, for the source cube's owner.
RESERVED_CUBE_PREFIXES = ("kv.", "lora.")


def check_user_cube_id(cube_id: str) -> str:
    """Return ``cube_id`` if a caller may create a cube under it (not a derived cube's reserved prefix).

    Raises:
        InvalidInputError: The id starts with ``kv.`` or ``lora.``.

    """
    if cube_id.startswith(RESERVED_CUBE_PREFIXES):
        raise InvalidInputError(
            f"cube ids starting with {' or '.join(RESERVED_CUBE_PREFIXES)} are reserved for derived (KV, LoRA) cubes"
        )
    return cube_id


#: Most source memories one derived cube (KV cache, LoRA adapter) records.
MAX_DERIVED_SOURCES = 65_536


class DerivedSource(BaseModel):
    """A plaintext memory a derived cube was built from, at the version it had (DERIVED_FROM provenance).

    A derived cube is stale as soon as one of its sources is at another version, no longer
    ``activated``, deleted or unreadable by the caller; it is then rebuilt, never used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cube_id: Label
    item_id: Label
    version: int = Field(ge=1)


def derived_from_any(derived_from: list[DerivedSource], sources: dict[str, set[str] | None] | None) -> bool:
    """Return True if any of ``derived_from`` is among ``sources`` (cube id -> item ids; None: the whole cube).

    ``sources`` None matches everything (used to drop every derived cube).
    """
    if sources is None:
        return True
    for s in derived_from:
        ids = sources.get(s.cube_id, set())
        if ids is None or s.item_id in ids:
            return True
    return False


class ActivationPayload(BaseModel):
    """Activation memory: a KV cache of a Hugging Face model over a set of plaintext memories.

    See :mod:`memos_agents.activation`. The tensors live in a safetensors file beside the store
    (``<home>/activation/``); the header records what the file must be.

    Attributes:
        model_name_or_path: The model that computed the cache.
        cache_path: The file, relative to the activation directory (None: not built, or invalidated).
        num_tokens: Tokens the cache covers.
        fingerprint: The model's fingerprint (weights, dtype, tokenizer, chat template, shapes).
        derived_from: The source memories with their versions, in prompt order.
        codec: How the tensors are stored (``native``, ``bfloat16``, ``float16``, ``float32``, ``int8``).
        file_sha256: SHA-256 of the file's bytes (checked on load).
        size_bytes: The file's size.
        prefix_sha256: SHA-256 of the rendered prompt prefix the cache covers.
        request_sha256: SHA-256 of the memory list the build was asked for (ids and versions, in
            order; the build may keep fewer to fit the token cap): an unchanged request is not rebuilt.

    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["activation"] = "activation"
    model_name_or_path: str = Field(max_length=MAX_PATH_CHARS)
    cache_path: str | None = Field(default=None, max_length=MAX_PATH_CHARS)
    num_tokens: int | None = Field(default=None, ge=0, le=2**31)
    fingerprint: ModelFingerprint | None = None
    derived_from: list[DerivedSource] = Field(default_factory=list, max_length=MAX_DERIVED_SOURCES)
    codec: str = Field(default="native", max_length=16)
    file_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, ge=0)
    prefix_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    request_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ParametricPayload(BaseModel):
    """Parametric memory: a peft LoRA adapter trained on a set of plaintext memories.

    See :mod:`memos_agents.parametric`. The adapter lives in a directory beside the store
    (``<home>/parametric/``).

    Attributes:
        base_model: The base model it was trained on.
        adapter_path: The adapter directory, relative to the parametric directory (None: not trained or invalidated).
        rank: LoRA rank.
        fingerprint: The base model's fingerprint.
        derived_from: The training memories with their versions.
        hyperparameters: The training configuration.
        metrics: Training figures (loss, steps, seconds, examples).
        file_sha256: SHA-256 of the adapter weights file.
        size_bytes: Its size.

    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["parametric"] = "parametric"
    base_model: str = Field(max_length=MAX_PATH_CHARS)
    adapter_path: str | None = Field(default=None, max_length=MAX_PATH_CHARS)
    rank: int | None = Field(default=None, ge=1, le=65_536)
    fingerprint: ModelFingerprint | None = None
    derived_from: list[DerivedSource] = Field(default_factory=list, max_length=MAX_DERIVED_SOURCES)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    file_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, ge=0)


Payload = Annotated[PlaintextPayload | ActivationPayload | ParametricPayload, Field(discriminator="type")]


class CubeHeader(BaseModel):
    """The metadata header of a MemCube.

    Attributes:
        cube_id: Id of the cube (see :func:`~memos_agents.schema.validate_id`).
        owner_id: The user who owns it; the owner has every permission.
        acl: Further principals and their permissions (``*`` means everybody).
        description: Free text.
        source: Provenance of the cube as a whole (e.g. ``"locomo:conv-26"``).
        model: The model the payload is tied to (embedder for plaintext, base model otherwise).
        priority: Scheduling priority, higher first (default 0).
        created_at / updated_at: UTC timestamps.
        expires_at: When the cube expires (None: never).
        version: Incremented on every write to the cube.
        state: Lifecycle state of the cube.
        storage: Storage profile (backend, embedding model and dimension).
        payload: The typed payload descriptor.
        memory_ttl_s: How long memories written by ``MemOS.add`` live when the write names no TTL,
            in seconds (None: the default, forever); see :mod:`memos_agents.operation.lifecycle`.
        redaction: What a write holding personal data or secrets does (default: ``off``): see
            :class:`~memos_agents.infra.redaction.RedactionPolicy`. ``mask`` and ``refuse`` are
            applied by the facade before anything is embedded, and every store refuses a write
            whose texts still hold a finding of the policy's kinds.
        read_only: No caller other than trusted code may write or delete the cube's items (every
            store refuses, owner included); set on MemStore snapshots and imported bundles, and
            never cleared by a header update (default False).
        published_as: ``name@version`` when the cube is the snapshot a MemStore registry entry
            serves (None otherwise); its publisher's default searches leave it out (they read the
            cube it was taken from).
        namespace: The document namespace the cube holds (a path of 1-16 labels, see
            :mod:`memos_agents.plaintext.documents`; None: an ordinary memory cube). Set when the
            cube is created and never changed; the caller's default searches leave such cubes out.

    """

    model_config = ConfigDict(extra="forbid")

    cube_id: str
    owner_id: str
    acl: list[AclEntry] = Field(default_factory=list, max_length=MAX_ACL_ENTRIES)
    description: str = ""
    source: Label | None = None
    model: Label | None = None
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    version: int = Field(default=1, ge=1, le=2**62)
    state: LifecycleState = LifecycleState.ACTIVATED
    storage: StorageProfile = Field(default_factory=StorageProfile)
    payload: Payload = Field(default_factory=PlaintextPayload)
    memory_ttl_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86_400)
    redaction: RedactionPolicy = Field(default_factory=RedactionPolicy)
    read_only: bool = False
    published_as: str | None = None
    namespace: tuple[str, ...] | None = None

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from memos_agents.plaintext.documents import check_namespace

        return None if value is None else check_namespace(value)

    @field_validator("published_as")
    @classmethod
    def _published_as(cls, value: str | None) -> str | None:
        return None if value is None else validate_id(value, "published_as")

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return check_text(value, "description", MAX_DESCRIPTION_CHARS, blank=True)

    @field_validator("cube_id", "owner_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        validate_id(value)
        return value

    @field_validator("created_at", "updated_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    def permissions_of(self, user_id: str) -> frozenset[Permission]:
        """Return what ``user_id`` may do here.

        Everything for the owner; otherwise the union of what the ACL entries for the user and for
        ``*`` grant (see :meth:`AclEntry.granted`).
        """
        if user_id == self.owner_id:
            return ROLE_PERMISSIONS[Role.OWNER]
        out: frozenset[Permission] = frozenset()
        for entry in self.acl:
            if entry.principal in (user_id, "*"):
                out |= entry.granted()
        return out

    def allows(self, user_id: str, permission: Permission) -> bool:
        """Return True if ``user_id`` may do ``permission`` on this cube (see :meth:`permissions_of`)."""
        return permission in self.permissions_of(user_id)


class MemCube(BaseModel):
    """A MemCube as held in memory: its header plus, for exports, its plaintext content."""

    header: CubeHeader
    items: list[MemoryItem] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header_sha(header: object) -> str:
    return _sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())


def _io_error(action: str, path: Path, reason: OSError | str, code: int | None = None) -> ArchiveIOError:
    """Build the :class:`ArchiveIOError` for a failed ``action`` on ``path``, keeping the errno.

    The message reads ``[Errno N] cannot <action> cube archive <path>: <reason>``.
    """
    if isinstance(reason, OSError):
        code, reason = reason.errno, reason.strerror or str(reason) or type(reason).__name__
    message = f"cannot {action} cube archive {path}: {reason}"
    return ArchiveIOError(message) if code is None else ArchiveIOError(code, message)


def _open_temp(target: Path) -> tuple[int, Path]:
    """Create a new, uniquely named temp file next to ``target`` (mode 0o666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp file name", str(target.parent))


def _archive_path(path: object, action: str) -> Path:
    """Return ``path`` as a Path that ``is_dir``/``open`` can take, or raise ArchiveIOError.

    Refuses what is no path (not a str or os.PathLike), a NUL character, and names the OS cannot
    even look up (too long), so that no raw TypeError/ValueError/OSError reaches the caller.
    """
    if not isinstance(path, str | os.PathLike):
        raise ArchiveIOError(f"cannot {action} cube archive: {path!r} is not a file path")
    target = Path(path)
    if "\0" in str(target):
        raise ArchiveIOError(f"cannot {action} cube archive: the path contains a NUL character")
    try:
        target.is_dir()
    except (OSError, ValueError) as exc:
        raise _io_error(action, target, exc if isinstance(exc, OSError) else str(exc)) from exc
    return target


def archive_members(cube: MemCube, *, bundle: bool = False) -> ArchiveMembers:
    """Return the manifest, ``items.jsonl`` and ``edges.jsonl`` that :func:`write_archive` writes for ``cube``.

    The manifest's ``sha256`` map (header, items.jsonl, edges.jsonl) identifies the content: a
    MemStore bundle signs a digest of it (:func:`content_checksum`). Header fields added after
    format version 1 (``read_only``, ``published_as``) are written only when set, so plain exports
    stay readable by older versions; ``bundle`` writes format version 2.
    """
    items = "".join(item.model_dump_json() + "\n" for item in cube.items).encode()
    edges = "".join(edge.model_dump_json() + "\n" for edge in cube.edges).encode()
    header = json.loads(cube.header.model_dump_json())
    for name in ("read_only", "published_as"):
        if not header.get(name):
            header.pop(name, None)
    manifest = {
        "format": ARCHIVE_FORMAT,
        "format_version": ARCHIVE_FORMAT_VERSION if bundle else 1,
        "header": header,
        "counts": {"items": len(cube.items), "edges": len(cube.edges)},
        "sha256": {"header": _header_sha(header), "items.jsonl": _sha256(items), "edges.jsonl": _sha256(edges)},
    }
    return manifest, items, edges


def content_checksum(sha256: dict[str, Any]) -> str:
    """Return ``sha256:<hex>`` over an archive manifest's ``sha256`` map (the cube's header, items and edges)."""
    canonical = {k: sha256.get(k) for k in ("header", "items.jsonl", "edges.jsonl")}
    return "sha256:" + _sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())


#: What :func:`archive_members` returns: the manifest, ``items.jsonl`` and ``edges.jsonl``.
ArchiveMembers = tuple[dict[str, Any], bytes, bytes]


def write_archive(
    path: str | Path,
    cube: MemCube,
    *,
    extras: dict[str, bytes] | None = None,
    members: ArchiveMembers | None = None,
) -> Path:
    """Write ``cube`` to one zip archive, atomically.

    The archive is written to a uniquely named temp file in the target's directory, flushed to
    disk and then renamed over the target, so readers see either the old file or the complete new
    one; the temp file is removed whenever the write fails.

    Args:
        path: Target file; parent directories are created; an existing file is replaced, an
            existing directory is refused.
        cube: The header, items (with embeddings) and edges to write.
        extras: Optional members of :data:`BUNDLE_MEMBERS` (a MemStore bundle's entry and
            signature); with any, the archive is format version 2.
        members: ``archive_members(cube, bundle=bool(extras))`` when the caller computed it
            already (a bundle's checksum is taken from it before signing): written as given, not
            serialised again.

    Returns:
        The path written.

    Raises:
        ArchiveIOError: If ``path`` is a directory, or the file or its parent directories cannot
            be created or written (no permission, a parent is a file, disk full).
        InvalidInputError: An extra member not in :data:`BUNDLE_MEMBERS`.

    """
    target = _archive_path(path, "write")
    if target.is_dir():
        raise _io_error("write", target, "it is a directory", errno.EISDIR)
    extras = dict(extras or {})
    unknown = sorted(set(extras) - set(BUNDLE_MEMBERS))
    if unknown:
        raise InvalidInputError(f"unknown archive members {unknown}; the optional ones are {list(BUNDLE_MEMBERS)}")
    manifest, items, edges = members if members is not None else archive_members(cube, bundle=bool(extras))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a parent is a file
        raise _io_error("write", target, f"{target.parent} is not a directory", errno.ENOTDIR) from exc
    except OSError as exc:
        raise _io_error("write", target, exc) from exc
    try:
        fd, tmp = _open_temp(target)
    except OSError as exc:
        raise _io_error("write", target, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("manifest.json", json.dumps(manifest, indent=2))
                zf.writestr("items.jsonl", items)
                zf.writestr("edges.jsonl", edges)
                for name in BUNDLE_MEMBERS:
                    if name in extras:
                        zf.writestr(name, extras[name])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _io_error("write", target, exc) from exc
        raise
    return target


class _Budget:
    """The decompression limits of one :func:`read_archive` call and the bytes inflated so far."""

    def __init__(self, source: Path, archive_bytes: int, max_total_bytes: int, max_ratio: float) -> None:
        self.source = source
        self.archive_bytes = archive_bytes
        self.max_total_bytes = max_total_bytes
        self.max_ratio = max_ratio
        self.total = 0

    def ratio_limit(self, info: zipfile.ZipInfo) -> int:
        """Most bytes ``info`` may inflate to: ``max_ratio`` times its compressed size, at least the floor."""
        compressed = max(0, min(info.compress_size, self.archive_bytes))  # a forged size cannot exceed the file
        return max(RATIO_FLOOR_BYTES, int(self.max_ratio * compressed))

    def refuse(self, info: zipfile.ZipInfo, size: int, max_bytes: int) -> None:
        """Raise :class:`CubeFormatError` if ``info`` at ``size`` bytes (or the archive) is over a limit."""
        name = info.filename
        if size > max_bytes:
            raise CubeFormatError(f"{self.source}: {name} is larger than the limit of {max_bytes} bytes")
        if size > self.ratio_limit(info):
            raise CubeFormatError(
                f"{self.source}: {name} expands more than {self.max_ratio:g} times its compressed size "
                f"({info.compress_size} bytes); refused as a possible zip bomb"
            )
        if self.total > self.max_total_bytes:
            raise CubeFormatError(
                f"{self.source}: the archive expands to more than the limit of {self.max_total_bytes} bytes"
            )

    def check_declared(self, info: zipfile.ZipInfo, max_bytes: int) -> None:
        """Refuse ``info`` early if the size it declares is already over a limit."""
        self.refuse(info, info.file_size, max_bytes)

    def chunks(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> Iterator[bytes]:
        """Yield the inflated bytes of ``info`` in chunks, counting them against every limit.

        The sizes the archive declares are checked first (to refuse early), then the bytes really
        inflated are counted while reading, since declared sizes can be forged.
        """
        self.check_declared(info, max_bytes)
        size = 0
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                size += len(chunk)
                self.total += len(chunk)
                self.refuse(info, size, max_bytes)
                yield chunk


def _non_finite(value: object) -> bool:
    """Return True if a NaN or infinite float occurs anywhere in ``value`` (models, dicts, lists)."""
    stack: list[object] = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, float):
            if not math.isfinite(current):
                return True
        elif isinstance(current, BaseModel):
            stack.extend(vars(current).values())
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list | tuple | set | frozenset):
            try:  # fast path for vectors: every element a number
                if all(map(math.isfinite, current)):
                    continue
            except (TypeError, OverflowError):  # not all numbers (or an int too big for a float)
                pass
            stack.extend(current)
    return False


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name} in the manifest")


def _read_manifest(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, max_bytes: int) -> dict[str, Any]:
    source = budget.source
    raw = b"".join(budget.chunks(zf, info, max_bytes))
    try:
        manifest = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise CubeFormatError(f"{source}: manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise CubeFormatError(f"{source} is not a {ARCHIVE_FORMAT} archive")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CubeFormatError(f"{source}: unknown format version {version!r}")
    if version > ARCHIVE_FORMAT_VERSION:
        raise NewerFormatError(
            f"{source}: format version {version} is newer than this memos-agents supports "
            f"({ARCHIVE_FORMAT_VERSION}); upgrade memos-agents to read it"
        )
    return manifest


def _read_records(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    model: type[_RecordT],
    expected: int,
    budget: _Budget,
    max_bytes: int,
) -> tuple[list[_RecordT], str, str | None]:
    """Stream one JSON-lines member: parse its records while hashing its bytes.

    Only the records and the line being read (at most :data:`MAX_RECORD_BYTES`) are held in
    memory, never the whole member. After the first bad record (or one record more than
    ``expected``) the rest is only hashed, so that a checksum mismatch, the likelier cause, can be
    reported instead.

    Returns:
        The records, the SHA-256 hex digest of the member, and the first record error (or None).

    """
    hasher = hashlib.sha256()
    records: list[_RecordT] = []
    error: str | None = None
    pending = bytearray()

    def parse(block: bytes) -> str | None:
        for line in filter(bytes.strip, block.split(b"\n")):
            if len(line) > MAX_RECORD_BYTES:
                return f"a line is longer than the limit of {MAX_RECORD_BYTES} bytes"
            if len(records) >= expected:
                return f"more records than the {expected} the manifest counts"
            try:
                record = model.model_validate_json(line)
            except (ValidationError, ValueError, RecursionError) as exc:
                return f"invalid record ({exc})"
            if _non_finite(record):
                return "a record holds a non-finite number (NaN or infinity)"
            records.append(record)
        return None

    for chunk in budget.chunks(zf, info, max_bytes):
        hasher.update(chunk)
        if error is not None:
            continue
        cut = chunk.rfind(b"\n")  # search the new bytes only: a long pending line is not rescanned
        if cut >= 0:
            cut += len(pending)
        pending += chunk
        if cut < 0:
            if pending.isspace():  # a run of blank space inside no record: nothing to keep
                pending.clear()
            elif len(pending) > MAX_RECORD_BYTES:
                error = f"a line is longer than the limit of {MAX_RECORD_BYTES} bytes"
                pending.clear()
            continue
        block = bytes(pending[:cut])
        del pending[: cut + 1]
        if block and not block.isspace():
            error = parse(block)
    if error is None and pending and not pending.isspace():
        error = parse(bytes(pending))
    return records, hasher.hexdigest(), error


def _count(counts: dict[str, Any], name: str, source: Path) -> int:
    value = counts.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CubeFormatError(f"{source}: manifest count of {name} is not a non-negative integer: {value!r}")
    return value


def _check_members(zf: zipfile.ZipFile, source: Path) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [info.filename for info in infos]
    unexpected = sorted(set(names) - set(_MEMBERS) - set(BUNDLE_MEMBERS))
    if unexpected:
        raise CubeFormatError(
            f"{source}: unexpected archive members {unexpected[:5]!r} (a cube archive holds only "
            f"{', '.join(_MEMBERS)} and, from format version 2, {', '.join(BUNDLE_MEMBERS)})"
        )
    if len(names) != len(set(names)):
        raise CubeFormatError(f"{source}: duplicate archive members")
    missing = [name for name in _MEMBERS if name not in names]
    if missing:
        raise CubeFormatError(f"{source}: archive lacks {', '.join(missing)}")
    for info in infos:
        if info.flag_bits & _ENCRYPTED_FLAGS:
            raise CubeFormatError(f"{source}: {info.filename} is encrypted; cube archives are never encrypted")
        if info.compress_type not in _COMPRESSIONS:
            raise CubeFormatError(
                f"{source}: {info.filename} uses zip compression method {info.compress_type}; "
                "cube archives are stored or deflated"
            )
    return {info.filename: info for info in infos}


class ArchiveParts(BaseModel):
    """What :func:`read_archive_parts` returns: the cube, its manifest's checksums and the bundle members.

    Attributes:
        cube: Header, items and edges (checked against ``sha256``).
        format_version: The archive's format version.
        sha256: The manifest's checksum map (header, items.jsonl, edges.jsonl), verified.
        extras: The raw bytes of each :data:`BUNDLE_MEMBERS` member present (version 2 only).

    """

    cube: MemCube
    format_version: int
    sha256: dict[str, str]
    extras: dict[str, bytes] = Field(default_factory=dict)


def _read_cube(zf: zipfile.ZipFile, budget: _Budget, limits: tuple[int, int]) -> ArchiveParts:
    source = budget.source
    max_manifest_bytes, max_member_bytes = limits
    members = _check_members(zf, source)
    manifest = _read_manifest(zf, members["manifest.json"], budget, max_manifest_bytes)
    extras: dict[str, bytes] = {}
    for name in BUNDLE_MEMBERS:
        if name in members:
            if manifest["format_version"] < 2:
                raise CubeFormatError(f"{source}: {name} in a format version 1 archive")
            extras[name] = b"".join(budget.chunks(zf, members[name], MAX_EXTRA_BYTES))
    sums, counts = manifest.get("sha256"), manifest.get("counts")
    if not isinstance(sums, dict) or not isinstance(counts, dict):
        raise CubeFormatError(f"{source}: manifest lacks checksums or counts")
    if sums.get("header") != _header_sha(manifest.get("header")):
        raise ChecksumMismatchError(f"{source}: checksum mismatch for the header")
    try:
        header = CubeHeader.model_validate(manifest.get("header"))
    except ValidationError as exc:
        raise CubeFormatError(f"{source}: invalid header ({exc})") from exc
    if _non_finite(header):
        raise CubeFormatError(f"{source}: the header holds a non-finite number")
    if header.payload.type != "plaintext":  # derived cubes are made here from their sources, never imported
        raise CubeFormatError(f"{source}: archives hold plaintext cubes; this one is {header.payload.type}")
    n_items, n_edges = _count(counts, "items", source), _count(counts, "edges", source)
    items, items_sha, items_error = _read_records(
        zf, members["items.jsonl"], MemoryItem, n_items, budget, max_member_bytes
    )
    edges, edges_sha, edges_error = _read_records(zf, members["edges.jsonl"], Edge, n_edges, budget, max_member_bytes)
    for name, digest in (("items.jsonl", items_sha), ("edges.jsonl", edges_sha)):
        if sums.get(name) != digest:
            raise ChecksumMismatchError(f"{source}: checksum mismatch for {name}")
    for name, error in (("items.jsonl", items_error), ("edges.jsonl", edges_error)):
        if error is not None:
            raise CubeFormatError(f"{source}: {name}: {error}")
    if n_items != len(items) or n_edges != len(edges):
        raise CubeFormatError(f"{source}: counts in manifest do not match the content")
    digests = {k: str(sums[k]) for k in ("header", "items.jsonl", "edges.jsonl")}
    cube = MemCube(header=header, items=items, edges=edges)
    return ArchiveParts(cube=cube, format_version=manifest["format_version"], sha256=digests, extras=extras)


def read_archive_parts(
    path: str | Path,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_ARCHIVE_BYTES,
    max_ratio: float = MAX_COMPRESSION_RATIO,
    max_manifest_bytes: int = MAX_MANIFEST_BYTES,
) -> ArchiveParts:
    """Read a cube archive written by :func:`write_archive`, with its checksums and bundle members.

    Members are streamed: each is inflated in chunks, hashed incrementally and parsed line by line,
    and the bytes really inflated (not the sizes the archive declares) are counted against the
    limits below, so memory stays bounded by the limits and the records read, whatever the archive
    claims. Only the three members :func:`write_archive` writes are accepted, stored or deflated
    and unencrypted; a record line may be at most :data:`MAX_RECORD_BYTES` (16 MiB) long, and
    every number in the records must be finite.

    Args:
        path: The archive file.
        max_member_bytes: Most bytes ``items.jsonl`` or ``edges.jsonl`` may inflate to (default
            :data:`MAX_MEMBER_BYTES`, 512 MiB).
        max_total_bytes: Most bytes all members together may inflate to (default
            :data:`MAX_ARCHIVE_BYTES`, 512 MiB).
        max_ratio: Most times a member may expand over its compressed size once past
            :data:`RATIO_FLOOR_BYTES` (1 MiB) inflated (default :data:`MAX_COMPRESSION_RATIO`, 200).
        max_manifest_bytes: Most bytes ``manifest.json`` may inflate to (default
            :data:`MAX_MANIFEST_BYTES`, 16 MiB).

    Returns:
        The cube with its header, items and edges, the verified checksum map and the raw bundle
        members (see :class:`ArchiveParts`).

    Raises:
        ArchiveIOError: If the file does not exist, is a directory or cannot be opened.
        CubeFormatError: If the file is not a cube archive (not a zip, unexpected, duplicate,
            missing, encrypted or unsupported-compression members), its format version is unknown
            or newer than :data:`ARCHIVE_FORMAT_VERSION` (:class:`NewerFormatError`), a member is
            over a limit, a checksum (:class:`ChecksumMismatchError`) or count does not match, a
            record does not validate, or a number is NaN or infinite.
        InvalidInputError: If a limit is not positive.

    """
    for name, limit in (
        ("max_member_bytes", max_member_bytes),
        ("max_total_bytes", max_total_bytes),
        ("max_ratio", max_ratio),
        ("max_manifest_bytes", max_manifest_bytes),
    ):
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            raise InvalidInputError(f"{name} must be a positive number, got {limit!r}")
    source = _archive_path(path, "read")
    if source.is_dir():
        raise _io_error("read", source, "it is a directory", errno.EISDIR)
    try:
        fh = source.open("rb")
    except OSError as exc:
        raise _io_error("read", source, exc) from exc
    with fh:
        try:
            archive_bytes = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise _io_error("read", source, exc) from exc
        budget = _Budget(source, archive_bytes, max_total_bytes, max_ratio)
        try:
            with zipfile.ZipFile(fh) as zf:
                return _read_cube(zf, budget, (max_manifest_bytes, max_member_bytes))
        except CubeFormatError:
            raise
        except _ZIP_ERRORS as exc:
            raise CubeFormatError(f"{source}: not a readable cube archive ({exc})") from exc


def read_archive(
    path: str | Path,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_ARCHIVE_BYTES,
    max_ratio: float = MAX_COMPRESSION_RATIO,
    max_manifest_bytes: int = MAX_MANIFEST_BYTES,
) -> MemCube:
    """Read a cube archive written by :func:`write_archive`; see :func:`read_archive_parts` for limits and errors."""
    return read_archive_parts(
        path,
        max_member_bytes=max_member_bytes,
        max_total_bytes=max_total_bytes,
        max_ratio=max_ratio,
        max_manifest_bytes=max_manifest_bytes,
    ).cube
