"""Mailbox source rows on both engines: the secret sealed, names unique, folder state and the
visible back-off. Real SQLite and PostgreSQL (no IMAP here: tests/integration/test_mail_sources)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mailcase.config import Settings
from mailcase.sources import store
from mailcase.sources.imap import SourceError
from mailcase.sources.plan import FolderState


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _add(engine: Engine, settings: Settings, name: str = "helpdesk", **kw: object) -> dict:
    args: dict = dict(name=name, host="imap.example.test", port=993, security="tls",
                      username="support", secret="s3cret-pw", folders=["INBOX"],
                      address="Support@Example.TEST")
    args.update(kw)
    return store.add_source(engine, settings, **args)


def test_the_secret_is_sealed_and_opens_only_for_its_source(db_engine: Engine, settings: Settings) -> None:
    row = _add(db_engine, settings)
    assert "secret" not in row and "token" not in row
    assert row["address"] == "Support@example.test" and row["state"] == "new"
    private = store.get_source(db_engine, "helpdesk", private=True)
    assert private["secret"].startswith("aesgcm1:") and "s3cret-pw" not in private["secret"]
    assert store.open_secret(settings, "helpdesk", private["secret"]) == "s3cret-pw"
    with pytest.raises(SourceError, match="cannot be decrypted.*set-secret"):
        store.open_secret(settings, "other", private["secret"])  # bound to its name


def test_bad_input_gets_a_clear_error(db_engine: Engine, settings: Settings) -> None:
    _add(db_engine, settings)
    with pytest.raises(SourceError, match="exists already"):
        _add(db_engine, settings)
    with pytest.raises(SourceError, match="--move-to"):
        _add(db_engine, settings, name="m", after="move")
    with pytest.raises(SourceError, match="routing address"):
        _add(db_engine, settings, name="a", address="not an address")
    with pytest.raises(SourceError, match="source name"):
        _add(db_engine, settings, name="../etc")
    with pytest.raises(SourceError, match="no source 'nope'"):
        store.get_source(db_engine, "nope")


def test_folder_state_backoff_pause_and_remove(db_engine: Engine, settings: Settings) -> None:
    sid = _add(db_engine, settings)["id"]
    assert store.folder_state(db_engine, sid, "INBOX") is None
    store.save_folder_state(db_engine, sid, "INBOX", FolderState(7, 0), 0)
    store.save_folder_state(db_engine, sid, "INBOX", FolderState(7, 42), 5)
    assert store.folder_state(db_engine, sid, "INBOX") == FolderState(7, 42)
    retry = dt.datetime(2026, 12, 4, 17, 0, tzinfo=dt.UTC)
    assert store.record_failure(db_engine, sid, "login refused", retry) == 1
    assert store.record_failure(db_engine, sid, "login refused", retry) == 2
    row = store.get_source(db_engine, sid)
    assert (row["state"], row["last_error"], row["taken"]) == ("backoff", "login refused", 5)
    assert store.count_by_state(db_engine) == {"backoff": 1}
    assert store.set_paused(db_engine, "helpdesk", True)["state"] == "paused"
    resumed = store.set_paused(db_engine, "helpdesk", False)
    assert resumed["failures"] == 0 and resumed["next_attempt_at"] is None
    store.record_ok(db_engine, sid, "idle")
    assert store.get_source(db_engine, sid)["last_error"] is None
    store.remove_source(db_engine, "helpdesk")
    with db_engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM mail_source_folders")).scalar() == 0


def test_trusted_authserv_ids_are_checked_and_kept(db_engine: Engine, settings: Settings) -> None:
    row = _add(db_engine, settings, trusted_authserv_ids=["MX.Example.com", "mx.example.com"])
    assert row["trusted_authserv_ids"] == ["mx.example.com"]
    assert _add(db_engine, settings, name="none")["trusted_authserv_ids"] == []
    # A value that could smuggle results into a field, or a flood of them, is refused.
    for bad in (["mx.example.com; spf=pass"], ["a b"], [""], [f"mx{i}.test" for i in range(21)]):
        with pytest.raises(SourceError, match="authserv-id"):
            store.set_trusted(db_engine, "helpdesk", bad)
    assert store.set_trusted(db_engine, "helpdesk", [])["trusted_authserv_ids"] == []
    with pytest.raises(SourceError, match="at most 50 folders"):
        _add(db_engine, settings, name="many", folders=[f"F{i}" for i in range(51)])
    with pytest.raises(SourceError, match="--skip-to"):
        _add(db_engine, settings, name="skip", skip_to="INBOX")


def test_skipped_messages_are_listed_newest_first(db_engine: Engine, settings: Settings) -> None:
    sid = _add(db_engine, settings, skip_to="Not taken")["id"]
    store.record_skipped(db_engine, sid, "INBOX", 7, 3, 50_000_000, "too big", "Not taken")
    store.record_skipped(db_engine, sid, "INBOX", 7, 9, None, "refused " * 500, None)
    rows = store.skipped(db_engine, sid)
    assert [r["uid"] for r in rows] == [9, 3]
    assert rows[1]["moved_to"] == "Not taken" and rows[1]["size"] == 50_000_000
    assert len(rows[0]["reason"]) == 1000  # bounded
    store.remove_source(db_engine, sid)
    assert store.skipped(db_engine, sid) == []
