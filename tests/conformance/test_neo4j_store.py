"""The store conformance suite against real Bolt/Cypher servers (ArcadeDB; Neo4j with NEO4J_URI)."""

from collections.abc import Iterator

import pytest

from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore
from memos_agents.testing.conformance import StoreConformanceTests


class TestNeo4jStore(StoreConformanceTests):
    def tamper_audit(self, store: Neo4jMemoryStore, chain: str, how: str) -> None:  # type: ignore[override]
        """Edit the ``AuditEntry`` nodes of ``chain`` with Cypher (as anyone with the database's credentials could)."""
        where = "a.tenant = $tenant AND a.chain = $chain"
        p = {"tenant": store.tenant, "chain": chain}
        run = store._sync_driver().execute_query
        if how == "edit":
            run(f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = 2 SET a.actor = 'someone-else'", p)
        elif how == "delete":
            run(f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = 2 DELETE a", p)
        elif how == "insert":
            run(
                f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = 2 CREATE (b:AuditEntry) SET b = properties(a), "
                "b.actor = 'forger', b.seq = 3, b.prev_hash = a.hash",
                p,
            )
        elif how == "reorder":  # entries 2 and 3 exchange their positions
            run(f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = 2 SET a.seq = -3", p)
            run(f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = 3 SET a.seq = 2", p)
            run(f"MATCH (a:AuditEntry) WHERE {where} AND a.seq = -3 SET a.seq = 3", p)
        elif how == "truncate":
            run(
                f"MATCH (a:AuditEntry) WHERE {where} WITH a ORDER BY a.seq DESC LIMIT 1 DELETE a",
                p,
            )
        else:
            raise ValueError(how)

    @pytest.fixture
    def store(self, neo4j_store: Neo4jMemoryStore) -> Iterator[Neo4jMemoryStore]:
        yield neo4j_store
