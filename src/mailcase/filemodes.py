"""Owner-only modes for mailcase's data: mail, keys and secrets are for the server's user alone.

With the usual umask 022 the database, its WAL, the spool files and the generated key came
out 0644 in 0755 directories: every local user could read all mail. So data files are made
0600 and data directories 0700 here, with chmod after creation, because a umask can only
take bits away from the mode given to open/mkdir, never guarantee it. `tighten` repairs a
file or directory left with group/other bits by an older version; it runs at start.

Only what this process's user owns is ever changed, and symbolic links are never followed
(a link in the data directory must not make us chmod some other file).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file", "tighten", "tighten_data_dir",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700 on the leaf, if it does not exist.

    An existing directory is not changed (a database may live in a shared directory such as
    /tmp); `tighten` is for directories known to be ours.
    """
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            return path  # another process made it first: it sets the mode
        os.chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> None:
    """Create an empty file 0600 if `path` does not exist (SQLite then gives its -wal and -shm
    files the database file's mode); an existing file is not changed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def tighten(path: Path) -> None:
    """Take group and other permissions off `path` if it is a file or directory we own.

    Missing paths, symbolic links, devices and other users' files are left alone; a failure
    to chmod (read-only mount) is not an error: the server still runs, as before.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return
    if st.st_uid != os.geteuid():
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, mode & ~0o077)


def tighten_data_dir(data_dir: Path) -> None:
    """At start: the data directory, its ``tls`` and ``spool`` directories with their files, and
    the database and secret files in it, made owner-only (`tighten`).

    Only these known names: `data_dir` might be set to a directory holding other files.
    """
    tighten(data_dir)
    for name in ("mailcase.db", "mailcase.db-wal", "mailcase.db-shm", "mailcase.db-journal",
                 "mailcase.db.writelock", "secret.key"):
        tighten(data_dir / name)
    for sub in (data_dir / "tls", data_dir / "spool"):
        if sub.is_symlink() or not sub.is_dir():
            continue
        tighten(sub)
        for f in sub.iterdir():
            tighten(f)
