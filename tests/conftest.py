"""Shared fixtures: the real Bolt/Cypher servers the Neo4j store is tested against.

* ``arcadedb``: ArcadeDB's Bolt plugin. ``.ci/run`` starts one and exports ``MEMOS_TEST_BOLT_URI``
  (and user, password, database); without it, the session starts its own on loopback and stops it
  by PID at the end.
* ``neo4j``: a real Neo4j, when ``NEO4J_URI`` (and ``NEO4J_USER``, ``NEO4J_PASSWORD``, optionally
  ``NEO4J_DATABASE``) are set; otherwise its tests are reported as skipped with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from memos_agents.testing.bolt_server import BoltTarget, new_tenant


@pytest.fixture(scope="session")
def arcadedb_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoltTarget]:
    if os.environ.get("MEMOS_TEST_BOLT_URI"):
        yield BoltTarget(
            "arcadedb",
            os.environ["MEMOS_TEST_BOLT_URI"],
            (os.environ.get("MEMOS_TEST_BOLT_USER", "root"), os.environ.get("MEMOS_TEST_BOLT_PASSWORD", "")),
            os.environ.get("MEMOS_TEST_BOLT_DATABASE", "memos"),
        )
        return
    from memos_agents.testing.bolt_server import BoltServer

    with BoltServer.start(tmp_path_factory.mktemp("arcadedb")) as server:
        yield BoltTarget("arcadedb", server.uri, server.auth, server.database)


@pytest.fixture(scope="session", params=["arcadedb", "neo4j"])
def bolt_target(request: pytest.FixtureRequest) -> BoltTarget:
    if request.param == "arcadedb":
        target: BoltTarget = request.getfixturevalue("arcadedb_target")
        return target
    if not os.environ.get("NEO4J_URI"):
        pytest.skip("NEO4J_URI is not set: no real Neo4j server to run against (ArcadeDB's Bolt server ran instead)")
    return BoltTarget(
        "neo4j",
        os.environ["NEO4J_URI"],
        (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "")),
        os.environ.get("NEO4J_DATABASE") or None,
    )


@pytest.fixture
def neo4j_store(bolt_target: BoltTarget) -> Iterator[object]:
    from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore

    with Neo4jMemoryStore.from_uri(
        bolt_target.uri, auth=bolt_target.auth, database=bolt_target.database, tenant=new_tenant()
    ) as store:
        yield store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "bolt_target" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
