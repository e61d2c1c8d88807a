"""The store conformance suite against real Bolt/Cypher servers (ArcadeDB; Neo4j with NEO4J_URI)."""

from collections.abc import Iterator

import pytest

from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore
from memos_agents.testing.conformance import StoreConformanceTests


class TestNeo4jStore(StoreConformanceTests):
    @pytest.fixture
    def store(self, neo4j_store: Neo4jMemoryStore) -> Iterator[Neo4jMemoryStore]:
        yield neo4j_store
