"""Adversarial section of the store conformance suite: attacks every backend must refuse.

:class:`AdversarialTests` is a mixin that :class:`~memos_agents.testing.conformance.StoreConformanceTests`
inherits, so every backend's conformance module runs it with its own ``store`` fixture (and the
``cube`` fixture: a fresh cube owned by ``alice``). Each test sets up a *victim*: alice's cube with
a secret (items with embeddings, an updated and a deleted item, a topic, edges, an event, an ACL
with a reader, a guest, a writer and a sharer), then runs a loop of attacks on it:

* outsiders, a guest, look-alikes of the owner's name (``Alice``, Cyrillic ``а``, ``*``, a NUL
  byte) and a user named ``system``: every read (get by real and guessed ids, list and count
  over every status and node kind as an export does, edges, dense and BM25 search, graph
  expansion, event log, history, audit log) and every write (add, update, ensure, edges,
  delete, events, ACL changes, ownership, cube delete, import and create over it);
* a reader trying to write, delete, share or import, and batches mixing an allowed read with a
  forbidden write (refused as a whole);
* a revoked user (ACL entry removed, or the ``*`` entry it read through): everything refused
  afterwards, ops built before the revocation and whole batches included;
* a user reaching alice's items from its own cube (ids, edges, expansion, search, history,
  events, audit) and from a cube that re-uses the id of a deleted cube of alice's;
* crafted ids and filter values (path traversal, NUL bytes, SQL and Cypher injection, ``*``,
  ``%``, very long strings, look-alikes) as cube ids, item ids, principals, tags, ``user_id``
  filters, event kinds, owners and audit filters;
* imports and creations over an existing cube id;
* headers the model would refuse, passed to the store unvalidated (``model_copy(update=...)``).

An attack passes when it is refused with a typed error of the
:class:`~memos_agents.errors.MemOSError` hierarchy (or, for what the caller may do in its own
cube, returns nothing of alice's), leaves an audit entry with the attacker as actor and outcome
``denied`` or ``failed``, never shows alice's secret in an error message or audit entry, and leaves
a full snapshot of alice's cube (header, every item with its embedding, edges, events, every
version of every item) exactly as it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pydantic import BaseModel

from memos_agents.cube import AclEntry, CubeHeader, Permission, Role, StorageProfile
from memos_agents.errors import (
    CubeExistsError,
    CubeNotFoundError,
    InvalidInputError,
    MemoryNotFoundError,
    MemOSError,
    PermissionDeniedError,
    VersionConflictError,
)
from memos_agents.infra.audit import AuditEntry, AuditOutcome
from memos_agents.plaintext.stores.base import (
    AUDIT_ACTIONS,
    MAX_EXPAND_DEPTH,
    SYSTEM,
    BaseMemoryStore,
    CallContext,
    CountOp,
    CreateCubeOp,
    DeleteCubeOp,
    DeleteOp,
    EdgesOp,
    ExpandOp,
    FollowLink,
    GetCubeOp,
    GetOp,
    HistoryOp,
    ImportCubeOp,
    ListAuditChainsOp,
    ListAuditOp,
    ListCubesOp,
    ListEventsOp,
    ListOp,
    Op,
    RecordEventOp,
    TextSearchOp,
    UpdateCubeOp,
    VectorSearchOp,
    VerifyAuditOp,
    WriteBatch,
    WriteOp,
    op_cube,
)
from memos_agents.schema import Edge, LifecycleState, NodeKind, RelationType, SearchFilters, validate_id
from memos_agents.testing.helpers import DIM, item, vec

__all__ = ["CRAFTED", "EVERYTHING", "AdversarialTests", "Attack", "Campaign", "Victim"]

#: Filters that select every item, whatever its status and node kind (what an export reads).
EVERYTHING = SearchFilters(statuses=list(LifecycleState), node_kinds=list(NodeKind))

#: Crafted strings tried as ids, principals and filter values (the victim's own ids are added per test).
CRAFTED: tuple[str, ...] = (
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "/",
    ".",
    "..",
    "\x00",
    "x\x00y",
    "x' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE items; --",
    'x") RETURN n //',
    "x'}) MATCH (n) DETACH DELETE n //",
    "$tenant",
    "{tenant: $tenant}",
    "`Memory`",
    "*",
    "%",
    "_",
    "",
    " ",
    "null",
    "a" * 100_000,
    "\u0430lice",  # Cyrillic а
    "\uff41lice",  # fullwidth ａ
    "alice\u200b",  # zero-width space
    "ALICE",
    "Alice",
    "alice ",
    "alice\n",
)

#: The principals that try every attack on the victim's cube: no ACL entry, a guest, look-alikes
#: of the owner (case, Cyrillic, zero-width space, NUL byte, trailing dot) and reserved-looking names.
OUTSIDERS: tuple[str, ...] = (
    "bob",
    "gus",
    "Alice",
    "alice.",
    "system",
    "admin",
    "\u0430lice",
    "alice\x00",
    "*",
)


def context(principal: str) -> CallContext:
    """Return a fresh context (new request id) of ``principal``.

    A principal :meth:`CallContext.of` refuses (the front door) is forged with ``model_construct``,
    as code that skips validation would: the store must still refuse it everything.
    """
    try:
        return CallContext.of(principal)
    except InvalidInputError:
        return CallContext.model_construct(principal=principal, roles=(), system=False, request_id=uuid.uuid4().hex)


def trusted() -> CallContext:
    """Return a fresh trusted context (SYSTEM with its own request id)."""
    return CallContext(principal=SYSTEM.principal, system=True)


def chain_of(op: Op) -> str | None:
    """Return the audit chain an op is recorded on: its cube's id, or None (the store's) for a malformed id."""
    return op_cube(op)


def plain(value: Any) -> Any:
    """Return ``value`` (results of store ops: models, lists, tuples, dicts) as JSON-like data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclass
class Victim:
    """Alice's cube as set up by :meth:`AdversarialTests.victim`.

    Attributes:
        cube: The cube id.
        token: A random word in every item's text, the secret's key and the event: never shown to an attacker.
        secret_id: The secret item (updated once: two versions).
        note_id: A second item.
        archived_id: An archived item (found only by reads over every status).
        topic_id: A topic node (found only by reads over every node kind).
        deleted_id: An item that was deleted (only in the version history).
        embedding: The secret item's embedding.

    """

    cube: str
    token: str
    secret_id: str
    note_id: str
    archived_id: str
    topic_id: str
    deleted_id: str
    embedding: list[float]

    @property
    def ids(self) -> list[str]:
        """Every item id the cube ever held (the deleted one included)."""
        return [self.secret_id, self.note_id, self.archived_id, self.topic_id, self.deleted_id]


@dataclass
class Attack:
    """One attack: a batch of ops run as ``ctx``, and the errors that count as refusing it."""

    name: str
    ctx: CallContext
    ops: list[Op]
    refused: tuple[type[MemOSError], ...] = (PermissionDeniedError,)


@dataclass
class Campaign:
    """Runs attacks on a victim's cube and checks each one (see the module docstring).

    Attributes:
        store: The store.
        victim: The victim's cube.
        before: The victim's snapshot before the first attack (see :meth:`snapshot`).
        done: The attacks run and the error each raised.

    """

    store: BaseMemoryStore
    victim: Victim
    before: list[Any] = field(default_factory=list)
    done: list[tuple[Attack, MemOSError]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.before = self.snapshot()

    def snapshot(self) -> list[Any]:
        """Return everything of the victim's cube, read in one trusted batch.

        The header, every item with its embedding (with no filter, and over every status and node
        kind), the count, every edge, the event log and the version history of every item id.
        """
        c = self.victim.cube
        ops: list[Op] = [
            GetCubeOp(c),
            ListOp(c, None, with_embeddings=True),
            ListOp(c, EVERYTHING, with_embeddings=True),
            CountOp(c),
            EdgesOp(c),
            ListEventsOp(c),
            *(HistoryOp(c, i, with_embeddings=True) for i in self.victim.ids),
        ]
        return list(plain(self.store.batch(ops, ctx=trusted())))

    def unchanged(self, what: str) -> None:
        """Assert that the victim's cube is exactly as it was before the first attack."""
        assert self.snapshot() == self.before, f"{what} changed the victim's cube"

    def no_leak(self, what: str, text: str) -> None:
        """Assert that ``text`` (an error message, a result, an audit entry) holds nothing of the victim's content."""
        assert self.victim.token not in text, f"{what} shows the victim's secret: {text[:300]!r}"

    def run(self, attack: Attack, *, compare: bool = True) -> MemOSError:
        """Run ``attack``: it must raise one of ``attack.refused``, leak nothing and change nothing.

        Args:
            attack: The attack.
            compare: Compare the victim's snapshot after it (False: the caller compares later).

        """
        expected = " or ".join(t.__name__ for t in attack.refused)
        who = f"{attack.name!r} by {attack.ctx.principal[:40]!r}"
        try:
            result = self.store.batch(attack.ops, ctx=attack.ctx)
        except attack.refused as exc:
            error = exc
        except Exception as exc:
            pytest.fail(f"{who} raised {type(exc).__name__} ({str(exc)[:300]}), expected {expected}")
        else:
            self.no_leak(who, json.dumps(plain(result), default=str))
            pytest.fail(f"{who} was not refused (expected {expected}): {str(plain(result))[:300]}")
        self.no_leak(who, f"{error!s} {error!r} {error.args!r}")
        if compare:
            self.unchanged(who)
        self.done.append((attack, error))
        return error

    async def arun(self, attack: Attack) -> MemOSError:
        """Async twin of :meth:`run` (``abatch``)."""
        try:
            await self.store.abatch(attack.ops, ctx=attack.ctx)
        except attack.refused as exc:
            self.no_leak(attack.name, str(exc))
            self.done.append((attack, exc))
            return exc
        pytest.fail(f"{attack.name!r} by {attack.ctx.principal!r} was not refused (async)")

    def audit_of(self, chain: str | None, actor: str) -> list[AuditEntry]:
        """Return the entries of ``actor`` on ``chain`` (None: the store's), read as trusted code."""
        return self.store.list_audit(chain, actor=actor, limit=10_000)

    def check_audit(self) -> None:
        """Assert that every attack run left entries with its request id, actor and a refusal outcome.

        The entries of a refused batch are all ``denied`` or ``failed`` (nothing of it was applied),
        the op that was refused has the outcome of its error (``denied`` for PermissionDeniedError),
        and no entry of the victim's chain or the store's holds the victim's secret.
        """
        cache: dict[tuple[str | None, str], list[AuditEntry]] = {}
        for attack, error in self.done:
            chains = Counter(chain_of(op) for op in attack.ops)
            found: list[AuditEntry] = []
            for chain in chains:
                key = (chain, attack.ctx.principal)
                if key not in cache:
                    cache[key] = self.audit_of(chain, attack.ctx.principal)
                found += [e for e in cache[key] if e.request_id == attack.ctx.request_id]
            who = f"{attack.name!r} by {attack.ctx.principal[:40]!r}"
            assert found, f"{who} left no audit entry (chains {sorted(map(str, chains))})"
            assert all(e.outcome in (AuditOutcome.DENIED, AuditOutcome.FAILED) for e in found), (who, found)
            outcome = AuditOutcome.DENIED if isinstance(error, PermissionDeniedError) else AuditOutcome.FAILED
            assert any(e.outcome == outcome and e.reason for e in found), (who, outcome, found)
        for chain in (self.victim.cube, None):
            for entry in self.store.list_audit(chain, limit=10_000):
                self.no_leak(f"audit entry {entry.seq} of chain {chain!r}", entry.model_dump_json())


def reads(v: Victim) -> list[tuple[str, list[Op]]]:
    """Return every way to read the victim's cube, by name (audit reads apart: see :func:`audit_reads`)."""
    c = v.cube
    return [
        ("header", [GetCubeOp(c)]),
        ("get by id", [GetOp(c, v.ids, with_embeddings=True)]),
        ("get by guessed id", [GetOp(c, [v.secret_id, "0" * 32, "topic.s1", "1"])]),
        ("export", [GetCubeOp(c), ListOp(c, None, with_embeddings=True), EdgesOp(c)]),
        ("list every status and node kind", [ListOp(c, EVERYTHING, with_embeddings=True)]),
        ("list a page", [ListOp(c, None, limit=1, offset=1)]),
        ("count", [CountOp(c)]),
        ("count every status and node kind", [CountOp(c, EVERYTHING)]),
        ("edges", [EdgesOp(c)]),
        ("edges of an item", [EdgesOp(c, [v.secret_id], list(RelationType), "both")]),
        ("dense search", [VectorSearchOp(c, v.embedding, 10)]),
        ("dense search over everything", [VectorSearchOp(c, v.embedding, 10, EVERYTHING)]),
        ("bm25 search", [TextSearchOp(c, "vault code", 10)]),
        ("bm25 search over everything", [TextSearchOp(c, "vault code", 10, EVERYTHING)]),
        ("graph expansion", [ExpandOp(c, [v.secret_id, v.topic_id], list(RelationType), MAX_EXPAND_DEPTH)]),
        ("event log", [ListEventsOp(c)]),
        ("events of a kind", [ListEventsOp(c, "note")]),
        ("history", [HistoryOp(c, v.secret_id, with_embeddings=True)]),
        ("history of a deleted item", [HistoryOp(c, v.deleted_id, with_embeddings=True)]),
    ]


def audit_reads(v: Victim) -> list[tuple[str, list[Op]]]:
    """Return the reads of the victim's audit trail (``audit`` permission)."""
    return [("audit log", [ListAuditOp(v.cube)]), ("audit verify", [VerifyAuditOp(v.cube)])]


def writes(
    store: BaseMemoryStore, v: Victim, attacker: str
) -> list[tuple[str, list[Op], tuple[type[MemOSError], ...]]]:
    """Return every way to change the victim's cube, by name, with the errors that refuse it.

    Headers and items are read now (as trusted code), so each write is well-formed and current:
    only the caller's permission can refuse it.
    """
    c = v.cube
    header = store.get_cube(c)
    (current,) = store.get(c, [v.secret_id])
    try:
        grantee = validate_id(attacker)
    except InvalidInputError:
        grantee = "mallory"
    planted = item(f"planted by {grantee}", 3)
    theirs = CubeHeader(cube_id=c, owner_id=grantee, storage=StorageProfile(embedding_dim=DIM))
    denied: tuple[type[MemOSError], ...] = (PermissionDeniedError,)
    exists: tuple[type[MemOSError], ...] = (CubeExistsError, PermissionDeniedError)
    acl = header.acl
    return [
        ("add", [WriteOp(c, WriteBatch(add=[planted]))], denied),
        (
            "add over an existing id",
            [WriteOp(c, WriteBatch(add=[planted.model_copy(update={"id": v.secret_id})]))],
            denied,
        ),
        ("update", [WriteOp(c, WriteBatch(update=[current.model_copy(update={"text": "overwritten"})]))], denied),
        (
            "ensure a topic",
            [WriteOp(c, WriteBatch(ensure=[item("t", node_kind=NodeKind.TOPIC, id=v.topic_id)]))],
            denied,
        ),
        (
            "add an edge",
            [
                WriteOp(
                    c,
                    WriteBatch(edges=[Edge(source_id=v.secret_id, target_id=v.note_id, type=RelationType.SUPERSEDES)]),
                )
            ],
            denied,
        ),
        (
            "follow a topic",
            [WriteOp(c, WriteBatch(add=[planted], follows=[FollowLink(item_id=planted.id, topic_id=v.topic_id)]))],
            denied,
        ),
        ("delete items", [DeleteOp(c, v.ids)], denied),
        ("record an event", [RecordEventOp(c, "note", {"by": grantee})], denied),
        (
            "grant itself admin",
            [UpdateCubeOp(header.model_copy(update={"acl": [*acl, AclEntry(principal=grantee, role=Role.ADMIN)]}))],
            denied,
        ),
        (
            "share with everyone",
            [UpdateCubeOp(header.model_copy(update={"acl": [*acl, AclEntry(principal="*", role=Role.READER)]}))],
            denied,
        ),
        ("revoke everyone", [UpdateCubeOp(header.model_copy(update={"acl": []}))], denied),
        ("take ownership", [UpdateCubeOp(header.model_copy(update={"owner_id": grantee}))], denied),
        ("change the header", [UpdateCubeOp(header.model_copy(update={"description": "mine now"}))], denied),
        ("delete the cube", [DeleteCubeOp(c)], denied),
        ("import over it", [ImportCubeOp(theirs, [current.model_copy(update={"text": "replaced"})])], exists),
        ("create over it", [CreateCubeOp(theirs)], exists),
    ]


@pytest.mark.conformance
class AdversarialTests:
    """Attacks every :class:`BaseMemoryStore` must refuse. Provide a ``store`` fixture (see the module docstring)."""

    @pytest.fixture
    def store(self) -> Iterator[BaseMemoryStore]:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide a set-up store fixture")

    @pytest.fixture
    def cube(self, store: BaseMemoryStore) -> str:
        cube_id = "cube-" + uuid.uuid4().hex[:12]
        store.create_cube(CubeHeader(cube_id=cube_id, owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
        return cube_id

    @staticmethod
    def victim(store: BaseMemoryStore, cube: str) -> Victim:
        """Fill alice's ``cube`` with a secret, versions, a topic, edges, an event and an ACL; return it.

        ACL: ``rita`` reader, ``gus`` guest, ``walt`` writer, ``sam`` share (with read).
        """
        alice = CallContext.of("alice")
        token = "zq" + uuid.uuid4().hex
        header = store.get_cube(cube, ctx=alice)
        acl = [
            AclEntry(principal="rita", role=Role.READER),
            AclEntry(principal="gus", role=Role.GUEST),
            AclEntry(principal="walt", role=Role.WRITER),
            AclEntry(principal="sam", permissions=[Permission.SHARE]),
        ]
        store.update_cube(header.model_copy(update={"acl": acl}), ctx=alice)
        secret = item(f"the vault code was {token}", 1, user_id="alice", tags=["vault"], key=f"vault code {token}")
        note = item(f"alice's shopping list: tea and {token}", 2, user_id="alice")
        archived = item(f"an archived vault note {token}", 1, 4, status=LifecycleState.ARCHIVED)
        topic = item(f"session about the vault {token}", 5, node_kind=NodeKind.TOPIC)
        doomed = item(f"a deleted vault note {token}", 1, 6)
        edges = [
            Edge(source_id=topic.id, target_id=secret.id, type=RelationType.PARENT),
            Edge(source_id=topic.id, target_id=note.id, type=RelationType.PARENT),
            Edge(source_id=note.id, target_id=secret.id, type=RelationType.FOLLOWS),
            Edge(source_id=secret.id, target_id=archived.id, type=RelationType.RELATE_TO),
            Edge(source_id=doomed.id, target_id=secret.id, type=RelationType.DERIVED_FROM),
        ]
        store.add(cube, [secret, note, archived, topic, doomed], edges, ctx=alice)
        store.update(cube, [secret.model_copy(update={"text": f"the vault code is {token}"})], ctx=alice)
        store.delete(cube, [doomed.id], ctx=alice)
        store.record_event(cube, "note", {"about": f"vault {token}"}, ctx=alice)
        assert store.vector_search(cube, vec(1), 5, ctx=alice)  # search structures built before the attacks
        assert store.text_search(cube, "vault", 5, ctx=alice)
        return Victim(cube, token, secret.id, note.id, archived.id, topic.id, doomed.id, vec(1))

    def test_outsiders_guests_and_look_alikes_are_refused_everything(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        for attacker in OUTSIDERS:
            for name, ops in [*reads(v), *audit_reads(v)]:
                campaign.run(Attack(name, context(attacker), ops))
            for name, ops, refused in writes(store, v, attacker):
                campaign.run(Attack(name, context(attacker), ops, refused))
            seen = [h.cube_id for h in store.list_cubes(ctx=context(attacker))]
            assert cube not in seen, attacker
            assert store.list_cubes(ctx=context(attacker), owner_id="alice") == []
            campaign.run(Attack("list the audit chains", context(attacker), [ListAuditChainsOp()]))
            campaign.run(Attack("read the store's audit chain", context(attacker), [ListAuditOp(None)]))
            asyncio.run(campaign.arun(Attack("async get", context(attacker), [GetOp(cube, v.ids)])))
        with pytest.raises(InvalidInputError):  # the front door refuses what the forged contexts hold
            CallContext.of("\u0430lice")
        with pytest.raises(InvalidInputError):
            CallContext.of("*")
        with pytest.raises(InvalidInputError):  # trusted code's name in the audit log
            CallContext.of("system")
        assert not CallContext.of("admin").unrestricted
        campaign.unchanged("the attacks")
        campaign.check_audit()

    def test_a_reader_may_only_read(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        rita = context("rita")
        for _, ops in reads(v):  # every read is allowed to a reader
            store.batch(ops, ctx=rita)
        assert [i.id for i in store.get(cube, [v.secret_id], ctx=rita)] == [v.secret_id]
        for name, ops in audit_reads(v):  # the audit trail is not
            campaign.run(Attack(name, context("rita"), ops))
        for name, ops, refused in writes(store, v, "rita"):
            campaign.run(Attack(name, context("rita"), ops, refused))
        planted = item("planted by rita", 3)
        grant = store.get_cube(cube)
        grant = grant.model_copy(update={"acl": [*grant.acl, AclEntry(principal="rita", role=Role.WRITER)]})
        renamed = grant.model_copy(update={"acl": store.get_cube(cube).acl, "description": "rita's now"})
        mixed: list[tuple[str, list[Op]]] = [
            ("read then write", [GetOp(cube, [v.secret_id]), WriteOp(cube, WriteBatch(add=[planted]))]),
            ("write then read", [WriteOp(cube, WriteBatch(add=[planted])), GetOp(cube, [v.secret_id])]),
            ("count then delete", [CountOp(cube), DeleteOp(cube, [v.secret_id])]),
            ("search then share", [VectorSearchOp(cube, v.embedding, 5), UpdateCubeOp(grant)]),
            ("export then rename", [ListOp(cube, EVERYTHING, with_embeddings=True), UpdateCubeOp(renamed)]),
            ("read events then record one", [ListEventsOp(cube), RecordEventOp(cube, "note", {})]),
            (
                "search, write, read",
                [TextSearchOp(cube, "vault", 5), WriteOp(cube, WriteBatch(add=[planted])), CountOp(cube)],
            ),
        ]
        for name, ops in mixed:  # refused as a whole: no result at all, every op audited
            attack = Attack(name, context("rita"), ops)
            campaign.run(attack)
            entries = [e for e in campaign.audit_of(cube, "rita") if e.request_id == attack.ctx.request_id]
            forbidden = next(op for op in ops if isinstance(op, WriteOp | DeleteOp | UpdateCubeOp | RecordEventOp))
            assert sorted(e.action for e in entries) == sorted(AUDIT_ACTIONS[type(op)] for op in ops), (name, entries)
            for entry in entries:
                if entry.action == AUDIT_ACTIONS[type(forbidden)]:
                    assert entry.outcome == AuditOutcome.DENIED, (name, entry)
                else:
                    assert entry.outcome == AuditOutcome.FAILED and "not applied" in (entry.reason or ""), (name, entry)
        asyncio.run(campaign.arun(Attack("async read then write", context("rita"), mixed[0][1])))
        campaign.unchanged("the reader's attempts")
        campaign.check_audit()

    def test_a_batch_refused_at_a_cube_delete_or_import_applies_nothing(
        self, store: BaseMemoryStore, cube: str
    ) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        for who in ("rita", "walt"):  # a reader and a writer: neither may delete the cube, nor import over it
            allowed: list[Op] = [ListOp(cube, EVERYTHING, with_embeddings=True), GetOp(cube, v.ids)]
            if who == "walt":
                allowed += [WriteOp(cube, WriteBatch(add=[item("walt's note", 7)])), DeleteOp(cube, [v.note_id])]
            theirs = CubeHeader(cube_id=cube, owner_id=who, storage=StorageProfile(embedding_dim=DIM))
            for first in allowed:
                for last in (DeleteCubeOp(cube), ImportCubeOp(theirs, [item("imported", 3)])):
                    name = f"{type(first).__name__} then {type(last).__name__}"
                    campaign.run(Attack(name, context(who), [first, last], (PermissionDeniedError, CubeExistsError)))
        campaign.check_audit()  # nothing of a refused batch is audited as done

    def test_a_revoked_user_is_refused_everything_afterwards(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        alice, walt = CallContext.of("alice"), CallContext.of("walt")
        store.add(cube, [item("walt's own note", 7)], ctx=walt)  # walt could write
        n = store.count(cube)
        assert store.count(cube, ctx=walt) == n
        before = store.get_cube(cube)  # the header walt saw while he had access
        prepared = reads(v)  # ops built while walt had access
        prepared += [(name, ops) for name, ops, _ in writes(store, v, "walt") if not isinstance(ops[0], UpdateCubeOp)]
        everything: list[Op] = [
            op for _, ops in prepared for op in ops if not isinstance(op, ImportCubeOp | CreateCubeOp)
        ]
        # carol reads through the "*" entry; then walt's entry and the "*" entry are removed
        store.update_cube(before.model_copy(update={"acl": [*before.acl, AclEntry(principal="*", role=Role.READER)]}))
        assert store.count(cube, ctx=CallContext.of("carol")) == n
        header = store.get_cube(cube)
        store.update_cube(
            header.model_copy(update={"acl": [e for e in header.acl if e.principal not in ("walt", "*")]}), ctx=alice
        )
        campaign = Campaign(store, v)
        # a sharer that revokes itself cannot read on in the same batch: refused as a whole, nothing changed
        header = store.get_cube(cube)
        alone = header.model_copy(update={"acl": [e for e in header.acl if e.principal != "sam"]})
        campaign.run(Attack("revoke itself, then read", context("sam"), [UpdateCubeOp(alone), CountOp(cube)]))
        for revoked in ("walt", "carol"):
            for name, ops in prepared:
                refused: tuple[type[MemOSError], ...] = (PermissionDeniedError,)
                if isinstance(ops[0], ImportCubeOp | CreateCubeOp):
                    refused = (CubeExistsError, PermissionDeniedError)
                campaign.run(Attack(name, context(revoked), ops, refused))
            for name, ops in audit_reads(v):
                campaign.run(Attack(name, context(revoked), ops))
            for name, ops, refused in writes(store, v, revoked):
                if isinstance(ops[0], UpdateCubeOp):  # on the current header: only the ACL can refuse them
                    campaign.run(Attack(name, context(revoked), ops, refused))
            campaign.run(Attack("every op in one batch", context(revoked), everything))
            asyncio.run(campaign.arun(Attack("async batch", context(revoked), everything)))
            assert cube not in [h.cube_id for h in store.list_cubes(ctx=context(revoked))]
        # walt re-granting itself: with the header it kept (stale), or a current one
        for kept in (before, store.get_cube(cube)):
            regrant = UpdateCubeOp(
                kept.model_copy(update={"acl": [*kept.acl, AclEntry(principal="walt", role=Role.ADMIN)]})
            )
            campaign.run(
                Attack("re-grant itself", context("walt"), [regrant], (PermissionDeniedError, VersionConflictError))
            )
        campaign.unchanged("the revoked users' attempts")
        campaign.check_audit()
        # downgraded from writer to reader: walt reads, and writes no more
        header = store.get_cube(cube)
        store.update_cube(
            header.model_copy(update={"acl": [*header.acl, AclEntry(principal="walt", role=Role.READER)]}), ctx=alice
        )
        campaign = Campaign(store, v)
        assert store.count(cube, ctx=CallContext.of("walt")) == n
        for name, ops, refused in writes(store, v, "walt"):
            campaign.run(Attack(name, context("walt"), ops, refused))
        campaign.unchanged("the downgraded writer's attempts")
        campaign.check_audit()

    def test_another_users_cube_is_out_of_reach_from_ones_own(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        bob = "bob"
        # a cube of alice's, searched (caches warm), then deleted; bob creates one of that id
        gone = "cube-" + uuid.uuid4().hex[:12]
        store.create_cube(CubeHeader(cube_id=gone, owner_id="alice", storage=StorageProfile(embedding_dim=DIM)))
        old = [item(f"the old vault code {v.token}", 1, user_id="alice"), item(f"old note {v.token}", 2)]
        store.add(gone, old, [Edge(source_id=old[0].id, target_id=old[1].id, type=RelationType.RELATE_TO)])
        (first,) = store.get(gone, [old[0].id])
        store.update(gone, [first.model_copy(update={"text": f"the newer vault code {v.token}"})])
        store.record_event(gone, "note", {"about": v.token})
        assert store.vector_search(gone, vec(1), 5) and store.text_search(gone, "vault code", 5)
        store.delete_cube(gone, ctx=CallContext.of("alice"))
        # bob's cubes: his own, one whose id differs from alice's by case only, and the re-used id
        bobs = [("cube-" + uuid.uuid4().hex[:12], "own"), (cube.upper(), "case variant"), (gone, "re-used id")]
        for mine, _ in bobs:
            store.create_cube(CubeHeader(cube_id=mine, owner_id=bob, storage=StorageProfile(embedding_dim=DIM)))
            same_id = item("bob's note on the same id", 2, id=v.note_id, user_id=bob, tags=["mine"])
            store.add(mine, [same_id, item("bob's other note", 1)], ctx=CallContext.of(bob))
            store.record_event(mine, "note", {"by": bob}, ctx=CallContext.of(bob))
        alices = [*v.ids, *(i.id for i in old)]
        for mine, how in bobs:
            own_ids = {i.id for i in store.list_items(mine, EVERYTHING)}
            probes: list[Op] = [
                GetOp(mine, alices, with_embeddings=True),
                ListOp(mine, None, with_embeddings=True),
                ListOp(mine, EVERYTHING, with_embeddings=True),
                ListOp(mine, SearchFilters(user_id="alice", statuses=list(LifecycleState))),
                CountOp(mine, SearchFilters(user_id="alice")),
                EdgesOp(mine),
                EdgesOp(mine, alices, None, "both"),
                ExpandOp(mine, alices, list(RelationType), MAX_EXPAND_DEPTH),
                VectorSearchOp(mine, v.embedding, 50, EVERYTHING),
                VectorSearchOp(mine, vec(1), 50, SearchFilters(user_id="alice")),
                TextSearchOp(mine, f"vault code {v.token}", 50, EVERYTHING),
                ListEventsOp(mine),
                *(HistoryOp(mine, i, with_embeddings=True) for i in alices),
                ListAuditOp(mine),
            ]
            results = store.batch(probes, ctx=CallContext.of(bob))
            for op, result in zip(probes, results, strict=True):
                what = f"{type(op).__name__} on bob's {how} cube"
                campaign.no_leak(what, json.dumps(plain(result), default=str))
                if isinstance(op, GetOp | ListOp):
                    assert {i.id for i in result} <= own_ids and all(i.cube_id == mine for i in result), what
                if isinstance(op, ListOp | CountOp) and op.filters is not None and op.filters.user_id == "alice":
                    assert result in ([], 0), what
                if isinstance(op, VectorSearchOp | TextSearchOp):
                    assert {h for h, _ in result} <= own_ids, what
                if isinstance(op, EdgesOp | ExpandOp | TextSearchOp) or (
                    isinstance(op, HistoryOp) and op.item_id != v.note_id
                ):
                    assert result == [], what
                if isinstance(op, ListEventsOp):
                    assert [e["payload"] for e in result] == [{"by": bob}], what
                if isinstance(op, ListAuditOp):
                    assert all(e.cube_id == mine for e in result) and "alice" not in {e.actor for e in result}, what
            (history,) = store.batch([HistoryOp(mine, v.note_id)], ctx=CallContext.of(bob))
            assert [h.item.text for h in history] == ["bob's note on the same id"]
            (current,) = store.get(cube, [v.secret_id])
            refusals: list[tuple[str, list[Op], tuple[type[MemOSError], ...]]] = [
                (
                    "edge to alice's item",
                    [
                        WriteOp(
                            mine,
                            WriteBatch(
                                edges=[Edge(source_id=v.note_id, target_id=v.secret_id, type=RelationType.RELATE_TO)]
                            ),
                        )
                    ],
                    (InvalidInputError,),
                ),
                (
                    "update alice's item",
                    [WriteOp(mine, WriteBatch(update=[current.model_copy(update={"text": "pwned"})]))],
                    (MemoryNotFoundError,),
                ),
                ("audit the other chain", [ListAuditOp(cube)], (PermissionDeniedError,)),
            ]
            for name, ops, refused in refusals:
                campaign.run(Attack(f"{name} from bob's {how} cube", context(bob), ops, refused))
            # writing and deleting in its own cube never reaches alice's
            store.add(
                mine, [current.model_copy(update={"text": "bob's copy", "cube_id": cube})], ctx=CallContext.of(bob)
            )
            assert store.get(mine, [v.secret_id])[0].cube_id == mine
            assert store.delete(mine, alices, ctx=CallContext.of(bob)) == 2  # its own two of those ids
            campaign.unchanged(f"bob's writes in his {how} cube")
        assert cube not in [h.cube_id for h in store.list_cubes(ctx=CallContext.of(bob))]
        campaign.check_audit()

    def test_crafted_ids_and_filter_values_are_refused_or_inert(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        crafted = [
            *CRAFTED,
            "../" + cube,
            cube + "/..",
            cube + "\x00",
            cube + "' OR '1'='1",
            cube + "%",
            cube.upper(),
            v.secret_id + "' OR '1'='1",
            v.secret_id + "\x00",
            v.secret_id.upper(),
            "%" + v.secret_id[4:],
        ]
        unknown: tuple[type[MemOSError], ...] = (InvalidInputError, CubeNotFoundError)
        alice = CallContext.of("alice")
        callers: list[Callable[[], CallContext]] = [lambda: context("bob"), lambda: context("alice"), trusted]
        for value in crafted:
            shown = repr(value[:24])
            # as a cube id: unknown to an outsider, to the owner and to trusted code
            for name, ops in reads(v):
                attack = Attack(f"{name} of cube {shown}", context("bob"), [_recube(op, value) for op in ops], unknown)
                campaign.run(attack, compare=False)
            for caller in callers:
                for op in (DeleteCubeOp(value), DeleteOp(value, v.ids), WriteOp(value, WriteBatch(add=[item("x")]))):
                    campaign.run(Attack(f"{type(op).__name__} on cube {shown}", caller(), [op], unknown), compare=False)
            # as an item id: refused to an outsider, and inert for the owner
            for probe in (GetOp(cube, [value]), DeleteOp(cube, [value]), HistoryOp(cube, value)):
                campaign.run(Attack(f"{type(probe).__name__} of item {shown}", context("bob"), [probe]), compare=False)
            inert: list[Op] = [
                GetOp(cube, [value], with_embeddings=True),
                DeleteOp(cube, [value]),
                HistoryOp(cube, value, with_embeddings=True),
                EdgesOp(cube, [value]),
                ExpandOp(cube, [value], list(RelationType), MAX_EXPAND_DEPTH),
                ListEventsOp(cube, value),
                ListAuditOp(cube, actor=value),
                ListAuditOp(cube, action=value),
                ListCubesOp(owner_id=value),
            ]
            # as filter values: a subject (user_id) and a tag that no item has
            for flt in (_filters(user_id=value), _filters(tags_any=[value])):
                inert += [
                    ListOp(cube, flt, with_embeddings=True),
                    CountOp(cube, flt),
                    VectorSearchOp(cube, v.embedding, 10, flt),
                    TextSearchOp(cube, "vault code " + value, 10, flt),
                    ExpandOp(cube, [v.secret_id], list(RelationType), MAX_EXPAND_DEPTH, flt),
                ]
            for read in inert:
                what = f"{type(read).__name__} with {shown}"
                try:
                    result = store.batch([read], ctx=alice)[0]
                except InvalidInputError as exc:
                    campaign.no_leak(what, str(exc))
                    continue
                except Exception as exc:
                    pytest.fail(
                        f"{what} raised {type(exc).__name__} ({str(exc)[:300]}), expected no match or InvalidInputError"
                    )
                assert result in ([], 0), (what, result)
            # as a query: anything it finds, nothing breaks
            store.batch([TextSearchOp(cube, value, 10, EVERYTHING)], ctx=alice)
            # as a principal: malformed ones are refused by the front door, and by the store when forged
            try:
                validate_id(value)
            except InvalidInputError:
                with pytest.raises(InvalidInputError):
                    CallContext.of(value)
                if value != "*":
                    with pytest.raises(ValueError):  # pydantic's ValidationError: no ACL entry names it
                        AclEntry(principal=value, role=Role.READER)
            if 0 < len(value) <= 128:
                for name, ops in [*reads(v)[:3], *audit_reads(v)[:1]]:
                    campaign.run(Attack(f"{name} as {shown}", context(value), ops), compare=False)
                add = WriteOp(cube, WriteBatch(add=[item("x")]))
                campaign.run(Attack(f"add as {shown}", context(value), [add]), compare=False)
            campaign.unchanged(f"the attacks with {shown}")
        for entry in store.list_audit(None, limit=10_000):  # malformed cube ids are never written into an entry
            assert entry.cube_id is None or validate_id(entry.cube_id), entry
        assert store.verify_audit(None).ok and store.verify_audit(cube).ok
        campaign.check_audit()

    def test_an_import_or_create_over_an_existing_cube_is_refused(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        mine = store.list_items(cube, EVERYTHING, with_embeddings=True)
        copies = [i.model_copy(update={"text": f"replaced by an import {n}"}) for n, i in enumerate(mine)]
        links = [Edge(source_id=copies[0].id, target_id=copies[1].id, type=RelationType.CONFLICTS_WITH)]
        for attacker in ("bob", "rita", "walt", "sam"):
            for owner, acl in ((attacker, []), ("alice", [AclEntry(principal=attacker, role=Role.ADMIN)])):
                header = CubeHeader(cube_id=cube, owner_id=owner, acl=acl, storage=StorageProfile(embedding_dim=DIM))
                attempts: list[tuple[str, list[Op]]] = [
                    ("import", [ImportCubeOp(header, copies, links)]),
                    (
                        "import, as MemOS does",
                        [ImportCubeOp(header, copies, links), RecordEventOp(cube, "imported", {})],
                    ),
                    ("empty import", [ImportCubeOp(header)]),
                    ("create", [CreateCubeOp(header)]),
                ]
                for name, ops in attempts:
                    campaign.run(
                        Attack(
                            f"{name} owned by {owner}", context(attacker), ops, (CubeExistsError, PermissionDeniedError)
                        )
                    )
        # a cube whose id differs by case is another cube: its import stores its items there only
        twin = cube[:1].upper() + cube[1:]
        header = CubeHeader(cube_id=twin, owner_id="bob", storage=StorageProfile(embedding_dim=DIM))
        stray = [i.model_copy(update={"cube_id": cube}) for i in copies]  # claiming to belong to alice's cube
        dangling = [Edge(source_id=copies[0].id, target_id="not-imported", type=RelationType.RELATE_TO)]
        campaign.run(
            Attack(
                "import with an edge out of it",
                context("bob"),
                [ImportCubeOp(header, stray, dangling)],
                (InvalidInputError,),
            )
        )
        with pytest.raises(CubeNotFoundError):
            store.get_cube(twin)
        store.import_cube(header, stray, links, ctx=CallContext.of("bob"))
        assert {i.cube_id for i in store.list_items(twin, EVERYTHING)} == {twin}
        assert store.count(twin, EVERYTHING) == len(mine)
        campaign.unchanged("the imports")
        campaign.check_audit()

    def test_a_cube_id_the_header_would_refuse_is_refused(self, store: BaseMemoryStore, cube: str) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        template = CubeHeader(cube_id="placeholder", owner_id="bob", storage=StorageProfile(embedding_dim=DIM))
        for value in ("../" + cube, cube + "\x00", "*", "x' OR '1'='1", "a" * 300):
            header = template.model_copy(update={"cube_id": value})  # model_copy does not validate
            for op in (CreateCubeOp(header), ImportCubeOp(header, [item("x")])):
                campaign.run(
                    Attack(f"{type(op).__name__} of {value[:20]!r}", context("bob"), [op], (InvalidInputError,))
                )
        assert store.list_cubes(ctx=CallContext.of("alice"))  # every user still lists its cubes
        assert all(validate_id(h.cube_id) for h in store.list_cubes())
        campaign.unchanged("the malformed cube ids")
        campaign.check_audit()

    def test_a_sharer_cannot_store_an_acl_entry_the_header_would_refuse(
        self, store: BaseMemoryStore, cube: str
    ) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        for value in ("x' OR '1'='1", "*/", "\x00", "alice\n"):
            header = store.get_cube(cube)
            entry = AclEntry(principal="newbie", role=Role.READER).model_copy(update={"principal": value})
            update = UpdateCubeOp(header.model_copy(update={"acl": [*header.acl, entry]}))
            campaign.run(
                Attack(
                    f"an ACL entry for {value!r}", context("sam"), [update], (InvalidInputError, PermissionDeniedError)
                )
            )
        assert store.count(cube, ctx=CallContext.of("alice")) == 4  # secret, note, archived, topic
        campaign.unchanged("the malformed ACL entries")
        campaign.check_audit()


def _recube(op: Op, cube_id: str) -> Op:
    """Return ``op`` on the cube ``cube_id`` (ops of :func:`reads` only)."""
    target: Any = op
    return cast(Op, dataclasses.replace(target, cube_id=cube_id))


def _filters(**values: Any) -> SearchFilters:
    """Return filters over every status and node kind with ``values``, unvalidated when the model refuses them.

    A value the model refuses (a 100,000-character ``user_id``) is passed as it is, as code that
    skips validation would: the store must still find nothing, or refuse it with InvalidInputError.
    """
    fields: dict[str, Any] = {**EVERYTHING.model_dump(), **values}
    try:
        return SearchFilters(**fields)
    except ValueError:
        return SearchFilters.model_construct(**fields)

    def test_owners_versions_and_items_the_caller_may_not_set_are_refused(
        self, store: BaseMemoryStore, cube: str
    ) -> None:
        v = self.victim(store, cube)
        campaign = Campaign(store, v)
        header = store.get_cube(cube)
        for who in ("bob", "rita", "gus"):  # no admin, no share: refused before the version is compared
            for version in (header.version, header.version + 1, 1):
                stale = header.model_copy(update={"version": version, "description": "mine now"})
                campaign.run(Attack(f"header update at version {version}", context(who), [UpdateCubeOp(stale)]))
        # a cube planted for another owner, who would later take it for its own
        planted = CubeHeader(
            cube_id="cube-" + uuid.uuid4().hex[:12], owner_id="alice", storage=StorageProfile(embedding_dim=DIM)
        )
        for op in (CreateCubeOp(planted), ImportCubeOp(planted, [item("planted", 1)])):
            campaign.run(Attack(f"{type(op).__name__} owned by alice", context("bob"), [op]))
        with pytest.raises(CubeNotFoundError):
            store.get_cube(planted.cube_id)
        # items the model refuses, handed over unvalidated by a writer: nothing stored
        good = item("walt's note", 2)
        for field_name, value in (("id", "../" + v.secret_id), ("id", "x\x00"), ("tags", ["x" * 10_000])):
            bad = good.model_copy(update={field_name: value})
            for batch in (WriteBatch(add=[bad]), WriteBatch(ensure=[bad])):
                campaign.run(
                    Attack(
                        f"an item with a bad {field_name}",
                        context("walt"),
                        [WriteOp(cube, batch)],
                        (InvalidInputError,),
                    )
                )
        mine = store.get(cube, [v.note_id], ctx=CallContext.of("alice"))[0]
        bad_update = mine.model_copy(update={"tags": ["x" * 10_000]})
        campaign.run(
            Attack(
                "an update with a bad tag",
                context("walt"),
                [WriteOp(cube, WriteBatch(update=[bad_update]))],
                (InvalidInputError,),
            )
        )
        campaign.unchanged("the refused owners, versions and items")
        campaign.check_audit()
