"""On a LangGraph server with authentication, memory tools act only as the authenticated user."""

from __future__ import annotations

import pytest
from langchain_memos import AddMemoryTool, SearchMemoryTool
from langchain_memos.tools import authenticated_user_id

from memos_agents import MemOS
from memos_agents.errors import PermissionDeniedError

pytestmark = pytest.mark.unit


def test_the_authenticated_identity_is_the_caller(seeded: MemOS) -> None:
    seeded.create_cube("bob-lockers", "bob")
    seeded.add([{"role": "user", "content": "Bob's locker code is 4711."}], "bob", "bob-lockers")
    auth = {"langgraph_auth_user": {"identity": "alice"}}
    add = AddMemoryTool(mos=seeded)
    out = add.invoke({"text": "Alice visited Kyoto."}, {"configurable": {**auth, "cube_id": "c1"}})
    assert out.startswith("Stored memory ")
    assert seeded.get(out.removeprefix("Stored memory ").rstrip("."), "alice", "c1").author_id == "alice"
    # a client that names bob in the configurable of an authenticated run is refused
    with pytest.raises(PermissionDeniedError, match="authenticated as 'alice'"):
        SearchMemoryTool(mos=seeded).invoke({"query": "locker"}, {"configurable": {**auth, "user_id": "bob"}})
    # and so is a tool whose default names another user
    with pytest.raises(PermissionDeniedError):
        SearchMemoryTool(mos=seeded, default_user_id="bob").invoke({"query": "locker"}, {"configurable": auth})


def test_identity_objects_and_unauthenticated_runs() -> None:
    class User:
        identity = "carol"

    assert authenticated_user_id({"configurable": {"langgraph_auth_user": User()}}) == "carol"
    assert authenticated_user_id({"configurable": {}}, None) is None
