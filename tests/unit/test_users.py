"""Registered users through the facade: create, list, remove (revoking grants), enable, require_users.

The stores' own behaviour (records, ``require_users`` in every batch) is in the conformance suite
(``memos_agents/testing/users.py``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.errors import (
    InvalidInputError,
    PermissionDeniedError,
    UnknownUserError,
    UserExistsError,
    UserNotFoundError,
)
from memos_agents.infra.users import UserKind

pytestmark = pytest.mark.unit


def _mos(tmp_path: Path, **store: object) -> MemOS:
    return MemOS.from_path(
        tmp_path / "home",
        embedder={"provider": "hashing", "dim": 64},
        llm={"provider": "none"},
        admins=["op"],
        store=store,
    )


def test_users_are_managed_by_operators(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        bob = m.create_user("bob", "op", name="Bob", kind="agent")
        assert (bob.user_id, bob.name, bob.kind, bob.created_by, bob.enabled) == (
            "bob",
            "Bob",
            UserKind.AGENT,
            "op",
            True,
        )
        asyncio.run(m.acreate_user("carol", "op"))
        assert [u.user_id for u in m.list_users("op")] == ["bob", "carol"]
        assert m.get_user("bob", "bob") == bob  # one's own record
        with pytest.raises(PermissionDeniedError):
            m.get_user("carol", "bob")
        with pytest.raises(PermissionDeniedError):
            m.create_user("dave", "bob")
        with pytest.raises(PermissionDeniedError):
            m.list_users("bob")
        with pytest.raises(UserExistsError):
            m.create_user("bob", "op")
        with pytest.raises(UserNotFoundError):
            m.remove_user("nobody", "op")
        for bad in (
            {"new_user": "system"},
            {"new_user": "*"},
            {"new_user": "../x"},
            {"new_user": "e", "kind": "robot"},
        ):
            with pytest.raises(InvalidInputError):
                m.create_user(bad["new_user"], "op", kind=bad.get("kind", "user"))
        with pytest.raises(InvalidInputError):
            m.create_user("eve", "op", name="x" * 201)


def test_removing_a_user_revokes_its_grants_everywhere_and_keeps_its_id(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        for u in ("ann", "bob"):
            m.create_user(u, "op")
        m.create_cube("a1", "ann")
        m.create_cube("a2", "ann")
        m.create_cube("b1", "bob")
        m.grant("a1", "ann", "bob", role="writer")
        m.grant("a2", "ann", "bob", role="reader")
        m.grant("a2", "ann", "*", role="guest")
        m.add([{"role": "user", "content": "bob wrote this"}], "bob", "a1")
        done = m.remove_user("bob", "op")
        assert not done.user.enabled and done.revoked_from == ["a1", "a2"] and done.owned == ["b1"]
        assert [e.principal for e in m.get_cube("a2", "ann").acl] == ["*"]
        with pytest.raises(PermissionDeniedError):  # revoked even where users are not required
            m.search("bob", "bob", ["a1"])
        assert [u.user_id for u in m.list_users("op")] == ["ann"]
        assert [u.user_id for u in m.list_users("op", include_disabled=True)] == ["ann", "bob"]
        with pytest.raises(UserExistsError):  # the id stays taken: no newcomer inherits anything
            m.create_user("bob", "op")
        again = asyncio.run(m.aremove_user("bob", "op"))  # idempotent: nothing left to revoke
        assert again.revoked_from == [] and again.user.disabled_at == done.user.disabled_at
        assert m.enable_user("bob", "op").enabled
        with pytest.raises(PermissionDeniedError):  # grants are not restored
            m.search("bob", "bob", ["a1"])


def test_a_store_that_requires_users(tmp_path: Path) -> None:
    with _mos(tmp_path, require_users=True) as m:
        with pytest.raises(UnknownUserError):
            m.create_cube("notes", "ann")
        m.create_user("ann", "op")
        m.create_cube("notes", "ann")
        m.add([{"role": "user", "content": "ann likes green tea"}], "ann", "notes")
        with pytest.raises(UnknownUserError):
            m.grant("notes", "ann", "ghost", role="reader")
        m.create_user("bob", "op")
        m.grant("notes", "ann", "bob", role="reader")
        assert m.search("green tea", "bob", ["notes"])
        m.remove_user("bob", "op")
        with pytest.raises(UnknownUserError):
            m.search("green tea", "bob", ["notes"])
        with pytest.raises(UnknownUserError):
            m.search("green tea", "mallory", ["notes"])
        denied = m.audit_log("op", "notes", actor="mallory")
        assert any(e.outcome.value == "denied" and "UnknownUserError" in (e.reason or "") for e in denied)
        assert all(e.outcome.value in ("denied", "failed") for e in denied)  # the batch's other ops: not applied
