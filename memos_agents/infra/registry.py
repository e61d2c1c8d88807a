"""MemStore: the registry where agents publish, share and subscribe to MemCubes.

After the MemOS paper's MemStore (MemTensor 2025, §5.3: "an open memory marketplace" where memory
units are published, subscribed to and exchanged under access control). Here a registry entry is
a cube published under a **name** and a **semantic version** (https://semver.org, through the
``semver`` library) with a manifest, and is one of two kinds:

* ``snapshot``: a read-only copy of the cube taken when it was published (a cube of id
  ``name@version`` with ``CubeHeader.read_only``), also written as one signed **bundle** file in
  the registry directory. Subscribers read it as it was (a pinned version).
* ``live``: the cube itself; subscribers read it as it changes, or also write to it when the
  publisher allows (``access="write"``), through the cube's own roles (reader, writer).

Entries, subscriptions and publishers' public keys are kept **in the plaintext store** (SQLite
tables, Neo4j nodes, dicts in memory) through store ops (``PublishOp``, ``SubscribeOp``, ...),
so every process sharing a MemOS home, or a Neo4j database, sees the same registry, each op runs
in one transaction with the caller checked in it, and each is audited on the store's chain. The
op bodies are written once here as sans-IO generators (:func:`body`): each yields small requests
(:class:`ReadEntries`, :class:`ReadSubscriptions`, :class:`ReadKey`, :class:`ReadHeader`,
:class:`Apply`) that each backend serves inside its transaction.

Access:

* Who sees an entry (:func:`visible`): everyone when it is ``public``; else its publisher, the
  principals in its ``audience``, trusted code and system-wide admins. A guest (any caller with
  no grant) lists public entries only.
* Publishing needs ``share`` (or ``admin``) on the source cube; later versions of a name only by
  the name's first publisher. Published versions are immutable: never replaced, revoked ones too.
* Subscribing to an entry one sees adds an ACL entry (role ``reader``, or ``writer`` for a live
  entry published with write access) for the subscriber on the entry's cube, in the same
  transaction as the subscription record, unless the subscriber already had those permissions.
  Unsubscribing and the publisher's revocation remove that entry in the same way, so access ends
  with the transaction: the next op of the subscriber is refused by the store's ACL check. At most
  :data:`~memos_agents.cube.MAX_ACL_ENTRIES` (1,024) principals hold grants on one cube.

Bundles (:func:`write_bundle`, :func:`verify_bundle`) are cube archives of format version 2
holding ``registry.json`` (the entry, its manifest's ``checksum`` a SHA-256 over the archive's
member checksums) and ``signature.json`` (Ed25519, the ``cryptography`` library, over the
entry's signed fields). Publishers' private keys are PKCS#8 PEM files (mode 0600) in the keys
directory (default ``<home>/keys``); the registry records each publisher's public key at its
first publication (trust on first use) and refuses entries and bundles signed with another one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import semver
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos_agents.cube import (
    MAX_DESCRIPTION_CHARS,
    ROLE_PERMISSIONS,
    AclEntry,
    ArchiveMembers,
    ArchiveParts,
    CubeHeader,
    MemCube,
    Permission,
    Role,
    archive_members,
    content_checksum,
    write_archive,
)
from memos_agents.errors import (
    ArchiveIOError,
    CubeNotFoundError,
    InvalidInputError,
    PermissionDeniedError,
    RegistryEntryExistsError,
    RegistryEntryNotFoundError,
    TamperedBundleError,
    UnsignedBundleError,
    UntrustedPublisherError,
)
from memos_agents.schema import Id, Label, as_utc, check_text, validate_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from memos_agents.plaintext.stores.base import CallContext

#: A registry name: lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Most tags of an entry.
MAX_TAGS = 32
#: Most principals in a restricted entry's audience.
MAX_AUDIENCE = 256
#: Most entries one list returns.
MAX_LIST = 1_000
#: The signature algorithm of entries and bundles.
SIGNATURE_ALGORITHM = "ed25519"


class EntryKind(StrEnum):
    """What a registry entry serves: a read-only snapshot taken at publication, or the live cube."""

    SNAPSHOT = "snapshot"
    LIVE = "live"


class EntryVisibility(StrEnum):
    """Who sees (lists, reads, subscribes to) an entry: everyone, or its publisher and audience."""

    PUBLIC = "public"
    RESTRICTED = "restricted"


class Access(StrEnum):
    """What a subscription grants on the entry's cube: role ``reader`` or ``writer`` (live entries only)."""

    READ = "read"
    WRITE = "write"


#: The cube role a subscription's access is granted through.
ACCESS_ROLE = {Access.READ: Role.READER, Access.WRITE: Role.WRITER}


def check_name(name: object) -> str:
    """Return ``name`` if it is a registry name (:data:`NAME_PATTERN`); else raise InvalidInputError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else name
        raise InvalidInputError(
            f"malformed registry name {shown!r}: 1-64 characters of [a-z0-9._-], starting with a letter or digit"
        )
    return name


def check_version(version: object) -> str:
    """Return ``version`` if it is a semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``; else raise InvalidInputError.

    Build metadata (``+...``) is refused: it takes no part in precedence (semver.org §10), so two
    versions differing only in it could not both be published and be told apart.
    """
    if not isinstance(version, str) or len(version) > 48:
        raise InvalidInputError(f"malformed version {version!r}: a semantic version such as 1.2.0 or 2.0.0-rc.1")
    try:
        parsed = semver.Version.parse(version)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"malformed version {version!r}: {exc}") from None
    if parsed.build is not None:
        raise InvalidInputError(f"version {version!r}: build metadata (+...) is not allowed in published versions")
    return str(parsed)


def version_key(version: str) -> semver.Version:
    """Return the sortable semantic version of ``version`` (precedence as semver.org §11)."""
    return semver.Version.parse(version)


def entry_key(name: str, version: str) -> str:
    """Return ``name@version``: the entry's key and its snapshot cube's id."""
    return f"{name}@{version}"


class BundleManifest(BaseModel):
    """What a published cube holds, as its publisher describes and measures it.

    Attributes:
        publisher: Who published it.
        description: Free text (at most 4,096 characters).
        tags: Labels to find it by (at most :data:`MAX_TAGS`).
        licence: The licence the content is shared under (e.g. ``CC-BY-4.0``; None: not stated).
        memory_types: Items per memory type (WorkingMemory, LongTermMemory, UserMemory) when published.
        items / edges: How many items and edges (edges: None for live entries, not counted).
        size_bytes: Bytes of the snapshot's items and edges as JSON lines (None: live).
        embedding_model / embedding_dim: The embedder its vectors come from (None: not recorded).
        checksum: ``sha256:<hex>`` over the snapshot archive's member checksums
            (:func:`~memos_agents.cube.content_checksum`; None: live).
        format_version: The archive format version of the bundle.

    """

    model_config = ConfigDict(extra="forbid")

    publisher: Id
    description: str = ""
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS)
    licence: Label | None = None
    memory_types: dict[Label, int] = Field(default_factory=dict, max_length=16)
    items: int = Field(default=0, ge=0)
    edges: int | None = Field(default=None, ge=0)
    size_bytes: int | None = Field(default=None, ge=0)
    embedding_model: Label | None = None
    embedding_dim: int | None = Field(default=None, ge=1, le=65_536)
    checksum: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    format_version: int = Field(default=2, ge=1)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return check_text(value, "description", MAX_DESCRIPTION_CHARS, blank=True)


class RegistryEntry(BaseModel):
    """One published version of a cube.

    Attributes:
        name / version: The registry name and semantic version (``name@version`` is the key).
        kind: ``snapshot`` or ``live`` (see :class:`EntryKind`).
        cube_id: The cube subscribers read: the snapshot's (``name@version``) or the live cube.
        source_cube_id: The cube it was published from.
        publisher: Who published it (signs it; may revoke it).
        visibility: ``public`` or ``restricted`` (publisher and ``audience`` only).
        audience: Who else sees a restricted entry (at most :data:`MAX_AUDIENCE`).
        access: Most a subscriber may get: ``read``, or ``write`` (live entries only).
        manifest: See :class:`BundleManifest`.
        public_key: The publisher's Ed25519 public key, hex (None: unsigned).
        signature: Ed25519 signature of :meth:`signed_bytes`, hex (None: unsigned).
        published_at: Set by the store (UTC).
        revoked_at: When the publisher revoked it (None: current).

    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    kind: EntryKind = EntryKind.SNAPSHOT
    cube_id: Id
    source_cube_id: Id
    publisher: Id
    visibility: EntryVisibility = EntryVisibility.PUBLIC
    audience: list[Id] = Field(default_factory=list, max_length=MAX_AUDIENCE)
    access: Access = Access.READ
    manifest: BundleManifest
    public_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{128}$")
    published_at: datetime | None = None
    revoked_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("published_at", "revoked_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @property
    def key(self) -> str:
        """``name@version``."""
        return entry_key(self.name, self.version)

    def signed_bytes(self) -> bytes:
        """Return the canonical JSON the publisher signs: name, version, kind, publisher, source cube, manifest, key.

        Visibility, audience, access and the times are the registry's bookkeeping, not content:
        they are not signed (a publisher may widen an entry's audience without re-signing).
        """
        signed = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind.value,
            "publisher": self.publisher,
            "source_cube_id": self.source_cube_id,
            "manifest": self.manifest.model_dump(mode="json"),
            "public_key": self.public_key,
        }
        return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()


class Subscription(BaseModel):
    """A principal's subscription to one entry (one per subscriber and name).

    Attributes:
        subscriber: Who subscribed.
        name / version: The entry.
        cube_id: The cube it reads (the entry's).
        kind: ``snapshot`` (pinned) or ``live``.
        access: ``read`` or ``write``.
        granted: The role this subscription added to the cube's ACL (None: the subscriber already
            had those permissions; unsubscribing then removes nothing).
        subscribed_at: When (UTC).
        active: Whether the subscriber may still read the cube (set when listed; False when the
            cube was deleted or its ACL changed by other means).

    """

    model_config = ConfigDict(extra="forbid")

    subscriber: Id
    name: str
    version: str
    cube_id: Id
    kind: EntryKind
    access: Access = Access.READ
    granted: Role | None = None
    subscribed_at: datetime
    active: bool = True

    @property
    def key(self) -> str:
        """``name@version`` of the entry."""
        return entry_key(self.name, self.version)


class RevokeResult(BaseModel):
    """What a revocation did: the entries withdrawn and the subscriptions ended (``subscriber``, ``name@version``)."""

    revoked: list[str] = Field(default_factory=list)
    ended: list[tuple[str, str]] = Field(default_factory=list)


def visible(entry: RegistryEntry, ctx: CallContext) -> bool:
    """Whether ``ctx`` sees ``entry``: public, or its publisher, audience, trusted code, system-wide admins."""
    return (
        entry.visibility is EntryVisibility.PUBLIC
        or ctx.unrestricted
        or ctx.principal == entry.publisher
        or ctx.principal in entry.audience
    )


def matches(entry: RegistryEntry, text: str | None, tag: str | None, publisher: str | None) -> bool:
    """Whether ``entry`` matches a registry search.

    Every word of ``text`` must occur in its name, description or tags (any case), ``tag`` among
    its tags, and ``publisher`` must be its publisher.
    """
    if publisher is not None and entry.publisher != publisher:
        return False
    if tag is not None and tag.lower() not in (t.lower() for t in entry.manifest.tags):
        return False
    if text:
        haystack = " ".join([entry.name, entry.manifest.description, *entry.manifest.tags]).lower()
        return all(word in haystack for word in text.lower().split())
    return True


def latest(entries: Sequence[RegistryEntry]) -> RegistryEntry | None:
    """Return the highest-precedence entry among ``entries``, releases before pre-releases (None: none)."""
    if not entries:
        return None
    releases = [e for e in entries if version_key(e.version).prerelease is None]
    return max(releases or entries, key=lambda e: version_key(e.version))


# -- signatures ---------------------------------------------------------------------------------------
def _crypto() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """Return the raw 32-byte Ed25519 public key of ``key`` as hex."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def key_fingerprint(public_key: str) -> str:
    """Return a short fingerprint of a hex public key: ``SHA256:`` and the first 16 hex digits of its digest."""
    return "SHA256:" + hashlib.sha256(bytes.fromhex(public_key)).hexdigest()[:16]


def sign(entry: RegistryEntry, key: Ed25519PrivateKey) -> RegistryEntry:
    """Return ``entry`` with its publisher's public key and the Ed25519 signature of its signed bytes."""
    with_key = entry.model_copy(update={"public_key": public_key_hex(key), "signature": None})
    return with_key.model_copy(update={"signature": key.sign(with_key.signed_bytes()).hex()})


def signature_valid(entry: RegistryEntry) -> bool:
    """Whether ``entry`` carries a signature that its own public key verifies (False: unsigned or not)."""
    if entry.public_key is None or entry.signature is None:
        return False
    from cryptography.exceptions import InvalidSignature

    try:
        public = _crypto().Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry.public_key))
        public.verify(bytes.fromhex(entry.signature), entry.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


class PublisherKeys:
    """Publishers' Ed25519 private keys, one PKCS#8 PEM file per principal in ``directory`` (mode 0600).

    A key is created on a publisher's first publication. The files are not encrypted (as an SSH
    key without a passphrase): whoever can read the directory can publish under those names, so
    keep it private to the account that runs the agents.

    Args:
        directory: Where the key files live (created on first use, mode 0700).

    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, principal: str) -> Path:
        """Return the key file of ``principal``."""
        return self.directory / f"{validate_id(principal, 'publisher')}.ed25519.pem"

    def get(self, principal: str, *, create: bool = True) -> Ed25519PrivateKey | None:
        """Return ``principal``'s private key, creating it (atomically, 0600) when missing and ``create``.

        Raises:
            ArchiveIOError: The directory or file cannot be read or written, or holds no Ed25519 key.

        """
        from cryptography.hazmat.primitives import serialization

        path = self.path(principal)
        for _ in range(2):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                if not create:
                    return None
                self._create(path)
                continue
            except OSError as exc:
                raise ArchiveIOError(f"cannot read publisher key {path}: {exc}") from exc
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as exc:
                raise ArchiveIOError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
            if not isinstance(key, _crypto().Ed25519PrivateKey):
                raise ArchiveIOError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
            return cast("Ed25519PrivateKey", key)
        raise ArchiveIOError(f"cannot create publisher key {path}")

    def _create(self, path: Path) -> None:
        from cryptography.hazmat.primitives import serialization

        key = _crypto().Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process created it first: read theirs
        except OSError as exc:
            raise ArchiveIOError(f"cannot create publisher key {path}: {exc}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())


# -- bundles --------------------------------------------------------------------------------------------
def bundle_path(directory: Path, name: str, version: str) -> Path:
    """Return where the registry directory keeps the bundle of ``name@version``."""
    return Path(directory) / "bundles" / check_name(name) / f"{check_version(version)}.memcube"


def write_bundle(path: Path, cube: MemCube, entry: RegistryEntry, members: ArchiveMembers | None = None) -> Path:
    """Write ``cube`` as a signed bundle: a format-2 archive with ``registry.json`` and ``signature.json``.

    ``entry`` must be signed (:func:`sign`) and its manifest's checksum must be ``cube``'s.
    ``members``: ``archive_members(cube, bundle=True)`` if already computed (the cube is then not
    serialised again).

    Raises:
        ArchiveIOError: The file cannot be written.
        InvalidInputError: ``entry`` is unsigned or its checksum is not ``cube``'s.

    """
    if entry.signature is None or entry.public_key is None:
        raise InvalidInputError("a bundle's entry must be signed")
    members = members if members is not None else archive_members(cube, bundle=True)
    if entry.manifest.checksum != content_checksum(members[0]["sha256"]):
        raise InvalidInputError("the entry's checksum is not the cube's")
    unsigned = entry.model_dump(mode="json", exclude={"signature", "published_at", "revoked_at"})
    extras = {
        "registry.json": json.dumps(unsigned, sort_keys=True, indent=1).encode(),
        "signature.json": json.dumps(
            {
                "algorithm": SIGNATURE_ALGORITHM,
                "public_key": entry.public_key,
                "signature": entry.signature,
                "key_fingerprint": key_fingerprint(entry.public_key),
            },
            indent=1,
        ).encode(),
    }
    return write_archive(path, cube, extras=extras, members=members)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose content matched its manifest: its cube and, when signed, its verified entry."""

    cube: MemCube
    entry: RegistryEntry | None


def verify_bundle(parts: ArchiveParts, *, allow_unsigned: bool, trusted_keys: Sequence[str] = ()) -> VerifiedBundle:
    """Check a bundle read by :func:`~memos_agents.cube.read_archive_parts` (its member checksums already verified).

    In order: a signature must be there (else :class:`UnsignedBundleError`, unless
    ``allow_unsigned``), must verify against the public key it names over the entry in
    ``registry.json`` (else :class:`TamperedBundleError`), the key must be among ``trusted_keys``
    when any are given (else :class:`UntrustedPublisherError`), and the entry's checksum must be
    the one of the archive's content (else :class:`TamperedBundleError`: content replaced, with
    checksums recomputed, after signing).

    Raises:
        UnsignedBundleError / TamperedBundleError / UntrustedPublisherError: See above.

    """
    raw_entry, raw_sig = parts.extras.get("registry.json"), parts.extras.get("signature.json")
    if raw_sig is None:
        if not allow_unsigned:
            raise UnsignedBundleError("the bundle carries no publisher signature (pass allow_unsigned to import it)")
        entry = _parse_entry(raw_entry) if raw_entry is not None else None
        if entry is not None and entry.manifest.checksum not in (None, content_checksum(parts.sha256)):
            raise TamperedBundleError("the bundle's content does not match its manifest's checksum")
        return VerifiedBundle(parts.cube, None)
    if raw_entry is None:
        raise TamperedBundleError("the bundle is signed but carries no registry.json entry")
    try:
        sig = json.loads(raw_sig)
        algorithm, public_key, signature = sig["algorithm"], sig["public_key"], sig["signature"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TamperedBundleError(f"signature.json is malformed ({type(exc).__name__})") from None
    if algorithm != SIGNATURE_ALGORITHM:
        raise TamperedBundleError(f"unknown signature algorithm {str(algorithm)[:40]!r}")
    entry = _parse_entry(raw_entry)
    try:
        signed = entry.model_copy(update={"public_key": public_key, "signature": signature})
        signed = RegistryEntry.model_validate(signed.model_dump())
    except ValidationError:
        raise TamperedBundleError("signature.json holds a malformed key or signature") from None
    if not signature_valid(signed):
        raise TamperedBundleError(f"the signature does not verify with key {key_fingerprint(public_key)}")
    if trusted_keys and public_key not in trusted_keys:
        raise UntrustedPublisherError(
            f"bundle {signed.key} is signed by {key_fingerprint(public_key)}, which is not among the trusted keys"
        )
    if signed.manifest.checksum != content_checksum(parts.sha256):
        raise TamperedBundleError(f"bundle {signed.key}: the content is not what its publisher signed")
    return VerifiedBundle(parts.cube, signed)


def _parse_entry(raw: bytes | None) -> RegistryEntry:
    try:
        return RegistryEntry.model_validate_json(raw or b"")
    except (ValidationError, ValueError) as exc:
        raise TamperedBundleError(f"registry.json is not a valid registry entry ({type(exc).__name__})") from None


# -- the store ops' bodies --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadEntries:
    """Request: every entry of ``name`` (None: every entry of the registry)."""

    name: str | None


@dataclass(frozen=True)
class ReadSubscriptions:
    """Request: subscriptions of ``subscriber`` (None: anyone's) to ``name`` (None: any name)."""

    subscriber: str | None
    name: str | None


@dataclass(frozen=True)
class ReadKey:
    """Request: the public key the registry recorded for ``publisher`` (None: none yet)."""

    publisher: str


@dataclass(frozen=True)
class ReadHeader:
    """Request: the header of ``cube_id`` (None: no such cube); ``lock`` for a header the body may write."""

    cube_id: str
    lock: bool = False


@dataclass
class RegistryPlan:
    """What a body writes: entries (new with ``create``), subscriptions put and deleted, a key, new headers."""

    entries: list[tuple[RegistryEntry, bool]] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    unsubscribe: list[tuple[str, str]] = field(default_factory=list)  # (subscriber, name)
    key: tuple[str, str] | None = None  # (publisher, public key)
    headers: list[tuple[CubeHeader, CubeHeader]] = field(default_factory=list)  # (current, new)


@dataclass(frozen=True)
class Apply:
    """Request: write ``plan`` (headers at their next version, checked by the backend's grant check)."""

    plan: RegistryPlan


Request = ReadEntries | ReadSubscriptions | ReadKey | ReadHeader | Apply
Body = Generator[Request, Any, Any]


def body(op: Any, ctx: CallContext, now: datetime) -> Body:
    """Return the sans-IO body of a registry op run by ``ctx`` at ``now``; a backend serves its requests.

    Raises (from the body):
        InvalidInputError, PermissionDeniedError, RegistryEntryNotFoundError,
        RegistryEntryExistsError, UntrustedPublisherError, CubeNotFoundError: see each op.

    """
    from memos_agents.plaintext.stores import base

    bodies: dict[type, Callable[[Any, CallContext, datetime], Body]] = {
        base.PublishOp: _publish,
        base.GetPublishedOp: _get,
        base.ListPublishedOp: _list,
        base.SubscribeOp: _subscribe,
        base.UnsubscribeOp: _unsubscribe,
        base.RevokePublishedOp: _revoke,
        base.ListSubscriptionsOp: _subscriptions,
        base.GetPublisherKeyOp: _key,
    }
    return bodies[type(op)](op, ctx, now)


def drive(gen: Body, serve: Callable[[Request], Any]) -> Any:
    """Run ``gen`` to its end, answering each request with ``serve``; return its value (sync backends)."""
    value: Any = None
    while True:
        try:
            request = gen.send(value)
        except StopIteration as stop:
            return stop.value
        value = serve(request)


def _may_manage(entry: RegistryEntry, ctx: CallContext) -> bool:
    return ctx.unrestricted or ctx.principal == entry.publisher


def _pick(entries: Sequence[RegistryEntry], name: str, version: str | None, ctx: CallContext) -> RegistryEntry:
    """Return the entry of ``version`` (revoked too), or the latest current one, that ``ctx`` sees."""
    seen = [e for e in entries if visible(e, ctx)]
    if version is not None:
        found = next((e for e in seen if e.version == version), None)
    else:
        found = latest([e for e in seen if e.revoked_at is None])
    if found is None:
        shown = name if version is None else entry_key(name, version)
        raise RegistryEntryNotFoundError(f"no published entry {shown!r} that user {ctx.principal!r} may see")
    return found


def publisher_may_offer(header: CubeHeader, publisher: str, access: Access) -> bool:
    """Whether ``publisher`` may offer ``access`` on the cube of ``header``: share (or admin) and what it grants.

    A share holder grants at most its own permissions (as ``base.check_header_update`` allows for
    ACL changes), so publishing with write access needs the writer role's permissions too.
    """
    mine = header.permissions_of(publisher)
    if Permission.ADMIN in mine:
        return True
    return Permission.SHARE in mine and ROLE_PERMISSIONS[ACCESS_ROLE[access]] <= mine


def serves(entry: RegistryEntry, header: CubeHeader) -> bool:
    """Whether the cube of ``header`` is still the one ``entry`` serves, and its publisher may still offer it.

    Checked at every subscription: a deleted cube whose id was taken again by someone else, a
    snapshot id re-created as an ordinary cube, or a publisher whose share was revoked serve nothing.
    """
    if entry.kind is EntryKind.SNAPSHOT:
        return header.read_only and header.published_as == entry.key and header.owner_id == entry.publisher
    return publisher_may_offer(header, entry.publisher, entry.access)


def with_grant(header: CubeHeader, principal: str, role: Role) -> CubeHeader:
    """Return ``header`` with an ACL entry giving ``principal`` ``role`` (validated: at most 1,024 entries)."""
    acl = [*header.acl, AclEntry(principal=principal, role=role)]
    from memos_agents.schema import validated

    return validated(CubeHeader, {**header.model_dump(), "acl": [e.model_dump() for e in acl]}, "cube header")


def without_grant(header: CubeHeader, principal: str, role: Role) -> CubeHeader | None:
    """Return ``header`` without the ACL entry a subscription added (None: it is not there any more)."""
    for i, entry in enumerate(header.acl):
        if entry.principal == principal and entry.role is role and not entry.permissions:
            return header.model_copy(update={"acl": [*header.acl[:i], *header.acl[i + 1 :]]})
    return None


class _Headers:
    """The headers a body reads (each once, locked) and changes, in order."""

    def __init__(self) -> None:
        self.current: dict[str, CubeHeader | None] = {}
        self.new: dict[str, CubeHeader] = {}

    def get(self, cube_id: str) -> Generator[Request, Any, CubeHeader | None]:
        if cube_id in self.new:
            return self.new[cube_id]
        if cube_id not in self.current:
            self.current[cube_id] = yield ReadHeader(cube_id, lock=True)
        return self.current[cube_id]

    def set(self, header: CubeHeader) -> None:
        self.new[header.cube_id] = header

    def changes(self) -> list[tuple[CubeHeader, CubeHeader]]:
        out = []
        for cube_id, new in self.new.items():
            current = self.current.get(cube_id)
            assert current is not None
            out.append((current, new))
        return out


def _release(sub: Subscription, headers: _Headers) -> Generator[Request, Any, None]:
    """Remove the ACL entry ``sub`` added (when it did, and its cube and entry are still there)."""
    if sub.granted is None:
        return
    header = yield from headers.get(sub.cube_id)
    if header is not None:
        changed = without_grant(header, sub.subscriber, sub.granted)
        if changed is not None:
            headers.set(changed)


def _publish(op: Any, ctx: CallContext, now: datetime) -> Body:
    entry: RegistryEntry = op.entry
    if not ctx.unrestricted and entry.publisher != ctx.principal:
        raise PermissionDeniedError(f"user {ctx.principal!r} may publish only as itself, not as {entry.publisher!r}")
    if entry.kind is EntryKind.SNAPSHOT and entry.access is not Access.READ:
        raise InvalidInputError("a snapshot is read-only: its subscribers get read access only")
    existing: list[RegistryEntry] = yield ReadEntries(entry.name)
    if any(e.version == entry.version for e in existing):
        raise RegistryEntryExistsError(f"{entry.key} is already published (published versions are immutable)")
    owners = {e.publisher for e in existing}
    if owners and entry.publisher not in owners and not ctx.unrestricted:
        raise PermissionDeniedError(f"registry name {entry.name!r} belongs to {sorted(owners)[0]!r}")
    source: CubeHeader | None = yield ReadHeader(entry.source_cube_id)
    if source is None:
        raise CubeNotFoundError(f"no cube {entry.source_cube_id!r}")
    if not ctx.unrestricted and not publisher_may_offer(source, ctx.principal, entry.access):
        raise PermissionDeniedError(
            f"user {ctx.principal!r} may not publish cube {source.cube_id!r} with {entry.access.value} access: "
            "publishing needs share on it, and the permissions it offers"
        )
    target: CubeHeader | None = yield ReadHeader(entry.cube_id)
    if entry.kind is EntryKind.SNAPSHOT:
        if (
            target is None
            or entry.cube_id == entry.source_cube_id
            or target.published_as != entry.key
            or not target.read_only
            or target.owner_id != entry.publisher
        ):
            raise InvalidInputError(f"{entry.key}: a snapshot entry needs its read-only snapshot cube {entry.key!r}")
    elif entry.cube_id != entry.source_cube_id:
        raise InvalidInputError("a live entry serves the cube it was published from")
    elif entry.access is Access.WRITE and source.read_only:
        raise InvalidInputError(f"cube {source.cube_id!r} is read-only: it cannot be published with write access")
    plan = RegistryPlan()
    if entry.public_key is not None or entry.signature is not None:
        if not signature_valid(entry):
            raise UntrustedPublisherError(f"{entry.key}: the signature does not verify with the key it names")
        known: str | None = yield ReadKey(entry.publisher)
        if known is None:
            plan.key = (entry.publisher, entry.public_key or "")
        elif known != entry.public_key:
            raise UntrustedPublisherError(
                f"{entry.publisher!r} publishes here with key {key_fingerprint(known)}, "
                f"not {key_fingerprint(entry.public_key or '')}"
            )
    stored = entry.model_copy(update={"published_at": now, "revoked_at": None})
    plan.entries.append((stored, True))
    yield Apply(plan)
    return stored


def _get(op: Any, ctx: CallContext, now: datetime) -> Body:
    entries: list[RegistryEntry] = yield ReadEntries(op.name)
    return _pick(entries, op.name, op.version, ctx)


def _list(op: Any, ctx: CallContext, now: datetime) -> Body:
    entries: list[RegistryEntry] = yield ReadEntries(op.name)
    found = [
        e
        for e in entries
        if visible(e, ctx)
        and (op.include_revoked or e.revoked_at is None)
        and matches(e, op.text, op.tag, op.publisher)
    ]
    found.sort(key=lambda e: version_key(e.version), reverse=True)
    found.sort(key=lambda e: e.name)
    return found[: op.limit]


def _subscribe(op: Any, ctx: CallContext, now: datetime) -> Body:
    entries: list[RegistryEntry] = yield ReadEntries(op.name)
    entry = _pick(entries, op.name, op.version, ctx)
    if entry.revoked_at is not None:
        raise RegistryEntryNotFoundError(f"{entry.key} was revoked by its publisher")
    access = Access(op.access)
    if access is Access.WRITE and entry.access is not Access.WRITE:
        raise PermissionDeniedError(f"{entry.key} is published for reading only")
    headers = _Headers()
    header = yield from headers.get(entry.cube_id)
    if header is None:
        raise CubeNotFoundError(f"the cube of {entry.key} ({entry.cube_id!r}) no longer exists")
    if not serves(entry, header):
        raise RegistryEntryNotFoundError(
            f"{entry.key} no longer serves cube {entry.cube_id!r}: the cube was deleted or replaced, "
            "or its publisher lost the right to share it"
        )
    mine: list[Subscription] = yield ReadSubscriptions(ctx.principal, entry.name)
    old = mine[0] if mine else None
    if old is not None and (old.version, old.access) == (entry.version, access):
        return old  # already subscribed so: nothing changes
    if old is not None:
        yield from _release(old, headers)
        header = yield from headers.get(entry.cube_id)
        assert header is not None
    role = ACCESS_ROLE[access]
    granted: Role | None = None
    if not ROLE_PERMISSIONS[role] <= header.permissions_of(ctx.principal):
        headers.set(with_grant(header, ctx.principal, role))
        granted = role
    sub = Subscription(
        subscriber=ctx.principal,
        name=entry.name,
        version=entry.version,
        cube_id=entry.cube_id,
        kind=entry.kind,
        access=access,
        granted=granted,
        subscribed_at=now,
    )
    yield Apply(RegistryPlan(subscriptions=[sub], headers=headers.changes()))
    return sub


def _unsubscribe(op: Any, ctx: CallContext, now: datetime) -> Body:
    mine: list[Subscription] = yield ReadSubscriptions(ctx.principal, op.name)
    if not mine:
        return 0
    headers = _Headers()
    for sub in mine:
        yield from _release(sub, headers)
    unsubscribe = [(s.subscriber, s.name) for s in mine]
    yield Apply(RegistryPlan(unsubscribe=unsubscribe, headers=headers.changes()))
    return len(mine)


def _revoke(op: Any, ctx: CallContext, now: datetime) -> Body:
    entries: list[RegistryEntry] = yield ReadEntries(op.name)
    targets = [e for e in entries if visible(e, ctx) and op.version in (None, e.version)]
    if not targets:
        shown = op.name if op.version is None else entry_key(op.name, op.version)
        raise RegistryEntryNotFoundError(f"no published entry {shown!r} that user {ctx.principal!r} may see")
    for e in targets:
        if not _may_manage(e, ctx):
            raise PermissionDeniedError(f"only the publisher of {e.key} may revoke it")
    versions = {e.version for e in targets}
    subs: list[Subscription] = yield ReadSubscriptions(op.subscriber, op.name)
    ended = [s for s in subs if s.version in versions]
    headers = _Headers()
    for sub in ended:
        yield from _release(sub, headers)
    plan = RegistryPlan(unsubscribe=[(s.subscriber, s.name) for s in ended], headers=headers.changes())
    result = RevokeResult(ended=[(s.subscriber, s.key) for s in ended])
    if op.subscriber is None:  # the publication itself: withdrawn (kept, so the version is never reused)
        for e in targets:
            if e.revoked_at is None:
                plan.entries.append((e.model_copy(update={"revoked_at": now}), False))
                result.revoked.append(e.key)
    yield Apply(plan)
    return result


def _subscriptions(op: Any, ctx: CallContext, now: datetime) -> Body:
    subscriber: str | None = ctx.principal
    if op.name is not None:
        entries: list[RegistryEntry] = yield ReadEntries(op.name)
        if any(_may_manage(e, ctx) for e in entries):
            subscriber = None  # a name's publisher sees every subscriber
    elif ctx.unrestricted and op.everyone:
        subscriber = None
    subs: list[Subscription] = yield ReadSubscriptions(subscriber, op.name)
    out = []
    for sub in subs:
        header: CubeHeader | None = yield ReadHeader(sub.cube_id)
        active = header is not None and header.allows(sub.subscriber, Permission.READ)
        out.append(sub.model_copy(update={"active": active}))
    return out


def _key(op: Any, ctx: CallContext, now: datetime) -> Body:
    known: str | None = yield ReadKey(op.publisher)
    return known


def content_of(items: Sequence[Any]) -> dict[str, int]:
    """Return items per memory type of ``items`` (memories only, not topic nodes)."""
    from memos_agents.schema import NodeKind

    counts: dict[str, int] = {}
    for item in items:
        if item.node_kind is NodeKind.MEMORY:
            counts[item.memory_type.value] = counts.get(item.memory_type.value, 0) + 1
    return counts


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists (a temp bundle after a failed publish)."""
    with contextlib.suppress(OSError):
        path.unlink()
