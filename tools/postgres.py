"""A throw-away PostgreSQL server on loopback, for the ledger tests (and anyone trying them).

The test suite runs the PostgreSQL ledger against a real server, and a fresh clone must
bring one up by itself: this finds the server binaries (Debian's /usr/lib/postgresql/N/bin,
``pg_config --bindir``, or PATH), installs Debian's ``postgresql`` package with apt-get when
they are missing and we are root, creates a cluster in a temporary directory, starts it on
127.0.0.1 on a free port with trust authentication, and removes it all when done.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user
(created by the Debian package) or, failing that, ``nobody``.

Usage::

    python tools/postgres.py ensure          # install the server if missing, print its bindir
    python tools/postgres.py run -- CMD ...  # start one, run CMD with
                                             # MICROPAY_TEST_POSTGRES_URL set, then stop it

From Python: ``with throwaway_postgres() as server: server.url``.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import debian_packages as debian

URL_VARIABLE = "MICROPAY_TEST_POSTGRES_URL"
_NEEDED = ("initdb", "pg_ctl", "postgres")
_SUPERUSER = "micropay"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be found or installed here."""


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _NEEDED)


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (0,)


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, newest version first."""
    candidates: list[Path] = []
    if os.environ.get("MICROPAY_PG_BINDIR"):
        candidates.append(Path(os.environ["MICROPAY_PG_BINDIR"]))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return next((path for path in candidates if _complete(path)), None)


def ensure_installed() -> Path:
    """Find the server binaries, installing Debian's ``postgresql`` package if needed."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if not debian.can_install():
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them "
            "(Debian: apt-get install postgresql) or set MICROPAY_PG_BINDIR, or point "
            f"{URL_VARIABLE} at a server you run"
        )
    debian.install("postgresql", "PostgreSQL")
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("apt-get installed postgresql but initdb is still not found")
    return bindir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cluster_owner() -> str | None:
    """Who runs initdb and the server: ourselves, unless we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run initdb")


@dataclass(frozen=True)
class PostgresServer:
    """A running throw-away server; ``url`` connects as its superuser to database postgres."""

    bindir: Path
    directory: Path
    port: int
    owner: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            user=self.owner,
            group=self.owner and pwd.getpwnam(self.owner).pw_gid,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
        )

    def start(self) -> None:
        initdb = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",  # only initdb skips fsync; the server keeps fsync=on for commits
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c max_connections=200"
        started = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        if started.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PostgresUnavailable(f"PostgreSQL did not start:\n{started.stderr}\n{log}")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a fresh server for the duration of the ``with`` block, then remove it."""
    bindir = ensure_installed()
    owner = _cluster_owner()
    # The cluster's owner must reach its directory: as root, not under a private TMPDIR.
    directory = Path(tempfile.mkdtemp(prefix="micropay-pg-", dir="/tmp" if owner else None))
    try:
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        server = PostgresServer(bindir, directory, _free_port(), owner)
        server.start()
        try:
            _wait_for_tcp(server.port)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_tcp(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"PostgreSQL is not listening on port {port}") from None
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="install the server binaries if missing")
    run = commands.add_parser("run", help="run a command with a throw-away server")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "ensure":
        print(ensure_installed())
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        parser.error("run needs a command")
    with throwaway_postgres() as server:
        print(f"{URL_VARIABLE}={server.url}", file=sys.stderr, flush=True)
        return subprocess.call(argv, env={**os.environ, URL_VARIABLE: server.url})


if __name__ == "__main__":
    sys.exit(main())
