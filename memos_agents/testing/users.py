"""Users section of the store conformance suite: registered users and stores that require them.

:class:`UserTests` is a mixin that :class:`~memos_agents.testing.conformance.StoreConformanceTests`
inherits (like :class:`~memos_agents.testing.adversarial.AdversarialTests`): user records are
managed by system-wide admins only, ids are never reused, and a store with ``require_users``
refuses unknown and disabled callers, and grants to them, in every batch, audited and changing
nothing (see :mod:`memos_agents.infra.users`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from memos_agents.cube import AclEntry, CubeHeader, Role, StorageProfile
from memos_agents.errors import (
    CubeNotFoundError,
    InvalidInputError,
    PermissionDeniedError,
    UnknownUserError,
    UserExistsError,
    UserNotFoundError,
)
from memos_agents.infra.audit import AuditOutcome
from memos_agents.infra.users import UserKind, UserRecord
from memos_agents.plaintext.stores.base import (
    SYSTEM,
    BaseMemoryStore,
    CallContext,
    CountOp,
    CreateCubeOp,
    CreateUserOp,
    GetCubeOp,
    GetUserOp,
    ImportCubeOp,
    ListCubesOp,
    ListUsersOp,
    Op,
    TextSearchOp,
    UpdateCubeOp,
    UpdateUserOp,
    WriteBatch,
    WriteOp,
)
from memos_agents.schema import utcnow
from memos_agents.testing.helpers import DIM, item

__all__ = ["UserTests"]

OPERATOR = CallContext.of("operator", admin=True)


def _header(owner: str, *acl: AclEntry) -> CubeHeader:
    return CubeHeader(
        cube_id="cube-" + uuid.uuid4().hex[:12],
        owner_id=owner,
        acl=list(acl),
        storage=StorageProfile(embedding_dim=DIM),
    )


class UserTests:
    """User records and ``require_users``, on every backend. Provide a ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[BaseMemoryStore]:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide a set-up store fixture")

    @staticmethod
    def uid(name: str) -> str:
        """Return a user id unique to this test (stores may be shared between tests)."""
        return f"{name}-{uuid.uuid4().hex[:8]}"

    def test_users_are_registered_by_system_wide_admins_and_never_reused(self, store: BaseMemoryStore) -> None:
        bob, carol = self.uid("bob"), self.uid("carol")
        before = utcnow()
        made = store.create_user(UserRecord(user_id=bob, name="Bob", kind=UserKind.AGENT), ctx=OPERATOR)
        assert (made.user_id, made.name, made.kind, made.created_by) == (bob, "Bob", UserKind.AGENT, "operator")
        assert made.enabled and before - timedelta(seconds=5) <= made.created_at <= utcnow() + timedelta(seconds=5)
        assert store.get_user(bob, ctx=OPERATOR) == made
        assert store.get_user(bob, ctx=CallContext.of(bob)) == made  # one's own record
        # a caller-chosen creation time and disabled state are not kept
        forged = UserRecord(user_id=carol, created_at=before - timedelta(days=400), disabled_at=before)
        made_carol = store.create_user(forged, ctx=SYSTEM)
        assert made_carol.enabled and made_carol.created_at >= before and made_carol.created_by == "system"
        for who in (CallContext.of(bob), CallContext.of("alice")):  # ordinary users manage nothing
            for op in (
                CreateUserOp(UserRecord(user_id=self.uid("x"))),
                ListUsersOp(),
                GetUserOp(carol),
                UpdateUserOp(made.model_copy(update={"disabled_at": utcnow()})),
            ):
                with pytest.raises(PermissionDeniedError):
                    store.batch([op], ctx=who)
        with pytest.raises(UserExistsError):
            store.create_user(UserRecord(user_id=bob), ctx=OPERATOR)
        with pytest.raises(UserNotFoundError):
            store.get_user(self.uid("nobody"), ctx=OPERATOR)
        with pytest.raises(UserNotFoundError):
            store.update_user(UserRecord(user_id=self.uid("nobody")), ctx=OPERATOR)
        for reserved in ("system", "*"):
            with pytest.raises(InvalidInputError):
                store.run(CreateUserOp(UserRecord.model_construct(user_id=reserved, name="")), ctx=OPERATOR)
        # records the model refuses, handed over unvalidated: refused, named without the value
        for bad in ({"user_id": "../etc"}, {"user_id": bob, "name": "x" * 10_000}):
            with pytest.raises(InvalidInputError) as err:
                store.run(CreateUserOp(made.model_copy(update=bad)), ctx=OPERATOR)
            assert "x" * 100 not in str(err.value)
        with pytest.raises(InvalidInputError):
            store.run(CreateUserOp("bob"), ctx=OPERATOR)  # type: ignore[arg-type]
        # disable: listed only on request, its id stays taken; the creation fields stay as stored
        later = made.model_copy(update={"name": "Robert", "disabled_at": utcnow(), "created_by": "mallory"})
        off = store.update_user(later, ctx=OPERATOR)
        assert (off.name, off.enabled, off.created_by, off.created_at) == ("Robert", False, "operator", made.created_at)
        listed = [u.user_id for u in store.list_users(ctx=OPERATOR)]
        assert carol in listed and bob not in listed and listed == sorted(listed)
        assert bob in [u.user_id for u in store.list_users(include_disabled=True, ctx=OPERATOR)]
        with pytest.raises(UserExistsError):
            store.create_user(UserRecord(user_id=bob), ctx=OPERATOR)
        # audited on the store's chain, with the user's id and the refusals
        entries = store.list_audit(None, actor="operator", limit=10_000)
        assert {"user.create", "user.get", "user.list", "user.update"} <= {e.action for e in entries}
        assert any(e.action == "user.create" and bob in e.item_ids and e.outcome == AuditOutcome.OK for e in entries)
        assert any(e.action == "user.create" and e.outcome == AuditOutcome.FAILED for e in entries)
        denied = store.list_audit(None, actor=bob, outcome=AuditOutcome.DENIED, limit=10_000)
        assert {"user.create", "user.list", "user.get", "user.update"} <= {e.action for e in denied}

    def test_user_ops_have_async_twins(self, store: BaseMemoryStore) -> None:
        dan = self.uid("dan")

        async def scenario() -> None:
            made = await store.acreate_user(UserRecord(user_id=dan), ctx=OPERATOR)
            assert await store.aget_user(dan, ctx=OPERATOR) == made
            off = await store.aupdate_user(made.model_copy(update={"disabled_at": utcnow()}), ctx=OPERATOR)
            assert not off.enabled
            assert dan in [u.user_id for u in await store.alist_users(include_disabled=True, ctx=OPERATOR)]

        asyncio.run(scenario())

    def test_a_refused_batch_changes_no_user(self, store: BaseMemoryStore) -> None:
        erin = self.uid("erin")
        made = store.create_user(UserRecord(user_id=erin), ctx=OPERATOR)
        newcomer = self.uid("newcomer")
        with pytest.raises(CubeNotFoundError):
            store.batch(
                [
                    UpdateUserOp(made.model_copy(update={"disabled_at": utcnow()})),
                    CreateUserOp(UserRecord(user_id=newcomer)),
                    GetCubeOp("no-such-cube-" + uuid.uuid4().hex[:8]),
                ],
                ctx=OPERATOR,
            )
        assert store.get_user(erin, ctx=OPERATOR).enabled
        with pytest.raises(UserNotFoundError):
            store.get_user(newcomer, ctx=OPERATOR)

    def test_a_store_that_requires_users_refuses_unknown_and_disabled_callers(self, store: BaseMemoryStore) -> None:
        alice, bob = self.uid("alice"), self.uid("bob")
        for u in (alice, bob):
            store.create_user(UserRecord(user_id=u), ctx=OPERATOR)
        header = _header(alice, AclEntry(principal=bob, role=Role.WRITER))
        store.create_cube(header)
        store.add(header.cube_id, [item("alice's note", 1)], ctx=CallContext.of(alice))
        store.require_users = True
        try:
            n = store.count(header.cube_id)
            assert store.count(header.cube_id, ctx=CallContext.of(bob)) == n
            mallory = self.uid("mallory")
            own, imported = _header(mallory), _header(mallory)
            every: list[list[Op]] = [
                [ListCubesOp()],
                [GetCubeOp(header.cube_id)],
                [CountOp(header.cube_id)],
                [TextSearchOp(header.cube_id, "note", 5)],
                [WriteOp(header.cube_id, WriteBatch(add=[item("mallory was here", 2)]))],
                [CreateCubeOp(own)],
                [ImportCubeOp(imported, [item("imported", 3)])],
                [GetUserOp(mallory)],
            ]
            for ops in every:
                with pytest.raises(UnknownUserError):
                    store.batch(ops, ctx=CallContext.of(mallory))
            denied = [
                e
                for chain in (None, header.cube_id, own.cube_id, imported.cube_id)
                for e in store.list_audit(chain, actor=mallory, limit=10_000)
            ]
            assert len({e.request_id for e in denied}) == len(every)
            assert all(e.outcome == AuditOutcome.DENIED and "UnknownUserError" in (e.reason or "") for e in denied)
            for cube_id in (own.cube_id, imported.cube_id):
                with pytest.raises(CubeNotFoundError):
                    store.get_cube(cube_id)
            assert store.count(header.cube_id) == n
            assert [h.cube_id for h in store.list_cubes(owner_id=mallory)] == []
            # disabling takes effect at the next batch; enabling restores the grants that remain
            record = store.get_user(bob, ctx=OPERATOR)
            store.update_user(record.model_copy(update={"disabled_at": utcnow()}), ctx=OPERATOR)
            with pytest.raises(UnknownUserError):
                store.count(header.cube_id, ctx=CallContext.of(bob))
            with pytest.raises(UnknownUserError):
                store.get_user(bob, ctx=CallContext.of(bob))
            store.update_user(record, ctx=OPERATOR)
            assert store.count(header.cube_id, ctx=CallContext.of(bob)) == n
            # operators and trusted code are configured, not registered
            assert store.count(header.cube_id, ctx=CallContext.of(self.uid("op"), admin=True)) == n
            assert store.count(header.cube_id, ctx=SYSTEM) == n
        finally:
            store.require_users = False
        assert store.count(header.cube_id, ctx=CallContext.of(bob)) == n

    def test_a_store_that_requires_users_grants_only_to_registered_users(self, store: BaseMemoryStore) -> None:
        alice, bob, ghost = self.uid("alice"), self.uid("bob"), self.uid("ghost")
        for u in (alice, bob):
            store.create_user(UserRecord(user_id=u), ctx=OPERATOR)
        store.require_users = True
        try:
            as_alice = CallContext.of(alice)
            with pytest.raises(UnknownUserError):
                store.create_cube(_header(ghost), ctx=OPERATOR)  # nobody may own a cube for an unknown user
            with pytest.raises(UnknownUserError):
                store.create_cube(_header(alice, AclEntry(principal=ghost, role=Role.READER)), ctx=as_alice)
            imported = _header(alice, AclEntry(principal=ghost, role=Role.READER))
            with pytest.raises(UnknownUserError):
                store.import_cube(imported, [item("imported", 1)], ctx=as_alice)
            with pytest.raises(CubeNotFoundError):
                store.get_cube(imported.cube_id)
            header = _header(alice, AclEntry(principal="*", role=Role.GUEST), AclEntry(principal=bob, role=Role.READER))
            store.create_cube(header, ctx=as_alice)
            header = store.get_cube(header.cube_id)
            for principal in (ghost, "system"):
                grant = header.model_copy(
                    update={"acl": [*header.acl, AclEntry(principal=principal, role=Role.WRITER)]}
                )
                with pytest.raises(UnknownUserError):
                    store.update_cube(grant, ctx=as_alice)
            with pytest.raises(UnknownUserError):  # nor hand it over to one
                store.update_cube(header.model_copy(update={"owner_id": ghost}), ctx=as_alice)
            assert store.get_cube(header.cube_id) == header
            # a disabled user cannot be granted more, and its old entry blocks no other change
            record = store.get_user(bob, ctx=OPERATOR)
            store.update_user(record.model_copy(update={"disabled_at": utcnow()}), ctx=OPERATOR)
            more = [AclEntry(principal="*", role=Role.GUEST), AclEntry(principal=bob, role=Role.WRITER)]
            with pytest.raises(UnknownUserError):
                store.update_cube(header.model_copy(update={"acl": more}), ctx=as_alice)
            stored = store.update_cube(header.model_copy(update={"description": "renamed"}), ctx=as_alice)
            assert stored.description == "renamed" and stored.acl == header.acl
            denied = store.list_audit(header.cube_id, actor=alice, outcome=AuditOutcome.DENIED, limit=100)
            assert any("UnknownUserError" in (e.reason or "") for e in denied)
        finally:
            store.require_users = False
        # without require_users, grants name any well-formed principal (as before users existed) but
        # never a disabled user; a disabled user's entry can still be narrowed or removed
        header = store.get_cube(header.cube_id)
        grant = header.model_copy(update={"acl": [*header.acl, AclEntry(principal=ghost, role=Role.READER)]})
        header = store.update_cube(grant, ctx=CallContext.of(alice))
        assert ghost in [e.principal for e in header.acl]
        more = [e for e in header.acl if e.principal != bob] + [AclEntry(principal=bob, role=Role.WRITER)]
        with pytest.raises(UnknownUserError):
            store.update_cube(header.model_copy(update={"acl": more}), ctx=CallContext.of(alice))
        less = [e for e in header.acl if e.principal != bob] + [AclEntry(principal=bob, role=Role.GUEST)]
        header = store.update_cube(header.model_copy(update={"acl": less}), ctx=CallContext.of(alice))
        assert [e.role for e in header.acl if e.principal == bob] == [Role.GUEST]

    def test_a_refused_user_batch_is_audited_and_applies_nothing(self, store: BaseMemoryStore) -> None:
        alice = self.uid("alice")
        store.create_user(UserRecord(user_id=alice), ctx=OPERATOR)
        header = _header(alice)
        store.create_cube(header)
        store.require_users = True
        try:
            ghost = self.uid("ghost")
            grant = UpdateCubeOp(header.model_copy(update={"acl": [AclEntry(principal=ghost, role=Role.READER)]}))
            write = WriteOp(header.cube_id, WriteBatch(add=[item("kept?", 1)]))
            ctx = CallContext.of(alice)
            with pytest.raises(UnknownUserError):
                store.batch([write, grant], ctx=ctx)
            assert store.count(header.cube_id) == 0 and store.get_cube(header.cube_id).acl == []
            entries = [e for e in store.list_audit(header.cube_id, actor=alice) if e.request_id == ctx.request_id]
            assert [e.outcome for e in entries] == [AuditOutcome.FAILED, AuditOutcome.DENIED]
        finally:
            store.require_users = False
