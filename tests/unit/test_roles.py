"""Roles and permissions through the facade (the store's own checks: the conformance suite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.cube import ROLE_PERMISSIONS, AclEntry, CubeHeader, Permission, Role
from memos_agents.errors import InvalidInputError, PermissionDeniedError

pytestmark = pytest.mark.unit


def _mos(tmp_path: Path) -> MemOS:
    return MemOS.from_path(tmp_path / "home", embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"})


def test_role_table() -> None:
    assert ROLE_PERMISSIONS[Role.OWNER] == frozenset(Permission) == ROLE_PERMISSIONS[Role.ADMIN]
    assert ROLE_PERMISSIONS[Role.WRITER] == {Permission.READ, Permission.WRITE, Permission.DELETE}
    assert ROLE_PERMISSIONS[Role.READER] == {Permission.READ}
    assert ROLE_PERMISSIONS[Role.GUEST] == frozenset()
    with pytest.raises(ValueError, match="owner"):
        AclEntry(principal="bob", role=Role.OWNER)
    legacy = CubeHeader.model_validate(
        {"cube_id": "c", "owner_id": "o", "acl": [{"principal": "w", "permissions": ["write"]}]}
    )
    assert legacy.permissions_of("w") == {Permission.READ, Permission.WRITE, Permission.DELETE}
    assert legacy.permissions_of("o") == frozenset(Permission) and legacy.permissions_of("x") == frozenset()


def test_grant_and_revoke(tmp_path: Path) -> None:
    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        header = m.grant("c", "ann", "bob", role="writer")
        assert [(e.principal, e.role) for e in header.acl] == [("bob", Role.WRITER)]
        (mid,) = m.add([{"role": "user", "content": "bob was here"}], "bob", "c").ids
        assert m.delete([mid], "bob", "c") == 1
        m.grant("c", "ann", "bob", role="reader")  # replaces bob's entry
        assert [(e.principal, e.role) for e in m.get_cube("c", "ann").acl] == [("bob", Role.READER)]
        with pytest.raises(PermissionDeniedError):
            m.add([{"role": "user", "content": "no longer"}], "bob", "c")
        m.grant("c", "ann", "sam", permissions=["share"])
        asyncio.run(m.agrant("c", "sam", "newbie", role="reader"))
        with pytest.raises(PermissionDeniedError):
            m.grant("c", "sam", "sam", role="admin")  # no one raises themselves
        with pytest.raises(PermissionDeniedError):
            m.revoke("c", "bob", "newbie")  # a reader cannot share
        assert [e.principal for e in m.revoke("c", "sam", "newbie").acl] == ["bob", "sam"]
        assert m.revoke("c", "ann", "nobody").acl == m.get_cube("c", "ann").acl
        asyncio.run(m.arevoke("c", "ann", "bob"))
        with pytest.raises(PermissionDeniedError):
            m.search("bob", "bob", ["c"])
        for bad in (
            {"role": "owner"},
            {"role": "superuser"},
            {"permissions": ["fly"]},
            {},
            {"permissions": "read"},
        ):
            with pytest.raises(InvalidInputError):
                m.grant("c", "ann", "x", **bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            m.grant("c", "ann", "bad id!", role="reader")


def test_a_concurrent_header_change_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memos_agents.plaintext.stores.base import GetCubeOp

    with _mos(tmp_path) as m:
        m.create_cube("c", "ann")
        original = m.store.batch
        armed = {"left": 1}

        def batch(ops: list[object], **kw: object) -> list[object]:
            out = original(ops, **kw)  # type: ignore[arg-type]
            if armed["left"] and any(isinstance(op, GetCubeOp) for op in ops):
                armed["left"] -= 1  # another writer changes the header right after this read
                m.store.update_cube(m.store.get_cube("c").model_copy(update={"description": "meanwhile"}))
            return out

        monkeypatch.setattr(m.store, "batch", batch)
        header = m.grant("c", "ann", "bob", role="reader")
        assert header.description == "meanwhile" and [e.principal for e in header.acl] == ["bob"]
        assert armed["left"] == 0
