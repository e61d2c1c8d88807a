"""MemCube: the one unit of memory, and its archive format.

A MemCube (MemOS §4) is a metadata header around a typed payload. The header carries identity,
ownership, ACL, provenance, version, priority, timestamps, lifecycle state and storage profile.
The payload is one of:

* :class:`PlaintextPayload` — a tree/graph of :class:`~memos_agents.schema.MemoryItem` kept in a
  plaintext store (embedded SQLite by default).
* :class:`ActivationPayload` — a KV cache of a Hugging Face model (declared here; the worker that
  builds and injects it arrives with the activation-memory issue).
* :class:`ParametricPayload` — a LoRA adapter trained with peft (declared here likewise).

Archives: :func:`write_archive` / :func:`read_archive` store a cube in one zip file holding
``manifest.json`` (format name and version, header, counts, SHA-256 of the header and of each
member), ``items.jsonl`` and ``edges.jsonl``. Readers refuse unknown formats, newer versions and
checksum mismatches. Checksums catch corruption, not tampering: they are not signatures.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos_agents.errors import CubeFormatError
from memos_agents.schema import Edge, LifecycleState, MemoryItem, as_utc, utcnow, validate_id

#: Name written into every archive manifest.
ARCHIVE_FORMAT = "memos-cube"
#: Current archive format version; readers refuse anything newer.
ARCHIVE_FORMAT_VERSION = 1


class Permission(StrEnum):
    """What an ACL entry allows on a cube."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class AclEntry(BaseModel):
    """One access-control entry: a principal (user id or ``*``) and what it may do."""

    model_config = ConfigDict(extra="forbid")

    principal: str
    permissions: list[Permission]


class StorageProfile(BaseModel):
    """Where and how a cube's payload is stored."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "sqlite"
    embedding_model: str | None = None
    embedding_dim: int | None = Field(default=None, ge=1)


class PlaintextPayload(BaseModel):
    """Plaintext memory: items and edges live in the plaintext store under the cube id."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["plaintext"] = "plaintext"


class ActivationPayload(BaseModel):
    """Activation memory: a KV cache of a Hugging Face model (declared type; no worker yet)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["activation"] = "activation"
    model_name_or_path: str
    cache_path: str | None = None
    num_tokens: int | None = None


class ParametricPayload(BaseModel):
    """Parametric memory: a peft LoRA adapter (declared type; no trainer yet)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["parametric"] = "parametric"
    base_model: str
    adapter_path: str | None = None
    rank: int | None = None


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

    """

    model_config = ConfigDict(extra="forbid")

    cube_id: str
    owner_id: str
    acl: list[AclEntry] = Field(default_factory=list)
    description: str = ""
    source: str | None = None
    model: str | None = None
    priority: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    version: int = Field(default=1, ge=1)
    state: LifecycleState = LifecycleState.ACTIVATED
    storage: StorageProfile = Field(default_factory=StorageProfile)
    payload: Payload = Field(default_factory=PlaintextPayload)

    @field_validator("cube_id", "owner_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        validate_id(value)
        return value

    @field_validator("created_at", "updated_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    def allows(self, user_id: str, permission: Permission) -> bool:
        """Return True if ``user_id`` may do ``permission`` on this cube.

        The owner may do everything; otherwise an ACL entry for the user or ``*`` must list the
        permission (``admin`` implies ``write`` implies ``read``).
        """
        if user_id == self.owner_id:
            return True
        implied = {
            Permission.READ: {Permission.READ, Permission.WRITE, Permission.ADMIN},
            Permission.WRITE: {Permission.WRITE, Permission.ADMIN},
            Permission.ADMIN: {Permission.ADMIN},
        }[permission]
        return any(e.principal in (user_id, "*") and implied & set(e.permissions) for e in self.acl)


class MemCube(BaseModel):
    """A MemCube as held in memory: its header plus, for exports, its plaintext content."""

    header: CubeHeader
    items: list[MemoryItem] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header_sha(header: object) -> str:
    return _sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())


def write_archive(path: str | Path, cube: MemCube) -> Path:
    """Write ``cube`` to one zip archive.

    Args:
        path: Target file; parent directories are created; an existing file is replaced.
        cube: The header, items (with embeddings) and edges to write.

    Returns:
        The path written.

    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    items = "".join(item.model_dump_json() + "\n" for item in cube.items).encode()
    edges = "".join(edge.model_dump_json() + "\n" for edge in cube.edges).encode()
    header = json.loads(cube.header.model_dump_json())
    manifest = {
        "format": ARCHIVE_FORMAT,
        "format_version": ARCHIVE_FORMAT_VERSION,
        "header": header,
        "counts": {"items": len(cube.items), "edges": len(cube.edges)},
        "sha256": {"header": _header_sha(header), "items.jsonl": _sha256(items), "edges.jsonl": _sha256(edges)},
    }
    tmp = target.with_suffix(target.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
        zf.writestr("items.jsonl", items)
        zf.writestr("edges.jsonl", edges)
    tmp.replace(target)
    return target


def read_archive(path: str | Path) -> MemCube:
    """Read a cube archive written by :func:`write_archive`.

    Args:
        path: The archive file.

    Returns:
        The cube with its header, items and edges.

    Raises:
        CubeFormatError: If the file is not a cube archive, its format version is unknown or
            newer than :data:`ARCHIVE_FORMAT_VERSION`, a checksum or count does not match, or a
            record does not validate.

    """
    source = Path(path)
    try:
        with zipfile.ZipFile(source) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
                raise CubeFormatError(f"{source} is not a {ARCHIVE_FORMAT} archive")
            version = manifest.get("format_version")
            if not isinstance(version, int) or version < 1:
                raise CubeFormatError(f"{source}: unknown format version {version!r}")
            if version > ARCHIVE_FORMAT_VERSION:
                raise CubeFormatError(
                    f"{source}: format version {version} is newer than this memos-agents supports "
                    f"({ARCHIVE_FORMAT_VERSION}); upgrade memos-agents to read it"
                )
            members = {name: zf.read(name) for name in ("items.jsonl", "edges.jsonl")}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error) as exc:
        raise CubeFormatError(f"{source}: not a readable cube archive ({exc})") from exc
    sums, counts = manifest.get("sha256"), manifest.get("counts")
    if not isinstance(sums, dict) or not isinstance(counts, dict):
        raise CubeFormatError(f"{source}: manifest lacks checksums or counts")
    if sums.get("header") != _header_sha(manifest.get("header")):
        raise CubeFormatError(f"{source}: checksum mismatch for the header")
    for name, data in members.items():
        if sums.get(name) != _sha256(data):
            raise CubeFormatError(f"{source}: checksum mismatch for {name}")
    try:
        header = CubeHeader.model_validate(manifest["header"])
        items = [MemoryItem.model_validate_json(line) for line in io.BytesIO(members["items.jsonl"]) if line.strip()]
        edges = [Edge.model_validate_json(line) for line in io.BytesIO(members["edges.jsonl"]) if line.strip()]
    except (ValidationError, KeyError) as exc:
        raise CubeFormatError(f"{source}: invalid record ({exc})") from exc
    if counts.get("items") != len(items) or counts.get("edges") != len(edges):
        raise CubeFormatError(f"{source}: counts in manifest do not match the content")
    return MemCube(header=header, items=items, edges=edges)
