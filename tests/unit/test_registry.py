"""The MemStore registry through the facade: publish, subscribe, search labels, revoke, bundles, processes.

The store ops themselves are in the conformance suite (``memos_agents.testing.registry``, every
backend); here: what ``MemOS.registry`` adds (snapshots and their bundles, signatures and their
refusals, embedder compatibility, search across own and subscribed cubes) and two agents in
separate processes sharing one home (SQLite) or one database (the Bolt server).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zipfile
from pathlib import Path
from typing import Any

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE
from memos_agents.cube import read_archive_parts
from memos_agents.errors import (
    ArchiveIOError,
    ConfigError,
    CubeNotFoundError,
    IncompatibleBundleError,
    InvalidInputError,
    NewerFormatError,
    PermissionDeniedError,
    RegistryEntryNotFoundError,
    TamperedBundleError,
    UnsignedBundleError,
    UntrustedPublisherError,
)
from memos_agents.infra.registry import bundle_path, key_fingerprint
from memos_agents.plaintext.stores.base import CallContext, ForgetUserOp, GetCubeOp
from memos_agents.testing.bolt_server import BoltTarget, new_tenant

pytestmark = pytest.mark.unit

FACTS = ["Alice's favourite tea is jasmine green tea", "The launch review is on March 3 in Lisbon"]


def _mos(home: Path | str, **config: Any) -> MemOS:
    return MemOS.from_path(home, **{**PRESET_OFFLINE, **config}).setup()


def _fill(mos: MemOS, cube: str = "alice-notes", owner: str = "alice") -> None:
    mos.create_cube(cube, owner)
    mos.add([{"role": "user", "content": f} for f in FACTS], owner, cube, mode="facts")


@pytest.fixture
def mos(tmp_path: Path) -> Any:
    m = _mos(tmp_path / "home")
    _fill(m)
    yield m
    m.close()


def _rewrite(src: Path, dst: Path, change: dict[str, Any]) -> None:
    """Copy a bundle, replacing members (name -> bytes, or a function of the old bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = change.get(info.filename, data)
            zout.writestr(info.filename, new(data) if callable(new) else new)


def test_snapshot_publish_subscribe_search_and_revoke(mos: MemOS) -> None:
    mos.add(
        [{"role": "user", "content": "Alice's private diary mentions a surprise party"}],
        "alice",
        "alice-notes",
        mode="facts",
        visibility="private",
    )
    entry = mos.registry.publish(
        "alice-notes", "alice", name="alice-facts", version="1.0.0", tags=["team"], licence="CC-BY-4.0"
    )
    assert entry.manifest.items == 2  # the private fact is not published
    assert entry.manifest.memory_types and entry.manifest.checksum and entry.signature
    assert (entry.manifest.embedding_model, entry.manifest.embedding_dim) == (mos.embedder.model_name, 256)
    assert bundle_path(mos.config.registry_path, "alice-facts", "1.0.0").is_file()
    # the publisher's own default search reads its cube, not the snapshot as well
    assert {r.item.cube_id for r in mos.search("jasmine tea", "alice")} == {"alice-notes"}
    # bob subscribes: his default search covers his own cubes and the snapshot, labelled
    mos.create_cube("bob-notes", "bob")
    mos.add([{"role": "user", "content": "Bob drinks jasmine tea on Fridays"}], "bob", "bob-notes", mode="facts")
    mos.registry.subscribe("alice-facts", "bob")
    hits = mos.search("jasmine tea", "bob")
    labels = {(r.item.cube_id, r.published) for r in hits}
    assert labels == {("bob-notes", None), ("alice-facts@1.0.0", "alice-facts@1.0.0")}
    assert "surprise party" not in " ".join(r.item.text for r in hits)
    named = mos.search("jasmine tea", "bob", cube_ids=["alice-facts@1.0.0"])
    assert {r.published for r in named} == {"alice-facts@1.0.0"}
    # the pinned snapshot stays as it was when alice's cube changes
    mos.add([{"role": "user", "content": "Alice now prefers oolong tea"}], "alice", "alice-notes", mode="facts")
    assert "oolong" not in " ".join(r.item.text for r in mos.search("tea", "bob", cube_ids=["alice-facts@1.0.0"]))
    # revocation: the next search leaves it out, a direct read is refused
    mos.registry.revoke("alice-facts", "alice", subscriber="bob")
    assert {r.item.cube_id for r in mos.search("jasmine tea", "bob")} == {"bob-notes"}
    with pytest.raises(PermissionDeniedError):
        mos.search("jasmine tea", "bob", cube_ids=["alice-facts@1.0.0"])


def test_live_subscription_reads_and_writes_through_the_cube_roles(mos: MemOS) -> None:
    mos.registry.publish("alice-notes", "alice", name="alice-live", version="0.1.0", kind="live", access="write")
    with pytest.raises(PermissionDeniedError):
        mos.add([{"role": "user", "content": "Dave adds a note"}], "dave", "alice-notes", mode="facts")
    sub = mos.registry.subscribe("alice-live", "dave", access="write")
    assert sub.cube_id == "alice-notes"
    mos.add([{"role": "user", "content": "The launch review moved to Porto"}], "dave", "alice-notes", mode="facts")
    hits = mos.search("launch review Porto", "dave")
    assert hits and hits[0].published == "alice-live@0.1.0" and "Porto" in hits[0].item.text
    assert "Porto" in " ".join(r.item.text for r in mos.search("launch review", "alice"))  # live: one cube
    assert mos.registry.unsubscribe("alice-live", "dave") == 1
    with pytest.raises(PermissionDeniedError):
        mos.add([{"role": "user", "content": "after unsubscribing"}], "dave", "alice-notes", mode="facts")


def test_guests_list_public_entries_only(mos: MemOS) -> None:
    mos.registry.publish("alice-notes", "alice", name="public-facts", version="1.0.0", description="team tea facts")
    mos.registry.publish(
        "alice-notes", "alice", name="inner-facts", version="1.0.0", visibility="restricted", audience=["bob"]
    )
    assert [e.name for e in mos.registry.list("guest")] == ["public-facts"]
    assert [e.name for e in mos.registry.list("bob")] == ["inner-facts", "public-facts"]
    assert [e.name for e in mos.registry.search("TEA team", "guest")] == ["public-facts"]
    with pytest.raises(RegistryEntryNotFoundError):
        mos.registry.subscribe("inner-facts", "guest")
    with pytest.raises(RegistryEntryNotFoundError):
        mos.registry.export("inner-facts", "guest", "/tmp/never-written.memcube")


def test_publishing_needs_share_on_the_cube(mos: MemOS) -> None:
    mos.grant("alice-notes", "alice", "rita", role="reader")
    with pytest.raises(PermissionDeniedError):
        mos.registry.publish("alice-notes", "rita", name="ritas-copy", version="1.0.0")
    with pytest.raises(PermissionDeniedError):
        mos.registry.publish("alice-notes", "mallory", name="stolen", version="1.0.0")
    assert mos.registry.list("alice") == []
    with pytest.raises(InvalidInputError):
        mos.registry.publish("alice-notes", "alice", name="Bad Name", version="1.0.0")
    with pytest.raises(InvalidInputError):
        mos.registry.publish("alice-notes", "alice", name="ok", version="1.0.0+build.7")
    with pytest.raises(InvalidInputError):
        mos.registry.publish("alice-notes", "alice", name="ok", version="1.0.0", access="write")  # snapshot


def test_bundles_round_trip_and_refuse_tampering(mos: MemOS, tmp_path: Path) -> None:
    entry = mos.registry.publish("alice-notes", "alice", name="alice-facts", version="1.0.0")
    bundle = mos.registry.export("alice-facts", "bob", tmp_path / "out" / "facts.memcube")
    parts = read_archive_parts(bundle)
    assert parts.format_version == 2 and set(parts.extras) == {"registry.json", "signature.json"}
    other = _mos(tmp_path / "other")
    try:
        header = other.registry.import_bundle(bundle, "carol")
        assert (header.cube_id, header.owner_id, header.read_only) == ("alice-facts@1.0.0", "carol", True)
        assert header.source == "memstore:alice-facts@1.0.0"
        hits = other.search("jasmine tea", "carol")  # an imported bundle is the importer's own cube
        assert hits and hits[0].item.cube_id == "alice-facts@1.0.0"
        with pytest.raises(PermissionDeniedError):  # read-only, owner included
            other.add([{"role": "user", "content": "x"}], "carol", "alice-facts@1.0.0", mode="facts")

        def item_changed(data: bytes) -> bytes:
            return data.replace(b"jasmine", b"earlgrey")

        cases: dict[str, tuple[dict[str, Any], type[Exception]]] = {
            "item": ({"items.jsonl": item_changed}, TamperedBundleError),
            "entry": (
                {"registry.json": lambda d: d.replace(b'"alice-facts"', b'"alice-fakes"')},
                TamperedBundleError,
            ),
            "signature": (
                {"signature.json": lambda d: json.dumps({**json.loads(d), "signature": "0" * 128}).encode()},
                TamperedBundleError,
            ),
        }
        for name, (change, error) in cases.items():
            bad = tmp_path / f"bad-{name}.memcube"
            _rewrite(bundle, bad, change)
            with pytest.raises(error):
                other.registry.import_bundle(bad, "carol", cube_id=f"bad-{name}")
        # content replaced and every checksum in manifest.json recomputed: the signed checksum differs
        resummed = tmp_path / "resummed.memcube"
        with zipfile.ZipFile(bundle) as z:
            manifest = json.loads(z.read("manifest.json"))
            items = z.read("items.jsonl").replace(b"jasmine", b"earlgrey")
        manifest["sha256"]["items.jsonl"] = hashlib.sha256(items).hexdigest()
        _rewrite(bundle, resummed, {"items.jsonl": items, "manifest.json": json.dumps(manifest).encode()})
        with pytest.raises(TamperedBundleError, match="not what its publisher signed"):
            other.registry.import_bundle(resummed, "carol", cube_id="resummed")
        # unsigned: refused unless allowed
        unsigned = tmp_path / "unsigned.memcube"
        with zipfile.ZipFile(bundle) as zin, zipfile.ZipFile(unsigned, "w") as zout:
            for info in zin.infolist():
                if info.filename != "signature.json":
                    zout.writestr(info.filename, zin.read(info.filename))
        with pytest.raises(UnsignedBundleError):
            other.registry.import_bundle(unsigned, "carol", cube_id="unsigned")
        assert other.registry.import_bundle(unsigned, "carol", cube_id="unsigned", allow_unsigned=True).read_only
        # a newer format
        newer = tmp_path / "newer.memcube"
        _rewrite(
            bundle, newer, {"manifest.json": lambda d: json.dumps({**json.loads(d), "format_version": 99}).encode()}
        )
        with pytest.raises(NewerFormatError):
            other.registry.import_bundle(newer, "carol", cube_id="newer")
        # nothing refused was stored
        assert {h.cube_id for h in other.list_cubes("carol")} == {"alice-facts@1.0.0", "unsigned"}
    finally:
        other.close()
    assert entry.public_key is not None


def test_bundle_keys_and_embedders_must_match(mos: MemOS, tmp_path: Path) -> None:
    entry = mos.registry.publish("alice-notes", "alice", name="alice-facts", version="1.0.0")
    bundle = mos.registry.export("alice-facts", "alice", tmp_path / "facts.memcube")
    assert entry.public_key is not None
    # a trusted-keys list without the publisher's key
    strict = _mos(tmp_path / "strict", registry={"trusted_keys": ["ab" * 32]})
    with pytest.raises(UntrustedPublisherError):
        strict.registry.import_bundle(bundle, "carol")
    strict.close()
    trusting = _mos(tmp_path / "trusting", registry={"trusted_keys": [entry.public_key]})
    assert trusting.registry.import_bundle(bundle, "carol").cube_id == "alice-facts@1.0.0"
    trusting.close()
    # a registry that knows "alice" by another key (someone else published there as alice first)
    impostor = _mos(tmp_path / "impostor")
    _fill(impostor)
    impostor.registry.publish("alice-notes", "alice", name="other", version="1.0.0")
    with pytest.raises(UntrustedPublisherError, match=key_fingerprint(entry.public_key)):
        impostor.registry.import_bundle(bundle, "carol")
    impostor.close()
    # another embedding dimension, another embedding model
    for name, embedder in (("dim", {"provider": "hashing", "dim": 128}),):
        wrong = _mos(tmp_path / name, embedder=embedder)
        with pytest.raises(IncompatibleBundleError):
            wrong.registry.import_bundle(bundle, "carol")
        wrong.close()
    # subscribing with another embedder is refused too (the same store, another MemOS)
    other_embedder = MemOS.from_path(
        mos.config.home, embedder={"provider": "hashing", "dim": 128}, llm={"provider": "none"}
    )
    other_embedder.setup()
    try:
        with pytest.raises(ConfigError):
            other_embedder.registry.subscribe("alice-facts", "bob")
    finally:
        other_embedder.close()


def test_export_refuses_live_entries_and_missing_or_altered_bundles(mos: MemOS, tmp_path: Path) -> None:
    mos.registry.publish("alice-notes", "alice", name="alice-live", version="1.0.0", kind="live")
    with pytest.raises(InvalidInputError):
        mos.registry.export("alice-live", "alice", tmp_path / "x.memcube")
    mos.registry.publish("alice-notes", "alice", name="alice-facts", version="1.0.0")
    stored = bundle_path(mos.config.registry_path, "alice-facts", "1.0.0")
    _rewrite(stored, tmp_path / "altered.memcube", {"items.jsonl": lambda d: d.replace(b"jasmine", b"earl")})
    (tmp_path / "altered.memcube").replace(stored)
    with pytest.raises(TamperedBundleError):
        mos.registry.export("alice-facts", "bob", tmp_path / "y.memcube")
    stored.unlink()
    with pytest.raises(ArchiveIOError, match="not in this registry directory"):
        mos.registry.export("alice-facts", "bob", tmp_path / "z.memcube")


def test_async_twins(mos: MemOS, tmp_path: Path) -> None:
    import asyncio

    async def go() -> None:
        entry = await mos.registry.apublish("alice-notes", "alice", name="alice-facts", version="1.0.0")
        assert (await mos.registry.aget("alice-facts", "bob")).key == entry.key
        assert [e.key for e in await mos.registry.alist("bob")] == [entry.key]
        assert [e.key for e in await mos.registry.asearch("jasmine", "bob")] == []  # text is the entry's, not memories'
        sub = await mos.registry.asubscribe("alice-facts", "bob")
        assert [s.key for s in await mos.registry.asubscriptions("bob")] == [sub.key]
        hits = await mos.asearch("jasmine tea", "bob")
        assert hits and hits[0].published == entry.key
        path = await mos.registry.aexport("alice-facts", "bob", tmp_path / "a.memcube")
        other = _mos(tmp_path / "async-other")
        try:
            assert (await other.registry.aimport_bundle(path, "carol")).read_only
        finally:
            other.close()
        assert (await mos.registry.arevoke("alice-facts", "alice")).revoked == [entry.key]
        assert await mos.registry.aunsubscribe("alice-facts", "bob") == 0

    asyncio.run(go())


# -- two agents in separate processes -------------------------------------------------------------------
def _publisher_step(home: str, store: dict[str, Any], step: str) -> list[str]:
    with MemOS.from_path(home, store=store, **PRESET_OFFLINE) as mos:
        if step == "publish":
            _fill(mos)
            mos.registry.publish("alice-notes", "alice", name="alice-facts", version="1.0.0")
            mos.registry.publish("alice-notes", "alice", name="alice-live", version="1.0.0", kind="live")
            return [e.key for e in mos.registry.list("alice")]
        if step == "add":
            mos.add([{"role": "user", "content": "Alice's badge number is 4417"}], "alice", "alice-notes", mode="facts")
            return []
        result = mos.registry.revoke("alice-facts", "alice", subscriber="bob")
        return [f"{s}:{k}" for s, k in result.ended]


def _subscriber_step(home: str, store: dict[str, Any], step: str) -> list[str]:
    with MemOS.from_path(home, store=store, **PRESET_OFFLINE) as mos:
        if step == "subscribe":
            seen = [e.key for e in mos.registry.list("bob")]
            mos.registry.subscribe("alice-facts", "bob")
            mos.registry.subscribe("alice-live", "bob")
            return seen
        return sorted({f"{r.published}|{r.item.text}" for r in mos.search("badge number jasmine tea", "bob", top_k=10)})


def _two_processes(home: Path, store: dict[str, Any]) -> None:
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as alice, spawn.Pool(1) as bob:
        assert alice.apply(_publisher_step, (str(home), store, "publish")) == ["alice-facts@1.0.0", "alice-live@1.0.0"]
        assert bob.apply(_subscriber_step, (str(home), store, "subscribe")) == ["alice-facts@1.0.0", "alice-live@1.0.0"]
        alice.apply(_publisher_step, (str(home), store, "add"))  # a live change, seen by bob at once
        seen = bob.apply(_subscriber_step, (str(home), store, "search"))
        assert "alice-live@1.0.0|Alice's badge number is 4417" in seen
        assert f"alice-facts@1.0.0|{FACTS[0]}" in seen and f"alice-live@1.0.0|{FACTS[0]}" in seen
        assert not any(s.startswith("alice-facts@1.0.0|Alice's badge") for s in seen)  # the snapshot is pinned
        assert alice.apply(_publisher_step, (str(home), store, "revoke")) == ["bob:alice-facts@1.0.0"]
        seen = bob.apply(_subscriber_step, (str(home), store, "search"))
        assert seen and not any(s.startswith("alice-facts@1.0.0|") for s in seen)


def test_two_processes_share_one_home(tmp_path: Path) -> None:
    _two_processes(tmp_path, {})


@pytest.mark.integration
def test_two_processes_share_one_neo4j_database(tmp_path: Path, bolt_target: BoltTarget) -> None:
    store = {
        "backend": "neo4j",
        "uri": bolt_target.uri,
        "user": bolt_target.auth[0],
        "password": bolt_target.auth[1],
        "database": bolt_target.database,
        "tenant": new_tenant(),
    }
    _two_processes(tmp_path, store)


def test_erasure_reaches_snapshot_cubes(mos: MemOS) -> None:
    """A read-only snapshot refuses writes, not erasure: its publisher (admin on it) can forget a user there."""
    mos.grant("alice-notes", "alice", "uma", role="writer")
    mos.add([{"role": "user", "content": "Uma's locker code is 5512"}], "uma", "alice-notes", mode="facts")
    entry = mos.registry.publish("alice-notes", "alice", name="alice-facts", version="1.0.0")
    assert any("Uma" in i.text for i in mos.store.list_items(entry.cube_id))
    erased = mos.store.run(ForgetUserOp(entry.cube_id, "uma"), ctx=CallContext.of("alice"))
    assert erased and not any("Uma" in i.text for i in mos.store.list_items(entry.cube_id))


def test_piggyback_appends_ops_to_the_first_batch_and_forwards_errors() -> None:
    from memos_agents.flow import Compute, Flow, piggyback, run_sync
    from memos_agents.plaintext.stores.base import ListSubscriptionsOp
    from memos_agents.plaintext.stores.memory import InMemoryStore

    store = InMemoryStore()
    batches: list[int] = []
    real = store.batch

    def counting(ops: Any, *, ctx: Any = None) -> list[Any]:
        batches.append(len(ops))
        return real(ops, ctx=ctx)

    store.batch = counting  # type: ignore[method-assign]

    def flow() -> Flow[str]:
        try:
            yield [GetCubeOp("missing-cube")]
        except CubeNotFoundError:
            pass  # handled by the flow, as retrieval handles a dimension error
        x = yield Compute(lambda: "computed")
        return str(x)

    value, extra = run_sync(piggyback(flow(), [ListSubscriptionsOp()]), store, CallContext.of("bob"))
    # the failed first batch carried the extra op; the flow handled the error, the extra ran again at the end
    assert value == "computed" and extra == [[]] and batches == [2, 1]

    def no_batch() -> Flow[int]:
        return 1
        yield  # pragma: no cover

    batches.clear()
    assert run_sync(piggyback(no_batch(), []), store, CallContext.of("bob")) == (1, [])
    assert batches == []
