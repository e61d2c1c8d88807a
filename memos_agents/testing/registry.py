"""MemStore registry section of the store conformance suite.

:class:`RegistryTests` is a mixin that :class:`~memos_agents.testing.conformance.StoreConformanceTests`
inherits: every backend stores entries, subscriptions and publisher keys, runs the registry ops'
bodies (:mod:`memos_agents.infra.registry`) in one transaction with the caller checked in it, and
grants and removes subscribers' access in that same transaction. Stores may be shared between
tests, so every test uses its own names, users and cubes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memos_agents.cube import AclEntry, CubeHeader, Permission, Role, StorageProfile
from memos_agents.errors import (
    CubeNotFoundError,
    InvalidInputError,
    PermissionDeniedError,
    RegistryEntryExistsError,
    RegistryEntryNotFoundError,
    UntrustedPublisherError,
)
from memos_agents.infra.registry import (
    BundleManifest,
    EntryKind,
    EntryVisibility,
    RegistryEntry,
    RevokeResult,
    Subscription,
    entry_key,
    sign,
)
from memos_agents.plaintext.stores.base import (
    SYSTEM,
    BaseMemoryStore,
    CallContext,
    DeleteOp,
    GetCubeOp,
    GetOp,
    GetPublishedOp,
    GetPublisherKeyOp,
    ImportCubeOp,
    ListAuditOp,
    ListOp,
    ListPublishedOp,
    ListSubscriptionsOp,
    PublishOp,
    RevokePublishedOp,
    SubscribeOp,
    UnsubscribeOp,
    UpdateCubeOp,
    WriteBatch,
    WriteOp,
)
from memos_agents.schema import utcnow
from memos_agents.testing.helpers import DIM, item

__all__ = ["RegistryTests"]


def _uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class _Publisher:
    """A principal with a key, a source cube and helpers to publish it."""

    def __init__(self, store: BaseMemoryStore) -> None:
        self.store = store
        self.id = _uid("pub")
        self.ctx = CallContext.of(self.id)
        self.key = Ed25519PrivateKey.generate()
        self.cube = "cube-" + uuid.uuid4().hex[:12]
        self.name = "n" + uuid.uuid4().hex[:10]
        store.create_cube(CubeHeader(cube_id=self.cube, owner_id=self.id, storage=StorageProfile(embedding_dim=DIM)))
        store.add(self.cube, [item("the shared fact"), item("another fact", 1)], ctx=self.ctx)

    def entry(self, version: str = "1.0.0", kind: EntryKind = EntryKind.SNAPSHOT, **fields: object) -> RegistryEntry:
        cube_id = entry_key(self.name, version) if kind is EntryKind.SNAPSHOT else self.cube
        unsigned = RegistryEntry.model_validate(
            {
                "name": self.name,
                "version": version,
                "kind": kind,
                "cube_id": cube_id,
                "source_cube_id": self.cube,
                "publisher": self.id,
                "manifest": BundleManifest(publisher=self.id, description="shared facts", tags=["facts"]),
                **fields,
            }
        )
        return sign(unsigned, self.key)

    def snapshot_ops(self, entry: RegistryEntry) -> list[object]:
        header = CubeHeader(
            cube_id=entry.cube_id,
            owner_id=self.id,
            storage=StorageProfile(embedding_dim=DIM),
            read_only=True,
            published_as=entry.key,
        )
        items = self.store.run(ListOp(self.cube, with_embeddings=True))
        return [ImportCubeOp(header, items, []), PublishOp(entry)]

    def publish(self, version: str = "1.0.0", kind: EntryKind = EntryKind.SNAPSHOT, **fields: object) -> RegistryEntry:
        entry = self.entry(version, kind, **fields)
        ops = self.snapshot_ops(entry) if kind is EntryKind.SNAPSHOT else [PublishOp(entry)]
        stored = self.store.batch(ops, ctx=self.ctx)[-1]  # type: ignore[arg-type]
        assert isinstance(stored, RegistryEntry)
        return stored


class RegistryTests:
    """The MemStore registry on every backend. Provide a ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[BaseMemoryStore]:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide a set-up store fixture")

    def test_registry_publish_get_list_and_visibility(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        before = utcnow() - timedelta(seconds=5)
        first = pub.publish("1.0.0")
        assert first.published_at is not None and first.published_at >= before and first.revoked_at is None
        pub.publish("1.1.0-rc.1")
        hidden = pub.publish("0.9.0", visibility=EntryVisibility.RESTRICTED, audience=["friend-" + pub.id])
        guest, friend = CallContext.of(_uid("guest")), CallContext.of("friend-" + pub.id)
        # the latest release, not the pre-release; a pre-release only when named
        assert store.run(GetPublishedOp(pub.name), ctx=guest).version == "1.0.0"
        assert store.run(GetPublishedOp(pub.name, "1.1.0-rc.1"), ctx=guest).version == "1.1.0-rc.1"
        listed = store.run(ListPublishedOp(name=pub.name), ctx=guest)
        assert [e.version for e in listed] == ["1.1.0-rc.1", "1.0.0"]  # newest first; restricted hidden
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(GetPublishedOp(pub.name, hidden.version), ctx=guest)
        assert hidden.version in [e.version for e in store.run(ListPublishedOp(name=pub.name), ctx=friend)]
        assert hidden.version in [e.version for e in store.run(ListPublishedOp(name=pub.name), ctx=pub.ctx)]
        # search by text, tag and publisher
        assert [e.name for e in store.run(ListPublishedOp(text="SHARED Facts", name=pub.name), ctx=guest)] == [
            pub.name,
            pub.name,
        ]
        assert store.run(ListPublishedOp(text="nothing-like-this", name=pub.name), ctx=guest) == []
        assert len(store.run(ListPublishedOp(tag="facts", publisher=pub.id), ctx=guest)) == 2
        assert store.run(ListPublishedOp(publisher=pub.id, limit=1), ctx=guest)[0].name == pub.name
        # the snapshot is a read-only cube owned by the publisher; the key is recorded on first use
        snap = store.get_cube(first.cube_id)
        assert snap.read_only and snap.published_as == first.key and snap.owner_id == pub.id
        assert store.run(GetPublisherKeyOp(pub.id), ctx=guest) == first.public_key
        with pytest.raises(InvalidInputError):
            store.run(GetPublishedOp("Not A Name"), ctx=guest)
        with pytest.raises(InvalidInputError):
            store.run(GetPublishedOp(pub.name, "1.0"), ctx=guest)

    def test_registry_publishing_is_checked_in_the_store(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        other = _Publisher(store)
        # as someone else
        with pytest.raises(PermissionDeniedError):
            store.batch([PublishOp(pub.entry(kind=EntryKind.LIVE))], ctx=other.ctx)
        # without share on the source cube: a reader may not publish it
        reader = CallContext.of(_uid("reader"))
        header = store.get_cube(pub.cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal=reader.principal, role=Role.READER)]}))
        forged = RegistryEntry.model_validate(
            {**pub.entry(kind=EntryKind.LIVE).model_dump(), "publisher": reader.principal, "signature": None}
        ).model_copy(update={"public_key": None})
        with pytest.raises(PermissionDeniedError):
            store.batch([PublishOp(forged)], ctx=reader)
        # a snapshot entry needs its read-only cube
        with pytest.raises(InvalidInputError):
            store.batch([PublishOp(pub.entry("2.0.0"))], ctx=pub.ctx)
        # a signature that does not verify; a key other than the one recorded
        entry = pub.entry(kind=EntryKind.LIVE)
        tampered = entry.model_copy(update={"manifest": entry.manifest.model_copy(update={"items": 99})})
        with pytest.raises(UntrustedPublisherError):
            store.batch([PublishOp(tampered)], ctx=pub.ctx)
        store.batch([PublishOp(entry)], ctx=pub.ctx)
        pub.key = Ed25519PrivateKey.generate()
        with pytest.raises(UntrustedPublisherError):
            store.batch([PublishOp(pub.entry("1.0.1", EntryKind.LIVE))], ctx=pub.ctx)
        # published versions are immutable; a name belongs to its first publisher
        with pytest.raises(RegistryEntryExistsError):
            store.batch([PublishOp(entry)], ctx=pub.ctx)
        other.name = pub.name
        with pytest.raises(PermissionDeniedError):
            store.batch([PublishOp(other.entry("3.0.0", EntryKind.LIVE))], ctx=other.ctx)
        # a snapshot offers read access only
        with pytest.raises(InvalidInputError):
            other.name = "n" + uuid.uuid4().hex[:10]
            store.batch(other.snapshot_ops(other.entry(access="write")), ctx=other.ctx)  # type: ignore[arg-type]
        # nothing of the refused publications was stored
        assert [e.version for e in store.run(ListPublishedOp(name=pub.name, include_revoked=True))] == ["1.0.0"]

    def test_registry_subscriptions_grant_and_remove_access_at_once(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        entry = pub.publish()
        bob = CallContext.of(_uid("bob"))
        with pytest.raises(PermissionDeniedError):
            store.batch([GetCubeOp(entry.cube_id)], ctx=bob)
        sub = store.run(SubscribeOp(pub.name), ctx=bob)
        assert isinstance(sub, Subscription)
        assert (sub.version, sub.cube_id, sub.kind, sub.granted) == (
            "1.0.0",
            entry.cube_id,
            EntryKind.SNAPSHOT,
            Role.READER,
        )
        assert store.run(SubscribeOp(pub.name), ctx=bob) == sub  # again: nothing changes
        found = store.vector_search(entry.cube_id, item("q").embedding or [], 5, ctx=bob)
        assert len(found) == 2
        # a snapshot is read-only for everyone but trusted code: subscriber, owner, system-wide admin
        operator = CallContext.of("operator", admin=True)
        for who in (bob, pub.ctx, operator):
            with pytest.raises(PermissionDeniedError):
                store.batch([WriteOp(entry.cube_id, WriteBatch(add=[item("planted")]))], ctx=who)
            with pytest.raises(PermissionDeniedError):
                store.batch([DeleteOp(entry.cube_id, [found[0][0]])], ctx=who)
        snap = store.get_cube(entry.cube_id)
        with pytest.raises(PermissionDeniedError):
            store.batch([UpdateCubeOp(snap.model_copy(update={"read_only": False}))], ctx=pub.ctx)
        assert [s.subscriber for s in store.run(ListSubscriptionsOp(), ctx=bob)] == [bob.principal]
        assert [s.subscriber for s in store.run(ListSubscriptionsOp(pub.name), ctx=pub.ctx)] == [bob.principal]
        assert store.run(ListSubscriptionsOp(pub.name), ctx=CallContext.of(_uid("eve"))) == []
        # unsubscribing removes the grant in the same transaction
        assert store.run(UnsubscribeOp(pub.name), ctx=bob) == 1
        assert store.run(UnsubscribeOp(pub.name), ctx=bob) == 0
        with pytest.raises(PermissionDeniedError):
            store.batch([GetOp(entry.cube_id, [found[0][0]])], ctx=bob)
        assert store.get_cube(entry.cube_id).acl == []

    def test_registry_keeps_grants_it_did_not_make(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        entry = pub.publish("1.0.0", EntryKind.LIVE)
        carol = CallContext.of(_uid("carol"))
        header = store.get_cube(pub.cube)
        store.update_cube(header.model_copy(update={"acl": [AclEntry(principal=carol.principal, role=Role.READER)]}))
        sub = store.run(SubscribeOp(pub.name), ctx=carol)
        assert sub.granted is None  # she could read it already
        store.run(UnsubscribeOp(pub.name), ctx=carol)
        assert store.get_cube(entry.cube_id, ctx=carol).cube_id == pub.cube  # her own grant stays

    def test_registry_live_entries_grant_write_when_published_so(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        pub.publish("1.0.0", EntryKind.LIVE, access="write")
        dave, erin = CallContext.of(_uid("dave")), CallContext.of(_uid("erin"))
        sub = store.run(SubscribeOp(pub.name, access="write"), ctx=dave)
        assert sub.granted is Role.WRITER and sub.cube_id == pub.cube
        store.add(pub.cube, [item("written by a subscriber")], ctx=dave)
        store.run(SubscribeOp(pub.name), ctx=erin)
        with pytest.raises(PermissionDeniedError):
            store.add(pub.cube, [item("a reader writes")], ctx=erin)
        # downgrading replaces the grant: no write left
        store.run(SubscribeOp(pub.name, access="read"), ctx=dave)
        header = store.get_cube(pub.cube)
        assert [(e.principal, e.role) for e in header.acl if e.principal == dave.principal] == [
            (dave.principal, Role.READER)
        ]
        # a read-only entry offers no write
        other = _Publisher(store)
        other.publish("1.0.0", EntryKind.LIVE)
        with pytest.raises(PermissionDeniedError):
            store.run(SubscribeOp(other.name, access="write"), ctx=dave)

    def test_registry_revocation_takes_effect_at_once(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        entry = pub.publish()
        bob, carol = CallContext.of(_uid("bob")), CallContext.of(_uid("carol"))
        for who in (bob, carol):
            store.run(SubscribeOp(pub.name), ctx=who)
        # only the publisher (or a system-wide admin) revokes
        with pytest.raises(PermissionDeniedError):
            store.run(RevokePublishedOp(pub.name, subscriber=carol.principal), ctx=bob)
        result = store.run(RevokePublishedOp(pub.name, subscriber=bob.principal), ctx=pub.ctx)
        assert isinstance(result, RevokeResult)
        assert result.ended == [(bob.principal, entry.key)] and result.revoked == []
        with pytest.raises(PermissionDeniedError):
            store.batch([GetCubeOp(entry.cube_id)], ctx=bob)
        assert store.get_cube(entry.cube_id, ctx=carol).cube_id == entry.cube_id
        # withdrawing the entry ends every subscription; it is hidden, never subscribed to again, never reused
        result = store.run(RevokePublishedOp(pub.name, "1.0.0"), ctx=pub.ctx)
        assert result.revoked == [entry.key] and result.ended == [(carol.principal, entry.key)]
        with pytest.raises(PermissionDeniedError):
            store.batch([GetCubeOp(entry.cube_id)], ctx=carol)
        assert store.run(ListPublishedOp(name=pub.name), ctx=carol) == []
        revoked = store.run(GetPublishedOp(pub.name, "1.0.0"), ctx=carol)
        assert revoked.revoked_at is not None
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(SubscribeOp(pub.name, "1.0.0"), ctx=bob)
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(SubscribeOp(pub.name), ctx=bob)
        with pytest.raises(RegistryEntryExistsError):  # its snapshot cube is still there: the entry is refused
            store.batch([PublishOp(pub.entry("1.0.0"))], ctx=pub.ctx)

    def test_registry_subscription_is_inactive_when_access_went_another_way(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        pub.publish("1.0.0", EntryKind.LIVE)
        bob = CallContext.of(_uid("bob"))
        store.run(SubscribeOp(pub.name), ctx=bob)
        header = store.get_cube(pub.cube)
        store.update_cube(header.model_copy(update={"acl": []}))  # the owner removes the grant by hand
        (sub,) = store.run(ListSubscriptionsOp(), ctx=bob)
        assert not sub.active
        assert store.run(UnsubscribeOp(pub.name), ctx=bob) == 1  # ends cleanly: nothing left to remove

    def test_registry_ops_roll_back_with_their_batch(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        entry = pub.publish()
        bob = CallContext.of(_uid("bob"))
        with pytest.raises(CubeNotFoundError):
            store.batch([SubscribeOp(pub.name), GetCubeOp("cube-" + uuid.uuid4().hex)], ctx=bob)
        assert store.run(ListSubscriptionsOp(), ctx=bob) == []
        assert not store.get_cube(entry.cube_id).allows(bob.principal, Permission.READ)
        # a snapshot cube and its entry are stored together or not at all
        later = pub.entry("2.0.0")
        ops = [*pub.snapshot_ops(later), GetCubeOp("cube-" + uuid.uuid4().hex)]
        with pytest.raises(CubeNotFoundError):
            store.batch(ops, ctx=pub.ctx)  # type: ignore[arg-type]
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(GetPublishedOp(pub.name, "2.0.0"))
        with pytest.raises(CubeNotFoundError):
            store.get_cube(later.cube_id)

    def test_registry_ops_are_audited_on_the_store_chain(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        pub.publish()
        bob = CallContext.of(_uid("bob"))
        store.run(SubscribeOp(pub.name), ctx=bob)
        with pytest.raises(PermissionDeniedError):
            store.run(RevokePublishedOp(pub.name), ctx=bob)
        log = [e for who in (pub.id, bob.principal) for e in store.run(ListAuditOp(None, actor=who), ctx=SYSTEM)]
        mine = [(e.actor, e.action, e.outcome.value) for e in log]
        assert (pub.id, "registry.publish", "ok") in mine
        assert (bob.principal, "registry.subscribe", "ok") in mine
        assert (bob.principal, "registry.revoke", "denied") in mine

    def test_registry_async_twins(self, store: BaseMemoryStore) -> None:
        pub = _Publisher(store)
        pub.publish()
        bob = CallContext.of(_uid("bob"))

        async def go() -> tuple[object, object, object]:
            sub = await store.arun(SubscribeOp(pub.name), ctx=bob)
            subs = await store.arun(ListSubscriptionsOp(), ctx=bob)
            gone = await store.arun(UnsubscribeOp(pub.name), ctx=bob)
            return sub, subs, gone

        sub, subs, gone = asyncio.run(go())
        assert isinstance(sub, Subscription) and subs == [sub] and gone == 1

    def test_registry_entries_serve_only_their_own_cube_and_rights(self, store: BaseMemoryStore) -> None:
        # a live entry whose cube was deleted and its id taken by someone else serves nothing
        pub = _Publisher(store)
        pub.publish("1.0.0", EntryKind.LIVE)
        store.delete_cube(pub.cube)
        squatter = _uid("carol")
        store.create_cube(CubeHeader(cube_id=pub.cube, owner_id=squatter, storage=StorageProfile(embedding_dim=DIM)))
        eve = CallContext.of(_uid("eve"))
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(SubscribeOp(pub.name), ctx=eve)
        assert not store.get_cube(pub.cube).allows(eve.principal, Permission.READ)
        # a snapshot id re-created as an ordinary cube serves nothing either
        snap = _Publisher(store)
        entry = snap.publish()
        store.delete_cube(entry.cube_id)
        store.create_cube(
            CubeHeader(cube_id=entry.cube_id, owner_id=snap.id, storage=StorageProfile(embedding_dim=DIM))
        )
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(SubscribeOp(snap.name), ctx=eve)
        # a share holder offers at most its own permissions, and only while it holds share
        owner = _Publisher(store)
        sam = _Publisher(store)
        sam.cube, sam.name = owner.cube, "n" + uuid.uuid4().hex[:10]
        header = store.get_cube(owner.cube)
        acl = [AclEntry(principal=sam.id, permissions=[Permission.SHARE])]
        store.update_cube(header.model_copy(update={"acl": acl}))
        with pytest.raises(PermissionDeniedError):
            store.batch([PublishOp(sam.entry("1.0.0", EntryKind.LIVE, access="write"))], ctx=sam.ctx)
        store.batch([PublishOp(sam.entry("1.0.0", EntryKind.LIVE))], ctx=sam.ctx)
        assert store.run(SubscribeOp(sam.name), ctx=eve).granted is Role.READER
        store.run(UnsubscribeOp(sam.name), ctx=eve)
        header = store.get_cube(owner.cube)
        store.update_cube(header.model_copy(update={"acl": []}))  # the owner takes sam's share away
        with pytest.raises(RegistryEntryNotFoundError):
            store.run(SubscribeOp(sam.name), ctx=eve)
