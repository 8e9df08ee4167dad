"""A throw-away PostgreSQL server for tests, from Debian's server binaries.

Why like this: tests must talk to a real PostgreSQL (SKIP LOCKED, advisory locks, bytea), and
CI has no running server. We initdb a cluster in a temporary directory, listen on a free
loopback port only (unix socket inside the directory), keep fsync on so durability behaves as
in production, and remove everything at the end. PostgreSQL refuses to run as root, and tests
run as root in CI, so initdb and the server run as the `postgres` system user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir"]

_PG_ROOT = Path("/usr/lib/postgresql")
_RUN_AS = "postgres"


class PostgresUnavailable(RuntimeError):  # noqa: N818 - a reason to skip, not a fault
    """The server binaries are missing or the server could not be started."""


def find_bindir() -> Path | None:
    """The bin directory of the newest PostgreSQL installed under /usr/lib/postgresql."""
    found: list[tuple[tuple[int, ...], Path]] = []
    if _PG_ROOT.is_dir():
        for child in _PG_ROOT.iterdir():
            bindir = child / "bin"
            if all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
                version = tuple(int(p) for p in re.findall(r"\d+", child.name)) or (0,)
                found.append((version, bindir))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", _RUN_AS],
            check=True, capture_output=True, timeout=60,
        )
        return pwd.getpwnam(_RUN_AS)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `start()`, then `stop()`."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(
                f"PostgreSQL server binaries not found under {_PG_ROOT}/*/bin "
                "(Debian package 'postgresql')"
            )
        self.bindir = found
        self.port = 0
        self.user = "postgres"  # the bootstrap superuser, whatever OS user runs the server
        self.basedir: Path | None = None
        self._as_other_user = os.geteuid() == 0

    # -- paths -------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.basedir is not None
        return self.basedir / "data"

    @property
    def sockdir(self) -> Path:
        assert self.basedir is not None
        return self.basedir / "sock"

    @property
    def logfile(self) -> Path:
        assert self.basedir is not None
        return self.basedir / "server.log"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        if self._as_other_user:
            cmd = ["runuser", "-u", _RUN_AS, "--", *cmd]
        return cmd

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout,
            cwd=self.basedir,
        )
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise PostgresUnavailable(
                f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{log[-4000:]}"
            )

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """initdb and start on a free loopback port; returns once connections are accepted."""
        self.basedir = Path(tempfile.mkdtemp(prefix="mailcase-pg-"))
        self.sockdir.mkdir()
        if self._as_other_user:
            user = _ensure_user()
            for path in (self.basedir, self.sockdir):
                os.chown(path, user.pw_uid, user.pw_gid)
        # --no-sync: initdb's own flush is not worth waiting for; the server runs with fsync=on.
        self._run("initdb", "-D", str(self.datadir), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        last_error: Exception | None = None
        for _ in range(5):  # the free port can be taken between choosing and binding it
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.sockdir} -c fsync=on "
                "-c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                          "-w", "-t", "60", "-o", options, "start")
                return
            except PostgresUnavailable as exc:
                last_error = exc
        raise PostgresUnavailable(f"could not start PostgreSQL: {last_error}")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if self.basedir is None:
            return
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)
            self.basedir = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL for `dbname` over loopback TCP."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a database (a unique name if none is given), empty or a copy of `template`
        (which must have no connections); return its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}"'
        with self._admin() as conn:
            conn.execute(sql.encode())
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected."""
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


    def password_role(self, name: str, password: str) -> None:
        """A login role that must give `password` over loopback TCP (scram-sha-256); the
        cluster's other roles keep `trust`. For tests of a wrong password."""
        assert self.basedir is not None, "server not started"
        hba = self.datadir / "pg_hba.conf"
        rule = f"host all {name} 127.0.0.1/32 scram-sha-256\n"
        text = hba.read_text()
        if rule not in text:
            hba.write_text(rule + text)  # first match wins: before the trust lines
        with self._admin() as conn:
            conn.execute(f"DROP ROLE IF EXISTS \"{name}\"".encode())
            conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'".encode())
            conn.execute(b"SELECT pg_reload_conf()")
