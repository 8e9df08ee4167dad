"""Issue 12 item 16: `mailcase ready` at INFO with the listening addresses, the data dir, the
database (password masked) and the TLS certificate's subject and expiry; `--log-format json`
writes one JSON object per line, `--log-level` chooses the level."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.platform import running_platform


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_ready_line_as_json(tmp_path: Path) -> None:
    # The maillog (Postfix-like lines, its own format) goes to a file of its own here.
    config = f'[log]\nmaillog = "{tmp_path / "mail.log"}"\n'
    with running_platform(tmp_path, config=config, start=False) as p:
        p.extra_args = ["--log-format", "json", "--log-level", "info"]
        p.start()
        p.stop()
        records = _records(p.log_text())  # every line is JSON: json.loads raises otherwise
    ready = [r for r in records if str(r["message"]).startswith("mailcase ready")]
    assert len(ready) == 1, records
    (r,) = ready
    message = str(r["message"])
    assert r["level"] == "INFO" and r["logger"] == "mailcase"
    assert f"SMTP 127.0.0.1:{p.smtp_port}" in message and f"http://127.0.0.1:{p.http_port}" in message
    assert f"data dir {p.data_dir.resolve()}" in message
    assert f"database {p.data_dir.resolve() / 'mailcase.db'}" in message
    assert "TLS certificate subject CN=mailcase.localhost" in message and ", expires 20" in message


def test_log_level_warning_hides_the_ready_line_and_text_is_the_default(tmp_path: Path) -> None:
    with running_platform(tmp_path / "a", start=False) as p:
        p.extra_args = ["--log-level", "WARNING"]
        p.start()
        p.stop()
        assert "mailcase ready" not in p.log_text()
    with running_platform(tmp_path / "b") as q:
        q.stop()
        (line,) = [ln for ln in q.log_text().splitlines() if "mailcase ready" in ln]
        assert " INFO mailcase: mailcase ready: " in line


@pytest.mark.postgres
def test_ready_line_masks_the_database_password(tmp_path: Path, pg_url: str) -> None:
    parts = urlsplit(pg_url)  # trust authentication: any password is let in
    user, _, host = parts.netloc.partition("@")
    url = urlunsplit(parts._replace(netloc=f"{user}:s3cret@{host}"))
    with running_platform(tmp_path, env={"MAILCASE_DATABASE__URL": url}) as p:
        p.stop()
        text = p.log_text()
    assert "s3cret" not in text
    (line,) = [ln for ln in text.splitlines() if "mailcase ready" in ln]
    assert f"database postgresql+psycopg://{user}:***@{host}" in line or \
        f"database postgresql://{user}:***@{host}" in line, line
