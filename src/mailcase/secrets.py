"""The server secret: 32 random bytes that sign thread tokens (and anything else we sign).

Kept in a file, not the database: a database dump or a PostgreSQL replica alone must not be
enough to forge tokens. By default the file is ``data_dir/secret.key``, created on first use
with mode 0600 and written atomically (a temporary file, fsync, then a hard link that fails if
another process won the race, so every process of an instance reads the same secret).
``server.secret_file`` points elsewhere (e.g. a secret mounted by the orchestrator); several
nodes sharing one PostgreSQL database must share that file.

`seal`/`unseal` encrypt what the database must not hold in clear (DKIM private keys, relay
passwords) with AES-GCM under a key derived from this secret (HKDF-SHA256, one `info` label
per kind of data, so a ciphertext of one kind never opens as another).
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import threading
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailcase.config import Settings
from mailcase.errors import ConfigError
from mailcase.filemodes import PRIVATE_FILE, private_dir

__all__ = ["SECRET_SIZE", "seal", "secret_path", "server_secret", "unseal"]

SECRET_SIZE = 32
_MIN_SIZE = 16

_cache: dict[Path, bytes] = {}
_lock = threading.Lock()


def secret_path(settings: Settings) -> Path:
    """Where this instance's secret lives."""
    configured = settings.server.secret_file
    if configured:
        return Path(configured)
    return settings.data_dir / "secret.key"


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) < _MIN_SIZE:
        raise ConfigError(
            "server.secret_file",
            f"{path} holds {len(data)} bytes; a secret needs at least {_MIN_SIZE} random bytes "
            "(delete the file to have a new one generated)",
        )
    return data


def _create(path: Path) -> None:
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        os.write(fd, _random.token_bytes(SECRET_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a secret another process made
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def server_secret(settings: Settings) -> bytes:
    """The instance's secret, created on first use; ConfigError if the file is unusable."""
    path = secret_path(settings).resolve()
    with _lock:
        cached = _cache.get(path)
        if cached is not None:
            return cached
        if not path.exists():
            if settings.server.secret_file:
                raise ConfigError(
                    "server.secret_file", f"{path} does not exist; create it with 32 random bytes"
                )
            _create(path)
        try:
            data = _read(path)
        except OSError as e:
            raise ConfigError("server.secret_file", f"cannot read {path}: {e.strerror}") from None
        _cache[path] = data
        return data


def _aead(settings: Settings, info: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        server_secret(settings)
    )
    return AESGCM(key)


def seal(settings: Settings, info: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Nonce (12 bytes) + AES-GCM ciphertext of `plaintext`, bound to `aad` (e.g. the row's
    name: a ciphertext copied to another row does not open there)."""
    nonce = os.urandom(12)
    return nonce + _aead(settings, info).encrypt(nonce, plaintext, aad)


def unseal(settings: Settings, info: bytes, blob: bytes, aad: bytes) -> bytes:
    """The plaintext `seal` was given; cryptography's InvalidTag if the server secret, `info`
    or `aad` differ, or the blob was altered."""
    return _aead(settings, info).decrypt(blob[:12], blob[12:], aad)
