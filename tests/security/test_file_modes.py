"""Mail and secrets readable by every local user: the database, its WAL/SHM, the spool files,
the generated key and certificate, the server secret and the maillog were 0644 in 0755
directories (umask 022). Every file under the data directory must be 0600-or-less and every
directory 0700-or-less, also when an older version left wider modes behind."""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.platform import running_platform


def _open_to_others(root: Path) -> list[str]:
    """Files and directories under `root` (itself included) with group or other bits."""
    found = []
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_IMODE(st.st_mode) & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(st.st_mode):o}")
    return found


def _cli(data_dir: Path, *args: str) -> None:
    """A CLI command as a fresh process with the usual umask 022 (the one the attack needs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    res = subprocess.run([sys.executable, "-m", "mailcase", "--data-dir", str(data_dir), *args],
                         env=env, timeout=120, umask=0o022, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr


def test_files_of_a_running_server_are_owner_only(tmp_path: Path) -> None:
    # The server runs under the test process's umask (022 on the usual set-up).
    log_file = tmp_path / "data" / "log" / "mail.log"
    with running_platform(tmp_path, config=f'[log]\nmaillog = "{log_file}"\n') as p:
        p.cli("address", "add", "support@example.test")
        with smtplib.SMTP(*p.smtp, timeout=30) as s:
            s.sendmail("a@sender.test", ["support@example.test"],
                       b"Subject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nprivate words\r\n")
        names = {q.name for q in p.data_dir.rglob("*")}
        # What the attack read: the database with its WAL, the spool, the key, the log.
        assert {"mailcase.db", "mailcase.db-wal", "server.key", "server.crt", "mail.log"} <= names
        assert any(n.startswith("acceptor-") for n in names), names
        assert _open_to_others(p.data_dir) == []


def test_init_creates_an_owner_only_instance(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    _cli(data, "init")
    _cli(data, "address", "add", "support@example.test")
    assert (data / "mailcase.db").exists()
    assert _open_to_others(data) == []


def test_wide_modes_left_by_an_older_version_are_tightened_at_start(tmp_path: Path) -> None:
    data = tmp_path / "old"
    _cli(data, "init")
    _cli(data, "address", "add", "support@example.test")
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    assert _open_to_others(data) != []
    _cli(data, "address", "list")
    assert _open_to_others(data) == []
    with running_platform(tmp_path / "serve") as p:
        p.stop()
        for path in [p.data_dir, *p.data_dir.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        p.start()
        assert _open_to_others(p.data_dir) == []
