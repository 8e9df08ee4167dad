"""The server secret: created once, 0600, shared by every caller; a configured file is used."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailcase.config import load_settings
from mailcase.errors import ConfigError
from mailcase.secrets import server_secret


def test_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "d")})
    first = server_secret(settings)
    path = tmp_path / "d" / "secret.key"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first
    assert server_secret(settings) == first
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_configured_file(tmp_path: Path) -> None:
    f = tmp_path / "mounted.key"
    f.write_bytes(b"s" * 40)
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "server": {"secret_file": str(f)}})
    assert server_secret(settings) == b"s" * 40


def test_configured_file_missing_or_short(tmp_path: Path) -> None:
    missing = load_settings(environ={}, overrides={"server": {"secret_file": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="does not exist"):
        server_secret(missing)
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    with pytest.raises(ConfigError, match="at least 16"):
        server_secret(load_settings(environ={}, overrides={"server": {"secret_file": str(short)}}))
