"""The MemStore registry as a MemOS component: ``MemOS.registry`` (see :mod:`memos_agents.infra.registry`).

Every operation is one flow (sync and async twins share it), run as the calling user: the store
checks visibility, the publisher and the cube's ACL inside the transaction of each registry op,
and audits it. Files (bundles in the registry directory, publisher keys) are written by the
facade, in :class:`~memos_agents.flow.Compute` steps.
"""

from __future__ import annotations

import builtins
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from memos_agents.cube import (
    CubeHeader,
    MemCube,
    archive_members,
    check_user_cube_id,
    content_checksum,
    read_archive_parts,
)
from memos_agents.errors import (
    ArchiveIOError,
    ChecksumMismatchError,
    ConfigError,
    IncompatibleBundleError,
    InvalidInputError,
    RegistryEntryNotFoundError,
    TamperedBundleError,
    UntrustedPublisherError,
)
from memos_agents.flow import Compute, Flow
from memos_agents.infra import registry
from memos_agents.infra.registry import (
    Access,
    BundleManifest,
    EntryKind,
    EntryVisibility,
    RegistryEntry,
    RevokeResult,
    Subscription,
    bundle_path,
    check_name,
    check_version,
    entry_key,
)
from memos_agents.plaintext.stores import base
from memos_agents.schema import (
    LifecycleState,
    MemoryItem,
    MemoryType,
    SearchFilters,
    Visibility,
    validate_id,
    validated,
)

if TYPE_CHECKING:
    from memos_agents.os import MemOS


class MemStore:
    """Publish, find, subscribe to and exchange MemCubes (MemOS §5.3 MemStore).

    Reached as ``MemOS.registry``; every method runs as ``user_id``. See
    :mod:`memos_agents.infra.registry` for the model (entries, subscriptions, visibility,
    signatures) and ``docs/architecture.md`` ("MemStore") for how it is stored.

    Args:
        mos: The MemOS whose store holds the registry and whose config places its files.

    """

    def __init__(self, mos: MemOS) -> None:
        self._mos = mos

    @property
    def keys(self) -> registry.PublisherKeys:
        """The publishers' private keys (``config.registry.keys_dir``, default ``<home>/keys``)."""
        return registry.PublisherKeys(self._mos.config.keys_dir)

    @property
    def path(self) -> Path:
        """The registry directory (``config.registry.path``, default ``<home>/registry``)."""
        return self._mos.config.registry_path

    # -- publish -------------------------------------------------------------------------------------
    def publish(
        self,
        cube_id: str,
        user_id: str,
        *,
        name: str,
        version: str,
        kind: EntryKind | str = EntryKind.SNAPSHOT,
        description: str | None = None,
        tags: Sequence[str] = (),
        licence: str | None = None,
        visibility: EntryVisibility | str = EntryVisibility.PUBLIC,
        audience: Sequence[str] = (),
        access: Access | str = Access.READ,
    ) -> RegistryEntry:
        """Publish a cube under ``name@version``, signed with the publisher's Ed25519 key.

        A ``snapshot`` copies what the publisher may read of the cube now, except private items
        (and edges touching them), into a read-only cube ``name@version`` and writes it as a
        signed bundle to ``<registry>/bundles/<name>/<version>.memcube``; the copy, the entry and
        the audit entries are stored in one transaction. A ``live`` entry serves the cube itself.

        Args:
            cube_id: The cube to publish (the caller needs share or admin on it).
            user_id: The publisher.
            name: Registry name: 1-64 of ``[a-z0-9._-]``; later versions only by its first publisher.
            version: Semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``, new for the name.
            kind: ``snapshot`` (default) or ``live``.
            description: Shown in listings (None: the cube's description).
            tags: Labels to find it by (at most 32).
            licence: The licence it is shared under, e.g. ``CC-BY-4.0``.
            visibility: ``public`` (default: everyone sees it, guests included) or ``restricted``.
            audience: Who else sees a restricted entry.
            access: ``read`` (default) or ``write`` (live entries: subscribers may get role writer).

        Returns:
            The stored entry (with its manifest, public key and signature).

        Raises:
            InvalidInputError: A malformed name, version, tag, ...; write access on a snapshot.
            RegistryEntryExistsError: ``name@version`` is already published (or was, and was revoked).
            PermissionDeniedError: No share on the cube; the name belongs to another publisher.
            CubeExistsError: A cube ``name@version`` exists already (a snapshot's id).
            UntrustedPublisherError: The registry knows another key for this publisher.
            CubeNotFoundError: No such cube.
            ArchiveIOError: The bundle or the key cannot be written.

        """
        flow = self._publish(
            cube_id, user_id, name, version, kind, description, tags, licence, visibility, audience, access
        )
        return self._mos._run(flow, user_id)

    async def apublish(
        self,
        cube_id: str,
        user_id: str,
        *,
        name: str,
        version: str,
        kind: EntryKind | str = EntryKind.SNAPSHOT,
        description: str | None = None,
        tags: Sequence[str] = (),
        licence: str | None = None,
        visibility: EntryVisibility | str = EntryVisibility.PUBLIC,
        audience: Sequence[str] = (),
        access: Access | str = Access.READ,
    ) -> RegistryEntry:
        """Async twin of :meth:`publish`."""
        flow = self._publish(
            cube_id, user_id, name, version, kind, description, tags, licence, visibility, audience, access
        )
        return await self._mos._arun(flow, user_id)

    def _publish(
        self,
        cube_id: str,
        user_id: str,
        name: str,
        version: str,
        kind: EntryKind | str,
        description: str | None,
        tags: Sequence[str],
        licence: str | None,
        visibility: EntryVisibility | str,
        audience: Sequence[str],
        access: Access | str,
    ) -> Flow[RegistryEntry]:
        validate_id(cube_id, "cube_id")
        name, version = check_name(name), check_version(version)
        for what, value in (("tags", tags), ("audience", audience)):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise InvalidInputError(f"{what} must be a list of strings, not a single string")
        try:
            kind, visibility, access = EntryKind(kind), EntryVisibility(visibility), Access(access)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if kind is EntryKind.SNAPSHOT:
            header, items, edges = yield [
                base.GetCubeOp(cube_id),
                base.ListOp(cube_id, with_embeddings=True),
                base.EdgesOp(cube_id),
            ]
            cube = _snapshot(cast(CubeHeader, header), items, edges, entry_key(name, version), user_id)
            members = archive_members(cube, bundle=True)  # serialised once: checksum, size and bundle
            manifest, items_json, edges_json = members
            counts = registry.content_of(cube.items)
            extra: dict[str, Any] = {
                "edges": len(cube.edges),
                "size_bytes": len(items_json) + len(edges_json),
                "checksum": content_checksum(manifest["sha256"]),
            }
        else:
            (header,) = yield [base.GetCubeOp(cube_id)]
            every_state = list(LifecycleState)
            found = yield [
                base.CountOp(cube_id, SearchFilters(memory_types=[t], statuses=every_state)) for t in MemoryType
            ]
            counts = {t.value: int(n) for t, n in zip(MemoryType, found, strict=True) if n}
            cube, extra = None, {}
        header = cast(CubeHeader, header)
        entry = _entry(
            name=name,
            version=version,
            kind=kind,
            cube_id=cube.header.cube_id if cube is not None else cube_id,
            source_cube_id=cube_id,
            publisher=user_id,
            visibility=visibility,
            audience=list(audience),
            access=access,
            manifest={
                "publisher": user_id,
                "description": header.description if description is None else description,
                "tags": list(tags),
                "licence": licence,
                "memory_types": counts,
                "items": sum(counts.values()),
                "embedding_model": header.storage.embedding_model,
                "embedding_dim": header.storage.embedding_dim,
                **extra,
            },
        )
        key = yield Compute(lambda: self.keys.get(user_id))
        assert key is not None
        entry = registry.sign(entry, key)
        if cube is None:
            (stored,) = yield [base.PublishOp(entry)]
            return cast(RegistryEntry, stored)
        final = bundle_path(self.path, name, version)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{id(entry):x}.tmp")
        yield Compute(lambda: registry.write_bundle(tmp, cube, entry, members))
        try:
            _, stored = yield [base.ImportCubeOp(cube.header, cube.items, cube.edges), base.PublishOp(entry)]
        except BaseException:
            registry.remove_quietly(tmp)
            raise
        yield Compute(lambda: _move(tmp, final))
        return cast(RegistryEntry, stored)

    # -- find ---------------------------------------------------------------------------------------
    def get(self, name: str, user_id: str, *, version: str | None = None) -> RegistryEntry:
        """Return ``name@version`` (None: the latest current release) if the caller sees it.

        Raises:
            RegistryEntryNotFoundError: None that the caller may see.
            InvalidInputError: A malformed name or version.

        """
        return cast(RegistryEntry, self._mos._run(self._one(base.GetPublishedOp(name, version)), user_id))

    async def aget(self, name: str, user_id: str, *, version: str | None = None) -> RegistryEntry:
        """Async twin of :meth:`get`."""
        return cast(RegistryEntry, await self._mos._arun(self._one(base.GetPublishedOp(name, version)), user_id))

    def list(
        self,
        user_id: str,
        *,
        text: str | None = None,
        name: str | None = None,
        tag: str | None = None,
        publisher: str | None = None,
        include_revoked: bool = False,
        limit: int = 100,
    ) -> builtins.list[RegistryEntry]:
        """List (and search) the entries the caller sees: by name, then newest version first.

        Args:
            user_id: The caller (any id: guests see public entries only).
            text: Every word must occur in the name, description or tags (any case).
            name: Only this name.
            tag: Only entries carrying this tag.
            publisher: Only this publisher's.
            include_revoked: Also revoked entries.
            limit: At most this many (1-1,000; default 100).

        Raises:
            InvalidInputError: A malformed filter or limit.

        """
        op = base.ListPublishedOp(text, name, tag, publisher, include_revoked, limit)
        return cast(builtins.list[RegistryEntry], self._mos._run(self._one(op), user_id))

    async def alist(
        self,
        user_id: str,
        *,
        text: str | None = None,
        name: str | None = None,
        tag: str | None = None,
        publisher: str | None = None,
        include_revoked: bool = False,
        limit: int = 100,
    ) -> builtins.list[RegistryEntry]:
        """Async twin of :meth:`list`."""
        op = base.ListPublishedOp(text, name, tag, publisher, include_revoked, limit)
        return cast(builtins.list[RegistryEntry], await self._mos._arun(self._one(op), user_id))

    def search(
        self, text: str, user_id: str, *, tag: str | None = None, limit: int = 100
    ) -> builtins.list[RegistryEntry]:
        """Entries whose name, description or tags hold every word of ``text`` (see :meth:`list`)."""
        return self.list(user_id, text=text, tag=tag, limit=limit)

    async def asearch(
        self, text: str, user_id: str, *, tag: str | None = None, limit: int = 100
    ) -> builtins.list[RegistryEntry]:
        """Async twin of :meth:`search`."""
        return await self.alist(user_id, text=text, tag=tag, limit=limit)

    # -- subscriptions --------------------------------------------------------------------------------
    def subscribe(
        self, name: str, user_id: str, *, version: str | None = None, access: Access | str = Access.READ
    ) -> Subscription:
        """Subscribe the caller to ``name`` (``version``: pinned to it; None: the latest current release).

        A snapshot entry is read as it was published; a live entry as its cube changes, read or
        (``access="write"``, when published so) read-write through the cube's writer role. From
        then on ``MemOS.search`` without ``cube_ids`` also reads the subscribed cube, each result
        labelled ``published="name@version"``. Subscribing again to another version replaces it.

        Raises:
            RegistryEntryNotFoundError: No such entry the caller sees, or it was revoked.
            PermissionDeniedError: Write access that the entry does not offer.
            ConfigError: Its embeddings come from another embedding dimension or model than this MemOS's.
            CubeNotFoundError: Its cube was deleted.

        """
        return self._mos._run(self._subscribe(name, version, access), user_id)

    async def asubscribe(
        self, name: str, user_id: str, *, version: str | None = None, access: Access | str = Access.READ
    ) -> Subscription:
        """Async twin of :meth:`subscribe`."""
        return await self._mos._arun(self._subscribe(name, version, access), user_id)

    def _subscribe(self, name: str, version: str | None, access: Access | str) -> Flow[Subscription]:
        (entry,) = yield [base.GetPublishedOp(name, version)]
        self._check_compatible(cast(RegistryEntry, entry).manifest, ConfigError)
        (sub,) = yield [base.SubscribeOp(name, cast(RegistryEntry, entry).version, str(access))]
        return cast(Subscription, sub)

    def unsubscribe(self, name: str, user_id: str) -> int:
        """End the caller's subscription to ``name`` (its grant removed at once); return 1, or 0 if none."""
        return cast(int, self._mos._run(self._one(base.UnsubscribeOp(name)), user_id))

    async def aunsubscribe(self, name: str, user_id: str) -> int:
        """Async twin of :meth:`unsubscribe`."""
        return cast(int, await self._mos._arun(self._one(base.UnsubscribeOp(name)), user_id))

    def subscriptions(self, user_id: str, *, name: str | None = None) -> builtins.list[Subscription]:
        """Return the caller's subscriptions; with ``name`` and as its publisher, every subscriber's to it."""
        return cast(builtins.list[Subscription], self._mos._run(self._one(base.ListSubscriptionsOp(name)), user_id))

    async def asubscriptions(self, user_id: str, *, name: str | None = None) -> builtins.list[Subscription]:
        """Async twin of :meth:`subscriptions`."""
        return cast(
            builtins.list[Subscription], await self._mos._arun(self._one(base.ListSubscriptionsOp(name)), user_id)
        )

    def revoke(
        self, name: str, user_id: str, *, version: str | None = None, subscriber: str | None = None
    ) -> RevokeResult:
        """As publisher: end one subscriber's access (``subscriber``), or withdraw ``name`` (one ``version``, or all).

        Access ends with the transaction: the subscriber's next op on the cube is refused. A
        withdrawn entry is hidden from listings and cannot be subscribed to; its version is never
        reused. Its snapshot cube stays with the publisher (``MemOS.delete_cube`` removes it).

        Raises:
            PermissionDeniedError: The caller is not the publisher (nor a system-wide admin).
            RegistryEntryNotFoundError: No such entry the caller sees.

        """
        op = base.RevokePublishedOp(name, version, subscriber)
        return cast(RevokeResult, self._mos._run(self._one(op), user_id))

    async def arevoke(
        self, name: str, user_id: str, *, version: str | None = None, subscriber: str | None = None
    ) -> RevokeResult:
        """Async twin of :meth:`revoke`."""
        op = base.RevokePublishedOp(name, version, subscriber)
        return cast(RevokeResult, await self._mos._arun(self._one(op), user_id))

    # -- bundles ------------------------------------------------------------------------------------
    def export(self, name: str, user_id: str, path: str | Path, *, version: str | None = None) -> Path:
        """Write the signed bundle of a snapshot entry the caller sees to ``path`` (verified first).

        Raises:
            RegistryEntryNotFoundError: No such entry the caller sees (a revoked one: only its publisher).
            InvalidInputError: A live entry (publish a snapshot to exchange it as a file).
            ArchiveIOError: The bundle is not in this registry directory, or ``path`` cannot be written.
            TamperedBundleError: The stored bundle no longer verifies.

        """
        return self._mos._run(self._export(name, version, path, user_id), user_id)

    async def aexport(self, name: str, user_id: str, path: str | Path, *, version: str | None = None) -> Path:
        """Async twin of :meth:`export`."""
        return await self._mos._arun(self._export(name, version, path, user_id), user_id)

    def _export(self, name: str, version: str | None, path: str | Path, user_id: str) -> Flow[Path]:
        if not isinstance(path, str | os.PathLike):
            raise ArchiveIOError(f"cannot write bundle: {path!r} is not a file path")
        (found,) = yield [base.GetPublishedOp(name, version)]
        entry = cast(RegistryEntry, found)
        if entry.revoked_at is not None and entry.publisher != user_id:
            raise RegistryEntryNotFoundError(f"{entry.key} was revoked by its publisher")
        if entry.kind is not EntryKind.SNAPSHOT:
            raise InvalidInputError(f"{entry.key} is live: only snapshots are exchanged as bundles")
        source = bundle_path(self.path, entry.name, entry.version)

        def copy() -> Path:
            if not source.is_file():
                raise ArchiveIOError(
                    f"the bundle of {entry.key} is not in this registry directory ({source}); "
                    "it was published through another one"
                )
            self._verify(source, entry)
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            except OSError as exc:
                registry.remove_quietly(tmp)
                raise ArchiveIOError(f"cannot write bundle {target}: {exc}") from exc
            return target

        target: Path = yield Compute(copy)
        return target

    def _verify(
        self, path: str | Path, expected: RegistryEntry | None = None, *, allow_unsigned: bool = False
    ) -> registry.VerifiedBundle:
        """Read and verify a bundle (:func:`registry.verify_bundle`); with ``expected``, it must be that entry's."""
        try:
            parts = read_archive_parts(path)
        except ChecksumMismatchError as exc:
            raise TamperedBundleError(f"{exc}: the bundle was altered or corrupted") from exc
        trusted = self._mos.config.registry.trusted_keys
        verified = registry.verify_bundle(parts, allow_unsigned=allow_unsigned, trusted_keys=trusted)
        if expected is not None and (verified.entry is None or verified.entry.signature != expected.signature):
            raise TamperedBundleError(f"{path} is not the bundle the registry published as {expected.key}")
        return verified

    def import_bundle(
        self, path: str | Path, user_id: str, *, cube_id: str | None = None, allow_unsigned: bool | None = None
    ) -> CubeHeader:
        """Create a read-only cube from a bundle, after verifying it; the importer owns it.

        Checks, in order: the archive (format, sizes, member checksums), the publisher's signature
        over the entry, the trusted keys (``config.registry.trusted_keys``), the key this registry
        recorded for the publisher, the entry's checksum of the content, and that its embeddings
        match this MemOS's embedder. The cube's id defaults to ``name@version``; its ``source``
        records ``memstore:name@version``; its ACL is empty; it is searched by default (owned).

        Args:
            path: The bundle file.
            user_id: The importer.
            cube_id: Import under this id instead.
            allow_unsigned: Accept a bundle without a signature (None: ``config.registry.allow_unsigned``).

        Raises:
            NewerFormatError / CubeFormatError: A newer format, or not a readable bundle.
            TamperedBundleError: Content, entry or signature altered after signing.
            UnsignedBundleError: No signature and unsigned bundles are not allowed.
            UntrustedPublisherError: Signed by a key not trusted, or not the publisher's known key.
            IncompatibleBundleError: Another embedding model or dimension than this MemOS's.
            CubeExistsError: The target cube exists.
            ArchiveIOError: The file cannot be read.

        """
        flow = self._import(path, user_id, cube_id, allow_unsigned)
        return self._mos._run(flow, user_id)

    async def aimport_bundle(
        self, path: str | Path, user_id: str, *, cube_id: str | None = None, allow_unsigned: bool | None = None
    ) -> CubeHeader:
        """Async twin of :meth:`import_bundle`."""
        flow = self._import(path, user_id, cube_id, allow_unsigned)
        return await self._mos._arun(flow, user_id)

    def _import(
        self, path: str | Path, user_id: str, cube_id: str | None, allow_unsigned: bool | None
    ) -> Flow[CubeHeader]:
        if cube_id is not None:
            validate_id(cube_id, "cube_id")
        config = self._mos.config.registry
        unsigned_ok = config.allow_unsigned if allow_unsigned is None else bool(allow_unsigned)

        verified = cast(
            registry.VerifiedBundle, (yield Compute(lambda: self._verify(path, allow_unsigned=unsigned_ok)))
        )
        cube, entry = verified.cube, verified.entry
        if entry is not None:
            (known,) = yield [base.GetPublisherKeyOp(entry.publisher)]
            if known is not None and known != entry.public_key:
                raise UntrustedPublisherError(
                    f"bundle {entry.key} is signed by {registry.key_fingerprint(entry.public_key or '')}; "
                    f"this registry knows {entry.publisher!r} by {registry.key_fingerprint(known)}"
                )
            self._check_compatible(entry.manifest, IncompatibleBundleError)
        dim = cube.header.storage.embedding_dim
        if dim is not None and dim != self._mos.embedder.dim:
            raise IncompatibleBundleError(
                f"the bundle holds {dim}-d embeddings; this MemOS embeds with {self._mos.embedder.dim}-d"
            )
        target = check_user_cube_id(cube_id or (entry.key if entry is not None else cube.header.cube_id))
        try:
            header = CubeHeader.model_validate(
                {
                    **cube.header.model_dump(),
                    "cube_id": target,
                    "owner_id": user_id,
                    "acl": [],
                    "read_only": True,
                    "published_as": None,
                    "source": f"memstore:{entry.key}" if entry is not None else cube.header.source,
                    "version": 1,
                    "storage": {**cube.header.storage.model_dump(), "backend": type(self._mos.store).__name__},
                }
            )
        except ValidationError as exc:
            raise InvalidInputError(f"invalid cube header for {target!r}: {exc}") from exc
        yield [base.ImportCubeOp(header, cube.items, cube.edges)]
        return header

    # -- helpers ------------------------------------------------------------------------------------
    def _check_compatible(self, manifest: BundleManifest, error: type[Exception]) -> None:
        embedder = self._mos.embedder
        if manifest.embedding_dim is not None and manifest.embedding_dim != embedder.dim:
            raise error(
                f"it holds {manifest.embedding_dim}-d embeddings ({manifest.embedding_model}); "
                f"this MemOS embeds with {embedder.model_name} ({embedder.dim}-d)"
            )
        if manifest.embedding_model is not None and manifest.embedding_model != embedder.model_name:
            raise error(
                f"its embeddings come from {manifest.embedding_model}; this MemOS embeds with {embedder.model_name}"
            )

    @staticmethod
    def _one(op: Any) -> Flow[Any]:
        (result,) = yield [op]
        return result


def _snapshot(
    header: CubeHeader, items: Sequence[MemoryItem], edges: Sequence[Any], key: str, publisher: str
) -> MemCube:
    """Return the read-only copy a snapshot publishes: shared items only, uses reset, owned by the publisher."""
    shared = [
        i.model_copy(update={"access_count": 0, "last_accessed_at": None})
        for i in items
        if i.visibility is not Visibility.PRIVATE
    ]
    ids = {i.id for i in shared}
    kept = [e for e in edges if e.source_id in ids and e.target_id in ids]
    snap = CubeHeader(
        cube_id=key,
        owner_id=publisher,
        description=header.description,
        source=header.source,
        model=header.model,
        storage=header.storage,
        payload=header.payload,
        redaction=header.redaction,
        read_only=True,
        published_as=key,
    )
    return MemCube(header=snap, items=shared, edges=kept)


def _entry(**fields: Any) -> RegistryEntry:
    return validated(RegistryEntry, fields, "registry entry")


def _move(tmp: Path, final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    except OSError as exc:
        registry.remove_quietly(tmp)
        raise ArchiveIOError(f"cannot store bundle {final}: {exc}") from exc
