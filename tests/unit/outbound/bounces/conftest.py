"""Fixtures of the bounce tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailcase.config import Settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Iterator[Settings]:
    s = Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "database": {"url": db_url},
        "server": {"hostname": "mx.mailcase.test"},
    })
    yield s
