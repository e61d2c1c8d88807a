"""End-to-end runs of the `memos` CLI as a user would type it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"


def memos(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memos_agents", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
    )


@pytest.mark.smoke
@pytest.mark.models
def test_demo_on_a_small_slice(tmp_path: Path) -> None:
    run = memos(
        "demo",
        "--data",
        str(LOCOMO),
        "--home",
        str(tmp_path / "home"),
        "--max-sessions",
        "2",
        "--questions",
        "2",
        home=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "Ingesting LoCoMo conv-26" in out and "summary" in out
    assert out.count("Answer") == 2 and "evidence recall" in out
    assert "D1:" in out  # source dia_ids of retrieved memories are shown
    assert (tmp_path / "home" / "memos.db").exists()
    assert (tmp_path / "home" / "models" / "smollm2-135m-instruct" / "bf16" / "config.json").exists()


@pytest.mark.smoke
def test_bench_writes_result_files(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = memos(
        "bench",
        "locomo",
        "--data",
        str(LOCOMO),
        "--conversations",
        "1",
        "--embedder",
        "hashing",
        "--k",
        "5,10",
        "--budget",
        "500,1000",
        "--out",
        str(out),
        home=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["questions"] > 100
    assert set(results["recall_at"]) == {"5", "10"} and set(results["recall_within_tokens"]) == {"500", "1000"}
    assert 0 < results["recall_at"]["5"] <= results["recall_at"]["10"] <= 1
    assert results["recall_within_tokens"]["500"] <= results["recall_within_tokens"]["1000"]
    assert set(results["by_category"]) == {"1", "2", "3", "4"}
    assert results["search_ms"]["p50"] <= results["search_ms"]["p95"]
    ingest = results["ingest"]
    assert ingest["turns"] == 419 and ingest["embed_only_seconds"] > 0
    assert 0 < ingest["non_embedding_seconds"] < ingest["seconds"]
    assert (out / "results.md").read_text().startswith("# LoCoMo")
    assert (out / "recall.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.smoke
def test_bench_scale_writes_result_files(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    run = memos(
        "bench",
        "scale",
        "--data",
        str(LOCOMO),
        "--sizes",
        "200,400",
        "--queries",
        "5",
        "--adds",
        "3",
        "--store-option",
        "sqlite_synchronous=FULL",
        "--out",
        str(out),
        home=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())
    setup = results["setup"]
    assert setup["embedder"]["dim"] == 384 and setup["store"]["options"] == {"sqlite_synchronous": "FULL"}
    assert [r["size"] for r in results["sizes"]] == [200, 400]
    for row in results["sizes"]:
        assert row["bulk"]["items"] == 200 and row["bulk"]["items_per_s"] > 0
        assert row["facade"]["messages"] == 200 and row["one_add_ms"]["n"] == 3
        assert row["search_ms"]["n"] == 5 and 0 < row["search_ms"]["p50"] <= row["search_ms"]["p95"]
        assert len(row["foreign_commit"]["first_search_ms"]) == 5 and row["reopen"]["first_search_ms"] > 0
        assert row["rss"]["rss_mib"] > 0 and row["disk_mib"] > 0
        recall = row["recall_at_10"]
        assert recall["exact_set"] == recall["store_active"] == row["active_memories"] > row["size"]
        assert 0 <= recall["user_filter"] <= 1 and 0 <= recall["default"] <= 1
    assert results["sizes"][1]["active_memories"] > results["sizes"][0]["active_memories"]
    assert (out / "results.md").read_text().startswith("# Scale")
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.smoke
@pytest.mark.models
def test_add_search_export_import_info(tmp_path: Path) -> None:
    home = tmp_path / "home"
    add = memos(
        "add", "I moved to Lisbon in May.", "--user", "alice", "--cube", "notes", "--home", str(home), home=tmp_path
    )
    assert add.returncode == 0, add.stdout + add.stderr
    found = memos("search", "Where did Alice move?", "--user", "alice", "--home", str(home), "--json", home=tmp_path)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits and "Lisbon" in hits[0]["item"]["text"]
    archive = tmp_path / "notes.zip"
    assert (
        memos("cube", "export", "notes", str(archive), "--user", "alice", "--home", str(home), home=tmp_path).returncode
        == 0
    )
    imp = memos(
        "cube", "import", str(archive), "--user", "bob", "--as", "notes-copy", "--home", str(home), home=tmp_path
    )
    assert imp.returncode == 0 and "notes-copy" in imp.stdout
    info = memos("cube", "info", "notes-copy", "--user", "bob", "--home", str(home), home=tmp_path)
    assert info.returncode == 0 and '"owner_id": "bob"' in info.stdout
    denied = memos("cube", "info", "notes", "--user", "bob", "--home", str(home), home=tmp_path)
    assert denied.returncode == 2 and "PermissionDeniedError" in denied.stdout
    bad = memos("search", "  ", "--user", "alice", "--home", str(home), home=tmp_path)
    assert bad.returncode == 2 and "InvalidInputError" in bad.stdout


@pytest.mark.smoke
@pytest.mark.models
def test_cube_redaction_masks_and_refuses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    email = "alice.w" + "@" + "example.org"
    setting = memos(
        "cube", "redaction", "notes", "--user", "alice", "--mode", "mask", "--home", str(home), home=tmp_path
    )
    assert setting.returncode == 0 and '"mode": "mask"' in setting.stdout, setting.stdout + setting.stderr
    add = memos(
        "add", f"Write to {email} please.", "--user", "alice", "--cube", "notes", "--home", str(home), home=tmp_path
    )
    assert add.returncode == 0 and "masked 1 email" in add.stdout, add.stdout + add.stderr
    found = memos("search", "write to", "--user", "alice", "--home", str(home), "--json", home=tmp_path)
    assert found.returncode == 0 and email not in found.stdout and "[EMAIL]" in found.stdout
    memos("cube", "redaction", "notes", "--user", "alice", "--mode", "refuse", "--home", str(home), home=tmp_path)
    refused = memos("add", f"Or {email}.", "--user", "alice", "--cube", "notes", "--home", str(home), home=tmp_path)
    assert refused.returncode == 2 and "SensitiveDataError" in refused.stdout and email not in refused.stdout


@pytest.mark.smoke
def test_acl_grant_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    h = ("--home", str(home))
    assert memos("cube", "redaction", "notes", "--user", "ann", "--mode", "off", *h, home=tmp_path).returncode == 0
    granted = memos("acl", "grant", "notes", "bob", "--role", "writer", "--user", "ann", *h, home=tmp_path)
    assert granted.returncode == 0 and "delete, read, write" in granted.stdout, granted.stdout + granted.stderr
    assert memos("acl", "grant", "notes", "sam", "-p", "share", "--user", "ann", *h, home=tmp_path).returncode == 0
    escalate = memos("acl", "grant", "notes", "sam", "--role", "admin", "--user", "sam", *h, home=tmp_path)
    assert escalate.returncode == 2 and "PermissionDeniedError" in escalate.stdout
    listed = memos("acl", "list", "notes", "--user", "bob", *h, home=tmp_path)
    assert listed.returncode == 0 and "writer" in listed.stdout and "everything" in listed.stdout
    revoked = memos("acl", "revoke", "notes", "bob", "--user", "ann", *h, home=tmp_path)
    assert revoked.returncode == 0 and "writer" not in revoked.stdout
    assert memos("acl", "list", "notes", "--user", "bob", *h, home=tmp_path).returncode == 2


@pytest.mark.smoke
@pytest.mark.models
def test_chat_repl_answers_from_memory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    add = memos(
        "add",
        "My sister Ana lives in Porto and teaches piano.",
        "--user",
        "alice",
        "--cube",
        "notes",
        "--home",
        str(home),
        home=tmp_path,
    )
    assert add.returncode == 0, add.stdout + add.stderr
    run = memos(
        "chat",
        "--user",
        "alice",
        "--cube",
        "notes",
        "--home",
        str(home),
        home=tmp_path,
        stdin="Where does my sister live?\nexit\n",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 memories" in run.stdout and "memos>" in run.stdout


@pytest.mark.smoke
def test_audit_list_verify_export_and_tampering(tmp_path: Path) -> None:
    import json
    import sqlite3

    home = tmp_path / "home"
    h = ("--home", str(home))
    assert memos("cube", "redaction", "notes", "--user", "ann", "--mode", "off", *h, home=tmp_path).returncode == 0
    assert memos("acl", "list", "notes", "--user", "eve", *h, home=tmp_path).returncode == 2  # refused, audited
    listed = memos("audit", "list", "--cube", "notes", "--user", "ann", *h, home=tmp_path)
    assert listed.returncode == 0 and "cube.update" in listed.stdout and "denied" in listed.stdout, listed.stdout
    assert memos("audit", "list", "--user", "eve", "--cube", "notes", *h, home=tmp_path).returncode == 2
    own = memos("audit", "verify", "--user", "ann", *h, home=tmp_path)
    assert own.returncode == 0 and "notes: ok" in own.stdout and "(store)" not in own.stdout, own.stdout
    every = memos("audit", "verify", "--user", "op", "--admin", *h, home=tmp_path)
    assert every.returncode == 0 and "(store): ok" in every.stdout, every.stdout
    out = tmp_path / "audit.jsonl"
    exported = memos("audit", "export", "--user", "ann", "--out", str(out), *h, home=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["cube_id"] for r in rows} == {"notes"} and all(len(r["hash"]) == 64 for r in rows)
    # edit a stored row behind the store's back: verify finds it and exits 1
    conn = sqlite3.connect(home / "memos.db")
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE chain = 'notes' AND seq = 2")
    conn.commit()
    conn.close()
    broken = memos("audit", "verify", "--user", "ann", "--cube", "notes", *h, home=tmp_path)
    assert broken.returncode == 1 and "edited at 2" in broken.stdout, broken.stdout


@pytest.mark.smoke
def test_history_diff_and_rollback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    h = ("--home", str(home))
    assert memos("cube", "redaction", "notes", "--user", "ann", "--mode", "off", *h, home=tmp_path).returncode == 0
    from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
    from memos_agents.schema import MemoryItem

    store = SQLiteMemoryStore(home / "memos.db")
    store.setup()
    first = MemoryItem(text="Ana lives in Porto", embedding=[1.0] * 384)
    store.add("notes", [first])
    store.update("notes", [first.model_copy(update={"text": "Ana lives in Lisbon"})])
    store.close()
    shown = memos("history", first.id, "--cube", "notes", "--user", "ann", *h, home=tmp_path)
    assert shown.returncode == 0 and "Porto" in shown.stdout and "(current)" in shown.stdout, shown.stdout
    diffed = memos("history", first.id, "--cube", "notes", "--user", "ann", "--diff", "1,2", *h, home=tmp_path)
    assert diffed.returncode == 0 and "+Ana lives in Lisbon" in diffed.stdout, diffed.stdout
    back = memos("rollback", first.id, "--cube", "notes", "--user", "ann", "--to", "1", *h, home=tmp_path)
    assert back.returncode == 0 and "version 3: Ana lives in Porto" in back.stdout, back.stdout
    denied = memos("rollback", first.id, "--cube", "notes", "--user", "eve", "--to", "2", *h, home=tmp_path)
    assert denied.returncode == 2 and "PermissionDeniedError" in denied.stdout


def test_point_in_time_search_cube_rollback_purge_and_forget_user(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore
    from memos_agents.schema import MemoryItem, Visibility

    home = tmp_path / "home"
    h = ("--home", str(home))
    assert memos("cube", "redaction", "notes", "--user", "ann", "--mode", "off", *h, home=tmp_path).returncode == 0
    store = SQLiteMemoryStore(home / "memos.db")
    store.setup()
    first = MemoryItem(text="Ana lives in Porto", embedding=[1.0] * 384, user_id="ana")
    secret = MemoryItem(
        text="ann's private Porto diary", embedding=[1.0] * 384, visibility=Visibility.PRIVATE, author_id="ann"
    )
    store.add("notes", [first, secret])
    then = datetime.now(UTC).isoformat()
    store.update("notes", [first.model_copy(update={"text": "Ana lives in Lisbon"})])
    store.close()
    past = memos(
        "search", "Where does Ana live", "--cube", "notes", "--user", "ann", "--as-of", then, *h, home=tmp_path
    )
    assert past.returncode == 0 and "Porto" in past.stdout and "Lisbon" not in past.stdout, past.stdout
    back = memos("rollback", "--cube", "notes", "--user", "ann", "--to-time", then, *h, home=tmp_path)
    assert back.returncode == 0 and "1 updated, 0 restored, 0 deleted" in back.stdout, back.stdout
    purged = memos("purge", "--cube", "notes", "--user", "ann", "--older-than-days", "0", *h, home=tmp_path)
    assert purged.returncode == 0 and "2 version(s) purged" in purged.stdout, purged.stdout
    forgot = memos("forget-user", "ana", "--user", "op", "--admin", *h, home=tmp_path)
    assert forgot.returncode == 0 and "notes: 1 memory item(s) erased" in forgot.stdout, forgot.stdout
    left = memos("search", "Porto", "--cube", "notes", "--user", "ann", "--json", *h, home=tmp_path)
    assert left.returncode == 0 and "Ana lives" not in left.stdout and "private Porto diary" in left.stdout


def test_users_and_a_store_that_requires_them(tmp_path: Path) -> None:
    h = ("--home", str(tmp_path / "home"))
    made = memos(
        "user", "create", "bob", "--name", "Bob", "--kind", "agent", "--user", "op", "--admin", *h, home=tmp_path
    )
    assert made.returncode == 0 and "bob" in made.stdout and "agent" in made.stdout, made.stdout + made.stderr
    refused = memos("user", "create", "eve", "--user", "bob", *h, home=tmp_path)
    assert refused.returncode == 2 and "PermissionDeniedError" in refused.stdout, refused.stdout
    assert (
        memos(
            "--require-users", "cube", "redaction", "notes", "--user", "bob", "--mode", "off", *h, home=tmp_path
        ).returncode
        == 0
    )
    grant = memos(
        "--require-users", "acl", "grant", "notes", "ghost", "--role", "reader", "--user", "bob", *h, home=tmp_path
    )
    assert grant.returncode == 2 and "UnknownUserError" in grant.stdout, grant.stdout
    stranger = memos("--require-users", "search", "tea", "--cube", "notes", "--user", "mallory", *h, home=tmp_path)
    assert stranger.returncode == 2 and "UnknownUserError" in stranger.stdout, stranger.stdout
    removed = memos("user", "remove", "bob", "--user", "op", "--admin", *h, home=tmp_path)
    assert removed.returncode == 0 and "still owns 1 cube(s)" in removed.stdout, removed.stdout
    listed = memos("user", "list", "--all", "--user", "op", "--admin", *h, home=tmp_path)
    assert listed.returncode == 0 and "removed" in listed.stdout, listed.stdout
    gone = memos("--require-users", "search", "tea", "--cube", "notes", "--user", "bob", *h, home=tmp_path)
    assert gone.returncode == 2 and "disabled" in gone.stdout, gone.stdout


def test_lifecycle_ttl_transition_and_a_pass(tmp_path: Path) -> None:
    h = ("--home", str(tmp_path / "home"))
    added = memos(
        "add", "the gate code is 4711 today", "--user", "ann", "--cube", "notes", "--ttl", "0.001", *h, home=tmp_path
    )
    assert added.returncode == 0 and "stored 1 item(s)" in added.stdout, added.stdout + added.stderr
    short = added.stdout.split(": ", 1)[1].split()[0].strip(",")
    kept = memos("add", "the shed code is 1234", "--user", "ann", "--cube", "notes", *h, home=tmp_path)
    lasting = kept.stdout.split(": ", 1)[1].split()[0].strip(",")
    found = memos("search", "gate code", "--cube", "notes", "--user", "ann", "--json", *h, home=tmp_path)
    assert found.returncode == 0 and short not in found.stdout and lasting in found.stdout, found.stdout
    (tmp_path / "policy.toml").write_text("[lifecycle]\npromote_working_after_hours = 1\n")
    run = memos("lifecycle", "run", "--user", "ann", "--policy", str(tmp_path / "policy.toml"), *h, home=tmp_path)
    assert run.returncode == 0 and "notes" in run.stdout, run.stdout + run.stderr
    row = next(line for line in run.stdout.splitlines() if "notes" in line)
    assert row.split("│")[2].strip() == "1", run.stdout  # one expired
    frozen = memos(
        "lifecycle", "transition", lasting, "--to", "frozen", "--cube", "notes", "--user", "ann", *h, home=tmp_path
    )
    assert frozen.returncode == 0 and "frozen (version 2)" in frozen.stdout, frozen.stdout
    illegal = memos(
        "lifecycle", "transition", short, "--to", "activated", "--cube", "notes", "--user", "ann", *h, home=tmp_path
    )
    assert illegal.returncode == 2 and "LifecycleTransitionError" in illegal.stdout, illegal.stdout
    memos("add", "the bike lock code is 99", "--user", "ann", "--cube", "notes", *h, home=tmp_path)
    # a threshold no memory reaches: every activated memory is archived (frozen and expired ones are not)
    (tmp_path / "decay.yaml").write_text("archive_below_activation: 100\n")
    run = memos("lifecycle", "run", "--user", "ann", "--policy", str(tmp_path / "decay.yaml"), *h, home=tmp_path)
    row = next(line for line in run.stdout.splitlines() if "notes" in line)
    assert row.split("│")[5].strip() == "1", run.stdout  # the bike lock code archived
    for fact in ("Ann's gym day is Monday", "Ann's gym day is Friday"):  # a fact, then its new value
        stored = memos("add", fact, "--mode", "facts", "--user", "ann", "--cube", "notes", *h, home=tmp_path)
        assert stored.returncode == 0, stored.stdout + stored.stderr
    found = memos("search", "gym day", "--cube", "notes", "--user", "ann", "--json", *h, home=tmp_path)
    assert "Friday" in found.stdout and "Monday" not in found.stdout, found.stdout  # superseded: archived


@pytest.mark.smoke
@pytest.mark.models
def test_store_publish_subscribe_exchange_and_revoke(tmp_path: Path) -> None:
    import zipfile

    h = ("--home", str(tmp_path / "home"))
    fact = "Alice's favourite tea is oolong."
    added = memos("add", fact, "--mode", "facts", "--user", "alice", "--cube", "notes", *h, home=tmp_path)
    assert added.returncode == 0, added.stdout + added.stderr
    meta = ("--description", "Tea preferences of the team", "--tag", "tea", "--licence", "CC-BY-4.0")
    named = ("--name", "tea-notes", "--version", "1.0.0")
    published = memos("store", "publish", "notes", "--user", "alice", *named, *meta, *h, home=tmp_path)
    out = published.stdout
    assert published.returncode == 0 and "published tea-notes@1.0.0 (snapshot" in out, out + published.stderr
    assert "items: 1" in out and "checksum: sha256:" in out and "key: SHA256:" in out, out
    listed = memos("store", "list", "--user", "guest", *h, home=tmp_path)  # a public entry: anyone sees it
    assert listed.returncode == 0 and "tea-notes" in listed.stdout and "CC-BY-4.0" in listed.stdout, listed.stdout
    found = memos("store", "search", "TEA team", "--user", "guest", *h, home=tmp_path)
    assert found.returncode == 0 and "tea-notes" in found.stdout, found.stdout
    missed = memos("store", "search", "coffee", "--user", "guest", *h, home=tmp_path)
    assert missed.returncode == 0 and "tea-notes" not in missed.stdout, missed.stdout
    sub = memos("store", "subscribe", "tea-notes", "--user", "bob", *h, home=tmp_path)
    assert sub.returncode == 0 and "subscribed bob to tea-notes@1.0.0" in sub.stdout, sub.stdout + sub.stderr
    subs = memos("store", "subscriptions", "--user", "bob", *h, home=tmp_path)
    assert subs.returncode == 0 and "tea-notes@1.0.0" in subs.stdout and "reader" in subs.stdout, subs.stdout
    hits = memos("search", "favourite tea", "--user", "bob", *h, home=tmp_path)  # no --cube: subscriptions too
    assert hits.returncode == 0 and "oolong" in hits.stdout, hits.stdout + hits.stderr
    assert "via" in hits.stdout and "tea-notes@1.0.0" in hits.stdout, hits.stdout
    bundle = tmp_path / "tea.memcube"
    exported = memos("store", "export", "tea-notes", str(bundle), "--user", "bob", *h, home=tmp_path)
    assert exported.returncode == 0 and bundle.is_file(), exported.stdout + exported.stderr
    h2 = ("--home", str(tmp_path / "home2"))
    imported = memos("store", "import", str(bundle), "--user", "carol", *h2, home=tmp_path)
    assert imported.returncode == 0 and "imported cube tea-notes@1.0.0" in imported.stdout, imported.stdout
    # the entry edited after signing (the other members kept as they are): refused
    tampered = tmp_path / "tampered.memcube"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "registry.json":
                entry = json.loads(data)
                entry["manifest"]["description"] = "Free coffee for everyone"
                data = json.dumps(entry).encode()
            dst.writestr(info, data)
    refused = memos("store", "import", str(tampered), "--user", "carol", "--cube-id", "copy", *h2, home=tmp_path)
    assert refused.returncode == 2 and "TamperedBundleError" in refused.stdout, refused.stdout + refused.stderr
    assert "signature" in refused.stdout, refused.stdout
    revoked = memos("store", "revoke", "tea-notes", "--user", "alice", "--subscriber", "bob", *h, home=tmp_path)
    assert revoked.returncode == 0 and "ended bob's subscription to tea-notes@1.0.0" in revoked.stdout, revoked.stdout
    after = memos("search", "favourite tea", "--user", "bob", *h, home=tmp_path)
    assert after.returncode == 0 and "oolong" not in after.stdout, after.stdout
    denied = memos("store", "revoke", "tea-notes", "--user", "bob", *h, home=tmp_path)
    assert denied.returncode == 2 and "PermissionDeniedError" in denied.stdout, denied.stdout
