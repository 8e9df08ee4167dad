"""Issue 12 item 12: a database that cannot be reached is one line (what, where with the
password masked, what to do) from every command and from `serve`, exit code 1, no
traceback; `--debug` / MAILCASE_DEBUG=1 shows the traceback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import forkserver
from tests.support.platform import free_port
from tests.support.postgres import PostgresServer

COMMANDS = [
    ("address", "list"),
    ("address", "add", "a@example.test"),
    ("log",),
    ("cases", "list"),
    ("outbound", "list"),
    ("init",),
    ("migrate",),
    ("serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
]


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    env["MAILCASE_DATABASE__URL"] = url
    env.update(extra)
    return env


def _one_line_each(tmp_path: Path, url: str, *expected: str) -> None:
    for args in COMMANDS:
        res = forkserver.run(["--data-dir", str(tmp_path / "d"), *args], env=_env(url),
                             timeout=120)
        err = res.stderr.strip()
        assert res.returncode == 1, (args, res.stdout, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert err.startswith("mailcase: cannot use the database at "), (args, err)
        assert "s3cret" not in err and ":***@" in err, (args, err)
        for text in expected:
            assert text in err, (args, err)


def test_a_refused_port_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    url = f"postgresql://mc:s3cret@127.0.0.1:{port}/mc"
    _one_line_each(tmp_path, url, f"127.0.0.1:{port}/mc", "Connection refused",
                   "database server runs")
    debug = forkserver.run(["--data-dir", str(tmp_path / "d"), "address", "list"],
                           env=_env(url, MAILCASE_DEBUG="1"), timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    debug = forkserver.run(["--debug", "--data-dir", str(tmp_path / "d"), "log"],
                           env=_env(url), timeout=120)
    assert "Traceback" in debug.stderr


@pytest.mark.postgres
def test_a_wrong_password_on_a_real_postgresql_is_one_line(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    pg_server.password_role("mc_pw", "right-one")
    url = f"postgresql://mc_pw:s3cret@127.0.0.1:{pg_server.port}/postgres"
    deadline = time.monotonic() + 30  # pg_reload_conf() is a signal: wait until it took
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline, "the server still lets a wrong password in"
        time.sleep(0.2)
    _one_line_each(tmp_path, url, "password authentication failed", "user name and password")


def test_serve_on_a_sqlite_file_it_cannot_create_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    url = f"sqlite:///{blocker}/sub/mailcase.db"
    res = forkserver.run(["--data-dir", str(tmp_path / "d"), *COMMANDS[-1]], env=_env(url),
                         timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("mailcase: ") and str(blocker) in lines[-1], lines
    assert "this user may write there" in lines[-1], lines
