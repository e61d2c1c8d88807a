"""The ``memos`` command line (typer + rich).

Commands: ``demo``, ``add``, ``search``, ``chat`` (a REPL), ``cube export|import|info|list|redaction``,
``acl grant|revoke|list``, ``audit list|verify|export``, ``history``, ``rollback``,
``store publish|list|search|subscribe|unsubscribe|subscriptions|revoke|export|import`` (the MemStore
registry) and ``bench locomo|scale|audit``. Every command but ``bench`` (which works in a temporary home)
takes ``--home`` (default ``$MEMOS_HOME`` or ``~/.memos``). Options before the command choose the plaintext store
for every command: ``memos --store neo4j --neo4j-uri bolt://... cube import notes.zip --user bob``
(the ``--neo4j-*`` options also read ``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD``, ``NEO4J_DATABASE``).
Errors of the :class:`~memos_agents.errors.MemOSError` hierarchy, and file errors (``OSError``),
print one line and exit with 2; no traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memos_agents.config import default_home
from memos_agents.errors import InvalidInputError, MemOSError, UserExistsError
from memos_agents.infra.registry import Access, EntryKind, EntryVisibility, key_fingerprint
from memos_agents.operation.reader import ReadMode
from memos_agents.os import MemOS
from memos_agents.schema import LifecycleState, Visibility

app = typer.Typer(help="memos-agents: a memory OS for LLM agents.", no_args_is_help=True, add_completion=False)
cube_app = typer.Typer(help="Export, import and inspect MemCubes.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write their results as files.", no_args_is_help=True)
app.add_typer(cube_app, name="cube")
acl_app = typer.Typer(help="Who may do what on a cube: roles and permissions.", no_args_is_help=True)
app.add_typer(acl_app, name="acl")
app.add_typer(bench_app, name="bench")
audit_app = typer.Typer(help="The audit log: query, verify its hash chains, export.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
lifecycle_app = typer.Typer(
    help="MemLifecycle: move memories between states, run maintenance passes (expiry, retention, consolidation).",
    no_args_is_help=True,
)
app.add_typer(lifecycle_app, name="lifecycle")
user_app = typer.Typer(
    help="Registered users (people, agents, services): create, list, show, remove, enable. "
    "Managing users needs a system-wide admin (--admin).",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")
store_app = typer.Typer(
    help="MemStore, the cube registry: publish cubes under name@version, find them, subscribe to them, "
    "revoke them, and exchange signed bundles.",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")
console = Console()

#: Where the LoCoMo file lies in this project's checkout layout (``../shared/data``).
DEFAULT_LOCOMO = Path("../shared/data/locomo/locomo_dev7.json")

Home = Annotated[Path | None, typer.Option("--home", help="MemOS home (default: $MEMOS_HOME or ~/.memos).")]
User = Annotated[str, typer.Option("--user", "-u", help="Caller's user id.")]


#: Store settings from the options before the command (see :func:`main_options`).
_STORE: dict[str, Any] = {}


@app.callback()
def main_options(
    store: Annotated[str, typer.Option("--store", help="Plaintext store: sqlite (embedded) or neo4j.")] = "sqlite",
    neo4j_uri: Annotated[str | None, typer.Option(envvar="NEO4J_URI", help="Bolt URI of the Neo4j server.")] = None,
    neo4j_user: Annotated[str | None, typer.Option(envvar="NEO4J_USER", help="Neo4j user.")] = None,
    neo4j_password: Annotated[
        str | None, typer.Option(envvar="NEO4J_PASSWORD", help="Neo4j password.", show_default=False)
    ] = None,
    neo4j_database: Annotated[
        str | None, typer.Option(envvar="NEO4J_DATABASE", help="Neo4j database (default: the server's).")
    ] = None,
    neo4j_tenant: Annotated[str, typer.Option(help="Namespace inside the Neo4j database.")] = "default",
    require_users: Annotated[
        bool,
        typer.Option(
            "--require-users",
            envvar="MEMOS_REQUIRE_USERS",
            help="Only users registered with `memos user create` may call, and be granted access.",
        ),
    ] = False,
) -> None:
    """memos-agents: a memory OS for LLM agents."""
    _STORE.clear()
    _STORE.update(
        backend=store,
        uri=neo4j_uri,
        user=neo4j_user,
        password=neo4j_password,
        database=neo4j_database,
        tenant=neo4j_tenant,
        require_users=require_users,
    )


def _mos(home: Path | None, **config: Any) -> MemOS:
    store = dict(_STORE) if _STORE.get("backend", "sqlite") != "sqlite" else {}
    if _STORE.get("require_users"):
        store["require_users"] = True
    return MemOS.from_path(home or default_home(), **({"store": store} if store else {}), **config).setup()


def _admin_mos(home: Path | None, user: str, admin: bool) -> MemOS:
    """Return a MemOS without an LLM in which ``user`` is a system-wide admin when ``admin`` (an operator)."""
    return _mos(home, llm={"provider": "none"}, admins=[user] if admin else [])


def _run(fn: Any) -> Any:
    try:
        return fn()
    except (MemOSError, OSError) as exc:
        console.print(f"[red]error:[/] {escape(f'{type(exc).__name__}: {exc}')}", highlight=False)
        raise typer.Exit(2) from exc


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file.")] = DEFAULT_LOCOMO,
    home: Home = None,
    conversation: Annotated[str, typer.Option(help="LoCoMo sample id.")] = "conv-26",
    questions: Annotated[int, typer.Option(min=1, help="Questions to answer.")] = 5,
    max_sessions: Annotated[int | None, typer.Option(min=1, help="Ingest only the first N sessions.")] = None,
    llm_base_url: Annotated[
        str | None,
        typer.Option(
            "--llm-base-url",
            help="OpenAI-compatible endpoint for the answers, e.g. http://127.0.0.1:8080/v1 "
            "(default: the local SmolLM2-135M).",
        ),
    ] = None,
    llm_model: Annotated[
        str | None, typer.Option("--llm-model", help="Model name at --llm-base-url (or at the OpenAI API).")
    ] = None,
    llm_api_key: Annotated[
        str | None,
        typer.Option("--llm-api-key", envvar="OPENAI_API_KEY", help="API key of the endpoint.", show_default=False),
    ] = None,
) -> None:
    """Ingest a real LoCoMo conversation and answer some of its questions (a local 135M model by default)."""
    from memos_agents.demo import run_demo

    def go() -> None:
        if llm_base_url and not llm_model:
            raise InvalidInputError("--llm-base-url needs --llm-model")
        llm = {"provider": "openai", "model": llm_model, "base_url": llm_base_url, "api_key": llm_api_key}
        with _mos(home, **({"llm": llm} if llm_model else {})) as mos:
            run_demo(
                mos, data, conversation=conversation, questions=questions, max_sessions=max_sessions, console=console
            )

    _run(go)


@app.command()
def add(
    text: Annotated[str, typer.Argument(help="Message text to remember.")],
    user: User,
    cube: Annotated[str, typer.Option("--cube", "-c", help="Target cube (created if missing, owned by --user).")],
    home: Home = None,
    mode: Annotated[
        ReadMode, typer.Option(help="fast (no LLM), fine (LLM extraction) or facts (the text is one fact, as given).")
    ] = ReadMode.FAST,
    session: Annotated[str | None, typer.Option(help="Session id.")] = None,
    speaker: Annotated[str | None, typer.Option(help="Speaker name (default: the user id).")] = None,
    visibility: Annotated[
        Visibility, typer.Option(help="Who may read it: private (you), cube (readers of the cube), public (anyone).")
    ] = Visibility.CUBE,
    ttl: Annotated[
        float | None,
        typer.Option(help="Seconds the memory lives (default: the cube's memory TTL, or forever).", min=0.001),
    ] = None,
) -> None:
    """Add one message to a cube."""

    def go() -> None:
        with _mos(home) as mos:
            mos.create_cube(cube, user, exist_ok=True)
            result = mos.add(
                [{"role": "user", "name": speaker or user, "content": text}],
                user,
                cube,
                mode=mode,
                session_id=session,
                visibility=visibility,
                ttl_s=ttl,
            )
            console.print(
                f"stored {len(result.ids)} item(s): {', '.join(result.ids)}"
                + (f" ({result.merged} merged)" if result.merged else "")
                + (f"; masked {', '.join(f'{n} {k}' for k, n in result.redacted.items())}" if result.redacted else "")
            )

    _run(go)


def _print_hits(hits: list[Any]) -> None:
    published = any(h.published for h in hits)  # a "via" column only when a result came through a subscription
    table = Table()
    for col in ("#", "score", "tokens", "sources", "event time", *(["via"] if published else []), "memory"):
        table.add_column(col)
    for n, h in enumerate(hits, 1):
        when = f"{h.item.event_time:%Y-%m-%d}" if h.item.event_time else "-"
        via = [escape(h.published or "")] if published else []
        table.add_row(  # stored text is data: never rendered as markup
            str(n),
            f"{h.score:.4f}",
            str(h.tokens),
            escape(", ".join(h.item.sources.message_ids)),
            when,
            *via,
            escape(h.item.text),
        )
    console.print(table)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question.")],
    user: User,
    cube: Annotated[
        list[str] | None,
        typer.Option("--cube", "-c", help="Cube(s) to search (default: the ones --user owns or subscribed to)."),
    ] = None,
    home: Home = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 10,
    budget: Annotated[int | None, typer.Option(min=1, help="Token budget of the results.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Search the cubes as they were at this ISO 8601 time (UTC if no zone)."),
    ] = None,
) -> None:
    """Search memories (now, or as they were at --as-of)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            hits = mos.search(query, user, cube, top_k=top_k, token_budget=budget, as_of=_time(as_of, "as-of"))
            if as_json:
                print(
                    json.dumps([json.loads(h.model_dump_json(exclude={"item": {"embedding"}})) for h in hits], indent=2)
                )
            else:
                _print_hits(hits)

    _run(go)


@app.command()
def chat(
    user: User,
    cube: Annotated[
        list[str] | None, typer.Option("--cube", "-c", help="Cube(s) to use (default: the ones --user owns).")
    ] = None,
    home: Home = None,
    budget: Annotated[int, typer.Option(min=1, help="Token budget of the memory context.")] = 1000,
    remember: Annotated[bool, typer.Option(help="Also store each question in the first cube.")] = False,
) -> None:
    """Chat with memory (a REPL; empty line, 'exit' or Ctrl-D ends it)."""

    def go() -> None:
        with _mos(home) as mos:
            history: list[dict[str, str]] = []
            console.print("[dim]memos chat — empty line or 'exit' to quit[/]")
            while True:
                try:
                    line = console.input("[bold]you>[/] ").strip()
                except EOFError:
                    break
                if not line or line in {"exit", "quit"}:
                    break
                try:
                    result = mos.chat(line, user, cube, token_budget=budget, history=history[-6:])
                except MemOSError as exc:
                    console.print(f"[red]error:[/] {escape(str(exc))}")
                    continue
                console.print(f"[dim]{len(result.memories)} memories, search {result.search_ms:.0f} ms[/]")
                console.print(f"[bold]memos>[/] {escape(result.answer)}")
                history += [{"role": "user", "content": line}, {"role": "assistant", "content": result.answer}]
                if remember and cube:
                    mos.add([{"role": "user", "name": user, "content": line}], user, cube[0])

    _run(go)


@cube_app.command("export")
def cube_export(
    cube: Annotated[str, typer.Argument(help="Cube id.")],
    path: Annotated[Path, typer.Argument(help="Archive file to write.")],
    user: User,
    home: Home = None,
) -> None:
    """Export a cube to one archive file."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            console.print(f"wrote {mos.export_cube(cube, user, path)}")

    _run(go)


@cube_app.command("import")
def cube_import(
    path: Annotated[Path, typer.Argument(help="Archive file.")],
    user: User,
    home: Home = None,
    as_id: Annotated[
        str | None, typer.Option("--as", help="Import under this cube id instead of the archive's.")
    ] = None,
    keep_acl: Annotated[
        bool, typer.Option("--keep-acl", help="Keep the archive's ACL entries (default: the new cube is private).")
    ] = False,
) -> None:
    """Import a cube from an archive file; --user becomes its owner (the archive's owner and ACL are not trusted)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            header = mos.import_cube(path, user, cube_id=as_id, keep_acl=keep_acl)
            console.print(f"imported cube {header.cube_id} ({mos.stats(header.cube_id, user).nodes} nodes)")

    _run(go)


@cube_app.command("info")
def cube_info(cube: Annotated[str, typer.Argument(help="Cube id.")], user: User, home: Home = None) -> None:
    """Show a cube's header and counts."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            header = mos.get_cube(cube, user)
            info = json.loads(header.model_dump_json())
            info["counts"] = mos.stats(cube, user).model_dump(exclude={"cube_id"})
            console.print_json(json.dumps(info))

    _run(go)


@cube_app.command("redaction")
def cube_redaction(
    cube: Annotated[str, typer.Argument(help="Cube id (created, owned by --user, if missing).")],
    user: User,
    mode: Annotated[
        str, typer.Option(help="off, mask (findings replaced by [KIND]) or refuse (the write is refused).")
    ],
    kinds: Annotated[
        str | None,
        typer.Option(help="Comma-separated kinds: email, phone, payment_card, iban, ip_address, secret (default all)."),
    ] = None,
    home: Home = None,
) -> None:
    """Set a cube's PII redaction policy for writes from now on (needs admin on the cube)."""

    def go() -> None:
        policy: dict[str, Any] = {"mode": mode}
        if kinds is not None:
            policy["kinds"] = [k.strip() for k in kinds.split(",") if k.strip()]
        with _mos(home, llm={"provider": "none"}) as mos:
            mos.create_cube(cube, user, exist_ok=True)
            header = mos.set_redaction(cube, user, policy)
            console.print_json(header.redaction.model_dump_json())

    _run(go)


@acl_app.command("grant")
def acl_grant(
    cube: Annotated[str, typer.Argument(help="Cube id.")],
    principal: Annotated[str, typer.Argument(help="User or service id, or * for everybody.")],
    user: User,
    role: Annotated[str | None, typer.Option(help="admin, writer, reader or guest.")] = None,
    permission: Annotated[
        list[str] | None,
        typer.Option("--permission", "-p", help="read, write, delete, share, admin or audit (repeatable)."),
    ] = None,
    home: Home = None,
) -> None:
    """Give PRINCIPAL a role and/or permissions on CUBE (replaces its entry; needs admin, or share within your own)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            header = mos.grant(cube, user, principal, role=role, permissions=permission or [])
            _print_acl(header)

    _run(go)


@acl_app.command("revoke")
def acl_revoke(
    cube: Annotated[str, typer.Argument(help="Cube id.")],
    principal: Annotated[str, typer.Argument(help="User or service id, or *.")],
    user: User,
    home: Home = None,
) -> None:
    """Remove PRINCIPAL's entry from CUBE's ACL."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            _print_acl(mos.revoke(cube, user, principal))

    _run(go)


@acl_app.command("list")
def acl_list(cube: Annotated[str, typer.Argument(help="Cube id.")], user: User, home: Home = None) -> None:
    """Show CUBE's owner and ACL with what each entry grants."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            _print_acl(mos.get_cube(cube, user))

    _run(go)


@lifecycle_app.command("run")
def lifecycle_run(
    user: User,
    cube: Annotated[
        list[str] | None, typer.Option("--cube", "-c", help="Cube (repeatable; default: your cubes).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Policy file (.toml, .yaml or .json; a [lifecycle] table is used if present).")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Act as a system-wide admin (an operator): every author's memories.")
    ] = False,
    home: Home = None,
) -> None:
    """Run one maintenance pass: expire, purge after retention, promote, merge near-duplicates, archive what decayed."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            reports = mos.run_lifecycle(user, cube or None, policy=policy)
        table = Table()
        for col in ("cube", "expired", "purged", "promoted", "archived", "merged", "skipped", "more to do", "seconds"):
            table.add_column(col)
        for r in reports:
            table.add_row(
                escape(r.cube_id),
                str(len(r.expired)),
                str(len(r.purged)),
                str(len(r.promoted)),
                str(len(r.archived)),
                str(len(r.consolidated)),
                str(len(r.skipped)),
                "yes" if r.more else "no",
                f"{r.seconds:.3f}",
            )
        console.print(table)

    _run(go)


@lifecycle_app.command("transition")
def lifecycle_transition(
    memory_ids: Annotated[list[str], typer.Argument(help="Memory ids.")],
    to: Annotated[LifecycleState, typer.Option("--to", help="The new state.")],
    user: User,
    cube: Annotated[str, typer.Option("--cube", "-c", help="The memories' cube.")],
    home: Home = None,
) -> None:
    """Move memories to another lifecycle state (checked against the transition table; versioned)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            moved = mos.transition(memory_ids, user, cube, to)
        for item in moved:
            console.print(f"{escape(item.id)}: {item.status.value} (version {item.version})", highlight=False)

    _run(go)


UserAdmin = Annotated[
    bool,
    typer.Option("--admin", help="Act as a system-wide admin (an operator holding the store's files or credentials)."),
]


@user_app.command("create")
def user_create(
    new_user: Annotated[str, typer.Argument(help="The new user's id.")],
    user: User,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    kind: Annotated[str, typer.Option(help="user, agent or service.")] = "user",
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """Register NEW_USER (ids are never reused: a removed user's id stays taken)."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            _print_users([mos.create_user(new_user, user, name=name, kind=kind)])

    _run(go)


@user_app.command("list")
def user_list(
    user: User,
    all_users: Annotated[bool, typer.Option("--all", help="Removed (disabled) users too.")] = False,
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """List the registered users."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            _print_users(mos.list_users(user, include_disabled=all_users))

    _run(go)


@user_app.command("show")
def user_show(
    shown: Annotated[str, typer.Argument(help="The user (yourself, unless you are a system-wide admin).")],
    user: User,
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """Show one user's record."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            _print_users([mos.get_user(shown, user)])

    _run(go)


@user_app.command("remove")
def user_remove(
    removed: Annotated[str, typer.Argument(help="The user to remove.")],
    user: User,
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """Disable REMOVED and revoke its ACL entries on every cube (its memories stay: see forget-user)."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            done = mos.remove_user(removed, user)
        _print_users([done.user])
        console.print(f"revoked from {len(done.revoked_from)} cube(s): {escape(', '.join(done.revoked_from))}")
        if done.owned:
            console.print(f"still owns {len(done.owned)} cube(s), hand them over: {escape(', '.join(done.owned))}")

    _run(go)


@user_app.command("enable")
def user_enable(
    enabled: Annotated[str, typer.Argument(help="The removed user to enable again.")],
    user: User,
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """Enable a removed user again (its old grants are not restored)."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            _print_users([mos.enable_user(enabled, user)])

    _run(go)


def _print_users(users: list[Any]) -> None:
    table = Table()
    for col in ("user", "name", "kind", "state", "created", "by"):
        table.add_column(col)
    for u in users:
        state = "enabled" if u.disabled_at is None else f"removed {u.disabled_at:%Y-%m-%d %H:%M}"
        table.add_row(
            escape(u.user_id),
            escape(u.name),
            u.kind.value,
            state,
            f"{u.created_at:%Y-%m-%d %H:%M}",
            escape(u.created_by),
        )
    console.print(table)


def _print_acl(header: Any) -> None:
    table = Table()
    for col in ("principal", "role", "permissions", "grants"):
        table.add_column(col)
    table.add_row(escape(header.owner_id), "owner", "", "everything")
    for e in header.acl:
        table.add_row(
            escape(e.principal),
            e.role.value if e.role else "",
            ", ".join(p.value for p in e.permissions),
            ", ".join(sorted(p.value for p in e.granted())) or "nothing",
        )
    console.print(table)


@app.command()
def history(
    memory_id: Annotated[str, typer.Argument(help="Memory id.")],
    user: User,
    cube: Annotated[str, typer.Option(help="The memory's cube.")],
    diff: Annotated[
        str | None, typer.Option(help="Two versions, e.g. 1,3: show what changed from the first to the second.")
    ] = None,
    home: Home = None,
) -> None:
    """Show a memory's kept versions (MemVault), oldest first, or the diff of two of them."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            if diff is not None:
                versions = _ints(diff, "--diff")
                if len(versions) != 2:
                    raise InvalidInputError("--diff takes two versions, e.g. 1,3")
                result = mos.diff(memory_id, user, cube, versions[0], versions[1])
                console.print_json(result.model_dump_json(exclude={"text_diff"}))
                if result.text_diff:
                    console.print(escape(result.text_diff), highlight=False)
                return
            found = mos.history(memory_id, user, cube)
        table = Table()
        for col in ("version", "ended by", "at", "who", "text"):
            table.add_column(col)
        for v in found:
            table.add_row(
                str(v.item.version),
                v.change or "(current)",
                v.changed_at.isoformat(timespec="seconds") if v.changed_at else "",
                escape(v.changed_by or ""),
                escape(v.item.text if len(v.item.text) <= 80 else v.item.text[:77] + "..."),
            )
        console.print(table)

    _run(go)


@app.command()
def rollback(
    user: User,
    cube: Annotated[str, typer.Option(help="The cube.")],
    memory_id: Annotated[str | None, typer.Argument(help="Memory id (omit with --to-time: the whole cube).")] = None,
    to: Annotated[int | None, typer.Option("--to", min=1, help="The version of MEMORY_ID to restore.")] = None,
    to_time: Annotated[
        str | None, typer.Option("--to-time", help="Put the whole cube back as it was at this ISO 8601 time.")
    ] = None,
    home: Home = None,
) -> None:
    """Restore a memory (also a deleted one) to a kept version, or a whole cube to a past time."""

    def go() -> None:
        if (memory_id is None) == (to_time is None) or (memory_id is not None and to is None):
            raise InvalidInputError("give MEMORY_ID with --to VERSION, or --to-time TIME for the whole cube")
        with _mos(home, llm={"provider": "none"}) as mos:
            if memory_id is None:
                done = mos.rollback_cube(cube, user, to=_time(to_time, "to-time"))
                console.print(
                    f"{escape(cube)}: {len(done.updated)} updated, {len(done.restored)} restored, "
                    f"{len(done.deleted)} deleted",
                    highlight=False,
                )
                return
            assert to is not None
            item = mos.rollback(memory_id, user, cube, to)
        console.print(f"{escape(item.id)} is now version {item.version}: {escape(item.text)}", highlight=False)

    _run(go)


@app.command()
def purge(
    user: User,
    cube: Annotated[str, typer.Option(help="The cube.")],
    older_than_days: Annotated[
        float | None,
        typer.Option(min=0, help="Retention in days (default: the config's version_retention_days, 30)."),
    ] = None,
    home: Home = None,
) -> None:
    """Remove versions (deleted memories included) older than the retention period: final."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            n = mos.purge_versions(cube, user, older_than_days=older_than_days)
        console.print(f"{escape(cube)}: {n} version(s) purged", highlight=False)

    _run(go)


@app.command("forget-user")
def forget_user(
    forgotten: Annotated[str, typer.Argument(help="The user whose memories are erased.")],
    user: User,
    admin: Annotated[
        bool, typer.Option("--admin", help="Act as a system-wide admin (an operator): erase from every cube.")
    ] = False,
    home: Home = None,
) -> None:
    """Erase a user's memories, versions and index entries from every cube you administer (GDPR-style)."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            erased = mos.forget_user(forgotten, user)
        for cube_id, ids in erased.items():
            console.print(f"{escape(cube_id)}: {len(ids)} memory item(s) erased", highlight=False)
        console.print(f"{sum(len(v) for v in erased.values())} erased in {len(erased)} cube(s)")

    _run(go)


AuditCube = Annotated[str | None, typer.Option("--cube", help="One cube's chain (default: every chain you may read).")]
Admin = Annotated[
    bool,
    typer.Option(
        "--admin",
        help="Act as a system-wide admin (an operator holding the store's files or credentials): "
        "every chain, the store's own and deleted cubes' included.",
    ),
]


#: The operator (system-wide admin) that registers the benchmark's user when governance is on.
BENCH_OPERATOR = "bench-operator"


def _stores(value: str) -> list[str]:
    """Parse a ``--store`` list (sqlite, neo4j), in order, without repeats."""
    stores = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in stores if s not in ("sqlite", "neo4j")]
    if unknown or not stores:
        raise InvalidInputError(f"unknown store {', '.join(unknown) or value!r}; available: sqlite, neo4j")
    return stores


def _time(value: str | None, name: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"--{name} must be an ISO 8601 time, e.g. 2026-11-23T10:00:00+00:00") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@audit_app.command("list")
def audit_list(
    user: User,
    cube: AuditCube = None,
    actor: Annotated[str | None, typer.Option(help="Only this principal's entries.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. write, search.vector.")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time (UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time (UTC if no zone).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    admin: Admin = False,
    home: Home = None,
) -> None:
    """Show audit entries, oldest first (needs audit on the cube)."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            entries = mos.audit_log(
                user,
                cube,
                actor=actor,
                action=action,
                outcome=outcome,
                since=_time(since, "since"),
                until=_time(until, "until"),
                limit=limit,
            )
        table = Table()
        for col in ("cube", "seq", "at", "actor", "action", "items", "outcome", "reason"):
            table.add_column(col)
        for e in entries:
            table.add_row(
                escape(e.cube_id or "-"),
                str(e.seq),
                e.at.isoformat(timespec="seconds"),
                escape(e.actor),
                escape(e.action),
                str(e.item_count),
                e.outcome.value,
                escape(e.reason or ""),
            )
        console.print(table)

    _run(go)


@audit_app.command("verify")
def audit_verify(user: User, cube: AuditCube = None, admin: Admin = False, home: Home = None) -> None:
    """Verify the hash chains: exit 1 if an entry was edited, deleted, inserted, reordered or cut off."""

    def go() -> bool:
        with _admin_mos(home, user, admin) as mos:
            results = mos.verify_audit(user, cube)
        for chain, result in results.items():
            name = chain or "(store)"
            head = f"head {result.head.seq} {result.head.hash}" if result.head else "empty"
            if result.ok:
                console.print(f"{escape(name)}: ok, {result.checked} entries, {head}", highlight=False)
            for p in result.problems:
                console.print(f"{escape(name)}: [red]{p.kind}[/] at {p.seq}: {escape(p.detail)}", highlight=False)
        return all(r.ok for r in results.values())

    if not _run(go):
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    user: User,
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write (- for standard output).")],
    cube: AuditCube = None,
    admin: Admin = False,
    home: Home = None,
) -> None:
    """Write every audit entry you may read as JSON Lines (one entry per line, chain by chain)."""
    import sys

    def go() -> int:
        n = 0
        with _admin_mos(home, user, admin) as mos:
            if str(out) == "-":
                for entry in mos.iter_audit(user, cube):
                    sys.stdout.write(entry.model_dump_json() + "\n")
                    n += 1
                return n
            tmp = out.with_name(out.name + ".part")
            with tmp.open("w", encoding="utf-8") as f:
                for entry in mos.iter_audit(user, cube):
                    f.write(entry.model_dump_json() + "\n")
                    n += 1
            tmp.replace(out)
        console.print(f"wrote {n} entries to {escape(str(out))}", highlight=False)
        return n

    _run(go)


@cube_app.command("list")
def cube_list(user: User, home: Home = None) -> None:
    """List the cubes the user may read."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            for h in mos.list_cubes(user):
                console.print(escape(f"{h.cube_id}\towner={h.owner_id}\tv{h.version}\t{h.description}"))

    _run(go)


def _ints(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {value!r}") from exc
    if not out or min(out) < 1:
        raise InvalidInputError(f"{what} must be positive integers, got {value!r}")
    return out


_EMBEDDER_HELP = (
    "hashing, or sentence-transformers (MiniLM) with an optional backend and precision: "
    "sentence-transformers:BACKEND[:PRECISION], BACKEND auto (the default), torch, onnx or openvino, "
    "PRECISION auto, fp32 or int8 (onnx only)."
)


def _embedder_spec(spec: str, hashing_dim: int) -> dict[str, Any]:
    """Parse a bench ``--embedder`` value into an embedder config (validated by EmbedderConfig).

    Raises:
        InvalidInputError: An unknown provider, backend or precision.

    """
    from pydantic import ValidationError

    from memos_agents.config import EmbedderConfig

    provider, *rest = spec.strip().split(":")
    if provider == "hashing" and not rest:
        return {"provider": "hashing", "dim": hashing_dim}
    if provider != "sentence-transformers" or len(rest) > 2:
        raise InvalidInputError(
            f"unknown embedder {spec!r}; available: hashing, sentence-transformers[:BACKEND[:PRECISION]]"
        )
    config: dict[str, Any] = {"provider": provider, **dict(zip(("backend", "precision"), rest, strict=False))}
    try:
        EmbedderConfig.model_validate(config)
    except ValidationError as exc:
        raise InvalidInputError(f"embedder {spec!r}: {exc.errors()[0]['msg']}") from exc
    return config


@contextlib.contextmanager
def _phase_progress() -> Iterator[Callable[[str, int, int], None]]:
    """Show one progress bar per phase of a benchmark; yield ``report(phase, done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done)

        yield report


def _show_results(table: Path, paths: Sequence[Path]) -> None:
    """Print a benchmark's Markdown table and the files it wrote."""
    console.print(table.read_text())
    console.print("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("locomo")
def bench_locomo(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, recall.png).")],
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file.")] = DEFAULT_LOCOMO,
    k: Annotated[str, typer.Option("--k", help="Cut-offs for recall@k, comma-separated.")] = "5,10,20",
    budget: Annotated[str, typer.Option(help="Token budgets, comma-separated.")] = "1000",
    conversations: Annotated[int | None, typer.Option(min=1, help="Only the first N conversations.")] = None,
    store: Annotated[
        str,
        typer.Option(
            help="Store backend(s), comma-separated: sqlite, neo4j. With several, each runs on the same data "
            "and OUT/comparison.md gives the ratios to the first. neo4j uses --neo4j-uri (before the command) "
            "or, without one, a local ArcadeDB Bolt server started for the run."
        ),
    ] = "sqlite",
    embedder: Annotated[str, typer.Option(help=_EMBEDDER_HELP)] = "sentence-transformers",
    governance: Annotated[
        str,
        typer.Option(
            help="on (the audit log written, the cubes' PII redaction set to mask, and the store requiring "
            "registered users: the benchmark's user is registered first), off (none of them), "
            "or off,on: both runs on each store in one invocation, OUT/<store>/comparison.md giving "
            "the ratios. Cube ACLs are checked either way."
        ),
    ] = "on",
    lifecycle: Annotated[
        str,
        typer.Option(
            help="tracking (the default MemOS: uses recorded in the background, no decay in ranking), off "
            "(no access tracking), decay (tracking, and ranking weighted by ACT-R decay, "
            "--decay-weight), or several comma-separated: each runs in turn, OUT/<store>/comparison.md "
            "giving the ratios to the first. With decay, every run stores each session at its LoCoMo date "
            "and asks a day after the last one (memories months old)."
        ),
    ] = "tracking",
    decay_weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="retrieval.decay_weight of decay runs.")] = 0.3,
) -> None:
    """Evidence recall, context tokens, search latency and ingestion cost on LoCoMo."""
    import contextlib
    import tempfile
    import uuid

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from memos_agents.bench.locomo import (
        BENCH_USER,
        compare_stores,
        run_locomo_bench,
        write_comparison,
        write_results,
    )

    def go() -> None:
        stores = _stores(store)
        ks, budgets = _ints(k, "--k"), _ints(budget, "--budget")
        modes = list(dict.fromkeys(g.strip() for g in governance.split(",") if g.strip()))
        if not modes or any(g not in ("on", "off") for g in modes):
            raise InvalidInputError(f"--governance must be on, off or off,on; not {governance!r}")
        variants = list(dict.fromkeys(v.strip() for v in lifecycle.split(",") if v.strip()))
        if not variants or any(v not in ("off", "tracking", "decay") for v in variants):
            raise InvalidInputError(f"--lifecycle takes off, tracking and decay, comma-separated; not {lifecycle!r}")
        if len(modes) > 1 and len(variants) > 1:
            raise InvalidInputError("compare either --governance or --lifecycle variants in one run, not both")
        simulated = "decay" in variants
        emb = _embedder_spec(embedder, hashing_dim=256)
        results: dict[str, dict[str, Any]] = {}
        with contextlib.ExitStack() as stack:
            neo4j_cfg: dict[str, Any] = {**_STORE, "backend": "neo4j", "tenant": "bench-" + uuid.uuid4().hex[:12]}
            if "neo4j" in stores and not neo4j_cfg.get("uri"):
                from memos_agents.testing.bolt_server import BoltServer

                console.print("starting a local ArcadeDB Bolt server for the neo4j store ...")
                root = stack.enter_context(tempfile.TemporaryDirectory(prefix="memos-bolt-"))
                server = stack.enter_context(BoltServer.start(root))
                neo4j_cfg.update(uri=server.uri, user=server.auth[0], password=server.auth[1], database=server.database)
            runs = [(s, g, v) for s in stores for g in modes for v in variants]
            for name, mode, variant in runs:
                store_cfg: dict[str, Any] = dict(neo4j_cfg) if name == "neo4j" else {}
                store_cfg["audit"] = store_cfg["require_users"] = mode == "on"
                run_name = (
                    f"{name}/governance-{mode}"
                    if len(modes) > 1
                    else f"{name}/lifecycle-{variant}"
                    if len(variants) > 1
                    else name
                )
                life: dict[str, Any] = {
                    "track_access": variant != "off",
                    "retrieval": {"decay_weight": decay_weight if variant == "decay" else 0.0},
                }

                def factory(home: Path, store_cfg: dict[str, Any] = store_cfg, life: dict[str, Any] = life) -> MemOS:
                    mos = MemOS.from_path(
                        home, embedder=emb, llm={"provider": "none"}, store=store_cfg, admins=[BENCH_OPERATOR], **life
                    )
                    if store_cfg["require_users"]:  # the bench's user is registered, as a deployment would
                        mos.setup()
                        try:
                            mos.create_user(BENCH_USER, BENCH_OPERATOR, kind="service")
                        except UserExistsError:
                            pass
                    return mos

                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress:
                    tasks: dict[str, Any] = {}

                    def report(
                        phase: str, done: int, total: int, tasks: dict[str, Any] = tasks, name: str = run_name
                    ) -> None:
                        if phase not in tasks:
                            tasks[phase] = progress.add_task(f"{name} {phase}", total=total)
                        progress.update(tasks[phase], completed=done)

                    results[run_name] = run_locomo_bench(
                        data,
                        ks=ks,
                        budgets=budgets,
                        mos_factory=factory,
                        conversations=conversations,
                        progress=report,
                        redaction="mask" if mode == "on" else None,
                        simulated_time=simulated,
                    )
                target = out / run_name if len(stores) > 1 or len(modes) > 1 or len(variants) > 1 else out
                paths = write_results(results[run_name], target)
                _show_results(target / "results.md", paths)
        if len(modes) > 1 or len(variants) > 1:
            axis, values = ("governance", modes) if len(modes) > 1 else ("lifecycle", variants)
            for name in stores:
                pair = {g: results[f"{name}/{axis}-{g}"] for g in values}
                paths = write_comparison(compare_stores(pair, baseline=values[0]), out / name)
                _show_results(out / name / "comparison.md", paths)
        elif len(stores) > 1:
            comparison = compare_stores(results, baseline=stores[0])
            paths = write_comparison(comparison, out)
            _show_results(out / "comparison.md", paths)

    _run(go)


@bench_app.command("knowledge-update")
def bench_knowledge_update(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, knowledge_update.png).")],
    embedder: Annotated[str, typer.Option(help=_EMBEDDER_HELP)] = "sentence-transformers",
    subjects: Annotated[int, typer.Option(min=1, max=30, help="People in the generated data.")] = 30,
    attributes: Annotated[int, typer.Option(min=1, max=7, help="Changing facts per person.")] = 4,
    paraphrase: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of changes worded differently from the first statement.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """How often search returns the current fact first when facts change, with superseding off and on."""
    from memos_agents.bench.knowledge_update import run_knowledge_update_bench, write_results

    def go() -> None:
        emb = _embedder_spec(embedder, hashing_dim=256)

        def factory(home: Path, supersede: bool) -> MemOS:
            mos = MemOS.from_path(home, embedder=emb, llm={"provider": "none"}, reader={"supersede": supersede})
            return mos.setup()

        results = run_knowledge_update_bench(
            factory, subjects=subjects, attributes=attributes, paraphrase=paraphrase, seed=seed
        )
        paths = write_results(results, out, embedder)
        _show_results(out / "results.md", paths)

    _run(go)


@bench_app.command("lifecycle")
def bench_lifecycle(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, lifecycle.png).")],
    sizes: Annotated[str, typer.Option(help="Memories per cube, comma-separated (one fresh cube each).")] = (
        "10000,50000"
    ),
) -> None:
    """MemLifecycle maintenance-pass time per 10,000 memories (expiry, purge, promotion, decay) on SQLite."""
    import tempfile

    from memos_agents.bench.lifecycle import run_lifecycle_bench, write_results

    def go() -> None:
        counts = _ints(sizes, "--sizes")
        with tempfile.TemporaryDirectory(prefix="memos-bench-lifecycle-") as tmp:

            def factory(home: Path) -> MemOS:
                return MemOS.from_path(home, embedder={"provider": "hashing", "dim": 64}, llm={"provider": "none"})

            results = run_lifecycle_bench(factory, Path(tmp), counts)
        paths = write_results(results, out)
        _show_results(out / "results.md", paths)

    _run(go)


@bench_app.command("lora")
def bench_lora(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, lora.png).")],
    memories: Annotated[int, typer.Option(min=4, max=2000, help="Generated facts to train on.")] = 100,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the examples (default 8).")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Step budget (default: the epochs' steps).")] = None,
    max_seconds: Annotated[float | None, typer.Option(min=1.0, help="Training time budget (default 900 s).")] = None,
    rank: Annotated[int | None, typer.Option(min=1, max=256, help="LoRA rank (default 16; alpha is 2x).")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=1e-6, max=0.1, help="AdamW lr (default 1e-3).")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads (default: one fewer than torch's, at least 1).")
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="Run SmolLM2 in float32 (default; bfloat16 matmuls are far slower on CPU) or bfloat16.")
    ] = "float32",
    exchanges: Annotated[
        str,
        typer.Option(
            help="text+qa: each memory's text and its question answered by the value (two exchanges per memory); "
            "qa: its question answered by the memory's text (one)."
        ),
    ] = "text+qa",
    seed: Annotated[int, typer.Option(help="Seed of the generated facts.")] = 7,
) -> None:
    """LoRA parametric memory on SmolLM2: training time, adapter size, recall with and without it, collateral loss."""
    from memos_agents.bench.lora import default_config, run_lora_bench, write_results
    from memos_agents.config import MemOSConfig
    from memos_agents.models.llm import HFLocalLLM

    def go() -> None:
        if dtype not in ("float32", "bfloat16"):
            raise InvalidInputError(f"--dtype must be float32 or bfloat16, not {dtype!r}")
        import torch

        n_threads = threads or max(1, torch.get_num_threads() - 1)
        torch.set_num_threads(n_threads)
        config = default_config(
            epochs=epochs,
            max_steps=max_steps,
            max_seconds=max_seconds,
            rank=rank,
            alpha=2 * rank if rank else None,
            learning_rate=learning_rate,
            num_threads=n_threads,
        )
        llm = HFLocalLLM(cache_dir=MemOSConfig().model_cache / "smollm2-135m-instruct")
        model, tokenizer = llm.load()
        model = model.to(getattr(torch, dtype)).eval()
        with _phase_progress() as report:
            results = run_lora_bench(
                model,
                tokenizer,
                memories=memories,
                config=config,
                seed=seed,
                exchanges=exchanges,
                progress=report,
                model_id=llm.model_name,
            )
        paths = write_results(results, out)
        _show_results(out / "results.md", paths)

    _run(go)


@bench_app.command("audit")
def bench_audit(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, audit.png).")],
    store: Annotated[
        str, typer.Option(help="Store backend(s), comma-separated: sqlite, neo4j (as for bench locomo).")
    ] = "sqlite",
    sizes: Annotated[str, typer.Option(help="Chain lengths at which verify is timed, comma-separated.")] = (
        "10000,50000,100000"
    ),
    per_batch: Annotated[int, typer.Option(min=10, help="One-op batches timed with the log off and on.")] = 2000,
) -> None:
    """Audit log cost per batch, entries written per second, and verify time per 100k entries."""
    import contextlib
    import tempfile
    import uuid

    from memos_agents.bench.audit import run_audit_bench, write_results
    from memos_agents.plaintext.stores.base import BaseMemoryStore
    from memos_agents.plaintext.stores.sqlite import SQLiteMemoryStore

    def go() -> None:
        stores = _stores(store)
        results: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memos-bench-audit-")))
            uri, auth, database = _STORE.get("uri"), None, _STORE.get("database")
            if _STORE.get("user"):
                auth = (_STORE["user"], _STORE.get("password") or "")
            if "neo4j" in stores and not uri:
                from memos_agents.testing.bolt_server import BoltServer

                console.print("starting a local ArcadeDB Bolt server for the neo4j store ...")
                server = stack.enter_context(BoltServer.start(tmp / "bolt"))
                uri, auth, database = server.uri, server.auth, server.database
            for name in stores:

                def factory(audit: bool, name: str = name) -> BaseMemoryStore:
                    made: BaseMemoryStore
                    if name == "sqlite":
                        made = SQLiteMemoryStore(tmp / f"{uuid.uuid4().hex}.db", audit=audit)
                    else:
                        from memos_agents.plaintext.stores.neo4j import Neo4jMemoryStore

                        made = Neo4jMemoryStore.from_uri(
                            str(uri), auth=auth, database=database, tenant="bench-" + uuid.uuid4().hex[:12], audit=audit
                        )
                    made.setup()
                    return made

                console.print(f"{name} ...")
                results[name] = run_audit_bench(factory, per_batch=per_batch, sizes=_ints(sizes, "--sizes"))
        paths = write_results(results, out)
        _show_results(out / "results.md", paths)

    _run(go)


@bench_app.command("kv")
def bench_kv(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, kv.png).")],
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file: the memories and questions.")] = Path(
        "../shared/data/locomo/locomo_dev7.json"
    ),
    sizes: Annotated[str, typer.Option(help="Memory-context sizes in tokens, comma-separated.")] = "500,2000,6000",
    repeats: Annotated[int, typer.Option(help="Timed runs per variant (the median is reported).")] = 5,
    model: Annotated[
        Path | None, typer.Option(help="A local HF causal LM directory (default: SmolLM2-135M-Instruct).")
    ] = None,
    dtype_probe: Annotated[bool, typer.Option(help="Also measure bf16 prefill speed (a second copy).")] = True,
    serve_dtype: Annotated[
        str, typer.Option(help="Dtype the model serves in: float32 (activation memory's default) or bfloat16.")
    ] = "float32",
) -> None:
    """TTFT with an injected KV cache vs the same memories as prompt text (warm, cold, bare-forward limit)."""
    from memos_agents.bench.kv import run_kv_bench, write_results
    from memos_agents.config import MemOSConfig
    from memos_agents.models.llm import HFLocalLLM

    def go() -> None:
        if repeats < 1:
            raise InvalidInputError("--repeats must be at least 1")
        if serve_dtype not in ("float32", "bfloat16"):
            raise InvalidInputError("--serve-dtype must be float32 or bfloat16")
        import torch

        cache = None if model is not None else MemOSConfig().model_cache / "smollm2-135m-instruct"
        llm = HFLocalLLM(model, cache_dir=cache)
        lm, tok = llm.load()
        other = None
        if dtype_probe:
            import copy

            other = copy.deepcopy(lm).eval()  # as loaded (bf16), for the dtype measurement
        lm.to(getattr(torch, serve_dtype))  # as activation memory serves it (ActivationConfig.dtype)
        if serve_dtype == "bfloat16":  # bf16 is exact only with eager attention (see ActivationConfig)
            lm.set_attn_implementation("eager")
        results = run_kv_bench(
            lm,
            tok,
            data,
            model_id=llm.model_name,
            sizes=_ints(sizes, "--sizes"),
            repeats=repeats,
            other_model=other,
        )
        paths = write_results(results, out)
        _show_results(out / "results.md", paths)

    _run(go)


@bench_app.command("scale")
def bench_scale(
    out: Annotated[Path, typer.Option(help="Output directory (results.json, results.md, scale.png).")],
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file (the corpus' clauses and speakers, the queries).")] = (
        DEFAULT_LOCOMO
    ),
    sizes: Annotated[
        str, typer.Option(help="Cube sizes in memories, strictly ascending, comma-separated; one cube grows to each.")
    ] = "1000,10000,100000,1000000",
    embedder: Annotated[str, typer.Option(help="Hashing is 384-d here. " + _EMBEDDER_HELP)] = "hashing",
    queries: Annotated[int, typer.Option(min=1, help="Timed searches per size (after 10 warm-up ones).")] = 200,
    adds: Annotated[int, typer.Option(min=1, help="Timed one-message adds per size.")] = 50,
    home: Annotated[
        Path | None, typer.Option("--home", help="Keep the MemOS home here for inspection (default: a temporary one).")
    ] = None,
    store_option: Annotated[
        list[str] | None,
        typer.Option(
            "--store-option",
            help="KEY=VALUE store setting (repeatable), e.g. sqlite_synchronous=FULL; a VALUE that parses as JSON "
            "is passed as that value.",
        ),
    ] = None,
) -> None:
    """How the embedded store behaves as one cube grows: ingestion, add and search latency, memory, disk, recall."""
    from memos_agents.bench.scale import DEFAULT_EMBEDDER, parse_store_options, run_scale_bench, write_results

    def go() -> None:
        emb = _embedder_spec(embedder, hashing_dim=DEFAULT_EMBEDDER["dim"])
        cube_sizes = _ints(sizes, "--sizes")
        store = parse_store_options(store_option or [])
        with _phase_progress() as report:
            results = run_scale_bench(
                data,
                sizes=cube_sizes,
                embedder=emb,
                store=store,
                queries=queries,
                adds=adds,
                home=home,
                progress=report,
            )
        paths = write_results(results, out)
        _show_results(out / "results.md", paths)

    _run(go)


StoreName = Annotated[str, typer.Argument(help="Registry name, e.g. team-notes.")]
StoreVersion = Annotated[
    str | None, typer.Option("--version", help="A semantic version, e.g. 1.2.0 (default: the latest release).")
]


def _print_entries(entries: list[Any]) -> None:
    table = Table()
    for col in ("name", "version", "kind", "publisher", "items", "visibility", "licence", "description", "revoked"):
        table.add_column(col)
    for e in entries:
        text = e.manifest.description
        table.add_row(
            escape(e.name),
            escape(e.version),
            e.kind.value,
            escape(e.publisher),
            str(e.manifest.items),
            e.visibility.value,
            escape(e.manifest.licence or ""),
            escape(text if len(text) <= 48 else text[:45] + "..."),
            f"{e.revoked_at:%Y-%m-%d %H:%M}" if e.revoked_at else "",
        )
    console.print(table)


def _print_subscriptions(subs: list[Any]) -> None:
    table = Table()
    for col in ("subscriber", "entry", "kind", "access", "cube", "granted", "since", "active"):
        table.add_column(col)
    for s in subs:
        table.add_row(
            escape(s.subscriber),
            escape(s.key),
            s.kind.value,
            s.access.value,
            escape(s.cube_id),
            s.granted.value if s.granted else "",
            f"{s.subscribed_at:%Y-%m-%d %H:%M}",
            "yes" if s.active else "no",
        )
    console.print(table)


@store_app.command("publish")
def store_publish(
    cube: Annotated[str, typer.Argument(help="The cube to publish (needs share or admin on it).")],
    user: User,
    name: Annotated[str, typer.Option("--name", help="Registry name: 1-64 of [a-z0-9._-].")],
    version: Annotated[str, typer.Option("--version", help="A new semantic version of the name, e.g. 1.0.0.")],
    kind: Annotated[
        EntryKind,
        typer.Option(help="snapshot (a signed read-only copy taken now) or live (the cube itself, as it changes)."),
    ] = EntryKind.SNAPSHOT,
    description: Annotated[str | None, typer.Option(help="Shown in listings (default: the cube's).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A label to find it by (repeatable).")] = None,
    licence: Annotated[str | None, typer.Option(help="The licence it is shared under, e.g. CC-BY-4.0.")] = None,
    restricted: Annotated[
        bool, typer.Option("--restricted", help="Only you and the --audience see it (default: everyone).")
    ] = False,
    audience: Annotated[
        list[str] | None, typer.Option("--audience", help="Who else sees a restricted entry (repeatable).")
    ] = None,
    access: Annotated[
        Access, typer.Option(help="read, or write (live entries: subscribers may get role writer).")
    ] = Access.READ,
    home: Home = None,
) -> None:
    """Publish CUBE as name@version, signed with your publisher key (created on first use)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            entry = mos.registry.publish(
                cube,
                user,
                name=name,
                version=version,
                kind=kind,
                description=description,
                tags=tag or [],
                licence=licence,
                visibility=EntryVisibility.RESTRICTED if restricted else EntryVisibility.PUBLIC,
                audience=audience or [],
                access=access,
            )
        m = entry.manifest
        console.print(
            f"published {escape(entry.key)} ({entry.kind.value}, {entry.visibility.value}, {entry.access.value}) "
            f"from cube {escape(entry.source_cube_id)}",
            highlight=False,
        )
        console.print(f"cube: {escape(entry.cube_id)}", highlight=False)
        console.print(f"items: {m.items}" + (f", edges: {m.edges}" if m.edges is not None else ""), highlight=False)
        console.print(f"checksum: {m.checksum or '-'}", highlight=False)
        console.print(f"key: {key_fingerprint(entry.public_key) if entry.public_key else '-'}", highlight=False)

    _run(go)


@store_app.command("list")
def store_list(
    user: User,
    name: Annotated[str | None, typer.Option(help="Only this name.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only entries carrying this tag.")] = None,
    publisher: Annotated[str | None, typer.Option(help="Only this publisher's.")] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Revoked entries too.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    home: Home = None,
) -> None:
    """List the registry entries you see (public ones, and restricted ones you are in the audience of)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            entries = mos.registry.list(
                user, name=name, tag=tag, publisher=publisher, include_revoked=all_entries, limit=limit
            )
        _print_entries(entries)

    _run(go)


@store_app.command("search")
def store_search(
    text: Annotated[str, typer.Argument(help="Words that must all occur in the name, description or tags.")],
    user: User,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only entries carrying this tag.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    home: Home = None,
) -> None:
    """Find registry entries by their name, description and tags (any case)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            entries = mos.registry.search(text, user, tag=tag, limit=limit)
        _print_entries(entries)

    _run(go)


@store_app.command("subscribe")
def store_subscribe(
    name: StoreName,
    user: User,
    version: StoreVersion = None,
    access: Annotated[Access, typer.Option(help="read, or write (a live entry published with write).")] = Access.READ,
    home: Home = None,
) -> None:
    """Subscribe to NAME: `memos search` without --cube then also reads its cube."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            sub = mos.registry.subscribe(name, user, version=version, access=access)
        granted = f"role {sub.granted.value} granted" if sub.granted else "no new grant needed"
        console.print(
            f"subscribed {escape(sub.subscriber)} to {escape(sub.key)} ({sub.kind.value}, {sub.access.value}): "
            f"cube {escape(sub.cube_id)}, {granted}",
            highlight=False,
        )

    _run(go)


@store_app.command("unsubscribe")
def store_unsubscribe(name: StoreName, user: User, home: Home = None) -> None:
    """End your subscription to NAME (its grant on the cube is removed at once)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            ended = mos.registry.unsubscribe(name, user)
        console.print(f"unsubscribed from {escape(name)}" if ended else f"no subscription to {escape(name)}")

    _run(go)


@store_app.command("subscriptions")
def store_subscriptions(
    user: User,
    name: Annotated[
        str | None, typer.Option(help="Only this name (as its publisher: every subscriber's subscription).")
    ] = None,
    home: Home = None,
) -> None:
    """List your subscriptions, or, as a name's publisher, everyone's to it (--name)."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            _print_subscriptions(mos.registry.subscriptions(user, name=name))

    _run(go)


@store_app.command("revoke")
def store_revoke(
    name: StoreName,
    user: User,
    version: Annotated[
        str | None, typer.Option("--version", help="Withdraw only this version (default: every version).")
    ] = None,
    subscriber: Annotated[
        str | None, typer.Option(help="End only this subscriber's access (the entry stays published).")
    ] = None,
    admin: UserAdmin = False,
    home: Home = None,
) -> None:
    """As NAME's publisher: withdraw it (or one --version), or end one --subscriber's access."""

    def go() -> None:
        with _admin_mos(home, user, admin) as mos:
            done = mos.registry.revoke(name, user, version=version, subscriber=subscriber)
        for key in done.revoked:
            console.print(f"revoked {escape(key)}", highlight=False)
        for who, key in done.ended:
            console.print(f"ended {escape(who)}'s subscription to {escape(key)}", highlight=False)
        if not done.revoked and not done.ended:
            console.print("nothing to revoke")

    _run(go)


@store_app.command("export")
def store_export(
    name: StoreName,
    path: Annotated[Path, typer.Argument(help="Bundle file to write.")],
    user: User,
    version: StoreVersion = None,
    home: Home = None,
) -> None:
    """Write the signed bundle of a snapshot entry (verified first) to PATH."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            written = mos.registry.export(name, user, path, version=version)
        console.print(f"wrote {escape(str(written))}", highlight=False)

    _run(go)


@store_app.command("import")
def store_import(
    path: Annotated[Path, typer.Argument(help="Bundle file.")],
    user: User,
    cube_id: Annotated[
        str | None, typer.Option("--cube-id", help="Import under this cube id (default: the entry's name@version).")
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option("--allow-unsigned", help="Accept a bundle without a signature (default: the config decides)."),
    ] = False,
    home: Home = None,
) -> None:
    """Create a read-only cube you own from a bundle, after checking its checksums and its publisher's signature."""

    def go() -> None:
        with _mos(home, llm={"provider": "none"}) as mos:
            header = mos.registry.import_bundle(path, user, cube_id=cube_id, allow_unsigned=allow_unsigned or None)
            nodes = mos.stats(header.cube_id, user).nodes
        console.print(
            f"imported cube {escape(header.cube_id)} from {escape(header.source or str(path))} ({nodes} nodes)",
            highlight=False,
        )

    _run(go)


def main() -> None:
    """Entry point of the ``memos`` script."""
    app()


if __name__ == "__main__":
    main()
